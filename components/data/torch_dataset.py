"""PyTorch view of a dataset folder: image, mask, label, id and description per manifest row."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from components.data import manifest
from components.errors import DataError


class PairDataset(Dataset):
    """Rows of `df` (a manifest of the dataset at `root`) as tensors.

    Items are dicts: image (float32 3xHxW in [0, 1]), mask (float32 1xHxW in {0, 1}), label (index into
    `categories`), image_id, description. `transform` is a joint albumentations pipeline
    (components.data.transforms.build_transforms). Without `require_mask`, rows without a mask get an all-zero
    mask and `has_mask=False`.
    """

    def __init__(self, root: str | Path, df: pd.DataFrame, transform: Callable | None = None,
                 categories: list[str] | tuple[str, ...] | None = None, require_mask: bool = True):
        self.root = Path(root)
        self.df = df.reset_index(drop=True)
        self.transform = transform
        self.categories = list(categories) if categories is not None else sorted(self.df["category"].unique())
        unknown = sorted(set(self.df["category"]) - set(self.categories))
        if unknown:
            raise DataError(f"{self.root / manifest.MANIFEST_NAME}: categories {unknown} are not in the configured "
                            f"list {self.categories}; re-run prepare with the same categories")
        self.require_mask = require_mask
        if require_mask:
            manifest.require_masks(self.df, self.root, stage="this dataset")
        self._index = {c: i for i, c in enumerate(self.categories)}

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, i: int) -> dict:
        row = self.df.iloc[i]
        pair = manifest.load_pair(self.root, row, require_mask=self.require_mask)
        image = pair.image
        has_mask = pair.mask is not None
        mask = pair.mask if has_mask else np.zeros(image.shape[:2], np.uint8)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image).transpose(2, 0, 1).astype(np.float32) / 255.0),
            "mask": torch.from_numpy((np.ascontiguousarray(mask) > 0).astype(np.float32)[None]),
            "label": self._index[row["category"]],
            "image_id": str(row["image_id"]),
            "description": str(row["description"]),
            "has_mask": has_mask,
        }


def loader_kwargs(num_workers: int, device: torch.device | str, pin_memory: bool = True, persistent: bool = True,
                  prefetch_factor: int = 2) -> dict:
    """DataLoader keyword arguments: pinned memory only on CUDA (for non_blocking copies); with workers,
    `persistent` workers (kept between passes over the loader) each loading `prefetch_factor` batches ahead."""
    kwargs: dict = {"num_workers": int(num_workers),
                    "pin_memory": bool(pin_memory) and torch.device(device).type == "cuda"}
    if num_workers > 0:
        kwargs.update(persistent_workers=bool(persistent), prefetch_factor=int(prefetch_factor))
    return kwargs
