"""Registry of base-model presets built from config (random weights): `tiny` and `sd2-base-random`.

`tiny` is the offline stand-in for a public checkpoint: small UNet / 3-channel VAE (downsampling factor 4) /
CLIP text encoder, trained from scratch by the `pretrain` stage. `sd2-base-random` is the real Stable
Diffusion 2 base architecture (UNet 320/640/1280/1280, cross-attention 1024, OpenCLIP-H text tower, VAE
128/256/512/512) with random weights, for GPU benchmarks without downloads; it is large (~1.3 B params), so
build it only on demand. Any other base model is a diffusers folder or hub id (components.generator.base_models).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from components.registry import Registry

# Stable Diffusion's noise schedule (scaled_linear, 1000 steps); DDIM at sampling time reads the same config.
SD_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "timestep_spacing": "leading",
}
# The tiny model is trained with a zero-terminal-SNR schedule, v-prediction and trailing timesteps (Lin et al.,
# "Common Diffusion Noise Schedules and Sample Steps are Flawed", 2024). Dermoscopy latents have strong per-channel
# means (skin tone); with SD's schedule the last training step still shows 7 % of them, the model learns to rely on
# that signal and sampling from pure noise, where it is absent, falls apart into fragments.
TINY_SCHEDULER: dict[str, Any] = {**SD_SCHEDULER, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                                  "timestep_spacing": "trailing"}


def tiny_unet_config(sample_size: int = 16, cross_attention_dim: int = 128) -> dict[str, Any]:
    """UNet2DConditionModel config of the tiny preset (latent side `sample_size`)."""
    return {
        "sample_size": sample_size, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": [32, 64, 128],
        # No attention at full latent resolution: on CPU it costs more than the rest of the UNet together.
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": cross_attention_dim, "attention_head_dim": 4, "norm_num_groups": 16,
        "use_linear_projection": True,
    }


def tiny_vae_config(sample_size: int = 64) -> dict[str, Any]:
    """AutoencoderKL config of the tiny preset: 3-channel like public SD, downsampling factor 4."""
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": sample_size,
        "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [32, 64, 64], "layers_per_block": 1, "norm_num_groups": 16,
        "scaling_factor": 1.0,
    }


def tiny_text_config(vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> dict[str, Any]:
    """CLIPTextConfig kwargs of the tiny preset (hidden size = the UNet's cross-attention dim)."""
    return {
        "vocab_size": vocab_size, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": 128,
        "bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id,
    }


def sd2_unet_config() -> dict[str, Any]:
    """UNet of stable-diffusion-2-base (865 M params)."""
    return {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True,
        "norm_num_groups": 32, "flip_sin_to_cos": True, "freq_shift": 0, "act_fn": "silu",
    }


def sd2_vae_config() -> dict[str, Any]:
    """AutoencoderKL of Stable Diffusion 2 (downsampling factor 8, 3 channels)."""
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
        "scaling_factor": 0.18215,
    }


def sd2_text_config(vocab_size: int = 49408, bos_token_id: int = 49406, eos_token_id: int = 49407,
                    pad_token_id: int = 0) -> dict[str, Any]:
    """OpenCLIP ViT-H/14 text tower as used by SD 2 (23 of 24 layers, hidden 1024)."""
    return {
        "vocab_size": vocab_size, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
        "num_attention_heads": 16, "max_position_embeddings": 77, "projection_dim": 512, "hidden_act": "gelu",
        "bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id,
    }


@dataclass(frozen=True)
class Preset:
    """A base model built from config: its component configs and what it is for."""
    name: str
    description: str
    unet: Callable[[], dict[str, Any]]
    vae: Callable[[], dict[str, Any]]
    text: Callable[[int, int, int, int], dict[str, Any]]
    scheduler: dict[str, Any]
    pretrain: bool            # True: `pretrain` trains it from scratch; False: random weights as-is


PRESETS: Registry[Preset] = Registry("base-model preset", hint="or give a diffusers folder / hub id")
PRESETS.add(Preset("tiny", "small UNet/VAE(factor 4)/CLIP from config, pretrained offline by `pretrain`",
                   tiny_unet_config, tiny_vae_config, tiny_text_config, TINY_SCHEDULER, pretrain=True))
PRESETS.add(Preset("sd2-base-random", "Stable Diffusion 2 base architecture, random weights "
                   "(GPU benchmarks without downloads)",
                   sd2_unet_config, sd2_vae_config, lambda v, b, e, p: sd2_text_config(max(v, 49408), b, e, p),
                   SD_SCHEDULER, pretrain=False))
