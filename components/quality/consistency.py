"""Image–mask consistency: does a generated mask outline the lesion that is visible in its generated image?

A segmenter is trained on the real training pairs (downstream segmenter registry and training loop). Each
mask of a set is compared (Dice) with the segmenter's prediction on that mask's image. On the real test split
this gives the reference level (how well the segmenter itself does); a synthetic set close to it has masks
that agree with their images as well as real annotations do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from components.data.torch_dataset import PairDataset
from components.data.transforms import build_transforms
from components.device import resolve_device
from components.downstream.metrics import dice
from components.downstream.segmenters import check_size, create_segmenter
from components.downstream.training import TrainSettings, predict_masks, train_segmenter


@dataclass(frozen=True)
class SegmenterSettings:
    name: str = "tiny_unet"
    size: int = 64
    epochs: int = 8
    batch_size: int = 16
    lr: float = 0.003
    seed: int = 0
    device: str = "auto"
    progress: bool = False


def train_reference_segmenter(real_dir: str | Path, train_rows: pd.DataFrame, categories: list[str],
                              s: SegmenterSettings) -> tuple[torch.nn.Module, dict]:
    """Segmenter trained on the real training pairs (augmented, resized to s.size); returns (model, history)."""
    check_size(s.name, s.size)
    torch.manual_seed(s.seed)
    model = create_segmenter(s.name, num_classes=1)
    data = PairDataset(real_dir, train_rows, build_transforms("segment", s.size, train=True, seed=s.seed),
                       categories=categories)
    device = resolve_device(s.device)
    history = train_segmenter(model, data, TrainSettings(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                                                         device=str(device), seed=s.seed, progress=s.progress,
                                                         desc="consistency segmenter"))
    return model, history


def _resize_stack(images: np.ndarray, size: int) -> torch.Tensor:
    if images.shape[1] != size or images.shape[2] != size:
        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.LANCZOS)) for im in images])
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def consistency_dice(model: torch.nn.Module, images: np.ndarray, masks: list[np.ndarray], size: int,
                     batch_size: int = 32) -> np.ndarray:
    """Per-image Dice between each mask and the segmenter's prediction on its image (at the mask's size)."""
    preds = predict_masks(model, _resize_stack(images, size), batch_size=batch_size)[:, 0].numpy()
    out = np.empty(len(masks))
    for i, (pred, mask) in enumerate(zip(preds, masks)):
        if pred.shape != mask.shape:
            pred = np.asarray(Image.fromarray(pred * 255).resize(mask.shape[::-1], Image.NEAREST)) > 127
        out[i] = dice(pred, mask)
    return out
