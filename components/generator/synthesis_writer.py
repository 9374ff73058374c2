"""Batched, resumable, atomic writing of a synthetic dataset from a plan.

Layout of the output folder:
  images/<id>.png, masks/<id>.png (L, 0/255)   one pair per accepted sample
  records/<id>.json                             per-sample record, written last: its presence commits the sample
  manifest.csv                                  assembled from the records at the end (atomic)
  rejections.csv                                every rejected attempt: sample, attempt, seed, reason and the
                                                mask's area fraction, component count and compactness (atomic)

The plan is cut into fixed batches ("units") by plan index; a unit is always generated whole (its rejected samples
retried within it), so a pair depends only on the plan, never on how many workers ran or where a run stopped. A
sample is finished when its record exists, was written for exactly the same generation spec (prompt, seed,
steps, guidance, resolution, threshold, filter, attempts, generator version) and, if accepted, its PNGs still
hash to the recorded md5. A rerun generates only the units with an unfinished sample. Each file is written through
components.atomic, so an interruption never leaves a half-written PNG, record or manifest; the manifest of an
earlier run is removed before any sample is regenerated, so no manifest ever describes files it did not see.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

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
REJECTIONS_FILE = "rejections.csv"
REJECTION_COLUMNS = ("image_id", "category", "attempt", "seed", "reason", "area_fraction", "components",
                     "compactness", "final")


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


@dataclass
class Outcome:
    """What generating one planned sample produced: the accepted pair (or None) and its rejected attempts."""
    sample_id: str
    image: np.ndarray | None
    mask: np.ndarray | None
    attempt: int
    seed: int
    rejections: list[dict]
    seconds: float
    area_fraction: float = 0.0
    components: int = 0


@dataclass(frozen=True)
class Unit:
    """A fixed slice of the plan (by plan index): the batch every run generates together, wherever it runs."""
    index: int
    samples: tuple[PlannedSample, ...]


Executor = Callable[[Sequence[Unit]], Iterator[list[Outcome]]]


def plan_units(plan: Sequence[PlannedSample], batch_size: int) -> list[Unit]:
    """The plan cut into consecutive batches of `batch_size` by plan index."""
    return [Unit(i // batch_size, tuple(plan[i:i + batch_size])) for i in range(0, len(plan), batch_size)]


def generate_unit(generator: PairGenerator, unit: Unit, settings: GenerationSettings,
                  filt: FilterConfig) -> list[Outcome]:
    """Generate one unit: the whole batch first, then its rejected samples again with their next attempt seeds
    (in plan order) until accepted or out of attempts. Nothing is written; the outcome depends on the unit only."""
    todo = [(s, 0) for s in unit.samples]
    history: dict[str, list[dict]] = {s.sample_id: [] for s in unit.samples}
    seconds: dict[str, float] = {s.sample_id: 0.0 for s in unit.samples}
    outcomes: dict[str, Outcome] = {}
    size = settings.resolution or None
    while todo:
        t0 = time.perf_counter()
        pairs = generator.generate(
            [s.prompt for s, _ in todo], [s.seed_for(a) for s, a in todo],
            num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
            height=size, width=size, batch_size=len(todo), mask_threshold=settings.mask_threshold, progress=False)
        if len(pairs) != len(todo):
            raise ModelError(f"generator returned {len(pairs)} pairs for a batch of {len(todo)}")
        dt = (time.perf_counter() - t0) / len(todo)
        retry = []
        for (sample, attempt), pair in zip(todo, pairs):
            sid, seed = sample.sample_id, sample.seed_for(attempt)
            seconds[sid] += dt
            image, mask = _check_output(pair, sample)
            verdict = check_mask(mask, filt)
            if verdict.accepted:
                outcomes[sid] = Outcome(sid, image, mask, attempt, seed, history[sid], seconds[sid],
                                        verdict.area_fraction, verdict.components)
                continue
            history[sid].append({"attempt": attempt, "seed": seed, "reason": verdict.reason,
                                 "area_fraction": verdict.area_fraction, "components": verdict.components,
                                 "compactness": compactness(mask)})
            if attempt + 1 < settings.max_attempts:
                retry.append((sample, attempt + 1))
            else:
                outcomes[sid] = Outcome(sid, None, None, attempt, seed, history[sid], seconds[sid])
        todo = retry
    return [outcomes[s.sample_id] for s in unit.samples]


def write_outcome(out_dir: Path, spec: dict, outcome: Outcome) -> None:
    """Commit one sample: its PNGs then its record (the record's presence marks it finished), all atomic."""
    p = paths_of(out_dir, spec["sample_id"])
    if outcome.image is None:
        for kind in ("image", "mask"):
            p[kind].unlink(missing_ok=True)
        atomic.write_json(p["record"], {"spec": spec, "status": "rejected", "rejections": outcome.rejections,
                                        "attempts": len(outcome.rejections), "generation_seconds": outcome.seconds})
        return
    atomic.write_png(p["image"], Image.fromarray(outcome.image, "RGB"))
    atomic.write_png(p["mask"], Image.fromarray(outcome.mask * 255, "L"))
    record = {
        "spec": spec, "status": "accepted", "attempt": outcome.attempt, "seed_used": outcome.seed,
        "width": int(outcome.image.shape[1]), "height": int(outcome.image.shape[0]),
        "image_md5": file_digest(p["image"]), "mask_md5": file_digest(p["mask"]),
        "area_fraction": outcome.area_fraction, "components": outcome.components,
        "compactness": compactness(outcome.mask), "rejections": outcome.rejections,
        "attempts": outcome.attempt + 1, "generation_seconds": outcome.seconds,
    }
    atomic.write_json(p["record"], record)


def write_samples(plan: Sequence[PlannedSample], generator: PairGenerator | None, out_dir: str | Path,
                  settings: GenerationSettings, filt: FilterConfig, progress: bool = True,
                  executor: Executor | None = None, version: str | None = None) -> WriteSummary:
    """Generate every unfinished unit of `plan` (fixed batches by plan index), filter, commit each sample.

    A rejected pair is retried with the sample's next attempt seed until `max_attempts`; a sample whose
    attempts are all rejected is recorded as rejected (and is absent from the manifest). A unit with any
    unfinished sample is generated whole, so its pairs are those of an uninterrupted run. `executor` generates
    units elsewhere (e.g. on Ray workers, components/distributed/synthesis_workers.py; then `version` names the
    generator they load) and hands the outcomes back to this process, the only writer; by default `generator`
    generates them here.
    """
    out = Path(out_dir)
    if settings.max_attempts < 1 or settings.batch_size < 1:
        raise ValueError("max_attempts and batch_size must be >= 1")
    version = str(version if version is not None else generator.version)
    specs = {s.sample_id: generation_spec(s, settings, filt, version) for s in plan}
    units = plan_units(plan, settings.batch_size)
    pending = [u for u in units if not all(is_finished(out, specs[s.sample_id]) for s in u.samples)]
    n_pending = sum(len(u.samples) for u in pending)
    summary = WriteSummary(n_planned=len(plan), n_skipped=len(plan) - n_pending)
    if pending:
        (out / manifest.MANIFEST_NAME).unlink(missing_ok=True)
    log.info("synthesis plan: %d samples in %d batches, %d already finished, %d to generate", len(plan),
             len(units), summary.n_skipped, n_pending)
    execute = executor or (lambda todo: (generate_unit(generator, u, settings, filt) for u in todo))
    t0 = time.perf_counter()
    with progress_bar(total=n_pending, desc="synthesize", unit="pair", disable=not progress) as bar:
        rejected = 0
        for outcomes in execute(pending):
            for outcome in outcomes:
                write_outcome(out, specs[outcome.sample_id], outcome)
                summary.attempts_this_run += len(outcome.rejections) + (outcome.image is not None)
                rejected += len(outcome.rejections)
            bar.update(len(outcomes))
            bar.set_postfix(rejected=rejected)
    summary.seconds_this_run = time.perf_counter() - t0
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


def assemble(out_dir: str | Path, plan: Sequence[PlannedSample],
             annotate: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write manifest.csv (accepted samples, plan order, full provenance) and rejections.csv atomically.

    Every planned sample must be finished (run `write_samples` first). `annotate` may add per-sample columns
    (it gets the manifest frame, its images already on disk, and returns it with the same rows in the same
    order) before the manifest is written once. Returns (manifest, rejections).
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
    with atomic.atomic_path(out / REJECTIONS_FILE) as tmp:
        rej.to_csv(tmp, index=False)
    if not rows:
        raise DataError(f"{out}: every planned sample was rejected by the pair filter (see {REJECTIONS_FILE}); "
                        f"loosen the filter thresholds or raise max_attempts")
    df = pd.DataFrame(rows)
    if annotate is not None:
        annotated = annotate(df)
        if list(annotated["image_id"]) != list(df["image_id"]):
            raise ValueError("assemble: annotate must keep the manifest's rows and their order")
        df = annotated
    manifest.write_manifest(df, out)
    return df, rej

