"""Turn the scanned items of an input folder into a dataset folder: gate, read masks, resize, write, report.

Each image is decoded under `max_pixels`, passed through the quality gate (components.data.image_gate), its mask
read as its content says (components.data.mask_io), both brought to size x size with one geometry
(components.data.resize) and written. What cannot be used becomes a row of excluded.csv or, with
`on_bad_image: error`, the import's one-line error. categories.json holds the classes that have images.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components import atomic
from components.data import image_gate, manifest, resize
from components.data.config import ImportOptions
from components.data.exclusions import Exclusion, policy_error, write_excluded
from components.data.image_io import FileProblem, read_rgb
from components.data.mask_io import read_mask
from components.data.prompts import class_prefix
from components.data.splits import carve_validation, stratified_split
from components.errors import DataError
from components.progress import map_with_progress

log = logging.getLogger(__name__)


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


@dataclass
class Scan:
    """What a layout scanner found: usable items, images without a label, metadata rows without an image."""
    root: Path
    items: list[RawItem]
    unlabelled: list[Exclusion] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "<file> row N (<id>)" of rows whose image is absent
    duplicate_copies: int = 0
    orphan_masks: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """What an import did beyond the manifest: exclusions, mask repairs, skipped rows, classes kept/dropped."""
    origin: str
    excluded: list[Exclusion] = field(default_factory=list)
    masks_resized: int = 0
    masks_binarised: int = 0
    masks_from_alpha: int = 0
    missing_images: list[str] = field(default_factory=list)
    duplicate_copies: int = 0
    orphan_masks: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    dropped_categories: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- descriptions
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


# --------------------------------------------------------------------------------------------- one image
@dataclass
class _Outcome:
    row: dict | None = None
    excluded: list[Exclusion] = field(default_factory=list)
    mask_resized: bool = False
    mask_binarised: bool = False
    mask_from_alpha: bool = False


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _materialise_one(job: tuple[RawItem, str, str, ImportOptions]) -> _Outcome:
    item, dst, src_root, opts = job
    root = Path(src_root)
    try:
        image = read_rgb(item.image_file, opts.max_pixels)
        height, width = image.shape[:2]
        verdict = image_gate.too_small(width, height, resize.upscale_factor(width, height, opts.size, opts.resize),
                                       opts.size) or image_gate.inspect(image)
    except FileProblem as problem:
        return _Outcome(excluded=[Exclusion(_rel(root, item.image_file), item.image_id, problem.reason,
                                            problem.detail)])
    if verdict is not None:
        return _Outcome(excluded=[Exclusion(_rel(root, item.image_file), item.image_id, verdict.reason,
                                            verdict.detail)])
    out = _Outcome()
    mask = None
    if item.mask_file is not None:
        try:
            read = read_mask(item.mask_file, (width, height), opts.mask_threshold, opts.max_pixels)
        except FileProblem as problem:
            kept = "the image is kept without a mask" if not opts.require_masks else \
                "its image is left out too (prepare.require_masks=true)"
            out.excluded.append(Exclusion(_rel(root, item.mask_file), item.image_id, "bad_mask",
                                          f"{problem.detail}; {kept}"))
            if opts.require_masks:
                return out
        else:
            mask = read.mask
            out.mask_resized, out.mask_binarised, out.mask_from_alpha = read.resized, read.binarised, bool(read.note)
    elif opts.require_masks:
        raise DataError(f"{item.image_file}: no mask found for image {item.image_id!r}, but require_masks is "
                        f"true; add masks/{item.image_id}.png (or {item.image_id}_segmentation.png) or set "
                        f"prepare.require_masks=false for a classification-only dataset")
    img, msk = resize.fit(image, mask, opts.size, opts.resize)
    dst_root = Path(dst)
    img.save(dst_root / "images" / f"{item.image_id}.png")
    row = {"image_id": item.image_id, "category": item.category, "image_path": f"images/{item.image_id}.png",
           "mask_path": "", "description": _full_description(item), "width": opts.size, "height": opts.size,
           "_split": item.split}
    if msk is not None:
        msk.save(dst_root / "masks" / f"{item.image_id}.png")
        row["mask_path"] = f"masks/{item.image_id}.png"
    if item.group:
        row["lesion_id"] = item.group
    out.row = row
    return out


# --------------------------------------------------------------------------------------------- the dataset
def _present_categories(df: pd.DataFrame, opts: ImportOptions, src: Path) -> tuple[list[str], list[str]]:
    present = set(df["category"])
    kept = [c for c in opts.categories if c in present]
    dropped = [c for c in opts.categories if c not in present]
    if dropped and opts.require_all_categories:
        raise DataError(f"{src}: no usable image of class(es) {dropped} (classes with images: {kept}); add images "
                        f"of them, remove them from prepare.categories, or set prepare.require_all_categories=false")
    return kept, dropped


def materialise(scan: Scan, dst: Path, origin: str, opts: ImportOptions) -> tuple[pd.DataFrame, ImportReport]:
    """Check, resize and write the scanned items into dst (images/, masks/, manifest.csv, categories.json,
    excluded.csv); return the manifest and the report."""
    items = scan.items
    if not items:
        raise DataError(f"{scan.root}: nothing to import: no labelled image found"
                        + (f" ({len(scan.unlabelled)} unlabelled)" if scan.unlabelled else ""))
    for item in items:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", item.image_id):
            raise DataError(f"{item.image_file}: image id {item.image_id!r} has characters that are unsafe in "
                            f"file names; rename the file using letters, digits, '.', '_' or '-'")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    items = sorted(items, key=lambda it: it.image_id)
    jobs = [(it, str(dst), str(scan.root), opts) for it in items]
    workers = opts.workers if opts.workers is not None else (min(os.cpu_count() or 1, 4) if len(jobs) >= 256 else 1)
    outcomes = map_with_progress(_materialise_one, jobs, workers, chunksize=16, desc=f"import {origin}",
                                 disable=not opts.progress, unit="img")
    bad = [e for o in outcomes for e in o.excluded]
    if bad and opts.on_bad_image == "error":
        raise policy_error(scan.root, bad, "on_bad_image", "replace or remove the file")
    report = ImportReport(origin, excluded=scan.unlabelled + bad, missing_images=scan.missing,
                          duplicate_copies=scan.duplicate_copies, orphan_masks=scan.orphan_masks,
                          masks_resized=sum(o.mask_resized for o in outcomes),
                          masks_binarised=sum(o.mask_binarised for o in outcomes),
                          masks_from_alpha=sum(o.mask_from_alpha for o in outcomes))
    rows = [o.row for o in outcomes if o.row is not None]
    if not rows:
        raise DataError(f"{scan.root}: nothing left to import: every one of the {len(items)} images was excluded "
                        f"({', '.join(sorted({e.reason for e in bad}))}); e.g. {bad[0].path}: {bad[0].detail}")
    df = pd.DataFrame(rows)
    given = df.pop("_split").tolist()
    df["source"] = "real"
    df["origin"] = origin
    groups = df["lesion_id"] if "lesion_id" in df.columns else None
    if all(s is not None for s in given) and {"train", "test"} <= set(given):
        log.info("%s: keeping the split given by the dataset's train/test folders", origin)
        split = pd.Series(given)
    else:
        split = stratified_split(df["category"], opts.test_fraction, opts.seed, groups=groups)
    df["split"] = carve_validation(split, df["category"], opts.val_fraction, opts.seed, groups=groups).to_numpy()
    report.categories, report.dropped_categories = _present_categories(df, opts, scan.root)
    manifest.write_manifest(df, dst)
    atomic.write_text(dst / manifest.CATEGORIES_FILE, json.dumps(report.categories) + "\n")
    write_excluded(dst, report.excluded)
    return df, report
