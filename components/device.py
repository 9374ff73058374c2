"""The one device resolver of the project."""
from __future__ import annotations

import torch

from components.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or empty) → cuda when available, else cpu; an unavailable cuda request is a ConfigError."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use device: auto or cpu")
    return device
