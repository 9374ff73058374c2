"""Typed config of the `tune` section."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TuneConfig:
    ray_address: str = ""              # '' = local Ray; 'auto' or host:port joins an existing cluster
    num_cpus: int = 0                  # local Ray only; 0 = all cores
    cpus_per_trial: int = 1
    lora_ranks: list[int] = field(default_factory=lambda: [2, 4, 8])   # grid
    trials_per_rank: int = 2          # OptunaSearch samples per rank
    steps_min: int = 20
    steps_max: int = 60
    guidance_min: float = 1.0
    guidance_max: float = 7.5
    max_epochs: int = 3               # ASHA time axis: fine-tune epochs
    grace_period: int = 1
    reduction_factor: int = 2
    objective: str = "fd_vae"          # registry key in components.tuning.objectives
    max_concurrent: int = 2
    seed: int = 0
    storage: str = "tune_results"      # resolved to an absolute path (trials chdir into their own folder)
    name: str = "lora_sweep"
    resume: bool = True               # Tuner.restore an interrupted sweep of the same name
    best_out: str = "metrics/tune_best.yaml"
    metrics_out: str = "metrics/tune.json"
    # what each trial trains on / from (same files the pipeline stages produce)
    base_dir: str = "models/base"
    vae_dir: str = "models/vae4"
    data_dir: str = "data/real"
    descriptions: str = "data/descriptions/descriptions.csv"
    finetune_params: str = "params.yaml"   # finetune section used as the trial's base config
    eval_samples: int = 14
    eval_resolution: int = 0          # 0 = the finetune resolution
