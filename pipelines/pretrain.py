"""Stage `pretrain`: the base model of the dual generator (models/base).

For `base_model: tiny` (the offline default) it trains the tiny preset's 3-channel VAE and then its UNet and
text encoder from scratch on the public-like corpus (data/public, the `corpus` stage; never the clinical data),
evaluates on the corpus holdout and writes an ordinary diffusers folder. For any other base model (a Stable
Diffusion 2.x folder or hub id, or `sd2-base-random`) it trains nothing and writes models/base/base.json
pointing at it; every later stage follows that pointer.

    python -m pipelines.pretrain [--params params.yaml] [--set unet_steps=600 ...]
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow

from components import atomic
from components.config import to_dict
from components.errors import ModelError
from components.generator import base_models, presets
from components.generator.config import PretrainConfig
from components.generator.folders import staged_dir
from components.images import pair_grid
from components.tracking.figures import log_figure
from components.tracking.mlflow_setup import stage_run
from pipelines.cli import load_stage_config, parse_stage_args, run_main, stage_parser

log = logging.getLogger(__name__)
STAGE = "pretrain"


def _log_metrics(values: dict[str, float], step: int) -> None:
    if mlflow.active_run() is not None:
        mlflow.log_metrics(values, step=step)


def run(cfg: PretrainConfig, reports_dir: str | Path = "reports") -> dict:
    """Build models/base (trained tiny model or pointer); return the metrics written to cfg.metrics_file."""
    start = time.perf_counter()
    inputs = {"corpus": cfg.corpus_dir} if cfg.base_model == "tiny" else {}
    with stage_run(STAGE, params=to_dict(cfg), inputs=inputs):
        if cfg.base_model == "tiny":
            from components.generator.pretrain_trainer import pretrain_tiny

            result = pretrain_tiny(cfg, on_metrics=_log_metrics)
            with staged_dir(cfg.out_dir) as tmp:
                base_models.save_base(result.model, tmp)
            metrics = {"base_model": "tiny", "pretrained": True, **result.metrics}
            figures = Path(reports_dir) / STAGE
            log_figure(pair_grid(result.recon_rows), "pretrain/vae_reconstructions.png",
                       save_to=figures / "vae_reconstructions.png")
            log_figure(pair_grid(result.sample_rows), "pretrain/base_samples.png",
                       save_to=figures / "base_samples.png")
        else:
            if cfg.base_model in presets.PRESETS and presets.PRESETS.create(cfg.base_model).pretrain:
                raise ModelError(f"preset {cfg.base_model!r} cannot be used as a pointer")
            base_models.validate_ref(cfg.base_model)
            with staged_dir(cfg.out_dir) as tmp:
                base_models.write_pointer(tmp, cfg.base_model)
            metrics = {"base_model": cfg.base_model, "pretrained": False}
        metrics["seconds_stage"] = time.perf_counter() - start
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        mlflow.log_metrics({f"pretrain/{k}": v for k, v in numeric.items()})
        atomic.write_json(cfg.metrics_file, metrics)
    log.info("pretrain: %s", metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(STAGE, __doc__.splitlines()[0])
    args = parse_stage_args(parser, argv)
    run_main(lambda: run(load_stage_config(PretrainConfig, STAGE, args)))


if __name__ == "__main__":
    main()
