"""Distances between two sets of feature vectors: Fréchet distance (FID's formula) and kernel distance (KID's).

They are the formulas of torchmetrics' FrechetInceptionDistance / KernelInceptionDistance applied to features
computed once per set, so one set's features serve several comparisons. Whether the result may be called FID/KID
depends only on the feature space (components/quality/features.py names the keys).

Both are returned as computed, never clamped. The Fréchet distance is the plug-in estimate: non-negative in exact
arithmetic and biased upwards at small n, so a negative value is floating-point rounding of a distance that is
0 to machine precision. KID is unbiased: a negative value means its sampling noise at that n exceeds the true
distance, i.e. the two sets cannot be told apart in that feature space at that n.
"""
from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of an (N, d) feature matrix, N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need an (N>=2, d) feature matrix, got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) for Gaussians N(mu1, S1), N(mu2, S2), as computed.

    Tr((S1 S2)^(1/2)) is computed as Tr((S1^(1/2) S2 S1^(1/2))^(1/2)), which has the same eigenvalues and is
    symmetric positive semi-definite, so the square root is taken by a stable symmetric eigendecomposition.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    r1 = _psd_sqrt(s1)
    inner = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def _poly_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float | None, coef: float) -> np.ndarray:
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef) ** degree


def _mmd2_unbiased(kxx: np.ndarray, kxy: np.ndarray, kyy: np.ndarray) -> float:
    m = kxx.shape[0]
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * kxy.sum() / (m * m))


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                    gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """KID: mean and std over `subsets` random equal-size subsets of the unbiased polynomial-kernel MMD^2.

    The subset size is clipped to the smaller set (at least 2 samples each). Can be slightly negative when the
    sets come from the same distribution (the estimator is unbiased).
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(max(subsets, 1)):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        values.append(_mmd2_unbiased(_poly_kernel(xs, xs, degree, gamma, coef), _poly_kernel(xs, ys, degree, gamma, coef),
                                     _poly_kernel(ys, ys, degree, gamma, coef)))
    return float(np.mean(values)), float(np.std(values))


def kid_standard_error(reference: np.ndarray, b: np.ndarray, degree: int = 3, gamma: float | None = None,
                       coef: float = 1.0) -> tuple[float, float]:
    """(all-pairs unbiased MMD^2, its delete-one jackknife standard error over the samples of `b`).

    The reference set is held fixed: the error is that of drawing `b` (a generated set, or the real test split).
    Closed form from the kernel sums, O(n^2 + nm); needs >= 3 samples in `b` and >= 2 in the reference.
    """
    x, y = np.asarray(b, np.float64), np.asarray(reference, np.float64)
    n, m = len(x), len(y)
    if n < 3 or m < 2:
        raise ValueError(f"KID with a standard error needs >= 3 samples and >= 2 reference samples, got {n}, {m}")
    kxx, kyy = _poly_kernel(x, x, degree, gamma, coef), _poly_kernel(y, y, degree, gamma, coef)
    kxy = _poly_kernel(x, y, degree, gamma, coef)
    row_xx = kxx.sum(axis=1) - np.diag(kxx)          # sum over j != i of k(x_i, x_j)
    s_xx, row_xy = row_xx.sum(), kxy.sum(axis=1)
    s_xy = row_xy.sum()
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    value = s_xx / (n * (n - 1)) + yy - 2.0 * s_xy / (n * m)
    leave_out = (s_xx - 2.0 * row_xx) / ((n - 1) * (n - 2)) + yy - 2.0 * (s_xy - row_xy) / ((n - 1) * m)
    var = (n - 1) / n * float(((leave_out - leave_out.mean()) ** 2).sum())
    return float(value), float(np.sqrt(var))
