"""No clinical validation or test image, nor anything derived from one, reaches the generator.

The public corpus shares no image with the clinical toy set; pretrain reads only the corpus; adapt_vae and finetune
read only the training split: they run to the end on a clinical folder whose val/test image and mask files are
deleted (any read of one raises), and the same run fails as soon as one training image it reads is missing.
"""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from components.data import manifest
from components.data.public_corpus import generate_public_corpus
from components.data.toy import generate_toy
from components.errors import DataError
from components.generator.config import AdaptVaeConfig, FinetuneConfig, PretrainConfig

SEED = 7
LEAK = "LEAKED"        # written into the val/test descriptions: no prompt may contain it


def _pixel_digests(root, df) -> set[str]:
    return {hashlib.sha256(manifest.load_rgb(root / rel).tobytes()).hexdigest() for rel in df["image_path"]}


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """A corpus and a clinical toy set of the same seed; the clinical set gets a val split, then its val/test image
    and mask files are deleted and their descriptions marked."""
    root = tmp_path_factory.mktemp("lineage")
    corpus = generate_public_corpus(root / "public", n_images=70, holdout_images=8, size=32, seed=SEED, workers=1,
                                    progress=False).manifest
    clinical = generate_toy(root / "clinical", n_images=70, size=32, seed=SEED, workers=1, progress=False)
    digests = {"corpus": _pixel_digests(root / "public", corpus), "clinical": _pixel_digests(root / "clinical",
                                                                                              clinical)}
    real = root / "real"
    shutil.copytree(root / "clinical", real)
    df = manifest.read_manifest(real)
    test_rows = df.index[df["split"] == "test"]
    df.loc[test_rows[::2], "split"] = "val"
    unseen = df["split"] != "train"
    df.loc[unseen, "description"] = LEAK + " " + df.loc[unseen, "description"]
    manifest.write_manifest(df, real)
    for row in df[unseen].to_dict("records"):
        (real / row["image_path"]).unlink()
        (real / row["mask_path"]).unlink()
    return {"root": root, "real": real, "digests": digests, "df": df}


def test_the_corpus_shares_no_image_with_any_clinical_split(lineage):
    digests = lineage["digests"]
    assert len(digests["corpus"]) == 70 and len(digests["clinical"]) == 70
    assert not digests["corpus"] & digests["clinical"]
    df = lineage["df"]
    assert set(df["split"]) == {"train", "val", "test"}


def test_generator_stages_never_read_clinical_val_or_test_files(lineage):
    from components.generator.finetune_trainer import FinetuneTrainer
    from pipelines import adapt_vae, finetune, pretrain

    root, real = lineage["root"], lineage["real"]
    pretrain.run(PretrainConfig(
        corpus_dir=str(root / "public"), out_dir=str(root / "base"), metrics_file=str(root / "m/pre.json"),
        resolution=32, vae_steps=2, vae_batch_size=4, vae_crop=16, unet_steps=2, unet_batch_size=4, sample_steps=1,
        log_every=1), reports_dir=root / "reports")
    ada_cfg = AdaptVaeConfig(base_model=str(root / "base"), data_dir=str(real), out_dir=str(root / "vae4"),
                             metrics_file=str(root / "m/ada.json"), resolution=32, steps=2, batch_size=4,
                             eval_batch_size=8, log_every=1)
    ada = adapt_vae.run(ada_cfg, reports_dir=root / "reports")
    n_train = int((lineage["df"]["split"] == "train").sum())
    assert ada["train_images"] + ada["eval_images"] == n_train
    ft_cfg = FinetuneConfig(
        base_model=str(root / "base"), vae_dir=str(root / "vae4"), data_dir=str(real), descriptions_csv="",
        out_dir=str(root / "lora"), checkpoint_dir=str(root / "ckpt"), metrics_file=str(root / "m/ft.json"),
        resolution=32, max_train_steps=2, batch_size=2, checkpoint_every=100, validation_steps=1, log_every=1,
        lr_warmup_steps=0, register=False)
    assert finetune.run(ft_cfg, reports_dir=root / "reports")["steps"] == 2
    trainer = FinetuneTrainer(ft_cfg, progress=False)
    assert set(trainer.train_df["split"]) == {"train"} and len(trainer.dataset) == n_train
    assert not [p for p in trainer.dataset.prompts if LEAK in p]

    # The deletion is what proves it: the same adapt_vae run stops once a training file it reads is missing.
    from components.generator.data import load_split
    from components.generator.vae_trainer import eval_split

    _, held_out = eval_split(load_split(real, "train", stage="adapt_vae"), ada_cfg.eval_fraction, ada_cfg.seed)
    (real / held_out["image_path"].iloc[0]).unlink()
    with pytest.raises(DataError, match="image file not found"):
        adapt_vae.run(ada_cfg, reports_dir=root / "reports")


def test_adapt_vae_holds_out_a_seeded_stratified_share_of_the_training_split():
    from components.generator.vae_trainer import eval_split

    train = pd.DataFrame({"image_id": [f"i{k}" for k in range(40)], "category": ["a"] * 30 + ["b"] * 10})
    fit, held = eval_split(train, 0.1, seed=3)
    assert sorted(held["category"]) == ["a", "a", "a", "b"]            # 10 % of each class
    assert set(fit["image_id"]).isdisjoint(held["image_id"])
    assert sorted(fit["image_id"].tolist() + held["image_id"].tolist()) == sorted(train["image_id"])
    again, _ = eval_split(train, 0.1, seed=3)
    other, _ = eval_split(train, 0.1, seed=4)
    assert again.equals(fit) and not other.equals(fit)
    assert np.array_equal(fit.index, np.arange(len(fit)))
