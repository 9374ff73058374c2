"""DVC as users drive it, with the real `dvc` CLI in a throw-away micro workspace, on the cheap first stages.

Experiments (`dvc exp run -S` / `dvc exp show`), the project's local remote (`dvc push` / `dvc pull`), a
`dvc repro` killed midway and rerun, and a changed parameter rerunning only the stage that reads it.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import micro_workspace

MICRO_TOY_IMAGES = 70  # configs/micro.yaml prepare.toy_images


def _dvc(root: Path, env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if ok:
        assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def _set_params(root: Path, section: str, **values) -> None:
    """Edit params.yaml as a user would (the whole file, one section's keys changed)."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _files_md5(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _md5(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_complete_dataset(real: Path, n_images: int) -> pd.DataFrame:
    """data/real holds exactly n_images rows, each with its image and mask on disk, and nothing else."""
    df = pd.read_csv(real / "manifest.csv", keep_default_na=False)
    assert len(df) == n_images
    assert len(list((real / "images").glob("*.png"))) == n_images
    assert len(list((real / "masks").glob("*.png"))) == n_images
    assert all((real / p).is_file() for p in df["image_path"]) and all((real / p).is_file() for p in df["mask_path"])
    assert df["image_id"].is_unique
    return df


def _exp_row_metrics(row: dict, where: str) -> dict:
    entry = (row["data"].get("metrics") or {}).get("metrics/prepare.json", {})
    assert "data" in entry, (
        f"{where}: `dvc exp show` has no metrics/prepare.json ({entry.get('error')}). Metrics declared "
        "`cache: false` in dvc.yaml are versioned by git; if .gitignore ignores metrics/, neither commits nor "
        "`dvc exp run` experiments carry them")
    return entry["data"]


def _exp_row_params(row: dict) -> dict:
    return row["data"]["params"]["params.yaml"]["data"]["prepare"]


def test_exp_run_with_a_changed_param_is_listed_with_its_own_metrics(tmp_path):
    root, env = micro_workspace(tmp_path)
    _dvc(root, env, "repro", "prepare")
    baseline = json.loads((root / "metrics" / "prepare.json").read_text())
    assert baseline["n_images"] == MICRO_TOY_IMAGES
    # What `dvc repro` tells the user to do: commit the lock file (and the git-versioned metrics) as the baseline.
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "baseline: prepare")
    head = _git(root, "rev-parse", "HEAD")

    ran = _dvc(root, env, "exp", "run", "-n", "toy35", "-S", "prepare.toy_images=35", "prepare")
    assert "Ran experiment(s): toy35" in ran.stdout + ran.stderr
    assert "Running stage 'prepare'" in ran.stdout
    # The experiment's result is applied to the workspace.
    assert yaml.safe_load((root / "params.yaml").read_text())["prepare"]["toy_images"] == 35
    assert json.loads((root / "metrics" / "prepare.json").read_text())["n_images"] == 35
    _assert_complete_dataset(root / "data" / "real", 35)

    rows = json.loads(_dvc(root, env, "exp", "show", "--json").stdout)
    by_rev = {row["rev"]: row for row in rows}
    assert set(by_rev) == {"workspace", head}
    workspace, base = by_rev["workspace"], by_rev[head]
    exps = [rev for group in base.get("experiments") or [] for rev in group["revs"]]
    assert [e["name"] for e in exps] == ["toy35"]
    exp = exps[0]

    assert _exp_row_params(base)["toy_images"] == MICRO_TOY_IMAGES
    assert _exp_row_params(exp)["toy_images"] == 35
    assert _exp_row_params(exp)["seed"] == _exp_row_params(base)["seed"] == 42  # only the -S key changed
    assert _exp_row_params(workspace)["toy_images"] == 35
    assert _exp_row_metrics(workspace, "workspace")["n_images"] == 35

    base_metrics = _exp_row_metrics(base, f"baseline {head[:7]}")
    exp_metrics = _exp_row_metrics(exp, "experiment toy35")
    assert base_metrics["n_images"] == MICRO_TOY_IMAGES and base_metrics == baseline
    assert exp_metrics["n_images"] == 35
    assert exp_metrics["n_train"] + exp_metrics["n_val"] + exp_metrics["n_test"] == 35
    assert sum(c["total"] for c in exp_metrics["classes"].values()) == 35
    assert exp_metrics["image_size"] == base_metrics["image_size"] == 32


def test_push_then_pull_restores_prepared_data_byte_identical(tmp_path):
    root, env = micro_workspace(tmp_path)
    remotes = _dvc(root, env, "remote", "list").stdout.split()
    # .dvc/config's `url = ../dvc-storage` is relative to .dvc/: the copy's own store, never the project's.
    assert remotes[:2] == ["localstore", str(root / "dvc-storage")]
    assert _dvc(root, env, "remote", "default").stdout.strip() == "localstore"

    _dvc(root, env, "repro", "prepare")
    real = root / "data" / "real"
    before = _files_md5(real)
    _assert_complete_dataset(real, MICRO_TOY_IMAGES)
    assert len(before) == 2 * MICRO_TOY_IMAGES + 2  # images, masks, manifest.csv, categories.json

    pushed = _dvc(root, env, "push", "prepare")
    stored = [p for p in (root / "dvc-storage").rglob("*") if p.is_file()]
    # One object per distinct file content plus the directory listing (.dir); cache: false metrics stay local.
    assert len(stored) == len(set(before.values())) + 1
    assert f"{len(stored)} files pushed" in pushed.stdout

    (root / "data" / "real").rename(tmp_path / "real_before")  # kept aside only for the final comparison
    subprocess.run(["rm", "-rf", str(root / ".dvc" / "cache")], check=True)
    assert not real.exists() and not (root / ".dvc" / "cache").exists()
    status = json.loads(_dvc(root, env, "status", "--json", "prepare").stdout)
    assert status == {"prepare": [{"changed outs": {"data/real": "not in cache"}}]}

    pulled = _dvc(root, env, "pull", "prepare")
    assert "data/real" in pulled.stdout
    after = _files_md5(real)
    assert after == before
    assert _md5(real / "manifest.csv") == _md5(tmp_path / "real_before" / "manifest.csv")
    _assert_complete_dataset(real, MICRO_TOY_IMAGES)
    assert json.loads(_dvc(root, env, "status", "--json", "prepare").stdout) == {}


def _rwlock(root: Path) -> dict:
    path = root / ".dvc" / "tmp" / "rwlock"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_repro_killed_midway_then_rerun_completes(tmp_path, sig):
    root, env = micro_workspace(tmp_path)
    n_images = 2000  # micro prepare takes ~1 s of generation; 2000 images at 32 px give a window to kill in
    _set_params(root, "prepare", toy_images=n_images)

    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "prepare"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    building = str(root / "data" / ".real.*.tmp" / "images" / "*.png")  # atomic_dir's folder beside data/real
    deadline = time.monotonic() + 180
    try:
        while len(glob.glob(building)) < 200:
            assert proc.poll() is None, f"prepare finished before it could be interrupted:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "prepare never started writing images"
            time.sleep(0.05)
        os.killpg(proc.pid, sig)  # the whole group, as a terminal's Ctrl-C or an OOM/CI kill would
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, out[-2000:]
    # No partial output: DVC removed data/real before running the stage and the build was never swapped in.
    assert not (root / "data" / "real").exists()
    assert not (root / "metrics" / "prepare.json").exists()

    stale_writers = {path: info["pid"] for path, info in _rwlock(root).get("write", {}).items()}
    if sig == signal.SIGKILL:
        # DVC could not clean up: the rwlock still names the dead dvc process as writer of the stage's outs.
        assert stale_writers.get(str(root / "data" / "real")) == proc.pid
    else:
        # Ctrl-C: DVC released its locks and the stage's atomic_dir removed its half-built folder.
        assert stale_writers == {}
        assert glob.glob(str(root / "data" / ".real.*.tmp")) == []
        assert "KeyboardInterrupt" in out or "failed to reproduce 'prepare'" in out

    rerun = _dvc(root, env, "repro", "prepare")
    if sig == signal.SIGKILL:
        # No manual `rm .dvc/tmp/rwlock` needed: DVC sees the writer's pid is gone and drops the entry itself.
        assert f"(Pid {proc.pid})" in rerun.stderr and "Auto removed it from the lock file" in rerun.stderr
    assert "Running stage 'prepare'" in rerun.stdout
    assert _rwlock(root).get("write", {}) == {}

    df = _assert_complete_dataset(root / "data" / "real", n_images)
    metrics = json.loads((root / "metrics" / "prepare.json").read_text())
    assert metrics["n_images"] == n_images == len(df)
    assert metrics["n_train"] == int((df["split"] == "train").sum())
    assert metrics["validation"]["success"] is True
    assert json.loads(_dvc(root, env, "status", "--json", "prepare").stdout) == {}


def test_changed_describe_param_reruns_only_describe(tmp_path):
    root, env = micro_workspace(tmp_path)
    first = _dvc(root, env, "repro", "prepare", "describe")
    assert "Running stage 'prepare'" in first.stdout and "Running stage 'describe'" in first.stdout
    manifest = root / "data" / "real" / "manifest.csv"
    manifest_stat, manifest_md5 = manifest.stat(), _md5(manifest)
    descriptions = root / "data" / "descriptions" / "descriptions.csv"
    assert len(pd.read_csv(descriptions)) == MICRO_TOY_IMAGES
    assert json.loads(_dvc(root, env, "status", "--json", "prepare", "describe").stdout) == {}

    _set_params(root, "describe", max_images=10)
    status = json.loads(_dvc(root, env, "status", "--json", "prepare", "describe").stdout)
    assert status == {"describe": [{"changed deps": {"params.yaml": {"describe": "modified"}}}]}

    second = _dvc(root, env, "repro", "prepare", "describe")
    assert "Stage 'prepare' didn't change, skipping" in second.stdout
    assert "Running stage 'prepare'" not in second.stdout
    assert "Running stage 'describe'" in second.stdout
    # prepare's output was not rewritten (same bytes, same inode and mtime); describe's reflects the new param.
    assert _md5(manifest) == manifest_md5
    assert (manifest.stat().st_ino, manifest.stat().st_mtime_ns) == (manifest_stat.st_ino, manifest_stat.st_mtime_ns)
    assert len(pd.read_csv(descriptions)) == 10
    assert json.loads((root / "metrics" / "describe.json").read_text())["images"] == 10
    assert json.loads(_dvc(root, env, "status", "--json", "prepare", "describe").stdout) == {}

    third = _dvc(root, env, "repro", "prepare", "describe")
    assert "Running stage" not in third.stdout
