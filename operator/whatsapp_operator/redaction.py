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
# Secrets made of URL-safe token characters (API keys, instance tokens: thousands of them at
# scale) are found by looking up each window of each token-shaped run of the text in a set: the
# cost does not grow with the number of secrets. The few others (a webhook's "Bearer ..."
# header) go into one regular expression, compiled again only when one is added.
_TOKEN_CHARS = r"A-Za-z0-9_\-.~+/="
_TOKEN_RUN = re.compile(f"[{_TOKEN_CHARS}]{{{_MIN_SECRET_LENGTH},}}")
_TOKEN_SHAPED = re.compile(f"[{_TOKEN_CHARS}]+")
_token_secrets: set[str] = set()
_token_lengths: list[int] = []  # distinct lengths, longest first
_other_secrets: set[str] = set()
_other_pattern: re.Pattern[str] | None = None
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
    global _other_pattern, _token_lengths
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        if _TOKEN_SHAPED.fullmatch(value):
            if value not in _token_secrets:
                _token_secrets.add(value)
                if len(value) not in _token_lengths:
                    _token_lengths = sorted({*_token_lengths, len(value)}, reverse=True)
        elif value not in _other_secrets:
            _other_secrets.add(value)
            ordered = sorted(_other_secrets, key=len, reverse=True)
            _other_pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


def _mask_tokens(run: re.Match[str]) -> str:
    text = run.group(0)
    masked: list[tuple[int, int]] = []
    for length in _token_lengths:
        if length > len(text):
            continue
        start = 0
        while start + length <= len(text):
            if text[start : start + length] in _token_secrets and not any(
                start < end and start + length > begin for begin, end in masked
            ):
                masked.append((start, start + length))
                start += length
            else:
                start += 1
    if not masked:
        return text
    parts: list[str] = []
    position = 0
    for begin, end in sorted(masked):
        parts.append(text[position:begin])
        parts.append(MASK)
        position = end
    parts.append(text[position:])
    return "".join(parts)


def redact(text: object) -> str:
    """Return `text` as a string with every registered secret and secret-bearing field masked."""
    result = str(text)
    pattern = _other_pattern
    if pattern is not None:
        result = pattern.sub(MASK, result)
    if _token_secrets:
        result = _TOKEN_RUN.sub(_mask_tokens, result)
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
