"""The GPU check's CPU-side contract (benchmarks/gpu_check.py): refusal without CUDA, projection and targets,
where sections go, the time budget, the albumentations stand-in, the lent-machine package lists and the wheel
plan. No GPU needed; nothing here runs a benchmark."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from benchmarks import gpu_check, lent_env, no_albumentations
from benchmarks.gpu_check import CheckSettings, Row

REPO = gpu_check.REPO


def _no_cuda_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""      # no device even on a machine that has one
    return env


def test_refuses_without_cuda_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=REPO, env=_no_cuda_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines == [gpu_check.REFUSAL], proc.stderr
    assert "make bench" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_bench_gpu_refuses_without_cuda():
    proc = subprocess.run(["make", "--no-print-directory", "bench-gpu", f"GPU_PY={sys.executable}"], cwd=REPO,
                          env=_no_cuda_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert gpu_check.REFUSAL in proc.stderr and "Traceback" not in proc.stderr


def test_rehearsal_never_writes_results(tmp_path):
    assert gpu_check.main(["--rehearse", "--out", str(gpu_check.RESULTS)]) == 2
    section = tmp_path / "section.md"
    section.write_text("## 2026-01-01 00:00 UTC · cpu · REHEARSAL on CPU — not a GPU result (tiny)\n")
    before = gpu_check.RESULTS.read_text()
    assert gpu_check.main(["--merge", str(section)]) == 2
    assert gpu_check.RESULTS.read_text() == before


def test_merge_appends_a_device_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    section = tmp_path / "bench-gpu-section.md"
    section.write_text("## 2026-01-01 00:00 UTC · NVIDIA H200 · bench-gpu (sd2-base-random)\n\n- x\n")
    assert gpu_check.main(["--merge", str(section), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmark results") and text.rstrip().endswith("- x")


def test_paper_schedule_projection():
    s = CheckSettings()
    assert gpu_check.paper_steps(s, 4) == 100 * 498
    assert gpu_check.paper_steps(s, 16) == 100 * 125
    row = Row("train", 16, items=16, step_times=[0.5, 0.4, 0.6])
    assert gpu_check.projected_minutes(s, row) == pytest.approx(12_500 * 0.5 / 60)


def test_target_lines_met_missed_and_not_measured():
    s = CheckSettings()
    rows = [Row("train", 4, items=4, step_times=[0.2] * 3),            # 49,800 × 0.2 s = 166 min
            Row("train", 16, True, items=16, step_times=[0.1] * 3),     # 12,500 × 0.1 s = 20.8 min
            Row("sample", 8, items=16, step_times=[5.0] * 3),           # 3.2 pairs/s
            Row("sample", 16, items=16, step_times=[4.5] * 3)]          # 3.6 pairs/s
    paper, pairs = gpu_check.target_lines(s, rows)
    assert paper["met"] is True and "batch 16, compile on" in paper["line"] and paper["line"].endswith("MET")
    assert "batch 4, compile off: 166.0 min" in paper["line"]
    assert pairs["met"] is False and pairs["line"].endswith("MISSED") and "(batch 16)" in pairs["line"]
    none = gpu_check.target_lines(s, [Row("train", 4, status="skipped: time budget")])
    assert all(t["met"] is None and "NOT MEASURED" in t["line"] for t in none)


def test_section_names_device_and_skips(tmp_path):
    from datetime import datetime, timezone

    env = {"device": "cuda", "device_name": "NVIDIA H200", "torch": "2.11.0", "diffusers": "0.39.0", "peft": "0.21.2",
           "transformers": "5.17.0", "python": "3.12.3", "cuda": "13.0", "loadavg_start": None}
    rows = [Row("train", 4, items=4, step_times=[0.1, 0.12], warmup_times=[1.0], setup_s=2.0, peak_bytes=2**30),
            Row("train", 4, True, items=4, status="skipped: time budget (needs ~60 s, 10 s left for it)"),
            Row("sample", 8, items=16, step_times=[3.0])]
    audit = {"outside_image": ["diffusers"], "rehearsal_only": [], "unexpected": [], "forbidden_imported": [],
             "albumentations_stand_in": True}
    tests = {"status": "passed", "summary": "8 passed in 60.0s", "seconds": 61.0, "files": ["tests/test_gpu_paths.py"]}
    text, record = gpu_check.section(env, CheckSettings(), rows, tests, audit, datetime.now(timezone.utc), 400.0)
    assert text.splitlines()[0].endswith("· NVIDIA H200 · bench-gpu (sd2-base-random)")
    assert "skipped: time budget" in text and "| 1024 |" in text and "8 passed" in text
    assert record["rows"][0]["projected_paper_minutes"] == pytest.approx(49_800 * 0.11 / 60)


def test_budget_limit_stops_a_long_call():
    budget = gpu_check.Budget(10)
    t0 = time.monotonic()
    with pytest.raises(gpu_check.OutOfTime):
        with budget.limit(0.2):
            time.sleep(5)
    assert time.monotonic() - t0 < 2
    with pytest.raises(gpu_check.OutOfTime):
        with budget.limit(0):
            pass


def test_measure_records_a_failure_and_a_stop():
    budget, device = gpu_check.Budget(60), torch.device("cpu")

    def broken():
        raise RuntimeError("no kernel image is available\nsecond line")
    row = gpu_check.measure(Row("train", 4), broken, 1, 1, device, budget, 30, log=lambda m: None)
    assert row.status == "failed: RuntimeError: no kernel image is available"

    def slow():
        return lambda: time.sleep(0.3)
    row = gpu_check.measure(Row("sample", 8, items=8), slow, 1, 100, device, budget, 1.0, log=lambda m: None)
    assert row.status.startswith("stopped: time limit") and 0 < len(row.step_times) < 100


def test_albumentations_stand_in_resizes_and_refuses_the_rest():
    t = no_albumentations.Compose([no_albumentations.Resize(8, 8, interpolation=4, mask_interpolation=0)], seed=1)
    t.set_random_seed(3)
    out = t(image=np.zeros((16, 16, 3), np.uint8), mask=np.ones((16, 16), np.uint8))
    assert out["image"].shape == (8, 8, 3) and out["mask"].shape == (8, 8) and set(np.unique(out["mask"])) == {1}
    with pytest.raises(ModuleNotFoundError, match="augment: false"):
        no_albumentations._unavailable("Affine")(scale=(0.9, 1.1))
    with pytest.raises(AttributeError):
        no_albumentations._module_getattr("__path__")
    if "albumentations" not in sys.modules or not no_albumentations.is_stand_in(sys.modules["albumentations"]):
        pytest.importorskip("albumentations")
        assert no_albumentations.install() is False       # the real one is importable here: left alone


def test_lent_package_lists():
    lent = {lent_env.normalize(p) for p in lent_env.LENT_PACKAGES}
    for name in ("torch", "torchvision", "transformers", "peft", "accelerate", "timm", "safetensors", "pytest",
                 "opencv-python-headless", "scikit-learn", "huggingface-hub"):
        assert name in lent, name
    for name in ("diffusers", "mlflow", "ray", "dvc", "albumentations", "segmentation-models-pytorch",
                 "importlib-metadata"):
        assert name not in lent, name
    assert lent_env.wheel_distribution(lent_env.Path("importlib_metadata-9.1.0-py3-none-any.whl")) == \
        "importlib-metadata"


def test_gpu_wheels_plan_is_what_the_audit_expects():
    from benchmarks import gpu_wheels

    assert set(gpu_wheels.plan()) == set(lent_env.CARRIED)
