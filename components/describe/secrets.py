"""Keeping the API key out of everything the stage writes: text redaction and a logging filter."""
from __future__ import annotations

import contextlib
import logging
import re
from typing import Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[REDACTED]"
# OpenAI-style keys, in case a server echoes a key other than ours.
_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{8,}")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret and anything shaped like an OpenAI key replaced by [REDACTED]."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _KEY_PATTERN.sub(REDACTED, text)


def endpoint_label(base_url: str | None) -> str:
    """A base URL safe to log: scheme, host, port and path; credentials, query and fragment dropped."""
    if not base_url:
        return "https://api.openai.com/v1"
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with the secrets redacted (args are merged first)."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(exc_text, self.secrets), None
        return True


@contextlib.contextmanager
def redacting_logs(secrets: Iterable[str]) -> Iterator[None]:
    """Attach a RedactingFilter to every handler of the root logger (where records end up) for the block."""
    filt = RedactingFilter(secrets)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(filt)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(filt)
