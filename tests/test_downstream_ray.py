"""Cross-validation trainings on a local Ray (2 CPUs) give the tables of the in-process run."""
from __future__ import annotations

import pandas as pd
import pytest
import ray
import torch

from components.data.toy import generate_toy
from components.distributed.cv_workers import RayCVExecutor
from components.downstream.config import resolve
from components.downstream.runner import run_cv
from components.downstream.tasks import ClassificationTask, SegmentationTask
from components.errors import ConfigError
from components.downstream.config import DownstreamConfig
from tests.test_downstream_stages import _synthetic_copy

def _cfg(task: str, arch: str, where: str, **kw) -> DownstreamConfig:
    return DownstreamConfig(preset="cpu", architectures=[arch], n_folds=2, image_size=32, batch_size=8,
                            eval_batch_size=32, epochs=1, max_train_images=0, lr=1e-3, progress=False,
                            register=False, out_dir=f"{where}/{task}", metrics_file=f"{where}/{task}.json", **kw)


METRIC_COLUMNS = {"classify": ["f1", "accuracy", "balanced_accuracy"], "segment": ["dice", "iou"]}


@pytest.fixture
def data(tmp_path, monkeypatch):
    generate_toy(tmp_path / "data/real", n_images=40, size=32, seed=1, workers=1, progress=False, val_fraction=0.2)
    _synthetic_copy(2, tmp_path / "data/synthetic")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # as in a Ray worker with one CPU: the same float reductions
    yield tmp_path
    torch.set_num_threads(threads)
    ray.shutdown()


@pytest.mark.parametrize("task, arch", [(ClassificationTask(), "tiny_cnn"), (SegmentationTask(), "tiny_unet")])
def test_ray_workers_reproduce_the_sequential_tables(data, task, arch):
    sequential = run_cv(task, resolve(_cfg(task.name, arch, "seq"), task.name))
    ray_cfg = resolve(_cfg(task.name, arch, "ray", workers=2), task.name)
    parallel = run_cv(task, ray_cfg, executor=RayCVExecutor("", workers=2, device="cpu", num_cpus=2))
    assert parallel["trainings_run"] == sequential["trainings_run"] == 10
    a = pd.read_csv(f"seq/{task.name}/results.csv").sort_values(["fold", "train_set", "eval_set"])
    b = pd.read_csv(f"ray/{task.name}/results.csv").sort_values(["fold", "train_set", "eval_set"])
    keys = ["arch", "fold", "train_set", "eval_set", "n_train", "n_eval"]
    assert a[keys].values.tolist() == b[keys].values.tolist()
    for column in METRIC_COLUMNS[task.name]:
        assert a[column].tolist() == pytest.approx(b[column].tolist(), abs=1e-6), column
    assert parallel["summary"].keys() == sequential["summary"].keys()
    # resumed: the recorded trainings are not run again, on Ray either
    again = run_cv(task, ray_cfg, executor=RayCVExecutor("", workers=2, device="cpu", num_cpus=2))
    assert again["trainings_run"] == 0 and again["trainings_skipped"] == 10
    assert parallel["comparisons"] == sequential["comparisons"]            # same predictions, same intervals


def test_workers_must_not_be_negative():
    with pytest.raises(ConfigError, match="workers=-1"):
        RayCVExecutor("", workers=-1)
    with pytest.raises(ConfigError, match="classify.workers=-2"):
        resolve(_cfg("classify", "tiny_cnn", "x", workers=-2), "classify")
