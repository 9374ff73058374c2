"""Chain every stage as nested MLflow runs under one parent, reusing finished runs of the same params and code.

The stage order and each stage's outputs come from dvc.yaml, so the chain and `dvc repro` never disagree.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from components.config import load_params
from components.errors import SkinDualGenError
from components.tracking.lineage import git_commit
from components.tracking.mlflow_setup import CHAIN_STAGE_TAG, configure
from pipelines.cli import run_main

CHAIN_KEY_TAG = "chain.key"


def dvc_stages(dvc_file: str | Path = "dvc.yaml") -> dict[str, dict]:
    """Stages of dvc.yaml in an order where every stage comes after the stages whose outputs it reads."""
    stages = yaml.safe_load(Path(dvc_file).read_text())["stages"]
    return {name: stages[name] for name in stage_order(stages)}


def _paths(entries: list) -> list[str]:
    return [(e if isinstance(e, str) else next(iter(e))).rstrip("/") for e in entries or []]


def stage_order(stages: dict[str, dict]) -> list[str]:
    """Topological order of DVC stages (a dep inside or equal to another stage's out is an edge), stable."""
    producer = {out: name for name, st in stages.items() for out in _paths(st.get("outs", []) + st.get("metrics", []))}

    def upstream(name: str) -> set[str]:
        found = set()
        for dep in _paths(stages[name].get("deps", [])):
            for out, owner in producer.items():
                if owner != name and (dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")):
                    found.add(owner)
        return found

    order: list[str] = []
    pending = list(stages)
    while pending:
        ready = [n for n in pending if upstream(n) <= set(order)]
        if not ready:
            raise SkinDualGenError(f"dvc.yaml: circular dependencies among {pending}")
        order.append(ready[0])
        pending.remove(ready[0])
    return order


def _outs(stage: dict) -> list[str]:
    return _paths(stage.get("outs", []) + stage.get("metrics", []))


def chain_key(stage: str, params: dict, commit: str) -> str:
    """Identity of a stage execution: its params section, the params of its upstream stages, and the commit."""
    payload = json.dumps({"stage": stage, "params": params, "commit": commit}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def finished_run(key: str) -> str | None:
    """Run id of a FINISHED run with this chain key, if any."""
    experiment_id = mlflow.active_run().info.experiment_id
    runs = MlflowClient().search_runs([experiment_id], f"tags.`{CHAIN_KEY_TAG}` = '{key}' "
                                      f"and attributes.status = 'FINISHED'", max_results=1)
    return runs[0].info.run_id if runs else None


def run_chain(params_path: str, only: list[str] | None = None, force: bool = False) -> dict[str, str]:
    """Run (or reuse) each stage under the active parent run; returns stage → run id."""
    params = load_params(params_path)
    commit = git_commit()
    stages = dvc_stages()
    selected = [s for s in stages if not only or s in only]
    results: dict[str, str] = {}
    upstream: dict = {}
    for name in stages:
        upstream[name] = params.get(name, {})
        if name not in selected:
            continue
        key = chain_key(name, upstream, commit)
        outs_present = all(Path(o).exists() for o in _outs(stages[name]))
        reuse = None if force or commit.endswith("-dirty") or not outs_present else finished_run(key)
        if reuse:
            print(f"[main] {name}: reusing finished run {reuse} (same params and commit {commit[:10]})")
            mlflow.set_tag(f"reused.{name}", reuse)
            results[name] = reuse
            continue
        print(f"[main] {name}: running")
        module = importlib.import_module(stages[name]["cmd"].split()[2])
        with mlflow.start_run(run_name=name, nested=True, tags={CHAIN_STAGE_TAG: name, CHAIN_KEY_TAG: key}) as run:
            try:
                module.main(["--params", params_path])
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise SkinDualGenError(f"stage '{name}' failed (exit {exc.code}); see its run {run.info.run_id}")
            results[name] = run.info.run_id
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.main", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--stages", default="", help="comma-separated subset (default: all, in dvc.yaml order)")
    parser.add_argument("--force", nargs="?", const="true", default="false", metavar="true|false",
                        help="rerun stages even if a finished run matches")
    args = parser.parse_args(argv)
    force = args.force.strip().lower() in ("1", "true", "yes")
    only = [s for s in args.stages.split(",") if s] or None

    def _run() -> None:
        configure()
        with mlflow.start_run(run_name="main"):
            mlflow.set_tag("stage", "main")
            results = run_chain(args.params, only, force)
            mlflow.log_dict(results, "chain.json")
    run_main(_run)


if __name__ == "__main__":
    main()
