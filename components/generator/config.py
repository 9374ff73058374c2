"""Flat typed configs of the generator stages (params.yaml sections `corpus`, `pretrain`, `adapt_vae`, `finetune`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from components.errors import ConfigError

LORA_RANKS = (2, 4, 8)


@dataclass
class CorpusConfig:
    """`corpus`: the public-like pretraining corpus (components/data/public_corpus.py), apart from the clinical data."""
    out_dir: str = "data/public"
    metrics_file: str = "metrics/corpus.json"
    n_images: int = 6000
    holdout_images: int = 200           # pretrain's own evaluation images (never trained on)
    size: int = 64                      # image side; pretrain.resolution may not exceed it
    seed: int = 0
    diagnosis_share: float = 0.3        # captions that name a diagnosis
    mislabel_share: float = 0.1         # ... of those, share naming a wrong one (web labels are noisy)
    glossary_share: float = 0.15        # captions adding dermoscopy-glossary phrases of the drawn class
    workers: int = 0                    # rendering processes; 0: up to 4 CPUs (the bytes do not depend on it)
    progress: bool = True

    def __post_init__(self) -> None:
        _check_positive(self, "n_images", "holdout_images", "size")
        _check_fraction(self, "diagnosis_share", "mislabel_share", "glossary_share")
        if self.holdout_images >= self.n_images:
            raise ConfigError(f"corpus.holdout_images: {self.holdout_images} leaves no training image of "
                              f"n_images {self.n_images}; lower holdout_images")
        if self.workers < 0:
            raise ConfigError(f"corpus.workers: {self.workers} must be >= 0 (0: automatic)")


@dataclass
class PretrainConfig:
    """`pretrain`: train the `tiny` preset from scratch on the public corpus, or point models/base at another base."""
    base_model: str = "tiny"            # tiny | sd2-base-random | diffusers folder | hub id (the last three: pointer only)
    corpus_dir: str = "data/public"     # the `corpus` stage's folder: train split for training, holdout for evaluation
    out_dir: str = "models/base"
    metrics_file: str = "metrics/pretrain.json"
    resolution: int = 64                # training resolution (at most the corpus image size)
    vae_steps: int = 600
    vae_batch_size: int = 16
    vae_crop: int = 32                  # train the (convolutional) VAE on random crops of this side; 0: whole images
    vae_learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 900
    unet_batch_size: int = 16
    unet_learning_rate: float = 1e-3
    snr_gamma: float = 0.0              # > 0: Min-SNR-γ loss weights (for v they starve high noise: keep 0 for tiny)
    ema_decay: float = 0.995            # EMA of UNet + text encoder weights, saved as the model; 0: none
    train_text_encoder: bool = True
    prompt_dropout: float = 0.1         # empty prompt for classifier-free guidance
    tokenizer_vocab_size: int = 4096
    sample_steps: int = 20              # DDIM steps of the samples logged at the end
    seed: int = 0
    device: str = "auto"
    log_every: int = 50

    def __post_init__(self) -> None:
        _check_positive(self, "resolution", "vae_steps", "vae_batch_size", "unet_steps", "unet_batch_size",
                        "log_every")
        _check_fraction(self, "prompt_dropout", "ema_decay")


@dataclass
class AdaptVaeConfig:
    """`adapt_vae`: 3→4-channel surgery of the base VAE and training of the mask path on the training split only."""
    base_model: str = "models/base"
    data_dir: str = "data/real"
    out_dir: str = "models/vae4"
    metrics_file: str = "metrics/adapt_vae.json"
    resolution: int = 64
    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 1e-3         # new channels (conv_in mask slice, conv_out mask filter)
    decoder_learning_rate: float = 1e-4  # pretrained decoder block / its LoRA: nudged, not retrained
    train_decoder: str = "last_block"   # none | last_block | lora (what of the decoder trains besides conv_out)
    decoder_lora_rank: int = 8
    lambda_bce: float = 1.0
    lambda_dice: float = 1.0
    lambda_rgb: float = 10.0            # MSE between the new and the original VAE's RGB reconstruction
    mask_input_dropout: float = 0.5     # share of samples encoded without their mask (decoder learns from RGB)
    augment: bool = True                # flips/rotations (SquareSymmetry) of image and mask together
    eval_fraction: float = 0.1          # seeded, stratified share of the training split held out for evaluation
    eval_batch_size: int = 32
    max_eval_images: int = 0            # 0: the whole held-out share
    seed: int = 0
    device: str = "auto"
    log_every: int = 25

    def __post_init__(self) -> None:
        _check_positive(self, "resolution", "steps", "batch_size", "eval_batch_size", "log_every")
        _check_fraction(self, "mask_input_dropout")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"adapt_vae.eval_fraction: {self.eval_fraction} must be in (0, 1), e.g. 0.1: the "
                              f"share of the training split held out for evaluation")
        if self.train_decoder not in ("none", "last_block", "lora"):
            raise ConfigError(f"adapt_vae.train_decoder: {self.train_decoder!r} is not one of none, last_block, lora")


@dataclass
class FinetuneConfig:
    """`finetune`: LoRA on the UNet attention with the multi-objective loss (paper eq. 8)."""
    base_model: str = "models/base"     # folder (or base.json pointer folder) or SD 2.x hub id
    vae_dir: str = "models/vae4"
    data_dir: str = "data/real"
    descriptions_csv: str = "data/descriptions/descriptions.csv"   # prompts; else the manifest's descriptions
    out_dir: str = "models/lora"
    checkpoint_dir: str = "models/checkpoints/finetune"
    metrics_file: str = "metrics/finetune.json"
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    resolution: int = 64
    epochs: int = 1
    max_train_steps: int = 0            # > 0: stop after this many optimiser steps (overrides epochs)
    batch_size: int = 4                 # per process; one optimiser step trains batch_size × processes × accumulation
    gradient_accumulation_steps: int = 1   # micro-batches (of batch_size) whose gradients make one optimiser step
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 20
    adam_weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lambda_diffusion: float = 1.0
    lambda_bce: float = 0.5
    lambda_dice: float = 0.5
    mask_loss_max_timestep: int = 500   # mask losses only for t < this (x̂0 is meaningless at high noise); 0: all t
    mask_loss_weighting: str = "alpha_bar"   # none | alpha_bar (weight the gated samples by ᾱ_t)
    prompt_dropout: float = 0.1
    augment: bool = True
    cache_latents: bool = False         # encode the training set once (only without augmentation)
    checkpoint_every: int = 100
    checkpoints_total_limit: int = 2
    resume: str = ""                    # "" | latest | path of a checkpoint folder
    mixed_precision: str = "auto"       # auto (bf16 on CUDA, fp32 on CPU) | no | fp16 | bf16
    gradient_checkpointing: bool = False
    compile: bool = False               # torch.compile the UNet (after LoRA is added); first steps pay the compile
    channels_last: bool = True          # channels_last UNet/VAE on CUDA (ignored on CPU)
    num_workers: int = 0
    prefetch_factor: int = 2            # batches each worker loads ahead (num_workers > 0; workers persist)
    validation_every_epochs: int = 1
    validation_steps: int = 20          # DDIM steps of the validation grid
    guidance_scale: float = 1.22
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    register: bool = True
    registered_model: str = "skindualgen-generator"
    alias: str = "challenger"

    def __post_init__(self) -> None:
        if self.lora_rank <= 0:
            raise ConfigError(f"finetune.lora_rank: {self.lora_rank} — a LoRA needs rank ≥ 1 "
                              f"(the paper compares {list(LORA_RANKS)}); set lora_rank: 4")
        _check_positive(self, "resolution", "epochs", "batch_size", "gradient_accumulation_steps",
                        "checkpoint_every", "log_every", "validation_steps", "prefetch_factor")
        if self.num_workers < 0:
            raise ConfigError(f"finetune.num_workers: {self.num_workers} must be ≥ 0 (0: load in the main process)")
        if self.learning_rate <= 0:
            raise ConfigError(f"finetune.learning_rate: {self.learning_rate} must be > 0 (paper: 1e-4)")
        if self.checkpoints_total_limit < 1:
            raise ConfigError("finetune.checkpoints_total_limit: keep at least 1 checkpoint to resume from")
        if self.mask_loss_weighting not in ("none", "alpha_bar"):
            raise ConfigError(f"finetune.mask_loss_weighting: {self.mask_loss_weighting!r}; use none or alpha_bar")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise ConfigError(f"finetune.mixed_precision: {self.mixed_precision!r}; use auto, no, fp16 or bf16")
        if self.cache_latents and self.augment:
            raise ConfigError("finetune.cache_latents needs augment: false (cached latents cannot be augmented)")
        _check_fraction(self, "prompt_dropout")


def _check_positive(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value <= 0:
            raise ConfigError(f"{type(cfg).__name__}.{name}: {value} must be > 0")


def _check_fraction(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{type(cfg).__name__}.{name}: {value} must be in [0, 1]")


def check_resolution(resolution: int, factor: int, where: str) -> None:
    """ConfigError unless `resolution` is a multiple of the VAE's downsampling factor."""
    if resolution % factor:
        lower, upper = resolution // factor * factor, (resolution // factor + 1) * factor
        raise ConfigError(f"{where}: resolution {resolution} is not divisible by the VAE downsampling factor "
                          f"{factor}; use {lower or upper} or {upper}")
