"""How a sweep reports its trials without knowing the tracking backend.

The sweep never imports a tracking library. The caller (a pipeline) passes a `TrialTracker`; Ray pickles it into
every trial, where `tracker.trial(info, params)` opens that trial's record and yields a `log(metrics, step)`
callback: the fine-tune of a rank (phase 1, a Ray task) logs its losses through it, a sampling trial (phase 2)
sees one `report(metrics, step)` that logs through the tracker and then reports to Ray Tune.
A tracker must therefore be picklable: an instance of a module-level class holding only plain data (URIs, ids).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Protocol

MetricsLog = Callable[[dict[str, float], int], None]   # log(metrics, step)
Report = MetricsLog                                     # what a sampling trial calls with its figures


@dataclass(frozen=True)
class TrialInfo:
    """What a trial knows about itself inside its Ray worker."""
    trial_id: str
    name: str
    trial_dir: Path     # persists across a restore of the sweep: a tracker may keep its own state here
    phase: str = "sampling"   # "finetune" (phase 1: one per rank) or "sampling" (phase 2: Optuna trials)


class TrialTracker(Protocol):
    """Records one trial; picklable (it travels to the Ray workers)."""

    def trial(self, info: TrialInfo, params: dict) -> ContextManager[MetricsLog]:
        """Open (or, for a restored trial, reopen) the trial's record; yields `log(metrics, step)`.
        An exception leaving the block marks the trial failed and propagates."""
        ...


class NullTrialTracker:
    """Records nothing: sweeps run without any tracking backend."""

    @contextlib.contextmanager
    def trial(self, info: TrialInfo, params: dict) -> Iterator[MetricsLog]:
        yield _ignore


def _ignore(metrics: dict[str, float], step: int) -> None:
    return None
