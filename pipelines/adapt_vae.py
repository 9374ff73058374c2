"""Stage `adapt_vae`: 3→4-channel VAE surgery and training of the mask path (models/vae4).

Reads the base model's VAE (models/base, following base.json), expands encoder conv_in and decoder conv_out to
RGB + mask, trains the new parameters with BCE + Dice on the mask and an RGB-preservation term on the clinical
training split minus a seeded held-out share (`eval_fraction`), reports mask Dice and RGB PSNR on that share and
saves the adapted VAE with save_pretrained. The validation and test splits are never read.

    python -m pipelines.adapt_vae [--params params.yaml] [--set steps=300 ...]
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow

from components import atomic
from components.config import to_dict
from components.data.manifest import read_categories
from components.generator import base_models
from components.generator.config import AdaptVaeConfig
from components.generator.data import load_split
from components.generator.folders import staged_dir
from components.images import pair_grid
from components.tracking.figures import log_figure
from components.tracking.mlflow_setup import stage_run
from pipelines.cli import load_stage_config, parse_stage_args, run_main, stage_parser

log = logging.getLogger(__name__)
STAGE = "adapt_vae"


def _log_metrics(values: dict[str, float], step: int) -> None:
    if mlflow.active_run() is not None:
        mlflow.log_metrics({f"adapt_vae/{k}": v for k, v in values.items()}, step=step)


def run(cfg: AdaptVaeConfig, reports_dir: str | Path = "reports") -> dict:
    """Adapt the base VAE, save it to cfg.out_dir; return the metrics written to cfg.metrics_file."""
    from components.generator.vae_trainer import adapt_vae, eval_split

    start = time.perf_counter()
    with stage_run(STAGE, params=to_dict(cfg), inputs={"data": cfg.data_dir, "base": cfg.base_model}):
        vae3 = base_models.load_vae(cfg.base_model)
        train, held_out = eval_split(load_split(cfg.data_dir, "train", stage=STAGE), cfg.eval_fraction, cfg.seed)
        categories = read_categories(cfg.data_dir, train)
        result = adapt_vae(vae3, cfg.data_dir, train, held_out, categories, cfg, on_metrics=_log_metrics)
        with staged_dir(cfg.out_dir) as tmp:
            result.vae.save_pretrained(tmp, safe_serialization=True)
        metrics = {**result.metrics, "in_channels": result.vae.config.in_channels,
                   "out_channels": result.vae.config.out_channels, "seconds_stage": time.perf_counter() - start}
        mlflow.log_metrics({f"adapt_vae/eval_{k}": float(v) for k, v in metrics.items()})
        log_figure(pair_grid(result.grid_rows), "adapt_vae/eval_grid.png",
                   save_to=Path(reports_dir) / STAGE / "eval_grid.png")
        atomic.write_json(cfg.metrics_file, metrics)
    log.info("adapt_vae, held-out training images: mask Dice %.3f (RGB-only latent %.3f), RGB PSNR %.2f dB "
             "(base VAE %.2f dB)",
             metrics["mask_dice"], metrics["mask_dice_rgb_only"], metrics["rgb_psnr"], metrics["rgb_psnr_base"])
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(STAGE, __doc__.splitlines()[0])
    args = parse_stage_args(parser, argv)
    run_main(lambda: run(load_stage_config(AdaptVaeConfig, STAGE, args)))


if __name__ == "__main__":
    main()
