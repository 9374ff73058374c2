"""Pictures people look at: mask overlays and labelled image grids (pure numpy / matplotlib, no tracking)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def save_figure(fig: "plt.Figure", path: str | Path, close: bool = True) -> Path:
    """Save a figure as PNG (parent folders created); closes it unless told otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    if close:
        plt.close(fig)
    return path
