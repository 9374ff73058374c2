"""What the rejection filter of the synthesize stage did: mask statistics before and after it, rejection rates.

Before the filter = the first attempt of every planned sample (what the generator produces for a plan, whether
the filter kept it or not): accepted pairs with attempt 0 plus the rejected attempts with attempt 0 (their
statistics come from rejections.csv). After the filter = the accepted pairs (any attempt). Both are compared
with the real training masks by the Wasserstein-1 distance of each statistic's distribution.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from components.data.mask_stats import STATISTICS, StatsTable, distribution_distances
from components.errors import DataError


def _flags(column: pd.Series) -> np.ndarray:
    return column.astype(str).str.lower().isin(["true", "1"]).to_numpy()


def _finite(values: dict[str, np.ndarray]) -> StatsTable:
    """A table of per-statistic arrays with missing values (older records lack compactness) dropped."""
    return StatsTable({k: np.asarray(v, np.float64)[np.isfinite(np.asarray(v, np.float64))] for k, v in values.items()})


def _describe(table: StatsTable, reference: StatsTable) -> dict:
    n = {f"n_{k}": int(len(v)) for k, v in table.values.items()}
    return {"n": max(n.values()) if n else 0, **n, **table.summary(), **distribution_distances(reference, table)}


def _rate(k: int, n: int) -> float:
    return k / n if n else 0.0


def filter_summary(accepted: pd.DataFrame, accepted_stats: StatsTable, rejections: pd.DataFrame,
                   reference: StatsTable, classes: list[str], where: str = "rejections.csv") -> dict:
    """Counts, rates and before/after mask statistics of the pair filter.

    `accepted`: the synthetic manifest rows (column `attempt`), aligned with `accepted_stats`; `rejections`:
    every rejected attempt (image_id, category, attempt, reason, final, area_fraction, components, compactness).
    """
    missing = [c for c in ("image_id", "category", "attempt", "reason", "final", "area_fraction", "components")
               if c not in rejections.columns]
    if missing or "attempt" not in accepted.columns:
        raise DataError(f"{where}: missing column(s) {missing or ['attempt (synthetic manifest)']}; rerun the "
                        f"synthesize stage to record every rejected attempt")
    rej = rejections[rejections["category"].astype(str).isin(classes)]
    acc_attempt = pd.to_numeric(accepted["attempt"], errors="coerce").to_numpy()
    rej_attempt = pd.to_numeric(rej["attempt"], errors="coerce").to_numpy()
    final = _flags(rej["final"])
    first_acc, first_rej = acc_attempt == 0, rej_attempt == 0
    before = {k: np.concatenate([accepted_stats.values[k][first_acc],
                                 pd.to_numeric(rej[k], errors="coerce").to_numpy(np.float64)[first_rej]
                                 if k in rej.columns else np.full(int(first_rej.sum()), np.nan)])
              for k in STATISTICS}
    n_accepted, n_never = len(accepted), int(final.sum())
    planned, attempts = n_accepted + n_never, n_accepted + len(rej)
    out = {
        "planned": planned, "accepted": n_accepted, "attempts": attempts, "rejected_attempts": int(len(rej)),
        "rejected_attempt_rate": _rate(len(rej), attempts),
        "first_attempt_rejected": int(first_rej.sum()), "first_attempt_rejection_rate": _rate(int(first_rej.sum()), planned),
        "never_passed": n_never, "never_passed_rate": _rate(n_never, planned),
        "reasons": {str(k): int(v) for k, v in rej["reason"].astype(str).value_counts().sort_index().items()},
        "before": _describe(_finite(before), reference),
        "after": _describe(_finite(accepted_stats.values), reference),
        "per_class": {},
    }
    acc_cats, rej_cats = accepted["category"].astype(str).to_numpy(), rej["category"].astype(str).to_numpy()
    for c in classes:
        a, r = acc_cats == c, rej_cats == c
        never = int((final & r).sum())
        n_planned = int(a.sum()) + never
        if n_planned:
            first = int((first_rej & r).sum())
            out["per_class"][c] = {"planned": n_planned, "accepted": int(a.sum()), "rejected_attempts": int(r.sum()),
                                   "first_attempt_rejected": first,
                                   "first_attempt_rejection_rate": _rate(first, n_planned),
                                   "never_passed": never, "never_passed_rate": _rate(never, n_planned)}
    return out
