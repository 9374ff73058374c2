"""Sweep objectives: what one trial trains and the figures it reports after every epoch.

A trial function is `trial_fn(config, settings, report)`; `report(metrics, step)` (see
`components.tuning.reporting`) records the figures with the sweep's tracker and reports them to Ray Tune.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from ray import tune

from components.config import load_section
from components.data.manifest import read_manifest
from components.data.prompts import template_prompt
from components.generator.config import FinetuneConfig
from components.registry import Registry
from components.tuning.reporting import Report

TrialFn = Callable[[dict, dict, Report], None]


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str
    trial_fn: TrialFn


OBJECTIVES = Registry[Objective]("sweep objective", hint="set tune.objective in params.yaml")


def _abs(root: str, path: str) -> str:
    """Trials run in their own folder: make project-relative paths absolute."""
    return path if not path or Path(path).is_absolute() else str(Path(root) / path)


def trial_device(settings: dict) -> str:
    """The trial's device: cuda when Ray gave it a GPU, else cpu (resolved by the project's one resolver)."""
    from components.device import resolve_device  # torch only when a trial actually needs a device

    return str(resolve_device("cuda" if settings.get("use_gpu") else "cpu"))


def trial_finetune_config(config: dict, settings: dict, trial_dir: Path, epochs: int) -> FinetuneConfig:
    """The params.yaml finetune section with the trial's rank, its own output folders and absolute paths."""
    root = settings["root"]
    base = load_section(FinetuneConfig, "finetune", Path(root) / settings["finetune_params"])
    return dataclasses.replace(
        base,
        base_model=_abs(root, settings["base_dir"]), vae_dir=_abs(root, settings["vae_dir"]),
        data_dir=_abs(root, settings["data_dir"]), descriptions_csv=_abs(root, settings["descriptions"]),
        out_dir=str(trial_dir / "lora"), checkpoint_dir=str(trial_dir / "checkpoints"),
        metrics_file=str(trial_dir / "finetune.json"), lora_rank=int(config["lora_rank"]),
        lora_alpha=float(config["lora_rank"]), epochs=epochs, max_train_steps=0, resume="latest",
        checkpoints_total_limit=1, register=False, validation_every_epochs=10**6,
        device=trial_device(settings),
    )


def _reference(settings: dict, size: int) -> tuple[np.ndarray, list[str]]:
    """Held-out real test images (the generator never trains on them) and their classes."""
    root = _abs(settings["root"], settings["data_dir"])
    test = read_manifest(root)
    test = test[test["split"] == "test"]
    test = test.sample(n=min(len(test), max(settings["eval_samples"] * 4, 32)), random_state=0)
    from components.quality.evaluate import load_set

    ref = load_set("real_test", root, test, size)
    return ref.images, list(ref.categories)


def fd_trial(config: dict, settings: dict, report: Report) -> None:
    """Fine-tune epoch by epoch (resuming its own checkpoints); after each, sample with the trial's steps and
    guidance and report the Fréchet distance to held-out real images in the project VAE's feature space."""
    # Imported here so that Ray workers of other objectives do not pay for diffusers and the quality stack.
    from components.generator.finetune_trainer import FinetuneTrainer
    from components.generator.sampling import DualGenerator
    from components.quality.distances import frechet_distance_features
    from components.quality.evaluate import resize_image
    from components.quality.features import create_extractor

    trial_dir = Path(tune.get_context().get_trial_dir())
    extractor = create_extractor("vae", vae_dir=_abs(settings["root"], settings["base_dir"]),
                                 device=trial_device(settings))
    ref_images, ref_classes = None, []
    for epoch in range(1, int(settings["max_epochs"]) + 1):
        cfg = trial_finetune_config(config, settings, trial_dir, epoch)
        trainer = FinetuneTrainer(cfg, progress=False)
        result = trainer.run()
        trainer.save_checkpoint()
        size = settings["eval_resolution"] or cfg.resolution
        if ref_images is None:
            ref_images, ref_classes = _reference(settings, size)
            ref_features = extractor(ref_images)
        n = int(settings["eval_samples"])
        classes = [ref_classes[i % len(ref_classes)] for i in range(n)]
        prompts = [template_prompt(c) for c in classes]
        gen = DualGenerator.from_dirs(cfg.base_model, cfg.vae_dir, result.lora_dir, device=trainer.device)
        pairs = gen.generate(prompts, list(range(n)), num_inference_steps=int(config["num_inference_steps"]),
                             guidance_scale=float(config["guidance_scale"]), height=size, width=size, progress=False)
        fake = np.stack([resize_image(img, size) for img, _ in pairs])
        fd = frechet_distance_features(extractor(fake), ref_features)
        empty = float(np.mean([m.sum() == 0 for _, m in pairs]))
        metrics = {"fd_vae": fd, "empty_mask_fraction": empty, "train_total_loss": result.metrics["final_total"]}
        report(metrics, epoch)


OBJECTIVES.register("fd_vae", Objective(metric="fd_vae", mode="min", trial_fn=fd_trial))
