"""Table 1 made comparable: the same n in both rows, KID's jackknife standard error, the rejection filter's
before/after statistics, negative estimates reported as computed, and the rendered tables (quality stage and
report stage)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components.data.mask_stats import StatsTable
from components.downstream import report as R
from components.errors import DataError
from components.quality.distances import _mmd2_unbiased, _poly_kernel, frechet_distance_features, kid_standard_error
from components.quality.evaluate import ImageSet, equal_size_selections
from components.quality.filter_stats import filter_summary
from components.quality.report import sign_notes, table1_markdown


def _set(categories: list[str]) -> ImageSet:
    masks = [np.zeros((4, 4), np.uint8) for _ in categories]
    return ImageSet(name="s", images=np.zeros((len(categories), 4, 4, 3), np.uint8), masks=masks,
                    categories=np.asarray(categories), stats=StatsTable.of(masks))


def test_equal_size_selections_give_both_sets_one_n_overall_and_per_class():
    small, large = _set(["a", "a", "a", "b"]), _set(["a", "b", "b", "b", "b", "c"])
    sel_small, sel_large = equal_size_selections([small, large], ["a", "b", "c"], seed=3)
    assert list(sel_small.overall) == [0, 1, 2, 3]                   # the smaller set is used whole
    assert len(sel_large.overall) == 4 and len(set(sel_large.overall)) == 4 and sel_large.overall.max() < 6
    for c, n in {"a": 1, "b": 1, "c": 0}.items():                   # per class: the smaller class count
        assert len(sel_small.per_class[c]) == len(sel_large.per_class[c]) == n
        assert all(small.categories[i] == c for i in sel_small.per_class[c])
        assert all(large.categories[i] == c for i in sel_large.per_class[c])
    again = equal_size_selections([small, large], ["a", "b", "c"], seed=3)[1]
    assert np.array_equal(again.overall, sel_large.overall)          # seeded


def test_kid_standard_error_is_the_delete_one_jackknife_over_b():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(0.5, 1.0, size=(6, 3))

    def unbiased(x, y):  # all pairs, unequal sizes
        kxx, kyy, kxy = (_poly_kernel(p, q, 3, None, 1.0) for p, q in ((x, x), (y, y), (x, y)))
        n, m = len(x), len(y)
        return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.sum() / (n * m))

    value, se = kid_standard_error(a, b)
    assert value == pytest.approx(unbiased(b, a), rel=1e-12)
    kid_formula = _mmd2_unbiased(_poly_kernel(b[:5], b[:5], 3, None, 1.0), _poly_kernel(b[:5], a, 3, None, 1.0),
                                 _poly_kernel(a, a, 3, None, 1.0))
    assert kid_standard_error(a, b[:5])[0] == pytest.approx(kid_formula, rel=1e-12)   # KID's formula at equal n
    leave = np.array([unbiased(np.delete(b, i, axis=0), a) for i in range(len(b))])
    assert se == pytest.approx(np.sqrt((len(b) - 1) / len(b) * ((leave - leave.mean()) ** 2).sum()), rel=1e-10)
    with pytest.raises(ValueError, match=">= 3"):
        kid_standard_error(a, b[:2])


def _filter_inputs():
    # s0 mel accepted at once; s1 mel accepted at its 2nd attempt; s2 nv accepted at once; s3 nv never passed
    accepted = pd.DataFrame({"image_id": ["s0", "s1", "s2"], "category": ["mel", "mel", "nv"], "attempt": [0, 1, 0]})
    stats = StatsTable({"area_fraction": np.array([0.25, 0.1, 0.3]), "compactness": np.array([0.78, 0.6, 0.7]),
                        "components": np.array([1.0, 1.0, 2.0])})
    rejections = pd.DataFrame({
        "image_id": ["s1", "s3", "s3", "s3"], "category": ["mel", "nv", "nv", "nv"], "attempt": [0, 0, 1, 2],
        "seed": [1, 3, 4, 5], "reason": ["empty_mask", "area_above_max", "fragmented", "empty_mask"],
        "area_fraction": [0.0, 0.95, 0.2, 0.0], "components": [0, 1, 5, 0], "compactness": [0.0, 0.7, 0.1, 0.0],
        "final": [False, False, False, True]})
    reference = StatsTable({"area_fraction": np.array([0.25, 0.25]), "compactness": np.array([0.7, 0.7]),
                            "components": np.array([1.0, 1.0])})
    return accepted, stats, rejections, reference


def test_filter_summary_by_hand():
    accepted, stats, rejections, reference = _filter_inputs()
    f = filter_summary(accepted, stats, rejections, reference, ["mel", "nv", "df"])
    assert (f["planned"], f["accepted"], f["attempts"], f["rejected_attempts"]) == (4, 3, 7, 4)
    assert f["rejected_attempt_rate"] == pytest.approx(4 / 7)
    assert (f["first_attempt_rejected"], f["first_attempt_rejection_rate"]) == (2, 0.5)
    assert (f["never_passed"], f["never_passed_rate"]) == (1, 0.25)
    assert f["reasons"] == {"area_above_max": 1, "empty_mask": 2, "fragmented": 1}
    # before = first attempts: s0 0.25, s2 0.3 (accepted), s1 0.0, s3 0.95 (rejected); after = accepted
    assert f["before"]["n"] == 4 and f["before"]["area_fraction_mean"] == pytest.approx(0.375)
    assert f["after"]["n"] == 3 and f["after"]["area_fraction_mean"] == pytest.approx(0.65 / 3)
    # W1 to a point mass at 0.25 is the mean absolute deviation from it
    assert f["before"]["w1_area_fraction"] == pytest.approx((0 + 0.05 + 0.25 + 0.7) / 4)
    assert f["after"]["w1_area_fraction"] == pytest.approx((0 + 0.15 + 0.05) / 3)
    assert f["per_class"] == {
        "mel": {"planned": 2, "accepted": 2, "rejected_attempts": 1, "first_attempt_rejected": 1,
                "first_attempt_rejection_rate": 0.5, "never_passed": 0, "never_passed_rate": 0.0},
        "nv": {"planned": 2, "accepted": 1, "rejected_attempts": 3, "first_attempt_rejected": 1,
               "first_attempt_rejection_rate": 0.5, "never_passed": 1, "never_passed_rate": 0.5}}


def test_filter_summary_of_older_logs_and_bad_logs():
    accepted, stats, rejections, reference = _filter_inputs()
    old = filter_summary(accepted, stats, rejections.drop(columns="compactness").astype({"final": str}),
                         reference, ["mel", "nv"])
    assert old["never_passed"] == 1                                  # "True"/"False" read back from CSV
    assert old["before"]["n_compactness"] == 2 and old["before"]["n_area_fraction"] == 4
    with pytest.raises(DataError, match="rejections.csv.*reason"):
        filter_summary(accepted, stats, rejections.drop(columns="reason"), reference, ["mel"])


def _metrics(fd_synth: float = 20.25, kid_test: float = 0.01) -> dict:
    row = {"n_a": 10, "n_b": 8, "lpips": "unavailable", "ms_ssim": 0.25, "consistency_dice": 0.8, "per_class": {}}
    return {
        "classes": ["mel", "nv"], "fd_key": "fd_vae", "kid_key": "kid_vae", "feature_space": "vae",
        "feature_description": "project VAE encoder (models/base)", "image_size": 32, "n": 8, "n_reference": 10,
        "n_available": {"real_train": 10, "real_test": 8, "synthetic_train": 12}, "kid_subsets": 5,
        "kid_subset_size": 8,
        "real_train_vs_real_test": {**row, "fd_vae": 12.5, "kid_vae": kid_test, "kid_vae_se": 0.004,
                                    "memorisation": {"n": 8, "near_copies": 0, "near_copy_share": 0.0,
                                                     "nn_ratio_min": 0.7, "nn_ratio_p05": 0.75,
                                                     "nn_ratio_median": 1.0, "per_class": {}}},
        "real_train_vs_synthetic_train": {**row, "fd_vae": fd_synth, "kid_vae": 0.03, "kid_vae_se": 0.01,
                                          "memorisation": {"n": 12, "near_copies": 3, "near_copy_share": 0.25,
                                                           "nn_ratio_min": 0.0, "nn_ratio_p05": 0.0,
                                                           "nn_ratio_median": 0.9,
                                                           "per_class": {"nv": {"n": 12, "near_copies": 3,
                                                                                "near_copy_share": 0.25,
                                                                                "nn_ratio_min": 0.0}}}},
        "memorisation": {"recorded": True, "feature_space": "pixels", "size": 32, "near_copy_ratio": 0.5,
                         "n_reference": 10, "real_nn_median": 0.2, "real_nn_p01": 0.1, "real_nn_p05": 0.12},
        "rejection_filter": {"recorded": False, "reason": "no log"},
        "faithfulness": {"per_class": {"mel": {"real_test": {"n": 4, "correct": 3, "recall": 0.75,
                                                             "recall_low": 0.3, "recall_high": 0.95},
                                               "synthetic": {"n": 6, "correct": 3, "recall": 0.5,
                                                             "recall_low": 0.19, "recall_high": 0.81},
                                               "gap": -0.25}},
                         "real_test_balanced_accuracy": 0.75, "synthetic_balanced_accuracy": 0.5,
                         "classifier": "random forest"},
        "lpips_reason": "no local weights",
    }


def test_the_frechet_estimate_is_not_clamped():
    # a set against itself: 0 up to rounding, which falls below 0 for a good share of sets (no clamp hides it)
    values = [frechet_distance_features(a, a) for a in (np.random.default_rng(k).normal(size=(6, 4)) for k in range(20))]
    assert max(abs(v) for v in values) < 1e-10 and min(values) < 0


def test_negative_estimates_are_shown_as_computed_with_their_meaning():
    assert sign_notes(_metrics()) == []
    notes = sign_notes(_metrics(fd_synth=-3e-12, kid_test=-0.002))
    assert len(notes) == 2 and "rounding" in notes[0] and "cannot be told apart" in notes[1]
    table = table1_markdown(_metrics(fd_synth=-3e-12, kid_test=-0.002))
    assert "| Real Train vs Real Test | 10 / 8 | 12.50 | -0.0020 ± 0.0040 |" in table
    assert "| Real Train vs Synth Train | 10 / 8 | -3.00e-12 | 0.0300 ± 0.0100 |" in table
    assert notes[1] in table


def test_quality_table_shows_n_near_copies_faithfulness_and_protocol():
    table = table1_markdown(_metrics())
    assert "| 0.8000 | 3 / 12 (25.0 %) |" in table and "| 0.8000 | 0 / 8 (0.0 %) |" in table
    assert "Protocol. Feature space: project VAE encoder (models/base)" in table
    assert "each cut to n = 8 images" in table and "real training split (10 images)" in table
    assert "| mel | 4 | 75.0 % [30, 95] | 6 | 50.0 % [19, 81] | -25.0 |" in table
    assert "| Synthetic | 12 | 3 / 12 (25.0 %) | 0.0000 | 0.0000 | 0.9000 |" in table
    assert "| nv | – | 3 / 12 (25.0 %) |" in table
    assert "Not recorded: no log." in table


def test_report_stage_table1_from_the_quality_metrics(tmp_path):
    path = tmp_path / "quality.json"
    metrics = _metrics()
    metrics["protocol"] = "Protocol. The words under the table."
    path.write_text(json.dumps(metrics))
    t1 = R.table1(path)
    assert ("| Real Train vs Synth Train | 20.2500 | 0.0300 ± 0.0100 | – | 0.2500 | 0.8000 | 10 / 8 | "
            "3 / 12 (25.0 %) |") in t1.markdown
    assert "Protocol. The words under the table." in t1.markdown
    assert "mel 75 → 50" in t1.markdown and "balanced accuracy 75.0 → 50.0" in t1.markdown
    assert list(t1.frame["near_copies"]) == [0, 3] and list(t1.frame["kid_vae_se"]) == [0.004, 0.01]
