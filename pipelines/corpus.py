"""Stage `corpus`: the public-like pretraining corpus (data/public) that the `tiny` base model is pretrained on.

A stand-in for what a public model such as Stable Diffusion saw on the web: procedural skin-lesion photos under
other capture conditions than the clinical set, in equal class shares, with generic, noisy captions and no
masks, drawn from random streams disjoint from the clinical toy data (components/data/public_corpus.py).
Writes data/public/ (images/, manifest.csv, categories.json, corpus_card.json; the same params write the same
bytes), metrics/corpus.json (counts and wall time) and reports/corpus/samples.png.

    python -m pipelines.corpus [--params params.yaml] [--set n_images=2000 ...]
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import numpy as np

from components import atomic
from components.config import to_dict
from components.data import manifest
from components.generator.config import CorpusConfig
from components.images import pair_grid
from components.tracking.figures import log_figure
from components.tracking.mlflow_setup import stage_run
from pipelines.cli import stage_main

log = logging.getLogger(__name__)
STAGE = "corpus"


def sample_rows(root: Path, df, per_class: int = 4) -> list:
    """Grid rows: the first `per_class` training images of each class, titled by the start of their caption."""
    rows = []
    for category, part in df[df["split"] == "train"].groupby("category", sort=True):
        cells = [(str(r["description"])[:24], np.asarray(manifest.load_rgb(root / r["image_path"])))
                 for r in part.head(per_class).to_dict("records")]
        rows.append((category, cells))
    return rows


def dermoscopy_glossary() -> dict[str, tuple[str, ...]]:
    """Per class, the dermoscopic phrases of the offline describer's vocabulary (textbook terms, no image data):
    what dermatology pages on the web say about such lesions."""
    from components.describe.vocabulary import VOCABULARY

    return {code: tuple(v.features + v.colours + v.symmetry + v.borders + v.icd11) for code, v in VOCABULARY.items()}


def run(cfg: CorpusConfig, reports_dir: str | Path = "reports") -> dict:
    """Write the corpus to cfg.out_dir; return the metrics written to cfg.metrics_file."""
    from components.data.public_corpus import CaptionRecipe, generate_public_corpus

    recipe = CaptionRecipe(diagnosis_share=cfg.diagnosis_share, mislabel_share=cfg.mislabel_share,
                           glossary_share=cfg.glossary_share, glossary=dermoscopy_glossary())
    with stage_run(STAGE, params=to_dict(cfg)):
        start = time.perf_counter()
        corpus = generate_public_corpus(cfg.out_dir, n_images=cfg.n_images, holdout_images=cfg.holdout_images,
                                        size=cfg.size, seed=cfg.seed, captions=recipe, workers=cfg.workers or None,
                                        progress=cfg.progress)
        seconds = time.perf_counter() - start
        card = corpus.card
        metrics = {"n_images": card["n_images"], "n_train": card["n_train"], "n_holdout": card["n_holdout"],
                   "captions_naming_a_diagnosis": card["captions"]["naming_a_diagnosis"],
                   "captions_naming_a_wrong_diagnosis": card["captions"]["naming_a_wrong_diagnosis"],
                   "manifest_md5": card["manifest_md5"], "seconds_generate": seconds}
        mlflow.log_metrics({f"corpus/{k}": float(v) for k, v in metrics.items() if not isinstance(v, str)})
        mlflow.set_tag("corpus.manifest_md5", card["manifest_md5"])
        log_figure(pair_grid(sample_rows(Path(cfg.out_dir), corpus.manifest)), "corpus/samples.png",
                   save_to=Path(reports_dir) / STAGE / "samples.png")
        atomic.write_json(cfg.metrics_file, metrics)
    log.info("corpus: %d images (%d train, %d holdout) in %.1f s -> %s", metrics["n_images"], metrics["n_train"],
             metrics["n_holdout"], seconds, cfg.out_dir)
    return metrics


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, CorpusConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
