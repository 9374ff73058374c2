"""Synthesis plan: per-class arithmetic of each mode, stable ids and seeds, prompts."""
from __future__ import annotations

import pandas as pd
import pytest

from components.data.prompts import template_prompt
from components.errors import ConfigError
from components.generator.synthesis_plan import ATTEMPT_STRIDE, build_plan, class_counts, plan_counts

CATS = ["akiec", "mel", "nv"]


def _train(counts: dict[str, int]) -> pd.DataFrame:
    rows = []
    for c, n in counts.items():
        for k in range(n):
            rows.append({"image_id": f"{c}{k:03d}", "category": c, "split": "train",
                         "description": f"a dermoscopic lesion photo of {c} for skin cancer diagnosis, variant {k}"})
    return pd.DataFrame(rows)


def test_balance_tops_every_class_up_to_the_majority():
    assert plan_counts({"akiec": 3, "mel": 5, "nv": 12}, "balance") == {"akiec": 9, "mel": 7, "nv": 0}


def test_cover_plans_what_the_synthetic_and_the_balanced_sets_need():
    real = {"akiec": 3, "mel": 5, "nv": 12, "df": 0}
    # max(own count, top-up to 12): akiec max(3, 9), mel max(5, 7), nv max(12, 0); a class without images: none
    assert plan_counts(real, "cover") == {"akiec": 9, "mel": 7, "nv": 12, "df": 0}
    assert plan_counts(real, "cover", scale=0.25) == {"akiec": 3, "mel": 2, "nv": 3, "df": 0}   # ceil(2.25, 1.75, 3)
    with pytest.raises(ConfigError, match="scale"):
        plan_counts(real, "cover", scale=0)


def test_match_copies_size_and_mix_and_scales_with_largest_remainder():
    real = {"akiec": 3, "mel": 5, "nv": 12}
    assert plan_counts(real, "match") == real
    half = plan_counts(real, "match", scale=0.5)  # 1.5, 2.5, 6.0 -> total 10
    assert sum(half.values()) == 10 and half["nv"] == 6 and sorted([half["akiec"], half["mel"]]) == [2, 2]
    assert plan_counts(real, "match", scale=2.0) == {"akiec": 6, "mel": 10, "nv": 24}


def test_explicit_counts_and_their_errors():
    real = {"akiec": 3, "mel": 5, "nv": 12}
    assert plan_counts(real, "counts", {"mel": 4}) == {"akiec": 0, "mel": 4, "nv": 0}
    with pytest.raises(ConfigError, match="unknown class"):
        plan_counts(real, "counts", {"bcc": 1})
    with pytest.raises(ConfigError, match="non-negative integer"):
        plan_counts(real, "counts", {"mel": -1})
    with pytest.raises(ConfigError, match="expected one of"):
        plan_counts(real, "oversample")


def test_plan_ids_seeds_and_template_prompts():
    train = _train({"akiec": 2, "mel": 1, "nv": 4})
    assert class_counts(train, CATS) == {"akiec": 2, "mel": 1, "nv": 4}
    plan = build_plan(train, CATS, "balance", seed=100, prompt_source="template")
    assert [s.category for s in plan] == ["akiec", "akiec", "mel", "mel", "mel"]
    assert [s.seed for s in plan] == [100, 101, 102, 103, 104]
    assert plan[2].sample_id == "syn_mel_000002"
    assert plan[0].prompt == "a dermoscopic lesion photo of actinic keratosis for skin cancer diagnosis"
    assert template_prompt("mel") == "a dermoscopic lesion photo of melanoma for skin cancer diagnosis"
    assert plan[1].seed_for(2) == 101 + 2 * ATTEMPT_STRIDE
    assert build_plan(train, CATS, "balance", seed=100, prompt_source="template") == plan


def test_description_prompts_cycle_through_the_class_descriptions_deterministically():
    train = _train({"akiec": 0, "mel": 3, "nv": 1})
    plan = build_plan(train, CATS, "counts", counts={"akiec": 1, "mel": 6}, prompt_source="descriptions", seed=7)
    mel = [s.prompt for s in plan if s.category == "mel"]
    real_mel = set(train.loc[train.category == "mel", "description"])
    assert set(mel[:3]) == real_mel and mel[3:] == mel[:3]  # each description once per cycle
    assert plan[0].prompt == template_prompt("akiec")  # no real description of that class: template
    again = build_plan(train, CATS, "counts", counts={"akiec": 1, "mel": 6}, prompt_source="descriptions", seed=7)
    assert again == plan


def _dataset(tmp_path, classes: list[str], counts: dict[str, int]):
    import json

    (tmp_path / "categories.json").write_text(json.dumps(classes))
    return _train(counts)


def test_plan_classes_default_to_the_dataset_classes(tmp_path):
    from components.generator.synthesis_plan import plan_classes

    train = _dataset(tmp_path, ["mel", "nv"], {"mel": 2, "nv": 5})
    assert plan_classes(tmp_path, train) == ["mel", "nv"]            # not the seven configured HAM10000 codes
    assert plan_classes(tmp_path, train, ["nv"]) == ["nv"]
    plan = build_plan(train, plan_classes(tmp_path, train), "balance", {}, 1.0, "template", 0)
    assert class_counts(pd.DataFrame([vars(s) for s in plan]), ["mel", "nv"]) == {"mel": 3, "nv": 0}


def test_plan_classes_refuse_classes_outside_the_dataset_or_without_training_images(tmp_path):
    from components.errors import DataError
    from components.generator.synthesis_plan import plan_classes

    train = _dataset(tmp_path, ["df", "mel", "nv"], {"mel": 2, "nv": 5})   # df: only in the test split
    with pytest.raises(ConfigError, match=r"synthesize.categories: \['vasc'\] are not classes of the real dataset"):
        plan_classes(tmp_path, train, ["mel", "vasc"])
    with pytest.raises(DataError, match=r"no real training image of \['df'\]; the generator cannot learn them"):
        plan_classes(tmp_path, train)


@pytest.mark.parametrize("key, value, message", [
    ("num_inference_steps", 0, r"synthesize.num_inference_steps: 0; use a whole number >= 1"),
    ("batch_size", -2, r"synthesize.batch_size: -2; use a whole number >= 1"),
    ("max_attempts", 0, r"synthesize.max_attempts: 0; use a whole number >= 1"),
    ("resolution", -64, r"synthesize.resolution: -64; use 0"),
    ("categories", ["mel", "mel"], r"names a class twice"),
])
def test_synthesize_config_rejects_unusable_values(key, value, message):
    from components.generator.synthesis_config import SynthesizeConfig

    with pytest.raises(ConfigError, match=message):
        SynthesizeConfig(**{key: value})


def test_synthesize_zero_steps_is_a_one_line_error(tmp_path, capsys):
    from pipelines import synthesize

    with pytest.raises(SystemExit) as info:
        synthesize.main(["--set", "num_inference_steps=0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: synthesize.num_inference_steps: 0; use a whole number >= 1")
