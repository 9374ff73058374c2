"""LoRA fine-tuning of the UNet on 4-channel (RGB + mask) latents with the multi-objective loss (paper eq. 8).

    L = λ1·MSE(ε̂ or v̂, target) + λ2·BCE(mask) + λ3·Dice(mask)

The mask terms need mask logits: x̂0 is predicted from the UNet output with the scheduler's ᾱ_t, decoded by
the frozen adapted decoder, and channel 4 is compared with the true mask. They are gated/weighted by timestep
(`mask_loss_max_timestep`, `mask_loss_weighting`). Timesteps, prompt dropout and the gate are drawn on the
host, so the trainer knows which samples to decode without waiting on the device; losses are accumulated on
the device and read every `log_every` steps. On CUDA: channels_last modules, pinned batches copied with
non_blocking, persistent loader workers, and optionally a torch.compile'd UNet (`compile`).

Randomness per sample: a sample's augmentation, latent sample, diffusion noise, timestep and prompt dropout are
drawn from its own seed (EpochBatches: from seed, epoch and position in the epoch; `data.sample_generator`),
never from a stream shared by the batch. What a sample sees therefore does not depend on the batch size, the
number of processes, the device or the loader workers.

Data-parallel (components/generator/distributed_training.py): under `accelerate launch`, `torchrun` or a Ray
Train TorchTrainer each of N processes trains a disjoint shard of every global batch (batch_size × N ×
gradient_accumulation_steps samples, one optimiser step), the LoRA gradients are averaged over the processes
before clipping and AdamW, and only rank 0 reports (on_metrics, on_validation) and writes checkpoints and the
LoRA. Gradient accumulation works the same in one process. Runs with the same global batch train the same
samples at every step and reach the same weights up to float rounding.

Resumable: checkpoints hold LoRA + optimiser + LR scheduler + RNG states + position + loss history; positions
count optimiser steps (global batches), so a checkpoint resumes under another number of processes or
accumulation steps as long as the global batch is the same, and reproduces the uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_scheduler
from diffusers.training_utils import cast_training_params
from torch.utils.data import DataLoader

from components.config import to_dict
from components.data.manifest import read_categories
from components.data.prompts import template_prompt
from components.data.torch_dataset import loader_kwargs
from components.device import resolve_device
from components.errors import ModelError
from components.generator import checkpoints, losses, runtime
from components.generator import distributed_training as ddp
from components.generator import lora as lora_lib
from components.generator.base_models import TRAIN_SHARE_OF_NATIVE, BaseModel, below_native, load_base, vae_factor
from components.generator.config import FinetuneConfig, check_resolution
from components.generator.data import EpochBatches, SeededPairs, batches_per_epoch, load_split, sample_generator
from components.generator.folders import staged_dir
from components.generator.sampling import DualGenerator, load_dual_vae
from components.generator.vae_surgery import MASK_CHANNEL, to_vae_input
from components.progress import progress_bar

log = logging.getLogger(__name__)

LOSS_NAMES = ("mse", "bce", "dice", "total")
# Settings a checkpoint must share with the run that resumes it.
# The global batch (batch_size × processes × gradient_accumulation_steps) must match too; how it is split may change.
RESUME_KEYS = ("lora_rank", "lora_alpha", "target_modules", "resolution", "seed", "base_model",
               "augment", "learning_rate", "lambda_diffusion", "lambda_bce", "lambda_dice")

ValidationCallback = Callable[[int, list], None]


@dataclass
class FinetuneResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    lora_dir: Path | None = None
    validation_rows: list = field(default_factory=list)


class FinetuneTrainer:
    """Set up from a FinetuneConfig; `run()` trains, checkpoints, validates and saves the LoRA."""

    def __init__(self, cfg: FinetuneConfig, on_metrics: runtime.MetricsCallback | None = None,
                 on_validation: ValidationCallback | None = None, progress: bool = True):
        self.cfg = cfg
        self.on_metrics, self.on_validation, self.progress = on_metrics, on_validation, progress
        # Under a data-parallel launcher: join the process group, one GPU per process (no-op for one process).
        self.dist, self.device = ddp.setup(resolve_device(cfg.device))
        self.is_main = self.dist.is_main
        self.dtype = runtime.weight_dtype(cfg.mixed_precision, self.device)
        runtime.seed_everything(cfg.seed)

        self.base: BaseModel = load_base(cfg.base_model)
        self.vae = load_dual_vae(cfg.vae_dir)
        self.factor = vae_factor(self.vae)
        check_resolution(cfg.resolution, self.factor, "finetune")
        warning = below_native("finetune.resolution", cfg.resolution, self.base.unet.config.sample_size, self.factor,
                               TRAIN_SHARE_OF_NATIVE)
        if warning:
            log.warning(warning)
        if self.factor != self.base.vae_factor:
            raise ModelError(f"{cfg.vae_dir}: the adapted VAE downsamples by {self.factor} but the base model's VAE "
                             f"by {self.base.vae_factor}; re-run adapt_vae on this base model ({cfg.base_model})")
        self.unet, self.text_encoder, self.tokenizer = self.base.unet, self.base.text_encoder, self.base.tokenizer
        self.noise_scheduler = self.base.noise_scheduler
        self.alphas = self.noise_scheduler.alphas_cumprod.float().clone()  # CPU copy for host-side weights
        self.alphas_dev = self.alphas.to(self.device)
        self.scale = float(self.vae.config.scaling_factor)
        self.latent_channels = int(self.vae.config.latent_channels)

        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False)
            module.to(self.device, dtype=self.dtype)
            module.eval()
        if runtime.use_channels_last(cfg.channels_last, self.device):
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        self.params = lora_lib.add_lora(self.unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules)
        cast_training_params(self.unet, dtype=torch.float32)   # LoRA weights in fp32 over a bf16/fp16 base
        if cfg.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()   # the mask loss backpropagates through the decoder
        runtime.maybe_compile(self.unet, cfg.compile)   # in place: LoRA state and checkpoints keep their keys
        self._offset_global_rng(0)

        self.train_df = load_split(cfg.data_dir, "train", cfg.descriptions_csv, stage="finetune")
        self.categories = read_categories(cfg.data_dir, self.train_df)
        self.dataset = SeededPairs(cfg.data_dir, self.train_df, cfg.resolution, cfg.augment, self.categories)
        # The text encoder is frozen: tokenise every prompt once, keep the ids on the device.
        self.prompt_ids = runtime.tokenize(self.tokenizer, self.dataset.prompts).to(self.device)
        self.empty_ids = runtime.tokenize(self.tokenizer, [""]).to(self.device)
        self.accumulation = cfg.gradient_accumulation_steps
        self.global_batch = cfg.batch_size * self.dist.world_size * self.accumulation
        self.steps_per_epoch = batches_per_epoch(len(self.dataset), cfg.batch_size, self.dist.world_size,
                                                 self.accumulation)
        self.total_steps = cfg.max_train_steps or cfg.epochs * self.steps_per_epoch
        self.n_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.adam_weight_decay)
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                          num_training_steps=self.total_steps)
        # Per-sample seeds for batches that bring none (train_step on a hand-made batch); run() never uses it.
        self.noise_gen = torch.Generator("cpu").manual_seed(cfg.seed + 1)
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None

        self.global_step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.history: list[dict[str, float]] = []
        self.resumed_from: Path | None = None

    # --------------------------------------------------------------------------------- resume / save
    def _generators(self) -> dict[str, torch.Generator]:
        return {"noise": self.noise_gen}

    def _offset_global_rng(self, step: int) -> None:
        """Ranks > 0 get their own global torch stream (only LoRA dropout draws from it): identical dropout masks
        on every process would correlate the shards. Rank 0 keeps the single-process stream."""
        if self.dist.rank:
            torch.manual_seed(int(np.random.SeedSequence([self.cfg.seed, self.dist.rank, step]).generate_state(1)[0]))

    def maybe_resume(self) -> None:
        path = checkpoints.resolve_resume(self.cfg.checkpoint_dir, self.cfg.resume)
        if path is None:
            return
        lora, state, meta = checkpoints.load_checkpoint(path)
        checkpoints.check_compatible(meta, to_dict(self.cfg), RESUME_KEYS, path)
        checkpoints.check_global_batch(meta, self.global_batch, self._split(), path)
        lora_lib.set_lora_state(self.unet, {k: v.to(self.device) for k, v in lora.items()})
        cast_training_params(self.unet, dtype=torch.float32)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        rng = dict(state["rng"])
        if not meta.get("per_sample_seeds"):
            log.warning("%s was written before per-sample noise seeds: weights, optimiser and position resume, the "
                        "noise of the remaining steps differs from what that run would have drawn", path)
            rng.pop("generators", None)
        if len(rng.get("cuda", [])) != (torch.cuda.device_count() if torch.cuda.is_available() else 0):
            rng.pop("cuda", None)       # written where another number of GPUs was visible
        runtime.set_rng_state(rng, self._generators())
        self.global_step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        self._offset_global_rng(self.global_step)
        self.history = [dict(zip(("step", *LOSS_NAMES), row)) for row in meta["loss_history"]]
        self.resumed_from = path
        log.info("resumed from %s (step %d, epoch %d)", path, self.global_step, self.epoch)

    def _split(self) -> str:
        return (f"batch_size {self.cfg.batch_size} × {self.dist.world_size} process(es) × "
                f"gradient_accumulation_steps {self.accumulation}")

    def save_checkpoint(self) -> Path | None:
        """checkpoint-<step> under cfg.checkpoint_dir, written by rank 0 (other ranks: None)."""
        if not self.is_main:
            return None
        meta = {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "config": to_dict(self.cfg),
                "global_batch_size": self.global_batch, "world_size": self.dist.world_size,
                "per_sample_seeds": True,
                "loss_history": [[h["step"], *(h[k] for k in LOSS_NAMES)] for h in self.history]}
        state = {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
                 "rng": runtime.rng_state(self._generators())}
        return checkpoints.save_checkpoint(self.cfg.checkpoint_dir, self.global_step, lora_lib.lora_state(self.unet),
                                           state, meta, self.cfg.checkpoints_total_limit)

    def save_lora(self) -> Path:
        """Final LoRA into cfg.out_dir, written beside it and swapped in whole (by rank 0 only)."""
        if not self.is_main:
            return Path(self.cfg.out_dir)
        with staged_dir(self.cfg.out_dir) as tmp:
            lora_lib.save_lora(self.unet, tmp, {
                "resolution": self.cfg.resolution, "base_model": self.base.ref, "base_identity": self.base.identity,
                "vae_dir": str(self.cfg.vae_dir), "prediction_type": self.base.prediction_type,
                "steps": self.global_step, "categories": self.categories})
        out = Path(self.cfg.out_dir)
        return out

    # -------------------------------------------------------------------------------------- training
    def cache_latents(self) -> None:
        """Encode the (unaugmented) training set once: posterior mean and std per image, on the device."""
        means, stds = [], []
        with torch.no_grad(), runtime.autocast(self.device, self.dtype):
            for start in range(0, len(self.dataset), 32):
                items = [self.dataset[i] for i in range(start, min(start + 32, len(self.dataset)))]
                x = to_vae_input(torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items]))
                dist = self.vae.encode(x.to(self.device, self.dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
        self.cached = (torch.cat(means), torch.cat(stds))

    def sample_draws(self, batch: dict, n: int, latent_shape: tuple[int, ...]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample draws from each sample's own generator: timesteps (n,), prompt-dropout flags (n,) on the
        host, and (n, 2, *latent_shape) standard normals on the device (latent sample, diffusion noise)."""
        seeds = batch.get("seed")
        seeds = (torch.as_tensor(seeds).tolist() if seeds is not None
                 else torch.randint(0, 2**31 - 1, (n,), generator=self.noise_gen).tolist())
        t = torch.empty(n, dtype=torch.long)
        u = torch.empty(n)
        normals = torch.empty((n, 2, *latent_shape), pin_memory=self.device.type == "cuda")
        for i, seed in enumerate(seeds):
            gen = sample_generator(seed)
            t[i] = torch.randint(0, len(self.alphas), (1,), generator=gen)[0]
            u[i] = torch.rand(1, generator=gen)[0]
            normals[i].normal_(generator=gen)
        return t, u < self.cfg.prompt_dropout, normals.to(self.device, non_blocking=True)

    def compute_losses(self, batch: dict, timesteps: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(loss to backpropagate, detached sums [mse·n, Σbce, Σdice, total·n] on the device, gated count).

        The loss is a mean over the batch's samples (the mask terms sum the gated samples' weighted losses over
        n), so micro-batch losses average to the loss of their union; Σbce and Σdice run over gated samples.
        """
        cfg, device = self.cfg, self.device
        mask = batch["mask"].to(device, non_blocking=True)
        index = batch["index"].to(device, non_blocking=True)
        n = len(mask)
        h, w = mask.shape[-2:]
        # Host-side draws: timesteps, prompt dropout and the mask-loss gate need no device round trip.
        t, drop, normals = self.sample_draws(batch, n, (self.latent_channels, h // self.factor, w // self.factor))
        if timesteps is not None:
            t = timesteps
        with torch.no_grad(), runtime.autocast(device, self.dtype):
            if self.cached is not None:
                mean, std = self.cached[0][index], self.cached[1][index]
            else:
                x = to_vae_input(batch["image"].to(device, non_blocking=True), mask).to(self.dtype)
                dist = self.vae.encode(x).latent_dist
                mean, std = dist.mean.float(), dist.std.float()
            latents = (mean + std * normals[:, 0]) * self.scale
        weights = losses.mask_loss_weights(t, self.alphas, cfg.mask_loss_max_timestep, cfg.mask_loss_weighting)
        # With both mask weights at 0 no sample takes the decoder path (its backward would cost for nothing).
        gated = torch.nonzero(weights > 0).flatten() if (cfg.lambda_bce or cfg.lambda_dice) else weights.new_zeros(
            0, dtype=torch.long)
        ids = self.prompt_ids[index]
        if bool(drop.any()):
            ids = torch.where(drop.to(device, non_blocking=True)[:, None], self.empty_ids, ids)
        noise = normals[:, 1]
        t_dev = t.to(device, non_blocking=True)
        noisy = self.noise_scheduler.add_noise(latents, noise, t_dev)
        with torch.no_grad():
            context = self.text_encoder(ids)[0]
        with runtime.autocast(device, self.dtype):
            pred = self.unet(noisy.to(self.dtype), t_dev, encoder_hidden_states=context).sample
        target = losses.diffusion_target(latents, noise, t_dev, self.alphas_dev, self.base.prediction_type)
        mse = F.mse_loss(pred.float(), target.float())
        bce_w = dice_w = bce_sum = dice_sum = mse.new_zeros(())
        if len(gated):
            g = gated.to(device, non_blocking=True)
            x0 = losses.predict_x0(pred[g], noisy[g], t_dev[g], self.alphas_dev, self.base.prediction_type)
            with runtime.autocast(device, self.dtype):
                decoded = self.vae.decode((x0 / self.scale).to(self.dtype)).sample
            logits = decoded[:, MASK_CHANNEL:MASK_CHANNEL + 1].float()
            bce_s, dice_s = losses.bce_per_sample(logits, mask[g]), losses.dice_per_sample(logits, mask[g])
            w = weights[gated].to(device, non_blocking=True)
            bce_w, dice_w = (w * bce_s).sum() / n, (w * dice_s).sum() / n
            bce_sum, dice_sum = bce_s.sum(), dice_s.sum()
        loss = cfg.lambda_diffusion * mse + cfg.lambda_bce * bce_w + cfg.lambda_dice * dice_w
        sums = torch.stack([mse.detach() * n, bce_sum.detach(), dice_sum.detach(), loss.detach() * n])
        return loss, sums, len(gated)

    def _backward(self, batch: dict, timesteps: torch.Tensor | None = None, micro_batches: int = 1
                  ) -> tuple[torch.Tensor, int]:
        """Forward + backward of one of `micro_batches` micro-batches whose gradients add up to one step's (each
        loss divided by their number: the step's gradient is that of the mean over all their samples)."""
        loss, sums, n_gated = self.compute_losses(batch, timesteps)
        (loss / micro_batches if micro_batches > 1 else loss).backward()
        return sums, n_gated

    def _optimizer_step(self) -> None:
        """Average the LoRA gradients over the processes, clip, step AdamW and the LR schedule."""
        ddp.all_reduce_mean_(self.dist, self.params)
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train_step(self, batch: dict, timesteps: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """One optimiser step on `batch` alone; returns this process's detached [mse, bce, dice, total] (on the
        device; bce and dice are 0 when no sample is gated) and gated count. Under several processes every
        one must call it (the gradients are averaged)."""
        sums, n_gated = self._backward(batch, timesteps)
        self._optimizer_step()
        n, g = len(batch["mask"]), max(n_gated, 1)
        return torch.stack([sums[0] / n, sums[1] / g, sums[2] / g, sums[3] / n]), n_gated

    def _flush(self, pending: list[tuple[int, torch.Tensor, int, int]]) -> None:
        """Sum buffered per-step losses over the processes, move them to the host (one sync) and report them."""
        if not pending:
            return
        sums = torch.stack([p for _, p, _, _ in pending])
        counts = torch.tensor([[g, n] for _, _, g, n in pending], dtype=sums.dtype, device=sums.device)
        values = ddp.all_reduce_sum(self.dist, torch.cat([sums, counts], 1)).cpu().tolist()
        for (step, *_), (mse, bce, dice, total, n_gated, n) in zip(pending, values):
            row = {"step": step, "mse": mse / n, "bce": bce / n_gated if n_gated else float("nan"),
                   "dice": dice / n_gated if n_gated else float("nan"), "total": total / n}
            self.history.append(row)
            if self.on_metrics and self.is_main:
                self.on_metrics({k: v for k, v in row.items() if k != "step" and not math.isnan(v)}, step)
        pending.clear()

    def validation_rows(self, steps: int | None = None) -> list:
        """One row per class (template prompt): generated image, mask, overlay."""
        from components.images import overlay

        self.unet.eval()
        gen = DualGenerator(self.unet, self.vae, self.text_encoder, self.tokenizer, self.noise_scheduler.config,
                            version="validation", resolution=self.cfg.resolution, device=self.device,
                            dtype=self.dtype, prepare=False, channels_last=self.cfg.channels_last)
        prompts = [template_prompt(c) for c in self.categories]
        pairs = gen.generate(prompts, [self.cfg.seed + i for i in range(len(prompts))],
                             num_inference_steps=steps or self.cfg.validation_steps,
                             guidance_scale=self.cfg.guidance_scale, batch_size=8, progress=False)
        self.unet.train()
        return [(c, [("image", img), ("mask", (m * 255).astype(np.uint8)), ("overlay", overlay(img, m))])
                for c, (img, m) in zip(self.categories, pairs)]

    def run(self) -> FinetuneResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.maybe_resume()
        ddp.broadcast_(self.dist, self.params)     # every process starts from rank 0's weights (fresh or resumed)
        if cfg.cache_latents:
            self.cache_latents()
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        start_step = self.global_step
        self.unet.train()
        pending: list[tuple[int, torch.Tensor, int, int]] = []
        rows: list = []
        bar = progress_bar(total=self.total_steps, initial=self.global_step, desc="finetune", unit="step",
                           disable=not (self.progress and self.is_main))
        # One loader for every epoch (persistent workers survive between them); set_epoch re-shuffles in place.
        # Its own generator: the workers' base seed is not drawn from the global RNG a checkpoint restores.
        # It yields this process's `accumulation` micro-batches of every remaining global batch (step).
        sampler = EpochBatches(len(self.dataset), cfg.batch_size, cfg.seed, self.epoch, self.batch_in_epoch,
                               rank=self.dist.rank, world_size=self.dist.world_size, accumulation=self.accumulation)
        loader = DataLoader(self.dataset, batch_sampler=sampler, generator=torch.Generator().manual_seed(cfg.seed),
                            **loader_kwargs(cfg.num_workers, self.device, prefetch_factor=cfg.prefetch_factor))
        while self.global_step < self.total_steps and self.epoch < self.n_epochs:
            sampler.set_epoch(self.epoch, self.batch_in_epoch)
            micro, step_sums, step_gated, step_n = 0, None, 0, 0
            for batch in loader:
                sums, n_gated = self._backward(batch, micro_batches=self.accumulation)
                step_sums = sums if step_sums is None else step_sums + sums
                step_gated, step_n, micro = step_gated + n_gated, step_n + len(batch["mask"]), micro + 1
                if micro < self.accumulation:
                    continue
                self._optimizer_step()
                self.global_step += 1
                self.batch_in_epoch += 1
                pending.append((self.global_step, step_sums, step_gated, step_n))
                micro, step_sums, step_gated, step_n = 0, None, 0, 0
                bar.update(1)
                last = self.global_step >= self.total_steps
                if self.global_step % cfg.log_every == 0 or last:
                    self._flush(pending)
                    bar.set_postfix(loss=f"{self.history[-1]['total']:.4f}")
                if self.global_step % cfg.checkpoint_every == 0:
                    self._flush(pending)
                    self.save_checkpoint()
                if last:
                    break
            epoch_done = self.batch_in_epoch >= self.steps_per_epoch
            if epoch_done:
                if self.is_main and ((self.epoch + 1) % cfg.validation_every_epochs == 0
                                     or self.global_step >= self.total_steps):
                    rows = self.validation_rows()
                    if self.on_validation:
                        self.on_validation(self.epoch + 1, rows)
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        del loader   # shuts persistent workers down before validation and saving
        self._flush(pending)
        bar.close()
        t_train = time.perf_counter()
        if not rows and self.is_main:
            rows = self.validation_rows()
            if self.on_validation:
                self.on_validation(self.epoch + (1 if self.batch_in_epoch else 0), rows)
        lora_dir = self.save_lora()
        ddp.barrier(self.dist)        # the LoRA is on disk before any process returns
        ddp.teardown(self.dist)
        return FinetuneResult(metrics=self._metrics(start_step, t0, t_train), history=list(self.history),
                              lora_dir=lora_dir, validation_rows=rows)

    def _metrics(self, start_step: int, t0: float, t_train: float) -> dict[str, float]:
        tail = self.history[-max(1, len(self.history) // 10):]
        out: dict[str, float] = {}
        for name in LOSS_NAMES:
            values = [h[name] for h in tail if not math.isnan(h[name])]
            out[f"final_{name}"] = float(np.mean(values)) if values else float("nan")
        steps_run = self.global_step - start_step
        out.update(steps=self.global_step, steps_this_run=steps_run, epochs=self.epoch,
                   seconds_train=t_train - t0, seconds_per_step=(t_train - t0) / max(steps_run, 1),
                   trainable_params=sum(p.numel() for p in self.params), train_images=len(self.dataset),
                   resumed_from_step=start_step, processes=self.dist.world_size,
                   gradient_accumulation_steps=self.accumulation, global_batch_size=self.global_batch)
        return out

