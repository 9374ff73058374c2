"""Synthesis writer: resume skips exactly the finished samples, interruptions leave no partial file,
degenerate pairs are rejected with a reason and retried with the next seed.

`SeededPairs` (tests/synthesis_support.py) stands in for the diffusion model only.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components import atomic
from components.data import manifest
from components.data.mask_stats import area_fraction, compactness, component_count
from components.errors import DataError
from components.generator.pair_filter import FilterConfig, check_mask
from components.generator.synthesis_plan import ATTEMPT_STRIDE, PlannedSample, sample_id
from components.generator.synthesis_writer import GenerationSettings, assemble, write_samples
from tests.synthesis_support import SeededPairs


def _plan(n: int, base: int = 10) -> list[PlannedSample]:
    cats = ["mel", "nv"]
    return [PlannedSample(index=i, sample_id=sample_id(cats[i % 2], i), category=cats[i % 2],
                          prompt=f"prompt {i}", seed=base + i) for i in range(n)]


SETTINGS = GenerationSettings(num_inference_steps=3, guidance_scale=1.22, batch_size=2, max_attempts=3)
FILT = FilterConfig()


def _seeds(gen: SeededPairs) -> list[int]:
    return sorted(s for call in gen.calls for s in call)


def _leftovers(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_full_run_writes_pairs_and_manifest_with_provenance(tmp_path):
    plan = _plan(5)
    gen = SeededPairs()
    summary = write_samples(plan, gen, tmp_path, SETTINGS, FILT, progress=False)
    df, rej = assemble(tmp_path, plan)
    assert summary.n_accepted == 5 and summary.attempts_this_run == 5 and rej.empty
    assert [len(c) for c in gen.calls] == [2, 2, 1]
    back = manifest.read_manifest(tmp_path, manifest.REQUIRED_COLUMNS + manifest.PROVENANCE_COLUMNS)
    assert list(back["image_id"]) == [s.sample_id for s in plan]
    row = back.iloc[3]
    assert (row["source"], row["split"], row["origin"], row["prompt"], row["seed"]) == \
        ("synthetic", "train", "skindualgen", "prompt 3", 13)
    assert (row["generator_version"], row["num_inference_steps"], row["guidance_scale"]) == ("seeded-pairs-1", 3, 1.22)
    pair = manifest.load_pair(tmp_path, row, require_mask=True)
    expect_img, expect_mask = SeededPairs().generate(["x"], [13])[0]
    assert np.array_equal(pair.image, expect_img) and np.array_equal(pair.mask, expect_mask)


def test_rerun_skips_exactly_the_finished_samples(tmp_path):
    plan = _plan(6)
    write_samples(plan, SeededPairs(), tmp_path, SETTINGS, FILT, progress=False)
    assemble(tmp_path, plan)
    again = SeededPairs()
    summary = write_samples(plan, again, tmp_path, SETTINGS, FILT, progress=False)
    assert again.calls == [] and summary.n_skipped == 6
    # lose one record, corrupt one image: exactly their batches (units of 2 by plan index) are regenerated,
    # whole, so the pairs are those of an uninterrupted run; the batch-mates are rewritten with the same bytes
    kept = {i: (tmp_path / "images" / f"{plan[i].sample_id}.png").read_bytes() for i in (0, 5)}
    (tmp_path / "records" / f"{plan[1].sample_id}.json").unlink()
    (tmp_path / "images" / f"{plan[4].sample_id}.png").write_bytes(b"not a png")
    third = SeededPairs()
    summary = write_samples(plan, third, tmp_path, SETTINGS, FILT, progress=False)
    assert _seeds(third) == [10, 11, 14, 15] and summary.n_skipped == 2
    assert third.calls == [[10, 11], [14, 15]]
    assert {i: (tmp_path / "images" / f"{plan[i].sample_id}.png").read_bytes() for i in (0, 5)} == kept
    assemble(tmp_path, plan)
    # a changed generation setting invalidates every record
    fourth = SeededPairs()
    write_samples(plan, fourth, tmp_path, GenerationSettings(num_inference_steps=4, batch_size=2), FILT,
                  progress=False)
    assert _seeds(fourth) == [s.seed for s in plan]


def test_interrupted_run_leaves_no_partial_file_and_resumes(tmp_path):
    plan = _plan(6)
    # a previous complete run with other settings left a manifest: it must not survive a partial rerun
    write_samples(plan, SeededPairs(), tmp_path, GenerationSettings(num_inference_steps=9), FILT, progress=False)
    assemble(tmp_path, plan)
    with pytest.raises(KeyboardInterrupt):
        write_samples(plan, SeededPairs(fail_on_call=1), tmp_path, SETTINGS, FILT, progress=False)
    assert not (tmp_path / "manifest.csv").exists() and _leftovers(tmp_path) == []
    resumed = SeededPairs()
    write_samples(plan, resumed, tmp_path, SETTINGS, FILT, progress=False)
    assert _seeds(resumed) == [12, 13, 14, 15]  # the first batch (10, 11) was committed before the interrupt
    df, _ = assemble(tmp_path, plan)
    assert len(df) == 6


def test_kill_inside_a_png_write_leaves_neither_temp_nor_partial_png(tmp_path, monkeypatch):
    plan = _plan(3)
    real_replace = atomic.os.replace
    calls = {"n": 0}

    def dying_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 4:  # sample 1's image (sample 0 took image, mask, record)
            raise KeyboardInterrupt("killed during write")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        write_samples(plan, SeededPairs(), tmp_path, SETTINGS, FILT, progress=False)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{plan[0].sample_id}.png"]
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [f"{plan[0].sample_id}.json"]
    resumed = SeededPairs()
    write_samples(plan, resumed, tmp_path, SETTINGS, FILT, progress=False)
    assert resumed.calls == [[10, 11], [12]]   # sample 1's unfinished batch again, whole, then the last one


def test_rejected_pairs_are_retried_with_the_next_seed_and_recorded(tmp_path):
    plan = _plan(4)
    # sample 1 fails once, sample 2 fails on every attempt
    empty = {11, 12, 12 + ATTEMPT_STRIDE, 12 + 2 * ATTEMPT_STRIDE}
    gen = SeededPairs(empty=empty)
    summary = write_samples(plan, gen, tmp_path, SETTINGS, FILT, progress=False)
    assert _seeds(gen) == sorted([10, 11, 12, 13, 11 + ATTEMPT_STRIDE, 12 + ATTEMPT_STRIDE, 12 + 2 * ATTEMPT_STRIDE])
    assert (summary.n_accepted, summary.n_rejected, summary.rejection_events) == (3, 1, 4)
    assert summary.rejection_reasons == {"empty_mask": 4}
    df, rej = assemble(tmp_path, plan)
    assert list(df["image_id"]) == [plan[0].sample_id, plan[1].sample_id, plan[3].sample_id]
    assert df.set_index("image_id").loc[plan[1].sample_id, "seed"] == 11 + ATTEMPT_STRIDE
    on_disk = pd.read_csv(tmp_path / "rejections.csv")
    assert list(on_disk["reason"]) == ["empty_mask"] * 4
    assert list(on_disk["final"]) == [False, False, False, True]
    assert list(on_disk["area_fraction"]) == list(on_disk["compactness"]) == [0.0] * 4  # empty masks
    assert not (tmp_path / "images" / f"{plan[2].sample_id}.png").exists()
    record = json.loads((tmp_path / "records" / f"{plan[2].sample_id}.json").read_text())
    assert record["status"] == "rejected" and [r["attempt"] for r in record["rejections"]] == [0, 1, 2]
    # the exhausted sample counts as finished: a rerun generates nothing
    again = SeededPairs(empty=empty)
    write_samples(plan, again, tmp_path, SETTINGS, FILT, progress=False)
    assert again.calls == []


def test_rejection_log_records_the_statistics_of_each_rejected_mask(tmp_path):
    plan = _plan(2)
    # every disc of SeededPairs covers less than 30 % of the image: all attempts are rejected as too small
    write_samples(plan, SeededPairs(), tmp_path, GenerationSettings(batch_size=2, max_attempts=2),
                  FilterConfig(min_area_fraction=0.3), progress=False)
    with pytest.raises(DataError, match="every planned sample was rejected"):
        assemble(tmp_path, plan)
    log = pd.read_csv(tmp_path / "rejections.csv")
    assert list(zip(log["image_id"], log["attempt"])) == [(plan[0].sample_id, 0), (plan[0].sample_id, 1),
                                                          (plan[1].sample_id, 0), (plan[1].sample_id, 1)]
    for _, r in log.iterrows():
        _, mask = SeededPairs().generate(["x"], [int(r["seed"])])[0]
        assert r["reason"] == "area_below_min" and r["area_fraction"] == pytest.approx(area_fraction(mask))
        assert r["compactness"] == pytest.approx(compactness(mask)) and r["components"] == component_count(mask)


def test_assemble_lets_a_caller_add_columns_but_not_reorder_rows(tmp_path):
    plan = _plan(3)
    write_samples(plan, SeededPairs(), tmp_path, SETTINGS, FILT, progress=False)
    df, _ = assemble(tmp_path, plan, annotate=lambda d: d.assign(nn_ratio=[0.0, 0.5, 1.0]))
    back = pd.read_csv(tmp_path / "manifest.csv")
    assert list(back["nn_ratio"]) == [0.0, 0.5, 1.0] and list(df["nn_ratio"]) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="keep the manifest.s rows and their order"):
        assemble(tmp_path, plan, annotate=lambda d: d.iloc[::-1])


def test_shrunk_plan_drops_stale_files(tmp_path):
    plan = _plan(4)
    write_samples(plan, SeededPairs(), tmp_path, SETTINGS, FILT, progress=False)
    assemble(tmp_path, plan)
    write_samples(plan[:2], SeededPairs(), tmp_path, SETTINGS, FILT, progress=False)
    df, _ = assemble(tmp_path, plan[:2])
    assert len(df) == 2
    assert sorted(p.stem for p in (tmp_path / "masks").iterdir()) == [plan[0].sample_id, plan[1].sample_id]


def _disc(h: int, r: float, cy: float, cx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :h]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.uint8)


@pytest.mark.parametrize("name,mask,reason", [
    ("empty", np.zeros((20, 20), np.uint8), "empty_mask"),
    ("full", np.ones((20, 20), np.uint8), "full_frame_mask"),
    ("speck", np.pad(np.ones((1, 1), np.uint8), ((5, 14), (5, 14))), "area_below_min"),
    ("huge", np.pad(np.ones((19, 19), np.uint8), ((1, 0), (1, 0))), "area_above_max"),
    ("fragmented", sum(_disc(20, 1.2, y, x) for y in (3, 10, 16) for x in (3, 16)).clip(0, 1), "fragmented"),
    ("ok", _disc(20, 5, 10, 10), None),
    ("ok_two_parts", np.clip(_disc(20, 4, 6, 6) + _disc(20, 3, 15, 15), 0, 1), None),
])
def test_filter_cases(name, mask, reason):
    assert check_mask(mask, FilterConfig(min_area_fraction=0.005, max_area_fraction=0.85, max_components=3)).reason == reason
