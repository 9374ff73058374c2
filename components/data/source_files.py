"""The files of an input folder as the importers see them: images, masks, JSON and CSV metadata, by id.

Walks the folder itself (symlinks resolved and kept inside the folder, symlinked folders followed once), applies
`prepare.include` / `prepare.exclude` globs, leaves out folders that belong to no layout (bounding boxes,
overlays, superpixels, __MACOSX) and identical second copies of a file, and reads CSV / JSON with one-line errors.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.errors import DataError
from components.hashing import file_digest

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIX = re.compile(r"(_segmentation|_segmentations|_mask|_seg|_gt|_label)$", re.IGNORECASE)
_MASK_DIR = re.compile(r"mask|segment|groundtruth|ground_truth|label", re.IGNORECASE)
_SKIP_STEM = re.compile(r"_superpixels$", re.IGNORECASE)
# Folders of no layout: their images are not lesion photos or masks (and often reuse the image ids).
IGNORED_DIR = re.compile(r"^__macosx$|bbox|bounding.?box|^boxes$|overlay|superpixel", re.IGNORECASE)


@dataclass
class FileIndex:
    """Everything usable under root (the resolved input folder), keyed by image id where that applies."""
    root: Path
    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    jsons: list[Path] = field(default_factory=list)
    csvs: list[Path] = field(default_factory=list)
    ignored_dirs: list[str] = field(default_factory=list)
    duplicate_copies: list[str] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        """Path relative to the input folder (as excluded.csv names it)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def orphan_masks(self) -> list[str]:
        return sorted(k for k in self.masks if k not in self.images)


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel + "/", p) for p in patterns)


def _inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def walk(root: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> tuple[list[Path], list[str]]:
    """Files under root (relative paths, sorted) and the folders left out by name; symlinks checked."""
    root = root.resolve()
    files: list[Path] = []
    ignored: list[str] = []
    seen = {root}
    stack = [Path()]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(root / rel_dir), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"{root / rel_dir}: cannot list the folder ({exc.strerror}); check its "
                            f"permissions") from None
        for entry in entries:
            rel = rel_dir / entry.name
            if entry.name.startswith(".") or _matches(rel.as_posix(), exclude):
                continue
            if entry.is_dir() and IGNORED_DIR.search(entry.name):
                ignored.append(rel.as_posix())
                continue
            if entry.is_symlink():
                try:
                    target = Path(entry.path).resolve(strict=True)
                except (OSError, RuntimeError):
                    raise DataError(f"{root / rel}: broken symlink; restore its target, remove it or add it to "
                                    f"prepare.exclude") from None
                if not _inside(root, target):
                    raise DataError(f"{root / rel}: symlink to {target}, outside the input folder {root}; copy the "
                                    f"file in, or point prepare.path at a folder that holds it") from None
            if entry.is_dir():
                target = Path(entry.path).resolve()
                if target not in seen:  # a folder reached twice (through a symlink) is walked once
                    seen.add(target)
                    stack.append(rel)
            elif entry.is_file() and (not include or _matches(rel.as_posix(), include)):
                files.append(rel)
    return sorted(files, key=lambda p: p.as_posix()), sorted(ignored)


def _is_mask(rel: Path) -> bool:
    return bool(MASK_SUFFIX.search(rel.stem)) or any(_MASK_DIR.search(part) for part in rel.parts[:-1])


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.stat().st_size == b.stat().st_size and file_digest(a) == file_digest(b)


def index_files(root: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> FileIndex:
    """Every image, mask, JSON and CSV under root; two different files for one id raise DataError naming both."""
    if not root.is_dir():
        raise DataError(f"{root}: input folder not found; set prepare.path in params.yaml to the dataset folder")
    files, ignored = walk(root, include, exclude)
    index = FileIndex(root=root.resolve(), ignored_dirs=ignored)
    for rel in files:
        p = index.root / rel
        suffix = p.suffix.lower()
        if suffix == ".json":
            index.jsons.append(p)
            continue
        if suffix == ".csv":
            index.csvs.append(p)
            continue
        if suffix not in IMAGE_EXTENSIONS or _SKIP_STEM.search(p.stem):
            continue
        if _is_mask(rel):
            key, target, kind = MASK_SUFFIX.sub("", p.stem), index.masks, "mask"
        else:
            key, target, kind = p.stem, index.images, "image"
        if key in target:
            other = target[key]
            if _same_file(other, p):
                index.duplicate_copies.append(rel.as_posix())
                continue
            hint = index.rel(p.parent) + "/*"
            raise DataError(f"{p}: duplicate {kind} id {key!r} (also {other}, with other content); every image needs "
                            f"a unique file name: remove or rename one, or leave a folder out with "
                            f"prepare.exclude=['{hint}']")
        target[key] = p
    if not index.images:
        raise DataError(f"{root}: empty folder, no image files ({', '.join(IMAGE_EXTENSIONS)}) found; point "
                        f"prepare.path at the folder holding the dataset's images")
    if ignored:
        log.info("%s: left out %d folder(s) that belong to no layout: %s", root, len(ignored), ", ".join(ignored[:5]))
    if index.duplicate_copies:
        log.info("%s: %d identical second copies ignored (e.g. %s)", root, len(index.duplicate_copies),
                 ", ".join(index.duplicate_copies[:3]))
    return index


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc}); fix or re-download the file") from None


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """pd.read_csv (UTF-8, a BOM allowed) whose failures are one line naming the file and the fix."""
    try:
        return pd.read_csv(path, encoding="utf-8-sig", **kwargs)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                        f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.csv") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty CSV (no header line); re-download it, or remove it or add it to "
                        f"prepare.exclude") from None
    except (pd.errors.ParserError, ValueError) as exc:
        text = " ".join(str(exc).split())
        raise DataError(f"{path}: cannot parse the CSV ({text}); fix its quoting or column count, or "
                        f"re-export it") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the CSV ({exc.strerror}); check the file") from None
