"""Real exports as they come: the quality gate, unlabelled images, the classes present, masks, aspect ratio.

Each case asserts its exact outcome: the excluded.csv row, the report's counts, or the one-line error, and that a
failed import leaves the previous output folder as it was.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.data import image_gate, manifest, resize
from components.data.config import ImportOptions
from components.data.importers import import_dataset
from components.data.mask_io import read_mask
from components.data.toy import assign_categories, render_sample
from components.errors import DataError
from tests.real_export_fixtures import (
    bomb_png,
    import_fails,
    ham_export,
    isic_archive_export,
    landscape,
    lesion,
    save_png,
    smear,
    smoothed_mask,
)

OPTS = ImportOptions(size=32, test_fraction=0.25, seed=0, progress=False, workers=1)
LOOSE = replace(OPTS, require_masks=False)


def _excluded(out: Path) -> list[dict]:
    return pd.read_csv(out / "excluded.csv", dtype=str, keep_default_na=False).to_dict("records")


def _fails(tmp_path: Path, source: str, src: Path, pattern: str, opts: ImportOptions) -> str:
    return import_fails(tmp_path, source, src, pattern, opts)


def _report(source: str, src: Path, out: Path, opts: ImportOptions):
    reports = []
    df = import_dataset(source, src, out, opts, on_report=reports.append)
    return df, reports[0]


# --------------------------------------------------------------------------------------------- the gate
@pytest.mark.parametrize("size", [32, 64, 128])
def test_gate_passes_toy_lesions(size):
    labels = assign_categories(70, ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"), 5)
    flagged = [(i, v) for i in range(70) if (v := image_gate.inspect(render_sample(5, i, labels[i], size).image))]
    assert flagged == []


def test_gate_ignores_letterbox_bars_but_not_a_smear_inside_them():
    for i in range(12):
        image, mask = landscape(*lesion(i, ("nv", "mel", "bkl")[i % 3], 64))
        boxed = np.asarray(resize.fit(image, mask, 64, "pad")[0])       # black bars top and bottom
        assert image_gate.inspect(boxed) is None
        assert image_gate.inspect(np.ascontiguousarray(boxed.transpose(1, 0, 2))) is None  # pillarbox
        smeared = np.asarray(resize.fit(smear(image), mask, 64, "pad")[0])
        assert image_gate.inspect(smeared).reason == "vertical_smear"


def test_gate_finds_smears_uniform_and_small_images():
    image, _ = lesion(0, "mel", 64)
    noisy = np.clip(smear(image) + np.random.default_rng(0).normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    band = image.copy()
    band[40:] = image[40]
    cases = {
        "vertical_smear": smear(image),
        "horizontal_smear": np.repeat(image[:, 32:33], 64, axis=1),
        "near_uniform": np.full((64, 64, 3), 120, np.uint8) + np.random.default_rng(1).integers(0, 2, (64, 64, 3),
                                                                                               dtype=np.uint8),
        "smeared_band": band,
    }
    for reason, arr in cases.items():
        assert image_gate.inspect(arr).reason == reason, reason
    assert image_gate.inspect(noisy).reason == "vertical_smear"  # rows "nearly" identical: sensor noise on a smear
    assert image_gate.too_small(40, 30, resize.upscale_factor(40, 30, 128, "pad"), 128).reason == "too_small"
    assert image_gate.too_small(600, 450, resize.upscale_factor(600, 450, 128, "pad"), 128) is None


def test_striped_image_is_listed_in_excluded_csv(tmp_path):
    ids = isic_archive_export(tmp_path / "src", n=8, smeared=1, null=0)
    df = import_dataset("isic_archive", tmp_path / "src", tmp_path / "out", LOOSE)
    [row] = _excluded(tmp_path / "out")
    assert row == {"path": f"{ids['smeared'][0]}.jpg", "image_id": ids["smeared"][0], "reason": "vertical_smear",
                   "detail": "every row (nearly) the same, the lesion smeared out: 0.00 of the variation is left "
                             "across them (< 0.25)"}
    assert len(df) == 7 and ids["smeared"][0] not in set(df["image_id"])
    msg = _fails(tmp_path, "isic_archive", tmp_path / "src", r"ISIC_0000001\.jpg: every row \(nearly\) the same",
                 replace(LOOSE, on_bad_image="error"))
    assert msg.endswith("; replace or remove the file, or set prepare.on_bad_image=exclude to leave such files out "
                        "(listed in excluded.csv)")


def test_image_over_max_pixels(tmp_path):
    ids = isic_archive_export(tmp_path / "src", n=8, smeared=0, null=0)
    (tmp_path / "src" / f"{ids['good'][0]}.jpg").unlink()
    bomb_png(tmp_path / "src" / f"{ids['good'][0]}.png")  # header: 20000 x 20000, a few hundred bytes
    import_dataset("isic_archive", tmp_path / "src", tmp_path / "out", LOOSE)
    [row] = _excluded(tmp_path / "out")
    assert (row["path"], row["reason"]) == ("ISIC_0000000.png", "too_large")
    assert row["detail"] == ("image of 20000x20000 px (400 MP) exceeds prepare.max_pixels=100000000; downsize it "
                             "or raise prepare.max_pixels")
    _fails(tmp_path, "isic_archive", tmp_path / "src", r"ISIC_0000000\.png: image of 20000x20000 px \(400 MP\) "
                                                         r"exceeds prepare\.max_pixels=1000; downsize it",
           replace(LOOSE, on_bad_image="error", max_pixels=1000))


# --------------------------------------------------------------------------------------------- labels, classes
def test_unlabelled_images_are_excluded_or_named(tmp_path):
    ids = isic_archive_export(tmp_path / "src", n=8, smeared=0, null=2)
    import_dataset("isic_archive", tmp_path / "src", tmp_path / "out", LOOSE)
    rows = _excluded(tmp_path / "out")
    assert [(r["image_id"], r["reason"], r["detail"]) for r in rows] == [
        (i, "unlabelled", f"meta.clinical.diagnosis is null in {i}.json") for i in ids["null"]]
    msg = _fails(tmp_path, "isic_archive", tmp_path / "src", "ISIC_0000002.jpg: meta.clinical.diagnosis is null",
                 replace(LOOSE, on_unlabelled="error"))
    assert msg.endswith("ISIC_0000002.jpg: meta.clinical.diagnosis is null in ISIC_0000002.json (and 1 more: "
                        "ISIC_0000006.jpg); give each a diagnosis (metadata JSON, CSV row or class folder), or set "
                        "prepare.on_unlabelled=exclude to leave such files out (listed in excluded.csv)")
    assert "add ISIC" not in msg


def test_classes_are_the_ones_present(tmp_path, caplog):
    isic_archive_export(tmp_path / "src", n=8, smeared=0, null=0, classes=("nv", "mel"))
    with caplog.at_level(logging.WARNING):
        _, report = _report("isic_archive", tmp_path / "src", tmp_path / "out", LOOSE)
    assert json.loads((tmp_path / "out" / "categories.json").read_text()) == ["mel", "nv"]
    assert manifest.read_categories(tmp_path / "out") == ["mel", "nv"]
    assert report.dropped_categories == ["akiec", "bcc", "bkl", "df", "vasc"]
    assert "no image of configured class(es) ['akiec', 'bcc', 'bkl', 'df', 'vasc']: dropped" in caplog.text
    _fails(tmp_path, "isic_archive", tmp_path / "src",
           r"src: no usable image of class\(es\) \['akiec', 'bcc', 'bkl', 'df', 'vasc'\] \(classes with images: "
           r"\['mel', 'nv'\]\); add images of them, remove them from prepare\.categories, or set "
           r"prepare\.require_all_categories=false", replace(LOOSE, require_all_categories=True))


# --------------------------------------------------------------------------------------------- masks
def _mask_file(tmp_path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path = tmp_path / "m.png"
    save_png(path, array, mode)
    return path


def test_mask_at_3x_is_resized_and_smoothed_mask_binarised(tmp_path):
    _, mask = landscape(*lesion(1, "nv", 64))
    read = read_mask(_mask_file(tmp_path, smoothed_mask(mask, 3)), (64, 48))
    assert read.resized and read.binarised and read.mask.shape == (48, 64)
    assert (read.mask != mask).mean() < 0.02  # the 128 threshold of the smoothed edge is the original edge
    hard = read_mask(_mask_file(tmp_path, np.kron(mask, np.ones((3, 3), np.uint8)) * 255), (64, 48))
    assert hard.resized and not hard.binarised and np.array_equal(hard.mask, mask)
    strict = read_mask(_mask_file(tmp_path, smoothed_mask(mask, 3)), (64, 48), threshold=250)
    assert strict.mask.sum() < read.mask.sum()


def test_rgba_mask_read_by_its_content(tmp_path):
    _, mask = lesion(2, "mel", 32)
    alpha_only = np.zeros((32, 32, 4), np.uint8)
    alpha_only[..., 3] = mask * 255                      # colour all black, the lesion only in alpha
    read = read_mask(_mask_file(tmp_path, alpha_only, "RGBA"), (32, 32))
    assert np.array_equal(read.mask, mask) and read.note == "lesion read from the alpha channel"
    opaque = np.dstack([np.repeat(mask[..., None] * 255, 3, axis=2), np.full((32, 32), 255, np.uint8)])
    assert np.array_equal(read_mask(_mask_file(tmp_path, opaque, "RGBA"), (32, 32)).mask, mask)
    clash = opaque.copy()
    clash[:, 16:, 3] = 0                                 # alpha: the left half; colour: the lesion
    with pytest.raises(DataError, match=r"m\.png: RGBA mask whose colour and alpha channels mark different lesions "
                                        r"\(\d+% of pixels agree\); save it as a single-channel \(L\) PNG"):
        read_mask(_mask_file(tmp_path, clash, "RGBA"), (32, 32))


def test_two_level_mask_keeps_its_lesion(tmp_path):
    _, mask = lesion(6, "nv", 32)
    read = read_mask(_mask_file(tmp_path, mask * 100, "L"), (32, 32))  # 0/100: binary, just not 0/255
    assert np.array_equal(read.mask, mask) and read.binarised and not read.resized


def test_faint_mask_below_threshold_is_refused(tmp_path):
    faint = (smoothed_mask(lesion(3)[1], 1) * 0.3).astype(np.uint8)
    with pytest.raises(DataError, match=r"mask values 0\.\.76 all lie below prepare\.mask_threshold=128; lower the "
                                        r"threshold or save the lesion as 255"):
        read_mask(_mask_file(tmp_path, faint, "L"), (64, 64))


def test_found_mask_follows_the_rules_when_masks_are_optional(tmp_path):
    ids = ham_export(tmp_path / "src", n=8, mask_scale=3)
    bad = tmp_path / "src" / "HAM10000_segmentations_lesion_tschandl" / f"{ids[0]}_segmentation.png"
    save_png(bad, np.zeros((50, 50), np.uint8), "L")     # square: not the 4:3 frame of its image
    df, report = _report("ham10000", tmp_path / "src", tmp_path / "out", replace(LOOSE, test_fraction=0.5))
    assert len(df) == 8 and report.masks_resized == 7 and report.masks_binarised == 7
    assert df.set_index("image_id").loc[ids[0], "mask_path"] == ""
    [row] = _excluded(tmp_path / "out")
    assert (row["path"], row["reason"]) == (f"HAM10000_segmentations_lesion_tschandl/{ids[0]}_segmentation.png",
                                            "bad_mask")
    assert row["detail"].endswith("; the image is kept without a mask")


# --------------------------------------------------------------------------------------------- aspect ratio
def test_resize_modes_keep_image_and_mask_aligned():
    image, mask = landscape(*lesion(4, "nv", 64))        # 64 x 48
    img, msk = resize.fit(image, mask, 32, "pad")
    arr, m = np.asarray(img), np.asarray(msk)
    assert arr.shape == (32, 32, 3) and (arr[:4] == 0).all() and (arr[-4:] == 0).all() and (m[:4] == 0).all()
    assert abs(m[4:28].mean() / 255 - mask.mean()) < 0.03  # undistorted: same lesion share inside the bars
    crop_img, crop_msk = resize.fit(image, mask, 32, "crop")
    centre = np.asarray(Image.fromarray(image[:, 8:56]).resize((32, 32), Image.LANCZOS)).astype(int)
    assert np.abs(np.asarray(crop_img).astype(int) - centre).mean() < 2  # the centre 48 x 48, not stretched
    assert np.array_equal(np.asarray(crop_msk), np.asarray(Image.fromarray(mask[:, 8:56] * 255).resize(
        (32, 32), Image.NEAREST)))
    squash, _ = resize.fit(image, mask, 32, "squash")
    assert np.array_equal(np.asarray(squash), np.asarray(Image.fromarray(image).resize((32, 32), Image.LANCZOS)))
    square, square_mask = lesion(5, "mel", 64)            # square inputs: every mode is the plain resize
    plain = np.asarray(Image.fromarray(square).resize((32, 32), Image.LANCZOS))
    for mode in resize.RESIZE_MODES:
        out, out_mask = resize.fit(square, square_mask, 32, mode)
        assert np.array_equal(np.asarray(out), plain)
        assert np.array_equal(np.asarray(out_mask),
                              np.asarray(Image.fromarray(square_mask * 255).resize((32, 32), Image.NEAREST)))


# --------------------------------------------------------------------------------------------- done when
def test_isic_archive_export_with_smears_and_null_diagnoses(tmp_path):
    ids = isic_archive_export(tmp_path / "src", n=16, smeared=4, null=2)
    df, report = _report("isic_archive", tmp_path / "src", tmp_path / "out", LOOSE)
    rows = _excluded(tmp_path / "out")
    assert sorted((r["image_id"], r["reason"]) for r in rows) == sorted(
        [(i, "vertical_smear") for i in ids["smeared"]] + [(i, "unlabelled") for i in ids["null"]])
    assert sorted(df["image_id"]) == ids["good"] and set(df["mask_path"]) == {""}
    assert json.loads((tmp_path / "out" / "categories.json").read_text()) == ["mel", "nv"]
    assert {"vertical_smear": 4, "unlabelled": 2} == {k: sum(r.reason == k for r in report.excluded)
                                                      for k in ("vertical_smear", "unlabelled")}


def test_ham_export_with_3x_smoothed_masks(tmp_path):
    ids = ham_export(tmp_path / "src", n=8, mask_scale=3, smooth=True)
    df, report = _report("ham10000", tmp_path / "src", tmp_path / "out", replace(OPTS, test_fraction=0.5))
    assert (report.masks_resized, report.masks_binarised, report.excluded) == (8, 8, [])
    assert sorted(df["image_id"]) == ids
    for row in df.to_dict("records"):
        pair = manifest.load_pair(tmp_path / "out", row, require_mask=True)
        assert pair.mask.shape == (32, 32) and pair.mask[:4].sum() == 0  # pad: no lesion in the bars
