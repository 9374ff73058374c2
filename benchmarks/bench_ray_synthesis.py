"""e. Synthesis on Ray: the distributed path against the in-process writer, and how to spend two cores.

- in-process: components.generator.synthesis_writer.generate_unit over the plan's fixed batches, in this process
  (torch's own thread count), what `synthesize` does with workers 0;
- Ray, 1 worker: the same units on one Ray actor (components/distributed/synthesis_workers.py) with as many CPUs
  as this process has threads (on CUDA: one GPU): the overhead of the distributed path (task submission, the
  pairs' round trip through the object store);
- Ray, 1 worker × all threads vs N workers × 1 thread: on a CPU-only machine, whether parallel actors beat one
  multi-threaded actor for small diffusion batches. With GPUs each actor gets one GPU instead (pairs/s per GPU).
Actors are started (and load the generator) during set-up, outside the timed calls; the variants are timed
round-robin, one call at a time, so a load that varies during the run touches all of them alike.
"""
from __future__ import annotations

import functools

import torch

from benchmarks import harness
from benchmarks.fixtures import ModelDirs, Settings, model_dirs, prompts_for

IN_PROCESS = "in-process writer"


def _plan(n: int):
    from components.generator.synthesis_plan import PlannedSample

    return [PlannedSample(index=i, sample_id=f"syn_b_{i:06d}", category="mel", prompt=p, seed=1000 + i)
            for i, p in enumerate(prompts_for(n))]


def cases(s: Settings, device: torch.device, dirs: ModelDirs) -> list[harness.Case]:
    import ray

    from components.distributed.synthesis_workers import RaySynthesisExecutor
    from components.generator.pair_filter import FilterConfig
    from components.generator.sampling import DualGenerator
    from components.generator.synthesis_writer import GenerationSettings, generate_unit, plan_units

    settings = GenerationSettings(num_inference_steps=s.sample_steps, guidance_scale=s.guidance_scale,
                                  resolution=s.sample_resolution, batch_size=s.sample_batch, max_attempts=1)
    filt = FilterConfig(enabled=False)
    n_pairs = max(s.sample_pairs, 2 * s.sample_batch)
    units = plan_units(_plan(n_pairs), s.sample_batch)
    dtype = harness.amp_dtype(device)
    load = functools.partial(DualGenerator.from_dirs, dirs.base_ref, dirs.vae_dir, dirs.lora_dir,
                             device=str(device), dtype=dtype)
    threads = torch.get_num_threads()
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if not ray.is_initialized():
        # logical CPUs for every case's actors at once: the cases are timed round-robin, one call at a time
        ray.init(num_cpus=2 * threads, num_gpus=gpus, include_dashboard=False, log_to_driver=False)

    def in_process():
        gen = load()
        return lambda: [generate_unit(gen, u, settings, filt) for u in units]

    def on_ray(workers: int, cpus: int):
        def setup():
            gen_version = load().version
            ex = RaySynthesisExecutor(load, settings, filt, gen_version, workers=workers, cpus_per_worker=cpus)
            list(ex(units[:workers]))                  # start the actors and load the generator, untimed
            return lambda: list(ex(units))             # the actors end with the step (their last handle)
        return setup

    one = f"Ray, 1 worker × {'1 GPU' if gpus else f'{threads} threads'}"
    out = [harness.Case(IN_PROCESS, in_process, n_pairs),
           harness.Case(one, on_ray(1, 1 if gpus else threads), n_pairs, baseline=IN_PROCESS)]
    if gpus > 1 or (not gpus and threads > 1):
        many = f"Ray, {gpus} workers × 1 GPU" if gpus else f"Ray, {threads} workers × 1 thread"
        out.append(harness.Case(many, on_ray(gpus or threads, 1), n_pairs, baseline=one))
    return out


def run(s: Settings, device: torch.device, log=print) -> tuple[harness.Table, dict]:
    import ray

    dirs = model_dirs(s.preset, s.sample_resolution, s.lora_rank)
    results = harness.run_cases(cases(s, device, dirs), device, warmup=1, repeats=s.synthesis_repeats,
                                interleave=True, prime="none", log=log)
    ray.shutdown()
    table = harness.comparison_table(
        f"e. Synthesis on Ray ({s.preset}, {s.sample_resolution} px, {s.sample_steps} DDIM steps, batch "
        f"{s.sample_batch})", results, "pairs/s")
    table.notes.append("One timed call = every unit of a fixed plan generated (no files written); actors are "
                       "started and load the generator before the timed calls.")
    one = next(name for name in results if name.startswith("Ray, 1 worker"))
    overhead = harness.ratio(results, one, IN_PROCESS)
    table.add_target("Ray with 1 worker ≥ 0.9× the in-process writer's pairs/s", overhead, 0.9)
    table.derived.update(ray_one_vs_in_process=overhead)
    return table, {name: m.to_json() for name, m in results.items()}
