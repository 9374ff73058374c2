"""Stage `prepare`: in-process run, `dvc repro prepare` and `mlflow run . -e prepare` in a copy of the repo."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from components.data import manifest
from components.data.config import PrepareConfig
from components.data.exclusions import REASONS
from components.errors import DataError
from components.hashing import dvc_md5
from pipelines import prepare
from tests.helpers import REPO_ROOT, copy_repo

VENV_BIN = Path(sys.executable).parent


def _env(tracking_uri: str) -> dict:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": ""}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        env.pop(var, None)
    return env


def _small_params(repo: Path) -> None:
    """The micro configuration (every stage at 32 px, so the stages agree with prepare.size) and 60 toy images."""
    from pipelines.workspace import deep_merge

    params = deep_merge(yaml.safe_load((repo / "params.yaml").read_text()),
                        yaml.safe_load((repo / "configs" / "micro.yaml").read_text()))
    params["prepare"].update(toy_images=60, size=32)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _runs(filter_string: str = ""):
    """Runs of every experiment in the session's store matching the filter, newest first."""
    client = mlflow.tracking.MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, filter_string, order_by=["attributes.start_time DESC"])


def test_run_in_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = PrepareConfig(out_dir="data/real", toy_images=40, size=32, seed=1)
    metrics = prepare.run(cfg)
    assert metrics["n_images"] == 40 and metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 40
    assert metrics["n_val"] == 5 and metrics["classes"]["nv"]["val"] > 0
    assert metrics["validation"]["success"] and metrics["classes"]["nv"]["total"] == 26
    assert json.loads(Path("metrics/prepare.json").read_text()) == json.loads(json.dumps(metrics))
    assert json.loads(Path("metrics/validation_real.json").read_text())["root"] == "data/real"
    assert Path("reports/prepare/class_counts.png").stat().st_size > 1000
    assert len(manifest.read_manifest("data/real")) == 40
    run = _runs("tags.stage = 'prepare' and params.toy_images = '40'")[0]
    assert run.data.params["toy_images"] == "40" and run.data.params["source"] == "toy"
    assert run.data.metrics["count_nv"] == 26 and run.data.metrics["n_images"] == 40
    assert run.data.tags["data.real.md5"] == dvc_md5("data/real")
    assert run.data.tags["data.origin"] == "toy" and "not medical data" in run.data.tags["data.note"]
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "prepare")}
    assert {"prepare/class_counts.png", "prepare/samples.png", "prepare/prepare.json"} <= artifacts


def test_failed_validation_keeps_previous_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare.run(PrepareConfig(toy_images=20, size=24))
    before = dvc_md5("data/real")
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    from PIL import Image
    for i, name in enumerate(["nevus", "melanoma", "nevus", "melanoma"]):
        pixels = np.random.default_rng(i).integers(0, 255, (30, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / "images" / f"x{i}.png")
        (src / "images" / f"x{i}.json").write_text(json.dumps({"category": name}))
    with pytest.raises(DataError, match=r"x0\.png: no mask found"):
        prepare.run(PrepareConfig(source="isic_gpt", path=str(src), size=24))
    assert dvc_md5("data/real") == before
    with pytest.raises(SystemExit) as exc:  # the CLI turns it into one line and exit code 2
        prepare.main(["--set", "source=isic_gpt", "--set", f"path={src}", "--set", "size=24"])
    assert exc.value.code == 2


def test_dvc_repro_prepare(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    _small_params(repo)
    uri = os.environ["MLFLOW_TRACKING_URI"]  # the session's store (already migrated: faster than a new one)
    proc = subprocess.run([str(VENV_BIN / "dvc"), "repro", "prepare"], cwd=repo, env=_env(uri),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    out = {o["path"]: o for o in lock["stages"]["prepare"]["outs"]}
    assert out["data/real"]["nfiles"] == 60 * 2 + 2
    metrics = json.loads((repo / "metrics" / "prepare.json").read_text())
    assert metrics["n_images"] == 60 and metrics["image_size"] == 32 and metrics["validation"]["success"]
    runs = _runs(f"tags.`data.real.md5` = '{out['data/real']['md5']}'")  # tagged with the md5 DVC recorded
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["size"] == "32" and run.data.metrics["n_images"] == 60
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert run.data.tags["git_commit"].startswith(head)
    status = subprocess.run([str(VENV_BIN / "dvc"), "status", "prepare"], cwd=repo, env=_env(uri),
                            capture_output=True, text=True, timeout=300)
    assert "up to date" in status.stdout, status.stdout


def test_mlflow_run_prepare(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    uri = os.environ["MLFLOW_TRACKING_URI"]
    _small_params(repo)   # size and toy_images edited in params.yaml, seed given with -P
    proc = subprocess.run(
        [str(VENV_BIN / "mlflow"), "run", ".", "-e", "prepare", "--env-manager", "local", "-P", "seed=7"],
        cwd=repo, env=_env(uri), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id = re.search(r"Run \(ID '([0-9a-f]+)'\) succeeded", proc.stderr + proc.stdout).group(1)
    run = mlflow.tracking.MlflowClient().get_run(run_id)  # the entry point logged into the run mlflow run made
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["source"] == "toy" and params["seed"] == "7" and params["out_dir"] == "data/real"
    assert params["size"] == "32" and params["toy_images"] == "60"     # the edited params.yaml, not defaults
    assert params["categories"] == "akiec,bcc,bkl,df,mel,nv,vasc"
    assert run.data.metrics["n_images"] == 60 and run.data.metrics["count_nv"] == 40
    assert run.data.metrics["validation_real_success"] == 1.0
    assert run.data.tags["data.real.md5"] == dvc_md5(repo / "data" / "real")
    assert run.data.tags["stage"] == "prepare" and len(run.data.tags["git_commit"]) >= 40
    assert manifest.read_manifest(repo / "data" / "real")["width"].eq(32).all()


def test_params_and_config_agree():
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["prepare"]
    assert set(PrepareConfig.__dataclass_fields__) == set(params)
    defaults = PrepareConfig()
    for key, value in params.items():
        if key not in ("categories", "include", "exclude"):
            assert getattr(defaults, key) == value, key


def test_real_export_exclusions_and_classes_reach_metrics_and_mlflow(tmp_path, monkeypatch):
    from tests.real_export_fixtures import isic_archive_export
    monkeypatch.chdir(tmp_path)
    ids = isic_archive_export(tmp_path / "src", n=16, smeared=4, null=2)
    metrics = prepare.run(PrepareConfig(source="isic_archive", path=str(tmp_path / "src"), size=32,
                                        require_masks=False, seed=3))
    counts = {c: v["total"] for c, v in metrics["classes"].items()}
    assert list(counts) == ["mel", "nv"] and sum(counts.values()) == 10 and metrics["n_dropped_categories"] == 5
    assert metrics["imbalance_ratio"] == round(max(counts.values()) / min(counts.values()), 3)
    assert metrics["n_excluded"] == 6 and {k: n for k, n in metrics["excluded"].items() if n} == {
        "unlabelled": 2, "vertical_smear": 4}
    assert set(metrics["excluded"]) == set(REASONS)  # every reason, zeros too: stable columns in `dvc exp show`
    assert json.loads(Path("metrics/prepare.json").read_text())["excluded"] == metrics["excluded"]
    excluded = Path("data/real/excluded.csv").read_text().splitlines()
    assert excluded[0] == "path,image_id,reason,detail" and len(excluded) == 7
    assert sorted(line.split(",")[1] for line in excluded[1:]) == sorted(ids["smeared"] + ids["null"])
    run = _runs(f"tags.stage = 'prepare' and params.path = '{tmp_path / 'src'}'")[0]
    assert run.data.metrics["n_excluded"] == 6 and run.data.metrics["excluded_vertical_smear"] == 4
    assert run.data.metrics["excluded_unlabelled"] == 2 and "count_df" not in run.data.metrics
    assert run.data.tags["data.categories"] == "mel,nv"
    assert run.data.tags["data.dropped_categories"] == "akiec,bcc,bkl,df,vasc"
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "prepare")}
    assert "prepare/excluded.csv" in artifacts
