"""Tracking URI resolution, stage runs with lineage tags, DVC-compatible data hashes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from components.errors import ConfigError
from components.tracking import lineage, mlflow_setup


def test_default_uri_is_absolute_sqlite_at_project_root(monkeypatch, tmp_path):
    (tmp_path / "params.yaml").write_text("{}")
    (tmp_path / "MLproject").write_text("name: x")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_setup.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////x/y.db")
    assert mlflow_setup.tracking_uri() == "sqlite:////x/y.db"


def test_unreachable_server_fails_fast(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="unreachable"):
        mlflow_setup.configure()


def test_stage_run_logs_params_and_lineage(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    with mlflow_setup.stage_run("unit", {"x": 1, "nested": {"y": [1, 2]}}, inputs={"d": data}) as run:
        run_id = run.info.run_id
    got = mlflow.get_run(run_id).data
    assert got.params == {"x": "1", "nested.y": "1,2"}
    assert got.tags["stage"] == "unit"
    assert got.tags["data.d.md5"] == lineage.dvc_md5(data)
    assert got.tags["git_commit"]


def test_stage_run_resumes_the_run_given_by_mlflow_run(monkeypatch):
    mlflow_setup.configure()
    with mlflow.start_run() as parent:
        pass
    monkeypatch.setenv("MLFLOW_RUN_ID", parent.info.run_id)
    with mlflow_setup.stage_run("resumed", {"a": 1}) as run:
        assert run.info.run_id == parent.info.run_id


def test_dvc_md5_matches_dvc(tmp_path):
    repo = tmp_path / "repo"
    (repo / "d" / "sub").mkdir(parents=True)
    (repo / "d" / "x.bin").write_bytes(bytes(range(256)))
    (repo / "d" / "sub" / "y.txt").write_text("hello\n")
    (repo / "f.txt").write_text("single\n")
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=repo, check=True, env=env)
    subprocess.run(dvc + ["add", "-q", "d", "f.txt"], cwd=repo, check=True, env=env)
    for name, path in (("d", repo / "d"), ("f.txt", repo / "f.txt")):
        recorded = yaml.safe_load((repo / f"{name}.dvc").read_text())["outs"][0]["md5"]
        assert lineage.dvc_md5(path) == recorded


def test_git_commit_outside_a_repo(tmp_path):
    assert lineage.git_commit(tmp_path) == "unknown"
    assert len(lineage.git_commit(Path(__file__).parent).split("-")[0]) == 40


def test_stage_run_records_its_inputs_as_mlflow_datasets(tmp_path):
    from components.data import manifest
    from components.data.toy import generate_toy
    from components.hashing import dvc_md5

    real = tmp_path / "real"
    generate_toy(real, n_images=20, size=16, seed=0, workers=1, progress=False, test_fraction=0.2)
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    for _ in range(2):                     # a resumed run does not log the same dataset twice
        with mlflow_setup.stage_run("unit", inputs={"real": real, "weights": weights, "absent": tmp_path / "x"}) as r:
            run_id = r.info.run_id
        os.environ["MLFLOW_RUN_ID"] = run_id
    os.environ.pop("MLFLOW_RUN_ID")
    inputs = {d.dataset.name: d for d in mlflow.get_run(run_id).inputs.dataset_inputs}
    assert set(inputs) == {"real", "weights"}
    assert inputs["real"].dataset.digest == dvc_md5(real) and inputs["weights"].dataset.digest == dvc_md5(weights)
    assert str(real.resolve()) in inputs["real"].dataset.source
    tags = {t.key: t.value for t in inputs["real"].tags}
    splits = manifest.read_manifest(real)["split"]
    assert tags["splits"] == f"test={(splits == 'test').sum()},train={(splits == 'train').sum()}"
    assert tags["mlflow.data.context"] == "input"
    assert "splits" not in {t.key for t in inputs["weights"].tags}


def test_system_metrics_when_enabled(monkeypatch):
    """MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true makes every stage run record CPU / memory (GPU with nvidia-ml-py)."""
    import time

    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    with mlflow_setup.stage_run("unit-system") as run:
        time.sleep(1.5)
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
