"""Seeded, stratified train / val / test splits (optionally keeping groups, e.g. one lesion's images, together).

The validation split is carved out of what the test split leaves: downstream model selection, checkpoint choice
and registry promotion read it, the test split is only reported, and the generator stages see train only.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from components.errors import DataError

log = logging.getLogger(__name__)


def stratified_split(labels: pd.Series | list[str], test_fraction: float = 0.2, seed: int = 42,
                     groups: pd.Series | list[str] | None = None) -> pd.Series:
    """'train'/'test' per row, class proportions kept in both parts, identical for identical inputs.

    Each class with two or more images gets round(test_fraction * n) test images by largest remainder, but at
    least one and never all of them, so every class is evaluated and trained on; classes with a single image
    go to train (with a warning). Rows are drawn per class with a seeded permutation.
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
    quota = _allocate(pool.value_counts().sort_index(), n_test)
    rng = np.random.default_rng(seed)
    for cls, k in quota.items():
        members = np.sort(np.asarray(pool.index[pool == cls]))
        split.loc[rng.permutation(members)[:k]] = "test"
    return split


def _allocate(counts: pd.Series, n_test: int) -> dict[str, int]:
    """Test images per class: proportional (largest remainder), at least 1 and at most n - 1 per class."""
    share = counts / counts.sum() * n_test
    quota = np.clip(np.floor(share).astype(int), 1, counts - 1)
    order = np.argsort(-(share - quota).to_numpy(), kind="stable")
    i = 0
    while quota.sum() < n_test:
        j = order[i % len(order)]
        if quota.iloc[j] < counts.iloc[j] - 1:
            quota.iloc[j] += 1
        i += 1
    while quota.sum() > n_test:
        j = int(np.argmax((quota - share).to_numpy() * (quota > 1)))
        quota.iloc[j] -= 1
    return {str(c): int(q) for c, q in quota.items()}


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


def carve_validation(split: pd.Series | list[str], labels: pd.Series | list[str], val_fraction: float, seed: int = 42,
                     groups: pd.Series | list[str] | None = None) -> pd.Series:
    """`split` with a stratified share of its 'train' rows relabelled 'val'.

    `val_fraction` is a share of the whole dataset (0.15: 15 % of all rows become validation rows), drawn from
    the training rows by `stratified_split` with its own seed (`seed + 1`), groups kept together. 'test' rows and
    any other split stay as they are.
    """
    split = pd.Series(split).reset_index(drop=True).astype(object)
    labels = pd.Series(labels).reset_index(drop=True).astype(str)
    train = split.index[split == "train"]
    if val_fraction <= 0.0 or len(train) == 0:
        return split
    share = val_fraction * len(split) / len(train)
    if not 0.0 < share < 1.0:
        raise DataError(f"val_fraction={val_fraction}: the training split ({len(train)} of {len(split)} rows) "
                        f"cannot give {val_fraction:.0%} of all rows; lower val_fraction or test_fraction")
    part_groups = None if groups is None else pd.Series(groups).reset_index(drop=True).iloc[train]
    try:
        inner = stratified_split(labels.iloc[train], share, seed + 1, groups=part_groups)
    except DataError as err:   # too few images or lesion groups: the data stays usable for what needs no val split
        log.warning("no validation split: %s. Stages that select models (classify, segment) will ask for one; "
                    "add images or set prepare.val_fraction: 0 to silence this", err)
        return split
    split.iloc[train[inner.to_numpy() == "test"]] = "val"
    return split
