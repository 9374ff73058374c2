"""Report tables from recorded numbers: aggregation by hand, Table 1 from the quality stage's metrics."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from components.downstream import report as R


def _rows():
    base = {"task": "classify", "arch": "resnet34", "fingerprint": "abc"}
    rows = []
    for fold, (f1_real, f1_hybrid) in enumerate([(0.5, 0.6), (0.7, 0.8)]):
        for train_set, f1 in (("real", f1_real), ("hybrid", f1_hybrid)):
            for eval_set in ("val", "test"):
                rows.append({**base, "train_set": train_set, "fold": fold, "eval_set": eval_set, "f1": f1,
                             "accuracy": f1, "sensitivity": f1, "precision": f1})
    return pd.DataFrame(rows)


def test_aggregate_mean_and_sample_std_in_percent():
    agg = R.aggregate(_rows(), ["f1"])
    real = agg[(agg["train_set"] == "real") & (agg["eval_set"] == "test")].iloc[0]
    assert real["f1_mean"] == pytest.approx(60.0)
    assert real["f1_std"] == pytest.approx(14.142135, rel=1e-5)     # sample std of 50 and 70
    assert real["n_folds"] == 2
    assert list(agg["train_set"].unique()) == ["real", "hybrid"]     # paper order


def test_table2_lists_rows_with_cv_column_and_table3_note():
    t2 = R.table2(_rows(), pd.DataFrame())
    assert "| ResNet34 | Real only | 60.000 ± 14.142 |" in t2.markdown
    assert "70.000 ± 14.142" in t2.markdown                          # hybrid on the test split
    assert "No segmentation results recorded" in t2.markdown
    t3 = R.table3(_rows(), pd.DataFrame())
    assert t3.note and "external_dir" in t3.markdown


def test_load_results_keeps_the_current_fingerprint(tmp_path):
    rows = _rows()
    stale = rows.assign(fingerprint="old", f1=0.0)
    csv = tmp_path / "results.csv"
    pd.concat([stale, rows]).to_csv(csv, index=False)
    (tmp_path / "classify.json").write_text(json.dumps({"fingerprints": {"resnet34": "abc"}}))
    loaded = R.load_results(csv, tmp_path / "classify.json")
    assert set(loaded["fingerprint"]) == {"abc"} and len(loaded) == len(rows)
    assert R.load_results(tmp_path / "missing.csv").empty


def test_table1_from_quality_metrics_or_note(tmp_path):
    missing = R.table1(tmp_path / "quality.json")
    assert "quality stage has not run" in missing.markdown
    quality = {
        "fd_key": "fd_vae", "kid_key": "kid_vae", "feature_space": "vae",
        "real_train_vs_real_test": {"n_a": 10, "n_b": 5, "fd_vae": 12.5, "kid_vae": 0.01, "lpips": None,
                                    "ms_ssim": 0.2, "consistency_dice": 0.9, "per_class": {}},
        "real_train_vs_synthetic_train": {"n_a": 10, "n_b": 8, "fd_vae": 20.25, "kid_vae": 0.03, "lpips": None,
                                          "ms_ssim": 0.25, "consistency_dice": 0.8, "per_class": {}},
        "lpips_reason": "no local weights",
    }
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(quality))
    t1 = R.table1(path)
    assert "| Real Train vs Synth Train | 20.2500 | 0.0300 | – | 0.2500 | 0.8000 |" in t1.markdown
    assert "LPIPS unavailable: no local weights" in t1.markdown
    assert list(t1.frame["comparison"]) == ["Real Train vs Real Test", "Real Train vs Synth Train"]


def _comparison(train_set: str, metric: str, base: float, value: float, low: float, high: float, verdict: str) -> dict:
    return {"arch": "resnet34", "train_set": train_set, "baseline": "real", "metric": metric, "baseline_value": base,
            "value": value, "delta": value - base, "ci_low": low, "ci_high": high, "run_std": 0.01, "n_runs": 3,
            "n_images": 400, "n_boot": 2000, "verdict": verdict, "level": 0.95}


def test_verdict_table_from_the_recorded_comparisons(tmp_path):
    classify = {"categories": ["df", "nv"], "minority_classes": ["df"],
                "feature_baseline": {"f1": 0.6, "balanced_accuracy": 0.7, "per_class_recall": {"df": 0.5, "nv": 0.9},
                                     "n_eval": 400, "method": "boosting"},
                "comparisons": [
        _comparison("real+synthetic", "f1", 0.50, 0.55, 0.02, 0.08, "helps"),
        _comparison("hybrid", "minority_recall", 0.40, 0.30, -0.2, -0.01, "hurts")]}
    (tmp_path / "classify.json").write_text(json.dumps(classify))
    table = R.verdict_table(tmp_path / "classify.json", tmp_path / "absent.json")
    lines = table.markdown.splitlines()
    assert "| Real + Synth (balanced) | macro F1 | 50.0 % | 55.0 % | +5.0 [+2.0, +8.0] pp | 1.0 pp | helps |" in lines
    assert "| 50% Real + 50% Synth | minority recall | 40.0 % | 30.0 % | -10.0 [-20.0, -1.0] pp | 1.0 pp | hurts |" \
        in lines
    assert "Minority recall: mean recall of df" in table.markdown
    assert ("Feature baseline on the same 400 test images (boosting): macro F1 60.0 %, balanced accuracy 70.0 %, "
            "minority recall 50.0 %.") in table.markdown
    assert "Segmentation: no comparison recorded" in table.markdown
    assert table.frame["verdict"].tolist() == ["helps", "hurts"] and set(table.frame["task"]) == {"classification"}
    empty = R.verdict_table(tmp_path / "absent.json", tmp_path / "absent.json")
    assert empty.note == "no comparison recorded" and empty.frame.empty


def test_show_results_prints_the_verdict_last(tmp_path, capsys):
    from pipelines.show_results import print_results

    (tmp_path / "reports").mkdir()
    for name in ("verdict.md", "table1.md", "table2.md", "downstream.md"):
        (tmp_path / "reports" / name).write_text(f"# {name}\n")
    print_results(tmp_path)
    out = capsys.readouterr().out
    assert out.index("# table1.md") < out.index("# table2.md") < out.index("# verdict.md")
    assert "# downstream.md" not in out          # the concatenation of the tables is not printed twice
