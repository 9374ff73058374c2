"""The per-fold results table every summary, plot and report is built from.

One CSV row per (architecture, training set, seed, fold, evaluation set) with the config fingerprint, the scores
and run bookkeeping. A (fingerprint, arch, train_set, seed, fold) whose rows are all present is finished: a rerun
skips it. The file is rewritten atomically after every training, so an interruption loses at most one training.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components import atomic

KEY_COLUMNS: tuple[str, ...] = ("fingerprint", "task", "arch", "train_set", "seed", "fold", "eval_set")
EVAL_SETS: tuple[str, ...] = ("val", "test", "external")
# Human labels of the evaluation sets (val = the real validation split, which selects models).
EVAL_SET_LABELS = {"val": "real validation split", "test": "real test split", "external": "external set"}


class ResultStore:
    """Rows of a results CSV, loaded on creation; `add` appends and rewrites the file atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_file() and self.path.stat().st_size > 0:
            self.df = pd.read_csv(self.path, dtype={"fingerprint": str, "arch": str, "train_set": str,
                                                    "eval_set": str, "task": str, "run_id": str})
        else:
            self.df = pd.DataFrame(columns=list(KEY_COLUMNS))
        if "seed" not in self.df.columns:   # rows of a version without repeated seeds: never current
            self.df["seed"] = -1

    def done(self, fingerprint: str, arch: str, train_set: str, seed: int, fold: int, eval_sets: list[str]) -> bool:
        """True when every evaluation of this training is recorded under this fingerprint."""
        if self.df.empty:
            return False
        d = self.df
        hit = d[(d["fingerprint"] == fingerprint) & (d["arch"] == arch) & (d["train_set"] == train_set)
                & (d["seed"].astype(int) == int(seed)) & (d["fold"].astype(int) == int(fold))]
        return set(eval_sets) <= set(hit["eval_set"])

    def add(self, rows: list[dict]) -> None:
        """Record the rows of one training (replacing older rows with the same key) and save."""
        new = pd.DataFrame([_flat(r) for r in rows])
        if not self.df.empty:
            key = lambda f: f[list(KEY_COLUMNS)].astype(str).agg("|".join, axis=1)  # noqa: E731
            self.df = self.df[~key(self.df).isin(set(key(new)))]
            self.df = pd.concat([self.df, new], ignore_index=True)
        else:
            self.df = new
        with atomic.atomic_path(self.path) as tmp:
            self.df.to_csv(tmp, index=False)

    def rows(self, fingerprint: str | None = None, arch: str | None = None) -> pd.DataFrame:
        d = self.df
        if fingerprint is not None and not d.empty:
            d = d[d["fingerprint"] == fingerprint]
        if arch is not None and not d.empty:
            d = d[d["arch"] == arch]
        return d


def _flat(row: dict) -> dict:
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}


def current_rows(df: pd.DataFrame, fingerprints: dict[str, str]) -> pd.DataFrame:
    """Rows of each architecture under its current fingerprint only (older configs stay in the file)."""
    if df.empty:
        return df
    keep = pd.Series(False, index=df.index)
    for arch, fp in fingerprints.items():
        keep |= (df["arch"] == arch) & (df["fingerprint"] == fp)
    return df[keep]


def summarise(df: pd.DataFrame, metrics: tuple[str, ...]) -> dict:
    """{arch: {train_set: {eval_set: {metric: {mean, std, n}}}}}; std is the sample std over the runs (seeds ×
    folds, ddof=1)."""
    out: dict = {}
    if df.empty:
        return out
    for (arch, train_set, eval_set), group in df.groupby(["arch", "train_set", "eval_set"], sort=True):
        cell = {}
        for m in metrics:
            if m not in group.columns:
                continue
            values = pd.to_numeric(group[m], errors="coerce").dropna().to_numpy(dtype=float)
            if values.size:
                cell[m] = {"mean": float(values.mean()),
                           "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                           "n": int(values.size)}
        out.setdefault(arch, {}).setdefault(train_set, {})[eval_set] = cell
    return out


def summed_confusion(df: pd.DataFrame) -> np.ndarray | None:
    """Element-wise sum of the recorded confusion matrices (rows: true class, columns: predicted)."""
    if df.empty or "confusion_matrix" not in df.columns:
        return None
    mats = [np.asarray(json.loads(v)) for v in df["confusion_matrix"].dropna() if isinstance(v, str) and v]
    return np.sum(mats, axis=0) if mats else None
