"""Importers: turn a downloaded dataset (or the embedded toy generator) into a dataset folder.

Every importer writes `images/<id>.png` (RGB, resized with LANCZOS), `masks/<id>.png` (L, 0/255, resized with
nearest neighbour), `manifest.csv` and `categories.json`. `import_dataset` builds the folder beside its
destination and swaps it in only when every file was read and checked, so a bad input leaves nothing partial.

Layouts understood (file names are matched by stem, case-insensitive extensions png/jpg/jpeg/bmp/tif/webp):

isic_gpt      RGB images, L masks and JSON descriptions:
                  <root>/[train|test/]images/[<class>/]<id>.png      (also image/, imgs/, rgb/)
                  <root>/[train|test/]masks/<id>[_mask|_segmentation].png
                  descriptions: <id>.json files anywhere under the root ({"category": ..., "description": ...}),
                  or one JSON at the root mapping id (or file name) to a text or such an object, or a list of
                  objects with an "image"/"image_id"/"file_name" key.
              The category comes from the JSON ("category", "label", "class", "diagnosis" or "dx") or from
              a class sub-folder name. train/ and test/ folders, when present for every image, give the split.
isic_archive  ISIC archive exports: image files plus either per-image metadata JSON (<id>.json with
              meta.clinical.diagnosis) or a challenge ground-truth CSV with one-hot class columns
              (image, MEL, NV, BCC, AKIEC, BKL, DF, VASC); optional masks (<id>_segmentation.png).
ham10000      HAM10000_metadata.csv (image_id, dx, lesion_id, ...), images in any sub-folder
              (HAM10000_images_part_1/2), optional masks (HAM10000_segmentations_lesion_tschandl/
              <id>_segmentation.png). lesion_id keeps images of one lesion on one side of the split.
toy           the embedded procedural generator (components.data.toy); no input folder.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
from PIL import Image

from components import atomic
from components.data import manifest
from components.data.categories import HAM10000_CATEGORIES, normalise_category
from components.data.prompts import class_prefix
from components.data.splits import stratified_split
from components.data.toy import generate_toy
from components.errors import DataError
from components.progress import map_with_progress
from components.registry import Registry

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_MASK_SUFFIX = re.compile(r"(_segmentation|_segmentations|_mask|_seg|_gt|_label)$", re.IGNORECASE)
_MASK_DIR = re.compile(r"mask|segment|groundtruth|ground_truth|label", re.IGNORECASE)
_SKIP_STEM = re.compile(r"_superpixels$", re.IGNORECASE)
_CATEGORY_KEYS = ("category", "label", "class", "class_name", "diagnosis", "dx")
_DESCRIPTION_KEYS = ("description", "text", "caption", "prompt", "gpt_description", "desc")
_ID_KEYS = ("image_id", "image", "file_name", "filename", "file", "id", "isic_id", "name")


@dataclass(frozen=True)
class ImportOptions:
    """What every importer needs to know besides the input folder."""
    size: int = 128
    categories: tuple[str, ...] = HAM10000_CATEGORIES
    test_fraction: float = 0.2
    seed: int = 42
    require_masks: bool = True
    toy_images: int = 2000
    workers: int | None = None
    progress: bool = True


@dataclass
class RawItem:
    """One image found in an input folder, before it is checked and resized."""
    image_id: str
    image_file: Path
    category: str
    mask_file: Path | None = None
    description: str | None = None
    split: str | None = None
    group: str | None = None
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- scanning
def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _is_mask(rel: Path) -> bool:
    return bool(_MASK_SUFFIX.search(rel.stem)) or any(_MASK_DIR.search(part) for part in rel.parts[:-1])


@dataclass
class _FileIndex:
    images: dict[str, Path]
    masks: dict[str, Path]


def _index_files(root: Path) -> _FileIndex:
    """Every image and mask file under root by id (stem without mask suffix); duplicates raise DataError."""
    if not root.is_dir():
        raise DataError(f"{root}: input folder not found; set prepare.path in params.yaml to the dataset folder")
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if not _is_image(p) or _SKIP_STEM.search(p.stem):
            continue
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if _is_mask(rel):
            key, target = _MASK_SUFFIX.sub("", p.stem), masks
        else:
            key, target = p.stem, images
        if key in target:
            kind = "mask" if target is masks else "image"
            raise DataError(f"{p}: duplicate {kind} id {key!r} (also {target[key]}); every image needs a "
                            f"unique file name. Remove or rename one of them.")
        target[key] = p
    if not images:
        raise DataError(f"{root}: empty folder, no image files ({', '.join(IMAGE_EXTENSIONS)}) found; point "
                        f"prepare.path at the folder holding the dataset's images")
    return _FileIndex(images, masks)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc}); fix or re-download the file") from None


def _first(d: dict, keys: Iterable[str]):
    lower = {str(k).lower(): v for k, v in d.items()}
    for k in keys:
        if k in lower and lower[k] not in (None, ""):
            return lower[k]
    return None


def _split_of(rel: Path) -> str | None:
    parts = [p.lower() for p in rel.parts[:-1]]
    for name, split in (("train", "train"), ("training", "train"), ("test", "test"), ("val", "test"),
                        ("validation", "test")):
        if name in parts:
            return split
    return None


def _class_folder(rel: Path, categories: tuple[str, ...]) -> str | None:
    for part in reversed(rel.parts[:-1]):
        try:
            return normalise_category(part, categories)
        except DataError:
            continue
    return None


def _attach_masks(items: list[RawItem], index: _FileIndex) -> None:
    for item in items:
        item.mask_file = index.masks.get(item.image_id)


def _json_entries(root: Path, index: _FileIndex) -> dict[str, dict]:
    """ISIC-GPT descriptions: per-image <id>.json files and/or one JSON mapping at the root."""
    entries: dict[str, dict] = {}
    for path in sorted(root.rglob("*.json")):
        data = _read_json(path)
        if path.stem in index.images and isinstance(data, dict):
            entries[path.stem] = data
            continue
        records: list[tuple[str, object]] = []
        if isinstance(data, list):
            for i, rec in enumerate(data):
                if not isinstance(rec, dict) or _first(rec, _ID_KEYS) is None:
                    raise DataError(f"{path}: entry {i} has no image key ({'/'.join(_ID_KEYS[:4])}); each "
                                    f"entry needs one naming its image")
                records.append((str(_first(rec, _ID_KEYS)), rec))
        elif isinstance(data, dict):
            records = [(str(k), v) for k, v in data.items()]
        for key, value in records:
            rec = value if isinstance(value, dict) else {"description": value}
            if "/" in key or "\\" in key:  # a path: it must stay inside the dataset folder
                manifest.resolve(root, key, where=f"{path}")
            image_id = Path(key).stem
            if image_id not in index.images:
                continue
            if image_id in entries:
                raise DataError(f"{path}: duplicate id {image_id!r} in the descriptions; keep one entry per image")
            entries[image_id] = rec
    return entries


def scan_isic_gpt(root: Path, opts: ImportOptions) -> list[RawItem]:
    """Items of an ISIC-GPT style folder (images, L masks, JSON descriptions)."""
    index = _index_files(root)
    entries = _json_entries(root, index)
    items = []
    for image_id, path in index.images.items():
        rel = path.relative_to(root)
        rec = entries.get(image_id, {})
        raw_cat = _first(rec, _CATEGORY_KEYS)
        if raw_cat is not None:
            category = normalise_category(str(raw_cat), opts.categories, where=f"{path} (JSON description)")
        else:
            category = _class_folder(rel, opts.categories)
            if category is None:
                raise DataError(f"{path}: no category; put a \"category\" key in its JSON description or the "
                                f"image in a class folder (images/<class>/{path.name})")
        text = _first(rec, _DESCRIPTION_KEYS)
        items.append(RawItem(image_id, path, category, description=str(text) if text else None,
                             split=_split_of(rel)))
    _attach_masks(items, index)
    return items


def _diagnosis_from_isic_json(data: dict) -> str | None:
    meta = data.get("meta", data) if isinstance(data, dict) else {}
    clinical = meta.get("clinical", meta) if isinstance(meta, dict) else {}
    for key in ("diagnosis", "diagnosis_3", "diagnosis_2", "benign_malignant_diagnosis"):
        if isinstance(clinical, dict) and clinical.get(key):
            return str(clinical[key])
    return None


def scan_isic_archive(root: Path, opts: ImportOptions) -> list[RawItem]:
    """Items of an ISIC archive export (per-image metadata JSON or a one-hot ground-truth CSV)."""
    index = _index_files(root)
    labels: dict[str, tuple[str, Path]] = {}
    meta: dict[str, dict] = {}
    for csv_path in sorted(root.rglob("*.csv")):
        df = pd.read_csv(csv_path)
        id_col = next((c for c in df.columns if c.lower() in ("image", "image_id", "isic_id", "image_name")), None)
        class_cols = [c for c in df.columns if c != id_col and _is_onehot(df[c])]
        if id_col is None or not class_cols:
            continue
        for row_no, row in enumerate(df.itertuples(index=False), start=2):
            rowd = row._asdict() if hasattr(row, "_asdict") else dict(zip(df.columns, row))
            image_id = str(rowd[id_col])
            hot = [c for c in class_cols if float(rowd[c]) >= 0.5]
            where = f"{csv_path} row {row_no}"
            if len(hot) != 1:
                raise DataError(f"{where}: image {image_id!r} has {len(hot)} classes set ({hot}); a one-hot "
                                f"ground-truth row needs exactly one 1.0")
            if image_id in labels:
                raise DataError(f"{where}: duplicate id {image_id!r} (also in {labels[image_id][1]}); keep one row")
            labels[image_id] = (normalise_category(hot[0], opts.categories, where=where), csv_path)
    for image_id, path in index.images.items():
        js = path.with_suffix(".json")
        if js.is_file():
            data = _read_json(js)
            diag = _diagnosis_from_isic_json(data)
            if diag is not None:
                if image_id in labels:
                    raise DataError(f"{js}: {image_id!r} is labelled both here and in {labels[image_id][1]}; "
                                    f"keep one source of labels")
                labels[image_id] = (normalise_category(diag, opts.categories, where=f"{js} (meta.clinical."
                                                       f"diagnosis)"), js)
                clinical = data.get("meta", {}).get("clinical", {}) if isinstance(data, dict) else {}
                meta[image_id] = {k: clinical.get(k) for k in ("anatom_site_general", "age_approx", "sex")
                                  if clinical.get(k)}
    items = []
    for image_id, path in index.images.items():
        if image_id not in labels:
            raise DataError(f"{path}: no diagnosis found; add {path.with_suffix('.json').name} with "
                            f"meta.clinical.diagnosis or a row in the ground-truth CSV")
        items.append(RawItem(image_id, path, labels[image_id][0], meta=meta.get(image_id, {})))
    unused = sorted(set(labels) - set(index.images))
    if unused:
        raise DataError(f"{labels[unused[0]][1]}: {len(unused)} labelled image(s) have no image file "
                        f"(e.g. {unused[:5]}); restore the images or remove their rows")
    _attach_masks(items, index)
    return items


def _is_onehot(col: pd.Series) -> bool:
    try:
        values = set(pd.to_numeric(col).dropna().unique().tolist())
    except (TypeError, ValueError):
        return False
    return bool(values) and values <= {0.0, 1.0}


def scan_ham10000(root: Path, opts: ImportOptions) -> list[RawItem]:
    """Items of a HAM10000 download (metadata CSV with dx, images, optional segmentation masks)."""
    index = _index_files(root)
    csvs = [p for p in sorted(root.rglob("*.csv")) if "dx" in pd.read_csv(p, nrows=0).columns]
    if not csvs:
        raise DataError(f"{root}: no metadata CSV with a 'dx' column (HAM10000_metadata.csv); put it in the folder")
    items, seen = [], {}
    for csv_path in csvs:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        if "image_id" not in df.columns:
            raise DataError(f"{csv_path}: no 'image_id' column; HAM10000_metadata.csv has image_id and dx")
        for row_no, row in enumerate(df.to_dict("records"), start=2):
            where = f"{csv_path} row {row_no}"
            image_id = row["image_id"]
            if image_id in seen:
                raise DataError(f"{where}: duplicate image_id {image_id!r} (also {seen[image_id]}); keep one row")
            seen[image_id] = where
            if image_id not in index.images:
                raise DataError(f"{where}: image {image_id!r} not found under {root}; download both "
                                f"HAM10000_images_part_1 and _part_2 into the folder")
            meta = {k: row[k] for k in ("localization", "age", "sex", "dx_type") if row.get(k)}
            items.append(RawItem(image_id, index.images[image_id],
                                 normalise_category(row["dx"], opts.categories, where=where),
                                 group=row.get("lesion_id") or None, meta=meta))
    _attach_masks(items, index)
    return items


# --------------------------------------------------------------------------------------------- writing
def template_description(category: str, meta: dict | None = None) -> str:
    """The prompt prefix followed by whatever metadata the source gives (site, age, sex, how confirmed)."""
    meta = meta or {}
    parts = []
    site = meta.get("localization") or meta.get("anatom_site_general")
    if site and str(site).lower() != "unknown":
        parts.append(f"on the {str(site).replace('_', ' ')}")
    age = meta.get("age") or meta.get("age_approx")
    sex = meta.get("sex")
    if age or (sex and str(sex).lower() != "unknown"):
        who = " ".join(s for s in (f"{int(float(age))}-year-old" if age else "",
                                   str(sex) if sex and str(sex).lower() != "unknown" else "") if s)
        parts.append(f"{who} patient")
    how = {"histo": "confirmed by histopathology", "follow_up": "confirmed by follow-up",
           "consensus": "expert consensus", "confocal": "confirmed by confocal microscopy"}.get(meta.get("dx_type"))
    if how:
        parts.append(how)
    return class_prefix(category) + (", ".join(parts) or "dermoscopic image")


def _full_description(item: RawItem) -> str:
    prefix = class_prefix(item.category)
    if item.description:
        text = item.description.strip()
        return text if text.startswith(prefix) else prefix + text
    return template_description(item.category, item.meta)


def _materialise_one(job: tuple[RawItem, str, int, bool]) -> dict:
    item, dst, size, require_mask = job
    image = manifest.load_rgb(item.image_file)
    mask = None
    if item.mask_file is not None:
        mask = manifest.load_mask(item.mask_file)
        if mask.shape != image.shape[:2]:
            raise DataError(f"{item.mask_file}: mask size {mask.shape[::-1]} differs from its image "
                            f"{item.image_file} {image.shape[1::-1]}; save the mask at the image's size")
    elif require_mask:
        raise DataError(f"{item.image_file}: no mask found for image {item.image_id!r}, but require_masks is "
                        f"true; add masks/{item.image_id}.png (or {item.image_id}_segmentation.png) or set "
                        f"prepare.require_masks=false for a classification-only dataset")
    root = Path(dst)
    Image.fromarray(image).resize((size, size), Image.LANCZOS).save(root / "images" / f"{item.image_id}.png")
    row = {"image_id": item.image_id, "category": item.category, "image_path": f"images/{item.image_id}.png",
           "mask_path": "", "description": _full_description(item), "width": size, "height": size}
    if mask is not None:
        Image.fromarray(mask * 255).resize((size, size), Image.NEAREST).save(root / "masks" / f"{item.image_id}.png")
        row["mask_path"] = f"masks/{item.image_id}.png"
    if item.group:
        row["lesion_id"] = item.group
    return row


def materialise(items: list[RawItem], dst: Path, origin: str, opts: ImportOptions) -> pd.DataFrame:
    """Check, resize and write the items into dst (images/, masks/, manifest.csv, categories.json)."""
    if not items:
        raise DataError(f"{dst}: nothing to import (no images found)")
    for item in items:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", item.image_id):
            raise DataError(f"{item.image_file}: image id {item.image_id!r} has characters that are unsafe in "
                            f"file names; rename the file using letters, digits, '.', '_' or '-'")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    items = sorted(items, key=lambda it: it.image_id)
    jobs = [(it, str(dst), opts.size, opts.require_masks) for it in items]
    workers = opts.workers if opts.workers is not None else (min(os.cpu_count() or 1, 4) if len(jobs) >= 256 else 1)
    rows = map_with_progress(_materialise_one, jobs, workers, chunksize=16, desc=f"import {origin}",
                             disable=not opts.progress, unit="img")
    df = pd.DataFrame(rows)
    df["source"] = "real"
    df["origin"] = origin
    given = [it.split for it in items]
    if all(s is not None for s in given) and {"train", "test"} <= set(given):
        log.info("%s: keeping the split given by the dataset's train/test folders", origin)
        df["split"] = given
    else:
        groups = df["lesion_id"] if "lesion_id" in df.columns else None
        df["split"] = stratified_split(df["category"], opts.test_fraction, opts.seed, groups=groups).to_numpy()
    manifest.write_manifest(df, dst)
    atomic.write_text(dst / manifest.CATEGORIES_FILE, json.dumps(list(opts.categories)) + "\n")
    return df


# --------------------------------------------------------------------------------------------- registry
Importer = Callable[[Path | None, Path, ImportOptions], pd.DataFrame]


def _scanning(origin: str, scan: Callable[[Path, ImportOptions], list[RawItem]]) -> Importer:
    def run(src: Path | None, dst: Path, opts: ImportOptions) -> pd.DataFrame:
        if src is None or str(src) == "":
            raise DataError(f"source '{origin}' needs an input folder: set prepare.path in params.yaml "
                            f"(or --set path=/data/{origin})")
        return materialise(scan(Path(src), opts), dst, origin, opts)
    run.__doc__ = f"Import a {origin} folder into dst. " + (scan.__doc__ or "")
    return run


def import_toy(src: Path | None, dst: Path, opts: ImportOptions) -> pd.DataFrame:
    """Generate the procedural toy set into dst (src is ignored)."""
    return generate_toy(dst, n_images=opts.toy_images, size=opts.size, seed=opts.seed,
                        categories=opts.categories, test_fraction=opts.test_fraction,
                        workers=opts.workers, progress=opts.progress)


IMPORTERS: Registry[Importer] = Registry("source", hint="set prepare.source to one of them", error=DataError)
IMPORTERS.register("toy", import_toy)
IMPORTERS.register("isic_gpt", _scanning("isic_gpt", scan_isic_gpt))
IMPORTERS.register("isic_archive", _scanning("isic_archive", scan_isic_archive))
IMPORTERS.register("ham10000", _scanning("ham10000", scan_ham10000))




def import_dataset(source: str, path: str | Path | None, out_dir: str | Path,
                   opts: ImportOptions | None = None,
                   check: Callable[[Path], None] | None = None) -> pd.DataFrame:
    """Import `source` into out_dir atomically: built beside it, checked, then swapped in (a rerun replaces it).

    `check(tmp_dir)` runs on the finished folder before the swap; raising there keeps the old out_dir.
    """
    opts = opts or ImportOptions()
    importer = IMPORTERS.create(source)
    src = Path(path) if path not in (None, "") else None
    out_dir = Path(out_dir)
    if src is not None and out_dir.resolve() in (src.resolve(), *src.resolve().parents):
        raise DataError(f"{out_dir}: the output folder contains the input {src}; choose another out_dir")
    with atomic.atomic_dir(out_dir) as tmp:
        df = importer(src, tmp, opts)
        if check is not None:
            check(tmp)
    return df
