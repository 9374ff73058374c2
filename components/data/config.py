"""Typed config of the `prepare` section of params.yaml."""
from __future__ import annotations

from dataclasses import dataclass

from components.data.categories import HAM10000_CATEGORIES


@dataclass(frozen=True)
class PrepareConfig:
    """Where the data comes from and how the real dataset folder is built."""
    source: str = "toy"             # toy | isic_gpt | isic_archive | ham10000
    path: str = ""                  # input folder for the importers (unused for toy)
    out_dir: str = "data/real"
    categories: tuple[str, ...] = HAM10000_CATEGORIES
    size: int = 128                 # images resized to size x size (LANCZOS), masks with nearest
    test_fraction: float = 0.2
    seed: int = 42
    toy_images: int = 2000          # toy only
    require_masks: bool = True      # reject images without masks
