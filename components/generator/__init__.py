"""Dual generation: one prompt → one latent → an RGB dermoscopy image and its lesion mask.

Modules: presets (base-model registry), tokenizer (offline CLIP tokenizer), base_models (load/save diffusers
folders), vae_surgery (3→4 channel VAE), lora, losses, checkpoints, data, pretrain_trainer, vae_trainer,
finetune_trainer, sampling (DualGenerator), config (stage configs). The MLflow pyfunc wrapper lives in
components/tracking/generator_model.py.
Import the sub-modules directly; this package imports nothing heavy.
"""
