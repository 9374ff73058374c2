"""Table 1: compare a reference image set A with a set B (overall and per class).

Per comparison: Fréchet distance and KID (with its jackknife standard error over B) in the chosen feature space
(keys from the extractor, e.g. `fd_vae`), LPIPS and MS-SSIM averaged over seeded random cross pairs,
Wasserstein-1 distances between the mask-statistics distributions, and the mean image-mask consistency Dice of B.
The Fréchet distance is biased upwards for small sets (it depends on n), so the B sets of the rows are cut to
one size (`equal_size_selections`: overall and per class, seeded subsets) before they are compared with A.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from components.data import manifest
from components.data.mask_stats import StatsTable, distribution_distances
from components.progress import progress_bar
from components.quality.distances import frechet_distance_features, kernel_distance, kid_standard_error
from components.quality.similarity import cross_pairs, lpips_pairs, ms_ssim_pairs

UNAVAILABLE = "unavailable"


@dataclass
class ImageSet:
    """Images at the comparison size, masks at their own size, classes, and per-image results."""
    name: str
    images: np.ndarray           # (N, S, S, 3) uint8
    masks: list[np.ndarray]      # HxW 0/1
    categories: np.ndarray       # (N,) class codes
    stats: StatsTable
    features: np.ndarray | None = None
    consistency: np.ndarray | None = None  # per-image Dice(mask, segmenter prediction)

    def __len__(self) -> int:
        return len(self.images)

    def index(self, category: str) -> np.ndarray:
        return np.flatnonzero(self.categories == category)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))


def load_set(name: str, root: str | Path, rows: pd.DataFrame, size: int, progress: bool = False) -> ImageSet:
    """Load the image-mask pairs of `rows` (manifest rows of the dataset at `root`); every row needs a mask."""
    manifest.require_masks(rows, root, "quality")
    images, masks = [], []
    for _, row in progress_bar(rows.iterrows(), total=len(rows), desc=f"load {name}", disable=not progress, unit="img"):
        pair = manifest.load_pair(root, row, require_mask=True)
        images.append(resize_image(pair.image, size))
        masks.append(pair.mask)
    return ImageSet(name=name, images=np.stack(images), masks=masks,
                    categories=rows["category"].astype(str).to_numpy(), stats=StatsTable.of(masks))


@dataclass(frozen=True)
class CompareSettings:
    fd_key: str
    kid_key: str
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pairs: int = 1000
    class_pairs: int = 200
    msssim_kernel_size: int = 7
    min_class_samples: int = 10
    seed: int = 0
    batch_size: int = 32
    device: str = "cpu"


def _compare(a: ImageSet, b: ImageSet, ia_sel: np.ndarray, ib_sel: np.ndarray, s: CompareSettings, lpips,
             n_pairs: int, min_fd: int, kid_size: int) -> dict:
    out: dict = {"n_a": int(len(ia_sel)), "n_b": int(len(ib_sel))}
    if len(ia_sel) == 0 or len(ib_sel) == 0:
        return out
    if a.features is not None and b.features is not None:
        fa, fb = a.features[ia_sel], b.features[ib_sel]
        if min(len(fa), len(fb)) >= max(min_fd, 2):
            out[s.fd_key] = frechet_distance_features(fa, fb)
        if min(len(fa), len(fb)) >= 2:
            mean, std = kernel_distance(fa, fb, s.kid_subsets, min(kid_size, len(fa), len(fb)), seed=s.seed)
            out[s.kid_key], out[f"{s.kid_key}_std"] = mean, std
            if len(fb) >= 3:
                out[f"{s.kid_key}_se"] = kid_standard_error(fa, fb)[1]
    pa, pb = cross_pairs(len(ia_sel), len(ib_sel), n_pairs, s.seed)
    ia, ib = ia_sel[pa], ib_sel[pb]
    out["ms_ssim"] = float(np.mean(ms_ssim_pairs(a.images, b.images, ia, ib, s.msssim_kernel_size, s.batch_size,
                                                 s.device)))
    out["lpips"] = float(np.mean(lpips_pairs(lpips, a.images, b.images, ia, ib, s.batch_size))) if lpips \
        else UNAVAILABLE
    out.update(distribution_distances(a.stats.subset(ia_sel), b.stats.subset(ib_sel)))
    if b.consistency is not None:
        out["consistency_dice"] = float(np.mean(b.consistency[ib_sel]))
    return out


@dataclass(frozen=True)
class Selection:
    """The images of a set B that enter a comparison: overall and per class (indices into B)."""
    overall: np.ndarray
    per_class: dict[str, np.ndarray]


def _subset(index: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(index, n, replace=False)) if n < len(index) else index


def equal_size_selections(sets: list[ImageSet], categories: list[str], seed: int = 0) -> list[Selection]:
    """One selection per set, all of one size: overall the smallest set's size, per class the smallest class
    count over the sets (0 when a set has none), each a seeded random subset (the whole set when it is the
    smallest)."""
    n = min(len(b) for b in sets)
    per_n = {c: min(len(b.index(c)) for b in sets) for c in categories}
    out = []
    for k, b in enumerate(sets):
        rng = np.random.default_rng([seed, k])
        per_class = {c: _subset(b.index(c), per_n[c], rng) for c in categories}
        out.append(Selection(_subset(np.arange(len(b)), n, rng), per_class))
    return out


def compare_sets(a: ImageSet, b: ImageSet, categories: list[str], s: CompareSettings, lpips=None,
                 kid_subset_size: int | None = None, selection: Selection | None = None) -> dict:
    """Overall metrics of A vs B plus `per_class` (classes present in either set); B restricted to `selection`
    (default: all of B)."""
    kid_size = kid_subset_size or s.kid_subset_size
    sel = selection or Selection(np.arange(len(b)), {c: b.index(c) for c in categories})
    out = _compare(a, b, np.arange(len(a)), sel.overall, s, lpips, s.pairs, 2, kid_size)
    per_class = {}
    for c in categories:
        ia, ib = a.index(c), sel.per_class.get(c, np.zeros(0, np.int64))
        if len(ia) or len(b.index(c)):
            per_class[c] = _compare(a, b, ia, ib, s, lpips, s.class_pairs, s.min_class_samples, kid_size)
    out["per_class"] = per_class
    return out
