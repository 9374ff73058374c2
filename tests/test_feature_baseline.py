"""The classical baselines: Otsu's threshold, the image-only lesion mask, shape features, the feature classifier."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.downstream import feature_baseline as fb
from components.downstream.cv import ROOT_COLUMN, SyntheticInEvaluationError
from components.downstream.metrics import dice
from components.errors import ConfigError, DataError

SKIN = (222, 184, 160)


def _scene(size: int = 128, radius: float = 0.2, colour=(90, 60, 50), centre=(0.5, 0.5), elong: float = 1.0,
           hair: bool = True, vignette: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Light skin with one lesion ellipse, a dark hair line and black dermoscope corners; (image, true mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[:size, :size] + 0.5) / size
    mask = (((yy - centre[0]) * elong) ** 2 + ((xx - centre[1]) / elong) ** 2) < radius ** 2
    img = np.empty((size, size, 3), np.float64)
    img[:] = SKIN
    img[mask] = colour
    img += rng.normal(0, 3, img.shape)
    if hair:
        rows = np.arange(size)
        img[rows, np.clip((0.15 * size + 0.7 * rows).astype(int), 0, size - 1)] = (40, 30, 25)
    if vignette:
        img[np.hypot(yy - 0.5, xx - 0.5) > 0.5] = (4, 3, 3)
    return np.clip(img, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def _write_dataset(root, samples: list[tuple[str, np.ndarray, np.ndarray]],
                   source: str = "real") -> pd.DataFrame:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i, (category, image, mask) in enumerate(samples):
        Image.fromarray(image).save(root / "images" / f"im{i:03d}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"im{i:03d}.png")
        rows.append({"image_id": f"im{i:03d}", "category": category, "split": "train",
                     "image_path": f"images/im{i:03d}.png", "mask_path": f"masks/im{i:03d}.png",
                     "description": "", "source": source, "origin": "test",
                     "width": image.shape[1], "height": image.shape[0]})
    return pd.DataFrame(rows)


# --- Otsu -----------------------------------------------------------------------------------------------

def test_otsu_puts_the_threshold_in_the_middle_of_the_gap():
    assert fb.otsu_threshold(np.array([0, 0, 0, 1, 1, 1], float)) == pytest.approx(0.5)


def test_otsu_separates_the_far_cluster():
    # cut 10 | 20, 100: 4·6·(10 − 46.67)² = 32,267; cut 10, 20 | 100: 8·2·(15 − 100)² = 115,600 → the gap 20..100;
    # the tied cuts span the histogram edges just above 20 (20.20) to just below 100 (99.65): mean 59.92
    t = fb.otsu_threshold(np.array([10] * 4 + [20] * 4 + [100] * 2, float))
    assert t == pytest.approx((10 + 29 * 90 / 256 + 10 + 255 * 90 / 256) / 2)


def test_otsu_of_a_constant_is_that_constant_and_empty_input_fails():
    assert fb.otsu_threshold(np.full(7, 3.0)) == 3.0
    with pytest.raises(ValueError, match="at least one value"):
        fb.otsu_threshold(np.array([]))


# --- lesion mask from the image -------------------------------------------------------------------------

def test_dark_disc_on_light_skin_is_found_despite_hair_and_vignette():
    image, truth = _scene()
    pred = fb.segment_lesion(image)
    assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
    assert dice(pred, truth) > 0.97
    assert pred[:10, :10].sum() == 0       # the black corner is not lesion


def test_off_centre_lesion_and_no_vignette():
    image, truth = _scene(centre=(0.4, 0.62), radius=0.15, vignette=False, seed=3)
    assert dice(fb.segment_lesion(image), truth) > 0.95


def test_segment_baseline_scores_rows_at_the_judges_size(tmp_path):
    samples = [("nv", *_scene(seed=s, radius=0.15 + 0.03 * s)) for s in range(3)]
    rows = _write_dataset(tmp_path / "real", samples)
    out = fb.segment_baseline(rows, root=tmp_path / "real", image_size=64)
    assert out["n"] == 3 and [r["image_id"] for r in out["per_image"]] == ["im000", "im001", "im002"]
    assert out["dice"] > 0.95 and out["iou"] > 0.9
    assert out["hd95"] <= 1.5 and out["hd95"] == pytest.approx(np.mean([r["hd95"] for r in out["per_image"]]))
    # rows that carry their folder need no root
    rows[ROOT_COLUMN] = str(tmp_path / "real")
    assert fb.segment_baseline(rows, image_size=64)["dice"] == pytest.approx(out["dice"])


def test_segment_baseline_refuses_synthetic_rows_and_rows_without_a_folder(tmp_path):
    rows = _write_dataset(tmp_path / "syn", [("nv", *_scene())], source="synthetic")
    with pytest.raises(SyntheticInEvaluationError, match="not real images"):
        fb.segment_baseline(rows, root=tmp_path / "syn")
    with pytest.raises(DataError, match="pass root="):
        fb.segment_baseline(rows.assign(source="real"))


# --- shape features -------------------------------------------------------------------------------------

def test_shape_features_of_a_square_by_hand():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    area, compact, elong, solidity, asym_minor, asym_major, irregular, _ = fb.shape_features(mask)
    assert area == pytest.approx(100 / 400)
    assert compact == pytest.approx(36 ** 2 / (4 * math.pi * 100))   # 36 edge pixels
    assert elong == pytest.approx(1.0) and solidity == pytest.approx(1.0)
    assert asym_minor == 0.0 and asym_major == 0.0 and irregular > 0


def test_shape_features_elongation_and_asymmetry():
    bar = np.zeros((24, 24), np.uint8)
    bar[10:14, 4:20] = 1
    # variances of 16 and 4 consecutive integers: (16² − 1)/12 and (4² − 1)/12 → sqrt(255/15) = sqrt(17)
    assert fb.shape_features(bar)[2] == pytest.approx(math.sqrt(17))
    tri = np.zeros((24, 24), np.uint8)
    tri[4:20, 4:20] = np.tril(np.ones((16, 16), np.uint8))
    asym = fb.shape_features(tri)[4:6]
    assert min(asym) == 0.0 and max(asym) > 0.2   # symmetric about its diagonal only
    assert fb.shape_features(np.zeros((8, 8), np.uint8)) == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_image_features_have_a_fixed_length_and_differ_by_colour():
    a, b = fb.image_features(_scene()[0]), fb.image_features(_scene(colour=(60, 70, 150))[0])
    small = fb.image_features(_scene(size=48, radius=0.1)[0])
    assert a.shape == b.shape == small.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert not np.allclose(a, b)


# --- feature classifier ---------------------------------------------------------------------------------

def _two_class_rows(tmp_path, n: int, differ: str) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    samples = []
    for i in range(n):
        first = i % 2 == 0
        kw = dict(radius=rng.uniform(0.15, 0.25), centre=tuple(rng.uniform(0.45, 0.55, 2)), seed=i,
                  hair=bool(rng.random() < 0.5))
        if differ == "colour":
            kw["colour"] = (120, 50, 40) if first else (60, 70, 130)
        else:   # same colour, round vs elongated
            kw["elong"] = 1.0 if first else 1.8
            kw["radius"] = rng.uniform(0.14, 0.18)
        samples.append(("a" if first else "b", *_scene(size=64, **kw)))
    return _write_dataset(tmp_path / differ, samples).assign(**{ROOT_COLUMN: str(tmp_path / differ)})


# gradient boosting's leaves hold at least 20 images (scikit-learn's default): it needs the larger set
@pytest.mark.parametrize("differ, model, n_train",
                         [("colour", "gradient_boosting", 48), ("shape", "random_forest", 20)])
def test_classifier_separates_classes_that_differ_in_one_property(tmp_path, differ, model, n_train):
    rows = _two_class_rows(tmp_path, n_train + 12, differ)
    train, evaluation = rows.iloc[:n_train], rows.iloc[n_train:]
    cfg = fb.FeatureBaselineConfig(model=model, n_estimators=50, seed=0)
    out = fb.classify_baseline(train, evaluation, ["a", "b"], cfg=cfg)
    assert out["f1"] == 1.0 and out["balanced_accuracy"] == 1.0
    assert out["per_class_recall"] == {"a": 1.0, "b": 1.0}
    assert out["n_train"] == n_train and out["n_eval"] == 12 and out["confusion_matrix"] == [[6, 0], [0, 6]]
    assert [p["predicted"] for p in out["predictions"]] == evaluation["category"].tolist()


def test_classifier_is_deterministic_for_a_seed(tmp_path):
    rows = _two_class_rows(tmp_path, 16, "colour")
    cfg = fb.FeatureBaselineConfig(model="random_forest", n_estimators=20, seed=5)
    first = fb.classify_baseline(rows.iloc[:10], rows.iloc[10:], cfg=cfg)
    assert fb.classify_baseline(rows.iloc[:10], rows.iloc[10:], cfg=cfg) == first


def test_classifier_rejects_bad_input(tmp_path):
    rows = _two_class_rows(tmp_path, 6, "colour")
    with pytest.raises(ConfigError, match="model='svm'"):
        fb.classify_baseline(rows, rows, cfg=fb.FeatureBaselineConfig(model="svm"))
    with pytest.raises(DataError, match=r"categories \['b'\] are not in the class list"):
        fb.classify_baseline(rows, rows, ["a"])
    with pytest.raises(DataError, match="at least 2"):
        fb.classify_baseline(rows[rows["category"] == "a"], rows, ["a", "b"])
    with pytest.raises(SyntheticInEvaluationError):
        fb.classify_baseline(rows, rows.assign(source="synthetic"))
