"""Evolution's Socket.IO envelopes, parsed into typed events (pure functions, no I/O).

Wire names are dotted lowercase (`qrcode.updated`), unlike the UPPER_SNAKE names used to subscribe.
Every envelope is `{"event", "instance", "data", "date_time", ...}` as the only argument.

`parse_event` is total: whatever JSON value arrives, it returns a typed event or None, or raises
`MalformedEvent`. Every value in a returned event has been through `values`: integers fit int64,
strings are valid Unicode (UTF-8 encodable) and bounded, so they can go into a status patch as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.values import IMAGE_LIMIT, int64, text, token

QRCODE_UPDATED = "qrcode.updated"
CONNECTION_UPDATE = "connection.update"
LOGOUT_INSTANCE = "logout.instance"
REMOVE_INSTANCE = "remove.instance"
# Everything else (message traffic in global mode, instance.create, status.instance, ...) carries
# nothing the status needs: connection.update and logout/remove already say it.
RELEVANT_EVENTS = frozenset({QRCODE_UPDATED, CONNECTION_UPDATE, LOGOUT_INSTANCE, REMOVE_INSTANCE})


class MalformedEvent(ValueError):
    """A relevant event whose envelope does not have the documented shape."""


@dataclass(frozen=True)
class QRUpdated:
    instance: str
    code: str | None
    base64: str | None
    pairing_code: str | None


@dataclass(frozen=True)
class QRLimitReached:
    instance: str
    message: str


@dataclass(frozen=True)
class ConnectionUpdated:
    instance: str
    state: ConnectionState
    status_reason: int | None
    wuid: str | None = None
    profile_name: str | None = None
    profile_picture_url: str | None = None


@dataclass(frozen=True)
class InstanceLoggedOut:
    instance: str


@dataclass(frozen=True)
class InstanceRemoved:
    instance: str


EvolutionEvent = QRUpdated | QRLimitReached | ConnectionUpdated | InstanceLoggedOut | InstanceRemoved


def parse_event(name: str, args: Any, *, namespace_instance: str | None = None) -> EvolutionEvent | None:
    """Turn one Socket.IO event into a typed event; None for events the operator does not follow.

    `args` is the list of the event's arguments as received (anything JSON can hold is tolerated).
    `namespace_instance` is the instance a per-instance namespace belongs to; on the root namespace
    the instance comes from the envelope. Raises only `MalformedEvent`.
    """
    if not isinstance(name, str) or name not in RELEVANT_EVENTS:
        return None
    if not isinstance(args, list) or not args or not isinstance(args[0], dict):
        raise MalformedEvent(f"{name}: the envelope is not a JSON object")
    envelope: dict[Any, Any] = args[0]
    instance = token(envelope.get("instance")) or token(namespace_instance)
    if instance is None:
        raise MalformedEvent(f"{name}: the envelope names no instance")
    data = envelope.get("data")

    if name == QRCODE_UPDATED:
        return _parse_qr(instance, data)
    if name == CONNECTION_UPDATE:
        return _parse_connection(instance, data)
    if name == LOGOUT_INSTANCE:
        return InstanceLoggedOut(instance)
    return InstanceRemoved(instance)


def _parse_qr(instance: str, data: Any) -> QRUpdated | QRLimitReached:
    if not isinstance(data, dict):
        raise MalformedEvent(f"{QRCODE_UPDATED}: data is not an object")
    qrcode = data.get("qrcode")
    if isinstance(qrcode, dict):
        code = token(qrcode.get("code"))
        pairing_code = token(qrcode.get("pairingCode"))
        if code is None and pairing_code is None:
            raise MalformedEvent(f"{QRCODE_UPDATED}: qrcode has neither a usable code nor pairingCode")
        # A data URI of a PNG: dropped (None) when beyond IMAGE_LIMIT, a cut image is no image.
        return QRUpdated(instance, code, token(qrcode.get("base64"), IMAGE_LIMIT), pairing_code)
    # The QR-limit notice reuses the event with a different shape: {"message","statusCode"}.
    message = text(data.get("message"))
    if message is not None or "statusCode" in data:
        return QRLimitReached(instance, message or "QR code limit reached")
    raise MalformedEvent(f"{QRCODE_UPDATED}: data has neither qrcode nor message")


def _parse_connection(instance: str, data: Any) -> ConnectionUpdated:
    if not isinstance(data, dict):
        raise MalformedEvent(f"{CONNECTION_UPDATE}: data is not an object")
    raw = token(data.get("state"))
    if raw is None:
        raise MalformedEvent(f"{CONNECTION_UPDATE}: data has no state")
    state = ConnectionState.parse(raw)
    if state is None:  # not one of the states Evolution has (docs/evolution-api.md §4.9)
        raise MalformedEvent(f"{CONNECTION_UPDATE}: unknown state {raw[:40]!r}")
    return ConnectionUpdated(
        instance=instance,
        state=state,
        # int64 only: bool, floats and integers the apiserver would refuse (beyond int64) are dropped.
        status_reason=int64(data.get("statusReason")),
        wuid=token(data.get("wuid")),
        profile_name=text(data.get("profileName")),
        profile_picture_url=token(data.get("profilePictureUrl")),
    )
