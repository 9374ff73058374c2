"""Training of the 4-channel VAE's new mask path after channel surgery (the `adapt_vae` stage).

Trainable: the mask slice of encoder.conv_in, the mask filter of decoder.conv_out and, by `train_decoder`, the
decoder's last up block + output norm ('last_block') or a LoRA on that block's convolutions ('lora', merged
into the weights before saving). RGB slices stay exactly as they were (their gradients are zeroed and the
optimiser has no weight decay). Loss: λ_bce·BCE + λ_dice·Dice on the decoded mask logits + λ_rgb·MSE between
the new RGB output and the original VAE's reconstruction, so RGB decoding is preserved. With probability
`mask_input_dropout` a sample is encoded with its mask channel zeroed (its latent is then exactly the RGB
latent), which teaches the decoder to find the lesion from the image content too: generated latents then
decode to a mask that follows the lesion visible in the generated image.

The stage sees the clinical training split only: `eval_split` holds out a seeded, stratified share of it, which
is evaluated on and never trained on (the validation and test splits stay unseen by the generator).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch.utils.data import DataLoader, RandomSampler

from components.data.splits import stratified_split
from components.data.torch_dataset import PairDataset
from components.data.transforms import build_transforms, dihedral
from components.device import resolve_device
from components.generator import losses, runtime
from components.generator.base_models import vae_factor
from components.generator.config import AdaptVaeConfig, check_resolution
from components.generator.vae_surgery import MASK_CHANNEL, expand_to_dual, keep_rows_frozen, split_output, to_vae_input
from components.progress import progress_bar

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass
class AdaptResult:
    vae: AutoencoderKL
    metrics: dict[str, float]
    grid_rows: list = field(default_factory=list)


def trainable_parameters(dual: AutoencoderKL, train_decoder: str,
                         lora_rank: int = 8) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Unfreeze the mask path of a freshly expanded VAE (see module docstring).

    Returns (new-channel parameters, decoder parameters): the new channels start from scratch and take the full
    learning rate, the pretrained decoder block (or its LoRA) is only nudged.
    """
    dual.requires_grad_(False)
    params: list[torch.nn.Parameter] = []
    decoder: list[torch.nn.Parameter] = []
    conv_in, conv_out = dual.encoder.conv_in, dual.decoder.conv_out
    conv_in.weight.requires_grad_(True)
    keep_rows_frozen(conv_in.weight, slice(0, MASK_CHANNEL), dim=1)
    conv_out.weight.requires_grad_(True)
    conv_out.bias.requires_grad_(True)
    keep_rows_frozen(conv_out.weight, slice(0, MASK_CHANNEL), dim=0)
    keep_rows_frozen(conv_out.bias, slice(0, MASK_CHANNEL), dim=0)
    params += [conv_in.weight, conv_out.weight, conv_out.bias]
    if train_decoder == "last_block":
        for module in (dual.decoder.up_blocks[-1], dual.decoder.conv_norm_out):
            module.requires_grad_(True)
            decoder += list(module.parameters())
    elif train_decoder == "lora":
        from peft import LoraConfig

        last = len(dual.decoder.up_blocks) - 1
        dual.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian",
                                    target_modules=rf"decoder\.up_blocks\.{last}\.resnets\.\d+\.conv[12]"))
        decoder += [p for n, p in dual.named_parameters() if "lora_" in n]
    return params, decoder


def finalize(dual: AutoencoderKL, train_decoder: str) -> AutoencoderKL:
    """Merge a decoder LoRA into the weights (a plain AutoencoderKL remains) and freeze everything."""
    if train_decoder == "lora":
        dual.fuse_lora()
        dual.unload_lora()
    return dual.eval().requires_grad_(False)


def _forever(loader: DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


@torch.no_grad()
def evaluate(dual: AutoencoderKL, original: AutoencoderKL, loader: DataLoader, device: torch.device,
             limit: int = 0) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Held-out metrics: mask Dice (mask encoded / RGB only), RGB PSNR of the new and of the original VAE."""
    sums = {"mask_dice": 0.0, "mask_dice_rgb_only": 0.0, "rgb_psnr": 0.0, "rgb_psnr_base": 0.0}
    n = 0
    first: dict[str, torch.Tensor] = {}
    for batch in loader:
        image, mask = batch["image"].to(device), batch["mask"].to(device)
        x = to_vae_input(image, mask)
        rgb, logits = split_output(dual.decode(dual.encode(x).latent_dist.mode()).sample)
        x_rgb_only = x.clone()
        x_rgb_only[:, MASK_CHANNEL] = 0
        _, logits_rgb = split_output(dual.decode(dual.encode(x_rgb_only).latent_dist.mode()).sample)
        base = ((original.decode(original.encode(x[:, :3]).latent_dist.mode()).sample + 1) / 2).clamp(0, 1)
        pred = (torch.sigmoid(logits) > 0.5).float()
        sums["mask_dice"] += float(losses.dice_score(pred, mask).sum())
        sums["mask_dice_rgb_only"] += float(losses.dice_score((torch.sigmoid(logits_rgb) > 0.5).float(), mask).sum())
        sums["rgb_psnr"] += float(losses.psnr(rgb, image).sum())
        sums["rgb_psnr_base"] += float(losses.psnr(base, image).sum())
        if not first:
            first = {"image": image.cpu(), "mask": mask.cpu(), "rgb": rgb.cpu(), "pred": pred.cpu(),
                     "pred_rgb_only": (torch.sigmoid(logits_rgb) > 0.5).float().cpu()}
        n += len(image)
        if limit and n >= limit:
            break
    metrics = {k: v / max(n, 1) for k, v in sums.items()}
    metrics["eval_images"] = n
    return metrics, first


def eval_split(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to train on, held-out rows): a seeded share `fraction` of the training split, stratified by class."""
    held = (stratified_split(train["category"], fraction, seed) == "test").to_numpy()
    return train[~held].reset_index(drop=True), train[held].reset_index(drop=True)


def adapt_vae(vae3: AutoencoderKL, data_dir: str, train: pd.DataFrame, held_out: pd.DataFrame,
              categories: list[str], cfg: AdaptVaeConfig,
              on_metrics: runtime.MetricsCallback | None = None) -> AdaptResult:
    """Channel surgery on `vae3` and training of the mask path on `train`; returns the adapted VAE and the
    metrics on `held_out` (rows it does not train on)."""
    device = resolve_device(cfg.device)
    # The order below (seeding, surgery, LoRA init, loaders, training, evaluation) fixes the torch RNG sequence.
    runtime.seed_everything(cfg.seed)
    check_resolution(cfg.resolution, vae_factor(vae3), "adapt_vae")
    t0 = time.perf_counter()
    original = vae3.to(device).eval().requires_grad_(False)
    dual = expand_to_dual(copy.deepcopy(original)).to(device)
    params, opt, sched = _optimiser(dual, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader, eval_loader = _loaders(data_dir, train, held_out, categories, cfg, gen)
    _train(dual, original, train_loader, opt, sched, params, gen, cfg, device, on_metrics)
    t_train = time.perf_counter()
    dual = finalize(dual, cfg.train_decoder)
    metrics, first = evaluate(dual, original, eval_loader, device, cfg.max_eval_images)
    metrics.update(seconds_train=t_train - t0, seconds_total=time.perf_counter() - t0,
                   trainable_params=sum(p.numel() for p in params), train_images=len(train))
    return AdaptResult(vae=dual.to("cpu"), metrics=metrics, grid_rows=_grid_rows(first))


def _optimiser(dual: AutoencoderKL, cfg: AdaptVaeConfig) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer,
                                                                 torch.optim.lr_scheduler.LRScheduler]:
    """Trainable parameters, AdamW (new channels and decoder at their own learning rates) and the LR schedule."""
    new, decoder = trainable_parameters(dual, cfg.train_decoder, cfg.decoder_lora_rank)
    groups = [{"params": new, "lr": cfg.learning_rate}]
    if decoder:
        groups.append({"params": decoder, "lr": cfg.decoder_learning_rate})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(25, cfg.steps // 10), cfg.steps)
    return new + decoder, opt, sched


def _loaders(data_dir: str, train: pd.DataFrame, held_out: pd.DataFrame, categories: list[str], cfg: AdaptVaeConfig,
             gen: torch.Generator) -> tuple[DataLoader, DataLoader]:
    """Train loader of exactly cfg.steps batches (seeded sampling with replacement) and the held-out loader."""
    transform = build_transforms("generator", cfg.resolution, train=False)
    train_loader = DataLoader(PairDataset(data_dir, train, transform, categories), batch_size=cfg.batch_size,
                              sampler=RandomSampler(range(len(train)), replacement=True,
                                                    num_samples=cfg.steps * cfg.batch_size, generator=gen),
                              drop_last=True)
    eval_loader = DataLoader(PairDataset(data_dir, held_out, transform, categories), batch_size=cfg.eval_batch_size)
    return train_loader, eval_loader


def _train(dual: AutoencoderKL, original: AutoencoderKL, loader: DataLoader, opt: torch.optim.Optimizer,
           sched: torch.optim.lr_scheduler.LRScheduler, params: list[torch.nn.Parameter], gen: torch.Generator,
           cfg: AdaptVaeConfig, device: torch.device, on_metrics: runtime.MetricsCallback | None) -> None:
    """cfg.steps optimiser steps on `dual`; mean losses are reported every cfg.log_every steps and at the end."""
    dual.train()
    running = torch.zeros(4, device=device)
    bar = progress_bar(zip(range(cfg.steps), _forever(loader)), total=cfg.steps, desc="adapt vae", unit="step")
    for step, batch in bar:
        loss, parts = _batch_losses(dual, original, batch, gen, cfg, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running += parts
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            _report(running, step + 1, cfg, bar, on_metrics)


def _batch_losses(dual: AutoencoderKL, original: AutoencoderKL, batch: dict, gen: torch.Generator,
                  cfg: AdaptVaeConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted loss of one batch and its detached parts (total, bce, dice, rgb).

    Augmentation and mask dropout draw from `gen`; the latent sample draws from the global torch RNG.
    """
    image, mask = batch["image"].to(device), batch["mask"].to(device)
    if cfg.augment:
        k = int(torch.randint(8, (1,), generator=gen))
        image, mask = dihedral(image, k), dihedral(mask, k)
    x = to_vae_input(image, mask)
    drop = torch.rand(len(x), generator=gen) < cfg.mask_input_dropout
    x[drop.to(device), MASK_CHANNEL] = 0
    with torch.no_grad():
        target_rgb = original.decode(original.encode(x[:, :3]).latent_dist.mode()).sample
    decoded = dual.decode(dual.encode(x).latent_dist.sample()).sample
    logits = decoded[:, MASK_CHANNEL:MASK_CHANNEL + 1]
    bce = losses.bce_per_sample(logits, mask).mean()
    dice = losses.dice_per_sample(logits, mask).mean()
    rgb = F.mse_loss(decoded[:, :3].float(), target_rgb.float())
    loss = cfg.lambda_bce * bce + cfg.lambda_dice * dice + cfg.lambda_rgb * rgb
    return loss, torch.stack([loss.detach(), bce.detach(), dice.detach(), rgb.detach()])


def _report(running: torch.Tensor, done: int, cfg: AdaptVaeConfig, bar: tqdm,
            on_metrics: runtime.MetricsCallback | None) -> None:
    """Report the mean losses accumulated in `running` since the last report (after `done` steps); reset it."""
    n = cfg.log_every if done % cfg.log_every == 0 else done % cfg.log_every
    total, bce_v, dice_v, rgb_v = (running / n).tolist()
    running.zero_()
    bar.set_postfix(loss=f"{total:.4f}", dice=f"{dice_v:.3f}")
    if on_metrics:
        on_metrics({"loss": total, "bce": bce_v, "dice_loss": dice_v, "rgb_mse": rgb_v}, done)


def _u8(t: torch.Tensor) -> np.ndarray:
    """A CHW image (3 channels) or 1HW mask in [0, 1] as uint8 HWC / HW."""
    arr = t.permute(1, 2, 0).numpy() if t.shape[0] == 3 else t[0].numpy()
    return (arr * 255).round().astype(np.uint8)


def _grid_rows(first: dict[str, torch.Tensor], n: int = 6) -> list:
    """Report-grid rows for the first `n` held-out images: inputs, decoded RGB and decoded masks."""
    return [(f"held-out {i}", [("image", _u8(first["image"][i])), ("true mask", _u8(first["mask"][i])),
                               ("decoded RGB", _u8(first["rgb"][i])), ("decoded mask", _u8(first["pred"][i])),
                               ("mask, RGB-only latent", _u8(first["pred_rgb_only"][i]))])
            for i in range(min(n, len(first.get("image", []))))]
