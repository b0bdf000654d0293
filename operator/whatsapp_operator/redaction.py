"""Keeps secrets (the Evolution API key, instance tokens) out of logs, status, events and errors.

Every secret the operator learns is registered here once; `redact()` is applied to any text that
leaves the process, and `SecretFilter` is installed on the root logger so that third-party libraries
(websockets, httpx, kopf) cannot leak a secret through a URL or an exception message either.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
# Query parameters and JSON fields that carry a secret whatever its value.
_FIELD_PATTERN = re.compile(
    r"""(?ix)
    (
      (?:[?&]apikey=)                               # ?apikey=... in a URL
      | (?:["']?(?:apikey|token|hash)["']?\s*[:=]\s*["']?)   # "apikey": "..." / token=...
    )
    ([^&"'\s,}]+)
    """
)


def register_secret(value: str | None) -> None:
    """Remember a secret so that every later `redact()` masks it."""
    global _pattern
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


def redact(text: object) -> str:
    """Return `text` as a string with every registered secret and secret-bearing field masked."""
    result = str(text)
    pattern = _pattern
    if pattern is not None:
        result = pattern.sub(MASK, result)
    return _FIELD_PATTERN.sub(lambda match: match.group(1) + MASK, result)


class SecretFilter(logging.Filter):
    """Masks secrets in a log record's final message (arguments and exception text included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            formatter = logging.Formatter()
            exc_text = formatter.formatException(record.exc_info)
            record.exc_text = redact(exc_text)
            record.exc_info = None
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


def install_log_filter() -> None:
    """Attach `SecretFilter` to the root logger's handlers and to every existing logger's handlers."""
    secret_filter = SecretFilter()
    root = logging.getLogger()
    root.addFilter(secret_filter)
    for handler in root.handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(secret_filter)
