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
    interrupted run resumes with exactly the batches it would have seen. The item carries its seed on, so the
    trainer draws the sample's noise, timestep and prompt dropout from it too (`sample_generator`).
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
                "prompt": self.prompts[int(index)], "index": int(index), "seed": int(seed)}


# Stream of a sample's training noise, apart from its augmentation (which albumentations draws from the same
# seed with another generator).
NOISE_STREAM = 1


def sample_generator(seed: int) -> torch.Generator:
    """CPU generator of one sample's noise, timestep and prompt dropout, determined by its seed alone: what a
    sample draws does not depend on the batch it shares, the process that trains it or the device."""
    state = np.random.SeedSequence([int(seed), NOISE_STREAM]).generate_state(2, dtype=np.uint32)
    return torch.Generator("cpu").manual_seed(int(state[0]) << 32 | int(state[1]))


class EpochBatches(Sampler):
    """Micro-batches of (index, augmentation seed) for one epoch, shuffled by (seed, epoch); can skip done steps.

    The epoch's order and per-sample seeds come from (seed, epoch) alone. The order is cut into global batches of
    `batch_size × world_size × accumulation` samples, one optimiser step each (an incomplete tail is dropped).
    Micro-batch `a` of a global batch is its slice [a·B·W, (a+1)·B·W) and process `rank` takes the rank-th B
    samples of it, so the processes see disjoint shards and, whatever B, W and A, a run with the same global
    batch trains step k on the same samples with the same seeds. `skip_batches` counts global batches (steps);
    the sampler yields this rank's `accumulation` micro-batches per remaining step.

    `set_epoch` switches epochs in place, so one DataLoader (and its persistent workers) serves every epoch:
    the loader re-reads its batch sampler at the start of each pass.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, skip_batches: int = 0,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1, accumulation: int = 1):
        if not 0 <= rank < world_size or accumulation < 1:
            raise ValueError(f"EpochBatches: rank {rank} of world_size {world_size}, accumulation {accumulation}")
        if not drop_last and world_size * accumulation > 1:
            raise ValueError("EpochBatches: drop_last=False needs world_size = accumulation = 1 (a partial global "
                             "batch cannot be shared out evenly)")
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation
        self.global_batch = batch_size * world_size * accumulation
        self.set_epoch(epoch, skip_batches)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n)
        aug = rng.integers(0, 2**31 - 1, size=self.n)
        g, b = self.global_batch, self.batch_size
        stop = self.n - self.n % g if self.drop_last else self.n
        batches = []
        for s in range(skip_batches * g, stop, g):
            for a in range(self.accumulation):
                first = s + (a * self.world_size + self.rank) * b
                batches.append([(int(order[i]), int(aug[i])) for i in range(first, min(first + b, stop))])
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1, accumulation: int = 1) -> int:
    """Optimiser steps per epoch: whole global batches of batch_size × world_size × accumulation samples."""
    global_batch = batch_size * world_size * accumulation
    if n < global_batch:
        split = f" ({batch_size} × {world_size} processes × {accumulation} accumulation steps)" \
            if global_batch != batch_size else ""
        raise DataError(f"the training split has {n} image(s), fewer than the global batch {global_batch}{split}; "
                        f"lower batch_size (or gradient_accumulation_steps, or the number of processes) or add "
                        f"images")
    return n // global_batch


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
