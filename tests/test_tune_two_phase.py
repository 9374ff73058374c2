"""The sweep on a micro project, real trainer and sampler on a local 2-CPU Ray: each rank is fine-tuned exactly
once, the sampling trials only load its LoRA, and every trial logs its objective, standard error and sample count."""
from __future__ import annotations

import functools
import math

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from components.data.toy import generate_toy
from components.data.public_corpus import generate_public_corpus
from components.generator.config import AdaptVaeConfig, PretrainConfig
from components.tracking.mlflow_setup import stage_run
from components.tracking.tuning_runs import MlflowTrialTracker
from components.tuning import trials
from components.tuning.config import TuneConfig
from components.tuning.sweep import run_sweep
from tests.tune_support import constructions, counting_trainer

MICRO_FINETUNE = {"resolution": 32, "batch_size": 4, "mask_loss_max_timestep": 0, "lr_warmup_steps": 0,
                  "checkpoint_every": 100, "log_every": 2, "validation_steps": 2, "num_workers": 0}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Toy data (24 images, 32 px), a base model and 4-channel VAE trained for a handful of steps."""
    from pipelines import adapt_vae, pretrain

    root = tmp_path_factory.mktemp("tune2")
    data = root / "data"
    generate_toy(data, n_images=24, size=32, seed=0, workers=1, progress=False)
    generate_public_corpus(root / "public", n_images=40, holdout_images=8, size=32, workers=1, progress=False)
    pretrain.run(PretrainConfig(
        corpus_dir=str(root / "public"), out_dir=str(root / "base"), metrics_file=str(root / "m/pre.json"),
        resolution=32, vae_steps=3, vae_batch_size=4, vae_crop=16, unet_steps=3, unet_batch_size=4,
        sample_steps=2, log_every=2), reports_dir=root / "reports")
    adapt_vae.run(AdaptVaeConfig(
        base_model=str(root / "base"), data_dir=str(data), out_dir=str(root / "vae4"),
        metrics_file=str(root / "m/ada.json"), resolution=32, steps=20, learning_rate=1e-2, batch_size=4,
        eval_batch_size=8, log_every=10), reports_dir=root / "reports")
    (root / "params.yaml").write_text(yaml.safe_dump({"finetune": MICRO_FINETUNE}))
    return root


@pytest.mark.slow
def test_each_rank_is_trained_once_and_sampling_trials_score_its_fixed_lora(project, tmp_path, monkeypatch):
    count = tmp_path / "count"
    count.mkdir()
    monkeypatch.setattr(trials, "new_trainer", functools.partial(counting_trainer, str(count), trials.new_trainer))
    cfg = TuneConfig(lora_ranks=[2, 4], max_epochs=1, trials_per_rank=3, steps_min=2, steps_max=4,
                     samples_per_trial=16, reference_images=0, num_cpus=2, max_concurrent=2,
                     storage=str(tmp_path / "tune"), name="micro", base_dir=str(project / "base"),
                     vae_dir=str(project / "vae4"), data_dir=str(project / "data"), descriptions="",
                     finetune_params=str(project / "params.yaml"))
    try:
        with stage_run("tune-two-phase", {}) as parent:
            result = run_sweep(cfg, tracker=MlflowTrialTracker.for_active_run())
        assert constructions(count) == [2, 4]                      # exactly one trainer per rank
        assert [(r["lora_rank"], r["status"], r["error"]) for r in result["ranks"]] == [
            (2, "trained", None), (4, "trained", None)]
        sampled = result["trials"]
        assert len(sampled) == 6 and all(t["error"] is None for t in sampled)
        for rank in (2, 4):
            settings = {(t["num_inference_steps"], t["guidance_scale"]) for t in sampled if t["lora_rank"] == rank}
            assert len(settings) == 3                                # distinct Optuna suggestions per rank
        for t in sampled:
            assert 2 <= t["num_inference_steps"] <= 4 and 1.0 <= t["guidance_scale"] <= 7.5
            assert math.isfinite(t["kid_vae"]) and t["kid_vae_se"] > 0 and t["n_samples"] == 16
        best = result["best"]
        assert best["kid_vae"] == min(t["kid_vae"] for t in sampled)
        print("\nmicro sweep (16 samples/trial):")
        for t in sorted(sampled, key=lambda t: t["kid_vae"]):
            print(f"  rank {t['lora_rank']} steps {t['num_inference_steps']} guidance {t['guidance_scale']:.2f}: "
                  f"kid_vae {t['kid_vae']:.4g} ± {t['kid_vae_se']:.2g}")
        print(f"  within 2 SE of the best: {result['within_2se_of_best']} of {len(sampled) - 1}")

        client = MlflowClient()
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        by_phase = {p: [c for c in children if c.data.tags["tune_phase"] == p] for p in ("finetune", "sampling")}
        assert len(by_phase["finetune"]) == 2 and len(by_phase["sampling"]) == 6
        assert all("final.final_total" in c.data.metrics for c in by_phase["finetune"])
        assert all({"kid_vae", "kid_vae_se", "n_samples", "fd_vae"} <= set(c.data.metrics)
                   for c in by_phase["sampling"])

        # Started again: both LoRAs are complete and both studies finished, so nothing is constructed or re-run.
        with stage_run("tune-two-phase-again", {}):
            again = run_sweep(cfg, tracker=MlflowTrialTracker.for_active_run())
        assert constructions(count) == [2, 4]
        assert [r["status"] for r in again["ranks"]] == ["reused", "reused"]
        assert again["best"]["kid_vae"] == best["kid_vae"] and len(again["trials"]) == 6
    finally:
        ray.shutdown()
