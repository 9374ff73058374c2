"""Cross-validation trainings on Ray: a pool of actors, each a `JobRunner` that keeps its evaluation sets in
memory, one GPU per actor when the cluster has GPUs (CPUs otherwise).

Jobs and results travel through Ray's object store, so workers need the dataset folders at the same paths (a
local cluster, or a shared filesystem across nodes); the driver records every result in job order, so the
tables are those of the in-process run.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import ray
from ray.util import ActorPool

from components.distributed.cluster import connect, trial_resources
from components.downstream.cv_jobs import CVJob, JobResult, JobRunner
from components.errors import ConfigError


@ray.remote
class _CVWorker:
    def __init__(self, device: str):
        self.runner = JobRunner(device)

    def run(self, job: CVJob) -> JobResult:
        return self.runner.run(job)


class RayCVExecutor:
    """Runs CV jobs on `workers` Ray actors (0: one per CPU, or per GPU when the cluster has GPUs)."""

    def __init__(self, address: str = "", workers: int = 0, device: str = "auto", num_cpus: int | None = None):
        if workers < 0:
            raise ConfigError(f"workers={workers}: use 0 (one per CPU/GPU) or a positive number")
        self.address, self.workers, self.device, self.num_cpus = address, workers, device, num_cpus

    def __call__(self, jobs: Iterable[CVJob]) -> Iterator[JobResult]:
        jobs = list(jobs)
        if not jobs:
            return
        cluster = connect(self.address, num_cpus=self.num_cpus)
        res = trial_resources(cluster)
        slots = int(cluster.get("GPU", 0)) if "gpu" in res else int(cluster.get("CPU", 1)) // res["cpu"]
        n = max(1, min(self.workers or slots, len(jobs)))
        actors = [_CVWorker.options(num_cpus=res["cpu"], num_gpus=res.get("gpu", 0), max_restarts=1,
                                    max_task_retries=1).remote(self.device) for _ in range(n)]
        try:
            yield from ActorPool(actors).map(lambda actor, job: actor.run.remote(job), jobs)
        finally:
            for actor in actors:
                ray.kill(actor)
