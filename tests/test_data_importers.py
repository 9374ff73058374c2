"""Importers on fixture folders written here, and every bad-input case: clear DataError, nothing partial."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.data import manifest
from components.data.importers import IMPORTERS, ImportOptions, import_dataset
from components.errors import DataError
from tests.real_export_fixtures import import_fails

OPTS = ImportOptions(size=24, test_fraction=0.25, seed=0, progress=False, workers=1)
CODES = ["nv", "nv", "mel", "mel", "bkl", "bkl", "nv", "mel"]


def _image(path: Path, w: int = 40, h: int = 30, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, w: int = 40, h: int = 30, values=(0, 255)) -> None:
    m = np.full((h, w), values[0], np.uint8)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = values[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m, "L").save(path)


def isic_gpt_folder(root: Path, one_json: bool = False) -> Path:
    mapping = {}
    for i, code in enumerate(CODES):
        _image(root / "images" / f"img{i}.png", seed=i)
        _mask(root / "masks" / f"img{i}_mask.png")
        rec = {"category": {"nv": "nevus", "mel": "melanoma", "bkl": "seborrheic keratosis"}[code],
               "description": f"brown lesion number {i}"}
        if one_json:
            mapping[f"img{i}.png"] = rec
        else:
            (root / "descriptions").mkdir(parents=True, exist_ok=True)
            (root / "descriptions" / f"img{i}.json").write_text(json.dumps(rec))
    if one_json:
        (root / "descriptions.json").write_text(json.dumps(mapping))
    return root


def isic_archive_folder(root: Path, with_csv: bool = False) -> Path:
    rows = []
    for i, code in enumerate(CODES):
        image_id = f"ISIC_{i:07d}"
        _image(root / "ISIC-images" / f"{image_id}.jpg", seed=i)
        _mask(root / "masks" / f"{image_id}_segmentation.png")
        if with_csv:
            rows.append({"image": image_id, **{c: float(c.lower() == code) for c in ("MEL", "NV", "BKL")}})
        else:
            meta = {"meta": {"clinical": {"diagnosis": {"nv": "nevus", "mel": "melanoma",
                                                        "bkl": "pigmented benign keratosis"}[code],
                                          "anatom_site_general": "upper extremity", "sex": "female"}}}
            (root / "ISIC-images" / f"{image_id}.json").write_text(json.dumps(meta))
    if with_csv:
        pd.DataFrame(rows).to_csv(root / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    return root


def ham_folder(root: Path, masks: bool = True) -> Path:
    rows = []
    for i, code in enumerate(CODES * 2):
        image_id = f"ISIC_{i + 24306:07d}"
        part = "HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2"
        _image(root / part / f"{image_id}.jpg", w=60, h=45, seed=i)
        if masks:
            _mask(root / "HAM10000_segmentations_lesion_tschandl" / f"{image_id}_segmentation.png", w=60, h=45)
        rows.append({"lesion_id": f"HAM_{i // 2:07d}", "image_id": image_id, "dx": code, "dx_type": "histo",
                     "age": "45.0", "sex": "male", "localization": "back"})
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def _check_dataset(out: Path, n: int, origin: str) -> pd.DataFrame:
    df = manifest.read_manifest(out)
    assert len(df) == n and set(df["origin"]) == {origin} and set(df["source"]) == {"real"}
    present = set(df["category"])
    assert json.loads((out / "categories.json").read_text()) == [c for c in OPTS.categories if c in present]
    for row in df.to_dict("records"):
        pair = manifest.load_pair(out, row, require_mask=True)
        assert pair.image.shape == (24, 24, 3) and pair.mask.shape == (24, 24)
        assert set(np.unique(pair.mask).tolist()) == {0, 1}
    assert set(df["split"]) == {"train", "val", "test"}
    return df


def test_registry_names():
    assert set(IMPORTERS) == {"toy", "isic_gpt", "isic_archive", "ham10000"}


@pytest.mark.parametrize("one_json", [False, True])
def test_isic_gpt(tmp_path, one_json):
    src = isic_gpt_folder(tmp_path / "src", one_json=one_json)
    df = import_dataset("isic_gpt", src, tmp_path / "out", OPTS)
    out_df = _check_dataset(tmp_path / "out", 8, "isic_gpt")
    assert out_df.set_index("image_id")["category"].to_dict() == {f"img{i}": c for i, c in enumerate(CODES)}
    assert df.set_index("image_id").loc["img2", "description"] == (
        "a dermoscopic lesion photo of melanoma for skin cancer diagnosis, brown lesion number 2")
    # nearest-neighbour masks: the 0/255 square stays a square of ones in the middle
    mask = manifest.load_mask(tmp_path / "out" / "masks" / "img0.png")
    assert mask[12, 12] == 1 and mask[0, 0] == 0


def test_isic_gpt_class_folders_and_given_split(tmp_path):
    src = tmp_path / "src"
    for split, n in (("train", 3), ("test", 2)):
        for code in ("nevus", "melanoma"):
            for i in range(n):
                _image(src / split / "images" / code / f"{split}_{code}_{i}.png", seed=i)
                _mask(src / split / "masks" / f"{split}_{code}_{i}.png")
    df = import_dataset("isic_gpt", src, tmp_path / "out", OPTS)
    # the folders' split is kept; the validation split is carved out of the train folder only
    given = df["image_id"].str.split("_").str[0]
    assert (df["split"].replace("val", "train") == given).all()
    assert (given[df["split"] == "val"] == "train").all() and (df["split"] == "val").any()
    assert df["category"].value_counts().to_dict() == {"mel": 5, "nv": 5}
    assert df["description"].str.startswith("a dermoscopic lesion photo of ").all()


@pytest.mark.parametrize("with_csv", [False, True])
def test_isic_archive(tmp_path, with_csv):
    src = isic_archive_folder(tmp_path / "src", with_csv=with_csv)
    import_dataset("isic_archive", src, tmp_path / "out", OPTS)
    df = _check_dataset(tmp_path / "out", 8, "isic_archive")
    assert df.set_index("image_id")["category"].tolist() == CODES
    if not with_csv:
        assert df["description"].iloc[0].endswith("on the upper extremity, female patient")


def test_ham10000_groups_and_metadata(tmp_path):
    src = ham_folder(tmp_path / "src")
    import_dataset("ham10000", src, tmp_path / "out", ImportOptions(**{**OPTS.__dict__, "test_fraction": 0.5}))
    df = _check_dataset(tmp_path / "out", 16, "ham10000")
    assert pd.crosstab(df["lesion_id"], df["split"]).gt(0).sum(axis=1).max() == 1
    assert df["description"].iloc[0] == ("a dermoscopic lesion photo of melanocytic nevus for skin cancer diagnosis,"
                                         " on the back, 45-year-old male patient, confirmed by histopathology")


def test_ham10000_without_masks_only_when_allowed(tmp_path):
    src = ham_folder(tmp_path / "src", masks=False)
    with pytest.raises(DataError, match=r"ISIC_0024306\.jpg: no mask found.*require_masks=false"):
        import_dataset("ham10000", src, tmp_path / "out", OPTS)
    assert not (tmp_path / "out").exists()
    df = import_dataset("ham10000", src, tmp_path / "out",
                        ImportOptions(**{**OPTS.__dict__, "require_masks": False}))
    assert (df["mask_path"] == "").all() and len(df) == 16


def test_toy_through_registry_and_rerun_replaces(tmp_path):
    opts = ImportOptions(size=24, toy_images=30, progress=False)
    import_dataset("toy", None, tmp_path / "out", opts)
    (tmp_path / "out" / "stale.txt").write_text("old")
    import_dataset("toy", None, tmp_path / "out", opts)
    assert not (tmp_path / "out" / "stale.txt").exists()
    assert len(manifest.read_manifest(tmp_path / "out")) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left


# --------------------------------------------------------------------------------------------- bad inputs
def _fails(tmp_path, source, src, pattern, opts=OPTS):
    """The import raises a one-line DataError matching pattern; the previous out_dir survives; no temp dirs."""
    return import_fails(tmp_path, source, src, pattern, opts)


ERROR = replace(OPTS, on_bad_image="error")


def _excluded(out: Path) -> list[dict]:
    return pd.read_csv(out / "excluded.csv", dtype=str, keep_default_na=False).to_dict("records")


def test_corrupt_image_is_excluded_or_stops_the_import(tmp_path):
    src = isic_gpt_folder(tmp_path / "src")
    (src / "images" / "img3.png").write_bytes(b"this is not a png")
    df = import_dataset("isic_gpt", src, tmp_path / "ok", OPTS)
    assert len(df) == 7 and "img3" not in set(df["image_id"])
    [row] = _excluded(tmp_path / "ok")
    assert (row["path"], row["image_id"], row["reason"]) == ("images/img3.png", "img3", "undecodable")
    assert row["detail"].startswith("cannot decode image (cannot identify image file")
    msg = _fails(tmp_path, "isic_gpt", src, r"img3\.png: cannot decode image", ERROR)
    assert msg.endswith("replace it; replace or remove the file, or set prepare.on_bad_image=exclude to leave "
                        "such files out (listed in excluded.csv)")


def test_truncated_image(tmp_path):
    src = isic_gpt_folder(tmp_path / "src")
    data = (src / "images" / "img4.png").read_bytes()
    (src / "images" / "img4.png").write_bytes(data[: len(data) // 2])
    _fails(tmp_path, "isic_gpt", src, r"img4\.png: cannot decode image .*corrupt or truncated", ERROR)
    import_dataset("isic_gpt", src, tmp_path / "ok", OPTS)
    assert [(r["image_id"], r["reason"]) for r in _excluded(tmp_path / "ok")] == [("img4", "undecodable")]


def test_mask_of_another_aspect_ratio(tmp_path):
    src = isic_gpt_folder(tmp_path / "src")
    _mask(src / "masks" / "img1_mask.png", w=20, h=20)
    _fails(tmp_path, "isic_gpt", src, r"img1_mask\.png: mask size \(20, 20\) differs from its image's \(40, 30\) and "
                                      r"has another aspect ratio, so it cannot be resized onto it", ERROR)
    df = import_dataset("isic_gpt", src, tmp_path / "ok", OPTS)  # masks required: the image goes with its mask
    assert "img1" not in set(df["image_id"])
    [row] = _excluded(tmp_path / "ok")
    assert (row["path"], row["reason"]) == ("masks/img1_mask.png", "bad_mask")
    assert row["detail"].endswith("its image is left out too (prepare.require_masks=true)")


def test_unknown_category(tmp_path):
    src = isic_archive_folder(tmp_path / "src", with_csv=False)
    meta = {"meta": {"clinical": {"diagnosis": "lentigo maligna of the moon"}}}
    (src / "ISIC-images" / "ISIC_0000002.json").write_text(json.dumps(meta))
    msg = _fails(tmp_path, "isic_archive", src, r"ISIC_0000002\.json .*unknown category 'lentigo maligna")
    assert "categories` in params.yaml" in msg


def test_unknown_or_ambiguous_class_in_onehot_csv(tmp_path):
    src = isic_archive_folder(tmp_path / "src", with_csv=True)
    gt = pd.read_csv(src / "ISIC2018_Task3_Training_GroundTruth.csv")
    gt["SCC"] = 0.0
    gt.loc[2, ["MEL", "SCC"]] = [0.0, 1.0]
    gt.to_csv(src / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    _fails(tmp_path, "isic_archive", src, r"GroundTruth\.csv row 4: unknown category 'SCC'")
    gt.loc[2, ["MEL", "SCC"]] = [1.0, 1.0]
    gt.to_csv(src / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    _fails(tmp_path, "isic_archive", src, r"row 4: image 'ISIC_0000002' has 2 classes set")


def test_unknown_category_in_ham_metadata(tmp_path):
    src = ham_folder(tmp_path / "src")
    meta = pd.read_csv(src / "HAM10000_metadata.csv")
    meta.loc[3, "dx"] = "scc"
    meta.to_csv(src / "HAM10000_metadata.csv", index=False)
    _fails(tmp_path, "ham10000", src, r"HAM10000_metadata\.csv row 5: unknown category 'scc'")


def test_duplicate_id(tmp_path):
    src = ham_folder(tmp_path / "src")
    _image(src / "HAM10000_images_part_2" / "ISIC_0024307.jpg")  # also in part_1
    _fails(tmp_path, "ham10000", src, r"duplicate image id 'ISIC_0024307'")


def test_duplicate_row_in_metadata(tmp_path):
    src = ham_folder(tmp_path / "src")
    meta = pd.read_csv(src / "HAM10000_metadata.csv")
    pd.concat([meta, meta.iloc[[2]]]).to_csv(src / "HAM10000_metadata.csv", index=False)
    assert len(import_dataset("ham10000", src, tmp_path / "ok", OPTS)) == 16  # the same row twice: one image
    meta.loc[16] = {**meta.iloc[2].to_dict(), "dx": "nv"}
    meta.to_csv(src / "HAM10000_metadata.csv", index=False)
    _fails(tmp_path, "ham10000", src, r"row 18: duplicate image_id 'ISIC_0024308' with another label \(also .*"
                                      r"HAM10000_metadata\.csv row 4\); keep one row")


def test_missing_mask_where_required(tmp_path):
    src = isic_gpt_folder(tmp_path / "src")
    (src / "masks" / "img6_mask.png").unlink()
    _fails(tmp_path, "isic_gpt", src, r"img6\.png: no mask found for image 'img6'")


def test_path_escaping_root(tmp_path):
    src = isic_gpt_folder(tmp_path / "src", one_json=True)
    mapping = json.loads((src / "descriptions.json").read_text())
    mapping["../outside/img1.png"] = mapping.pop("img1.png")
    (src / "descriptions.json").write_text(json.dumps(mapping))
    _fails(tmp_path, "isic_gpt", src, r"descriptions\.json: path '\.\./outside/img1\.png' escapes the dataset root")


def test_empty_folder(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "README.txt").write_text("nothing here")
    _fails(tmp_path, "isic_gpt", tmp_path / "src", r"src: empty folder, no image files")


def test_missing_input_and_unknown_source(tmp_path):
    _fails(tmp_path, "ham10000", None, r"needs an input folder: set prepare.path")
    _fails(tmp_path, "ham10000", tmp_path / "nope", r"nope: input folder not found")
    _fails(tmp_path, "kaggle", tmp_path, r"unknown source 'kaggle'")
