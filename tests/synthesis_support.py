"""Test double for the diffusion model of the synthesis tests: seeded numpy image-mask pairs."""
from __future__ import annotations

import numpy as np


class SeededPairs:
    """Test double of DualGenerator: output depends only on the seed; `empty` seeds give an empty mask."""

    def __init__(self, size: int = 16, empty: set[int] = frozenset(), fail_on_call: int | None = None):
        self.size, self.empty, self.fail_on_call = size, set(empty), fail_on_call
        self.version = "seeded-pairs-1"
        self.calls: list[list[int]] = []

    def generate(self, prompts, seeds, num_inference_steps=45, guidance_scale=1.22, height=None, width=None,
                 batch_size=8, mask_threshold=0.5, progress=True):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("interrupted")
        self.calls.append(list(seeds))
        h = height or self.size
        out = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            image = rng.integers(0, 256, (h, h, 3), dtype=np.uint8)
            yy, xx = np.mgrid[:h, :h]
            r = h * rng.uniform(0.15, 0.3)
            mask = (((yy - h / 2) ** 2 + (xx - h / 2) ** 2) <= r * r).astype(np.uint8)
            if seed in self.empty:
                mask[:] = 0
            out.append((image, mask))
        return out


class DyingOnce:
    """Generator loader for Ray workers: the loaded generator's process dies (os._exit) on its `at_call`-th
    generate call, once per `marker` file, as a killed worker would."""

    def __init__(self, load, marker: str, at_call: int = 1):
        self.load, self.marker, self.at_call = load, marker, at_call

    def __call__(self):
        return _Dying(self.load(), self.marker, self.at_call)


class _Dying:
    def __init__(self, inner, marker: str, at_call: int):
        self.inner, self.marker, self.at_call, self.calls = inner, marker, at_call, 0
        self.version = inner.version

    def generate(self, *args, **kwargs):
        import os
        from pathlib import Path

        self.calls += 1
        if self.calls == self.at_call and not Path(self.marker).exists():
            Path(self.marker).write_text("died")
            os._exit(1)
        return self.inner.generate(*args, **kwargs)
