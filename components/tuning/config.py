"""Typed config of the `tune` section."""
from __future__ import annotations

from dataclasses import dataclass, field

from components.errors import ConfigError

MIN_SAMPLES = 3   # the jackknife standard error needs at least three generated samples


@dataclass
class TuneConfig:
    ray_address: str = ""              # '' = local Ray; 'auto' or host:port joins an existing cluster
    num_cpus: int = 0                  # local Ray only; 0 = all cores
    cpus_per_trial: int = 1            # every trial (fine-tune or sampling) also gets one GPU when there are GPUs
    # phase 1: one fine-tune per rank, each a Ray task on its own GPU
    lora_ranks: list[int] = field(default_factory=lambda: [2, 4, 8])
    max_epochs: int = 3                # fine-tune epochs of every rank
    # phase 2: per rank, OptunaSearch over sampling settings on that rank's fixed LoRA (no re-training)
    trials_per_rank: int = 2
    steps_min: int = 20
    steps_max: int = 60
    guidance_min: float = 1.0
    guidance_max: float = 7.5
    objective: str = "kid_vae"         # registry key in components.tuning.objectives
    samples_per_trial: int = 200       # generated pairs per sampling trial (same prompts and seeds in every trial)
    reference_images: int = 1000       # real training images the samples are compared with; 0 = all of them
    sample_batch_size: int = 8
    max_concurrent: int = 2            # sampling trials of one rank at a time
    seed: int = 0
    storage: str = "tune_results"      # resolved to an absolute path (trials chdir into their own folder)
    name: str = "lora_sweep"
    resume: bool = True                # reuse complete LoRAs, restore interrupted sampling studies
    best_out: str = "metrics/tune_best.yaml"
    metrics_out: str = "metrics/tune.json"
    # what each rank trains on / from (same files the pipeline stages produce)
    base_dir: str = "models/base"      # base model; its VAE encoder is also the feature space of the objective
    vae_dir: str = "models/vae4"
    data_dir: str = "data/real"
    descriptions: str = "data/descriptions/descriptions.csv"
    finetune_params: str = "params.yaml"   # finetune section used as each rank's base config
    eval_resolution: int = 0           # 0 = the finetune resolution

    def __post_init__(self) -> None:
        if not self.lora_ranks or any(int(r) < 1 for r in self.lora_ranks):
            raise ConfigError(f"tune.lora_ranks: {self.lora_ranks}; list ranks >= 1, e.g. [2, 4, 8]")
        if len(set(self.lora_ranks)) != len(self.lora_ranks):
            raise ConfigError(f"tune.lora_ranks: {self.lora_ranks} lists a rank twice; each rank is trained once")
        for name in ("max_epochs", "trials_per_rank", "max_concurrent", "sample_batch_size", "cpus_per_trial"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tune.{name}: {getattr(self, name)} must be >= 1")
        if self.samples_per_trial < MIN_SAMPLES:
            raise ConfigError(f"tune.samples_per_trial: {self.samples_per_trial}; the objective's standard error "
                              f"needs >= {MIN_SAMPLES} samples (default 200)")
        if self.reference_images < 0 or 0 < self.reference_images < MIN_SAMPLES:
            raise ConfigError(f"tune.reference_images: {self.reference_images}; use 0 (all) or a count "
                              f">= {MIN_SAMPLES}")
        if not 1 <= self.steps_min <= self.steps_max:
            raise ConfigError(f"tune.steps_min/steps_max: {self.steps_min}/{self.steps_max}; need "
                              f"1 <= steps_min <= steps_max")
        if not 0 <= self.guidance_min <= self.guidance_max:
            raise ConfigError(f"tune.guidance_min/guidance_max: {self.guidance_min}/{self.guidance_max}; need "
                              f"0 <= guidance_min <= guidance_max")
