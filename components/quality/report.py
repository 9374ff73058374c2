"""Table 1 as Markdown and the mask-statistics histograms."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.data.mask_stats import STATISTICS, StatsTable  # noqa: E402

ROW_TITLES = {"real_train_vs_real_test": "Real Train vs Real Test",
              "real_train_vs_synthetic_train": "Real Train vs Synth Train"}


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def table1_markdown(results: dict, fd_key: str, kid_key: str, feature_note: str, lpips_reason: str = "") -> str:
    """Paper-style Table 1 (one row per comparison) plus a per-class table for each comparison."""
    cols = [(fd_key, f"{fd_key} ↓"), (kid_key, f"{kid_key} ↓"), ("lpips", "LPIPS"), ("ms_ssim", "MS-SSIM"),
            ("w1_area_fraction", "W1 area"), ("w1_compactness", "W1 compactness"),
            ("w1_components", "W1 components"), ("consistency_dice", "mask–segmenter Dice (B)")]
    lines = ["# Table 1. Image quality assessment", "",
             f"Feature space: {feature_note}.", ""]
    header = "| Data for calculations | n (A / B) | " + " | ".join(t for _, t in cols) + " |"
    lines += [header, "|" + "---|" * (len(cols) + 2)]
    for key, title in ROW_TITLES.items():
        if key in results:
            r = results[key]
            lines.append(f"| {title} | {r['n_a']} / {r['n_b']} | " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    if lpips_reason:
        lines += ["", f"LPIPS unavailable: {lpips_reason}."]
    lines += ["", "A = real training split; B = the set named second. MS-SSIM and LPIPS are means over random "
                  "cross pairs (one image of A, one of B). W1 = Wasserstein-1 distance between the per-mask "
                  "statistic distributions. The Fréchet distance grows as sets shrink: compare rows of different "
                  "sizes through KID.", ""]
    for key, title in ROW_TITLES.items():
        if key not in results:
            continue
        lines += [f"## {title}: per class", "", "| class | n (A / B) | " + " | ".join(t for _, t in cols) + " |",
                  "|" + "---|" * (len(cols) + 2)]
        for c, r in results[key]["per_class"].items():
            lines.append(f"| {c} | {r['n_a']} / {r['n_b']} | " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
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
