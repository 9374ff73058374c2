"""Stage `classify`: cross-validated classification on real, synthetic and 50/50 hybrid training sets (Table 2).

Reads the `classify` section of params.yaml (a preset, `cpu` or `paper`, plus overrides). For each architecture
and each of the n stratified folds of the real training split, three models are trained on training sets of
identical size and class mix (real only / synthetic only / half and half) and evaluated on real images only:
the fold's held-out part, the real test split (headline figures) and the optional external set (Table 3).

Writes <out_dir>/results.csv (one row per fold, training set and evaluation set: the report is built from it),
the best checkpoint per architecture and training set, metrics/classify.json (mean ± std summaries); logs a
parent MLflow run per architecture with a child run per fold and training set, confusion matrices as images,
and registers the best model of each architecture as `skindualgen-classifier-<arch>` (alias challenger).
A rerun skips the trainings already recorded under the same settings and data.
"""
from __future__ import annotations

from components.downstream.config import DownstreamConfig, resolve
from components.downstream.tasks import ClassificationTask
from components.tracking.cv_runs import run_tracked_cv
from pipelines.cli import stage_main


def run(cfg: DownstreamConfig) -> dict:
    """Run (or resume) the classification protocol; returns the metrics written to the metrics file."""
    return run_tracked_cv(ClassificationTask(), resolve(cfg, "classify"))


def main(argv: list[str] | None = None) -> None:
    stage_main("classify", DownstreamConfig, run,
               "Cross-validated classification on real / synthetic / hybrid training sets.", argv)


if __name__ == "__main__":
    main()
