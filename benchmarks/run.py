"""Run the benchmarks and record them: `python -m benchmarks.run [--only a,b,c,d] [--quick] [--device cuda]`.

a  fine-tune throughput: our trainer (mask losses off / on) vs the diffusers LoRA example's loop
b  synthesis: dual generation vs two separate passes vs the stock StableDiffusionPipeline
c  downstream training: components.downstream.training vs a plain torchvision / smp loop
d  scaling of the fine-tune step with resolution and batch size

Each benchmark prints a markdown table (baseline measured in the same run, ratio column); the run appends a
dated section to --out (rewritten atomically) and writes the raw numbers to <json-dir>/<date>-<device>.json.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # random-weight presets only: never reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other processes, spinning threads wait
# for preempted peers and a 2-thread training step gets 5-10× slower. Must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.fixtures import PRESETS, Settings, cleanup_model_dirs  # noqa: E402
from components import atomic  # noqa: E402
from components.device import resolve_device  # noqa: E402
from components.errors import ConfigError  # noqa: E402

BENCHMARKS: dict[str, tuple[str, str]] = {
    "a": ("benchmarks.bench_finetune", "fine-tune throughput"),
    "b": ("benchmarks.bench_synthesis", "synthesis throughput"),
    "c": ("benchmarks.bench_downstream", "downstream training throughput"),
    "d": ("benchmarks.bench_scaling", "fine-tune scaling"),
    "e": ("benchmarks.bench_ray_synthesis", "synthesis on Ray"),
}
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Sections are appended by `python -m benchmarks.run` (`make bench`), newest last. Every ratio compares two
variants measured in the same run, on the same machine, interleaved round by round. Times are medians of
the timed calls after warm-up (CUDA synchronised); "IQR/median" is the relative interquartile range, a noise
indicator. Peak memory is what a variant adds over its setup and warm-up: on CUDA
torch.cuda.max_memory_allocated() minus the memory allocated before; on CPU the growth of the peak resident
set size (VmHWM − VmRSS). See benchmarks/README.md for what each benchmark compares.
"""


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--preset", default="tiny", choices=PRESETS, help="base-model preset (default: tiny)")
    p.add_argument("--only", default="a,b,c,d,e", help="comma-separated subset of a,b,c,d,e")
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller settings (~2 min on CPU)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to append to")
    p.add_argument("--json-dir", type=Path, default=None, help="raw JSON folder (default: <out folder>/results)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--warmup", type=int, help="untimed calls per variant")
    p.add_argument("--repeats", type=int, help="timed calls per variant (fine-tune benchmark)")
    p.add_argument("--train-resolution", type=int)
    p.add_argument("--train-batch", type=int)
    p.add_argument("--lora-rank", type=int)
    p.add_argument("--sample-resolution", type=int)
    p.add_argument("--sample-steps", type=int, help="DDIM steps (paper: 45)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance (paper: 1.22)")
    p.add_argument("--sample-batch", type=int)
    p.add_argument("--sample-pairs", type=int, help="pairs per timed synthesis call")
    p.add_argument("--classifier")
    p.add_argument("--classifier-size", type=int)
    p.add_argument("--segmenter")
    p.add_argument("--segmenter-size", type=int)
    p.add_argument("--scaling-resolutions", type=_ints, help="e.g. 64,128,256")
    p.add_argument("--scaling-batches", type=_ints, help="e.g. 1,2,4")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace, device: torch.device) -> Settings:
    s = Settings.for_preset(args.preset, str(device), args.quick)
    for name in ("warmup", "repeats", "train_resolution", "train_batch", "lora_rank", "sample_resolution",
                 "sample_steps", "guidance_scale", "sample_batch", "sample_pairs", "classifier", "classifier_size",
                 "segmenter", "segmenter_size", "scaling_resolutions", "scaling_batches"):
        value = getattr(args, name)
        if value is not None:
            setattr(s, name, value)
    if s.sample_pairs % s.sample_batch:
        s.sample_pairs = (s.sample_pairs // s.sample_batch + 1) * s.sample_batch
    return s


def section(env: dict[str, Any], s: Settings, tables: list[harness.Table], started: datetime,
            seconds: float) -> str:
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC · {env['device_name']} · preset {s.preset}", ""]
    lines.append(f"- device `{env['device']}`, torch {env['torch']}, diffusers {env['diffusers']}, peft {env['peft']}, "
                 f"python {env['python']}" + (f", CUDA {env['cuda']}" if env.get("cuda") else "")
                 + f", {env['threads']} torch threads, OMP_WAIT_POLICY={env['omp_wait_policy']}")
    lines.append(f"- settings: {'quick, ' if s.quick else ''}warmup {s.warmup}, repeats {s.repeats}; fine-tune "
                 f"{s.train_resolution} px × batch {s.train_batch}, LoRA rank {s.lora_rank}; sampling "
                 f"{s.sample_resolution} px, {s.sample_steps} DDIM steps, guidance {s.guidance_scale}, batch "
                 f"{s.sample_batch}; precision {'bf16 autocast' if env['device'].startswith('cuda') else 'fp32'}")
    lines.append(f"- load average (1/5/15 min) at start {env.get('loadavg_start')}, at end {env.get('loadavg_end')}; "
                 f"wall time {seconds:.0f} s")
    lines.append("")
    return "\n".join(lines) + "\n" + "\n".join(t.markdown() for t in tables)


def append_results(out: Path, text: str) -> None:
    """Append a section to `out` by rewriting the whole file atomically."""
    old = out.read_text() if out.is_file() else HEADER
    atomic.write_text(out, old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")


def _quiet_libraries() -> None:
    """Progress bars and load warnings of diffusers / transformers would bury the tables."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def run_benchmarks(only: list[str], s: Settings, device: torch.device, tables: list[harness.Table],
                   raw: dict[str, Any]) -> None:
    """Run the selected benchmarks in order, printing each table as it is ready."""
    for key in only:
        module, title = BENCHMARKS[key]
        print(f"\n[{key}] {title}", flush=True)
        b0 = time.perf_counter()
        produced, numbers = importlib.import_module(module).run(s, device, log=lambda m: print(m, flush=True))
        produced = produced if isinstance(produced, list) else [produced]
        for table in produced:
            print("\n" + table.markdown(), flush=True)
        tables.extend(produced)
        raw[key] = {"title": title, "seconds": round(time.perf_counter() - b0, 1), "cases": numbers,
                    "tables": [t.to_json() for t in produced]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    _quiet_libraries()
    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        raise SystemExit(f"--device {args.device}: {exc}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in BENCHMARKS]
    if unknown or not only:
        raise SystemExit(f"--only {args.only!r}: choose from {','.join(BENCHMARKS)}")
    s = settings_from(args, device)
    env = harness.environment(device)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    print(f"benchmarks {','.join(only)} on {env['device_name']} ({device}), preset {s.preset}"
          f"{', quick' if s.quick else ''}", flush=True)
    tables: list[harness.Table] = []
    raw: dict[str, Any] = {}
    try:
        run_benchmarks(only, s, device, tables, raw)
    finally:
        cleanup_model_dirs()
    seconds = time.perf_counter() - t0
    env["loadavg_end"] = harness.loadavg()
    text = section(env, s, tables, started, seconds)
    append_results(args.out, text)
    json_dir = args.json_dir or args.out.parent / "results"
    json_path = json_dir / f"{started:%Y-%m-%dT%H%M%S}-{harness.slug(device.type + '-' + env['device_model'])}.json"
    record = {"date": started.isoformat(), "environment": env, "settings": s.to_json(), "benchmarks": raw,
              "wall_seconds": round(seconds, 1)}
    atomic.write_json(json_path, record)
    print(f"\nappended to {args.out}; raw numbers in {json_path} ({seconds:.0f} s)", flush=True)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
