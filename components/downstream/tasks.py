"""What differs between the classification and the segmentation task; the CV runner handles the rest."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from components.downstream import training
from components.downstream.classifiers import create_classifier
from components.downstream.config import Resolved
from components.downstream.metrics import CLASSIFICATION_METRICS, HIGHER_IS_BETTER, SEGMENTATION_METRICS
from components.downstream.segmenters import check_size, create_segmenter


@dataclass(frozen=True)
class Evaluation:
    """Scores of one model on one evaluation set; `arrays` holds JSON-able extras (confusion matrix...)."""
    scores: dict[str, float]
    arrays: dict
    examples: dict | None = None     # segmentation: a few images, truths and predictions for a figure
    per_image: list[dict] | None = None  # one row per image (image_id + label/prediction or per-image scores)


class ClassificationTask:
    name = "classify"
    transform_kind = "classify"
    metrics = CLASSIFICATION_METRICS
    primary_metric = "f1"
    needs_masks = False

    def create(self, arch: str, cfg: Resolved, num_classes: int) -> nn.Module:
        return create_classifier(arch, num_classes, pretrained_path=cfg.pretrained or None, image_size=cfg.image_size)

    def train(self, model: nn.Module, dataset: Dataset, settings: training.TrainSettings) -> dict:
        return training.train_classifier(model, dataset, settings)

    def evaluate(self, model: nn.Module, dataset: Dataset, settings: training.TrainSettings, cfg: Resolved,
                 num_classes: int) -> Evaluation:
        s = training.evaluate_classifier(model, dataset, num_classes, settings)
        scores = {k: s[k] for k in self.metrics}
        return Evaluation(scores, {"per_class_recall": s["per_class_recall"], "confusion_matrix": s["confusion_matrix"]},
                          per_image=s["per_image"])

    def registry_name(self, arch: str) -> str:
        return f"skindualgen-classifier-{arch}"

    def example_input(self, cfg: Resolved) -> np.ndarray:
        return np.random.default_rng(0).random((1, 3, cfg.image_size, cfg.image_size), dtype=np.float32)


class SegmentationTask:
    name = "segment"
    transform_kind = "segment"
    metrics = SEGMENTATION_METRICS
    primary_metric = "dice"
    needs_masks = True
    n_examples = 3

    def create(self, arch: str, cfg: Resolved, num_classes: int) -> nn.Module:
        check_size(arch, cfg.image_size)
        return create_segmenter(arch, num_classes=1, encoder_weights=cfg.pretrained or None)

    def train(self, model: nn.Module, dataset: Dataset, settings: training.TrainSettings) -> dict:
        return training.train_segmenter(model, dataset, settings)

    def evaluate(self, model: nn.Module, dataset: Dataset, settings: training.TrainSettings, cfg: Resolved,
                 num_classes: int) -> Evaluation:
        scores, per_image = training.evaluate_segmenter(model, dataset, settings, threshold=cfg.threshold)
        n = min(self.n_examples, len(dataset))
        items = [dataset[i] for i in range(n)]
        images = torch.stack([it["image"] for it in items])
        preds = training.predict_masks(model, images, threshold=cfg.threshold)
        examples = {
            "images": (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8),
            "truths": np.stack([it["mask"][0].numpy().astype(np.uint8) for it in items]),
            "preds": preds[:, 0].numpy(),
            "ids": [it["image_id"] for it in items],
        }
        return Evaluation(scores, {}, examples, per_image=per_image)

    def registry_name(self, arch: str) -> str:
        return f"skindualgen-segmenter-{arch}"

    def example_input(self, cfg: Resolved) -> np.ndarray:
        return np.random.default_rng(0).random((1, 3, cfg.image_size, cfg.image_size), dtype=np.float32)


TASKS = {"classify": ClassificationTask, "segment": SegmentationTask}


def better(metric: str, a: float, b: float | None) -> bool:
    """Is score `a` better than `b` (None: no score yet) for `metric`?"""
    if b is None or (isinstance(b, float) and np.isnan(b)):
        return not np.isnan(a)
    return a > b if HIGHER_IS_BETTER[metric] else a < b
