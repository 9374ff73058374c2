"""Explanations of classifier decisions (paper Fig. 3): Grad-CAM, Saliency and Occlusion maps with captum.

    maps = attribution_maps(model, image)           # {"gradcam": HxW, "saliency": HxW, "occlusion": HxW} in [0, 1]
    fig = comparison_figure(rows)                   # per image: original + 3 maps (real-only), then (hybrid)

Grad-CAM weighs the activations of the architecture's last convolutional block (registry `cam_layer`; for Swin
the last stage, whose channels-last output is viewed channels-first through a hook) and is upsampled to the
image; Saliency is the absolute input gradient (max over colour channels); Occlusion is the drop of the target
score when a grey square slides over the image (positive part). Each map is scaled to [0, 1] on its own.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from components.downstream.classifiers import CLASSIFIERS, ImageClassifier  # noqa: E402

METHODS: tuple[str, ...] = ("gradcam", "saliency", "occlusion")
METHOD_TITLES = {"gradcam": "Grad-CAM", "saliency": "Saliency", "occlusion": "Occlusion"}


class _ChannelsFirstTap(nn.Module):
    """Views a BxHxWxC activation as BxCxHxW through an Identity that captum can hook, then back."""

    def __init__(self):
        super().__init__()
        self.tap = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tap(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@contextlib.contextmanager
def cam_layer(model: ImageClassifier) -> Iterator[nn.Module]:
    """The module whose output Grad-CAM uses (channels-first), valid inside the block."""
    layer = model.cam_layer()
    if not CLASSIFIERS.create(model.arch).cam_channels_last:
        yield layer
        return
    tap = _ChannelsFirstTap()
    handle = layer.register_forward_hook(lambda module, inputs, output: tap(output))
    try:
        yield tap.tap
    finally:
        handle.remove()


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo)).numpy() if hi > lo else np.zeros(tuple(x.shape), np.float32)


def attribution_maps(model: ImageClassifier, image: torch.Tensor, target: int | None = None,
                     occlusion_window: int = 0, methods: tuple[str, ...] = METHODS) -> tuple[dict[str, np.ndarray], int, float]:
    """Maps (HxW, [0, 1]) of `image` (3xHxW in [0, 1]) for class `target` (default: the predicted class).

    Returns (maps, target, probability of target).
    """
    from captum.attr import LayerAttribution, LayerGradCam, Occlusion, Saliency

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown XAI method(s) {unknown}; choose from {list(METHODS)}")
    model.eval()
    device = next(model.parameters()).device
    x = image.unsqueeze(0).to(device)
    with torch.no_grad():
        probs = torch.softmax(model(x).float(), dim=1)[0]
    target = int(probs.argmax()) if target is None else int(target)
    h, w = image.shape[-2:]
    maps: dict[str, np.ndarray] = {}
    if "gradcam" in methods:
        with cam_layer(model) as layer:
            attr = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
        attr = LayerAttribution.interpolate(attr, (h, w), interpolate_mode="bilinear")
        maps["gradcam"] = _unit(attr[0].sum(0))
    if "saliency" in methods:
        attr = Saliency(model).attribute(x.clone().requires_grad_(True), target=target, abs=True)
        maps["saliency"] = _unit(attr[0].max(0).values)
    if "occlusion" in methods:
        win = occlusion_window or max(2, min(h, w) // 8)
        stride = max(1, win // 2)
        attr = Occlusion(model).attribute(x, target=target, sliding_window_shapes=(3, win, win),
                                          strides=(3, stride, stride), baselines=0.5,
                                          perturbations_per_eval=32)
        maps["occlusion"] = _unit(attr[0].sum(0).clamp(min=0))
    return {m: maps[m] for m in methods}, target, float(probs[target])


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heatmap (jet colours) onto an RGB uint8 image."""
    colours = plt.get_cmap("jet")(np.clip(heat, 0, 1))[..., :3] * 255
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha).clip(0, 255).astype(np.uint8)


@dataclass
class XaiRow:
    """One figure row: an image and, per model (e.g. 'real only', 'hybrid'), its maps and prediction."""
    label: str
    image: np.ndarray                                   # HxWx3 uint8
    panels: list[tuple[str, dict[str, np.ndarray], str]]  # (model title, maps, prediction text)


def comparison_figure(rows: list[XaiRow], title: str = "", cell: float = 1.5) -> plt.Figure:
    """Fig. 3 layout: per row, for each model in turn, the original image followed by its three maps."""
    n_models = max((len(r.panels) for r in rows), default=1)
    n_cols = n_models * (1 + len(METHODS))
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(cell * n_cols, cell * len(rows) + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for k, (model_title, maps, prediction) in enumerate(row.panels):
            base = k * (1 + len(METHODS))
            cells = [(f"{model_title}\n{prediction}", row.image)]
            cells += [(METHOD_TITLES[m], heat_overlay(row.image, maps[m])) for m in METHODS if m in maps]
            for c, (cell_title, arr) in enumerate(cells):
                ax = axes[r][base + c]
                ax.imshow(arr)
                ax.set_title(cell_title, fontsize=6)
        for ax in axes[r]:
            ax.axis("off")
        axes[r][0].text(-0.08, 0.5, row.label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
