"""Timing, peak memory, environment description and result tables shared by every benchmark.

How numbers are taken:
- time: wall clock of one call of a case's step function, after `warmup` untimed calls, with
  torch.cuda.synchronize() before the clock is read on CUDA; the figure is the median over `repeats` calls.
  Cases of one benchmark are set up together and their timed calls interleaved round by round (order rotated
  each round), so load from other processes on a shared machine hits every case alike.
- peak memory: measured over a case's setup and warmup (the first optimiser step allocates its state, so the
  peak is reached there). CUDA: torch.cuda.max_memory_allocated() minus memory_allocated() before the setup.
  CPU: the growth of the process's peak resident set size (VmHWM, reset through /proc/self/clear_refs, minus
  VmRSS before the setup; freed heap memory is returned with malloc_trim first). Both therefore count what the
  case itself allocates: its model, activations, gradients and optimiser state.
"""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

# --------------------------------------------------------------------------------------------- device



def amp_dtype(device: torch.device) -> torch.dtype:
    """Reduced precision used for the frozen weights / autocast: bf16 on CUDA, fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "device"


def environment(device: torch.device) -> dict[str, Any]:
    """What a reader needs to compare runs: device, library versions, machine load."""
    import diffusers
    import peft

    return {
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
        "diffusers": diffusers.__version__, "peft": peft.__version__, "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "device_model": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "loadavg_start": loadavg(),
    }


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages (what else was running on the machine)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------- memory

def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak memory a block adds (see the module docstring for the definition)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None
        self.kind = "cuda max_memory_allocated delta" if device.type == "cuda" else "CPU peak RSS delta"
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._polled = 0

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        _malloc_trim()
        rss = _proc_status_kib("VmRSS")
        if rss is not None and _reset_hwm():
            self._start = rss * 1024
            return self
        self._start = _rss_bytes()  # no /proc: poll the RSS in a thread (coarser, may miss short spikes)
        self._polled = self._start
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self._polled = max(self._polled, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._poller is not None:
            self._stop.set()
            self._poller.join()
            peak = max(self._polled, _rss_bytes())
        else:
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        self.peak_bytes = max(0, peak - self._start)


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # resource reports the lifetime peak only; better than nothing
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        _malloc_trim()


# --------------------------------------------------------------------------------------------- timing

@dataclass
class Case:
    """One variant of a benchmark.

    `setup()` builds everything the variant needs and returns its step function; one call of the step is one
    timed unit that processes `items` samples (training samples, generated pairs, ...).
    """
    name: str
    setup: Callable[[], Callable[[], Any]]
    items: int
    baseline: str | None = None       # name of the case this one is compared with (None: it is a baseline)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    name: str
    items: int
    times: list[float]
    peak_bytes: int | None
    memory_kind: str
    baseline: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def throughput(self) -> float:
        return self.items / self.median

    @property
    def spread(self) -> float:
        """Relative interquartile range of the step times (noise indicator)."""
        if len(self.times) < 4:
            return (max(self.times) - min(self.times)) / self.median
        q = statistics.quantiles(self.times, n=4)
        return (q[2] - q[0]) / self.median

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "items_per_step": self.items, "step_seconds": self.times,
                "median_step_seconds": self.median, "throughput": self.throughput,
                "peak_memory_bytes": self.peak_bytes, "memory_kind": self.memory_kind,
                "baseline": self.baseline, **({"info": self.info} if self.info else {})}


def run_cases(cases: Sequence[Case], device: torch.device, warmup: int, repeats: int,
              interleave: bool = True, prime: str = "all", max_seconds: float | None = None,
              log: Callable[[str], None] = print) -> dict[str, Measurement]:
    """Set up, warm up and time `cases`; returns one Measurement per case name.

    interleave=True keeps every case alive and times them round-robin (fair under varying load);
    interleave=False runs one case to completion and frees it before the next (lower peak memory).
    prime ("all" | "first" | "none"): set up and step those cases once, unmeasured, and free them first, so
    one-time process costs (lazy imports, kernel caches, library workspaces) are not charged to whichever
    case happens to be measured first.
    max_seconds (sequential mode only): a case whose last warm-up call says `repeats` calls would take longer
    gets fewer timed calls, but at least 2.
    """
    if warmup < 1 or repeats < 1:
        raise ValueError("warmup and repeats must be ≥ 1 (the first call allocates optimiser state)")
    results: dict[str, Measurement] = {}
    steps: dict[str, Callable[[], Any]] = {}
    for case in {"all": list(cases), "first": list(cases[:1]), "none": []}[prime]:
        t0 = time.perf_counter()
        case.setup()()
        sync(device)
        release_memory(device)
        log(f"  {case.name}: primed in {time.perf_counter() - t0:.1f}s")

    last_warmup: dict[str, float] = {}

    def prepare(case: Case) -> None:
        t0 = time.perf_counter()
        with PeakMemory(device) as mem:
            step = case.setup()
            for _ in range(warmup):
                t1 = time.perf_counter()
                step()
                sync(device)
                last_warmup[case.name] = time.perf_counter() - t1
        steps[case.name] = step
        results[case.name] = Measurement(case.name, case.items, [], mem.peak_bytes, mem.kind, case.baseline,
                                         dict(case.info))
        log(f"  {case.name}: set up and warmed up in {time.perf_counter() - t0:.1f}s")

    def timed(case: Case) -> None:
        step = steps[case.name]
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        results[case.name].times.append(time.perf_counter() - t0)

    if interleave:
        for case in cases:
            prepare(case)
        for r in range(repeats):
            k = r % len(cases)
            for case in list(cases[k:]) + list(cases[:k]):
                timed(case)
    else:
        for case in cases:
            prepare(case)
            n = repeats
            if max_seconds is not None:
                n = max(2, min(repeats, int(max_seconds / max(last_warmup[case.name], 1e-9))))
            for _ in range(n):
                timed(case)
            steps.pop(case.name)
            release_memory(device)
    steps.clear()
    release_memory(device)
    return results


# --------------------------------------------------------------------------------------------- tables

def mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f}"


@dataclass
class Table:
    """A markdown table plus notes and target checks; what a benchmark prints and appends to RESULTS.md."""
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    derived: dict[str, float] = field(default_factory=dict)     # figures computed from the rows (JSON only)

    def add_target(self, name: str, value: float, threshold: float, unit: str = "×") -> dict[str, Any]:
        entry = {"target": name, "value": round(value, 3), "threshold": threshold, "met": value >= threshold}
        self.targets.append(entry)
        self.notes.append(f"Target {name}: {value:.2f}{unit} measured, ≥ {threshold:g}{unit} wanted → "
                          f"{'MET' if entry['met'] else 'MISSED'}")
        return entry

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes,
                "targets": self.targets, "derived": self.derived}


def comparison_table(title: str, results: dict[str, Measurement], unit: str,
                     order: Sequence[str] | None = None) -> Table:
    """Rows: throughput, median step time, spread, peak memory, the baseline's name and the ratio to it."""
    mem_kind = next(iter(results.values())).memory_kind
    table = Table(title, ["variant", unit, "median call (ms)", "IQR/median", f"peak MiB ({mem_kind})",
                          "baseline", "ratio vs baseline"])
    for name in order or list(results):
        m = results[name]
        if m.baseline is None:
            base, ratio = "—", "1.00× (baseline)"
        else:
            b = results[m.baseline]
            base, ratio = m.baseline, f"{m.throughput / b.throughput:.2f}×"
        table.rows.append([name, f"{m.throughput:.3g}", f"{m.median * 1e3:.1f}", f"{m.spread:.2f}",
                           mib(m.peak_bytes), base, ratio])
    return table


def ratio(results: dict[str, Measurement], name: str, baseline: str) -> float:
    """Throughput of `name` over that of `baseline`."""
    return results[name].throughput / results[baseline].throughput
