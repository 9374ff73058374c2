"""Rejection filter for generated image-mask pairs: degenerate masks are refused with a named reason.

`enabled=False` (params.yaml `synthesize.pair_filter: false`) accepts every pair but still records its area and
component count: for plumbing runs with random-weight models, whose masks are typically empty or full-frame.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from components.data.mask_stats import area_fraction, component_count
from components.errors import ConfigError

# Reasons in the order they are checked; the first that applies is recorded.
REASONS: tuple[str, ...] = ("empty_mask", "full_frame_mask", "area_below_min", "area_above_max", "fragmented")


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the pair filter (fractions of the image area; component count is 8-connected)."""
    min_area_fraction: float = 0.005
    max_area_fraction: float = 0.9
    full_frame_fraction: float = 0.99
    max_components: int = 3
    enabled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_area_fraction <= self.max_area_fraction <= 1.0:
            raise ConfigError(
                f"pair filter: need 0 <= min_area_fraction ({self.min_area_fraction}) <= max_area_fraction "
                f"({self.max_area_fraction}) <= 1; fix the synthesize section of params.yaml")
        if not 0.0 < self.full_frame_fraction <= 1.0:
            raise ConfigError(f"pair filter: full_frame_fraction {self.full_frame_fraction} must be in (0, 1]")
        if self.max_components < 1:
            raise ConfigError(f"pair filter: max_components {self.max_components} must be >= 1")

    def as_dict(self) -> dict:
        """The thresholds (recorded in each sample's spec); `enabled` only when off, so records written before
        the switch existed still match and are resumed."""
        d = asdict(self)
        if d.pop("enabled"):
            return d
        return {**d, "enabled": False}


@dataclass(frozen=True)
class Verdict:
    """Filter outcome for one mask: `reason` is None when accepted."""
    reason: str | None
    area_fraction: float
    components: int

    @property
    def accepted(self) -> bool:
        return self.reason is None


def check_mask(mask: np.ndarray, cfg: FilterConfig) -> Verdict:
    """Accept or reject one binary mask (HxW, 0/1)."""
    area = area_fraction(mask)
    n = component_count(mask)
    if not cfg.enabled:
        reason = None
    elif area == 0.0:
        reason = "empty_mask"
    elif area >= cfg.full_frame_fraction:
        reason = "full_frame_mask"
    elif area < cfg.min_area_fraction:
        reason = "area_below_min"
    elif area > cfg.max_area_fraction:
        reason = "area_above_max"
    elif n > cfg.max_components:
        reason = "fragmented"
    else:
        reason = None
    return Verdict(reason=reason, area_fraction=area, components=n)
