"""Reference training loops the benchmarks compare against, written from the published recipes.

ReferenceLoraLoop: the inner loop of diffusers' examples/text_to_image/train_text_to_image_lora.py, reduced to
what runs per step (no accelerate, no logging backends), with the script's defaults:
- frozen UNet / VAE / text encoder cast to the weight dtype (bf16 under mixed precision, fp32 otherwise);
- peft LoRA (r = lora_alpha = rank, gaussian init) on to_q / to_k / to_v / to_out.0 added with
  `unet.add_adapter`, LoRA parameters kept in fp32 (`cast_training_params`; the script does this for fp16,
  we do it for bf16 as well, which is what our trainer does);
- per step: VAE encode → latent_dist.sample() × scaling_factor, noise, uniform timesteps, DDPM add_noise,
  text encoder hidden states, UNet forward (under autocast when mixed precision is on), MSE on ε (or v),
  backward, grad-norm clip at 1.0, AdamW step (lr 1e-4, weight decay 1e-2), constant LR schedule step,
  zero_grad, and the script's per-step `train_loss += loss.item()` bookkeeping (a host sync, as in the script).
Captions are tokenised once, as the script's dataset preprocessing does, so tokenisation is not in the step.

plain_epoch: a plain torchvision / segmentation-models-pytorch epoch (DataLoader, autocast on CUDA, AdamW,
`loss.item()` per step like torchvision's reference classification script).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.optimization import get_scheduler
from diffusers.training_utils import cast_training_params
from peft import LoraConfig
from torch import nn

REFERENCE_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


class ReferenceLoraLoop:
    """One optimiser step of the diffusers text-to-image LoRA example on a fixed, pre-collated batch."""

    def __init__(self, unet, vae, text_encoder, tokenizer, noise_scheduler, device: torch.device,
                 weight_dtype: torch.dtype, rank: int = 4, learning_rate: float = 1e-4,
                 max_grad_norm: float = 1.0):
        self.device, self.weight_dtype = device, weight_dtype
        for module in (unet, vae, text_encoder):
            module.requires_grad_(False)
        unet.to(device, dtype=weight_dtype)
        vae.to(device, dtype=weight_dtype)
        text_encoder.to(device, dtype=weight_dtype)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=REFERENCE_TARGETS))
        if weight_dtype != torch.float32:
            cast_training_params(unet, dtype=torch.float32)
        unet.train()
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.noise_scheduler = noise_scheduler
        self.params = [p for p in unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=learning_rate, betas=(0.9, 0.999), weight_decay=1e-2,
                                           eps=1e-8)
        self.lr_scheduler = get_scheduler("constant", optimizer=self.optimizer, num_warmup_steps=0,
                                          num_training_steps=10**6)
        self.max_grad_norm = max_grad_norm
        self.train_loss = 0.0
        self.batch: dict[str, torch.Tensor] = {}

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """The script's tokenize_captions: pad to model_max_length, truncate."""
        return self.tokenizer(captions, max_length=self.tokenizer.model_max_length, padding="max_length",
                              truncation=True, return_tensors="pt").input_ids

    def set_batch(self, images: torch.Tensor, captions: list[str]) -> None:
        """Images Bx3xHxW in [0, 1] → the script's pixel_values (normalised to [-1, 1]) and input_ids."""
        self.batch = {"pixel_values": (images * 2 - 1).to(self.device),
                      "input_ids": self.tokenize(captions).to(self.device)}

    def _autocast(self):
        if self.weight_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.weight_dtype)

    def step(self) -> torch.Tensor:
        batch = self.batch
        latents = self.vae.encode(batch["pixel_values"].to(dtype=self.weight_dtype)).latent_dist.sample()
        latents = latents * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        bsz = latents.shape[0]
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,),
                                  device=latents.device).long()
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        encoder_hidden_states = self.text_encoder(batch["input_ids"], return_dict=False)[0]
        if self.noise_scheduler.config.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        with self._autocast():
            model_pred = self.unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        self.train_loss += loss.detach().item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        return loss.detach()


def plain_epoch(model: nn.Module, loader, loss_fn: Callable, target_key: str, device: torch.device,
                lr: float = 1e-4, normalise: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """One epoch of a plain PyTorch training loop; returns the mean loss (read per step with .item())."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    mean, std = (t.to(device) for t in normalise) if normalise is not None else (None, None)
    total, n = 0.0, 0
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        target = batch[target_key].to(device, non_blocking=True)
        if mean is not None:
            images = (images - mean) / std
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(images).float(), target)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += loss.item()
        n += 1
    return total / max(n, 1)
