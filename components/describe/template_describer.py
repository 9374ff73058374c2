"""Offline describer: class-specific clinical sentences from dermoscopic vocabulary, deterministic per image.

Choices (structures, colours, sentence frame) come from an RNG seeded by sha256(image bytes), the class and
a salt, so the same image always gets the same sentence and different images of a class get different ones.
Lesion size and contrast are measured on the image (and its mask when there is one).
"""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np

from components.data.categories import display_name
from components.data.manifest import load_mask
from components.data.prompts import class_prefix
from components.describe.base import DescribeItem, DescribeStats, Description, Progress, open_image
from components.describe.vocabulary import CONTRAST_WORDS, GENERIC, SIZE_WORDS, VOCABULARY, ClassVocabulary
from components.hashing import bytes_digest

TEMPLATE_MODEL = "template-v1"

_FRAMES = (
    "{size} lesion, {symmetry}, with {border}; dermoscopy shows {f1}, {f2} and {f3} in {colours} tones "
    "with {contrast} contrast to the surrounding skin{icd}.",
    "{size} lesion, {symmetry}, showing {f1} and {f2} together with {f3}; colours {colours}; {border}; "
    "{contrast} contrast to the surrounding skin{icd}.",
    "dermoscopy reveals {f1}, {f2} and {f3} within a {size} lesion, {symmetry}, of {colours} colour, "
    "with {border} and {contrast} contrast{icd}.",
)


def _bucket(value: float, table: tuple[tuple[float, str], ...]) -> str:
    for upper, word in table:
        if value < upper:
            return word
    return table[-1][1]


def measure(image_bytes: bytes, mask: np.ndarray | None, where: str = "image") -> tuple[float | None, float]:
    """(lesion area fraction or None without a mask, relative luminance contrast lesion vs. skin)."""
    with open_image(image_bytes, where) as im:
        lum = np.asarray(im.convert("L"), dtype=np.float64)
    if mask is not None and mask.shape == lum.shape and 0 < mask.sum() < mask.size:
        inside, outside = lum[mask > 0], lum[mask == 0]
        fraction = float(mask.mean())
    else:  # no usable mask: centre versus the outer ring of the frame
        h, w = lum.shape
        centre = np.zeros_like(lum, dtype=bool)
        centre[h // 3: h - h // 3, w // 3: w - w // 3] = True
        ring = np.ones_like(centre)
        ring[h // 8: h - h // 8, w // 8: w - w // 8] = False
        inside, outside = lum[centre], lum[ring]
        fraction = None
    contrast = abs(float(outside.mean()) - float(inside.mean())) / max(float(outside.mean()), 1.0)
    return fraction, contrast


def compose(category: str, seed_text: str, fraction: float | None, contrast: float) -> str:
    """The sentence for one image: prefix + a frame filled from the class vocabulary."""
    vocab: ClassVocabulary = VOCABULARY.get(category, GENERIC)
    rng = random.Random(bytes_digest(seed_text.encode()))
    f1, f2, f3 = rng.sample(vocab.features, 3)
    size = rng.choice(("small", "medium-sized", "large")) if fraction is None else _bucket(fraction, SIZE_WORDS)
    icd_terms = vocab.icd11 or (display_name(category),)
    icd = f", consistent with {rng.choice(icd_terms)} (ICD-11)"
    body = rng.choice(_FRAMES).format(
        size=size, symmetry=rng.choice(vocab.symmetry), border=rng.choice(vocab.borders),
        colours=rng.choice(vocab.colours), contrast=_bucket(contrast, CONTRAST_WORDS),
        f1=f1, f2=f2, f3=f3, icd=icd,
    )
    article = "" if body.startswith("dermoscopy") else "a "
    return class_prefix(category) + article + body


class TemplateDescriber:
    """Offline describer (the embedded default when no API key or server is configured)."""
    name = "template"
    model = TEMPLATE_MODEL

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._stats = DescribeStats()

    @property
    def stats(self) -> DescribeStats:
        return self._stats

    def describe_one(self, item: DescribeItem, image_bytes: bytes | None = None) -> str:
        """The description of one image (reads its files unless the bytes are given)."""
        data = item.read_bytes() if image_bytes is None else image_bytes
        mask = load_mask(item.mask_path) if item.mask_path else None
        fraction, contrast = measure(data, mask, where=str(item.image_path))
        seed_text = f"{self.seed}:{item.category}:{bytes_digest(data)}"
        return compose(item.category, seed_text, fraction, contrast)

    def describe(self, items: Sequence[DescribeItem], progress: Progress | None = None) -> list[Description]:
        out = []
        for item in items:
            result = Description(item.image_id, self.describe_one(item), self.name, self.model, "template")
            self._stats.count(result)
            out.append(result)
            if progress:
                progress(1)
        return out
