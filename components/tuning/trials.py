"""What the sweep's Ray workers run: one fine-tune per rank (phase 1), reference features, sampling trials (phase 2).

Phase 1 trains rank r once into `<storage>/<name>/ranks/rank_<r>/` (lora/, checkpoints/, and `complete.json` once
the LoRA is saved). The folder carries `fingerprint.json`: the rank's fine-tune config (without the device) and
the md5 of the dataset manifest and descriptions. A complete folder with the same fingerprint is reused, an
interrupted one resumes from its checkpoints, one with another fingerprint is trained again from scratch.

Phase 2 trials only load that LoRA and sample; they are scored by the objective
(`components.tuning.objectives`) against features of real training images, computed once per sweep.
Heavy imports (torch, diffusers) happen inside the functions, so the driver stays light.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from components import atomic
from components.config import load_section, to_dict
from components.data.manifest import manifest_file, read_manifest
from components.data.prompts import template_prompt
from components.generator.config import FinetuneConfig
from components.hashing import bytes_digest, dvc_md5, file_digest
from components.tuning.objectives import OBJECTIVES, FrechetToReference
from components.tuning.reporting import MetricsLog, Report, TrialInfo, TrialTracker

MARKER = "complete.json"
FINGERPRINT = "fingerprint.json"

TrainerFactory = Callable[[FinetuneConfig, MetricsLog], Any]   # (config, on_metrics) -> object with .run()
TrialFn = Callable[[dict, dict, Report], None]                  # a sampling trial: (config, settings, report)


def new_trainer(cfg: FinetuneConfig, on_metrics: MetricsLog) -> Any:
    """The trainer phase 1 constructs, once per rank (the sweep looks this name up when it starts)."""
    from components.generator.finetune_trainer import FinetuneTrainer

    return FinetuneTrainer(cfg, on_metrics=on_metrics, progress=False)


def _abs(root: str, path: str) -> str:
    """Trials run in their own folder: make project-relative paths absolute."""
    return path if not path or Path(path).is_absolute() else str(Path(root) / path)


def trial_device(settings: dict) -> str:
    """The trial's device: cuda when Ray gave it a GPU, else cpu (resolved by the project's one resolver)."""
    from components.device import resolve_device  # torch only when a trial actually needs a device

    return str(resolve_device("cuda" if settings.get("use_gpu") else "cpu"))


def digest(obj: Any) -> str:
    return bytes_digest(json.dumps(obj, sort_keys=True, default=str).encode())[:16]


# ------------------------------------------------------------------------------------------- phase 1
@dataclass(frozen=True)
class RankJob:
    rank: int
    cfg: FinetuneConfig     # device left at the params value; the worker sets its own
    rank_dir: str
    fingerprint: str


def plan_rank(settings: dict, rank: int, ranks_dir: Path) -> RankJob:
    """The params.yaml finetune section with this rank, the sweep's epochs, its own folders and absolute paths."""
    root = settings["root"]
    base = load_section(FinetuneConfig, "finetune", Path(root) / settings["finetune_params"])
    rank_dir = ranks_dir / f"rank_{rank}"
    cfg = dataclasses.replace(
        base,
        base_model=_abs(root, settings["base_dir"]), vae_dir=_abs(root, settings["vae_dir"]),
        data_dir=_abs(root, settings["data_dir"]), descriptions_csv=_abs(root, settings["descriptions"]),
        out_dir=str(rank_dir / "lora"), checkpoint_dir=str(rank_dir / "checkpoints"),
        metrics_file=str(rank_dir / "finetune.json"), lora_rank=int(rank), lora_alpha=float(rank),
        epochs=int(settings["max_epochs"]), max_train_steps=0, resume="latest", register=False,
        validation_every_epochs=10**6)
    identity = {k: v for k, v in to_dict(cfg).items() if k != "device"}
    for key, path in (("manifest_md5", manifest_file(cfg.data_dir)), ("descriptions_md5", Path(cfg.descriptions_csv))):
        identity[key] = file_digest(path) if path.is_file() else ""
    return RankJob(int(rank), cfg, str(rank_dir), digest(identity))


def completed(job: RankJob) -> dict | None:
    """The saved marker of a complete LoRA of exactly this job, else None."""
    marker = Path(job.rank_dir) / MARKER
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if done.get("fingerprint") != job.fingerprint or not Path(done.get("lora_dir", "")).is_dir():
        return None
    return done


def prepare_rank_dir(job: RankJob, resume: bool) -> None:
    """Keep the folder (checkpoints of an interrupted run of the same job) or clear it (another job, no resume)."""
    folder = Path(job.rank_dir)
    stamp = folder / FINGERPRINT
    same = stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == job.fingerprint
    if folder.exists() and not (resume and same):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(stamp, {"fingerprint": job.fingerprint, "lora_rank": job.rank})


def train_rank(job: RankJob, settings: dict, tracker: TrialTracker, factory: TrainerFactory) -> dict:
    """Phase-1 worker: fine-tune this rank once (resuming its own checkpoints), save the LoRA, mark it complete."""
    cfg = dataclasses.replace(job.cfg, device=trial_device(settings))
    info = TrialInfo(trial_id=f"rank_{job.rank}", name=f"finetune_rank_{job.rank}", trial_dir=Path(job.rank_dir),
                     phase="finetune")
    params = {"lora_rank": job.rank, "lora_alpha": cfg.lora_alpha, "epochs": cfg.epochs,
              "resolution": cfg.resolution, "fingerprint": job.fingerprint}
    with tracker.trial(info, params) as log:
        trainer = factory(cfg, log)
        result = trainer.run()
        final = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
        log({f"final.{k}": v for k, v in final.items()}, int(final.get("steps", 0)))
    marker = {"lora_rank": job.rank, "fingerprint": job.fingerprint, "lora_dir": str(result.lora_dir),
              "lora_md5": dvc_md5(result.lora_dir), "metrics": final}
    atomic.write_json(Path(job.rank_dir) / MARKER, marker)
    return marker


# ---------------------------------------------------------------------------------- reference features
def reference_plan(settings: dict, size: int) -> tuple[str, dict]:
    """(file name, identity) of the reference features: real training images at `size`, a seeded subset."""
    data_dir = _abs(settings["root"], settings["data_dir"])
    identity = {"data_dir": data_dir, "manifest_md5": file_digest(manifest_file(data_dir)),
                "base_dir": _abs(settings["root"], settings["base_dir"]), "size": size,
                "reference_images": settings["reference_images"], "seed": settings["seed"]}
    return f"reference_{digest(identity)}.npz", identity


def reference_features(settings: dict, size: int, path: str) -> str:
    """Features (project VAE space) of the real training images the samples are compared with; saved once."""
    if Path(path).is_file():
        return path
    from components.quality.evaluate import load_set
    from components.quality.features import create_extractor

    root = _abs(settings["root"], settings["data_dir"])
    train = read_manifest(root)
    train = train[train["split"] == "train"]
    k = int(settings["reference_images"]) or len(train)
    if k < len(train):
        train = train.sample(n=k, random_state=int(settings["seed"]))
    ref = load_set("real_train", root, train, size)
    extractor = create_extractor("vae", vae_dir=_abs(settings["root"], settings["base_dir"]),
                                 device=trial_device(settings))
    features = extractor(ref.images)
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, features=features, categories=np.asarray(ref.categories, dtype=str))
    return path


def proportional_classes(categories: list[str] | np.ndarray, n: int) -> list[str]:
    """n class labels in the reference set's proportions (deterministic largest-share allocation)."""
    ordered = sorted(str(c) for c in categories)
    return [ordered[int((i + 0.5) * len(ordered) / n)] for i in range(n)]


# ------------------------------------------------------------------------------------------- phase 2
def sampling_trial(config: dict, settings: dict, report: Report) -> None:
    """Load the rank's saved LoRA, generate `samples_per_trial` pairs with the trial's steps and guidance (the
    same prompts and seeds in every trial) and report the objective with its standard error."""
    from components.generator.sampling import DualGenerator
    from components.quality.evaluate import resize_image
    from components.quality.features import create_extractor

    objective = OBJECTIVES.create(settings["objective"])
    ref = np.load(settings["reference_file"])
    ref_features, ref_classes = ref["features"], list(ref["categories"])
    device = trial_device(settings)
    root, size, n = settings["root"], int(settings["size"]), int(settings["samples_per_trial"])
    gen = DualGenerator.from_dirs(_abs(root, settings["base_dir"]), _abs(root, settings["vae_dir"]),
                                  config["_lora_dir"], device=device)
    prompts = [template_prompt(c) for c in proportional_classes(ref_classes, n)]
    seeds = [int(settings["seed"]) + i for i in range(n)]
    t0 = time.perf_counter()
    pairs = gen.generate(prompts, seeds, num_inference_steps=int(config["num_inference_steps"]),
                         guidance_scale=float(config["guidance_scale"]), height=size, width=size,
                         batch_size=int(settings["sample_batch_size"]), progress=False)
    seconds = time.perf_counter() - t0
    del gen
    extractor = create_extractor("vae", vae_dir=_abs(root, settings["base_dir"]), device=device)
    features = extractor(np.stack([resize_image(img, size) for img, _ in pairs]))
    est = objective.estimate(features, ref_features)
    metrics = {objective.metric: est.value, f"{objective.metric}_se": est.se, "n_samples": float(n),
               "n_reference": float(len(ref_features)),
               "empty_mask_fraction": float(np.mean([m.sum() == 0 for _, m in pairs])),
               "seconds_sampling": seconds}
    if objective.metric != "fd_vae":   # secondary figure, for comparison with the quality stage (biased at small n)
        metrics["fd_vae"] = FrechetToReference(ref_features)(features)
    report(metrics, 1)
