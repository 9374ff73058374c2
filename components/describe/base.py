"""What every describer takes and returns: items to describe, descriptions, and run counters."""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Protocol, Sequence

from PIL import Image, UnidentifiedImageError

from components.data.categories import display_name
from components.errors import DataError, SkinDualGenError

Progress = Callable[[int], object]


@dataclass(frozen=True)
class DescribeItem:
    """One image to describe: its id, class code and files (mask optional)."""
    image_id: str
    category: str
    image_path: Path
    mask_path: Path | None = None

    def read_bytes(self) -> bytes:
        try:
            return Path(self.image_path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{self.image_path}: image file not found (image_id={self.image_id}); fix image_path "
                            f"in the manifest or restore the file") from None


@dataclass(frozen=True)
class Description:
    """A description and how it was obtained.

    status: 'llm' (fresh answer), 'cached' (answer from the cache), 'fallback' (template used in place of the
    LLM; `reason` says why: budget | invalid | error | circuit_open) or 'template' (offline backend).
    """
    image_id: str
    description: str
    describer: str
    model: str
    status: str
    reason: str = ""


# Fallback reason -> DescribeStats counter.
FALLBACK_COUNTERS = {"budget": "budget_skipped", "invalid": "invalid", "error": "errors",
                     "circuit_open": "circuit_open"}


class DescribeError(SkinDualGenError):
    """The describe run is too degraded to be used (too many images fell back to the template)."""


@dataclass
class DescribeStats:
    """Counters of one describe run (thread-safe increments through `add`)."""
    images: int = 0
    llm: int = 0
    cached: int = 0
    template: int = 0
    fallback: int = 0
    invalid: int = 0          # fallbacks after answers that failed the checks
    errors: int = 0           # fallbacks after errors that retries did not cure
    budget_skipped: int = 0   # fallbacks because the budget cap was reached
    circuit_open: int = 0     # fallbacks not asked (further) because the circuit breaker was open
    invalid_answers: int = 0  # every answer that failed the checks, retried or not
    requests: int = 0         # HTTP attempts made
    retries: int = 0          # attempts repeated after 429 / 5xx / timeouts / connection errors
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    budget_exhausted: bool = False
    circuit_breaker_open: bool = False
    circuit_opened_at_request: int = 0  # attempts made when the breaker opened (0: it did not)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)

    def count(self, result: Description) -> None:
        """Count one finished image by its status and fallback reason."""
        deltas = {"images": 1, result.status: 1}
        if result.status == "fallback":
            deltas[FALLBACK_COUNTERS[result.reason]] = 1
        self.add(**deltas)

    @property
    def asked(self) -> int:
        """Images that needed the LLM (not cached, not skipped by the budget cap)."""
        return self.llm + self.invalid + self.errors + self.circuit_open

    @property
    def failed(self) -> int:
        """Images among `asked` that got the template instead of an answer."""
        return self.invalid + self.errors + self.circuit_open

    def to_metrics(self) -> dict[str, float | int | bool]:
        with self._lock:
            out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        out["cost_usd"] = round(float(out["cost_usd"]), 8)
        return out


class Describer(Protocol):
    """Turns items into descriptions, in item order, and counts what happened."""
    name: str

    def describe(self, items: Sequence[DescribeItem], progress: Progress | None = None) -> list[Description]: ...

    @property
    def stats(self) -> DescribeStats: ...


def open_image(data: bytes, where: str) -> Image.Image:
    """Open encoded image bytes; a file that does not decode raises DataError naming it."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{where}: cannot decode image ({exc}); the file is corrupt or truncated, replace it") from None




def fallback_problem(stats: DescribeStats, max_share: float, note: str = "") -> str | None:
    """One line saying why the run is unusable when more than `max_share` of the asked images fell back.

    Budget fallbacks are the configured spending cap at work and do not count; images not asked because the
    circuit breaker was open do. `note` (e.g. why the breaker opened) is appended. None when the run is fine.
    """
    asked, failed = stats.asked, stats.failed
    if not asked or failed / asked <= max_share:
        return None
    reasons = ", ".join(f"{getattr(stats, counter)} {reason}" for reason, counter in FALLBACK_COUNTERS.items()
                        if reason != "budget" and getattr(stats, counter))
    return (f"{failed} of {asked} image(s) asked of the LLM fell back to the template ({reasons}; "
            f"{failed / asked:.0%} > describe.max_fallback_share={max_share:g}){'; ' + note if note else ''}; "
            f"the {stats.llm} answer(s) received are cached, so a rerun asks only for the rest: fix the server "
            f"(OPENAI_BASE_URL / describe.base_url, OPENAI_API_KEY) and rerun, or accept the template with "
            f"backend: template or a higher describe.max_fallback_share")


def render_prompt(template: str, category: str) -> str:
    """The prompt for one class code, the category rendered with its display name."""
    return template.format(category=display_name(category))
