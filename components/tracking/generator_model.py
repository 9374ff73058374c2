"""The dual generator as an MLflow pyfunc model (`skindualgen-generator` in the registry).

Input: a DataFrame with `prompt` or `category` (a class code or common name, turned into the paper's prompt) and
`seed` per row (a row without one takes params.seed + its row index). Params: num_inference_steps, guidance_scale,
seed, height, width (0 = the fine-tune resolution), mask_threshold, batch_size. Output: a DataFrame with prompt,
seed, image (base64 PNG, RGB), mask (base64 PNG, mode L, 0/255) and generator_version: JSON-ready, so
`mlflow models serve` answers with it as it is (see README, "Serving the generator").

    model = mlflow.pyfunc.load_model("models:/skindualgen-generator@challenger")
    out = model.predict(pd.DataFrame({"category": ["mel"], "seed": [0]}), params={"num_inference_steps": 45})
    image, mask = decode_png(out["image"][0]), decode_png(out["mask"][0])   # HxWx3 / HxW uint8 arrays

What the logged model carries (artifacts): `vae` (the adapted 4-channel VAE folder), `lora` (the LoRA folder) and
`base`: for a local diffusers base (a folder, or a base.json pointer that leads to one) the whole folder, weights
included; for a hub id a base.json pointer pinned to the commit found in the local Hugging Face cache (the target
machine loads that commit from its own cache or downloads it); for a random preset (`sd2-base-random`) a pointer
to the preset, rebuilt from config on load. The project code (`components/`) travels as code_paths and the
pinned pip requirements as requirements.txt.
"""
from __future__ import annotations

import base64
import importlib.metadata
import io
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {"num_inference_steps": 45, "guidance_scale": 1.22, "seed": -1, "height": 0,
                                  "width": 0, "mask_threshold": 0.5, "batch_size": 8}
PARAM_TYPES = {"num_inference_steps": "long", "guidance_scale": "double", "seed": "long", "height": "long",
               "width": "long", "mask_threshold": "double", "batch_size": "long"}
DEVICE_ENV = "SKINDUALGEN_DEVICE"   # e.g. cpu / cuda:1; default: cuda when available


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of components.generator.sampling.DualGenerator (artifacts: base, vae, lora)."""

    def load_context(self, context) -> None:
        from components.generator.sampling import DualGenerator

        art = context.artifacts
        self.generator = DualGenerator.from_dirs(art["base"], art["vae"], art.get("lora"),
                                                 device=os.environ.get(DEVICE_ENV) or None)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        p = {**DEFAULT_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
        df = pd.DataFrame(model_input)
        prompts = [resolve_prompt(row) for row in df.to_dict("records")]
        seeds = resolve_seeds(df, int(p["seed"]))
        pairs = self.generator.generate(
            prompts, seeds, num_inference_steps=int(p["num_inference_steps"]),
            guidance_scale=float(p["guidance_scale"]), height=int(p["height"]) or None,
            width=int(p["width"]) or None, batch_size=int(p["batch_size"]),
            mask_threshold=float(p["mask_threshold"]), progress=False)
        return pd.DataFrame({"prompt": prompts, "seed": seeds,
                             "image": [encode_png(img) for img, _ in pairs],
                             "mask": [encode_png(m.astype(np.uint8) * 255) for _, m in pairs],
                             "generator_version": self.generator.version})


def encode_png(array: np.ndarray) -> str:
    """An HxWx3 (RGB) or HxW (L) uint8 array as a base64 PNG string."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(data: str) -> np.ndarray:
    """A base64 PNG string from the generator's output as a uint8 array (HxWx3 image, HxW 0/255 mask)."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data))) as img:
        return np.asarray(img).copy()


def resolve_prompt(row: dict) -> str:
    """The row's prompt, else the paper's template for its category; neither is a ModelError."""
    from components.data.categories import ALIASES, normalise_category
    from components.data.prompts import template_prompt
    from components.errors import DataError, ModelError

    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    category = row.get("category")
    if isinstance(category, str) and category.strip():
        try:
            code = normalise_category(category, sorted(set(ALIASES.values())))
        except DataError as exc:
            raise ModelError(str(exc)) from None
        return template_prompt(code)
    raise ModelError("each generator input row needs a non-empty `prompt` or `category`")


def resolve_seeds(df: pd.DataFrame, default: int) -> list[int]:
    """One seed per row: the row's `seed`, else `default` + the row index (default < 0: a ModelError)."""
    from components.errors import ModelError

    values = df["seed"].tolist() if "seed" in df.columns else [None] * len(df)
    seeds = []
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if default < 0:
                raise ModelError(f"generator input row {i} has no seed: give a `seed` column (one integer per "
                                 f"sample) or the `seed` param (row i then uses seed + i)")
            seeds.append(default + i)
        else:
            seeds.append(int(value))
    return seeds


def signature():
    """Model signature: (category | prompt, seed) inputs, the sampling params and the output columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "category", required=False), ColSpec("string", "prompt", required=False),
                     ColSpec("long", "seed", required=False)])
    outputs = Schema([ColSpec("string", "prompt"), ColSpec("long", "seed"), ColSpec("string", "image"),
                      ColSpec("string", "mask"), ColSpec("string", "generator_version")])
    params = ParamSchema([ParamSpec(k, PARAM_TYPES[k], v) for k, v in DEFAULT_PARAMS.items()])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _requirements() -> list[str]:
    out = []
    for dist in ("torch", "diffusers", "transformers", "peft", "safetensors", "accelerate", "tokenizers",
                 "huggingface-hub", "mlflow", "pandas", "numpy", "pillow", "tqdm", "pyyaml", "albumentations",
                 "opencv-python-headless"):
        try:
            # without a local label (torch 2.x+cu130): the plain version resolves on PyPI, on another machine
            out.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def portable_base(base: str | Path, scratch: str | Path) -> tuple[Path, str]:
    """The folder to log as the model's `base` artifact and what it is (folder | hub | preset).

    A local diffusers folder (given directly or through base.json pointers) is logged itself, so the model carries
    its weights. A hub id or a random preset becomes a base.json pointer written under `scratch`; a hub id is
    pinned to the commit in the local Hugging Face cache when it is there.
    """
    from components.errors import ModelError
    from components.generator import base_models, presets

    ref, revision = base_models.resolve_pointer(base)
    if Path(ref).is_dir():
        base_models.check_folder(ref)
        return Path(ref), "folder"
    if ref in presets.PRESETS:
        if presets.PRESETS.create(ref).pretrain:
            raise ModelError(f"base model {ref!r} is trained by the `pretrain` stage; log its output folder "
                             f"(models/base) instead of the preset name")
        return base_models.write_pointer(Path(scratch) / "base", ref), "preset"
    base_models.validate_ref(ref)            # ModelError unless it has the form of a hub id
    revision = revision or base_models.cached_hub_revision(ref)
    if revision is None:
        log.warning("base model %s is not in the local Hugging Face cache: the registered generator points at "
                    "its current main revision, which may change", ref)
    return base_models.write_pointer(Path(scratch) / "base", ref, revision), "hub"


def log_generator(base_dir: str | Path, vae_dir: str | Path, lora_dir: str | Path | None,
                  name: str = "generator"):
    """Log the generator to the active run as a portable pyfunc model (see the module docstring for what it
    carries); returns mlflow's ModelInfo."""
    import components

    with tempfile.TemporaryDirectory(prefix="skindualgen-base-") as scratch:
        base, kind = portable_base(base_dir, scratch)
        artifacts = {"base": str(base), "vae": str(vae_dir)}
        if lora_dir:
            artifacts["lora"] = str(lora_dir)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=GeneratorModel(), artifacts=artifacts, signature=signature(),
            code_paths=[str(Path(components.__file__).parent)], pip_requirements=_requirements(),
            metadata={"base_kind": kind})
    return info
