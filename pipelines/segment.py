"""Stage `segment`: cross-validated lesion segmentation on real, synthetic and 50/50 hybrid training sets.

Same protocol as `classify` (pipelines/classify.py) with the segmenter registry (U-Net / ResNet-34,
DeepLabV3+ / ResNet-50), the Dice loss, and Dice, IoU, ASD, HD and HD95 in pixels (at the configured image
size) as metrics. Writes <out_dir>/results.csv, the best checkpoints and metrics/segment.json; logs a parent
MLflow run per architecture with a child run per fold and training set (with prediction overlays) and registers
the best model of each architecture as `skindualgen-segmenter-<arch>` (alias challenger).
"""
from __future__ import annotations

from components.downstream.config import DownstreamConfig, resolve
from components.downstream.tasks import SegmentationTask
from components.tracking.cv_runs import run_tracked_cv
from pipelines.cli import stage_main


def run(cfg: DownstreamConfig) -> dict:
    """Run (or resume) the segmentation protocol; returns the metrics written to the metrics file."""
    return run_tracked_cv(SegmentationTask(), resolve(cfg, "segment"))


def main(argv: list[str] | None = None) -> None:
    stage_main("segment", DownstreamConfig, run,
               "Cross-validated segmentation on real / synthetic / hybrid training sets.", argv)


if __name__ == "__main__":
    main()
