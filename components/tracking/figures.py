"""Images people look at: figures and arrays logged to the active MLflow run and saved beside the outputs."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402


def log_figure(fig: "plt.Figure", artifact_file: str, save_to: str | Path | None = None) -> None:
    """Log a matplotlib figure to the active run (if any), optionally save a copy, then close it."""
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=110, bbox_inches="tight")
    if mlflow.active_run() is not None:
        mlflow.log_figure(fig, artifact_file)
    plt.close(fig)


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 80),
            alpha: float = 0.45) -> np.ndarray:
    """Blend a binary mask onto an RGB uint8 image, with the mask outline drawn solid."""
    out = image.astype(np.float32).copy()
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color, np.float32)
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    out[edge] = color
    return out.clip(0, 255).astype(np.uint8)


def pair_grid(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], cell: float = 1.6) -> "plt.Figure":
    """A grid with one labelled row per entry; each cell is (title, HxWx3 or HxW array)."""
    n_rows = max(len(rows), 1)
    n_cols = max((len(cells) for _, cells in rows), default=1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols, cell * n_rows), squeeze=False)
    for r, (label, cells) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(cells):
                title, arr = cells[c]
                ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255 if arr.max() > 1 else 1)
                if r == 0:
                    ax.set_title(title, fontsize=8)
        axes[r][0].text(-0.08, 0.5, label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig
