"""The dual generator as an MLflow pyfunc model (`skindualgen-generator` in the registry).

Input: a DataFrame with `seed` and either `prompt` or `category` (a class code or common name, turned into the
paper's prompt). Params: num_inference_steps, guidance_scale, height, width (0 = the fine-tune resolution),
mask_threshold, batch_size. Output: a DataFrame with prompt, seed, image (HxWx3 uint8 array), mask (HxW uint8
0/1 array) and generator_version.

    model = mlflow.pyfunc.load_model("models:/skindualgen-generator@challenger")
    out = model.predict(pd.DataFrame({"category": ["mel"], "seed": [0]}), params={"num_inference_steps": 45})
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

DEFAULT_PARAMS: dict[str, Any] = {"num_inference_steps": 45, "guidance_scale": 1.22, "height": 0, "width": 0,
                                  "mask_threshold": 0.5, "batch_size": 8}
DEVICE_ENV = "SKINDUALGEN_DEVICE"   # e.g. cpu / cuda:1; default: cuda when available


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of components.generator.sampling.DualGenerator (artifacts: base, vae, lora)."""

    def load_context(self, context) -> None:
        from components.generator.sampling import DualGenerator

        art = context.artifacts
        self.generator = DualGenerator.from_dirs(art["base"], art["vae"], art.get("lora"),
                                                 device=os.environ.get(DEVICE_ENV) or None)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from components.errors import ModelError

        p = {**DEFAULT_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
        df = pd.DataFrame(model_input)
        if "seed" not in df.columns:
            raise ModelError("generator input needs a `seed` column (one integer per sample)")
        prompts = [resolve_prompt(row) for row in df.to_dict("records")]
        seeds = [int(s) for s in df["seed"]]
        pairs = self.generator.generate(
            prompts, seeds, num_inference_steps=int(p["num_inference_steps"]),
            guidance_scale=float(p["guidance_scale"]), height=int(p["height"]) or None,
            width=int(p["width"]) or None, batch_size=int(p["batch_size"]),
            mask_threshold=float(p["mask_threshold"]), progress=False)
        return pd.DataFrame({"prompt": prompts, "seed": seeds, "image": [img for img, _ in pairs],
                             "mask": [m for _, m in pairs], "generator_version": self.generator.version})


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


def signature():
    """Model signature: (category | prompt, seed) inputs and the sampling params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "category", required=False), ColSpec("string", "prompt", required=False),
                     ColSpec("long", "seed")])
    types = {"num_inference_steps": "long", "guidance_scale": "double", "height": "long", "width": "long",
             "mask_threshold": "double", "batch_size": "long"}
    params = ParamSchema([ParamSpec(k, types[k], v) for k, v in DEFAULT_PARAMS.items()])
    return ModelSignature(inputs=inputs, params=params)


def _requirements() -> list[str]:
    out = []
    for dist in ("torch", "diffusers", "transformers", "peft", "safetensors", "accelerate", "tokenizers", "mlflow",
                 "pandas", "numpy", "pillow", "tqdm", "pyyaml", "albumentations", "opencv-python-headless"):
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def log_generator(base_dir: str | Path, vae_dir: str | Path, lora_dir: str | Path | None,
                  name: str = "generator"):
    """Log the generator to the active run as a pyfunc model; returns mlflow's ModelInfo."""
    import components

    artifacts = {"base": str(base_dir), "vae": str(vae_dir)}
    if lora_dir:
        artifacts["lora"] = str(lora_dir)
    return mlflow.pyfunc.log_model(
        name=name, python_model=GeneratorModel(), artifacts=artifacts, signature=signature(),
        code_paths=[str(Path(components.__file__).parent)], pip_requirements=_requirements())
