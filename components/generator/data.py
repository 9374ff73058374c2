"""Training data of the generator stages: manifest split + prompts + seeded, resumable augmentation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from components.data import manifest
from components.data.prompts import template_prompt
from components.data.torch_dataset import PairDataset
from components.data.transforms import build_transforms
from components.errors import DataError


def load_split(data_dir: str | Path, split: str, descriptions_csv: str | Path = "",
               stage: str = "generator") -> pd.DataFrame:
    """Rows of `split` with a non-empty `prompt` column.

    Prompts are the descriptions of descriptions_csv when that file exists (describe stage), else the
    manifest's descriptions, else the paper's class template. Every row needs a mask.
    """
    df = manifest.read_manifest(data_dir)
    if descriptions_csv and Path(descriptions_csv).is_file():
        from components.describe import apply_descriptions

        df = apply_descriptions(df, descriptions_csv)
    part = df[df["split"] == split].reset_index(drop=True)
    if part.empty:
        raise DataError(f"{manifest.manifest_file(data_dir)}: no rows with split '{split}'; "
                        f"re-run `prepare` with a test_fraction that leaves both splits non-empty")
    manifest.require_masks(part, data_dir, stage)
    desc = part["description"].fillna("").astype(str).str.strip()
    part["prompt"] = [d if d else template_prompt(c) for d, c in zip(desc, part["category"])]
    return part


class SeededPairs(Dataset):
    """PairDataset whose augmentation is drawn from a seed given with the index: item (index, seed).

    A sample's augmentation then depends only on (seed, epoch, position), not on worker order, so an
    interrupted run resumes with exactly the batches it would have seen.
    """

    def __init__(self, data_dir: str | Path, df: pd.DataFrame, resolution: int, augment: bool,
                 categories: list[str]):
        self.pairs = PairDataset(data_dir, df, build_transforms("generator", resolution, train=augment),
                                 categories=categories)
        self.prompts = df["prompt"].tolist()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        self.pairs.transform.set_random_seed(int(seed))
        item = self.pairs[int(index)]
        return {"image": item["image"], "mask": item["mask"], "label": item["label"],
                "prompt": self.prompts[int(index)], "index": int(index)}


class EpochBatches(Sampler):
    """Batches of (index, augmentation seed) for one epoch, shuffled by (seed, epoch); can skip done batches.

    `set_epoch` switches epochs in place, so one DataLoader (and its persistent workers) serves every epoch:
    the loader re-reads its batch sampler at the start of each pass.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, skip_batches: int = 0,
                 drop_last: bool = True):
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.set_epoch(epoch, skip_batches)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n)
        aug = rng.integers(0, 2**31 - 1, size=self.n)
        stop = self.n - self.n % self.batch_size if self.drop_last else self.n
        self.batches = [[(int(order[i]), int(aug[i])) for i in range(s, min(s + self.batch_size, stop))]
                        for s in range(0, stop, self.batch_size)][skip_batches:]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batches_per_epoch(n: int, batch_size: int) -> int:
    if n < batch_size:
        raise DataError(f"the training split has {n} image(s), fewer than batch_size {batch_size}; "
                        f"lower batch_size or add images")
    return n // batch_size


def load_arrays(data_dir: str | Path, df: pd.DataFrame, resolution: int,
                categories: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """All rows resized (no augmentation) as tensors: images Nx3xRxR in [0, 1], masks Nx1xRxR in {0, 1}."""
    pairs = PairDataset(data_dir, df, build_transforms("generator", resolution, train=False), categories=categories)
    images, masks = [], []
    for i in range(len(pairs)):
        item = pairs[i]
        images.append(item["image"])
        masks.append(item["mask"])
    return torch.stack(images), torch.stack(masks)
