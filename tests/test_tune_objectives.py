"""The sweep's objectives: KID with a calibrated standard error ranks settings at 200 samples, where the Fréchet
distance on 14 samples (the old sweep) could not; the config keeps the sample count that makes this true."""
from __future__ import annotations

import numpy as np
import pytest

from components.errors import ConfigError
from components.quality.distances import frechet_distance_features, kernel_distance
from components.tuning.config import TuneConfig
from components.tuning.objectives import FrechetToReference, fd_estimate, kid_estimate
from components.tuning.trials import proportional_classes

D = 128   # the tiny model's VAE feature dimension order of magnitude (SD's is 1024)


def _normal(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D)) + shift


REFERENCE = _normal(0, 1000)


def test_kid_is_the_quality_stage_estimator_on_all_pairs():
    a, b = _normal(1, 200, 0.1), REFERENCE[:200]
    mean, _ = kernel_distance(a, b, subsets=1, subset_size=200)     # one subset of all samples: a permutation
    assert kid_estimate(a, b).value == pytest.approx(mean, rel=1e-9, abs=1e-12)


def test_kid_standard_error_matches_the_spread_over_repeated_trials():
    draws = [kid_estimate(_normal(100 + s, 200, 0.1), REFERENCE) for s in range(150)]
    spread = np.std([d.value for d in draws], ddof=1)
    mean_se = np.mean([d.se for d in draws])
    assert 0.8 < mean_se / spread < 1.25


def test_200_samples_rank_a_small_shift_that_14_samples_of_frechet_distance_cannot():
    same, shifted = kid_estimate(_normal(7, 200), REFERENCE), kid_estimate(_normal(7, 200, 0.2), REFERENCE)
    assert abs(same.value) < 3 * same.se                            # unbiased: ~0 for the same distribution
    assert shifted.value - same.value > 5 * np.hypot(same.se, shifted.se)
    # The old objective: Fréchet distance of 14 samples against 56 real ones; seed-to-seed noise dwarfs the shift.
    fd = {shift: [frechet_distance_features(_normal(s, 14, shift), REFERENCE[:56]) for s in range(20)]
          for shift in (0.0, 0.2)}
    assert np.mean(fd[0.2]) - np.mean(fd[0.0]) < 0.5 * np.std(fd[0.0])


def test_fast_frechet_distance_equals_the_quality_formula_and_has_an_error():
    for n, d in ((200, 64), (14, 128)):                            # n > d and n < d (singular covariance)
        x = np.random.default_rng(n).normal(size=(n, d)) * 1.3 + 0.2
        y = np.random.default_rng(d).normal(size=(300, d))
        assert FrechetToReference(y)(x) == pytest.approx(frechet_distance_features(x, y), rel=1e-6)
    est = fd_estimate(_normal(3, 200, 0.2), REFERENCE)
    assert est.value > 0 and 0 < est.se < est.value


def test_prompts_follow_the_reference_class_shares():
    labels = proportional_classes(["mel"] * 30 + ["nev"] * 60 + ["bcc"] * 10, 200)
    assert {c: labels.count(c) for c in set(labels)} == {"mel": 60, "nev": 120, "bcc": 20}


def test_config_rejects_what_cannot_rank_or_would_train_twice():
    assert TuneConfig().samples_per_trial >= 200
    with pytest.raises(ConfigError, match="samples_per_trial"):
        TuneConfig(samples_per_trial=2)
    with pytest.raises(ConfigError, match="twice"):
        TuneConfig(lora_ranks=[2, 2])
    with pytest.raises(ConfigError, match="steps_min"):
        TuneConfig(steps_min=30, steps_max=20)
