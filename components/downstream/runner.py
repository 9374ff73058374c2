"""The cross-validation runner shared by the `classify` and `segment` stages.

    summary = run_cv(SegmentationTask(), resolve(cfg, "segment"))

For each architecture and each seed × fold × training set: build the training set (cv.build_training_sets),
train, evaluate on the real validation split, the real test split and the optional external set, record the
rows in <out_dir>/results.csv and the per-image outputs under <out_dir>/predictions/, and keep the best
checkpoint per (architecture, training set) by the validation score (the test split is only reported). A training
whose rows are recorded under the current config fingerprint is skipped, so an interrupted run resumes where it
stopped. The summary compares every training set with real-only on the test split (components.downstream
.comparisons: paired bootstrap intervals and a verdict).

The runner knows nothing of tracking: it reports through a `CVCallbacks` object (every method a no-op here).
`components.tracking.cv_runs` implements it with one MLflow run per architecture, a child run per training,
and the registration of each architecture's best checkpoint.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch

import components
from components import atomic
from components.data import manifest
from components.downstream import comparisons, cv, plots
from components.downstream.config import Resolved
from components.downstream.results import ResultStore, current_rows, summarise, summed_confusion
from components.downstream.tasks import Evaluation, better
from components.downstream.cv_jobs import CVJob, Executor, JobResult, JobRunner
from components.downstream.predictions import prediction_file, write_predictions
from components.errors import DataError
from components.hashing import dvc_md5
from components.images import save_figure
from components.progress import progress_bar

log = logging.getLogger(__name__)

EXTERNAL_STAMP = "import.json"



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
                                                                require_masks=False, val_fraction=0.0,
                                                                progress=cfg.progress))
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
RESULT_CODE = ("components/downstream/training.py", "components/downstream/cv_jobs.py", "components/downstream/classifiers.py",
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




def checkpoint_path(out_dir: str | Path, arch: str, train_set: str) -> Path:
    """Best checkpoint of one architecture trained on one training set (chosen by the validation score)."""
    return Path(out_dir) / arch / f"{train_set}.pt"


def read_checkpoint_meta(path: Path) -> dict | None:
    side = path.with_suffix(".json")
    return json.loads(side.read_text()) if side.is_file() else None


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict) -> None:
    """State dict + metadata (torch file) and the metadata alone as a JSON sidecar, both atomic."""
    with atomic.atomic_path(path) as tmp:
        torch.save({"meta": meta, "state_dict": state_dict}, tmp)
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


class CVCallbacks:
    """What the runner reports, in order; every method is a no-op here (a run without tracking)."""

    def started(self, external_note: str) -> None:
        """Inputs are read; `external_note` says whether the external set is evaluated."""

    @contextlib.contextmanager
    def architecture(self, arch: str, fingerprint: str, epochs: int) -> Iterator[None]:
        """Around the trainings of one architecture."""
        yield

    @contextlib.contextmanager
    def training(self, arch: str, seed: int, fold: int, train_set: str, fingerprint: str,
                 info: dict[str, Any]) -> Iterator[str]:
        """Around one training and its evaluations; yields the id recorded with its rows ('' when untracked)."""
        yield ""

    def trained(self, losses: list[float], seconds: float) -> None:
        """The training finished with these per-epoch losses."""

    def evaluated(self, eval_set: str, ev: Evaluation, categories: list[str], arch: str, train_set: str,
                  fold: int) -> None:
        """The trained model was scored on `eval_set` (val, test or external)."""

    def architecture_done(self, arch: str, metrics: dict[str, float], figures: list[Path]) -> None:
        """Mean/std over folds per training set and evaluation set, and the summary figures saved for `arch`."""

    def best_model(self, arch: str, fingerprint: str, path: Path, meta: dict[str, Any]) -> None:
        """The best checkpoint of `arch` over all training sets (by the validation score)."""

    def finished(self, result: dict[str, Any], results_csv: Path) -> None:
        """Every training is recorded; `result` is what was written to the metrics file."""


@dataclass
class CVInputs:
    """Everything the protocol reads: real splits, the synthetic pool, the optional external set."""
    categories: list[str]
    real_train: pd.DataFrame
    real_val: pd.DataFrame
    real_test: pd.DataFrame
    pool: pd.DataFrame | None
    external: pd.DataFrame | None
    external_note: str

    @property
    def eval_names(self) -> list[str]:
        return ["val", "test"] + (["external"] if self.external is not None else [])


@dataclass
class _Run:
    """The state one protocol run shares between its steps."""
    task: Any
    cfg: Resolved
    inputs: CVInputs
    callbacks: CVCallbacks
    store: ResultStore
    execute: Executor
    counts: dict[str, int]
    comparisons: list[dict] = field(default_factory=list)


def run_cv(task, cfg: Resolved, callbacks: CVCallbacks | None = None, executor: Executor | None = None) -> dict:
    """Run (or resume) the whole protocol for `task` under `cfg`; returns the summary written to metrics.

    `executor` runs the trainings (default: one after another in this process); the runner records each result
    in job order, so the tables do not depend on where or how many jobs ran at once.
    """
    started = time.perf_counter()
    callbacks = callbacks or CVCallbacks()
    inputs = read_inputs(task, cfg)
    if inputs.external_note:
        log.info(inputs.external_note)
    callbacks.started(inputs.external_note)
    data_hashes = _data_hashes(cfg, inputs)
    fingerprints = {arch: cfg.fingerprint(arch, data_hashes) for arch in cfg.architectures}
    run = _Run(task=task, cfg=cfg, inputs=inputs, callbacks=callbacks,
               store=ResultStore(Path(cfg.out_dir) / "results.csv"),
               execute=executor or JobRunner(cfg.device).map, counts={"trained": 0, "skipped": 0})
    folds = {seed: cv.stratified_folds(inputs.real_train["category"], cfg.n_folds, seed) for seed in cfg.seeds}
    total = len(cfg.architectures) * len(cfg.seeds) * cfg.n_folds * len(cfg.train_sets)
    with progress_bar(total=total, desc=f"{task.name} CV", disable=not cfg.progress, unit="model") as bar:
        for arch in cfg.architectures:
            _run_architecture(run, arch, fingerprints[arch], folds, bar)
    baseline = feature_baseline(task, cfg, inputs, data_hashes["real"]) if cfg.feature_baseline else None
    result = _result(run, fingerprints, started)
    result["feature_baseline"] = baseline
    atomic.write_json(cfg.metrics_file, result)
    callbacks.finished(result, run.store.path)
    return result


def read_inputs(task, cfg: Resolved) -> CVInputs:
    """Read and check the real data, the synthetic pool (when a training set needs it) and the external set."""
    real_df = manifest.read_manifest(cfg.real_dir)
    categories = manifest.read_categories(cfg.real_dir, real_df)
    if task.needs_masks:
        manifest.require_masks(real_df, cfg.real_dir, task.name)
    real_df = cv.with_root(real_df, cfg.real_dir)
    cv.assert_real_only(real_df, f"{cfg.real_dir}/{manifest.MANIFEST_NAME}")
    parts = {split: real_df[real_df["split"] == split].reset_index(drop=True) for split in manifest.SPLITS}
    empty = [split for split, part in parts.items() if part.empty]
    if empty:
        counts = real_df["split"].value_counts().to_dict()
        raise DataError(f"{cfg.real_dir}/{manifest.MANIFEST_NAME}: no {' or '.join(repr(e) for e in empty)} rows "
                        f"(has {counts}); the protocol trains on 'train', selects on 'val' and reports 'test': "
                        f"rerun prepare with test_fraction and val_fraction > 0 (e.g. 0.2 and 0.15)")
    pool = _synthetic_pool(task, cfg) if uses_synthetic(cfg) else None
    external, note = load_external(cfg, categories, task.needs_masks)
    return CVInputs(categories, parts["train"], parts["val"], parts["test"], pool, external, note)


def uses_synthetic(cfg: Resolved) -> bool:
    """Whether a configured training set draws on the synthetic dataset."""
    return any(s in cv.SYNTHETIC_SETS for s in cfg.train_sets)


def _synthetic_pool(task, cfg: Resolved) -> pd.DataFrame:
    if not Path(cfg.synthetic_dir).is_dir():
        raise DataError(f"{cfg.synthetic_dir}: synthetic dataset not found; run the synthesize stage "
                        f"(dvc repro synthesize) or set train_sets to [real]")
    synth_df = manifest.read_manifest(cfg.synthetic_dir)
    if task.needs_masks:
        manifest.require_masks(synth_df, cfg.synthetic_dir, task.name)
    return cv.with_root(cv.synthetic_pool(synth_df, f"{cfg.synthetic_dir}/{manifest.MANIFEST_NAME}"),
                        cfg.synthetic_dir)


def _data_hashes(cfg: Resolved, inputs: CVInputs) -> dict[str, str]:
    """Hashes of the data the protocol reads and of the result code (part of every architecture's fingerprint)."""
    data_hashes = {"real": _data_hash(cfg.real_dir), "code": code_hash()}
    if inputs.pool is not None:
        data_hashes["synthetic"] = _data_hash(cfg.synthetic_dir)
    if inputs.external is not None:
        data_hashes["external"] = _data_hash(cfg.external_dir)
    return data_hashes


def _run_architecture(run: _Run, arch: str, fp: str, folds: dict[int, list], bar) -> None:
    """Every pending seed × fold × training set of one architecture, its summary and its best checkpoint."""
    jobs = list(_pending_jobs(run, arch, fp, folds, bar))
    with run.callbacks.architecture(arch, fp, run.cfg.epochs_for(arch)):
        for result in run.execute(jobs):
            _record(run, result)
            run.counts["trained"] += 1
            bar.update(1)
        rows = current_rows(run.store.df, {arch: fp})
        run.comparisons += _comparisons(run, arch, fp, rows)
        run.callbacks.architecture_done(arch, _summary_metrics(run, arch, rows), _summary_figures(run, arch, rows))
        best = best_checkpoint(run.task, run.cfg, arch, fp)
        if best is not None:
            run.callbacks.best_model(arch, fp, *best)


def _pending_jobs(run: _Run, arch: str, fp: str, folds: dict[int, list], bar) -> Iterator[CVJob]:
    """The trainings of `arch` not yet recorded under its fingerprint, seed by seed and fold by fold (recorded ones
    are counted)."""
    cfg, inputs = run.cfg, run.inputs
    eval_frames = {"val": inputs.real_val, "test": inputs.real_test,
                   **({"external": inputs.external} if inputs.external is not None else {})}
    for seed, seed_folds in folds.items():
        for fold, (tr_idx, _) in enumerate(seed_folds):
            pending = [s for s in cfg.train_sets if not run.store.done(fp, arch, s, seed, fold, inputs.eval_names)]
            skipped = len(cfg.train_sets) - len(pending)
            bar.update(skipped)
            run.counts["skipped"] += skipped
            if not pending:
                continue
            fold_train = cv.cap_stratified(inputs.real_train.iloc[tr_idx], cfg.max_train_images, seed * 1000 + fold)
            where = f"seed {seed} fold {fold}"
            sets = cv.build_training_sets(fold_train, inputs.pool, pending, seed * 1000 + fold, where=where)
            steps = cfg.epochs_for(arch) * _batches(len(fold_train), cfg.batch_size) if cfg.equal_steps else 0
            for train_set in pending:
                frame = sets.frames[train_set]
                n_real = int((frame["source"] == "real").sum())
                info = {"n_train": len(frame), "n_train_real": n_real, "n_train_synthetic": len(frame) - n_real,
                        "n_train_unique": sets.synthetic_unique.get(train_set, len(frame)),
                        "resampled_classes": ",".join(sets.resampled_classes.get(train_set, [])),
                        "epochs": cfg.epochs_for(arch), "steps": steps or _batches(len(frame), cfg.batch_size)
                        * cfg.epochs_for(arch)}
                yield CVJob(run.task, cfg, arch, fp, seed, fold, train_set, frame, eval_frames, inputs.categories,
                            steps=steps, info=info)


def feature_baseline(task, cfg: Resolved, inputs: CVInputs, real_hash: str) -> dict:
    """The test-split scores of the simple feature baseline (components.downstream.feature_baseline): gradient
    boosting on colour / shape / texture features fitted on the whole real training split (classification), Otsu
    thresholding (segmentation, at the judges' image size). Kept in <out_dir>/feature_baseline.json for the same
    data, size and code."""
    from components.downstream import feature_baseline as fb

    key = {"task": task.name, "real": real_hash, "image_size": cfg.image_size,
           "code": dvc_md5(fb.__file__)}
    path = Path(cfg.out_dir) / "feature_baseline.json"
    if path.is_file() and json.loads(path.read_text()).get("key") == key:
        return json.loads(path.read_text())["scores"]
    log.info("%s: scoring the feature baseline on the real test split", task.name)
    if task.name == "classify":
        found = fb.classify_baseline(inputs.real_train, inputs.real_test, inputs.categories)
        scores = {k: found[k] for k in ("f1", "balanced_accuracy", "accuracy", "per_class_recall", "n_train")}
        scores["method"] = "gradient boosting on colour, shape and texture features, fitted on the training split"
    else:
        found = fb.segment_baseline(inputs.real_test, image_size=cfg.image_size)
        scores = {k: found[k] for k in task.metrics}
        scores["method"] = "Otsu threshold of the blue channel's drop below the skin colour, one central component"
    scores["n_eval"] = len(inputs.real_test)
    atomic.write_json(path, {"key": key, "scores": scores})
    return scores


def _comparisons(run: _Run, arch: str, fp: str, rows: pd.DataFrame) -> list[dict]:
    """Every training set of `arch` against real-only on the test split (paired bootstrap, a verdict each)."""
    if rows.empty or "real" not in run.cfg.train_sets:
        return []
    found = comparisons.compare_architecture(run.task.name, run.cfg.out_dir, fp, arch, rows, run.cfg.train_sets,
                                             run.inputs.categories,
                                             comparisons.minority(run.inputs.real_train, run.inputs.categories),
                                             seed=run.cfg.seed)
    return comparisons.as_records(arch, found)


def _batches(n: int, batch_size: int) -> int:
    """Optimiser steps of one pass over n rows (the loader drops a last batch of one)."""
    full, rest = divmod(n, batch_size)
    return max(1, full + (rest > 1))


def _result(run: _Run, fingerprints: dict[str, str], started: float) -> dict:
    cfg, task = run.cfg, run.task
    summary = summarise(current_rows(run.store.df, fingerprints), task.metrics)
    return {
        "task": task.name, "preset": cfg.preset, "config": cfg.as_dict(), "fingerprints": fingerprints,
        "categories": run.inputs.categories, "external": run.inputs.external_note or "evaluated",
        "summary": summary,
        "comparisons": run.comparisons,
        "minority_classes": comparisons.minority(run.inputs.real_train, run.inputs.categories)
        if task.name == "classify" else [],
        "headline": {a: {s: {m: v["mean"] for m, v in cells.get("test", {}).items()} for s, cells in by_set.items()}
                     for a, by_set in summary.items()},
        "trainings_run": run.counts["trained"], "trainings_skipped": run.counts["skipped"],
        "seconds": round(time.perf_counter() - started, 1),
        "results_csv": str(run.store.path),
    }


def _record(run: _Run, result: JobResult) -> None:
    """Report one finished training, keep its checkpoint if best, write its per-image outputs, then record its rows
    (last: a crash before that line reruns the training)."""
    job, task, cfg = result.job, run.task, run.cfg
    with run.callbacks.training(job.arch, job.seed, job.fold, job.train_set, job.fingerprint, job.info) as run_id:
        run.callbacks.trained(result.losses, result.train_seconds)
        rows = []
        for name, ev in result.evaluations.items():
            run.callbacks.evaluated(name, ev, job.categories, job.arch, job.train_set, job.fold)
            if ev.per_image is not None:
                write_predictions(prediction_file(cfg.out_dir, job.fingerprint, job.arch, job.train_set, job.seed,
                                                  job.fold, name), ev.per_image)
            rows.append({"fingerprint": job.fingerprint, "task": task.name, "arch": job.arch,
                         "train_set": job.train_set, "seed": job.seed, "fold": job.fold, "eval_set": name,
                         **job.info, "n_eval": result.n_eval[name], "image_size": cfg.image_size,
                         "train_seconds": round(result.train_seconds, 2), "eval_seconds": result.eval_seconds[name],
                         "run_id": run_id, **ev.scores, **ev.arrays})
        _keep_if_best(run, result, run_id)
        run.store.add(rows)


def _keep_if_best(run: _Run, result: JobResult, run_id: str) -> None:
    """Save the weights as the (arch, training set) checkpoint when its validation score beats the kept one."""
    job, task = result.job, run.task
    primary = result.evaluations["val"].scores[task.primary_metric]
    path = checkpoint_path(run.cfg.out_dir, job.arch, job.train_set)
    old = read_checkpoint_meta(path)
    old_score = old["val_score"] if old and old.get("fingerprint") == job.fingerprint and path.is_file() else None
    if better(task.primary_metric, primary, old_score):
        meta = {"task": task.name, "arch": job.arch, "train_set": job.train_set, "seed": job.seed, "fold": job.fold,
                "fingerprint": job.fingerprint, "num_classes": len(job.categories), "categories": job.categories,
                "image_size": run.cfg.image_size, "metric": task.primary_metric, "val_score": primary,
                "test_score": result.evaluations["test"].scores[task.primary_metric], "run_id": run_id}
        save_checkpoint(path, result.state_dict, meta)


def _summary_metrics(run: _Run, arch: str, rows: pd.DataFrame) -> dict[str, float]:
    """`<train_set>.<eval_set>.<metric>.mean|std` over the folds of `arch`."""
    metrics = {}
    for train_set, by_eval in summarise(rows, run.task.metrics).get(arch, {}).items():
        for eval_set, cells in by_eval.items():
            for m, cell in cells.items():
                metrics[f"{train_set}.{eval_set}.{m}.mean"] = cell["mean"]
                metrics[f"{train_set}.{eval_set}.{m}.std"] = cell["std"]
    return metrics


def _summary_figures(run: _Run, arch: str, rows: pd.DataFrame) -> list[Path]:
    """Classification: the test confusion matrix summed over folds, per training set, saved beside the results."""
    if run.task.name != "classify" or rows.empty:
        return []
    saved = []
    for train_set in run.cfg.train_sets:
        cm = summed_confusion(rows[(rows["train_set"] == train_set) & (rows["eval_set"] == "test")])
        if cm is not None:
            title = f"{arch} · {train_set} · real test split, all folds"
            fig = plots.confusion_figure(cm, run.inputs.categories, title)
            path = Path(run.cfg.out_dir) / arch / f"confusion_test_{train_set}.png"
            save_figure(fig, path)
            saved.append(path)
    return saved


def best_checkpoint(task, cfg: Resolved, arch: str, fp: str) -> tuple[Path, dict] | None:
    """The best checkpoint of `arch` (by the validation score over all training sets) and its metadata."""
    best_path, best_meta = None, None
    for train_set in cfg.train_sets:
        path = checkpoint_path(cfg.out_dir, arch, train_set)
        meta = read_checkpoint_meta(path)
        if meta and meta.get("fingerprint") == fp and path.is_file():
            if best_meta is None or better(task.primary_metric, meta["val_score"], best_meta["val_score"]):
                best_path, best_meta = path, meta
    return (best_path, best_meta) if best_path is not None else None
