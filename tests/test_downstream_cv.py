"""The evaluation protocol: stratified folds, training sets of identical size, real-only evaluation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.downstream import cv
from components.errors import DataError

CLASSES = {"nv": 40, "mel": 12, "bkl": 9, "df": 5}


def frame(counts: dict[str, int], source: str, prefix: str) -> pd.DataFrame:
    rows = [{"image_id": f"{prefix}{c}_{i:03d}", "category": c, "split": "train", "source": source}
            for c, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_folds_are_stratified_partitions_and_seeded():
    real = frame(CLASSES, "real", "r")
    folds = cv.stratified_folds(real["category"], n_folds=5, seed=3)
    assert len(folds) == 5
    held_out = np.concatenate([va for _, va in folds])
    assert sorted(held_out) == list(range(len(real)))          # every image held out exactly once
    for tr, va in folds:
        assert set(tr).isdisjoint(va)
        counts = real.iloc[va]["category"].value_counts()
        for c, n in CLASSES.items():                              # each class split evenly over the folds
            assert abs(counts.get(c, 0) - n / 5) < 1
    again = cv.stratified_folds(real["category"], n_folds=5, seed=3)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    other = cv.stratified_folds(real["category"], n_folds=5, seed=4)
    assert any((a[1] != b[1]).any() for a, b in zip(folds, other))


def test_training_sets_identical_size_and_class_mix():
    fold_train = frame({"nv": 31, "mel": 9, "bkl": 7, "df": 3}, "real", "r")
    pool = frame({"nv": 50, "mel": 50, "bkl": 50, "df": 50}, "synthetic", "s")
    sets = cv.build_training_sets(fold_train, pool, ["real", "synthetic", "hybrid"], seed=0)
    sizes = {k: len(v) for k, v in sets.frames.items()}
    assert sizes == {"real": 50, "synthetic": 50, "hybrid": 50}
    mix = {k: v["category"].value_counts().sort_index().to_dict() for k, v in sets.frames.items()}
    assert mix["real"] == mix["synthetic"] == mix["hybrid"]
    assert (sets.frames["synthetic"]["source"] == "synthetic").all()
    hybrid = sets.frames["hybrid"]
    assert (hybrid["source"] == "real").sum() == 25 and (hybrid["source"] == "synthetic").sum() == 25
    per_class = hybrid.groupby(["category", "source"]).size().unstack()
    assert ((per_class["real"] - per_class["synthetic"]).abs() <= 1).all()   # half of each class each way
    assert set(hybrid.loc[hybrid["source"] == "real", "image_id"]) <= set(fold_train["image_id"])
    assert sets.frames["synthetic"]["image_id"].is_unique                     # pool large enough: no repeats


def test_balanced_sets_keep_every_real_image_and_top_up_to_the_majority():
    fold_train = frame({"nv": 31, "mel": 9, "bkl": 7, "df": 3}, "real", "r")
    pool = frame({"nv": 50, "mel": 50, "bkl": 10, "df": 50}, "synthetic", "s")
    sets = cv.build_training_sets(fold_train, pool, ["real+synthetic", "real+augmentation"], seed=0)
    assert cv.balance_topup({"nv": 31, "mel": 9, "bkl": 7, "df": 3}) == {"nv": 0, "mel": 22, "bkl": 24, "df": 28}
    for name, extra_source in (("real+synthetic", "synthetic"), ("real+augmentation", "real")):
        f = sets.frames[name]
        assert len(f) == 4 * 31 and f["category"].value_counts().to_dict() == {c: 31 for c in ("nv", "mel", "bkl", "df")}
        assert set(fold_train["image_id"]) <= set(f["image_id"])            # every real image of the fold kept
        extra = f.iloc[len(fold_train):]
        assert (extra["source"] == extra_source).all() and "nv" not in set(extra["category"])
    # bkl needs 24 synthetic pairs from a pool of 10: drawn with replacement, 31 + 10 distinct images at most
    assert sets.resampled_classes["real+synthetic"] == ["bkl"]
    assert sets.synthetic_unique["real+synthetic"] == 50 + 22 + 10 + 28
    augmented = sets.frames["real+augmentation"].iloc[len(fold_train):]
    assert set(augmented["image_id"]) <= set(fold_train["image_id"])         # copies of real images only
    assert sets.synthetic_unique["real+augmentation"] == 50
    assert sorted(sets.resampled_classes["real+augmentation"]) == ["bkl", "df", "mel"]


def test_small_synthetic_pool_is_resampled_and_missing_class_refused():
    fold_train = frame({"nv": 10, "df": 4}, "real", "r")
    small_pool = frame({"nv": 3, "df": 1}, "synthetic", "s")
    sets = cv.build_training_sets(fold_train, small_pool, ["synthetic", "hybrid"], seed=0)
    assert len(sets.frames["synthetic"]) == len(sets.frames["hybrid"]) == 14
    assert sets.resampled_classes["synthetic"] == ["df", "nv"]
    assert sets.synthetic_unique["synthetic"] == 4
    with pytest.raises(DataError, match="no synthetic training images of class 'df'"):
        cv.build_training_sets(fold_train, frame({"nv": 30}, "synthetic", "s"), ["synthetic"], seed=0)
    with pytest.raises(DataError, match="synthesize"):
        cv.build_training_sets(fold_train, None, ["real", "hybrid"], seed=0)


def test_hybrid_split_halves_exactly():
    real, synth = cv.hybrid_split({"a": 5, "b": 3, "c": 4})
    assert sum(real.values()) == 6 and sum(synth.values()) == 6
    assert all(abs(real[c] - synth[c]) <= 1 for c in real)


def test_cap_keeps_class_proportions():
    real = frame(CLASSES, "real", "r")
    capped = cv.cap_stratified(real, 33, seed=0)
    assert len(capped) == 33
    counts = capped["category"].value_counts()
    for c, n in CLASSES.items():
        assert abs(counts[c] - n * 33 / len(real)) < 1
    assert cv.cap_stratified(real, 0, seed=0) is real


def test_evaluation_refuses_synthetic_rows():
    real = frame({"nv": 3}, "real", "r")
    cv.assert_real_only(real, "test split")
    leaked = pd.concat([real, frame({"nv": 1}, "synthetic", "s")])
    with pytest.raises(cv.SyntheticInEvaluationError, match="not real images"):
        cv.assert_real_only(leaked, "test split")
    with pytest.raises(cv.SyntheticInEvaluationError):
        cv.make_eval_dataset(cv.with_root(leaked, "."), None, ["nv"], "test split")


def test_synthetic_pool_takes_train_rows_and_rejects_foreign_sources():
    pool = pd.concat([frame({"nv": 4}, "synthetic", "s"),
                      frame({"nv": 2}, "synthetic", "t").assign(split="test")])
    assert len(cv.synthetic_pool(pool, "synthetic")) == 4
    with pytest.raises(DataError, match="not marked"):
        cv.synthetic_pool(pd.concat([pool, frame({"nv": 1}, "real", "r")]), "synthetic")


def test_presets_fill_null_keys_and_explicit_keys_win():
    from components.downstream.config import DownstreamConfig, resolve
    from components.errors import ConfigError

    paper = resolve(DownstreamConfig(preset="paper"), "classify")
    assert (paper.image_size, paper.batch_size, paper.lr, paper.n_folds) == (224, 32, 1e-4, 5)
    assert [paper.epochs_for(a) for a in ("densenet121", "resnet34", "squeezenet1_1", "swin")] == [50, 50, 40, 40]
    seg = resolve(DownstreamConfig(preset="paper"), "segment")
    assert (seg.image_size, seg.batch_size, seg.lr, seg.epochs_for("unet_resnet34")) == (512, 8, 1e-3, 20)
    mine = resolve(DownstreamConfig(preset="paper", epochs=2, n_folds=3, image_size=32), "classify")
    assert mine.epochs_for("swin") == 2 and mine.n_folds == 3 and mine.image_size == 32 and mine.lr == 1e-4
    assert mine.fingerprint("swin", {"real": "x"}) != paper.fingerprint("swin", {"real": "x"})
    with pytest.raises(ConfigError, match="preset"):
        resolve(DownstreamConfig(preset="gpu"), "classify")
    with pytest.raises(ConfigError, match="n_folds"):
        resolve(DownstreamConfig(n_folds=1), "segment")
    cpu = resolve(DownstreamConfig(n_seeds=3), "classify")
    assert cpu.seeds == [42, 43, 44] and cpu.class_balance == "sampler" and cpu.architectures == ["small_cnn"]
    assert resolve(DownstreamConfig(), "segment").class_balance == "none"
    assert cpu.fingerprint("small_cnn", {}) != resolve(DownstreamConfig(class_balance="none"), "classify").fingerprint(
        "small_cnn", {})
    with pytest.raises(ConfigError, match="class_balance='oversample'"):
        resolve(DownstreamConfig(class_balance="oversample"), "classify")
    with pytest.raises(ConfigError, match="n_seeds=0"):
        resolve(DownstreamConfig(n_seeds=0), "classify")
    with pytest.raises(ConfigError, match="train_sets"):
        resolve(DownstreamConfig(train_sets=["real", "real+noise"]), "classify")
