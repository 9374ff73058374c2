"""Helpers shared by tests: a throw-away copy of the repository for end-to-end stage runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.workspace import PROJECT_ROOT as REPO_ROOT
from pipelines.workspace import apply_overlay, copy_repo

MICRO = REPO_ROOT / "configs" / "micro.yaml"

__all__ = ["MICRO", "REPO_ROOT", "copy_repo", "micro_workspace"]


def micro_workspace(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the repository under tmp_path/repo with configs/micro.yaml merged into params.yaml, committed
    to a fresh git repository (dvc exp needs a commit); returns it and an environment for subprocesses
    (MLflow store inside the copy, the venv's `dvc` on PATH, no inherited MLflow run)."""
    root = copy_repo(tmp_path / "repo", init_git=False)
    apply_overlay(root / "params.yaml", MICRO)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(key, None)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "micro"], cwd=root,
                   check=True)
    return root, env
