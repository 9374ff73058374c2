"""Real folder layouts and bad inputs: extra folders and CSVs, partial downloads, symlinks, broken CSVs, settings.

Every bad input ends in one line naming the file (or row) and the fix; through the CLI that is `error: ...` and
exit code 2, never a traceback.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.config import load_section
from components.data.config import ImportOptions, PrepareConfig
from components.data.importers import import_dataset
from components.errors import ConfigError
from pipelines import prepare
from tests.helpers import REPO_ROOT
from tests.real_export_fixtures import import_fails, ham_export, isic_archive_export, save_png

OPTS = ImportOptions(size=32, test_fraction=0.5, seed=0, progress=False, workers=1)
MASKS = "HAM10000_segmentations_lesion_tschandl"


def _fails(tmp_path: Path, source: str, src: Path, pattern: str, opts: ImportOptions = OPTS) -> str:
    return import_fails(tmp_path, source, src, pattern, opts)


def _import(source: str, src: Path, out: Path, opts: ImportOptions = OPTS):
    reports = []
    df = import_dataset(source, src, out, opts, on_report=reports.append)
    return df, reports[0]


# --------------------------------------------------------------------------------------------- layouts
def test_extra_folders_and_a_second_copy_of_the_masks(tmp_path):
    src = tmp_path / "src"
    ids = ham_export(src, n=8)
    shutil.copytree(src / MASKS, src / MASKS / MASKS)                   # the Kaggle zip's nested second copy
    shutil.copytree(src / "HAM10000_images_part_1", src / "HAM10000_bboxes")  # another layer, same ids
    (src / "HAM10000_bboxes" / "boxes.txt").write_text("x y w h\n")
    df, report = _import("ham10000", src, tmp_path / "out")
    assert sorted(df["image_id"]) == ids and (df["mask_path"] != "").all()
    assert report.duplicate_copies == 8 and report.excluded == []
    other = src / "masks_v2" / f"{ids[0]}_segmentation.png"             # a copy with other content
    save_png(other, np.zeros((144, 192), np.uint8), "L")
    _fails(tmp_path, "ham10000", src, rf"masks_v2/{ids[0]}_segmentation\.png: duplicate mask id '{ids[0]}' \(also "
                                      rf".*{ids[0]}_segmentation\.png, with other content\); .*leave a folder out "
                                      rf"with prepare\.exclude=\['masks_v2/\*'\]")
    df, _ = _import("ham10000", src, tmp_path / "out", replace(OPTS, exclude=("masks_v2/*",)))
    assert len(df) == 8


def test_second_metadata_csvs_are_told_apart(tmp_path):
    src = tmp_path / "src"
    ham_export(src, n=8)
    (src / "copy").mkdir()
    shutil.copy(src / "HAM10000_metadata.csv", src / "copy" / "HAM10000_metadata.csv")
    pd.DataFrame(np.zeros((3, 5), int), columns=["pixel0000", "pixel0001", "pixel0002", "pixel0003",
                                                 "label"]).to_csv(src / "hmnist_8_8_L.csv", index=False)
    df, report = _import("ham10000", src, tmp_path / "out")
    assert len(df) == 8 and report.excluded == []
    meta = pd.read_csv(src / "copy" / "HAM10000_metadata.csv")
    meta.loc[0, "dx"] = "mel"
    meta.to_csv(src / "copy" / "HAM10000_metadata.csv", index=False)
    _fails(tmp_path, "ham10000", src, r"HAM10000_metadata\.csv row 2: duplicate image_id 'ISIC_0024306' with "
                                      r"another label \(also .*HAM10000_metadata\.csv row 2\); keep one row")


def test_isic_metadata_csv_beside_labels(tmp_path):
    src = tmp_path / "src"
    ids = isic_archive_export(src, n=8, smeared=0, null=0)
    pd.DataFrame({"isic_id": ids["good"], "age_approx": 40, "sex": "female"}).to_csv(src / "metadata.csv", index=False)
    pd.DataFrame({"isic_id": ids["good"], "diagnosis": ["nevus", "nevus", "melanoma", "melanoma"] * 2}).to_csv(
        src / "labels.csv", index=False)                                 # agrees with the JSON
    df, _ = _import("isic_archive", src, tmp_path / "out", replace(OPTS, require_masks=False))
    assert len(df) == 8
    pd.DataFrame({"isic_id": ids["good"], "diagnosis": "melanoma"}).to_csv(src / "labels.csv", index=False)
    _fails(tmp_path, "isic_archive", src, r"ISIC_0000000\.json \(meta\.clinical\.diagnosis\): 'ISIC_0000000' is "
                                          r"labelled 'nv' here and 'mel' in .*labels\.csv row 2; keep one source of "
                                          r"labels", replace(OPTS, require_masks=False))


def test_metadata_covering_more_images_than_present(tmp_path):
    src = tmp_path / "src"
    ham_export(src, n=8, extra_rows=5)                                   # the full CSV beside a subset
    df, report = _import("ham10000", src, tmp_path / "out")
    assert len(df) == 8 and len(report.missing_images) == 5
    assert report.missing_images[0] == "HAM10000_metadata.csv row 10 (ISIC_0024314)"
    _fails(tmp_path, "ham10000", src, r"src/HAM10000_metadata\.csv row 10 \(ISIC_0024314\): its image is not in the "
                                      r"folder \(5 metadata row\(s\) without an image\); add the images or set "
                                      r"prepare\.on_missing_image=skip", replace(OPTS, on_missing_image="error"))


def test_include_globs(tmp_path):
    src = tmp_path / "src"
    ids = ham_export(src, n=8)
    opts = replace(OPTS, include=("HAM10000_images_part_1/*", f"{MASKS}/*", "*.csv"))
    df, report = _import("ham10000", src, tmp_path / "out", opts)
    assert sorted(df["image_id"]) == ids[1::2] and len(report.missing_images) == 4
    assert len(report.orphan_masks) == 4


def test_images_without_a_metadata_row_are_unlabelled(tmp_path):
    src = tmp_path / "src"
    ham_export(src, n=8)
    meta = pd.read_csv(src / "HAM10000_metadata.csv")
    meta.iloc[1:].to_csv(src / "HAM10000_metadata.csv", index=False)
    df, report = _import("ham10000", src, tmp_path / "out")
    assert len(df) == 7
    assert [(e.path, e.reason, e.detail) for e in report.excluded] == [
        ("HAM10000_images_part_2/ISIC_0024306.jpg", "unlabelled", "no row in HAM10000_metadata.csv")]


# --------------------------------------------------------------------------------------------- symlinks
def test_symlinks_are_resolved_and_kept_inside_the_root(tmp_path):
    src = tmp_path / "src"
    ids = ham_export(src, n=8)
    outside = tmp_path / "elsewhere"
    (src / "HAM10000_images_part_1").rename(outside)
    os.symlink(outside, src / "HAM10000_images_part_1")                  # a folder symlinked in from outside
    _fails(tmp_path, "ham10000", src, r"src/HAM10000_images_part_1: symlink to .*elsewhere, outside the input folder "
                                      r".*src; copy the file in, or point prepare\.path at a folder that holds it")
    (src / "HAM10000_images_part_1").unlink()
    (src / "store").mkdir()
    outside.rename(src / "store" / "part_1")
    os.symlink(src / "store" / "part_1", src / "HAM10000_images_part_1")  # inside the root: followed once
    df, report = _import("ham10000", src, tmp_path / "out")
    assert sorted(df["image_id"]) == ids and (df["mask_path"] != "").all() and report.orphan_masks == []
    image = src / "HAM10000_images_part_2" / f"{ids[0]}.jpg"
    image.rename(tmp_path / "one.jpg")
    os.symlink(tmp_path / "one.jpg", image)                              # one file symlinked from outside
    _fails(tmp_path, "ham10000", src, rf"{ids[0]}\.jpg: symlink to .*one\.jpg, outside the input folder")


# --------------------------------------------------------------------------------------------- broken CSVs
def test_broken_csvs_name_the_file_and_the_fix(tmp_path):
    src = tmp_path / "src"
    ham_export(src, n=8)
    csv = src / "HAM10000_metadata.csv"
    good = csv.read_bytes()
    csv.write_bytes(good.replace(b"back", "d\u00e9collet\u00e9".encode("latin-1"), 1))
    _fails(tmp_path, "ham10000", src, r"HAM10000_metadata\.csv: not UTF-8 text \(byte 0xe9 at offset \d+\); re-save it "
                                      r"as UTF-8, e\.g\. iconv -f latin1 -t utf-8 HAM10000_metadata\.csv > fixed\.csv")
    csv.write_bytes(b"")
    _fails(tmp_path, "ham10000", src, r"HAM10000_metadata\.csv: empty CSV \(no header line\); re-download it")
    lines = good.decode().splitlines()
    csv.write_text("\n".join(lines[:2] + [lines[2].replace("HAM_", '"HAM_', 1)] + lines[3:]) + "\n")
    _fails(tmp_path, "ham10000", src, r"HAM10000_metadata\.csv: cannot parse the CSV \(Error tokenizing data\. C "
                                      r"error: EOF inside string starting at row 2\); fix its quoting")
    csv.write_bytes(b"\xef\xbb\xbf" + good)                                  # a BOM (Excel) is fine
    assert len(import_dataset("ham10000", src, tmp_path / "out", OPTS)) == 8


# --------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("override, message", [
    ("size=0", "prepare.size=0: the image side must be an integer >= 16, e.g. size=128"),
    ("size=-5", "prepare.size=-5: the image side must be an integer >= 16, e.g. size=128"),
    ("categories=[nv,mel,nv]", "prepare.categories: 'nv' is listed twice (['nv', 'mel', 'nv']); list each class once"),
    ("categories=[nv,mel,naevus]", "prepare.categories: unknown class(es) ['naevus'] for source 'ham10000', whose "
                                   "labels are ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc']; fix the spelling "
                                   "or remove them"),
    ("resize=fit", "prepare.resize='fit': expected one of ['pad', 'crop', 'squash']"),
    ("on_bad_image=drop", "prepare.on_bad_image='drop': expected one of ['exclude', 'error']"),
])
def test_invalid_settings(override, message):
    with pytest.raises(ConfigError) as info:
        load_section(PrepareConfig, "prepare", REPO_ROOT / "params.yaml", ["source=ham10000", override])
    assert str(info.value) == message


def test_library_options_are_checked_too():
    with pytest.raises(ConfigError, match=r"prepare\.size=0: the image side must be an integer >= 16"):
        ImportOptions(size=0)
    with pytest.raises(ConfigError, match=r"prepare\.categories: 'mel' is listed twice"):
        ImportOptions(categories=("mel", "mel"))


@pytest.mark.parametrize("case", ["size", "csv", "symlink"])
def test_cli_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src"
    ham_export(src, n=8)
    if case == "csv":
        (src / "HAM10000_metadata.csv").write_bytes(b"")
    if case == "symlink":
        os.symlink(tmp_path, src / "up")
    argv = ["--params", str(REPO_ROOT / "params.yaml"), "--set", "source=ham10000", "--set", f"path={src}"]
    argv += ["--set", "size=0"] if case == "size" else []
    with pytest.raises(SystemExit) as exc:
        prepare.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    expected = {"size": "prepare.size=0: the image side", "csv": "HAM10000_metadata.csv: empty CSV",
                "symlink": "src/up: symlink to"}[case]
    assert expected in err[-1]
    assert not (tmp_path / "data" / "real").exists()
