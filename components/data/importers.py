"""Importers: turn a downloaded dataset (or the embedded toy generator) into a dataset folder.

Every importer writes `images/<id>.png` (RGB, `prepare.resize` pad | crop | squash to size x size, LANCZOS),
`masks/<id>.png` (L, 0/255, same geometry, nearest), `manifest.csv`, `categories.json` (the classes that have
images) and, for imported sources, `excluded.csv` (every file left out, with its reason). `import_dataset` builds the folder beside its
destination and swaps it in only when every file was read and checked, so a bad input leaves nothing partial.

Files are found by components.data.source_files (stems matched case-insensitively on png/jpg/jpeg/bmp/tif/webp;
folders of bounding boxes, overlays or superpixels left out; `prepare.include` / `exclude` globs). Layouts:

isic_gpt      RGB images, L masks and JSON descriptions:
                  <root>/[train|test/]images/[<class>/]<id>.png      (also image/, imgs/, rgb/)
                  <root>/[train|test/]masks/<id>[_mask|_segmentation].png
                  descriptions: <id>.json files anywhere under the root ({"category": ..., "description": ...}),
                  or one JSON at the root mapping id (or file name) to a text or such an object, or a list of
                  objects with an "image"/"image_id"/"file_name" key.
              The category comes from the JSON ("category", "label", "class", "diagnosis" or "dx") or from
              a class sub-folder name. train/ and test/ folders, when present for every image, give the split.
isic_archive  ISIC archive exports: image files plus per-image metadata JSON (<id>.json with
              meta.clinical.diagnosis), and/or CSVs with an image id column and either a diagnosis column or one-hot
              class columns (image, MEL, NV, BCC, AKIEC, BKL, DF, VASC[, SCC, UNK]); other CSVs are not read.
              Optional masks (<id>_segmentation.png).
ham10000      CSVs with image_id and dx (HAM10000_metadata.csv), images in any sub-folder (HAM10000_images_part_1/2),
              optional masks (HAM10000_segmentations_lesion_tschandl/<id>_segmentation.png). lesion_id keeps images
              of one lesion on one side of the split. Rows whose image is absent are skipped (on_missing_image).
toy           the embedded procedural generator (components.data.toy); no input folder.

Images without a label (`diagnosis: null`, no CSV row, no class folder) follow `prepare.on_unlabelled`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import pandas as pd

from components import atomic
from components.data import manifest
from components.data.categories import ALIASES, HAM10000_CATEGORIES, normalise_category
from components.data.config import ImportOptions, check_source_categories
from components.data.exclusions import EXCLUDED_FILE, Exclusion, policy_error, summary
from components.data.materialise import ImportReport, RawItem, Scan, materialise, template_description
from components.data.source_files import FileIndex, index_files, read_csv, read_json
from components.data.toy import generate_toy
from components.errors import DataError
from components.registry import Registry

__all__ = ["IMPORTERS", "ImportOptions", "ImportReport", "RawItem", "import_dataset", "template_description"]

log = logging.getLogger(__name__)

_CATEGORY_KEYS = ("category", "label", "class", "class_name", "diagnosis", "dx")
_DESCRIPTION_KEYS = ("description", "text", "caption", "prompt", "gpt_description", "desc")
_ID_KEYS = ("image_id", "image", "file_name", "filename", "file", "id", "isic_id", "name")
_CSV_ID_COLUMNS = ("image", "image_id", "isic_id", "image_name")
_CSV_DIAGNOSIS_COLUMNS = ("diagnosis", "dx")
_ONEHOT_EXTRA = ("scc", "ak", "unk")  # ISIC 2019 ground-truth columns beyond the seven HAM10000 classes
_META_KEYS = ("anatom_site_general", "age_approx", "sex")


def _index(root: Path, opts: ImportOptions) -> FileIndex:
    return index_files(root, opts.include, opts.exclude)


def _scan(index: FileIndex, items: list[RawItem], unlabelled: list[Exclusion], missing: list[str]) -> Scan:
    for item in items:
        item.mask_file = index.masks.get(item.image_id)
    return Scan(index.root, items, unlabelled, missing, duplicate_copies=len(index.duplicate_copies),
                orphan_masks=index.orphan_masks())


def _unlabelled(index: FileIndex, image_id: str, detail: str) -> Exclusion:
    return Exclusion(index.rel(index.images[image_id]), image_id, "unlabelled", detail)


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


# --------------------------------------------------------------------------------------------- isic_gpt
def _json_entries(index: FileIndex, missing: list[str]) -> dict[str, dict]:
    """ISIC-GPT descriptions: per-image <id>.json files and/or one JSON mapping at the root."""
    entries: dict[str, dict] = {}
    origin: dict[str, Path] = {}

    def add(image_id: str, rec: dict, path: Path) -> None:
        if image_id in entries:
            raise DataError(f"{path}: second description of {image_id!r} (also {origin[image_id]}); keep one entry "
                            f"per image, or leave one file out with prepare.exclude")
        entries[image_id], origin[image_id] = rec, path

    for path in index.jsons:
        data = read_json(path)
        per_image = isinstance(data, dict) and (path.stem in index.images
                                                or _first(data, _CATEGORY_KEYS + _DESCRIPTION_KEYS) is not None)
        if per_image and path.stem not in index.images:
            missing.append(f"{index.rel(path)} ({path.stem})")
            continue
        if per_image:
            add(path.stem, data, path)
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
                manifest.resolve(index.root, key, where=f"{path}")
            image_id = Path(key).stem
            if image_id not in index.images:
                missing.append(f"{index.rel(path)} ({key})")
                continue
            add(image_id, rec, path)
    return entries


def scan_isic_gpt(root: Path, opts: ImportOptions) -> Scan:
    """Items of an ISIC-GPT style folder (images, L masks, JSON descriptions)."""
    index = _index(root, opts)
    missing: list[str] = []
    entries = _json_entries(index, missing)
    items, unlabelled = [], []
    for image_id, path in index.images.items():
        rel = path.relative_to(index.root)
        rec = entries.get(image_id, {})
        raw_cat = _first(rec, _CATEGORY_KEYS)
        if raw_cat is not None:
            category = normalise_category(str(raw_cat), opts.categories, where=f"{path} (JSON description)")
        else:
            category = _class_folder(rel, opts.categories)
            if category is None:
                unlabelled.append(_unlabelled(index, image_id, f"no category: put a \"category\" key in its JSON "
                                                               f"description or the image in a class folder "
                                                               f"(images/<class>/{path.name})"))
                continue
        text = _first(rec, _DESCRIPTION_KEYS)
        items.append(RawItem(image_id, path, category, description=str(text) if text else None,
                             split=_split_of(rel)))
    return _scan(index, items, unlabelled, missing)


# --------------------------------------------------------------------------------------------- isic_archive
def _isic_clinical(data) -> dict | None:
    """The clinical block of an ISIC metadata JSON (old `meta.clinical`, new `metadata.clinical`), or None."""
    if not isinstance(data, dict):
        return None
    meta = data.get("meta", data.get("metadata"))
    clinical = meta.get("clinical") if isinstance(meta, dict) else data.get("clinical")
    return clinical if isinstance(clinical, dict) else None


def _diagnosis(clinical: dict) -> str | None:
    for key in ("diagnosis", "diagnosis_3", "diagnosis_2", "benign_malignant_diagnosis"):
        if clinical.get(key) not in (None, ""):
            return str(clinical[key])
    return None


class _Label(NamedTuple):
    raw: str | None  # the diagnosis as written, None when the source has none for the image
    where: str       # file (and row) for error messages
    empty: str       # excluded.csv detail when no source has a diagnosis


def _csv_labels(index: FileIndex, labels: dict[str, list[_Label]], missing: list[str]) -> None:
    """Labels from every CSV with an image id column and one-hot class columns or a diagnosis column."""
    for path in index.csvs:
        columns = [str(c) for c in read_csv(path, nrows=0).columns]
        id_col = next((c for c in columns if c.lower() in _CSV_ID_COLUMNS), None)
        class_cols = [c for c in columns if c != id_col and (ALIASES.get(c.strip().lower()) in HAM10000_CATEGORIES
                                                              or c.strip().lower() in _ONEHOT_EXTRA)]
        diag_col = next((c for c in columns if c.lower() in _CSV_DIAGNOSIS_COLUMNS), None)
        if id_col is None or (len(class_cols) < 2 and diag_col is None):
            log.info("%s: not a label CSV of the isic_archive layout (no image id with class or diagnosis "
                     "columns); not read", path)
            continue
        df = read_csv(path, dtype=str, keep_default_na=False)
        for row_no, row in enumerate(df.to_dict("records"), start=2):
            where = f"{path} row {row_no}"
            image_id = str(row[id_col]).strip()
            if len(class_cols) >= 2:
                try:
                    hot = [c for c in class_cols if float(row[c] or 0) >= 0.5]
                except ValueError:
                    raise DataError(f"{where}: class columns {class_cols} must hold 0/1 values; fix the "
                                    f"row") from None
                if len(hot) > 1:
                    raise DataError(f"{where}: image {image_id!r} has {len(hot)} classes set ({hot}); a one-hot "
                                    f"ground-truth row needs exactly one 1.0")
                raw = hot[0] if hot and hot[0].lower() != "unk" else None
                empty = f"{index.rel(path)} row {row_no}: {'class UNK' if hot else 'no class column set'}"
            else:
                raw = str(row[diag_col]).strip() or None
                empty = f"{index.rel(path)} row {row_no}: empty {diag_col}"
            if image_id not in index.images:
                missing.append(f"{index.rel(path)} row {row_no} ({image_id})")
                continue
            labels.setdefault(image_id, []).append(_Label(raw, where, empty))


def scan_isic_archive(root: Path, opts: ImportOptions) -> Scan:
    """Items of an ISIC archive export (per-image metadata JSON, label CSVs)."""
    index = _index(root, opts)
    labels: dict[str, list[_Label]] = {}
    missing: list[str] = []
    _csv_labels(index, labels, missing)
    meta: dict[str, dict] = {}
    jsons: dict[str, list[Path]] = {}
    for js in index.jsons:
        jsons.setdefault(js.stem, []).append(js)
    for stem, paths in jsons.items():
        beside = [p for p in paths if stem in index.images and p.parent == index.images[stem].parent]
        js = (beside or paths)[0]
        if stem not in index.images:
            if _isic_clinical(read_json(js)) is not None:
                missing.append(f"{index.rel(js)} ({stem})")
            continue
        clinical = _isic_clinical(read_json(js))
        if clinical is None:
            continue
        labels.setdefault(stem, []).append(_Label(_diagnosis(clinical), f"{js} (meta.clinical.diagnosis)",
                                                  f"meta.clinical.diagnosis is null in {index.rel(js)}"))
        meta[stem] = {k: clinical.get(k) for k in _META_KEYS if clinical.get(k)}
    items, unlabelled = [], []
    for image_id, path in index.images.items():
        sources = labels.get(image_id, [])
        found = [label for label in sources if label.raw is not None]
        if not found:
            detail = "; ".join(label.empty for label in sources) or \
                f"no label: no {path.stem}.json with meta.clinical.diagnosis and no row in a ground-truth CSV"
            unlabelled.append(_unlabelled(index, image_id, detail))
            continue
        codes = [(normalise_category(raw, opts.categories, where=where), where) for raw, where, _ in found]
        for code, where in codes[1:]:
            if code != codes[0][0]:
                raise DataError(f"{where}: {image_id!r} is labelled {code!r} here and {codes[0][0]!r} in "
                                f"{codes[0][1]}; keep one source of labels (fix one, or leave one file out with "
                                f"prepare.exclude)")
        items.append(RawItem(image_id, path, codes[0][0], meta=meta.get(image_id, {})))
    return _scan(index, items, unlabelled, missing)


# --------------------------------------------------------------------------------------------- ham10000
def scan_ham10000(root: Path, opts: ImportOptions) -> Scan:
    """Items of a HAM10000 download (metadata CSVs with dx, images, optional segmentation masks)."""
    index = _index(root, opts)
    csvs = [p for p in index.csvs if "dx" in [str(c).strip() for c in read_csv(p, nrows=0).columns]]
    if not csvs:
        raise DataError(f"{root}: no metadata CSV with a 'dx' column (HAM10000_metadata.csv); put it in the folder")
    items, unlabelled, missing = [], [], []
    seen: dict[str, tuple[str, tuple[str, str]]] = {}
    for csv_path in csvs:
        df = read_csv(csv_path, dtype=str, keep_default_na=False)
        df.columns = [str(c).strip() for c in df.columns]
        if "image_id" not in df.columns:
            raise DataError(f"{csv_path}: no 'image_id' column; HAM10000_metadata.csv has image_id and dx")
        for row_no, row in enumerate(df.to_dict("records"), start=2):
            where = f"{csv_path} row {row_no}"
            image_id, dx = row["image_id"].strip(), row["dx"].strip()
            key = (dx, row.get("lesion_id", ""))
            if image_id in seen:
                if seen[image_id][1] == key:  # the same row again (a second copy of the CSV)
                    continue
                raise DataError(f"{where}: duplicate image_id {image_id!r} with another label (also "
                                f"{seen[image_id][0]}); keep one row")
            seen[image_id] = (where, key)
            if image_id not in index.images:
                missing.append(f"{index.rel(csv_path)} row {row_no} ({image_id})")
                continue
            if not dx:
                unlabelled.append(_unlabelled(index, image_id, f"{index.rel(csv_path)} row {row_no}: empty dx"))
                continue
            meta = {k: row[k] for k in ("localization", "age", "sex", "dx_type") if row.get(k)}
            items.append(RawItem(image_id, index.images[image_id],
                                 normalise_category(dx, opts.categories, where=where),
                                 group=row.get("lesion_id") or None, meta=meta))
    names = ", ".join(index.rel(p) for p in csvs)
    unlabelled += [_unlabelled(index, i, f"no row in {names}") for i in index.images if i not in seen]
    return _scan(index, items, unlabelled, missing)


# --------------------------------------------------------------------------------------------- registry
Importer = Callable[[Path | None, Path, ImportOptions], tuple[pd.DataFrame, ImportReport]]


def _scanning(origin: str, scan: Callable[[Path, ImportOptions], Scan]) -> Importer:
    def run(src: Path | None, dst: Path, opts: ImportOptions) -> tuple[pd.DataFrame, ImportReport]:
        if src is None or str(src) == "":
            raise DataError(f"source '{origin}' needs an input folder: set prepare.path in params.yaml "
                            f"(or --set path=/data/{origin})")
        found = scan(Path(src), opts)
        if found.unlabelled and opts.on_unlabelled == "error":
            raise policy_error(found.root, found.unlabelled, "on_unlabelled",
                               "give each a diagnosis (metadata JSON, CSV row or class folder)")
        if found.missing and opts.on_missing_image == "error":
            raise DataError(f"{found.root / found.missing[0]}: its image is not in the folder ({len(found.missing)} "
                            f"metadata row(s) without an image); add the images or set prepare.on_missing_image=skip")
        return materialise(found, dst, origin, opts)
    run.__doc__ = f"Import a {origin} folder into dst. " + (scan.__doc__ or "")
    return run


def import_toy(src: Path | None, dst: Path, opts: ImportOptions) -> tuple[pd.DataFrame, ImportReport]:
    """Generate the procedural toy set into dst (src is ignored)."""
    df = generate_toy(dst, n_images=opts.toy_images, size=opts.size, seed=opts.seed,
                      categories=opts.categories, test_fraction=opts.test_fraction,
                      workers=opts.workers, progress=opts.progress, val_fraction=opts.val_fraction)
    return df, ImportReport("toy", categories=list(opts.categories))


IMPORTERS: Registry[Importer] = Registry("source", hint="set prepare.source to one of them", error=DataError)
IMPORTERS.register("toy", import_toy)
IMPORTERS.register("isic_gpt", _scanning("isic_gpt", scan_isic_gpt))
IMPORTERS.register("isic_archive", _scanning("isic_archive", scan_isic_archive))
IMPORTERS.register("ham10000", _scanning("ham10000", scan_ham10000))


def _log_report(report: ImportReport, out_dir: Path) -> None:
    if report.excluded:
        log.warning("%s: left out %s; every one is listed in %s", report.origin,
                    summary(report.excluded), out_dir / EXCLUDED_FILE)
    if report.dropped_categories:
        log.warning("%s: no image of configured class(es) %s: dropped; the dataset's classes are %s",
                    report.origin, report.dropped_categories, report.categories)
    if report.missing_images:
        log.warning("%s: %d metadata row(s) name an image that is not in the folder (skipped, "
                    "prepare.on_missing_image=skip): %s%s", report.origin, len(report.missing_images),
                    ", ".join(report.missing_images[:3]), ", ..." if len(report.missing_images) > 3 else "")
    if report.masks_resized or report.masks_binarised or report.masks_from_alpha:
        log.info("%s: masks resized to their image (nearest): %d, binarised at the threshold: %d, read from the "
                 "alpha channel: %d", report.origin, report.masks_resized, report.masks_binarised,
                 report.masks_from_alpha)
    if report.orphan_masks:
        log.warning("%s: %d mask(s) have no image and are not used (e.g. %s)", report.origin,
                    len(report.orphan_masks), ", ".join(report.orphan_masks[:3]))


def import_dataset(source: str, path: str | Path | None, out_dir: str | Path,
                   opts: ImportOptions | None = None,
                   check: Callable[[Path], None] | None = None,
                   on_report: Callable[[ImportReport], None] | None = None) -> pd.DataFrame:
    """Import `source` into out_dir atomically: built beside it, checked, then swapped in (a rerun replaces it).

    `check(tmp_dir)` runs on the finished folder before the swap; raising there keeps the old out_dir.
    `on_report(report)` receives what the import left out, repaired and dropped (components.data.materialise).
    """
    opts = opts or ImportOptions()
    importer = IMPORTERS.create(source)
    check_source_categories(source, opts.categories)
    src = Path(path) if path not in (None, "") else None
    out_dir = Path(out_dir)
    if src is not None and out_dir.resolve() in (src.resolve(), *src.resolve().parents):
        raise DataError(f"{out_dir}: the output folder contains the input {src}; choose another out_dir")
    with atomic.atomic_dir(out_dir) as tmp:
        df, report = importer(src, tmp, opts)
        if check is not None:
            check(tmp)
    _log_report(report, out_dir)
    if on_report is not None:
        on_report(report)
    return df
