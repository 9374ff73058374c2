"""Typed config of the `prepare` section of params.yaml, and the options every importer reads."""
from __future__ import annotations

from dataclasses import dataclass

from components.data.categories import HAM10000_CATEGORIES
from components.data.resize import RESIZE_MODES
from components.errors import ConfigError

MIN_SIZE = 16
POLICIES: dict[str, tuple[str, ...]] = {
    "on_bad_image": ("exclude", "error"),
    "on_unlabelled": ("exclude", "error"),
    "on_missing_image": ("skip", "error"),
}
# Far above any dermoscopy photo (ISIC archive originals reach ~30 MP, HAM10000 is 0.27 MP), far below what
# would exhaust memory when a header lies (a 20000 x 20000 PNG of a few bytes): PIL's own bomb check is off.
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class PrepareConfig:
    """Where the data comes from and how the real dataset folder is built."""
    source: str = "toy"             # toy | isic_gpt | isic_archive | ham10000
    path: str = ""                  # input folder for the importers (unused for toy)
    out_dir: str = "data/real"
    categories: tuple[str, ...] = HAM10000_CATEGORIES
    size: int = 128                 # images resized to size x size (LANCZOS), masks with nearest
    test_fraction: float = 0.2
    val_fraction: float = 0.15      # validation split (model selection); the generator never sees it
    seed: int = 42
    toy_images: int = 2000          # toy only
    require_masks: bool = True      # reject images without masks
    resize: str = "pad"             # pad | crop | squash (components/data/resize.py)
    on_bad_image: str = "exclude"   # exclude (listed in excluded.csv) | error
    on_unlabelled: str = "exclude"  # exclude | error
    on_missing_image: str = "skip"  # metadata rows without an image file: skip (counted) | error
    require_all_categories: bool = False  # true: a configured class without images stops the import
    mask_threshold: int = 128       # non-binary masks: lesion where value >= threshold
    max_pixels: int = DEFAULT_MAX_PIXELS
    include: tuple[str, ...] = ()   # globs (relative to path) of the files to read; empty: all
    exclude: tuple[str, ...] = ()   # globs of files or folders to leave out

    def __post_init__(self) -> None:
        check_settings(self)
        check_source_categories(self.source, self.categories)


@dataclass(frozen=True)
class ImportOptions:
    """What every importer needs to know besides the input folder; invalid values raise ConfigError."""
    size: int = 128
    categories: tuple[str, ...] = HAM10000_CATEGORIES
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    seed: int = 42
    require_masks: bool = True
    toy_images: int = 2000
    workers: int | None = None
    progress: bool = True
    resize: str = "pad"
    on_bad_image: str = "exclude"
    on_unlabelled: str = "exclude"
    on_missing_image: str = "skip"
    require_all_categories: bool = False
    mask_threshold: int = 128
    max_pixels: int = DEFAULT_MAX_PIXELS
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        check_settings(self)

    @classmethod
    def from_config(cls, cfg: PrepareConfig, **overrides) -> ImportOptions:
        """The options of a `prepare` config (workers and progress left at their defaults)."""
        keys = set(cls.__dataclass_fields__) & set(PrepareConfig.__dataclass_fields__)
        return cls(**{k: getattr(cfg, k) for k in keys}, **overrides)


def check_settings(cfg: PrepareConfig | ImportOptions) -> None:
    """Values the types allow but an import cannot use (size 0, a class twice, an unknown policy): ConfigError."""
    if isinstance(cfg.size, bool) or not isinstance(cfg.size, int) or cfg.size < MIN_SIZE:
        raise ConfigError(f"prepare.size={cfg.size!r}: the image side must be an integer >= {MIN_SIZE}, "
                          f"e.g. size=128")
    if not cfg.categories:
        raise ConfigError("prepare.categories is empty; list the classes to import, e.g. [mel, nv]")
    seen: set[str] = set()
    for c in cfg.categories:
        if c in seen:
            raise ConfigError(f"prepare.categories: {c!r} is listed twice ({list(cfg.categories)}); "
                              f"list each class once")
        seen.add(c)
    for key, allowed in (*POLICIES.items(), ("resize", RESIZE_MODES)):
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"prepare.{key}={getattr(cfg, key)!r}: expected one of {list(allowed)}")
    if not (0.0 <= cfg.val_fraction < 1.0 and 0.0 <= cfg.test_fraction < 1.0
            and cfg.val_fraction + cfg.test_fraction < 1.0):
        raise ConfigError(f"prepare.test_fraction={cfg.test_fraction}, val_fraction={cfg.val_fraction}: each in "
                          f"[0, 1) and together below 1 (the rest is the training split), e.g. 0.2 and 0.15")
    if not 1 <= cfg.mask_threshold <= 255:
        raise ConfigError(f"prepare.mask_threshold={cfg.mask_threshold}: expected 1..255 (128 splits 0..255 "
                          f"masks in the middle)")
    if cfg.max_pixels < 1:
        raise ConfigError(f"prepare.max_pixels={cfg.max_pixels}: expected a positive pixel count, "
                          f"e.g. {DEFAULT_MAX_PIXELS}")


# Sources whose labels map only onto these codes (dx codes, ISIC diagnosis names through categories.ALIASES, toy
# styles): another configured class could never receive an image. isic_gpt class folders may name any class.
FIXED_LABEL_SOURCES = ("toy", "ham10000", "isic_archive")


def check_source_categories(source: str, categories: tuple[str, ...]) -> None:
    """A class the source cannot contain (ham10000 dx codes, toy styles) is a typo: ConfigError naming it."""
    unknown = [c for c in categories if c not in HAM10000_CATEGORIES]
    if source in FIXED_LABEL_SOURCES and unknown:
        raise ConfigError(f"prepare.categories: unknown class(es) {unknown} for source {source!r}, whose labels "
                          f"are {list(HAM10000_CATEGORIES)}; fix the spelling or remove them")
