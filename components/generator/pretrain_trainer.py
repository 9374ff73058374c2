"""Pretraining of the `tiny` base model from scratch on the public corpus: 3-channel VAE, then UNet + text encoder.

The offline stand-in for a public Stable Diffusion checkpoint, trained on the stand-in for what such a model saw:
the public-like corpus (components/data/public_corpus.py, the `corpus` stage), never the clinical data. The
tokenizer is trained on the corpus captions; the VAE learns to reconstruct the corpus training images (MSE + a
small KL), its latent scale is fitted so latents have unit variance (the `scaling_factor` of the saved config),
then the UNet learns the diffusion objective on the VAE latents conditioned on the captions (some dropped for
classifier-free guidance). Reconstructions and samples are evaluated on the corpus holdout split.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup

from components.data import manifest
from components.data.prompts import template_prompt
from components.data.public_corpus import HOLDOUT_SPLIT, PUBLIC_SOURCE
from components.data.torch_dataset import PairDataset
from components.data.transforms import build_transforms, dihedral
from components.device import resolve_device
from components.errors import ConfigError, DataError
from components.generator import base_models, losses, runtime
from components.generator.config import PretrainConfig, check_resolution
from components.generator.sampling import ddim_sample, initial_noise
from components.generator.tokenizer import pieces_per_word, train_tokenizer
from components.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    model: base_models.BaseModel
    metrics: dict[str, float]
    recon_rows: list = field(default_factory=list)    # (label, [(title, array), ...]) for pair_grid
    sample_rows: list = field(default_factory=list)


def train_vae(vae, images: torch.Tensor, cfg: PretrainConfig, device: torch.device,
              on_metrics: runtime.MetricsCallback | None = None) -> list[float]:
    """Train the 3-channel VAE on images Nx3xHxW in [0, 1]; returns the per-step losses."""
    vae.to(device).train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_learning_rate, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(50, cfg.vae_steps // 10), cfg.vae_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[float] = []
    running = torch.zeros(3, device=device)
    bar = progress_bar(range(cfg.vae_steps), desc="pretrain vae", unit="step")
    for step in bar:
        idx = torch.randint(len(images), (cfg.vae_batch_size,), generator=gen)
        x = dihedral(images[idx], int(torch.randint(8, (1,), generator=gen)))
        if 0 < cfg.vae_crop < x.shape[-1]:
            top, left = (int(v) for v in torch.randint(x.shape[-1] - cfg.vae_crop + 1, (2,), generator=gen))
            x = x[..., top:top + cfg.vae_crop, left:left + cfg.vae_crop]
        x = x.to(device) * 2 - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=None)).sample
        mse = F.mse_loss(recon, x)
        kl = losses.kl_per_sample(posterior.mean, posterior.logvar).mean()
        loss = mse + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        running += torch.stack([loss.detach(), mse.detach(), kl.detach()])
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.vae_steps:
            n = cfg.log_every if (step + 1) % cfg.log_every == 0 else (step + 1) % cfg.log_every
            total, mse_v, kl_v = (running / n).tolist()
            running.zero_()
            history.append(total)
            bar.set_postfix(loss=f"{total:.4f}")
            if on_metrics:
                on_metrics({"vae_loss": total, "vae_mse": mse_v, "vae_kl": kl_v}, step + 1)
    vae.eval().requires_grad_(False)
    return history


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, device: torch.device, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and log-variance (unscaled) of every image, on CPU."""
    means, logvars = [], []
    for i in range(0, len(images), batch_size):
        dist = vae.encode(images[i:i + batch_size].to(device) * 2 - 1).latent_dist
        means.append(dist.mean.cpu())
        logvars.append(dist.logvar.cpu())
    return torch.cat(means), torch.cat(logvars)


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = images.to(device) * 2 - 1
    return ((vae.decode(vae.encode(x).latent_dist.mode()).sample + 1) / 2).clamp(0, 1).cpu()


def train_unet(model: base_models.BaseModel, mean: torch.Tensor, logvar: torch.Tensor, prompt_ids: torch.Tensor,
               empty_ids: torch.Tensor, cfg: PretrainConfig, device: torch.device,
               on_metrics: runtime.MetricsCallback | None = None) -> list[float]:
    """Diffusion training of the UNet (and text encoder) on scaled VAE latents and their captions (EMA)."""
    unet, text_encoder, sched_cfg = model.unet, model.text_encoder, model.noise_scheduler
    unet.to(device).train().requires_grad_(True)
    text_encoder.to(device).train().requires_grad_(cfg.train_text_encoder)
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if cfg.train_text_encoder else [])
    opt = torch.optim.AdamW(params, lr=cfg.unet_learning_rate, weight_decay=1e-2)
    sched = get_cosine_schedule_with_warmup(opt, min(100, cfg.unet_steps // 10), cfg.unet_steps)
    scale = float(model.vae.config.scaling_factor)
    alphas = sched_cfg.alphas_cumprod
    n_train = int(sched_cfg.config.num_train_timesteps)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    history: list[float] = []
    ema = [p.detach().clone() for p in params] if cfg.ema_decay > 0 else None
    running = torch.zeros((), device=device)
    bar = progress_bar(range(cfg.unet_steps), desc="pretrain unet", unit="step")
    for step in bar:
        idx = torch.randint(len(mean), (cfg.unet_batch_size,), generator=gen)
        eps = torch.randn(mean[idx].shape, generator=gen)
        latents = (mean[idx] + (0.5 * logvar[idx]).exp() * eps) * scale
        latents = dihedral(latents, int(torch.randint(8, (1,), generator=gen))).to(device)
        ids = prompt_ids[idx].clone()
        ids[torch.rand(len(idx), generator=gen) < cfg.prompt_dropout] = empty_ids   # classifier-free guidance
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = torch.randint(0, n_train, (len(idx),), generator=gen).to(device)
        noisy = sched_cfg.add_noise(latents, noise, t)
        context = text_encoder(ids.to(device))[0]
        pred = unet(noisy, t, encoder_hidden_states=context).sample
        target = losses.diffusion_target(latents, noise, t, alphas, model.prediction_type)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
        if cfg.snr_gamma > 0:
            per_sample = per_sample * losses.min_snr_weights(t, alphas, cfg.snr_gamma, model.prediction_type)
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            # EMA with warm-up: early weights are forgotten quickly.
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        running += loss.detach()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.unet_steps:
            n = cfg.log_every if (step + 1) % cfg.log_every == 0 else (step + 1) % cfg.log_every
            value = float(running) / n
            running.zero_()
            history.append(value)
            bar.set_postfix(loss=f"{value:.4f}")
            if on_metrics:
                on_metrics({"unet_loss": value, "unet_lr": sched.get_last_lr()[0]}, step + 1)
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return history


@torch.no_grad()
def sample_images(model: base_models.BaseModel, prompts: list[str], seeds: list[int], steps: int,
                  guidance_scale: float, device: torch.device) -> np.ndarray:
    """RGB samples (N x H x W x 3 uint8) from a 3-channel base model with DDIM."""
    unet, vae = model.unet.to(device), model.vae.to(device)
    size = unet.config.sample_size
    noise = initial_noise(seeds, (unet.config.in_channels, size, size)).to(device)
    cond = runtime.encode_prompts(model.text_encoder.to(device), model.tokenizer, prompts, device)
    uncond = runtime.encode_prompts(model.text_encoder, model.tokenizer, [""] * len(prompts), device)
    scheduler = DDIMScheduler.from_config(model.noise_scheduler.config)
    latents = ddim_sample(unet, scheduler, cond, uncond, noise, steps, guidance_scale)
    rgb = ((vae.decode(latents / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


MAX_EVAL_IMAGES = 256


def load_corpus(corpus_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The corpus's training and holdout rows and its classes; DataError unless it is a public corpus folder."""
    df = manifest.read_manifest(corpus_dir)
    where = manifest.manifest_file(corpus_dir)
    foreign = sorted(set(df["source"].astype(str)) - {PUBLIC_SOURCE})
    if foreign:
        raise DataError(f"{where}: rows with source {foreign}; pretrain trains only on the public corpus "
                        f"(source '{PUBLIC_SOURCE}', written by the `corpus` stage), never on the clinical data. "
                        f"Set pretrain.corpus_dir to the corpus folder (data/public)")
    parts = {}
    for split in ("train", HOLDOUT_SPLIT):
        parts[split] = df[df["split"] == split].reset_index(drop=True)
        if parts[split].empty:
            raise DataError(f"{where}: no rows with split '{split}'; re-run the `corpus` stage "
                            f"(dvc repro corpus) to write a complete corpus")
    return parts["train"], parts[HOLDOUT_SPLIT], manifest.read_categories(corpus_dir, df)


def load_images(root: str | Path, df: pd.DataFrame, resolution: int, categories: list[str]) -> torch.Tensor:
    """Rows' images resized to `resolution` (no augmentation): N x 3 x R x R in [0, 1]."""
    pairs = PairDataset(root, df, build_transforms("generator", resolution, train=False), categories=categories,
                        require_mask=False)
    return torch.stack([pairs[i]["image"] for i in range(len(pairs))])


def _check_corpus_size(cfg: PretrainConfig, train: pd.DataFrame) -> None:
    side = int(min(train["width"].min(), train["height"].min()))
    if cfg.resolution > side:
        raise ConfigError(f"pretrain.resolution: {cfg.resolution} exceeds the corpus images ({side} px in "
                          f"{cfg.corpus_dir}); raise corpus.size to {cfg.resolution} or lower pretrain.resolution")


def pretrain_tiny(cfg: PretrainConfig, on_metrics: runtime.MetricsCallback | None = None) -> PretrainResult:
    """Train the tiny preset from scratch on the corpus's training split; returns the model and holdout metrics."""
    device = resolve_device(cfg.device)
    runtime.seed_everything(cfg.seed)
    t0 = time.perf_counter()
    train, holdout, categories = load_corpus(cfg.corpus_dir)
    _check_corpus_size(cfg, train)
    captions = train["description"].astype(str).tolist()
    tokenizer = train_tokenizer(captions, vocab_size=cfg.tokenizer_vocab_size)
    model = base_models.build_preset("tiny", tokenizer, resolution=cfg.resolution, seed=cfg.seed)
    check_resolution(cfg.resolution, model.vae_factor, "pretrain")
    images = load_images(cfg.corpus_dir, train, cfg.resolution, categories)
    eval_rows = holdout.iloc[:MAX_EVAL_IMAGES]
    eval_images = load_images(cfg.corpus_dir, eval_rows, cfg.resolution, categories)
    t_data = time.perf_counter()

    def tagged(prefix: str):
        return (lambda values, step: on_metrics({f"{prefix}/{k}": v for k, v in values.items()}, step)) \
            if on_metrics else None

    vae_history = train_vae(model.vae, images, cfg, device, tagged("pretrain_vae"))
    mean, logvar = encode_dataset(model.vae, images, device)
    std = float(mean.std())
    model.vae.register_to_config(scaling_factor=1.0 / std)
    recon = reconstruct(model.vae, eval_images, device)
    holdout_psnr = float(losses.psnr(recon, eval_images).mean())
    t_vae = time.perf_counter()

    prompt_ids = runtime.tokenize(tokenizer, captions)
    empty_ids = runtime.tokenize(tokenizer, [""])[0]
    unet_history = train_unet(model, mean, logvar, prompt_ids, empty_ids, cfg, device, tagged("pretrain_unet"))
    t_unet = time.perf_counter()

    recon_rows, sample_rows = _grids(model, eval_rows, eval_images, recon, categories, cfg, device)
    model.to("cpu")
    metrics = {
        "vae_final_loss": vae_history[-1], "vae_holdout_psnr": holdout_psnr, "scaling_factor": 1.0 / std,
        "unet_final_loss": float(np.mean(unet_history[-3:])), "train_images": len(train),
        "holdout_images": len(eval_rows),
        # How the caption-trained tokenizer splits the paper's class prompts (1.0: one token per word).
        "template_pieces_per_word": pieces_per_word(tokenizer, [template_prompt(c) for c in categories]),
        "seconds_data": t_data - t0, "seconds_vae": t_vae - t_data, "seconds_unet": t_unet - t_vae,
        "seconds_total": time.perf_counter() - t0,
        **{k: v for k, v in base_models.describe(model).items() if isinstance(v, (int, float))},
    }
    return PretrainResult(model=model, metrics=metrics, recon_rows=recon_rows, sample_rows=sample_rows)


def _grids(model: base_models.BaseModel, eval_rows: pd.DataFrame, eval_images: torch.Tensor, recon: torch.Tensor,
           categories: list[str], cfg: PretrainConfig, device: torch.device) -> tuple[list, list]:
    """Report grids from the holdout: 8 images and their reconstructions; 3 samples of one caption per class."""
    def u8(t: torch.Tensor) -> np.ndarray:
        return (t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    n_show = min(8, len(eval_images))
    recon_rows = [("original", [(f"{i}", u8(eval_images[i])) for i in range(n_show)]),
                  ("reconstruction", [(f"{i}", u8(recon[i])) for i in range(n_show)])]
    firsts = [eval_rows[eval_rows["category"] == c].iloc[0] for c in categories if (eval_rows["category"] == c).any()]
    prompts = [str(r["description"]) for r in firsts]
    samples = sample_images(model, [p for p in prompts for _ in range(3)], [s for _ in prompts for s in range(3)],
                            cfg.sample_steps, 1.22, device)
    sample_rows = [(f"{r['category']}: {p[:32]}", [(f"seed {s}", samples[i * 3 + s]) for s in range(3)])
                   for i, (r, p) in enumerate(zip(firsts, prompts))]
    return recon_rows, sample_rows
