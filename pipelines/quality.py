"""Stage `quality`: the paper's Table 1 (Real train vs Real test, Real train vs Synthetic train), made comparable.

Reads the `quality` section of params.yaml. Reference set A of every comparison: the real training split (what
the generator was trained on). The two B sets (real test split, synthetic set) are cut to one size n, overall and
per class (seeded subsets), so their figures compare at the same n. Computes, overall and per class: Fréchet
distance (as computed) and KID with its standard error in the configured feature space (FID/KID only with
Inception weights; otherwise `fd_vae`/`kid_vae` in the project's VAE encoder space), LPIPS (only with local
backbone weights, else reported unavailable with the reason), MS-SSIM, Wasserstein-1 distances of the mask
statistics, the image–mask consistency Dice; the mask statistics before and after the synthesize stage's
rejection filter with its rejection rates; per-class faithfulness (Table 1b: recall of a classifier trained on
real training images, on the real test split and on the synthetic images); and the memorisation audit's
near-copy counts (the synthetic manifest's, beside the same audit of the real test split). Writes metrics_file,
<report_dir>/table1.md and the mask-statistics histograms; logs all of it to MLflow.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from components import atomic
from components.config import to_dict
from components.data import manifest
from components.device import resolve_device
from components.errors import DataError
from components.generator.synthesis_writer import REJECTIONS_FILE
from components.quality.config import QualityConfig
from components.quality.evaluate import CompareSettings, ImageSet, compare_sets, equal_size_selections, load_set
from components.quality.features import create_extractor
from components.quality.filter_stats import filter_summary
from components.quality.memorisation import (
    SUMMARY_FILE,
    audit,
    count_near_copies,
    pixel_features,
    recorded_scale,
    settings_from_summary,
)
from components.quality.report import mask_stat_histograms, protocol_text, sign_notes, table1_markdown
from components.quality.similarity import lpips_model, msssim_setup
from components.tracking.figures import log_figure
from components.tracking.mlflow_setup import stage_run
from components.tracking.registry import GENERATOR_MODEL, record_generator_metrics
from pipelines.cli import stage_main

log = logging.getLogger("pipelines.quality")


def _rows(root: str, split: str, categories: list[str]) -> pd.DataFrame:
    df = manifest.read_manifest(root)
    rows = df[(df["split"] == split) & df["category"].isin(categories)].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"{manifest.manifest_file(root)}: no rows of split '{split}' in the configured categories; "
                        f"run the stage that writes it (prepare / synthesize) or fix quality.categories")
    return rows


def comparison_size(real_dir: str, real: pd.DataFrame, synthetic_dir: str, synthetic: pd.DataFrame) -> int:
    """The smaller image side of the two datasets: the larger set is downsampled rather than the smaller one
    upsampled, so a lower generator resolution is not mistaken for lower quality."""
    sides = []
    for root, rows in ((real_dir, real), (synthetic_dir, synthetic)):
        image = manifest.load_rgb(manifest.resolve(root, rows.iloc[0]["image_path"]))
        sides.append(min(image.shape[:2]))
    return min(sides)


def _numeric(prefix: str, obj, out: dict) -> dict:
    """Flatten nested metrics to dotted MLflow keys, numbers only."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _numeric(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and np.isfinite(obj):
        out[prefix] = float(obj)
    return out


def run(cfg: QualityConfig) -> dict:
    """Compute Table 1 and write/log it; returns the metrics written to cfg.metrics_file."""
    classes = list(cfg.categories) or manifest.read_categories(cfg.real_dir)
    real_train = _rows(cfg.real_dir, "train", classes)
    real_test = _rows(cfg.real_dir, "test", classes)
    synthetic = _rows(cfg.synthetic_dir, "train", classes)
    size = cfg.image_size or comparison_size(cfg.real_dir, real_train, cfg.synthetic_dir, synthetic)
    kernel, betas = msssim_setup(size, cfg.msssim_kernel_size)
    device = resolve_device(cfg.device)
    inputs = {"real": cfg.real_dir, "synthetic": cfg.synthetic_dir}
    with stage_run("quality", to_dict(cfg), inputs=inputs):
        t0 = time.perf_counter()
        sets = {
            "real_train": load_set("real_train", cfg.real_dir, real_train, size, cfg.progress),
            "real_test": load_set("real_test", cfg.real_dir, real_test, size, cfg.progress),
            "synthetic_train": load_set("synthetic_train", cfg.synthetic_dir, synthetic, size, cfg.progress),
        }
        extractor = create_extractor(cfg.feature_extractor, cfg.inception_weights, cfg.vae_dir, cfg.device,
                                     cfg.batch_size)
        log.info("feature space: %s (%s)", extractor.name, extractor.description)
        for s in sets.values():
            s.features = extractor(s.images)
        lpips, lpips_reason = lpips_model(cfg.lpips_net, cfg.lpips_weights, device)
        if lpips is None:
            log.warning("LPIPS unavailable: %s", lpips_reason)
        consistency = _consistency(cfg, real_train, sets, classes) if cfg.consistency else {}
        settings = CompareSettings(
            fd_key=extractor.fd_key, kid_key=extractor.kid_key, kid_subsets=cfg.kid_subsets,
            kid_subset_size=cfg.kid_subset_size, pairs=cfg.pairs, class_pairs=cfg.class_pairs,
            msssim_kernel_size=cfg.msssim_kernel_size, min_class_samples=cfg.min_class_samples, seed=cfg.seed,
            batch_size=cfg.batch_size, device=str(device))
        test_sel, syn_sel = equal_size_selections([sets["real_test"], sets["synthetic_train"]], classes, cfg.seed)
        n = len(test_sel.overall)
        kid_size = min(cfg.kid_subset_size, n, len(sets["real_train"]))  # one subset size for both rows
        a = sets["real_train"]
        results = {
            "real_train_vs_real_test": compare_sets(a, sets["real_test"], classes, settings, lpips, kid_size,
                                                    test_sel),
            "real_train_vs_synthetic_train": compare_sets(a, sets["synthetic_train"], classes, settings,
                                                          lpips, kid_size, syn_sel),
        }
        memorisation = _memorisation(cfg, real_test, synthetic, classes)
        for row, counts in memorisation.get("rows", {}).items():
            results[row]["memorisation"] = counts
        metrics = {
            **results,
            "classes": classes, "feature_space": extractor.name, "feature_description": extractor.description,
            "fd_key": extractor.fd_key, "kid_key": extractor.kid_key,
            "n": n, "n_reference": len(a), "n_available": {k: len(v) for k, v in sets.items()},
            "kid_subsets": cfg.kid_subsets, "kid_subset_size": kid_size, "image_size": size,
            "ms_ssim_kernel_size": kernel, "ms_ssim_scales": len(betas),
            "mask_stats": {name: s.stats.summary() for name, s in sets.items()},
            "consistency": consistency,
            "rejection_filter": _filter(cfg, synthetic, sets, classes),
            "faithfulness": _faithfulness(cfg, sets, classes) if cfg.faithfulness else {},
            "memorisation": {k: v for k, v in memorisation.items() if k != "rows"},
        }
        if lpips is None:
            metrics["lpips_reason"] = lpips_reason
        metrics["notes"] = sign_notes(metrics)
        metrics["protocol"] = protocol_text(metrics)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        atomic.write_json(cfg.metrics_file, metrics)
        mlflow.log_metrics(_numeric("", metrics, {}))
        mlflow.set_tags({"quality.feature_space": extractor.name, "quality.lpips": "yes" if lpips else "unavailable"})
        _tag_generators(synthetic, results["real_train_vs_synthetic_train"])
        report = Path(cfg.report_dir)
        table = table1_markdown(metrics)
        atomic.write_text(report / "table1.md", table)
        mlflow.log_text(table, "quality/table1.md")
        log_figure(mask_stat_histograms({n: s.stats for n, s in sets.items()}), "quality/mask_stats.png",
                   save_to=report / "mask_stats.png")
        log.info("\n%s", table.split("\n## ")[0])
    return metrics


def _filter(cfg: QualityConfig, synthetic: pd.DataFrame, sets: dict[str, ImageSet], classes: list[str]) -> dict:
    """Mask statistics before / after the synthesize stage's rejection filter, or why they are not recorded."""
    path = Path(cfg.synthetic_dir) / REJECTIONS_FILE
    if not path.is_file() or "attempt" not in synthetic.columns:
        return {"recorded": False, "reason": f"{path} or the manifest's attempt column is missing (a synthetic set "
                                             f"not written by the synthesize stage)"}
    rejections = pd.read_csv(path, dtype={"image_id": str, "category": str, "reason": str})
    summary = filter_summary(synthetic, sets["synthetic_train"].stats, rejections, sets["real_train"].stats,
                             classes, where=str(path))
    log.info("rejection filter: %d of %d attempts rejected (%.1f %%), %d of %d samples never passed",
             summary["rejected_attempts"], summary["attempts"], 100 * summary["rejected_attempt_rate"],
             summary["never_passed"], summary["planned"])
    return {"recorded": True, **summary}


def _faithfulness(cfg: QualityConfig, sets: dict[str, ImageSet], classes: list[str]) -> dict:
    """Table 1b: a random forest on image features, trained on the real training split only, applied to the
    real test split and to the synthetic images; per-class recall of both."""
    from components.quality.faithfulness import FaithfulnessSettings, faithfulness, features_of, train_classifier

    s = FaithfulnessSettings(trees=cfg.faithfulness_trees, seed=cfg.seed)
    t0 = time.perf_counter()
    feats = {name: features_of(sets[name].images) for name in sets}
    model = train_classifier(feats["real_train"], sets["real_train"].categories, s)
    out = faithfulness(model, (feats["real_test"], sets["real_test"].categories),
                       (feats["synthetic_train"], sets["synthetic_train"].categories), classes)
    out.update(classifier=f"random forest ({s.trees} trees, balanced class weights) on the feature baseline's "
                          f"{feats['real_train'].shape[1]} colour, shape and texture features at "
                          f"{sets['real_train'].images.shape[1]} px, trained on the real training split",
               seconds=round(time.perf_counter() - t0, 1))
    log.info("faithfulness: balanced accuracy of the real-trained classifier on real test %.3f, on synthetic %.3f",
             out["real_test_balanced_accuracy"], out["synthetic_balanced_accuracy"])
    return out


def _memorisation(cfg: QualityConfig, real_test: pd.DataFrame, synthetic: pd.DataFrame, classes: list[str]) -> dict:
    """Near-copy counts of the synthetic set (from its manifest) and, with the same settings and reference, of the
    real test split (how often a new real image passes for a copy: the audit's false-alarm level)."""
    path = Path(cfg.synthetic_dir) / SUMMARY_FILE
    missing = [c for c in ("nn_ratio", "near_copy") if c not in synthetic.columns]
    if not path.is_file() or missing:
        return {"recorded": False, "reason": f"{path} or the manifest's nn_ratio / near_copy columns are missing; "
                                             f"run the synthesize stage with memorisation: true"}
    recorded = json.loads(path.read_text())
    settings = settings_from_summary(recorded)
    train = manifest.read_manifest(cfg.real_dir)
    train = train[train["split"] == "train"].reset_index(drop=True)   # the synthesize stage's reference set

    def pixels(root: str, rows: pd.DataFrame):
        images = (manifest.load_rgb(manifest.resolve(root, p)) for p in rows["image_path"])
        return pixel_features(images, settings.size, n=len(rows))

    scale = recorded_scale(recorded, train["image_id"].astype(str))
    if scale is None:
        log.warning("memorisation: the real training split differs from the one the synthesize stage audited the "
                    "set against (%s); the real test split is audited on a recomputed scale; rerun synthesize", path)
    table, scale = audit(pixels(cfg.real_dir, real_test), pixels(cfg.real_dir, train), train["image_id"].astype(str),
                         settings, scale)
    rows = {"real_train_vs_real_test": count_near_copies(table, real_test["category"], classes),
            "real_train_vs_synthetic_train": count_near_copies(synthetic, synthetic["category"], classes)}
    log.info("memorisation: near-copies %d / %d synthetic, %d / %d real test (false-alarm level)",
             rows["real_train_vs_synthetic_train"]["near_copies"], len(synthetic),
             rows["real_train_vs_real_test"]["near_copies"], len(real_test))
    keep = ("reference", "feature_space", "size", "near_copy_ratio")
    return {"recorded": True, **{k: recorded[k] for k in keep if k in recorded}, **scale.summary(), "rows": rows}


def _tag_generators(synthetic: pd.DataFrame, versus_synthetic: dict) -> None:
    """Record the synthetic row's figures on the registered generator versions that produced the set."""
    figures = {k: v for k, v in versus_synthetic.items() if isinstance(v, (int, float)) and not k.startswith("n_")}
    run = mlflow.active_run()
    for version in sorted(set(synthetic.get("generator_version", pd.Series(dtype=str)).dropna().astype(str))):
        tagged = record_generator_metrics(version, figures, source=f"quality run {run.info.run_id}")
        if tagged:
            log.info("quality figures recorded on %s versions %s", GENERATOR_MODEL, tagged)


def _consistency(cfg: QualityConfig, real_train: pd.DataFrame, sets: dict[str, ImageSet], classes: list[str]) -> dict:
    from components.quality.consistency import SegmenterSettings, consistency_dice, train_reference_segmenter

    s = SegmenterSettings(name=cfg.segmenter, size=cfg.segmenter_size, epochs=cfg.segmenter_epochs,
                          batch_size=cfg.segmenter_batch_size, lr=cfg.segmenter_lr, seed=cfg.seed,
                          device=cfg.device, progress=cfg.progress)
    model, history = train_reference_segmenter(cfg.real_dir, real_train, classes, s)
    out = {"segmenter": cfg.segmenter, "train_seconds": round(history["train_seconds"], 1),
           "final_train_loss": history["loss_history"][-1] if history["loss_history"] else float("nan")}
    for name in ("real_test", "synthetic_train"):
        ds = sets[name]
        ds.consistency = consistency_dice(model, ds.images, ds.masks, cfg.segmenter_size, cfg.batch_size)
        out[f"{name}_dice"] = float(ds.consistency.mean())
    log.info("consistency Dice (mask vs segmenter trained on real train): real test %.3f, synthetic %.3f",
             out["real_test_dice"], out["synthetic_train_dice"])
    return out


def main(argv: list[str] | None = None) -> None:
    stage_main("quality", QualityConfig, run,
               "Table 1: feature distances, LPIPS, MS-SSIM, mask statistics before/after the filter, consistency, "
               "faithfulness, memorisation.", argv)


if __name__ == "__main__":
    main()
