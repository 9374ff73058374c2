"""Seeded, stratified train/test split (optionally keeping groups, e.g. one lesion's images, together)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from components.errors import DataError

log = logging.getLogger(__name__)


def stratified_split(labels: pd.Series | list[str], test_fraction: float = 0.2, seed: int = 42,
                     groups: pd.Series | list[str] | None = None) -> pd.Series:
    """'train'/'test' per row, class proportions kept in both parts, identical for identical inputs.

    Classes with a single image cannot be split and go to train (with a warning). When the test part would be
    smaller than the number of classes, it is enlarged to one image per class so every class is evaluated.
    With `groups` (e.g. HAM10000 lesion_id), rows of one group land on the same side; the test part is then
    one fold of a seeded StratifiedGroupKFold with round(1 / test_fraction) folds.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction}: must be in [0, 1), e.g. 0.2")
    labels = pd.Series(labels).reset_index(drop=True).astype(str)
    split = pd.Series("train", index=labels.index, dtype=object)
    if test_fraction == 0.0 or labels.empty:
        return split
    if groups is not None:
        groups = pd.Series(groups).reset_index(drop=True).astype(str)
        if groups.duplicated().any():
            return _grouped(labels, groups, test_fraction, seed)
    counts = labels.value_counts()
    singles = counts[counts < 2].index.tolist()
    if singles:
        log.warning("classes %s have a single image; it goes to train (no test image for them)", singles)
    pool = labels[~labels.isin(singles)]
    n_classes = pool.nunique()
    if n_classes == 0:
        return split
    n_test = max(int(round(test_fraction * len(pool))), n_classes)
    if len(pool) - n_test < n_classes:
        raise DataError(
            f"cannot split {len(pool)} images of {n_classes} classes with test_fraction={test_fraction}: "
            f"both parts need one image per class; add images or lower test_fraction"
        )
    _, test_idx = train_test_split(np.asarray(pool.index), test_size=n_test, random_state=seed,
                                   stratify=pool.to_numpy())
    split.loc[test_idx] = "test"
    return split


def _grouped(labels: pd.Series, groups: pd.Series, test_fraction: float, seed: int) -> pd.Series:
    n_folds = max(2, int(round(1.0 / test_fraction)))
    n_groups = groups.nunique()
    if n_groups < n_folds:
        raise DataError(f"cannot split {n_groups} groups into {n_folds} folds (test_fraction={test_fraction}); "
                        f"add images or raise test_fraction")
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    _, test_idx = next(folds.split(np.zeros(len(labels)), labels.to_numpy(), groups.to_numpy()))
    split = pd.Series("train", index=labels.index, dtype=object)
    split.iloc[test_idx] = "test"
    return split
