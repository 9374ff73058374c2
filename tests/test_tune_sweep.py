"""Sweep mechanics on a local CPU Ray with a stand-in trainer and objective: phases, child runs, failures, best
config, reuse of complete LoRAs and restore of finished studies."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ray
from mlflow.tracking import MlflowClient

from components.errors import ConfigError
from components.tracking.mlflow_setup import stage_run
from components.tracking.tuning_runs import MlflowTrialTracker, absolute_tracking_uri
from components.distributed.cluster import connect, trial_resources
from components.tuning import trials
from components.tuning.config import TuneConfig
from components.tuning.objectives import OBJECTIVES
from components.tuning.reporting import NullTrialTracker, TrialInfo
from components.tuning.sweep import run_sweep
from pipelines.tune import best_overrides, dvc_exp_command
from tests.tune_support import constructions, counting_trainer


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
    assert OBJECTIVES.create("kid_vae").mode == "min" and OBJECTIVES.create("fd_vae").mode == "min"
    assert TuneConfig().objective == "kid_vae" and TuneConfig().samples_per_trial >= 200
    with pytest.raises(ConfigError, match=r"'nope'.*fd_vae.*kid_vae.*tune\.objective"):
        OBJECTIVES.create("nope")
    with pytest.raises(ConfigError, match="kid_vae"):
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
    assert run.data.tags["tune_phase"] == "sampling"
    assert run.data.params == {"lora_rank": "4"}
    assert [m.value for m in client.get_metric_history(first, "fd_vae")] == [2.0, 1.0]


class StandInTrainer:
    """A trainer double: writes a LoRA folder at once; rank 8 fails (a failing rank must not stop the sweep)."""

    def __init__(self, cfg, on_metrics):
        self.cfg, self.on_metrics = cfg, on_metrics

    def run(self):
        if self.cfg.lora_rank == 8:
            raise RuntimeError("simulated out-of-memory")
        out = Path(self.cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.bin").write_bytes(bytes([self.cfg.lora_rank]))
        self.on_metrics({"total": 1.0 / self.cfg.lora_rank}, 1)
        return SimpleNamespace(metrics={"final_total": 1.0 / self.cfg.lora_rank, "steps": 1}, lora_dir=out)


def stand_in_reference(settings: dict, size: int, path: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=np.zeros((4, 2)), categories=np.array(["nevus"] * 4))
    return path


def quadratic_trial(config: dict, settings: dict, report) -> None:
    """A sampling trial whose figure is known in closed form (the LoRA folder must be the rank's own)."""
    assert Path(config["_lora_dir"], "weights.bin").read_bytes() == bytes([config["lora_rank"]])
    assert Path(settings["reference_file"]).is_file()
    value = (config["guidance_scale"] - 3.0) ** 2 + config["num_inference_steps"] / 100
    report({"kid_vae": value, "kid_vae_se": 0.01, "n_samples": float(settings["samples_per_trial"])}, 1)


def _children(client, parent_id: str, experiment_id: str) -> list:
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_sweep_phases_failed_rank_best_config_reuse_and_restore(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.csv").write_text("image_id\n")          # the rank fingerprint covers the manifest
    count = tmp_path / "count"
    count.mkdir()
    monkeypatch.setattr(trials, "new_trainer", functools.partial(counting_trainer, str(count), StandInTrainer))
    monkeypatch.setattr(trials, "reference_features", stand_in_reference)
    cfg = TuneConfig(lora_ranks=[2, 8], trials_per_rank=2, max_epochs=1, storage=str(tmp_path / "tune"),
                     name="unit", num_cpus=2, max_concurrent=1, data_dir=str(data), samples_per_trial=16)
    try:
        with stage_run("tune-unit", {}) as parent:
            result = run_sweep(cfg, tracker=MlflowTrialTracker.for_active_run(), trial_fn=quadratic_trial)
        assert constructions(count) == [2, 8]                     # one trainer per rank
        ranks = {r["lora_rank"]: r for r in result["ranks"]}
        assert ranks[2]["status"] == "trained" and ranks[8]["status"] == "failed"
        assert "simulated out-of-memory" in ranks[8]["error"]
        trials_ = result["trials"]
        assert len(trials_) == 2 and {t["lora_rank"] for t in trials_} == {2}   # a failed rank is not sampled
        assert len({(t["num_inference_steps"], t["guidance_scale"]) for t in trials_}) == 2
        best = result["best"]
        assert best["lora_rank"] == 2 and best["error"] is None and best["kid_vae_se"] == 0.01
        assert best["kid_vae"] == min(t["kid_vae"] for t in trials_)
        assert 20 <= best["num_inference_steps"] <= 60 and 1.0 <= best["guidance_scale"] <= 7.5
        assert result["within_2se_of_best"] == sum(abs(t["kid_vae"] - best["kid_vae"]) <= 2 * 0.01 * 2 ** 0.5
                                                   for t in trials_ if t is not best)

        client = MlflowClient()
        children = _children(client, parent.info.run_id, parent.info.experiment_id)
        phases = sorted(c.data.tags["tune_phase"] for c in children)
        assert phases == ["finetune", "finetune", "sampling", "sampling"]
        assert sum(c.data.tags.get("trial_status") == "failed" for c in children) == 1
        sampling = [c for c in children if c.data.tags["tune_phase"] == "sampling"]
        assert all({"kid_vae", "kid_vae_se", "n_samples"} <= set(c.data.metrics) for c in sampling)
        assert {c.data.params["lora_rank"] for c in sampling} == {"2"}
        assert all("_lora_dir" not in c.data.params for c in sampling)

        # Started again: rank 2's LoRA is complete (reused, not constructed), its finished study is restored
        # (no trial runs twice); the failed rank 8 is tried again.
        with stage_run("tune-unit-again", {}) as again_run:
            again = run_sweep(cfg, tracker=MlflowTrialTracker.for_active_run(), trial_fn=quadratic_trial)
        assert constructions(count) == [2, 8, 8]
        assert [r["status"] for r in again["ranks"]] == ["reused", "failed"]
        assert sorted((t["num_inference_steps"], t["guidance_scale"]) for t in again["trials"]) == \
            sorted((t["num_inference_steps"], t["guidance_scale"]) for t in trials_)
        # The retried rank reopens its own child run (as a restored trial does): no new child runs anywhere.
        assert len(_children(client, parent.info.run_id, parent.info.experiment_id)) == 4
        assert _children(client, again_run.info.run_id, again_run.info.experiment_id) == []

        # An incomplete LoRA (no marker: an interrupted fine-tune) is trained again; a changed fine-tune setting
        # (here: epochs) retrains every rank from scratch.
        (tmp_path / "tune" / "unit" / "ranks" / "rank_2" / trials.MARKER).unlink()
        run_sweep(dataclasses.replace(cfg, lora_ranks=[2]), trial_fn=quadratic_trial)
        assert constructions(count) == [2, 2, 8, 8]
        marker = json.loads((tmp_path / "tune" / "unit" / "ranks" / "rank_2" / trials.MARKER).read_text())
        changed = run_sweep(dataclasses.replace(cfg, lora_ranks=[2], max_epochs=2), trial_fn=quadratic_trial)
        assert constructions(count) == [2, 2, 2, 8, 8] and changed["ranks"][0]["status"] == "trained"
        assert json.loads((tmp_path / "tune" / "unit" / "ranks" / "rank_2" / trials.MARKER).read_text())[
            "fingerprint"] != marker["fingerprint"]
    finally:
        ray.shutdown()

    overrides = best_overrides(best)
    assert overrides["finetune"] == {"lora_rank": 2}
    assert dvc_exp_command(overrides).startswith("dvc exp run -S finetune.lora_rank=2 -S synthesize.num_inference_steps=")

