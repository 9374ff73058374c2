"""Dermoscopic vocabulary per class for the offline describer (ICD-11 terms, no codes).

Each class lists structures seen on dermoscopy, colour sets, symmetry and border phrases, and the ICD-11
entity names the findings are consistent with. Classes outside HAM10000 use GENERIC.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassVocabulary:
    features: tuple[str, ...]
    colours: tuple[str, ...]
    symmetry: tuple[str, ...]
    borders: tuple[str, ...]
    icd11: tuple[str, ...]


VOCABULARY: dict[str, ClassVocabulary] = {
    "mel": ClassVocabulary(
        features=(
            "an atypical pigment network with thickened lines", "irregular dots and globules",
            "irregular streaks at the periphery", "a blue-white veil", "regression structures with peppering",
            "white scar-like regression areas", "eccentric dark blotches", "a negative pigment network",
            "shiny white streaks", "atypical dotted and linear vessels", "pseudopods at the edge",
        ),
        colours=("light brown, dark brown and black", "brown, black and blue-grey",
                 "tan, dark brown, blue-grey and white", "brown, red and blue-grey"),
        symmetry=("asymmetric in both axes", "asymmetric in colour and structure", "markedly asymmetric"),
        borders=("an irregular, ill-defined border", "a notched border and abrupt network cut-off",
                 "poorly circumscribed margins"),
        icd11=("melanoma of skin", "superficial spreading melanoma"),
    ),
    "nv": ClassVocabulary(
        features=(
            "a regular pigment network fading at the periphery", "a homogeneous globular pattern",
            "regularly distributed brown globules", "a peripheral rim of small globules",
            "a reticular-globular pattern", "comma-shaped vessels", "structureless light-brown areas",
            "central hypopigmentation within a regular network", "symmetrically arranged dots",
            "a fine, evenly spaced network",
        ),
        colours=("uniform light brown", "tan to medium brown", "light and medium brown", "light to dark brown"),
        symmetry=("symmetric in colour and structure", "symmetric along both axes", "largely symmetric"),
        borders=("a smooth, well-defined border", "regular margins", "a sharply demarcated round outline"),
        icd11=("melanocytic naevus", "compound melanocytic naevus", "junctional melanocytic naevus"),
    ),
    "bcc": ClassVocabulary(
        features=(
            "arborizing telangiectatic vessels", "large blue-grey ovoid nests", "multiple blue-grey globules",
            "leaf-like areas", "spoke-wheel areas", "a small ulceration with crust",
            "short fine telangiectasias", "shiny white-red structureless areas", "concentric structures",
            "no pigment network",
        ),
        colours=("pink-white and blue-grey", "translucent pink and blue-grey", "red, white and grey-blue",
                 "pearly pink and brown-grey"),
        symmetry=("asymmetric", "mildly asymmetric", "compact but irregular"),
        borders=("a rolled, pearly border", "a sharply circumscribed edge", "lobulated, well-defined margins"),
        icd11=("basal cell carcinoma of skin", "nodular basal cell carcinoma", "superficial basal cell carcinoma"),
    ),
    "bkl": ClassVocabulary(
        features=(
            "multiple milia-like cysts", "comedo-like openings", "fissures and ridges in a cerebriform pattern",
            "fingerprint-like structures", "hairpin vessels with a whitish halo", "fat fingers",
            "a network-like structure", "granular grey-brown peppering", "a moth-eaten edge",
            "sharp demarcation from the surrounding skin",
        ),
        colours=("light to dark brown", "yellow-brown and grey", "tan and dark brown", "waxy brown"),
        symmetry=("roughly symmetric", "irregular but sharply demarcated", "oval and slightly asymmetric"),
        borders=("a sharply demarcated, stuck-on border", "a scalloped edge", "crisp, well-defined margins"),
        icd11=("seborrhoeic keratosis", "solar lentigo", "lichenoid keratosis"),
    ),
    "df": ClassVocabulary(
        features=(
            "a central white scar-like patch", "a delicate peripheral pigment network",
            "ring-like globules at the periphery", "shiny white structures", "a central white network",
            "fine dotted vessels in the centre", "a light-brown rim of fine reticulation",
            "a homogeneous brown periphery",
        ),
        colours=("light brown and white", "pink-brown and white", "tan and ivory", "brown and pinkish white"),
        symmetry=("symmetric", "round and symmetric", "slightly asymmetric"),
        borders=("a border fading into the surrounding skin", "well-circumscribed margins",
                 "a regular, gradually fading edge"),
        icd11=("dermatofibroma", "benign fibrous histiocytoma of skin"),
    ),
    "vasc": ClassVocabulary(
        features=(
            "well-demarcated red-blue lacunae", "red to maroon lagoons", "whitish septa between lacunae",
            "dark-red to black thrombosed lacunae", "homogeneous red-purple areas", "no pigment network",
            "a peripheral erythematous rim", "a bluish-whitish veil over dark lacunae",
        ),
        colours=("red and purple", "cherry red", "dark red to blue-black", "red-blue and whitish"),
        symmetry=("round and symmetric", "mostly symmetric", "oval and symmetric"),
        borders=("sharply demarcated borders", "a well-defined, smooth edge", "crisp margins"),
        icd11=("cherry haemangioma", "angiokeratoma", "haemangioma of skin"),
    ),
    "akiec": ClassVocabulary(
        features=(
            "a strawberry pattern around follicular openings", "white-yellowish surface scale",
            "targetoid hair follicles", "white rosettes", "fine wavy vessels around follicles",
            "clustered glomerular vessels", "linear brown-grey dots", "a red pseudo-network",
            "surface hyperkeratosis", "keratin plugs in follicular openings",
        ),
        colours=("pink-red and white", "red and yellow-white", "erythematous pink and grey-brown",
                 "light brown and pink"),
        symmetry=("flat and irregular", "asymmetric", "ill-shaped"),
        borders=("poorly defined margins", "an indistinct border blending into sun-damaged skin",
                 "irregular, ill-defined edges"),
        icd11=("actinic keratosis", "squamous cell carcinoma in situ of skin"),
    ),
}

GENERIC = ClassVocabulary(
    features=(
        "scattered dots and globules", "structureless homogeneous areas", "a faint pigment network",
        "dotted vessels", "whitish structureless zones", "linear irregular vessels", "surface scale",
        "brown-grey clods",
    ),
    colours=("light and dark brown", "brown and pink", "pink and white", "brown and grey"),
    symmetry=("symmetric", "mildly asymmetric", "asymmetric"),
    borders=("a well-defined border", "partly ill-defined margins", "a regular edge"),
    icd11=(),
)

SIZE_WORDS = ((0.05, "small"), (0.2, "medium-sized"), (1.01, "large"))
CONTRAST_WORDS = ((0.12, "low"), (0.3, "moderate"), (10.0, "high"))
