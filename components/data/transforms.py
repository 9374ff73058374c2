"""Albumentations pipelines that move image and mask together (one draw of spatial randomness for both).

Call the result as `t(image=HxWx3 uint8, mask=HxW uint8)`; it returns the same keys, resized to size x size.
Images are resized with LANCZOS, masks with nearest neighbour, so a mask stays binary and on its lesion.
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would otherwise query PyPI at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import torch  # noqa: E402

TRANSFORM_KINDS = ("generator", "classify", "segment")

_REFLECT = cv2.BORDER_REFLECT_101


def _resize(size: int) -> A.Resize:
    return A.Resize(size, size, interpolation=cv2.INTER_LANCZOS4, mask_interpolation=cv2.INTER_NEAREST)


def _generator(size: int) -> list:
    # The paper's fine-tune: pixel-level and spatial augmentations, synchronised over image and mask. Colour
    # changes stay mild because the generator learns the colour distribution itself.
    return [
        A.SquareSymmetry(p=1.0),
        A.Affine(scale=(0.9, 1.1), rotate=(-20, 20), translate_percent=(-0.05, 0.05), border_mode=_REFLECT,
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST, p=0.5),
        _resize(size),
        A.RandomBrightnessContrast(brightness_limit=0.08, contrast_limit=0.08, p=0.5),
        A.HueSaturationValue(hue_shift_limit=3, sat_shift_limit=8, val_shift_limit=5, p=0.3),
    ]


def _classify(size: int) -> list:
    return [
        A.RandomResizedCrop(size=(size, size), scale=(0.7, 1.0), ratio=(0.85, 1.18),
                            interpolation=cv2.INTER_LANCZOS4, mask_interpolation=cv2.INTER_NEAREST),
        A.SquareSymmetry(p=1.0),
        A.Affine(rotate=(-30, 30), border_mode=_REFLECT, mask_interpolation=cv2.INTER_NEAREST, p=0.4),
        A.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15, hue=0.03, p=0.6),
        A.GaussNoise(std_range=(0.005, 0.03), p=0.2),
    ]


def _segment(size: int) -> list:
    return [
        A.SquareSymmetry(p=1.0),
        A.Affine(scale=(0.85, 1.15), rotate=(-30, 30), translate_percent=(-0.08, 0.08), border_mode=_REFLECT,
                 mask_interpolation=cv2.INTER_NEAREST, p=0.6),
        _resize(size),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=12, val_shift_limit=8, p=0.3),
    ]


_BUILDERS = {"generator": _generator, "classify": _classify, "segment": _segment}


def build_transforms(kind: str, size: int, train: bool, seed: int | None = None) -> A.Compose:
    """Joint image+mask pipeline for `kind` ('generator', 'classify', 'segment'); eval (train=False) only resizes.

    `seed` makes the random draws reproducible.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown transform kind {kind!r}; use one of {list(TRANSFORM_KINDS)}")
    steps = _BUILDERS[kind](size) if train else [_resize(size)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return A.Compose(steps, seed=seed)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a BxCxHxW batch (k in 0..7); lesions have no orientation."""
    if k & 4:
        x = x.transpose(-1, -2)
    return torch.rot90(x, k & 3, dims=(-2, -1))
