"""What to synthesise: per-class counts from the real training split, a prompt and a stable seed per sample.

Modes
- `balance`: synthetic data *tops up* every class to the majority count of the real training split,
  n_syn(c) = max_k n(k) - n(c). Real + synthetic is then balanced; the majority class gets no synthetic
  samples. This is how the paper uses synthesis against class imbalance (extra samples for minority classes).
  For a synthetic set that is balanced on its own, use `counts` with the same number for every class.
- `match`: the real training split's size and class mix, times `scale` (largest-remainder rounding keeps the
  total at round(scale * N)). This feeds the synthetic-only and 50/50 hybrid sets of identical scale.
- `counts`: explicit per-class counts; classes left out get none.
- `cover`: what every downstream training set needs, n_syn(c) = ceil(scale * max(n(c), max_k n(k) - n(c))): the
  class's own count for the synthetic-only and hybrid sets, the top-up to the majority for real+synthetic, both
  scaled alike (scale = the downstream cap over the training split's size covers a capped fold; a fold that
  needs more draws with replacement, which the downstream results count).

Every planned sample has a global index (classes in the configured order, then position within the class),
a stable id `syn_<category>_<index:06d>` and the seed `base_seed + index`. A rejected attempt is retried with
`seed + attempt * ATTEMPT_STRIDE`, which stays clear of every other sample's seeds for plans below
ATTEMPT_STRIDE samples.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.data import manifest
from components.data.prompts import template_prompt
from components.errors import ConfigError, DataError

MODES: tuple[str, ...] = ("balance", "match", "counts", "cover")
PROMPT_SOURCES: tuple[str, ...] = ("template", "descriptions")
ATTEMPT_STRIDE = 1_000_000_007


@dataclass(frozen=True)
class PlannedSample:
    """One sample to generate; `seed` is the first attempt's seed."""
    index: int
    sample_id: str
    category: str
    prompt: str
    seed: int

    def seed_for(self, attempt: int) -> int:
        """Seed of attempt `attempt` (0 = first try)."""
        return self.seed + attempt * ATTEMPT_STRIDE

    def as_dict(self) -> dict:
        return asdict(self)


def sample_id(category: str, index: int) -> str:
    return f"syn_{category}_{index:06d}"


def real_train_split(real_dir: str | Path) -> pd.DataFrame:
    """Rows of the real dataset's training split (raises DataError naming the manifest if there are none)."""
    df = manifest.read_manifest(real_dir)
    train = df[df["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise DataError(f"{manifest.manifest_file(real_dir)}: no rows with split='train'; run `prepare` "
                        f"with test_fraction < 1 so there is a training split to plan from")
    return train


def plan_classes(real_dir: str | Path, train: pd.DataFrame, requested: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The classes to plan: `requested` (default: the dataset's classes, categories.json), each of which must
    have at least one real training image (a generator cannot learn a class it never saw)."""
    dataset = manifest.read_categories(real_dir, train)
    classes = list(requested) or dataset
    unknown = [c for c in classes if c not in dataset]
    if unknown:
        raise ConfigError(f"synthesize.categories: {unknown} are not classes of the real dataset {real_dir} "
                          f"({dataset}); remove them or leave categories empty to plan the dataset's classes")
    counts = class_counts(train, classes)
    unseen = [c for c in classes if counts[c] == 0]
    if unseen:
        raise DataError(f"{Path(real_dir) / manifest.MANIFEST_NAME}: no real training image of {unseen}; the generator "
                        f"cannot learn them. Set synthesize.categories to classes with training images "
                        f"({[c for c in classes if counts[c]]}) or add images of those classes and rerun prepare")
    return classes


def class_counts(df: pd.DataFrame, categories: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Rows per configured class (0 for absent classes); rows of other classes are ignored."""
    vc = df["category"].value_counts()
    return {c: int(vc.get(c, 0)) for c in categories}


def _largest_remainder(weights: dict[str, float], total: int) -> dict[str, int]:
    floors = {c: math.floor(w) for c, w in weights.items()}
    left = total - sum(floors.values())
    order = sorted(weights, key=lambda c: (-(weights[c] - floors[c]), list(weights).index(c)))
    for c in order[:max(left, 0)]:
        floors[c] += 1
    return floors


def plan_counts(real_counts: dict[str, int], mode: str, counts: dict[str, int] | None = None,
                scale: float = 1.0) -> dict[str, int]:
    """Synthetic samples per class for `mode` (see the module docstring); keys follow `real_counts`."""
    if mode == "balance":
        top = max(real_counts.values(), default=0)
        return {c: top - n for c, n in real_counts.items()}
    if mode == "match":
        if scale <= 0:
            raise ConfigError(f"synthesize.scale {scale}: must be > 0 (1.0 = the real training split's size)")
        total = round(scale * sum(real_counts.values()))
        return _largest_remainder({c: scale * n for c, n in real_counts.items()}, total)
    if mode == "cover":
        if scale <= 0:
            raise ConfigError(f"synthesize.scale {scale}: must be > 0 (1.0 = every set at the training split's size)")
        top = max(real_counts.values(), default=0)
        return {c: math.ceil(scale * max(n, top - n)) if n else 0 for c, n in real_counts.items()}
    if mode == "counts":
        counts = dict(counts or {})
        unknown = sorted(set(counts) - set(real_counts))
        if unknown:
            raise ConfigError(f"synthesize.counts: unknown class(es) {unknown}; use codes from "
                              f"{list(real_counts)}")
        out = {}
        for c in real_counts:
            n = counts.get(c, 0)
            if isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0 or float(n) != int(n):
                raise ConfigError(f"synthesize.counts.{c}: {n!r} is not a non-negative integer")
            out[c] = int(n)
        if not any(out.values()):
            raise ConfigError("synthesize.counts: all zero; give e.g. counts={mel: 100, df: 50} for mode=counts")
        return out
    raise ConfigError(f"synthesize.mode {mode!r}: expected one of {list(MODES)}")


def _descriptions(train: pd.DataFrame, category: str) -> list[str]:
    rows = train[train["category"] == category].sort_values("image_id")
    return [d for d in rows["description"].fillna("").astype(str) if d.strip()]


def build_plan(train: pd.DataFrame, categories: list[str] | tuple[str, ...], mode: str,
               counts: dict[str, int] | None = None, scale: float = 1.0, prompt_source: str = "template",
               seed: int = 0) -> list[PlannedSample]:
    """The ordered list of samples to generate from the real training rows `train`.

    `prompt_source='descriptions'` cycles through a seeded permutation of the class's real descriptions
    (falling back to the template for a class without any); 'template' uses the paper's prompt.
    """
    if prompt_source not in PROMPT_SOURCES:
        raise ConfigError(f"synthesize.prompt_source {prompt_source!r}: expected one of {list(PROMPT_SOURCES)}")
    per_class = plan_counts(class_counts(train, categories), mode, counts, scale)
    plan: list[PlannedSample] = []
    index = 0
    for ci, category in enumerate(categories):
        n = per_class[category]
        pool = _descriptions(train, category) if prompt_source == "descriptions" else []
        order = np.random.default_rng([seed, ci]).permutation(len(pool)) if pool else None
        for k in range(n):
            prompt = pool[int(order[k % len(pool)])] if pool else template_prompt(category)
            plan.append(PlannedSample(index=index, sample_id=sample_id(category, index), category=category,
                                      prompt=prompt, seed=seed + index))
            index += 1
    return plan
