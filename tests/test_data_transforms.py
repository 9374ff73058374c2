"""Joint transforms keep image and mask aligned; PairDataset yields the documented tensors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from components.data import manifest
from components.data.categories import HAM10000_CATEGORIES
from components.data.toy import generate_toy
from components.data.torch_dataset import PairDataset
from components.data.transforms import TRANSFORM_KINDS, build_transforms
from components.errors import DataError


def _square_pair():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 50, (128, 128, 3), dtype=np.uint8)
    mask = np.zeros((128, 128), np.uint8)
    image[16:60, 72:116] = 230
    mask[16:60, 72:116] = 1
    return image, mask


@pytest.mark.parametrize("kind", TRANSFORM_KINDS)
def test_mask_follows_the_bright_square(kind):
    image, mask = _square_pair()
    moved = 0
    reference = build_transforms(kind, 96, train=False)(image=image, mask=mask)["mask"]
    for seed in range(12):
        out = build_transforms(kind, 96, train=True, seed=seed)(image=image, mask=mask)
        img, m = out["image"], out["mask"]
        assert img.shape == (96, 96, 3) and m.shape == (96, 96)
        assert set(np.unique(m).tolist()) <= {0, 1}
        bright = img.mean(axis=2) > 128
        iou = (bright & (m > 0)).sum() / max((bright | (m > 0)).sum(), 1)
        assert iou > 0.85, f"{kind} seed {seed}: image and mask drifted apart (IoU {iou:.2f})"
        moved += int(not np.array_equal(m, reference))
    assert moved >= 6, f"{kind}: the spatial augmentations hardly ever changed the mask"


def test_eval_transform_only_resizes_and_seed_repeats():
    image, mask = _square_pair()
    out = build_transforms("segment", 32, train=False)(image=image, mask=mask)
    assert out["mask"][5:14, 19:28].all() and out["mask"][16:].sum() == 0 and out["mask"][:, :17].sum() == 0
    a = build_transforms("classify", 32, train=True, seed=5)(image=image, mask=mask)
    b = build_transforms("classify", 32, train=True, seed=5)(image=image, mask=mask)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    with pytest.raises(ValueError, match="unknown transform kind"):
        build_transforms("detect", 32, train=True)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyds")
    return root, generate_toy(root, n_images=16, size=32, seed=1, progress=False)


def test_pair_dataset_items(toy):
    root, df = toy
    ds = PairDataset(root, df, categories=HAM10000_CATEGORIES)
    assert len(ds) == 16
    item = ds[3]
    row = df.iloc[3]
    expected = manifest.load_rgb(root / row["image_path"]).astype(np.float32) / 255
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert torch.allclose(item["image"], torch.from_numpy(expected.transpose(2, 0, 1)))
    assert item["mask"].shape == (1, 32, 32) and set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["label"] == list(HAM10000_CATEGORIES).index(row["category"])
    assert item["image_id"] == row["image_id"] and item["description"] == row["description"]
    batch = next(iter(torch.utils.data.DataLoader(
        PairDataset(root, df, build_transforms("segment", 24, True, seed=0), HAM10000_CATEGORIES), batch_size=4)))
    assert batch["image"].shape == (4, 3, 24, 24) and batch["mask"].shape == (4, 1, 24, 24)


def test_pair_dataset_masks_optional_and_category_check(toy):
    root, df = toy
    no_mask = df.copy()
    no_mask.loc[0, "mask_path"] = ""
    with pytest.raises(DataError, match="without mask_path"):
        PairDataset(root, no_mask)
    item = PairDataset(root, no_mask, require_mask=False)[0]
    assert not item["has_mask"] and item["mask"].sum() == 0
    with pytest.raises(DataError, match="not in the configured"):
        PairDataset(root, df, categories=["mel", "nv"])
    assert PairDataset(root, pd.concat([df])).categories == sorted(df["category"].unique())
