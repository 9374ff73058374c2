"""Seeded stratified split: proportions per class, determinism, groups kept together."""
from __future__ import annotations

import pandas as pd
import pytest

from components.data.splits import stratified_split
from components.errors import DataError


def _labels():
    return pd.Series(["nv"] * 60 + ["mel"] * 20 + ["df"] * 10 + ["vasc"] * 5)


def test_each_class_keeps_its_share():
    labels = _labels()
    split = stratified_split(labels, 0.2, seed=1)
    assert (split == "test").sum() == 19
    per_class = pd.crosstab(labels, split)
    for cls, n in labels.value_counts().items():
        assert abs(per_class.loc[cls, "test"] - 0.2 * n) <= 1, per_class


def test_deterministic_and_seeded():
    labels = _labels()
    assert stratified_split(labels, 0.2, seed=7).equals(stratified_split(labels, 0.2, seed=7))
    assert not stratified_split(labels, 0.2, seed=7).equals(stratified_split(labels, 0.2, seed=8))


def test_small_sets_get_one_test_image_per_class_and_singletons_train():
    labels = pd.Series(["a"] * 6 + ["b"] * 2 + ["c"] * 2 + ["d"])
    split = stratified_split(labels, 0.1, seed=0)
    assert split[labels == "d"].tolist() == ["train"]
    assert (split == "test").sum() == 3  # enlarged from round(0.1 * 10) = 1 to one per class
    assert set(labels[split == "test"]) == {"a", "b", "c"}


def test_groups_stay_on_one_side():
    labels = pd.Series(["nv"] * 40 + ["mel"] * 20)
    groups = pd.Series([f"L{i // 2}" for i in range(60)])  # two images per lesion
    split = stratified_split(labels, 0.25, seed=3, groups=groups)
    assert pd.crosstab(groups, split).gt(0).sum(axis=1).max() == 1
    assert 0.15 < (split == "test").mean() < 0.35
    assert set(labels[split == "test"]) == {"nv", "mel"}


def test_bad_fractions():
    with pytest.raises(DataError, match="test_fraction"):
        stratified_split(_labels(), 1.0)
    assert set(stratified_split(_labels(), 0.0)) == {"train"}
    with pytest.raises(DataError, match="one image per class"):
        stratified_split(pd.Series(["a", "a", "b", "b"]), 0.75)
    assert stratified_split(pd.Series(["a", "a", "b", "b"]), 0.5).tolist().count("test") == 2
