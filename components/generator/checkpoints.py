"""Fine-tune checkpoints: `checkpoint-<step>/` folders written atomically, rotated, verified on load.

A checkpoint holds the LoRA weights (lora.safetensors), optimiser + LR-scheduler + RNG states
(training_state.pt) and state.json (step, epoch, position in the epoch, loss history, the config it was written
under, the global batch and number of processes, and the sha256 of both files). Step and position count global
batches (optimiser steps), so a checkpoint written by N processes resumes under M processes or another
gradient accumulation as long as the global batch is the same (`check_global_batch`). Data-parallel runs write
from rank 0 only. Loading re-hashes the files: a truncated or altered checkpoint raises ModelError naming the
file instead of being skipped.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from components.errors import ConfigError, ModelError
from components.hashing import file_digest

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
LORA_FILE = "lora.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "state.json"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint folders under `root`, oldest (lowest step) first; temporary folders are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(root: str | Path, step: int, lora: dict[str, torch.Tensor], training_state: dict[str, Any],
                    meta: dict[str, Any], total_limit: int) -> Path:
    """Write checkpoint-<step> atomically (temp folder, then rename) and keep only the newest `total_limit`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{PREFIX}{step}.", dir=root))
    try:
        save_file(lora, str(tmp / LORA_FILE))
        torch.save(training_state, tmp / STATE_FILE)
        files = {name: file_digest(tmp / name, "sha256") for name in (LORA_FILE, STATE_FILE)}
        (tmp / META_FILE).write_text(json.dumps({**meta, "step": step, "files": files}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(root)[:-total_limit]:
        shutil.rmtree(old)
    return final


def resolve_resume(root: str | Path, resume: str) -> Path | None:
    """'' → None; 'latest' → the newest checkpoint under root (None when there is none); else that folder."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(root)
        if not found:
            log.info("resume=latest: no checkpoint under %s, starting from step 0", root)
            return None
        return found[-1]
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"resume: checkpoint folder {path} not found; use resume=latest or one of "
                          f"{[p.name for p in list_checkpoints(root)]}")
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(LoRA weights, training state, meta) of a checkpoint; ModelError if any file is missing or altered."""
    path = Path(path)
    fix = (f"delete {path} to resume from the previous checkpoint ({[p.name for p in list_checkpoints(path.parent)]}),"
           f" or set resume to '' to start over")
    try:
        meta = json.loads((path / META_FILE).read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"checkpoint {path} is corrupt: {META_FILE} unreadable ({exc}); {fix}") from None
    for name in (LORA_FILE, STATE_FILE):
        file = path / name
        if not file.is_file():
            raise ModelError(f"checkpoint {path} is corrupt: {name} is missing; {fix}")
        if file_digest(file, "sha256") != files.get(name):
            raise ModelError(f"checkpoint {path} is corrupt: {name} does not match its recorded sha256 "
                             f"(truncated or modified); {fix}")
    lora = load_file(str(path / LORA_FILE))
    # Our own file, verified by hash above; it holds numpy/python RNG states, hence weights_only=False.
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    return lora, state, meta


def check_compatible(meta: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    """ConfigError when the checkpoint was written under different values of `keys`."""
    saved = meta.get("config", {})
    diff = {k: (saved.get(k), current.get(k)) for k in keys if k in saved and saved.get(k) != current.get(k)}
    if diff:
        raise ConfigError(f"checkpoint {path} was written with different settings {diff} (saved, now); resume with "
                          f"the same values or set resume to '' to start a new run")


def global_batch(meta: dict[str, Any]) -> int:
    """Samples per optimiser step of the run that wrote `meta` (checkpoints from before data-parallel training
    record none: batch_size × gradient_accumulation_steps of one process)."""
    if "global_batch_size" in meta:
        return int(meta["global_batch_size"])
    cfg = meta.get("config", {})
    return int(cfg.get("batch_size", 0)) * int(cfg.get("gradient_accumulation_steps", 1)) * int(
        meta.get("world_size", 1))


def check_global_batch(meta: dict[str, Any], current: int, split: str, path: Path) -> None:
    """ConfigError unless the checkpoint's global batch equals `current` (described by `split`)."""
    saved = global_batch(meta)
    if saved != current:
        raise ConfigError(f"checkpoint {path} was written with a global batch of {saved} samples per step "
                          f"({meta.get('world_size', 1)} process(es)), now {current} ({split}); choose batch_size "
                          f"and gradient_accumulation_steps so that batch_size × processes × "
                          f"gradient_accumulation_steps = {saved}, or set resume to '' to start a new run")
