"""Tracking URI resolution and the run context every stage uses."""
from __future__ import annotations

import contextlib
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException

from components.errors import ConfigError, DataError
from components.tracking.lineage import lineage_tags

EXPERIMENT = "skindualgen"
CHAIN_STAGE_TAG = "chain.stage"


def project_root() -> Path:
    """Folder holding params.yaml, found from the working directory upwards (the cwd if none)."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "MLproject").is_file():
            return folder
    return here


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else sqlite:///<project root>/mlflow.db (absolute, so Ray trials agree)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast with a clear message when an http(s) tracking server does not answer."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(
            f"MLflow tracking server {uri} is unreachable ({exc}); start it (mlflow server ...) or unset "
            f"MLFLOW_TRACKING_URI to use the local sqlite store"
        ) from None


def configure(experiment: str | None = None) -> str:
    """Point MLflow at the tracking URI (registry included) and select the experiment."""
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not os.environ.get("MLFLOW_RUN_ID"):
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment or EXPERIMENT
        if mlflow.get_experiment_by_name(name) is None and artifact_root(uri):
            try:
                mlflow.create_experiment(name, artifact_location=artifact_root(uri))
            except MlflowException:  # created concurrently by another process
                pass
        mlflow.set_experiment(name)
    return uri


def artifact_root(uri: str) -> str | None:
    """For a sqlite store, `mlartifacts/` beside the database file (absolute: Ray trials change directory)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.parent / "mlartifacts").resolve().as_uri()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value if not isinstance(value, (list, tuple)) else ",".join(map(str, value))


def flat_params(params: dict[str, Any]) -> dict[str, Any]:
    """Flatten nested params to dotted keys, lists joined by commas (MLflow params are strings)."""
    out: dict[str, Any] = {}
    _flatten("", params, out)
    return out


@contextlib.contextmanager
def stage_run(stage: str, params: dict[str, Any] | None = None, inputs: dict[str, str | Path] | None = None,
              nested: bool = False, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start (or, under `mlflow run`, resume) the run of a stage, log params and lineage tags.

    `inputs` maps a name to a file or folder whose DVC md5 is recorded as tag `data.<name>.md5`.
    """
    active = mlflow.active_run()
    if active is not None and mlflow.get_run(active.info.run_id).data.tags.get(CHAIN_STAGE_TAG) == stage:
        # The `main` chain opened this stage's child run already: log into it.
        _tag_and_log(stage, params, inputs)
        yield active
        return
    if active is None:
        configure()
    else:
        nested = True  # a stage called inside another run becomes its child
    with mlflow.start_run(run_name=run_name or stage, nested=nested) as run:
        _tag_and_log(stage, params, inputs)
        yield run


def _tag_and_log(stage: str, params: dict[str, Any] | None, inputs: dict[str, str | Path] | None) -> None:
    tags = lineage_tags(inputs or {})
    mlflow.set_tags({"stage": stage, **tags})
    log_datasets(inputs or {}, {name: tags[f"data.{name}.md5"] for name in inputs or {} if f"data.{name}.md5" in tags})
    if params:
        _log_params_safely(flat_params(params))


def log_datasets(inputs: dict[str, str | Path], digests: dict[str, str]) -> None:
    """Record each input folder or file as an MLflow dataset input (the runs table's Dataset column): its name,
    the DVC md5 as digest, the local path as source and, for a dataset folder, its split sizes as a tag."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    existing = {(d.dataset.name, d.dataset.digest) for d in mlflow.get_run(mlflow.active_run().info.run_id)
                .inputs.dataset_inputs}
    for name, digest in digests.items():
        if (name, digest) in existing:
            continue   # a resumed run logged it already
        path = Path(inputs[name]).resolve()
        with warnings.catch_warnings():   # "can be interpreted in multiple ways": two equal local sources
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path))
        dataset = MetaDataset(source, name=name, digest=digest)
        mlflow.log_input(dataset, context="input", tags=_split_tags(path))


def _split_tags(path: Path) -> dict[str, str]:
    """`splits: train=1600,test=400` for a dataset folder with a manifest; nothing for other inputs."""
    from components.data import manifest

    if not path.is_dir() or not (path / manifest.MANIFEST_NAME).is_file():
        return {}
    try:
        counts = manifest.read_manifest(path)["split"].value_counts()
    except (DataError, KeyError):   # the stage itself reports an unreadable manifest, with the fix
        return {}
    return {"splits": ",".join(f"{k}={int(v)}" for k, v in sorted(counts.items()))}


def _log_params_safely(params: dict[str, Any]) -> None:
    """Log params, skipping keys already logged with the same value (resumed runs)."""
    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params if run else {}
    fresh = {k: v for k, v in params.items() if k not in existing}
    changed = {k: v for k, v in params.items() if k in existing and existing[k] != str(v)}
    if changed:
        mlflow.set_tags({f"param_override.{k}": str(v) for k, v in changed.items()})
    items = list(fresh.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i:i + 100]))


def metric_key(name: str) -> str:
    """An MLflow-legal metric / tag name for keys holding training-set names ("real+synthetic" → "real_plus_...")."""
    return name.replace("+", "_plus_")
