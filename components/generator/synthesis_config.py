"""Typed config of the `synthesize` stage (params.yaml section `synthesize`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from components.errors import ConfigError
from components.generator.pair_filter import FilterConfig
from components.generator.synthesis_writer import GenerationSettings


@dataclass
class SynthesizeConfig:
    """Where to read and write, what to plan, how to sample and which pairs to refuse."""
    real_dir: str = "data/real"
    descriptions_file: str = "data/descriptions/descriptions.csv"  # "" = the real manifest's description column
    base_dir: str = "models/base"
    vae_dir: str = "models/vae4"
    lora_dir: str = "models/lora"      # "" = the base UNet without LoRA
    out_dir: str = "data/synthetic"
    categories: list[str] = field(default_factory=list)  # [] = the real dataset's classes (categories.json)
    mode: str = "cover"                # cover | balance | match | counts (components/generator/synthesis_plan.py)
    counts: dict[str, int] = field(default_factory=dict)
    scale: float = 1.0
    prompt_source: str = "descriptions"  # descriptions | template
    num_inference_steps: int = 30
    guidance_scale: float = 1.22
    resolution: int = 0                # 0 = the generator's own sample size (the fine-tune resolution)
    batch_size: int = 8
    mask_threshold: float = 0.5
    seed: int = 2024
    max_attempts: int = 3
    min_area_fraction: float = 0.005
    max_area_fraction: float = 0.9
    full_frame_fraction: float = 0.99
    max_components: int = 3
    pair_filter: bool = True           # false: accept every pair (plumbing runs with random weights)
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    dtype: str = "auto"                # auto | float32 | float16 | bfloat16
    compile: bool = False              # torch.compile the UNet (after the LoRA is fused)
    channels_last: bool = True         # channels_last UNet and VAE decode on CUDA (ignored on CPU)
    validate: bool = True
    memorisation: bool = True          # audit: each pair's nearest real training image (manifest nn_* columns)
    memorisation_size: int = 32        # pixel space of the audit: images down-sampled to this side
    near_copy_ratio: float = 0.5       # near_copy when nn distance < this x the real-real median nn distance
    ray_address: str = ""              # "" with workers 0: in this process; auto / host:port: a Ray cluster
    workers: int = 0                   # > 0: that many Ray actors, each loading the generator once
    cpus_per_worker: int = 1           # CPUs (torch threads) per actor on a cluster without GPUs
    progress: bool = True
    metrics_file: str = "metrics/synthesize.json"
    grid_file: str = "reports/synthesize/pairs_grid.png"  # Fig.-2-style grid (also logged to MLflow)

    def __post_init__(self) -> None:
        for key in ("num_inference_steps", "batch_size", "max_attempts"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"synthesize.{key}: {value!r}; use a whole number >= 1")
        if self.resolution < 0:
            raise ConfigError(f"synthesize.resolution: {self.resolution}; use 0 (the generator's size) or a size in px")
        if self.workers < 0 or self.cpus_per_worker < 1:
            raise ConfigError(f"synthesize.workers={self.workers}, cpus_per_worker={self.cpus_per_worker}: use "
                              f"workers >= 0 (0: in this process) and cpus_per_worker >= 1")
        if not isinstance(self.memorisation_size, int) or self.memorisation_size < 2:
            raise ConfigError(f"synthesize.memorisation_size: {self.memorisation_size!r}; use an image side >= 2")
        if not 0.0 < self.near_copy_ratio < 1.0:
            raise ConfigError(f"synthesize.near_copy_ratio: {self.near_copy_ratio!r}; use a ratio in (0, 1)")
        if len(set(self.categories)) != len(self.categories):
            raise ConfigError(f"synthesize.categories: {self.categories} names a class twice; list each once")

    def generation(self) -> GenerationSettings:
        return GenerationSettings(num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                                  resolution=self.resolution, mask_threshold=self.mask_threshold,
                                  batch_size=self.batch_size, max_attempts=self.max_attempts)

    def filter(self) -> FilterConfig:
        return FilterConfig(min_area_fraction=self.min_area_fraction, max_area_fraction=self.max_area_fraction,
                            full_frame_fraction=self.full_frame_fraction, max_components=self.max_components,
                            enabled=self.pair_filter)
