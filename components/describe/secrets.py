"""Keeping known secrets out of everything the stage writes: the API key and credentials inside the base URL.

`Secrets` is the one helper that knows them (OPENAI_API_KEY, the userinfo of describe.base_url or
OPENAI_BASE_URL); it redacts text (answers before they are stored, error details, log records through a
logging filter) and masks URLs logged as params. Anything shaped like an OpenAI key is redacted as well.
"""
from __future__ import annotations

import base64
import contextlib
import logging
import re
from typing import Iterable, Iterator, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "[REDACTED]"
MASK = "***"  # replaces the userinfo of a URL: http://***@host/v1
# OpenAI-style keys, in case a server echoes a key other than ours.
_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{8,}")
# Parts of URL credentials shorter than this are not redacted on their own (they would mangle ordinary words);
# the whole `user:password` and its Basic-auth form always are.
MIN_PART_CHARS = 4


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret (longest first) and anything shaped like an OpenAI key replaced."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _KEY_PATTERN.sub(REDACTED, text)


def url_credentials(url: str | None) -> list[str]:
    """The secret strings a URL's userinfo carries: raw and percent-decoded, joined and apart, Basic-auth form."""
    if not url:
        return []
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    found = {userinfo, unquote(userinfo)}
    plain_pair = f"{unquote(user)}:{unquote(password)}"
    found.add(base64.b64encode(plain_pair.encode()).decode("ascii"))  # Authorization: Basic <this>
    # The password is the secret; a user name alone is one only when it is the sole credential (a token).
    for part in ([password] if password else [user]):
        for form in (part, unquote(part)):
            if len(form) >= MIN_PART_CHARS:
                found.add(form)
    return sorted(s for s in found if s)


def mask_url(url: str | None) -> str:
    """`url` with its userinfo replaced by *** (scheme, host, port, path and query kept); '' stays ''."""
    if not url:
        return url or ""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, f"{MASK}@{parts.netloc.rsplit('@', 1)[1]}", parts.path, parts.query,
                       parts.fragment))


def endpoint_label(base_url: str | None) -> str:
    """A base URL safe to log: scheme, host, port and path; credentials, query and fragment dropped."""
    if not base_url:
        return "https://api.openai.com/v1"
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Secrets:
    """The known secrets of one describe run; iterating yields the strings to redact."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None):
        self.base_url = base_url or ""
        values = ([api_key] if api_key else []) + url_credentials(base_url)
        self.values = sorted(set(values), key=len, reverse=True)

    @classmethod
    def from_env(cls, base_url: str = "", env: Mapping[str, str] | None = None) -> "Secrets":
        """Secrets of a run: OPENAI_API_KEY and the credentials of `base_url` (else OPENAI_BASE_URL)."""
        env = env or {}
        return cls(env.get("OPENAI_API_KEY") or None, base_url or env.get("OPENAI_BASE_URL") or None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    @property
    def url_has_credentials(self) -> bool:
        return bool(url_credentials(self.base_url))

    def redact(self, text: str) -> str:
        return redact(text, self.values)

    def mask_url(self, url: str | None) -> str:
        """A URL safe to store as a param: userinfo masked, then any other known secret redacted."""
        return self.redact(mask_url(url))


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
