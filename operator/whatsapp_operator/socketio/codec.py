"""Engine.IO v4 / Socket.IO v5 client protocol, sans-I/O: text in, events and text out.

Nothing here touches a socket, a clock or an event loop. `ClientSession` is fed the text frames
received on the websocket and answers with `SessionEvent`s plus the frames to send back; the
asyncio layer in `client.py` only moves frames and acts on events. This keeps every protocol rule
testable with plain function calls.

Scope is what the operator needs from Evolution API (socket.io 4.8.1 / engine.io 6.6.4) over the
websocket transport only: no HTTP long-polling (so no packet batching), no binary attachments, no
client-side acknowledgements.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias

from ..redaction import redact

ROOT_NAMESPACE = "/"
_PREVIEW_LENGTH = 40
_MAX_MESSAGE_LENGTH = 200


class ProtocolError(ValueError):
    """A packet that does not follow the Engine.IO v4 / Socket.IO v5 wire format."""


def _preview(text: str) -> str:
    # Packets can be megabytes of QR data or carry an instance token: an error shows only the head,
    # and even that goes through redact() because "apikey":"..." may start within it.
    head = text[:_PREVIEW_LENGTH]
    suffix = "..." if len(text) > _PREVIEW_LENGTH else ""
    return redact(repr(head)) + suffix


def _fail(reason: str, text: str) -> ProtocolError:
    return ProtocolError(f"{reason} (packet starts with {_preview(text)})")


# --------------------------------------------------------------------------------------------
# Engine.IO v4


class EngineIOPacketType(IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


@dataclass(frozen=True)
class EngineIOPacket:
    type: EngineIOPacketType
    data: str = ""


def encode_engineio(packet: EngineIOPacket) -> str:
    return f"{int(packet.type)}{packet.data}"


def decode_engineio(text: str) -> EngineIOPacket:
    if not text:
        raise ProtocolError("empty Engine.IO packet")
    digit = text[0]
    if not ("0" <= digit <= "6"):
        raise _fail("unknown Engine.IO packet type", text)
    return EngineIOPacket(EngineIOPacketType(int(digit)), text[1:])


@dataclass(frozen=True)
class HandshakeInfo:
    sid: str
    ping_interval: float  # seconds
    ping_timeout: float  # seconds
    max_payload: int
    upgrades: tuple[str, ...] = ()


def _positive_number(
    body: dict[str, Any], key: str, data: str, default: float | None = None
) -> float:
    value = body.get(key, default)
    # bool is an int in Python but never a valid interval or size.
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise _fail(f"OPEN packet has no valid {key}", data)
    return float(value)


def parse_open(data: str) -> HandshakeInfo:
    """Parse the JSON body of an Engine.IO OPEN packet (the part after the leading `0`)."""
    try:
        body = json.loads(data)
    except ValueError:
        raise _fail("OPEN packet is not valid JSON", data) from None
    if not isinstance(body, dict):
        raise _fail("OPEN packet is not a JSON object", data)
    sid = body.get("sid")
    if not isinstance(sid, str) or not sid:
        raise _fail("OPEN packet has no sid", data)
    # maxPayload and upgrades only matter to the polling transport: tolerate their absence.
    upgrades = body.get("upgrades", [])
    if not isinstance(upgrades, list) or not all(isinstance(u, str) for u in upgrades):
        raise _fail("OPEN packet has invalid upgrades", data)
    return HandshakeInfo(
        sid=sid,
        ping_interval=_positive_number(body, "pingInterval", data) / 1000,
        ping_timeout=_positive_number(body, "pingTimeout", data) / 1000,
        max_payload=int(_positive_number(body, "maxPayload", data, default=1_000_000)),
        upgrades=tuple(upgrades),
    )


# --------------------------------------------------------------------------------------------
# Socket.IO v5


class SocketIOPacketType(IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


_BINARY_TYPES = (SocketIOPacketType.BINARY_EVENT, SocketIOPacketType.BINARY_ACK)


@dataclass(frozen=True)
class SocketIOPacket:
    type: SocketIOPacketType
    namespace: str = ROOT_NAMESPACE
    data: Any = None
    ack_id: int | None = None
    attachments: int = 0


def _check_namespace(namespace: str) -> None:
    # The namespace is terminated by "," on the wire; one containing "," cannot be encoded.
    if not namespace.startswith("/") or "," in namespace:
        raise ValueError(f"invalid Socket.IO namespace {namespace!r}")


def encode_socketio(packet: SocketIOPacket) -> str:
    """Encode as `<type>[<attachments>-][<namespace>,][<ackid>][<json>]`."""
    _check_namespace(packet.namespace)
    parts = [str(int(packet.type))]
    if packet.type in _BINARY_TYPES:
        parts.append(f"{packet.attachments}-")
    if packet.namespace != ROOT_NAMESPACE:
        parts.append(f"{packet.namespace},")
    if packet.ack_id is not None:
        parts.append(str(packet.ack_id))
    if packet.data is not None:
        # Compact like JSON.stringify; NaN/Infinity are not JSON and the server could not parse them.
        parts.append(
            json.dumps(packet.data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        )
    return "".join(parts)


def _is_event_payload(data: object) -> bool:
    return isinstance(data, list) and len(data) > 0 and isinstance(data[0], str)


def decode_socketio(text: str) -> SocketIOPacket:
    """Decode the payload of an Engine.IO MESSAGE packet (the part after the leading `4`)."""
    if not text:
        raise ProtocolError("empty Socket.IO packet")
    digit = text[0]
    if not ("0" <= digit <= "6"):
        raise _fail("unknown Socket.IO packet type", text)
    kind = SocketIOPacketType(int(digit))
    pos = 1

    attachments = 0
    if kind in _BINARY_TYPES:
        dash = text.find("-", pos)
        if dash == -1 or not text[pos:dash].isdigit():
            raise _fail("binary packet without an attachment count", text)
        attachments = int(text[pos:dash])
        pos = dash + 1

    namespace = ROOT_NAMESPACE
    if text.startswith("/", pos):
        # Like socket.io-parser: the namespace runs to the next "," or to the end of the packet.
        comma = text.find(",", pos)
        end = len(text) if comma == -1 else comma
        namespace = text[pos:end]
        pos = end + 1 if comma != -1 else end

    ack_id: int | None = None
    digits_end = pos
    while digits_end < len(text) and text[digits_end].isdigit():
        digits_end += 1
    if digits_end > pos:
        ack_id = int(text[pos:digits_end])
        pos = digits_end

    data: Any = None
    if pos < len(text):
        try:
            data = json.loads(text[pos:])
        except ValueError:
            raise _fail("Socket.IO payload is not valid JSON", text) from None

    # Same validity rules as socket.io-parser's isPayloadValid().
    if kind is SocketIOPacketType.CONNECT:
        if data is not None and not isinstance(data, dict):
            raise _fail("CONNECT payload must be an object", text)
    elif kind is SocketIOPacketType.DISCONNECT:
        if data is not None:
            raise _fail("DISCONNECT must not carry a payload", text)
    elif kind is SocketIOPacketType.CONNECT_ERROR:
        if not isinstance(data, dict | str):
            raise _fail("CONNECT_ERROR payload must be an object or a string", text)
    elif kind in (SocketIOPacketType.EVENT, SocketIOPacketType.BINARY_EVENT):
        if not _is_event_payload(data):
            raise _fail("EVENT payload must be a non-empty list starting with a string", text)
    elif ack_id is None or not isinstance(data, list):  # ACK, BINARY_ACK
        raise _fail("ACK must have an id and a list payload", text)
    return SocketIOPacket(kind, namespace, data, ack_id, attachments)


# --------------------------------------------------------------------------------------------
# Session state machine


@dataclass(frozen=True)
class Opened:
    """The Engine.IO handshake arrived; namespaces can be joined."""

    handshake: HandshakeInfo


@dataclass(frozen=True)
class NamespaceConnected:
    namespace: str
    sid: str | None


@dataclass(frozen=True)
class NamespaceRefused:
    """CONNECT_ERROR: the server would not let us join (Evolution: "Invalid namespace")."""

    namespace: str
    message: str


@dataclass(frozen=True)
class NamespaceDisconnected:
    """The server removed us from a namespace (`41/ns,`)."""

    namespace: str


@dataclass(frozen=True)
class EventReceived:
    namespace: str
    name: str
    args: list[Any]


@dataclass(frozen=True)
class Malformed:
    """A frame that could not be understood; it was dropped and the session goes on."""

    reason: str


@dataclass(frozen=True)
class Ignored:
    """A well-formed packet with nothing to act on (an ACK, an event for a namespace we left...)."""

    reason: str


@dataclass(frozen=True)
class Closed:
    """The server closed the Engine.IO session; the transport should be closed too."""

    reason: str


SessionEvent: TypeAlias = (
    Opened
    | NamespaceConnected
    | NamespaceRefused
    | NamespaceDisconnected
    | EventReceived
    | Malformed
    | Ignored
    | Closed
)


def _refusal_message(data: object) -> str:
    # socket.io v5 sends {"message": ..., "data"?: ...}; v4 servers sent a bare string.
    if isinstance(data, dict):
        message = data.get("message")
        text = message if isinstance(message, str) else json.dumps(data)
    else:
        text = str(data)
    return text[:_MAX_MESSAGE_LENGTH]


class ClientSession:
    """One Engine.IO session (one websocket connection), from the client side.

    Feed every received frame to `receive()`, act on the returned events, then send every frame
    returned by `data_to_send()`. A new connection needs a new session.

    Frames queued by `connect_namespace()` before `Opened` are sent as soon as the caller flushes;
    Engine.IO servers accept them right after their OPEN packet, so callers should flush only
    after `Opened` (the asyncio client does).
    """

    def __init__(self) -> None:
        self.handshake: HandshakeInfo | None = None
        self.closed = False
        self._outgoing: list[str] = []
        self._pending: set[str] = set()  # CONNECT sent, no answer yet
        self._connected: dict[str, str | None] = {}  # namespace -> sid given by the server
        self._skip_binary_frames = 0  # attachments of an unsupported binary packet still to come

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.handshake is not None and not self.closed

    @property
    def connected_namespaces(self) -> frozenset[str]:
        return frozenset(self._connected)

    @property
    def pending_namespaces(self) -> frozenset[str]:
        return frozenset(self._pending)

    @property
    def receive_timeout(self) -> float | None:
        """Longest silence allowed from the server before the connection counts as dead.

        An Engine.IO v4 server pings every pingInterval and gives the client pingTimeout to answer,
        so a live server is never silent for longer than their sum. None before the handshake: the
        caller's own open timeout applies then.
        """
        if self.handshake is None:
            return None
        return self.handshake.ping_interval + self.handshake.ping_timeout

    # -- commands ------------------------------------------------------------------------------

    def connect_namespace(self, namespace: str, auth: dict[str, Any] | None = None) -> None:
        """Ask to join `namespace`; a no-op if already joined or asked."""
        _check_namespace(namespace)
        if self.closed or namespace in self._connected or namespace in self._pending:
            return
        self._pending.add(namespace)
        self._send_message(SocketIOPacket(SocketIOPacketType.CONNECT, namespace, auth))

    def disconnect_namespace(self, namespace: str) -> None:
        """Leave `namespace` (or cancel a pending join); a no-op if not joined."""
        _check_namespace(namespace)
        if self.closed or (namespace not in self._connected and namespace not in self._pending):
            return
        self._connected.pop(namespace, None)
        self._pending.discard(namespace)
        self._send_message(SocketIOPacket(SocketIOPacketType.DISCONNECT, namespace))

    def close(self) -> None:
        """Queue an Engine.IO CLOSE; nothing is received after it."""
        if not self.closed:
            self._outgoing.append(encode_engineio(EngineIOPacket(EngineIOPacketType.CLOSE)))
            self.closed = True
            self._pending.clear()
            self._connected.clear()

    def data_to_send(self) -> list[str]:
        """Frames to send, in order; each call returns them once."""
        frames, self._outgoing = self._outgoing, []
        return frames

    # -- input ---------------------------------------------------------------------------------

    def receive(self, data: str | bytes) -> list[SessionEvent]:
        """Process one received websocket frame. Never raises on bad input."""
        if isinstance(data, bytes):
            if self._skip_binary_frames:
                # Attachment of a binary packet already reported as Malformed: drop it quietly.
                self._skip_binary_frames -= 1
                return []
            return [Malformed("binary frames are not supported")]
        if self.closed:
            return [Ignored("frame received after the session was closed")]
        try:
            packet = decode_engineio(data)
        except ProtocolError as exc:
            return [Malformed(str(exc))]

        kind = packet.type
        if self.handshake is None and kind is not EngineIOPacketType.OPEN:
            return [Malformed(f"Engine.IO {kind.name} packet before the OPEN handshake")]
        if kind is EngineIOPacketType.OPEN:
            return self._on_open(packet.data)
        if kind is EngineIOPacketType.PING:
            # The server decides the heartbeat in v4; we echo whatever it sent (e.g. "probe").
            self._outgoing.append(
                encode_engineio(EngineIOPacket(EngineIOPacketType.PONG, packet.data))
            )
            return []
        if kind is EngineIOPacketType.CLOSE:
            self.closed = True
            self._pending.clear()
            self._connected.clear()
            return [Closed("the server closed the Engine.IO session")]
        if kind is EngineIOPacketType.MESSAGE:
            return self._on_message(packet.data)
        # PONG (we never ping in v4), UPGRADE and NOOP only matter for the polling transport.
        return [Ignored(f"Engine.IO {kind.name} packet")]

    def _on_open(self, data: str) -> list[SessionEvent]:
        if self.handshake is not None:
            return [Malformed("second Engine.IO OPEN packet")]
        try:
            self.handshake = parse_open(data)
        except ProtocolError as exc:
            return [Malformed(str(exc))]
        return [Opened(self.handshake)]

    def _on_message(self, data: str) -> list[SessionEvent]:
        try:
            packet = decode_socketio(data)
        except ProtocolError as exc:
            return [Malformed(str(exc))]
        namespace, kind = packet.namespace, packet.type

        if kind in _BINARY_TYPES:
            self._skip_binary_frames = packet.attachments
            return [Malformed("binary packets are not supported")]
        if kind is SocketIOPacketType.ACK:
            # We never send events with an ack id, so there is nothing an ACK could answer.
            return [Ignored("ACK packet")]
        if kind is SocketIOPacketType.CONNECT:
            if namespace not in self._pending:
                return [Ignored(f"CONNECT for {namespace} that was not requested")]
            self._pending.discard(namespace)
            sid = packet.data.get("sid") if isinstance(packet.data, dict) else None
            self._connected[namespace] = sid if isinstance(sid, str) else None
            return [NamespaceConnected(namespace, self._connected[namespace])]
        if kind is SocketIOPacketType.CONNECT_ERROR:
            if namespace not in self._pending:
                return [Ignored(f"CONNECT_ERROR for {namespace} that was not requested")]
            self._pending.discard(namespace)
            return [NamespaceRefused(namespace, _refusal_message(packet.data))]
        if kind is SocketIOPacketType.DISCONNECT:
            if namespace not in self._connected and namespace not in self._pending:
                return [Ignored(f"DISCONNECT for {namespace} that is not joined")]
            self._connected.pop(namespace, None)
            self._pending.discard(namespace)
            return [NamespaceDisconnected(namespace)]
        # EVENT: socket.io clients drop events for namespaces they are not in (e.g. in flight
        # while we were leaving), so do we.
        if namespace not in self._connected:
            return [Ignored(f"event for {namespace} that is not joined")]
        # An ack id here means the server wants an answer; Evolution never asks and we never answer.
        name, *args = packet.data
        return [EventReceived(namespace, name, args)]

    def _send_message(self, packet: SocketIOPacket) -> None:
        message = EngineIOPacket(EngineIOPacketType.MESSAGE, encode_socketio(packet))
        self._outgoing.append(encode_engineio(message))
