"""Micro end-to-end: corpus → pretrain → adapt_vae → finetune (checkpoints, resume, corruption), registry, pyfunc."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from components.config import to_dict
from components.data.public_corpus import generate_public_corpus
from components.data.toy import generate_toy
from components.errors import ConfigError, DataError, ModelError
from components.generator import checkpoints
from components.generator.config import AdaptVaeConfig, FinetuneConfig, PretrainConfig
from components.generator.finetune_trainer import FinetuneTrainer


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """A public corpus (40 images), toy data (24 images, 32 px) and the three stages run with a few steps each."""
    from pipelines import adapt_vae, finetune, pretrain

    root = tmp_path_factory.mktemp("gen")
    data = root / "data"
    generate_toy(data, n_images=24, size=32, seed=0, workers=1, progress=False)
    generate_public_corpus(root / "public", n_images=40, holdout_images=8, size=32, workers=1, progress=False)
    reports = root / "reports"
    pre = pretrain.run(PretrainConfig(
        corpus_dir=str(root / "public"), out_dir=str(root / "base"), metrics_file=str(root / "m/pre.json"),
        resolution=32, vae_steps=3, vae_batch_size=4, vae_crop=16, unet_steps=3, unet_batch_size=4,
        sample_steps=2, log_every=2), reports_dir=reports)
    ada = adapt_vae.run(AdaptVaeConfig(
        base_model=str(root / "base"), data_dir=str(data), out_dir=str(root / "vae4"),
        metrics_file=str(root / "m/ada.json"), resolution=32, steps=40, learning_rate=1e-2, batch_size=4,
        eval_batch_size=8, log_every=10), reports_dir=reports)
    ft_cfg = FinetuneConfig(
        base_model=str(root / "base"), vae_dir=str(root / "vae4"), data_dir=str(data), descriptions_csv="",
        out_dir=str(root / "lora"), checkpoint_dir=str(root / "ckpt"), metrics_file=str(root / "m/ft.json"),
        resolution=32, max_train_steps=6, batch_size=2, checkpoint_every=2, checkpoints_total_limit=2,
        mask_loss_max_timestep=0, validation_every_epochs=1000, validation_steps=2, log_every=2, lr_warmup_steps=0)
    ft = finetune.run(ft_cfg, reports_dir=reports)
    return {"root": root, "data": data, "pre": pre, "ada": ada, "ft": ft, "ft_cfg": ft_cfg, "reports": reports}


def _history(ckpt_dir) -> list[list[float]]:
    _, _, meta = checkpoints.load_checkpoint(checkpoints.list_checkpoints(ckpt_dir)[-1])
    return meta["loss_history"]


def test_stage_outputs(stages):
    from diffusers import StableDiffusionPipeline

    root = stages["root"]
    assert stages["pre"]["pretrained"] is True and stages["pre"]["vae_factor"] == 4
    pre = json.loads((root / "m/pre.json").read_text())
    assert pre["scaling_factor"] > 0 and (pre["train_images"], pre["holdout_images"]) == (32, 8)
    StableDiffusionPipeline.from_pretrained(root / "base")        # an ordinary diffusers folder
    vae_cfg = json.loads((root / "vae4" / "config.json").read_text())
    assert (vae_cfg["in_channels"], vae_cfg["out_channels"]) == (4, 4)
    ada = json.loads((root / "m/ada.json").read_text())
    n_train = int((pd.read_csv(stages["data"] / "manifest.csv")["split"] == "train").sum())
    assert 0.0 <= ada["mask_dice"] <= 1.0 and ada["rgb_psnr"] > 0 and ada["eval_images"] >= 1
    assert ada["eval_images"] + ada["train_images"] == n_train       # held out of the training split
    assert (stages["reports"] / "adapt_vae" / "eval_grid.png").is_file()
    assert (root / "lora" / "pytorch_lora_weights.safetensors").is_file()
    ft = json.loads((root / "m/ft.json").read_text())
    assert ft["steps"] == 6 and ft["registered_version"] and ft["final_total"] > 0


def test_checkpoint_limit_keeps_the_newest_two(stages):
    names = [p.name for p in checkpoints.list_checkpoints(stages["root"] / "ckpt")]
    assert names == ["checkpoint-4", "checkpoint-6"]
    rows = _history(stages["root"] / "ckpt")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(not math.isnan(r[2]) and not math.isnan(r[3]) for r in rows)   # gate 0: mask losses every step


def test_resume_continues_the_uninterrupted_loss_curve(stages, tmp_path):
    from pipelines import finetune

    cfg: FinetuneConfig = stages["ft_cfg"]
    resumed_ckpt = tmp_path / "ckpt_resumed"
    shutil.copytree(stages["root"] / "ckpt", resumed_ckpt)
    resumed = dataclasses.replace(cfg, max_train_steps=8, checkpoint_dir=str(resumed_ckpt), register=False,
                                  out_dir=str(tmp_path / "lora_r"), metrics_file=str(tmp_path / "r.json"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"finetune": to_dict(resumed)}))
    finetune.main(["--params", str(params), "--resume", "latest"])        # the CLI path users take
    assert json.loads((tmp_path / "r.json").read_text())["resumed_from_step"] == 6

    straight = dataclasses.replace(cfg, max_train_steps=8, checkpoint_dir=str(tmp_path / "ckpt_straight"),
                                   register=False, out_dir=str(tmp_path / "lora_s"),
                                   metrics_file=str(tmp_path / "s.json"))
    finetune.run(straight, reports_dir=tmp_path)
    a, b = np.array(_history(resumed_ckpt)), np.array(_history(tmp_path / "ckpt_straight"))
    assert a[:, 0].tolist() == b[:, 0].tolist() == list(range(1, 9))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a[:6], np.array(_history(stages["root"] / "ckpt"))[:6], rtol=1e-4, atol=1e-6)


def test_corrupt_checkpoint_is_reported(stages, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(stages["root"] / "ckpt", ckpt)
    state = ckpt / "checkpoint-6" / checkpoints.STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    cfg = dataclasses.replace(stages["ft_cfg"], checkpoint_dir=str(ckpt), resume="latest", max_train_steps=8,
                              register=False, out_dir=str(tmp_path / "lora"))
    with pytest.raises(ModelError, match=r"checkpoint-6 is corrupt: training_state.pt"):
        FinetuneTrainer(cfg, progress=False).run()
    changed = dataclasses.replace(cfg, resume=str(ckpt / "checkpoint-4"), lora_rank=8, lora_alpha=8)
    with pytest.raises(ConfigError, match="different settings"):
        FinetuneTrainer(changed, progress=False).run()


def test_resolution_must_divide_by_the_vae_factor(stages):
    with pytest.raises(ConfigError, match="not divisible by the VAE downsampling factor 4"):
        FinetuneTrainer(dataclasses.replace(stages["ft_cfg"], resolution=30), progress=False)


def test_mask_losses_fall_when_overfitting_one_image(stages, tmp_path):
    cfg = dataclasses.replace(stages["ft_cfg"], learning_rate=6e-3, lambda_diffusion=0.1, lambda_bce=1.0,
                              lambda_dice=1.0, mask_loss_weighting="none", prompt_dropout=0.0, lora_rank=8,
                              lora_alpha=8, checkpoint_dir=str(tmp_path / "c"), out_dir=str(tmp_path / "l"))
    trainer = FinetuneTrainer(cfg, progress=False)
    item = trainer.dataset[(0, 0)]
    batch = {"image": item["image"][None], "mask": item["mask"][None], "index": torch.tensor([0])}
    trainer.unet.train()
    mask_loss = []
    for _ in range(30):                      # same image, noise and timestep every step: pure overfitting
        trainer.noise_gen.manual_seed(0)
        parts, _ = trainer.train_step(batch, timesteps=torch.tensor([700]))
        mask_loss.append(float(parts[1] + parts[2]))
    assert np.mean(mask_loss[-5:]) < 0.85 * np.mean(mask_loss[:5])


def test_registered_generator_loads_through_pyfunc(stages):
    from components.tracking.generator_model import decode_png

    model = mlflow.pyfunc.load_model("models:/skindualgen-generator@challenger")
    out = model.predict(pd.DataFrame({"category": ["melanoma", "nv"], "seed": [0, 1]}),
                        params={"num_inference_steps": 2, "height": 32, "width": 32})
    assert list(out["seed"]) == [0, 1]
    assert out["prompt"][0] == "a dermoscopic lesion photo of melanoma for skin cancer diagnosis"
    for image, mask in zip(map(decode_png, out["image"]), map(decode_png, out["mask"])):   # base64 PNGs
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
    # same batch as above (CPU kernels may round differently for another batch size): identical outputs
    by_prompt = model.predict(pd.DataFrame({"prompt": ["a dermoscopic lesion photo of melanoma for skin cancer "
                                                       "diagnosis", None],
                                            "category": [None, "nv"], "seed": [0, 1]}),
                              params={"num_inference_steps": 2, "height": 32, "width": 32})
    assert list(by_prompt["prompt"]) == list(out["prompt"])
    for key in ("image", "mask"):
        assert list(by_prompt[key]) == list(out[key])          # the same PNG bytes


def test_pointer_base_for_other_models(tmp_path):
    from components.generator import base_models
    from pipelines import pretrain

    metrics = pretrain.run(PretrainConfig(base_model="sd2-base-random", out_dir=str(tmp_path / "base"),
                                          metrics_file=str(tmp_path / "m.json")), reports_dir=tmp_path)
    assert metrics["pretrained"] is False
    assert json.loads((tmp_path / "base" / "base.json").read_text()) == {"base_model": "sd2-base-random"}
    assert base_models.resolve_ref(tmp_path / "base") == "sd2-base-random"
    with pytest.raises(ModelError, match="not a model folder, base.json pointer or hub id"):
        pretrain.run(PretrainConfig(base_model=str(tmp_path / "missing"), out_dir=str(tmp_path / "b2"),
                                    metrics_file=str(tmp_path / "m2.json")), reports_dir=tmp_path)
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(ModelError, match="missing component 'unet'"):
        pretrain.run(PretrainConfig(base_model=str(tmp_path / "partial"), out_dir=str(tmp_path / "b3"),
                                    metrics_file=str(tmp_path / "m3.json")), reports_dir=tmp_path)
    assert not (tmp_path / "b2").exists() and not (tmp_path / "b3").exists()


def test_gradient_checkpointing_gives_the_same_losses_and_cached_latents_train(stages, tmp_path):
    base = dataclasses.replace(stages["ft_cfg"], max_train_steps=2, register=False, log_every=1,
                               checkpoint_every=100, out_dir=str(tmp_path / "a"), checkpoint_dir=str(tmp_path / "ca"))
    plain = FinetuneTrainer(base, progress=False).run().history
    ckpt = FinetuneTrainer(dataclasses.replace(base, gradient_checkpointing=True, out_dir=str(tmp_path / "b")),
                           progress=False).run().history
    np.testing.assert_allclose([h["total"] for h in plain], [h["total"] for h in ckpt], rtol=1e-4)
    cached = FinetuneTrainer(dataclasses.replace(base, augment=False, cache_latents=True, out_dir=str(tmp_path / "c")),
                             progress=False)
    result = cached.run()
    assert cached.cached is not None and cached.cached[0].shape[0] == len(cached.dataset)
    assert len(result.history) == 2 and all(np.isfinite(h["total"]) for h in result.history)


def test_persistent_workers_reproduce_the_main_process_batches_and_compile_is_wired(stages, tmp_path):
    from components.generator import lora, runtime

    base = dataclasses.replace(stages["ft_cfg"], batch_size=8, max_train_steps=5, register=False, log_every=1,
                               checkpoint_every=100, out_dir=str(tmp_path / "a"), checkpoint_dir=str(tmp_path / "ca"))
    plain = FinetuneTrainer(base, progress=False)
    assert plain.steps_per_epoch < 5                    # the run crosses epoch boundaries
    workers = FinetuneTrainer(dataclasses.replace(base, num_workers=1, out_dir=str(tmp_path / "b")), progress=False)
    a, b = plain.run().history, workers.run().history
    np.testing.assert_allclose([h["total"] for h in a], [h["total"] for h in b], rtol=1e-5)

    assert not runtime.is_compiled(plain.unet)
    compiled = FinetuneTrainer(dataclasses.replace(base, compile=True, out_dir=str(tmp_path / "c")), progress=False)
    assert runtime.is_compiled(compiled.unet)           # compiled at its first forward, not run here (slow on CPU)
    assert list(lora.lora_state(compiled.unet)) == list(lora.lora_state(plain.unet))
    assert all(p.requires_grad for p in compiled.params)


def test_pretrain_reads_only_a_public_corpus_at_most_its_size(stages, tmp_path):
    from pipelines import pretrain

    cfg = PretrainConfig(corpus_dir=str(stages["data"]), out_dir=str(tmp_path / "base"),
                         metrics_file=str(tmp_path / "m.json"), resolution=32, vae_steps=1, unet_steps=1)
    with pytest.raises(DataError, match=r"source \['real'\]; pretrain trains only on the public corpus"):
        pretrain.run(cfg, reports_dir=tmp_path)
    too_large = dataclasses.replace(cfg, corpus_dir=str(stages["root"] / "public"), resolution=64)
    with pytest.raises(ConfigError, match=r"pretrain.resolution: 64 exceeds the corpus images \(32 px"):
        pretrain.run(too_large, reports_dir=tmp_path)
    assert not (tmp_path / "base").exists()
