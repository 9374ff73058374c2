"""Feature extractors for the distribution distances, created by name, each with its own metric names.

| name           | features                                                  | metric keys        |
| -------------- | --------------------------------------------------------- | ------------------ |
| `inception`    | reference FID Inception-v3 (TF port, weights file given), | `fid`, `kid`       |
|                | through torchmetrics + torch-fidelity                     |                    |
| `tv_inception` | torchvision ImageNet Inception-v3 pool features (file)    | `fid_tv`, `kid_tv` |
| `vae`          | the project's own VAE encoder: last encoder activations,  | `fd_vae`, `kid_vae`|
|                | spatial mean and std per channel                          |                    |

Only `inception` gives numbers comparable with published FID. `fid_tv` uses the same formula on torchvision's
ImageNet weights (a different network, so not comparable). `fd_vae` is a Fréchet distance in a feature space
learned on this project's data: it ranks sets against each other, never against published FIDs.
Nothing is downloaded: every network comes from a configured local file or model folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from components.device import resolve_device
from components.errors import ConfigError, ModelError
from components.registry import Registry

FID_REFERENCE_CLASSES = 1008  # the TF Inception behind FID has 1008 logits; torchvision's has 1000
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FeatureExtractor:
    """Maps uint8 images (N, H, W, 3) to float64 features (N, d) in batches."""
    name: str
    fd_key: str
    kid_key: str
    description: str
    forward: Callable[[torch.Tensor], torch.Tensor]  # uint8 NCHW on device -> (n, d)
    device: torch.device
    batch_size: int = 32

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + self.batch_size])).permute(0, 3, 1, 2)
            out.append(self.forward(x.to(self.device)).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))




def _load_state_dict(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"quality.inception_weights: {path} not found; give the path of an Inception-v3 weights "
                          f"file or leave it empty to use the project's VAE feature space (fd_vae)")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ModelError(f"{path}: cannot read as a torch state dict ({exc}); use a .pth weights file") from None
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def inception_kind(path: str | Path) -> str:
    """'inception' for the FID reference weights (1008 classes), 'tv_inception' for torchvision's."""
    sd = _load_state_dict(path)
    fc = sd.get("fc.weight")
    if fc is None:
        raise ModelError(f"{path}: no 'fc.weight' entry; not an Inception-v3 state dict")
    return "inception" if fc.shape[0] == FID_REFERENCE_CLASSES else "tv_inception"


def resolve_kind(kind: str, inception_weights: str) -> str:
    """The extractor to use: `auto` picks an Inception when a weights file is configured, else `vae`."""
    if kind == "auto":
        return inception_kind(inception_weights) if inception_weights else "vae"
    EXTRACTORS.create(kind)
    if kind in ("inception", "tv_inception") and not inception_weights:
        raise ConfigError(f"quality.feature_extractor={kind} needs quality.inception_weights (a local weights "
                          f"file); nothing is downloaded")
    return kind


def _reference_inception(weights: str, device: torch.device) -> Callable:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{weights} holds the reference FID Inception weights; computing standard FID with them needs the "
            f"torch-fidelity package (pip install torch-fidelity). Alternatively configure torchvision's "
            f"inception_v3 weights (feature space `tv_inception`) or leave inception_weights empty (fd_vae)"
        ) from None
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                             feature_extractor_weights_path=str(weights)).to(device)
    return lambda x: net(x).reshape(x.shape[0], -1)


def _torchvision_inception(weights: str, device: torch.device) -> Callable:
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    missing, unexpected = net.load_state_dict(_load_state_dict(weights), strict=False)
    if [k for k in missing if not k.startswith("AuxLogits")] or unexpected:
        raise ModelError(f"{weights}: not torchvision inception_v3 weights (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    net.fc = torch.nn.Identity()
    net.eval().to(device)
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.float() / 255.0, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        return net((x - mean) / std)

    return forward


def vae_folder(path: str | Path) -> tuple[str, str | None]:
    """(location, subfolder) of an AutoencoderKL: a model folder's vae/, a VAE folder itself, or what a
    base.json pointer (models/base for a public Stable Diffusion) leads to (a hub id: local cache only)."""
    from components.generator.base_models import resolve_ref

    ref = resolve_ref(path)
    folder = Path(ref)
    if (folder / "vae" / "config.json").is_file():
        return ref, "vae"
    if (folder / "config.json").is_file():
        return ref, None
    if ref != str(path) and not folder.exists():  # a pointer to a hub id
        return ref, "vae"
    raise ModelError(f"{path}: no VAE found (expected {folder}/vae/config.json or {folder}/config.json); run the "
                     f"`pretrain` stage or point quality.vae_dir at a diffusers model folder")


def _load_vae(vae_dir: str):
    """The AutoencoderKL of a model folder, VAE folder, pointer or random-weight preset (e.g. sd2-base-random)."""
    from diffusers import AutoencoderKL

    from components.generator.base_models import load_vae, resolve_ref
    from components.generator.presets import PRESETS

    if resolve_ref(vae_dir) in PRESETS:
        return load_vae(vae_dir)
    folder, sub = vae_folder(vae_dir)
    try:
        return AutoencoderKL.from_pretrained(folder, subfolder=sub)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{vae_dir}: cannot load the VAE from {folder} ({exc}); run the `pretrain` stage or "
                         f"point quality.vae_dir at a local diffusers folder") from None


def _vae_encoder(vae_dir: str, device: torch.device) -> Callable:
    vae = _load_vae(vae_dir).to(device).eval()
    enc = vae.encoder
    extra = enc.conv_in.in_channels - 3  # a 4-channel (RGB+mask) VAE gets an all-zero mask channel

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x.float() / 127.5 - 1.0
        if extra > 0:
            h = torch.cat([h, torch.zeros_like(h[:, :1]).expand(-1, extra, -1, -1)], dim=1)
        h = h.to(enc.conv_in.weight.dtype)
        h = enc.conv_in(h)
        for block in enc.down_blocks:
            h = block(h)
        h = enc.conv_act(enc.conv_norm_out(enc.mid_block(h)))
        return torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3))], dim=1)

    return forward


@dataclass(frozen=True)
class ExtractorSpec:
    """A feature space: its metric names and how to build its network from the configured files."""
    name: str
    fd_key: str
    kid_key: str
    build: Callable[[str, str, torch.device], Callable]   # (inception_weights, vae_dir, device) -> forward
    describe: Callable[[str, str], str]                   # (inception_weights, vae_dir) -> description


EXTRACTORS: Registry[ExtractorSpec] = Registry(
    "feature extractor", hint="set quality.feature_extractor to auto or one of them")
EXTRACTORS.add(ExtractorSpec("inception", "fid", "kid", lambda w, v, d: _reference_inception(w, d),
                             lambda w, v: f"FID Inception-v3 ({w})"))
EXTRACTORS.add(ExtractorSpec("tv_inception", "fid_tv", "kid_tv", lambda w, v, d: _torchvision_inception(w, d),
                             lambda w, v: f"torchvision Inception-v3 ({w})"))
EXTRACTORS.add(ExtractorSpec("vae", "fd_vae", "kid_vae", lambda w, v, d: _vae_encoder(v, d),
                             lambda w, v: f"project VAE encoder ({v})"))


def create_extractor(kind: str, inception_weights: str = "", vae_dir: str = "models/base", device: str = "auto",
                     batch_size: int = 32) -> FeatureExtractor:
    """Build the named feature extractor (`auto` resolved by `resolve_kind`)."""
    spec = EXTRACTORS.create(resolve_kind(kind, inception_weights))
    dev = resolve_device(device)
    return FeatureExtractor(name=spec.name, fd_key=spec.fd_key, kid_key=spec.kid_key,
                            description=spec.describe(inception_weights, vae_dir),
                            forward=spec.build(inception_weights, vae_dir, dev), device=dev, batch_size=batch_size)
