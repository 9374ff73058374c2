"""Great Expectations suites for dataset manifests (real and synthetic).

Per-file facts (the file exists and decodes, its size matches the manifest, the mask is binary and as large as
its image, the description starts with the class's prompt) are computed into columns of the manifest dataframe;
GX expectations then assert those columns together with the column-level rules (non-null, sets, uniqueness).
A failing summary names every failing expectation and the rows (image_id and file) behind it.

    python -m components.data.validation data/real --kind real     # exits 1 and prints failures
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # never phone home

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from components import atomic  # noqa: E402
from components.data import manifest  # noqa: E402
from components.data.categories import HAM10000_CATEGORIES  # noqa: E402
from components.data.prompts import class_prefix  # noqa: E402
from components.errors import DataError  # noqa: E402

SummaryCallback = Callable[["ValidationSummary", str], None]   # (summary, artifact name)
log = logging.getLogger(__name__)

KINDS = ("real", "synthetic")
_MAX_ROWS_LISTED = 50

# Computed per-row check columns → the manifest column naming the file they are about (None: the manifest).
CHECK_COLUMNS: dict[str, str | None] = {
    "paths_inside_root": "image_path",
    "image_exists": "image_path",
    "image_decodes": "image_path",
    "size_matches": "image_path",
    "mask_exists": "mask_path",
    "mask_decodes": "mask_path",
    "mask_binary": "mask_path",
    "mask_size_matches": "mask_path",
    "description_prefix_ok": None,
}


@dataclass
class ExpectationOutcome:
    """One expectation's result: its name (type and column), success, and the failing rows."""
    name: str
    success: bool
    unexpected_count: int = 0
    failing_rows: list[dict] = field(default_factory=list)


@dataclass
class ValidationSummary:
    """What a suite found in one manifest."""
    root: str
    kind: str
    n_rows: int
    success: bool
    expectations: list[ExpectationOutcome]

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]

    @property
    def failing_expectations(self) -> list[str]:
        return [e.name for e in self.failures]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["n_expectations"] = len(self.expectations)
        out["n_failed"] = len(self.failures)
        out["failing_expectations"] = self.failing_expectations
        return out

    def report(self) -> str:
        """Human-readable text: one block per failing expectation with its rows."""
        head = (f"{self.root}: {self.kind} manifest, {self.n_rows} rows, "
                f"{len(self.expectations) - len(self.failures)}/{len(self.expectations)} expectations met")
        lines = [head]
        for e in self.failures:
            lines.append(f"  FAILED {e.name}: {e.unexpected_count} row(s)")
            for r in e.failing_rows[:_MAX_ROWS_LISTED]:
                lines.append(f"    manifest line {r['line']}: image_id={r['image_id']!r} file={r['file']!r}"
                             + (f" value={r['value']!r}" if "value" in r else ""))
            if e.unexpected_count > _MAX_ROWS_LISTED:
                lines.append(f"    ... and {e.unexpected_count - _MAX_ROWS_LISTED} more")
        return "\n".join(lines)


class ValidationFailed(DataError):
    """A manifest broke its suite; the message lists the failing expectations and rows."""

    def __init__(self, summary: ValidationSummary):
        self.summary = summary
        super().__init__(summary.report() + "\nFix the listed files or rows (or re-run the stage that wrote them) "
                                            "and validate again.")


# --------------------------------------------------------------------------------------------- per-file facts
def _read_raw(root: Path) -> pd.DataFrame:
    path = manifest.manifest_file(root)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the manifest ({exc}); restore it or re-run the stage") from None


def _inside(root: Path, rel: str) -> bool:
    if not rel:
        return True
    try:
        manifest.resolve(root, rel)
        return True
    except DataError:
        return False


def _probe(path: Path, as_mask: bool) -> tuple[bool, bool, tuple[int, int] | None, bool]:
    """(exists, decodes, (width, height), binary) of an image or mask file."""
    if not path.is_file():
        return False, False, None, False
    try:
        with Image.open(path) as im:
            im.load()
            size = im.size
            binary = True
            if as_mask:
                values = np.unique(np.asarray(im.convert("L")))
                binary = set(values.tolist()) <= {0, 1, 255}
            return True, True, size, binary
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return True, False, None, False


def file_checks(root: str | Path, df: pd.DataFrame, require_masks: bool = True) -> pd.DataFrame:
    """The manifest with one boolean column per check in CHECK_COLUMNS (plus has_mask)."""
    root = Path(root)
    out = df.copy()
    cols = {c: [] for c in CHECK_COLUMNS}
    has_mask = []
    for row in df.to_dict("records"):
        image_rel = str(row.get("image_path") or "")
        mask_rel = str(row.get("mask_path") or "")
        inside = _inside(root, image_rel) and _inside(root, mask_rel)
        cols["paths_inside_root"].append(inside)
        img_ok = inside and bool(image_rel)
        exists, decodes, size, _ = _probe(root / image_rel, False) if img_ok else (False, False, None, False)
        cols["image_exists"].append(exists)
        cols["image_decodes"].append(decodes)
        try:
            recorded = (int(float(row.get("width"))), int(float(row.get("height"))))
        except (TypeError, ValueError):
            recorded = None
        cols["size_matches"].append(size is not None and size == recorded)
        has_mask.append(bool(mask_rel))
        if mask_rel and inside:
            m_exists, m_decodes, m_size, m_binary = _probe(root / mask_rel, True)
            cols["mask_exists"].append(m_exists)
            cols["mask_decodes"].append(m_decodes)
            cols["mask_binary"].append(m_decodes and m_binary)
            # an undecodable image already fails image_decodes; do not blame its mask for it too
            cols["mask_size_matches"].append(m_size is not None and (size is None or m_size == size))
        else:  # no mask: fine unless masks are required (asserted on has_mask); escaping paths fail above
            for c in ("mask_exists", "mask_decodes", "mask_binary", "mask_size_matches"):
                cols[c].append(not mask_rel)
        category = str(row.get("category") or "")
        prefix = class_prefix(category)
        cols["description_prefix_ok"].append(bool(category) and str(row.get("description") or "").startswith(prefix))
    for c, values in cols.items():
        out[c] = values
    out["has_mask"] = has_mask if require_masks else [True] * len(df)
    return out


# --------------------------------------------------------------------------------------------- GX suite
def _gx():
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO chatter drowns stage logs
    import great_expectations as gx
    import great_expectations.expectations as gxe
    return gx, gxe


def _context():
    """An in-memory GX context: no docs site on disk, no progress bars, no analytics."""
    gx, _ = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                               progress_bars=ProgressBarsConfig(globally=False), analytics_enabled=False)
    return gx.get_context(mode="ephemeral", project_config=config)


def build_suite(kind: str, categories: tuple[str, ...] | list[str]):
    """The ExpectationSuite for a `kind` ('real' or 'synthetic') manifest with the given categories."""
    gx, gxe = _gx()
    suite = gx.ExpectationSuite(name=f"manifest_{kind}")
    add = suite.add_expectation
    required = list(manifest.REQUIRED_COLUMNS)
    if kind == "synthetic":
        required += list(manifest.PROVENANCE_COLUMNS)
    for col in required:
        if col != "mask_path":  # empty mask_path = classification-only image, asserted via has_mask
            add(gxe.ExpectColumnValuesToNotBeNull(column=col))
    add(gxe.ExpectColumnValuesToBeUnique(column="image_id"))
    add(gxe.ExpectColumnValuesToBeUnique(column="image_path"))
    add(gxe.ExpectColumnValuesToBeInSet(column="category", value_set=list(categories)))
    add(gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(manifest.SPLITS)))
    add(gxe.ExpectColumnValuesToBeInSet(column="source", value_set=[kind]))
    add(gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1))
    add(gxe.ExpectColumnValuesToBeBetween(column="height", min_value=1))
    for col in (*CHECK_COLUMNS, "has_mask"):
        add(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[True]))
    if kind == "synthetic":
        add(gxe.ExpectColumnValuesToBeBetween(column="num_inference_steps", min_value=1))
        add(gxe.ExpectColumnValuesToBeBetween(column="guidance_scale", min_value=0))
    return suite


def _prepare_frame(raw: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Missing required columns added as nulls, empty strings made null, numbers parsed (None if not numbers)."""
    df = raw.copy()
    required = list(manifest.REQUIRED_COLUMNS) + (list(manifest.PROVENANCE_COLUMNS) if kind == "synthetic" else [])
    for c in required:
        if c not in df.columns:
            df[c] = None
    for c in required:
        if c != "mask_path":
            df[c] = df[c].map(lambda v: None if (v is None or (isinstance(v, str) and not v.strip())) else v)
    for c in ("width", "height", "num_inference_steps", "guidance_scale", "seed"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def validate_frame(root: str | Path, raw: pd.DataFrame, kind: str = "real",
                   categories: tuple[str, ...] | list[str] = HAM10000_CATEGORIES,
                   require_masks: bool = True) -> ValidationSummary:
    """Run the suite on a manifest dataframe of the dataset at root."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    gx, _ = _gx()
    root = Path(root)
    df = _prepare_frame(raw, kind)
    df = file_checks(root, df, require_masks=require_masks)
    df["_line"] = np.arange(len(df)) + 2  # CSV line (header is line 1)

    context = _context()
    batch = (context.data_sources.add_pandas("manifest").add_dataframe_asset("rows")
             .add_batch_definition_whole_dataframe("all_rows"))
    suite = context.suites.add(build_suite(kind, categories))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name=f"manifest_{kind}"))
    result = definition.run(batch_parameters={"dataframe": df},
                            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_line"]})

    by_line = df.set_index("_line")
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        name = f"{cfg.type}({column})" if column else cfg.type
        res = r.result or {}
        rows = []
        for hit in res.get("unexpected_index_list") or []:
            line = int(hit["_line"]) if isinstance(hit, dict) else int(hit) + 2
            row = by_line.loc[line]
            if column in CHECK_COLUMNS:
                file_col = CHECK_COLUMNS[column]
            else:
                file_col = "image_path" if column in ("image_path", "width", "height") else None
            file = row.get(file_col) if file_col else manifest.MANIFEST_NAME
            entry = {"line": line, "image_id": None if pd.isna(row.get("image_id")) else str(row.get("image_id")),
                     "file": None if file is None or (not isinstance(file, str) and pd.isna(file)) else str(file)}
            value_col = "description" if column == "description_prefix_ok" else column
            if value_col in raw.columns and column not in CHECK_COLUMNS or column == "description_prefix_ok":
                value = raw.iloc[line - 2][value_col]
                value = value.item() if hasattr(value, "item") else value
                entry["value"] = value[:120] if isinstance(value, str) else value
            rows.append(entry)
        if not r.success and not rows and r.exception_info and r.exception_info.get("raised_exception"):
            rows.append({"line": None, "image_id": None, "file": manifest.MANIFEST_NAME,
                         "value": str(r.exception_info.get("exception_message"))[:200]})
        outcomes.append(ExpectationOutcome(name=name, success=bool(r.success),
                                           unexpected_count=int(res.get("unexpected_count") or len(rows)),
                                           failing_rows=rows))
    return ValidationSummary(root=str(root), kind=kind, n_rows=len(df), success=bool(result.success),
                             expectations=outcomes)


def validate_manifest(root: str | Path, kind: str = "real",
                      categories: tuple[str, ...] | list[str] = HAM10000_CATEGORIES,
                      require_masks: bool = True, summary_path: str | Path | None = None,
                      on_summary: SummaryCallback | None = None) -> ValidationSummary:
    """Validate the manifest of the dataset folder `root` with the `kind` suite.

    The summary is written as JSON to `summary_path` (if given) and handed to `on_summary` (e.g.
    `components.tracking.validation_runs.log_validation`) with the artifact name it should be logged under.
    """
    summary = validate_frame(root, _read_raw(Path(root)), kind, categories, require_masks)
    if summary_path is not None:
        atomic.write_json(summary_path, summary.to_dict())
    if on_summary is not None:
        on_summary(summary, Path(summary_path).name if summary_path else f"validation_{kind}.json")
    return summary


def check_manifest(root: str | Path, kind: str = "real",
                   categories: tuple[str, ...] | list[str] = HAM10000_CATEGORIES,
                   require_masks: bool = True, summary_path: str | Path | None = None,
                   on_summary: SummaryCallback | None = None) -> ValidationSummary:
    """validate_manifest, raising ValidationFailed (a DataError: stage CLIs exit non-zero) when it fails."""
    summary = validate_manifest(root, kind, categories, require_masks, summary_path, on_summary)
    if not summary.success:
        raise ValidationFailed(summary)
    log.info("%s: %s manifest valid (%d rows, %d expectations)", root, kind, summary.n_rows,
             len(summary.expectations))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.data.validation",
                                     description="Validate a dataset folder's manifest with its GX suite.")
    parser.add_argument("root", help="dataset folder holding manifest.csv")
    parser.add_argument("--kind", choices=KINDS, default="real")
    parser.add_argument("--categories", default=",".join(HAM10000_CATEGORIES),
                        help="comma-separated class codes (default: the seven HAM10000 codes)")
    parser.add_argument("--allow-missing-masks", action="store_true", help="accept rows without mask_path")
    parser.add_argument("--summary", default=None, help="write the summary JSON here")
    args = parser.parse_args(argv)
    try:
        summary = validate_manifest(args.root, args.kind, [c.strip() for c in args.categories.split(",")],
                                    not args.allow_missing_masks, args.summary)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.report())
    return 0 if summary.success else 1


if __name__ == "__main__":
    sys.exit(main())
