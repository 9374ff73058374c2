"""Lesion-mask geometry: area fraction, compactness and component count, and distances between their distributions.

Conventions (so numbers can be checked by hand):
- area A = number of foreground pixels; area fraction = A / (H * W);
- perimeter P = crack length: the number of pixel edges between a foreground pixel and a background pixel
  (outside the image counts as background). A k x k square has P = 4k, so its compactness 4*pi*A/P^2 is
  pi/4 ~ 0.785; a digital disc tends to pi^2/16 ~ 0.617 (its staircase boundary is longer than the circle);
  ragged or elongated shapes score lower. Compactness of an empty mask is 0;
- components are 8-connected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

STATISTICS: tuple[str, ...] = ("area_fraction", "compactness", "components")

_EIGHT = np.ones((3, 3), dtype=bool)


def area_fraction(mask: np.ndarray) -> float:
    """Share of foreground pixels."""
    m = np.asarray(mask).astype(bool)
    return float(m.sum()) / float(m.size)


def crack_perimeter(mask: np.ndarray) -> int:
    """Number of foreground/background pixel edges (image border counts as background)."""
    m = np.pad(np.asarray(mask).astype(bool), 1)
    return int((m[1:, :] != m[:-1, :]).sum() + (m[:, 1:] != m[:, :-1]).sum())


def compactness(mask: np.ndarray) -> float:
    """Isoperimetric ratio 4*pi*A/P^2 with the crack perimeter; 0 for an empty mask."""
    a = float(np.asarray(mask).astype(bool).sum())
    if a == 0:
        return 0.0
    p = crack_perimeter(mask)
    return 4.0 * math.pi * a / float(p * p)


def component_count(mask: np.ndarray) -> int:
    """Number of 8-connected foreground components."""
    _, n = ndimage.label(np.asarray(mask).astype(bool), structure=_EIGHT)
    return int(n)


def mask_statistics(mask: np.ndarray) -> dict[str, float]:
    """All statistics of one mask, keyed by STATISTICS."""
    return {
        "area_fraction": area_fraction(mask),
        "compactness": compactness(mask),
        "components": float(component_count(mask)),
    }


@dataclass(frozen=True)
class StatsTable:
    """Per-mask statistics of a set: one array per statistic, aligned with the input order."""
    values: dict[str, np.ndarray]

    @classmethod
    def of(cls, masks) -> "StatsTable":
        rows = [mask_statistics(m) for m in masks]
        return cls({k: np.asarray([r[k] for r in rows], dtype=np.float64) for k in STATISTICS})

    def subset(self, index: np.ndarray) -> "StatsTable":
        return StatsTable({k: v[index] for k, v in self.values.items()})

    def summary(self) -> dict[str, float]:
        """Mean and standard deviation of each statistic."""
        out: dict[str, float] = {}
        for k, v in self.values.items():
            if len(v):
                out[f"{k}_mean"] = float(v.mean())
                out[f"{k}_std"] = float(v.std())
        return out


def distribution_distances(a: StatsTable, b: StatsTable) -> dict[str, float]:
    """Wasserstein-1 distance between the two sets' distributions of each statistic (`w1_<statistic>`)."""
    out: dict[str, float] = {}
    for k in STATISTICS:
        if len(a.values[k]) and len(b.values[k]):
            out[f"w1_{k}"] = float(wasserstein_distance(a.values[k], b.values[k]))
    return out
