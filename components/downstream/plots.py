"""Figures of the downstream stages: confusion matrices, prediction overlays, real/synthetic/hybrid bars."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.images import overlay, pair_grid  # noqa: E402

TRAIN_SET_COLOURS = {"real": "#4C72B0", "synthetic": "#DD8452", "hybrid": "#55A868", "real+synthetic": "#C44E52",
                     "real+augmentation": "#8172B3"}
TRAIN_SET_LABELS = {"real": "Real only", "synthetic": "Synth only", "hybrid": "50% Real + 50% Synth",
                    "real+synthetic": "Real + Synth (balanced)", "real+augmentation": "Real + Aug (balanced)"}


def confusion_figure(cm: np.ndarray, categories: list[str], title: str) -> plt.Figure:
    """Confusion matrix (rows true, columns predicted) with counts, coloured by row-normalised rate."""
    cm = np.asarray(cm, dtype=float)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(categories)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.55 * n))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), categories, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), categories, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def segmentation_figure(images: np.ndarray, truths: np.ndarray, preds: np.ndarray, ids: list[str]) -> plt.Figure:
    """One row per image: the image, the ground-truth overlay, the predicted overlay (uint8 HxWx3 / HxW)."""
    rows = []
    for img, gt, pr, image_id in zip(images, truths, preds, ids):
        rows.append((image_id, [("image", img), ("ground truth", overlay(img, gt)),
                                ("prediction", overlay(img, pr, color=(255, 60, 60)))]))
    return pair_grid(rows)


def bar_figure(panels: list[tuple[dict[str, dict[str, tuple[float, float]]], str, str]]) -> plt.Figure:
    """Grouped bars, one panel per (table, metric label, title): a group per architecture, a bar per training
    set, error bars = std over folds. `table[arch][train_set] = (mean, std)`."""
    panels = [p for p in panels if p[0]]
    widths = [1.6 + 1.3 * len(table) for table, _, _ in panels] or [3.0]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(sum(widths), 3.4), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (table, metric_label, title) in zip(axes[0], panels):
        archs = list(table)
        sets = [s for s in TRAIN_SET_COLOURS if any(s in table[a] for a in archs)]
        width = 0.8 / max(len(sets), 1)
        x = np.arange(len(archs))
        for k, s in enumerate(sets):
            means = [table[a].get(s, (np.nan, 0.0))[0] for a in archs]
            stds = [table[a].get(s, (np.nan, 0.0))[1] for a in archs]
            bars = ax.bar(x + (k - (len(sets) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
                          color=TRAIN_SET_COLOURS[s], label=TRAIN_SET_LABELS[s])
            for bar, m, sd in zip(bars, means, stds):
                if np.isfinite(m):
                    ax.text(bar.get_x() + bar.get_width() / 2, m + (sd or 0.0), f"{m:.1f}", ha="center",
                            va="bottom", fontsize=6)
        ax.set_xticks(x, archs, fontsize=7)
        ax.set_ylabel(metric_label, fontsize=8)
        ax.set_title(title, fontsize=8)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no results recorded", ha="center", va="center")
        axes[0][0].axis("off")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    shown = {s for table, _, _ in panels for by_set in table.values() for s in by_set}
    handles = [matplotlib.patches.Patch(color=c, label=TRAIN_SET_LABELS[s]) for s, c in TRAIN_SET_COLOURS.items()
               if s in shown or not shown]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    return fig
