"""Segmenter registry (segmentation-models-pytorch): the paper's two models, a lighter U-Net for CPU budgets and
a tiny test variant.

    model = create_segmenter("unet_resnet34", num_classes=1, encoder_weights=None)

Models take images in [0, 1] (Bx3xHxW), normalise them with the ImageNet statistics themselves, and return
mask logits (Bx num_classes xHxW). `encoder_weights` is None / "" (scratch), a local file with the encoder's
ImageNet state dict (torchvision ResNet format; the classifier head is ignored), or "cache" (the torchvision
cache file of that encoder). smp's own "imagenet" option would download and is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from components.downstream import weights as W
from components.downstream.classifiers import Normalised
from components.errors import ModelError
from components.registry import Registry


@dataclass(frozen=True)
class SegmenterSpec:
    """How to build one segmentation model."""
    name: str
    build: Callable[[int], nn.Module]      # num_classes -> smp model with random weights
    encoder_cache: Callable[[], Path | None] = lambda: None
    size_multiple: int = 32                # input sides must be multiples of this
    description: str = ""


SEGMENTERS: Registry[SegmenterSpec] = Registry("segmenter", hint="set segment.architectures", error=ModelError)








class ImageSegmenter(Normalised):
    """An smp model behind the ImageNet input normalisation; forward takes [0, 1] images, returns mask logits."""


def create_segmenter(name: str, num_classes: int = 1, encoder_weights: str | Path | None = None) -> ImageSegmenter:
    """Build segmenter `name` with `num_classes` output channels (1 = binary lesion mask)."""
    spec = SEGMENTERS.create(name)
    if num_classes < 1:
        raise ModelError(f"{name}: num_classes={num_classes}; use 1 for a binary mask")
    if str(encoder_weights) == "imagenet":
        raise ModelError(f"{name}: encoder_weights='imagenet' would download; give a local weights file or "
                         f"'cache' (torchvision cache file) or leave it empty to train from scratch")
    net = spec.build(num_classes)
    path = W.resolve_pretrained(encoder_weights, spec.encoder_cache(), name)
    if path is not None:
        W.load_matching(net.encoder, W.read_state_dict(path), ("fc.",), where=f"{name} encoder <- {path}")
    return ImageSegmenter(name, net, num_classes)


def check_size(name: str, size: int) -> None:
    """Raise a clear error when `size` does not fit the model's downsampling."""
    multiple = SEGMENTERS.create(name).size_multiple
    if size % multiple:
        raise ModelError(f"{name}: image size {size} must be a multiple of {multiple}; "
                         f"e.g. use {max(multiple, size // multiple * multiple)}")


def dice_loss(num_classes: int = 1) -> nn.Module:
    """Soft Dice loss on logits (binary for one class, multiclass otherwise)."""
    import segmentation_models_pytorch as smp

    mode = smp.losses.BINARY_MODE if num_classes == 1 else smp.losses.MULTICLASS_MODE
    return smp.losses.DiceLoss(mode=mode, from_logits=True)


def _tv_resnet_cache(weights_enum: str) -> Callable[[], Path | None]:
    def find() -> Path | None:
        import torchvision

        return W.torch_hub_file(getattr(torchvision.models, weights_enum).IMAGENET1K_V1.url)
    return find


def _unet_resnet34(num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=num_classes)


def _unet_resnet18(num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    # half smp's default decoder widths (256, 128, 64, 32, 16): with the lighter encoder, about half the CPU time
    # per training image of unet_resnet34 at 64 px
    return smp.Unet("resnet18", encoder_weights=None, decoder_channels=(128, 64, 32, 16, 16), in_channels=3,
                    classes=num_classes)


def _deeplabv3plus_resnet50(num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus("resnet50", encoder_weights=None, in_channels=3, classes=num_classes)


def _tiny_unet(num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    # timm's `test_resnet` (a ~50k-parameter ResNet) through smp's timm-universal encoder: no download
    return smp.Unet("tu-test_resnet", encoder_depth=3, encoder_weights=None, decoder_channels=(16, 8, 8),
                    in_channels=3, classes=num_classes)


SEGMENTERS.add(SegmenterSpec(
    name="unet_resnet34", build=_unet_resnet34, encoder_cache=_tv_resnet_cache("ResNet34_Weights"),
    description="U-Net, ResNet-34 encoder"))
SEGMENTERS.add(SegmenterSpec(
    name="unet_resnet18", build=_unet_resnet18, encoder_cache=_tv_resnet_cache("ResNet18_Weights"),
    description="U-Net, ResNet-18 encoder, light decoder (128, 64, 32, 16, 16), for CPU budgets"))
SEGMENTERS.add(SegmenterSpec(
    name="deeplabv3plus_resnet50", build=_deeplabv3plus_resnet50,
    encoder_cache=_tv_resnet_cache("ResNet50_Weights"), size_multiple=16,
    description="DeepLabV3+, ResNet-50 encoder (output stride 16)"))
SEGMENTERS.add(SegmenterSpec(
    name="tiny_unet", build=_tiny_unet, size_multiple=8, description="3-level U-Net on timm test_resnet, for tests"))
