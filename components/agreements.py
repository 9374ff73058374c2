"""What stages must share, set once: each shared value has one owning key, and a stage whose own key disagrees
stops with an error naming both keys.

| shared value              | owner (set it here)  | keys that must agree                                           |
| ------------------------- | -------------------- | -------------------------------------------------------------- |
| the base model            | pretrain.base_model  | read through pretrain.out_dir by adapt_vae.base_model,         |
|                           |                      | finetune.base_model, synthesize.base_dir, tune.base_dir,       |
|                           |                      | quality.vae_dir (pretrain writes the model or its pointer)     |
| the public corpus         | corpus.out_dir       | pretrain.corpus_dir                                            |
| the real dataset          | prepare.out_dir      | describe.data_dir, adapt_vae/finetune/tune.data_dir,           |
|                           |                      | synthesize/quality/classify/segment/report.real_dir            |
| the 4-channel VAE         | adapt_vae.out_dir    | finetune.vae_dir, synthesize.vae_dir, tune.vae_dir             |
| the LoRA                  | finetune.out_dir     | synthesize.lora_dir ("" = the base UNet without LoRA)          |
| the class list            | prepare.categories   | synthesize.categories (a subset; [] = the dataset's classes)   |
| the largest resolution    | prepare.size         | every stage's resolution / image size is at most prepare.size  |
|                           | corpus.size          | pretrain.resolution is at most corpus.size                     |
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable

from components.errors import ConfigError

SAME, SUBSET, AT_MOST = "same", "subset", "at_most"


@dataclass(frozen=True)
class Agreement:
    key: str            # section.key of a stage
    owner: str          # section.key that owns the shared value
    relation: str       # SAME | SUBSET | AT_MOST
    why: str            # how to fix a disagreement


def _base(key: str) -> Agreement:
    return Agreement(key, "pretrain.out_dir", SAME,
                     "choose the base model once, in pretrain.base_model (pretrain writes it, or a pointer to a "
                     f"folder / hub id, into pretrain.out_dir); set {key} to that folder")


def _same(key: str, owner: str, what: str) -> Agreement:
    return Agreement(key, owner, SAME, f"{key} must read {what} that {owner} writes; set it to the same path")


def _size(key: str) -> Agreement:
    return Agreement(key, "prepare.size", AT_MOST,
                     f"images are prepared at prepare.size; raise prepare.size or lower {key} (0 = derived)")


AGREEMENTS: tuple[Agreement, ...] = (
    *(_base(k) for k in ("adapt_vae.base_model", "finetune.base_model", "synthesize.base_dir", "tune.base_dir",
                         "quality.vae_dir")),
    *(_same(k, "prepare.out_dir", "the real dataset") for k in (
        "describe.data_dir", "adapt_vae.data_dir", "finetune.data_dir", "tune.data_dir",
        "synthesize.real_dir", "quality.real_dir", "classify.real_dir", "segment.real_dir", "report.real_dir")),
    *(_same(k, "adapt_vae.out_dir", "the 4-channel VAE") for k in ("finetune.vae_dir", "synthesize.vae_dir",
                                                                   "tune.vae_dir")),
    _same("synthesize.lora_dir", "finetune.out_dir", "the LoRA"),
    _same("pretrain.corpus_dir", "corpus.out_dir", "the public corpus"),
    Agreement("pretrain.resolution", "corpus.size", AT_MOST,
              "the corpus is rendered at corpus.size; raise corpus.size or lower pretrain.resolution"),
    Agreement("synthesize.categories", "prepare.categories", SUBSET,
              "synthesize plans classes the dataset has; list a subset of prepare.categories or [] for all"),
    *(_size(k) for k in ("pretrain.resolution", "adapt_vae.resolution", "finetune.resolution",
                         "synthesize.resolution", "tune.eval_resolution", "quality.image_size",
                         "quality.segmenter_size", "classify.image_size", "segment.image_size", "report.xai_size")),
)


def _get(params: dict[str, Any], dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return (params.get(section) or {}).get(key)


def _norm(path: Any) -> str:
    return str(PurePosixPath(str(path))) if path not in (None, "") else ""


_CHECKS: dict[str, Callable[[Any, Any], bool]] = {
    SAME: lambda value, owned: _norm(value) == _norm(owned),
    SUBSET: lambda value, owned: set(value or ()) <= set(owned or ()),
    AT_MOST: lambda value, owned: float(value) <= float(owned),
}


def _skipped(agreement: Agreement, value: Any, owned: Any) -> bool:
    """Nothing to compare: a key the params file lacks, a derived size (0 / null), an empty LoRA path."""
    if value is None or owned is None:
        return True
    if agreement.relation == AT_MOST:
        return not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0
    return agreement.key == "synthesize.lora_dir" and value == ""


def disagreements(params: dict[str, Any], stage: str | None = None) -> list[str]:
    """One message per broken agreement that involves `stage` (every one when None), naming both keys."""
    out = []
    for a in AGREEMENTS:
        if stage is not None and stage not in (a.key.split(".")[0], a.owner.split(".")[0]):
            continue
        value, owned = _get(params, a.key), _get(params, a.owner)
        if _skipped(a, value, owned) or _CHECKS[a.relation](value, owned):
            continue
        out.append(f"{a.key}={value!r} disagrees with {a.owner}={owned!r}: {a.why}")
    return out


def check(params: dict[str, Any], stage: str, where: str = "params.yaml") -> None:
    """ConfigError naming both keys of the first broken agreement that involves `stage` (all of them listed)."""
    found = disagreements(params, stage)
    if found:
        raise ConfigError(f"{where}: " + "; ".join(found))
