"""The evaluation protocol: stratified folds of the real training split and the training sets of every fold.

The paper's three sets have IDENTICAL size and class mix, drawn from the fold's training part:

- real:      the fold's real training rows (a stratified subsample when a cap is set);
- synthetic: synthetic training rows sampled per class to the same counts;
- hybrid:    per class, half of the count from the real rows and the other half synthetic.

The imbalance use case adds two sets of one larger size, whose classes are balanced (every class topped up to the
fold's majority count):

- real+synthetic:    every real row of the fold plus synthetic pairs for the classes below the majority;
- real+augmentation: the same real rows plus as many re-drawn copies of real rows of those classes (each copy is
                     augmented anew by the training transforms): the reviewer's baseline for real+synthetic.

When the synthetic pool holds fewer pairs of a class than a set needs, they are drawn with replacement (logged,
counted as unique rows). Evaluation only ever sees real images: the validation split (model selection), the real
test split (reported; never seen by the generator, which is fine-tuned on the training split) and an optional
external set. `assert_real_only` guards every evaluation set and raises on any other source.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold
from torch.utils.data import ConcatDataset, Dataset

from components.data.torch_dataset import PairDataset
from components.errors import DataError

log = logging.getLogger(__name__)

ROOT_COLUMN = "dataset_root"   # added to frames so rows of several dataset folders can be mixed


class SyntheticInEvaluationError(DataError):
    """A row that is not a real image reached an evaluation set."""


def assert_real_only(df: pd.DataFrame, where: str) -> None:
    """Raise SyntheticInEvaluationError if any row of an evaluation frame has source != 'real'."""
    if "source" not in df.columns:
        raise SyntheticInEvaluationError(f"{where}: evaluation rows carry no 'source' column; cannot prove they "
                                         f"are real images")
    bad = df[df["source"].astype(str) != "real"]
    if len(bad):
        raise SyntheticInEvaluationError(
            f"{where}: {len(bad)} evaluation row(s) are not real images (e.g. {bad['image_id'].head(3).tolist()}, "
            f"source={sorted(bad['source'].astype(str).unique())}); evaluation must use real images only"
        )


def with_root(df: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """Copy of `df` with the dataset folder recorded per row."""
    out = df.copy()
    out[ROOT_COLUMN] = str(root)
    return out


def stratified_folds(labels: pd.Series | list[str], n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train positions, held-out positions) of a seeded, shuffled StratifiedKFold."""
    labels = pd.Series(list(labels))
    counts = labels.value_counts()
    if len(labels) < n_folds:
        raise DataError(f"{len(labels)} training images cannot be split into {n_folds} folds; lower n_folds")
    small = counts[counts < n_folds]
    if len(small):
        log.warning("class(es) %s have fewer images than n_folds=%d: some folds will miss them in their held-out "
                    "part (lower n_folds or add images of those classes)", small.to_dict(), n_folds)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(len(labels)), labels.to_numpy())]


def _allocate(counts: pd.Series, total: int) -> pd.Series:
    """Split `total` over classes proportionally to `counts` (largest remainder), each class ≥ 1 if possible."""
    exact = counts / counts.sum() * total
    base = np.floor(exact).astype(int)
    rest = total - int(base.sum())
    order = (exact - base).sort_values(ascending=False, kind="stable").index[:rest]
    base.loc[order] += 1
    return base


def cap_stratified(df: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """A stratified subsample of at most `cap` rows (0: all rows), class proportions kept."""
    if cap <= 0 or len(df) <= cap:
        return df
    counts = _allocate(df["category"].value_counts().sort_index(), cap)
    parts = [df[df["category"] == c].sample(n=int(n), random_state=seed) for c, n in counts.items() if n > 0]
    return pd.concat(parts).sort_values("image_id", kind="stable")


@dataclass
class SampleReport:
    """How a sample was drawn from the synthetic pool."""
    rows: int = 0
    unique: int = 0
    with_replacement: list[str] | None = None


def sample_per_class(pool: pd.DataFrame, counts: dict[str, int], seed: int, where: str,
                     what: str = "synthetic") -> tuple[pd.DataFrame, SampleReport]:
    """Draw counts[c] rows of class c from `pool`; without replacement when the pool has enough, otherwise
    with replacement (logged). A class missing from the pool raises DataError."""
    rng = np.random.default_rng(seed)
    parts, replaced = [], []
    for category, n in sorted(counts.items()):
        if n <= 0:
            continue
        candidates = pool[pool["category"] == category]
        if candidates.empty:
            raise DataError(f"{where}: no {what} training images of class {category!r}, but {n} are needed; "
                            f"synthesize that class (synthesize stage) or drop the sets that need it from train_sets")
        replace = len(candidates) < n
        if replace:
            replaced.append(category)
        idx = rng.choice(len(candidates), size=n, replace=replace)
        parts.append(candidates.iloc[idx])
    if replaced:
        log.info("%s: %s pool smaller than needed for %s; sampled with replacement", where, what, replaced)
    out = pd.concat(parts) if parts else pool.iloc[:0]
    return out, SampleReport(rows=len(out), unique=int(out["image_id"].nunique()), with_replacement=replaced)


def balance_topup(counts: dict[str, int]) -> dict[str, int]:
    """Rows to add per class so that every class reaches the majority count."""
    top = max(counts.values(), default=0)
    return {c: top - n for c, n in counts.items()}


def hybrid_split(counts: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Per-class (real, synthetic) counts: half of each class each way; odd remainders alternate so that the
    real total is exactly half of the whole (rounded down)."""
    real = {c: n // 2 for c, n in counts.items()}
    target_real = sum(counts.values()) // 2
    odd = sorted(c for c, n in counts.items() if n % 2)
    for c in odd[: target_real - sum(real.values())]:
        real[c] += 1
    synthetic = {c: counts[c] - real[c] for c in counts}
    return real, synthetic


SYNTHETIC_SETS: tuple[str, ...] = ("synthetic", "hybrid", "real+synthetic")   # the sets that need the pool
SAME_SIZE_SETS: tuple[str, ...] = ("real", "synthetic", "hybrid")


@dataclass
class TrainingSets:
    """The training frames of one fold and how they were drawn."""
    frames: dict[str, pd.DataFrame]
    synthetic_unique: dict[str, int]
    resampled_classes: dict[str, list[str]]


def build_training_sets(fold_train: pd.DataFrame, synthetic_pool: pd.DataFrame | None, train_sets: list[str],
                        seed: int, where: str = "fold") -> TrainingSets:
    """The training frames of one fold (module docstring); `synthetic_unique` counts the distinct rows."""
    counts = fold_train["category"].value_counts().sort_index().to_dict()
    frames: dict[str, pd.DataFrame] = {}
    unique: dict[str, int] = {}
    resampled: dict[str, list[str]] = {}
    if any(s in SYNTHETIC_SETS for s in train_sets) and (synthetic_pool is None or synthetic_pool.empty):
        raise DataError(f"{where}: the {', '.join(s for s in train_sets if s in SYNTHETIC_SETS)} training set(s) "
                        f"need synthetic training images, but the synthetic dataset has none; run the synthesize "
                        f"stage first (dvc repro synthesize) or set train_sets to sets without synthetic pairs")

    def add(name: str, real_part: pd.DataFrame, extra: tuple[pd.DataFrame, SampleReport] | None) -> None:
        if extra is None:
            frames[name], unique[name] = real_part, len(real_part)
            return
        part, rep = extra
        frames[name] = pd.concat([real_part, part])
        unique[name] = int(real_part["image_id"].nunique()) + rep.unique * (name != "real+augmentation")
        resampled[name] = rep.with_replacement or []

    if "real" in train_sets:
        add("real", fold_train, None)
    if "synthetic" in train_sets:
        add("synthetic", fold_train.iloc[:0], sample_per_class(synthetic_pool, counts, seed, f"{where} synthetic set"))
    if "hybrid" in train_sets:
        real_counts, synth_counts = hybrid_split(counts)
        real_part = pd.concat([fold_train[fold_train["category"] == c].sample(n=n, random_state=seed)
                               for c, n in real_counts.items() if n > 0])
        add("hybrid", real_part, sample_per_class(synthetic_pool, synth_counts, seed + 1, f"{where} hybrid set"))
    topup = balance_topup(counts)
    if "real+synthetic" in train_sets:
        add("real+synthetic", fold_train,
            sample_per_class(synthetic_pool, topup, seed + 2, f"{where} real+synthetic set"))
    if "real+augmentation" in train_sets:
        add("real+augmentation", fold_train,
            sample_per_class(fold_train, topup, seed + 3, f"{where} real+augmentation set", what="real"))
    for group in (SAME_SIZE_SETS, ("real+synthetic", "real+augmentation")):
        sizes = {name: len(f) for name, f in frames.items() if name in group}
        if len(set(sizes.values())) > 1:  # guaranteed by construction; a regression would bias the comparison
            raise AssertionError(f"{where}: training sets differ in size {sizes}")
    return TrainingSets(frames=frames, synthetic_unique=unique, resampled_classes=resampled)


def make_dataset(df: pd.DataFrame, transform, categories: list[str], require_mask: bool = True) -> Dataset:
    """A torch Dataset over rows that may come from several dataset folders (column ROOT_COLUMN)."""
    if ROOT_COLUMN not in df.columns:
        raise ValueError(f"rows need a {ROOT_COLUMN!r} column (use with_root)")
    parts = [PairDataset(root, group.drop(columns=[ROOT_COLUMN]), transform, categories, require_mask=require_mask)
             for root, group in df.groupby(ROOT_COLUMN, sort=True)]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def make_eval_dataset(df: pd.DataFrame, transform, categories: list[str], where: str,
                      require_mask: bool = True) -> Dataset:
    """Evaluation dataset: refuses any row that is not a real image."""
    assert_real_only(df, where)
    return make_dataset(df, transform, categories, require_mask=require_mask)


def synthetic_pool(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """The synthetic rows usable for training: split 'train' and source 'synthetic'."""
    if "source" not in df.columns:
        raise DataError(f"{where}: manifest has no 'source' column")
    pool = df[(df["split"] == "train") & (df["source"].astype(str) == "synthetic")]
    foreign = df[df["source"].astype(str) != "synthetic"]
    if len(foreign):
        raise DataError(f"{where}: {len(foreign)} row(s) of the synthetic dataset are not marked "
                        f"source='synthetic' (e.g. {foreign['image_id'].head(3).tolist()}); regenerate it with the "
                        f"synthesize stage")
    return pool
