"""Segmentation and classification metrics against values computed by hand on tiny arrays."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from components.downstream.metrics import (
    ClassificationMeter, SegmentationMeter, asd, classification_scores, dice, hd, hd95, iou, segmentation_scores,
    surface,
)


def square(shape, rows, cols):
    m = np.zeros(shape, np.uint8)
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return m


def test_shifted_squares_by_hand():
    # 3x3 squares in a 5x5 image, the prediction shifted one pixel right: overlap 6 of 9.
    target = square((5, 5), (1, 4), (1, 4))
    pred = square((5, 5), (1, 4), (2, 5))
    assert dice(pred, target) == pytest.approx(12 / 18)
    assert iou(pred, target) == pytest.approx(6 / 12)
    # surfaces: the 8 border pixels of each square; 4 of them lie on the other surface (distance 0),
    # the other 4 are one pixel away, in both directions -> ASD = 8 / 16, HD = 1, HD95 = 1
    assert surface(target).sum() == 8
    assert asd(pred, target) == pytest.approx(0.5)
    assert hd(pred, target) == pytest.approx(1.0)
    assert hd95(pred, target) == pytest.approx(1.0)


def test_single_pixels_far_apart():
    target = np.zeros((4, 5), np.uint8)
    pred = np.zeros((4, 5), np.uint8)
    target[0, 0] = 1
    pred[3, 4] = 1
    s = segmentation_scores(pred, target)
    assert s["dice"] == 0.0 and s["iou"] == 0.0
    assert s["asd"] == pytest.approx(5.0) and s["hd"] == pytest.approx(5.0) and s["hd95"] == pytest.approx(5.0)


def test_outlier_pixel_separates_hd_hd95_and_asd():
    # target: a one-pixel-thick line (row 0, 10 pixels); prediction: the same line plus a pixel 4 rows below.
    target = np.zeros((5, 10), np.uint8)
    target[0, :] = 1
    pred = target.copy()
    pred[4, 0] = 1
    s = segmentation_scores(pred, target)
    assert s["dice"] == pytest.approx(20 / 21)
    assert s["iou"] == pytest.approx(10 / 11)
    # pred -> target: ten zeros and one 4; target -> pred: ten zeros
    assert s["asd"] == pytest.approx(4 / 21)
    assert s["hd"] == pytest.approx(4.0)
    # 95th percentile of [0]*10 + [4] with linear interpolation: position 9.5 -> 0 + 0.5 * 4
    assert s["hd95"] == pytest.approx(2.0)


def test_empty_mask_conventions():
    empty = np.zeros((3, 4), np.uint8)
    lesion = square((3, 4), (0, 2), (0, 2))
    both = segmentation_scores(empty, empty)
    assert both == {"dice": 1.0, "iou": 1.0, "asd": 0.0, "hd": 0.0, "hd95": 0.0}
    for pred, target in ((empty, lesion), (lesion, empty)):
        s = segmentation_scores(pred, target)
        assert s["dice"] == 0.0 and s["iou"] == 0.0
        # one mask empty: the image diagonal sqrt(3^2 + 4^2)
        assert s["asd"] == s["hd"] == s["hd95"] == pytest.approx(5.0)


def test_identical_masks_and_tensor_input():
    m = torch.zeros(1, 6, 6)
    m[0, 1:5, 2:4] = 1
    s = segmentation_scores(m, m.numpy())
    assert s == {"dice": 1.0, "iou": 1.0, "asd": 0.0, "hd": 0.0, "hd95": 0.0}
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3)), np.zeros((4, 4)))


def test_segmentation_meter_means_per_image_scores():
    target = square((5, 5), (1, 4), (1, 4))
    pred = square((5, 5), (1, 4), (2, 5))
    empty = np.zeros((5, 5), np.uint8)
    meter = SegmentationMeter()
    meter.update(np.stack([pred, empty]), np.stack([target, empty]), ["a", "b"])
    out = meter.compute()
    assert out["dice"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert out["asd"] == pytest.approx(0.25)
    assert [r["image_id"] for r in meter.per_image] == ["a", "b"]
    meter.reset()
    with pytest.raises(ValueError):
        meter.compute()


def test_classification_scores_by_hand():
    preds = torch.tensor([0, 0, 1, 1, 2, 0])
    targets = torch.tensor([0, 1, 1, 1, 0, 0])
    s = classification_scores(preds, targets, num_classes=4)
    # class 0: recall 2/3, precision 2/3; class 1: recall 2/3, precision 1; class 2: predicted once, never true
    # (recall 0, precision 0); class 3 absent everywhere (left out of the macro means)
    assert s["sensitivity"] == pytest.approx(4 / 9)
    assert s["accuracy"] == pytest.approx(4 / 9)          # macro accuracy = macro recall
    assert s["precision"] == pytest.approx(5 / 9)
    assert s["f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert s["balanced_accuracy"] == pytest.approx(2 / 3)   # over the classes present in the targets
    assert s["overall_accuracy"] == pytest.approx(4 / 6)
    assert s["per_class_recall"] == pytest.approx([2 / 3, 2 / 3, 0.0, 0.0])
    assert s["confusion_matrix"] == [[2, 0, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_classification_meter_accepts_logits_in_batches():
    logits = torch.tensor([[2.0, 0.1], [0.1, 3.0], [1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 1, 1, 1])
    meter = ClassificationMeter(num_classes=2)
    meter.update(logits[:2], targets[:2])
    meter.update(logits[2:], targets[2:])
    s = meter.compute()
    assert s["overall_accuracy"] == pytest.approx(0.75)
    assert s["per_class_recall"] == pytest.approx([1.0, 2 / 3])
    assert s["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
