"""LoRA on the UNet attention projections (peft), saved as diffusers-format safetensors.

The saved folder holds `pytorch_lora_weights.safetensors` (what StableDiffusionPipeline.load_lora_weights
reads, with the LoRA config in its metadata) and `lora_config.json` (rank, alpha, targets, resolution, base).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from components import atomic
from components.errors import ConfigError, ModelError

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
META_NAME = "lora_config.json"
ADAPTER = "default"
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


def make_config(rank: int, alpha: float, dropout: float = 0.0,
                target_modules: list[str] | tuple[str, ...] = TARGET_MODULES) -> LoraConfig:
    """peft LoraConfig for the UNet attention; rank < 1 is a ConfigError."""
    if int(rank) < 1:
        raise ConfigError(f"lora_rank {rank}: a LoRA needs rank ≥ 1 (the paper compares 2, 4 and 8)")
    return LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout),
                      init_lora_weights="gaussian", target_modules=list(target_modules))


def add_lora(unet: UNet2DConditionModel, rank: int, alpha: float, dropout: float = 0.0,
             target_modules: list[str] | tuple[str, ...] = TARGET_MODULES) -> list[torch.nn.Parameter]:
    """Freeze the UNet, inject LoRA layers and return the trainable (LoRA) parameters."""
    unet.requires_grad_(False)
    unet.add_adapter(make_config(rank, alpha, dropout, target_modules), adapter_name=ADAPTER)
    params = [p for p in unet.parameters() if p.requires_grad]
    if not params:
        raise ModelError(f"no UNet module matched the LoRA target_modules {list(target_modules)}")
    return params


def lora_state(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """The LoRA weights (peft key names), detached and on CPU."""
    return {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def set_lora_state(unet: UNet2DConditionModel, state: dict[str, torch.Tensor]) -> None:
    """Load LoRA weights saved by lora_state into a UNet that already has the adapter."""
    result = set_peft_model_state_dict(unet, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", []) or []
    if unexpected:
        raise ModelError(f"LoRA state has keys the UNet does not know (e.g. {unexpected[:3]}); it was trained "
                         f"for another base model or LoRA configuration")


def save_lora(unet: UNet2DConditionModel, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write the LoRA in diffusers format plus lora_config.json (meta: rank, alpha, targets, resolution...)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = unet.peft_config[ADAPTER]
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers={k: v.detach().cpu().contiguous() for k, v in layers.items()},
        weight_name=WEIGHTS_NAME, unet_lora_adapter_metadata=config.to_dict())
    full_meta = {"rank": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                 "target_modules": sorted(config.target_modules), **meta}
    atomic.write_json(out / META_NAME, full_meta)
    return out


def read_meta(lora_dir: str | Path) -> dict[str, Any]:
    lora_dir = Path(lora_dir)
    weights, meta = lora_dir / WEIGHTS_NAME, lora_dir / META_NAME
    if not weights.is_file() or not meta.is_file():
        raise ModelError(f"{lora_dir}: no LoRA ({WEIGHTS_NAME} and {META_NAME} expected); run the `finetune` "
                         f"stage (dvc repro finetune) or pass lora_dir=None for the base model alone")
    try:
        return json.loads(meta.read_text())
    except ValueError as exc:
        raise ModelError(f"{meta}: unreadable LoRA config ({exc}); re-run the `finetune` stage") from None


def load_lora(unet: UNet2DConditionModel, lora_dir: str | Path) -> dict[str, Any]:
    """Add the adapter described by lora_config.json to `unet` and load its weights; returns the meta."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft

    meta = read_meta(lora_dir)
    try:
        state, _ = StableDiffusionPipeline.lora_state_dict(str(lora_dir), weight_name=WEIGHTS_NAME)
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise ModelError(f"{Path(lora_dir) / WEIGHTS_NAME}: cannot read the LoRA weights ({exc}); the file is "
                         f"corrupt, re-run the `finetune` stage") from None
    state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    unet.add_adapter(make_config(meta["rank"], meta["alpha"], 0.0, meta["target_modules"]), adapter_name=ADAPTER)
    set_lora_state(unet, convert_unet_state_dict_to_peft(state))
    return meta


def lora_fingerprint(lora_dir: str | Path) -> str:
    """sha256 of the LoRA weights file."""
    from components.generator.base_models import file_fingerprint

    read_meta(lora_dir)
    return file_fingerprint(Path(lora_dir) / WEIGHTS_NAME)
