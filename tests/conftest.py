"""Offline, isolated test session: no hub downloads, MLflow in a temporary sqlite store."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before torch is imported: spinning OpenMP threads slow a shared 2-core machine several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations asks PyPI for updates at import
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ.pop("MLFLOW_RUN_ID", None)
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)  # describe: tests never reach an LLM server unless they start one

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store(tmp_path_factory):
    """One sqlite tracking store for the whole session, outside the repo."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
