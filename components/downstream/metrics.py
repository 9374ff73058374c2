"""Downstream metrics: segmentation overlap and surface distances in pixels, classification scores.

Each metric is a plain function on one binary mask pair (HxW arrays) plus a small accumulator that
collects per-image values over batches (MONAI style).

Surface distances follow the usual definition (MONAI / medpy): the surface of a mask is the set of its
foreground pixels that have a 4-connected background neighbour (pixels on the image border count as
surface); distances are Euclidean, in pixels, from every surface pixel of one mask to the nearest
surface pixel of the other, computed with scipy's exact distance transform.

- ASD  (average symmetric surface distance): mean of the distances of both directions pooled together.
- HD   (Hausdorff distance): maximum of the two directed maxima.
- HD95: maximum of the two directed 95th percentiles (numpy's linear interpolation).

Empty-mask conventions (chosen so that a test-set mean stays finite and a missed or hallucinated lesion
is penalised as hard as possible instead of silently dropped, which a NaN would do):

- both masks empty:  Dice 1, IoU 1, ASD / HD / HD95 = 0 (a correct "no lesion" answer);
- exactly one empty: Dice 0, IoU 0, ASD / HD / HD95 = the image diagonal sqrt(H² + W²), the largest
  distance two pixels of that image can have.

Classification: torchmetrics' macro accuracy (the mean per-class accuracy, which for multiclass equals macro
recall: this is why the paper's Accuracy and Sensitivity columns coincide), macro sensitivity (recall),
precision and F1, plus per-class recall, balanced accuracy (mean recall over the classes present in the
targets, as scikit-learn defines it), overall (micro) accuracy and the confusion matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from torchmetrics.functional import classification as tmf

SEGMENTATION_METRICS: tuple[str, ...] = ("dice", "iou", "asd", "hd", "hd95")
CLASSIFICATION_METRICS: tuple[str, ...] = (
    "accuracy", "sensitivity", "precision", "f1", "balanced_accuracy", "overall_accuracy",
)
# Direction of each metric (True: higher is better); used for model selection and plots.
HIGHER_IS_BETTER: dict[str, bool] = {
    "dice": True, "iou": True, "asd": False, "hd": False, "hd95": False,
    **{name: True for name in CLASSIFICATION_METRICS},
}

_CROSS = ndimage.generate_binary_structure(2, 1)


def _as_bool(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW (or 1xHxW) mask, got shape {mask.shape}")
    return mask.astype(bool)


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_bool(pred), _as_bool(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    return p, t


def dice(pred, target) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|); 1 when both masks are empty."""
    p, t = _pair(pred, target)
    total = p.sum() + t.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(p, t).sum() / total)


def iou(pred, target) -> float:
    """Intersection over union |P∩T| / |P∪T|; 1 when both masks are empty."""
    p, t = _pair(pred, target)
    union = np.logical_or(p, t).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(p, t).sum() / union)


def surface(mask) -> np.ndarray:
    """Boolean map of the surface pixels of a mask (foreground with a 4-connected background neighbour)."""
    m = _as_bool(mask)
    eroded = ndimage.binary_erosion(m, structure=_CROSS, border_value=0)
    return m & ~eroded


def directed_surface_distances(pred, target) -> np.ndarray:
    """Distances (pixels) from each surface pixel of `pred` to the nearest surface pixel of `target`.

    Both masks must be non-empty.
    """
    p, t = _pair(pred, target)
    sp, st = surface(p), surface(t)
    if not sp.any() or not st.any():
        raise ValueError("directed_surface_distances needs two non-empty masks")
    dist_to_t = ndimage.distance_transform_edt(~st)
    return dist_to_t[sp]


def image_diagonal(shape: tuple[int, ...]) -> float:
    """Length of the image diagonal in pixels: the distance assigned when exactly one mask is empty."""
    h, w = shape[-2], shape[-1]
    return math.hypot(h, w)


def _distances(pred, target) -> tuple[np.ndarray, np.ndarray] | float:
    """Both directed distance sets, or the conventional value when a mask is empty."""
    p, t = _pair(pred, target)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return image_diagonal(p.shape)
    return directed_surface_distances(p, t), directed_surface_distances(t, p)


def asd(pred, target) -> float:
    """Average symmetric surface distance in pixels (both directions pooled)."""
    d = _distances(pred, target)
    if isinstance(d, float):
        return d
    return float(np.concatenate(d).mean())


def hd(pred, target) -> float:
    """Hausdorff distance in pixels."""
    d = _distances(pred, target)
    if isinstance(d, float):
        return d
    return float(max(d[0].max(), d[1].max()))


def hd95(pred, target) -> float:
    """95th-percentile Hausdorff distance in pixels (max of the two directed 95th percentiles)."""
    d = _distances(pred, target)
    if isinstance(d, float):
        return d
    return float(max(np.percentile(d[0], 95), np.percentile(d[1], 95)))


def segmentation_scores(pred, target) -> dict[str, float]:
    """All segmentation metrics of one mask pair, sharing the distance computation."""
    p, t = _pair(pred, target)
    d = _distances(p, t)
    if isinstance(d, float):
        a = h = h95 = d
    else:
        a = float(np.concatenate(d).mean())
        h = float(max(d[0].max(), d[1].max()))
        h95 = float(max(np.percentile(d[0], 95), np.percentile(d[1], 95)))
    return {"dice": dice(p, t), "iou": iou(p, t), "asd": a, "hd": h, "hd95": h95}


@dataclass
class SegmentationMeter:
    """Accumulates per-image segmentation metrics over batches; `compute()` gives their means."""
    per_image: list[dict[str, float]] = field(default_factory=list)

    def update(self, preds, targets, image_ids: list[str] | None = None) -> None:
        """Add a batch of binary masks (Nx1xHxW or NxHxW, tensors or arrays)."""
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
        for i in range(len(preds)):
            row = segmentation_scores(preds[i], targets[i])
            if image_ids is not None:
                row["image_id"] = image_ids[i]
            self.per_image.append(row)

    def compute(self) -> dict[str, float]:
        if not self.per_image:
            raise ValueError("SegmentationMeter.compute() called before any update()")
        return {name: float(np.mean([r[name] for r in self.per_image])) for name in SEGMENTATION_METRICS}

    def reset(self) -> None:
        self.per_image.clear()


def classification_scores(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """Macro accuracy, sensitivity, precision, F1, balanced and overall accuracy, per-class recall, confusion.

    `preds` are class indices (N) or scores (NxC); `targets` are class indices (N).
    """
    preds = torch.as_tensor(preds)
    targets = torch.as_tensor(targets).long()
    if preds.ndim == 2:
        preds = preds.argmax(dim=1)
    preds = preds.long()
    kw = {"num_classes": num_classes}
    per_class_recall = tmf.multiclass_recall(preds, targets, average=None, **kw)
    support = torch.bincount(targets, minlength=num_classes)
    present = support > 0
    out = {
        "accuracy": float(tmf.multiclass_accuracy(preds, targets, average="macro", **kw)),
        "sensitivity": float(tmf.multiclass_recall(preds, targets, average="macro", **kw)),
        "precision": float(tmf.multiclass_precision(preds, targets, average="macro", **kw)),
        "f1": float(tmf.multiclass_f1_score(preds, targets, average="macro", **kw)),
        "balanced_accuracy": float(per_class_recall[present].mean()) if present.any() else float("nan"),
        "overall_accuracy": float((preds == targets).float().mean()) if len(targets) else float("nan"),
        "per_class_recall": [float(v) for v in per_class_recall],
        "confusion_matrix": tmf.multiclass_confusion_matrix(preds, targets, **kw).tolist(),
    }
    return out


@dataclass
class ClassificationMeter:
    """Accumulates predictions and targets over batches; `compute()` gives `classification_scores`."""
    num_classes: int
    preds: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)

    def update(self, logits_or_preds: torch.Tensor, targets: torch.Tensor) -> None:
        p = torch.as_tensor(logits_or_preds).detach().cpu()
        self.preds.append(p.argmax(dim=1) if p.ndim == 2 else p.long())
        self.targets.append(torch.as_tensor(targets).detach().cpu().long())

    def compute(self) -> dict:
        if not self.preds:
            raise ValueError("ClassificationMeter.compute() called before any update()")
        return classification_scores(torch.cat(self.preds), torch.cat(self.targets), self.num_classes)

    def reset(self) -> None:
        self.preds.clear()
        self.targets.clear()
