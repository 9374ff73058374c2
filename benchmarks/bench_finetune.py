"""a. Fine-tune throughput: our trainer's step (mask losses off / on) vs the diffusers LoRA example's loop.

All variants train the same base model (same seeded weights), the same LoRA (rank, alpha = rank, to_q /
to_k / to_v / to_out.0, fp32 LoRA params), AdamW at lr 1e-4 with grad-norm clipping at 1.0, on the same fixed
batch of toy image/mask/prompt triples, bf16 frozen weights + autocast on CUDA, fp32 on CPU.

- reference: benchmarks.reference_loops.ReferenceLoraLoop (3-channel VAE, plain MSE on ε);
- ours: components.generator.finetune_trainer.FinetuneTrainer.train_step (4-channel VAE; tokenisation and text
  encoding inside the step). "mask losses off" is the configuration a user sets for it
  (lambda_bce = lambda_dice = 0); "mask losses on" is the default configuration (x̂0 decoded for the gated
  samples, BCE + Dice). Timesteps are stratified over [0, T) within each batch (one draw per quantile), so every
  step gates the same share of samples (t < mask_loss_max_timestep) as an average step does, and the step cost
  does not depend on the timestep draw. A further variant draws every timestep at or above the gate, so no
  sample takes the mask branch: the cost of our step with the diffusion loss alone, from which the extra cost
  of the mask losses is stated. The last variant trains from latents cached once (cache_latents: true, which
  needs augment: false), the trainer's fast path when augmentation is off.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import harness
from benchmarks.fixtures import Settings, model_dirs, toy_batch
from benchmarks.reference_loops import ReferenceLoraLoop

REFERENCE = "reference loop (diffusers train_text_to_image_lora)"
OURS_OFF = "ours, mask losses off (λ_bce = λ_dice = 0)"
OURS_ON = "ours, mask losses on (default)"
OURS_DIFFUSION = "ours, no sample in the mask-loss gate (t ≥ mask_loss_max_timestep)"
OURS_CACHED = "ours, mask losses on, cached latents (cache_latents: true, augment: false)"


class TrainerFixture:
    """Model folders (shared by the run) and a small toy dataset folder the trainer's config can point at."""

    def __init__(self, s: Settings, resolution: int):
        from components.data.toy import generate_toy

        self.dirs = model_dirs(s.preset, resolution, s.lora_rank)
        self.root = Path(tempfile.mkdtemp(prefix="skindualgen-bench-train-"))
        self.data_dir = self.root / "data"

        generate_toy(self.data_dir, n_images=14, size=max(16, min(resolution, 64)), seed=0, workers=1,
                     progress=False)

    def config(self, s: Settings, resolution: int, batch: int, device: torch.device, **overrides: Any):
        from components.generator.config import FinetuneConfig

        root = self.root
        cfg = FinetuneConfig(base_model=self.dirs.base_ref, vae_dir=str(self.dirs.vae_dir), data_dir=str(self.data_dir),
                             descriptions_csv="", out_dir=str(root / "lora-out"),
                             checkpoint_dir=str(root / "checkpoints"), metrics_file=str(root / "metrics.json"),
                             lora_rank=s.lora_rank, lora_alpha=float(s.lora_rank), resolution=resolution,
                             batch_size=min(batch, 8), augment=False, lr_warmup_steps=0, device=str(device),
                             register=False)
        return replace(cfg, **overrides)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def stratified_timesteps(batch: int, low: int, high: int, gen: torch.Generator) -> torch.Tensor:
    """One uniform draw in each of `batch` equal slices of [low, high): a batch with the average timestep mix."""
    u = torch.rand(batch, generator=gen)
    t = (low + (torch.arange(batch) + u) * (high - low) / batch).long().clamp(low, high - 1)
    return t[torch.randperm(batch, generator=gen)]


def trainer_step(fx: TrainerFixture, cfg, data: dict[str, Any], ungated: bool = False, cached: bool = False):
    """Build a FinetuneTrainer for `cfg` and return a closure running one train_step on `data`.

    ungated: draw timesteps from [mask_loss_max_timestep, T) only, so no sample takes the mask branch (the
    step's other work does not depend on t). cached: encode the training set once (cfg.cache_latents) and
    train from the cached latents, as FinetuneTrainer.run does with cache_latents: true.
    """
    from components.generator.finetune_trainer import FinetuneTrainer

    trainer = FinetuneTrainer(cfg, progress=False)
    if cached:
        trainer.cache_latents()
    trainer.unet.train()
    batch = {"image": data["image"], "mask": data["mask"], "prompt": list(data["prompt"]),
             "index": torch.arange(len(data["prompt"])) % len(trainer.dataset), "label": data["label"]}
    gen = torch.Generator().manual_seed(0)
    n_train = len(trainer.alphas)
    low = cfg.mask_loss_max_timestep if ungated else 0

    def step():
        return trainer.train_step(batch, stratified_timesteps(len(batch["prompt"]), low, n_train, gen))
    return step


def reference_step(fx: TrainerFixture, s: Settings, device: torch.device, data: dict[str, Any]):
    base = fx.dirs.build()
    loop = ReferenceLoraLoop(base.unet, base.vae, base.text_encoder, base.tokenizer, base.noise_scheduler, device,
                             harness.amp_dtype(device), rank=s.lora_rank)
    loop.set_batch(data["image"], list(data["prompt"]))
    return loop.step


def cases(s: Settings, device: torch.device, fx: TrainerFixture) -> list[harness.Case]:
    data = toy_batch(s.train_batch, s.train_resolution, seed=2)
    r, b = s.train_resolution, s.train_batch
    off = fx.config(s, r, b, device, lambda_bce=0.0, lambda_dice=0.0)
    on = fx.config(s, r, b, device)
    cached = fx.config(s, r, b, device, cache_latents=True)
    return [harness.Case(REFERENCE, lambda: reference_step(fx, s, device, data), b),
            harness.Case(OURS_OFF, lambda: trainer_step(fx, off, data), b, baseline=REFERENCE),
            harness.Case(OURS_DIFFUSION, lambda: trainer_step(fx, on, data, ungated=True), b, baseline=REFERENCE),
            harness.Case(OURS_ON, lambda: trainer_step(fx, on, data), b, baseline=OURS_DIFFUSION),
            harness.Case(OURS_CACHED, lambda: trainer_step(fx, cached, data, cached=True), b, baseline=OURS_ON)]


def run(s: Settings, device: torch.device, log=print) -> tuple[harness.Table, dict]:
    from components.generator.config import FinetuneConfig
    from components.generator.presets import SD_SCHEDULER

    fx = TrainerFixture(s, s.train_resolution)
    try:
        results = harness.run_cases(cases(s, device, fx), device, warmup=s.warmup, repeats=s.repeats, log=log)
    finally:
        fx.cleanup()
    table = harness.comparison_table(
        f"a. Fine-tune throughput ({s.preset}, {s.train_resolution} px, batch {s.train_batch}, LoRA rank "
        f"{s.lora_rank})", results, "samples/s")
    table.notes.append("One timed call = one optimiser step on a fixed batch (forward, backward, clip, AdamW).")
    on, off, plain = results[OURS_ON].median, results[OURS_OFF].median, results[OURS_DIFFUSION].median
    cost = on / plain - 1
    gate, n_train = FinetuneConfig().mask_loss_max_timestep, SD_SCHEDULER["num_train_timesteps"]
    table.notes.append(f"Extra cost of the mask losses (x̂0 decode + BCE + Dice for the samples gated at t < {gate}, "
                       f"{100 * gate / n_train:.0f}% of each batch): {cost * 100:+.0f}% time per step ({on * 1e3:.0f} ms vs "
                       f"{plain * 1e3:.0f} ms without any gated sample).")
    off_note = (f"Switching them off with λ_bce = λ_dice = 0 changes the step time by {(off / on - 1) * 100:+.0f}% "
                f"({off * 1e3:.0f} ms vs {on * 1e3:.0f} ms)")
    if on - off < 0.5 * (on - plain):
        off_note += ("; most of the cost stays: the trainer still decodes x̂0 (forward and backward) for the "
                     "gated samples when both weights are 0")
    table.notes.append(off_note + ".")
    table.add_target("ours (mask losses off) ≥ 1.0× the reference loop's samples/s",
                     harness.ratio(results, OURS_OFF, REFERENCE), 1.0)
    table.derived.update(mask_loss_extra_cost=cost, mask_losses_off_vs_on=off / on - 1,
                         cached_latents_speedup=results[OURS_ON].median / results[OURS_CACHED].median)
    return table, {name: m.to_json() for name, m in results.items()}
