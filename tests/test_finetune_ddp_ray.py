"""The trainer inside a Ray Train TorchTrainer (2 CPU workers, the gloo group Ray creates): bit for bit the LoRA
of 1 process × batch 2 × accumulation 2, and that of 1 × batch 4 within the tolerances of
tests/test_finetune_ddp.py."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from components.config import to_dict
from components.generator.config import FinetuneConfig
from tests.test_finetune_ddp import _assert_equivalent, _flat, _in_process, _train, setup  # noqa: F401 (fixture)

ray = pytest.importorskip("ray")


def _loop(config: dict) -> None:
    """Ray Train's train function: the process group exists already; the trainer uses it and leaves it open."""
    torch.set_num_threads(1)
    result = _train(FinetuneConfig(**config["cfg"]))
    rank = torch.distributed.get_rank()
    result["group_kept"] = torch.distributed.is_initialized()
    torch.save(result, Path(config["out"]) / f"rank{rank}.pt")


def test_ray_train_torchtrainer_reaches_the_single_process_lora(setup, tmp_path):  # noqa: F811
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from components.distributed.cluster import connect

    root, cfg = setup
    single = _in_process(cfg, tmp_path / "single")
    accumulated = _in_process(dataclasses.replace(cfg, batch_size=2, gradient_accumulation_steps=2), tmp_path / "acc")
    ray_cfg = dataclasses.replace(cfg, batch_size=2, out_dir=str(tmp_path / "ray_lora"),
                                  checkpoint_dir=str(tmp_path / "ray_ckpt"), metrics_file=str(tmp_path / "m.json"))
    connect("", num_cpus=2)
    try:
        TorchTrainer(_loop, train_loop_config={"cfg": to_dict(ray_cfg), "out": str(tmp_path)},
                     torch_config=TorchConfig(backend="gloo"),
                     scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
                     run_config=RunConfig(storage_path=str(tmp_path / "ray_results"), name="ddp")).fit()
    finally:
        ray.shutdown()
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert torch.equal(_flat(rank0["lora"]), _flat(rank1["lora"]))
    assert rank0["group_kept"] and rank0["metrics"]["processes"] == 2
    # The same two passes of 2 samples as 1 × batch 2 × accumulation 2: bit for bit its LoRA.
    assert torch.equal(_flat(rank0["lora"]), _flat(accumulated["lora"]))
    _assert_equivalent(rank0, single, "Ray Train 2 workers × batch 2 vs 1 × batch 4")
    assert (tmp_path / "ray_lora" / "pytorch_lora_weights.safetensors").is_file()
