"""Evolution API failures, normalised to a CamelCase reason and one readable, secret-free message."""

from __future__ import annotations

from typing import Any

from whatsapp_operator.redaction import redact

MAX_MESSAGE_LENGTH = 300


class EvolutionError(Exception):
    """A call to Evolution API failed. `reason` is stable (for conditions), `message` is for people."""

    def __init__(self, reason: str, message: str, *, status: int | None = None, endpoint: str = ""):
        self.reason = reason
        self.message = _clip(redact(message))
        self.status = status
        self.endpoint = endpoint
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        """Worth retrying without a change on our side: outages, 5xx, Evolution's 200-with-error."""
        return self.reason in {"EvolutionUnreachable", "EvolutionServerError", "EvolutionNotReady",
                               "EvolutionBadResponse"}

    def __str__(self) -> str:
        return self.message


class InstanceNotFound(EvolutionError):
    def __init__(self, instance_name: str, message: str, *, endpoint: str = ""):
        super().__init__("InstanceNotFound", message, status=404, endpoint=endpoint)
        self.instance_name = instance_name


_REASON_BY_STATUS = {
    400: "EvolutionRejectedRequest",
    401: "EvolutionUnauthorized",
    403: "EvolutionForbidden",
    404: "InstanceNotFound",
}


def reason_for_status(status: int) -> str:
    if status in _REASON_BY_STATUS:
        return _REASON_BY_STATUS[status]
    if status >= 500:
        return "EvolutionServerError"
    return "EvolutionUnexpectedStatus"


def error_message_from_body(body: Any) -> str:
    """Flatten Evolution's error envelope: `response.message` is a string, a list, or a nested list."""
    if isinstance(body, dict):
        response = body.get("response")
        if isinstance(response, dict) and "message" in response:
            return _flatten(response["message"])
        if "message" in body:
            return _flatten(body["message"])
        if "error" in body and isinstance(body["error"], str):
            return body["error"]
    if isinstance(body, str):
        return body.strip()
    return ""


def _flatten(message: Any) -> str:
    if isinstance(message, list):
        parts = [_flatten(item) for item in message]
        return "; ".join(part for part in parts if part)
    if message is None:
        return ""
    return str(message)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_LENGTH:
        return text[: MAX_MESSAGE_LENGTH - 1] + "…"
    return text
