"""Checks on a description: the paper's prefix naming the right category, and length bounds."""
from __future__ import annotations

import re
from dataclasses import dataclass

from components.data.categories import display_name, normalise_category
from components.data.prompts import class_prefix
from components.errors import DataError

_PREFIX_RE = re.compile(r"^a dermoscopic lesion photo of (?P<name>.+?) for skin cancer diagnosis\b", re.IGNORECASE)
_WRAPPERS = "\"'`“”‘’"


@dataclass(frozen=True)
class Check:
    """Outcome of checking one answer: the canonical text when ok, else the reason."""
    ok: bool
    text: str
    reason: str = ""


def clean(answer: str) -> str:
    """Strip quotes, markdown emphasis and line breaks an LLM wraps around a one-sentence answer."""
    text = answer.replace("**", "").replace("__", "")
    text = re.sub(r"\s+", " ", text).strip()
    while len(text) >= 2 and text[0] in _WRAPPERS and text[-1] in _WRAPPERS:
        text = text[1:-1].strip()
    return text.lstrip(_WRAPPERS).strip()


def check_description(answer: str | None, category: str, min_chars: int, max_chars: int) -> Check:
    """Check an answer for class code `category`; rewrite an accepted prefix into the canonical one.

    Accepted: the prefix in any letter case naming the category by display name, code or a common alias,
    followed by the description proper (a leading ',...' echoed from the prompt is dropped).
    """
    if answer is None or not str(answer).strip():
        return Check(False, "", "empty answer")
    text = clean(str(answer))
    match = _PREFIX_RE.match(text)
    if match is None:
        return Check(False, text, "missing the prefix 'a dermoscopic lesion photo of ... for skin cancer diagnosis,'")
    named = match.group("name").strip()
    try:
        named_code = normalise_category(named, allowed=(category,))
    except DataError:
        named_code = None
    if named_code != category:
        return Check(False, text, f"names {named!r} instead of {display_name(category)!r}")
    rest = text[match.end():].lstrip(" ,.;:…-").strip()
    if not rest:
        return Check(False, text, "nothing after the prefix")
    canonical = class_prefix(category) + rest
    if len(canonical) < min_chars:
        return Check(False, canonical, f"too short ({len(canonical)} < {min_chars} characters)")
    if len(canonical) > max_chars:
        return Check(False, canonical, f"too long ({len(canonical)} > {max_chars} characters)")
    return Check(True, canonical)
