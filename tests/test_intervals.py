"""Paired bootstrap comparisons against real-only: cases whose answer is known, values computed by hand."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from components.downstream.intervals import (
    Comparison, bootstrap_weights, compare_classification, compare_segmentation, comparisons_frame,
    comparisons_markdown, minority_classes, protocol_note, spread, verdict,
)


def stratified_correct(per_class: int, n_classes: int, n_correct: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels with `per_class` images per class and predictions right on exactly `n_correct` of each class."""
    y = np.repeat(np.arange(n_classes), per_class)
    right = np.tile((np.arange(per_class) + shift) % per_class < n_correct, n_classes)
    return y, np.where(right, y, (y + 1) % n_classes)


# --------------------------------------------------------------------------------------------- metrics by hand
def test_macro_f1_and_balanced_accuracy_on_four_images():
    # y = [0, 0, 1, 2], p = [0, 1, 1, 3]. F1 per class: 0 -> 2/3, 1 -> 2/3, 2 -> 0, 3 (predicted only) -> 0;
    # class 4 occurs nowhere and is left out: macro F1 = (4/3) / 4 = 1/3. Recall: 1/2, 1, 0 -> balanced 1/2.
    y = np.array([0, 0, 1, 2])
    p = np.array([0, 1, 1, 3])
    preds = {"real": y[None], "synthetic": p[None]}
    (f1,) = compare_classification(y, preds, "f1", n_classes=5, n_boot=50)
    assert f1.baseline_value == pytest.approx(1.0)
    assert f1.value == pytest.approx(1 / 3)
    assert f1.value == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert f1.delta == pytest.approx(-2 / 3)
    (ba,) = compare_classification(y, preds, "balanced_accuracy", n_classes=5, n_boot=50)
    assert ba.value == pytest.approx(0.5)
    with warnings.catch_warnings():  # sklearn warns about the predicted-only class 3
        warnings.simplefilter("ignore")
        assert ba.value == pytest.approx(balanced_accuracy_score(y, p))


def test_recall_metrics_by_hand():
    # recall per class: 0 -> 2/2, 1 -> 1/2, 2 -> 1/2
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 1, 0, 2, 1])
    preds = {"real": y[None], "synthetic": p[None]}
    (r1,) = compare_classification(y, preds, "recall:1", n_classes=3, n_boot=50)
    assert r1.value == pytest.approx(0.5)
    assert r1.value == pytest.approx(recall_score(y, p, average=None)[1])
    (mr,) = compare_classification(y, preds, "minority_recall", n_classes=3, classes=[1, 2], n_boot=50)
    assert mr.value == pytest.approx(0.5)
    assert mr.delta == pytest.approx(-0.5)


def test_one_replicate_equals_sklearn_on_the_resampled_images():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 30)
    base = np.where(rng.random(30) < 0.5, y, rng.integers(0, 4, 30))
    other = np.where(rng.random(30) < 0.7, y, rng.integers(0, 4, 30))
    (c,) = compare_classification(y, {"real": base[None], "synthetic": other[None]}, "f1", n_classes=4,
                                  n_boot=1, seed=11)
    idx = np.random.default_rng(11).integers(0, 30, size=(1, 30))[0]  # the resample the module draws
    expected = (f1_score(y[idx], other[idx], average="macro", zero_division=0)
                - f1_score(y[idx], base[idx], average="macro", zero_division=0))
    assert c.ci_low == pytest.approx(expected) and c.ci_high == pytest.approx(expected)


# --------------------------------------------------------------------------------------------- known answers
def test_identical_models_give_a_zero_width_interval_at_zero():
    y, p = stratified_correct(25, 4, 15)
    runs = np.stack([p, np.roll(p, 3), np.roll(p, 7)])
    for metric in ("f1", "balanced_accuracy", "recall:2"):
        (c,) = compare_classification(y, {"real": runs, "real+synthetic": runs.copy()}, metric, n_classes=4)
        assert (c.delta, c.ci_low, c.ci_high, c.run_std) == (0.0, 0.0, 0.0, 0.0)
        assert c.verdict == "no detectable difference"
        assert (c.n_runs, c.n_images, c.n_boot) == (3, 100, 2000)


def test_better_by_construction_helps_and_the_mirror_hurts():
    # every class 50 images; baseline right on 30 of each (recall 0.6), the other set on 45 (recall 0.9)
    y, weak = stratified_correct(50, 4, 30)
    _, strong = stratified_correct(50, 4, 45, shift=7)
    weak_runs = np.stack([weak, stratified_correct(50, 4, 30, shift=20)[1]])
    strong_runs = np.stack([strong, stratified_correct(50, 4, 45, shift=1)[1]])
    (c,) = compare_classification(y, {"real": weak_runs, "real+synthetic": strong_runs}, "balanced_accuracy",
                                  n_classes=4)
    assert (c.baseline_value, c.value) == (pytest.approx(0.6), pytest.approx(0.9))
    assert c.delta == pytest.approx(0.3) and c.run_std == pytest.approx(0.0)
    assert 0 < c.ci_low < 0.3 < c.ci_high
    assert c.verdict == "helps"
    (m,) = compare_classification(y, {"real": strong_runs, "real+synthetic": weak_runs}, "balanced_accuracy",
                                  n_classes=4)
    assert m.delta == pytest.approx(-0.3) and m.ci_high < 0 and m.verdict == "hurts"


def test_every_set_is_compared_with_the_baseline_in_order():
    y, p = stratified_correct(10, 2, 6)
    preds = {"real": p[None], "synthetic": y[None], "hybrid": p[None]}
    out = compare_classification(y, preds, "f1", n_classes=2)
    assert [(c.train_set, c.baseline) for c in out] == [("synthetic", "real"), ("hybrid", "real")]
    assert out[1].verdict == "no detectable difference"


def test_constant_shift_per_image_collapses_the_paired_interval():
    # each image scores exactly 0.1 more, so every resample has Δ = 0.1: the pairing removes image variance
    base = np.random.default_rng(0).random((2, 40))
    (c,) = compare_segmentation({"real": base, "real+synthetic": base + 0.1}, "dice")
    assert c.delta == pytest.approx(0.1)
    assert c.ci_low == pytest.approx(0.1) and c.ci_high == pytest.approx(0.1)
    assert c.verdict == "helps"


def test_two_image_interval_by_hand():
    # Δ per image 0 and 1: a resample's mean Δ is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5th and 97.5th percentiles of 2000 replicates are 0 and 1 and the interval touches 0
    (c,) = compare_segmentation({"real": np.zeros((1, 2)), "synthetic": np.array([[0.0, 1.0]])}, "dice")
    assert (c.delta, c.ci_low, c.ci_high) == (0.5, 0.0, 1.0)
    assert c.verdict == "no detectable difference"


def test_hd95_lower_is_better():
    base = 10.0 + np.random.default_rng(1).random((3, 50)) * 5
    per_image = {"real": base, "real+synthetic": base - 2.0}
    for kwargs in ({}, {"higher_is_better": False}):
        (c,) = compare_segmentation(per_image, "hd95", **kwargs)
        assert c.delta == pytest.approx(-2.0) and c.ci_high < 0
        assert c.verdict == "helps"
    (wrong_way,) = compare_segmentation(per_image, "hd95", higher_is_better=True)
    assert wrong_way.verdict == "hurts"


def test_spread_over_runs_by_hand():
    # per-run Δ = 0.1, 0.2, 0.3 -> sample std 0.1
    base = np.full((3, 4), 0.5)
    other = base + np.array([[0.1], [0.2], [0.3]])
    (c,) = compare_segmentation({"real": base, "synthetic": other}, "dice")
    assert c.delta == pytest.approx(0.2) and c.run_std == pytest.approx(0.1)
    assert spread(np.array([0.4])) == 0.0
    assert spread(np.array([1.0, 3.0])) == pytest.approx(np.sqrt(2.0))


def test_verdict_respects_direction():
    assert verdict(0.01, 0.2) == "helps" and verdict(-0.2, -0.01) == "hurts"
    assert verdict(0.01, 0.2, higher_is_better=False) == "hurts"
    assert verdict(-0.2, -0.01, higher_is_better=False) == "helps"
    assert verdict(-0.1, 0.1) == verdict(0.0, 0.0) == "no detectable difference"


# --------------------------------------------------------------------------------------------- the bootstrap
def test_bootstrap_is_seeded():
    rng = np.random.default_rng(5)
    per_image = {"real": rng.random((2, 60)), "synthetic": rng.random((2, 60))}
    a = compare_segmentation(per_image, "dice", seed=4)[0]
    b = compare_segmentation(per_image, "dice", seed=4)[0]
    c = compare_segmentation(per_image, "dice", seed=5)[0]
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.delta == c.delta  # the point estimate uses the whole test set


def test_bootstrap_weights_are_multiplicities():
    w = bootstrap_weights(7, 300, seed=2)
    assert w.shape == (300, 7)
    assert np.all(w.sum(axis=1) == 7) and np.all(w >= 0) and np.all(w == np.round(w))
    idx = np.random.default_rng(2).integers(0, 7, size=(300, 7))
    assert np.array_equal(w[5], np.bincount(idx[5], minlength=7))


def test_replicates_without_a_named_class_are_discarded():
    # class 2 has a single test image: replicates that do not draw it leave its recall undefined
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2])
    preds = {"real": y[None], "synthetic": np.where(y == 2, 1, y)[None]}
    (c,) = compare_classification(y, preds, "recall:2", n_classes=3, n_boot=500, seed=8)
    drawn = int((bootstrap_weights(10, 500, seed=8)[:, 9] > 0).sum())
    assert 0 < drawn < 500 and c.n_boot == drawn
    assert (c.delta, c.ci_low, c.ci_high, c.verdict) == (-1.0, -1.0, -1.0, "hurts")


# --------------------------------------------------------------------------------------------- bad input
def test_wrong_shapes_name_the_set():
    y = np.zeros(5, int)
    with pytest.raises(ValueError, match=r"preds\['synthetic'\] has shape \(4,\)"):
        compare_classification(y, {"real": np.zeros((2, 5), int), "synthetic": np.zeros(4, int)}, "f1", n_classes=2)
    with pytest.raises(ValueError, match=r"preds\['hybrid'\] has 1 runs but baseline 'real' has 2"):
        compare_classification(y, {"real": np.zeros((2, 5), int), "hybrid": np.zeros((1, 5), int)}, "f1",
                               n_classes=2)
    with pytest.raises(ValueError, match=r"per_image\['synthetic'\] has shape \(1, 3\); expected \(n_runs, 4\)"):
        compare_segmentation({"real": np.zeros((1, 4)), "synthetic": np.zeros((1, 3))}, "dice")


def test_other_bad_input_is_named():
    y = np.array([0, 1, 1])
    ok = {"real": np.array([[0, 1, 1]]), "synthetic": np.array([[0, 1, 0]])}
    with pytest.raises(ValueError, match=r"baseline 'real' is not among"):
        compare_classification(y, {"synthetic": ok["synthetic"], "hybrid": ok["real"]}, "f1", n_classes=2)
    with pytest.raises(ValueError, match=r"preds\['synthetic'\] holds labels outside 0..1"):
        compare_classification(y, {**ok, "synthetic": np.array([[0, 1, 2]])}, "f1", n_classes=2)
    with pytest.raises(ValueError, match=r"unknown classification metric 'auc'"):
        compare_classification(y, ok, "auc", n_classes=2)
    with pytest.raises(ValueError, match=r"minority_recall needs classes"):
        compare_classification(y, ok, "minority_recall", n_classes=2)
    with pytest.raises(ValueError, match=r"classes \[2\] have no image in the test split"):
        compare_classification(y, ok, "recall:2", n_classes=3)
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\)"):
        compare_classification(y, ok, "f1", n_classes=2, level=95)
    with pytest.raises(ValueError, match=r"per_image\['synthetic'\] holds 1 non-finite"):
        compare_segmentation({"real": np.zeros((1, 2)), "synthetic": np.array([[0.0, np.nan]])}, "hd95")


# --------------------------------------------------------------------------------------------- minority classes
def test_minority_classes_rule():
    ham = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
    # median 514, half of it 257: df (115) and vasc (142) lie below, akiec (327) does not
    assert minority_classes(ham) == ["df", "vasc"]
    assert minority_classes({c: 10 * n for c, n in ham.items()}) == ["df", "vasc"]
    assert minority_classes({"a": 50, "b": 50, "c": 50}) == []
    with pytest.raises(ValueError, match="train_counts is empty"):
        minority_classes({})


# --------------------------------------------------------------------------------------------- rendering
def test_markdown_and_frame():
    f1 = Comparison("real+synthetic", "real", "f1", 0.33, 0.355, 0.025, -0.005, 0.05, 0.012, 15, 400, 2000,
                    "no detectable difference")
    hd = Comparison("real+synthetic", "real", "hd95", 12.0, 10.0, -2.0, -3.0, -1.0, 0.5, 15, 400, 2000, "helps")
    rec = Comparison("synthetic", "real", "recall:3", 0.5, 0.25, -0.25, -0.5, -0.1, 0.0, 15, 400, 1990, "hurts")
    md = comparisons_markdown([f1, hd, rec], set_labels={"real+synthetic": "real + synthetic"},
                              class_names=["akiec", "bcc", "bkl", "df"]).splitlines()
    assert md[0] == "| training set | metric | real-only | set | Δ [95% CI] | spread over runs | verdict |"
    assert md[2] == ("| real + synthetic | macro F1 | 33.0 % | 35.5 % | +2.5 [-0.5, +5.0] pp | 1.2 pp "
                     "| no detectable difference |")
    assert md[3] == "| real + synthetic | HD95 | 12.0 px | 10.0 px | -2.0 [-3.0, -1.0] px | 0.5 px | helps |"
    assert md[4] == "| synthetic | recall: df | 50.0 % | 25.0 % | -25.0 [-50.0, -10.0] pp | 0.0 pp | hurts |"
    note = protocol_note([f1, hd, rec])
    assert "400 real test images" in note and "15 runs" in note and "2000 replicates" in note
    frame = comparisons_frame([f1, hd])
    assert list(frame["metric"]) == ["f1", "hd95"] and list(frame["ci_high"]) == [0.05, -1.0]
    assert list(frame.columns[:3]) == ["train_set", "baseline", "metric"]
