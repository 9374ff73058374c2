"""The CPU-sized judges (small_cnn, unet_resnet18) and class-balanced classifier training."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from components.data.torch_dataset import PairDataset
from components.downstream.classifiers import CLASSIFIERS, create_classifier
from components.downstream.segmenters import SEGMENTERS, check_size, create_segmenter
from components.downstream.training import (TrainSettings, class_weights, dataset_labels, predict_logits,
                                            train_classifier)
from components.errors import ModelError


class _Items(Dataset):
    """Fixed items; remembers which indices were read."""

    def __init__(self, labels: list[int], images: list[torch.Tensor] | None = None, size: int = 8):
        self.labels = labels
        self.images = images or [torch.zeros(3, size, size) for _ in labels]
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        self.read.append(i)
        return {"image": self.images[i], "label": self.labels[i], "mask": torch.zeros(1, 2, 2), "image_id": str(i)}


def _colour_items(n: int, size: int = 16) -> _Items:
    """Class 0 reddish, class 1 bluish images with pixel noise."""
    g = torch.Generator().manual_seed(0)
    labels = [i % 2 for i in range(n)]
    base = {0: torch.tensor([0.8, 0.3, 0.3]), 1: torch.tensor([0.3, 0.3, 0.8])}
    images = [(base[y].view(3, 1, 1) + 0.1 * torch.randn(3, size, size, generator=g)).clamp(0, 1) for y in labels]
    return _Items(labels, images)


# --- architectures --------------------------------------------------------------------------------------

def test_cpu_judges_are_registered():
    assert "small_cnn" in CLASSIFIERS.names()
    assert "unet_resnet18" in SEGMENTERS.names()


@pytest.mark.parametrize("size", [16, 48, 64])
def test_small_cnn_outputs_logits_with_a_cam_layer(size):
    model = create_classifier("small_cnn", num_classes=7, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 7)
    assert isinstance(model.cam_layer(), nn.Module)


def test_small_cnn_parameters_by_hand_and_minimum_size():
    convs = 9 * (3 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256)   # bias-free 3x3 convolutions
    norms = 2 * (32 + 64 + 64 + 128 + 128 + 256)
    head = 256 * 7 + 7
    model = create_classifier("small_cnn", num_classes=7, image_size=48)
    assert sum(p.numel() for p in model.parameters()) == convs + norms + head == 575_399
    with pytest.raises(ModelError, match="below this architecture's minimum 16"):
        create_classifier("small_cnn", num_classes=7, image_size=8)


def test_small_cnn_learns_a_colour_difference():
    data = _colour_items(32)
    torch.manual_seed(0)
    model = create_classifier("small_cnn", num_classes=2, image_size=16)
    train_classifier(model, data, TrainSettings(epochs=8, batch_size=8, lr=3e-3, lr_schedule="constant"))
    logits = predict_logits(model, torch.stack(data.images))
    assert (logits.argmax(1) == torch.tensor(data.labels)).all()


def test_unet_resnet18_masks_sizes_and_encoder_weights(tmp_path):
    model = create_segmenter("unet_resnet18").eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1, 64, 64)
    check_size("unet_resnet18", 64)
    with pytest.raises(ModelError, match="multiple of 32"):
        check_size("unet_resnet18", 48)
    imagenet = torchvision.models.resnet18(weights=None)
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    loaded = create_segmenter("unet_resnet18", encoder_weights=tmp_path / "r18.pth")
    assert torch.equal(loaded.net.encoder.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)


# --- class balance --------------------------------------------------------------------------------------

def test_class_weights_by_hand():
    # N = 4 over K = 2 present classes: 4 / (2·3) and 4 / (2·1); the absent class weighs 0
    assert class_weights(np.array([0, 0, 0, 1]), 3).tolist() == pytest.approx([2 / 3, 2.0, 0.0])


def test_dataset_labels_come_from_the_manifest_without_reading_images(tmp_path):
    def rows(ids, cats):
        return pd.DataFrame({"image_id": ids, "category": cats, "image_path": [f"images/{i}.png" for i in ids],
                             "mask_path": "", "description": ""})
    # the image files do not exist: reading one would raise
    a = PairDataset(tmp_path, rows(["x", "y"], ["nv", "mel"]), categories=["mel", "nv"], require_mask=False)
    b = PairDataset(tmp_path, rows(["z"], ["mel"]), categories=["mel", "nv"], require_mask=False)
    assert dataset_labels(a).tolist() == [1, 0]
    assert dataset_labels(ConcatDataset([a, b])).tolist() == [1, 0, 0]
    assert dataset_labels(_Items([1, 0, 1])).tolist() == [1, 0, 1]


class _Bias(nn.Module):
    """Input-independent logits [2, 0]: cross-entropy 0.1269 for class 0 and 2.1269 for class 1."""
    num_classes = 2

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([2.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), 2)


@pytest.mark.parametrize("balance, expected", [
    ("none", (18 * 0.126928 + 2 * 2.126928) / 20),
    # weights 20/(2·18) and 20/(2·2): each class carries half of the weighted mean
    ("loss", (18 * (20 / 36) * 0.126928 + 2 * 5 * 2.126928) / (18 * 20 / 36 + 2 * 5)),
])
def test_loss_balance_weighs_the_rare_class(balance, expected):
    data = _Items([0] * 18 + [1] * 2, size=2)
    settings = TrainSettings(epochs=1, batch_size=20, lr=1e-12, lr_schedule="constant", class_balance=balance)
    assert train_classifier(_Bias(), data, settings)["loss_history"][0] == pytest.approx(expected, rel=1e-4)
    assert math.log1p(math.exp(-2)) == pytest.approx(0.126928, rel=1e-5)


def test_sampler_balance_draws_the_rare_class_as_often():
    counts = {}
    for balance in ("none", "sampler"):
        data = _Items([0] * 180 + [1] * 20)
        model = create_classifier("tiny_cnn", num_classes=2, image_size=8)
        train_classifier(model, data, TrainSettings(epochs=1, batch_size=50, lr=1e-3, class_balance=balance, seed=3))
        # a dataset that is not a PairDataset is read once in order for its labels before the sampler draws
        drawn = data.read[200:] if balance == "sampler" else data.read
        if balance == "sampler":
            assert data.read[:200] == list(range(200))
        counts[balance] = (len(drawn), np.mean([data.labels[i] for i in drawn]))
    assert counts["none"] == (200, 0.1)                  # each item once
    assert counts["sampler"][0] == 200 and 0.4 < counts["sampler"][1] < 0.6


def test_unknown_class_balance_is_refused():
    with pytest.raises(ValueError, match="class_balance 'smote'"):
        train_classifier(_Bias(), _Items([0, 1]), TrainSettings(class_balance="smote"))
