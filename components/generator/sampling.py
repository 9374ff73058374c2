"""Sampling: one prompt → one latent → an RGB image and its binary lesion mask (DDIM + classifier-free guidance).

`DualGenerator` is the public API of the synthesis stage, the pyfunc model and the benchmarks:

    gen = DualGenerator.from_dirs("models/base", "models/vae4", "models/lora")
    pairs = gen.generate(prompts, seeds)            # [(HxWx3 uint8 image, HxW uint8 0/1 mask), ...]

Each sample's initial noise comes from its own CPU torch.Generator seeded with its seed, DDIM runs with eta 0
(no further noise), and guidance is one batched forward over [unconditional; conditional], so a sample depends
only on its prompt and seed, not on which other samples share its batch (up to float rounding). Text embeddings
are cached by prompt, and the DDIM loop makes no device→host round trip.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from components.device import resolve_device
from components.errors import ConfigError, ModelError
from components.generator import base_models, runtime
from components.generator import lora as lora_lib
from components.generator.vae_surgery import require_dual, split_output
from components.progress import progress_bar

log = logging.getLogger(__name__)


def check_size(height: int, width: int, factor: int) -> None:
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ConfigError(f"height/width {height}x{width} must be positive multiples of the VAE downsampling "
                          f"factor {factor}")


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Stacked N(0, 1) noise, one CPU generator per seed (identical on every device and batch layout)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def ddim_sample(unet: UNet2DConditionModel, scheduler: DDIMScheduler, cond: torch.Tensor, uncond: torch.Tensor,
                noise: torch.Tensor, num_inference_steps: int, guidance_scale: float) -> torch.Tensor:
    """Denoise `noise` (B x C x h x w, already on the UNet's device/dtype) into scaled latents with DDIM + CFG."""
    # Timesteps stay on the host: scheduler.step indexes its CPU alphas with them and branches on them, which with
    # device timesteps is a device→host sync every step. The UNet gets device copies made once.
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    timesteps_dev = timesteps.to(noise.device, non_blocking=True)
    latents = noise * scheduler.init_noise_sigma
    guided = guidance_scale > 1.0
    context = torch.cat([uncond, cond]) if guided else cond
    for i, t in enumerate(timesteps):
        model_in = torch.cat([latents, latents]) if guided else latents
        model_in = scheduler.scale_model_input(model_in, t)
        out = unet(model_in, timesteps_dev[i], encoder_hidden_states=context).sample
        if guided:
            out_uncond, out_cond = out.chunk(2)
            out = out_uncond + guidance_scale * (out_cond - out_uncond)
        latents = scheduler.step(out, t, latents, eta=0.0).prev_sample
    return latents


class PromptEmbeddings:
    """Text-encoder outputs by prompt, least recently used dropped beyond `max_entries`: a prompt is encoded once
    while it stays cached, however many batches and generate() calls use it."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], max_entries: int = 512):
        self._encode, self.max_entries = encode, max_entries
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """Stacked embeddings of `prompts`; the uncached distinct ones are encoded together in one call."""
        distinct = list(dict.fromkeys(prompts))
        missing = [p for p in distinct if p not in self._cache]
        if missing:
            for prompt, emb in zip(missing, self._encode(missing)):
                self._cache[prompt] = emb.clone()   # a row view would keep its whole batch alive
        out = torch.stack([self._cache[p] for p in prompts])
        for prompt in distinct:
            self._cache.move_to_end(prompt)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return out


class DualGenerator:
    """Fine-tuned dual generator: frozen base UNet (+ LoRA, fused), text encoder and 4-channel VAE."""

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: torch.nn.Module, tokenizer,
                 scheduler_config: dict, version: str, resolution: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 prepare: bool = True, compile: bool = False, channels_last: bool = True,
                 prompt_cache_size: int = 512):
        """Wrap loaded modules; `prepare` moves them to device/dtype, freezes them and applies `channels_last`
        (CUDA only) and `compile` (torch.compile of the UNet). prepare=False uses them as they are, e.g. for
        validation samples of modules in training, which the caller keeps on `device` in eval mode."""
        require_dual(vae, "DualGenerator")
        self.device = resolve_device(device or "auto")
        self.dtype = dtype or (runtime.weight_dtype("auto", self.device))
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.channels_last = runtime.use_channels_last(channels_last, self.device)
        if prepare:
            for module in (unet, vae, text_encoder):
                module.to(device=self.device, dtype=self.dtype)
                module.eval()
                module.requires_grad_(False)
            if self.channels_last:
                unet.to(memory_format=torch.channels_last)
                vae.to(memory_format=torch.channels_last)
            runtime.maybe_compile(unet, compile)
        self.scheduler_config = dict(scheduler_config)
        self.version = version
        self.factor = base_models.vae_factor(vae)
        self.resolution = int(resolution or unet.config.sample_size * self.factor)
        self._uncond: torch.Tensor | None = None
        self._embeddings = PromptEmbeddings(self._encode, prompt_cache_size)

    # ------------------------------------------------------------------------------------- loading
    @classmethod
    def from_dirs(cls, base_dir: str | Path, vae_dir: str | Path, lora_dir: str | Path | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                  compile: bool = False, channels_last: bool = True) -> "DualGenerator":
        """Load base model (folder, base.json pointer or hub id), adapted VAE folder and optional LoRA folder
        (fused into the UNet before it is compiled)."""
        base = base_models.load_base(base_dir)
        vae = load_dual_vae(vae_dir)
        resolution = None
        if lora_dir:
            meta = lora_lib.load_lora(base.unet, lora_dir)
            base.unet.fuse_lora()
            resolution = meta.get("resolution")
        version = generator_version(base.identity, vae_dir, lora_dir)
        return cls(base.unet, vae, base.text_encoder, base.tokenizer, base.noise_scheduler.config, version,
                   resolution=resolution, device=device, dtype=dtype, compile=compile, channels_last=channels_last)

    # ---------------------------------------------------------------------------------- generation
    def _encode(self, prompts: list[str]) -> torch.Tensor:
        return runtime.encode_prompts(self.text_encoder, self.tokenizer, prompts, self.device)

    def _context(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditional, unconditional) text embeddings; each prompt and the empty prompt encoded once."""
        if self._uncond is None:
            self._uncond = self._encode([""])
        return self._embeddings(prompts), self._uncond.expand(len(prompts), -1, -1)

    @torch.no_grad()
    def sample_latents(self, prompts: list[str], seeds: list[int], num_inference_steps: int = 45,
                       guidance_scale: float = 1.22, height: int | None = None,
                       width: int | None = None) -> torch.Tensor:
        """Scaled latents (B x 4 x h x w) for one batch of prompts and seeds."""
        height, width = height or self.resolution, width or self.resolution
        check_size(height, width, self.factor)
        shape = (self.unet.config.in_channels, height // self.factor, width // self.factor)
        noise = initial_noise(seeds, shape).to(self.device, self.dtype)
        if self.channels_last:
            noise = noise.to(memory_format=torch.channels_last)
        cond, uncond = self._context(prompts)
        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        with runtime.autocast(self.device, self.dtype):
            return ddim_sample(self.unet, scheduler, cond, uncond, noise, num_inference_steps, guidance_scale)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents → (RGB B x 3 x H x W in [0, 1], mask logits B x 1 x H x W), float32."""
        latents = latents / self.vae.config.scaling_factor
        if self.channels_last:
            latents = latents.to(memory_format=torch.channels_last)
        with runtime.autocast(self.device, self.dtype):
            decoded = self.vae.decode(latents).sample
        return split_output(decoded)

    def generate(self, prompts: list[str], seeds: list[int], num_inference_steps: int = 45,
                 guidance_scale: float = 1.22, height: int | None = None, width: int | None = None,
                 batch_size: int = 8, mask_threshold: float = 0.5,
                 progress: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """Image/mask pairs, one per (prompt, seed): (HxWx3 uint8, HxW uint8 in {0, 1}), single pass each."""
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for batch_prompts, batch_seeds in self._batches(prompts, seeds, batch_size, progress):
            latents = self.sample_latents(batch_prompts, batch_seeds, num_inference_steps, guidance_scale,
                                          height, width)
            rgb, logits = self.decode(latents)
            out.extend(to_arrays(rgb, logits, mask_threshold))
        return out

    def generate_two_pass(self, prompts: list[str], seeds: list[int], num_inference_steps: int = 45,
                          guidance_scale: float = 1.22, height: int | None = None, width: int | None = None,
                          batch_size: int = 8, mask_threshold: float = 0.5,
                          progress: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """Baseline for benchmarks: image and mask from two separate diffusion passes (twice the UNet work).

        Pass 1 denoises and keeps only the RGB channels, pass 2 denoises again from the same seed and keeps only
        the mask, which is what generating image and mask separately costs. Outputs match generate().
        """
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for batch_prompts, batch_seeds in self._batches(prompts, seeds, batch_size, progress):
            rgb, _ = self.decode(self.sample_latents(batch_prompts, batch_seeds, num_inference_steps,
                                                     guidance_scale, height, width))
            _, logits = self.decode(self.sample_latents(batch_prompts, batch_seeds, num_inference_steps,
                                                        guidance_scale, height, width))
            out.extend(to_arrays(rgb, logits, mask_threshold))
        return out

    def _batches(self, prompts: list[str], seeds: list[int], batch_size: int,
                 progress: bool) -> Iterator[tuple[list[str], list[int]]]:
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ConfigError(f"generate: {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
        if batch_size < 1:
            raise ConfigError(f"generate: batch_size {batch_size} must be ≥ 1")
        bar = progress_bar(total=len(prompts), desc="generate", unit="pair", disable=not progress)
        start = time.perf_counter()
        for i in range(0, len(prompts), batch_size):
            yield prompts[i:i + batch_size], seeds[i:i + batch_size]
            bar.update(len(prompts[i:i + batch_size]))
        bar.close()
        log.debug("generated %d pairs in %.1fs", len(prompts), time.perf_counter() - start)


def to_arrays(rgb: torch.Tensor, logits: torch.Tensor,
              mask_threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """RGB in [0, 1] and mask logits → uint8 HxWx3 images and uint8 {0, 1} masks (sigmoid > threshold)."""
    images = (rgb * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    masks = (torch.sigmoid(logits[:, 0]) > mask_threshold).to(torch.uint8).cpu().numpy()
    return [(np.ascontiguousarray(i), np.ascontiguousarray(m)) for i, m in zip(images, masks)]


def load_dual_vae(vae_dir: str | Path) -> AutoencoderKL:
    """The adapted 4-channel VAE saved by `adapt_vae`; ModelError when missing or not 4-channel."""
    vae_dir = Path(vae_dir)
    if not (vae_dir / "config.json").is_file():
        raise ModelError(f"{vae_dir}: no adapted VAE (config.json missing); run the `adapt_vae` stage "
                         f"(dvc repro adapt_vae) or point vae_dir at its output")
    vae = AutoencoderKL.from_pretrained(vae_dir)
    require_dual(vae, str(vae_dir))
    return vae.eval()


def generator_version(base_identity: str, vae_dir: str | Path, lora_dir: str | Path | None) -> str:
    """Short hash of the base identity, the adapted VAE weights and the LoRA weights."""
    h = hashlib.sha256(base_identity.encode())
    h.update(base_models.folder_fingerprint(vae_dir, "*.safetensors").encode())
    if lora_dir:
        h.update(lora_lib.lora_fingerprint(lora_dir).encode())
    return "gen-" + h.hexdigest()[:16]


def describe_generator(gen: DualGenerator) -> dict:
    return {"version": gen.version, "resolution": gen.resolution, "device": str(gen.device),
            "dtype": str(gen.dtype).replace("torch.", ""), "scheduler": json.dumps(gen.scheduler_config)[:200]}
