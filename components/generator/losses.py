"""Losses of the dual generator: diffusion MSE, mask BCE and Dice, x̂0 prediction and the timestep gate.

Per-sample functions return a tensor of shape (B,) so callers can weight samples before averaging.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_per_sample(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over each sample's pixels → (B,)."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return loss.flatten(1).mean(1)


def dice_per_sample(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss 1 - (2·Σ y·ŷ + ε) / (Σ y + Σ ŷ + ε) with ŷ = sigmoid(logits) → (B,) (paper eq. 7)."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    y = target.float().flatten(1)
    return 1 - (2 * (prob * y).sum(1) + eps) / (y.sum(1) + prob.sum(1) + eps)


def dice_score(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Hard Dice coefficient of binary masks per sample → (B,); two empty masks score 1."""
    p = pred.float().flatten(1)
    y = target.float().flatten(1)
    inter = (p * y).sum(1)
    total = p.sum(1) + y.sum(1)
    return torch.where(total > 0, 2 * inter / (total + eps), torch.ones_like(total))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] per sample → (B,)."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def _gather(values: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    out = values.to(timesteps.device)[timesteps].float()
    return out.reshape(-1, *([1] * (ndim - 1)))


def diffusion_target(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                     alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """What the UNet learns to predict: ε (epsilon) or v = √ᾱ·ε − √(1−ᾱ)·x0 (v_prediction)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        ab = _gather(alphas_cumprod, timesteps, latents.dim())
        return ab.sqrt() * noise - (1 - ab).sqrt() * latents
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; use epsilon or v_prediction")


def predict_x0(model_output: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor,
               alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """x̂0 from the model output: (x_t − √(1−ᾱ)·ε̂)/√ᾱ for epsilon, √ᾱ·x_t − √(1−ᾱ)·v̂ for v_prediction."""
    ab = _gather(alphas_cumprod, timesteps, noisy.dim())
    out, x = model_output.float(), noisy.float()
    if prediction_type == "epsilon":
        return (x - (1 - ab).sqrt() * out) / ab.sqrt()
    if prediction_type == "v_prediction":
        return ab.sqrt() * x - (1 - ab).sqrt() * out
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; use epsilon or v_prediction")


def min_snr_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float,
                    prediction_type: str) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR + 1) for v."""
    ab = alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = ab / (1 - ab).clamp_min(1e-8)
    clipped = snr.clamp(max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr.clamp_min(1e-8)


def mask_loss_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, max_timestep: int,
                      weighting: str) -> torch.Tensor:
    """Per-sample weight of the mask losses: 0 at t ≥ max_timestep (gate), else 1 or ᾱ_t ('alpha_bar').

    x̂0 at high noise is a blur, so its decoded mask says little; the gate and the ᾱ_t weight keep those
    timesteps from dominating the mask losses. max_timestep ≤ 0 disables the gate.
    """
    gate = torch.ones_like(timesteps, dtype=torch.float32) if max_timestep <= 0 else (timesteps < max_timestep).float()
    if weighting == "none":
        return gate
    if weighting == "alpha_bar":
        return gate * alphas_cumprod.to(timesteps.device)[timesteps].float()
    raise ValueError(f"unknown mask loss weighting {weighting!r}; use none or alpha_bar")


def kl_per_sample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, 1)) summed over latent elements → (B,)."""
    return 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).flatten(1).sum(1)
