"""The sweep: one fine-tune per LoRA rank, then Optuna over steps × guidance on each fixed LoRA; writes the best
configuration for params.yaml / dvc exp run."""
from __future__ import annotations

import mlflow
import yaml

from components import atomic
from components.config import to_dict
from components.tracking.mlflow_setup import stage_run
from components.tracking.tuning_runs import MlflowTrialTracker
from components.tuning.config import TuneConfig
from components.tuning.sweep import run_sweep
from pipelines.cli import load_stage_config, parse_stage_args, run_main, stage_parser


def best_overrides(best: dict) -> dict[str, dict]:
    """The winning trial as params.yaml sections."""
    return {
        "finetune": {"lora_rank": int(best["lora_rank"])},
        "synthesize": {"num_inference_steps": int(best["num_inference_steps"]),
                       "guidance_scale": round(float(best["guidance_scale"]), 4)},
    }


def dvc_exp_command(overrides: dict[str, dict]) -> str:
    """`dvc exp run -S ...` reproducing the pipeline with the winning configuration."""
    sets = [f"-S {section}.{key}={value}" for section, values in overrides.items() for key, value in values.items()]
    return "dvc exp run " + " ".join(sets)


def _summary(result: dict) -> str:
    best, metric = result["best"], result["metric"]
    se = best.get(f"{metric}_se")
    n = best.get("n_samples")
    spread = f" ± {se:.3g} (standard error, {int(n)} samples)" if se is not None and n else ""
    ranks = result["ranks"]
    return (f"# Best of {len(result['trials'])} sampling trials on {len(ranks)} LoRA rank(s), one fine-tune each, by "
            f"{metric} ({result['mode']}): {best[metric]:.6g}{spread}; {result['within_2se_of_best']} other "
            f"trial(s) within 2 standard errors\n")


def run(cfg: TuneConfig) -> dict:
    """Run or resume the sweep under one MLflow run; write best config (YAML) and all trials and ranks (JSON)."""
    with stage_run("tune", to_dict(cfg)):
        result = run_sweep(cfg, tracker=MlflowTrialTracker.for_active_run())   # a child run per rank and trial
        status = [r["status"] for r in result["ranks"]]
        failed = sum(t["error"] is not None for t in result["trials"])
        mlflow.log_metrics({"trials": len(result["trials"]), "failed_trials": failed,
                            **{f"ranks_{s}": status.count(s) for s in ("trained", "reused", "failed")}})
        if result["best"] is None:
            atomic.write_json(cfg.metrics_out, result)
            raise SystemExit("tune: no trial finished with a finite objective; see metrics/tune.json for errors")
        overrides = best_overrides(result["best"])
        command = dvc_exp_command(overrides)
        text = _summary(result) + f"# Apply with: {command}\n" + yaml.safe_dump(overrides)
        atomic.write_text(cfg.best_out, text)
        atomic.write_json(cfg.metrics_out, {**result, "dvc_exp_run": command})
        metric = result["metric"]
        mlflow.log_metric(f"best_{metric}", result["best"][metric])
        if result["best"].get(f"{metric}_se") is not None:
            mlflow.log_metric(f"best_{metric}_se", result["best"][f"{metric}_se"])
        mlflow.log_metric("within_2se_of_best", result["within_2se_of_best"])
        mlflow.log_params({f"best.{k}": v for k, v in result["best"].items() if k not in ("error",)})
        mlflow.log_artifact(cfg.best_out)
        print(text)
        return result


def main(argv: list[str] | None = None) -> None:
    args = parse_stage_args(stage_parser("tune", __doc__), argv)
    run_main(lambda: run(load_stage_config(TuneConfig, "tune", args)))


if __name__ == "__main__":
    main()
