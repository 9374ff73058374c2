"""Lineage: the git commit of the code and DVC-compatible md5 hashes of the data a run read or wrote."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path


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


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes (what DVC records for a file output)."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dvc_md5(path: str | Path) -> str:
    """The md5 DVC 3 records for a file or folder output (folders: md5 of the sorted entry list + '.dir')."""
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    entries = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != ".dvc")
        for name in sorted(files):
            full = Path(root) / name
            entries.append({"md5": file_md5(full), "relpath": full.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    payload = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(payload).hexdigest() + ".dir"


def lineage_tags(inputs: dict[str, str | Path]) -> dict[str, str]:
    """Tags for a run: git commit plus `data.<name>.md5` for every existing input path."""
    tags = {"git_commit": git_commit()}
    for name, path in inputs.items():
        if Path(path).exists():
            tags[f"data.{name}.md5"] = dvc_md5(path)
    return tags
