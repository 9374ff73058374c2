"""Classifier registry: the paper's four architectures, a small CNN for CPU budgets and a tiny test variant.

    model = create_classifier("densenet121", num_classes=7, pretrained_path="cache")

Every model takes images in [0, 1] (Bx3xHxW) and normalises them itself with the ImageNet statistics, so
callers (training, evaluation, XAI, a served MLflow model) never repeat that step. The ImageNet head is
replaced by a `num_classes` head. Pretrained weights come from a local file or, with `"cache"`, from the
standard torch-hub / Hugging Face cache file of that architecture; without them the model starts from
scratch. Nothing is ever downloaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from components.downstream import weights as W
from components.errors import ModelError
from components.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassifierSpec:
    """How to build one architecture and where its Grad-CAM layer is."""
    name: str
    build: Callable[[int, int], nn.Module]          # (num_classes, image_size) -> network with the new head
    head_prefixes: tuple[str, ...]                  # state-dict keys of the replaced head
    cam_layer: Callable[[nn.Module], nn.Module]     # last convolutional block (Grad-CAM target)
    cache_file: Callable[[], Path | None] = lambda: None
    convert_state: Callable[[dict, nn.Module], dict] = lambda state, net: state
    cam_channels_last: bool = False                 # the cam layer outputs BxHxWxC (Swin)
    min_size: int = 16
    description: str = ""


CLASSIFIERS: Registry[ClassifierSpec] = Registry("classifier", hint="set classify.architectures", error=ModelError)








class Normalised(nn.Module):
    """A registry network behind the ImageNet input normalisation; forward takes [0, 1] images.

    Mean and std are non-persistent buffers: state dicts hold the network's weights only (`net.` keys).
    """

    def __init__(self, arch: str, net: nn.Module, num_classes: int):
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


class ImageClassifier(Normalised):
    """A registry classifier; forward takes [0, 1] images, returns logits."""

    def __init__(self, arch: str, net: nn.Module, num_classes: int, image_size: int):
        super().__init__(arch, net, num_classes)
        self.image_size = image_size

    def cam_layer(self) -> nn.Module:
        """The module whose activations Grad-CAM weighs (last convolutional block)."""
        return CLASSIFIERS.create(self.arch).cam_layer(self.net)


def create_classifier(name: str, num_classes: int, pretrained_path: str | Path | None = None,
                      image_size: int = 224) -> ImageClassifier:
    """Build architecture `name` with a `num_classes` head; load local pretrained weights when given.

    `pretrained_path`: None / "" (scratch), a weights file, or "cache" (the architecture's standard cache
    file). `image_size` matters for Swin (its patch grid); CNNs accept any size ≥ their minimum.
    """
    spec = CLASSIFIERS.create(name)
    if num_classes < 2:
        raise ModelError(f"{name}: num_classes={num_classes}; a classifier needs at least 2 classes")
    if image_size < spec.min_size:
        raise ModelError(f"{name}: image_size={image_size} is below this architecture's minimum "
                         f"{spec.min_size}; raise image_size")
    net = spec.build(num_classes, image_size)
    path = W.resolve_pretrained(pretrained_path, spec.cache_file(), name)
    if path is not None:
        state = spec.convert_state(W.read_state_dict(path), net)
        W.load_matching(net, state, spec.head_prefixes, where=f"{name} <- {path}")
    return ImageClassifier(name, net, num_classes, image_size)


# --- torchvision CNNs ----------------------------------------------------------------------------------

def _tv_cache(weights_enum: str) -> Callable[[], Path | None]:
    def find() -> Path | None:
        import torchvision

        return W.torch_hub_file(getattr(torchvision.models, weights_enum).IMAGENET1K_V1.url)
    return find


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _densenet_keys(state: dict, net: nn.Module) -> dict:
    """The ImageNet DenseNet file uses 'norm.1'-style keys; torchvision renames them on load too."""
    return {(_DENSENET_OLD_KEY.sub(r"\1\2", k)): v for k, v in state.items()}


def _densenet121(num_classes: int, image_size: int) -> nn.Module:
    import torchvision

    return torchvision.models.densenet121(weights=None, num_classes=num_classes)


def _resnet34(num_classes: int, image_size: int) -> nn.Module:
    import torchvision

    return torchvision.models.resnet34(weights=None, num_classes=num_classes)


def _squeezenet1_1(num_classes: int, image_size: int) -> nn.Module:
    import torchvision

    return torchvision.models.squeezenet1_1(weights=None, num_classes=num_classes)


CLASSIFIERS.add(ClassifierSpec(
    name="densenet121", build=_densenet121, head_prefixes=("classifier.",),
    cam_layer=lambda net: net.features.denseblock4, cache_file=_tv_cache("DenseNet121_Weights"),
    convert_state=_densenet_keys, min_size=32, description="torchvision DenseNet-121"))
CLASSIFIERS.add(ClassifierSpec(
    name="resnet34", build=_resnet34, head_prefixes=("fc.",),
    cam_layer=lambda net: net.layer4, cache_file=_tv_cache("ResNet34_Weights"), min_size=32,
    description="torchvision ResNet-34"))
CLASSIFIERS.add(ClassifierSpec(
    name="squeezenet1_1", build=_squeezenet1_1, head_prefixes=("classifier.1.",),
    cam_layer=lambda net: net.features, cache_file=_tv_cache("SqueezeNet1_1_Weights"), min_size=32,
    description="torchvision SqueezeNet 1.1"))


# --- timm Swin Transformer -----------------------------------------------------------------------------

SWIN_TIMM_NAME = "swin_tiny_patch4_window7_224"
SWIN_HF_REPO = "timm/swin_tiny_patch4_window7_224.ms_in1k"


def _swin(num_classes: int, image_size: int) -> nn.Module:
    import timm

    if image_size % 32:
        raise ModelError(f"swin: image_size={image_size} must be a multiple of 32 (patch 4 × 3 merges)")
    return timm.create_model(SWIN_TIMM_NAME, pretrained=False, num_classes=num_classes, img_size=image_size)


def _swin_state(state: dict, net: nn.Module) -> dict:
    """Resize relative-position tables and relabel keys for this image size (timm's own filter)."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state, net)


CLASSIFIERS.add(ClassifierSpec(
    name="swin", build=_swin, head_prefixes=("head.fc.",),
    cam_layer=lambda net: net.layers[-1], cam_channels_last=True,
    cache_file=lambda: W.hf_cache_file(SWIN_HF_REPO), convert_state=_swin_state, min_size=32,
    description="timm Swin-T (patch 4, window 7), img_size set to the input size"))


# --- small CNN for CPU budgets ------------------------------------------------------------------------

def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """A VGG-style CNN with BatchNorm for small images trained from scratch: a full-resolution stem convolution,
    then stages at 1/2, 1/4 and 1/8 of the input side (two, two and one convolutions), global average pooling,
    dropout and a linear head. Widths `width`·(1, 2, 4, 8); 0.58 M parameters at width 32."""

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w), _conv_bn(4 * w, 4 * w), nn.MaxPool2d(2),
            _conv_bn(4 * w, 8 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


CLASSIFIERS.add(ClassifierSpec(
    name="small_cnn", build=lambda num_classes, image_size: SmallCNN(num_classes),
    head_prefixes=("classifier.",), cam_layer=lambda net: net.features, min_size=16,
    description="4-stage BatchNorm CNN (0.58 M parameters) for training from scratch on CPU budgets"))


# --- tiny test variant ---------------------------------------------------------------------------------

class TinyCNN(nn.Module):
    """Three conv blocks and a linear head: a few thousand parameters, for tests and smoke runs."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, width), nn.MaxPool2d(2), block(width, 2 * width),
                                      nn.MaxPool2d(2), block(2 * width, 4 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


CLASSIFIERS.add(ClassifierSpec(
    name="tiny_cnn", build=lambda num_classes, image_size: TinyCNN(num_classes), head_prefixes=("classifier.",),
    cam_layer=lambda net: net.features, min_size=8, description="3-block CNN for tests"))
