"""Generator building blocks on tiny random models: surgery, losses, LoRA, checkpoints, tokenizer, sampling."""
from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from components.errors import ConfigError, ModelError
from components.generator import base_models, checkpoints, lora, losses, presets, runtime
from components.generator.config import FinetuneConfig, check_resolution
from components.generator.data import EpochBatches
from components.generator.sampling import DualGenerator, PromptEmbeddings, ddim_sample, to_arrays
from components.generator.vae_surgery import expand_to_dual, is_dual, split_output, to_vae_input


@pytest.fixture(scope="module")
def tiny():
    """A random tiny base model at 32 px (8x8 latents) with its 4-channel VAE."""
    model = base_models.build_preset("tiny", resolution=32, seed=0)
    return model, expand_to_dual(model.vae)


@pytest.fixture(scope="module")
def generator(tiny):
    model, dual = tiny
    return DualGenerator(model.unet, dual, model.text_encoder, model.tokenizer, model.noise_scheduler.config,
                         version="test", device="cpu")


# ------------------------------------------------------------------------------------------ surgery
def test_surgery_keeps_rgb_latents_and_reconstruction(tiny):
    model, dual = tiny
    torch.manual_seed(1)
    image = torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        z3 = model.vae.encode(image * 2 - 1).latent_dist.mean
        z4 = dual.encode(to_vae_input(image, mask)).latent_dist.mean
        rgb3 = model.vae.decode(z3).sample
        out4 = dual.decode(z3).sample
    assert is_dual(dual) and dual.config.in_channels == 4 and dual.config.out_channels == 4
    torch.testing.assert_close(z4, z3, atol=1e-5, rtol=1e-5)   # the zero-initialised mask channel changes nothing
    torch.testing.assert_close(out4[:, :3], rgb3, atol=1e-5, rtol=1e-5)
    # The new mask filter starts as the negated mean of the RGB filters (darker → more lesion-like).
    w = dual.decoder.conv_out.weight
    torch.testing.assert_close(w[3], -model.vae.decoder.conv_out.weight.mean(0))


def test_surgery_rejects_a_four_channel_vae(tiny):
    _, dual = tiny
    with pytest.raises(ModelError, match="already has 4 input / 4 output channels"):
        expand_to_dual(dual)


def test_saved_dual_vae_records_four_channels(tiny, tmp_path):
    from components.generator.sampling import load_dual_vae

    _, dual = tiny
    dual.save_pretrained(tmp_path / "vae4")
    cfg = json.loads((tmp_path / "vae4" / "config.json").read_text())
    assert (cfg["in_channels"], cfg["out_channels"]) == (4, 4)
    assert is_dual(load_dual_vae(tmp_path / "vae4"))
    with pytest.raises(ModelError, match="adapt_vae"):
        load_dual_vae(tmp_path / "missing")


def test_split_output_and_input_ranges():
    decoded = torch.tensor([[[[-1.0]], [[0.0]], [[1.0]], [[2.5]]]])
    rgb, logits = split_output(decoded)
    assert rgb.flatten().tolist() == [0.0, 0.5, 1.0] and logits.item() == 2.5
    x = to_vae_input(torch.tensor([[[[0.25]]] * 3]), torch.tensor([[[[1.0]]]]))
    assert x.flatten().tolist() == [-0.5, -0.5, -0.5, 1.0]


# ------------------------------------------------------------------------------------------- losses
def test_dice_and_bce_by_hand():
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    big = 30.0
    logits = torch.tensor([[[[big, -big], [-big, -big]]]])       # predicts one of the two lesion pixels
    # soft Dice with eps=1: 1 - (2*1 + 1) / (2 + 1 + 1) = 0.25
    assert losses.dice_per_sample(logits, target).item() == pytest.approx(0.25, abs=1e-4)
    # BCE: three pixels right (≈0), one wrong (≈30) → mean ≈ 7.5
    assert losses.bce_per_sample(logits, target).item() == pytest.approx(7.5, abs=1e-3)
    assert losses.dice_score(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 1.0
    assert losses.dice_score(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 0, 0]])).item() == pytest.approx(2 / 3)
    assert losses.psnr(torch.full((1, 4), 0.5), torch.full((1, 4), 0.6)).item() == pytest.approx(20.0, abs=1e-3)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_inverts_the_forward_process(prediction_type):
    sched = base_models.DDPMScheduler.from_config({**presets.SD_SCHEDULER, "prediction_type": prediction_type})
    torch.manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([5, 400, 990])
    noisy = sched.add_noise(x0, noise, t)
    target = losses.diffusion_target(x0, noise, t, sched.alphas_cumprod, prediction_type)
    if prediction_type == "v_prediction":
        torch.testing.assert_close(target, sched.get_velocity(x0, noise, t))
    torch.testing.assert_close(losses.predict_x0(target, noisy, t, sched.alphas_cumprod, prediction_type), x0,
                               atol=1e-3, rtol=1e-3)


def test_mask_loss_gate_and_weighting():
    ab = torch.linspace(1.0, 0.0, 1000)
    t = torch.tensor([10, 499, 500, 900])
    assert losses.mask_loss_weights(t, ab, 500, "none").tolist() == [1.0, 1.0, 0.0, 0.0]
    w = losses.mask_loss_weights(t, ab, 500, "alpha_bar")
    torch.testing.assert_close(w, torch.tensor([ab[10], ab[499], 0.0, 0.0]))
    assert losses.mask_loss_weights(t, ab, 0, "none").tolist() == [1.0] * 4


# ------------------------------------------------------------------------------------ config errors
def test_rank_zero_and_resolution_errors():
    with pytest.raises(ConfigError, match="rank"):
        FinetuneConfig(lora_rank=0)
    with pytest.raises(ConfigError, match="rank"):
        lora.make_config(0, 1.0)
    with pytest.raises(ConfigError, match="not divisible by the VAE downsampling factor 8; use 64 or 72"):
        check_resolution(66, 8, "finetune")
    check_resolution(64, 8, "finetune")
    with pytest.raises(ConfigError, match="augment"):
        FinetuneConfig(cache_latents=True, augment=True)


def test_sd2_random_configs_match_the_published_architecture():
    unet, vae, text = presets.sd2_unet_config(), presets.sd2_vae_config(), presets.sd2_text_config()
    assert unet["block_out_channels"] == [320, 640, 1280, 1280] and unet["cross_attention_dim"] == 1024
    assert unet["attention_head_dim"] == [5, 10, 20, 20] and unet["use_linear_projection"] is True
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["scaling_factor"] == 0.18215
    assert (text["hidden_size"], text["num_hidden_layers"]) == (1024, 23)
    with pytest.raises(ConfigError, match="unknown base-model preset 'sd3'; choose one of: sd2-base-random, tiny"):
        presets.PRESETS.create("sd3")


# --------------------------------------------------------------------------------- folders/tokenizer
def test_base_folder_round_trip_and_missing_component(tiny, tmp_path):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    model, _ = tiny
    folder = base_models.save_base(model, tmp_path / "base")
    assert (folder / "tokenizer" / "vocab.json").is_file() and (folder / "tokenizer" / "merges.txt").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    prompt = "a dermoscopic lesion photo of melanoma for skin cancer diagnosis"
    assert pipe.tokenizer(prompt).input_ids == model.tokenizer(prompt).input_ids
    assert "melanoma</w>" in pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer(prompt).input_ids)
    # vocab.json + merges.txt alone make the same tokenizer.
    only = tmp_path / "tok"
    only.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(folder / "tokenizer" / name, only / name)
    assert CLIPTokenizer.from_pretrained(only)(prompt).input_ids == model.tokenizer(prompt).input_ids

    loaded = base_models.load_base(folder)
    assert loaded.prediction_type == "v_prediction" and loaded.vae_factor == 4
    pointer = base_models.write_pointer(tmp_path / "pointer", str(folder))
    assert base_models.load_base(pointer).identity == loaded.identity

    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(ModelError, match=r"missing component 'text_encoder'.*pretrain"):
        base_models.load_base(folder)
    with pytest.raises(ModelError, match="pretrain"):
        base_models.load_base("tiny")


def test_prediction_type_is_read_from_the_scheduler_config(tiny, tmp_path):
    model, _ = tiny
    folder = base_models.save_base(model, tmp_path / "base")
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["prediction_type"] = "epsilon"                  # e.g. stable-diffusion-2-base (the 768 model: v)
    cfg_file.write_text(json.dumps(cfg))
    assert base_models.load_base(folder).prediction_type == "epsilon"


# -------------------------------------------------------------------------------------------- LoRA
def test_lora_save_load_round_trip(tmp_path):
    model = base_models.build_preset("tiny", resolution=32, seed=3)
    params = lora.add_lora(model.unet, rank=2, alpha=2)
    assert all(p.requires_grad for p in params)
    assert sum(p.requires_grad for p in model.unet.parameters()) == len(params)
    with torch.no_grad():
        for p in params:
            p.normal_(std=0.05)
    x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([300]), torch.randn(1, 77, 128)
    with torch.no_grad():
        expected = model.unet(x, t, c).sample
    lora.save_lora(model.unet, tmp_path / "lora", {"resolution": 32})
    fresh = base_models.build_preset("tiny", resolution=32, seed=3)
    meta = lora.load_lora(fresh.unet, tmp_path / "lora")
    assert (meta["rank"], meta["resolution"]) == (2, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh.unet(x, t, c).sample, expected)
    (tmp_path / "lora" / lora.WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="corrupt"):
        lora.load_lora(base_models.build_preset("tiny", resolution=32).unet, tmp_path / "lora")


# ------------------------------------------------------------------------------------- checkpoints
def _save(root, step, limit=2):
    return checkpoints.save_checkpoint(root, step, {"w": torch.full((2,), float(step))},
                                       {"optimizer": {"step": step}}, {"epoch": 0, "batch_in_epoch": step}, limit)


def test_checkpoint_rotation_resume_and_corruption(tmp_path):
    root = tmp_path / "ckpt"
    for step in (2, 4, 6):
        _save(root, step)
    assert [p.name for p in checkpoints.list_checkpoints(root)] == ["checkpoint-4", "checkpoint-6"]
    latest = checkpoints.resolve_resume(root, "latest")
    weights, state, meta = checkpoints.load_checkpoint(latest)
    assert latest.name == "checkpoint-6" and weights["w"].tolist() == [6.0, 6.0] and meta["step"] == 6
    assert state["optimizer"] == {"step": 6}
    assert checkpoints.resolve_resume(root, "") is None
    assert checkpoints.resolve_resume(tmp_path / "none", "latest") is None
    with pytest.raises(ConfigError, match="not found"):
        checkpoints.resolve_resume(root, str(tmp_path / "nope"))
    # Truncate the newest checkpoint's weights: reported, never skipped in favour of checkpoint-4.
    lora_file = latest / checkpoints.LORA_FILE
    lora_file.write_bytes(lora_file.read_bytes()[:-5])
    with pytest.raises(ModelError, match=r"checkpoint-6 is corrupt: lora.safetensors"):
        checkpoints.load_checkpoint(checkpoints.resolve_resume(root, "latest"))
    (root / "checkpoint-4" / checkpoints.META_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="state.json unreadable"):
        checkpoints.load_checkpoint(root / "checkpoint-4")


# ---------------------------------------------------------------------------------------- sampling
def test_mask_binarisation_by_hand():
    rgb = torch.tensor([[[[0.0, 1.0]], [[0.5, 0.25]], [[1.0, 0.0]]]])
    logits = torch.tensor([[[[-1.0, 0.3]]]])
    [(image, mask)] = to_arrays(rgb, logits, 0.5)
    assert image.dtype == np.uint8 and image.shape == (1, 2, 3)
    assert image.tolist() == [[[0, 128, 255], [255, 64, 0]]]
    assert mask.tolist() == [[0, 1]]
    [(_, strict)] = to_arrays(rgb, logits, 0.6)           # sigmoid(0.3) = 0.574 < 0.6
    assert strict.tolist() == [[0, 0]]


def test_sampling_is_seeded_and_independent_of_batch_composition(generator):
    prompts = ["a dermoscopic lesion photo of melanoma for skin cancer diagnosis",
               "a dermoscopic lesion photo of melanocytic nevus for skin cancer diagnosis",
               "a dermoscopic lesion photo of dermatofibroma for skin cancer diagnosis"]
    kw = dict(num_inference_steps=3, guidance_scale=1.22, progress=False)
    batch = generator.generate(prompts, [11, 12, 13], batch_size=3, **kw)
    again = generator.generate(prompts, [11, 12, 13], batch_size=3, **kw)
    alone = generator.generate(prompts[1:2], [12], batch_size=1, **kw)
    mixed = generator.generate([prompts[1], prompts[0]], [12, 99], batch_size=2, **kw)
    for (a, m), (b, n) in zip(batch, again):
        assert np.array_equal(a, b) and np.array_equal(m, n)
    for other in (alone[0], mixed[0]):
        assert np.abs(other[0].astype(int) - batch[1][0].astype(int)).max() <= 1
        assert (other[1] != batch[1][1]).mean() < 0.01
    assert not np.array_equal(batch[0][0], batch[2][0])       # different seeds, different samples
    for image, mask in batch:
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert mask.shape == (32, 32) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_sampling_sizes_thresholds_two_pass_and_errors(generator):
    prompt = ["a dermoscopic lesion photo of melanoma for skin cancer diagnosis"]
    kw = dict(num_inference_steps=2, progress=False)
    [(image, mask)] = generator.generate(prompt, [5], height=16, width=24, **kw)
    assert image.shape == (16, 24, 3) and mask.shape == (16, 24)
    assert generator.generate(prompt, [5], mask_threshold=0.0, **kw)[0][1].all()
    assert not generator.generate(prompt, [5], mask_threshold=1.0, **kw)[0][1].any()
    [(i1, m1)] = generator.generate(prompt, [7], **kw)
    [(i2, m2)] = generator.generate_two_pass(prompt, [7], **kw)
    assert np.array_equal(i1, i2) and np.array_equal(m1, m2)
    with pytest.raises(ConfigError, match="multiples"):
        generator.generate(prompt, [1], height=30, **kw)
    with pytest.raises(ConfigError, match="one seed per prompt"):
        generator.generate(prompt, [1, 2], **kw)


# ---------------------------------------------------------------------------------- GPU fast path
PROMPTS = [f"a dermoscopic lesion photo of {name} for skin cancer diagnosis"
           for name in ("melanoma", "melanocytic nevus", "dermatofibroma")]


def test_each_distinct_prompt_is_encoded_once(tiny):
    model, dual = tiny
    gen = DualGenerator(model.unet, dual, model.text_encoder, model.tokenizer, model.noise_scheduler.config,
                        version="test", device="cpu")
    encoded: list[int] = []
    hook = model.text_encoder.register_forward_hook(lambda module, args, out: encoded.append(len(args[0])))
    a, b, c = PROMPTS
    kw = dict(num_inference_steps=1, batch_size=2, progress=False)
    try:
        gen.generate([a, b, a, c, b, a], [1, 2, 3, 4, 5, 6], **kw)
        assert sum(encoded) == 4                        # "", a, b, c: not once per batch
        gen.generate([c, a], [7, 8], **kw)
        assert sum(encoded) == 4                        # cached across calls
    finally:
        hook.remove()


def test_prompt_embeddings_drop_the_least_recently_used():
    calls: list[list[str]] = []

    def encode(prompts):
        calls.append(list(prompts))
        return torch.stack([torch.full((2,), float(len(p))) for p in prompts])

    cache = PromptEmbeddings(encode, max_entries=2)
    assert cache(["aa", "b", "aa"])[:, 0].tolist() == [2.0, 1.0, 2.0]
    cache(["b"])                                        # "b" is now the most recently used
    cache(["ccc"])                                      # evicts "aa"
    cache(["b", "ccc"])
    assert calls == [["aa", "b"], ["ccc"]] and len(cache) == 2
    cache(["aa"])
    assert calls[-1] == ["aa"]


def test_ddim_loop_reads_nothing_back_from_the_device(tiny):
    """On the meta device every host read of a tensor value (.item(), bool(t), a host tensor indexed with a
    device one) raises, so a loop that runs there makes no per-step device→host synchronisation."""
    from diffusers import DDIMScheduler

    model, _ = tiny
    unet = copy.deepcopy(model.unet).to("meta")
    scheduler = DDIMScheduler.from_config(model.noise_scheduler.config)
    noise = torch.randn(2, 4, 8, 8, device="meta")
    context = torch.randn(2, 77, unet.config.cross_attention_dim, device="meta")
    out = ddim_sample(unet, scheduler, context, context, noise, num_inference_steps=3, guidance_scale=1.5)
    assert out.shape == noise.shape and scheduler.timesteps.device.type == "cpu"


def test_compile_and_channels_last_flags(generator):
    assert not runtime.is_compiled(generator.unet) and not generator.channels_last   # defaults; CPU
    assert not runtime.use_channels_last(True, torch.device("cpu"))
    assert runtime.use_channels_last(True, torch.device("cuda")) and not runtime.use_channels_last(
        False, torch.device("cuda"))
    model = base_models.build_preset("tiny", resolution=32, seed=0)
    gen = DualGenerator(model.unet, expand_to_dual(model.vae), model.text_encoder, model.tokenizer,
                        model.noise_scheduler.config, version="test", device="cpu", compile=True)
    # Compiled in place (lazily, at the first forward): same module, same state_dict keys.
    assert runtime.is_compiled(gen.unet) and gen.unet is model.unet
    assert list(gen.unet.state_dict()) == list(generator.unet.state_dict())


def test_epoch_batches_switch_epochs_in_place():
    sampler = EpochBatches(10, 3, seed=0, epoch=0, skip_batches=1)
    assert len(sampler) == 2
    sampler.set_epoch(2, skip_batches=1)
    assert list(sampler) == EpochBatches(10, 3, 0, 2, 1).batches
    sampler.set_epoch(3)
    assert list(sampler) == EpochBatches(10, 3, 0, 3).batches and len(sampler) == 3
    assert list(sampler) != EpochBatches(10, 3, 0, 2).batches
