"""CUDA paths of the generator (marker `gpu`): bf16 base + fp32 LoRA, channels_last, torch.compile, adapt_vae on
the device and its VAE in bf16, dual sampling. Run by the GPU check (`make bench-gpu`) on a lent device.

Skipped without CUDA. `SKINDUALGEN_GPU_REHEARSE=1` runs the same bodies on the CPU (`make bench-gpu-rehearse`),
where the expectations become the CPU's (fp32 weights, channels_last off), so a rehearsal catches import errors
and API misuse before a device minute is spent. These tests import nothing the lent machine lacks: no MLflow,
Ray, DVC or segmentation-models-pytorch; albumentations only through benchmarks/no_albumentations.py's
resize-only stand-in where it is missing (components.data.transforms imports it at module level).
"""
from __future__ import annotations

import os

import pytest
import torch

from benchmarks import no_albumentations

no_albumentations.install()

from benchmarks.bench_finetune import TrainerFixture  # noqa: E402
from benchmarks.fixtures import Settings, cleanup_model_dirs, prompts_for, toy_batch  # noqa: E402
from components.generator import base_models, runtime  # noqa: E402
from components.generator import lora as lora_lib  # noqa: E402
from components.generator.config import AdaptVaeConfig  # noqa: E402
from components.generator.data import load_split  # noqa: E402
from components.generator.finetune_trainer import FinetuneTrainer  # noqa: E402
from components.generator.sampling import DualGenerator  # noqa: E402
from components.generator.vae_surgery import MASK_CHANNEL  # noqa: E402
from components.generator.vae_trainer import adapt_vae, eval_split  # noqa: E402

REHEARSE = os.environ.get("SKINDUALGEN_GPU_REHEARSE") == "1"
CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (CUDA or REHEARSE), reason="needs a CUDA device (SKINDUALGEN_GPU_REHEARSE=1 "
                                                                "rehearses these tests on the CPU)")]

RES = 32          # tiny preset: VAE factor 4 → 8×8 latents; the CUDA code paths are those of any base model
BATCH = 2


@pytest.fixture(scope="module")
def device() -> torch.device:
    return torch.device("cuda" if CUDA else "cpu")


@pytest.fixture(scope="module")
def settings(device) -> Settings:
    return Settings.for_preset("tiny", str(device), quick=True)


@pytest.fixture(scope="module")
def fx(settings):
    fixture = TrainerFixture(settings, RES)
    yield fixture
    fixture.cleanup()
    cleanup_model_dirs()


@pytest.fixture(scope="module")
def batch() -> dict:
    data = toy_batch(BATCH, RES, seed=3)
    return {"image": data["image"], "mask": data["mask"], "prompt": list(data["prompt"]),
            "index": torch.arange(BATCH), "label": data["label"]}


def reduced(device: torch.device) -> torch.dtype:
    """What bf16 mixed precision gives the frozen weights here: bf16 on CUDA, fp32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def trainer(fx, settings, device, **overrides) -> FinetuneTrainer:
    cfg = fx.config(settings, RES, BATCH, device, **overrides)
    t = FinetuneTrainer(cfg, progress=False)
    t.unet.train()
    return t


def step(t: FinetuneTrainer, batch: dict) -> tuple[torch.Tensor, int]:
    # t = 10 is inside the mask-loss gate (t < 500), t = 900 outside: both branches of the loss run.
    parts, n_gated = t.train_step(batch, torch.tensor([10, 900]))
    return parts.float().cpu(), n_gated


def conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    """4-D convolution kernels larger than 1×1 (a 1×1 kernel is contiguous in both memory formats)."""
    return [p for n, p in module.named_parameters() if p.dim() == 4 and p.shape[-1] > 1 and "lora" not in n]


def base_params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for n, p in module.named_parameters() if "lora_" not in n]


# ------------------------------------------------------------------------------------------------ finetune

@pytest.mark.parametrize("mixed_precision", ["bf16", "no"])
def test_finetune_reduced_base_fp32_lora(fx, settings, device, batch, mixed_precision):
    t = trainer(fx, settings, device, mixed_precision=mixed_precision)
    want = reduced(device) if mixed_precision == "bf16" else torch.float32
    assert t.dtype == want
    for module in (t.unet, t.vae, t.text_encoder):
        assert {p.dtype for p in base_params(module)} == {want}
        assert all(p.device.type == device.type for p in module.parameters())
    assert not any(p.requires_grad for p in base_params(t.unet))
    assert t.params and all(p.dtype == torch.float32 and p.requires_grad for p in t.params)
    before = [p.detach().clone() for p in t.params]
    parts, n_gated = step(t, batch)
    assert n_gated == 1
    assert torch.isfinite(parts).all(), parts
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, t.params)), "LoRA weights did not change"
    assert all(p.dtype == torch.float32 for p in t.params)
    state = t.optimizer.state[t.params[0]]
    assert state["exp_avg"].dtype == torch.float32
    assert {p.dtype for p in base_params(t.unet)} == {want}, "a step changed the frozen weights' dtype"


@pytest.mark.parametrize("channels_last", [True, False])
def test_finetune_channels_last(fx, settings, device, batch, channels_last):
    t = trainer(fx, settings, device, channels_last=channels_last)
    expected = channels_last and device.type == "cuda"    # runtime.use_channels_last: CUDA only
    for module in (t.unet, t.vae):
        kernels = conv_weights(module)
        assert kernels
        assert all(w.is_contiguous(memory_format=torch.channels_last) == expected for w in kernels)
    parts, _ = step(t, batch)
    assert torch.isfinite(parts).all(), parts
    if expected:
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(t.unet))


# ------------------------------------------------------------------------------------------------ adapt_vae

def test_adapt_vae_on_device_then_bf16_decode(fx, device):
    """adapt_vae trains on the device (it has no mixed-precision option: fp32 there); the adapted VAE is then
    used in bf16 by the fine-tune and the sampler, so its decode in bf16 must agree with fp32."""
    vae3 = base_models.load_vae(fx.dirs.base_ref)
    rgb_in = vae3.encoder.conv_in.weight.detach().clone()
    train, test = eval_split(load_split(fx.data_dir, "train", stage="adapt_vae"), 0.1, 0)
    cfg = AdaptVaeConfig(resolution=RES, steps=4, batch_size=2, eval_batch_size=2, max_eval_images=2, log_every=2,
                         device=str(device), augment=True)
    from components.data.manifest import read_categories

    result = adapt_vae(vae3, str(fx.data_dir), train, test, read_categories(fx.data_dir, train), cfg)
    vae = result.vae
    assert vae.config.in_channels == 4 and vae.config.out_channels == 4
    for key in ("mask_dice", "rgb_psnr", "rgb_psnr_base"):
        assert result.metrics[key] == result.metrics[key], key    # not NaN
    torch.testing.assert_close(vae.encoder.conv_in.weight[:, :MASK_CHANNEL].cpu(), rgb_in.cpu(), rtol=0, atol=0)

    latents = torch.randn(2, 4, RES // 4, RES // 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = vae.to(device, torch.float32).decode(latents.to(device)).sample.float().cpu()
        low = vae.to(device, torch.bfloat16)
        if device.type == "cuda":
            low.to(memory_format=torch.channels_last)
        with runtime.autocast(device, torch.bfloat16):
            out = low.decode(latents.to(device, torch.bfloat16)).sample.float().cpu()
    assert torch.isfinite(out).all()
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 0.1 * scale + 0.05


# ------------------------------------------------------------------------------------------------ sampling

PAIRS = 4     # two batches of 2: a compiled UNet sees one shape (a last, smaller batch would recompile)


@pytest.fixture(scope="module")
def eager_pairs(fx, device):
    gen = DualGenerator.from_dirs(fx.dirs.base_ref, fx.dirs.vae_dir, fx.dirs.lora_dir, device=device)
    return gen.generate(prompts_for(PAIRS), list(range(PAIRS)), num_inference_steps=4, guidance_scale=1.22,
                        height=RES, width=RES, batch_size=2, progress=False)


def check_pairs(pairs, n: int) -> None:
    assert len(pairs) == n
    for image, mask in pairs:
        assert image.shape == (RES, RES, 3) and image.dtype.name == "uint8"
        assert mask.shape == (RES, RES) and mask.dtype.name == "uint8" and set(mask.ravel().tolist()) <= {0, 1}


def close_pairs(a, b, image_tol: float = 8.0, mask_agree: float = 0.8) -> None:
    """Equal up to bf16 / kernel-choice rounding: mean |Δ| of the uint8 images and the share of equal mask pixels
    (the untrained mask head's logits sit near 0, so rounding flips a few; a garbled output agrees on ~half)."""
    assert len(a) == len(b)
    for (ia, ma), (ib, mb) in zip(a, b):
        assert abs(ia.astype(float) - ib.astype(float)).mean() <= image_tol
        assert (ma == mb).mean() >= mask_agree


def test_dual_sampling_on_device(fx, device, eager_pairs):
    gen = DualGenerator.from_dirs(fx.dirs.base_ref, fx.dirs.vae_dir, fx.dirs.lora_dir, device=device)
    assert gen.dtype == reduced(device)
    assert gen.channels_last == (device.type == "cuda")
    assert {p.dtype for p in gen.unet.parameters()} == {reduced(device)}
    assert all(w.is_contiguous(memory_format=torch.channels_last) == gen.channels_last
               for w in conv_weights(gen.unet) + conv_weights(gen.vae))
    check_pairs(eager_pairs, PAIRS)
    # a sample depends on its prompt and seed, not on its batch (up to rounding)
    one_by_one = gen.generate(prompts_for(PAIRS), list(range(PAIRS)), num_inference_steps=4, guidance_scale=1.22,
                              height=RES, width=RES, batch_size=1, progress=False)
    close_pairs(eager_pairs, one_by_one)


# ------------------------------------------------------------------------------------------------ compile
# Last: the slowest (torch.compile), so a time limit hits them, not the quick checks above.

def test_finetune_compile_matches_eager(fx, settings, device, batch):
    eager = trainer(fx, settings, device)
    eager_parts = [step(eager, batch)[0] for _ in range(2)]
    eager_keys = set(lora_lib.lora_state(eager.unet))
    del eager
    compiled = trainer(fx, settings, device, compile=True)
    assert runtime.is_compiled(compiled.unet)
    compiled_parts = [step(compiled, batch)[0] for _ in range(2)]
    for e, c in zip(eager_parts, compiled_parts):
        assert torch.isfinite(c).all(), c
        # same weights, seeds and timesteps: the losses agree up to bf16 / kernel-order rounding
        torch.testing.assert_close(c, e, rtol=0.1, atol=1e-3)
    assert set(lora_lib.lora_state(compiled.unet)) == eager_keys, "compile changed the LoRA state keys"


def test_dual_sampling_compiled(fx, device, eager_pairs):
    gen = DualGenerator.from_dirs(fx.dirs.base_ref, fx.dirs.vae_dir, fx.dirs.lora_dir, device=device, compile=True)
    assert runtime.is_compiled(gen.unet)
    pairs = gen.generate(prompts_for(PAIRS), list(range(PAIRS)), num_inference_steps=4, guidance_scale=1.22,
                         height=RES, width=RES, batch_size=2, progress=False)
    check_pairs(pairs, PAIRS)
    close_pairs(eager_pairs, pairs)
