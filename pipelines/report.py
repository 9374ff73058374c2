"""Stage `report`: the paper's Tables 1-3, the real/synthetic/hybrid bar plot and the XAI heatmaps (Fig. 3).

Reads the `report` section of params.yaml. Everything comes from recorded results: Table 1 from
metrics/quality.json (the quality stage; the table says so when it has not run), Tables 2 and 3 from the
per-fold results CSVs of the classify and segment stages (aggregated, never recomputed), the heatmaps from the
saved real-only and hybrid checkpoints on chosen real test images. Writes reports/table{1,2,3}.{md,csv},
reports/downstream.md (all three), reports/figures/downstream/*.png and metrics/report.json, logs them to
MLflow and prints the tables.
"""
from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from components import atomic
from components.config import to_dict
from components.data import manifest
from components.data.transforms import build_transforms
from components.downstream import report as R
from components.downstream.config import ReportConfig
from components.downstream.plots import bar_figure
from components.downstream.runner import checkpoint_path, load_checkpoint, read_checkpoint_meta
from components.downstream.xai import XaiRow, attribution_maps, comparison_figure
from components.errors import ConfigError
from components.tracking.figures import log_figure
from components.tracking.mlflow_setup import metric_key, stage_run
from pipelines.cli import stage_main

log = logging.getLogger("pipelines.report")

XAI_MODELS = (("real", "Real only"), ("hybrid", "50% Real + 50% Synth"))


def xai_images(cfg: ReportConfig, categories: list[str]) -> pd.DataFrame:
    """The test rows to explain: the configured ids, else the first test image (by id) of each class."""
    df = manifest.read_manifest(cfg.real_dir)
    test = df[(df["split"] == "test") & (df["source"] == "real")].sort_values("image_id")
    if cfg.xai_image_ids:
        missing = sorted(set(cfg.xai_image_ids) - set(test["image_id"]))
        if missing:
            raise ConfigError(f"report.xai_image_ids: {missing} are not real test images of {cfg.real_dir}; "
                              f"choose ids from its manifest (split 'test')")
        return test.set_index("image_id").loc[cfg.xai_image_ids].reset_index()
    return pd.concat([test[test["category"] == c].head(1) for c in categories if (test["category"] == c).any()])


def xai_architectures(cfg: ReportConfig, classify: pd.DataFrame) -> list[str]:
    """Architectures with a real-only and a hybrid checkpoint of the current classify results."""
    fingerprints = dict(zip(classify["arch"], classify["fingerprint"])) if not classify.empty else {}
    archs = cfg.xai_architectures or list(fingerprints)
    out = []
    for arch in archs:
        metas = [read_checkpoint_meta(checkpoint_path(cfg.classify_models, arch, s)) for s, _ in XAI_MODELS]
        if all(m is not None and m.get("fingerprint") == fingerprints.get(arch, m.get("fingerprint")) for m in metas):
            out.append(arch)
        else:
            log.info("XAI: %s has no current real-only + hybrid checkpoints in %s; skipped", arch, cfg.classify_models)
    return out


def run_xai(cfg: ReportConfig, classify: pd.DataFrame) -> list[str]:
    """Fig. 3 per architecture (rows: chosen test images; columns: original + 3 maps, real-only then hybrid)."""
    written = []
    archs = xai_architectures(cfg, classify)
    for arch in archs:
        models = {s: load_checkpoint(checkpoint_path(cfg.classify_models, arch, s)) for s, _ in XAI_MODELS}
        meta = models["real"][1]
        categories = meta["categories"]
        size = cfg.xai_size or meta["image_size"]
        transform = build_transforms("classify", size, train=False)
        rows = []
        for _, row in xai_images(cfg, categories).iterrows():
            pair = manifest.load_pair(cfg.real_dir, row)
            mask = pair.mask if pair.mask is not None else np.zeros(pair.image.shape[:2], np.uint8)
            image = transform(image=pair.image, mask=mask)["image"]
            tensor = torch.from_numpy(np.ascontiguousarray(image).transpose(2, 0, 1).astype(np.float32) / 255.0)
            panels = []
            for train_set, title in XAI_MODELS:
                model = models[train_set][0]
                maps, target, prob = attribution_maps(model, tensor, occlusion_window=cfg.xai_occlusion_window)
                panels.append((title, maps, f"pred {categories[target]} ({prob:.2f})"))
            rows.append(XaiRow(f"{row['image_id']}\ntrue {row['category']}", image, panels))
        fig = comparison_figure(rows, title=f"{R.display_name(arch)}: Grad-CAM, Saliency, Occlusion "
                                            f"(real-only model left, hybrid model right)")
        out = Path(cfg.figures_dir) / f"xai_{arch}.png"
        log_figure(fig, f"report/xai_{arch}.png", save_to=out)
        written.append(str(out))
    return written


def run(cfg: ReportConfig) -> dict:
    """Build and write the tables and figures; returns the metrics written to cfg.metrics_file."""
    classify = R.load_results(cfg.classify_results, cfg.classify_metrics)
    segment = R.load_results(cfg.segment_results, cfg.segment_metrics)
    out = Path(cfg.out_dir)
    with stage_run("report", to_dict(cfg)):
        tables = {"table1": R.table1(cfg.quality_metrics), "table2": R.table2(classify, segment),
                  "table3": R.table3(classify, segment),
                  "verdict": R.verdict_table(cfg.classify_metrics, cfg.segment_metrics)}
        for name, table in tables.items():
            atomic.write_text(out / f"{name}.md", table.markdown)
            with atomic.atomic_path(out / f"{name}.csv") as tmp:
                table.frame.to_csv(tmp, index=False)
            mlflow.log_text(table.markdown, f"report/{name}.md")
        combined = "\n".join(t.markdown for t in tables.values())
        atomic.write_text(out / "downstream.md", combined)

        c_agg = R.aggregate(classify, [m for m, _ in R.CLASSIFY_COLUMNS])
        s_agg = R.aggregate(segment, [m for m, _ in R.SEGMENT_COLUMNS])
        panels = [(R.bar_table(c_agg, cfg.classify_metric), f"{cfg.classify_metric} (%)",
                   f"Classification, real test split ({cfg.classify_metric})"),
                  (R.bar_table(s_agg, cfg.segment_metric),
                   f"{cfg.segment_metric}" + (" (%)" if cfg.segment_metric in R.PERCENT else " (px)"),
                   f"Segmentation, real test split ({cfg.segment_metric})")]
        bars = Path(cfg.figures_dir) / "real_synthetic_hybrid.png"
        log_figure(bar_figure(panels), "report/real_synthetic_hybrid.png", save_to=bars)

        xai = run_xai(cfg, classify) if cfg.xai and not classify.empty else []
        metrics = {
            "tables": {name: str(out / f"{name}.md") for name in tables},
            "notes": {name: t.note for name, t in tables.items() if t.note},
            "bar_plot": str(bars), "xai_figures": xai,
            "classify_rows": int(len(classify)), "segment_rows": int(len(segment)),
            "headline": _headline(c_agg, s_agg),
        }
        atomic.write_json(cfg.metrics_file, metrics)
        flat = {metric_key(f"{k}.{m}"): v for k, d in metrics["headline"].items() for m, v in d.items()}
        if flat:
            mlflow.log_metrics(flat)
    print(combined)
    return metrics


def _headline(c_agg: pd.DataFrame, s_agg: pd.DataFrame) -> dict:
    """{arch/train_set: {metric: mean on the real test split}} for the metrics file."""
    out: dict = {}
    for agg, metrics in ((c_agg, [m for m, _ in R.CLASSIFY_COLUMNS]), (s_agg, [m for m, _ in R.SEGMENT_COLUMNS])):
        if agg.empty:
            continue
        for _, r in agg[agg["eval_set"] == "test"].iterrows():
            out[f"{r['arch']}/{r['train_set']}"] = {m: round(float(r[f"{m}_mean"]), 4) for m in metrics}
    return out


def main(argv: list[str] | None = None) -> None:
    stage_main("report", ReportConfig, run,
               "Tables 1-3, the real/synthetic/hybrid bar plot and the XAI heatmaps.", argv)


if __name__ == "__main__":
    main()
