"""Seeded stratified split: proportions per class, determinism, groups kept together."""
from __future__ import annotations

import pandas as pd
import pytest

from components.data.splits import carve_validation, stratified_split
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


def test_carve_validation_takes_a_stratified_share_of_train_only():
    labels = ["a"] * 60 + ["b"] * 40
    split = stratified_split(labels, test_fraction=0.2, seed=3)
    carved = carve_validation(split, labels, val_fraction=0.1, seed=3)
    assert (carved[split == "test"] == "test").all()          # test rows never move
    assert (split[carved == "val"] == "train").all()          # val comes out of train
    val = pd.Series(labels)[carved == "val"]
    # 10 % of 100 rows = 10, as 10/80 of the training rows by class: 6 of a's 48, 4 of b's 32
    assert len(val) == 10 and val.value_counts().to_dict() == {"a": 6, "b": 4}
    assert carved.equals(carve_validation(split, labels, val_fraction=0.1, seed=3))
    assert (carve_validation(split, labels, 0.0) == split).all()


def test_carve_validation_keeps_groups_together():
    labels = [c for c in "ab" for _ in range(40)]
    groups = [f"lesion{i // 2}" for i in range(80)]         # two images per lesion
    split = stratified_split(labels, 0.25, seed=0, groups=groups)
    carved = carve_validation(split, labels, 0.25, seed=0, groups=groups)
    frame = pd.DataFrame({"g": groups, "s": carved})
    assert (frame.groupby("g")["s"].nunique() == 1).all() and (carved == "val").sum() > 0


def test_carve_validation_refuses_a_share_train_cannot_give():
    labels = ["a"] * 10 + ["b"] * 10
    split = stratified_split(labels, test_fraction=0.5, seed=0)
    with pytest.raises(DataError, match="val_fraction=0.5"):
        carve_validation(split, labels, 0.5)
