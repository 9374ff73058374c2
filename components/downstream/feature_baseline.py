"""Classical baselines that show how much the data allows, beside the trained judges.

    scores = classify_baseline(train_rows, eval_rows, categories, root="data/real")   # features + trees
    scores = segment_baseline(eval_rows, root="data/real", image_size=64)             # Otsu, no training

Classification: hand-made colour, shape and texture features of each image go into seeded gradient-boosted
trees (or a random forest), classes weighted to equal total weight. Shape features come from `segment_lesion`,
a mask estimated from the image itself: the classifiers never see a ground-truth mask, so neither does this
baseline.

Segmentation (`segment_lesion`): dark thin hairs are removed by a grey-level closing (DullRazor style); the
dark dermoscope vignette, i.e. near-black regions connected to the image border, is excluded from the field of
view; the blue channel's drop below the skin's (median of the field of view's outer ring) is smoothed and
thresholded with Otsu's method over the field of view; among the components that do not touch the field of
view's edge, the largest after weighting by closeness to the image centre is kept and its holes are filled.
Scores are those of components/downstream/metrics.py, so they compare with the judges' directly.

Rows are manifest rows (pandas); their files are found under `root`, or under each row's `dataset_root`
column (components/downstream/cv.py) when `root` is None. Evaluation rows must be real images.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd
import torch
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from components.data import manifest
from components.data.transforms import build_transforms
from components.downstream.cv import ROOT_COLUMN, assert_real_only
from components.downstream.metrics import SEGMENTATION_METRICS, SegmentationMeter, classification_scores
from components.errors import ConfigError, DataError

MODELS = ("gradient_boosting", "random_forest")


@dataclass(frozen=True)
class FeatureBaselineConfig:
    """How the feature classifier is built."""
    model: str = "gradient_boosting"  # gradient_boosting | random_forest
    n_estimators: int = 200           # boosting iterations or trees
    min_samples_leaf: int = 5         # random forest only
    class_weight: str = "balanced"    # balanced (each class weighs the same in total) | none
    image_size: int = 0               # 0: images as stored; else resized like the judges' evaluation images
    seed: int = 0
    n_jobs: int = 1                   # random forest only


# --- image loading --------------------------------------------------------------------------------------

def _rows_with_root(rows: pd.DataFrame, root: str | Path | None, where: str) -> Iterator[tuple[Path, pd.Series]]:
    if root is None and ROOT_COLUMN not in rows.columns:
        raise DataError(f"{where}: rows carry no {ROOT_COLUMN!r} column and no root was given; pass root= (the "
                        f"dataset folder) or add the column with components.downstream.cv.with_root")
    for _, row in rows.iterrows():
        yield Path(root if root is not None else row[ROOT_COLUMN]), row


def _load(rows: pd.DataFrame, root: str | Path | None, image_size: int, kind: str, require_mask: bool,
          where: str) -> Iterator[tuple[pd.Series, np.ndarray, np.ndarray | None]]:
    """(row, image HxWx3 uint8, mask HxW 0/1 or None) per row, resized like the judges' evaluation sets."""
    resize = build_transforms(kind, image_size, train=False) if image_size > 0 else None
    for folder, row in _rows_with_root(rows, root, where):
        pair = manifest.load_pair(folder, row, require_mask=require_mask)
        image, mask = pair.image, pair.mask
        if resize is not None:
            out = resize(image=image, mask=mask if mask is not None else np.zeros(image.shape[:2], np.uint8))
            image, mask = out["image"], (out["mask"] if mask is not None else None)
        yield row, image, mask


# --- classical segmentation -----------------------------------------------------------------------------

def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of `values` (foreground: values > threshold).

    The between-class variance is maximised over `bins` histogram cuts; when several cuts tie (a gap between
    two clusters), the mean of the tied cut positions is returned, i.e. the middle of the gap.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("otsu_threshold needs at least one value")
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = (w0 * w1 * (mu0 - mu1) ** 2)[:-1]   # the last cut leaves the upper class empty
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[best + 1].mean())


def _hair_free(x: np.ndarray) -> np.ndarray:
    """Grey-level closing per channel with a window wider than a hair (about side/32, odd, at least 3)."""
    k = max(3, int(round(min(x.shape[:2]) / 32)) | 1)
    return np.stack([ndi.grey_closing(x[..., c], size=(k, k)) for c in range(3)], axis=-1)


def _field_of_view(lum: np.ndarray) -> np.ndarray:
    """Pixels outside the dermoscope vignette: near-black regions (below 35 % of the median luminance) that are
    connected to the image border are vignette."""
    labels, _ = ndi.label(lum < 0.35 * np.median(lum))
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return ~np.isin(labels, edge_labels[edge_labels > 0])


def _radius(shape: tuple[int, int]) -> np.ndarray:
    """Distance of each pixel from the image centre in image-side units."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    return np.hypot((yy - (h - 1) / 2) / h, (xx - (w - 1) / 2) / w)


def segment_lesion(image: np.ndarray) -> np.ndarray:
    """Estimated lesion mask (HxW uint8 0/1) of an HxWx3 uint8 image, from the image alone (see module doc)."""
    x = _hair_free(np.asarray(image, dtype=np.float32) / 255.0)
    h, w = x.shape[:2]
    fov = _field_of_view(x.mean(axis=-1))
    if fov.sum() < 16:
        fov = np.ones((h, w), bool)
    r = _radius((h, w))
    ring = fov & (r > 0.35)
    skin_blue = float(np.median(x[..., 2][ring if ring.sum() >= 16 else fov]))
    score = ndi.gaussian_filter(skin_blue - x[..., 2], 1.0)
    mask = ndi.binary_opening((score > otsu_threshold(score[fov])) & fov)
    labels, n = ndi.label(mask)
    if n == 0:
        return np.zeros((h, w), np.uint8)
    ids = np.arange(1, n + 1)
    sizes = ndi.sum(mask, labels, ids)
    outer = ndi.binary_dilation(~fov, iterations=2)
    outer[0] = outer[-1] = outer[:, 0] = outer[:, -1] = True
    touching = set(np.unique(labels[outer]).tolist())
    candidates = [i for i in ids if i not in touching] or list(ids)
    centres = ndi.center_of_mass(mask, labels, candidates)
    weight = [sizes[i - 1] * np.exp(-(((cy - (h - 1) / 2) / h) ** 2 + ((cx - (w - 1) / 2) / w) ** 2) / 0.04)
              for i, (cy, cx) in zip(candidates, centres)]
    best = candidates[int(np.argmax(weight))]
    return ndi.binary_fill_holes(labels == best).astype(np.uint8)


def segment_baseline(rows: pd.DataFrame, root: str | Path | None = None, image_size: int = 0) -> dict:
    """Dice, IoU, ASD, HD and HD95 (pixels) of `segment_lesion` on real `rows`, means and per image.

    `image_size` > 0 resizes images and masks as the judges' evaluation sets are resized, so the pixel
    distances compare with theirs. Returns {metric: mean, ..., "n": rows, "per_image": [{image_id, ...}]}.
    """
    assert_real_only(rows, "segmentation baseline rows")
    if rows.empty:
        raise DataError("segmentation baseline: no evaluation rows; give at least one real image with a mask")
    meter = SegmentationMeter()
    for row, image, mask in _load(rows, root, image_size, "segment", True, "segmentation baseline rows"):
        meter.update(segment_lesion(image)[None], mask[None], [str(row["image_id"])])
    means = meter.compute()
    return {**{k: means[k] for k in SEGMENTATION_METRICS}, "n": len(meter.per_image),
            "per_image": list(meter.per_image)}


# --- hand-made features ---------------------------------------------------------------------------------

_HSV_SCALE = np.array([179.0, 255.0, 255.0], np.float32)   # OpenCV's 8-bit HSV ranges


def _stats(values: np.ndarray) -> list[float]:
    """Mean, standard deviation and the 10th / 50th / 90th percentiles of each column."""
    if len(values) == 0:
        return [0.0] * (5 * values.shape[1])
    pct = np.percentile(values, [10, 50, 90], axis=0)
    return [*values.mean(0), *values.std(0), *pct.ravel()]


def shape_features(mask: np.ndarray) -> list[float]:
    """Eight shape descriptors of a binary HxW mask, in this order:

    area fraction of the image; compactness perimeter² / (4π·area) with the perimeter counted as the mask's
    edge pixels; elongation sqrt(λ1/λ2) of the pixel-coordinate covariance; solidity area / convex-hull area
    (hull of the edge pixels' corners, so a filled rectangle has 1); mirror asymmetry about the minor and the
    major principal axis (share of pixels whose mirror image falls outside the mask); border irregularity (std /
    mean of the edge pixels' distances to the centroid) and their max / mean. Masks under 5 pixels give
    [area fraction, 0, 1, 1, 0, 0, 0, 0].
    """
    mask = np.asarray(mask).astype(bool)
    h, w = mask.shape
    area = float(mask.sum())
    if area < 5:
        return [area / (h * w), 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    ys, xs = np.nonzero(mask)
    pts = np.stack([ys, xs], 1).astype(np.float64)
    centre = pts.mean(0)
    evals, evecs = np.linalg.eigh(np.cov((pts - centre).T))
    elongation = float(np.sqrt(evals[1] / max(evals[0], 1e-9)))
    edge = mask & ~ndi.binary_erosion(mask)
    ey, ex = np.nonzero(edge)
    corners = np.concatenate([np.stack([ey + dy, ex + dx], 1) for dy in (-0.5, 0.5) for dx in (-0.5, 0.5)])
    try:
        hull_area = ConvexHull(corners).volume
    except QhullError:
        hull_area = area
    aligned = (pts - centre) @ evecs
    asym = []
    for axis in range(2):
        mirrored = aligned.copy()
        mirrored[:, axis] *= -1
        back = np.rint(mirrored @ evecs.T + centre).astype(int)
        inside = (back[:, 0] >= 0) & (back[:, 0] < h) & (back[:, 1] >= 0) & (back[:, 1] < w)
        hits = np.zeros(len(back), bool)
        hits[inside] = mask[back[inside, 0], back[inside, 1]]
        asym.append(1.0 - float(hits.mean()))
    radial = np.hypot(ey - centre[0], ex - centre[1])
    return [area / (h * w), float(edge.sum()) ** 2 / (4 * np.pi * area), elongation, area / max(hull_area, 1.0),
            asym[0], asym[1], float(radial.std() / max(radial.mean(), 1e-9)),
            float(radial.max() / max(radial.mean(), 1e-9))]


def image_features(image: np.ndarray) -> np.ndarray:
    """Colour, shape and texture features (float32 vector of fixed length) of one HxWx3 uint8 image.

    Colour statistics (RGB, HSV, CIE Lab) inside the estimated lesion and of the surrounding skin, their
    contrast, a coarse RGB histogram of the lesion, the shape of the estimated mask (`segment_lesion`), the
    sharpness of its border, and the lesion's texture (gradient energy, bright / dark / red / blue-grey spots).
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    mask = segment_lesion(image).astype(bool)
    x = image.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32) / _HSV_SCALE
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
    fov = _field_of_view(_hair_free(x).mean(axis=-1))
    skin = fov & ~ndi.binary_dilation(mask, iterations=2)
    if skin.sum() < 16:
        skin = ~mask if (~mask).any() else np.ones_like(mask)
    lesion = mask if mask.any() else fov
    colours = np.concatenate([x, hsv, lab], axis=-1)            # 9 channels
    inside, outside = colours[lesion], colours[skin]
    contrast = inside.mean(0) - outside.mean(0)
    q = np.minimum((x[lesion] * 4).astype(int), 3)              # 4 levels per channel, 64 bins
    hist = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64) / max(len(q), 1)
    grey = x.mean(axis=-1)
    grad = np.hypot(ndi.sobel(grey, 0), ndi.sobel(grey, 1))
    lap = ndi.laplace(ndi.gaussian_filter(grey, 0.7))
    border = ndi.binary_dilation(mask, iterations=1) & ~ndi.binary_erosion(mask, iterations=1)
    lesion_grey = grey[lesion]
    median_grey = float(np.median(lesion_grey))
    red = (x[..., 0] - np.maximum(x[..., 1], x[..., 2]))[lesion]
    blue_grey = (x[..., 2] - x[..., 0])[lesion]
    texture = [
        float(grad[lesion].mean()), float(grad[lesion].std()), float(np.abs(lap[lesion]).mean()),
        float(grad[border].mean()) if border.any() else 0.0, float(grad[skin].mean()),
        float((lesion_grey > median_grey + 0.15).mean()), float((lesion_grey < median_grey - 0.15).mean()),
        float((red > 0.25).mean()), float((red > 0.4).mean()), float((blue_grey > -0.05).mean()),
        float(blue_grey.mean()),
    ]
    whole = colours[fov] if fov.any() else colours.reshape(-1, 9)
    return np.asarray([*_stats(inside), *outside.mean(0), *outside.std(0), *contrast, *whole.mean(0),
                       *hist, *shape_features(mask), *texture], dtype=np.float32)


def feature_matrix(rows: pd.DataFrame, root: str | Path | None = None, image_size: int = 0) -> np.ndarray:
    """`image_features` of every row (N x F), images resized as the classification judges' when image_size > 0."""
    feats = [image_features(image)
             for _, image, _ in _load(rows, root, image_size, "classify", False, "feature baseline rows")]
    if not feats:
        raise DataError("feature baseline: no rows to describe; give at least one image")
    return np.stack(feats)


# --- classifier -----------------------------------------------------------------------------------------

def build_model(cfg: FeatureBaselineConfig):
    """The unfitted scikit-learn classifier `cfg` describes (a ConfigError for a value it cannot use)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    if cfg.model not in MODELS:
        raise ConfigError(f"feature baseline model={cfg.model!r}: use one of {list(MODELS)}")
    if cfg.class_weight not in ("balanced", "none"):
        raise ConfigError(f"feature baseline class_weight={cfg.class_weight!r}: use balanced or none")
    if cfg.n_estimators < 1:
        raise ConfigError(f"feature baseline n_estimators={cfg.n_estimators}: use at least 1")
    weight = "balanced" if cfg.class_weight == "balanced" else None
    if cfg.model == "random_forest":
        return RandomForestClassifier(n_estimators=cfg.n_estimators, class_weight=weight,
                                      min_samples_leaf=cfg.min_samples_leaf, random_state=cfg.seed,
                                      n_jobs=cfg.n_jobs)
    # shallow, L2-regularised trees: the rare classes have a few dozen images
    return HistGradientBoostingClassifier(max_iter=cfg.n_estimators, learning_rate=0.05, max_depth=4,
                                          l2_regularization=1.0, class_weight=weight, early_stopping=False,
                                          random_state=cfg.seed)


def classify_baseline(train_rows: pd.DataFrame, eval_rows: pd.DataFrame, categories: list[str] | None = None,
                      root: str | Path | None = None, cfg: FeatureBaselineConfig = FeatureBaselineConfig()) -> dict:
    """Fit the feature classifier on `train_rows`, score it on the real `eval_rows`.

    Returns {"f1" (macro), "balanced_accuracy", "accuracy" (macro), "overall_accuracy",
    "per_class_recall": {category: recall}, "confusion_matrix", "n_train", "n_eval",
    "predictions": [{image_id, category, predicted}]}; `categories` fixes the class order (default: the sorted
    classes of the training rows).
    """
    assert_real_only(eval_rows, "feature baseline evaluation rows")
    categories = list(categories) if categories is not None else sorted(train_rows["category"].unique())
    index = {c: i for i, c in enumerate(categories)}
    unknown = sorted((set(train_rows["category"]) | set(eval_rows["category"])) - set(index))
    if unknown:
        raise DataError(f"feature baseline: categories {unknown} are not in the class list {categories}; "
                        f"pass the dataset's categories (manifest.read_categories)")
    y_train = train_rows["category"].map(index).to_numpy()
    if len(np.unique(y_train)) < 2:
        raise DataError(f"feature baseline: the training rows hold {len(np.unique(y_train))} class(es); a "
                        f"classifier needs at least 2")
    y_eval = eval_rows["category"].map(index).to_numpy()
    model = build_model(cfg)
    model.fit(feature_matrix(train_rows, root, cfg.image_size), y_train)
    pred = model.predict(feature_matrix(eval_rows, root, cfg.image_size)).astype(int)
    s = classification_scores(torch.as_tensor(pred), torch.as_tensor(y_eval), len(categories))
    return {
        "f1": s["f1"], "balanced_accuracy": s["balanced_accuracy"], "accuracy": s["accuracy"],
        "overall_accuracy": s["overall_accuracy"],
        "per_class_recall": dict(zip(categories, s["per_class_recall"])),
        "confusion_matrix": s["confusion_matrix"], "n_train": int(len(y_train)), "n_eval": int(len(y_eval)),
        "predictions": [{"image_id": str(i), "category": categories[t], "predicted": categories[p]}
                        for i, t, p in zip(eval_rows["image_id"], y_eval, pred)],
    }
