"""Fixture folders shaped like real exports (ISIC archive, HAM10000) built from toy drawings, with their defects.

Images are toy lesions (components.data.toy.render_sample), so the quality gate sees lesion-like content; the
defects are made the way they occur in real downloads: a thumbnail whose rows all repeat one row (vertical smear),
`diagnosis: null` metadata, masks at 3x their image's resolution saved with smoothing (values 0..255).
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from components.data.toy import render_sample

DIAGNOSIS = {"nv": "nevus", "mel": "melanoma", "bkl": "pigmented benign keratosis", "bcc": "basal cell carcinoma"}


def lesion(index: int, category: str = "nv", size: int = 64, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A toy lesion photo (HxWx3 uint8) and its 0/1 mask."""
    sample = render_sample(seed, index, category, size)
    return sample.image, sample.mask


def smear(image: np.ndarray, row: int | None = None) -> np.ndarray:
    """Every row replaced by one row of the image: the vertical smear of broken archive thumbnails."""
    row = image.shape[0] // 2 if row is None else row
    return np.repeat(image[row:row + 1], image.shape[0], axis=0)


def save_jpeg(path: Path, image: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, "JPEG", quality=quality)


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def landscape(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centre 4:3 band of a square toy drawing (HAM10000 frames are 600x450)."""
    side = image.shape[0]
    band = side * 3 // 4
    top = (side - band) // 2
    return image[top:top + band], mask[top:top + band]


def smoothed_mask(mask: np.ndarray, scale: int = 3, sigma: float = 1.5) -> np.ndarray:
    """The mask at `scale`x its resolution with soft edges (0..255), as saved by an anti-aliasing tool."""
    big = np.kron(mask.astype(np.float64), np.ones((scale, scale)))
    return np.clip(gaussian_filter(big * 255.0, sigma), 0, 255).astype(np.uint8)


def isic_archive_export(root: Path, n: int = 16, smeared: int = 4, null: int = 2, size: int = 64,
                        classes: tuple[str, ...] = ("nv", "mel")) -> dict[str, list[str]]:
    """ISIC archive thumbnails (JPEG) + per-image metadata JSON; `smeared` vertical smears, `null` with
    `diagnosis: null`. Returns the ids of each kind."""
    ids: dict[str, list[str]] = {"smeared": [], "null": [], "good": []}
    step = n // max(smeared, null, 1)
    for i in range(n):
        image_id = f"ISIC_{i:07d}"
        category = classes[(i // 2) % len(classes)]
        image, _ = lesion(i, category, size)
        kind = "smeared" if i % step == 1 and len(ids["smeared"]) < smeared else \
            "null" if i % step == 2 and len(ids["null"]) < null else "good"
        ids[kind].append(image_id)
        save_jpeg(root / f"{image_id}.jpg", smear(image) if kind == "smeared" else image)
        diagnosis = None if kind == "null" else DIAGNOSIS[category]
        meta = {"meta": {"clinical": {"diagnosis": diagnosis, "benign_malignant": None, "sex": "female",
                                      "anatom_site_general": "posterior torso"}}, "name": image_id}
        (root / f"{image_id}.json").write_text(json.dumps(meta))
    assert len(ids["smeared"]) == smeared and len(ids["null"]) == null, ids
    return ids


def ham_export(root: Path, n: int = 8, size: int = 64, mask_scale: int = 3, smooth: bool = True,
               extra_rows: int = 0) -> list[str]:
    """HAM10000 mirror: 4:3 images, masks at mask_scale x resolution (smoothed), metadata CSV with lesion ids;
    `extra_rows` more CSV rows than images (the full metadata beside a subset). Returns the image ids."""
    codes = ["nv", "mel", "bkl", "nv", "bkl", "nv", "mel", "nv"]
    rows, ids = [], []
    for i in range(n + extra_rows):
        image_id = f"ISIC_{i + 24306:07d}"
        code = codes[i % len(codes)]
        rows.append({"lesion_id": f"HAM_{i // 2:07d}", "image_id": image_id, "dx": code, "dx_type": "histo",
                     "age": "50.0", "sex": "female", "localization": "back"})
        if i >= n:
            continue
        ids.append(image_id)
        image, mask = landscape(*lesion(i, code, size))
        part = "HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2"
        save_jpeg(root / part / f"{image_id}.jpg", image)
        big = smoothed_mask(mask, mask_scale) if smooth else np.kron(mask, np.ones((mask_scale, mask_scale),
                                                                                     np.uint8)) * 255
        save_png(root / "HAM10000_segmentations_lesion_tschandl" / f"{image_id}_segmentation.png", big, "L")
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return ids


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A few-hundred-byte PNG whose header declares width x height (its data is one compressed row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x80" * (3 * width), 9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def import_fails(tmp_path: Path, source: str, src: Path, pattern: str, opts) -> str:
    """The import raises a one-line DataError matching pattern; the previous output folder is untouched and no
    temporary folder is left. Returns the message."""
    import pytest

    from components.data.importers import import_dataset
    from components.errors import DataError

    out = tmp_path / "failed"
    out.mkdir(exist_ok=True)
    (out / "previous.txt").write_text("keep me")
    with pytest.raises(DataError, match=pattern) as info:
        import_dataset(source, src, out, opts)
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert "\n" not in str(info.value)
    return str(info.value)
