"""Progress bars fit for a terminal and for a log file.

On a terminal a bar redraws in place as usual. When the stream is not a terminal (`make demo > log`, CI,
a Ray worker), the bar prints one plain line at most every LOG_PERCENT percent of its total and never more
often than every LOG_SECONDS seconds, each line ending in a newline instead of carriage-return redraws.
"""
from __future__ import annotations

import re
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Sequence, TextIO, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

LOG_PERCENT = 5
LOG_SECONDS = 10.0
_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")   # what tqdm writes to stack nested bars on a terminal


class _LineStream:
    """Turns tqdm's carriage-return redraws into whole lines, without the cursor moves of nested bars."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        line = _CURSOR_MOVES.sub("", text).replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _interactive(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable | None = None, total: int | None = None, *, desc: str = "", unit: str = "it",
             disable: bool = False, stream: TextIO | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one with `total`) that stays readable in a log file."""
    stream = stream if stream is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not _interactive(stream):
        kwargs.setdefault("mininterval", LOG_SECONDS)
        kwargs.setdefault("maxinterval", float("inf"))   # no time-triggered redraws between updates
        kwargs.setdefault("miniters", max(1, (total or 0) * LOG_PERCENT // 100))
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        stream = _LineStream(stream)  # type: ignore[assignment]
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream, **kwargs)


def map_with_progress(fn: Callable[[T], R], jobs: Sequence[T], workers: int = 1, chunksize: int = 16,
                      **bar: Any) -> list[R]:
    """`[fn(job) for job in jobs]`, in a process pool of `workers` when more than one, under one bar."""
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(progress_bar(pool.map(fn, jobs, chunksize=chunksize), total=len(jobs), **bar))
    return [fn(job) for job in progress_bar(jobs, total=len(jobs), **bar)]
