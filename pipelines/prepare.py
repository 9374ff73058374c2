"""Stage `prepare`: import the configured source into data/real, validate it, record what it holds.

    python -m pipelines.prepare [--params params.yaml] [--set source=ham10000 --set path=/data/HAM10000]

Writes data/real/ (images/, masks/, manifest.csv, categories.json with the classes that have images, excluded.csv
listing every file left out; built beside it and swapped in only after the GX suite passed), metrics/prepare.json
and metrics/validation_real.json, reports/prepare/*.png, and logs params, class counts (numbers and a bar plot),
exclusions by reason (and excluded.csv), mask repairs, a per-class sample grid with mask overlays, the git commit
and the DVC md5 of data/real to MLflow.
"""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from components import (
    atomic,  # noqa: E402
    images,  # noqa: E402
)
from components.config import to_dict  # noqa: E402
from components.data import manifest  # noqa: E402
from components.data.config import ImportOptions, PrepareConfig  # noqa: E402
from components.data.exclusions import EXCLUDED_FILE, REASONS, counts_by_reason  # noqa: E402
from components.data.importers import ImportReport, import_dataset  # noqa: E402
from components.data.toy import TOY_ORIGIN  # noqa: E402
from components.data.validation import ValidationFailed, validate_manifest  # noqa: E402
from components.tracking import figures, lineage  # noqa: E402
from components.tracking.mlflow_setup import stage_run  # noqa: E402
from components.tracking.validation_runs import log_validation  # noqa: E402
from pipelines.cli import stage_main  # noqa: E402

log = logging.getLogger("prepare")

TOY_NOTE = "procedural toy drawings for offline runs; synthetic, not medical data"


def class_table(df: pd.DataFrame, categories: tuple[str, ...]) -> pd.DataFrame:
    """Images per class (rows, in the dataset's order) and split (columns train, val, test, total)."""
    table = pd.crosstab(df["category"], df["split"]).reindex(index=list(categories), columns=list(manifest.SPLITS),
                                                              fill_value=0)
    table = table.fillna(0).astype(int)
    table["total"] = table[list(manifest.SPLITS)].sum(axis=1)
    return table


def class_count_figure(table: pd.DataFrame, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(table))
    ax.bar(x, table["train"], label="train", color="#4c72b0")
    ax.bar(x, table["val"], bottom=table["train"], label="val", color="#55a868")
    ax.bar(x, table["test"], bottom=table["train"] + table["val"], label="test", color="#dd8452")
    for xi, total in zip(x, table["total"]):
        ax.text(xi, total, str(total), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, table.index)
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sample_grid_figure(root: Path, df: pd.DataFrame, categories: tuple[str, ...], per_class: int = 4,
                       seed: int = 0, title: str = "") -> plt.Figure:
    """One row per class: `per_class` images, each followed by its mask overlay."""
    rows = []
    for cat in categories:
        sub = df[df["category"] == cat]
        if sub.empty:
            continue
        picks = sub.sample(n=min(per_class, len(sub)), random_state=seed)
        cells = []
        for row in picks.to_dict("records"):
            pair = manifest.load_pair(root, row)
            cells.append((row["image_id"], pair.image))
            if pair.mask is not None:
                cells.append(("mask overlay", images.overlay(pair.image, pair.mask)))
        rows.append((cat, cells))
    fig = images.pair_grid(rows)
    if title:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
    return fig


def run(cfg: PrepareConfig, metrics_dir: str | Path = "metrics", reports_dir: str | Path = "reports") -> dict:
    """Build, validate and describe cfg.out_dir; return the metrics written to metrics/prepare.json."""
    out = Path(cfg.out_dir)
    metrics_dir = Path(metrics_dir)
    reports = Path(reports_dir) / "prepare"
    validation_file = metrics_dir / "validation_real.json"
    opts = ImportOptions.from_config(cfg)
    inputs = {"source": cfg.path} if cfg.path else {}
    with stage_run("prepare", params=to_dict(cfg), inputs=inputs):
        summaries = []
        import_reports: list[ImportReport] = []

        def check(tmp: Path) -> None:
            summary = validate_manifest(tmp, "real", manifest.read_categories(tmp), require_masks=cfg.require_masks)
            summary.root = str(out)  # report the final location, not the temporary build folder
            atomic.write_json(validation_file, summary.to_dict())
            summaries.append(summary)
            if not summary.success:
                raise ValidationFailed(summary)

        log.info("importing %s into %s (%d px)", cfg.source, out, cfg.size)
        try:
            import_dataset(cfg.source, cfg.path, out, opts, check=check, on_report=import_reports.append)
        finally:
            if summaries:
                log_validation(summaries[-1], validation_file.name)
        summary, report = summaries[-1], import_reports[-1]

        df = manifest.read_manifest(out)
        md5 = lineage.dvc_md5(out)
        origin = str(df["origin"].iloc[0])
        categories = tuple(manifest.read_categories(out, df))
        mlflow.set_tags({"data.real.md5": md5, "data.origin": origin, "data.source": cfg.source,
                         "data.categories": ",".join(categories),
                         "data.dropped_categories": ",".join(report.dropped_categories),
                         **({"data.note": TOY_NOTE} if origin == TOY_ORIGIN else {})})

        table = class_table(df, categories)
        excluded = {reason: 0 for reason in REASONS} | counts_by_reason(report.excluded)
        with_mask = df["mask_path"] != ""
        areas = [float(manifest.load_mask(manifest.resolve(out, p)).mean()) for p in df.loc[with_mask, "mask_path"]]
        metrics = {
            "n_images": int(len(df)),
            "n_train": int((df["split"] == "train").sum()),
            "n_val": int((df["split"] == "val").sum()),
            "n_test": int((df["split"] == "test").sum()),
            "n_with_mask": int(with_mask.sum()),
            "n_classes_present": int((table["total"] > 0).sum()),
            "n_dropped_categories": len(report.dropped_categories),
            "image_size": int(cfg.size),
            "mean_lesion_area": round(float(np.mean(areas)), 5) if areas else 0.0,
            "imbalance_ratio": round(float(table["total"].max() / max(table["total"].min(), 1)), 3),
            "classes": {c: {k: int(v) for k, v in table.loc[c].items()} for c in table.index},
            "n_excluded": len(report.excluded),
            "excluded": excluded,
            "n_masks_resized": report.masks_resized,
            "n_masks_binarised": report.masks_binarised,
            "n_masks_from_alpha": report.masks_from_alpha,
            "n_missing_images": len(report.missing_images),
            "validation": {"success": summary.success, "n_expectations": len(summary.expectations),
                           "n_failed": len(summary.failures)},
        }
        atomic.write_json(metrics_dir / "prepare.json", metrics)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_metrics({f"count_{c}": float(n) for c, n in table["total"].items()})
        mlflow.log_metrics({f"excluded_{reason}": float(n) for reason, n in excluded.items()})
        if (out / EXCLUDED_FILE).is_file():
            mlflow.log_artifact(str(out / EXCLUDED_FILE), "prepare")
        mlflow.log_dict(metrics, "prepare/prepare.json")
        mlflow.log_text(table.to_csv(), "prepare/class_counts.csv")

        label = f"{cfg.source}: {TOY_NOTE}" if origin == TOY_ORIGIN else f"{cfg.source} ({origin})"
        figures.log_figure(class_count_figure(table, f"images per class - {label}"),
                           "prepare/class_counts.png", save_to=reports / "class_counts.png")
        figures.log_figure(sample_grid_figure(out, df, categories, seed=cfg.seed,
                                              title=f"samples per class with mask overlays - {label}"),
                           "prepare/samples.png", save_to=reports / "samples.png")
        log.info("%s: %d images (%d train / %d test) of classes %s, %d file(s) excluded, md5 %s", out,
                 metrics["n_images"], metrics["n_train"], metrics["n_test"], list(categories), len(report.excluded),
                 md5)
    return metrics


def main(argv: list[str] | None = None) -> None:
    stage_main("prepare", PrepareConfig, run,
               "Import a dataset (or generate the toy set) into data/real and validate it.", argv)


if __name__ == "__main__":
    main()
