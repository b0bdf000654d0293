"""Engine.IO v4 / Socket.IO v5 client protocol, sans-I/O: text in, events and text out.

Nothing here touches a socket, a clock or an event loop. `ClientSession` is fed the text frames
received on the websocket and answers with `SessionEvent`s plus the frames to send back; the
asyncio layer in `client.py` only moves frames and acts on events. This keeps every protocol rule
testable with plain function calls.

Scope is what the operator needs from Evolution API (socket.io 4.8.1 / engine.io 6.6.4) over the
websocket transport only: no HTTP long-polling (so no packet batching), no binary attachments, no
client-side acknowledgements.

Redaction is the caller's: error messages and event reasons quote at most a short head of what the
server sent, passed through the `redact` function given to `ClientSession` (or to `decode_*` and
`parse_open`). It defaults to no redaction; the head is cut after redacting, so a secret that
straddles the cut is still recognised.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias

# Masks secrets in a text that may leave the process (an error message, a log record).
Redact: TypeAlias = Callable[[str], str]


def no_redaction(text: str) -> str:
    """The default `Redact`: the text as it is."""
    return text


ROOT_NAMESPACE = "/"
_PREVIEW_LENGTH = 40
_MAX_MESSAGE_LENGTH = 200
# The redact function runs over this much text past a cut (the whole text of anything but a QR
# image or a flood): a secret that straddles the cut is masked as a whole, and a 16 MiB frame does
# not cost seconds of regex work on the event loop (a regex redactor such as the operator's takes
# ~10 ms per 64 KiB).
_REDACT_WINDOW = 64 * 1024

# Socket.IO ack ids and attachment counts are JavaScript numbers: integers up to 2**53 - 1
# (Number.MAX_SAFE_INTEGER), i.e. at most 16 ASCII digits.
MAX_SAFE_INTEGER = 2**53 - 1
_MAX_DIGITS = len(str(MAX_SAFE_INTEGER))
_ASCII_DIGITS = re.compile(r"[0-9]*")
# Evolution's envelopes nest < 20 levels. Python's json raises RecursionError (not ValueError)
# around 1000 levels, and deep values would make every later consumer recurse as deep: a payload
# nested deeper than this is malformed.
MAX_JSON_DEPTH = 128

# Engine.IO handshake bounds (the numbers are milliseconds on the wire). Evolution (engine.io 6)
# sends pingInterval 25000 and pingTimeout 20000. Outside these bounds the heartbeat watchdog
# would spin (below 1 ms), be off in practice (hours, Infinity) or overflow the event loop's timer.
MIN_PING_MS = 1
MAX_PING_MS = 10 * 60 * 1000
MAX_PAYLOAD_LIMIT = MAX_SAFE_INTEGER
_DEFAULT_MAX_PAYLOAD = 1_000_000


class ProtocolError(ValueError):
    """A packet that does not follow the Engine.IO v4 / Socket.IO v5 wire format."""


class HandshakeError(ProtocolError):
    """An Engine.IO OPEN packet whose heartbeat or size numbers are unusable: the connection is
    refused (it would run without a working ping watchdog), not merely a frame dropped."""


def redacted_head(text: str, length: int, redact: Redact) -> tuple[str, bool]:
    """The first `length` characters of `text` once redacted, and whether anything was cut.

    Redaction comes first: cutting first could leave the head of a secret that straddles the cut,
    which `redact` can no longer recognise. It covers `_REDACT_WINDOW` characters past the cut.
    """
    window = text[: length + _REDACT_WINDOW]
    redacted = redact(window)
    cut = len(redacted) > length or len(window) < len(text)
    return redacted[:length], cut


def _preview(text: str, redact: Redact) -> str:
    # Packets can be megabytes of QR data or carry an instance token: an error shows only the head,
    # redacted before it is cut because "apikey":"..." or a registered secret may straddle the cut.
    head, cut = redacted_head(text, _PREVIEW_LENGTH, redact)
    return repr(head) + ("..." if cut else "")


def _fail(reason: str, text: str, redact: Redact) -> ProtocolError:
    return ProtocolError(f"{reason} (packet starts with {_preview(text, redact)})")


# JSON strings (escapes included), removed before brackets are counted.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN_AS_SQUARE = bytes.maketrans(b"{}", b"[]")


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than `limit` (exact for valid JSON)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case, at C speed
    brackets = _JSON_STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_OPEN_AS_SQUARE, _NOT_BRACKETS)
    depth = 0
    for char in brackets:
        if char == 0x5B:  # "["
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder of each kind for every packet: json.loads() with an option builds a new one per call.
_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant)
_JSON = json.JSONDecoder()


def _load_json(text: str, what: str, packet: str, redact: Redact, *, allow_nan: bool = False) -> Any:
    """json.loads() that fails only with ProtocolError: too deep, invalid (integers of more than
    4300 digits included), or, unless `allow_nan`, NaN/Infinity, which JSON.stringify never
    produces. `packet` is what the error message shows the (redacted) head of."""
    if _nests_deeper_than(text, MAX_JSON_DEPTH):
        raise _fail(f"{what} nests deeper than {MAX_JSON_DEPTH} levels", packet, redact)
    try:
        return (_JSON if allow_nan else _STRICT_JSON).decode(text)
    except (ValueError, RecursionError):  # RecursionError: belt and braces, the depth is checked
        raise _fail(f"{what} is not valid JSON", packet, redact) from None


def _safe_integer(digits: str) -> int | None:
    """`digits` as an int if it is 1 to 16 ASCII digits worth at most 2**53 - 1, else None.

    str.isdigit() alone would accept "²" (which int() refuses) or "٣" (which int() reads as 3),
    and int() refuses more than 4300 digits.
    """
    if not digits or len(digits) > _MAX_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    value = int(digits)
    return value if value <= MAX_SAFE_INTEGER else None


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


def decode_engineio(text: str, *, redact: Redact = no_redaction) -> EngineIOPacket:
    """Decode one Engine.IO packet; a ProtocolError shows the head of `text` passed through `redact`."""
    if not text:
        raise ProtocolError("empty Engine.IO packet")
    digit = text[0]
    if not ("0" <= digit <= "6"):
        raise _fail("unknown Engine.IO packet type", text, redact)
    return EngineIOPacket(EngineIOPacketType(int(digit)), text[1:])


@dataclass(frozen=True)
class HandshakeInfo:
    sid: str
    ping_interval: float  # seconds
    ping_timeout: float  # seconds
    max_payload: int
    upgrades: tuple[str, ...] = ()


_MISSING: Any = object()


def _shown(value: Any, redact: Redact) -> str:
    """A short, redacted rendering of a handshake value for an error message."""
    if value is _MISSING:
        return "nothing"
    if isinstance(value, str):
        # Redacted as sent (escaping could hide a secret from redact()), then quoted as JSON.
        head, cut = redacted_head(value, _PREVIEW_LENGTH, redact)
        return json.dumps(head) + ("..." if cut else "")
    try:
        rendered = json.dumps(value)  # NaN and Infinity as the server wrote them
    except (ValueError, TypeError, RecursionError):
        rendered = type(value).__name__
    head, cut = redacted_head(rendered, _PREVIEW_LENGTH, redact)
    return head + ("..." if cut else "")


def _milliseconds(body: dict[str, Any], key: str, redact: Redact) -> float:
    value = body.get(key, _MISSING)
    # bool is an int in Python but never a valid interval; float("nan") fails every comparison.
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not (isinstance(value, int) or math.isfinite(value))
        or not MIN_PING_MS <= value <= MAX_PING_MS
    ):
        raise HandshakeError(
            f"{key} is {_shown(value, redact)}; it must be a number of milliseconds from {MIN_PING_MS} to {MAX_PING_MS}"
        )
    return float(value)


def _max_payload(body: dict[str, Any], redact: Redact) -> int:
    value = body.get("maxPayload", _DEFAULT_MAX_PAYLOAD)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PAYLOAD_LIMIT:
        raise HandshakeError(
            f"maxPayload is {_shown(value, redact)}; it must be an integer from 1 to {MAX_PAYLOAD_LIMIT}"
        )
    return value


def parse_open(data: str, *, redact: Redact = no_redaction) -> HandshakeInfo:
    """Parse the JSON body of an Engine.IO OPEN packet (the part after the leading `0`).

    Raises ProtocolError for a packet that is not an OPEN body at all, and its subclass
    HandshakeError when pingInterval/pingTimeout are not finite numbers of milliseconds in
    [MIN_PING_MS, MAX_PING_MS] or maxPayload (optional) is not an integer in [1, 2**53 - 1].
    What the error messages quote of `data` is passed through `redact`.
    """
    # NaN/Infinity are read so that they can be refused by name, as a HandshakeError.
    body = _load_json(data, "OPEN packet", data, redact, allow_nan=True)
    if not isinstance(body, dict):
        raise _fail("OPEN packet is not a JSON object", data, redact)
    sid = body.get("sid")
    if not isinstance(sid, str) or not sid:
        raise _fail("OPEN packet has no sid", data, redact)
    # maxPayload and upgrades only matter to the polling transport: tolerate their absence.
    upgrades = body.get("upgrades", [])
    if not isinstance(upgrades, list) or not all(isinstance(u, str) for u in upgrades):
        raise _fail("OPEN packet has invalid upgrades", data, redact)
    return HandshakeInfo(
        sid=sid,
        ping_interval=_milliseconds(body, "pingInterval", redact) / 1000,
        ping_timeout=_milliseconds(body, "pingTimeout", redact) / 1000,
        max_payload=_max_payload(body, redact),
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
        parts.append(json.dumps(packet.data, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    return "".join(parts)


def _is_event_payload(data: object) -> bool:
    return isinstance(data, list) and len(data) > 0 and isinstance(data[0], str)


def decode_socketio(text: str, *, redact: Redact = no_redaction) -> SocketIOPacket:
    """Decode the payload of an Engine.IO MESSAGE packet (the part after the leading `4`).

    A ProtocolError shows the head of `text` passed through `redact`."""
    if not text:
        raise ProtocolError("empty Socket.IO packet")
    digit = text[0]
    if not ("0" <= digit <= "6"):
        raise _fail("unknown Socket.IO packet type", text, redact)
    kind = SocketIOPacketType(int(digit))
    pos = 1

    attachments = 0
    if kind in _BINARY_TYPES:
        dash = text.find("-", pos)
        count = _safe_integer(text[pos:dash]) if dash != -1 else None
        if count is None:
            raise _fail("binary packet without a valid attachment count", text, redact)
        attachments = count
        pos = dash + 1

    namespace = ROOT_NAMESPACE
    if text.startswith("/", pos):
        # Like socket.io-parser: the namespace runs to the next "," or to the end of the packet.
        comma = text.find(",", pos)
        end = len(text) if comma == -1 else comma
        namespace = text[pos:end]
        pos = end + 1 if comma != -1 else end

    ack_id: int | None = None
    match = _ASCII_DIGITS.match(text, pos)
    digits_end = match.end() if match else pos
    if digits_end > pos:
        ack_id = _safe_integer(text[pos:digits_end])
        if ack_id is None:
            raise _fail(f"ack id is not an integer up to {MAX_SAFE_INTEGER}", text, redact)
        pos = digits_end

    data: Any = None
    if pos < len(text):
        data = _load_json(text[pos:], "Socket.IO payload", text, redact)

    # Same validity rules as socket.io-parser's isPayloadValid().
    if kind is SocketIOPacketType.CONNECT:
        if data is not None and not isinstance(data, dict):
            raise _fail("CONNECT payload must be an object", text, redact)
    elif kind is SocketIOPacketType.DISCONNECT:
        if data is not None:
            raise _fail("DISCONNECT must not carry a payload", text, redact)
    elif kind is SocketIOPacketType.CONNECT_ERROR:
        if not isinstance(data, dict | str):
            raise _fail("CONNECT_ERROR payload must be an object or a string", text, redact)
    elif kind in (SocketIOPacketType.EVENT, SocketIOPacketType.BINARY_EVENT):
        if not _is_event_payload(data):
            raise _fail("EVENT payload must be a non-empty list starting with a string", text, redact)
    elif ack_id is None or not isinstance(data, list):  # ACK, BINARY_ACK
        raise _fail("ACK must have an id and a list payload", text, redact)
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
class HandshakeRefused:
    """The server's OPEN packet announced a heartbeat or size we cannot work with (pingInterval of
    Infinity, an hour, 0, a string...). The session is closed: end the connection with `reason`
    and reconnect with backoff like after any failed connection attempt."""

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
    | HandshakeRefused
    | Ignored
    | Closed
)


def _refusal_message(data: object, redact: Redact) -> str:
    # socket.io v5 sends {"message": ..., "data"?: ...}; v4 servers sent a bare string.
    if isinstance(data, dict):
        message = data.get("message")
        text = message if isinstance(message, str) else json.dumps(data)
    else:
        text = str(data)
    head, _ = redacted_head(text, _MAX_MESSAGE_LENGTH, redact)
    return head


class ClientSession:
    """One Engine.IO session (one websocket connection), from the client side.

    Feed every received frame to `receive()`, act on the returned events, then send every frame
    returned by `data_to_send()`. A new connection needs a new session.

    Frames queued by `connect_namespace()` before `Opened` are sent as soon as the caller flushes;
    Engine.IO servers accept them right after their OPEN packet, so callers should flush only
    after `Opened` (the asyncio client does).

    Whatever an event's reason or message quotes of a received frame (`Malformed`,
    `HandshakeRefused`, `NamespaceRefused`) is passed through `redact` first; by default nothing is
    masked.
    """

    def __init__(self, *, redact: Redact = no_redaction) -> None:
        self._redact = redact
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

    @property
    def has_data_to_send(self) -> bool:
        """Whether `data_to_send()` would return frames."""
        return bool(self._outgoing)

    def data_to_send(self) -> list[str]:
        """Frames to send, in order; each call returns them once."""
        frames, self._outgoing = self._outgoing, []
        return frames

    # -- input ---------------------------------------------------------------------------------

    def receive(self, data: str | bytes) -> list[SessionEvent]:
        """Process one received websocket frame. Never raises.

        A frame that cannot be understood yields exactly one `Malformed` and changes nothing else
        (no state change, nothing to send); an unusable handshake yields `HandshakeRefused`.
        """
        try:
            return self._receive(data)
        except Exception as exc:  # noqa: BLE001 - last resort: every known cause is handled below
            # Only the type: the message of an unexpected error may quote the frame.
            return [Malformed(f"unexpected {type(exc).__name__} while reading a frame")]

    def _receive(self, data: str | bytes) -> list[SessionEvent]:
        if not isinstance(data, str):
            if self._skip_binary_frames:
                # Attachment of a binary packet already reported as Malformed: drop it quietly.
                self._skip_binary_frames -= 1
                return []
            return [Malformed("binary frames are not supported")]
        if self.closed:
            return [Ignored("frame received after the session was closed")]
        try:
            packet = decode_engineio(data, redact=self._redact)
        except ProtocolError as exc:
            return [Malformed(str(exc))]

        kind = packet.type
        if self.handshake is None and kind is not EngineIOPacketType.OPEN:
            return [Malformed(f"Engine.IO {kind.name} packet before the OPEN handshake")]
        if kind is EngineIOPacketType.OPEN:
            return self._on_open(packet.data)
        if kind is EngineIOPacketType.PING:
            # The server decides the heartbeat in v4; we echo whatever it sent (e.g. "probe").
            self._outgoing.append(encode_engineio(EngineIOPacket(EngineIOPacketType.PONG, packet.data)))
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
            handshake = parse_open(data, redact=self._redact)
        except HandshakeError as exc:
            self.closed = True
            self._pending.clear()
            self._connected.clear()
            return [HandshakeRefused(str(exc))]
        except ProtocolError as exc:
            return [Malformed(str(exc))]
        self.handshake = handshake
        return [Opened(handshake)]

    def _on_message(self, data: str) -> list[SessionEvent]:
        try:
            packet = decode_socketio(data, redact=self._redact)
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
            return [NamespaceRefused(namespace, _refusal_message(packet.data, self._redact))]
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
