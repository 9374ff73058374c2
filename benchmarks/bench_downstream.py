"""c. Downstream training throughput: components.downstream.training vs a plain torchvision / smp loop.

Both sides train the same architecture (the registry's network; the plain loop builds it without our input
normalisation wrapper and normalises in the loop), same batch, AdamW at the same learning rate, autocast
bf16 on CUDA, over the same in-memory toy set through a DataLoader. One timed call = one epoch of
`downstream_steps` optimiser steps, including what each side sets up per epoch (loader, optimiser).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from benchmarks import harness
from benchmarks.fixtures import InMemoryPairs, Settings, toy_batch
from benchmarks.reference_loops import plain_epoch
from components.downstream import classifiers, segmenters, training

NUM_CLASSES = 7


def _normalise() -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(classifiers.IMAGENET_MEAN).view(1, 3, 1, 1),
            torch.tensor(classifiers.IMAGENET_STD).view(1, 3, 1, 1))


def cases(s: Settings, device: torch.device) -> list[harness.Case]:
    out: list[harness.Case] = []
    for kind, arch, size, batch in (("classifier", s.classifier, s.classifier_size, s.classifier_batch),
                                    ("segmenter", s.segmenter, s.segmenter_size, s.segmenter_batch)):
        n = batch * s.downstream_steps
        data = InMemoryPairs(toy_batch(n, size, seed=1))
        settings = training.TrainSettings(epochs=1, batch_size=batch, lr=1e-4, device=str(device),
                                          pin_memory=device.type == "cuda")
        plain_name = f"{kind} {arch}: plain loop"

        def ours(kind=kind, arch=arch, size=size, data=data, settings=settings):
            torch.manual_seed(0)
            if kind == "classifier":
                model = classifiers.create_classifier(arch, NUM_CLASSES, image_size=size)
                return lambda: training.train_classifier(model, data, settings)
            model = segmenters.create_segmenter(arch, 1)
            return lambda: training.train_segmenter(model, data, settings)

        def plain(kind=kind, arch=arch, size=size, data=data, batch=batch):
            torch.manual_seed(0)
            loader_args = dict(batch_size=batch, shuffle=True, pin_memory=device.type == "cuda")
            if kind == "classifier":
                net = classifiers.CLASSIFIERS.create(arch).build(NUM_CLASSES, size)
                ce = torch.nn.CrossEntropyLoss()
                return lambda: plain_epoch(net, DataLoader(data, **loader_args), lambda y, t: ce(y, t.long()),
                                           "label", device, normalise=_normalise())
            net = segmenters.SEGMENTERS.create(arch).build(1)
            dice = segmenters.dice_loss(1)
            return lambda: plain_epoch(net, DataLoader(data, **loader_args), dice, "mask", device,
                                       normalise=_normalise())

        info = {"arch": arch, "size": size, "batch": batch, "steps_per_call": s.downstream_steps}
        out.append(harness.Case(plain_name, plain, n, None, info))
        out.append(harness.Case(f"{kind} {arch}: ours", ours, n, plain_name, info))
    return out


def run(s: Settings, device: torch.device, log=print) -> tuple[harness.Table, dict]:
    results = harness.run_cases(cases(s, device), device, warmup=1, repeats=s.downstream_repeats, log=log)
    table = harness.comparison_table(
        f"c. Downstream training throughput ({s.classifier} @ {s.classifier_size} px, batch {s.classifier_batch}; "
        f"{s.segmenter} @ {s.segmenter_size} px, batch {s.segmenter_batch})", results, "images/s")
    table.notes.append(f"One timed call = one epoch of {s.downstream_steps} optimiser steps over an in-memory toy "
                       f"set (DataLoader, AdamW lr 1e-4{', bf16 autocast' if device.type == 'cuda' else ', fp32'}).")
    return table, {name: m.to_json() for name, m in results.items()}
