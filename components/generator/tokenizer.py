"""An offline CLIP tokenizer (no download needed): a byte-level BPE trained on the texts it is given.

The `tiny` base trains it on the public corpus captions (`pretrain`), as CLIP's tokenizer was trained on web
text; `build_project_tokenizer` (the preset's default for untrained models) uses the project's own vocabulary:
the paper's prompt template for every class name and alias and the offline describer's dermoscopic terms. CLIP's
pre-tokenisation and `</w>` end-of-word suffix are used and every byte is covered, so no text has unknown
tokens: words frequent in the training texts become single tokens, rarer ones split into known pieces
(`pieces_per_word` measures it). It is saved as an ordinary CLIPTokenizer folder: vocab.json, merges.txt,
tokenizer.json and tokenizer_config.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from components import atomic
from components.data.categories import ALIASES, CATEGORY_NAMES
from components.data.prompts import description_prefix

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
# CLIP's pre-tokenisation pattern (same as transformers' CLIPTokenizer).
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def project_corpus(extra_texts: Iterable[str] = ()) -> list[str]:
    """Texts the tokenizer is trained on: prompt templates, class names, dermoscopic terms, extra texts."""
    from components.describe.vocabulary import VOCABULARY

    names = sorted(set(CATEGORY_NAMES) | set(CATEGORY_NAMES.values()) | set(ALIASES))
    texts = [description_prefix(name) for name in names]
    for vocab in VOCABULARY.values():
        for phrases in (vocab.features, vocab.colours, vocab.symmetry, vocab.borders, vocab.icd11):
            texts.extend(phrases)
    texts.extend(str(t) for t in extra_texts if str(t).strip())
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """Train a CLIP-compatible byte-level BPE on `texts` and wrap it as a CLIPTokenizer."""
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=[BOS, EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>")
    bpe.train_from_iterator(list(texts), trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    # Every byte must also exist as a word-final token, or an unseen final character would be unknown.
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        for token in (ch, ch + "</w>"):
            if token not in vocab:
                vocab[token] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = CLIPTokenizer(vocab=vocab, merges=merges, bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS)
    tok.model_max_length = max_length
    return tok


def build_project_tokenizer(extra_texts: Iterable[str] = (), vocab_size: int = 4096) -> CLIPTokenizer:
    """The project tokenizer: trained on project_corpus(extra_texts)."""
    return train_tokenizer(project_corpus(extra_texts), vocab_size=vocab_size)


def save_tokenizer(tokenizer: CLIPTokenizer, out_dir: str | Path) -> Path:
    """Save as a CLIPTokenizer folder with vocab.json and merges.txt beside tokenizer.json."""
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    atomic.write_text(out / "vocab.json", json.dumps(model["vocab"], ensure_ascii=False))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    atomic.write_text(out / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    return out


def pieces_per_word(tokenizer: CLIPTokenizer, texts: Iterable[str]) -> float:
    """Mean number of tokens per word (run of letters) of `texts`; 1.0: every word is a single token."""
    words = [w for t in texts for w in re.findall(r"[^\W\d_]+", str(t))]
    if not words:
        return 0.0
    return sum(len(tokenizer.tokenize(w)) for w in words) / len(words)
