"""Per-class faithfulness: the classification accuracy score of Ravuri & Vinyals (2019), reversed.

A classifier trained on the real training split only is applied to (a) the real test split and (b) the
generated images; per-class recall of both is reported side by side. A class the generator renders faithfully
is recognised as often in its generated images as in new real ones; a class whose synthetic recall is far below
its real test recall is rendered unlike its real images (or like another class).

The classifier is a random forest (deterministic for a seed, one thread, classes weighted to equal total
weight) on the hand-made colour, shape and texture features of the feature baseline
(components.downstream.feature_baseline.image_features: the lesion is estimated from the image, never taken
from a mask), so generated images are judged exactly like real ones. It trains in seconds on a CPU and on the
toy data reaches a useful accuracy where a CNN trained from scratch at CPU budgets does not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from components.downstream.feature_baseline import FeatureBaselineConfig, build_model, image_features


@dataclass(frozen=True)
class FaithfulnessSettings:
    """Random forest size, leaf size and seed."""
    trees: int = 200
    min_samples_leaf: int = 5
    seed: int = 0


def features_of(images) -> np.ndarray:
    """(N, F) float32 feature-baseline features of uint8 RGB images (the size they are given at)."""
    return np.stack([image_features(np.asarray(im)) for im in images])


def train_classifier(features: np.ndarray, labels, s: FaithfulnessSettings):
    """Random forest (balanced class weights, one thread) fitted to the real training split's features."""
    cfg = FeatureBaselineConfig(model="random_forest", n_estimators=s.trees, min_samples_leaf=s.min_samples_leaf,
                                class_weight="balanced", seed=s.seed, n_jobs=1)
    return build_model(cfg).fit(features, np.asarray(labels).astype(str))


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (0, 1 for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def per_class_recall(true, predicted, classes: list[str]) -> dict[str, dict]:
    """Per class present in `true`: n, correct, recall and its 95 % Wilson interval."""
    t, p = np.asarray(true).astype(str), np.asarray(predicted).astype(str)
    out = {}
    for c in classes:
        sel = t == c
        n = int(sel.sum())
        if n:
            k = int((p[sel] == c).sum())
            lo, hi = wilson_interval(k, n)
            out[c] = {"n": n, "correct": k, "recall": k / n, "recall_low": lo, "recall_high": hi}
    return out


def faithfulness(classifier, real_test: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray],
                 classes: list[str]) -> dict:
    """Per-class recall of the real-trained classifier on the real test split and on the synthetic images
    ((features, labels) each), their balanced accuracies (mean recall over the classes present) and the gap."""
    out: dict = {"per_class": {}}
    recalls = {}
    for name, (feats, labels) in (("real_test", real_test), ("synthetic", synthetic)):
        recalls[name] = per_class_recall(labels, classifier.predict(feats), classes)
        values = [r["recall"] for r in recalls[name].values()]
        out[f"{name}_balanced_accuracy"] = float(np.mean(values)) if values else float("nan")
    for c in classes:
        row = {name: recalls[name][c] for name in recalls if c in recalls[name]}
        if row:
            if len(row) == 2:
                row["gap"] = row["synthetic"]["recall"] - row["real_test"]["recall"]
            out["per_class"][c] = row
    return out
