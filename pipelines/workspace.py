"""Throw-away copies of the project (for `make smoke` and end-to-end tests) and params overlays."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from components import atomic

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_GIT_ENV = {"GIT_AUTHOR_NAME": "skindualgen", "GIT_AUTHOR_EMAIL": "skindualgen@localhost",
            "GIT_COMMITTER_NAME": "skindualgen", "GIT_COMMITTER_EMAIL": "skindualgen@localhost"}


def _git_files(args: list[str], root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=root, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f]


def _is_result(rel: str) -> bool:
    """Pipeline results of the source workspace (uncommitted dvc.lock, metrics): not part of the code."""
    return rel == "dvc.lock" or rel.startswith("metrics/")


def copy_repo(dst: str | Path, init_git: bool = True, src: Path = PROJECT_ROOT) -> Path:
    """Copy the project's tracked and untracked-but-not-ignored files into dst (no data, results, venv or stores).

    With `init_git`, dst becomes a fresh git repository with one commit, so `dvc repro` and lineage tags
    (git commit) work there as in a clone. Returns dst.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    untracked = [f for f in _git_files(["--others", "--exclude-standard"], src) if not _is_result(f)]
    files = sorted(set(_git_files([], src) + untracked))
    for rel in files:
        source = src / rel
        if not source.is_file():  # deleted in the working tree but still tracked
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if init_git:
        env = {**os.environ, **_GIT_ENV}
        subprocess.run(["git", "init", "-q"], cwd=dst, check=True, env=env)
        subprocess.run(["git", "add", "-A"], cwd=dst, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", "workspace copy", "--no-gpg-sign"], cwd=dst, check=True, env=env)
    return dst


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` on top of `base`, mappings merged key by key."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def apply_overlay(params_file: str | Path, overlay_file: str | Path) -> dict[str, Any]:
    """Rewrite params_file with overlay_file's sections merged in (e.g. configs/micro.yaml); returns the result."""
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    overlay = yaml.safe_load(Path(overlay_file).read_text()) or {}
    merged = deep_merge(params, overlay)
    atomic.write_text(params_file, yaml.safe_dump(merged, sort_keys=False))
    return merged
