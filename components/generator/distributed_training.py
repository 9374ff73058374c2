"""Data-parallel fine-tuning over N processes with torch.distributed, the model left unwrapped.

A launcher starts one process per device and gives each RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT: `accelerate launch --num_processes N` (the diffusers convention), `torchrun --nproc_per_node N`,
or Ray Train's TorchTrainer (which also creates the process group before the training function runs).
`setup` joins the group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on the CPU) and puts each process on the GPU of
its LOCAL_RANK. Without a launcher it is a no-op and the trainer runs as one process.

Why no DistributedDataParallel: only the LoRA trains (a few MB of fp32 gradients against a frozen base), so
what DDP adds, overlapping the all-reduce with the backward pass bucket by bucket, saves well under a millisecond
a step, while its costs are real here: the UNet would be called through a wrapper (peft state-dict keys,
torch.compile and gradient checkpointing see another module), every frozen-parameter corner needs
`find_unused_parameters` thinking, and gradient accumulation needs `no_sync`. Instead, after the last
micro-batch of a step, `all_reduce_mean_` averages every LoRA gradient over the processes in one flat
collective, so every process applies the same clipped AdamW update to the same weights; `broadcast_` makes the
starting weights (fresh or resumed) those of rank 0.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# Rank 0 validates and saves while the others wait in the next collective: leave it time (NCCL's default is 10 min).
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank among world_size processes (rank 0 alone logs and saves)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False      # the group was created by `setup` (and is destroyed by `teardown`)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def process_rank() -> int:
    """This process's rank (0 when not launched data-parallel); readable before `setup` joins the group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the launcher's process group (if WORLD_SIZE > 1); returns the context and this process's device."""
    size = world_size()
    if size <= 1:
        return DistContext(), device
    local_rank = _env_int("LOCAL_RANK", process_rank() % max(torch.cuda.device_count(), 1))
    if device.type == "cuda":
        # One GPU per process: the one Ray Train assigned (it exports ACCELERATE_TORCH_DEVICE), else LOCAL_RANK's
        # (modulo the visible count: where a launcher shows each process only its own GPU, that is index 0).
        assigned = os.environ.get("ACCELERATE_TORCH_DEVICE", "")
        device = (torch.device(assigned) if assigned.startswith("cuda:")
                  else torch.device("cuda", local_rank % torch.cuda.device_count()))
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", timeout=TIMEOUT)
        owns = True
        log.info("joined the %s process group: rank %d of %d on %s", backend, dist.get_rank(), size, device)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       owns_group=owns), device


def teardown(ctx: DistContext) -> None:
    """Leave the process group `setup` created (one a launcher such as Ray Train created stays)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_(ctx: DistContext, tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite `tensors` (same shapes on every rank) with rank `src`'s values, in one collective."""
    tensors = list(tensors)
    if not ctx.enabled or not tensors:
        return
    with torch.no_grad():
        flat = _flatten([t.detach() for t in tensors])
        dist.broadcast(flat, src)
        _unflatten_into(flat, tensors)


def all_reduce_mean_(ctx: DistContext, params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of `params` over the processes in place (one flat fp32 all-reduce).

    The sum is taken in a fixed order by the backend and divided by the world size, so every rank ends with the
    same bits; against one process training the whole global batch the result differs only by the order of the
    float additions (about 1e-7 relative).
    """
    params = list(params)
    if not ctx.enabled:
        return
    grads = []
    for p in params:
        if p.grad is None:           # a parameter that took no part in this step's graph: a zero gradient
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = _flatten(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(ctx.world_size)
    _unflatten_into(flat, grads)


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over the processes (the tensor itself when running alone)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for t, value in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(value.view_as(t))
