"""Model registry: register a logged model under a name and point an alias (challenger/champion) at it."""
from __future__ import annotations

from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

GENERATOR_MODEL = "skindualgen-generator"


def register(model_uri: str, name: str, alias: str | None = "challenger",
             tags: dict[str, Any] | None = None) -> str:
    """Register `model_uri` (e.g. the model_uri of a log_model result) as a new version; set `alias` on it.

    Returns the new version number as a string.
    """
    version = mlflow.register_model(model_uri, name)
    client = MlflowClient()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version.version, key, str(value))
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def version_for_alias(name: str, alias: str):
    """The ModelVersion an alias points to, or None when the model or alias does not exist."""
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def record_version_metrics(name: str, version: str, metrics: dict[str, float], source: str) -> None:
    """Attach evaluation figures to a model version as tags `metric.<key>` (read by promotion)."""
    client = MlflowClient()
    for key, value in metrics.items():
        client.set_model_version_tag(name, version, f"metric.{key}", repr(float(value)))
    client.set_model_version_tag(name, version, "metric_source", source)


def version_metric(version, metric: str) -> float | None:
    """A version's figure for `metric`: its `metric.<metric>` tag, else its source run's metric, else None."""
    tag = (version.tags or {}).get(f"metric.{metric}")
    if tag is not None:
        return float(tag)
    if version.run_id:
        value = MlflowClient().get_run(version.run_id).data.metrics.get(metric)
        if value is not None:
            return float(value)
    return None


def record_generator_metrics(generator_version: str, metrics: dict[str, float], source: str,
                             name: str = GENERATOR_MODEL) -> list[str]:
    """Tag every registered generator version built from `generator_version` (the hash synthetic manifests
    record) with `metrics`, so promotion can compare generators on what the quality stage measured."""
    try:
        versions = MlflowClient().search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    matched = [v.version for v in versions if (v.tags or {}).get("generator_version") == generator_version]
    for version in matched:
        record_version_metrics(name, str(version), metrics, source)
    return [str(v) for v in matched]
