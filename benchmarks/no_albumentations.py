"""A stand-in for albumentations where it is not installed (the lent GPU machine), for the GPU check only.

components/data/transforms.py imports albumentations at module level, and components/generator/data.py imports
transforms, so `components.generator.finetune_trainer` and `components.generator.vae_trainer` cannot even be
imported without it (FinetuneTrainer builds a SeededPairs dataset whose transform is `build_transforms(...)`).
The GPU check and the `gpu` tests never augment: they train on in-memory batches (FinetuneTrainer.train_step)
or with augment: false, where the transform is a single resize. This module provides exactly that:
`Compose` (with `set_random_seed`) and `Resize` (cv2, which the lent machine has), so datasets still load and
resize; any other transform raises ModuleNotFoundError when it is constructed, naming the fix.

`install()` does nothing where the real albumentations is importable (this checkout's .venv, CI).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

NAME = "albumentations"
MARKER = "__skindualgen_stand_in__"


class Compose:
    def __init__(self, transforms: list, seed: int | None = None, **_: Any):
        self.transforms = list(transforms)

    def set_random_seed(self, seed: int | None) -> None:   # Resize draws nothing
        pass

    def __call__(self, **data: Any) -> dict[str, Any]:
        for t in self.transforms:
            data = t(**data)
        return data


class Resize:
    def __init__(self, height: int, width: int, interpolation: int = 1, mask_interpolation: int = 0,
                 p: float = 1.0, **_: Any):
        self.height, self.width = int(height), int(width)
        self.interpolation, self.mask_interpolation = interpolation, mask_interpolation

    def __call__(self, **data: Any) -> dict[str, Any]:
        import cv2

        out = dict(data)
        size = (self.width, self.height)
        if "image" in data:
            out["image"] = cv2.resize(data["image"], size, interpolation=self.interpolation)
        if data.get("mask") is not None:
            out["mask"] = cv2.resize(data["mask"], size, interpolation=self.mask_interpolation)
        return out


def _unavailable(name: str) -> type:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ModuleNotFoundError(
            f"albumentations.{name}: albumentations is not installed here (the lent GPU machine has none), and "
            f"the stand-in of benchmarks/no_albumentations.py only resizes; use augment: false, or carry "
            f"albumentations and its dependencies as wheels")
    return type(name, (), {"__init__": __init__})


def _module_getattr(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return _unavailable(name)


def install() -> bool:
    """Register the stand-in as `albumentations` unless the real one is importable; True if it was installed."""
    existing = sys.modules.get(NAME)
    if existing is not None:
        return bool(getattr(existing, MARKER, False))
    if importlib.util.find_spec(NAME) is not None:
        return False
    module = types.ModuleType(NAME, __doc__)
    module.__spec__ = importlib.machinery.ModuleSpec(NAME, loader=None)
    module.__version__ = "0+skindualgen-stand-in"
    module.Compose, module.Resize = Compose, Resize
    module.__getattr__ = _module_getattr
    setattr(module, MARKER, True)
    sys.modules[NAME] = module
    return True


def is_stand_in(module: types.ModuleType | None) -> bool:
    return bool(getattr(module, MARKER, False))
