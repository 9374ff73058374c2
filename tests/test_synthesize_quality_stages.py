"""The synthesize and quality stages end to end on a tiny toy dataset (seeded pair double, tiny VAE)."""
from __future__ import annotations

import dataclasses
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from diffusers import AutoencoderKL

from components.config import load_section
from components.data import manifest
from components.data.toy import generate_toy
from components.errors import ConfigError
from components.generator.presets import tiny_vae_config
from components.generator.synthesis_config import SynthesizeConfig
from components.quality.config import QualityConfig
from components.quality.evaluate import CompareSettings, compare_sets, load_set
from pipelines import quality, synthesize
from tests.synthesis_support import SeededPairs

CATS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    generate_toy(root / "real", n_images=42, size=32, seed=3, progress=False)
    torch_vae = AutoencoderKL(**tiny_vae_config(sample_size=32))
    torch_vae.save_pretrained(root / "base" / "vae")
    return root


def _synth_cfg(root, **kw) -> SynthesizeConfig:
    return SynthesizeConfig(real_dir=str(root / "real"), descriptions_file="", out_dir=str(root / "synthetic"),
                            mode="match", scale=0.5, num_inference_steps=2, batch_size=4, progress=False,
                            metrics_file=str(root / "metrics" / "synthesize.json"),
                            grid_file=str(root / "reports" / "pairs.png"), **kw)


def test_params_sections_load(repo_root):
    cfg = load_section(SynthesizeConfig, "synthesize", repo_root / "params.yaml")
    assert (cfg.mode, cfg.guidance_scale, cfg.mask_threshold) == ("cover", 1.22, 0.5)   # the paper's guidance
    assert 20 <= cfg.num_inference_steps <= 60                                          # the sweep's range
    assert (cfg.memorisation, cfg.memorisation_size, cfg.near_copy_ratio) == (True, 32, 0.5)
    q = load_section(QualityConfig, "quality", repo_root / "params.yaml")
    assert q.inception_weights == "" and q.faithfulness
    with pytest.raises(ConfigError, match="synthesize.near_copy_ratio"):
        SynthesizeConfig(near_copy_ratio=1.5)
    with pytest.raises(ConfigError, match="synthesize.memorisation_size"):
        SynthesizeConfig(memorisation_size=1)


FIRST_EMPTY = {2024 + 1}   # sample 1's first attempt has an empty mask: rejected once, then accepted


def test_synthesize_stage_writes_a_validated_set_and_resumes(workspace):
    cfg = _synth_cfg(workspace)
    gen = SeededPairs(size=32, empty=FIRST_EMPTY)
    metrics = synthesize.run(cfg, generator=gen)
    df = manifest.read_manifest(cfg.out_dir, manifest.REQUIRED_COLUMNS + manifest.PROVENANCE_COLUMNS)
    real_train = manifest.read_manifest(cfg.real_dir).query("split == 'train'")
    assert metrics["planned"] == round(0.5 * len(real_train)) == len(df) + metrics["rejected"]
    assert metrics["validation_success"] == 1 and metrics["seconds_per_pair"] > 0
    assert set(df["source"]) == {"synthetic"} and set(df["split"]) == {"train"}
    assert all(d.startswith("a dermoscopic lesion photo of") for d in df["description"])
    assert (workspace / "reports" / "pairs.png").stat().st_size > 0
    assert json.loads((workspace / "metrics" / "synthesize.json").read_text())["accepted"] == len(df)
    run = mlflow.search_runs(experiment_names=["skindualgen"], filter_string="tags.stage = 'synthesize'",
                             output_format="list")[0]
    assert run.data.metrics["accepted"] == len(df) and run.data.tags["generator_version"] == "seeded-pairs-1"
    # the memorisation audit: every pair has its nearest real training image; noise images copy none of them
    train_ids = set(real_train["image_id"])
    assert set(df["nn_real_id"]) <= train_ids and (df["nn_ratio"] > 1).all() and not df["near_copy"].any()
    audit = json.loads((workspace / "synthetic" / "memorisation.json").read_text())
    assert (audit["n"], audit["near_copies"], audit["n_reference"]) == (len(df), 0, len(real_train))
    assert len(audit["real_nn_distances"]) == len(real_train) and "real_nn_distances" not in metrics["memorisation"]
    assert metrics["memorisation"]["near_copies"] == 0
    rejections = pd.read_csv(workspace / "synthetic" / "rejections.csv")
    assert list(rejections["seed"]) == [2025] and list(rejections["compactness"]) == [0.0]
    written = {name: (workspace / "synthetic" / name).read_bytes() for name in ("manifest.csv", "memorisation.json")}
    again = SeededPairs(size=32)
    metrics = synthesize.run(cfg, generator=again)
    assert again.calls == [] and metrics["resumed"] == metrics["planned"]
    # the resumed run audits again and writes the same bytes
    assert {name: (workspace / "synthetic" / name).read_bytes() for name in written} == written


def test_quality_stage_table1(workspace, caplog):
    if not (workspace / "synthetic" / "manifest.csv").exists():
        synthesize.run(_synth_cfg(workspace), generator=SeededPairs(size=32, empty=FIRST_EMPTY))
    cfg = QualityConfig(real_dir=str(workspace / "real"), synthetic_dir=str(workspace / "synthetic"),
                        vae_dir=str(workspace / "base"), kid_subsets=5, pairs=40, class_pairs=8, segmenter_size=32,
                        segmenter_epochs=1, segmenter_batch_size=8, min_class_samples=3, progress=False,
                        metrics_file=str(workspace / "metrics" / "quality.json"),
                        report_dir=str(workspace / "reports" / "quality"))
    with caplog.at_level("WARNING", logger="pipelines.quality"):
        m = quality.run(cfg)
    assert "differs from the one the synthesize stage audited" not in caplog.text   # its real-real scale reused
    assert (m["feature_space"], m["fd_key"], m["ms_ssim_scales"]) == ("vae", "fd_vae", 3)
    for row in ("real_train_vs_real_test", "real_train_vs_synthetic_train"):
        r = m[row]
        assert r["fd_vae"] > 0 and np.isfinite(r["kid_vae"]) and 0 < r["ms_ssim"] < 1
        assert r["lpips"] == "unavailable" and 0 <= r["consistency_dice"] <= 1
        assert {"w1_area_fraction", "w1_compactness", "w1_components"} <= set(r)
        assert set(r["per_class"]) <= set(CATS) and r["per_class"]
    assert "lpips_weights" in m["lpips_reason"]
    # noise images with discs are farther from the toy drawings than the real test split is
    assert m["real_train_vs_synthetic_train"]["fd_vae"] > m["real_train_vs_real_test"]["fd_vae"]
    assert m["real_train_vs_synthetic_train"]["kid_vae"] > m["real_train_vs_real_test"]["kid_vae"]
    # the same n in both rows, overall and per class, and one reference set A
    n_test, n_syn = m["n_available"]["real_test"], m["n_available"]["synthetic_train"]
    rows = [m["real_train_vs_real_test"], m["real_train_vs_synthetic_train"]]
    assert m["n"] == min(n_test, n_syn) == rows[0]["n_b"] == rows[1]["n_b"]
    assert rows[0]["n_a"] == rows[1]["n_a"] == m["n_reference"] == m["n_available"]["real_train"]
    for c in CATS:
        if c in rows[0]["per_class"] or c in rows[1]["per_class"]:
            assert rows[0]["per_class"][c]["n_b"] == rows[1]["per_class"][c]["n_b"]
    assert all(r["kid_vae_se"] > 0 for r in rows)
    f = m["rejection_filter"]
    assert f["recorded"] and (f["rejected_attempts"], f["first_attempt_rejected"], f["never_passed"]) == (1, 1, 0)
    assert f["planned"] == f["accepted"] == n_syn and f["before"]["n"] == f["after"]["n"] == n_syn
    assert f["before"]["area_fraction_mean"] < f["after"]["area_fraction_mean"]   # the empty first attempt
    fa = m["faithfulness"]
    assert 0 <= fa["real_test_balanced_accuracy"] <= 1 and 0 <= fa["synthetic_balanced_accuracy"] <= 1
    assert set(fa["per_class"]) <= set(CATS) and "random forest" in fa["classifier"]
    mem = [r["memorisation"] for r in rows]
    assert (mem[0]["n"], mem[1]["n"]) == (n_test, n_syn) and mem[1]["near_copies"] == 0
    table = (workspace / "reports" / "quality" / "table1.md").read_text()
    assert "| Real Train vs Synth Train |" in table and "fd_vae" in table and "LPIPS unavailable" in table
    for section in ("Protocol. Feature space", "## Mask statistics before and after the rejection filter",
                    "## Table 1b. Per-class faithfulness", "## Memorisation audit"):
        assert section in table
    assert "Rejected attempts: 1 / " in table
    assert (workspace / "reports" / "quality" / "mask_stats.png").stat().st_size > 0
    assert json.loads((workspace / "metrics" / "quality.json").read_text())["image_size"] == 32


class CopyingPairs:
    """A memorising generator by construction: sample i returns pair i (mod len) of the given real pairs."""
    version = "copying-pairs-1"

    def __init__(self, pairs: list, base_seed: int):
        self.pairs, self.base_seed = pairs, base_seed

    def generate(self, prompts, seeds, **kwargs):
        return [self.pairs[(s - self.base_seed) % len(self.pairs)] for s in seeds]


def test_memorisation_audit_flags_copies_of_training_images_and_knows_only_the_training_split(workspace, tmp_path):
    real = manifest.read_manifest(workspace / "real")
    train, test = real[real["split"] == "train"], real[real["split"] == "test"]
    sources = [train.iloc[0], train.iloc[5], test.iloc[0]]
    pairs = [manifest.load_pair(workspace / "real", r, require_mask=True) for r in sources]
    cfg = dataclasses.replace(_synth_cfg(workspace), out_dir=str(tmp_path / "synthetic"), mode="counts",
                              counts={"nv": 6}, pair_filter=False, metrics_file=str(tmp_path / "m.json"),
                              grid_file=str(tmp_path / "grid.png"))
    synthesize.run(cfg, generator=CopyingPairs([(p.image, p.mask) for p in pairs], cfg.seed))
    df = manifest.read_manifest(cfg.out_dir)
    assert len(df) == 6
    for _, row in df.iterrows():
        source = sources[(int(row["seed"]) - cfg.seed) % 3]
        if source["split"] == "train":     # an exact copy of a training image
            assert row["near_copy"] and row["nn_ratio"] == 0.0 and row["nn_real_id"] == source["image_id"]
            assert row["nn_distance"] == 0.0 and row["nn_percentile"] == 0.0
        else:                              # a test image is not in the reference set: no copy of anything
            assert row["nn_real_id"] in set(train["image_id"]) and row["nn_ratio"] > 0.5 and not row["near_copy"]
    audit = json.loads((tmp_path / "synthetic" / "memorisation.json").read_text())
    assert (audit["near_copies"], audit["near_copy_share"]) == (4, pytest.approx(4 / 6))
    assert audit["per_class"]["nv"]["near_copies"] == 4 and audit["reference"].endswith("split=train")


def test_identical_sets_have_zero_distances(workspace):
    df = manifest.read_manifest(workspace / "real")
    rows = df[df["split"] == "train"].reset_index(drop=True)
    a = load_set("a", workspace / "real", rows, 32)
    b = load_set("b", workspace / "real", rows, 32)
    rng = np.random.default_rng(0)
    a.features = b.features = rng.normal(size=(len(rows), 4))
    r = compare_sets(a, b, CATS, CompareSettings(fd_key="fd", kid_key="kid", kid_subsets=3, pairs=20,
                                                  class_pairs=5))
    assert r["fd"] == pytest.approx(0.0, abs=1e-9)
    assert r["w1_area_fraction"] == r["w1_compactness"] == r["w1_components"] == 0.0


@pytest.mark.slow
def test_synthesize_with_a_real_dual_generator(workspace, tmp_path):
    """The stage drives components.generator.sampling.DualGenerator (random tiny weights, no LoRA)."""
    from components.generator.base_models import build_preset, save_base
    from components.generator.vae_surgery import expand_to_dual

    base = build_preset("tiny", resolution=16, seed=0)
    save_base(base, tmp_path / "base")
    expand_to_dual(base.vae).save_pretrained(tmp_path / "vae4")
    cfg = SynthesizeConfig(real_dir=str(workspace / "real"), descriptions_file="", base_dir=str(tmp_path / "base"),
                           vae_dir=str(tmp_path / "vae4"), lora_dir="", out_dir=str(tmp_path / "synthetic"),
                           mode="counts", counts={"mel": 3, "df": 2}, prompt_source="template",
                           num_inference_steps=3, batch_size=4, device="cpu", progress=False,
                           # random weights give noisy masks: accept them, this test is about the plumbing
                           min_area_fraction=0.0, max_area_fraction=1.0, full_frame_fraction=1.0,
                           max_components=10_000, metrics_file=str(tmp_path / "m.json"),
                           grid_file=str(tmp_path / "grid.png"))
    metrics = synthesize.run(cfg)
    df = manifest.read_manifest(cfg.out_dir)
    assert metrics["planned"] == 5 and len(df) + metrics["rejected"] == 5
    assert set(df["width"]) <= {16} and df["generator_version"].str.startswith("gen-").all()
    assert metrics["seconds_per_pair"] > 0
