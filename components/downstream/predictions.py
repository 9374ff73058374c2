"""Per-image outputs of every trained model on the evaluation sets, kept for paired comparisons.

One CSV per (fingerprint, architecture, training set, seed, fold, evaluation set) under
<out_dir>/predictions/<fingerprint>/<arch>/<train_set>/s<seed>_f<fold>_<eval_set>.csv, written atomically before
the training's rows reach results.csv (a recorded training therefore always has its predictions). Classification
rows hold image_id, label and prediction (class indices); segmentation rows image_id and the per-image scores.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from components import atomic

FOLDER = "predictions"


def prediction_file(out_dir: str | Path, fingerprint: str, arch: str, train_set: str, seed: int, fold: int,
                    eval_set: str) -> Path:
    """Where the per-image outputs of one training on one evaluation set live."""
    return Path(out_dir) / FOLDER / fingerprint / arch / train_set / f"s{seed}_f{fold}_{eval_set}.csv"


def write_predictions(path: Path, rows: list[dict]) -> None:
    """Write the rows (sorted by image_id) atomically."""
    frame = pd.DataFrame(rows).sort_values("image_id", kind="stable")
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_predictions(path: Path) -> pd.DataFrame:
    """The rows of one predictions file, image_id as text."""
    return pd.read_csv(path, dtype={"image_id": str})
