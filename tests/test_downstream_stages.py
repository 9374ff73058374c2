"""Micro end-to-end run of the classify, segment and report stages (2 folds, 1 epoch, tiny models, 32 px).

Checks: results recorded per fold / training set / evaluation set, training sets of identical size (and the two
balanced sets of one larger size), no synthetic image ever evaluated, per-image predictions and the comparisons
with real-only, MLflow parent + child runs and the registered model, the external (HAM10000-format) set,
the report tables and figures, and that a rerun resumes instead of retraining.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from components.data import manifest
from components.data.toy import generate_toy
from components.downstream.config import DownstreamConfig, ReportConfig, resolve
from components.downstream.runner import run_cv
from components.downstream.tasks import ClassificationTask
from components.tracking.cv_runs import run_tracked_cv
from components.tracking.mlflow_setup import configure


class RecordingTask(ClassificationTask):
    """The real classification task, also noting which image ids each training and evaluation saw."""

    def __init__(self):
        self.trained: list[set[str]] = []
        self.evaluated: list[set[str]] = []

    @staticmethod
    def _ids(dataset) -> set[str]:
        return {dataset[i]["image_id"] for i in range(len(dataset))}

    def train(self, model, dataset, settings):
        self.trained.append(self._ids(dataset))
        return super().train(model, dataset, settings)

    def evaluate(self, model, dataset, settings, cfg, num_classes):
        self.evaluated.append(self._ids(dataset))
        return super().evaluate(model, dataset, settings, cfg, num_classes)


def _synthetic_copy(src_seed: int, root):
    generate_toy(root, n_images=48, size=32, seed=src_seed, workers=1, progress=False)
    df = manifest.read_manifest(root)
    df["image_id"] = "syn_" + df["image_id"]
    df["source"] = "synthetic"
    df["split"] = "train"
    df["prompt"] = df["description"]
    df["seed"] = range(len(df))
    df["generator_version"] = "test"
    df["num_inference_steps"] = 2
    df["guidance_scale"] = 1.0
    manifest.write_manifest(df, root)


def _ham10000_folder(root, scratch):
    """A HAM10000-style download: metadata CSV with dx, JPEG images, <id>_segmentation.png masks."""
    generate_toy(scratch, n_images=14, size=32, seed=3, workers=1, progress=False)
    df = manifest.read_manifest(scratch)
    (root / "HAM10000_images_part_1").mkdir(parents=True)
    (root / "HAM10000_segmentations_lesion_tschandl").mkdir()
    rows = []
    for i, r in enumerate(df.itertuples()):
        image_id = f"ISIC_{i:07d}"
        Image.open(scratch / r.image_path).save(root / "HAM10000_images_part_1" / f"{image_id}.jpg", quality=95)
        Image.open(scratch / r.mask_path).save(root / "HAM10000_segmentations_lesion_tschandl" / f"{image_id}_segmentation.png")
        rows.append({"lesion_id": f"HAM_{i:07d}", "image_id": image_id, "dx": r.category, "dx_type": "histo"})
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)


@pytest.fixture
def project(tmp_path, monkeypatch):
    generate_toy(tmp_path / "data/real", n_images=60, size=32, seed=1, workers=1, progress=False, val_fraction=0.2)
    _synthetic_copy(2, tmp_path / "data/synthetic")
    _ham10000_folder(tmp_path / "ham", tmp_path / "scratch")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"downstream-{uuid.uuid4().hex[:8]}")
    return tmp_path


def _cfg(task: str, arch: str, **kw) -> DownstreamConfig:
    return DownstreamConfig(preset="cpu", architectures=[arch], n_folds=2, image_size=32, batch_size=8,
                            eval_batch_size=32, epochs=1, max_train_images=0, lr=1e-3, progress=False,
                            out_dir=f"models/downstream/{task}", metrics_file=f"metrics/{task}.json", **kw)


def test_micro_cv_classify_segment_report(project, capsys):
    from pipelines import classify, report, segment

    real = manifest.read_manifest("data/real")
    synthetic_ids = set(manifest.read_manifest("data/synthetic")["image_id"])

    # --- classify (through run_cv with a recording task), with the HAM10000-format external set
    task = RecordingTask()
    result = run_tracked_cv(task, resolve(_cfg("classify", "tiny_cnn", external_dir="ham"), "classify"))
    assert result["trainings_run"] == 10 and result["external"] == "evaluated"
    for ids in task.evaluated:
        assert not ids & synthetic_ids                       # no synthetic image ever evaluated
        assert all(not i.startswith("syn_") for i in ids)
    assert any(ids & synthetic_ids for ids in task.trained)  # ... while the synthetic / hybrid sets trained on them

    rows = pd.read_csv("models/downstream/classify/results.csv")
    assert len(rows) == 2 * 5 * 3                             # folds x training sets x (val, test, external)
    assert set(rows["eval_set"]) == {"val", "test", "external"}
    paper = rows[rows["train_set"].isin(["real", "synthetic", "hybrid"])]
    assert (paper.groupby("fold")["n_train"].nunique() == 1).all()   # identical size within each fold
    balanced = rows[rows["train_set"].isin(["real+synthetic", "real+augmentation"])]
    assert (balanced.groupby("fold")["n_train"].nunique() == 1).all()
    assert balanced["n_train"].min() > paper["n_train"].max()
    both = balanced[balanced["eval_set"] == "test"].set_index(["fold", "train_set"])
    assert (both.xs("real+augmentation", level=1)["n_train_synthetic"] == 0).all()
    assert (both.xs("real+synthetic", level=1)["n_train_real"]
            == paper[(paper["train_set"] == "real") & (paper["eval_set"] == "test")].set_index("fold")["n_train"]).all()
    assert (rows["steps"].groupby(rows["fold"]).nunique() == 1).all()  # equal_steps: one budget per fold
    hybrid = rows[rows["train_set"] == "hybrid"].iloc[0]
    assert abs(hybrid["n_train_real"] - hybrid["n_train_synthetic"]) <= 1
    assert (rows.loc[rows["eval_set"] == "test", "n_eval"] == (real["split"] == "test").sum()).all()
    assert (rows.loc[rows["eval_set"] == "val", "n_eval"] == (real["split"] == "val").sum()).all()
    # the validation split is evaluated, never trained on; per-image test predictions kept for every training
    val_ids = set(real.loc[real["split"] == "val", "image_id"])
    assert not any(ids & val_ids for ids in task.trained) and val_ids in task.evaluated
    fp = result["fingerprints"]["tiny_cnn"]
    preds = pd.read_csv(f"models/downstream/classify/predictions/{fp}/tiny_cnn/real+synthetic/s42_f1_test.csv")
    assert len(preds) == (real["split"] == "test").sum() and {"label", "prediction"} <= set(preds.columns)
    assert 0 <= result["feature_baseline"]["f1"] <= 1 and result["feature_baseline"]["n_eval"] == len(preds)
    compared = {(c["train_set"], c["metric"]) for c in result["comparisons"]}
    assert {("synthetic", "f1"), ("real+augmentation", "balanced_accuracy")} <= compared
    assert all(c["n_runs"] == 2 and c["verdict"] in ("helps", "hurts", "no detectable difference")
               and c["ci_low"] <= c["delta"] <= c["ci_high"] for c in result["comparisons"])
    assert (rows.loc[rows["eval_set"] == "external", "n_eval"] == 14).all()

    # --- MLflow: stage run > architecture run > one child per fold and training set; model registered
    configure()
    client = MlflowClient()
    exp = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    runs = client.search_runs([exp.experiment_id], max_results=200)
    stage = [r for r in runs if r.data.tags.get("stage") == "classify"]
    arch = [r for r in runs if r.data.tags.get("level") == "architecture" and r.data.tags.get("task") == "classify"]
    folds = [r for r in runs if r.data.tags.get("level") == "fold" and r.data.tags.get("task") == "classify"]
    assert len(stage) == 1 and len(arch) == 1 and len(folds) == 10
    assert arch[0].data.tags["mlflow.parentRunId"] == stage[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in folds} == {arch[0].info.run_id}
    assert "real.test.f1.mean" in arch[0].data.metrics and "real.test.f1.std" in arch[0].data.metrics
    assert "confusion_test.png" in {a.path for a in client.list_artifacts(folds[0].info.run_id)}
    version = client.get_model_version_by_alias("skindualgen-classifier-tiny_cnn", "challenger")
    assert "metric.test_f1" in version.tags and "metric.val_f1" in version.tags
    assert "real_plus_synthetic.test.f1.mean" in arch[0].data.metrics
    assert "vs_real.tiny_cnn.real_plus_synthetic.f1.verdict" in stage[0].data.tags

    # --- resume: the same settings and data retrain nothing
    again = classify.run(_cfg("classify", "tiny_cnn", external_dir="ham"))
    assert again["trainings_run"] == 0 and again["trainings_skipped"] == 10
    assert again["comparisons"] == json.loads(json.dumps(result["comparisons"]))
    assert len(client.search_model_versions("name='skindualgen-classifier-tiny_cnn'")) == 1

    # --- segment through the stage function (no external set: Table 3 segmentation rows skipped)
    seg = segment.run(_cfg("segment", "tiny_unet"))
    assert seg["trainings_run"] == 10
    assert set(seg["summary"]["tiny_unet"]) == {"real", "synthetic", "hybrid", "real+synthetic", "real+augmentation"}
    assert {(c["train_set"], c["metric"]) for c in seg["comparisons"]} >= {("hybrid", "dice"), ("hybrid", "hd95")}
    assert {"dice", "iou", "asd", "hd", "hd95"} <= set(seg["summary"]["tiny_unet"]["hybrid"]["test"])
    assert client.get_model_version_by_alias("skindualgen-segmenter-tiny_unet", "challenger") is not None

    # --- report: tables from the recorded rows, bar plot, XAI figure
    xai_ids = real[real["split"] == "test"].sort_values("image_id")["image_id"].head(2).tolist()
    out = report.run(ReportConfig(xai_occlusion_window=8, xai_image_ids=xai_ids))
    printed = capsys.readouterr().out
    table2 = (project / "reports/table2.md").read_text()
    assert "Tiny CNN (test)" in table2 and "Tiny U-Net (test)" in table2 and "50% Real + 50% Synth" in table2
    assert "Table 2" in printed and "Table 3" in printed
    t2 = pd.read_csv(project / "reports/table2.csv")
    test_f1 = rows[(rows["eval_set"] == "test") & (rows["train_set"] == "real")]["f1"].mean() * 100
    recorded = t2[(t2["arch"] == "tiny_cnn") & (t2["train_set"] == "real") & (t2["eval_set"] == "test")]
    assert recorded["f1_mean"].iloc[0] == pytest.approx(test_f1)          # built from the recorded metrics
    assert "quality stage has not run" in (project / "reports/table1.md").read_text()
    table3 = (project / "reports/table3.md").read_text()
    assert "Tiny CNN (test)" in table3 and "Hybrid" in table3
    assert (project / "reports/figures/downstream/real_synthetic_hybrid.png").stat().st_size > 0
    assert out["xai_figures"] == ["reports/figures/downstream/xai_tiny_cnn.png"]
    assert json.loads((project / "metrics/report.json").read_text())["headline"]["tiny_cnn/hybrid"]["f1"] >= 0


def test_synthetic_row_in_real_data_is_refused(project):
    df = manifest.read_manifest("data/real")
    df.loc[df.index[df["split"] == "test"][0], "source"] = "synthetic"
    manifest.write_manifest(df, "data/real")
    from components.downstream.cv import SyntheticInEvaluationError

    with pytest.raises(SyntheticInEvaluationError):
        run_cv(ClassificationTask(), resolve(_cfg("classify", "tiny_cnn", train_sets=["real"]), "classify"))


class RecordingCallbacks:
    """A CVCallbacks stand-in that notes every report, in order."""

    def __init__(self):
        self.events: list[tuple] = []

    def started(self, note):
        self.events.append(("started", note))

    @contextlib.contextmanager
    def architecture(self, arch, fingerprint, epochs):
        self.events.append(("architecture", arch, epochs))
        yield
        self.events.append(("architecture_end", arch))

    @contextlib.contextmanager
    def training(self, arch, seed, fold, train_set, fingerprint, info):
        self.events.append(("training", fold, train_set, info["n_train"]))
        yield f"id-{fold}-{train_set}"

    def trained(self, losses, seconds):
        self.events.append(("trained", len(losses)))

    def evaluated(self, eval_set, ev, categories, arch, train_set, fold):
        self.events.append(("evaluated", fold, eval_set, round(ev.scores["f1"], 6)))

    def architecture_done(self, arch, metrics, figures):
        self.events.append(("architecture_done", sorted(k for k in metrics if k.startswith("real.test.f1")),
                            [p.name for p in figures if p.is_file()]))

    def best_model(self, arch, fingerprint, path, meta):
        self.events.append(("best_model", path.name, meta["run_id"]))

    def finished(self, result, results_csv):
        self.events.append(("finished", result["trainings_run"], results_csv.is_file()))


def test_runner_reports_through_callbacks_without_tracking(project):
    import mlflow

    callbacks = RecordingCallbacks()
    result = run_cv(ClassificationTask(), resolve(_cfg("classify", "tiny_cnn", train_sets=["real"]), "classify"),
                    callbacks)
    kinds = [e[0] for e in callbacks.events]
    assert kinds == ["started", "architecture",
                     "training", "trained", "evaluated", "evaluated",
                     "training", "trained", "evaluated", "evaluated",
                     "architecture_done", "best_model", "architecture_end", "finished"]
    evaluated = [e[1:3] for e in callbacks.events if e[0] == "evaluated"]
    assert evaluated == [(0, "val"), (0, "test"), (1, "val"), (1, "test")]
    assert callbacks.events[-3][0] == "best_model" and callbacks.events[-3][1] == "real.pt"
    assert callbacks.events[-3][2] in {"id-0-real", "id-1-real"}       # the id the training context yielded
    summary = ("architecture_done", ["real.test.f1.mean", "real.test.f1.std"], ["confusion_test_real.png"])
    assert summary in callbacks.events
    assert callbacks.events[-1] == ("finished", 2, True) and result["trainings_run"] == 2
    rows = pd.read_csv("models/downstream/classify/results.csv")
    assert set(rows["run_id"]) == {"id-0-real", "id-1-real"}
    test_f1 = [e[3] for e in callbacks.events if e[0] == "evaluated" and e[2] == "test"]
    assert rows[rows["eval_set"] == "test"].sort_values("fold")["f1"].round(6).tolist() == test_f1
    assert mlflow.active_run() is None
    configure()
    exp = MlflowClient().get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    assert exp is None or not MlflowClient().search_runs([exp.experiment_id])   # nothing was tracked
