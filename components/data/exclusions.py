"""What an import left out: one row per file in `excluded.csv` beside the manifest, counts and summaries.

Nothing is dropped silently: every image (or mask) the importer could not use is either a row here
(`prepare.on_bad_image` / `on_unlabelled: exclude`) or the reason the import stopped (`error`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from components import atomic
from components.errors import DataError

EXCLUDED_FILE = "excluded.csv"
COLUMNS: tuple[str, ...] = ("path", "image_id", "reason", "detail")
# reason -> what it means (README "Your own data" lists the same).
REASONS: dict[str, str] = {
    "undecodable": "the image file cannot be decoded (corrupt, truncated, not an image)",
    "too_large": "the header declares more pixels than prepare.max_pixels",
    "too_small": "the image would be upscaled more than 2x to prepare.size",
    "near_uniform": "(nearly) one colour: a blank, black or placeholder image",
    "vertical_smear": "every row (nearly) the same: vertical streaks, the lesion smeared out",
    "horizontal_smear": "every column (nearly) the same: horizontal streaks",
    "smeared_band": "a band of repeated rows or columns (a fifth of the image or more)",
    "unlabelled": "no diagnosis in the metadata (e.g. diagnosis: null) and no class folder",
    "bad_mask": "the mask cannot be used (another aspect ratio, ambiguous RGBA, unreadable); path is the mask",
}
SHOWN = 3  # files named on the console and in error messages


@dataclass(frozen=True)
class Exclusion:
    """One file left out: its path relative to the input folder, image id, reason code and detail."""
    path: str
    image_id: str
    reason: str
    detail: str


def write_excluded(root: str | Path, rows: Iterable[Exclusion]) -> Path:
    """excluded.csv in the dataset folder (header only when nothing was left out), sorted by path."""
    df = pd.DataFrame([r.__dict__ for r in rows], columns=list(COLUMNS)).sort_values(["path", "reason"])
    out = Path(root) / EXCLUDED_FILE
    with atomic.atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    return out


def read_excluded(root: str | Path) -> pd.DataFrame:
    """The excluded.csv of a dataset folder (empty frame when the folder has none, e.g. the toy set)."""
    path = Path(root) / EXCLUDED_FILE
    if not path.is_file():
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def counts_by_reason(rows: Iterable[Exclusion]) -> dict[str, int]:
    return dict(sorted(Counter(r.reason for r in rows).items()))


def summary(rows: list[Exclusion], what: str = "file(s)") -> str:
    """'3 file(s) (vertical_smear 2, unlabelled 1): a.jpg (vertical_smear), b.jpg (...), ...'."""
    counts = ", ".join(f"{k} {n}" for k, n in counts_by_reason(rows).items())
    named = ", ".join(f"{r.path} ({r.reason})" for r in rows[:SHOWN])
    return f"{len(rows)} {what} ({counts}): {named}" + (", ..." if len(rows) > SHOWN else "")


def policy_error(root: Path, rows: list[Exclusion], key: str, fix: str) -> DataError:
    """One line naming the first file, its problem and the fix, plus how many more there are."""
    first = rows[0]
    more = f" (and {len(rows) - 1} more: {', '.join(r.path for r in rows[1:1 + SHOWN])}" \
           f"{', ...' if len(rows) > 1 + SHOWN else ''})" if len(rows) > 1 else ""
    return DataError(f"{root / first.path}: {first.detail}{more}; {fix}, or set prepare.{key}=exclude to leave "
                     f"such files out (listed in {EXCLUDED_FILE})")
