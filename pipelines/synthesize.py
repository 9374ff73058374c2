"""Stage `synthesize`: image-mask pairs from the fine-tuned dual generator, planned from the real training split.

Reads the `synthesize` section of params.yaml. Writes data/synthetic/ (images/, masks/, records/, manifest.csv with
full provenance, rejections.csv with every rejected attempt), audits every accepted pair for memorisation (its
nearest real training image: manifest columns nn_real_id, nn_distance, nn_ratio, nn_percentile, near_copy, and
memorisation.json; components/quality/memorisation.py), validates the set with the synthetic Great Expectations
suite (non-zero exit on failure), writes metrics/synthesize.json and logs a Fig.-2-style grid (one row per class:
real image, mask and overlay beside a generated one) and the time per pair to MLflow. A rerun resumes: finished
samples are skipped; the audit is recomputed (seconds) and gives the same columns for the same pairs.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import mlflow
import pandas as pd

from components import atomic
from components.config import to_dict
from components.data import manifest
from components.data.categories import display_name
from components.errors import ConfigError, DataError
from components.generator.base_models import below_native
from components.generator.synthesis_config import SynthesizeConfig
from components.generator.synthesis_plan import build_plan, class_counts, plan_classes, real_train_split
from components.generator.synthesis_writer import (
    REJECTIONS_FILE,
    PairGenerator,
    WriteSummary,
    assemble,
    write_samples,
)
from components.hashing import dvc_md5
from components.images import overlay, pair_grid
from components.quality.memorisation import (
    SUMMARY_FILE,
    MemorisationSettings,
    audit,
    audit_summary,
    pixel_features,
    reference_digest,
)
from components.tracking.figures import log_figure
from components.tracking.mlflow_setup import stage_run
from components.tracking.validation_runs import log_validation
from pipelines.cli import stage_main

log = logging.getLogger("pipelines.synthesize")

_DTYPES = {"auto": None, "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def load_generator(cfg: SynthesizeConfig) -> PairGenerator:
    """The fine-tuned DualGenerator from the configured model folders."""
    import torch

    from components.generator.sampling import DualGenerator

    if cfg.dtype not in _DTYPES:
        raise ConfigError(f"synthesize.dtype {cfg.dtype!r}: expected one of {list(_DTYPES)}")
    dtype = getattr(torch, _DTYPES[cfg.dtype]) if _DTYPES[cfg.dtype] else None
    device = None if cfg.device == "auto" else cfg.device
    generator = DualGenerator.from_dirs(cfg.base_dir, cfg.vae_dir, lora_dir=cfg.lora_dir or None, device=device,
                                        dtype=dtype, compile=cfg.compile, channels_last=cfg.channels_last)
    warning = below_native("synthesize.resolution", cfg.resolution or generator.resolution,
                           generator.unet.config.sample_size, generator.factor)
    if warning:
        log.warning(warning + " (0 = the fine-tune resolution)")
    return generator


def planned_version(cfg: SynthesizeConfig) -> str:
    """The version the configured generator folders will have, without loading the weights."""
    from components.generator.base_models import base_identity
    from components.generator.sampling import generator_version

    return generator_version(base_identity(cfg.base_dir), cfg.vae_dir, cfg.lora_dir or None)


def ray_executor(cfg: SynthesizeConfig):
    """Units generated on Ray actors that each load the generator with this stage's settings."""
    from components.distributed.synthesis_workers import RaySynthesisExecutor

    return RaySynthesisExecutor(functools.partial(load_generator, cfg), cfg.generation(), cfg.filter(),
                                planned_version(cfg), cfg.ray_address, cfg.workers, cfg.cpus_per_worker)


def real_training_rows(cfg: SynthesizeConfig) -> pd.DataFrame:
    """Real training split, with descriptions from the describe stage when configured."""
    train = real_train_split(cfg.real_dir)
    if cfg.prompt_source == "descriptions" and cfg.descriptions_file:
        from components.describe.apply import apply_descriptions

        if not Path(cfg.descriptions_file).is_file():
            raise DataError(f"{cfg.descriptions_file}: descriptions file not found; run `dvc repro describe`, or "
                            f"set synthesize.descriptions_file='' to use the real manifest's descriptions")
        train = apply_descriptions(train, cfg.descriptions_file)
    return train


def comparison_grid(real_dir: str | Path, out_dir: str | Path, train: pd.DataFrame, synthetic: pd.DataFrame,
                    categories: list[str]):
    """Fig. 2 of the paper: per class, the first real training pair beside the first generated pair."""
    rows = []
    for c in categories:
        real = train[train["category"] == c].sort_values("image_id")
        syn = synthetic[synthetic["category"] == c]
        if syn.empty or real.empty or not real.iloc[0]["mask_path"]:
            continue
        r = manifest.load_pair(real_dir, real.iloc[0], require_mask=True)
        s = manifest.load_pair(out_dir, syn.iloc[0], require_mask=True)
        rows.append((display_name(c), [
            ("real", r.image), ("real mask", r.mask * 255), ("real overlay", overlay(r.image, r.mask)),
            ("generated", s.image), ("generated mask", s.mask * 255), ("generated overlay", overlay(s.image, s.mask)),
        ]))
    return pair_grid(rows) if rows else None


class MemorisationAudit:
    """The manifest annotator of `assemble`: each accepted pair's nearest real training image (pixel space).
    Keeps the summary (for the metrics) and `record()`, what memorisation.json holds: the summary plus the
    real-real distances and the reference's digest, so the quality stage audits the test split on the same scale."""

    def __init__(self, cfg: SynthesizeConfig, train: pd.DataFrame, classes: list[str]):
        self.cfg, self.train, self.classes = cfg, train, classes
        self.settings = MemorisationSettings(size=cfg.memorisation_size, near_copy_ratio=cfg.near_copy_ratio)
        self.summary: dict = {}
        self.scale = None

    def record(self) -> dict:
        return {**self.summary, "reference_digest": reference_digest(self.train["image_id"].astype(str)),
                "real_nn_distances": [float(d) for d in self.scale.distances]}

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        size = self.settings.size
        reference = pixel_features(
            (manifest.load_rgb(manifest.resolve(self.cfg.real_dir, p)) for p in self.train["image_path"]), size,
            n=len(self.train))
        generated = pixel_features(
            (manifest.load_rgb(manifest.resolve(self.cfg.out_dir, p)) for p in df["image_path"]), size, n=len(df))
        table, scale = audit(generated, reference, self.train["image_id"].astype(str), self.settings)
        self.scale = scale
        self.summary = {"reference": f"{self.cfg.real_dir} split=train",
                        **audit_summary(table, df["category"], self.classes, self.settings, scale)}
        log.info("memorisation audit: %d of %d pairs are near-copies of a real training image (nn distance < "
                 "%.2f x the real-real median %.4f; median ratio %.2f)", self.summary["near_copies"], len(df),
                 self.settings.near_copy_ratio, scale.median, self.summary["nn_ratio_median"])
        return pd.concat([df.reset_index(drop=True), table.reset_index(drop=True)], axis=1)


def summary_metrics(summary: WriteSummary, planned: dict[str, int], validation_ok: bool | None) -> dict:
    m = {
        "planned": summary.n_planned, "accepted": summary.n_accepted, "rejected": summary.n_rejected,
        "acceptance_rate": summary.n_accepted / summary.n_planned if summary.n_planned else 0.0,
        "rejection_events": summary.rejection_events, "resumed": summary.n_skipped,
        "generated_this_run": summary.attempts_this_run, "seconds_this_run": round(summary.seconds_this_run, 3),
        "seconds_per_pair": round(summary.seconds_per_pair, 4),
        "pairs_per_second": round(1.0 / summary.seconds_per_pair, 4) if summary.seconds_per_pair > 0 else 0.0,
        "planned_per_class": planned, "accepted_per_class": summary.accepted_per_class,
        "rejection_reasons": summary.rejection_reasons,
    }
    if validation_ok is not None:
        m["validation_success"] = int(validation_ok)
    return m


def validate(cfg: SynthesizeConfig, classes: list[str]) -> bool:
    """Run the synthetic-manifest Great Expectations suite; raise DataError (exit non-zero) on failure."""
    from components.data.validation import check_manifest

    return check_manifest(cfg.out_dir, kind="synthetic", categories=classes, on_summary=log_validation).success


def run(cfg: SynthesizeConfig, generator: PairGenerator | None = None) -> dict:
    """Plan, generate (resuming), assemble, validate and log; returns the metrics written to cfg.metrics_file.

    `generator` defaults to the DualGenerator loaded from the configured model folders.
    """
    train = real_training_rows(cfg)
    classes = plan_classes(cfg.real_dir, train, cfg.categories)
    plan = build_plan(train, classes, cfg.mode, cfg.counts, cfg.scale, cfg.prompt_source, cfg.seed)
    if not plan:
        raise ConfigError(f"synthesize: the plan is empty (mode={cfg.mode}, real training counts "
                          f"{class_counts(train, classes)}); choose another mode or set counts")
    planned = {c: sum(s.category == c for s in plan) for c in classes}
    inputs = {"real": cfg.real_dir, **({"lora": cfg.lora_dir} if cfg.lora_dir else {})}
    with stage_run("synthesize", to_dict(cfg), inputs=inputs):
        executor, version, device = None, None, "ray"
        if generator is None and (cfg.workers > 0 or cfg.ray_address):
            executor, version = ray_executor(cfg), planned_version(cfg)
        else:
            generator = generator or load_generator(cfg)
            version, device = str(generator.version), str(getattr(generator, "device", "unknown"))
        mlflow.set_tags({"generator_version": version, "synthesize.device": device,
                         "synthesize.workers": str(cfg.workers)})
        log.info("planned %d pairs (%s)", len(plan), ", ".join(f"{c}={n}" for c, n in planned.items()))
        try:
            summary = write_samples(plan, generator, cfg.out_dir, cfg.generation(), cfg.filter(),
                                    progress=cfg.progress, executor=executor, version=version)
        finally:
            if executor is not None:
                executor.close()
        memorisation = MemorisationAudit(cfg, train, classes) if cfg.memorisation else None
        synthetic, rejections = assemble(cfg.out_dir, plan, annotate=memorisation)
        if memorisation is not None:
            atomic.write_json(Path(cfg.out_dir) / SUMMARY_FILE, memorisation.record())
        else:
            (Path(cfg.out_dir) / SUMMARY_FILE).unlink(missing_ok=True)
        validation_ok = validate(cfg, classes) if cfg.validate else None
        metrics = summary_metrics(summary, planned, validation_ok)
        if memorisation is not None:
            metrics["memorisation"] = memorisation.summary
        atomic.write_json(cfg.metrics_file, metrics)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_metrics({f"accepted.{c}": float(n) for c, n in summary.accepted_per_class.items()})
        if memorisation is not None:
            mlflow.log_metrics({f"memorisation.{k}": float(memorisation.summary[k]) for k in
                                ("near_copies", "near_copy_share", "nn_ratio_min", "nn_ratio_median", "real_nn_median")})
            mlflow.log_artifact(str(Path(cfg.out_dir) / SUMMARY_FILE), "synthesize")
        mlflow.set_tag("data.synthetic.md5", dvc_md5(cfg.out_dir))
        mlflow.log_artifact(str(Path(cfg.out_dir) / REJECTIONS_FILE), "synthesize")
        mlflow.log_artifact(str(Path(cfg.out_dir) / manifest.MANIFEST_NAME), "synthesize")
        fig = comparison_grid(cfg.real_dir, cfg.out_dir, train, synthetic, classes)
        if fig is not None:
            log_figure(fig, "synthesize/pairs_grid.png", save_to=cfg.grid_file)
        log.info("synthesized %d/%d pairs (%d rejected after %d attempts, %d rejection events); "
                 "%.3f s per pair, %.2f pairs/s", summary.n_accepted, summary.n_planned, summary.n_rejected,
                 cfg.max_attempts, summary.rejection_events, summary.seconds_per_pair, metrics["pairs_per_second"])
    return metrics


def main(argv: list[str] | None = None) -> None:
    stage_main("synthesize", SynthesizeConfig, run,
               "Generate class-planned image-mask pairs with the fine-tuned generator.", argv)


if __name__ == "__main__":
    main()
