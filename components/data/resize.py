"""Bring an image and its mask to size x size with one geometry (`prepare.resize`), so they stay aligned.

pad     (default) scale the longer side to `size`, centre, fill the rest with black / background: the lesion
        keeps its shape and nothing of it is cut off. Shape and border (asymmetry, irregularity) are what tells
        the classes apart and what the generator must learn, and lesions often reach the frame's edge, which a
        crop would cut (and its mask with it).
crop    scale the shorter side to `size` and keep the centre square: undistorted, but the sides are lost.
squash  stretch to size x size (the old behaviour): nothing lost, shapes distorted by the aspect ratio.

Square inputs give the same result in every mode (one LANCZOS resize of the image, nearest for the mask).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE_MODES: tuple[str, ...] = ("pad", "crop", "squash")
PAD_RGB = (0, 0, 0)  # dermoscopy frames are dark at the edges (vignette), so black bars read as frame, not skin


def upscale_factor(width: int, height: int, size: int, mode: str) -> float:
    """How much the image is enlarged (> 1) or reduced (< 1) on its way to size x size in `mode`."""
    if mode == "pad":
        return size / max(width, height)
    if mode == "crop":
        return size / min(width, height)
    return max(size / width, size / height)


def fit(image: np.ndarray, mask: np.ndarray | None, size: int,
        mode: str = "pad") -> tuple[Image.Image, Image.Image | None]:
    """The RGB image (LANCZOS) and the 0/255 L mask (nearest) at size x size, same geometry for both."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    height, width = image.shape[:2]
    img = Image.fromarray(image)
    msk = Image.fromarray(mask * 255) if mask is not None else None
    if width == height or mode == "squash":
        return (img.resize((size, size), Image.LANCZOS),
                msk.resize((size, size), Image.NEAREST) if msk is not None else None)
    if mode == "crop":
        side = min(width, height)
        box = ((width - side) // 2, (height - side) // 2, (width - side) // 2 + side, (height - side) // 2 + side)
        return (img.resize((size, size), Image.LANCZOS, box=box),
                msk.resize((size, size), Image.NEAREST, box=box) if msk is not None else None)
    scale = size / max(width, height)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    offset = ((size - inner[0]) // 2, (size - inner[1]) // 2)
    canvas = Image.new("RGB", (size, size), PAD_RGB)
    canvas.paste(img.resize(inner, Image.LANCZOS), offset)
    if msk is None:
        return canvas, None
    mask_canvas = Image.new("L", (size, size), 0)
    mask_canvas.paste(msk.resize(inner, Image.NEAREST), offset)
    return canvas, mask_canvas
