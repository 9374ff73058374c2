"""b. Synthesis throughput: dual generation (one pass → image + mask) vs two separate passes vs stock diffusers.

- dual, one pass: components.generator.sampling.DualGenerator.generate (LoRA fused, 4-channel VAE decode);
- two separate passes: DualGenerator.generate_two_pass, what generating the image and the mask separately
  costs (two DDIM runs, two decodes);
- stock StableDiffusionPipeline: diffusers' own pipeline from the same base folder (3-channel VAE, the same
  UNet, text encoder and DDIM scheduler config, the same LoRA loaded with load_lora_weights and fused), same
  steps, guidance, resolution, batch size and dtype, per-sample CPU generators, output_type="np". It makes
  images only, so its figure is images/s.
All variants run in the weight dtype of the device (bf16 on CUDA, fp32 on CPU).
"""
from __future__ import annotations

import torch

from benchmarks import harness
from benchmarks.fixtures import ModelDirs, Settings, model_dirs, prompts_for

DUAL, TWO_PASS, STOCK = "dual generation, one pass", "image and mask in two separate passes", \
    "stock diffusers StableDiffusionPipeline (image only)"


def cases(s: Settings, device: torch.device, dirs: ModelDirs) -> list[harness.Case]:
    from components.generator.lora import WEIGHTS_NAME
    from components.generator.sampling import DualGenerator

    dtype = harness.amp_dtype(device)
    prompts = prompts_for(s.sample_pairs)
    seeds = list(range(s.sample_pairs))
    kwargs = dict(num_inference_steps=s.sample_steps, guidance_scale=s.guidance_scale, height=s.sample_resolution,
                  width=s.sample_resolution, batch_size=s.sample_batch, progress=False)
    base_dir, vae_dir, lora_dir = dirs.base_ref, dirs.vae_dir, dirs.lora_dir

    def dual():
        gen = DualGenerator.from_dirs(base_dir, vae_dir, lora_dir, device=device, dtype=dtype)
        return lambda: gen.generate(prompts, seeds, **kwargs)

    def two_pass():
        gen = DualGenerator.from_dirs(base_dir, vae_dir, lora_dir, device=device, dtype=dtype)
        return lambda: gen.generate_two_pass(prompts, seeds, **kwargs)

    def stock():
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(base_dir, torch_dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.load_lora_weights(str(lora_dir), weight_name=WEIGHTS_NAME)
        pipe.fuse_lora()
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)

        def step():
            out = []
            for i in range(0, len(prompts), s.sample_batch):
                gens = [torch.Generator("cpu").manual_seed(x) for x in seeds[i:i + s.sample_batch]]
                out.extend(pipe(prompts[i:i + s.sample_batch], height=s.sample_resolution, width=s.sample_resolution,
                                num_inference_steps=s.sample_steps, guidance_scale=s.guidance_scale, generator=gens,
                                output_type="np").images)
            return out
        return step

    n = s.sample_pairs
    return [harness.Case(STOCK, stock, n), harness.Case(TWO_PASS, two_pass, n),
            harness.Case(DUAL, dual, n, baseline=TWO_PASS)]


def run(s: Settings, device: torch.device, log=print) -> tuple[harness.Table, dict]:
    dirs = model_dirs(s.preset, s.sample_resolution, s.lora_rank)
    results = harness.run_cases(cases(s, device, dirs), device, warmup=1, repeats=s.synthesis_repeats,
                                prime="first", log=log)
    table = harness.comparison_table(
        f"b. Synthesis throughput ({s.preset}, {s.sample_resolution} px, {s.sample_steps} DDIM steps, guidance "
        f"{s.guidance_scale}, batch {s.sample_batch}, {s.sample_pairs} samples per call)",
        results, "pairs/s (stock: images/s)")
    table.notes.append(f"One timed call = {s.sample_pairs} samples: prompt encoding, DDIM loop, VAE decode, "
                       f"conversion to uint8 arrays (and mask thresholding).")
    vs_two = harness.ratio(results, DUAL, TWO_PASS)
    vs_stock = harness.ratio(results, DUAL, STOCK)
    table.notes.append(f"Dual generation vs the stock pipeline: {vs_stock:.2f}× (dual pairs/s over stock images/s; "
                       f"the stock pipeline makes no mask).")
    table.add_target("dual generation ≥ 1.8× the pairs/s of two separate passes", vs_two, 1.8)
    table.derived.update(dual_vs_two_pass=vs_two, dual_vs_stock=vs_stock)
    return table, {name: m.to_json() for name, m in results.items()}
