"""Channel surgery that turns a 3-channel (RGB) AutoencoderKL into a 4-channel (RGB + mask) one.

- encoder.conv_in 3→4 input channels: RGB weights copied, the mask input channel's weights zero, so the
  latents of an RGB image are exactly those of the original VAE until the new channel is trained;
- decoder.conv_out 3→4 output channels: RGB filters and biases copied; the mask filter starts as the
  negated mean of the RGB filters (a darkness detector: lesions are darker than the surrounding skin) and bias
  0, a prior the `adapt_vae` stage refines with BCE + Dice.
Everything else is copied unchanged. Image and mask enter the VAE in [-1, 1]; channel 4 of the output is the
mask logit.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from components.errors import ModelError

MASK_CHANNEL = 3


def is_dual(vae: AutoencoderKL) -> bool:
    """True when the VAE already encodes and decodes RGB + mask (4 in, 4 out channels)."""
    return vae.config.in_channels == 4 and vae.config.out_channels == 4


def require_dual(vae: AutoencoderKL, where: str = "VAE") -> None:
    """Raise ModelError unless `vae` is a 4-channel (adapted) VAE."""
    if not is_dual(vae):
        raise ModelError(
            f"{where}: expected a 4-channel (RGB + mask) VAE but it has {vae.config.in_channels} input / "
            f"{vae.config.out_channels} output channels; run the `adapt_vae` stage and use its output (models/vae4)")


def expand_to_dual(vae: AutoencoderKL) -> AutoencoderKL:
    """A new 4-channel AutoencoderKL whose RGB behaviour equals `vae` (see module docstring)."""
    cin, cout = vae.config.in_channels, vae.config.out_channels
    if cin == 4 or cout == 4:
        raise ModelError(
            f"the VAE already has {cin} input / {cout} output channels: it was adapted before. Channel surgery "
            f"needs the base model's 3-channel VAE; point adapt_vae.base_model at the base model, not at models/vae4")
    if cin != 3 or cout != 3:
        raise ModelError(f"the VAE has {cin} input / {cout} output channels; channel surgery needs an RGB (3/3) VAE")
    config = dict(vae.config)
    config.update(in_channels=4, out_channels=4)
    dual = AutoencoderKL.from_config(config)
    dual.to(device=vae.device, dtype=vae.dtype)
    state = vae.state_dict()
    new_state = dual.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key not in ("encoder.conv_in.weight", "decoder.conv_out.weight", "decoder.conv_out.bias"):
                new_state[key].copy_(value)
        w_in = new_state["encoder.conv_in.weight"]
        w_in.zero_()
        w_in[:, :3] = state["encoder.conv_in.weight"]
        w_out, b_out = new_state["decoder.conv_out.weight"], new_state["decoder.conv_out.bias"]
        w_out[:3] = state["decoder.conv_out.weight"]
        w_out[MASK_CHANNEL] = -state["decoder.conv_out.weight"].mean(dim=0)
        b_out[:3] = state["decoder.conv_out.bias"]
        b_out[MASK_CHANNEL] = 0.0
    dual.load_state_dict(new_state)
    dual.train(vae.training)
    return dual


def to_vae_input(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Image Bx3xHxW in [0, 1] and mask Bx1xHxW in {0, 1} → VAE input in [-1, 1] (4 channels, or 3 without mask)."""
    x = image * 2 - 1
    if mask is None:
        return x
    return torch.cat([x, mask.to(x.dtype) * 2 - 1], dim=1)


def split_output(decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder output Bx4xHxW → (RGB in [0, 1], mask logits Bx1xHxW)."""
    rgb = ((decoded[:, :3].float() + 1) / 2).clamp(0, 1)
    return rgb, decoded[:, MASK_CHANNEL:MASK_CHANNEL + 1].float()


def keep_rows_frozen(param: torch.nn.Parameter, rows: slice, dim: int) -> None:
    """Zero the gradient of `param[rows]` along `dim`, so an optimiser without weight decay leaves it unchanged."""
    mask = torch.ones_like(param)
    index = [slice(None)] * param.dim()
    index[dim] = rows
    mask[tuple(index)] = 0
    param.register_hook(lambda grad: grad * mask.to(grad.dtype))
