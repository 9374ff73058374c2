"""Table 1 as Markdown (the same n in both rows, the protocol under it, the rejection filter's before/after mask
statistics, Table 1b of per-class faithfulness, the memorisation audit, the per-class tables) and the
mask-statistics histograms."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.data.mask_stats import STATISTICS, StatsTable  # noqa: E402

ROW_TITLES = {"real_train_vs_real_test": "Real Train vs Real Test",
              "real_train_vs_synthetic_train": "Real Train vs Synth Train"}
STAT_TITLES = {"area_fraction": "area fraction", "compactness": "compactness", "components": "components"}


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"   # small KIDs and rounding-level distances keep their digits and sign
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _pm(mean, err) -> str:
    """'mean ± err' (or the mean alone when there is no error)."""
    if not isinstance(mean, (int, float)) or not np.isfinite(mean):
        return "–"
    return _fmt(mean) + (f" ± {_fmt(err)}" if isinstance(err, (int, float)) and np.isfinite(err) else "")


def _pct(k: int, n: int) -> str:
    return f"{k} / {n} ({100.0 * k / n:.1f} %)" if n else "–"


def _columns(fd_key: str, kid_key: str) -> list[tuple[str, str]]:
    return [(fd_key, f"{fd_key} ↓"), (kid_key, f"{kid_key} ± SE ↓"), ("lpips", "LPIPS"), ("ms_ssim", "MS-SSIM"),
            ("w1_area_fraction", "W1 area"), ("w1_compactness", "W1 compactness"),
            ("w1_components", "W1 components"), ("consistency_dice", "mask–segmenter Dice (B)")]


def _cells(r: dict, cols: list[tuple[str, str]], kid_key: str) -> list[str]:
    return [_pm(r.get(k), r.get(f"{kid_key}_se")) if k == kid_key else _fmt(r.get(k)) for k, _ in cols]


def _values(metrics: dict, key: str) -> list[float]:
    """Every value of `key` in the comparison rows, overall and per class."""
    out = []
    for row in ROW_TITLES:
        r = metrics.get(row, {})
        for d in (r, *r.get("per_class", {}).values()):
            v = d.get(key)
            if isinstance(v, (int, float)) and np.isfinite(v):
                out.append(float(v))
    return out


def sign_notes(metrics: dict) -> list[str]:
    """What a negative Fréchet or kernel distance in the table means (only when one occurs)."""
    fd_key, kid_key = metrics.get("fd_key", "fd"), metrics.get("kid_key", "kid")
    notes = []
    if any(v < 0 for v in _values(metrics, fd_key)):
        notes.append(f"A negative {fd_key} is reported as computed: the plug-in Fréchet estimate is >= 0 in exact "
                     f"arithmetic (and biased upwards at small n), so a negative value is floating-point rounding of "
                     f"a distance that is 0 to machine precision: the fitted Gaussians coincide.")
    if any(v < 0 for v in _values(metrics, kid_key)):
        notes.append(f"A negative {kid_key} is reported as computed: the estimator is unbiased, so a value below 0 "
                     f"means its sampling noise at that n exceeds the true distance: the two sets cannot be told "
                     f"apart in this feature space at this n.")
    return notes


def protocol_text(metrics: dict) -> str:
    """The protocol under Table 1: feature space, n, reference set and what each number means."""
    fd_key, kid_key = metrics.get("fd_key", "fd"), metrics.get("kid_key", "kid")
    avail = metrics.get("n_available", {})
    parts = [
        f"Protocol. Feature space: {metrics.get('feature_description', metrics.get('feature_space', '?'))}; images "
        f"compared at {metrics.get('image_size', '?')} px. Reference set A: the real training split "
        f"({metrics.get('n_reference', '?')} images), the same in both rows; the generator was trained on it. "
        f"B: the real test split and the synthetic set, each cut to n = {metrics.get('n', '?')} images (seeded "
        f"random subsets of the {avail.get('real_test', '?')} test and {avail.get('synthetic_train', '?')} "
        f"synthetic images), per class to the smaller of the two class counts, so both rows have the same n.",
        f"{fd_key}: Fréchet distance between Gaussians fitted to the features of A and B (plug-in estimate, biased "
        f"upwards at small n, reported as computed). {kid_key}: KID, the unbiased polynomial-kernel MMD² (mean over "
        f"{metrics.get('kid_subsets', '?')} random subsets of {metrics.get('kid_subset_size', '?')}) ± its "
        f"delete-one jackknife standard error over B (A held fixed); the standard deviation over the subsets is "
        f"{kid_key}_std in the metrics file.",
        "MS-SSIM and LPIPS: means over seeded random cross pairs (one image of A, one of B). W1: Wasserstein-1 "
        "distance between the per-mask distributions of area fraction, compactness and 8-connected component "
        "count of A and B. mask–segmenter Dice: agreement of B's masks with a segmenter trained on A's pairs.",
    ]
    mem = metrics.get("memorisation", {})
    if mem.get("recorded"):
        parts.append(
            f"Near-copies: images of B whose nearest real training image (RMS pixel difference at {mem['size']} px, "
            f"minimised over flips and rotations) is closer than {mem['near_copy_ratio']} × the median real–real "
            f"nearest-neighbour distance ({_fmt(mem['real_nn_median'])}) of the training images; counted over all "
            f"of B. The real test row is the audit's false-alarm level: its images are new real images.")
    if metrics.get("faithfulness"):
        parts.append(f"Table 1b: a {metrics['faithfulness']['classifier']}, applied to the real test split and to "
                     f"the synthetic images; per-class recall with 95 % Wilson intervals.")
    return " ".join(parts)


def _main_table(metrics: dict) -> list[str]:
    fd_key, kid_key = metrics.get("fd_key", "fd"), metrics.get("kid_key", "kid")
    cols = _columns(fd_key, kid_key)
    header = "| Data for calculations | n (A / B) | " + " | ".join(t for _, t in cols) + " | near-copies (B) |"
    lines = [header, "|" + "---|" * (len(cols) + 3)]
    for key, title in ROW_TITLES.items():
        if key in metrics:
            r = metrics[key]
            mem = r.get("memorisation")
            near = _pct(mem["near_copies"], mem["n"]) if mem else "not recorded"
            lines.append(f"| {title} | {r['n_a']} / {r['n_b']} | " + " | ".join(_cells(r, cols, kid_key))
                         + f" | {near} |")
    return lines


def _filter_section(f: dict) -> list[str]:
    lines = ["## Mask statistics before and after the rejection filter", ""]
    if not f.get("recorded"):
        return lines + [f"Not recorded: {f.get('reason', 'no rejection log')}.", ""]
    stats = list(STAT_TITLES)
    lines += ["| masks | n | " + " | ".join(f"{STAT_TITLES[k]} (mean ± sd)" for k in stats) + " | "
              + " | ".join(f"W1 {STAT_TITLES[k]} vs real train" for k in stats) + " |",
              "|" + "---|" * (2 + 2 * len(stats))]
    ref = f.get("reference", {})
    rows = [("Real train (reference)", ref), ("Synthetic, first attempts (before the filter)", f["before"]),
            ("Synthetic, accepted (after the filter)", f["after"])]
    for title, d in rows:
        if not d:
            continue
        lines.append(f"| {title} | {d.get('n', '–')} | "
                     + " | ".join(_pm(d.get(f"{k}_mean"), d.get(f"{k}_std")) for k in stats) + " | "
                     + " | ".join(_fmt(d.get(f"w1_{k}")) for k in stats) + " |")
    reasons = ", ".join(f"{k} {v}" for k, v in f["reasons"].items()) or "none"
    lines += ["", f"Rejected attempts: {_pct(f['rejected_attempts'], f['attempts'])} of all attempts; first attempts "
                  f"rejected: {_pct(f['first_attempt_rejected'], f['planned'])} of the planned samples; samples that "
                  f"never passed (absent from the set): {_pct(f['never_passed'], f['planned'])}. Reasons: "
                  f"{reasons}. Before the filter = the first attempt of every planned sample; a rejected sample is "
                  f"regenerated with its next seed, so the accepted set is a filtered one.", ""]
    if f.get("per_class"):
        lines += ["| class | planned | first attempt rejected | never passed |", "|---|---|---|---|"]
        for c, d in f["per_class"].items():
            lines.append(f"| {c} | {d['planned']} | {_pct(d['first_attempt_rejected'], d['planned'])} | "
                         f"{_pct(d['never_passed'], d['planned'])} |")
        lines.append("")
    return lines


def _recall(d: dict | None) -> str:
    if not d:
        return "–"
    return f"{100 * d['recall']:.1f} % [{100 * d['recall_low']:.0f}, {100 * d['recall_high']:.0f}]"


def _faithfulness_section(fa: dict) -> list[str]:
    lines = ["## Table 1b. Per-class faithfulness (classification accuracy score, reversed)", ""]
    if not fa:
        return lines + ["Not computed (quality.faithfulness: false).", ""]
    lines += ["| class | n real test | recall on real test [95 % CI] | n synthetic | recall on synthetic [95 % CI] | "
              "synthetic − real (points) |", "|---|---|---|---|---|---|"]
    for c, row in fa["per_class"].items():
        t, s = row.get("real_test"), row.get("synthetic")
        gap = f"{100 * row['gap']:+.1f}" if "gap" in row else "–"
        lines.append(f"| {c} | {t['n'] if t else 0} | {_recall(t)} | {s['n'] if s else 0} | {_recall(s)} | {gap} |")
    lines.append(f"| balanced accuracy | | {100 * fa['real_test_balanced_accuracy']:.1f} % | | "
                 f"{100 * fa['synthetic_balanced_accuracy']:.1f} % | |")
    lines += ["", f"Classifier: {fa['classifier']}. A class the generator renders faithfully has a synthetic recall "
                  f"close to its real test recall; a much lower one means its synthetic images do not look like "
                  f"its real ones to this classifier.", ""]
    return lines


def _memorisation_section(metrics: dict) -> list[str]:
    mem = metrics.get("memorisation", {})
    lines = ["## Memorisation audit", ""]
    if not mem.get("recorded"):
        return lines + [f"Not recorded: {mem.get('reason', 'no audit')}.", ""]
    rows = {k: metrics[k]["memorisation"] for k in ROW_TITLES if "memorisation" in metrics.get(k, {})}
    lines += ["| B | n | near-copies | min nn ratio | 5th percentile | median nn ratio |", "|---|---|---|---|---|---|"]
    names = {"real_train_vs_real_test": "Real test (false-alarm level)", "real_train_vs_synthetic_train": "Synthetic"}
    for k, d in rows.items():
        lines.append(f"| {names[k]} | {d['n']} | {_pct(d['near_copies'], d['n'])} | {_fmt(d['nn_ratio_min'])} | "
                     f"{_fmt(d['nn_ratio_p05'])} | {_fmt(d['nn_ratio_median'])} |")
    present = {c for d in rows.values() for c in d["per_class"]}
    classes = [c for c in metrics.get("classes", sorted(present)) if c in present]
    if classes:
        lines += ["", "| class | " + " | ".join(f"near-copies: {names[k]}" for k in rows) + " |",
                  "|---|" + "---|" * len(rows)]
        for c in classes:
            cells = [_pct(d["per_class"][c]["near_copies"], d["per_class"][c]["n"]) if c in d["per_class"] else "–"
                     for d in rows.values()]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", f"nn ratio = distance to the nearest real training image / median real–real nearest-neighbour "
                  f"distance ({_fmt(mem['real_nn_median'])} over {mem['n_reference']} training images; their 1st "
                  f"percentile is {_fmt(mem['real_nn_p01'] / mem['real_nn_median'])} of the median). 0 = an exact "
                  f"copy, about 1 = as far as a new image of this data; near-copy below {mem['near_copy_ratio']}. "
                  f"The synthetic manifest holds each pair's nn_real_id, nn_distance, nn_ratio, nn_percentile and "
                  f"near_copy.", ""]
    return lines


def table1_markdown(metrics: dict) -> str:
    """Paper-style Table 1 (same n in both rows) with the protocol under it, the rejection filter's before/after
    mask statistics, Table 1b (per-class faithfulness), the memorisation audit and the per-class tables."""
    fd_key, kid_key = metrics.get("fd_key", "fd"), metrics.get("kid_key", "kid")
    lines = ["# Table 1. Image quality assessment", ""] + _main_table(metrics) + [""]
    if metrics.get("lpips_reason"):
        lines += [f"LPIPS unavailable: {metrics['lpips_reason']}.", ""]
    for note in metrics.get("notes", sign_notes(metrics)):
        lines += [note, ""]
    lines += [metrics.get("protocol") or protocol_text(metrics), ""]
    lines += _filter_section({**metrics.get("rejection_filter", {}),
                              "reference": metrics.get("mask_stats", {}).get("real_train", {})
                              | {"n": metrics.get("n_reference", "–")}})
    lines += _faithfulness_section(metrics.get("faithfulness", {}))
    lines += _memorisation_section(metrics)
    cols = _columns(fd_key, kid_key)
    for key, title in ROW_TITLES.items():
        if key not in metrics:
            continue
        lines += [f"## {title}: per class", "", "| class | n (A / B) | " + " | ".join(t for _, t in cols) + " |",
                  "|" + "---|" * (len(cols) + 2)]
        for c, r in metrics[key]["per_class"].items():
            lines.append(f"| {c} | {r['n_a']} / {r['n_b']} | " + " | ".join(_cells(r, cols, kid_key)) + " |")
        lines.append("")
    return "\n".join(lines)


def mask_stat_histograms(tables: dict[str, StatsTable]) -> "plt.Figure":
    """One panel per statistic, one step histogram per set (densities, shared bins)."""
    fig, axes = plt.subplots(1, len(STATISTICS), figsize=(4.2 * len(STATISTICS), 3.2))
    for ax, stat in zip(axes, STATISTICS):
        values = [t.values[stat] for t in tables.values() if len(t.values[stat])]
        if not values:
            continue
        lo, hi = min(v.min() for v in values), max(v.max() for v in values)
        if stat == "components":
            bins = np.arange(lo - 0.5, hi + 1.5, 1.0)
        else:
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 30)
        for name, t in tables.items():
            if len(t.values[stat]):
                ax.hist(t.values[stat], bins=bins, density=True, histtype="step", linewidth=1.6, label=name)
        ax.set_title(stat.replace("_", " "))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
