"""Prompt templates: the paper's class prompt and the prefix every description starts with."""
from __future__ import annotations

from components.data.categories import display_name

DESCRIPTION_PREFIX = "a dermoscopic lesion photo of {category} for skin cancer diagnosis, "


def description_prefix(category_name: str) -> str:
    """The prefix every description starts with, for a class *name* ('melanoma')."""
    return DESCRIPTION_PREFIX.format(category=category_name)


def class_prefix(category: str) -> str:
    """The description prefix for a class *code* ('mel' -> 'a dermoscopic lesion photo of melanoma ..., ')."""
    return description_prefix(display_name(category))


def template_prompt(category: str) -> str:
    """The paper's class prompt for a class code: 'a dermoscopic lesion photo of melanoma for skin cancer diagnosis'."""
    return class_prefix(category).rstrip(", ")
