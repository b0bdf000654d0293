"""Scalars from outside (Evolution's JSON, persisted status) checked before they reach our state.

Evolution's answers and events are parsed by Python's json module, which accepts integers of any
size, `NaN`, and strings with lone UTF-16 surrogates. None of these may reach a status patch: the
apiserver refuses integers beyond int64 (422), and a lone surrogate cannot be encoded as UTF-8 at
all, so the patch would fail before it is sent. Every value is checked here once, where it is
parsed, and what does not fit is dropped (machine values) or shortened (human text).
"""

from __future__ import annotations

import datetime
import time
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Human text (profile names, Evolution's messages): shortened, never dropped.
TEXT_LIMIT = 1024
# Machine values (ids, QR payloads, pairing codes, URLs): dropped when longer, a cut one is useless.
TOKEN_LIMIT = 4096
# A QR code as a PNG data URI is ~10-30 KB; far beyond that it is not a QR image.
IMAGE_LIMIT = 256 * 1024


def int64(value: Any) -> int | None:
    """`value` if it is a JSON integer within int64 (what the CRD's `integer` holds), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def valid_unicode(value: str) -> str:
    """`value` with lone surrogates replaced by U+FFFD, so that it can be encoded as UTF-8."""
    if value.isascii():  # the common case (QR data URIs, ids), checked without encoding a copy
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in value)
    return value


def text(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """A non-empty string, valid Unicode, shortened to `limit` characters (with an ellipsis)."""
    if not isinstance(value, str) or not value:
        return None
    checked = valid_unicode(value)
    if len(checked) > limit:
        return checked[: limit - 1] + "…"
    return checked


def token(value: Any, limit: int = TOKEN_LIMIT) -> str | None:
    """A non-empty string of at most `limit` characters and valid Unicode, else None."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    checked: str = value
    return valid_unicode(checked)


def posix_time(value: object) -> float | None:
    """An ISO 8601 time (status fields, object metadata) as seconds since the epoch, UTC when it
    names no zone; None for anything else."""
    try:
        moment = datetime.datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError):
        return None


_last_second: list[tuple[int, str]] = [(-1, "")]


def utc_now() -> str:
    """Now, to the second, as Kubernetes writes times (status, conditions, Events). Formatted once
    per second: every event asks."""
    second = int(time.time())
    cached_second, text = _last_second[0]
    if cached_second != second:
        text = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _last_second[0] = (second, text)
    return text
