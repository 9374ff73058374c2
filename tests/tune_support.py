"""Counting the sweep's trainer constructions across Ray worker processes (shared by the tune tests)."""
from __future__ import annotations

import uuid
from pathlib import Path


def counting_trainer(count_dir: str, make, cfg, on_metrics):
    """Wraps a trainer factory; each construction leaves a file (the rank tasks run in Ray workers, whose
    memory the test cannot see). Install with functools.partial(counting_trainer, dir, real_factory)."""
    (Path(count_dir) / f"rank{cfg.lora_rank}-{uuid.uuid4().hex}").touch()
    return make(cfg, on_metrics)


def constructions(count_dir: Path) -> list[int]:
    """The ranks of every construction so far, sorted."""
    return sorted(int(p.name.split("-")[0][4:]) for p in Path(count_dir).iterdir())
