"""The sweep: a grid over LoRA rank, OptunaSearch over sampling settings, ASHA over fine-tune epochs.

Each rank gets its own Optuna study (Optuna cannot search a grid dimension). Trials report through the
`TrialTracker` the caller passes (`components.tuning.reporting`); `pipelines/tune.py` passes one that makes every
trial an MLflow child run of the sweep run. Each rank's Tuner lives under `storage/name/rank_<r>` and is restored
with `Tuner.restore` when the sweep is started again after an interruption.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from components.distributed.cluster import connect, trial_resources
from components.tuning.config import TuneConfig
from components.tuning.objectives import OBJECTIVES, TrialFn
from components.tuning.reporting import NullTrialTracker, TrialInfo, TrialTracker


def search_space(cfg: TuneConfig) -> dict[str, Any]:
    """Sampling settings searched by Optuna inside each rank."""
    return {
        "num_inference_steps": tune.randint(cfg.steps_min, cfg.steps_max + 1),
        "guidance_scale": tune.uniform(cfg.guidance_min, cfg.guidance_max),
    }


def _trainable(trial_fn: TrialFn, settings: dict, tracker: TrialTracker) -> Any:
    """Wrap a trial so it records through `tracker` (Ray pickles this closure: everything it holds is picklable)."""

    def trainable(config: dict) -> None:
        ctx = tune.get_context()
        info = TrialInfo(trial_id=ctx.get_trial_id(), name=ctx.get_trial_name(), trial_dir=Path(ctx.get_trial_dir()))
        params = {k: v for k, v in config.items() if not k.startswith("_")}
        with tracker.trial(info, params) as log:

            def report(metrics: dict[str, float], step: int) -> None:
                log(metrics, step)
                tune.report(metrics)

            trial_fn(config, settings, report)

    return trainable


def run_sweep(cfg: TuneConfig, trial_fn: TrialFn | None = None,
              tracker: TrialTracker | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep; returns the best configuration and every trial's final figures.

    `tracker` records each trial (default: nothing is recorded); it must be picklable.
    """
    objective = OBJECTIVES.create(cfg.objective)
    trial_fn = trial_fn or objective.trial_fn
    cluster = connect(cfg.ray_address, num_cpus=cfg.num_cpus or None)
    resources = trial_resources(cluster, cfg.cpus_per_trial)
    storage = Path(cfg.storage).resolve()
    settings = {**dataclasses.asdict(cfg), "root": str(Path.cwd().resolve()),
                "use_gpu": bool(resources.get("gpu"))}
    trainable = _trainable(trial_fn, settings, tracker or NullTrialTracker())
    trials: list[dict[str, Any]] = []
    for rank in cfg.lora_ranks:
        name = f"rank_{rank}"
        path = storage / cfg.name / name
        fn = tune.with_resources(trainable, resources)
        if cfg.resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable=fn, resume_errored=False, restart_errored=False)
        else:
            searcher = ConcurrencyLimiter(OptunaSearch(seed=cfg.seed + rank), max_concurrent=cfg.max_concurrent)
            tuner = tune.Tuner(
                fn,
                param_space={**search_space(cfg), "lora_rank": rank},
                tune_config=tune.TuneConfig(
                    metric=objective.metric, mode=objective.mode, search_alg=searcher,
                    scheduler=ASHAScheduler(time_attr="training_iteration", max_t=cfg.max_epochs,
                                            grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor),
                    num_samples=cfg.trials_per_rank),
                run_config=tune.RunConfig(name=name, storage_path=str(storage / cfg.name),
                                          failure_config=tune.FailureConfig(max_failures=0),
                                          verbose=1),
            )
        grid = tuner.fit()
        for result in grid:
            metrics = result.metrics or {}
            trials.append({
                "lora_rank": rank,
                "num_inference_steps": (result.config or {}).get("num_inference_steps"),
                "guidance_scale": (result.config or {}).get("guidance_scale"),
                "epochs": metrics.get("training_iteration", 0),
                objective.metric: metrics.get(objective.metric),
                "error": None if result.error is None else type(result.error).__name__ + ": " + str(result.error)[:300],
            })
    scored = [t for t in trials if t["error"] is None and _finite(t[objective.metric])]
    if not scored:
        return {"best": None, "trials": trials, "metric": objective.metric, "mode": objective.mode}
    pick = min if objective.mode == "min" else max
    best = pick(scored, key=lambda t: t[objective.metric])
    return {"best": best, "trials": trials, "metric": objective.metric, "mode": objective.mode}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
