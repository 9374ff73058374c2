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

import logging

from components.downstream.config import DownstreamConfig, resolve
from components.downstream.runner import run_cv
from components.downstream.tasks import ClassificationTask
from pipelines.cli import stage_main

log = logging.getLogger("pipelines.classify")


def run(cfg: DownstreamConfig) -> dict:
    """Run (or resume) the classification protocol; returns the metrics written to the metrics file."""
    resolved = resolve(cfg, "classify")
    log.info("classify: preset %s, %s, %d folds, %d px, train sets %s", resolved.preset, resolved.architectures,
             resolved.n_folds, resolved.image_size, resolved.train_sets)
    result = run_cv(ClassificationTask(), resolved)
    log.info("classify: %d trainings run, %d resumed from %s in %.0f s", result["trainings_run"],
             result["trainings_skipped"], result["results_csv"], result["seconds"])
    return result


def main(argv: list[str] | None = None) -> None:
    stage_main("classify", DownstreamConfig, run,
               "Cross-validated classification on real / synthetic / hybrid training sets.", argv)


if __name__ == "__main__":
    main()
