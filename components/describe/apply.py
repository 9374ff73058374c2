"""Fill a manifest's `description` column from the describe stage's descriptions.csv."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from components.errors import DataError

# Written by the describe stage; status: llm | cached | fallback | template, reason: why a fallback
# (budget | invalid | error | circuit_open), else empty.
DESCRIPTION_COLUMNS = ("image_id", "description", "describer", "model", "status", "reason")
# Needed to read one (files written before status/reason existed have only these).
REQUIRED_COLUMNS = DESCRIPTION_COLUMNS[:4]


def read_descriptions(path: str | Path) -> pd.DataFrame:
    """Read descriptions.csv (image_id, description, describer, model[, status, reason]), checking its columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: descriptions file not found; run the `describe` stage (dvc repro describe)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(DESCRIPTION_COLUMNS)}")
    dup = df["image_id"][df["image_id"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path}: duplicate image_id(s) {dup[:10]}; rerun the `describe` stage")
    return df


def apply_descriptions(manifest_df: pd.DataFrame, descriptions_csv: str | Path) -> pd.DataFrame:
    """A copy of the manifest with `description` set from descriptions.csv where it has a non-empty one.

    Rows without a description there keep theirs. Raises DataError when no image_id matches at all (the
    descriptions belong to another dataset).
    """
    desc = read_descriptions(descriptions_csv)
    desc = desc[desc["description"].str.strip() != ""]
    mapping = dict(zip(desc["image_id"], desc["description"]))
    out = manifest_df.copy()
    ids = out["image_id"].astype(str)
    matched = ids.isin(mapping.keys())
    if len(mapping) and not matched.any():
        raise DataError(
            f"{descriptions_csv}: none of its {len(mapping)} image_id(s) is in the manifest (e.g. "
            f"{list(mapping)[:3]}); describe the same dataset the manifest comes from (describe.data_dir)"
        )
    if "description" not in out.columns:
        out["description"] = ""
    out["description"] = out["description"].fillna("").astype(str)
    out.loc[matched, "description"] = ids[matched].map(mapping)
    return out
