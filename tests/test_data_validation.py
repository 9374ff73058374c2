"""The GX manifest suites catch each defect, name the expectation and the row, and exit non-zero."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.data.toy import generate_toy
from components.data.validation import ValidationFailed, check_manifest, main, validate_frame, validate_manifest


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    generate_toy(root, n_images=20, size=24, seed=2, progress=False)
    return root


@pytest.fixture
def ds(pristine, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    return root


def _edit(root, **changes):
    """Set manifest cells: changes maps column -> {row: value}."""
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    for col, cells in changes.items():
        for i, v in cells.items():
            df.loc[i, col] = v
    df.to_csv(root / "manifest.csv", index=False)
    return df


def _failed(root, kind="real", **kw):
    summary = validate_manifest(root, kind, **kw)
    assert not summary.success
    return {e.name: e for e in summary.failures}


def _ids(outcome):
    return [r["image_id"] for r in outcome.failing_rows]


def test_clean_toy_set_passes(ds, tmp_path):
    summary = validate_manifest(ds, "real", summary_path=tmp_path / "metrics" / "validation_real.json")
    assert summary.success and summary.n_rows == 20 and len(summary.expectations) >= 20
    written = json.loads((tmp_path / "metrics" / "validation_real.json").read_text())
    assert written["success"] is True and written["n_failed"] == 0


def test_null_required_value(ds):
    _edit(ds, description={4: ""}, origin={6: ""})
    failed = _failed(ds)
    assert _ids(failed["expect_column_values_to_not_be_null(description)"]) == ["toy_00004"]
    assert _ids(failed["expect_column_values_to_not_be_null(origin)"]) == ["toy_00006"]


def test_missing_column(ds):
    df = pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False).drop(columns=["origin"])
    df.to_csv(ds / "manifest.csv", index=False)
    failed = _failed(ds)
    assert failed["expect_column_values_to_not_be_null(origin)"].unexpected_count == 20


def test_category_and_split_outside_their_sets(ds):
    _edit(ds, category={2: "scc"}, split={5: "validation"})
    failed = _failed(ds)
    cat = failed["expect_column_values_to_be_in_set(category)"]
    assert _ids(cat) == ["toy_00002"] and cat.failing_rows[0]["value"] == "scc"
    assert _ids(failed["expect_column_values_to_be_in_set(split)"]) == ["toy_00005"]
    assert validate_manifest(ds, "real", categories=["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc", "scc"],
                             ).failing_expectations == ["expect_column_values_to_be_in_set(split)",
                                                        "expect_column_values_to_be_in_set(description_prefix_ok)"]


def test_duplicate_ids(ds):
    _edit(ds, image_id={3: "toy_00004"})
    failed = _failed(ds)
    assert sorted(_ids(failed["expect_column_values_to_be_unique(image_id)"])) == ["toy_00004", "toy_00004"]


def test_missing_file(ds):
    (ds / "images" / "toy_00007.png").unlink()
    failed = _failed(ds)
    rows = failed["expect_column_values_to_be_in_set(image_exists)"].failing_rows
    assert rows == [{"line": 9, "image_id": "toy_00007", "file": "images/toy_00007.png"}]


def test_corrupt_image(ds):
    data = (ds / "images" / "toy_00008.png").read_bytes()
    (ds / "images" / "toy_00008.png").write_bytes(data[:40])
    failed = _failed(ds)
    assert _ids(failed["expect_column_values_to_be_in_set(image_decodes)"]) == ["toy_00008"]
    assert "expect_column_values_to_be_in_set(image_exists)" not in failed


def test_recorded_size_mismatch(ds):
    _edit(ds, width={9: "32"})
    Image.new("RGB", (30, 24)).save(ds / "images" / "toy_00010.png")
    failed = _failed(ds)
    assert _ids(failed["expect_column_values_to_be_in_set(size_matches)"]) == ["toy_00009", "toy_00010"]
    # toy_00010's mask (24x24) no longer matches its image (30x24)
    assert _ids(failed["expect_column_values_to_be_in_set(mask_size_matches)"]) == ["toy_00010"]


def test_non_binary_mask(ds):
    m = np.asarray(Image.open(ds / "masks" / "toy_00011.png")).copy()
    m[0, :5] = 77
    Image.fromarray(m, "L").save(ds / "masks" / "toy_00011.png")
    failed = _failed(ds)
    rows = failed["expect_column_values_to_be_in_set(mask_binary)"].failing_rows
    assert [(r["image_id"], r["file"]) for r in rows] == [("toy_00011", "masks/toy_00011.png")]


def test_mask_size_differs_from_image(ds):
    Image.new("L", (12, 12)).save(ds / "masks" / "toy_00012.png")
    failed = _failed(ds)
    assert _ids(failed["expect_column_values_to_be_in_set(mask_size_matches)"]) == ["toy_00012"]


def test_missing_mask(ds):
    _edit(ds, mask_path={13: ""})
    failed = _failed(ds)
    assert _ids(failed["expect_column_values_to_be_in_set(has_mask)"]) == ["toy_00013"]
    assert validate_manifest(ds, "real", require_masks=False).success


def test_description_prefix(ds):
    df = _edit(ds, description={14: "a photo of a mole"})
    wrong_class = df.loc[15, "description"].replace("for skin", "xx for skin")
    _edit(ds, description={15: wrong_class})
    failed = _failed(ds)
    assert _ids(failed["expect_column_values_to_be_in_set(description_prefix_ok)"]) == ["toy_00014", "toy_00015"]


def test_path_escaping_root(ds):
    shutil.copy(ds / "images" / "toy_00016.png", ds.parent / "outside.png")
    _edit(ds, image_path={16: "../outside.png"})
    failed = _failed(ds)
    assert _ids(failed["expect_column_values_to_be_in_set(paths_inside_root)"]) == ["toy_00016"]


def test_synthetic_variant_needs_provenance_and_source(ds):
    raw = pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False)
    raw["source"] = "synthetic"
    raw["prompt"] = raw["description"]
    raw["seed"] = [str(i) for i in range(20)]
    raw["generator_version"] = "tiny-lora-v1"
    raw["num_inference_steps"] = "45"
    raw["guidance_scale"] = "1.22"
    assert validate_frame(ds, raw, "synthetic").success
    raw.loc[1, "source"] = "real"
    raw.loc[2, "generator_version"] = ""
    raw.loc[3, "num_inference_steps"] = "0"
    bad = {e.name: e for e in validate_frame(ds, raw, "synthetic").failures}
    assert _ids(bad["expect_column_values_to_be_in_set(source)"]) == ["toy_00001"]
    assert _ids(bad["expect_column_values_to_not_be_null(generator_version)"]) == ["toy_00002"]
    assert _ids(bad["expect_column_values_to_be_between(num_inference_steps)"]) == ["toy_00003"]
    missing = {e.name for e in validate_frame(ds, raw.drop(columns=["prompt"]), "synthetic").failures}
    assert "expect_column_values_to_not_be_null(prompt)" in missing
    # the real suite rejects synthetic rows
    assert "expect_column_values_to_be_in_set(source)" in {e.name for e in validate_frame(ds, raw, "real").failures}


def test_failure_raises_and_cli_exits_nonzero(ds, capsys, tmp_path):
    _edit(ds, category={2: "scc"})
    with pytest.raises(ValidationFailed) as info:
        check_manifest(ds, "real", summary_path=tmp_path / "v.json")
    assert "expect_column_values_to_be_in_set(category)" in str(info.value)
    assert "image_id='toy_00002'" in str(info.value)
    assert json.loads((tmp_path / "v.json").read_text())["failing_expectations"] == [
        "expect_column_values_to_be_in_set(category)", "expect_column_values_to_be_in_set(description_prefix_ok)"]
    assert main([str(ds)]) == 1
    out = capsys.readouterr().out
    assert "FAILED expect_column_values_to_be_in_set(category)" in out and "toy_00002" in out
    assert main([str(ds / "nowhere")]) == 2


def test_logged_to_active_mlflow_run(ds):
    import mlflow

    mlflow.set_experiment("validation-test")
    from components.tracking.validation_runs import log_validation

    with mlflow.start_run() as run:
        validate_manifest(ds, "real", on_summary=log_validation)
    data = mlflow.get_run(run.info.run_id).data
    assert data.metrics["validation_real_success"] == 1.0 and data.tags["validation.real"] == "passed"
