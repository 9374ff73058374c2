"""Helpers shared by tests: a throw-away copy of the repository for end-to-end stage runs."""
from __future__ import annotations

from pipelines.workspace import PROJECT_ROOT as REPO_ROOT
from pipelines.workspace import copy_repo

__all__ = ["REPO_ROOT", "copy_repo"]
