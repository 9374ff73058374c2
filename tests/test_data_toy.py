"""The embedded toy generator: complete folders, determinism, HAM10000-like balance, exact masks, overlap."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from components.data import manifest
from components.data.categories import HAM10000_CATEGORIES
from components.data.prompts import class_prefix
from components.data.toy import HAM10000_COUNTS, assign_categories, class_counts, generate_toy, render_sample
from components.errors import DataError


@pytest.fixture(scope="module")
def toy40(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy40")
    start = time.perf_counter()
    df = generate_toy(root, n_images=40, size=32, seed=3, progress=False)
    return root, df, time.perf_counter() - start


def test_folder_is_complete_and_fast(toy40):
    root, df, seconds = toy40
    assert seconds < 5.0, f"40 images at 32 px took {seconds:.2f}s"
    assert len(df) == 40
    assert list(df.columns[:len(manifest.REQUIRED_COLUMNS)]) == list(manifest.REQUIRED_COLUMNS)
    assert json.loads((root / "categories.json").read_text()) == list(HAM10000_CATEGORIES)
    assert set(df["source"]) == {"real"} and set(df["origin"]) == {"toy"}
    assert set(df["split"]) == {"train", "test"}
    for row in df.to_dict("records"):
        with Image.open(root / row["image_path"]) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
        with Image.open(root / row["mask_path"]) as m:
            assert m.mode == "L" and m.size == (32, 32)
            assert set(np.unique(np.asarray(m)).tolist()) <= {0, 255}
        assert row["description"].startswith(class_prefix(row["category"]))
        assert len(row["description"]) > len(class_prefix(row["category"])) + 10


def test_same_seed_same_bytes_other_seed_differs(toy40, tmp_path):
    root, df, _ = toy40
    again = generate_toy(tmp_path / "again", n_images=40, size=32, seed=3, progress=False, workers=2)
    assert again.equals(df)
    for rel in ("images/toy_00007.png", "masks/toy_00007.png", "manifest.csv"):
        assert (tmp_path / "again" / rel).read_bytes() == (root / rel).read_bytes()
    other = generate_toy(tmp_path / "other", n_images=40, size=32, seed=4, progress=False)
    assert (tmp_path / "other" / "images/toy_00007.png").read_bytes() != (root / "images/toy_00007.png").read_bytes()
    assert not other["description"].equals(df["description"])


def test_image_depends_only_on_seed_index_category():
    a = render_sample(9, 17, "mel", 32)
    b = render_sample(9, 17, "mel", 32)
    c = render_sample(9, 18, "mel", 32)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


def test_class_counts_follow_ham10000():
    counts = class_counts(2000)
    assert sum(counts.values()) == 2000
    for code, n in counts.items():  # within 1 image of the exact HAM10000 share
        assert abs(n - 2000 * HAM10000_COUNTS[code] / 10015) <= 1.0
    assert counts["nv"] > 5 * counts["mel"]
    assert counts["bkl"] > counts["bcc"] > counts["akiec"] > counts["vasc"] > counts["df"]
    small = class_counts(40)
    assert min(small.values()) == 2 and sum(small.values()) == 40
    labels = assign_categories(40, HAM10000_CATEGORIES, seed=1)
    assert {c: labels.count(c) for c in HAM10000_CATEGORIES} == small
    assert labels != assign_categories(40, HAM10000_CATEGORIES, seed=2)


def test_subset_and_bad_category_lists():
    assert set(class_counts(20, ("mel", "nv"))) == {"mel", "nv"}
    with pytest.raises(DataError, match="no appearance"):
        class_counts(20, ("mel", "scc"))
    with pytest.raises(DataError, match="toy_images >= 14"):
        class_counts(10)


def test_mask_is_the_drawn_lesion():
    """Inside the mask the picture differs from the skin; far outside it, it does not contain the lesion."""
    for code in HAM10000_CATEGORIES:
        s = render_sample(5, 1, code, 64)
        m = s.mask.astype(bool)
        assert 0.005 < m.mean() < 0.7
        assert set(np.unique(s.mask).tolist()) == {0, 1}
        ring = binary_dilation(m, iterations=6) & ~binary_dilation(m, iterations=3)  # skin 3-6 px outside
        inside_core = m & ~binary_dilation(~m, iterations=3)
        if inside_core.sum() > 5 and ring.sum() > 5:
            diff = np.abs(s.image[inside_core].mean(0).astype(float) - s.image[ring].mean(0)).sum()
            assert diff > 8, f"{code}: lesion not visible against the skin ({diff:.1f})"


def test_classes_overlap_in_colour_but_differ():
    """Mean lesion colour alone classifies far from perfectly (no colour per class), yet above chance."""
    codes = list(HAM10000_CATEGORIES)
    feats, labels = [], []
    for k, code in enumerate(codes):
        for i in range(16):
            s = render_sample(11, 100 * k + i, code, 40)
            feats.append(s.image[s.mask.astype(bool)].mean(0))
            labels.append(k)
    x, y = np.array(feats), np.array(labels)
    train = np.arange(len(y)) % 2 == 0
    centroids = np.stack([x[train & (y == k)].mean(0) for k in range(len(codes))])
    pred = np.argmin(((x[~train, None] - centroids[None]) ** 2).sum(-1), 1)
    accuracy = float((pred == y[~train]).mean())
    assert 0.2 < accuracy < 0.8, accuracy
