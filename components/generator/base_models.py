"""Base models: build presets, save/load diffusers Stable Diffusion folders, follow `base.json` pointers.

A base model is given as
- a diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/; what `pretrain` writes for `tiny`),
- a folder holding `base.json` ({"base_model": <folder | hub id | preset>}, for a hub id optionally with a pinned
  "revision" (commit)) written by `pretrain` for any base other than `tiny`, and carried by the registered
  generator for hub and preset bases,
- a hub id of a Stable Diffusion 2.x repo (loaded with from_pretrained from the local cache; the project never
  downloads at import or test time; with HF_HUB_OFFLINE unset, from_pretrained may fetch it),
- the preset `sd2-base-random` (built from config with random weights).
Epsilon and v-prediction models are both supported: the prediction type is read from the scheduler config.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from components import atomic
from components.errors import ModelError
from components.generator import presets
from components.hashing import file_digest

log = logging.getLogger(__name__)

COMPONENTS: tuple[str, ...] = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
POINTER_FILE = "base.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FIX = ("re-run the `pretrain` stage (dvc repro pretrain) to rebuild it, or point `base_model` at a complete "
        "Stable Diffusion 2.x diffusers folder or hub id")


@dataclass
class BaseModel:
    """The frozen parts of a latent diffusion model plus its training noise scheduler."""
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    noise_scheduler: DDPMScheduler
    ref: str          # what it was loaded from (folder, hub id or preset)
    identity: str     # short hash identifying the weights/configs

    @property
    def prediction_type(self) -> str:
        return str(self.noise_scheduler.config.prediction_type)

    @property
    def vae_factor(self) -> int:
        return vae_factor(self.vae)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "BaseModel":
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device, dtype=dtype)
        return self


def vae_factor(vae: AutoencoderKL) -> int:
    """Spatial downsampling factor of an AutoencoderKL (2 ** number of downsampling stages)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


# ----------------------------------------------------------------------------------------------- build
def build_preset(name: str, tokenizer: CLIPTokenizer | None = None, resolution: int | None = None,
                 seed: int = 0) -> BaseModel:
    """A preset base model with freshly initialised (seeded) weights.

    `tokenizer` defaults to the project tokenizer; `resolution` sets the configs' sample sizes (tiny only).
    """
    from components.generator.tokenizer import build_project_tokenizer

    preset = presets.PRESETS.create(name)
    tokenizer = tokenizer or build_project_tokenizer()
    torch.manual_seed(seed)
    unet_cfg, vae_cfg = preset.unet(), preset.vae()
    if resolution and name == "tiny":
        factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
        unet_cfg["sample_size"], vae_cfg["sample_size"] = resolution // factor, resolution
    text_cfg = preset.text(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model = BaseModel(
        unet=UNet2DConditionModel(**unet_cfg),
        vae=AutoencoderKL(**vae_cfg),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_cfg)),
        tokenizer=tokenizer,
        noise_scheduler=DDPMScheduler.from_config(dict(preset.scheduler)),
        ref=name, identity=f"{name}-random-seed{seed}",
    )
    for module in (model.unet, model.vae, model.text_encoder):
        module.eval()
    return model


# ------------------------------------------------------------------------------------------------ save
def save_base(model: BaseModel, out_dir: str | Path) -> Path:
    """Write `model` as an ordinary diffusers Stable Diffusion folder (StableDiffusionPipeline loads it)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from components.generator.tokenizer import save_tokenizer

    out = Path(out_dir)
    pipe = StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=DDIMScheduler.from_config(model.noise_scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    save_tokenizer(model.tokenizer, out / "tokenizer")
    return out


def write_pointer(out_dir: str | Path, base_model: str, revision: str | None = None) -> Path:
    """Write `base.json` pointing at a folder (made absolute), hub id (optionally at a pinned `revision`) or
    preset; return the folder."""
    out = Path(out_dir)
    ref = str(Path(base_model).resolve()) if Path(base_model).is_dir() else base_model
    atomic.write_json(out / POINTER_FILE, {"base_model": ref, **({"revision": revision} if revision else {})})
    return out


def cached_hub_revision(repo_id: str, revision: str | None = None) -> str | None:
    """The commit of `repo_id` (at `revision`, default main) in the local Hugging Face cache, None when it is
    not cached there. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "model_index.json", revision=revision)
    if not isinstance(found, str):
        found = try_to_load_from_cache(repo_id, "unet/config.json", revision=revision)
    if not isinstance(found, str):
        return None
    parts = Path(found).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


# ------------------------------------------------------------------------------------------------ load
def resolve_pointer(ref: str | Path) -> tuple[str, str | None]:
    """Follow `base.json` pointers (at most a few hops) to (folder, hub id or preset name; pinned hub revision
    or None)."""
    ref, revision = str(ref), None
    for _ in range(4):
        pointer = Path(ref) / POINTER_FILE
        if not pointer.is_file():
            return ref, revision
        try:
            data = json.loads(pointer.read_text())
            ref, revision = str(data["base_model"]), data.get("revision") or None
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{pointer}: unreadable base-model pointer ({exc}); {_FIX}") from None
    raise ModelError(f"{ref}: base.json pointers nest too deeply (a loop?); point base_model at a model folder")


def resolve_ref(ref: str | Path) -> str:
    """Follow `base.json` pointers (at most a few hops) to a folder, hub id or preset name."""
    return resolve_pointer(ref)[0]


def check_folder(folder: str | Path) -> None:
    """Raise ModelError naming the first missing component of a diffusers base-model folder and the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: base-model folder not found; {_FIX}")
    for name in COMPONENTS:
        sub = folder / name
        if name == "tokenizer":
            ok = (sub / "tokenizer.json").is_file() or ((sub / "vocab.json").is_file() and (sub / "merges.txt").is_file())
            wanted = "tokenizer.json or vocab.json + merges.txt"
        elif name == "scheduler":
            ok, wanted = (sub / "scheduler_config.json").is_file(), "scheduler_config.json"
        else:
            has_weights = any(sub.glob("*.safetensors")) or any(sub.glob("*.bin"))
            ok, wanted = (sub / "config.json").is_file() and has_weights, "config.json and weights"
        if not ok:
            raise ModelError(f"{folder}: missing component '{name}' ({sub}/ needs {wanted}); {_FIX}")


def load_base(ref: str | Path, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> BaseModel:
    """Load a base model from a folder, pointer folder, hub id or preset; modules in eval mode."""
    original = str(ref)
    ref, revision = resolve_pointer(ref)
    if ref in presets.PRESETS:
        if presets.PRESETS.create(ref).pretrain:
            raise ModelError(f"base model {ref!r} is trained by the `pretrain` stage; load its output folder "
                             f"(models/base) instead of the preset name")
        model = build_preset(ref)
    else:
        model = _load_diffusers(ref, original, revision)
    if device is not None or dtype is not None:
        model.to(device or "cpu", dtype)
    return model


def load_vae(ref: str | Path) -> AutoencoderKL:
    """Only the VAE of a base model (folder, pointer, hub id or random preset), in eval mode."""
    original = str(ref)
    ref, revision = resolve_pointer(ref)
    if ref in presets.PRESETS:
        return load_base(ref).vae
    _check_ref(ref, original)
    try:
        return AutoencoderKL.from_pretrained(ref, subfolder="vae", revision=revision).eval()
    except (OSError, ValueError) as exc:
        raise _load_error(ref, original, exc) from None


def validate_ref(ref: str | Path) -> str:
    """Check a base-model reference without loading weights: preset, complete folder or hub-id form."""
    resolved = resolve_ref(ref)
    if resolved not in presets.PRESETS:
        _check_ref(resolved, str(ref))
    return resolved


def _check_ref(ref: str, original: str) -> None:
    if Path(ref).is_dir():
        check_folder(ref)
    elif not _HUB_ID.match(ref):
        raise ModelError(f"{original}: not a model folder, base.json pointer or hub id; {_FIX}")


def _load_error(ref: str, original: str, exc: Exception) -> ModelError:
    where = "the folder" if Path(ref).is_dir() else "the local Hugging Face cache (offline mode never downloads)"
    return ModelError(f"{original}: cannot load base model {ref!r} from {where}: {exc}. Download it first "
                      f"(huggingface-cli download {ref}) or point base_model at a local diffusers folder")


def _load_diffusers(ref: str, original: str, revision: str | None = None) -> BaseModel:
    _check_ref(ref, original)
    try:
        unet = UNet2DConditionModel.from_pretrained(ref, subfolder="unet", revision=revision)
        vae = AutoencoderKL.from_pretrained(ref, subfolder="vae", revision=revision)
        text_encoder = CLIPTextModel.from_pretrained(ref, subfolder="text_encoder", revision=revision)
        tokenizer = CLIPTokenizer.from_pretrained(ref, subfolder="tokenizer", revision=revision)
        noise_scheduler = DDPMScheduler.from_pretrained(ref, subfolder="scheduler", revision=revision)
    except (OSError, ValueError) as exc:
        raise _load_error(ref, original, exc) from None
    if unet.config.in_channels != 4 or unet.config.out_channels != 4:
        raise ModelError(f"{ref}: the UNet has {unet.config.in_channels}/{unet.config.out_channels} in/out "
                         f"channels; Stable Diffusion 2.x latents have 4. Use an SD 2.x base model")
    for module in (unet, vae, text_encoder):
        module.eval()
    return BaseModel(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                     noise_scheduler=noise_scheduler, ref=ref, identity=base_identity(ref))


# -------------------------------------------------------------------------------------------- identity


TRAIN_SHARE_OF_NATIVE = 0.5   # fine-tuning below half the base's native side (SD 2: 256 of 512 px) forgets its prior


def below_native(key: str, resolution: int, unet_sample_size: int, factor: int, share: float = 1.0) -> str | None:
    """A warning when `resolution` is below `share` of the base's native side (UNet sample size × VAE factor)."""
    native = int(unet_sample_size) * int(factor)
    floor = int(native * share)
    if not resolution or resolution >= floor:
        return None
    return (f"{key}={resolution} is below {floor} px for a base made for {native} px: expect off-distribution, "
            f"blurry samples; raise {key} to at least {floor}")


def file_fingerprint(path: str | Path) -> str:
    """sha256 identity of a weights file; above 64 MiB its size plus first and last MiB (fast on multi-GB files)."""
    return file_digest(path, "sha256", sample_above=64 << 20)


def folder_fingerprint(folder: str | Path, pattern: str = "**/*") -> str:
    """Fingerprint of every file under `folder` (relative names + file fingerprints)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith(".")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(file_fingerprint(path).encode())
    return h.hexdigest()


def base_identity(ref: str | Path) -> str:
    """Short identity of a base model: content fingerprint for folders, the name for hub ids and presets."""
    resolved = resolve_ref(ref)
    if Path(resolved).is_dir():
        return "base-" + folder_fingerprint(resolved)[:12]
    return "base-" + hashlib.sha256(resolved.encode()).hexdigest()[:12]


def describe(model: BaseModel) -> dict[str, Any]:
    """Parameter counts and key config values (for logs and metrics)."""
    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())
    return {
        "ref": model.ref, "identity": model.identity, "prediction_type": model.prediction_type,
        "vae_factor": model.vae_factor, "unet_params": count(model.unet), "vae_params": count(model.vae),
        "text_encoder_params": count(model.text_encoder), "unet_sample_size": model.unet.config.sample_size,
        "scaling_factor": float(model.vae.config.scaling_factor),
    }
