"""Properties of the Socket.IO codec and session on arbitrary and hostile input (hypothesis).

The budget comes from the hypothesis profile (tests/conftest.py), never from @settings here: the
long-run script runs these very properties with 100,000 inputs each.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.socketio import (
    MAX_PAYLOAD_LIMIT,
    MAX_PING_MS,
    MAX_SAFE_INTEGER,
    MIN_PING_MS,
    ClientSession,
    Closed,
    EventReceived,
    HandshakeError,
    HandshakeRefused,
    Ignored,
    Malformed,
    NamespaceConnected,
    NamespaceDisconnected,
    NamespaceRefused,
    Opened,
    ProtocolError,
    SocketIOPacket,
    SocketIOPacketType,
    decode_engineio,
    decode_socketio,
    encode_socketio,
    parse_open,
)

pytestmark = pytest.mark.properties

SIO = SocketIOPacketType
SESSION_EVENTS = (
    Opened,
    NamespaceConnected,
    NamespaceRefused,
    NamespaceDisconnected,
    EventReceived,
    Malformed,
    HandshakeRefused,
    Ignored,
    Closed,
)
OPEN = '0{"sid":"eio-1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'

# -- strategies ----------------------------------------------------------------------------------

# Characters that str.isdigit() or int() treat as digits although they are not ASCII.
UNICODE_DIGITS = st.sampled_from(["²", "³", "¹", "①", "٣", "۷", "߀", "१", "𝟘", "𝟡", "０", "⁹"])
HUGE_NUMBERS = st.one_of(
    st.integers(17, 6000).map(lambda n: "9" * n),
    st.integers(4290, 4310).map(lambda n: "1" + "0" * n),
    st.just(str(MAX_SAFE_INTEGER + 1)),
    st.just(str(MAX_SAFE_INTEGER)),
)
DEEP_NESTING = st.integers(100, 3000).flatmap(
    lambda n: st.sampled_from(["[" * n + "]" * n, "[" * n, '{"a":' * n + "1" + "}" * n, "[{" * n, '["x",' + "[" * n])
)
CONSTANTS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "true", "null"])
SYNTAX = st.sampled_from(["-", ",", "/", "[", "]", "{", "}", '"', "\\", ":", "0", "4", "2"])
# Lone surrogates too: websockets never delivers them, but the session must not care.
ANY_TEXT = st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=60)
PIECES = st.one_of(UNICODE_DIGITS, HUGE_NUMBERS, DEEP_NESTING, CONSTANTS, SYNTAX, ANY_TEXT)

VALID_FRAMES = [
    OPEN,
    "2",
    "2probe",
    "3",
    "6",
    "1",
    "40",
    '40{"sid":"root"}',
    '40/acme,{"sid":"x"}',
    "41/acme,",
    '42["ev",{"a":1}]',
    '42/acme,["connection.update",{"state":"open","statusReason":200}]',
    '4212["ev",1]',
    '42/acme,7["ev"]',
    "433[1]",
    '44/acme,{"message":"Invalid namespace"}',
    '44"Unable"',
    '451-["ev",{"_placeholder":true,"num":0}]',
    '461-4[{"_placeholder":true,"num":0}]',
]


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A valid frame with hostile pieces inserted, or a prefix replaced, here and there."""
    frame = draw(st.sampled_from(VALID_FRAMES))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(frame)))
        piece = draw(PIECES)
        if draw(st.booleans()):
            frame = frame[:position] + piece + frame[position:]
        else:
            frame = frame[:position] + piece + frame[position + len(piece) :]
    return frame


@st.composite
def structured_frames(draw: st.DrawFn) -> str:
    """`4<type>[<count>-][/ns,][<id>][payload]` with each part valid or hostile."""
    parts = [draw(st.sampled_from(["4", "0", "2", "1", ""]))]
    parts.append(draw(st.sampled_from("0123456789x")))
    if draw(st.booleans()):
        parts.append(draw(st.one_of(st.just("1"), UNICODE_DIGITS, HUGE_NUMBERS, st.just(""))) + "-")
    if draw(st.booleans()):
        parts.append("/" + draw(st.text(max_size=8)) + draw(st.sampled_from([",", ""])))
    if draw(st.booleans()):
        parts.append(draw(st.one_of(st.just("12"), UNICODE_DIGITS, HUGE_NUMBERS)))
    parts.append(draw(st.one_of(DEEP_NESTING, CONSTANTS, json_text(), ANY_TEXT)))
    return "".join(parts)


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def json_text() -> st.SearchStrategy[str]:
    return st.builds(lambda value: json.dumps(value, separators=(",", ":")), JSON_VALUES)


FRAMES = st.one_of(
    ANY_TEXT,
    st.binary(max_size=40),
    mutated_frames(),
    structured_frames(),
    PIECES.map(lambda piece: "42" + piece),
)


def opened() -> ClientSession:
    session = ClientSession()
    session.receive(OPEN)
    return session


def joined() -> ClientSession:
    session = opened()
    session.connect_namespace("/")
    session.connect_namespace("/acme")
    session.receive('40{"sid":"root"}')
    session.receive('40/acme,{"sid":"acme"}')
    session.connect_namespace("/pending")
    session.data_to_send()
    return session


def fresh() -> ClientSession:
    session = ClientSession()
    session.connect_namespace("/")  # queued before the handshake, as the client never does
    session.data_to_send()
    return session


def state(session: ClientSession) -> tuple[Any, ...]:
    return (
        session.handshake,
        session.closed,
        session.connected_namespaces,
        session.pending_namespaces,
        session.receive_timeout,
    )


def check_receive(session: ClientSession, frame: str | bytes) -> None:
    before = state(session)
    events = session.receive(frame)  # must not raise
    assert isinstance(events, list)
    assert all(isinstance(event, SESSION_EVENTS) for event in events)
    assert len(events) <= 1
    sent = session.data_to_send()
    if any(isinstance(event, Malformed) for event in events):
        # Exactly one Malformed and nothing else: no state change, nothing to send.
        assert state(session) == before and sent == []
        assert isinstance(events[0].reason, str) and len(events[0].reason) < 300
        # Every known cause is handled where it arises: the last-resort handler is never needed.
        assert not events[0].reason.startswith("unexpected "), events[0].reason
    if any(isinstance(event, HandshakeRefused) for event in events):
        assert session.closed and session.handshake is None and sent == []
    if session.handshake is not None:
        timeout = session.receive_timeout
        assert timeout is not None and math.isfinite(timeout) and 0 < timeout <= 2 * MAX_PING_MS / 1000


# -- properties ----------------------------------------------------------------------------------


@given(st.one_of(ANY_TEXT, FRAMES.filter(lambda f: isinstance(f, str))))
def test_decode_engineio_raises_only_protocol_error(text: str) -> None:
    try:
        decode_engineio(text)
    except ProtocolError:
        pass


@given(st.one_of(ANY_TEXT, FRAMES.filter(lambda f: isinstance(f, str))))
def test_decode_socketio_raises_only_protocol_error(text: str) -> None:
    for candidate in (text, text[1:]):  # with and without an Engine.IO type in front
        try:
            packet = decode_socketio(candidate)
        except ProtocolError:
            continue
        if packet.ack_id is not None:
            assert 0 <= packet.ack_id <= MAX_SAFE_INTEGER
        assert 0 <= packet.attachments <= MAX_SAFE_INTEGER


@given(FRAMES)
def test_receive_never_raises_before_the_handshake(frame: str | bytes) -> None:
    check_receive(fresh(), frame)


@given(FRAMES)
def test_receive_never_raises_after_the_handshake(frame: str | bytes) -> None:
    check_receive(opened(), frame)
    check_receive(joined(), frame)


@given(st.lists(FRAMES, min_size=1, max_size=8))
def test_receive_never_raises_on_a_sequence_of_frames(frames: list[str | bytes]) -> None:
    session = fresh()
    for frame in [*frames[:1], OPEN, *frames[1:]]:
        check_receive(session, frame)


@given(mutated_frames())
def test_receive_never_raises_on_mutations_of_valid_frames(frame: str) -> None:
    check_receive(joined(), frame)
    check_receive(fresh(), frame)


# Round trip ---------------------------------------------------------------------------------------

NAMESPACES = st.one_of(
    st.just("/"),
    st.text(max_size=12).filter(lambda s: "," not in s).map(lambda s: "/" + s),
)
ACK_IDS = st.one_of(st.none(), st.integers(0, MAX_SAFE_INTEGER))
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
JSON_LISTS = st.lists(JSON_VALUES, max_size=4)
EVENT_DATA = st.builds(lambda name, rest: [name, *rest], st.text(max_size=12), JSON_LISTS)


@st.composite
def valid_packets(draw: st.DrawFn) -> SocketIOPacket:
    kind = draw(st.sampled_from(list(SocketIOPacketType)))
    namespace = draw(NAMESPACES)
    if kind is SIO.CONNECT:
        return SocketIOPacket(kind, namespace, draw(st.none() | JSON_OBJECTS))
    if kind is SIO.DISCONNECT:
        return SocketIOPacket(kind, namespace)
    if kind is SIO.CONNECT_ERROR:
        return SocketIOPacket(kind, namespace, draw(JSON_OBJECTS | st.text(max_size=20)))
    attachments = draw(st.integers(0, MAX_SAFE_INTEGER)) if kind in (SIO.BINARY_EVENT, SIO.BINARY_ACK) else 0
    if kind in (SIO.EVENT, SIO.BINARY_EVENT):
        return SocketIOPacket(kind, namespace, draw(EVENT_DATA), draw(ACK_IDS), attachments)
    ack_id = draw(st.integers(0, MAX_SAFE_INTEGER))
    return SocketIOPacket(kind, namespace, draw(JSON_LISTS), ack_id, attachments)


@given(valid_packets())
def test_decode_inverts_encode_for_valid_packets(packet: SocketIOPacket) -> None:
    assert decode_socketio(encode_socketio(packet)) == packet


# Handshake ranges -----------------------------------------------------------------------------------

MISSING = object()
HANDSHAKE_NUMBERS = st.one_of(
    st.integers(-10, MAX_PING_MS + 10),
    st.integers(MAX_PAYLOAD_LIMIT - 5, MAX_PAYLOAD_LIMIT + 5),
    st.integers(),
    st.integers(10**300, 10**400),
    st.floats(),  # NaN and +-Infinity included
    st.floats(min_value=0, max_value=2 * MAX_PING_MS),
    st.sampled_from([0, 1, 0.5, MIN_PING_MS, MAX_PING_MS, MAX_PING_MS + 1, 1e6, True, False]),
    st.sampled_from([None, "25000", [], {}, MISSING]),
)


def sane_interval(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
        and MIN_PING_MS <= value <= MAX_PING_MS
    )


def sane_payload(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PAYLOAD_LIMIT


@given(HANDSHAKE_NUMBERS, HANDSHAKE_NUMBERS, HANDSHAKE_NUMBERS)
def test_parse_open_accepts_exactly_the_sane_ranges(interval: Any, timeout: Any, payload: Any) -> None:
    fields = {"pingInterval": interval, "pingTimeout": timeout, "maxPayload": payload}
    body = {"sid": "s", "upgrades": [], **{k: v for k, v in fields.items() if v is not MISSING}}
    data = json.dumps(body)  # NaN and Infinity written as Python's json (and a broken server) would
    sane = sane_interval(interval) and sane_interval(timeout) and (payload is MISSING or sane_payload(payload))
    try:
        info = parse_open(data)
    except HandshakeError as exc:
        assert not sane, exc
        refused = ClientSession().receive("0" + data)
        assert len(refused) == 1 and isinstance(refused[0], HandshakeRefused)
        return
    assert sane
    assert info.ping_interval == interval / 1000 and info.ping_timeout == timeout / 1000
    assert info.max_payload == (1_000_000 if payload is MISSING else payload)
