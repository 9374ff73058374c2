"""The public-like pretraining corpus: folder contract, identical bytes on rerun, other capture conditions,
captions that name the diagnosis in the configured share, a tokenizer trained on them that knows the clinical words."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.data import manifest
from components.data.categories import ALIASES, CATEGORY_NAMES, HAM10000_CATEGORIES
from components.data.prompts import template_prompt
from components.data.public_corpus import (
    CARD_FILE,
    HOLDOUT_SPLIT,
    CaptionRecipe,
    caption,
    generate_public_corpus,
    render_public,
    uniform_labels,
)
from components.data.toy import render_sample
from components.errors import ConfigError, DataError
from components.hashing import file_digest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "public"
    return root, generate_public_corpus(root, n_images=60, holdout_images=10, size=32, seed=5, workers=1,
                                        progress=False)


def test_folder_follows_the_dataset_contract_without_masks(corpus):
    root, result = corpus
    df = manifest.read_manifest(root)
    assert list(df.columns) == list(manifest.REQUIRED_COLUMNS)
    assert set(df["source"]) == {"public"} and set(df["mask_path"]) == {""}
    assert (df["split"] == "train").sum() == 50 and (df["split"] == HOLDOUT_SPLIT).sum() == 10
    assert set(df["width"]) == set(df["height"]) == {32}
    assert (df["description"].str.len() > 5).all()
    counts = df["category"].value_counts()
    assert sorted(counts.to_dict().values()) == [8, 8, 8, 9, 9, 9, 9]     # 60 images in 7 equal shares
    for rel in df["image_path"]:
        with Image.open(root / rel) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
    assert json.loads((root / "categories.json").read_text()) == list(HAM10000_CATEGORIES)
    card = json.loads((root / CARD_FILE).read_text())
    assert card == result.card
    assert card["manifest_md5"] == file_digest(root / "manifest.csv")
    assert (card["n_images"], card["n_train"], card["n_holdout"], card["seed"]) == (60, 50, 10, 5)
    assert card["class_counts"] == {c: int(counts[c]) for c in HAM10000_CATEGORIES}


def test_same_arguments_write_the_same_bytes_whatever_the_workers(corpus, tmp_path):
    root, _ = corpus
    again = tmp_path / "again"
    generate_public_corpus(again, n_images=60, holdout_images=10, size=32, seed=5, workers=2, progress=False)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(files) == 63                                            # 60 images, manifest, categories, card
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    generate_public_corpus(again, n_images=60, holdout_images=10, size=32, seed=6, workers=1, progress=False)
    assert (again / "images/pub_000007.png").read_bytes() != (root / "images/pub_000007.png").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again"]          # swapped in whole, no staging left


def _corner_to_edge_brightness(image: np.ndarray, k: int = 3) -> float:
    grey = image.astype(float).mean(2)
    m = grey.shape[0] // 2
    corners = [grey[:k, :k], grey[:k, -k:], grey[-k:, :k], grey[-k:, -k:]]
    edges = [grey[:k, m - 1:m + 2], grey[-k:, m - 1:m + 2], grey[m - 1:m + 2, :k], grey[m - 1:m + 2, -k:]]
    return float(np.mean([c.mean() for c in corners]) / np.mean([e.mean() for e in edges]))


def test_capture_has_no_dermoscope_vignette():
    """The clinical toy images darken towards the corners (vignette, sometimes a black rim); the corpus's do not."""
    codes = HAM10000_CATEGORIES
    clinical = np.mean([_corner_to_edge_brightness(render_sample(3, i, codes[i % 7], 32).image) for i in range(60)])
    public = np.mean([_corner_to_edge_brightness(render_public(3, i, codes[i % 7], 32).image) for i in range(60)])
    assert clinical < 0.9 and public > 0.95, (clinical, public)


def _attributes() -> list[dict]:
    return [render_sample(1, i, c, 16).attributes for i, c in enumerate(HAM10000_CATEGORIES)]


def _names(code: str) -> set[str]:
    return {CATEGORY_NAMES[code]} | {a for a, c in ALIASES.items() if c == code and a != code and len(a) > 3}


def test_captions_name_the_diagnosis_in_the_configured_share():
    rng = np.random.default_rng(0)
    attrs = _attributes()
    rows = []
    for i in range(2000):
        code = HAM10000_CATEGORIES[i % 7]
        text, named = caption(rng, code, attrs[i % 7], CaptionRecipe(diagnosis_share=0.3, mislabel_share=0.2))
        rows.append((code, text, named))
    named = [r for r in rows if r[2]]
    assert abs(len(named) / 2000 - 0.3) < 0.035                       # binomial sd 0.010
    wrong = [r for r in named if r[2] != r[0]]
    assert abs(len(wrong) / len(named) - 0.2) < 0.05                  # sd 0.016
    for code, text, label in named:
        assert any(name in text for name in _names(label)), text
    all_names = set().union(*(_names(c) for c in HAM10000_CATEGORIES))
    unnamed = [text for _, text, label in rows if not label]
    assert not [t for t in unnamed if any(f" {n} " in f" {t} " or f" {n}," in t for n in all_names)]
    never = [caption(rng, "mel", attrs[4], CaptionRecipe(0.0, 0.5))[1] for _ in range(200)]
    always = [caption(rng, "mel", attrs[4], CaptionRecipe(1.0, 0.0))[1] for _ in range(200)]
    assert set(never) == {""} and set(always) == {"mel"}


def test_caption_tokenizer_knows_the_clinical_words():
    """A tokenizer trained on corpus captions only (as pretrain does) keeps the words of the paper's class prompts,
    of the toy describer's and of the offline describer's clinical descriptions whole: the captions carry that
    vocabulary sometimes, as web captions do."""
    from components.describe.template_describer import compose
    from components.generator.tokenizer import pieces_per_word, train_tokenizer
    from pipelines.corpus import dermoscopy_glossary

    recipe = CaptionRecipe(0.3, 0.1, 0.15, dermoscopy_glossary())
    codes = HAM10000_CATEGORIES
    attrs = [render_public(1, i, codes[i % 7], 16).attributes for i in range(210)]
    rng = np.random.default_rng(1)
    captions = [caption(rng, codes[i % 7], attrs[i % 210], recipe)[0] for i in range(4000)]
    tokenizer = train_tokenizer(captions, vocab_size=4096)
    templates = [template_prompt(c) for c in codes]
    assert pieces_per_word(tokenizer, templates) == 1.0
    assert all(tokenizer.unk_token_id not in tokenizer(t).input_ids[1:-1] for t in templates)
    toy = [render_sample(42, i, c, 32).description() for i, c in enumerate(codes * 4)]
    described = [compose(c, f"image {i}", 0.1, 0.3) for i, c in enumerate(codes * 4)]
    assert pieces_per_word(tokenizer, toy) < 1.05 and pieces_per_word(tokenizer, described) < 1.05
    assert pieces_per_word(tokenizer, ["zyxwv qqqq"]) > 2       # words never seen split into known pieces
    plain = train_tokenizer([caption(rng, "mel", attrs[4], CaptionRecipe())[0] for _ in range(400)], 4096)
    assert pieces_per_word(plain, described) > 1.3              # without the glossary they would not


def test_bad_arguments_name_the_key():
    with pytest.raises(DataError, match="holdout_images=60 must be between 1 and n_images - 1"):
        generate_public_corpus("unused", n_images=60, holdout_images=60, progress=False)
    with pytest.raises(DataError, match="no appearance for categories"):
        generate_public_corpus("unused", n_images=60, categories=("mel", "scc"), progress=False)
    from components.generator.config import CorpusConfig

    with pytest.raises(ConfigError, match="diagnosis_share"):
        CorpusConfig(diagnosis_share=1.5)
    with pytest.raises(ConfigError, match="corpus.holdout_images"):
        CorpusConfig(n_images=100, holdout_images=100)


def test_uniform_labels_are_equal_shares_in_a_seeded_order():
    labels = uniform_labels(15, ("a", "b", "c"), seed=0)
    assert pd.Series(labels).value_counts().to_dict() == {"a": 5, "b": 5, "c": 5}
    assert labels != uniform_labels(15, ("a", "b", "c"), seed=1)
    assert labels == uniform_labels(15, ("a", "b", "c"), seed=0)
