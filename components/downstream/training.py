"""Training and inference loops for the downstream classifiers and segmenters.

The public API other stages use (the quality stage's image–mask consistency check among them):

    model = create_segmenter("unet_resnet34")
    train_segmenter(model, PairDataset(...), TrainSettings(epochs=5, batch_size=8, lr=1e-3))
    masks = predict_masks(model, images)            # Bx3xHxW in [0, 1] → Bx1xHxW uint8 {0, 1}

Datasets yield dicts with "image" (3xHxW float in [0, 1]), "mask" (1xHxW {0, 1}) and "label" (int), as
components.data.torch_dataset.PairDataset does. On CUDA, training runs under autocast (bf16 where the GPU
supports it, else fp16 with a gradient scaler) with cuDNN autotuning, pinned batches and non_blocking copies;
on CPU in fp32.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, WeightedRandomSampler

from components.data.torch_dataset import PairDataset, loader_kwargs
from components.downstream.config import CLASS_BALANCE
from components.downstream.metrics import ClassificationMeter, SegmentationMeter
from components.downstream.segmenters import dice_loss
from components.progress import progress_bar


@dataclass(frozen=True)
class TrainSettings:
    """How one model is trained and evaluated."""
    epochs: int = 1
    steps: int = 0                   # > 0: exactly this many optimiser steps (passes over the data repeat or stop
                                     #   early), so training sets of different sizes get the same budget
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"      # cosine | constant
    device: str = "cpu"
    amp: bool = True                 # autocast on CUDA (ignored on CPU)
    num_workers: int = 0
    pin_memory: bool = False
    seed: int = 0
    progress: bool = False
    desc: str = "train"
    class_balance: str = "none"      # classifiers: none | loss (inverse-frequency class weights) | sampler




def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _use_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed input sizes: autotuned convolutions pay off after one step




def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Class index of every item, read from the manifest rows of PairDatasets (and ConcatDatasets of them)
    without decoding images; other datasets are iterated."""
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([dataset_labels(d) for d in dataset.datasets]) if dataset.datasets else np.zeros(0, int)
    if isinstance(dataset, PairDataset):
        return dataset.df["category"].map({c: i for i, c in enumerate(dataset.categories)}).to_numpy(dtype=int)
    return np.asarray([int(dataset[i]["label"]) for i in range(len(dataset))], dtype=int)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights N / (K · n_c) over the K classes present; 0 for absent classes."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def make_loader(dataset: Dataset, settings: TrainSettings, train: bool,
                sample_weights: np.ndarray | None = None) -> DataLoader:
    """A DataLoader with the settings' workers (persistent across a training's epochs) and pinned memory (CUDA
    only); training shuffles (seeded) and drops a last batch of one (BatchNorm cannot train on a single sample).
    With `sample_weights`, training draws len(dataset) items per epoch with replacement in those proportions."""
    generator = torch.Generator().manual_seed(settings.seed)
    drop_last = train and len(dataset) % settings.batch_size == 1
    sampler = None
    if train and sample_weights is not None:
        sampler = WeightedRandomSampler(torch.as_tensor(sample_weights, dtype=torch.double), len(dataset),
                                        replacement=True, generator=generator)
    return DataLoader(dataset, batch_size=settings.batch_size, shuffle=train and sampler is None, sampler=sampler,
                      drop_last=drop_last, generator=generator if train and sampler is None else None,
                      **loader_kwargs(settings.num_workers, settings.device, settings.pin_memory, persistent=train))


def _fit(model: nn.Module, dataset: Dataset, settings: TrainSettings, loss_fn, target_key: str,
         sample_weights: np.ndarray | None = None) -> dict:
    device = torch.device(settings.device)
    _use_device(device)
    torch.manual_seed(settings.seed)
    model.to(device).train()
    loader = make_loader(dataset, settings, train=True, sample_weights=sample_weights)
    if len(loader) == 0:
        raise ValueError(f"{settings.desc}: the training set is empty")
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    total_steps = settings.steps if settings.steps > 0 else max(1, settings.epochs * len(loader))
    if settings.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    elif settings.lr_schedule == "constant":
        scheduler = None
    else:
        raise ValueError(f"lr_schedule {settings.lr_schedule!r}: use 'cosine' or 'constant'")
    amp_dtype = _amp_dtype(device, settings.amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    history: list[float] = []
    start = time.perf_counter()
    bar = progress_bar(total=total_steps, desc=settings.desc, disable=not settings.progress, leave=False, unit="step")
    step = 0
    while step < total_steps:   # one pass over the loader per loop; the last pass stops at total_steps
        running = torch.zeros((), device=device)
        n_batches = 0
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            target = batch[target_key].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(model(images).float(), target)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            running += loss.detach()  # summed on device: no host sync per step
            n_batches += 1
            step += 1
            bar.update(1)
            if step >= total_steps:
                break
        history.append(float(running) / max(n_batches, 1))
    bar.close()
    model.eval()
    return {"loss_history": history, "train_seconds": time.perf_counter() - start,
            "train_images": len(dataset), "steps": total_steps}


def train_classifier(model: nn.Module, dataset: Dataset, settings: TrainSettings) -> dict:
    """Train with cross-entropy on dataset["label"]; returns loss per pass over the data and timing.

    `settings.class_balance`: "loss" weighs each class's cross-entropy by `class_weights`, "sampler" draws
    items with probability proportional to 1 / (their class's count), "none" leaves the data as it is.
    """
    if settings.class_balance not in CLASS_BALANCE:
        raise ValueError(f"class_balance {settings.class_balance!r}: use one of {list(CLASS_BALANCE)}")
    weight, sample_weights = None, None
    if settings.class_balance != "none":
        labels = dataset_labels(dataset)
        weights = class_weights(labels, int(getattr(model, "num_classes", labels.max() + 1)))
        if settings.class_balance == "loss":
            weight = weights.to(settings.device)
        else:
            sample_weights = weights.numpy()[labels]
    ce = nn.CrossEntropyLoss(weight=weight)
    return _fit(model, dataset, settings, lambda logits, y: ce(logits, y.long()), "label", sample_weights)


def train_segmenter(model: nn.Module, dataset: Dataset, settings: TrainSettings) -> dict:
    """Train with the Dice loss on dataset["mask"]; returns loss per epoch and timing."""
    loss = dice_loss(getattr(model, "num_classes", 1))
    return _fit(model, dataset, settings, loss, "mask")


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Model outputs for a stack of [0, 1] images, in batches, on the model's device; returned on CPU."""
    device = next(model.parameters()).device
    model.eval()
    outs = [model(images[i:i + batch_size].to(device, non_blocking=True)).float().cpu()
            for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


@torch.no_grad()
def predict_masks(model: nn.Module, images: torch.Tensor, threshold: float = 0.5,
                  batch_size: int = 32) -> torch.Tensor:
    """Binary masks (Bx1xHxW uint8) for [0, 1] images: sigmoid(logit) > threshold."""
    logits = predict_logits(model, images, batch_size)
    return (torch.sigmoid(logits) > threshold).to(torch.uint8)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: Dataset, num_classes: int, settings: TrainSettings) -> dict:
    """Classification scores (metrics.classification_scores) of `model` over `dataset`, and under "per_image" one
    row per image (image_id, label, prediction) for paired comparisons."""
    device = torch.device(settings.device)
    _use_device(device)
    model.to(device).eval()
    meter = ClassificationMeter(num_classes)
    amp_dtype = _amp_dtype(device, settings.amp)
    ids: list[str] = []
    for batch in make_loader(dataset, settings, train=False):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(batch["image"].to(device, non_blocking=True))
        meter.update(logits.float(), batch["label"])
        ids.extend(batch["image_id"])
    scores = meter.compute()
    preds, targets = torch.cat(meter.preds).tolist(), torch.cat(meter.targets).tolist()
    scores["per_image"] = [{"image_id": i, "label": t, "prediction": p} for i, t, p in zip(ids, targets, preds)]
    return scores


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, dataset: Dataset, settings: TrainSettings,
                       threshold: float = 0.5) -> tuple[dict, list[dict]]:
    """Mean segmentation scores over `dataset` and the per-image rows (with image_id)."""
    device = torch.device(settings.device)
    _use_device(device)
    model.to(device).eval()
    meter = SegmentationMeter()
    amp_dtype = _amp_dtype(device, settings.amp)
    for batch in make_loader(dataset, settings, train=False):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(batch["image"].to(device, non_blocking=True))
        preds = (torch.sigmoid(logits.float()) > threshold).cpu().numpy().astype(np.uint8)
        meter.update(preds, batch["mask"].numpy(), list(batch["image_id"]))
    return meter.compute(), meter.per_image
