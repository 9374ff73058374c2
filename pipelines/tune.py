"""Ray Tune sweep over LoRA rank × sampling settings; writes the best configuration for params.yaml / dvc exp run."""
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


def run(cfg: TuneConfig) -> dict:
    """Run or resume the sweep under one MLflow run; write best config (YAML) and all trials (JSON)."""
    with stage_run("tune", to_dict(cfg)):
        result = run_sweep(cfg, tracker=MlflowTrialTracker.for_active_run())   # a child run per trial
        failed = sum(t["error"] is not None for t in result["trials"])
        mlflow.log_metrics({"trials": len(result["trials"]), "failed_trials": failed})
        if result["best"] is None:
            atomic.write_json(cfg.metrics_out, result)
            raise SystemExit("tune: no trial finished with a finite objective; see metrics/tune.json for errors")
        overrides = best_overrides(result["best"])
        command = dvc_exp_command(overrides)
        text = (f"# Best of {len(result['trials'])} trials by {result['metric']} ({result['mode']}): "
                f"{result['best'][result['metric']]:.6g}\n# Apply with: {command}\n" + yaml.safe_dump(overrides))
        atomic.write_text(cfg.best_out, text)
        atomic.write_json(cfg.metrics_out, {**result, "dvc_exp_run": command})
        mlflow.log_metric(f"best_{result['metric']}", result["best"][result["metric"]])
        mlflow.log_params({f"best.{k}": v for k, v in result["best"].items() if k not in ("error",)})
        mlflow.log_artifact(cfg.best_out)
        print(text)
        return result


def main(argv: list[str] | None = None) -> None:
    args = parse_stage_args(stage_parser("tune", __doc__), argv)
    run_main(lambda: run(load_stage_config(TuneConfig, "tune", args)))


if __name__ == "__main__":
    main()
