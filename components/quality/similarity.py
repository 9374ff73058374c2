"""Pairwise similarity between two image sets: MS-SSIM (torchmetrics) and LPIPS, averaged over seeded random
cross pairs (one image from each set), as the paper's Table 1 reports them.

MS-SSIM on small images: torchmetrics needs H >= 2^n and H // max(1, n-1)^2 > kernel_size - 1 for n scales, and
the coarsest scale must be wider than the kernel's padding. `msssim_setup` keeps the configured kernel and uses as
many of the standard five scales (betas 0.0448, 0.2856, 0.3001, 0.2363, 0.1333, renormalised to sum to 1) as the
image size allows: kernel 7 gives 5 scales at 128 px, 4 at 64 px, 3 at 32 px, 2 at 16 px. normalize='relu' keeps
negative contrast terms at coarse scales from producing NaN.

LPIPS: torchmetrics ships the LPIPS linear layers but downloads the ImageNet backbone (alex/vgg/squeeze) from
torchvision. Offline it works only with a configured local backbone weights file; otherwise `lpips_model`
returns the reason it is unavailable and no number is reported.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from components.errors import ConfigError, ModelError

STANDARD_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
LPIPS_NETS: dict[str, str] = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def msssim_setup(size: int, kernel_size: int = 7) -> tuple[int, tuple[float, ...]]:
    """(kernel_size, betas) usable for square images of side `size` (see the module docstring)."""
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ConfigError(f"quality.msssim_kernel_size {kernel_size}: must be odd and >= 3")
    for n in range(len(STANDARD_BETAS), 0, -1):
        fits = (size >= 2 ** n and size // max(1, n - 1) ** 2 > kernel_size - 1
                and size // 2 ** (n - 1) > (kernel_size - 1) // 2)
        if fits:
            betas = np.asarray(STANDARD_BETAS[:n])
            return kernel_size, tuple(float(b) for b in betas / betas.sum())
    raise ConfigError(f"MS-SSIM: images of {size} px are too small for kernel_size {kernel_size}; use a smaller "
                      f"quality.msssim_kernel_size (odd, >= 3) or a larger quality.image_size")


def cross_pairs(n_a: int, n_b: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random index pairs (i from A, j from B); all n_a*n_b pairs when that is fewer than n_pairs."""
    if n_a * n_b <= n_pairs:
        ia, ib = np.meshgrid(np.arange(n_a), np.arange(n_b), indexing="ij")
        return ia.ravel(), ib.ravel()
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_a, n_pairs), rng.integers(0, n_b, n_pairs)


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device).float() / 255.0


@torch.no_grad()
def ms_ssim_pairs(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray, kernel_size: int = 7,
                  batch_size: int = 64, device: torch.device | str = "cpu") -> np.ndarray:
    """MS-SSIM of each pair (a[ia[k]], b[ib[k]]); images uint8 (N, H, W, 3) of one common square size."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    kernel, betas = msssim_setup(min(a.shape[1:3]), kernel_size)
    device = torch.device(device)
    out = []
    for k in range(0, len(ia), batch_size):
        x = _to_tensor(a[ia[k:k + batch_size]], device)
        y = _to_tensor(b[ib[k:k + batch_size]], device)
        out.append(msssim(x, y, data_range=1.0, kernel_size=kernel, betas=betas, normalize="relu",
                          reduction="none").reshape(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def lpips_model(net: str, backbone_weights: str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module | None, str]:
    """(LPIPS module, '') built offline from a local backbone file, or (None, reason it is unavailable)."""
    if net not in LPIPS_NETS:
        raise ConfigError(f"quality.lpips_net {net!r}: expected one of {list(LPIPS_NETS)}")
    if not backbone_weights:
        return None, (f"no quality.lpips_weights configured: LPIPS needs torchvision's ImageNet {LPIPS_NETS[net]} "
                      f"backbone, which torchmetrics would download; give the local file's path to report it")
    path = Path(backbone_weights)
    if not path.is_file():
        return None, f"quality.lpips_weights {path} not found"
    import torchvision
    from torchmetrics.functional.image.lpips import _LPIPS

    backbone = getattr(torchvision.models, LPIPS_NETS[net])(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    try:
        backbone.features.load_state_dict(features)
    except RuntimeError as exc:
        raise ModelError(f"{path}: not torchvision {LPIPS_NETS[net]} weights ({str(exc)[:200]})") from None
    model = _LPIPS(pretrained=True, net=net, pnet_rand=True)  # linear layers from torchmetrics' package
    # the LPIPS slices are Sequentials whose children are named by their index in the backbone's `features`
    for block in model.net.modules():
        if isinstance(block, torch.nn.Sequential):
            for idx, layer in block.named_children():
                layer.load_state_dict(backbone.features[int(idx)].state_dict())
    return model.eval().to(device), ""


@torch.no_grad()
def lpips_pairs(model: torch.nn.Module, a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray,
                batch_size: int = 64) -> np.ndarray:
    """LPIPS distance of each pair (a[ia[k]], b[ib[k]]) (0 = identical)."""
    device = next(model.parameters()).device
    out = []
    for k in range(0, len(ia), batch_size):
        x = _to_tensor(a[ia[k:k + batch_size]], device)
        y = _to_tensor(b[ib[k:k + batch_size]], device)
        out.append(model(x, y, normalize=True).reshape(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
