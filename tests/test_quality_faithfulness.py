"""Per-class faithfulness (CAS reversed): recall and Wilson intervals by hand, side-by-side table from a stub
classifier, and the random forest on image features telling two drawn lesion kinds apart."""
from __future__ import annotations

import numpy as np
import pytest

from components.quality.faithfulness import (
    FaithfulnessSettings,
    faithfulness,
    features_of,
    per_class_recall,
    train_classifier,
    wilson_interval,
)


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_per_class_recall_by_hand():
    r = per_class_recall(["a", "a", "a", "b", "b"], ["a", "b", "a", "b", "c"], ["a", "b", "c"])
    assert set(r) == {"a", "b"}                      # c never occurs in the truth
    assert (r["a"]["n"], r["a"]["correct"], r["a"]["recall"]) == (3, 2, pytest.approx(2 / 3))
    assert (r["b"]["n"], r["b"]["correct"], r["b"]["recall"]) == (2, 1, 0.5)
    assert r["b"]["recall_low"] < 0.5 < r["b"]["recall_high"]


class _Echo:
    """A 'classifier' whose prediction is the first feature (the label it is told to predict)."""

    def predict(self, features):
        return np.asarray(features)[:, 0]


def test_faithfulness_puts_real_test_and_synthetic_recall_side_by_side():
    real = (np.array([["mel"], ["mel"], ["nv"], ["nv"]], dtype=object), np.array(["mel", "mel", "nv", "nv"]))
    syn = (np.array([["nv"], ["mel"], ["nv"], ["nv"]], dtype=object), np.array(["mel", "mel", "nv", "df"]))
    out = faithfulness(_Echo(), real, syn, ["mel", "nv", "df"])
    pc = out["per_class"]
    assert pc["mel"]["real_test"]["recall"] == 1.0 and pc["mel"]["synthetic"]["recall"] == 0.5
    assert pc["mel"]["gap"] == -0.5 and pc["nv"]["gap"] == 0.0
    assert "real_test" not in pc["df"] and pc["df"]["synthetic"]["recall"] == 0.0 and "gap" not in pc["df"]
    assert out["real_test_balanced_accuracy"] == 1.0
    assert out["synthetic_balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def _lesions(kind: str, n: int, seed: int, size: int = 32) -> np.ndarray:
    """Skin-coloured images with a small dark-brown or a large red disc (a little position and colour noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        img = np.zeros((size, size, 3)) + np.array([210, 170, 150]) + rng.normal(0, 4, 3)
        r = size * (0.15 if kind == "small_dark" else 0.35) * rng.uniform(0.9, 1.1)
        cy, cx = size / 2 + rng.normal(0, 1.5, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[disc] = np.array([70, 45, 35] if kind == "small_dark" else [190, 50, 60]) + rng.normal(0, 4, 3)
        out.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def test_random_forest_on_image_features_separates_two_drawn_kinds():
    s = FaithfulnessSettings(trees=30, min_samples_leaf=1, seed=0)
    train = np.concatenate([_lesions("small_dark", 12, 0), _lesions("large_red", 12, 1)])
    labels = ["small_dark"] * 12 + ["large_red"] * 12
    feats = features_of(train)
    assert feats.shape[0] == 24 and np.isfinite(feats).all()
    assert np.array_equal(feats, features_of(train))     # deterministic
    model = train_classifier(feats, labels, s)
    test = np.concatenate([_lesions("small_dark", 5, 2), _lesions("large_red", 5, 3)])
    truth = np.array(["small_dark"] * 5 + ["large_red"] * 5)
    # "synthetic" images of large_red that are drawn like small_dark: rendered unfaithfully
    fake = (features_of(_lesions("small_dark", 5, 4)), np.array(["large_red"] * 5))
    out = faithfulness(model, (features_of(test), truth), fake, ["small_dark", "large_red"])
    assert out["per_class"]["large_red"]["real_test"]["recall"] == 1.0
    assert out["per_class"]["small_dark"]["real_test"]["recall"] == 1.0
    assert out["per_class"]["large_red"]["synthetic"]["recall"] == 0.0 and out["per_class"]["large_red"]["gap"] == -1.0
