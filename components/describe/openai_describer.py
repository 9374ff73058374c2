"""Vision-LLM describer over the chat-completions API (OpenAI or any compatible server).

Per image: cache lookup -> budget check -> request (PNG as a base64 data URL) with retries and exponential
backoff plus jitter on 429 / 5xx / timeouts / connection errors -> known secrets redacted from the answer ->
answer checks (one re-ask by default) -> cache. A circuit breaker (breaker.py) stops all requests after
`max_consecutive_failures` failed attempts in a row. Whatever cannot be answered within the rules gets the
offline description and is counted.
"""
from __future__ import annotations

import base64
import io
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import openai
from PIL import Image

from components.describe.base import DescribeItem, DescribeStats, Description, Progress, open_image, render_prompt
from components.describe.breaker import CircuitBreaker
from components.describe.budget import Budget
from components.describe.cache import DescriptionCache, cache_key
from components.describe.config import DescribeConfig
from components.describe.secrets import Secrets, endpoint_label
from components.describe.template_describer import TemplateDescriber
from components.describe.validation import check_description
from components.errors import ConfigError
from components.hashing import bytes_digest

log = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Sent when only a base URL is configured: local OpenAI-compatible servers often need no key, but the client
# refuses to start without one.
NO_KEY = "no-key"
_RETRY_STATUS = {408, 409, 429}


def png_data_url(image_bytes: bytes, max_side: int = 0, where: str = "image") -> str:
    """`data:image/png;base64,...` of the image, re-encoded as PNG and downscaled to `max_side` if needed."""
    data = image_bytes
    with open_image(image_bytes, where) as im:
        too_big = max_side > 0 and max(im.size) > max_side
        if too_big or not image_bytes.startswith(PNG_MAGIC):
            im = im.convert("RGB")
            if too_big:
                im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@dataclass
class _Answer:
    """What one request sequence (with its transient retries) produced."""
    text: str | None = None
    outcome: str = "answer"     # answer | malformed | error | budget | circuit_open
    detail: str = ""


class OpenAIDescriber:
    """Describes images with a vision model; falls back to `fallback` per image, counting why."""
    name = "openai"

    def __init__(self, cfg: DescribeConfig, cache: DescriptionCache, fallback: TemplateDescriber,
                 api_key: str | None, base_url: str | None = None):
        self.cfg = cfg
        self.model = cfg.model
        self.cache = cache
        self.fallback = fallback
        self.secrets = Secrets(api_key, base_url)
        self.endpoint = endpoint_label(base_url)
        self.breaker = CircuitBreaker(cfg.max_consecutive_failures)
        self.client = openai.OpenAI(api_key=api_key or NO_KEY, base_url=base_url or None,
                                    timeout=cfg.timeout_s, max_retries=0)
        self.budget = Budget(cfg.budget_usd, cfg.price_input_usd_per_mtok, cfg.price_output_usd_per_mtok)
        self._stats = DescribeStats()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._fatal_lock = threading.Lock()
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    @property
    def stats(self) -> DescribeStats:
        self._stats.budget_exhausted = self.budget.exhausted
        self._stats.cost_usd = self.budget.spent
        self._stats.circuit_breaker_open = self.breaker.is_open
        self._stats.circuit_opened_at_request = self.breaker.opened_at_request
        return self._stats

    def health_note(self) -> str:
        """Why requests stopped, when the circuit breaker opened; '' otherwise."""
        if not self.breaker.is_open:
            return ""
        return (f"the circuit breaker opened after {self.breaker.threshold} failed attempt(s) in a row at "
                f"{self.endpoint} (last: {self.breaker.last_failure}; describe.max_consecutive_failures)")

    # -- public -----------------------------------------------------------------------------------------
    def describe(self, items: Sequence[DescribeItem], progress: Progress | None = None) -> list[Description]:
        """Descriptions in item order; up to `max_concurrency` requests at a time."""
        results: list[Description | None] = [None] * len(items)

        def work(index: int) -> None:
            if self._stop.is_set():
                return
            try:
                result = self._describe_item(items[index])
            except Exception as exc:  # stop the pool at the first error instead of finishing every image
                with self._fatal_lock:
                    if self._fatal is None:
                        self._fatal = exc.error if isinstance(exc, _Fatal) else exc
                self._stop.set()
                return
            results[index] = result
            self._stats.count(result)
            if progress:
                progress(1)

        with ThreadPoolExecutor(max_workers=self.cfg.max_concurrency, thread_name_prefix="describe") as pool:
            for future in [pool.submit(work, i) for i in range(len(items))]:
                future.result()
        if self._fatal is not None:
            raise self._fatal
        return [r for r in results if r is not None]

    # -- one image --------------------------------------------------------------------------------------
    def _describe_item(self, item: DescribeItem) -> Description:
        image_bytes = item.read_bytes()
        prompt = render_prompt(self.cfg.prompt, item.category)
        key = cache_key(bytes_digest(image_bytes), self.model, prompt)
        hit = self.cache.get(key)
        if hit is not None:
            check = check_description(hit["description"], item.category, self.cfg.min_chars, self.cfg.max_chars)
            if check.ok:  # redacted again: a cache written before redaction existed may hold a secret
                return Description(item.image_id, self.secrets.redact(check.text), self.name, self.model, "cached")
        if self.budget.exhausted:
            return self._fallback(item, image_bytes, "budget")
        if self.breaker.is_open:
            return self._fallback(item, image_bytes, "circuit_open")
        messages = [{"role": "user", "content": [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": png_data_url(image_bytes, self.cfg.max_image_side,
                                                                    where=str(item.image_path)),
                                                "detail": self.cfg.image_detail}},
        ]}]
        for ask in range(self.cfg.invalid_retries + 1):
            answer = self._request(messages, item.image_id)
            if answer.outcome in ("budget", "error", "circuit_open"):
                return self._fallback(item, image_bytes, answer.outcome)
            if answer.outcome == "answer":
                text = self.secrets.redact(answer.text)  # a server may echo the key: never store it
                if text != answer.text:
                    log.warning("image %s: the answer contained a known secret; stored redacted", item.image_id)
                check = check_description(text, item.category, self.cfg.min_chars, self.cfg.max_chars)
                detail = check.reason
            else:
                check, detail = None, answer.detail
            if check is not None and check.ok:
                self.cache.put(key, check.text, image_sha256=bytes_digest(image_bytes), model=self.model,
                               prompt_sha256=bytes_digest(prompt.encode()), image_id=item.image_id)
                return Description(item.image_id, check.text, self.name, self.model, "llm")
            self._stats.add(invalid_answers=1)
            log.info("image %s: invalid answer (%s), ask %d of %d", item.image_id, self.secrets.redact(detail),
                     ask + 1, self.cfg.invalid_retries + 1)
        return self._fallback(item, image_bytes, "invalid")

    def _fallback(self, item: DescribeItem, image_bytes: bytes, reason: str) -> Description:
        text = self.fallback.describe_one(item, image_bytes)
        return Description(item.image_id, text, self.fallback.name, self.fallback.model, "fallback", reason)

    # -- one request, with transient retries ------------------------------------------------------------
    def _request(self, messages: list[dict[str, Any]], image_id: str) -> _Answer:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.cfg.temperature}
        if self.cfg.max_output_tokens:
            kwargs["max_tokens"] = self.cfg.max_output_tokens
        for attempt in range(self.cfg.max_retries + 1):
            if self.breaker.is_open:
                return _Answer(outcome="circuit_open")
            reservation = self.budget.reserve()
            if reservation is None:
                return _Answer(outcome="budget")
            if self._stop.is_set():  # another worker hit a fatal error while this one waited for budget
                self.budget.settle(reservation, None)
                return _Answer(outcome="error", detail="run stopped")
            if self.breaker.is_open:  # opened while this one waited for budget
                self.budget.settle(reservation, None)
                return _Answer(outcome="circuit_open")
            cost = None
            self._stats.add(requests=1, retries=1 if attempt else 0)
            try:
                response = self.client.chat.completions.create(**kwargs)
                cost = self._charge(response)
                answer = self._parse(response)
                if answer.outcome == "answer":
                    self.breaker.success()
                else:
                    self._failed(answer.detail, image_id)
                return answer
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise _Fatal(ConfigError(
                    f"{self.endpoint}: {type(exc).__name__} ({self.secrets.redact(str(exc))}); check "
                    f"OPENAI_API_KEY, OPENAI_BASE_URL / describe.base_url and describe.model={self.model!r}"
                )) from None
            except (openai.APIConnectionError, openai.APIStatusError) as exc:  # timeouts are connection errors
                status = getattr(exc, "status_code", None)
                transient = status is None or status in _RETRY_STATUS or status >= 500
                detail = self.secrets.redact(f"{type(exc).__name__}{f' {status}' if status else ''}: {exc}")
                giving_up = not transient or attempt == self.cfg.max_retries
                if status != 429 or giving_up:  # a retried 429 is pacing, not failing
                    self._failed(detail, image_id)
                if giving_up:
                    log.warning("image %s: giving up after %d attempt(s): %s", image_id, attempt + 1, detail)
                    return _Answer(outcome="error", detail=detail)
                self.budget.settle(reservation, None)
                reservation = None
                if self.breaker.is_open:
                    return _Answer(outcome="circuit_open", detail=detail)
                delay = self._backoff(attempt, exc)
                log.info("image %s: %s; retry %d/%d in %.2fs", image_id, detail, attempt + 1,
                         self.cfg.max_retries, delay)
                if self.breaker.wait(delay):  # woken early when another worker opens the breaker
                    return _Answer(outcome="circuit_open", detail=detail)
            except (ValueError, openai.APIResponseValidationError) as exc:  # body is not chat-completions JSON
                detail = f"malformed response ({type(exc).__name__})"
                self._failed(detail, image_id)
                return _Answer(outcome="malformed", detail=detail)
            finally:
                if reservation is not None:
                    self.budget.settle(reservation, cost)
        raise AssertionError("unreachable: the last attempt returns")

    def _failed(self, detail: str, image_id: str) -> None:
        """Count a failed attempt; the one that opens the breaker says so, once."""
        if self.breaker.failure(detail, self._stats.requests):
            log.warning("circuit breaker open: %d failed attempt(s) in a row at %s (image %s, last: %s); no "
                        "further requests, the remaining images get the template (reason circuit_open)",
                        self.breaker.threshold, self.endpoint, image_id, detail)

    def _charge(self, response: Any) -> float | None:
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            return None
        self._stats.add(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return self.budget.cost(prompt_tokens, completion_tokens)

    @staticmethod
    def _parse(response: Any) -> _Answer:
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            return _Answer(outcome="malformed", detail="response without choices[0].message.content")
        if not isinstance(content, str):
            return _Answer(outcome="malformed", detail="message content is not text")
        return _Answer(text=content)

    def _backoff(self, attempt: int, exc: Exception) -> float:
        """Exponential backoff with equal jitter, at least the server's Retry-After (both capped)."""
        ceiling = min(self.cfg.backoff_max_s, self.cfg.backoff_s * (2 ** attempt))
        with self._rng_lock:
            delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        try:
            delay = max(delay, min(float(retry_after), self.cfg.backoff_max_s)) if retry_after else delay
        except ValueError:
            pass  # an HTTP date instead of seconds: keep our own delay
        return delay


class _Fatal(Exception):
    """Carries an error that must stop the whole run (bad key, wrong endpoint or model)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error
