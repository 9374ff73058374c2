"""Synthesis on Ray: the plan's fixed batches (units) run on a pool of actors that each load the dual generator
once, one GPU per actor when the cluster has GPUs (CPUs otherwise); the outcomes come back to the driver, which
alone writes them. Workers need the model folders at the same paths; the output folder is only the driver's.

A unit's pairs depend only on the unit (components/generator/synthesis_writer.py), so any number of workers gives
byte-identical files. An actor that dies is restarted and its unit retried; nothing is written twice because
writing happens once per returned unit, in the driver.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import ray
from ray.util import ActorPool

from components.distributed.cluster import connect, trial_resources
from components.errors import ConfigError, ModelError
from components.generator.pair_filter import FilterConfig
from components.generator.synthesis_writer import GenerationSettings, Outcome, PairGenerator, Unit, generate_unit

MAX_RETRIES = 2


@ray.remote
class _SynthesisWorker:
    def __init__(self, load: Callable[[], PairGenerator], settings: GenerationSettings, filt: FilterConfig,
                 threads: int):
        import torch

        torch.set_num_threads(threads)
        self.generator, self.settings, self.filt = load(), settings, filt

    def version(self) -> str:
        return str(self.generator.version)

    def run(self, unit: Unit) -> list[Outcome]:
        return generate_unit(self.generator, unit, self.settings, self.filt)


class RaySynthesisExecutor:
    """Generates units on `workers` Ray actors (0: one per GPU, or per `cpus_per_worker` CPUs without GPUs).

    `load` builds the generator inside each actor (a picklable callable, e.g. functools.partial of a loader);
    every actor must report `version` (the generator the driver planned with), else the run stops.
    """

    def __init__(self, load: Callable[[], PairGenerator], settings: GenerationSettings, filt: FilterConfig,
                 version: str, address: str = "", workers: int = 0, cpus_per_worker: int = 1,
                 num_cpus: int | None = None):
        if workers < 0 or cpus_per_worker < 1:
            raise ConfigError(f"synthesize.workers={workers}, cpus_per_worker={cpus_per_worker}: use workers >= 0 "
                              f"and cpus_per_worker >= 1")
        self.load, self.settings, self.filt, self.version = load, settings, filt, version
        self.address, self.workers, self.cpus, self.num_cpus = address, workers, cpus_per_worker, num_cpus
        self._actors: list = []

    def __call__(self, units: Sequence[Unit]) -> Iterator[list[Outcome]]:
        units = list(units)
        if not units:
            return
        actors = self._pool(len(units))
        yield from ActorPool(actors).map_unordered(lambda actor, unit: actor.run.remote(unit), units)

    def _pool(self, n_units: int) -> list:
        """The actors (started at the first call, reused by later ones), each checked to load `version`."""
        if self._actors:
            return self._actors
        cluster = connect(self.address, num_cpus=self.num_cpus)
        res = trial_resources(cluster, self.cpus)
        slots = int(cluster.get("GPU", 0)) if "gpu" in res else int(cluster.get("CPU", 1)) // res["cpu"]
        n = max(1, min(self.workers or slots, n_units))
        self._actors = [_SynthesisWorker.options(num_cpus=res["cpu"], num_gpus=res.get("gpu", 0),
                                                 max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES)
                        .remote(self.load, self.settings, self.filt, res["cpu"]) for _ in range(n)]
        versions = set(ray.get([a.version.remote() for a in self._actors]))
        if versions != {self.version}:
            self.close()
            raise ModelError(f"Ray workers loaded generator(s) {sorted(versions)}, not {self.version}: every node "
                             f"needs the same model folders at the same paths")
        return self._actors

    def close(self) -> None:
        """Stop the actors (their GPUs and memory are released)."""
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def __enter__(self) -> "RaySynthesisExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
