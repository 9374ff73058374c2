"""Memorisation audit on hand-checkable 2x2 images: exact (rotated) copies have ratio 0 and are flagged, a far
image is not; the real-real scale, percentiles and per-class counts by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from components.errors import ConfigError, DataError
from components.quality.memorisation import (
    MemorisationSettings,
    audit,
    count_near_copies,
    nearest_neighbours,
    pixel_features,
    real_scale,
    recorded_scale,
    reference_digest,
)


def _img(values) -> np.ndarray:
    """A 2x2 RGB float image whose three channels all hold `values` (2x2)."""
    return np.repeat(np.asarray(values, np.float32)[:, :, None], 3, axis=2)


# r0 black, r1 grey 0.5, r2 left column white, r3 grey 0.9. Real-real nearest distances (RMS):
# r0 -> r1 0.5; r1 -> r3 0.4; r2 -> r1 0.5; r3 -> r1 0.4; median 0.45.
REFERENCE = np.stack([_img([[0, 0], [0, 0]]), _img([[0.5, 0.5], [0.5, 0.5]]), _img([[1, 0], [1, 0]]),
                      _img([[0.9, 0.9], [0.9, 0.9]])])
IDS = ["r0", "r1", "r2", "r3"]


def test_real_scale_by_hand():
    scale = real_scale(REFERENCE)
    assert scale.distances == pytest.approx([0.4, 0.4, 0.5, 0.5])
    assert scale.median == pytest.approx(0.45)
    assert list(scale.percentile_of(np.array([0.0, 0.45, 0.5, 0.6]))) == [0.0, 50.0, 50.0, 100.0]


def test_nearest_neighbour_distances_by_hand_and_flip_invariance():
    rotated_r2 = _img([[1, 1], [0, 0]])             # r2 turned by 90 degrees
    dim = _img([[0.2, 0.2], [0.2, 0.2]])            # 0.2 from r0, 0.3 from r1, sqrt(0.34) from r2
    index, dist = nearest_neighbours(np.stack([rotated_r2, dim]), REFERENCE, chunk=1)
    assert list(index) == [2, 0]
    assert dist == pytest.approx([0.0, 0.2])
    # pixel by pixel the rotated copy differs from r2 in half of its pixels: RMS sqrt(1/2), not 0
    assert math.sqrt(((rotated_r2 - REFERENCE[2]) ** 2).mean()) == pytest.approx(math.sqrt(0.5))


def test_exact_copy_is_flagged_with_ratio_zero_and_a_far_image_is_not():
    copy = np.rot90(REFERENCE[2], 1, axes=(0, 1))
    diagonal = _img([[1, 0], [0, 1]])   # nearest: r1 at 0.5 (r0, r2 at 0.707, r3 at 0.640) -> ratio 0.5 / 0.45
    table, scale = audit(np.stack([copy, diagonal]), REFERENCE, IDS, MemorisationSettings(size=2))
    assert list(table.columns) == ["nn_real_id", "nn_distance", "nn_ratio", "nn_percentile", "near_copy"]
    assert list(table["nn_real_id"]) == ["r2", "r1"]
    assert table["nn_ratio"].tolist() == pytest.approx([0.0, 0.5 / 0.45])
    assert table["nn_percentile"].tolist() == [0.0, 50.0]
    assert table["near_copy"].tolist() == [True, False]
    assert scale.median == pytest.approx(0.45)


def test_count_near_copies_overall_and_per_class():
    table = pd.DataFrame({"nn_ratio": [0.0, 0.3, 1.2, 0.9], "near_copy": [True, True, False, False]})
    counts = count_near_copies(table, ["mel", "nv", "nv", "nv"], ["mel", "nv", "df"])
    assert (counts["n"], counts["near_copies"], counts["near_copy_share"]) == (4, 2, 0.5)
    assert counts["nn_ratio_min"] == 0.0 and counts["nn_ratio_median"] == pytest.approx(0.6)
    assert counts["per_class"] == {
        "mel": {"n": 1, "near_copies": 1, "near_copy_share": 1.0, "nn_ratio_min": 0.0},
        "nv": {"n": 3, "near_copies": 1, "near_copy_share": pytest.approx(1 / 3), "nn_ratio_min": 0.3}}
    # manifest columns come back from CSV as strings
    as_read = table.assign(near_copy=["True", "True", "False", "False"])
    assert count_near_copies(as_read, ["mel"] * 4, ["mel"])["near_copies"] == 2


def test_pixel_features_scale_and_resize():
    image = np.full((8, 8, 3), 51, np.uint8)
    feats = pixel_features([image, image[:4, :4]], 4)
    assert feats.shape == (2, 4, 4, 3) and feats.dtype == np.float32
    assert np.allclose(feats, 0.2)
    lazy = pixel_features((im for im in [image]), 2, n=1)
    assert lazy.shape == (1, 2, 2, 3) and np.allclose(lazy, 0.2)


def test_settings_and_degenerate_reference_are_refused():
    with pytest.raises(ConfigError, match="near_copy_ratio"):
        MemorisationSettings(near_copy_ratio=1.5)
    with pytest.raises(ConfigError, match="size"):
        MemorisationSettings(size=1)
    with pytest.raises(DataError, match="duplicate"):
        real_scale(np.stack([REFERENCE[0]] * 3))


def test_a_recorded_scale_is_reused_only_for_the_same_reference():
    scale = real_scale(REFERENCE)
    record = {"reference_digest": reference_digest(IDS), "real_nn_distances": list(scale.distances[::-1])}
    again = recorded_scale(record, IDS)
    assert again is not None and np.array_equal(again.distances, scale.distances)
    assert recorded_scale(record, IDS[:3]) is None and recorded_scale(record, IDS[::-1]) is None
    assert recorded_scale({"reference_digest": reference_digest(IDS)}, IDS) is None
