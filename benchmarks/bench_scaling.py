"""d. Scaling of our fine-tune step (default configuration, mask losses on) with resolution and batch size.

Every (resolution, batch) pair is its own variant, run to completion and freed before the next, so its peak
memory is its own. The baseline is the smallest setting; "ratio" is its throughput relative to the baseline's
(samples/s), and the table also gives time per step relative to the baseline and the scaling efficiency
(time the baseline would need for the same number of pixels ÷ measured time; 1.0 = linear in pixels × batch).
"""
from __future__ import annotations

import torch

from benchmarks import harness
from benchmarks.bench_finetune import TrainerFixture, trainer_step
from benchmarks.fixtures import Settings, toy_batch


def run(s: Settings, device: torch.device, log=print) -> tuple[harness.Table, dict]:
    resolutions, batches = sorted(s.scaling_resolutions), sorted(s.scaling_batches)
    fx = TrainerFixture(s, min(resolutions))
    try:
        cases = []
        base_name = None
        for r in resolutions:
            data = toy_batch(max(batches), r, seed=3)
            for b in batches:
                name = f"{r} px × batch {b}"
                cfg = fx.config(s, r, b, device)
                part = {k: v[:b] for k, v in data.items()}
                cases.append(harness.Case(name, lambda cfg=cfg, part=part: trainer_step(fx, cfg, part), b,
                                          baseline=base_name, info={"resolution": r, "batch": b}))
                base_name = base_name or name
        results = harness.run_cases(cases, device, warmup=1, repeats=s.scaling_repeats, interleave=False,
                                       prime="first", max_seconds=s.scaling_seconds, log=log)
    finally:
        fx.cleanup()
    base = results[base_name]
    mem_kind = base.memory_kind
    table = harness.Table(
        f"d. Fine-tune step scaling ({s.preset}, LoRA rank {s.lora_rank}, mask losses on)",
        ["resolution × batch", "median step (ms)", "timed steps", "samples/s", "IQR/median", f"peak MiB ({mem_kind})",
         "step time vs baseline", "efficiency vs linear", "ratio vs baseline"])
    for m in results.values():
        r, b = m.info["resolution"], m.info["batch"]
        work = (r / base.info["resolution"]) ** 2 * b / base.info["batch"]
        table.rows.append([m.name, f"{m.median * 1e3:.1f}", str(len(m.times)), f"{m.throughput:.3g}", f"{m.spread:.2f}",
                           harness.mib(m.peak_bytes), f"{m.median / base.median:.2f}×",
                           f"{work * base.median / m.median:.2f}",
                           "1.00× (baseline)" if m.name == base_name else f"{m.throughput / base.throughput:.2f}×"])
    table.notes.append(f"Baseline: {base_name}. Timesteps stratified per batch (see a.), so each step gates the "
                       f"average share of samples for the mask losses.")
    return table, {name: m.to_json() for name, m in results.items()}
