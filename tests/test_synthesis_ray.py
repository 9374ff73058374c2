"""Synthesis on a local Ray (2 CPUs): the same plan gives byte-identical pairs with 1 or 2 workers, a worker
killed mid-run costs nothing, and workers must load the generator the driver planned with."""
from __future__ import annotations

import functools
import os

import pytest
import ray

from components.distributed.synthesis_workers import RaySynthesisExecutor
from components.errors import ModelError
from components.generator.base_models import build_preset, save_base
from components.generator.pair_filter import FilterConfig
from components.generator.sampling import DualGenerator
from components.generator.synthesis_plan import PlannedSample, sample_id
from components.generator.synthesis_writer import GenerationSettings, assemble, write_samples
from components.generator.vae_surgery import expand_to_dual
from tests.conftest import REPO_ROOT
from tests.synthesis_support import DyingOnce

SETTINGS = GenerationSettings(num_inference_steps=3, guidance_scale=1.5, batch_size=2, max_attempts=2)
FILT = FilterConfig(enabled=False)     # random tiny weights: the filter is not what is tested here


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-generator")
    base = build_preset("tiny", resolution=16, seed=0)
    save_base(base, root / "base")
    expand_to_dual(base.vae).save_pretrained(root / "vae4")
    return root


@pytest.fixture
def local_ray(monkeypatch):
    ray.shutdown()
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield
    ray.shutdown()


def _plan(n: int) -> list[PlannedSample]:
    cats = ["mel", "nv", "df"]
    return [PlannedSample(index=i, sample_id=sample_id(cats[i % 3], i), category=cats[i % 3],
                          prompt=f"a dermoscopic lesion photo of {cats[i % 3]}", seed=100 + i) for i in range(n)]


def _load(model_dirs):
    return functools.partial(DualGenerator.from_dirs, str(model_dirs / "base"), str(model_dirs / "vae4"),
                             device="cpu")


def _executor(load, version, workers):
    """An executor over 2 local CPUs; use it in a `with` block so its actors free their CPUs."""
    return RaySynthesisExecutor(load, SETTINGS, FILT, version, workers=workers, num_cpus=2)


def _files(root) -> dict[str, bytes]:
    return {f"{sub}/{p.name}": p.read_bytes() for sub in ("images", "masks") for p in sorted((root / sub).iterdir())}


def test_one_or_two_workers_give_byte_identical_pairs(model_dirs, local_ray, tmp_path):
    plan, load = _plan(7), _load(model_dirs)
    version = load().version
    with _executor(load, version, 1) as ex:
        one = write_samples(plan, None, tmp_path / "one", SETTINGS, FILT, progress=False, executor=ex,
                            version=version)
    with _executor(load, version, 2) as ex:
        two = write_samples(plan, None, tmp_path / "two", SETTINGS, FILT, progress=False, executor=ex,
                            version=version)
    assert one.n_accepted == two.n_accepted == 7
    files_one, files_two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len(files_one) == 14 and files_one == files_two
    a, _ = assemble(tmp_path / "one", plan)
    b, _ = assemble(tmp_path / "two", plan)
    assert a.equals(b)
    # resumed on Ray: nothing left to generate
    with _executor(load, version, 2) as ex:
        again = write_samples(plan, None, tmp_path / "two", SETTINGS, FILT, progress=False, executor=ex,
                              version=version)
    assert again.n_skipped == 7 and again.attempts_this_run == 0


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_no_duplicate_and_no_gap(model_dirs, local_ray, tmp_path):
    plan, load = _plan(6), _load(model_dirs)
    version = load().version
    clean = tmp_path / "clean"
    with _executor(load, version, 1) as ex:
        write_samples(plan, None, clean, SETTINGS, FILT, progress=False, executor=ex, version=version)
    marker = tmp_path / "died.txt"
    dying = DyingOnce(load, str(marker), at_call=2)           # the actor process exits in its second unit
    out = tmp_path / "killed"
    with _executor(dying, version, 2) as ex:
        summary = write_samples(plan, None, out, SETTINGS, FILT, progress=False, executor=ex, version=version)
    assert marker.exists()                                     # a worker did die, and was replaced
    records = sorted(p.name for p in (out / "records").iterdir())
    assert records == sorted(f"{s.sample_id}.json" for s in plan) and summary.n_accepted == 6
    assert _files(out) == _files(clean)                        # the retried unit gave the same pairs
    df, _ = assemble(out, plan)
    assert list(df["image_id"]) == [s.sample_id for s in plan]


def test_workers_with_another_generator_are_refused(model_dirs, local_ray, tmp_path):
    with pytest.raises(ModelError, match="same model folders at the same paths"):
        write_samples(_plan(2), None, tmp_path / "x", SETTINGS, FILT, progress=False,
                      executor=_executor(_load(model_dirs), "gen-0000000000000000", 1), version="gen-0000000000000000")
