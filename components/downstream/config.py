"""Typed configs of the `classify`, `segment` and `report` sections of params.yaml, and the presets.

A preset fills every training setting; a key set in params.yaml (not null) overrides the preset's value:

    python -m pipelines.classify --set preset=paper               # the paper's Table 2 settings
    python -m pipelines.classify --set epochs=1 --set n_folds=2   # the CPU preset, shortened

`paper` follows the paper (classification 224 px, batch 32, lr 1e-4, 50 epochs for DenseNet121 / ResNet34 and
40 for SqueezeNet / Swin; segmentation 512 px, batch 8, lr 1e-3, 20 epochs, Dice loss; ImageNet weights
from the local cache) and wants a GPU. `cpu` runs on the embedded toy data in minutes on a laptop CPU: one
small architecture per task trained from scratch, chosen by validation scores within that budget (a BatchNorm
CNN at 48 px, 6 epochs over the whole fold with class-balanced sampling; a U-Net with a ResNet-18 encoder at 64 px,
2 epochs, batch 8, 480 images), 3 folds. ResNet34 from scratch reached macro F1 0.29 on the validation part of
the toy data where the small CNN reaches 0.44 and a feature baseline 0.67; U-Net/ResNet34 (3 epochs, 240 images)
reached Dice 0.83, no better than Otsu thresholding, the U-Net/ResNet18 0.91.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from components.errors import ConfigError

CLASS_BALANCE: tuple[str, ...] = ("none", "loss", "sampler")   # how classifiers meet class imbalance (training.py)
from components.registry import Registry

TRAIN_SETS: tuple[str, ...] = ("real", "synthetic", "hybrid", "real+synthetic", "real+augmentation")

CLASSIFY_PRESETS: Registry[dict[str, Any]] = Registry("classify preset", hint="set classify.preset")
CLASSIFY_PRESETS.register("paper", {
    "architectures": ["densenet121", "resnet34", "squeezenet1_1", "swin"],
    "n_folds": 5, "image_size": 224, "batch_size": 32, "lr": 1e-4, "lr_schedule": "constant",
    "epochs": {"densenet121": 50, "resnet34": 50, "squeezenet1_1": 40, "swin": 40, "default": 50},
    "max_train_images": 0, "pretrained": "cache", "num_workers": 4, "pin_memory": True,
    "eval_batch_size": 128, "n_seeds": 1, "class_balance": "none",
})
CLASSIFY_PRESETS.register("cpu", {
    # Deep models from scratch need far more steps than a CPU budget allows (SqueezeNet stays at the majority
    # class, ResNet34 reaches macro F1 0.29 on toy validation images); the small BatchNorm CNN with class-balanced
    # sampling reaches 0.44 in about the same time.
    "architectures": ["small_cnn"],
    "n_folds": 3, "image_size": 48, "batch_size": 32, "lr": 1e-3, "lr_schedule": "cosine",
    "epochs": {"default": 6},
    "max_train_images": 0, "pretrained": "", "num_workers": 0, "pin_memory": False,
    "eval_batch_size": 128, "n_seeds": 1, "class_balance": "sampler",
})

SEGMENT_PRESETS: Registry[dict[str, Any]] = Registry("segment preset", hint="set segment.preset")
SEGMENT_PRESETS.register("paper", {
    "architectures": ["unet_resnet34", "deeplabv3plus_resnet50"],
    "n_folds": 5, "image_size": 512, "batch_size": 8, "lr": 1e-3, "lr_schedule": "constant",
    "epochs": {"default": 20},
    "max_train_images": 0, "pretrained": "cache", "num_workers": 4, "pin_memory": True,
    "eval_batch_size": 16, "n_seeds": 1, "class_balance": "none",
})
SEGMENT_PRESETS.register("cpu", {
    "architectures": ["unet_resnet18"],
    "n_folds": 3, "image_size": 64, "batch_size": 8, "lr": 1e-3, "lr_schedule": "cosine",
    "epochs": {"default": 2},
    "max_train_images": 480, "pretrained": "", "num_workers": 0, "pin_memory": False,
    "eval_batch_size": 64, "n_seeds": 1, "class_balance": "none",
})

PRESETS = {"classify": CLASSIFY_PRESETS, "segment": SEGMENT_PRESETS}


@dataclass(frozen=True)
class DownstreamConfig:
    """One downstream task's section (classify or segment). null (None) = the preset's value."""
    preset: str = "cpu"
    real_dir: str = "data/real"
    synthetic_dir: str = "data/synthetic"
    external_dir: str = ""              # HAM10000-format folder (or a prepared dataset folder): Table 3
    out_dir: str = ""                   # models/downstream/<task>
    metrics_file: str = ""              # metrics/<task>.json
    architectures: list[str] | None = None
    train_sets: list[str] = field(default_factory=lambda: list(TRAIN_SETS))
    n_folds: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    lr: float | None = None
    lr_schedule: str | None = None      # cosine | constant
    weight_decay: float = 0.0
    epochs: int | None = None           # one value for every architecture
    max_train_images: int | None = None  # cap per training set (0: the whole fold), same cap for all three
    pretrained: str | None = None       # "" scratch | "cache" | path (segment: encoder weights)
    seed: int = 42
    n_seeds: int | None = None          # repetitions of the k-fold protocol with seeds seed, seed + 1, ...
    class_balance: str | None = None    # classify: none | loss (inverse-frequency weights) | sampler (balanced draws)
    feature_baseline: bool = True       # score a feature baseline (gradient boosting / Otsu) on the test split
    equal_steps: bool = True            # every training set of a fold trains the optimiser steps of the real set
    device: str = "auto"                # auto | cpu | cuda | cuda:1 ...
    amp: bool = True                    # mixed precision on CUDA
    num_workers: int | None = None
    pin_memory: bool | None = None
    threshold: float = 0.5              # segment: sigmoid threshold of the predicted mask
    register: bool = True               # register the best model of each architecture (alias challenger)
    progress: bool = True
    ray_address: str = ""               # "" with workers 0: trainings one after another in this process
    workers: int = 0                    # > 0: that many Ray workers (one GPU each when the cluster has GPUs)


@dataclass(frozen=True)
class Resolved:
    """A task's settings after the preset was applied: what actually runs."""
    task: str
    preset: str
    real_dir: str
    synthetic_dir: str
    external_dir: str
    out_dir: str
    metrics_file: str
    architectures: list[str]
    train_sets: list[str]
    n_folds: int
    image_size: int
    batch_size: int
    eval_batch_size: int
    lr: float
    lr_schedule: str
    weight_decay: float
    epochs: dict[str, int]
    max_train_images: int
    pretrained: str
    seed: int
    n_seeds: int
    class_balance: str
    feature_baseline: bool
    equal_steps: bool
    device: str
    amp: bool
    num_workers: int
    pin_memory: bool
    threshold: float
    register: bool
    progress: bool
    ray_address: str = ""
    workers: int = 0

    def epochs_for(self, arch: str) -> int:
        return int(self.epochs.get(arch, self.epochs.get("default", 1)))

    @property
    def seeds(self) -> list[int]:
        """The seeds of the repeated protocol: fold shuffles and initial weights differ per seed."""
        return [self.seed + r for r in range(self.n_seeds)]

    def fingerprint(self, arch: str, data_hashes: dict[str, str]) -> str:
        """Short hash of everything that changes an architecture's results (not paths, workers, progress)."""
        keys = ("task", "n_folds", "image_size", "batch_size", "lr", "lr_schedule", "weight_decay",
                "max_train_images", "pretrained", "seed", "equal_steps", "class_balance", "threshold")
        payload = {k: getattr(self, k) for k in keys}
        payload.update(arch=arch, epochs=self.epochs_for(arch), data=data_hashes)
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve(cfg: DownstreamConfig, task: str) -> Resolved:
    """Apply the preset of `task` ('classify' / 'segment') under the explicit keys of `cfg`."""
    base = PRESETS[task].create(cfg.preset)
    values = dataclasses.asdict(cfg)

    def pick(key: str):
        return values[key] if values.get(key) is not None else base[key]

    epochs = dict(base["epochs"])
    if cfg.epochs is not None:
        epochs = {"default": int(cfg.epochs)}
    unknown_sets = sorted(set(cfg.train_sets) - set(TRAIN_SETS))
    if unknown_sets or not cfg.train_sets:
        raise ConfigError(f"{task}.train_sets={cfg.train_sets}: use a non-empty subset of {list(TRAIN_SETS)}")
    resolved = Resolved(
        task=task, preset=cfg.preset, real_dir=cfg.real_dir, synthetic_dir=cfg.synthetic_dir,
        external_dir=cfg.external_dir or "",
        out_dir=cfg.out_dir or f"models/downstream/{task}",
        metrics_file=cfg.metrics_file or f"metrics/{task}.json",
        architectures=list(pick("architectures")), train_sets=[s for s in TRAIN_SETS if s in cfg.train_sets],
        n_folds=int(pick("n_folds")), image_size=int(pick("image_size")), batch_size=int(pick("batch_size")),
        eval_batch_size=int(pick("eval_batch_size")), lr=float(pick("lr")), lr_schedule=str(pick("lr_schedule")),
        weight_decay=float(cfg.weight_decay), epochs=epochs, max_train_images=int(pick("max_train_images")),
        pretrained=str(pick("pretrained") or ""), seed=int(cfg.seed), n_seeds=int(pick("n_seeds")),
        class_balance=str(pick("class_balance")), feature_baseline=bool(cfg.feature_baseline),
        equal_steps=bool(cfg.equal_steps), device=cfg.device, amp=bool(cfg.amp),
        num_workers=int(pick("num_workers")), pin_memory=bool(pick("pin_memory")), threshold=float(cfg.threshold),
        register=bool(cfg.register), progress=bool(cfg.progress), ray_address=cfg.ray_address,
        workers=int(cfg.workers),
    )
    _check(resolved)
    return resolved


def _check(r: Resolved) -> None:
    where = r.task
    if r.class_balance not in CLASS_BALANCE:
        raise ConfigError(f"{where}.class_balance={r.class_balance!r}: use one of {list(CLASS_BALANCE)}")
    if r.n_seeds < 1:
        raise ConfigError(f"{where}.n_seeds={r.n_seeds}: repeat the protocol at least once (1)")
    if r.n_folds < 2:
        raise ConfigError(f"{where}.n_folds={r.n_folds}: cross-validation needs at least 2 folds")
    if not r.architectures:
        raise ConfigError(f"{where}.architectures is empty; name at least one model")
    if r.image_size < 8 or r.batch_size < 1 or r.eval_batch_size < 1:
        raise ConfigError(f"{where}: image_size={r.image_size}, batch_size={r.batch_size}: use positive sizes "
                          f"(image_size >= 8)")
    if r.lr <= 0:
        raise ConfigError(f"{where}.lr={r.lr}: the learning rate must be positive")
    if r.lr_schedule not in ("cosine", "constant"):
        raise ConfigError(f"{where}.lr_schedule={r.lr_schedule!r}: use cosine or constant")
    if any(v < 1 for v in r.epochs.values()):
        raise ConfigError(f"{where}.epochs={r.epochs}: every architecture needs at least one epoch")
    if r.max_train_images < 0:
        raise ConfigError(f"{where}.max_train_images={r.max_train_images}: use 0 (whole fold) or a positive cap")
    if r.workers < 0:
        raise ConfigError(f"{where}.workers={r.workers}: use 0 (in this process) or a number of Ray workers")
    if not 0.0 < r.threshold < 1.0:
        raise ConfigError(f"{where}.threshold={r.threshold}: use a value strictly between 0 and 1")


@dataclass(frozen=True)
class ReportConfig:
    """The `report` section: where the recorded results are and what the figures show."""
    classify_results: str = "models/downstream/classify/results.csv"
    segment_results: str = "models/downstream/segment/results.csv"
    classify_metrics: str = "metrics/classify.json"   # its fingerprints select the current rows of the CSV
    segment_metrics: str = "metrics/segment.json"
    classify_models: str = "models/downstream/classify"
    quality_metrics: str = "metrics/quality.json"
    real_dir: str = "data/real"
    out_dir: str = "reports"
    figures_dir: str = "reports/figures/downstream"
    metrics_file: str = "metrics/report.json"
    xai: bool = True
    xai_architectures: list[str] = field(default_factory=list)   # empty: every classifier with checkpoints
    xai_image_ids: list[str] = field(default_factory=list)       # empty: one test image per class
    xai_occlusion_window: int = 0                                # 0: image_size // 8
    xai_size: int = 0                                            # 0: the size the models were trained at
    classify_metric: str = "f1"                                  # bar plot metric
    segment_metric: str = "dice"
    seed: int = 42
