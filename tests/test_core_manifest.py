"""Manifest contract helpers: path containment, decoding errors that name the file, mask checks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components import atomic
from components.data import manifest
from components.data.categories import normalise_category
from components.errors import DataError


def _row(i, **kw):
    row = dict(image_id=f"img{i}", category="mel", split="train", image_path=f"images/img{i}.png",
               mask_path=f"masks/img{i}.png", description="d", source="real", origin="test", width=4, height=4)
    row.update(kw)
    return row


def _dataset(tmp_path, rows, image=None, mask=None):
    for r in rows:
        atomic.write_png(tmp_path / r["image_path"], image if image is not None else np.zeros((4, 4, 3), np.uint8))
        if r["mask_path"]:
            atomic.write_png(tmp_path / r["mask_path"], mask if mask is not None else np.full((4, 4), 255, np.uint8))
    manifest.write_manifest(pd.DataFrame(rows), tmp_path)
    return tmp_path


def test_roundtrip_and_pair_loading(tmp_path):
    root = _dataset(tmp_path, [_row(0), _row(1, mask_path="")])
    df = manifest.read_manifest(root)
    assert list(df.columns[:len(manifest.REQUIRED_COLUMNS)]) == list(manifest.REQUIRED_COLUMNS)
    pair = manifest.load_pair(root, df.iloc[0])
    assert pair.image.shape == (4, 4, 3) and pair.mask.max() == 1 and pair.mask.dtype == np.uint8
    assert manifest.load_pair(root, df.iloc[1]).mask is None
    with pytest.raises(DataError, match="needs masks"):
        manifest.load_pair(root, df.iloc[1], require_mask=True)
    with pytest.raises(DataError, match=r"1 image\(s\) without mask_path.*img1"):
        manifest.require_masks(df, root, "finetune")


def test_path_escaping_root_is_rejected(tmp_path):
    root = _dataset(tmp_path / "ds", [_row(0)])
    df = pd.read_csv(root / "manifest.csv")
    df.loc[0, "image_path"] = "../outside.png"
    df.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(DataError, match=r"row 2 \(image_path\).*escapes the dataset root"):
        manifest.read_manifest(root)


def test_duplicate_ids_and_missing_columns(tmp_path):
    root = _dataset(tmp_path, [_row(0), _row(0)])
    with pytest.raises(DataError, match=r"duplicate image_id\(s\) \['img0'\]"):
        manifest.read_manifest(root)
    pd.DataFrame([{"image_id": "a"}]).to_csv(root / "manifest.csv", index=False)
    with pytest.raises(DataError, match="missing column"):
        manifest.read_manifest(root)


def test_corrupt_image_and_nonbinary_mask_name_the_file(tmp_path):
    root = _dataset(tmp_path, [_row(0)], mask=np.full((4, 4), 128, np.uint8))
    (root / "images/img0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"img0.png: cannot decode image"):
        manifest.load_rgb(root / "images/img0.png")
    with pytest.raises(DataError, match=r"img0.png: mask is not binary"):
        manifest.load_mask(root / "masks/img0.png")


def test_mask_size_mismatch(tmp_path):
    root = _dataset(tmp_path, [_row(0)], mask=np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError, match=r"mask size \(4, 3\) differs from image size \(4, 4\)"):
        manifest.load_pair(root, manifest.read_manifest(root).iloc[0])


def test_empty_manifest_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="run the `prepare` stage"):
        manifest.read_manifest(tmp_path / "nope")
    pd.DataFrame(columns=list(manifest.REQUIRED_COLUMNS)).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(DataError, match="no rows"):
        manifest.read_manifest(tmp_path)


@pytest.mark.parametrize("name, code", [("Melanoma", "mel"), ("nevus", "nv"), ("seborrheic keratosis", "bkl"),
                                        ("pigmented benign keratosis", "bkl"), ("Basal_cell_carcinoma", "bcc"),
                                        ("VASC", "vasc")])
def test_category_aliases(name, code):
    assert normalise_category(name) == code


def test_unknown_category_message():
    with pytest.raises(DataError, match=r"x.csv row 3: unknown category 'wart'.*params.yaml"):
        normalise_category("wart", where="x.csv row 3")
    with pytest.raises(DataError, match="maps to 'mel', which is not in the configured categories"):
        normalise_category("melanoma", allowed=("nv", "bkl"))
