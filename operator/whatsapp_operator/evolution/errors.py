"""Evolution API failures, normalised to a CamelCase reason and one readable, secret-free message."""

from __future__ import annotations

from typing import Any

from whatsapp_operator.reasons import RETRYABLE, Reason
from whatsapp_operator.redaction import MASK, redact
from whatsapp_operator.values import valid_unicode

MAX_MESSAGE_LENGTH = 300


class EvolutionError(Exception):
    """A call to Evolution API failed. `reason` is stable (for conditions), `message` is for people."""

    def __init__(self, reason: str, message: str, *, status: int | None = None, endpoint: str = ""):
        self.reason = reason
        # Redact the whole text first, then clip: a secret cut by the clip would not be recognised.
        self.message = _clip(redact(message))
        self.status = status
        self.endpoint = endpoint
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        """Worth retrying without a change on our side: outages, 5xx, Evolution's 200-with-error."""
        return self.reason in RETRYABLE

    def __str__(self) -> str:
        return self.message


class InstanceNotFound(EvolutionError):
    def __init__(self, instance_name: str, message: str, *, endpoint: str = ""):
        super().__init__("InstanceNotFound", message, status=404, endpoint=endpoint)
        self.instance_name = instance_name


_REASON_BY_STATUS = {
    400: Reason.EVOLUTION_REJECTED_REQUEST,
    401: Reason.EVOLUTION_UNAUTHORIZED,
    403: Reason.EVOLUTION_FORBIDDEN,
    404: "InstanceNotFound",
}


def reason_for_status(status: int) -> str:
    if status in _REASON_BY_STATUS:
        return _REASON_BY_STATUS[status]
    if status >= 500:
        return Reason.EVOLUTION_SERVER_ERROR
    return Reason.EVOLUTION_UNEXPECTED_STATUS


def error_message_from_body(body: Any) -> str:
    """Flatten Evolution's error envelope: `response.message` is a string, a list, or a nested list.

    Any value is accepted (this also reads bodies that are not Evolution's): the result is bounded
    (`FLATTEN_DEPTH` levels, about `FLATTEN_CHARS` characters), valid Unicode, and every string of
    the body was redacted whole before anything was cut from it; values of secret fields (`token`,
    `hash`, `apikey`) are never rendered.
    """
    if isinstance(body, dict):
        response = body.get("response")
        if isinstance(response, dict) and "message" in response:
            return _flatten(response["message"]).strip()
        if "message" in body:
            return _flatten(body["message"]).strip()
        if "error" in body and isinstance(body["error"], str):
            return _flatten(body["error"]).strip()
    if isinstance(body, str):
        return _flatten(body).strip()
    return ""


# Fields whose value is a credential (instance tokens, API keys), whatever their case.
SECRET_FIELDS = frozenset({"token", "hash", "apikey"})
# error_message_from_body reads at most this deep and renders about this much text: far more than a
# message keeps (MAX_MESSAGE_LENGTH), and bounded whatever the body.
FLATTEN_DEPTH = 16
FLATTEN_CHARS = 4 * MAX_MESSAGE_LENGTH
# Redacting costs ~0.2 s per MB; of a longer string only this much is redacted when that is provably
# as safe as redacting it whole (see _redacted). Far more than FLATTEN_CHARS plus any secret's length.
_REDACT_AHEAD = 64 * 1024
_ELLIPSIS = "…"


class _Room:
    """What is left of the character budget of one flattened message."""

    def __init__(self, chars: int):
        self.left = chars

    def take(self, text: str) -> str:
        """`text` (already redacted), cut to what is left; every piece costs at least one."""
        if len(text) >= self.left:
            text = text[: max(self.left - 1, 0)] + _ELLIPSIS
            self.left = 0
        else:
            self.left -= max(len(text), 1)
        return text


def _flatten(message: Any) -> str:
    parts: list[str] = []
    _flatten_into(message, parts, 0, _Room(FLATTEN_CHARS))
    return "; ".join(part for part in parts if part)


def _flatten_into(message: Any, parts: list[str], depth: int, room: _Room) -> None:
    """Lists (at any level) become separate parts; anything else is rendered into one part."""
    if isinstance(message, list):
        if depth >= FLATTEN_DEPTH:
            parts.append(room.take(_ELLIPSIS))
            return
        for item in message:
            if room.left <= 0:
                break
            _flatten_into(item, parts, depth + 1, room)
        return
    if message is None:
        return
    parts.append(_render(message, depth, room))


def _render(value: Any, depth: int, room: _Room) -> str:
    if room.left <= 0:
        return ""
    if isinstance(value, str):
        # Redact first, then cut: a secret cut in two would no longer be recognised.
        return room.take(valid_unicode(_redacted(value)))
    if isinstance(value, dict):
        if depth >= FLATTEN_DEPTH:
            return room.take("{" + _ELLIPSIS + "}")
        room.take("{")
        items: list[str] = []
        for key, item in value.items():
            if room.left <= 0:
                items.append(_ELLIPSIS)
                break
            name = _render(key, depth + 1, room) if isinstance(key, str) else _render_scalar(key, room)
            if isinstance(key, str) and key.lower() in SECRET_FIELDS:
                shown = room.take(MASK)
            else:
                shown = _render(item, depth + 1, room)
            items.append(f"{name}: {shown}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        if depth >= FLATTEN_DEPTH:
            return room.take("[" + _ELLIPSIS + "]")
        room.take("[")
        rendered: list[str] = []
        for item in value:
            if room.left <= 0:
                rendered.append(_ELLIPSIS)
                break
            rendered.append(_render(item, depth + 1, room))
        return "[" + ", ".join(rendered) + "]"
    return _render_scalar(value, room)


def _redacted(text: str) -> str:
    """`text` redacted as a whole, as far as the at most FLATTEN_CHARS characters shown of it go.

    A long text is redacted whole unless its first _REDACT_AHEAD characters contain nothing to mask:
    then every character keeps its place, and a secret cut at the end of that head starts beyond
    _REDACT_AHEAD - len(secret), far past the FLATTEN_CHARS that can be shown.
    """
    if len(text) > _REDACT_AHEAD:
        head = text[:_REDACT_AHEAD]
        if redact(head) == head:
            return head
    return redact(text)


def _render_scalar(value: Any, room: _Room) -> str:
    if value is None:
        return room.take("null")
    if isinstance(value, bool | int | float):
        try:
            return room.take(str(value))
        except ValueError:  # an integer beyond Python's str() digit limit
            return room.take("<number>")
    try:
        return room.take(valid_unicode(redact(value)))
    except Exception:  # noqa: BLE001 - whatever an odd object's __str__ does, the message survives
        return room.take(f"<{type(value).__name__}>")


def _clip(text: str) -> str:
    """Collapse whitespace and shorten; `text` must already be redacted (see EvolutionError)."""
    text = " ".join(valid_unicode(text).split())
    if len(text) > MAX_MESSAGE_LENGTH:
        return text[: MAX_MESSAGE_LENGTH - 1] + _ELLIPSIS
    return text
