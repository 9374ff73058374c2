"""The sweep in two phases: one fine-tune per LoRA rank, then OptunaSearch over sampling settings on each fixed LoRA.

Phase 1 runs every rank's fine-tune as a Ray task (one GPU each when the cluster has GPUs, all ranks at once as far
as the cluster allows), `tune.max_epochs` epochs, exactly one trainer per rank (`components.tuning.trials`). A rank
whose LoRA is saved and complete for the same fine-tune config and data is reused, not trained again. There is no
ASHA: a rank's only per-epoch figure is its training loss, which is not the objective, and stopping a rank early
would leave it unscored; the ranks are the grid, each trained to its full budget.

Phase 2, per rank, is a Ray Tune study (OptunaSearch, seeded per rank) over `num_inference_steps` ×
`guidance_scale`: each trial loads the rank's LoRA, generates `tune.samples_per_trial` pairs and reports the
objective with its standard error (`components.tuning.objectives`). Trials have no training budget, so no
scheduler cuts them. Each study lives under `<storage>/<name>/sampling/rank_<r>-<digest>`; the digest covers the
LoRA's bytes and every setting that changes a score, so `Tuner.restore` picks up an interrupted study of the same
settings and a changed setting starts a new one.

Trials report through the `TrialTracker` the caller passes (`components.tuning.reporting`); `pipelines/tune.py`
passes one that makes every fine-tune and every sampling trial an MLflow child run of the sweep run.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from components.distributed.cluster import connect, trial_resources
from components.tuning import trials as trials_mod
from components.tuning.config import TuneConfig
from components.tuning.objectives import OBJECTIVES, Objective
from components.tuning.reporting import NullTrialTracker, TrialInfo, TrialTracker
from components.tuning.trials import RankJob, TrainerFactory, TrialFn


def search_space(cfg: TuneConfig) -> dict[str, Any]:
    """Sampling settings searched by Optuna inside each rank."""
    return {
        "num_inference_steps": tune.randint(cfg.steps_min, cfg.steps_max + 1),
        "guidance_scale": tune.uniform(cfg.guidance_min, cfg.guidance_max),
    }


def _trainable(trial_fn: TrialFn, settings: dict, tracker: TrialTracker) -> Any:
    """Wrap a sampling trial so it records through `tracker` (Ray pickles this closure: all it holds is picklable)."""

    def trainable(config: dict) -> None:
        ctx = tune.get_context()
        info = TrialInfo(trial_id=ctx.get_trial_id(), name=ctx.get_trial_name(), trial_dir=Path(ctx.get_trial_dir()),
                         phase="sampling")
        params = {k: v for k, v in config.items() if not k.startswith("_")}
        with tracker.trial(info, params) as log:

            def report(metrics: dict[str, float], step: int) -> None:
                log(metrics, step)
                tune.report(metrics)

            trial_fn(config, settings, report)

    return trainable


def _error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc     # a RayTaskError carries the worker's exception
    return f"{type(cause).__name__}: {str(cause)[:300]}"


def _remote_options(resources: dict[str, float]) -> dict[str, Any]:
    return {"num_cpus": resources["cpu"], "num_gpus": resources.get("gpu", 0), "max_retries": 0}


def train_ranks(cfg: TuneConfig, settings: dict, resources: dict[str, float], tracker: TrialTracker,
                factory: TrainerFactory, ranks_dir: Path) -> list[dict[str, Any]]:
    """Phase 1: one fine-tune per rank not already complete, all submitted at once; one record per rank."""
    jobs = [trials_mod.plan_rank(settings, rank, ranks_dir) for rank in cfg.lora_ranks]
    records: dict[int, dict[str, Any]] = {}
    pending: dict[int, Any] = {}
    remote = ray.remote(trials_mod.train_rank).options(**_remote_options(resources))
    for job in jobs:
        done = trials_mod.completed(job) if cfg.resume else None
        if done is not None:
            records[job.rank] = {"lora_rank": job.rank, "status": "reused", **_rank_fields(done), "error": None}
            continue
        trials_mod.prepare_rank_dir(job, cfg.resume)
        pending[job.rank] = remote.remote(job, settings, tracker, factory)
    for rank, ref in pending.items():
        try:
            done = ray.get(ref)
            records[rank] = {"lora_rank": rank, "status": "trained", **_rank_fields(done), "error": None}
        except Exception as exc:  # noqa: BLE001 - a failing rank must not stop the others
            records[rank] = {"lora_rank": rank, "status": "failed", "lora_dir": None, "lora_md5": None,
                             "train_total_loss": None, "steps": None, "error": _error(exc)}
    return [records[job.rank] for job in jobs]


def _rank_fields(done: dict) -> dict[str, Any]:
    metrics = done.get("metrics", {})
    return {"lora_dir": done["lora_dir"], "lora_md5": done["lora_md5"],
            "train_total_loss": metrics.get("final_total"), "steps": metrics.get("steps")}


def _study_identity(cfg: TuneConfig, rank: dict, reference: str, size: int) -> dict[str, Any]:
    keep = ("objective", "samples_per_trial", "trials_per_rank", "steps_min", "steps_max", "guidance_min",
            "guidance_max", "seed", "vae_dir", "base_dir")
    return {**{k: getattr(cfg, k) for k in keep}, "lora_md5": rank["lora_md5"], "reference": reference, "size": size}


def sample_rank(cfg: TuneConfig, objective: Objective, rank: dict, trainable: Any, resources: dict[str, float],
                path: Path) -> list[dict[str, Any]]:
    """Phase 2 for one rank: an Optuna study of `trials_per_rank` sampling trials on its saved LoRA."""
    fn = tune.with_resources(trainable, resources)
    if cfg.resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable=fn, resume_errored=False, restart_errored=False)
    else:
        searcher = ConcurrencyLimiter(OptunaSearch(seed=cfg.seed + rank["lora_rank"]),
                                      max_concurrent=cfg.max_concurrent)
        tuner = tune.Tuner(
            fn,
            param_space={**search_space(cfg), "lora_rank": rank["lora_rank"], "_lora_dir": rank["lora_dir"]},
            tune_config=tune.TuneConfig(metric=objective.metric, mode=objective.mode, search_alg=searcher,
                                        num_samples=cfg.trials_per_rank),
            run_config=tune.RunConfig(name=path.name, storage_path=str(path.parent),
                                      failure_config=tune.FailureConfig(max_failures=0), verbose=1),
        )
    out = []
    se_key = f"{objective.metric}_se"
    for result in tuner.fit():
        metrics, config = result.metrics or {}, result.config or {}
        out.append({
            "lora_rank": rank["lora_rank"],
            "num_inference_steps": config.get("num_inference_steps"),
            "guidance_scale": config.get("guidance_scale"),
            objective.metric: metrics.get(objective.metric),
            se_key: metrics.get(se_key),
            "n_samples": metrics.get("n_samples"),
            "trial_id": metrics.get("trial_id"),
            "error": None if result.error is None else _error(result.error),
        })
    return out


def run_sweep(cfg: TuneConfig, tracker: TrialTracker | None = None,
              trial_fn: TrialFn | None = None) -> dict[str, Any]:
    """Run (or resume) both phases; returns the best sampling trial, every trial, every rank's fine-tune.

    `tracker` records each fine-tune and each sampling trial (default: nothing is recorded); it must be picklable.
    `trial_fn` replaces the sampling trial (tests); the trainer is `components.tuning.trials.new_trainer`, looked
    up when the sweep starts, so whatever that name holds in the driver is what every rank task constructs.
    """
    objective = OBJECTIVES.create(cfg.objective)
    trial_fn = trial_fn or trials_mod.sampling_trial
    factory = trials_mod.new_trainer
    tracker = tracker or NullTrialTracker()
    cluster = connect(cfg.ray_address, num_cpus=cfg.num_cpus or None)
    resources = trial_resources(cluster, cfg.cpus_per_trial)
    root = Path(cfg.storage).resolve() / cfg.name
    settings = {**dataclasses.asdict(cfg), "root": str(Path.cwd().resolve()), "use_gpu": bool(resources.get("gpu"))}

    ranks = train_ranks(cfg, settings, resources, tracker, factory, root / "ranks")
    ready = [r for r in ranks if r["error"] is None]
    trials: list[dict[str, Any]] = []
    if ready:
        job: RankJob = trials_mod.plan_rank(settings, ready[0]["lora_rank"], root / "ranks")
        size = cfg.eval_resolution or job.cfg.resolution
        name, _ = trials_mod.reference_plan(settings, size)
        reference = ray.get(ray.remote(trials_mod.reference_features).options(**_remote_options(resources))
                            .remote(settings, size, str(root / "reference" / name)))
        settings = {**settings, "reference_file": reference, "size": size}
        trainable = _trainable(trial_fn, settings, tracker)
        for rank in ready:
            study = trials_mod.digest(_study_identity(cfg, rank, name, size))
            trials += sample_rank(cfg, objective, rank, trainable, resources,
                                  root / "sampling" / f"rank_{rank['lora_rank']}-{study}")
    return {**pick_best(trials, objective), "trials": trials, "ranks": ranks, "metric": objective.metric,
            "mode": objective.mode}


def pick_best(trials: list[dict[str, Any]], objective: Objective) -> dict[str, Any]:
    """The best finished trial, and how many others lie within two standard errors of it (a tie at this n)."""
    scored = [t for t in trials if t["error"] is None and _finite(t.get(objective.metric))]
    if not scored:
        return {"best": None, "within_2se_of_best": 0}
    pick = min if objective.mode == "min" else max
    best = pick(scored, key=lambda t: t[objective.metric])
    se_key = f"{objective.metric}_se"

    def tied(t: dict) -> bool:
        se = math.hypot(_se(best.get(se_key)), _se(t.get(se_key)))
        return abs(t[objective.metric] - best[objective.metric]) <= 2.0 * se

    return {"best": best, "within_2se_of_best": sum(tied(t) for t in scored if t is not best)}


def _se(value: Any) -> float:
    return float(value) if _finite(value) else 0.0


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
