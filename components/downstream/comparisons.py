"""Each training set against real-only on the real test split: the comparisons behind the verdict table.

The runs of a comparison are the (seed, fold) pairs recorded for both the baseline and the training set, so every
run of one set is paired with the run of the other that shares its fold split and initial weights. Headline
metrics: classification macro F1, balanced accuracy and the mean recall of the minority classes
(`intervals.minority_classes` on the real training counts: below half of the median class count); segmentation
Dice and HD95. The method (paired bootstrap over test images) is in `components.downstream.intervals`.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from components.downstream import intervals
from components.downstream.predictions import prediction_file, read_predictions
from components.errors import DataError

BASELINE = "real"
CLASSIFY_HEADLINE: tuple[str, ...] = ("f1", "balanced_accuracy", "minority_recall")
SEGMENT_HEADLINE: tuple[str, ...] = ("dice", "hd95")


def recorded_runs(rows: pd.DataFrame, arch: str, train_set: str, eval_set: str = "test") -> set[tuple[int, int]]:
    """The (seed, fold) pairs of `arch` trained on `train_set` with a recorded `eval_set` row."""
    hit = rows[(rows["arch"] == arch) & (rows["train_set"] == train_set) & (rows["eval_set"] == eval_set)]
    return {(int(s), int(f)) for s, f in zip(hit["seed"], hit["fold"])}


def _run_frames(out_dir: str | Path, fingerprint: str, arch: str, train_set: str, runs: tuple[tuple[int, int], ...],
                order: list[str] | None) -> list[pd.DataFrame]:
    """The per-image test outputs of each run, rows in `order` (default: the first run's), checked for every run."""
    frames = []
    for seed, fold in runs:
        path = prediction_file(out_dir, fingerprint, arch, train_set, seed, fold, "test")
        if not path.is_file():
            raise DataError(f"{path}: predictions of a recorded training are missing; rerun the stage with "
                            f"--set force=true or delete its results.csv rows")
        frame = read_predictions(path).set_index("image_id")
        order = order or list(frame.index)
        if sorted(frame.index) != sorted(order):
            raise DataError(f"{path}: its test images differ from the other runs'; the test split changed "
                            f"between trainings, rerun the stage")
        frames.append(frame.loc[order])
    return frames


def _stack(frames: list[pd.DataFrame], column: str) -> np.ndarray:
    """(n_runs, n_images) values of `column`."""
    return np.stack([f[column].to_numpy() for f in frames])


def minority(real_train: pd.DataFrame, categories: list[str]) -> list[str]:
    """The minority classes of the real training split (`intervals.minority_classes`)."""
    counts = real_train["category"].value_counts()
    return intervals.minority_classes({c: int(counts.get(c, 0)) for c in categories})


def compare_architecture(task: str, out_dir: str | Path, fingerprint: str, arch: str, rows: pd.DataFrame,
                         train_sets: list[str], categories: list[str], minority_names: list[str],
                         n_boot: int = 2000, seed: int = 0) -> list[intervals.Comparison]:
    """The comparisons of every training set of `arch` with real-only (empty without a real-only run)."""
    others = [s for s in train_sets if s != BASELINE]
    base_runs = recorded_runs(rows, arch, BASELINE)
    out: list[intervals.Comparison] = []
    base_frames: dict[tuple, list[pd.DataFrame]] = {}   # real-only outputs, read once per set of runs
    for train_set in others:
        runs = tuple(sorted(base_runs & recorded_runs(rows, arch, train_set)))
        if not runs:
            continue
        if runs not in base_frames:
            base_frames[runs] = _run_frames(out_dir, fingerprint, arch, BASELINE, runs, None)
        base = base_frames[runs]
        other = _run_frames(out_dir, fingerprint, arch, train_set, runs, list(base[0].index))
        if task == "classify":
            y_true = base[0]["label"].to_numpy()
            minority = [categories.index(c) for c in minority_names
                        if c in categories and (y_true == categories.index(c)).any()]
            for metric in CLASSIFY_HEADLINE:
                if metric == "minority_recall" and not minority:
                    continue
                out += intervals.compare_classification(
                    y_true, {BASELINE: _stack(base, "prediction"), train_set: _stack(other, "prediction")}, metric,
                    n_classes=len(categories), baseline=BASELINE, classes=minority or None, n_boot=n_boot, seed=seed)
        else:
            for metric in SEGMENT_HEADLINE:
                out += intervals.compare_segmentation(
                    {BASELINE: _stack(base, metric), train_set: _stack(other, metric)}, metric,
                    baseline=BASELINE, n_boot=n_boot, seed=seed)
    return out


def as_records(arch: str, comparisons: list[intervals.Comparison]) -> list[dict]:
    """JSON-able rows (for metrics files and the report) with the architecture named."""
    return [{"arch": arch, **asdict(c)} for c in comparisons]
