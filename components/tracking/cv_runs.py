"""The MLflow side of the cross-validation runner: one run per architecture nested in the stage run, a child
run per fold × training set, confusion matrices and prediction overlays as images, and the registration of
each architecture's best checkpoint (alias `challenger`)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature

import components
from components.downstream import plots
from components.downstream.config import Resolved
from components.downstream.runner import CVCallbacks, load_checkpoint, run_cv, uses_synthetic
from components.downstream.tasks import Evaluation
from components.hashing import file_digest
from components.tracking import registry
from components.tracking.figures import log_figure
from components.tracking.mlflow_setup import metric_key, stage_run

log = logging.getLogger(__name__)


def run_tracked_cv(task, cfg: Resolved) -> dict:
    """`run_cv` inside the stage's MLflow run, reported by `MlflowCVCallbacks`; logs what it runs and did."""
    log.info("%s: preset %s, %s, %d folds, %d px, train sets %s", task.name, cfg.preset, cfg.architectures,
             cfg.n_folds, cfg.image_size, cfg.train_sets)
    inputs = {"real": cfg.real_dir}
    if uses_synthetic(cfg):
        inputs["synthetic"] = cfg.synthetic_dir
    executor = None
    if cfg.workers > 0 or cfg.ray_address:
        from components.distributed.cv_workers import RayCVExecutor

        executor = RayCVExecutor(cfg.ray_address, cfg.workers, cfg.device)
    with stage_run(task.name, params=cfg.as_dict(), inputs=inputs):
        result = run_cv(task, cfg, MlflowCVCallbacks(task, cfg), executor)
    log.info("%s: %d trainings run, %d resumed from %s in %.0f s", task.name, result["trainings_run"],
             result["trainings_skipped"], result["results_csv"], result["seconds"])
    return result


class MlflowCVCallbacks(CVCallbacks):
    """Logs the protocol into the active (stage) run."""

    def __init__(self, task, cfg: Resolved):
        self.task = task
        self.cfg = cfg

    def started(self, external_note: str) -> None:
        mlflow.set_tag("external_note", external_note or "external set evaluated")

    @contextlib.contextmanager
    def architecture(self, arch: str, fingerprint: str, epochs: int) -> Iterator[None]:
        with mlflow.start_run(run_name=f"{self.task.name}-{arch}", nested=True):
            mlflow.set_tags({"task": self.task.name, "arch": arch, "level": "architecture",
                             "fingerprint": fingerprint})
            mlflow.log_params({"arch": arch, "epochs": epochs, "fingerprint": fingerprint})
            yield

    @contextlib.contextmanager
    def training(self, arch: str, seed: int, fold: int, train_set: str, fingerprint: str,
                 info: dict[str, Any]) -> Iterator[str]:
        with mlflow.start_run(run_name=f"{arch}-seed{seed}-fold{fold}-{train_set}", nested=True) as run:
            mlflow.set_tags({"task": self.task.name, "arch": arch, "seed": str(seed), "fold": str(fold),
                             "train_set": train_set, "level": "fold", "fingerprint": fingerprint})
            mlflow.log_params({"arch": arch, "seed": seed, "fold": fold, "train_set": train_set, **info})
            yield run.info.run_id

    def trained(self, losses: list[float], seconds: float) -> None:
        for epoch, loss in enumerate(losses):
            mlflow.log_metric("train_loss", loss, step=epoch)
        mlflow.log_metric("train_seconds", seconds)

    def evaluated(self, eval_set: str, ev: Evaluation, categories: list[str], arch: str, train_set: str,
                  fold: int) -> None:
        mlflow.log_metrics({f"{eval_set}.{k}": float(v) for k, v in ev.scores.items() if np.isfinite(v)})
        if "per_class_recall" in ev.arrays:
            mlflow.log_metrics({f"{eval_set}.recall.{c}": float(v)
                                for c, v in zip(categories, ev.arrays["per_class_recall"])})
        if eval_set != "test":
            return
        if "confusion_matrix" in ev.arrays:
            fig = plots.confusion_figure(np.asarray(ev.arrays["confusion_matrix"]), categories,
                                         f"{arch} · {train_set} · fold {fold} · real test split")
            log_figure(fig, "confusion_test.png")
        if ev.examples is not None:
            ex = ev.examples
            log_figure(plots.segmentation_figure(ex["images"], ex["truths"], ex["preds"], ex["ids"]),
                       "predictions_test.png")

    def architecture_done(self, arch: str, metrics: dict[str, float], figures: list[Path]) -> None:
        if metrics:
            mlflow.log_metrics({metric_key(k): v for k, v in metrics.items()})
        for path in figures:
            mlflow.log_artifact(str(path))

    def best_model(self, arch: str, fingerprint: str, path: Path, meta: dict[str, Any]) -> None:
        if self.cfg.register:
            register_checkpoint(self.task, self.cfg, arch, fingerprint, path)

    def finished(self, result: dict[str, Any], results_csv: Path) -> None:
        mlflow.log_metrics({"trainings_run": result["trainings_run"], "seconds": result["seconds"]})
        for c in result.get("comparisons", []):
            key = metric_key(f"vs_real.{c['arch']}.{c['train_set']}.{c['metric']}")
            mlflow.log_metrics({f"{key}.delta": c["delta"], f"{key}.ci_low": c["ci_low"],
                                f"{key}.ci_high": c["ci_high"]})
            mlflow.set_tag(f"{key}.verdict", c["verdict"])
        mlflow.log_artifact(str(results_csv))


def register_checkpoint(task, cfg: Resolved, arch: str, fingerprint: str, path: Path) -> None:
    """Log a runner checkpoint as an MLflow pytorch model and register it (alias challenger) unless the
    challenger already holds the same file."""
    name = task.registry_name(arch)
    sha = file_digest(path, "sha1")
    current = registry.version_for_alias(name, "challenger")
    if current is not None and (current.tags or {}).get("checkpoint_sha") == sha:
        log.info("%s@challenger already holds %s; not registering again", name, path)
        return
    model, meta = load_checkpoint(path)
    example = task.example_input(cfg)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model, name="model", signature=infer_signature(example, output), serialization_format="pickle",
        code_paths=[str(Path(components.__file__).parent)],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchvision", "timm",
                          "segmentation-models-pytorch"])
    version = registry.register(info.model_uri, name, alias="challenger", tags={
        "checkpoint_sha": sha, "train_set": meta["train_set"], "seed": meta.get("seed", ""), "fold": meta["fold"],
        "fingerprint": fingerprint, "selected_on": "real validation split",
        "input": "float32 Bx3xHxW in [0, 1]", "categories": ",".join(meta.get("categories", []))})
    registry.record_version_metrics(name, version, {f"val_{meta['metric']}": meta["val_score"],
                                                    f"test_{meta['metric']}": meta["test_score"]},
                                    source=meta["run_id"])
    mlflow.set_tag("registered_version", f"{name}/{version}")
