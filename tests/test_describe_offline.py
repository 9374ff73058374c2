"""Describe stage without any server: answer checks, offline template, cache, budget, manifest filling."""
from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from components.data.manifest import read_manifest
from components.data.prompts import description_prefix
from components.describe import (
    DescribeConfig,
    DescribeItem,
    DescriptionCache,
    TemplateDescriber,
    apply_descriptions,
    cache_key,
    check_description,
    create_describer,
    resolve_backend,
)
from components.describe.budget import Budget
from components.describe.template_describer import compose
from components.errors import ConfigError, DataError
from pipelines import describe as describe_stage
from tests.describe_support import make_dataset


def _items(root: Path, df: pd.DataFrame) -> list[DescribeItem]:
    return [DescribeItem(r.image_id, r.category, root / r.image_path, root / r.mask_path)
            for r in df.itertuples()]


# -- answer checks ---------------------------------------------------------------------------------------

def test_check_accepts_and_canonicalises_the_prefix():
    got = check_description('"**A Dermoscopic lesion photo of Melanoma for skin cancer diagnosis,...** showing an '
                            'atypical pigment network\n and a blue-white veil."', "mel", 60, 300)
    assert got.ok
    assert got.text == ("a dermoscopic lesion photo of melanoma for skin cancer diagnosis, showing an atypical "
                        "pigment network and a blue-white veil.")


def test_check_accepts_a_common_alias_of_the_category():
    got = check_description("a dermoscopic lesion photo of nevus for skin cancer diagnosis, regular network "
                            "fading at the periphery.", "nv", 60, 300)
    assert got.ok and got.text.startswith(description_prefix("melanocytic nevus"))


@pytest.mark.parametrize("answer, reason", [
    ("Sure! This image shows a melanoma with an atypical network.", "missing the prefix"),
    ("a dermoscopic lesion photo of melanoma for skin cancer diagnosis, tiny.", "too short"),
    ("a dermoscopic lesion photo of melanoma for skin cancer diagnosis, " + "x" * 300, "too long"),
    ("a dermoscopic lesion photo of melanoma for skin cancer diagnosis,", "nothing after the prefix"),
    ("a dermoscopic lesion photo of basal cell carcinoma for skin cancer diagnosis, arborizing vessels and "
     "blue-grey ovoid nests.", "names 'basal cell carcinoma' instead of 'melanoma'"),
    ("   ", "empty"),
])
def test_check_rejects_with_a_reason(answer, reason):
    got = check_description(answer, "mel", 80, 300)
    assert not got.ok and reason in got.reason


# -- offline template describer ---------------------------------------------------------------------------

def test_template_is_varied_valid_and_deterministic(tmp_path):
    df = make_dataset(tmp_path, {"mel": 12, "bcc": 12, "vasc": 4, "scc": 3})
    items = _items(tmp_path, df)
    first = TemplateDescriber(seed=0).describe(items)
    again = TemplateDescriber(seed=0).describe(items)
    assert [r.description for r in first] == [r.description for r in again]
    for category in ("mel", "bcc"):
        texts = [r.description for r, it in zip(first, items) if it.category == category]
        assert len(set(texts)) >= 10, texts  # >= 10 distinct among 12 images of one class
    for result, item in zip(first, items):
        check = check_description(result.description, item.category, 100, 500)
        assert check.ok, (check.reason, result.description)
        assert check.text == result.description
        assert (result.describer, result.model, result.status) == ("template", "template-v1", "template")
    mel = " ".join(r.description for r, it in zip(first, items) if it.category == "mel")
    vasc = " ".join(r.description for r, it in zip(first, items) if it.category == "vasc")
    assert "lacunae" in vasc or "lagoons" in vasc
    assert "lacunae" not in mel and ("network" in mel or "veil" in mel or "streaks" in mel)
    other_seed = TemplateDescriber(seed=1).describe(items)
    assert sum(a.description != b.description for a, b in zip(first, other_seed)) >= len(items) // 2


def test_template_depends_on_image_content_not_on_id(tmp_path):
    df = make_dataset(tmp_path, {"nv": 2})
    a, b = _items(tmp_path, df)
    twin = DescribeItem("another_id", "nv", a.image_path, a.mask_path)
    describer = TemplateDescriber()
    assert describer.describe_one(twin) == describer.describe_one(a) != describer.describe_one(b)


def test_template_measures_lesion_size_from_the_mask(tmp_path):
    small = compose("nv", "s", fraction=0.01, contrast=0.5)
    large = compose("nv", "s", fraction=0.6, contrast=0.5)
    assert "small" in small and "large" in large and "high contrast" in large


# -- cache ------------------------------------------------------------------------------------------------

def test_cache_round_trip_skips_a_partial_line_and_is_thread_safe(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = DescriptionCache(path)
    assert path.exists() and len(cache) == 0
    key = cache_key("ab" * 32, "gpt-4o-mini", "prompt")
    assert key != cache_key("ab" * 32, "gpt-4o", "prompt") != cache_key("ab" * 32, "gpt-4o-mini", "prompt 2")
    cache.put(key, "a description", model="gpt-4o-mini")
    with path.open("a") as fh:
        fh.write('{"key": "half-writ')  # an interrupted append
    reloaded = DescriptionCache(path)
    assert reloaded.get(key)["description"] == "a description" and reloaded.skipped_lines == 1

    threads = [threading.Thread(target=lambda t=t: [reloaded.put(f"k{t}-{i}", f"d{t}-{i}") for i in range(25)])
               for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = DescriptionCache(path)
    assert len(final) == 1 + 8 * 25 and final.skipped_lines == 1
    assert final.get("k7-24")["description"] == "d7-24"


# -- budget -----------------------------------------------------------------------------------------------

def test_budget_calibrates_on_the_first_answer_then_stops_before_the_cap():
    budget = Budget(0.0025, price_input_per_mtok=1.0, price_output_per_mtok=1.0)
    assert budget.cost(1000, 100) == pytest.approx(0.0011)
    first = budget.reserve()
    assert first == 0.0
    got = []
    waiter = threading.Thread(target=lambda: got.append(budget.reserve()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # no second request before the first answer's cost is known
    budget.settle(first, budget.cost(1000, 100))
    waiter.join(2)
    assert got == [pytest.approx(0.0011)]  # 0.0011 spent + 0.0011 fits in 0.0025
    budget.settle(got[0], 0.0011)
    assert budget.reserve() is None and budget.exhausted  # 0.0022 + 0.0011 > 0.0025
    assert budget.spent == pytest.approx(0.0022)


def test_budget_without_cap_and_with_zero_cap():
    assert Budget(None, 1, 1).reserve() == 0.0
    assert Budget(0.0, 1, 1).reserve() is None


# -- config, backend choice, manifest filling --------------------------------------------------------------

def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="backend"):
        DescribeConfig(backend="claude")
    with pytest.raises(ConfigError, match="prompt"):
        DescribeConfig(prompt="Describe this {diagnosis}")
    with pytest.raises(ConfigError, match="min_chars"):
        DescribeConfig(min_chars=300, max_chars=200)


def test_backend_auto_follows_the_environment(tmp_path):
    cfg = DescribeConfig(out_dir=str(tmp_path))
    assert resolve_backend(cfg, {}) == "template"
    assert resolve_backend(cfg, {"OPENAI_API_KEY": "k"}) == "openai"
    assert resolve_backend(cfg, {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}) == "openai"
    assert resolve_backend(DescribeConfig(backend="template"), {"OPENAI_API_KEY": "k"}) == "template"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_describer(DescribeConfig(backend="openai", out_dir=str(tmp_path)), env={})


def test_apply_descriptions_fills_matching_rows(tmp_path):
    manifest = pd.DataFrame({"image_id": ["a", "b", "c"], "description": ["old a", "old b", ""]})
    csv = tmp_path / "descriptions.csv"
    pd.DataFrame({"image_id": ["a", "c", "zzz"], "description": ["new a", "new c", "other"],
                  "describer": "template", "model": "template-v1"}).to_csv(csv, index=False)
    out = apply_descriptions(manifest, csv)
    assert out["description"].tolist() == ["new a", "old b", "new c"]
    assert manifest["description"].tolist() == ["old a", "old b", ""]  # input untouched
    with pytest.raises(DataError, match="none of its"):
        apply_descriptions(pd.DataFrame({"image_id": ["q"], "description": [""]}), csv)
    with pytest.raises(DataError, match="describe"):
        apply_descriptions(manifest, tmp_path / "missing.csv")
    # The stage's current layout, with status and reason, reads the same way.
    pd.DataFrame({"image_id": ["a", "c"], "description": ["llm a", "fallback c"], "describer": ["openai", "template"],
                  "model": ["gpt-4o-mini", "template-v1"], "status": ["llm", "fallback"],
                  "reason": ["", "circuit_open"]}).to_csv(csv, index=False)
    assert apply_descriptions(manifest, csv)["description"].tolist() == ["llm a", "old b", "fallback c"]


def test_png_data_url_reencodes_and_downscales():
    import base64

    from components.describe.openai_describer import png_data_url
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 80, 3), 120, np.uint8)).save(buf, format="JPEG")
    url = png_data_url(buf.getvalue(), max_side=20)
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        assert im.format == "PNG" and im.size == (20, 10)
    with pytest.raises(DataError, match="cannot decode"):
        png_data_url(b"not an image", where="x.png")


# -- the stage, offline ------------------------------------------------------------------------------------

def test_stage_offline_writes_descriptions_metrics_and_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "describe-offline-test")
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "real"
    make_dataset(data, {"mel": 3, "nv": 3, "df": 2})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"describe": {"data_dir": str(data), "out_dir": str(tmp_path / "desc"),
                                                   "metrics_file": str(tmp_path / "m" / "describe.json")}}))
    describe_stage.main(["--params", str(params), "--set", "splits=[train]"])

    out = pd.read_csv(tmp_path / "desc" / "descriptions.csv", dtype=str, keep_default_na=False)
    assert list(out.columns) == ["image_id", "description", "describer", "model", "status", "reason"]
    assert len(out) == 5 and set(out["describer"]) == {"template"}  # train rows: images 0 and 2 of each class
    assert set(out["status"]) == {"template"} and set(out["reason"]) == {""}
    train_items = [it for it in _items(data, read_manifest(data)) if it.image_id in set(out["image_id"])]
    assert out["description"].tolist() == [r.description for r in TemplateDescriber(seed=0).describe(train_items)]
    assert (tmp_path / "desc" / "cache.jsonl").read_text() == ""
    metrics = json.loads((tmp_path / "m" / "describe.json").read_text())
    assert metrics["template"] == metrics["images"] == 5 and metrics["requests"] == 0
    assert metrics["backend"] == "template" and metrics["distinct_descriptions"] == 5
    filled = apply_descriptions(read_manifest(data), tmp_path / "desc" / "descriptions.csv")
    train = filled[filled["split"] == "train"]
    assert all(d.startswith(description_prefix("melanoma")) for d in train[train.category == "mel"].description)
    assert (filled[filled["split"] == "test"]["description"] == "").all()


def test_repo_params_section_loads_and_matches_mlproject(repo_root):
    from components.config import load_section
    cfg = load_section(DescribeConfig, "describe", repo_root / "params.yaml")
    assert cfg == DescribeConfig()  # params.yaml states the code's defaults
    entry = yaml.safe_load((repo_root / "MLproject").read_text())["entry_points"]["describe"]
    for name, spec in entry["parameters"].items():
        if name != "params":
            assert str(spec["default"]) == str(getattr(cfg, name)), name
    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["describe"]
    assert "data/real" in stage["deps"] and stage["params"] == ["describe"]
