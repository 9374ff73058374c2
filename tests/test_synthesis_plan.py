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
