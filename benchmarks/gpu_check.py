"""GPU check for a lent device (`make bench-gpu`): throughput at the paper's scale, then the `gpu` tests.

On one CUDA device, base model `sd2-base-random` (Stable Diffusion 2 base architecture, random weights) in
bf16 (frozen weights bf16 + autocast, LoRA parameters fp32):

1. LoRA training at 256 px, batch 4 and 16, mask losses on (default config, timesteps stratified so half of
   each batch takes the x̂0-decode mask branch), torch.compile off and on: samples/s, median step, peak memory;
   the first (compiling) step is reported on its own;
2. dual sampling at 512 px, 45 DDIM steps, guidance 1.22, batch 8 and 16, 16 pairs per timed call: pairs/s;
3. the projected wall time of the paper's schedule, 100 epochs × 1,990 images = 100 × ⌈1990 / batch⌉
   optimiser steps at the measured time per step, against the target ≤ 30 min (paper: 5 h on an RTX 4090),
   and sampling against ≥ 4 pairs/s;
4. `python -m pytest -m gpu tests/test_gpu_*.py` (CUDA paths: bf16 + fp32 LoRA, channels_last, compile,
   adapt_vae on the device, dual sampling).

Everything runs under one time budget (--budget-s, default 450 s, so the whole `make bench-gpu` stays under
8 minutes), in this order: model folders; training batch 4 eager; sampling batch 8 and 16; training batch 16
eager; training batch 4 compiled; the gpu tests (150 s kept for them); training batch 16 compiled if the time
left covers 1.2× what batch 4 compiled took. A measurement that does not fit is skipped, one that runs past its
room is stopped (SIGALRM), and the section is written with whatever finished. The section is appended to benchmarks/RESULTS.md (device named by
torch.cuda.get_device_name); raw numbers go to benchmarks/results/; where $OUT is set (a device call) the
section, the JSON and the test log are copied there, and `--merge FILE` appends such a section here.

`--rehearse` runs the very same code on the CPU at tiny sizes (preset `tiny`), writes to a temporary file and
never to RESULTS.md; `make bench-gpu-rehearse` does so in an environment holding only the lent machine's
packages plus the carried wheels (benchmarks/lent_env.py). Without CUDA and without --rehearse the check
refuses with one line (exit status 2).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

_T0 = time.monotonic()                 # the budget counts from here: imports and set-up are part of the 8 minutes
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
REHEARSAL_OUT = Path(tempfile.gettempdir()) / "skindualgen-bench-gpu-rehearsal.md"
REFUSAL = ("bench-gpu needs a CUDA device (torch.cuda.is_available() is False here); on CPU run `make bench` for "
           "the CPU benchmarks, or `make bench-gpu-rehearse` to rehearse this check at tiny sizes")


@dataclass
class CheckSettings:
    preset: str = "sd2-base-random"
    lora_rank: int = 4
    train_resolution: int = 256
    train_batches: tuple[int, ...] = (4, 16)
    train_warmup: int = 3
    train_repeats: int = 8
    compile_warmup: int = 2            # the first compiles; the second shows that nothing recompiles
    sample_resolution: int = 512
    sample_steps: int = 45
    guidance_scale: float = 1.22
    sample_batches: tuple[int, ...] = (8, 16)
    sample_pairs: int = 16             # pairs per timed call
    sample_warmup: int = 1
    sample_repeats: int = 2
    budget_s: float = 450.0            # the whole check, tests included
    test_reserve_s: float = 150.0      # kept for the gpu tests while measurements before them are planned
    compile_estimate_s: float = 60.0   # least room worth starting the first compiled setting in; one that does
                                       # not finish in the room left is stopped and reported as such
    paper_epochs: int = 100
    paper_images: int = 1990
    paper_target_min: float = 30.0
    pairs_target: float = 4.0
    rehearse: bool = False

    @classmethod
    def rehearsal(cls) -> "CheckSettings":
        """Same code path, tiny sizes (CPU, a few minutes)."""
        return cls(preset="tiny", train_resolution=64, train_batches=(2, 4), train_warmup=1, train_repeats=2,
                   compile_warmup=2, sample_resolution=64, sample_steps=10, sample_batches=(2, 4), sample_pairs=4,
                   sample_warmup=1, sample_repeats=1, budget_s=1200.0, test_reserve_s=300.0,
                   compile_estimate_s=240.0, rehearse=True)


# --------------------------------------------------------------------------------------------- time budget

class OutOfTime(BaseException):
    """Raised by the alarm when a measurement runs past its limit (BaseException: torch.compile's fallbacks
    catch Exception, not this)."""


class Budget:
    def __init__(self, seconds: float, start: float | None = None):
        self.start, self.seconds = time.monotonic() if start is None else start, seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def limit(self, seconds: float):
        """Context manager: OutOfTime in the main thread after `seconds` (≤ 0: at once)."""
        budget = self

        class _Limit:
            def __enter__(self):
                if seconds <= 0:
                    raise OutOfTime()
                signal.signal(signal.SIGALRM, _raise)
                # Repeats every 5 s: should a library swallow the first OutOfTime, the next one comes.
                signal.setitimer(signal.ITIMER_REAL, seconds, 5.0)
                return budget

            def __exit__(self, *exc):
                cancel_alarm()
                return False
        return _Limit()


def _raise(signum, frame):
    raise OutOfTime()


def cancel_alarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


# --------------------------------------------------------------------------------------------- records

@dataclass
class Row:
    kind: str                       # "train" | "sample"
    batch: int
    compile: bool = False
    status: str = "ok"              # ok | skipped: ... | stopped: ... | failed: ...
    step_times: list[float] = field(default_factory=list)
    warmup_times: list[float] = field(default_factory=list)
    setup_s: float | None = None
    peak_bytes: int | None = None
    items: int = 0                  # samples per step (train) / pairs per call (sample)

    @property
    def median(self) -> float | None:
        if not self.step_times:
            return None
        s = sorted(self.step_times)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2

    @property
    def throughput(self) -> float | None:
        m = self.median
        return self.items / m if m else None

    @property
    def spread(self) -> float | None:
        if len(self.step_times) < 2:
            return None
        import statistics

        t = self.step_times
        if len(t) < 4:
            return (max(t) - min(t)) / statistics.median(t)
        q = statistics.quantiles(t, n=4)
        return (q[2] - q[0]) / statistics.median(t)


def paper_steps(s: CheckSettings, batch: int) -> int:
    """Optimiser steps of the paper's schedule: epochs × ⌈images / batch⌉."""
    return s.paper_epochs * math.ceil(s.paper_images / batch)


def projected_minutes(s: CheckSettings, row: Row) -> float | None:
    return None if row.median is None else paper_steps(s, row.batch) * row.median / 60


# --------------------------------------------------------------------------------------------- measuring

def measure(row: Row, setup: Callable[[], Callable[[], Any]], warmup: int, repeats: int, device,
            budget: Budget, limit_s: float, log: Callable[[str], None]) -> Row:
    """Set up and time one setting within `limit_s` seconds; fills `row` (status says how it ended)."""
    from benchmarks import harness

    name = f"{row.kind} batch {row.batch}{', compile' if row.compile else ''}"
    step = None
    try:
        with budget.limit(limit_s):
            t0 = time.perf_counter()
            with harness.PeakMemory(device) as mem:
                step = setup()
                row.setup_s = time.perf_counter() - t0
                for _ in range(warmup):
                    t1 = time.perf_counter()
                    step()
                    harness.sync(device)
                    row.warmup_times.append(time.perf_counter() - t1)
            row.peak_bytes = mem.peak_bytes
            for _ in range(repeats):
                harness.sync(device)
                t1 = time.perf_counter()
                step()
                harness.sync(device)
                row.step_times.append(time.perf_counter() - t1)
    except OutOfTime:
        row.status = f"stopped: time limit ({limit_s:.0f} s) after {len(row.warmup_times)} warm-up and " \
                     f"{len(row.step_times)} timed call(s)"
    except Exception as exc:  # one broken setting must not lose the others
        row.status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        log(traceback.format_exc())
    finally:
        cancel_alarm()
        step = None
        if row.compile:
            import torch

            torch._dynamo.reset()     # drop the compiled graphs (and the module they hold) before the next setting
        harness.release_memory(device)
    med = row.median
    log(f"  {name}: {row.status}" + (f", setup {row.setup_s:.1f} s, warm-up "
                                     f"{', '.join(f'{t:.2f}' for t in row.warmup_times)} s, median "
                                     f"{med * 1e3:.1f} ms → {row.throughput:.3g}/s" if med else ""))
    return row


def train_setup(s: CheckSettings, device, fx, batch: int, compile: bool) -> Callable[[], Callable[[], Any]]:
    from benchmarks.bench_finetune import trainer_step
    from benchmarks.fixtures import Settings, toy_batch

    bs = Settings.for_preset(s.preset, str(device), quick=False)
    bs.lora_rank = s.lora_rank

    def setup():
        data = toy_batch(batch, s.train_resolution, seed=2)
        cfg = fx.config(bs, s.train_resolution, batch, device, compile=compile)
        return trainer_step(fx, cfg, data)
    return setup


def sample_setup(s: CheckSettings, device, dirs, batch: int) -> Callable[[], Callable[[], Any]]:
    from benchmarks import harness
    from benchmarks.fixtures import prompts_for
    from components.generator.sampling import DualGenerator

    prompts, seeds = prompts_for(s.sample_pairs), list(range(s.sample_pairs))

    def setup():
        gen = DualGenerator.from_dirs(dirs.base_ref, dirs.vae_dir, dirs.lora_dir, device=device,
                                      dtype=harness.amp_dtype(device))
        return lambda: gen.generate(prompts, seeds, num_inference_steps=s.sample_steps,
                                    guidance_scale=s.guidance_scale, height=s.sample_resolution,
                                    width=s.sample_resolution, batch_size=batch, progress=False)
    return setup


# --------------------------------------------------------------------------------------------- gpu tests

def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_gpu_*.py"))


def run_gpu_tests(s: CheckSettings, seconds: float, log_path: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """`python -m pytest -m gpu tests/test_gpu_*.py` in a subprocess (same interpreter and environment)."""
    import importlib.util

    files = gpu_test_files()
    if importlib.util.find_spec("pytest") is None:
        return {"status": "not run: pytest is not importable", "summary": "", "seconds": 0.0}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "--durations=5", "-p", "no:cacheprovider",
           *files]
    env = dict(os.environ)
    if s.rehearse:
        env["SKINDUALGEN_GPU_REHEARSE"] = "1"
    log(f"  {' '.join(cmd[2:])} (limit {seconds:.0f} s)")
    t0 = time.perf_counter()
    # Output to a file, not a pipe, and pytest in its own process group: on a timeout the whole group (compile
    # workers included) is killed and nothing is left holding a pipe open.
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(seconds, 1))
            status = "passed" if code == 0 else f"failed (pytest exit status {code})"
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            code, status = None, f"stopped: time limit ({seconds:.0f} s)"
    seconds_run = time.perf_counter() - t0
    output = log_path.read_text(errors="replace")
    summary = next((ln.strip("= ").strip() for ln in reversed(output.splitlines())
                    if re.search(r"\b(passed|failed|skipped|error|errors|no tests ran)\b", ln)), "")
    if status == "passed" and re.search(r"\d+ (skipped|deselected)", summary):
        status = "passed, but not all ran (a gpu test skipped on the device is a problem)"
    for line in output.splitlines()[-25:]:
        log("    " + line)
    return {"status": status, "summary": summary, "seconds": round(seconds_run, 1), "files": files,
            "exit_status": code}


# --------------------------------------------------------------------------------------------- import audit

def import_audit() -> dict[str, Any]:
    """Third-party distributions whose modules this process imported, and which of them the image lacks."""
    import importlib.metadata as md

    from benchmarks import no_albumentations
    from benchmarks.lent_env import CARRIED, LENT_PACKAGES, NOT_THERE, REHEARSAL_ONLY, normalize

    tops = {m.split(".")[0] for m in list(sys.modules)}
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
    owners = md.packages_distributions()
    lent = {normalize(p) for p in LENT_PACKAGES}
    # Distributions vendored inside another (setuptools/_vendor/jaraco..., put on sys.path by setuptools, which
    # torch.utils.cpp_extension imports) come with their host package.
    vendored = {normalize(d.metadata["Name"] or "") for d in md.distributions()
                if "_vendor" in Path(str(d.locate_file(""))).parts}
    outside: set[str] = set()
    for top in tops - stdlib - {"components", "benchmarks", "tests", "pipelines", "__main__"}:
        dists = {normalize(d) for d in owners.get(top, [])}
        outside |= {d for d in dists if d not in lent and d not in vendored}
    forbidden = sorted(n for n in NOT_THERE if n in sys.modules and not no_albumentations.is_stand_in(sys.modules[n]))
    return {"outside_image": sorted(outside), "forbidden_imported": forbidden,
            "rehearsal_only": sorted(outside & set(REHEARSAL_ONLY)),
            "unexpected": sorted(outside - set(CARRIED) - set(REHEARSAL_ONLY)),
            "albumentations_stand_in": no_albumentations.is_stand_in(sys.modules.get("albumentations"))}


# --------------------------------------------------------------------------------------------- report

def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def section(env: dict[str, Any], s: CheckSettings, rows: list[Row], tests: dict[str, Any], audit: dict[str, Any],
            started: datetime, seconds: float) -> tuple[str, dict[str, Any]]:
    from benchmarks import harness

    title = "REHEARSAL on CPU — not a GPU result" if s.rehearse else "bench-gpu"
    precision = "bf16 frozen weights + autocast, fp32 LoRA" if env["device"].startswith("cuda") else "fp32 (CPU)"
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC · {env['device_name']} · {title} ({s.preset})", ""]
    lines.append(f"- device `{env['device']}`, torch {env['torch']}, diffusers {env['diffusers']}, peft {env['peft']}, "
                 f"transformers {env.get('transformers')}, python {env['python']}"
                 + (f", CUDA {env['cuda']}" if env.get("cuda") else "") + f"; precision {precision}")
    lines.append(f"- `{env.get('command', 'python -m benchmarks.gpu_check')}`: wall time {seconds:.0f} s "
                 f"of a {s.budget_s:.0f} s budget; load average at start {env.get('loadavg_start')}, at end "
                 f"{harness.loadavg()}")
    lines.append(f"- imports outside the lent machine's image: {', '.join(audit['outside_image']) or 'none'}"
                 + (f" (rehearsal only: {', '.join(audit['rehearsal_only'])})" if audit["rehearsal_only"] else "")
                 + (f"; NOT CARRIED: {', '.join(audit['unexpected'])}" if audit["unexpected"] else "")
                 + ("; albumentations: the resize-only stand-in of benchmarks/no_albumentations.py"
                    if audit["albumentations_stand_in"] else ""))
    lines.append("")
    train = [r for r in rows if r.kind == "train"]
    sample = [r for r in rows if r.kind == "sample"]
    mem_kind = "CUDA max_memory_allocated delta" if env["device"].startswith("cuda") else "CPU peak RSS delta"
    lines += [f"### LoRA training ({s.preset}, {s.train_resolution} px, LoRA rank {s.lora_rank}, mask losses on)", "",
              f"| batch | compile | samples/s | median step (ms) | IQR/median | first step (s) | setup (s) | "
              f"peak MiB ({mem_kind}) | paper schedule: steps | projected (min) | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in train:
        lines.append(f"| {r.batch} | {'on' if r.compile else 'off'} | {_fmt(r.throughput, '.3g')} | "
                     f"{_fmt(r.median and r.median * 1e3, '.1f')} | {_fmt(r.spread, '.2f')} | "
                     f"{_fmt(r.warmup_times[0] if r.warmup_times else None, '.1f')} | {_fmt(r.setup_s, '.1f')} | "
                     f"{harness.mib(r.peak_bytes)} | {paper_steps(s, r.batch):,} | "
                     f"{_fmt(projected_minutes(s, r), '.1f')} | {r.status} |")
    from components.generator.config import FinetuneConfig

    d = FinetuneConfig()
    lines += ["", f"- One timed call = one optimiser step of FinetuneTrainer.train_step on a fixed in-memory batch "
                  f"(default config: λ_bce {d.lambda_bce:g}, λ_dice {d.lambda_dice:g}, mask losses for t < "
                  f"{d.mask_loss_max_timestep}, timesteps stratified over each batch so the usual share of it is "
                  f"decoded for them); {s.train_warmup} warm-up step(s) ({s.compile_warmup} compiled), "
                  f"{s.train_repeats} timed. compile on: FinetuneConfig.compile (torch.compile of the UNet after "
                  f"LoRA is added), static shapes, one graph per setting; \"first step\" includes the compilation.",
              f"- Paper schedule: {s.paper_epochs} epochs × {s.paper_images:,} images = {s.paper_epochs} × "
              f"⌈{s.paper_images} / batch⌉ steps at the median step time; excludes data loading and augmentation, "
              f"checkpoints and validation grids.", ""]
    lines += [f"### Dual sampling ({s.sample_resolution} px, {s.sample_steps} DDIM steps, guidance {s.guidance_scale}, "
              f"{s.sample_pairs} pairs per call)", "",
              f"| batch | pairs/s | median call (s) | IQR/median | setup (s) | peak MiB ({mem_kind}) | status |",
              "|---|---|---|---|---|---|---|"]
    for r in sample:
        lines.append(f"| {r.batch} | {_fmt(r.throughput, '.3g')} | {_fmt(r.median, '.2f')} | {_fmt(r.spread, '.2f')} | "
                     f"{_fmt(r.setup_s, '.1f')} | {harness.mib(r.peak_bytes)} | {r.status} |")
    lines += ["", "- One timed call = DualGenerator.generate of all pairs: prompt encoding, DDIM with classifier-free "
                  "guidance, 4-channel VAE decode, uint8 image + mask arrays.", ""]
    targets = target_lines(s, rows)
    lines += ["### Targets", ""] + [f"- {t['line']}" for t in targets] + [""]
    lines += ["### gpu tests", "",
              f"- `python -m pytest -m gpu {' '.join(tests.get('files') or gpu_test_files())}`: {tests['status']}"
              + (f" — {tests['summary']}" if tests.get("summary") else "") + f" ({tests.get('seconds', 0):.0f} s)"]
    record = {"date": started.isoformat(), "environment": env, "settings": asdict(s),
              "rows": [{**asdict(r), "median": r.median, "throughput": r.throughput, "spread": r.spread,
                        "projected_paper_minutes": projected_minutes(s, r) if r.kind == "train" else None}
                       for r in rows],
              "targets": targets, "tests": tests, "imports": audit, "wall_seconds": round(seconds, 1)}
    return "\n".join(lines) + "\n", record


def target_lines(s: CheckSettings, rows: list[Row]) -> list[dict[str, Any]]:
    """MET / MISSED lines for the two targets (best measured setting; None measured → NOT MEASURED)."""
    out = []
    train = [r for r in rows if r.kind == "train" and r.median]
    if train:
        best = min(train, key=lambda r: projected_minutes(s, r))
        value = projected_minutes(s, best)
        met = value <= s.paper_target_min
        default = next((r for r in train if r.batch == s.train_batches[0] and not r.compile), None)
        extra = (f"; batch {default.batch}, compile off: {projected_minutes(s, default):.1f} min"
                 if default is not None and default is not best else "")
        out.append({"target": "paper schedule projected", "value": round(value, 2), "threshold": s.paper_target_min,
                    "unit": "min", "met": met, "setting": f"batch {best.batch}, compile {'on' if best.compile else 'off'}",
                    "line": f"Target paper schedule ({s.paper_epochs} epochs × {s.paper_images:,} images) ≤ "
                            f"{s.paper_target_min:g} min projected (paper: 5 h on an RTX 4090): {value:.1f} min "
                            f"(batch {best.batch}, compile {'on' if best.compile else 'off'}{extra}) → "
                            f"{'MET' if met else 'MISSED'}"})
    else:
        out.append({"target": "paper schedule projected", "met": None,
                    "line": f"Target paper schedule ≤ {s.paper_target_min:g} min projected: NOT MEASURED"})
    sample = [r for r in rows if r.kind == "sample" and r.median]
    if sample:
        best = max(sample, key=lambda r: r.throughput)
        met = best.throughput >= s.pairs_target
        out.append({"target": "dual sampling pairs/s", "value": round(best.throughput, 3), "threshold": s.pairs_target,
                    "unit": "pairs/s", "met": met, "setting": f"batch {best.batch}",
                    "line": f"Target dual sampling ≥ {s.pairs_target:g} pairs/s ({s.sample_resolution} px, "
                            f"{s.sample_steps} DDIM steps, guidance on): {best.throughput:.2f} pairs/s "
                            f"(batch {best.batch}) → {'MET' if met else 'MISSED'}"})
    else:
        out.append({"target": "dual sampling pairs/s", "met": None,
                    "line": f"Target dual sampling ≥ {s.pairs_target:g} pairs/s: NOT MEASURED"})
    if s.rehearse:
        for t in out:
            t["line"] += " (rehearsal: tiny model on CPU, not comparable)"
    return out


def append_results(out: Path, text: str) -> None:
    from benchmarks.run import append_results as append

    append(out, text)


# --------------------------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rehearse", action="store_true", help="same code on the CPU at tiny sizes; never RESULTS.md")
    p.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    p.add_argument("--out", type=Path, help=f"markdown file to append to (default {RESULTS.relative_to(REPO)}; "
                                            f"rehearsal: {REHEARSAL_OUT})")
    p.add_argument("--json-dir", type=Path, help="raw JSON folder (default: <out folder>/results)")
    p.add_argument("--copy-to", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                   help="also copy section, JSON and test log here (default: $OUT when set)")
    p.add_argument("--budget-s", type=float, help="time budget of the whole check in seconds")
    p.add_argument("--skip-tests", action="store_true", help="measure only")
    p.add_argument("--skip-compile", action="store_true", help="no compiled training settings")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override CheckSettings fields, e.g. --set train_batches=4,8 sample_steps=20")
    p.add_argument("--merge", type=Path, metavar="SECTION_MD",
                   help="append a section written by a device run (e.g. fetched bench-gpu-section.md) to --out")
    return p.parse_args(argv)


def apply_overrides(s: CheckSettings, items: Sequence[str]) -> CheckSettings:
    """CheckSettings with KEY=VALUE overrides (value parsed as the field's type; tuples comma-separated)."""
    fields = {f.name: getattr(s, f.name) for f in s.__dataclass_fields__.values()}
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields or key == "rehearse":
            raise ValueError(f"{item!r}: use KEY=VALUE with KEY one of {', '.join(k for k in fields if k != 'rehearse')}")
        current = fields[key]
        if isinstance(current, tuple):
            changes[key] = tuple(int(x) for x in value.split(",") if x.strip())
        elif isinstance(current, bool):
            changes[key] = value.lower() in ("1", "true", "yes", "on")
        else:
            changes[key] = type(current)(value)
    return replace(s, **changes)


def _refuse(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    if args.merge:
        out = args.out or RESULTS
        text = args.merge.read_text()
        if not text.strip().startswith("## "):
            return _refuse(f"{args.merge}: not a section written by benchmarks.gpu_check")
        if "REHEARSAL" in text.splitlines()[0] and out.resolve() == RESULTS.resolve():
            return _refuse(f"{args.merge} is a rehearsal section; it does not belong in {RESULTS.relative_to(REPO)}")
        append_results(out, text)
        print(f"appended {args.merge} to {out}")
        raw = args.merge.with_name("bench-gpu.json")
        if raw.is_file():            # the JSON a device run wrote beside the section
            import json

            record = json.loads(raw.read_text())
            from benchmarks.harness import slug

            started = datetime.fromisoformat(record["date"])
            dest = (args.json_dir or out.parent / "results") / \
                f"{started:%Y-%m-%dT%H%M%S}-bench-gpu-{slug(record['environment']['device_model'])}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(raw, dest)
            print(f"copied {raw} to {dest}")
        return 0
    try:
        import torch
    except ImportError as exc:
        return _refuse(f"bench-gpu: torch is not importable ({exc})")
    if not args.rehearse and not torch.cuda.is_available():
        return _refuse(REFUSAL)
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        return _refuse("bench-gpu: diffusers is not importable; carry it as a wheel (`make gpu-wheels` here, then "
                       "`pip install --target /tmp/site .whl/*.whl` and PYTHONPATH=/tmp/site there; "
                       "see benchmarks/README.md, 'On a GPU')")
    s = CheckSettings.rehearsal() if args.rehearse else CheckSettings()
    if args.budget_s:
        s = replace(s, budget_s=args.budget_s)
    try:
        s = apply_overrides(s, args.set)
    except ValueError as exc:
        return _refuse(f"--set: {exc}")
    out = args.out or (REHEARSAL_OUT if s.rehearse else RESULTS)
    if s.rehearse and out.resolve() == RESULTS.resolve():
        return _refuse("--rehearse never writes benchmarks/RESULTS.md; give another --out")
    return run_check(s, args, out, torch)


def run_check(s: CheckSettings, args: argparse.Namespace, out: Path, torch) -> int:
    from benchmarks import no_albumentations

    no_albumentations.install()          # components.data.transforms imports albumentations at module level
    from benchmarks import harness
    from benchmarks.bench_finetune import TrainerFixture
    from benchmarks.fixtures import Settings, cleanup_model_dirs, model_dirs
    from benchmarks.run import _quiet_libraries

    budget = Budget(s.budget_s, start=None if s.rehearse else _T0)
    _quiet_libraries()
    device = torch.device("cpu") if s.rehearse else torch.device(args.device)
    env = harness.environment(device)
    import transformers

    env["transformers"] = transformers.__version__
    env["command"] = " ".join(["python -m benchmarks.gpu_check", *args.argv])
    started = datetime.now(timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="skindualgen-bench-gpu-"))

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"bench-gpu{' REHEARSAL (CPU, tiny sizes)' if s.rehearse else ''} on {env['device_name']} ({device}); "
        f"torch {env['torch']}, diffusers {env['diffusers']}, peft {env['peft']}, transformers {env['transformers']}; "
        f"budget {s.budget_s:.0f} s")
    rows: list[Row] = []
    tests: dict[str, Any] = {"status": "not run", "summary": "", "seconds": 0.0}
    test_log = work / "bench-gpu-tests.log"
    errors = 0
    fx = dirs = None
    compile_estimate = s.compile_estimate_s

    def room(after_tests: bool) -> float:
        """Seconds a measurement may take: what is left, less the test reserve while the tests are to come."""
        return budget.left() - (0.0 if after_tests or args.skip_tests else s.test_reserve_s) - 5.0

    def run_row(row: Row, after_tests: bool = False) -> None:
        nonlocal compile_estimate
        rows.append(row)
        need = compile_estimate if row.compile else (30.0 if row.kind == "train" else 20.0)
        limit = room(after_tests)
        if row.compile and args.skip_compile:
            row.status = "skipped: --skip-compile"
        elif dirs is None:
            row.status = "skipped: no model folders"
        elif need > limit:
            row.status = f"skipped: time budget (needs ~{need:.0f} s, {max(limit, 0):.0f} s left for it)"
        if row.status != "ok":
            log(f"  {row.kind} batch {row.batch}{', compile' if row.compile else ''}: {row.status}")
            return
        t1 = time.perf_counter()
        if row.kind == "train":
            # Static shapes, one graph per setting (what a run with one batch size compiles): without this, the
            # second batch size would be compiled with a dynamic batch dimension after the first.
            static = torch._dynamo.config.patch(automatic_dynamic_shapes=False) if row.compile \
                else contextlib.nullcontext()
            with static:
                measure(row, train_setup(s, device, fx, row.batch, row.compile),
                        s.compile_warmup if row.compile else s.train_warmup, s.train_repeats, device, budget, limit,
                        log)
        else:
            measure(row, sample_setup(s, device, dirs, row.batch), s.sample_warmup, s.sample_repeats, device,
                    budget, limit, log)
        if row.compile:
            compile_estimate = (time.perf_counter() - t1) * 1.2

    b_small = s.train_batches[0]
    try:
        log(f"\n[1/6] model folders ({s.preset}, random weights) and toy data")
        t0 = time.perf_counter()
        try:
            with budget.limit(room(False)):
                build = str(device)       # random init on the GPU (the rehearsal takes the same path on the CPU)
                made = model_dirs(s.preset, s.train_resolution, s.lora_rank, build_device=build)
                _ = made.base_ref, made.vae_dir, made.lora_dir
                fx = TrainerFixture(Settings.for_preset(s.preset, str(device), quick=False), s.train_resolution)
                dirs = model_dirs(s.preset, s.sample_resolution, s.lora_rank, build_device=build)
                _ = dirs.base_ref, dirs.vae_dir, dirs.lora_dir
            log(f"  ready in {time.perf_counter() - t0:.1f} s")
        except OutOfTime:
            log(f"  stopped: time budget after {time.perf_counter() - t0:.0f} s")
            dirs = None
        log(f"\n[2/6] LoRA training, {s.train_resolution} px, batch {b_small}, compile off")
        run_row(Row("train", b_small, False, items=b_small))
        log(f"\n[3/6] dual sampling, {s.sample_resolution} px, {s.sample_steps} DDIM steps, guidance "
            f"{s.guidance_scale}, {s.sample_pairs} pairs per call")
        for b in s.sample_batches:
            run_row(Row("sample", b, items=s.sample_pairs))
        larger = ", ".join(map(str, s.train_batches[1:]))
        log(f"\n[4/6] LoRA training, {s.train_resolution} px, " + (f"batch {larger}, compile off; " if larger else "")
            + f"batch {b_small}, compile on")
        for b in s.train_batches[1:]:
            run_row(Row("train", b, False, items=b))
        run_row(Row("train", b_small, True, items=b_small))
        if args.skip_tests:
            tests["status"] = "not run: --skip-tests"
        else:
            harness.release_memory(device)
            log(f"\n[5/6] gpu tests ({budget.left():.0f} s left)")
            tests = run_gpu_tests(s, max(budget.left() - 5.0, 10.0), test_log, log)
            errors += tests["status"] != "passed"
        log(f"\n[6/6] LoRA training, {s.train_resolution} px, batch {larger or '—'}, compile on (if time is left)")
        for b in s.train_batches[1:]:
            run_row(Row("train", b, True, items=b), after_tests=True)
    except OutOfTime:           # an alarm that fired just as its measurement ended
        cancel_alarm()
        log("  stopped: time budget")
    except Exception:
        errors += 1
        log(traceback.format_exc())
    finally:
        cancel_alarm()
        if fx is not None:
            fx.cleanup()
        cleanup_model_dirs()
        harness.release_memory(device)
    errors += sum(r.status.startswith("failed") for r in rows)
    rows.sort(key=lambda r: (r.kind != "train", r.compile, r.batch))

    audit = import_audit()
    if audit["forbidden_imported"] or audit["unexpected"]:
        errors += 1
    seconds = budget.elapsed()
    text, record = section(env, s, rows, tests, audit, started, seconds)
    log("\n" + text)
    append_results(out, text)
    json_dir = args.json_dir or out.parent / "results"
    json_path = json_dir / f"{started:%Y-%m-%dT%H%M%S}-bench-gpu-{harness.slug(env['device_model'])}.json"
    if s.rehearse and args.json_dir is None:
        json_path = out.with_suffix(".json")
    from components import atomic

    atomic.write_json(json_path, record)
    if args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        (args.copy_to / "bench-gpu-section.md").write_text(text)
        shutil.copyfile(json_path, args.copy_to / "bench-gpu.json")
        if test_log.is_file():
            shutil.copyfile(test_log, args.copy_to / "bench-gpu-tests.log")
    shutil.rmtree(work, ignore_errors=True)
    log(f"appended to {out}; raw numbers in {json_path}"
        + (f"; copies in {args.copy_to}" if args.copy_to else "")
        + f"; imports outside the image: {', '.join(audit['outside_image']) or 'none'}"
        + (f"; FORBIDDEN imports: {', '.join(audit['forbidden_imported'])}" if audit["forbidden_imported"] else "")
        + (f"; imports neither in the image nor carried: {', '.join(audit['unexpected'])}" if audit["unexpected"]
           else ""))
    log(f"bench-gpu {'finished' if not errors else f'finished with {errors} problem(s)'} in {seconds:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
