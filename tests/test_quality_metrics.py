"""Quality metrics on hand-checkable inputs: Fréchet distance closed form, KID, MS-SSIM, LPIPS, mask statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.data.mask_stats import (
    StatsTable,
    area_fraction,
    compactness,
    component_count,
    crack_perimeter,
    distribution_distances,
    mask_statistics,
)
from components.errors import ConfigError
from components.quality.distances import frechet_distance, frechet_distance_features, gaussian_stats, kernel_distance
from components.quality.similarity import cross_pairs, lpips_model, lpips_pairs, ms_ssim_pairs, msssim_setup


def test_frechet_distance_closed_form_1d_and_2d():
    # 1-D: (m1-m2)^2 + (s1-s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(4.0 + 1.0)
    # 2-D diagonal: |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    fd = frechet_distance([0, 0], np.diag([4.0, 9.0]), [1, 2], np.diag([1.0, 1.0]))
    assert fd == pytest.approx(5.0 + 1.0 + 4.0)
    # non-diagonal: S1 = I, S2 = [[2,1],[1,2]] (eigenvalues 3, 1) -> Tr = 2 + 4 - 2 (sqrt(3) + 1)
    fd = frechet_distance([0, 0], np.eye(2), [0, 0], [[2.0, 1.0], [1.0, 2.0]])
    assert fd == pytest.approx(4.0 - 2.0 * math.sqrt(3.0))
    # non-commuting covariances: compare with the definition through scipy's general matrix square root
    from scipy.linalg import sqrtm
    s1, s2 = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, -0.3], [-0.3, 3.0]])
    expected = np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real) + 1.0
    assert frechet_distance([0, 1], s1, [1, 1], s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance([0, 1], s1, [0, 1], s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_from_samples_matches_the_gaussians_and_torchmetrics():
    rng = np.random.default_rng(0)
    a = rng.normal([0.0, 0.0], [1.0, 2.0], size=(20000, 2))
    b = rng.normal([1.0, 0.0], [1.0, 1.0], size=(20000, 2))
    assert frechet_distance_features(a, b) == pytest.approx(1.0 + 1.0, abs=0.08)
    mu, sigma = gaussian_stats(a[:5])
    assert np.allclose(sigma, np.cov(a[:5], rowvar=False))
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 2

        def forward(self, x):
            return x

    small_a, small_b = a[:200], b[:300]
    fid = FrechetInceptionDistance(feature=Identity(), normalize=True)
    fid.update(torch.from_numpy(small_a), real=True)
    fid.update(torch.from_numpy(small_b), real=False)
    assert frechet_distance_features(small_a, small_b) == pytest.approx(float(fid.compute()), rel=1e-6)


def test_kid_sanity_and_agreement_with_torchmetrics():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (300, 8))
    same = rng.normal(0, 1, (300, 8))
    shifted = rng.normal(0.5, 1, (300, 8))
    far = rng.normal(1.5, 1, (300, 8))
    k_same, _ = kernel_distance(a, same, subsets=20, subset_size=100, seed=0)
    k_shift, _ = kernel_distance(a, shifted, subsets=20, subset_size=100, seed=0)
    k_far, _ = kernel_distance(a, far, subsets=20, subset_size=100, seed=0)
    assert abs(k_same) < 0.02 < k_shift < k_far
    assert kernel_distance(a, shifted, subsets=5, subset_size=50, seed=3) == \
        kernel_distance(a, shifted, subsets=5, subset_size=50, seed=3)
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 8

        def forward(self, x):
            return x

    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=60, normalize=True)
    kid.update(torch.from_numpy(a[:60]), real=True)
    kid.update(torch.from_numpy(shifted[:60]), real=False)
    mean, _ = kid.compute()
    assert kernel_distance(a[:60], shifted[:60], subsets=1, subset_size=60)[0] == pytest.approx(float(mean), rel=1e-6)


def _images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size // 4, size // 4, 3)).astype(np.uint8)
    return base.repeat(4, axis=1).repeat(4, axis=2)


@pytest.mark.parametrize("size,scales", [(128, 5), (64, 4), (32, 3), (16, 2)])
def test_msssim_setup_picks_scales_that_torchmetrics_accepts(size, scales):
    kernel, betas = msssim_setup(size, 7)
    assert (kernel, len(betas)) == (7, scales) and sum(betas) == pytest.approx(1.0)
    imgs = _images(2, size, 0)
    scores = ms_ssim_pairs(imgs, imgs, np.array([0, 1]), np.array([0, 1]))
    assert np.allclose(scores, 1.0)  # an image with itself
    other = ms_ssim_pairs(imgs, imgs, np.array([0]), np.array([1]))
    assert 0.0 <= other[0] < 0.9


def test_msssim_too_small_and_cross_pairs():
    with pytest.raises(ConfigError, match="too small"):
        msssim_setup(8, 11)
    ia, ib = cross_pairs(3, 2, 100, seed=0)
    assert sorted(zip(ia.tolist(), ib.tolist())) == [(i, j) for i in range(3) for j in range(2)]
    ia, ib = cross_pairs(50, 40, 30, seed=5)
    assert len(ia) == 30 and ia.max() < 50 and ib.max() < 40
    assert np.array_equal(cross_pairs(50, 40, 30, seed=5)[0], ia)


def test_lpips_unavailable_without_weights_and_zero_on_identical_images(tmp_path):
    model, reason = lpips_model("alex", "")
    assert model is None and "lpips_weights" in reason
    import torchvision
    torch.manual_seed(0)
    weights = tmp_path / "squeezenet.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), weights)
    model, reason = lpips_model("squeeze", str(weights))
    assert reason == ""
    first_conv = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.equal(first_conv.weight, torch.load(weights)["features.0.weight"])  # backbone from the file
    imgs = _images(3, 32, 2)
    d = lpips_pairs(model, imgs, imgs, np.array([0, 1, 0]), np.array([0, 1, 2]))
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[1] == pytest.approx(0.0, abs=1e-6) and d[2] > 0


def test_mask_statistics_by_hand():
    m = np.zeros((8, 8), np.uint8)
    m[2:6, 2:6] = 1  # a 4x4 square
    assert area_fraction(m) == 16 / 64
    assert crack_perimeter(m) == 16
    assert compactness(m) == pytest.approx(4 * math.pi * 16 / 256)  # pi/4
    assert component_count(m) == 1
    m2 = m.copy()
    m2[0, 0] = 1  # separate pixel
    m2[6, 6] = 1  # touches the square diagonally: same 8-connected component
    assert component_count(m2) == 2
    assert crack_perimeter(np.ones((3, 3))) == 12  # image border counts as background
    assert mask_statistics(np.zeros((4, 4))) == {"area_fraction": 0.0, "compactness": 0.0, "components": 0.0}
    a = StatsTable.of([m, m])
    b = StatsTable.of([m2, np.zeros((8, 8))])
    d = distribution_distances(a, b)
    # components: {1, 1} vs {2, 0} -> W1 = 1; area: {16,16}/64 vs {18/64, 0}
    assert d["w1_components"] == pytest.approx(1.0)
    assert d["w1_area_fraction"] == pytest.approx(((18 - 16) + 16) / 64 / 2)
    assert a.summary()["area_fraction_mean"] == 0.25


def test_feature_space_names_and_inception_file_detection(tmp_path):
    from components.quality.features import create_extractor, inception_kind, resolve_kind

    assert resolve_kind("auto", "") == "vae"
    reference = tmp_path / "pt_inception.pth"
    torch.save({"fc.weight": torch.zeros(1008, 4)}, reference)  # the FID reference net has 1008 logits
    tv = tmp_path / "inception_v3_tv.pth"
    torch.save({"fc.weight": torch.zeros(1000, 4)}, tv)
    assert (inception_kind(reference), inception_kind(tv)) == ("inception", "tv_inception")
    with pytest.raises(ConfigError, match="torch-fidelity"):
        create_extractor("auto", str(reference))
    with pytest.raises(ConfigError, match="needs quality.inception_weights"):
        resolve_kind("tv_inception", "")
    with pytest.raises(ConfigError, match="not found"):
        resolve_kind("auto", str(tmp_path / "missing.pth"))


def test_vae_feature_space_on_a_four_channel_vae(tmp_path):
    from diffusers import AutoencoderKL

    from components.generator.presets import tiny_vae_config
    from components.quality.features import create_extractor

    cfg = {**tiny_vae_config(sample_size=16), "in_channels": 4, "out_channels": 4}
    AutoencoderKL(**cfg).save_pretrained(tmp_path / "vae4")
    ex = create_extractor("vae", vae_dir=str(tmp_path / "vae4"), device="cpu", batch_size=2)
    feats = ex(_images(3, 16, 0))
    assert (ex.fd_key, ex.kid_key) == ("fd_vae", "kid_vae")
    assert feats.shape == (3, 2 * cfg["block_out_channels"][-1]) and np.isfinite(feats).all()
    assert np.allclose(ex(_images(3, 16, 0)), feats)  # deterministic (eval mode, no sampling)


@pytest.mark.slow
def test_torchvision_inception_feature_space(tmp_path):
    import torchvision

    from components.quality.features import create_extractor

    torch.manual_seed(0)
    weights = tmp_path / "inception_v3.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), weights)
    ex = create_extractor("auto", str(weights), device="cpu", batch_size=2)
    assert (ex.name, ex.fd_key, ex.kid_key) == ("tv_inception", "fid_tv", "kid_tv")
    assert ex(_images(3, 32, 1)).shape == (3, 2048)
