"""The dataset contract: a folder with manifest.csv (or .parquet), one row per image, paths relative to it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from components import atomic
from components.errors import DataError

MANIFEST_NAME = "manifest.csv"
CATEGORIES_FILE = "categories.json"

REQUIRED_COLUMNS: tuple[str, ...] = (
    "image_id", "category", "split", "image_path", "mask_path", "description",
    "source", "origin", "width", "height",
)
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "prompt", "seed", "generator_version", "num_inference_steps", "guidance_scale",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
SOURCES: tuple[str, ...] = ("real", "synthetic")


def read_categories(root: str | Path, df: pd.DataFrame | None = None) -> list[str]:
    """The class list of a dataset folder: its categories.json, else the sorted categories of its manifest."""
    path = Path(root) / CATEGORIES_FILE
    if path.is_file():
        return list(json.loads(path.read_text()))
    if df is None:
        df = read_manifest(root)
    return sorted(df["category"].astype(str).unique())


def manifest_file(root: str | Path) -> Path:
    """The manifest file of a dataset folder (CSV preferred, parquet accepted)."""
    root = Path(root)
    for name in (MANIFEST_NAME, "manifest.parquet"):
        if (root / name).is_file():
            return root / name
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; run the `prepare` stage first (dvc repro prepare)")
    raise DataError(f"{root}: no manifest.csv or manifest.parquet; run the `prepare` stage to create one")


def read_manifest(root: str | Path, require_columns: tuple[str, ...] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """Read and structurally check a dataset manifest (columns, path containment, unique ids)."""
    path = manifest_file(root)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(
        path, dtype={"image_id": str, "mask_path": str, "description": str}, keep_default_na=False)
    missing = [c for c in require_columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; a manifest needs {list(REQUIRED_COLUMNS)}")
    if df.empty:
        raise DataError(f"{path}: the manifest has no rows; the dataset folder holds no images")
    dup = df["image_id"][df["image_id"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path}: duplicate image_id(s) {dup[:10]}; every row needs a unique id")
    for i, row in enumerate(df.itertuples(index=False)):
        for col in ("image_path", "mask_path"):
            rel = getattr(row, col)
            if rel:
                resolve(root, rel, where=f"{path} row {i + 2} ({col})")
    df["mask_path"] = df["mask_path"].fillna("").astype(str)
    return df


def write_manifest(df: pd.DataFrame, root: str | Path) -> Path:
    """Write manifest.csv atomically, required columns first."""
    root = Path(root)
    cols = [c for c in REQUIRED_COLUMNS if c in df.columns]
    cols += [c for c in df.columns if c not in cols]
    out = root / MANIFEST_NAME
    with atomic.atomic_path(out) as tmp:
        df[cols].to_csv(tmp, index=False)
    return out


def resolve(root: str | Path, rel: str | Path, where: str = "") -> Path:
    """Absolute path of a manifest entry; raises DataError if it escapes the dataset root."""
    root_abs = Path(root).resolve()
    if Path(rel).is_absolute():
        raise DataError(f"{where}: path {rel!r} is absolute; manifest paths must be relative to {root_abs}")
    full = (root_abs / rel).resolve()
    if root_abs != full and root_abs not in full.parents:
        raise DataError(f"{where}: path {rel!r} escapes the dataset root {root_abs}; keep files inside it")
    return full


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 array; a corrupt file raises DataError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; fix image_path in the manifest or restore the file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); the file is corrupt or truncated, replace it") from None


def load_mask(path: str | Path) -> np.ndarray:
    """Decode a mask to an HxW uint8 array of 0/1; non-binary masks raise DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found; fix mask_path in the manifest or restore the file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode mask ({exc}); the file is corrupt or truncated, replace it") from None
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 1, 255}:
        raise DataError(
            f"{path}: mask is not binary (values {values[:8].tolist()}...); save it with 0 for background and "
            f"255 (or 1) for lesion, e.g. threshold at 128"
        )
    return (arr > 0).astype(np.uint8)


@dataclass(frozen=True)
class Pair:
    """One loaded sample: image (HxWx3 uint8), mask (HxW 0/1 or None), and its manifest row."""
    image: np.ndarray
    mask: np.ndarray | None
    row: dict


def load_pair(root: str | Path, row: dict | pd.Series, require_mask: bool = False) -> Pair:
    """Load one manifest row's image and mask, checking that their sizes agree."""
    row = dict(row)
    where = f"{Path(root) / MANIFEST_NAME} image_id={row.get('image_id')}"
    image = load_rgb(resolve(root, row["image_path"], where))
    mask = None
    if row.get("mask_path"):
        mask_file = resolve(root, row["mask_path"], where)
        mask = load_mask(mask_file)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_file}: mask size {mask.shape[::-1]} differs from image size {image.shape[1::-1]} "
                f"({where}); resize the mask with nearest-neighbour interpolation to the image size"
            )
    elif require_mask:
        raise DataError(f"{where}: no mask_path, but this stage needs masks; use a dataset with masks "
                        f"or drop images without masks")
    return Pair(image=image, mask=mask, row=row)


def require_masks(df: pd.DataFrame, root: str | Path, stage: str) -> None:
    """Raise a clear DataError if any row lacks a mask, for stages that need masks."""
    missing = df.loc[df["mask_path"].fillna("") == "", "image_id"].tolist()
    if missing:
        raise DataError(
            f"{Path(root) / MANIFEST_NAME}: {len(missing)} image(s) without mask_path (e.g. {missing[:5]}); "
            f"stage '{stage}' needs a mask for every image. Import masks or filter those rows out."
        )
