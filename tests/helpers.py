"""Helpers shared by tests: a throw-away copy of the repository for end-to-end stage runs."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _git_files(args: list[str]) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f]


def copy_repo(dst: str | Path, init_git: bool = True) -> Path:
    """Copy the project's tracked and untracked-but-not-ignored files into dst (no data, venv or stores).

    With `init_git`, dst becomes a fresh git repository with one commit, so `dvc repro` and lineage tags
    (git commit) work there as in a clone. Returns dst.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(set(_git_files([]) + _git_files(["--others", "--exclude-standard"])))
    for rel in files:
        src = REPO_ROOT / rel
        if not src.is_file():  # deleted in the working tree but still tracked
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    if init_git:
        env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
               "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
        subprocess.run(["git", "init", "-q"], cwd=dst, check=True, env=env)
        subprocess.run(["git", "add", "-A"], cwd=dst, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", "test copy", "--no-gpg-sign"], cwd=dst, check=True, env=env)
    return dst
