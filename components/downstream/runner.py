"""The cross-validation runner shared by the `classify` and `segment` stages.

    summary = run_cv(SegmentationTask(), resolve(cfg, "segment"))

For each architecture (one MLflow parent run, nested in the stage run) and each fold × training set (one child
run): build the training set (cv.build_training_sets), train, evaluate on the fold's held-out real images, the
real test split and the optional external set, record the rows in <out_dir>/results.csv, keep the best
checkpoint per (architecture, training set) by the held-out fold score, and finally register the best model of
each architecture (alias `challenger`). A training whose rows are recorded under the current config
fingerprint is skipped, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

import components
from components import atomic
from components.data import manifest
from components.data.transforms import build_transforms
from components.downstream import cv, plots
from components.downstream.config import Resolved
from components.downstream.results import ResultStore, current_rows, summarise, summed_confusion
from components.downstream.tasks import Evaluation, better
from components.downstream.training import TrainSettings, resolve_device
from components.errors import DataError
from components.tracking import registry
from components.tracking.figures import log_figure
from components.tracking.lineage import dvc_md5
from components.tracking.mlflow_setup import stage_run

log = logging.getLogger(__name__)

CATEGORIES_FILE = "categories.json"
EXTERNAL_STAMP = "import.json"
CACHE_EVAL_MAX_SIZE = 256   # evaluation images are kept in memory up to this side length


class CachedDataset(Dataset):
    """Keeps the items of a deterministic (evaluation) dataset after their first load."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        if i not in self._items:
            self._items[i] = self.dataset[i]
        return self._items[i]


def load_categories(root: str | Path, df: pd.DataFrame) -> list[str]:
    """The class list of a dataset folder (categories.json, else the manifest's sorted categories)."""
    path = Path(root) / CATEGORIES_FILE
    if path.is_file():
        return list(json.loads(path.read_text()))
    return sorted(df["category"].astype(str).unique())


def load_external(cfg: Resolved, categories: list[str], needs_masks: bool) -> tuple[pd.DataFrame | None, str]:
    """The external test rows (with their root), or None and the reason it is skipped.

    `external_dir` is a prepared dataset folder (manifest.csv) or a HAM10000 download, which is imported once
    (components.data.importers, resized to the real data's size) into <out_dir>/external.
    """
    if not cfg.external_dir:
        return None, "no external test set configured (external_dir is empty): Table 3 is skipped"
    src = Path(cfg.external_dir)
    if not src.is_dir() or not any(src.iterdir()):
        return None, f"external_dir {src} is missing or empty: Table 3 is skipped"
    if (src / manifest.MANIFEST_NAME).is_file() or (src / "manifest.parquet").is_file():
        root = src
    else:
        from components.data.importers import ImportOptions, import_dataset

        root = Path(cfg.out_dir) / "external"
        size = int(manifest.read_manifest(cfg.real_dir)["width"].max())
        stamp = {"source": str(src.resolve()), "size": size, "categories": categories}
        stamp_file = root / EXTERNAL_STAMP
        if not stamp_file.is_file() or json.loads(stamp_file.read_text()) != stamp:
            log.info("importing the external HAM10000 set from %s into %s (once)", src, root)
            import_dataset("ham10000", src, root, ImportOptions(size=size, categories=tuple(categories),
                                                                require_masks=False, progress=cfg.progress))
            atomic.write_json(stamp_file, stamp)
    df = manifest.read_manifest(root)
    unknown = sorted(set(df["category"]) - set(categories))
    if unknown:
        raise DataError(f"{root}: external classes {unknown} are not among the trained classes {categories}")
    if needs_masks:
        df = df[df["mask_path"].astype(str) != ""]
        if df.empty:
            return None, f"external set {root} has no masks: segmentation rows of Table 3 are skipped"
    return cv.with_root(df, root), ""


# The code whose change changes results: part of the fingerprint, so a rerun after such a change retrains.
RESULT_CODE = ("components/downstream/training.py", "components/downstream/classifiers.py",
               "components/downstream/segmenters.py", "components/downstream/cv.py", "components/downstream/tasks.py",
               "components/downstream/metrics.py", "components/data/transforms.py", "components/data/torch_dataset.py")


def _data_hash(path: str | Path) -> str:
    return dvc_md5(path) if Path(path).exists() else "absent"


def code_hash() -> str:
    """Hash of the training / evaluation code (RESULT_CODE)."""
    root = Path(components.__file__).resolve().parent.parent
    h = hashlib.sha1()
    for rel in RESULT_CODE:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:12]


def _file_sha(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_path(out_dir: str | Path, arch: str, train_set: str) -> Path:
    """Best checkpoint of one architecture trained on one training set (chosen by held-out fold score)."""
    return Path(out_dir) / arch / f"{train_set}.pt"


def read_checkpoint_meta(path: Path) -> dict | None:
    side = path.with_suffix(".json")
    return json.loads(side.read_text()) if side.is_file() else None


def save_checkpoint(path: Path, model: torch.nn.Module, meta: dict) -> None:
    """State dict + metadata (torch file) and the metadata alone as a JSON sidecar, both atomic."""
    with atomic.atomic_path(path) as tmp:
        torch.save({"meta": meta, "state_dict": model.state_dict()}, tmp)
    atomic.write_json(path.with_suffix(".json"), meta)


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model saved by the runner (classifier or segmenter) from its checkpoint file."""
    from components.downstream.classifiers import create_classifier
    from components.downstream.segmenters import create_segmenter

    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob["meta"]
    if meta["task"] == "classify":
        model = create_classifier(meta["arch"], meta["num_classes"], image_size=meta["image_size"])
    else:
        model = create_segmenter(meta["arch"], num_classes=1)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), meta


def _log_evaluation(task, prefix: str, ev: Evaluation, categories: list[str], arch: str, train_set: str,
                    fold: int) -> None:
    mlflow.log_metrics({f"{prefix}.{k}": float(v) for k, v in ev.scores.items() if np.isfinite(v)})
    if "per_class_recall" in ev.arrays:
        mlflow.log_metrics({f"{prefix}.recall.{c}": float(v) for c, v in zip(categories, ev.arrays["per_class_recall"])})
    if prefix == "test" and "confusion_matrix" in ev.arrays:
        fig = plots.confusion_figure(np.asarray(ev.arrays["confusion_matrix"]), categories,
                                     f"{arch} · {train_set} · fold {fold} · real test split")
        log_figure(fig, "confusion_test.png")
    if prefix == "test" and ev.examples is not None:
        ex = ev.examples
        log_figure(plots.segmentation_figure(ex["images"], ex["truths"], ex["preds"], ex["ids"]), "predictions_test.png")


def run_cv(task, cfg: Resolved) -> dict:
    """Run (or resume) the whole protocol for `task` under `cfg`; returns the summary written to metrics."""
    started = time.perf_counter()
    real_df = manifest.read_manifest(cfg.real_dir)
    categories = load_categories(cfg.real_dir, real_df)
    if task.needs_masks:
        manifest.require_masks(real_df, cfg.real_dir, task.name)
    real_df = cv.with_root(real_df, cfg.real_dir)
    cv.assert_real_only(real_df, f"{cfg.real_dir}/{manifest.MANIFEST_NAME}")
    real_train = real_df[real_df["split"] == "train"].reset_index(drop=True)
    real_test = real_df[real_df["split"] == "test"].reset_index(drop=True)
    if real_train.empty or real_test.empty:
        raise DataError(f"{cfg.real_dir}: needs both 'train' and 'test' rows (has {real_df['split'].value_counts().to_dict()})")

    pool = None
    if any(s in ("synthetic", "hybrid") for s in cfg.train_sets):
        if not Path(cfg.synthetic_dir).is_dir():
            raise DataError(f"{cfg.synthetic_dir}: synthetic dataset not found; run the synthesize stage "
                            f"(dvc repro synthesize) or set train_sets to [real]")
        synth_df = manifest.read_manifest(cfg.synthetic_dir)
        if task.needs_masks:
            manifest.require_masks(synth_df, cfg.synthetic_dir, task.name)
        pool = cv.with_root(cv.synthetic_pool(synth_df, f"{cfg.synthetic_dir}/{manifest.MANIFEST_NAME}"),
                            cfg.synthetic_dir)
    external, note = load_external(cfg, categories, task.needs_masks)
    if note:
        log.info(note)
    eval_names = ["val", "test"] + (["external"] if external is not None else [])

    data_hashes = {"real": _data_hash(cfg.real_dir), "code": code_hash()}
    if pool is not None:
        data_hashes["synthetic"] = _data_hash(cfg.synthetic_dir)
    if external is not None:
        data_hashes["external"] = _data_hash(cfg.external_dir)
    fingerprints = {arch: cfg.fingerprint(arch, data_hashes) for arch in cfg.architectures}
    folds = cv.stratified_folds(real_train["category"], cfg.n_folds, cfg.seed)
    store = ResultStore(Path(cfg.out_dir) / "results.csv")
    device = resolve_device(cfg.device)
    num_classes = len(categories)

    eval_tf = build_transforms(task.transform_kind, cfg.image_size, train=False)
    cache = (lambda ds: CachedDataset(ds)) if cfg.image_size <= CACHE_EVAL_MAX_SIZE else (lambda ds: ds)
    test_ds = cache(cv.make_eval_dataset(real_test, eval_tf, categories, "real test split", task.needs_masks))
    external_ds = (cache(cv.make_eval_dataset(external, eval_tf, categories, "external set", task.needs_masks))
                   if external is not None else None)

    counts = {"trained": 0, "skipped": 0}
    total = len(cfg.architectures) * cfg.n_folds * len(cfg.train_sets)
    bar = tqdm(total=total, desc=f"{task.name} CV", disable=not cfg.progress, unit="model")
    inputs = {"real": cfg.real_dir}
    if pool is not None:
        inputs["synthetic"] = cfg.synthetic_dir
    with stage_run(task.name, params=cfg.as_dict(), inputs=inputs):
        mlflow.set_tag("external_note", note or "external set evaluated")
        for arch in cfg.architectures:
            fp = fingerprints[arch]
            with mlflow.start_run(run_name=f"{task.name}-{arch}", nested=True):
                mlflow.set_tags({"task": task.name, "arch": arch, "level": "architecture", "fingerprint": fp})
                mlflow.log_params({"arch": arch, "epochs": cfg.epochs_for(arch), "fingerprint": fp})
                for fold, (tr_idx, va_idx) in enumerate(folds):
                    pending = [s for s in cfg.train_sets if not store.done(fp, arch, s, fold, eval_names)]
                    bar.update(len(cfg.train_sets) - len(pending))
                    counts["skipped"] += len(cfg.train_sets) - len(pending)
                    if not pending:
                        continue
                    fold_train = cv.cap_stratified(real_train.iloc[tr_idx], cfg.max_train_images, cfg.seed + fold)
                    fold_val = real_train.iloc[va_idx]
                    sets = cv.build_training_sets(fold_train, pool, pending, cfg.seed + fold, where=f"fold {fold}")
                    val_ds = cache(cv.make_eval_dataset(fold_val, eval_tf, categories, f"fold {fold} held-out",
                                                        task.needs_masks))
                    eval_sets = {"val": val_ds, "test": test_ds}
                    if external_ds is not None:
                        eval_sets["external"] = external_ds
                    for train_set in pending:
                        _train_one(task, cfg, arch, fp, fold, train_set, sets, eval_sets, categories, num_classes,
                                   device, store)
                        counts["trained"] += 1
                        bar.update(1)
                arch_rows = current_rows(store.df, {arch: fp})
                _log_architecture_summary(task, cfg, arch, arch_rows, categories)
                if cfg.register:
                    _register_best(task, cfg, arch, fp)
        rows = current_rows(store.df, fingerprints)
        summary = summarise(rows, task.metrics)
        result = {
            "task": task.name, "preset": cfg.preset, "config": cfg.as_dict(), "fingerprints": fingerprints,
            "categories": categories, "external": note or "evaluated",
            "summary": summary,
            "headline": {a: {s: {m: v["mean"] for m, v in cells.get("test", {}).items()} for s, cells in by_set.items()}
                         for a, by_set in summary.items()},
            "trainings_run": counts["trained"], "trainings_skipped": counts["skipped"],
            "seconds": round(time.perf_counter() - started, 1),
            "results_csv": str(store.path),
        }
        atomic.write_json(cfg.metrics_file, result)
        mlflow.log_metrics({"trainings_run": counts["trained"], "seconds": result["seconds"]})
        mlflow.log_artifact(str(store.path))
    bar.close()
    return result


def _train_one(task, cfg: Resolved, arch: str, fp: str, fold: int, train_set: str, sets: cv.TrainingSets,
               eval_sets: dict[str, Dataset], categories: list[str], num_classes: int, device: torch.device,
               store: ResultStore) -> None:
    frame = sets.frames[train_set]
    n_real = int((frame["source"] == "real").sum())
    settings = TrainSettings(
        epochs=cfg.epochs_for(arch), batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
        lr_schedule=cfg.lr_schedule, device=str(device), amp=cfg.amp, num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory and device.type == "cuda", seed=cfg.seed + fold, progress=cfg.progress,
        desc=f"{arch} fold {fold} {train_set}")
    eval_settings = TrainSettings(batch_size=cfg.eval_batch_size, device=str(device), amp=cfg.amp,
                                  num_workers=cfg.num_workers, pin_memory=settings.pin_memory)
    train_tf = build_transforms(task.transform_kind, cfg.image_size, train=True, seed=cfg.seed + fold)
    with mlflow.start_run(run_name=f"{arch}-fold{fold}-{train_set}", nested=True) as run:
        mlflow.set_tags({"task": task.name, "arch": arch, "fold": str(fold), "train_set": train_set,
                         "level": "fold", "fingerprint": fp})
        info = {"n_train": len(frame), "n_train_real": n_real, "n_train_synthetic": len(frame) - n_real,
                "n_train_unique": sets.synthetic_unique.get(train_set, len(frame)),
                "resampled_classes": ",".join(sets.resampled_classes.get(train_set, [])),
                "epochs": settings.epochs}
        mlflow.log_params({"arch": arch, "fold": fold, "train_set": train_set, **info})
        torch.manual_seed(cfg.seed + fold)  # same initial weights for the three training sets of a fold
        model = task.create(arch, cfg, num_classes)
        train_ds = cv.make_dataset(frame, train_tf, categories, require_mask=task.needs_masks)
        history = task.train(model, train_ds, settings)
        for epoch, loss in enumerate(history["loss_history"]):
            mlflow.log_metric("train_loss", loss, step=epoch)
        rows, evaluations = [], {}
        for name, ds in eval_sets.items():
            t0 = time.perf_counter()
            ev = task.evaluate(model, ds, eval_settings, cfg, num_classes)
            evaluations[name] = ev
            _log_evaluation(task, name, ev, categories, arch, train_set, fold)
            rows.append({"fingerprint": fp, "task": task.name, "arch": arch, "train_set": train_set, "fold": fold,
                         "eval_set": name, **info, "n_eval": len(ds), "image_size": cfg.image_size,
                         "train_seconds": round(history["train_seconds"], 2),
                         "eval_seconds": round(time.perf_counter() - t0, 2), "run_id": run.info.run_id,
                         **ev.scores, **ev.arrays})
        mlflow.log_metric("train_seconds", history["train_seconds"])
        primary = evaluations["val"].scores[task.primary_metric]
        path = checkpoint_path(cfg.out_dir, arch, train_set)
        old = read_checkpoint_meta(path)
        old_score = old["val_score"] if old and old.get("fingerprint") == fp and path.is_file() else None
        if better(task.primary_metric, primary, old_score):
            meta = {"task": task.name, "arch": arch, "train_set": train_set, "fold": fold, "fingerprint": fp,
                    "num_classes": num_classes, "categories": categories, "image_size": cfg.image_size,
                    "metric": task.primary_metric, "val_score": primary,
                    "test_score": evaluations["test"].scores[task.primary_metric], "run_id": run.info.run_id}
            save_checkpoint(path, model.cpu(), meta)
        store.add(rows)  # recorded last: a crash before this line reruns the training


def _log_architecture_summary(task, cfg: Resolved, arch: str, rows: pd.DataFrame, categories: list[str]) -> None:
    summary = summarise(rows, task.metrics).get(arch, {})
    metrics = {}
    for train_set, by_eval in summary.items():
        for eval_set, cells in by_eval.items():
            for m, cell in cells.items():
                metrics[f"{train_set}.{eval_set}.{m}.mean"] = cell["mean"]
                metrics[f"{train_set}.{eval_set}.{m}.std"] = cell["std"]
    if metrics:
        mlflow.log_metrics(metrics)
    if task.name != "classify" or rows.empty:
        return
    for train_set in cfg.train_sets:
        cm = summed_confusion(rows[(rows["train_set"] == train_set) & (rows["eval_set"] == "test")])
        if cm is not None:
            fig = plots.confusion_figure(cm, categories, f"{arch} · {train_set} · real test split, all folds")
            log_figure(fig, f"confusion_test_{train_set}.png",
                       save_to=Path(cfg.out_dir) / arch / f"confusion_test_{train_set}.png")


def _register_best(task, cfg: Resolved, arch: str, fp: str) -> None:
    """Log the best checkpoint of `arch` (by held-out fold score over all training sets) and register it."""
    best_path, best_meta = None, None
    for train_set in cfg.train_sets:
        path = checkpoint_path(cfg.out_dir, arch, train_set)
        meta = read_checkpoint_meta(path)
        if meta and meta.get("fingerprint") == fp and path.is_file():
            if best_meta is None or better(task.primary_metric, meta["val_score"], best_meta["val_score"]):
                best_path, best_meta = path, meta
    if best_path is None:
        return
    name = task.registry_name(arch)
    sha = _file_sha(best_path)
    current = registry.version_for_alias(name, "challenger")
    if current is not None and (current.tags or {}).get("checkpoint_sha") == sha:
        log.info("%s@challenger already holds %s; not registering again", name, best_path)
        return
    from mlflow.models import infer_signature

    model, meta = load_checkpoint(best_path)
    example = task.example_input(cfg)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model, name="model", signature=infer_signature(example, output), serialization_format="pickle",
        code_paths=[str(Path(components.__file__).parent)],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchvision", "timm",
                          "segmentation-models-pytorch"])
    version = registry.register(info.model_uri, name, alias="challenger", tags={
        "checkpoint_sha": sha, "train_set": meta["train_set"], "fold": meta["fold"], "fingerprint": fp,
        "input": "float32 Bx3xHxW in [0, 1]", "categories": ",".join(meta.get("categories", []))})
    registry.record_version_metrics(name, version, {f"val_{meta['metric']}": meta["val_score"],
                                                    f"test_{meta['metric']}": meta["test_score"]},
                                    source=meta["run_id"])
    mlflow.set_tag("registered_version", f"{name}/{version}")
