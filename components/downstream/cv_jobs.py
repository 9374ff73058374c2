"""One training of the cross-validation protocol as a self-contained, picklable job.

A `CVJob` carries the rows it trains and evaluates on (with their dataset folders) and the resolved settings;
`JobRunner.run(job)` trains, evaluates on every evaluation set and returns a `JobResult` (the weights on the CPU,
losses, scores). Nothing is written: the runner that made the job records the result. The same job therefore
runs in this process or on a Ray worker (components/distributed/cv_workers.py) with the same outcome.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
import torch
from torch.utils.data import Dataset

from components.data.transforms import build_transforms
from components.device import resolve_device
from components.downstream import cv
from components.downstream.config import Resolved
from components.downstream.tasks import Evaluation
from components.downstream.training import TrainSettings

CACHE_EVAL_MAX_SIZE = 256   # evaluation images are kept in memory up to this side length


@dataclass
class CVJob:
    """Train `arch` on one fold's `train_set` and evaluate it on the named evaluation sets."""
    task: Any
    cfg: Resolved
    arch: str
    fingerprint: str
    seed: int                                        # the protocol repetition: fold shuffle and initial weights
    fold: int
    train_set: str
    frame: pd.DataFrame                              # training rows (real and/or synthetic, with their roots)
    eval_frames: dict[str, pd.DataFrame]             # val / test / external rows (real only)
    categories: list[str]
    steps: int = 0                                   # > 0: optimiser steps (equal_steps), else epochs
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, int, str]:
        return self.arch, self.seed, self.fold, self.train_set

    @property
    def run_seed(self) -> int:
        """Seed of this training's weights, order and augmentation (shared by the training sets of a fold)."""
        return self.seed * 1000 + self.fold


@dataclass
class JobResult:
    """What one training produced; the runner records it (rows, checkpoint, tracking)."""
    job: CVJob
    state_dict: dict[str, torch.Tensor]
    losses: list[float]
    train_seconds: float
    evaluations: dict[str, Evaluation]
    eval_seconds: dict[str, float]
    n_eval: dict[str, int]


Executor = Callable[[Iterable[CVJob]], Iterator[JobResult]]


class CachedDataset(Dataset):
    """Keeps the items of a deterministic (evaluation) dataset after their first load."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        if i not in self._items:
            self._items[i] = self.dataset[i]
        return self._items[i]


class JobRunner:
    """Runs jobs one after another, keeping evaluation sets in memory between the jobs that share them."""

    def __init__(self, device: str = "auto"):
        self.device = resolve_device(device)
        self._eval_cache: dict[tuple, Dataset] = {}

    def run(self, job: CVJob) -> JobResult:
        task, cfg = job.task, job.cfg
        settings, eval_settings = job_settings(cfg, self.device, job)
        train_tf = build_transforms(task.transform_kind, cfg.image_size, train=True, seed=job.run_seed)
        torch.manual_seed(job.run_seed)  # same initial weights for the training sets of a fold
        model = task.create(job.arch, cfg, len(job.categories))
        train_ds = cv.make_dataset(job.frame, train_tf, job.categories, require_mask=task.needs_masks)
        history = task.train(model, train_ds, settings)
        evaluations, seconds, sizes = {}, {}, {}
        for name, frame in job.eval_frames.items():
            ds = self._eval_dataset(job, name, frame)
            t0 = time.perf_counter()
            evaluations[name] = task.evaluate(model, ds, eval_settings, cfg, len(job.categories))
            seconds[name], sizes[name] = round(time.perf_counter() - t0, 2), len(ds)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return JobResult(job, state, list(history["loss_history"]), float(history["train_seconds"]), evaluations,
                         seconds, sizes)

    def map(self, jobs: Iterable[CVJob]) -> Iterator[JobResult]:
        """The in-process executor: each job in order."""
        for job in jobs:
            yield self.run(job)

    def _eval_dataset(self, job: CVJob, name: str, frame: pd.DataFrame) -> Dataset:
        # every job evaluates on the same val / test / external rows: built once, kept in memory
        key = (name, len(frame), job.cfg.image_size, job.task.transform_kind)
        if key not in self._eval_cache:
            tf = build_transforms(job.task.transform_kind, job.cfg.image_size, train=False)
            ds = cv.make_eval_dataset(frame, tf, job.categories, f"{name} set", job.task.needs_masks)
            if job.cfg.image_size > CACHE_EVAL_MAX_SIZE:
                return ds
            self._eval_cache[key] = CachedDataset(ds)
        return self._eval_cache[key]


def job_settings(cfg: Resolved, device: torch.device, job: CVJob) -> tuple[TrainSettings, TrainSettings]:
    """Training and evaluation settings of one training."""
    pin = cfg.pin_memory and device.type == "cuda"
    train = TrainSettings(
        epochs=cfg.epochs_for(job.arch), steps=job.steps, batch_size=cfg.batch_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, lr_schedule=cfg.lr_schedule, device=str(device), amp=cfg.amp,
        num_workers=cfg.num_workers, pin_memory=pin, seed=job.run_seed, progress=cfg.progress,
        class_balance=cfg.class_balance if job.task.name == "classify" else "none",
        desc=f"{job.arch} seed {job.seed} fold {job.fold} {job.train_set}")
    evaluate = TrainSettings(batch_size=cfg.eval_batch_size, device=str(device), amp=cfg.amp,
                             num_workers=cfg.num_workers, pin_memory=pin)
    return train, evaluate
