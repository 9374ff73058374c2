"""Batched, resumable, atomic writing of a synthetic dataset from a plan.

Layout of the output folder:
  images/<id>.png, masks/<id>.png (L, 0/255)   one pair per accepted sample
  records/<id>.json                             per-sample record, written last: its presence commits the sample
  manifest.csv                                  assembled from the records at the end (atomic)
  rejections.csv                                every rejected attempt with its reason (atomic)

A sample is finished when its record exists, was written for exactly the same generation spec (prompt, seed,
steps, guidance, resolution, threshold, filter, attempts, generator version) and, if accepted, its PNGs still
hash to the recorded md5. A rerun generates only the unfinished samples. Each file is written through
components.atomic, so an interruption never leaves a half-written PNG, record or manifest; the manifest of an
earlier run is removed before any sample is regenerated, so no manifest ever describes files it did not see.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from components import atomic
from components.data import manifest
from components.data.mask_stats import compactness
from components.data.prompts import class_prefix
from components.errors import DataError, ModelError
from components.generator.pair_filter import FilterConfig, check_mask
from components.generator.synthesis_plan import PlannedSample
from components.hashing import file_digest
from components.progress import progress_bar

log = logging.getLogger(__name__)

ORIGIN = "skindualgen"
REJECTION_COLUMNS = ("image_id", "category", "attempt", "seed", "reason", "area_fraction", "components", "final")


class PairGenerator(Protocol):
    """What the writer needs from a generator (components.generator.sampling.DualGenerator fits)."""
    version: str

    def generate(self, prompts: list[str], seeds: list[int], num_inference_steps: int = 45,
                 guidance_scale: float = 1.22, height: int | None = None, width: int | None = None,
                 batch_size: int = 8, mask_threshold: float = 0.5,
                 progress: bool = True) -> list[tuple[np.ndarray, np.ndarray]]: ...


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings shared by every sample of a run; resolution 0 = the generator's own size."""
    num_inference_steps: int = 45
    guidance_scale: float = 1.22
    resolution: int = 0
    mask_threshold: float = 0.5
    batch_size: int = 8
    max_attempts: int = 3


@dataclass
class WriteSummary:
    """Counts and timings of one writer run (timings of resumed samples come from their records)."""
    n_planned: int = 0
    n_skipped: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    rejection_events: int = 0
    attempts_this_run: int = 0
    seconds_this_run: float = 0.0
    attempts_total: int = 0
    generation_seconds_total: float = 0.0
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    accepted_per_class: dict[str, int] = field(default_factory=dict)

    @property
    def seconds_per_pair(self) -> float:
        """Mean generation time per generated pair (rejected attempts included)."""
        return self.generation_seconds_total / self.attempts_total if self.attempts_total else float("nan")


def paths_of(out_dir: Path, sample_id: str) -> dict[str, Path]:
    return {"image": out_dir / "images" / f"{sample_id}.png", "mask": out_dir / "masks" / f"{sample_id}.png",
            "record": out_dir / "records" / f"{sample_id}.json"}


def generation_spec(sample: PlannedSample, settings: GenerationSettings, filt: FilterConfig,
                    generator_version: str) -> dict:
    """Everything that determines a sample's outcome; a record is reused only if this matches exactly."""
    return {
        **sample.as_dict(), "generator_version": generator_version,
        "num_inference_steps": settings.num_inference_steps, "guidance_scale": settings.guidance_scale,
        "resolution": settings.resolution, "mask_threshold": settings.mask_threshold,
        "max_attempts": settings.max_attempts, "filter": filt.as_dict(),
    }


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_finished(out_dir: Path, spec: dict) -> bool:
    """True when the sample's record matches `spec` and its files (if accepted) are intact."""
    p = paths_of(out_dir, spec["sample_id"])
    rec = read_record(p["record"])
    if rec is None or rec.get("spec") != spec:
        return False
    if rec.get("status") == "rejected":
        return True
    for kind in ("image", "mask"):
        if not p[kind].is_file() or file_digest(p[kind]) != rec.get(f"{kind}_md5"):
            return False
    return True


def _check_output(pair, sample: PlannedSample) -> tuple[np.ndarray, np.ndarray]:
    image, mask = (np.asarray(x) for x in pair)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ModelError(f"generator returned image of shape {image.shape} dtype {image.dtype} for "
                         f"{sample.sample_id}; expected HxWx3 uint8")
    if mask.shape != image.shape[:2] or not set(np.unique(mask).tolist()) <= {0, 1}:
        raise ModelError(f"generator returned mask of shape {mask.shape} (values {np.unique(mask)[:4]}) for "
                         f"{sample.sample_id}; expected an HxW 0/1 mask of the image's size")
    return image, mask.astype(np.uint8)


def _write_sample(out_dir: Path, spec: dict, image: np.ndarray, mask: np.ndarray, attempt: int, seed: int,
                  rejections: list[dict], seconds: float, verdict) -> None:
    p = paths_of(out_dir, spec["sample_id"])
    atomic.write_png(p["image"], Image.fromarray(image, "RGB"))
    atomic.write_png(p["mask"], Image.fromarray(mask * 255, "L"))
    record = {
        "spec": spec, "status": "accepted", "attempt": attempt, "seed_used": seed,
        "width": int(image.shape[1]), "height": int(image.shape[0]),
        "image_md5": file_digest(p["image"]), "mask_md5": file_digest(p["mask"]),
        "area_fraction": verdict.area_fraction, "components": verdict.components,
        "compactness": compactness(mask), "rejections": rejections,
        "attempts": attempt + 1, "generation_seconds": seconds,
    }
    atomic.write_json(p["record"], record)


def _write_rejected(out_dir: Path, spec: dict, rejections: list[dict], seconds: float) -> None:
    p = paths_of(out_dir, spec["sample_id"])
    for kind in ("image", "mask"):
        p[kind].unlink(missing_ok=True)
    atomic.write_json(p["record"], {"spec": spec, "status": "rejected", "rejections": rejections,
                                    "attempts": len(rejections), "generation_seconds": seconds})


def write_samples(plan: Sequence[PlannedSample], generator: PairGenerator, out_dir: str | Path,
                  settings: GenerationSettings, filt: FilterConfig, progress: bool = True) -> WriteSummary:
    """Generate every unfinished sample of `plan` in batches, filter, and commit each one atomically.

    A rejected pair is retried with the sample's next attempt seed until `max_attempts`; a sample whose
    attempts are all rejected is recorded as rejected (and is absent from the manifest).
    """
    out = Path(out_dir)
    if settings.max_attempts < 1 or settings.batch_size < 1:
        raise ValueError("max_attempts and batch_size must be >= 1")
    version = str(generator.version)
    specs = {s.sample_id: generation_spec(s, settings, filt, version) for s in plan}
    pending = [s for s in plan if not is_finished(out, specs[s.sample_id])]
    summary = WriteSummary(n_planned=len(plan), n_skipped=len(plan) - len(pending))
    if pending:
        (out / manifest.MANIFEST_NAME).unlink(missing_ok=True)
    log.info("synthesis plan: %d samples, %d already finished, %d to generate", len(plan),
             summary.n_skipped, len(pending))

    queue: deque[tuple[PlannedSample, int]] = deque((s, 0) for s in pending)
    history: dict[str, list[dict]] = {s.sample_id: [] for s in pending}
    seconds: dict[str, float] = {s.sample_id: 0.0 for s in pending}
    size = settings.resolution or None
    bar = progress_bar(total=len(pending), desc="synthesize", unit="pair", disable=not progress)
    try:
        while queue:
            batch = [queue.popleft() for _ in range(min(settings.batch_size, len(queue)))]
            t0 = time.perf_counter()
            outputs = generator.generate(
                [s.prompt for s, _ in batch], [s.seed_for(a) for s, a in batch],
                num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
                height=size, width=size, batch_size=len(batch), mask_threshold=settings.mask_threshold,
                progress=False)
            dt = time.perf_counter() - t0
            if len(outputs) != len(batch):
                raise ModelError(f"generator returned {len(outputs)} pairs for a batch of {len(batch)}")
            summary.attempts_this_run += len(batch)
            summary.seconds_this_run += dt
            for (sample, attempt), pair in zip(batch, outputs):
                sid = sample.sample_id
                seconds[sid] += dt / len(batch)
                image, mask = _check_output(pair, sample)
                verdict = check_mask(mask, filt)
                seed = sample.seed_for(attempt)
                if verdict.accepted:
                    _write_sample(out, specs[sid], image, mask, attempt, seed, history[sid], seconds[sid], verdict)
                    bar.update(1)
                    continue
                history[sid].append({"attempt": attempt, "seed": seed, "reason": verdict.reason,
                                     "area_fraction": verdict.area_fraction, "components": verdict.components})
                if attempt + 1 < settings.max_attempts:
                    queue.append((sample, attempt + 1))
                else:
                    _write_rejected(out, specs[sid], history[sid], seconds[sid])
                    bar.update(1)
            bar.set_postfix(rejected=sum(len(h) for h in history.values()))
    finally:
        bar.close()
    return _tally(out, plan, specs, summary)


def _tally(out: Path, plan: Sequence[PlannedSample], specs: dict[str, dict], summary: WriteSummary) -> WriteSummary:
    for s in plan:
        rec = read_record(paths_of(out, s.sample_id)["record"]) or {}
        summary.attempts_total += int(rec.get("attempts", 0))
        summary.generation_seconds_total += float(rec.get("generation_seconds", 0.0))
        for r in rec.get("rejections", []):
            summary.rejection_events += 1
            summary.rejection_reasons[r["reason"]] = summary.rejection_reasons.get(r["reason"], 0) + 1
        if rec.get("status") == "accepted":
            summary.n_accepted += 1
            summary.accepted_per_class[s.category] = summary.accepted_per_class.get(s.category, 0) + 1
        else:
            summary.n_rejected += 1
    return summary


def description_for(sample: PlannedSample) -> str:
    """The manifest description: the prompt when it is a full description (starts with the class prefix
    "a dermoscopic lesion photo of <class> for skin cancer diagnosis, "), else that prefix plus a note."""
    prefix = class_prefix(sample.category)
    return sample.prompt if sample.prompt.startswith(prefix) else prefix + "generated from the class prompt"


def _remove_stale(out: Path, keep: set[str]) -> int:
    """Delete files of samples that are no longer planned, and temporaries a killed process left behind."""
    removed = 0
    for sub, suffix in (("images", ".png"), ("masks", ".png"), ("records", ".json")):
        folder = out / sub
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            stale = f.name.startswith("syn_") and f.suffix == suffix and f.stem not in keep
            orphan_tmp = f.name.startswith(".syn_") and f.name.endswith(".tmp")
            if stale or orphan_tmp:
                f.unlink()
                removed += 1
    return removed


def assemble(out_dir: str | Path, plan: Sequence[PlannedSample]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write manifest.csv (accepted samples, plan order, full provenance) and rejections.csv atomically.

    Every planned sample must be finished (run `write_samples` first). Returns (manifest, rejections).
    """
    out = Path(out_dir)
    rows, rejected = [], []
    for s in plan:
        rec = read_record(paths_of(out, s.sample_id)["record"])
        if rec is None or rec.get("spec", {}).get("sample_id") != s.sample_id:
            raise DataError(f"{out / 'records'}: no record for planned sample {s.sample_id}; "
                            f"run the synthesize stage again to finish the plan")
        spec = rec["spec"]
        for r in rec.get("rejections", []):
            rejected.append({"image_id": s.sample_id, "category": s.category, **r,
                             "final": rec["status"] == "rejected" and r is rec["rejections"][-1]})
        if rec["status"] != "accepted":
            continue
        rows.append({
            "image_id": s.sample_id, "category": s.category, "split": "train",
            "image_path": f"images/{s.sample_id}.png", "mask_path": f"masks/{s.sample_id}.png",
            "description": description_for(s), "source": "synthetic", "origin": ORIGIN,
            "width": rec["width"], "height": rec["height"],
            "prompt": s.prompt, "seed": rec["seed_used"], "generator_version": spec["generator_version"],
            "num_inference_steps": spec["num_inference_steps"], "guidance_scale": spec["guidance_scale"],
            "attempt": rec["attempt"], "mask_threshold": spec["mask_threshold"],
            "area_fraction": rec["area_fraction"], "components": rec["components"],
        })
    removed = _remove_stale(out, {s.sample_id for s in plan})
    if removed:
        log.info("removed %d files of samples no longer in the plan", removed)
    rej = pd.DataFrame(rejected, columns=list(REJECTION_COLUMNS))
    with atomic.atomic_path(out / "rejections.csv") as tmp:
        rej.to_csv(tmp, index=False)
    if not rows:
        raise DataError(f"{out}: every planned sample was rejected by the pair filter (see rejections.csv); "
                        f"loosen the filter thresholds or raise max_attempts")
    df = pd.DataFrame(rows)
    manifest.write_manifest(df, out)
    return df, rej

