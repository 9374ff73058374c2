"""Lineage: the git commit of the code and DVC-compatible md5 hashes of the data a run read or wrote."""
from __future__ import annotations

import subprocess
from pathlib import Path

from components.hashing import dvc_md5


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD commit of the repository (suffix '-dirty' when tracked files changed), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage_tags(inputs: dict[str, str | Path]) -> dict[str, str]:
    """Tags for a run: git commit plus `data.<name>.md5` for every existing input path."""
    tags = {"git_commit": git_commit()}
    for name, path in inputs.items():
        if Path(path).exists():
            tags[f"data.{name}.md5"] = dvc_md5(path)
    return tags
