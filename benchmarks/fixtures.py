"""What the benchmarks run on: settings per preset, seeded toy batches and base-model folders.

Models have random (seeded) weights: throughput does not depend on what the weights learned, and nothing is
downloaded or trained before a benchmark. Model folders are written once per run into a temporary directory
(base model as a diffusers folder, the 4-channel VAE from components.generator.vae_surgery, a random LoRA),
so every variant loads through the same public entry points a user would call.
"""
from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.data.categories import HAM10000_CATEGORIES
from components.data.prompts import template_prompt

PRESETS = ("tiny", "sd2-base-random")


@dataclass
class Settings:
    """Every knob of a run; defaults come from the preset (`for_preset`), flags override them."""
    preset: str = "tiny"
    device: str = "cpu"
    quick: bool = False
    warmup: int = 3
    repeats: int = 15
    # a. fine-tune
    train_resolution: int = 64
    train_batch: int = 4
    lora_rank: int = 4
    # b. synthesis
    sample_resolution: int = 64
    sample_steps: int = 45
    guidance_scale: float = 1.22
    sample_batch: int = 4
    sample_pairs: int = 4              # pairs per timed call (a multiple of sample_batch)
    synthesis_repeats: int = 5
    # c. downstream
    classifier: str = "resnet34"
    classifier_size: int = 32
    classifier_batch: int = 8
    segmenter: str = "unet_resnet34"
    segmenter_size: int = 32
    segmenter_batch: int = 4
    downstream_steps: int = 4          # optimiser steps per timed call (one epoch over an in-memory set)
    downstream_repeats: int = 5
    # d. scaling
    scaling_resolutions: list[int] = field(default_factory=lambda: [64, 128, 256])
    scaling_batches: list[int] = field(default_factory=lambda: [1, 2, 4])
    scaling_repeats: int = 5
    scaling_seconds: float = 20.0      # a setting whose steps are slower gets fewer timed steps (≥ 2)

    @classmethod
    def for_preset(cls, preset: str, device: str, quick: bool) -> "Settings":
        if preset not in PRESETS:
            raise SystemExit(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
        s = cls(preset=preset, device=device, quick=quick)
        if preset == "sd2-base-random":   # the paper's scale: 256 px fine-tune, 512 px / 45-step synthesis
            s.train_resolution, s.sample_resolution = 256, 512
            s.sample_batch, s.sample_pairs = 8, 16
            s.classifier_size, s.classifier_batch = 224, 32
            s.segmenter_size, s.segmenter_batch = 256, 8
            s.downstream_steps = 10
            s.repeats, s.warmup = 15, 5
        if quick:
            s.repeats, s.warmup = 5, 1
            s.synthesis_repeats, s.downstream_repeats, s.scaling_repeats = 3, 2, 2
            s.downstream_steps = 2
            if preset == "tiny":
                s.sample_steps = 20
                s.scaling_resolutions = [32, 64]
                s.scaling_batches = [1, 2]
        return s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------- data

def prompts_for(n: int, seed: int = 0) -> list[str]:
    """The paper's class prompt, cycling over the HAM10000 classes."""
    cats = list(HAM10000_CATEGORIES)
    return [template_prompt(cats[(seed + i) % len(cats)]) for i in range(n)]


def toy_batch(n: int, resolution: int, seed: int = 0) -> dict[str, Any]:
    """n procedural toy pairs: image Nx3xRxR in [0, 1], mask Nx1xRxR in {0, 1}, label, prompt."""
    from components.data.toy import render_sample

    cats = list(HAM10000_CATEGORIES)
    size = max(resolution, 16)
    images, masks, labels = [], [], []
    for i in range(n):
        label = (seed + i) % len(cats)
        sample = render_sample(seed, i, cats[label], size=size)
        images.append(torch.from_numpy(sample.image).permute(2, 0, 1).float() / 255)
        masks.append(torch.from_numpy((sample.mask > 0).astype(np.float32))[None])
        labels.append(label)
    image, mask = torch.stack(images), torch.stack(masks)
    if size != resolution:
        image = torch.nn.functional.interpolate(image, size=resolution, mode="bilinear", antialias=True)
        mask = torch.nn.functional.interpolate(mask, size=resolution, mode="nearest")
    return {"image": image, "mask": mask, "label": torch.tensor(labels), "prompt": prompts_for(n, seed)}


class InMemoryPairs(torch.utils.data.Dataset):
    """A toy batch as a Dataset of the dicts components.data.torch_dataset.PairDataset yields."""

    def __init__(self, batch: dict[str, Any]):
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch["label"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.batch["image"][i], "mask": self.batch["mask"][i], "label": int(self.batch["label"][i]),
                "image_id": f"bench_{i:05d}", "description": self.batch["prompt"][i]}


# --------------------------------------------------------------------------------------------- models

class ModelDirs:
    """Base model, 4-channel VAE and a random LoRA, written once per run into a temporary directory.

    The preset is built once with seeded random weights and saved as a diffusers folder; every variant then
    loads that folder through the public loaders (fast, and identical weights everywhere, even for the
    1.3 B-parameter `sd2-base-random`, whose random initialisation alone takes about a minute on a CPU).
    """

    def __init__(self, preset: str, resolution: int, lora_rank: int = 4, build_device: str | None = None):
        self.preset, self.resolution, self.lora_rank = preset, resolution, lora_rank
        self.build_device = build_device     # initialise the random weights there (CUDA: seconds, not a minute)
        self.root = Path(tempfile.mkdtemp(prefix="skindualgen-bench-"))

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @cached_property
    def base_ref(self) -> str:
        """The saved base-model folder (what `base_model` and DualGenerator.from_dirs get)."""
        from components.generator.base_models import build_preset, save_base

        where = torch.device(self.build_device) if self.build_device else contextlib.nullcontext()
        with where:
            model = build_preset(self.preset, resolution=self.resolution if self.preset == "tiny" else None, seed=0)
        return str(save_base(model.to("cpu"), self.root / "base"))

    def build(self):
        """A fresh BaseModel (3-channel VAE) loaded from the saved folder, on the CPU in fp32."""
        from components.generator.base_models import load_base

        return load_base(self.base_ref)

    def _component(self, component: str):
        from diffusers import AutoencoderKL, UNet2DConditionModel

        cls = AutoencoderKL if component == "vae" else UNet2DConditionModel
        return cls.from_pretrained(self.base_ref, subfolder=component)

    @cached_property
    def vae_dir(self) -> Path:
        from components.generator.vae_surgery import expand_to_dual

        out = self.root / "vae4"
        expand_to_dual(self._component("vae")).save_pretrained(out, safe_serialization=True)
        return out

    @cached_property
    def lora_dir(self) -> Path:
        from components.generator import lora

        unet = self._component("unet")
        lora.add_lora(unet, self.lora_rank, float(self.lora_rank))
        return lora.save_lora(unet, self.root / "lora", {"resolution": self.resolution, "base_model": "bench"})


_SHARED: dict[tuple[str, int, int], ModelDirs] = {}


def model_dirs(preset: str, resolution: int, lora_rank: int = 4, build_device: str | None = None) -> ModelDirs:
    """ModelDirs shared by every benchmark of a run (the SD 2 folder is built and written once), removed at exit.

    build_device applies to the first call of a key (the one that creates the folders)."""
    key = (preset, resolution if preset == "tiny" else 0, lora_rank)
    if key not in _SHARED:
        if not _SHARED:
            atexit.register(cleanup_model_dirs)
        _SHARED[key] = ModelDirs(preset, resolution, lora_rank, build_device)
    return _SHARED[key]


def cleanup_model_dirs() -> None:
    while _SHARED:
        _SHARED.popitem()[1].cleanup()
