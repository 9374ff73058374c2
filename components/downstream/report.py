"""Paper-style tables built from recorded results: Table 1 (image quality), Table 2 (every training set),
Table 3 (external set) and the verdict (each training set against real-only with 95 % intervals). Nothing is
recomputed: Table 1 reads metrics/quality.json, Tables 2 and 3 read the per-run results CSVs of the classify and
segment stages and aggregate them (mean ± sample std over seeds × folds), the verdict reads the comparisons the
stages wrote into their metrics files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.downstream import intervals
from components.downstream.plots import TRAIN_SET_LABELS

DISPLAY_NAMES = {
    "densenet121": "DenseNet121", "resnet34": "ResNet34", "squeezenet1_1": "SqueezeNet1.1",
    "swin": "Swin Transformer", "tiny_cnn": "Tiny CNN (test)",
    "unet_resnet34": "U-Net (ResNet34)", "deeplabv3plus_resnet50": "DeepLabV3+ (ResNet50)",
    "tiny_unet": "Tiny U-Net (test)", "small_cnn": "Small CNN", "unet_resnet18": "U-Net (ResNet18)",
}
CLASSIFY_COLUMNS = [("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"), ("precision", "Precision"),
                    ("f1", "F1score")]
SEGMENT_COLUMNS = [("dice", "Dice"), ("iou", "IoU"), ("asd", "ASD"), ("hd", "HD"), ("hd95", "HD95")]
PERCENT = {"accuracy", "sensitivity", "precision", "f1", "balanced_accuracy", "overall_accuracy", "dice", "iou"}
TRAIN_SET_ORDER = ("real", "synthetic", "hybrid", "real+synthetic", "real+augmentation")
TABLE3_LABELS = {"real": "Real", "synthetic": "Synth", "hybrid": "Hybrid", "real+synthetic": "Real+Synth",
                 "real+augmentation": "Real+Aug"}


@dataclass
class Table:
    """A rendered table: Markdown text, a tidy CSV frame, and a note when it could not be filled."""
    markdown: str
    frame: pd.DataFrame
    note: str = ""


def display_name(arch: str) -> str:
    return DISPLAY_NAMES.get(arch, arch)


def _scale(metric: str, value: float) -> float:
    return value * 100.0 if metric in PERCENT else value


def _fmt(mean: float, std: float | None) -> str:
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{mean:.3f}" if std is None or not np.isfinite(std) else f"{mean:.3f} ± {std:.3f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- results
def load_results(results_csv: str | Path, metrics_json: str | Path | None = None) -> pd.DataFrame:
    """Rows of a results CSV restricted to the fingerprints of the stage's last run (from its metrics JSON);
    without that JSON, the last fingerprint recorded per architecture. Empty frame when the CSV is absent."""
    path = Path(results_csv)
    if not path.is_file():
        return pd.DataFrame()
    df = pd.read_csv(path, dtype={"fingerprint": str})
    if df.empty:
        return df
    fingerprints = None
    if metrics_json and Path(metrics_json).is_file():
        fingerprints = json.loads(Path(metrics_json).read_text()).get("fingerprints")
    if not fingerprints:
        fingerprints = {a: g["fingerprint"].iloc[-1] for a, g in df.groupby("arch", sort=False)}
    keep = pd.Series(False, index=df.index)
    for arch, fp in fingerprints.items():
        keep |= (df["arch"] == arch) & (df["fingerprint"] == fp)
    return df[keep]


def aggregate(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean and sample std over folds per (arch, train_set, eval_set), metrics scaled for display (% or px)."""
    if df.empty:
        return pd.DataFrame()
    records = []
    for (arch, train_set, eval_set), g in df.groupby(["arch", "train_set", "eval_set"], sort=False):
        rec = {"task": g["task"].iloc[0], "arch": arch, "model": display_name(arch), "train_set": train_set,
               "eval_set": eval_set, "n_folds": int(g["fold"].nunique())}
        for m in metrics:
            if m in g.columns:
                v = _scale(m, 1.0) * pd.to_numeric(g[m], errors="coerce").dropna().to_numpy(float)
                rec[f"{m}_mean"] = float(v.mean()) if v.size else np.nan
                rec[f"{m}_std"] = float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else np.nan)
        records.append(rec)
    out = pd.DataFrame(records)
    order = {s: i for i, s in enumerate(TRAIN_SET_ORDER)}
    arch_order = {a: i for i, a in enumerate(dict.fromkeys(df["arch"]))}
    return out.sort_values(["arch", "train_set"], key=lambda s: s.map(arch_order if s.name == "arch" else order)
                           ).reset_index(drop=True)


# --------------------------------------------------------------------------------------------- Table 1
T1_TITLES = {"real_train_vs_real_test": "Real Train vs Real Test",
             "real_train_vs_synthetic_train": "Real Train vs Synth Train"}


def _t1_number(v) -> str:
    if not isinstance(v, (int, float)) or not np.isfinite(v):
        return "–"
    return f"{v:.2e}" if v != 0 and abs(v) < 1e-3 else f"{v:.4f}"


def _t1_share(k: int, n: int) -> str:
    return f"{k} / {n} ({100.0 * k / n:.1f} %)" if n else "–"


def _t1_summary_lines(data: dict) -> list[str]:
    """One line each on the rejection filter, the memorisation audit and Table 1b, from the quality metrics."""
    lines = []
    f = data.get("rejection_filter", {})
    if f.get("recorded"):
        before, after = f.get("before", {}), f.get("after", {})
        lines.append(f"Rejection filter: {_t1_share(f['rejected_attempts'], f['attempts'])} of the attempts "
                     f"rejected, {_t1_share(f['never_passed'], f['planned'])} of the planned samples never passed; "
                     f"mask area fraction {_t1_number(before.get('area_fraction_mean'))} before and "
                     f"{_t1_number(after.get('area_fraction_mean'))} after the filter (W1 to real train "
                     f"{_t1_number(before.get('w1_area_fraction'))} → {_t1_number(after.get('w1_area_fraction'))}).")
    mem = data.get("memorisation", {})
    if mem.get("recorded"):
        lines.append(f"Memorisation: near-copy = nearest real training image closer than {mem['near_copy_ratio']} × "
                     f"the median real–real nearest-neighbour distance ({mem['size']} px pixels, flips/rotations "
                     f"included); the real test row is the audit's false-alarm level.")
    fa = data.get("faithfulness", {})
    if fa.get("per_class"):
        cells = [f"{c} {100 * r['real_test']['recall']:.0f} → {100 * r['synthetic']['recall']:.0f}"
                 for c, r in fa["per_class"].items() if "real_test" in r and "synthetic" in r]
        lines.append(f"Table 1b (per-class recall %, real test → synthetic, of a classifier trained on real training "
                     f"images): {', '.join(cells)}; balanced accuracy "
                     f"{100 * fa['real_test_balanced_accuracy']:.1f} → {100 * fa['synthetic_balanced_accuracy']:.1f}.")
    return lines


def table1(quality_json: str | Path) -> Table:
    """Table 1 from the quality stage's metrics (n of both rows, KID ± standard error, near-copies, the filter,
    faithfulness and the protocol), or a table that says the stage has not run."""
    path = Path(quality_json)
    title = "Table 1. Image quality assessment for generated images"
    if not path.is_file():
        note = f"The quality stage has not run ({path} not found): run `dvc repro quality` to fill this table."
        md = f"### {title}\n\n{note}\n"
        return Table(md, pd.DataFrame({"note": [note]}), note)
    data = json.loads(path.read_text())
    fd_key, kid_key = data.get("fd_key", "fid"), data.get("kid_key", "kid")
    columns = [(fd_key, fd_key.upper() if fd_key == "fid" else fd_key), (kid_key, kid_key),
               ("lpips", "LPIPS"), ("ms_ssim", "MS-SSIM"), ("consistency_dice", "mask–segmenter Dice")]
    comparisons = {k: v for k, v in data.items() if isinstance(v, dict) and ("n_a" in v or k in T1_TITLES)}
    records, rows = [], []
    for key, values in comparisons.items():
        rec = {"comparison": T1_TITLES.get(key, key), "n_a": values.get("n_a"), "n_b": values.get("n_b")}
        cells = [rec["comparison"]]
        for m, _ in columns:
            v = values.get(m)
            rec[m] = v if isinstance(v, (int, float)) else np.nan
            cell = _t1_number(v)
            if m == kid_key and isinstance(values.get(f"{kid_key}_se"), (int, float)):
                rec[f"{kid_key}_se"] = values[f"{kid_key}_se"]
                cell += f" ± {_t1_number(values[f'{kid_key}_se'])}"
            cells.append(cell)
        cells.append(f"{values.get('n_a', '–')} / {values.get('n_b', '–')}")
        mem = values.get("memorisation")
        if mem:
            rec.update(near_copies=mem["near_copies"], n_audited=mem["n"])
        cells.append(_t1_share(mem["near_copies"], mem["n"]) if mem else "not recorded")
        records.append(rec)
        rows.append(cells)
    header = ["Data for calculations"] + [t for _, t in columns] + ["n (A / B)", "near-copies (B)"]
    notes = [f"Feature space: {data.get('feature_space', 'unknown')}."]
    if data.get("lpips_reason"):
        notes.append(f"LPIPS unavailable: {data['lpips_reason']}.")
    notes += data.get("notes", [])
    md = f"### {title}\n\n" + _markdown(header, rows) + "\n\n" + " ".join(notes) + f" Source: {path}.\n"
    extra = _t1_summary_lines(data) + ([data["protocol"]] if data.get("protocol") else [])
    if extra:
        md += "\n" + "\n\n".join(extra) + "\n"
    return Table(md, pd.DataFrame(records))


# --------------------------------------------------------------------------------------------- Table 2 / 3
def _task_block(agg: pd.DataFrame, columns: list[tuple[str, str]], eval_set: str, cv_metric: str | None,
                set_labels: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    header = ["Models", "Train Dataset"] + [t for _, t in columns]
    if cv_metric:
        header.append(f"{dict(columns)[cv_metric]} (validation)")
    rows = []
    sub = agg[agg["eval_set"] == eval_set]
    for arch in dict.fromkeys(sub["arch"]):
        first = True
        for train_set in TRAIN_SET_ORDER:
            r = sub[(sub["arch"] == arch) & (sub["train_set"] == train_set)]
            if r.empty:
                continue
            r = r.iloc[0]
            cells = [display_name(arch) if first else "", set_labels[train_set]]
            cells += [_fmt(r.get(f"{m}_mean"), r.get(f"{m}_std")) for m, _ in columns]
            if cv_metric:
                cv = agg[(agg["arch"] == arch) & (agg["train_set"] == train_set) & (agg["eval_set"] == "val")]
                cells.append(_fmt(cv.iloc[0][f"{cv_metric}_mean"], cv.iloc[0][f"{cv_metric}_std"]) if len(cv) else "–")
            rows.append(cells)
            first = False
    return header, rows


def table2(classify: pd.DataFrame, segment: pd.DataFrame) -> Table:
    """Table 2: every training set per architecture on the real test split, validation scores beside."""
    title = "Table 2. Classification and segmentation by training set"
    parts, frames = [f"### {title}", ""], []
    for df, columns, cv_metric, name in ((classify, CLASSIFY_COLUMNS, "f1", "classification"),
                                         (segment, SEGMENT_COLUMNS, "dice", "segmentation")):
        agg = aggregate(df, [m for m, _ in columns])
        if agg.empty:
            parts += [f"No {name} results recorded (run `dvc repro {'classify' if name[0] == 'c' else 'segment'}`).", ""]
            continue
        frames.append(agg[agg["eval_set"].isin(["test", "val"])])
        header, rows = _task_block(agg, columns, "test", cv_metric, TRAIN_SET_LABELS)
        parts += [_markdown(header, rows), ""]
    parts += ["Mean ± sample standard deviation over the runs (one model per seed × fold and training set). "
              "Headline columns: the real test split, which the generator never saw and nothing is chosen on; the "
              "last column: the real validation split, which selects the checkpoints and the registry's "
              "challenger. Accuracy is the macro (mean per-class) accuracy, which equals the macro sensitivity; "
              "precision and F1 are macro averages; Accuracy..F1, Dice and IoU in %, ASD / HD / HD95 in pixels at "
              "the segmentation input size. Real only, Synth only and 50/50 hybrid of one fold have identical size "
              "and class mix; the two balanced sets keep every real image of the fold and top each class up to "
              "the majority count with synthetic pairs or with augmented copies of real images. Every set of a "
              "fold trains for the same number of optimiser steps (equal_steps). Evaluation uses real images only.",
              ""]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    note = "" if frames else "no downstream results recorded"
    return Table("\n".join(parts), frame, note)


def table3(classify: pd.DataFrame, segment: pd.DataFrame) -> Table:
    """Table 3: the same models on the external set (HAM10000 format), when one was configured."""
    title = "Table 3. Robustness on the external test set"
    parts, frames = [f"### {title}", ""], []
    for df, columns in ((classify, CLASSIFY_COLUMNS), (segment, SEGMENT_COLUMNS[:2])):
        agg = aggregate(df, [m for m, _ in columns])
        if agg.empty or not (agg["eval_set"] == "external").any():
            continue
        frames.append(agg[agg["eval_set"] == "external"])
        header, rows = _task_block(agg, columns, "external", None, TABLE3_LABELS)
        header[1] = "Dataset"
        parts += [_markdown(header, rows), ""]
    if not frames:
        note = ("No external test set was evaluated: set `classify.external_dir` / `segment.external_dir` to a "
                "HAM10000 folder (metadata CSV with dx, images, optional masks) to fill this table.")
        return Table(f"### {title}\n\n{note}\n", pd.DataFrame({"note": [note]}), note)
    parts += ["Mean ± sample standard deviation over the folds' models; percentages.", ""]
    return Table("\n".join(parts), pd.concat(frames, ignore_index=True))


def bar_table(agg: pd.DataFrame, metric: str, eval_set: str = "test") -> dict[str, dict[str, tuple[float, float]]]:
    """{model: {train_set: (mean, std)}} of one metric for the bar plot."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    if agg.empty or f"{metric}_mean" not in agg.columns:
        return out
    for _, r in agg[agg["eval_set"] == eval_set].iterrows():
        out.setdefault(r["model"], {})[r["train_set"]] = (float(r[f"{metric}_mean"]), float(r[f"{metric}_std"]))
    return out


def verdict_table(classify_metrics: str | Path, segment_metrics: str | Path) -> Table:
    """Each training set against real-only on the real test split, per task and architecture: Δ with its paired
    bootstrap 95 % interval, the spread over runs and the verdict (from the comparisons in the metrics files)."""
    title = "Does it help? Each training set against real-only on the real test split"
    parts, frames, every = [f"### {title}", ""], [], []
    for path, name, stage in ((Path(classify_metrics), "Classification", "classify"),
                              (Path(segment_metrics), "Segmentation", "segment")):
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        found = recorded.get("comparisons", [])
        if not found:
            parts += [f"{name}: no comparison recorded (needs `real` and another set in {stage}.train_sets; "
                      f"`dvc repro {stage}`).", ""]
            continue
        for arch in dict.fromkeys(c["arch"] for c in found):
            rows = [intervals.Comparison(**{k: v for k, v in c.items() if k != "arch"}) for c in found
                    if c["arch"] == arch]
            every += rows
            parts += [f"**{name}, {display_name(arch)}**", "",
                      intervals.comparisons_markdown(rows, TRAIN_SET_LABELS, recorded.get("categories")), ""]
            frame = intervals.comparisons_frame(rows)
            frame.insert(0, "arch", arch)
            frame.insert(0, "task", name.lower())
            frames.append(frame)
        baseline = recorded.get("feature_baseline")
        if baseline:
            parts += [_baseline_line(name, baseline, recorded.get("minority_classes") or []), ""]
        if recorded.get("minority_classes"):
            parts += [f"Minority recall: mean recall of {', '.join(recorded['minority_classes'])} (the classes whose "
                      f"real training count is below half of the median class count).", ""]
    if every:
        parts += [intervals.protocol_note(every), ""]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Table("\n".join(parts), frame, "" if frames else "no comparison recorded")


def _baseline_line(task: str, scores: dict, minority: list[str]) -> str:
    """How strong the judges are: the feature baseline's test-split scores, for comparison with the real-only row."""
    if task == "Classification":
        values = [f"macro F1 {100 * scores['f1']:.1f} %", f"balanced accuracy {100 * scores['balanced_accuracy']:.1f} %"]
        recalls = [scores["per_class_recall"][c] for c in minority if c in scores.get("per_class_recall", {})]
        if recalls:
            values.append(f"minority recall {100 * float(np.mean(recalls)):.1f} %")
    else:
        values = [f"Dice {100 * scores['dice']:.1f} %", f"HD95 {scores['hd95']:.1f} px"]
    return (f"Feature baseline on the same {scores.get('n_eval', '?')} test images ({scores.get('method', '')}): "
            f"{', '.join(values)}. A judge far below it says little about the data.")
