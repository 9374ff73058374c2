"""The embedded `toy` dataset: procedural, seeded dermoscopy-like images with exact lesion masks.

The images are synthetic drawings, not medical data. They exist so that every stage runs offline on a laptop.
Seven classes differ the way HAM10000 diagnoses do (palette, size, border irregularity, asymmetry and dermoscopic
structures such as pigment network, globules, streaks, blue-white veil and vessels), with overlapping colour
distributions so a classifier has to learn shape and texture, not one colour per class. Class frequencies follow
HAM10000. Each image depends only on (seed, index, category), so generation is deterministic and parallel.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from components import atomic
from components.data import manifest
from components.data.categories import HAM10000_CATEGORIES
from components.data.prompts import class_prefix
from components.data.splits import carve_validation, stratified_split
from components.errors import DataError
from components.progress import map_with_progress

TOY_ORIGIN = "toy"
TOY_VERSION = "toy-1"

# HAM10000 class frequencies (10,015 images).
HAM10000_COUNTS: dict[str, int] = {
    "nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115,
}

# Lengths below are in image-side units (1.0 = the image width); "px" values are pixels at 128 px.
_PX = 1.0 / 128.0


@dataclass(frozen=True)
class LesionStyle:
    """How one class looks: ranges sampled per image, and per-structure probabilities."""
    radius: tuple[float, float]
    elongation: tuple[float, float]
    asymmetry: float                 # std of the low-order radial harmonics (k = 1..3)
    irregularity: float              # std of the high-order radial harmonics (k = 4..16)
    edge_px: tuple[float, float]     # width of the fade from border to interior
    opacity: tuple[float, float]     # translucent lesions (bcc, akiec) let skin show through
    colours: tuple[tuple[str, tuple[int, int, int]], ...]
    n_colours: tuple[int, int]
    colour_sd: float
    mottle: float                    # low-frequency interior shading
    centre_dark: tuple[float, float]
    structures: dict[str, float] = field(default_factory=dict)


_LIGHT_BROWN = ("light brown", (170, 120, 85))
_BROWN = ("brown", (128, 82, 56))
_DARK_BROWN = ("dark brown", (88, 56, 42))
_BLACK = ("black", (48, 36, 36))
_BLUE_GREY = ("blue-grey", (104, 112, 132))
_TAN = ("tan", (186, 146, 104))
_PINK = ("pink", (214, 148, 142))
_PINK_RED = ("pinkish red", (204, 120, 112))
_RED = ("red", (178, 56, 66))
_PURPLE = ("purple", (122, 48, 88))
_RED_BROWN = ("reddish brown", (160, 92, 74))

STYLES: dict[str, LesionStyle] = {
    "nv": LesionStyle(radius=(0.12, 0.30), elongation=(1.0, 1.35), asymmetry=0.035, irregularity=0.010,
                      edge_px=(2, 6), opacity=(0.85, 1.0), colours=(_LIGHT_BROWN, _BROWN, _DARK_BROWN, _TAN),
                      n_colours=(1, 2), colour_sd=16, mottle=0.06, centre_dark=(0.0, 0.35),
                      structures={"network": 0.65, "globules": 0.4}),
    "mel": LesionStyle(radius=(0.18, 0.42), elongation=(1.0, 1.7), asymmetry=0.13, irregularity=0.045,
                       edge_px=(1, 5), opacity=(0.9, 1.0), colours=(_DARK_BROWN, _BROWN, _BLACK, _LIGHT_BROWN),
                       n_colours=(2, 4), colour_sd=18, mottle=0.14, centre_dark=(-0.1, 0.3),
                       structures={"atypical_network": 0.5, "streaks": 0.45, "veil": 0.45,
                                   "irregular_globules": 0.45, "regression": 0.3, "red_areas": 0.25}),
    "bkl": LesionStyle(radius=(0.14, 0.38), elongation=(1.0, 1.6), asymmetry=0.07, irregularity=0.03,
                       edge_px=(0.7, 2), opacity=(0.8, 1.0), colours=(_LIGHT_BROWN, _TAN, _BROWN, _DARK_BROWN),
                       n_colours=(1, 3), colour_sd=18, mottle=0.1, centre_dark=(-0.1, 0.15),
                       structures={"milia": 0.5, "comedo": 0.4, "cerebriform": 0.45, "scale": 0.3,
                                   "faint_network": 0.2}),
    "bcc": LesionStyle(radius=(0.11, 0.30), elongation=(1.0, 1.5), asymmetry=0.08, irregularity=0.035,
                       edge_px=(2, 7), opacity=(0.5, 0.85), colours=(_PINK, _PINK_RED, _LIGHT_BROWN),
                       n_colours=(1, 2), colour_sd=16, mottle=0.08, centre_dark=(-0.15, 0.1),
                       structures={"arborizing_vessels": 0.8, "nests": 0.5, "ulceration": 0.3,
                                   "shiny_white": 0.3}),
    "akiec": LesionStyle(radius=(0.13, 0.32), elongation=(1.0, 1.6), asymmetry=0.07, irregularity=0.045,
                         edge_px=(4, 10), opacity=(0.6, 0.9), colours=(_PINK_RED, _RED_BROWN, _PINK, _LIGHT_BROWN),
                         n_colours=(1, 2), colour_sd=18, mottle=0.1, centre_dark=(-0.1, 0.15),
                         structures={"scale": 0.7, "dotted_vessels": 0.5, "strawberry": 0.3,
                                     "faint_network": 0.15}),
    "df": LesionStyle(radius=(0.08, 0.18), elongation=(1.0, 1.3), asymmetry=0.03, irregularity=0.015,
                      edge_px=(3, 7), opacity=(0.7, 0.95), colours=(_LIGHT_BROWN, _RED_BROWN, _BROWN, _TAN),
                      n_colours=(1, 1), colour_sd=16, mottle=0.06, centre_dark=(-0.2, 0.0),
                      structures={"white_patch": 0.85, "faint_network": 0.5}),
    "vasc": LesionStyle(radius=(0.08, 0.22), elongation=(1.0, 1.4), asymmetry=0.04, irregularity=0.018,
                        edge_px=(1, 2.5), opacity=(0.85, 1.0), colours=(_RED, _PURPLE, _PINK_RED, _RED_BROWN),
                        n_colours=(1, 2), colour_sd=16, mottle=0.1, centre_dark=(0.0, 0.25),
                        structures={"lacunae": 0.9}),
}

_STRUCTURE_WORDS = {
    "network": "regular pigment network", "atypical_network": "atypical pigment network",
    "faint_network": "delicate peripheral network", "globules": "regular brown globules",
    "irregular_globules": "irregular dots and globules", "streaks": "peripheral streaks",
    "veil": "blue-white veil", "regression": "regression structures", "red_areas": "red areas",
    "milia": "milia-like cysts", "comedo": "comedo-like openings", "cerebriform": "cerebriform fissures",
    "scale": "white surface scale", "arborizing_vessels": "arborizing vessels",
    "nests": "blue-grey ovoid nests", "ulceration": "ulceration", "shiny_white": "shiny white areas",
    "dotted_vessels": "dotted vessels", "strawberry": "strawberry pattern", "white_patch": "central white patch",
    "lacunae": "red-purple lacunae",
}


# --------------------------------------------------------------------------------------------- class counts
def class_counts(n_images: int, categories: tuple[str, ...] | list[str] = HAM10000_CATEGORIES,
                 min_per_class: int = 2) -> dict[str, int]:
    """Images per class in HAM10000 proportions (largest remainder), at least `min_per_class` each."""
    categories = tuple(categories)
    unknown = [c for c in categories if c not in STYLES]
    if unknown:
        raise DataError(f"toy generator: no appearance for categories {unknown}; the toy set draws only the "
                        f"HAM10000 classes {sorted(STYLES)}. Use a subset of them or import real data.")
    if n_images < min_per_class * len(categories):
        raise DataError(f"toy generator: {n_images} images cannot hold {min_per_class} per class for "
                        f"{len(categories)} classes; set toy_images >= {min_per_class * len(categories)}")
    weights = np.array([HAM10000_COUNTS[c] for c in categories], dtype=np.float64)
    raw = weights / weights.sum() * n_images
    counts = np.maximum(np.floor(raw).astype(int), min_per_class)
    # Give back / hand out the difference by largest remainder, never below the minimum.
    while counts.sum() > n_images:
        order = np.argsort(raw - counts)  # most over-allocated first
        for i in order:
            if counts[i] > min_per_class:
                counts[i] -= 1
                break
    order = np.argsort(-(raw - counts), kind="stable")
    i = 0
    while counts.sum() < n_images:
        counts[order[i % len(order)]] += 1
        i += 1
    return {c: int(n) for c, n in zip(categories, counts)}


def assign_categories(n_images: int, categories: tuple[str, ...] | list[str], seed: int) -> list[str]:
    """The category of every index: exact class counts in a seeded random order."""
    counts = class_counts(n_images, categories)
    labels = np.array([c for c, n in counts.items() for _ in range(n)])
    return labels[np.random.default_rng([seed, 0x70E]).permutation(n_images)].tolist()


# --------------------------------------------------------------------------------------------- drawing kit
@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy, xx


@lru_cache(maxsize=64)
def _cubic_upsampler(size: int, cells: int) -> tuple[np.ndarray, float]:
    """(size x cells+3) Catmull-Rom interpolation matrix and the factor that gives the result unit variance."""
    u = (np.arange(size) + 0.5) / size * cells + 1.0  # grid coordinate of each pixel centre
    base = np.floor(u).astype(int)
    t = u - base
    weights = np.stack([(-t ** 3 + 2 * t ** 2 - t) / 2, (3 * t ** 3 - 5 * t ** 2 + 2) / 2,
                        (-3 * t ** 3 + 4 * t ** 2 + t) / 2, (t ** 3 - t ** 2) / 2], axis=1)
    mat = np.zeros((size, cells + 3), np.float64)
    for k in range(4):
        mat[np.arange(size), base - 1 + k] = weights[:, k]
    var = float((mat ** 2).sum(1).mean())
    return mat.astype(np.float32), 1.0 / var


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field of about unit std with about `cells` bumps across the image (separable cubic)."""
    mat, norm = _cubic_upsampler(size, cells)
    grid = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    return (mat @ grid @ mat.T) * np.float32(norm)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _splat(size: int, xs: np.ndarray, ys: np.ndarray, weights: np.ndarray | float = 1.0) -> np.ndarray:
    """Accumulate points (image-side units) into a size x size array with bilinear weights."""
    out = np.zeros(size * size, np.float32)
    px = xs * size - 0.5
    py = ys * size - 0.5
    x0 = np.floor(px).astype(np.int64)
    y0 = np.floor(py).astype(np.int64)
    fx = (px - x0).astype(np.float32)
    fy = (py - y0).astype(np.float32)
    w = np.broadcast_to(np.asarray(weights, np.float32), px.shape)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        np.add.at(out, yi[ok] * size + xi[ok], (w * wt)[ok])
    return out.reshape(size, size)


def _blobs(size: int, xs: np.ndarray, ys: np.ndarray, sigma: float, weights: np.ndarray | float = 1.0) -> np.ndarray:
    """Gaussian dots of std `sigma` (image-side units) with peak ~weight, clipped to [0, 1]."""
    if len(xs) == 0:
        return np.zeros((size, size), np.float32)
    s_px = max(sigma * size, 0.6)
    field_ = gaussian_filter(_splat(size, xs, ys, weights), s_px, mode="constant", truncate=3.0)
    return np.clip(field_ * (2 * math.pi * s_px * s_px), 0.0, 1.0)


def _lines(size: int, xs: np.ndarray, ys: np.ndarray, width: float, opacity: float = 1.0) -> np.ndarray:
    """Coverage of polylines given as densely sampled points (spacing <= half a pixel)."""
    if len(xs) == 0:
        return np.zeros((size, size), np.float32)
    s_px = max(width * size / 2.0, 0.5)
    dens = _splat(size, xs, ys, 0.5)  # points every half pixel -> one unit of mass per pixel of length
    cov = gaussian_filter(dens, s_px, mode="constant", truncate=3.0) * (math.sqrt(2 * math.pi) * s_px)
    return np.clip(cov * opacity, 0.0, 1.0)


def _blend(img: np.ndarray, colour, amount: np.ndarray) -> np.ndarray:
    a = amount[..., None]
    return img * (1 - a) + np.asarray(colour, np.float32) * a


@dataclass
class _Shape:
    """Lesion outline in polar form around (cx, cy) in a rotated, stretched frame."""
    cx: float
    cy: float
    radius: float
    elong: float
    rot: float
    harm_k: np.ndarray
    harm_a: np.ndarray
    harm_p: np.ndarray
    spike_t: np.ndarray
    spike_a: np.ndarray
    spike_w: np.ndarray

    def frame(self, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = xx - self.cx, yy - self.cy
        c, s = math.cos(self.rot), math.sin(self.rot)
        e = math.sqrt(self.elong)
        u = (dx * c + dy * s) / e
        v = (-dx * s + dy * c) * e
        return np.hypot(u, v), np.arctan2(v, u)

    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_tab", None) is None:
            t = np.linspace(-math.pi, math.pi, 1025, dtype=np.float64)[:, None]
            r = 1.0 + (self.harm_a * np.cos(self.harm_k * t + self.harm_p)).sum(-1)
            if len(self.spike_t):
                d = np.angle(np.exp(1j * (t - self.spike_t)))
                r = r + (self.spike_a * np.exp(-(d / self.spike_w) ** 2)).sum(-1)
            self._tab = (t[:, 0], self.radius * np.maximum(r, 0.35))
        return self._tab

    def rad(self, theta: np.ndarray) -> np.ndarray:
        """Border radius at angle theta (interpolated from a 1,024-step table of the outline)."""
        t, r = self._table()
        return np.interp(theta, t, r).astype(np.float32)

    def point(self, theta: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates (x, y) at angle theta and relative radius rho (1 = border)."""
        r = self.rad(theta) * rho
        e = math.sqrt(self.elong)
        u, v = r * np.cos(theta) * e, r * np.sin(theta) / e
        c, s = math.cos(self.rot), math.sin(self.rot)
        return self.cx + u * c - v * s, self.cy + u * s + v * c


def _random_shape(rng: np.random.Generator, style: LesionStyle, spikes: bool, zoom: float = 1.0,
                  offset: tuple[float, float] = (0.0, 0.0)) -> _Shape:
    radius = rng.uniform(*style.radius) * zoom
    ks = np.arange(1, 13, dtype=np.float32)
    amps = np.where(ks <= 3, rng.normal(0, style.asymmetry, 12),
                    rng.normal(0, style.irregularity, 12) * (4.0 / ks)).astype(np.float32)
    n_sp = int(rng.integers(5, 14)) if spikes else 0
    return _Shape(
        cx=0.5 + rng.normal(0, 0.05) + offset[0], cy=0.5 + rng.normal(0, 0.05) + offset[1], radius=radius,
        elong=rng.uniform(*style.elongation), rot=rng.uniform(0, math.pi),
        harm_k=ks, harm_a=amps, harm_p=rng.uniform(0, 2 * math.pi, 12).astype(np.float32),
        spike_t=rng.uniform(-math.pi, math.pi, n_sp).astype(np.float32),
        spike_a=rng.uniform(0.08, 0.22, n_sp).astype(np.float32),
        spike_w=rng.uniform(0.04, 0.09, n_sp).astype(np.float32),
    )


def _points_in(rng, shape: _Shape, n: int, rho: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    theta = rng.uniform(-math.pi, math.pi, n).astype(np.float32)
    r = np.sqrt(rng.uniform(rho[0] ** 2, rho[1] ** 2, n)).astype(np.float32)
    return shape.point(theta, r)


def _network(rng, size, yy, xx, period: float, warp: float, width: float) -> np.ndarray:
    """Honeycomb-like pigment network lines (1 on lines, 0 in holes), warped by smooth noise."""
    wy = yy + warp * period * _smooth(rng, size, 5)
    wx = xx + warp * period * _smooth(rng, size, 5)
    phase = rng.uniform(0, 2 * math.pi, 3)
    rot = rng.uniform(0, math.pi)
    k = 2 * math.pi / period
    acc = np.zeros_like(xx)
    for j in range(3):
        a = rot + j * 2 * math.pi / 3
        acc += np.cos(k * (wx * math.cos(a) + wy * math.sin(a)) + phase[j])
    # acc in [-1.5, 3]: cell centres high, the connected web of low values forms the lines
    return _sigmoid((0.4 - acc) / width)


def _vessel_tree(rng, shape: _Shape, size: int, n_trees: int) -> tuple[np.ndarray, np.ndarray]:
    """Branching random-walk polylines (arborizing vessels), sampled every half pixel."""
    step = 0.5 / size
    xs, ys = [], []
    for _ in range(n_trees):
        x0, y0 = _points_in(rng, shape, 1, (0.1, 0.7))
        stack = [(float(x0[0]), float(y0[0]), rng.uniform(0, 2 * math.pi), shape.radius * rng.uniform(0.5, 1.1), 0)]
        while stack:
            x, y, ang, length, depth = stack.pop()
            n = max(int(length / step), 2)
            turns = np.cumsum(rng.normal(0, 0.12, n)) + ang
            px = x + np.cumsum(np.cos(turns)) * step
            py = y + np.cumsum(np.sin(turns)) * step
            xs.append(px)
            ys.append(py)
            if depth < 2:
                for _b in range(int(rng.integers(1, 3))):
                    i = int(rng.integers(n // 3, n))
                    stack.append((px[i], py[i], turns[i] + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0),
                                  length * rng.uniform(0.35, 0.6), depth + 1))
    return np.concatenate(xs), np.concatenate(ys)


def _hairs(rng, size: int, n: int) -> np.ndarray:
    """Coverage of n curved hair strands crossing the image."""
    if n == 0:
        return np.zeros((size, size), np.float32)
    xs, ys = [], []
    for _ in range(n):
        p0 = rng.uniform(-0.1, 1.1, 2)
        ang = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.3, 1.0)
        p2 = p0 + length * np.array([math.cos(ang), math.sin(ang)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.12, 2)
        t = np.linspace(0, 1, max(int(length * size * 2.4), 4), dtype=np.float32)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        xs.append(pts[:, 0])
        ys.append(pts[:, 1])
    return _lines(size, np.concatenate(xs), np.concatenate(ys), width=rng.uniform(0.8, 1.8) * _PX,
                  opacity=rng.uniform(0.75, 1.0))


# --------------------------------------------------------------------------------------------- one sample
@dataclass(frozen=True)
class ToySample:
    """One rendered sample: RGB uint8 image, 0/1 uint8 mask and the description's attributes."""
    image: np.ndarray
    mask: np.ndarray
    category: str
    attributes: dict

    def description(self) -> str:
        return describe(self.category, self.attributes)


def render_sample(seed: int, index: int, category: str, size: int = 128, *, spawn_key: tuple[int, ...] = (),
                  zoom: float = 1.0, offset: tuple[float, float] = (0.0, 0.0),
                  acquire: Callable[[np.random.Generator, np.ndarray], np.ndarray] | None = None) -> ToySample:
    """Draw image `index` of class `category`; the result depends only on its arguments.

    The defaults draw the clinical toy set. `spawn_key` selects another family of random streams (numpy
    SeedSequence spawn key: sequences with different keys are distinct), `zoom` scales the lesion and `offset`
    moves its centre (image-side units), and `acquire(rng, scene)` replaces the dermoscope optics: it receives the
    float RGB scene and returns uint8 RGB.
    """
    if category not in STYLES:
        raise DataError(f"toy generator: no appearance for category {category!r}; known: {sorted(STYLES)}")
    style = STYLES[category]
    # Every step draws from this one generator: reordering the steps (or the draws inside them) changes the images.
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, sorted(STYLES).index(category)],
                                                       spawn_key=spawn_key))
    yy, xx = _grid(size)
    feats = _draw_structures(rng, style)
    skin, tone = _draw_skin(rng, size)
    outline = _draw_outline(rng, style, size, yy, xx, spikes="streaks" in feats, zoom=zoom, offset=offset)
    canvas = _Canvas(rng=rng, size=size, yy=yy, xx=xx, outline=outline, darken=1 - 0.22 * tone, feats=feats)
    les, colours = _lesion_colours(canvas, style)
    les = _paint_structures(canvas, les)
    img, edge = _composite(rng, style, outline, feats, skin, les)
    img, n_hair = _add_hair_and_glare(rng, size, img)
    image = _acquire(rng, size, yy, xx, img) if acquire is None else acquire(rng, img)
    attributes = _attributes(style, outline, feats, colours, tone, edge, n_hair)
    return ToySample(image=image, mask=outline.mask.astype(np.uint8), category=category, attributes=attributes)


@dataclass(frozen=True)
class _Outline:
    """The lesion border on the pixel grid: warped distance field, border radius, mask and relative radius."""
    shape: _Shape
    dist: np.ndarray    # distance from the centre in the shape's frame, warped by smooth noise
    theta: np.ndarray
    r: np.ndarray       # border radius at each pixel's angle
    mask: np.ndarray    # dist < r
    rel: np.ndarray     # dist / r clipped to [0, 1]: 0 at the centre, 1 on and outside the border


@dataclass(frozen=True)
class _Canvas:
    """What the structure painters draw with."""
    rng: np.random.Generator
    size: int
    yy: np.ndarray
    xx: np.ndarray
    outline: _Outline
    darken: float       # darker skin darkens the lesion colours too
    feats: set[str]

    @property
    def shape(self) -> _Shape:
        return self.outline.shape

    @property
    def rel(self) -> np.ndarray:
        return self.outline.rel


def _draw_structures(rng: np.random.Generator, style: LesionStyle) -> set[str]:
    """The dermoscopic structures this image shows, each drawn with its class probability."""
    return {k for k, p in style.structures.items() if rng.random() < p}


def _draw_skin(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Skin background (float RGB) from light to dark with reddish blotches and fine texture, and its tone."""
    tone = rng.beta(1.6, 2.6)
    skin = np.array([238, 196, 176], np.float32) * (1 - tone) + np.array([150, 98, 72], np.float32) * tone
    skin *= 1 + rng.normal(0, 0.03, 3).astype(np.float32)
    img = np.broadcast_to(skin, (size, size, 3)).astype(np.float32)
    img = img * (1 + 0.05 * _smooth(rng, size, 4))[..., None]
    img = _blend(img, (205, 110, 110), np.clip(0.22 * _smooth(rng, size, 6), 0, 0.35) * rng.uniform(0.3, 1))
    img *= (1 + 0.02 * rng.standard_normal((size, size)).astype(np.float32))[..., None]
    return img, tone


def _draw_outline(rng: np.random.Generator, style: LesionStyle, size: int, yy: np.ndarray, xx: np.ndarray,
                  spikes: bool, zoom: float = 1.0, offset: tuple[float, float] = (0.0, 0.0)) -> _Outline:
    """A random lesion shape rasterised into its distance field and exact mask."""
    shape = _random_shape(rng, style, spikes=spikes, zoom=zoom, offset=offset)
    dist, theta = shape.frame(yy, xx)
    # Lobulated, non-polar irregularity: warp the distance field with smooth noise (the mask follows it).
    dist = dist * (1 + 1.2 * style.irregularity * _smooth(rng, size, 7))
    r = np.maximum(shape.rad(theta), 2.5 / size)  # at least a few pixels wide, even at 16 px
    return _Outline(shape=shape, dist=dist, theta=theta, r=r, mask=dist < r,
                    rel=np.clip(dist / np.maximum(r, 1e-6), 0, 1))


def _lesion_colours(c: _Canvas, style: LesionStyle) -> tuple[np.ndarray, list[str]]:
    """Lesion layer (float RGB) and its colour names: a main colour, extra colours in smooth patches,
    mottling and a darker or lighter centre."""
    rng, size = c.rng, c.size
    n_col = int(rng.integers(style.n_colours[0], style.n_colours[1] + 1))
    picks = rng.choice(len(style.colours), size=min(n_col, len(style.colours)), replace=False)

    def jitter(rgb: tuple[int, int, int]) -> np.ndarray:
        return np.clip(np.asarray(rgb, np.float32) * c.darken
                       + rng.normal(0, style.colour_sd) + rng.normal(0, style.colour_sd / 2, 3), 10, 250)

    les = np.broadcast_to(jitter(style.colours[picks[0]][1]), (size, size, 3)).astype(np.float32)
    for i in picks[1:]:
        patch = _sigmoid((_smooth(rng, size, 4) - rng.uniform(-0.2, 0.8)) / 0.25)
        les = _blend(les, jitter(style.colours[i][1]), patch)
    les = les * (1 + style.mottle * _smooth(rng, size, 7) + 0.04 * _smooth(rng, size, 24))[..., None]
    cd = rng.uniform(*style.centre_dark)
    les = les * (1 - cd * (1 - c.rel ** 2))[..., None]
    return les, [style.colours[i][0] for i in picks]


def _paint_structures(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Paint every drawn structure onto the lesion layer, in the fixed order of _PAINTERS."""
    for triggers, paint in _PAINTERS:
        if c.feats.intersection(triggers):
            les = paint(c, les)
    return les


def _composite(rng: np.random.Generator, style: LesionStyle, outline: _Outline, feats: set[str],
               skin: np.ndarray, les: np.ndarray) -> tuple[np.ndarray, float]:
    """Lay the lesion over the skin; returns the image and the width of the border fade.

    The visible lesion fades in from the mask border, so the mask is exact but not a hard edge.
    """
    edge = rng.uniform(*style.edge_px) * _PX
    inside = outline.mask.astype(np.float32)
    fade = np.clip((outline.r - outline.dist) / edge, 0, 1)
    alpha = fade * rng.uniform(*style.opacity) * inside
    if "veil" in feats or "ulceration" in feats or "lacunae" in feats:
        alpha = np.maximum(alpha, fade * 0.9 * inside)
    return skin * (1 - alpha[..., None]) + les * alpha[..., None], edge


def _add_hair_and_glare(rng: np.random.Generator, size: int, img: np.ndarray) -> tuple[np.ndarray, int]:
    """Hair strands over the image and, sometimes, glare bubbles; returns the image and the number of hairs."""
    n_hair = int(rng.choice([0, 0, 1, 2, 3, 5, 8]))
    hair_colour = np.array([40, 30, 26], np.float32) * rng.uniform(0.7, 1.6)
    img = _blend(img, hair_colour, _hairs(rng, size, n_hair))
    if rng.random() < 0.2:
        bx, by = rng.uniform(0.05, 0.95, (2, int(rng.integers(1, 5))))
        img = _blend(img, (250, 250, 250), 0.5 * _blobs(size, bx, by, rng.uniform(1.0, 2.5) * _PX))
    return img, n_hair


def _acquire(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Optics and sensor: vignette, optional dermoscope rim, white balance, blur and noise; returns uint8 RGB."""
    cr = np.hypot(xx - 0.5, yy - 0.5) / math.sqrt(0.5)
    img = img * (1 - rng.uniform(0.05, 0.35) * cr ** 2)[..., None]
    if rng.random() < 0.25:
        rim = np.clip((cr - rng.uniform(0.8, 0.95)) / 0.04, 0, 1)
        img = img * (1 - rim)[..., None]
    img = img * (1 + rng.normal(0, 0.035, 3)).astype(np.float32)
    img = gaussian_filter(img, (0.45, 0.45, 0), truncate=2.0)
    img += rng.normal(0, rng.uniform(1.5, 5.0), img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _attributes(style: LesionStyle, outline: _Outline, feats: set[str], colours: list[str], tone: float,
                edge: float, n_hair: int) -> dict:
    """What the description says about the drawing (size, symmetry, border, colours, structures, skin, hair)."""
    shape = outline.shape
    structure_colours = [name for s, name in _STRUCTURE_COLOURS.items() if s in feats]
    return {
        "size": "small" if shape.radius < 0.15 else "large" if shape.radius > 0.28 else "medium",
        "symmetry": "asymmetric" if np.abs(shape.harm_a[:3]).sum() > 0.16 or shape.elong > 1.45 else "symmetric",
        "border": ("ill-defined" if edge > 5 * _PX else
                   "irregular" if np.abs(shape.harm_a[3:]).sum() > 0.22 or len(shape.spike_t) else "regular"),
        "colours": list(dict.fromkeys(colours + structure_colours)),
        "structures": [s for s in style.structures if s in feats],
        "skin": "light" if tone < 0.3 else "medium" if tone < 0.6 else "dark",
        "hair": n_hair > 0,
        "area": round(float(outline.mask.mean()), 4),
    }


# --------------------------------------------------------------------------------------------- structures
def _paint_network(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Pigment network: regular, atypical (warped, patchy) or faint and peripheral."""
    rng, size, rel = c.rng, c.size, c.rel
    atypical = "atypical_network" in c.feats
    period = max(rng.uniform(5, 8) * _PX, 3.0 / size)  # at least 3 pixels, or it aliases at small sizes
    net = _network(rng, size, c.yy, c.xx, period=period * rng.uniform(0.9, 1.15), warp=0.7 if atypical else 0.4,
                   width=0.45 if atypical else 0.3)
    if atypical:
        strength = np.clip(0.3 + 0.3 * _smooth(rng, size, 3), 0, 0.55)
    elif "faint_network" in c.feats:
        strength = 0.18 * np.clip((rel - 0.35) / 0.4, 0, 1)
    else:
        strength = rng.uniform(0.15, 0.28) * (1 - 0.6 * np.clip((rel - 0.6) / 0.4, 0, 1))
    patchy = np.clip(0.7 + 0.45 * _smooth(rng, size, 4), 0.1, 1.2)  # networks fade in and out
    return les * (1 - strength * patchy * net)[..., None]


def _paint_globules(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Regular brown globules, mostly in a peripheral ring."""
    rng = c.rng
    n = int(rng.integers(6, 18))
    gx_, gy_ = _points_in(rng, c.shape, n, (0.55, 0.92) if rng.random() < 0.6 else (0.0, 0.8))
    return _blend(les, np.asarray(_DARK_BROWN[1]) * c.darken,
                  0.8 * _blobs(c.size, gx_, gy_, rng.uniform(1.4, 2.0) * _PX))


def _paint_irregular_globules(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Black dots and globules of varying size and strength anywhere in the lesion."""
    rng = c.rng
    n = int(rng.integers(5, 20))
    gx_, gy_ = _points_in(rng, c.shape, n, (0.2, 1.0))
    w = rng.uniform(0.5, 1.0, n)
    return _blend(les, _BLACK[1], 0.9 * _blobs(c.size, gx_, gy_, rng.uniform(1.0, 2.4) * _PX, w))


def _paint_streaks(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Dark radial streaks along the outline's spikes, towards the border."""
    dist, theta = c.outline.dist, c.outline.theta
    d = np.angle(np.exp(1j * (theta[..., None] - c.shape.spike_t)))
    across = np.abs(d) * dist[..., None]
    streak = np.exp(-(across / (1.1 * _PX)) ** 2).max(-1) * np.clip((c.rel - 0.55) / 0.3, 0, 1)
    return _blend(les, np.asarray(_DARK_BROWN[1]) * 0.8, 0.85 * streak)


def _paint_veil(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Blue-white veil over a smooth patch of the lesion."""
    rng = c.rng
    veil = _sigmoid((_smooth(rng, c.size, 3) - rng.uniform(0.0, 0.9)) / 0.3) * (c.rel < 0.85)
    return _blend(les, (140, 156, 184), rng.uniform(0.4, 0.7) * veil)


def _paint_regression(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Regression: whitish scar-like areas with blue-grey peppering."""
    rng, size = c.rng, c.size
    reg = _sigmoid((_smooth(rng, size, 4) - 0.6) / 0.2) * (c.rel < 0.9)
    les = _blend(les, (222, 212, 208), 0.6 * reg)
    pg_x, pg_y = _points_in(rng, c.shape, int(rng.integers(15, 40)), (0.0, 0.9))
    return _blend(les, _BLUE_GREY[1], 0.7 * _blobs(size, pg_x, pg_y, 0.7 * _PX) * reg)


def _paint_red_areas(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Smooth red patches."""
    red = _sigmoid((_smooth(c.rng, c.size, 4) - 0.7) / 0.25)
    return _blend(les, (186, 76, 78), 0.55 * red)


def _paint_milia(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Milia-like cysts: small ivory dots."""
    rng = c.rng
    mx, my = _points_in(rng, c.shape, int(rng.integers(3, 10)), (0.0, 0.85))
    return _blend(les, (238, 232, 214), 0.9 * _blobs(c.size, mx, my, rng.uniform(1.0, 1.6) * _PX))


def _paint_comedo(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Comedo-like openings: dark brown plugs."""
    rng = c.rng
    cx_, cy_ = _points_in(rng, c.shape, int(rng.integers(3, 9)), (0.0, 0.85))
    return _blend(les, (70, 52, 34), 0.8 * _blobs(c.size, cx_, cy_, rng.uniform(1.2, 2.0) * _PX))


def _paint_cerebriform(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Brain-like gyri: ridges whose direction wanders (two warped phases), darker furrows between them."""
    rng, size = c.rng, c.size
    period = max(rng.uniform(6, 9) * _PX, 3.0 / size)
    phase = (c.xx * math.cos(rng.uniform(0, math.pi)) + c.yy * math.sin(rng.uniform(0, math.pi))
             + 0.08 * _smooth(rng, size, 4) + 0.03 * _smooth(rng, size, 8))
    furrows = np.clip(np.sin(2 * math.pi * phase / period), 0, 1) ** 3
    return les * (1 - 0.22 * furrows * np.clip(0.6 + 0.5 * _smooth(rng, size, 3), 0, 1))[..., None]


def _paint_scale(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """White-yellow surface scale in fine patches."""
    rng = c.rng
    sc = _sigmoid((_smooth(rng, c.size, 9) - rng.uniform(0.3, 1.0)) / 0.2) * (c.rel < 0.95)
    return _blend(les, (236, 226, 204), rng.uniform(0.5, 0.85) * sc)


def _paint_strawberry(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Strawberry pattern: a red background crossed by a pale network of follicles."""
    les = les * (1 - 0.16 * _network(c.rng, c.size, c.yy, c.xx, max(6 * _PX, 3.0 / c.size), 0.55, 0.4))[..., None]
    return _blend(les, (200, 70, 80), 0.35 * np.ones_like(c.rel))


def _paint_dotted_vessels(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Dotted vessels: many small red dots."""
    rng = c.rng
    vx, vy = _points_in(rng, c.shape, int(rng.integers(15, 45)), (0.0, 0.95))
    return _blend(les, (176, 34, 48), 0.85 * _blobs(c.size, vx, vy, 0.75 * _PX))


def _paint_nests(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Blue-grey ovoid nests."""
    rng = c.rng
    nx, ny = _points_in(rng, c.shape, int(rng.integers(2, 7)), (0.0, 0.8))
    return _blend(les, _BLUE_GREY[1], 0.8 * _blobs(c.size, nx, ny, rng.uniform(2.0, 4.0) * _PX))


def _paint_shiny_white(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Shiny white areas."""
    sw = _sigmoid((_smooth(c.rng, c.size, 6) - 0.9) / 0.15)
    return _blend(les, (240, 232, 232), 0.6 * sw)


def _paint_ulceration(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """One dark red-brown ulcer near the centre."""
    rng = c.rng
    ux, uy = _points_in(rng, c.shape, 1, (0.0, 0.5))
    return _blend(les, (110, 38, 30), 0.9 * _blobs(c.size, ux, uy, c.shape.radius * rng.uniform(0.2, 0.35)))


def _paint_arborizing_vessels(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Arborizing vessels: one to three branching red trees."""
    rng = c.rng
    vx, vy = _vessel_tree(rng, c.shape, c.size, int(rng.integers(1, 4)))
    return _blend(les, (182, 26, 44), _lines(c.size, vx, vy, rng.uniform(0.9, 1.6) * _PX, 0.9))


def _paint_white_patch(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Central white scar-like patch (dermatofibroma)."""
    rng = c.rng
    wx_, wy_ = _points_in(rng, c.shape, 1, (0.0, 0.3))
    patch = _blobs(c.size, wx_, wy_, c.shape.radius * rng.uniform(0.3, 0.45))
    return _blend(les, (232, 216, 206), 0.85 * patch)


def _paint_lacunae(c: _Canvas, les: np.ndarray) -> np.ndarray:
    """Red or dark purple lacunae separated by whitish septa."""
    rng = c.rng
    n = int(rng.integers(8, 30))
    lx, ly = _points_in(rng, c.shape, n, (0.0, 0.9))
    sig = c.shape.radius * rng.uniform(0.12, 0.22)
    les = _blend(les, (214, 170, 176), 0.4 * np.ones_like(c.rel))  # whitish septa between lacunae
    dark = rng.random() < 0.4
    return _blend(les, (92, 30, 60) if dark else (168, 36, 58), 0.95 * _blobs(c.size, lx, ly, sig))


# (structures that trigger it, painter), in drawing order: the order is part of the rng sequence.
_PAINTERS: tuple[tuple[tuple[str, ...], Callable[[_Canvas, np.ndarray], np.ndarray]], ...] = (
    (("network", "atypical_network", "faint_network"), _paint_network),
    (("globules",), _paint_globules),
    (("irregular_globules",), _paint_irregular_globules),
    (("streaks",), _paint_streaks),
    (("veil",), _paint_veil),
    (("regression",), _paint_regression),
    (("red_areas",), _paint_red_areas),
    (("milia",), _paint_milia),
    (("comedo",), _paint_comedo),
    (("cerebriform",), _paint_cerebriform),
    (("scale",), _paint_scale),
    (("strawberry",), _paint_strawberry),
    (("dotted_vessels",), _paint_dotted_vessels),
    (("nests",), _paint_nests),
    (("shiny_white",), _paint_shiny_white),
    (("ulceration",), _paint_ulceration),
    (("arborizing_vessels",), _paint_arborizing_vessels),
    (("white_patch",), _paint_white_patch),
    (("lacunae",), _paint_lacunae),
)

# Colour names that structures add to the description, in _PAINTERS order.
_STRUCTURE_COLOURS: dict[str, str] = {
    "veil": "blue-white", "red_areas": "red", "scale": "white-yellow", "nests": "blue-grey",
}


def describe(category: str, attributes: dict) -> str:
    """Template description: the paper's prefix, then what the drawing shows."""
    parts = [f"{attributes['size']} {attributes['symmetry']} lesion with {attributes['border']} border"]
    colours = attributes["colours"]
    if colours:
        parts.append(" and ".join([", ".join(colours[:-1]), colours[-1]]) if len(colours) > 1 else colours[0])
    parts += [_STRUCTURE_WORDS[s] for s in attributes["structures"]]
    skin = f"on {attributes['skin']} skin" + (" with hair" if attributes["hair"] else "")
    parts.append(skin)
    return class_prefix(category) + ", ".join(parts)


# --------------------------------------------------------------------------------------------- dataset
def _render_and_write(job: tuple[str, int, int, str, int]) -> dict:
    out_dir, seed, index, category, size = job
    sample = render_sample(seed, index, category, size)
    image_id = toy_image_id(index)
    root = Path(out_dir)
    # Plain writes: the folder only becomes a dataset when manifest.csv is written (atomically) at the end.
    Image.fromarray(sample.image, "RGB").save(root / "images" / f"{image_id}.png", compress_level=3)
    Image.fromarray(sample.mask * 255, "L").save(root / "masks" / f"{image_id}.png", compress_level=3)
    return {
        "image_id": image_id, "category": category, "image_path": f"images/{image_id}.png",
        "mask_path": f"masks/{image_id}.png", "description": sample.description(),
        "source": "real", "origin": TOY_ORIGIN, "width": size, "height": size,
    }


def toy_image_id(index: int) -> str:
    return f"toy_{index:05d}"


def generate_toy(out_dir: str | Path, n_images: int = 2000, size: int = 128, seed: int = 42,
                 categories: tuple[str, ...] | list[str] = HAM10000_CATEGORIES, test_fraction: float = 0.2,
                 workers: int | None = None, progress: bool = True, val_fraction: float = 0.0) -> pd.DataFrame:
    """Write a complete toy dataset folder (images/, masks/, manifest.csv, categories.json); return the manifest.

    Rows are labelled source='real', origin='toy': downstream stages treat them as the real split, while
    everything shown to users calls them procedural drawings, not medical data. `workers` processes render in
    parallel (default: up to 4 CPUs for 256+ images); the result does not depend on it.
    """
    if size < 16:
        raise DataError(f"toy generator: size {size} is too small; use size >= 16")
    categories = tuple(categories)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    labels = assign_categories(n_images, categories, seed)
    jobs = [(str(out), seed, i, labels[i], size) for i in range(n_images)]
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if n_images >= 256 else 1
    rows = map_with_progress(_render_and_write, jobs, workers, chunksize=32, desc="toy images",
                             disable=not progress, unit="img")
    df = pd.DataFrame(rows)
    split = stratified_split(df["category"], test_fraction, seed)
    df.insert(2, "split", carve_validation(split, df["category"], val_fraction, seed).to_numpy())
    manifest.write_manifest(df, out)
    atomic.write_text(out / manifest.CATEGORIES_FILE, json.dumps(list(categories)) + "\n")
    return manifest.read_manifest(out)
