"""Reading lesion masks as they come: any PNG mode, lesion in colour or alpha, smoothed, at another resolution.

`read_mask` returns the 0/1 mask at its image's size and says what it had to do (resize, binarise, read the
alpha channel), so the importer can count and report it; a mask that cannot be read unambiguously raises
FileProblem with reason `bad_mask`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from components.data.image_io import FileProblem, open_image

# Masks at another resolution are resized when their aspect ratio is the image's within this share of a side
# (or one pixel): 600x450 onto 200x150 is the same frame, 20x20 onto 40x30 is not.
ASPECT_TOLERANCE = 0.01
# Colour and alpha that both vary must mark the same lesion on at least this share of pixels to be read as one.
CHANNEL_AGREEMENT = 0.99


@dataclass(frozen=True)
class MaskRead:
    """A decoded mask (HxW uint8 0/1 at the image's size) and what reading it took."""
    mask: np.ndarray
    resized: bool = False
    binarised: bool = False
    note: str = ""


def _bad(path: str | Path, detail: str) -> FileProblem:
    return FileProblem(path, "bad_mask", detail)


def _channels(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(lesion levels 0..255 from the colour channels, alpha or None) of a mask in any PIL mode."""
    if im.mode == "P":
        if "transparency" in im.info:
            im = im.convert("RGBA")
        else:
            index = np.asarray(im)
            if index.max() <= 1:  # palette index 0/1: background/lesion whatever the palette colours are
                return (index * 255).astype(np.uint8), None
            im = im.convert("RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = arr.max()
        scale = 255.0 if top <= 1 else (1.0 if top <= 255 else 255.0 / (65535.0 if top <= 65535 else top))
        return np.clip(arr * scale, 0, 255).astype(np.uint8), None
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        arr = np.asarray(im.convert("RGBA"))
        return arr[..., :3].max(axis=2), arr[..., 3]
    if im.mode == "RGB":  # a coloured lesion (e.g. red on black) counts whatever its hue: max, not luminance
        return np.asarray(im).max(axis=2), None
    return np.asarray(im.convert("L")), None


def _levels(path: str | Path, im: Image.Image, threshold: int) -> tuple[np.ndarray, str]:
    """The one channel holding the lesion, and a note when it is the alpha channel."""
    colour, alpha = _channels(im)
    if alpha is None or alpha.min() == alpha.max():
        return colour, ""
    shape_only = colour[alpha > 0]
    if colour.min() == colour.max() or shape_only.min() == shape_only.max():
        return alpha, "lesion read from the alpha channel"  # one colour, the shape drawn in transparency
    agree = float(((colour >= threshold) == (alpha >= threshold)).mean())
    if agree >= CHANNEL_AGREEMENT:
        return colour, ""
    raise _bad(path, f"RGBA mask whose colour and alpha channels mark different lesions ({agree:.0%} of pixels "
                     f"agree); save it as a single-channel (L) PNG with 255 for lesion and 0 for background")


def _binary(path: str | Path, levels: np.ndarray, threshold: int) -> tuple[np.ndarray, bool]:
    values = np.unique(levels)
    if len(values) <= 2:  # already two-level (0/1, 0/255, or e.g. 0/100): the higher level is lesion
        mask = (levels >= values.max()) if values.max() > 0 else np.zeros(levels.shape, bool)
        return mask.astype(np.uint8), not set(values.tolist()) <= {0, 1, 255}
    mask = (levels >= threshold).astype(np.uint8)
    if not mask.any():
        raise _bad(path, f"mask values {int(values.min())}..{int(values.max())} all lie below "
                         f"prepare.mask_threshold={threshold}; lower the threshold or save the lesion as 255")
    return mask, True


def read_mask(path: str | Path, image_size: tuple[int, int], threshold: int = 128,
              max_pixels: int = 100_000_000) -> MaskRead:
    """The 0/1 mask of `path` at image_size (width, height): binarised at threshold, resized (nearest) if needed."""
    im = open_image(path, max_pixels, what="mask")
    try:
        levels, note = _levels(path, im, threshold)
    finally:
        im.close()
    mask, binarised = _binary(path, levels, threshold)
    width, height = image_size
    mask_h, mask_w = mask.shape
    resized = (mask_w, mask_h) != (width, height)
    if resized:
        expected_h = mask_w * height / width
        if abs(expected_h - mask_h) > max(1.0, ASPECT_TOLERANCE * mask_h):
            raise _bad(path, f"mask size ({mask_w}, {mask_h}) differs from its image's ({width}, {height}) and has "
                             f"another aspect ratio, so it cannot be resized onto it; save the mask at the image's "
                             f"size")
        mask = (np.asarray(Image.fromarray(mask * 255).resize((width, height), Image.NEAREST)) > 0).astype(np.uint8)
    return MaskRead(mask, resized=resized, binarised=binarised, note=note)
