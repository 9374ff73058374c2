"""Images people look at: figures and arrays logged to the active MLflow run and saved beside the outputs."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402

from components.images import save_figure  # noqa: E402


def log_figure(fig: "plt.Figure", artifact_file: str, save_to: str | Path | None = None) -> None:
    """Log a matplotlib figure to the active run (if any), optionally save a copy, then close it."""
    if save_to is not None:
        save_figure(fig, save_to, close=False)
    if mlflow.active_run() is not None:
        mlflow.log_figure(fig, artifact_file)
    plt.close(fig)
