"""Device, precision and random-state helpers shared by the generator trainers and the sampler."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Callable

import numpy as np
import torch

MetricsCallback = Callable[[dict[str, float], int], None]




def weight_dtype(mixed_precision: str, device: torch.device) -> torch.dtype:
    """dtype of the frozen weights: bf16/fp16 on CUDA ('auto' → bf16 when supported), fp32 on CPU."""
    if device.type != "cuda" or mixed_precision == "no":
        return torch.float32
    if mixed_precision == "fp16":
        return torch.float16
    if mixed_precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast context for reduced-precision weights; a no-op in fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(enabled: bool, device: torch.device) -> bool:
    """channels_last only where it pays off (CUDA convolutions); on CPU it stays off whatever the flag says."""
    return bool(enabled) and device.type == "cuda"


def maybe_compile(module: torch.nn.Module, enabled: bool) -> None:
    """torch.compile `module` in place when enabled (nn.Module.compile: the object and its state_dict keys stay
    the same, so LoRA save/load and checkpoints work unchanged); compilation happens at the first forward."""
    if enabled:
        module.compile()


def is_compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random state a resumed run needs: python, numpy, torch CPU/CUDA and named generators."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = {k: g.get_state() for k, g in (generators or {}).items()}
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        if name in state.get("generators", {}):
            gen.set_state(state["generators"][name])


def encode_prompts(text_encoder: torch.nn.Module, tokenizer, prompts: list[str],
                   device: torch.device) -> torch.Tensor:
    """Last hidden states of the text encoder for `prompts` (padded to the tokenizer's max length)."""
    ids = tokenize(tokenizer, prompts).to(device)
    return text_encoder(ids)[0]


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids
