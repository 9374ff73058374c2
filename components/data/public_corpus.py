"""The public-like pretraining corpus: a stand-in for the web images a public base model (Stable Diffusion) saw.

It is drawn with the toy lesion renderer (components/data/toy.py) but is not the clinical set:

- disjoint by construction: every random stream of the corpus carries the numpy SeedSequence spawn key
  PUBLIC_SPAWN_KEY, which the clinical toy generator never uses, so the two never draw from the same stream;
- captured otherwise: no dermoscope vignette or rim; directional light, exposure, white-balance errors and
  colour casts, defocus or motion blur, stronger sensor noise; zoomed-in or -out and off-centre framing;
- another class mix: the seven appearances in equal shares (the clinical set follows HAM10000's imbalance);
- web-like captions: generic phrases ("a close-up photo of a skin spot", "mole on the back, phone camera") that
  name the diagnosis only in a configurable share, some of those wrongly, sometimes with colour, shape or
  dermoscopic words (the drawing's own findings, or phrases of a glossary the caller gives, as dermatology
  pages on the web use them); no masks.

The folder is a dataset like any other (manifest.csv with source 'public', split 'train' or 'holdout',
mask_path empty, the caption as description; images/; categories.json) plus corpus_card.json: the recipe, seed,
counts and the manifest's md5. The same arguments write the same bytes, whatever the number of workers.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter, uniform_filter1d

from components import atomic
from components.data import manifest
from components.data.categories import ALIASES, CATEGORY_NAMES, HAM10000_CATEGORIES
from components.data.prompts import class_prefix
from components.data.toy import STYLES, ToySample, describe, render_sample
from components.errors import DataError
from components.hashing import file_digest
from components.progress import map_with_progress

PUBLIC_SOURCE = "public"
PUBLIC_ORIGIN = "public_toy"
CORPUS_VERSION = "public-1"
CARD_FILE = "corpus_card.json"
HOLDOUT_SPLIT = "holdout"
# Spawn key of every corpus stream; the clinical toy renderer draws from sequences without one.
PUBLIC_SPAWN_KEY = 0x9B11C
_RENDER, _CAPTION, _ORDER, _FRAME = 0, 1, 2, 3      # sub-streams of the corpus namespace


@dataclass(frozen=True)
class Capture:
    """Ranges the camera model draws from, per image (sizes in pixels of the corpus image)."""
    zoom: tuple[float, float] = (0.55, 1.6)           # lesion radius × this (the clinical framing is 1.0)
    max_offset: float = 0.2                           # lesion centre moved by up to this (image-side units)
    light_gradient: tuple[float, float] = (0.0, 0.45)  # exposure ramp across the frame from a random side
    exposure: tuple[float, float] = (0.75, 1.2)
    white_balance_sd: float = 0.07                    # per-channel gain std (the dermoscope: 0.035)
    cast_strength: tuple[float, float] = (0.0, 0.6)   # share of a tungsten / daylight / fluorescent / flash cast
    blur_px: tuple[float, float] = (0.25, 0.9)        # defocus std (the dermoscope: 0.45)
    motion_blur_share: float = 0.15
    motion_blur_px: tuple[int, int] = (2, 5)
    noise_sd: tuple[float, float] = (3.0, 10.0)       # sensor noise std in grey levels (the dermoscope: 1.5-5)


CAPTURE = Capture()
_CASTS = {"tungsten": (1.12, 1.0, 0.8), "daylight": (0.9, 1.0, 1.12), "fluorescent": (0.94, 1.07, 0.95),
          "flash": (1.06, 1.04, 1.06)}


def camera(capture: Capture = CAPTURE):
    """The corpus's acquisition step for toy.render_sample(acquire=...): float RGB scene -> uint8 RGB."""
    def acquire(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
        size = img.shape[0]
        c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        yy, xx = np.meshgrid(c, c, indexing="ij")
        angle = rng.uniform(0, 2 * math.pi)
        ramp = xx * math.cos(angle) + yy * math.sin(angle)
        img = img * (rng.uniform(*capture.exposure) * (1 + rng.uniform(*capture.light_gradient) * ramp))[..., None]
        cast = np.asarray(list(_CASTS.values())[int(rng.integers(len(_CASTS)))], np.float32)
        gain = 1 + rng.uniform(*capture.cast_strength) * (cast - 1) + rng.normal(0, capture.white_balance_sd, 3)
        img = img * gain.astype(np.float32)
        img = gaussian_filter(img, (*(2 * [rng.uniform(*capture.blur_px)]), 0), truncate=2.5)
        if rng.random() < capture.motion_blur_share:
            length = int(rng.integers(capture.motion_blur_px[0], capture.motion_blur_px[1] + 1))
            img = uniform_filter1d(img, length, axis=int(rng.integers(2)))
        img = img + rng.normal(0, rng.uniform(*capture.noise_sd), img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return acquire


# --------------------------------------------------------------------------------------------- captions
_SUBJECTS = ("skin spot", "mole", "spot", "skin lesion", "lesion", "dark spot", "birthmark", "growth on the skin",
             "blemish", "bump", "patch of skin", "freckle", "mark on the skin")
_SITES = ("back", "arm", "shoulder", "leg", "face", "chest", "neck", "hand", "scalp", "cheek", "thigh", "forearm",
          "stomach", "foot")
_CAMERAS = ("phone camera", "phone photo", "macro lens", "flash on", "no flash", "blurry", "close-up",
            "taken at home", "stock photo", "4k", "daylight", "zoomed in")
_FRAMES = (
    "a close-up photo of {a_subject}", "{subject} on the {site}, {camera}", "my {subject} on the {site}",
    "macro shot of {a_subject} on the {site}", "photo of {a_subject}", "is this {subject} on my {site} normal?",
    "{subject} on {skin} skin", "dermatology photo of {a_subject}", "{a_subject} on the {site}",
    "skin cancer check: {subject} on the {site}", "picture of {a_subject} for diagnosis",
    "dermoscopic image of {a_subject}", "lesion photo, {subject}, {site}", "{subject}, {camera}",
    "close up of {a_subject} on my {site}, {camera}",
)
_TAGS = ("#skincheck", "#mole", "#dermatology", "#skincare", "IMG_{n}", "DSC{n}", "photo {n}", "(2)", "new")
# Diagnosis names a caption may use for a class: its display name and its common human-readable aliases.
_NAMES: dict[str, tuple[str, ...]] = {
    code: tuple(dict.fromkeys([CATEGORY_NAMES[code]] + sorted(
        a for a, c in ALIASES.items() if c == code and a != code and len(a) > 3)))
    for code in HAM10000_CATEGORIES
}


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


@dataclass(frozen=True)
class CaptionRecipe:
    """How captions are drawn: shares of diagnosis names, wrong names and dermoscopy-glossary phrases."""
    diagnosis_share: float = 0.3         # captions naming a diagnosis
    mislabel_share: float = 0.1          # ... of those, naming another class than the drawn one
    glossary_share: float = 0.0          # captions adding phrases of the glossary (of the drawn class)
    glossary: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # class -> dermoscopy phrases


def caption(rng: np.random.Generator, category: str, attributes: dict, recipe: CaptionRecipe = CaptionRecipe(),
            categories: tuple[str, ...] = HAM10000_CATEGORIES) -> tuple[str, str]:
    """A web-like caption of one corpus image and the class it names ('' when it names none).

    With probability `diagnosis_share` the subject is a diagnosis name, of another class with probability
    `mislabel_share`; otherwise a generic word ('mole', 'skin spot'). Some captions add colour, shape or size
    words, the toy describer's findings or glossary phrases of the drawn class, some a photo-site tag.
    """
    named = ""
    subject = _SUBJECTS[int(rng.integers(len(_SUBJECTS)))]
    if rng.random() < recipe.diagnosis_share:
        named = category
        if len(categories) > 1 and rng.random() < recipe.mislabel_share:
            others = [c for c in categories if c != category]
            named = others[int(rng.integers(len(others)))]
        names = _NAMES.get(named, (named,))
        subject = names[0] if rng.random() < 0.5 else names[int(rng.integers(len(names)))]
    detail = rng.random()
    if detail < 0.15:
        subject = f"{' and '.join(attributes['colours'][:2])} {subject}" if attributes["colours"] else subject
    elif detail < 0.25:
        subject = f"{attributes['size']} {attributes['symmetry']} {subject}"
    elif detail < 0.3:
        subject = f"{subject} with {attributes['border']} border"
    frame = _FRAMES[int(rng.integers(len(_FRAMES)))]
    text = frame.format(subject=subject, a_subject=_article(subject), site=_SITES[int(rng.integers(len(_SITES)))],
                        camera=_CAMERAS[int(rng.integers(len(_CAMERAS)))], skin=attributes["skin"])
    if rng.random() < 0.12:
        text = f"{text}; {_findings(category, attributes)}"
    phrases = recipe.glossary.get(category, ())
    if phrases and rng.random() < recipe.glossary_share:
        picks = [phrases[int(i)] for i in rng.choice(len(phrases), size=min(2, len(phrases)), replace=False)]
        text = f"{text}; " + _GLOSSARY_FRAMES[int(rng.integers(len(_GLOSSARY_FRAMES)))].format(
            p=" and ".join(picks[:1 + int(rng.integers(len(picks)))]),
            contrast=("low", "moderate", "high")[int(rng.integers(3))])
    if rng.random() < 0.15:
        text = f"{text} {_TAGS[int(rng.integers(len(_TAGS)))].format(n=int(rng.integers(1000, 10000)))}"
    return text, named


_GLOSSARY_FRAMES = ("dermoscopy shows {p}", "{p}", "the dermatologist saw {p}",
                    "showing {p} together with {contrast} contrast to the surrounding skin",
                    "dermoscopy reveals {p} within a medium-sized lesion", "{p}; colours and tones vary",
                    "{p}, consistent with the ICD-11 description")


def _findings(category: str, attributes: dict) -> str:
    """The toy describer's findings of the image (its description without the class prefix)."""
    return describe(category, attributes)[len(class_prefix(category)):]


# --------------------------------------------------------------------------------------------- corpus
def corpus_image_id(index: int) -> str:
    return f"pub_{index:06d}"


def _stream(seed: int, index: int, sub: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index], spawn_key=(PUBLIC_SPAWN_KEY, sub)))


def render_public(seed: int, index: int, category: str, size: int, capture: Capture = CAPTURE) -> ToySample:
    """Corpus image `index`: the toy lesion of `category` reframed and captured by the corpus camera."""
    rng = _stream(seed, index, _FRAME)
    zoom = float(rng.uniform(*capture.zoom))
    offset = (float(rng.uniform(-capture.max_offset, capture.max_offset)),
              float(rng.uniform(-capture.max_offset, capture.max_offset)))
    return render_sample(seed, index, category, size, spawn_key=(PUBLIC_SPAWN_KEY, _RENDER), zoom=zoom,
                         offset=offset, acquire=camera(capture))


def caption_public(seed: int, index: int, category: str, attributes: dict, recipe: CaptionRecipe = CaptionRecipe(),
                   categories: tuple[str, ...] = HAM10000_CATEGORIES) -> tuple[str, str]:
    """The caption of corpus image `index` (from its own stream) and the class it names ('' for none)."""
    return caption(_stream(seed, index, _CAPTION), category, attributes, recipe, categories)


def _render_and_write(job: tuple[str, int, int, str, int]) -> dict:
    out_dir, seed, index, category, size = job
    sample = render_public(seed, index, category, size)
    image_id = corpus_image_id(index)
    # Plain writes into the staging folder: it becomes the corpus only when it is complete.
    Image.fromarray(sample.image, "RGB").save(Path(out_dir) / "images" / f"{image_id}.png", compress_level=3)
    return {"image_id": image_id, "category": category, "image_path": f"images/{image_id}.png", "mask_path": "",
            "source": PUBLIC_SOURCE, "origin": PUBLIC_ORIGIN, "width": size, "height": size,
            "attributes": sample.attributes}


def uniform_labels(n_images: int, categories: tuple[str, ...], seed: int) -> list[str]:
    """Classes in equal shares (the first n mod k classes get one more), in a seeded order."""
    labels = np.array([categories[i % len(categories)] for i in range(n_images)])
    return labels[_stream(seed, 0, _ORDER).permutation(n_images)].tolist()


def holdout_mask(n_images: int, holdout_images: int, seed: int) -> np.ndarray:
    """True for the `holdout_images` indices (a seeded choice) that pretrain evaluates on and never trains on."""
    mask = np.zeros(n_images, bool)
    mask[_stream(seed, 1, _ORDER).permutation(n_images)[:holdout_images]] = True
    return mask


@dataclass(frozen=True)
class PublicCorpus:
    manifest: pd.DataFrame
    card: dict


def generate_public_corpus(out_dir: str | Path, n_images: int = 6000, holdout_images: int = 200, size: int = 64,
                           seed: int = 0, captions: CaptionRecipe = CaptionRecipe(),
                           categories: tuple[str, ...] | list[str] = HAM10000_CATEGORIES,
                           workers: int | None = None, progress: bool = True) -> PublicCorpus:
    """Write the corpus folder atomically (images/, manifest.csv, categories.json, corpus_card.json).

    `workers` processes render in parallel (default: up to 4 CPUs for 256+ images); the bytes do not depend on it.
    """
    categories = tuple(categories)
    unknown = [c for c in categories if c not in STYLES]
    if unknown:
        raise DataError(f"public corpus: no appearance for categories {unknown}; use a subset of {sorted(STYLES)}")
    if size < 16:
        raise DataError(f"public corpus: size {size} is too small; use size >= 16")
    if not 0 < holdout_images < n_images:
        raise DataError(f"public corpus: holdout_images={holdout_images} must be between 1 and n_images - 1 "
                        f"({n_images - 1})")
    for name in ("diagnosis_share", "mislabel_share", "glossary_share"):
        if not 0.0 <= getattr(captions, name) <= 1.0:
            raise DataError(f"public corpus: {name}={getattr(captions, name)} must be in [0, 1]")
    labels = uniform_labels(n_images, categories, seed)
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if n_images >= 256 else 1
    with atomic.atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        jobs = [(str(tmp), seed, i, labels[i], size) for i in range(n_images)]
        rows = map_with_progress(_render_and_write, jobs, workers, chunksize=64, desc="public corpus",
                                 disable=not progress, unit="img")
        texts, named = zip(*(caption_public(seed, i, row["category"], row.pop("attributes"), captions, categories)
                             for i, row in enumerate(rows)))
        df = pd.DataFrame(rows)
        df.insert(2, "split", np.where(holdout_mask(n_images, holdout_images, seed), HOLDOUT_SPLIT, "train"))
        df["description"] = list(texts)
        manifest.write_manifest(df, tmp)
        atomic.write_text(tmp / manifest.CATEGORIES_FILE, json.dumps(list(categories)) + "\n")
        card = _card(df, pd.Series(named), seed, size, captions, categories, file_digest(tmp / manifest.MANIFEST_NAME))
        atomic.write_text(tmp / CARD_FILE, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return PublicCorpus(manifest=manifest.read_manifest(out_dir), card=card)


def _card(df: pd.DataFrame, named: pd.Series, seed: int, size: int, captions: CaptionRecipe,
          categories: tuple[str, ...], manifest_md5: str) -> dict:
    """What the corpus is and how it was drawn; deterministic (no timings), so reruns write the same bytes."""
    return {
        "name": "public-like toy pretraining corpus", "version": CORPUS_VERSION,
        "purpose": "stand-in for the web images a public base model saw; procedural drawings, not medical data, "
                   "disjoint from the clinical toy set (own random streams), no masks",
        "seed": seed, "spawn_key": PUBLIC_SPAWN_KEY, "size": size, "n_images": len(df),
        "n_train": int((df["split"] == "train").sum()), "n_holdout": int((df["split"] == HOLDOUT_SPLIT).sum()),
        "class_mix": "uniform", "class_counts": {c: int((df["category"] == c).sum()) for c in categories},
        "captions": {"diagnosis_share": captions.diagnosis_share, "mislabel_share": captions.mislabel_share,
                     "glossary_share": captions.glossary_share,
                     "glossary_phrases": sum(len(v) for v in captions.glossary.values()),
                     "naming_a_diagnosis": int((named != "").sum()),
                     "naming_a_wrong_diagnosis": int(((named != "") & (named != df["category"])).sum())},
        "capture": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(CAPTURE).items()},
        "manifest_md5": manifest_md5,
    }
