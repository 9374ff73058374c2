"""Local pretrained weights: read a state dict from a file or the torch/HF caches; never download."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from components.errors import ModelError

CACHE = "cache"  # value of a `pretrained` option meaning "the standard cache file of this architecture"


def torch_hub_file(url: str) -> Path:
    """Where torch.hub keeps the file of a torchvision weights URL (it may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def hf_cache_file(repo_id: str, filename: str = "model.safetensors") -> Path | None:
    """A file of a Hugging Face repo if it is already in the local cache (offline lookup), else None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pth / .pt / .bin file; unwraps {'state_dict': ...} and {'model': ...}."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: pretrained weights file not found; give an existing file or leave the "
                         f"option empty to train from scratch")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say which
        raise ModelError(f"{path}: cannot read weights ({exc}); the file is corrupt or not a state dict") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], skip_prefixes: tuple[str, ...],
                  where: str) -> None:
    """Load `state` into `module`, dropping keys under `skip_prefixes` (the replaced head).

    Every other parameter of the module must be present with the right shape, else ModelError lists them.
    """
    own = module.state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith(skip_prefixes) and k in own}
    wrong_shape = [k for k, v in kept.items() if own[k].shape != v.shape]
    missing = [k for k in own if not k.startswith(skip_prefixes) and k not in kept
               and not k.endswith("num_batches_tracked")]
    if wrong_shape or missing:
        raise ModelError(
            f"{where}: weights do not fit the architecture (missing: {missing[:5]}, wrong shape: "
            f"{wrong_shape[:5]}); use the ImageNet checkpoint of the same architecture"
        )
    module.load_state_dict(kept, strict=False)


def resolve_pretrained(pretrained: str | Path | None, cache_file: Path | None, name: str) -> Path | None:
    """None for scratch, the given path, or the architecture's cache file for `pretrained='cache'`."""
    if pretrained in (None, ""):
        return None
    if str(pretrained) == CACHE:
        if cache_file is None or not cache_file.is_file():
            raise ModelError(
                f"{name}: pretrained='cache' but no cached weights were found"
                f"{f' at {cache_file}' if cache_file else ''}; download them once on a machine with internet "
                f"(they land in that cache), give a file path instead, or set pretrained to '' to train "
                f"from scratch"
            )
        return cache_file
    return Path(pretrained)
