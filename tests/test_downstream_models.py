"""Classifier and segmenter registries: replaced heads, local pretrained weights (never a download), training API."""
from __future__ import annotations

import pytest
import torch
import torchvision

from components.data.torch_dataset import loader_kwargs
from components.downstream import weights
from components.downstream.classifiers import CLASSIFIERS, _densenet_keys, create_classifier
from components.downstream.segmenters import SEGMENTERS, check_size, create_segmenter
from components.downstream.training import TrainSettings, make_loader, predict_masks, train_classifier, train_segmenter
from components.errors import ModelError


def test_registries_list_paper_models_and_tiny_variants():
    assert {"densenet121", "resnet34", "squeezenet1_1", "swin", "tiny_cnn"} <= set(CLASSIFIERS.names())
    assert {"unet_resnet34", "deeplabv3plus_resnet50", "tiny_unet"} <= set(SEGMENTERS.names())
    with pytest.raises(ModelError, match="choose one of"):
        create_classifier("vgg99", 7)
    with pytest.raises(ModelError, match="choose one of"):
        create_segmenter("fcn")


@pytest.mark.parametrize("name", ["densenet121", "resnet34", "squeezenet1_1", "swin", "tiny_cnn"])
def test_classifier_head_replaced_and_small_inputs(name):
    torch.manual_seed(0)
    model = create_classifier(name, num_classes=5, image_size=32).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 5)
    assert model.cam_layer() is not None


@pytest.mark.parametrize("name", ["unet_resnet34", "deeplabv3plus_resnet50", "tiny_unet"])
def test_segmenter_outputs_mask_logits(name):
    model = create_segmenter(name, num_classes=1).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 1, 32, 32)


def test_pretrained_classifier_from_local_file_and_cache(tmp_path, monkeypatch):
    imagenet = torchvision.models.squeezenet1_1(weights=None)           # 1000-class ImageNet layout
    path = tmp_path / "squeezenet.pth"
    torch.save(imagenet.state_dict(), path)
    model = create_classifier("squeezenet1_1", num_classes=7, pretrained_path=path, image_size=64)
    assert torch.equal(model.net.features[0].weight, imagenet.features[0].weight)
    assert model.net.classifier[1].out_channels == 7                     # head replaced, not loaded
    # "cache": the torch-hub file of the architecture; missing -> a clear error, present -> loaded
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="no cached weights"):
        create_classifier("squeezenet1_1", num_classes=7, pretrained_path="cache")
    cached = weights.torch_hub_file(torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    path.rename(cached)
    model = create_classifier("squeezenet1_1", num_classes=7, pretrained_path="cache")
    assert torch.equal(model.net.features[0].weight, imagenet.features[0].weight)
    with pytest.raises(ModelError, match="do not fit"):
        create_classifier("resnet34", num_classes=7, pretrained_path=cached)


def test_densenet_legacy_keys_are_renamed():
    state = {"features.denseblock1.denselayer1.norm.1.weight": 1, "features.conv0.weight": 2}
    assert set(_densenet_keys(state, None)) == {"features.denseblock1.denselayer1.norm1.weight", "features.conv0.weight"}


def test_segmenter_encoder_weights_from_file_and_no_download(tmp_path):
    resnet = torchvision.models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(resnet.state_dict(), path)
    model = create_segmenter("unet_resnet34", encoder_weights=path)
    assert torch.equal(model.net.encoder.conv1.weight, resnet.conv1.weight)
    with pytest.raises(ModelError, match="download"):
        create_segmenter("unet_resnet34", encoder_weights="imagenet")
    with pytest.raises(ModelError, match="multiple of 32"):
        check_size("unet_resnet34", 48)


class _Squares(torch.utils.data.Dataset):
    """Bright square on a dark background; label = which half the square is in; mask = the square."""

    def __init__(self, n: int, size: int = 16):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            label = i % 2
            image = torch.rand(3, size, size, generator=g) * 0.2
            mask = torch.zeros(1, size, size)
            r = int(torch.randint(0, size - 6, (1,), generator=g))
            c = (0 if label == 0 else size // 2) + int(torch.randint(0, size // 2 - 5, (1,), generator=g))
            image[:, r:r + 5, c:c + 5] = 0.9
            mask[:, r:r + 5, c:c + 5] = 1
            self.items.append({"image": image, "mask": mask, "label": label})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_training_api_lowers_losses_and_predicts_binary_masks():
    data = _Squares(16)
    torch.manual_seed(0)
    clf = create_classifier("tiny_cnn", num_classes=2, image_size=16)
    hist = train_classifier(clf, data, TrainSettings(epochs=5, batch_size=8, lr=1e-2, lr_schedule="constant"))
    assert hist["loss_history"][-1] < hist["loss_history"][0]
    torch.manual_seed(0)
    seg = create_segmenter("tiny_unet")
    hist = train_segmenter(seg, data, TrainSettings(epochs=5, batch_size=8, lr=1e-2))
    assert hist["loss_history"][-1] < hist["loss_history"][0]
    masks = predict_masks(seg, torch.stack([d["image"] for d in data.items[:4]]))
    assert masks.shape == (4, 1, 16, 16) and masks.dtype == torch.uint8
    assert set(masks.unique().tolist()) <= {0, 1}


def test_loader_settings_follow_workers_and_device():
    assert loader_kwargs(0, "cpu") == {"num_workers": 0, "pin_memory": False}
    assert loader_kwargs(0, "cuda") == {"num_workers": 0, "pin_memory": True}
    assert loader_kwargs(2, "cuda:1", prefetch_factor=4) == {"num_workers": 2, "pin_memory": True,
                                                             "persistent_workers": True, "prefetch_factor": 4}
    assert loader_kwargs(2, torch.device("cpu"), persistent=False) == {
        "num_workers": 2, "pin_memory": False, "persistent_workers": False, "prefetch_factor": 2}
    assert loader_kwargs(1, "cuda", pin_memory=False)["pin_memory"] is False
    data = _Squares(8)
    settings = TrainSettings(batch_size=4, num_workers=2, pin_memory=True, device="cpu")
    train, evaluate = make_loader(data, settings, train=True), make_loader(data, settings, train=False)
    assert train.persistent_workers and train.prefetch_factor == 2 and not train.pin_memory
    assert not evaluate.persistent_workers      # iterated once: nothing to keep alive


def test_persistent_workers_train_like_the_main_process():
    data = _Squares(16)
    histories = []
    for workers in (0, 1):
        torch.manual_seed(0)
        clf = create_classifier("tiny_cnn", num_classes=2, image_size=16)
        settings = TrainSettings(epochs=3, batch_size=8, lr=1e-2, num_workers=workers)
        histories.append(train_classifier(clf, data, settings)["loss_history"])
    # Same batches in the first epoch. Later shuffles differ: torch draws the workers' base seed from the loader's
    # generator once per iterator, and persistent workers keep one iterator for every epoch.
    assert histories[1][0] == pytest.approx(histories[0][0], rel=1e-6)
    assert len(histories[1]) == 3 and histories[1][-1] < histories[1][0]
