"""Answer cache: sha256(image bytes) + model + prompt -> description, one JSON line per answer.

Appends are single O_APPEND writes of a whole line under a lock (safe from threads; a crash can leave at
most one partial last line, which loading skips). A rerun reads every answer back, so it costs nothing and
gives the same text.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from components.hashing import bytes_digest

log = logging.getLogger(__name__)

CACHE_NAME = "cache.jsonl"


def cache_key(image_sha256: str, model: str, prompt: str) -> str:
    """Key of one answer: the image content, the model and the exact rendered prompt."""
    return bytes_digest("\x00".join((image_sha256, model, prompt)).encode("utf-8"))


class DescriptionCache:
    """JSONL cache file; created empty on open so it always exists as a stage output."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        self._load()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped_lines += 1
        if self.skipped_lines:
            log.warning("%s: skipped %d unreadable line(s) (an interrupted write); they will be asked again",
                        self.path, self.skipped_lines)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, description: str, **fields: Any) -> None:
        """Store an answer in memory and append it to the file as one line."""
        entry = {"key": key, "description": description, **fields}
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size and not self._ends_with_newline():
                    line = "\n" + line  # never glue a new entry onto a partial line left by a crash
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._entries[key] = entry

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
