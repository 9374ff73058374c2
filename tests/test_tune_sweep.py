"""Ray Tune sweep mechanics on a local CPU Ray: child runs, failed trials, best config, restore."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from components.errors import ConfigError
from components.tracking.mlflow_setup import stage_run
from components.tracking.tuning_runs import MlflowTrialTracker, absolute_tracking_uri
from components.distributed.cluster import connect, trial_resources
from components.tuning.config import TuneConfig
from components.tuning.objectives import OBJECTIVES
from components.tuning.reporting import NullTrialTracker, TrialInfo
from components.tuning.sweep import run_sweep
from pipelines.tune import best_overrides, dvc_exp_command


def test_trial_resources_follow_the_cluster():
    assert trial_resources({"CPU": 16.0, "GPU": 2.0}, 4) == {"cpu": 4, "gpu": 1}
    assert trial_resources({"CPU": 2.0}, 4) == {"cpu": 2}
    assert trial_resources({"CPU": 2.0, "GPU": 0.0}) == {"cpu": 1}


def test_unreachable_ray_address_is_a_clear_error_not_a_hang():
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="unreachable"):
        connect("127.0.0.1:9", timeout=1.0)
    with pytest.raises(ConfigError, match="host:port"):
        connect("nonsense")
    assert time.perf_counter() - t0 < 10


def test_objectives_registry_names_the_params_key():
    assert "fd_vae" in OBJECTIVES and OBJECTIVES.create("fd_vae").mode == "min"
    with pytest.raises(ConfigError, match=r"'nope'.*fd_vae.*tune\.objective"):
        OBJECTIVES.create("nope")
    with pytest.raises(ConfigError, match="fd_vae"):
        run_sweep(TuneConfig(objective="nope"))


def test_trial_trackers_are_plain_picklable_and_uris_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = MlflowTrialTracker(absolute_tracking_uri("sqlite:///mlflow.db"), "parent", "1")
    assert tracker.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert pickle.loads(pickle.dumps(tracker)) == tracker          # plain pickle, not only cloudpickle
    assert isinstance(pickle.loads(pickle.dumps(NullTrialTracker())), NullTrialTracker)
    assert absolute_tracking_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert absolute_tracking_uri("http://host:5000") == "http://host:5000"
    assert absolute_tracking_uri("mlruns") == Path("mlruns").resolve().as_uri()
    with pytest.raises(ConfigError, match="active"):
        MlflowTrialTracker.for_active_run()


def test_mlflow_trial_tracker_child_run_reused_on_restore_and_failure_tag(tmp_path, monkeypatch):
    info = TrialInfo(trial_id="t1", name="trainable_t1", trial_dir=tmp_path / "trial")
    info.trial_dir.mkdir()
    with stage_run("tune-tracker-unit", {}) as parent:
        tracker = MlflowTrialTracker.for_active_run()
    tracker = pickle.loads(pickle.dumps(tracker))     # as in a Ray worker: no active run there
    monkeypatch.setenv("MLFLOW_RUN_ID", "inherited-from-mlflow-run")   # as under `mlflow run`
    with tracker.trial(info, {"lora_rank": 4}) as log:
        assert "MLFLOW_RUN_ID" not in os.environ
        log({"fd_vae": 2.0}, 1)
    first = (info.trial_dir / "mlflow_run_id").read_text()
    with pytest.raises(RuntimeError):                           # the restored trial reopens the same run
        with tracker.trial(info, {"lora_rank": 4}) as log:
            log({"fd_vae": 1.0}, 2)
            raise RuntimeError("boom")
    assert (info.trial_dir / "mlflow_run_id").read_text() == first
    client = MlflowClient()
    run = client.get_run(first)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["stage"] == "tune-trial" and run.data.tags["trial_id"] == "t1"
    assert run.data.tags["mlflow.runName"] == "trainable_t1" and run.data.tags["trial_status"] == "failed"
    assert run.data.params == {"lora_rank": "4"}
    assert [m.value for m in client.get_metric_history(first, "fd_vae")] == [2.0, 1.0]


def quadratic_trial(config: dict, settings: dict, report) -> None:
    """A trial whose figure is known in closed form; rank 8 crashes (a failing trial must not stop the sweep)."""
    if config["lora_rank"] == 8:
        raise RuntimeError("simulated out-of-memory")
    for epoch in range(1, settings["max_epochs"] + 1):
        value = (config["guidance_scale"] - 3.0) ** 2 + config["num_inference_steps"] / 100 + 1.0 / epoch
        report({"fd_vae": value}, epoch)


def test_sweep_child_runs_failed_trial_best_config_and_restore(tmp_path):
    cfg = TuneConfig(lora_ranks=[2, 8], trials_per_rank=1, max_epochs=2, storage=str(tmp_path / "tune"),
                     name="unit", num_cpus=2, max_concurrent=1, best_out=str(tmp_path / "best.yaml"))
    try:
        with stage_run("tune-unit", {}) as parent:
            result = run_sweep(cfg, trial_fn=quadratic_trial, tracker=MlflowTrialTracker.for_active_run())
        trials = result["trials"]
        assert len(trials) == 2
        assert sum(t["error"] is not None for t in trials) == 1
        best = result["best"]
        assert best["lora_rank"] == 2 and best["error"] is None
        assert best["fd_vae"] == min(t["fd_vae"] for t in trials if t["error"] is None)
        assert 20 <= best["num_inference_steps"] <= 60 and 1.0 <= best["guidance_scale"] <= 7.5

        client = MlflowClient()
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert len(children) == 2
        assert all(c.data.tags["stage"] == "tune-trial" and c.data.tags.get("trial_id") for c in children)
        assert sum(c.data.tags.get("trial_status") == "failed" for c in children) == 1
        ok = [c for c in children if "fd_vae" in c.data.metrics]
        assert {c.data.params["lora_rank"] for c in ok} == {"2"}

        # Started again, the finished sweep is restored from storage: no trial runs twice.
        with stage_run("tune-unit-again", {}):
            again = run_sweep(cfg, trial_fn=quadratic_trial, tracker=MlflowTrialTracker.for_active_run())
        assert len(again["trials"]) == 2
        n_children_after = len(client.search_runs([parent.info.experiment_id],
                                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"))
        assert n_children_after == 2
    finally:
        ray.shutdown()

    overrides = best_overrides(best)
    assert overrides["finetune"] == {"lora_rank": 2}
    assert dvc_exp_command(overrides).startswith("dvc exp run -S finetune.lora_rank=2 -S synthesize.num_inference_steps=")
