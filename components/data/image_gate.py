"""Image-quality gate of the importers: degenerate images (smears, near-uniform, too small) are found here.

numpy on the decoded RGB array (reduced with PIL first); `inspect` returns the reason and a detail, or None for a
usable image.
The thresholds were calibrated on the toy set (32-256 px, 300 images each), three natural photos at 64 px to full
size (with and without blur, letterboxed, with a circular vignette, JPEG-compressed) and smears built from them
(one row replicated, JPEG-compressed, with noise): normal images score >= 0.5 on the smear measure and have no
repeated band; smears score <= 0.16. 2000 toy images at 32 and at 128 px: none flagged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# The checks run on a copy whose longer side is at most this (block means): smears and uniform areas survive
# averaging, sensor noise does not, and a 6000 px photo costs what a thumbnail does.
ANALYSIS_SIDE = 256
# Grey levels (0-255). A photo has vignetting, skin texture and sensor noise (toy minimum 6.9); a blank,
# black or grey placeholder stays below 1-2 even after JPEG compression.
NEAR_UNIFORM_STD = 2.0
# Share of the image's variation left after subtracting the column means (rows) or the row means (columns).
# A vertical smear (every row the same) leaves ~0 (0.00 after JPEG, 0.05-0.16 with noise of 3 grey levels
# added); a lesion is a blob that varies along both axes, so real images keep >= 0.5 (toy 0.50, photos 0.64).
SMEAR_MAX_RESIDUAL = 0.25
# A row pair is a repeat when it differs by less than this share of the row's own texture (horizontal
# neighbour differences, isotropic in a photo, so ~1 there) while the row has texture (>= MIN_ROW_TEXTURE:
# flat letterbox bars are not repeats). A run of repeats over SMEARED_BAND_FRACTION of the side is a smeared
# band (a truncated decode repeating its last row); photos and toy images have none longer than 1 %.
REPEAT_RATIO = 0.2
MIN_ROW_TEXTURE = 1.0
SMEARED_BAND_FRACTION = 0.2
# Letterbox / pillarbox bars (one flat colour at an edge, e.g. a padded export) are trimmed before the smear
# measures, which they would otherwise dominate: edge rows (columns) whose own std and distance from the first
# edge row's mean both stay under this many grey levels (JPEG ringing in a black bar stays below 2).
BAR_TOLERANCE = 4.0
MIN_CONTENT_SIDE = 8
# Upscaling more than this (in the configured resize mode) invents detail the generator would learn as blur.
MAX_UPSCALE = 2.0


@dataclass(frozen=True)
class Verdict:
    """Why an image cannot be used: a reason code (excluded.csv `reason`) and a human-readable detail."""
    reason: str
    detail: str


def _analysis_copy(image: np.ndarray) -> np.ndarray:
    """Float HxWxC copy with the longer side at most ANALYSIS_SIDE (block means)."""
    im = Image.fromarray(image)
    factor = int(np.ceil(max(im.size) / ANALYSIS_SIDE))
    if factor > 1:
        im = im.reduce(factor)
    arr = np.asarray(im, dtype=np.float32)
    return arr if arr.ndim == 3 else arr[..., None]


def _bar_rows(g: np.ndarray) -> int:
    """How many rows at the top of g form one flat bar."""
    n = 0
    for row in g:
        if row.std() >= BAR_TOLERANCE or abs(row.mean() - g[0].mean()) >= BAR_TOLERANCE:
            break
        n += 1
    return n


def _content(arr: np.ndarray) -> np.ndarray:
    """arr without flat bars at its four edges (letterbox, pillarbox); a smear's columns differ, so stay."""
    g = arr.mean(axis=2)
    top, bottom = _bar_rows(g), _bar_rows(g[::-1])
    left, right = _bar_rows(g.T), _bar_rows(g.T[::-1])
    return arr[top:max(top, g.shape[0] - bottom), left:max(left, g.shape[1] - right)]


def _longest_repeat_run(g: np.ndarray) -> int:
    """Longest run of consecutive near-identical rows of g (row pairs, see REPEAT_RATIO)."""
    if g.shape[0] < 2 or g.shape[1] < 2:
        return 0
    between = np.abs(np.diff(g, axis=0)).mean(axis=1)
    texture = np.abs(np.diff(g, axis=1)).mean(axis=1)[:-1]
    repeat = (between <= REPEAT_RATIO * texture) & (texture >= MIN_ROW_TEXTURE)
    best = run = 0
    for r in repeat:
        run = run + 1 if r else 0
        best = max(best, run)
    return best


def inspect(image: np.ndarray) -> Verdict | None:
    """The reason an HxWx3 uint8 image is degenerate (near-uniform, smeared), or None when it looks usable."""
    arr = _content(_analysis_copy(image))
    if min(arr.shape[:2]) < MIN_CONTENT_SIDE:
        return Verdict("near_uniform", "near-uniform image: one flat colour apart from a strip under "
                                       f"{MIN_CONTENT_SIDE} px")
    std = float(arr.reshape(-1, arr.shape[-1]).std(axis=0).max())
    if std < NEAR_UNIFORM_STD:
        return Verdict("near_uniform", f"near-uniform image: pixel std {std:.2f} grey levels < {NEAR_UNIFORM_STD}")
    g = arr.mean(axis=2)
    total = max(float(g.std()), 1e-6)
    for axis, reason, what in ((0, "vertical_smear", "every row"), (1, "horizontal_smear", "every column")):
        residual = float((g - g.mean(axis=axis, keepdims=True)).std()) / total
        if residual < SMEAR_MAX_RESIDUAL:
            return Verdict(reason, f"{what} (nearly) the same, the lesion smeared out: {residual:.2f} of the "
                                   f"variation is left across them (< {SMEAR_MAX_RESIDUAL})")
    for plane, what in ((g, "rows"), (g.T, "columns")):
        run = _longest_repeat_run(plane)
        if run > 0 and run + 1 >= SMEARED_BAND_FRACTION * plane.shape[0]:
            share = (run + 1) / plane.shape[0]
            return Verdict("smeared_band", f"{run + 1} consecutive {what} repeat one another ({share:.0%} of the "
                                           f"image, >= {SMEARED_BAND_FRACTION:.0%}): a smeared band")
    return None


def too_small(width: int, height: int, upscale: float, size: int) -> Verdict | None:
    """An image that would be upscaled more than MAX_UPSCALE to reach `size` px."""
    if upscale > MAX_UPSCALE:
        return Verdict("too_small", f"{width}x{height} px would be upscaled {upscale:.1f}x to {size} px "
                                    f"(> {MAX_UPSCALE:g}x); use the full-resolution image or a smaller prepare.size")
    return None
