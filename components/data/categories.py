"""Class codes and the mapping of common diagnosis names onto them."""
from __future__ import annotations

import re

from components.errors import DataError

HAM10000_CATEGORIES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

CATEGORY_NAMES: dict[str, str] = {
    "akiec": "actinic keratosis",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}

# Lower-cased, whitespace/underscore/hyphen-normalised names → class code.
ALIASES: dict[str, str] = {
    "akiec": "akiec", "actinic keratosis": "akiec", "actinic keratoses": "akiec",
    "intraepithelial carcinoma": "akiec", "bowen's disease": "akiec", "bowens disease": "akiec",
    "squamous cell carcinoma in situ": "akiec", "actinic keratoses and intraepithelial carcinoma": "akiec",
    "bcc": "bcc", "basal cell carcinoma": "bcc",
    "bkl": "bkl", "benign keratosis": "bkl", "benign keratosis-like lesions": "bkl",
    "benign keratosis like lesions": "bkl", "seborrheic keratosis": "bkl", "seborrhoeic keratosis": "bkl",
    "pigmented benign keratosis": "bkl", "solar lentigo": "bkl", "lichen planus-like keratosis": "bkl",
    "lichen planus like keratosis": "bkl",
    "df": "df", "dermatofibroma": "df",
    "mel": "mel", "melanoma": "mel", "malignant melanoma": "mel",
    "nv": "nv", "nevus": "nv", "naevus": "nv", "nevi": "nv", "melanocytic nevus": "nv",
    "melanocytic nevi": "nv", "melanocytic naevus": "nv",
    "vasc": "vasc", "vascular lesion": "vasc", "vascular lesions": "vasc", "angioma": "vasc",
    "hemangioma": "vasc", "haemangioma": "vasc", "angiokeratoma": "vasc", "pyogenic granuloma": "vasc",
}


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", " ", str(name).strip().lower())


def normalise_category(name: str, allowed: tuple[str, ...] | list[str] = HAM10000_CATEGORIES,
                       where: str = "") -> str:
    """Map a diagnosis name (code or common name) to a configured class code, or raise DataError."""
    key = _key(name)
    allowed_set = set(allowed)
    if key in allowed_set:
        return key
    code = ALIASES.get(key) or ALIASES.get(key.replace("-", " "))
    if code is not None and code in allowed_set:
        return code
    prefix = f"{where}: " if where else ""
    hint = f" (it maps to '{code}', which is not in the configured categories)" if code else ""
    raise DataError(
        f"{prefix}unknown category {name!r}{hint}; expected one of {sorted(allowed_set)} or a common name "
        f"such as 'melanoma' or 'nevus'. Fix the label or add the class to `categories` in params.yaml."
    )


def display_name(code: str) -> str:
    """Human-readable name used in prompts ('mel' → 'melanoma'); unknown codes are returned as-is."""
    return CATEGORY_NAMES.get(code, code)
