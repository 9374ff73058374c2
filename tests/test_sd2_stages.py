"""The real Stable Diffusion 2 base architecture (`sd2-base-random`: SD 2 base configs, random weights) through
every generator stage on CPU, at 64 px (the smallest side its factor-8 VAE and 3-downsample UNet allow), and the
4-channel VAE round trip through save_pretrained / from_pretrained."""
from __future__ import annotations

import json
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import AutoencoderKL

from components.generator import presets
from components.generator.vae_surgery import expand_to_dual, is_dual

SD2 = "sd2-base-random"
SIZE = 64           # SD 2 VAE factor 8 → 8x8 latents, the smallest the UNet's 3 downsamplings accept


def test_adapted_sd2_vae_saves_and_reloads_identically(tmp_path):
    """A changed channel count is a known from_pretrained trap (size mismatch, or silently re-initialised layers):
    the surgically adapted SD 2 VAE must come back from its folder as the same 4-channel model."""
    torch.manual_seed(0)
    vae3 = AutoencoderKL(**presets.sd2_vae_config()).eval()
    dual = expand_to_dual(vae3).eval()
    dual.save_pretrained(tmp_path / "vae4", safe_serialization=True)
    assert json.loads((tmp_path / "vae4" / "config.json").read_text())["in_channels"] == 4

    reloaded = AutoencoderKL.from_pretrained(tmp_path / "vae4").eval()
    assert is_dual(reloaded) and reloaded.encoder.conv_in.weight.shape[1] == 4
    assert reloaded.decoder.conv_out.weight.shape[0] == 4
    want, got = dual.state_dict(), reloaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    x = torch.rand(1, 4, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        assert torch.equal(dual(x, sample_posterior=False).sample, reloaded(x, sample_posterior=False).sample)
        # the RGB path is still the original VAE's: a zero mask channel encodes to the same latent
        x[:, 3] = 0
        assert torch.allclose(dual.encode(x).latent_dist.mean, vae3.encode(x[:, :3]).latent_dist.mean, atol=1e-5)
    # loading it as a 3-channel VAE fails loudly instead of re-initialising the changed layers
    with pytest.raises(ValueError, match="conv_"):
        AutoencoderKL.from_pretrained(tmp_path / "vae4", in_channels=3, out_channels=3)


def test_pair_filter_switch_accepts_every_mask_and_keeps_old_records_valid():
    """`synthesize.pair_filter: false` is what lets random-weight runs (empty / full-frame masks) finish."""
    from components.generator.pair_filter import FilterConfig, check_mask
    from components.generator.synthesis_config import SynthesizeConfig

    off = SynthesizeConfig(pair_filter=False).filter()
    empty, full = np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8)
    assert check_mask(empty, FilterConfig()).reason == "empty_mask"
    assert check_mask(full, FilterConfig()).reason == "full_frame_mask"
    assert check_mask(empty, off).accepted and check_mask(full, off).accepted
    assert check_mask(full, off).area_fraction == 1.0            # still measured and recorded
    assert "enabled" not in FilterConfig().as_dict()              # specs of earlier records still match
    assert off.as_dict()["enabled"] is False                      # ... and switching it off regenerates


@pytest.mark.slow
def test_sd2_architecture_through_every_stage_on_cpu(tmp_path):
    """pretrain (pointer) → adapt_vae → finetune (mask losses on every step, registered) → synthesize (2 pairs,
    pair filter off) → quality → pyfunc load + predict, with the SD 2 base architecture at 64 px."""
    from components.config import load_section
    from components.data import manifest
    from components.data.toy import generate_toy
    from components.generator import lora as lora_lib
    from components.generator.config import AdaptVaeConfig, FinetuneConfig, PretrainConfig
    from components.generator.synthesis_config import SynthesizeConfig
    from components.quality.config import QualityConfig
    from components.tracking.generator_model import decode_png
    from pipelines import adapt_vae, finetune, pretrain, quality, synthesize

    times: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        times[name], clock[0] = now - clock[0], now

    data, base, vae4, lora = tmp_path / "real", tmp_path / "base", tmp_path / "vae4", tmp_path / "lora"
    reports = tmp_path / "reports"
    generate_toy(data, n_images=12, size=SIZE, seed=0, categories=("mel", "nv"), workers=1, progress=False)

    pre = pretrain.run(PretrainConfig(base_model=SD2, out_dir=str(base),
                                      metrics_file=str(tmp_path / "m/pretrain.json")), reports_dir=reports)
    assert pre["pretrained"] is False and json.loads((base / "base.json").read_text()) == {"base_model": SD2}

    lap("pretrain")
    ada = adapt_vae.run(AdaptVaeConfig(
        base_model=str(base), data_dir=str(data), out_dir=str(vae4), metrics_file=str(tmp_path / "m/ada.json"),
        resolution=SIZE, steps=2, batch_size=1, eval_batch_size=1, max_eval_images=1, log_every=1, device="cpu"),
        reports_dir=reports)
    assert (ada["in_channels"], ada["out_channels"]) == (4, 4) and ada["eval_images"] == 1
    assert np.isfinite(ada["rgb_psnr"]) and 0.0 <= ada["mask_dice"] <= 1.0
    vae_cfg = json.loads((vae4 / "config.json").read_text())
    assert vae_cfg["block_out_channels"] == [128, 256, 512, 512] and vae_cfg["in_channels"] == 4

    lap("adapt_vae")
    ft = finetune.run(FinetuneConfig(
        base_model=str(base), vae_dir=str(vae4), data_dir=str(data), descriptions_csv="", out_dir=str(lora),
        checkpoint_dir=str(tmp_path / "ckpt"), metrics_file=str(tmp_path / "m/ft.json"), resolution=SIZE,
        max_train_steps=2, batch_size=1, lr_warmup_steps=0, mask_loss_max_timestep=0, checkpoint_every=100,
        validation_steps=1, log_every=1, device="cpu"), reports_dir=reports)
    assert ft["steps"] == 2 and ft["registered_version"]
    assert all(np.isfinite(ft[k]) for k in ("final_mse", "final_bce", "final_dice"))   # mask losses ran
    assert lora_lib.read_meta(lora)["resolution"] == SIZE

    lap("finetune")
    params = tmp_path / "params.yaml"
    params.write_text("synthesize: {}\n")
    syn_cfg = load_section(SynthesizeConfig, "synthesize", params, [
        f"real_dir={data}", "descriptions_file=", f"base_dir={base}", f"vae_dir={vae4}", f"lora_dir={lora}",
        f"out_dir={tmp_path / 'synthetic'}", "mode=counts", "counts={mel: 1, nv: 1}", "prompt_source=template",
        "num_inference_steps=2", "batch_size=2", "max_attempts=1", "pair_filter=false", "device=cpu",
        "progress=false", f"metrics_file={tmp_path / 'm/syn.json'}", f"grid_file={reports / 'syn.png'}"])
    syn = synthesize.run(syn_cfg)
    assert (syn["planned"], syn["accepted"], syn["rejected"]) == (2, 2, 0) and syn["validation_success"] == 1
    df = manifest.read_manifest(syn_cfg.out_dir)
    assert set(df["width"]) == set(df["height"]) == {SIZE} and df["generator_version"].nunique() == 1

    lap("synthesize")
    q = quality.run(QualityConfig(
        real_dir=str(data), synthetic_dir=syn_cfg.out_dir, vae_dir=str(base), kid_subsets=2, pairs=4,
        class_pairs=2, min_class_samples=2, segmenter_size=32, segmenter_epochs=1, segmenter_batch_size=4,
        batch_size=4, device="cpu", progress=False, metrics_file=str(tmp_path / "m/quality.json"),
        report_dir=str(reports / "quality")))
    row = q["real_train_vs_synthetic_train"]
    assert q["feature_space"] == "vae" and np.isfinite(row["fd_vae"]) and q["image_size"] == SIZE

    lap("quality")
    model = mlflow.pyfunc.load_model(f"models:/skindualgen-generator/{ft['registered_version']}")
    out = model.predict(pd.DataFrame({"category": ["mel"], "seed": [3]}),
                        params={"num_inference_steps": 2, "guidance_scale": 1.5})
    image, mask = decode_png(out["image"][0]), decode_png(out["mask"][0])
    assert image.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
    assert out["generator_version"][0] == df["generator_version"].iloc[0] == ft["generator_version"]
    lap("pyfunc")
    print("sd2 stage seconds:", {k: round(v, 1) for k, v in times.items()},
          "mask area fractions:", df["area_fraction"].tolist())
