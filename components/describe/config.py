"""Typed config of the `describe` stage (params.yaml section `describe`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from components.errors import ConfigError

# The paper's prompt; {category} is rendered with the display name ('mel' -> 'melanoma').
PAPER_PROMPT = (
    "Analyze this {category} dermatology image. Describe in medical terms and give a sentence. "
    "Use ICD-11 terminology and begin with 'a dermoscopic lesion photo of {category} for skin cancer "
    "diagnosis,...'"
)

BACKENDS = ("auto", "openai", "template")
IMAGE_DETAILS = ("auto", "low", "high")


@dataclass
class DescribeConfig:
    """Where to read and write, which describer, and the LLM's limits (retries, budget, answer checks).

    The API key is never part of the config: it is read from OPENAI_API_KEY only.
    """
    data_dir: str = "data/real"
    out_dir: str = "data/descriptions"
    metrics_file: str = "metrics/describe.json"
    backend: str = "auto"            # auto: openai when OPENAI_API_KEY or a base URL is set, else template
    model: str = "gpt-4o-mini"
    base_url: str = ""               # empty: OPENAI_BASE_URL, else the OpenAI API
    prompt: str = PAPER_PROMPT
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    max_images: int = 0              # 0: every image of the selected splits
    max_concurrency: int = 4
    max_retries: int = 4             # extra attempts on 429 / 5xx / timeouts / connection errors
    backoff_s: float = 1.0           # first backoff; doubles per attempt, with jitter
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0          # per attempt (vision answers take seconds); a hanging server costs ~5 x this
    # Circuit breaker: after this many failed attempts in a row (timeouts, connection errors, 5xx, unparsable
    # bodies, requests given up on a 4xx; a retried 429 counts nothing, any answer resets) no further request
    # is made and the remaining images get the template (reason circuit_open). Each timed-out attempt counts,
    # so a hanging server stops the run after about ceil(N / max_concurrency) x timeout_s plus backoff. 0: off.
    max_consecutive_failures: int = 5
    # Exit non-zero (answers received stay cached) when more than this share of the images asked of the LLM
    # (not cached, not skipped by the budget) fell back to the template. 1.0: never.
    max_fallback_share: float = 0.1
    invalid_retries: int = 1         # re-asks after an answer that fails the checks, then the fallback
    max_output_tokens: int = 300     # 0: let the server decide
    temperature: float = 0.2
    image_detail: str = "auto"
    max_image_side: int = 512        # the image is downscaled to this side before upload; 0 keeps it
    budget_usd: float | None = 2.0   # estimated spend cap per run; null: no cap
    price_input_usd_per_mtok: float = 0.15
    price_output_usd_per_mtok: float = 0.60
    min_chars: int = 100
    max_chars: int = 500
    template_seed: int = 0           # salt of the offline describer's per-image choices
    examples: int = 3                # examples per path in the MLflow text artifact

    def __post_init__(self) -> None:
        where = "params.yaml:describe"
        if self.backend not in BACKENDS:
            raise ConfigError(f"{where}.backend: {self.backend!r} is not one of {list(BACKENDS)}")
        if self.image_detail not in IMAGE_DETAILS:
            raise ConfigError(f"{where}.image_detail: {self.image_detail!r} is not one of {list(IMAGE_DETAILS)}")
        for name in ("max_concurrency",):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("max_retries", "invalid_retries", "max_images", "max_output_tokens", "max_image_side",
                     "examples", "max_consecutive_failures"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("backoff_s", "backoff_max_s", "price_input_usd_per_mtok", "price_output_usd_per_mtok"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.max_fallback_share <= 1:
            raise ConfigError(f"{where}.max_fallback_share: must be between 0 and 1, got {self.max_fallback_share}")
        if self.timeout_s <= 0:
            raise ConfigError(f"{where}.timeout_s: must be > 0 seconds, got {self.timeout_s}")
        if self.budget_usd is not None and self.budget_usd < 0:
            raise ConfigError(f"{where}.budget_usd: must be >= 0 (or null for no cap), got {self.budget_usd}")
        if not 0 < self.min_chars < self.max_chars:
            raise ConfigError(f"{where}: need 0 < min_chars < max_chars, got {self.min_chars} and {self.max_chars}")
        if not self.splits:
            raise ConfigError(f"{where}.splits: list at least one split, e.g. [train, test]")
        try:
            self.prompt.format(category="melanoma")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{where}.prompt: cannot be rendered ({exc!r}); the only placeholder is {{category}}, "
                f"write literal braces as {{{{ and }}}}"
            ) from None
