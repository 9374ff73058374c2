"""Stage `finetune`: LoRA on the UNet attention with λ1·MSE + λ2·BCE + λ3·Dice (models/lora).

Trains, checkpoints every `checkpoint_every` steps (models/checkpoints/finetune, newest
`checkpoints_total_limit` kept), logs per-step losses and a validation grid per `validation_every_epochs`, saves
the LoRA as safetensors, logs the generator as an MLflow pyfunc model and registers it as
`skindualgen-generator` with alias `challenger`.

    python -m pipelines.finetune [--params params.yaml] [--set lora_rank=8 ...] [--resume latest]

Data-parallel over N processes (README, "Multi-GPU fine-tuning"): every process runs this module,

    accelerate launch --num_processes N -m pipelines.finetune [...]
    torchrun --nproc_per_node N -m pipelines.finetune [...]

and trains its shard of each global batch; only rank 0 clears stale checkpoints, opens the MLflow run, logs,
saves and registers. The other ranks train without tracking and write nothing.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import mlflow

from components import atomic
from components.config import to_dict
from components.generator import checkpoints
from components.generator.config import FinetuneConfig
from components.generator.distributed_training import process_rank
from components.images import pair_grid
from components.tracking.figures import log_figure
from components.tracking.mlflow_setup import stage_run
from pipelines.cli import load_stage_config, parse_stage_args, run_main, stage_parser

log = logging.getLogger(__name__)
STAGE = "finetune"


def _log_metrics(values: dict[str, float], step: int) -> None:
    # Asynchronous: per-step losses are queued and written in batches (the run's end waits for them).
    if mlflow.active_run() is not None:
        mlflow.log_metrics({f"finetune/{k}": v for k, v in values.items()}, step=step, synchronous=False)


def _loss_figure(history: list[dict]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(13, 2.8))
    steps = [h["step"] for h in history]
    for ax, name in zip(axes, ("total", "mse", "bce", "dice")):
        pts = [(s, h[name]) for s, h in zip(steps, history) if not math.isnan(h[name])]
        if pts:
            ax.plot(*zip(*pts), lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    return fig


def run(cfg: FinetuneConfig, reports_dir: str | Path = "reports") -> dict:
    """Fine-tune, save models/lora, log + register the generator; return the metrics written (on a rank > 0 of a
    data-parallel launch: train only and return the trainer's metrics)."""
    from components.generator.finetune_trainer import FinetuneTrainer

    start = time.perf_counter()
    if process_rank() != 0:
        # A data-parallel worker: trains its shard; rank 0 alone owns checkpoints, outputs and the MLflow run.
        return FinetuneTrainer(cfg, progress=False).run().metrics
    figures = Path(reports_dir) / STAGE
    if not cfg.resume and checkpoints.list_checkpoints(cfg.checkpoint_dir):
        # A fresh run owns the checkpoint folder: stale checkpoints would otherwise be resumed later.
        log.info("resume is empty: removing the previous run's checkpoints in %s", cfg.checkpoint_dir)
        for old in checkpoints.list_checkpoints(cfg.checkpoint_dir):
            shutil.rmtree(old)
    inputs = {"data": cfg.data_dir, "vae": cfg.vae_dir}
    if Path(cfg.base_model).exists():
        inputs["base"] = cfg.base_model
    with stage_run(STAGE, params=to_dict(cfg), inputs=inputs) as active:

        def on_validation(epoch: int, rows: list) -> None:
            log_figure(pair_grid(rows), f"finetune/validation/epoch_{epoch:03d}.png",
                       save_to=figures / f"validation_epoch_{epoch:03d}.png")

        trainer = FinetuneTrainer(cfg, on_metrics=_log_metrics, on_validation=on_validation)
        result = trainer.run()
        metrics = {**result.metrics, "lora_rank": cfg.lora_rank, "resolution": cfg.resolution}
        log_figure(_loss_figure(result.history), "finetune/loss_curves.png", save_to=figures / "loss_curves.png")
        mlflow.log_metrics({f"finetune/{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not math.isnan(float(v))})
        if cfg.register:
            from components.generator.sampling import generator_version
            from components.tracking.generator_model import log_generator
            from components.tracking.registry import register

            info = log_generator(cfg.base_model, cfg.vae_dir, result.lora_dir)
            version = generator_version(trainer.base.identity, cfg.vae_dir, result.lora_dir)
            metrics["registered_version"] = register(
                info.model_uri, cfg.registered_model, alias=cfg.alias,
                tags={"generator_version": version, "run_id": active.info.run_id, "lora_rank": cfg.lora_rank})
            metrics["generator_version"] = version
        metrics["seconds_stage"] = time.perf_counter() - start
        metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        atomic.write_json(cfg.metrics_file, metrics)
    log.info("finetune: %s", {k: metrics[k] for k in ("final_total", "final_mse", "final_bce", "final_dice")})
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(STAGE, __doc__.splitlines()[0])
    parser.add_argument("--resume", default=None, metavar="latest|PATH",
                        help="resume from the newest checkpoint (latest) or a checkpoint folder")
    args = parse_stage_args(parser, argv)
    if args.resume is not None:
        args.overrides.append(f"resume={args.resume}")
    run_main(lambda: run(load_stage_config(FinetuneConfig, STAGE, args)))


if __name__ == "__main__":
    main()
