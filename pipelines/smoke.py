"""`make smoke`: the whole DVC pipeline on the micro configuration, in a throw-away copy of the project."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.main import dvc_stages
from pipelines.show_results import print_results
from pipelines.workspace import PROJECT_ROOT, apply_overlay, copy_repo


def run_smoke(dest: Path, overlay: Path, stages: list[str] | None = None) -> dict[str, float]:
    """Copy the project to `dest`, merge `overlay` into its params.yaml, `dvc repro`; returns seconds per stage."""
    copy_repo(dest)
    apply_overlay(dest / "params.yaml", overlay)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{dest / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    timings: dict[str, float] = {}
    all_stages = list(dvc_stages(dest / "dvc.yaml"))
    for stage in stages or all_stages:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=dest, env=env, check=True)
        timings[stage] = time.perf_counter() - t0
        print(f"[smoke] {stage}: {timings[stage]:.1f} s", flush=True)
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.smoke", description=__doc__)
    parser.add_argument("--overlay", default=str(PROJECT_ROOT / "configs" / "micro.yaml"))
    parser.add_argument("--dest", default="", help="folder for the copy (default: a new temporary folder)")
    args = parser.parse_args(argv)
    dest = Path(args.dest or tempfile.mkdtemp(prefix="skindualgen-smoke-"))
    t0 = time.perf_counter()
    timings = run_smoke(dest, Path(args.overlay))
    print_results(dest)
    print(f"\n[smoke] whole pipeline: {time.perf_counter() - t0:.1f} s in {dest}")
    print("[smoke] stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    print(f"[smoke] MLflow UI: mlflow ui --backend-store-uri sqlite:///{dest / 'mlflow.db'}")


if __name__ == "__main__":
    main()
