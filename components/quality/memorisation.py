"""Memorisation audit: how close is each generated image to its nearest real training image?

Feature space: down-sampled pixels. Every image is resized (LANCZOS) to `size` x `size` RGB in [0, 1]; the
distance of two images is the root-mean-square pixel difference, minimised over the 8 flips/rotations of the
candidate (the generator is fine-tuned with those augmentations, so a memorised image may come out rotated).
Pixels rather than a learned encoder: a near-copy is a copy of the layout (lesion outline, hairs, background),
which a global feature such as the project VAE's channel statistics discards, and pixels need no model that
could itself have been trained on the images audited.

Scale: the nearest-neighbour distance of every real training image to another training image. A candidate's
`nn_ratio` is its distance divided by the median of those real–real distances, `nn_percentile` the share of
real–real distances below it. An exact copy has ratio 0; a new image of the same kind has a ratio near 1. A
candidate with `nn_ratio < near_copy_ratio` (default 0.5) is flagged `near_copy`: it is closer to a training
image than distinct real training images almost ever are to each other (on the toy data, 2 of 1,600 training
images and 1 of 400 test images are that close to a training image; the quality stage reports the test
split's share beside the synthetic one, as the audit's false-alarm level).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image

from components.errors import ConfigError, DataError
from components.hashing import bytes_digest

AUDIT_COLUMNS: tuple[str, ...] = ("nn_real_id", "nn_distance", "nn_ratio", "nn_percentile", "near_copy")
FEATURE_SPACE = "pixels"
SUMMARY_FILE = "memorisation.json"   # beside the synthetic manifest: the audit's settings, scale and counts


@dataclass(frozen=True)
class MemorisationSettings:
    """Image side of the pixel space, the near-copy threshold (ratio to the real–real median) and chunking."""
    size: int = 32
    near_copy_ratio: float = 0.5
    chunk: int = 256          # candidates per distance block (memory: chunk x reference floats)

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ConfigError(f"memorisation size {self.size}: use an image side >= 2 px")
        if not 0.0 < self.near_copy_ratio < 1.0:
            raise ConfigError(f"memorisation near_copy_ratio {self.near_copy_ratio}: use a ratio in (0, 1)")
        if self.chunk < 1:
            raise ConfigError(f"memorisation chunk {self.chunk}: use a whole number >= 1")


def pixel_features(images: Iterable, size: int, n: int | None = None) -> np.ndarray:
    """(N, size, size, 3) float32 in [0, 1] from uint8 RGB images of any size (LANCZOS resize); `images` may be
    a generator when its length `n` is given."""
    n = len(images) if n is None else n
    out = np.empty((n, size, size, 3), np.float32)
    for i, image in enumerate(images):
        im = np.asarray(image)
        if im.shape[:2] != (size, size):
            im = np.asarray(Image.fromarray(im).resize((size, size), Image.LANCZOS))
        out[i] = im.astype(np.float32) / 255.0
    return out


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """Flip/rotation k (0..7) of an (N, S, S, C) batch, as components.data.transforms.dihedral."""
    if k & 4:
        x = x.transpose(0, 2, 1, 3)
    return np.rot90(x, k & 3, axes=(1, 2))


def nearest_neighbours(candidates: np.ndarray, reference: np.ndarray, exclude_self: bool = False,
                       chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(index into `reference`, RMS pixel distance) of each candidate's nearest reference image, minimised over
    the candidate's 8 flips/rotations. `exclude_self`: candidates are the reference itself (same order) and an
    image is not its own neighbour."""
    if len(reference) < 1 + exclude_self:
        raise ValueError(f"need at least {1 + exclude_self} reference images, got {len(reference)}")
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    ref_sq = (ref * ref).sum(axis=1)
    d = ref.shape[1]
    index = np.empty(len(candidates), np.int64)
    dist = np.empty(len(candidates), np.float64)
    for start in range(0, len(candidates), chunk):
        block = candidates[start:start + chunk]
        best = np.full((len(block), len(ref)), np.inf)
        for k in range(8):
            c = np.ascontiguousarray(_dihedral(block, k)).reshape(len(block), -1).astype(np.float64)
            sq = (c * c).sum(axis=1)[:, None] + ref_sq[None, :] - 2.0 * c @ ref.T
            np.minimum(best, sq, out=best)
        if exclude_self:
            rows = np.arange(len(block))
            best[rows, start + rows] = np.inf
        j = best.argmin(axis=1)
        index[start:start + len(block)] = j
        # the expansion |c|^2 + |r|^2 - 2 c.r cancels badly near 0: the chosen pair's distance is computed directly
        chosen = reference[j].astype(np.float64)
        exact = np.min([((_dihedral(block, k).astype(np.float64) - chosen) ** 2).reshape(len(block), -1).sum(axis=1)
                        for k in range(8)], axis=0)
        dist[start:start + len(block)] = np.sqrt(exact / d)
    return index, dist


@dataclass(frozen=True)
class RealScale:
    """The real–real nearest-neighbour distances of the training images: what 'close' means for this data."""
    distances: np.ndarray       # sorted, one per real training image

    @property
    def median(self) -> float:
        return float(np.median(self.distances))

    def percentile_of(self, values: np.ndarray) -> np.ndarray:
        """Share (0..100) of real–real distances strictly below each value."""
        return 100.0 * np.searchsorted(self.distances, values, side="left") / len(self.distances)

    def summary(self) -> dict:
        return {"n_reference": int(len(self.distances)), "real_nn_median": self.median,
                "real_nn_p01": float(np.percentile(self.distances, 1)),
                "real_nn_p05": float(np.percentile(self.distances, 5))}


def real_scale(reference: np.ndarray, chunk: int = 256) -> RealScale:
    """Nearest-neighbour distance of every reference image to another one (its own flips excluded)."""
    _, dist = nearest_neighbours(reference, reference, exclude_self=True, chunk=chunk)
    if np.median(dist) <= 0:
        raise DataError("memorisation audit: more than half of the real training images have an exact duplicate "
                        "(flips/rotations included), so the real-real scale is 0; remove the duplicates from the "
                        "real training split")
    return RealScale(np.sort(dist))


def audit(candidates: np.ndarray, reference: np.ndarray, reference_ids, settings: MemorisationSettings,
          scale: RealScale | None = None) -> tuple[pd.DataFrame, RealScale]:
    """Per candidate: nearest reference id and distance, ratio to the real–real median, its percentile in the
    real–real distribution and the near-copy flag (columns AUDIT_COLUMNS, candidate order); and the scale used
    (computed from `reference` unless given)."""
    scale = scale or real_scale(reference, settings.chunk)
    index, dist = nearest_neighbours(candidates, reference, chunk=settings.chunk)
    ratio = dist / scale.median
    ids = np.asarray(list(reference_ids), dtype=object)
    table = pd.DataFrame({"nn_real_id": ids[index], "nn_distance": dist, "nn_ratio": ratio,
                          "nn_percentile": scale.percentile_of(dist), "near_copy": ratio < settings.near_copy_ratio})
    return table[list(AUDIT_COLUMNS)], scale


def count_near_copies(table: pd.DataFrame, categories, classes: list[str]) -> dict:
    """Near-copy count and share and nn_ratio quantiles of an audit table (or a manifest with its columns),
    overall and per class."""
    cats = np.asarray(categories).astype(str)
    flags = table["near_copy"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    ratio = pd.to_numeric(table["nn_ratio"], errors="coerce").to_numpy(np.float64)
    per_class = {}
    for c in classes:
        sel = cats == c
        if sel.any():
            per_class[c] = {"n": int(sel.sum()), "near_copies": int(flags[sel].sum()),
                            "near_copy_share": float(flags[sel].mean()), "nn_ratio_min": float(np.nanmin(ratio[sel]))}
    empty = not len(ratio)
    return {
        "n": int(len(table)), "near_copies": int(flags.sum()), "near_copy_share": 0.0 if empty else float(flags.mean()),
        "nn_ratio_min": float("nan") if empty else float(np.nanmin(ratio)),
        "nn_ratio_p05": float("nan") if empty else float(np.nanpercentile(ratio, 5)),
        "nn_ratio_median": float("nan") if empty else float(np.nanmedian(ratio)),
        "per_class": per_class,
    }


def audit_summary(table: pd.DataFrame, categories, classes: list[str], settings: MemorisationSettings,
                  scale: RealScale) -> dict:
    """`count_near_copies` plus the feature space, the settings and the real-real scale (memorisation.json)."""
    return {"feature_space": FEATURE_SPACE, **asdict(settings), **scale.summary(),
            **count_near_copies(table, categories, classes)}


def reference_digest(reference_ids) -> str:
    """Digest of the reference set's ids in order (tells whether a recorded real-real scale still applies)."""
    return bytes_digest("\n".join(str(i) for i in reference_ids).encode())


def recorded_scale(record: dict, reference_ids) -> RealScale | None:
    """The real-real scale stored beside an audit (SUMMARY_FILE), if it was computed on these reference ids."""
    distances = record.get("real_nn_distances")
    if distances is None or record.get("reference_digest") != reference_digest(reference_ids):
        return None
    return RealScale(np.sort(np.asarray(distances, np.float64)))


def settings_from_summary(summary: dict) -> MemorisationSettings:
    """The settings recorded in an audit summary (so another stage audits with exactly the same ones)."""
    return MemorisationSettings(size=int(summary["size"]), near_copy_ratio=float(summary["near_copy_ratio"]),
                                chunk=int(summary.get("chunk", 256)))
