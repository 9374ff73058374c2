"""Sweep objectives: how a sampling trial's generated pairs are scored, with the score's standard error.

Every sampling trial generates `tune.samples_per_trial` pairs (default 200) from the same prompts and seeds with
its own (steps, guidance) and compares their features with the features of real training images (the same
reference set in every trial of the sweep). An objective returns the figure and its standard error with respect
to the generated samples: the reference set is common to all trials, so its own sampling error moves every trial
alike and does not change their order. Two trials whose figures differ by less than about twice their standard
errors are not ranked by the sweep; they are a tie (`components.tuning.sweep` reports how many trials are within
that distance of the best).

| name      | figure                                                                                 | mode |
| --------- | -------------------------------------------------------------------------------------- | ---- |
| `kid_vae` | KID (unbiased polynomial-kernel MMD², all pairs) in the project VAE's feature space;    | min  |
|           | standard error by the exact delete-one jackknife over generated samples                |      |
| `fd_vae`  | Fréchet distance in the same space; biased upwards at small n (all trials have the same | min  |
|           | n, so it still ranks them) and singular covariances below n = d; grouped jackknife (10) |      |

KID is the default because its estimator is unbiased at any n, so 200 samples estimate the same quantity as
2,000 would, only with a larger (logged) standard error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from components.quality.distances import kid_standard_error
from components.registry import Registry

JACKKNIFE_GROUPS = 10


@dataclass(frozen=True)
class Estimate:
    value: float
    se: float      # standard error with respect to the generated samples (the reference set held fixed)


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str
    estimate: Callable[[np.ndarray, np.ndarray], Estimate]   # (generated features, reference features)
    description: str


OBJECTIVES = Registry[Objective]("sweep objective", hint="set tune.objective in params.yaml")


def kid_estimate(generated: np.ndarray, reference: np.ndarray) -> Estimate:
    """Unbiased MMD² over all pairs of the two sets (KID's estimator without subsets) and its delete-one
    jackknife standard error over the generated samples (components.quality.distances.kid_standard_error)."""
    return Estimate(*kid_standard_error(reference, generated))


def grouped_jackknife_se(stat: Callable[[np.ndarray], float], generated: np.ndarray,
                         groups: int = JACKKNIFE_GROUPS, seed: int = 0) -> float:
    """Standard error of `stat(generated)` by the delete-a-group jackknife over `groups` random groups."""
    n = len(generated)
    g = max(2, min(groups, n))
    labels = np.random.default_rng(seed).permutation(n) % g
    values = np.array([stat(generated[labels != k]) for k in range(g)])
    return float(np.sqrt((g - 1) / g * ((values - values.mean()) ** 2).sum()))


class FrechetToReference:
    """Fréchet distance of sets to one fixed reference, its statistics computed once.

    The formula of `components.quality.distances.frechet_distance`, with Tr((S_r^½ S_g S_r^½)^½) taken from the
    eigenvalues of the n×n matrix X S_r Xᵀ / (n-1) (X: the centred generated features), which has the same
    non-zero eigenvalues: O(n d² + n³) instead of two d×d eigendecompositions per call.
    """

    def __init__(self, reference: np.ndarray):
        y = np.asarray(reference, np.float64)
        if y.ndim != 2 or len(y) < 2:
            raise ValueError(f"need an (N>=2, d) reference feature matrix, got shape {y.shape}")
        self.mu, self.cov = y.mean(axis=0), np.atleast_2d(np.cov(y, rowvar=False))

    def __call__(self, generated: np.ndarray) -> float:
        x = np.asarray(generated, np.float64)
        n = len(x)
        if n < 2:
            raise ValueError(f"the Fréchet distance needs >= 2 generated samples, got {n}")
        xc = x - x.mean(axis=0)
        inner = xc @ self.cov @ xc.T / (n - 1)
        eig = np.linalg.eigvalsh((inner + inner.T) / 2)
        tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
        tr_gen = float((xc ** 2).sum() / (n - 1))
        # as computed: a value below 0 is rounding of a distance that is 0 (the plug-in estimate is >= 0)
        return float(((x.mean(axis=0) - self.mu) ** 2).sum() + tr_gen + np.trace(self.cov) - 2.0 * tr_covmean)


def fd_estimate(generated: np.ndarray, reference: np.ndarray) -> Estimate:
    x = np.asarray(generated, np.float64)
    fd = FrechetToReference(reference)
    return Estimate(fd(x), grouped_jackknife_se(fd, x))


OBJECTIVES.register("kid_vae", Objective(
    metric="kid_vae", mode="min", estimate=kid_estimate,
    description="KID to real training images, project VAE features (unbiased at any n; lower is better)"))
OBJECTIVES.register("fd_vae", Objective(
    metric="fd_vae", mode="min", estimate=fd_estimate,
    description="Fréchet distance to real training images, project VAE features (biased at small n)"))
