"""Data-parallel fine-tuning on the CPU: 2 gloo processes × batch 2 reach the LoRA of 1 process × batch 4.

Every sample draws its augmentation, noise, timestep and prompt dropout from its own seed, so runs with the same
global batch train the same samples with the same randomness, however it is split into processes and
accumulation steps. 2 processes × batch 2 and 1 × batch 2 × accumulation 2 do the same two passes of 2 samples
and halve their sum: they end bit for bit equal. Against 1 × batch 4 only float rounding differs (a batched pass
of 4 sums in another order): the step-1 gradients agree to ‖Δg‖/‖g‖ ≈ 1.5e-6 (FIRST_GRAD_RTOL 1e-5), later
steps to ≈ 1e-5. AdamW then divides each entry by √v + 1e-8, which turns that rounding into up to a tenth of a
step for the few LoRA-A entries whose gradient is of order 1e-8 (step 2, just after B leaves zero): after 3 steps
at lr 1e-3, max |ΔW| measured 1.4e-6 to 9.6e-5 and ‖ΔW‖/‖update‖ 1.4e-5 to 3.2e-4 over tokenizer builds (the
tiny preset's vocabulary order follows PYTHONHASHSEED). Tolerances: max |ΔW| ≤ lr (one step), ‖ΔW‖/‖update‖ ≤
3e-3; training on other data gives 6e-3 and 0.7.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from components.config import to_dict
from components.data.toy import generate_toy
from components.errors import ConfigError
from components.generator import checkpoints
from components.generator import lora as lora_lib
from components.generator.config import FinetuneConfig
from components.generator.data import EpochBatches
from components.generator.finetune_trainer import FinetuneTrainer

STEPS = 3
LR = 1e-3
FIRST_GRAD_RTOL = 1e-5  # ‖Δg‖ / ‖g‖ of the (averaged, clipped) gradient AdamW gets at step 1 (same weights)
GRAD_RTOL = 1e-3        # ... at every step (the weights have drifted by the rounding of the steps before)
UPDATE_RTOL = 3e-3      # ‖ΔW‖ / ‖W_ref − W_0‖ of the LoRA after 3 steps
WEIGHT_TOL = LR         # max |ΔW| over every LoRA entry after 3 steps: at most one step's worth
HISTORY_RTOL = 1e-4     # logged per-step losses (sums over the processes, divided on the host)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Toy data (24 images, 32 px), a tiny seeded base model and its 4-channel VAE, built in-process."""
    from diffusers import AutoencoderKL

    from components.generator.base_models import build_preset, save_base
    from components.generator.vae_surgery import expand_to_dual

    root = tmp_path_factory.mktemp("ddp")
    generate_toy(root / "data", n_images=24, size=32, seed=0, workers=1, progress=False)
    save_base(build_preset("tiny", resolution=32, seed=0), root / "base")
    expand_to_dual(AutoencoderKL.from_pretrained(root / "base", subfolder="vae")).save_pretrained(
        root / "vae4", safe_serialization=True)
    cfg = FinetuneConfig(
        base_model=str(root / "base"), vae_dir=str(root / "vae4"), data_dir=str(root / "data"), descriptions_csv="",
        resolution=32, max_train_steps=STEPS, batch_size=4, learning_rate=LR, lr_warmup_steps=0,
        mask_loss_max_timestep=0, prompt_dropout=0.5, augment=True, validation_every_epochs=1000,
        validation_steps=1, log_every=1, checkpoint_every=2, device="cpu", register=False)
    return root, cfg


def _train(cfg: FinetuneConfig, calls: dict[str, list] | None = None) -> dict:
    """Train `cfg`; the LoRA, the loss history, the metrics and the gradient AdamW received at every step."""
    hooks = {} if calls is None else {"on_metrics": lambda values, step: calls["metrics"].append(step),
                                      "on_validation": lambda epoch, rows: calls["validation"].append(epoch)}
    trainer = FinetuneTrainer(cfg, progress=False, **hooks)
    grads: list[torch.Tensor] = []
    trainer.optimizer.register_step_pre_hook(
        lambda *_: grads.append(torch.cat([p.grad.flatten() for p in trainer.params]).clone()))
    initial = {k: v.clone() for k, v in lora_lib.lora_state(trainer.unet).items()}   # (CPU: views of the weights)
    result = trainer.run()
    return {"initial": initial, "lora": lora_lib.lora_state(trainer.unet), "history": result.history,
            "grads": grads, "metrics": result.metrics}


def _in_process(cfg: FinetuneConfig, where: Path) -> dict:
    """Run `cfg` in this process with one thread, as each spawned process has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(dataclasses.replace(cfg, out_dir=str(where / "lora"), metrics_file=str(where / "m.json"),
                                          checkpoint_dir=cfg.checkpoint_dir if cfg.resume else str(where / "ckpt")))
    finally:
        torch.set_num_threads(threads)


def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """One spawned gloo process: the environment a launcher (accelerate launch, torchrun) gives, then a trainer."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    calls: dict[str, list] = {"metrics": [], "validation": []}
    result = _train(FinetuneConfig(**cfg), calls)
    torch.save({**result, "calls": calls, "group_left": not torch.distributed.is_initialized()},
               Path(out) / f"rank{rank}.pt")


def _flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([state[k].flatten().double() for k in sorted(state)])


def _losses(history: list[dict]) -> np.ndarray:
    return np.array([[h["step"], h["mse"], h["bce"], h["dice"], h["total"]] for h in history])


def _assert_equivalent(run: dict, reference: dict, what: str, same_start: bool = True) -> None:
    """Same gradients at every step, same LoRA and loss curve as `reference`, within the stated tolerances."""
    assert len(run["grads"]) == len(reference["grads"])
    grad_diffs = [float((g - r).norm() / r.norm()) for g, r in zip(run["grads"], reference["grads"])]
    grad_diff = max(grad_diffs)
    w, ref, start = _flat(run["lora"]), _flat(reference["lora"]), _flat(reference["initial"])
    update_diff = float((w - ref).norm() / (ref - start).norm())
    max_diff, moved = float((w - ref).abs().max()), float((ref - start).abs().max())
    print(f"{what}: ‖Δg‖/‖g‖ = {', '.join(f'{d:.2g}' for d in grad_diffs)} by step; LoRA after {STEPS} steps: "
          f"max|ΔW| = {max_diff:.2g}, ‖ΔW‖/‖update‖ = {update_diff:.2g} (entries moved up to {moved:.2g})")
    assert moved > LR
    assert grad_diffs[0] <= (FIRST_GRAD_RTOL if same_start else GRAD_RTOL) and grad_diff <= GRAD_RTOL and update_diff <= UPDATE_RTOL and max_diff <= WEIGHT_TOL
    np.testing.assert_allclose(_losses(run["history"]), _losses(reference["history"]), rtol=HISTORY_RTOL,
                               atol=1e-7)


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):
    """1 × batch 4 (reference), 2 gloo processes × batch 2, 1 × batch 2 × accumulation 2; 3 steps each."""
    root, cfg = setup
    work = tmp_path_factory.mktemp("runs")
    t0 = time.perf_counter()
    single = _in_process(cfg, work / "single")
    t1 = time.perf_counter()
    ddp_dir = work / "ddp"
    ddp_dir.mkdir()
    ddp_cfg = dataclasses.replace(cfg, batch_size=2, out_dir=str(ddp_dir / "lora"),
                                  checkpoint_dir=str(ddp_dir / "ckpt"), metrics_file=str(ddp_dir / "m.json"))
    mp.spawn(_worker, args=(2, _free_port(), to_dict(ddp_cfg), str(ddp_dir)), nprocs=2, join=True)
    ranks = [torch.load(ddp_dir / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    t2 = time.perf_counter()
    accumulated = _in_process(dataclasses.replace(cfg, batch_size=2, gradient_accumulation_steps=2),
                              work / "accumulated")
    print(f"wall time: 1 process {t1 - t0:.1f} s, 2 spawned processes {t2 - t1:.1f} s, "
          f"accumulation {time.perf_counter() - t2:.1f} s")
    return {"single": single, "ranks": ranks, "ddp_dir": ddp_dir, "ddp_cfg": ddp_cfg, "accumulated": accumulated}


def test_two_processes_reach_the_single_process_lora(runs):
    rank0, rank1 = runs["ranks"]
    assert torch.equal(_flat(rank0["lora"]), _flat(rank1["lora"]))      # the replicas never drift apart
    assert all(torch.equal(a, b) for a, b in zip(rank0["grads"], rank1["grads"]))
    _assert_equivalent(rank0, runs["single"], "2 processes × batch 2 vs 1 × batch 4")
    np.testing.assert_array_equal(_losses(rank1["history"]), _losses(rank0["history"]))
    metrics = rank0["metrics"]
    assert (metrics["processes"], metrics["global_batch_size"], metrics["steps"]) == (2, 4, STEPS)


def test_only_rank_zero_reports_and_saves(runs):
    rank0, rank1 = runs["ranks"]
    assert rank0["calls"]["metrics"] == list(range(1, STEPS + 1)) and rank0["calls"]["validation"]
    assert rank1["calls"] == {"metrics": [], "validation": []}
    assert rank0["group_left"] and rank1["group_left"]                 # the trainer left the group it joined
    assert (runs["ddp_dir"] / "lora" / lora_lib.WEIGHTS_NAME).is_file()
    assert [p.name for p in checkpoints.list_checkpoints(runs["ddp_dir"] / "ckpt")] == ["checkpoint-2"]
    assert not list((runs["ddp_dir"] / "ckpt").glob(".checkpoint-*"))   # no half-written folder of a second writer


def test_gradient_accumulation_matches_the_large_batch(runs):
    accumulated = runs["accumulated"]
    _assert_equivalent(accumulated, runs["single"], "1 × batch 2 × accumulation 2 vs 1 × batch 4")
    assert accumulated["metrics"]["global_batch_size"] == 4
    # The same two forward/backward passes of 2 samples, added in either order and halved (exact in binary
    # floating point): 2 processes and 2 accumulation steps end bit for bit equal.
    assert torch.equal(_flat(accumulated["lora"]), _flat(runs["ranks"][0]["lora"]))
    assert all(torch.equal(a, b) for a, b in zip(accumulated["grads"], runs["ranks"][0]["grads"]))


def test_two_process_checkpoint_resumes_in_one_process(runs, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(runs["ddp_dir"] / "ckpt", ckpt)
    meta = checkpoints.load_checkpoint(ckpt / "checkpoint-2")[2]
    assert (meta["step"], meta["global_batch_size"], meta["world_size"]) == (2, 4, 2)
    resumed_cfg = dataclasses.replace(runs["ddp_cfg"], batch_size=4, resume=str(ckpt / "checkpoint-2"),
                                      checkpoint_dir=str(ckpt))
    resumed = _in_process(resumed_cfg, tmp_path)
    assert resumed["metrics"]["resumed_from_step"] == 2
    reference = {**runs["single"], "grads": runs["single"]["grads"][2:]}     # the resumed run takes step 3 only
    _assert_equivalent(resumed, reference, "2-process checkpoint-2 resumed by 1 × batch 4 vs uninterrupted",
                       same_start=False)

    # Another global batch would continue another sequence of batches: refused, naming the product to keep.
    other = dataclasses.replace(resumed_cfg, batch_size=2)
    with pytest.raises(ConfigError, match=r"global batch of 4 .*now 2 .*batch_size × processes × "
                                          r"gradient_accumulation_steps = 4"):
        FinetuneTrainer(other, progress=False).maybe_resume()


def test_epoch_batches_shard_each_global_batch():
    n, seed, epoch = 23, 5, 3
    whole = EpochBatches(n, 12, seed, epoch, skip_batches=0).batches       # 1 process, batch 12: 1 step
    for world, acc, b in ((2, 1, 6), (3, 2, 2), (1, 4, 3), (4, 3, 1)):
        shards = [EpochBatches(n, b, seed, epoch, rank=r, world_size=world, accumulation=acc) for r in range(world)]
        assert all(len(s) == acc for s in shards)                          # acc micro-batches per step, tail dropped
        step = [item for a in range(acc) for r in range(world) for item in shards[r].batches[a]]
        assert step == whole[0]
        assert len({i for s in shards for batch in s for i, _ in batch}) == 12   # disjoint shards
    resumed = EpochBatches(24, 2, seed, epoch, skip_batches=2, rank=1, world_size=2, accumulation=1)
    assert resumed.batches[0] == EpochBatches(24, 4, seed, epoch, skip_batches=2).batches[0][2:]
    with pytest.raises(ValueError, match="drop_last=False"):
        EpochBatches(n, 2, seed, epoch, drop_last=False, world_size=2, rank=0)


def test_gradient_accumulation_steps_is_validated():
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        FinetuneConfig(gradient_accumulation_steps=0)


@pytest.mark.slow
def test_stage_under_accelerate_launch_tracks_on_rank_zero_only(setup, tmp_path):
    """The README's command, `accelerate launch --multi_gpu --num_processes 2 -m pipelines.finetune` (gloo on the
    CPU): one MLflow run, one metrics file, one LoRA, written by rank 0."""
    import mlflow

    root, cfg = setup
    cfg = dataclasses.replace(cfg, max_train_steps=2, batch_size=2, out_dir=str(tmp_path / "lora"),
                              checkpoint_dir=str(tmp_path / "ckpt"), metrics_file=str(tmp_path / "m.json"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"finetune": to_dict(cfg)}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(key, None)
    accelerate = Path(sys.executable).parent / "accelerate"
    subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                    "-m", "pipelines.finetune", "--params", str(params)],
                   check=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=600)
    metrics = yaml.safe_load((tmp_path / "m.json").read_text())
    assert (metrics["processes"], metrics["global_batch_size"], metrics["steps"]) == (2, 4, 2)
    assert (tmp_path / "lora" / lora_lib.WEIGHTS_NAME).is_file()
    client = mlflow.MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["finetune/processes"] == 2 and "finetune/final_total" in runs[0].data.metrics
