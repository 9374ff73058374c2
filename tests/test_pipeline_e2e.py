"""The product as users drive it, on the micro configuration in a throw-away copy of the repository."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipelines.main import stage_order
from pipelines.workspace import PROJECT_ROOT, deep_merge
from tests.helpers import micro_workspace


def test_stage_order_follows_data_dependencies():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    order = stage_order(stages)
    assert set(order) == set(stages)
    for before, after in [("prepare", "describe"), ("pretrain", "adapt_vae"), ("adapt_vae", "finetune"),
                          ("finetune", "synthesize"), ("synthesize", "quality"), ("synthesize", "classify"),
                          ("segment", "report"), ("classify", "report")]:
        assert order.index(before) < order.index(after), (before, after)


def test_deep_merge_keeps_unlisted_keys():
    assert deep_merge({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"y": 5}}) == {"a": {"x": 1, "y": 5}, "b": 3}


def test_main_chain_nests_stages_and_reuses_finished_runs(tmp_path):
    root, env = micro_workspace(tmp_path)
    cmd = [sys.executable, "-m", "pipelines.main", "--stages", "prepare,describe"]
    first = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "prepare: reusing finished run" in second.stdout and "describe: reusing finished run" in second.stdout

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    exp = client.get_experiment_by_name("skindualgen")
    parents = client.search_runs([exp.experiment_id], "tags.stage = 'main'", order_by=["attributes.start_time ASC"])
    assert len(parents) == 2
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert sorted(c.data.tags["chain.stage"] for c in children) == ["describe", "prepare"]
    assert all(c.info.status == "FINISHED" for c in children)
    reused = parents[1].data.tags
    assert {reused["reused.prepare"], reused["reused.describe"]} == {c.info.run_id for c in children}
    assert (root / "data" / "descriptions" / "descriptions.csv").is_file()


@pytest.mark.slow
def test_full_dvc_repro_then_mlflow_entry_points_and_sweep(tmp_path):
    root, env = micro_workspace(tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "-f"], cwd=root, env=env, check=False)
    done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for table in ("table1", "table2", "table3"):
        assert (root / "reports" / f"{table}.md").is_file(), table
    quality = json.loads((root / "metrics" / "quality.json").read_text())
    assert quality

    # Nothing changed: a second repro runs no stage; a changed parameter reruns only what depends on it.
    again = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert "Running stage" not in again.stdout
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, env=env,
                            capture_output=True, text=True)
    assert json.loads(status.stdout or "{}") == {}

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"]["seed"] = 5                              # edited in params.yaml, not given with -P
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_ids = {}
    for entry, extra in (("describe", []), ("finetune", []), ("finetune", ["-P", "lora_rank=2"])):
        ran = subprocess.run([sys.executable, "-m", "mlflow", "run", ".", "-e", entry, "--env-manager", "local",
                              "--experiment-name", "skindualgen", *extra], cwd=root, env=env,
                             capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr[-3000:]
        found = re.search(r"Run \(ID '([0-9a-f]+)'\) succeeded", ran.stderr + ran.stdout)
        run_ids[(entry, bool(extra))] = found.group(1)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    plain = MlflowClient().get_run(run_ids[("finetune", False)]).data.params
    given = MlflowClient().get_run(run_ids[("finetune", True)]).data.params
    assert plain["seed"] == "5" and plain["lora_rank"] == str(params["finetune"]["lora_rank"])
    assert given["seed"] == "5" and given["lora_rank"] == "2"

    sweep = subprocess.run([sys.executable, "-m", "pipelines.tune", "--set", "lora_ranks=[2]",
                            "--set", "trials_per_rank=2", "--set", "max_epochs=1", "--set", "num_cpus=2"],
                           cwd=root, env=env, capture_output=True, text=True)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    best = yaml.safe_load((root / "metrics" / "tune_best.yaml").read_text())
    assert best["finetune"]["lora_rank"] == 2
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    exp = client.get_experiment_by_name("skindualgen")
    sweep_run = client.search_runs([exp.experiment_id], "tags.stage = 'tune'")[0]
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep_run.info.run_id}'")
    assert sorted(c.data.tags["tune_phase"] for c in children) == ["finetune", "sampling", "sampling"]  # rank once
    trials = [c for c in children if c.data.tags["tune_phase"] == "sampling"]
    assert all({"kid_vae", "kid_vae_se", "n_samples", "fd_vae"} <= set(t.data.metrics) for t in trials)
    assert "kid_vae (min)" in (root / "metrics" / "tune_best.yaml").read_text()
