"""MLflow records of the sweep: one child run of the sweep run per rank fine-tune and per sampling trial.

Child runs carry the tag `tune_phase` (`finetune`: a rank's training, its losses per step; `sampling`: an Optuna
trial on that rank's fixed LoRA, its objective, the objective's standard error and the number of samples).

`components.tuning` knows no tracking library; `pipelines/tune.py` passes `MlflowTrialTracker.for_active_run()`
to `run_sweep`. The tracker holds only strings, so Ray can pickle it into every trial.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import mlflow

from components.errors import ConfigError
from components.tuning.reporting import MetricsLog, TrialInfo

RUN_ID_FILE = "mlflow_run_id"   # in the trial folder: a restored trial logs into the child run it started


def absolute_tracking_uri(uri: str) -> str:
    """`uri` with a relative sqlite or file-store path made absolute (trials run in their own folder)."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return uri if path.startswith("/") or path == ":memory:" else f"sqlite:///{Path(path).resolve()}"
    parsed = urlparse(uri)
    if parsed.scheme == "file" and not parsed.netloc:
        return Path(parsed.path).resolve().as_uri()
    if parsed.scheme == "" or len(parsed.scheme) == 1:   # a plain path (or a Windows drive letter)
        return Path(uri).resolve().as_uri()
    return uri


@dataclass(frozen=True)
class MlflowTrialTracker:
    """Every trial becomes an MLflow child run of `parent_run_id` (created once, reused when restored)."""
    tracking_uri: str
    parent_run_id: str
    experiment_id: str

    @classmethod
    def for_active_run(cls) -> MlflowTrialTracker:
        """Trials become children of the active (sweep) run, logging to the same absolute tracking URI."""
        active = mlflow.active_run()
        if active is None:
            raise ConfigError("the MLflow trial tracker needs an active sweep run (open it with stage_run)")
        return cls(tracking_uri=absolute_tracking_uri(mlflow.get_tracking_uri()),
                   parent_run_id=active.info.run_id, experiment_id=active.info.experiment_id)

    @contextlib.contextmanager
    def trial(self, info: TrialInfo, params: dict) -> Iterator[MetricsLog]:
        os.environ.pop("MLFLOW_RUN_ID", None)  # inherited from `mlflow run`: trials would all write into it
        mlflow.set_tracking_uri(self.tracking_uri)
        run_file = Path(info.trial_dir) / RUN_ID_FILE
        run_id = run_file.read_text().strip() if run_file.is_file() else None
        fresh = run_id is None
        with mlflow.start_run(run_id=run_id, experiment_id=self.experiment_id if fresh else None,
                              run_name=info.name if fresh else None,
                              tags={"mlflow.parentRunId": self.parent_run_id, "stage": "tune-trial",
                                    "trial_id": info.trial_id, "tune_phase": info.phase} if fresh else None) as run:
            run_file.write_text(run.info.run_id)
            mlflow.log_params(params)
            try:
                yield _log_metrics
            except Exception:
                mlflow.set_tag("trial_status", "failed")
                raise
            mlflow.set_tag("trial_status", "finished")   # a retried (reopened) trial that now succeeds


def _log_metrics(metrics: dict[str, float], step: int) -> None:
    mlflow.log_metrics(metrics, step=step)
