"""The Engine.IO v4 / Socket.IO v5 codec and the client session state machine, sans-I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from whatsapp_operator.redaction import redact, register_secret
from whatsapp_operator.socketio import (
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_LIMIT,
    MAX_PING_MS,
    MIN_PING_MS,
    ClientSession,
    Closed,
    EngineIOPacket,
    EngineIOPacketType,
    EventReceived,
    HandshakeError,
    HandshakeInfo,
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
    encode_engineio,
    encode_socketio,
    parse_open,
)

EIO = EngineIOPacketType
SIO = SocketIOPacketType
OPEN = '0{"sid":"eio-1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


# -- Engine.IO ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EngineIOPacketType))
def test_engineio_round_trip_for_every_type(kind: EngineIOPacketType) -> None:
    packet = EngineIOPacket(kind, "payload")
    text = encode_engineio(packet)
    assert text == f"{int(kind)}payload"
    assert decode_engineio(text) == packet


def test_engineio_packet_without_data_decodes_to_empty_string() -> None:
    assert decode_engineio("2") == EngineIOPacket(EIO.PING, "")
    assert encode_engineio(EngineIOPacket(EIO.PONG)) == "3"


@pytest.mark.parametrize("text", ["", "7", "x42", "-1"])
def test_engineio_rejects_empty_or_unknown_type(text: str) -> None:
    with pytest.raises(ProtocolError):
        decode_engineio(text)


def test_parse_open_converts_milliseconds_to_seconds() -> None:
    info = parse_open(OPEN[1:])
    assert info == HandshakeInfo("eio-1", 25.0, 20.0, 1_000_000, ())


def test_parse_open_tolerates_missing_max_payload_and_upgrades() -> None:
    info = parse_open('{"sid":"s","pingInterval":100,"pingTimeout":50}')
    assert (info.ping_interval, info.ping_timeout, info.max_payload, info.upgrades) == (
        0.1,
        0.05,
        1_000_000,
        (),
    )


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1,2]",
        '{"pingInterval":1,"pingTimeout":1}',
        '{"sid":"","pingInterval":1,"pingTimeout":1}',
        '{"sid":"s","pingInterval":0,"pingTimeout":1}',
        '{"sid":"s","pingInterval":true,"pingTimeout":1}',
        '{"sid":"s","pingInterval":"1","pingTimeout":1}',
        '{"sid":"s","pingInterval":1}',
        '{"sid":"s","pingInterval":1,"pingTimeout":1,"upgrades":"websocket"}',
    ],
)
def test_parse_open_rejects_invalid_handshakes(data: str) -> None:
    with pytest.raises(ProtocolError):
        parse_open(data)


# -- Socket.IO ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "text"),
    [
        (SocketIOPacket(SIO.CONNECT), "0"),
        (SocketIOPacket(SIO.CONNECT, "/acme"), "0/acme,"),
        (SocketIOPacket(SIO.CONNECT, data={"sid": "x"}), '0{"sid":"x"}'),
        (SocketIOPacket(SIO.CONNECT, "/acme", {"token": "t"}), '0/acme,{"token":"t"}'),
        (SocketIOPacket(SIO.DISCONNECT, "/acme"), "1/acme,"),
        (SocketIOPacket(SIO.DISCONNECT), "1"),
        (
            SocketIOPacket(SIO.EVENT, "/acme", ["qrcode.updated", {"qr": "é"}]),
            '2/acme,["qrcode.updated",{"qr":"é"}]',
        ),
        (SocketIOPacket(SIO.EVENT, data=["ev", 1], ack_id=12), '212["ev",1]'),
        (SocketIOPacket(SIO.EVENT, "/a", ["ev"], ack_id=7), '2/a,7["ev"]'),
        (SocketIOPacket(SIO.ACK, "/a", [True], ack_id=3), "3/a,3[true]"),
        (
            SocketIOPacket(SIO.CONNECT_ERROR, "/acme", {"message": "Invalid namespace"}),
            '4/acme,{"message":"Invalid namespace"}',
        ),
        (
            SocketIOPacket(SIO.BINARY_EVENT, "/a", ["ev", {"_placeholder": True, "num": 0}], attachments=1),
            '51-/a,["ev",{"_placeholder":true,"num":0}]',
        ),
        (
            SocketIOPacket(SIO.BINARY_ACK, data=[{"_placeholder": True, "num": 0}], ack_id=4, attachments=1),
            '61-4[{"_placeholder":true,"num":0}]',
        ),
    ],
)
def test_socketio_encodes_and_decodes_every_packet_type(packet: SocketIOPacket, text: str) -> None:
    assert encode_socketio(packet) == text
    assert decode_socketio(text) == packet


def test_engineio_wrapping_of_socketio_examples_from_the_wire() -> None:
    # The literal frames Evolution (socket.io 4.8.1) sends and expects.
    assert decode_engineio("40").data == "0"
    event = decode_socketio(decode_engineio('42/acme,["qrcode.updated",{"a":1}]').data)
    assert (event.type, event.namespace, event.data) == (
        SIO.EVENT,
        "/acme",
        ["qrcode.updated", {"a": 1}],
    )
    refused = decode_socketio(decode_engineio('44/acme,{"message":"Invalid namespace"}').data)
    assert refused.type is SIO.CONNECT_ERROR and refused.data == {"message": "Invalid namespace"}
    assert decode_socketio(decode_engineio('4212["ev",1]').data).ack_id == 12


def test_namespace_without_trailing_comma_runs_to_the_end() -> None:
    assert decode_socketio("1/acme") == SocketIOPacket(SIO.DISCONNECT, "/acme")


def test_connect_error_with_a_bare_string_is_accepted() -> None:
    assert decode_socketio('4"Unable to connect"').data == "Unable to connect"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",
        "a",
        '2["unterminated',
        "2{}",
        "2[]",
        "2[1,2]",
        '2"ev"',
        "2",
        "0[1]",
        '1{"a":1}',
        "4",
        "4[1]",
        '3["no id"]',
        "31{}",
        '5["ev"]',
        '5x-["ev"]',
    ],
)
def test_decode_socketio_rejects_malformed_packets(text: str) -> None:
    with pytest.raises(ProtocolError):
        decode_socketio(text)


def test_protocol_error_shows_only_the_head_of_a_huge_packet() -> None:
    huge = '2["qrcode.updated",{"base64":"' + "A" * 100_000
    with pytest.raises(ProtocolError) as caught:
        decode_socketio(huge)
    message = str(caught.value)
    assert "not valid JSON" in message
    assert len(message) < 150


def test_protocol_error_does_not_show_a_secret_in_the_head() -> None:
    register_secret("codec-secret-1234")
    with pytest.raises(ProtocolError) as caught:
        decode_socketio('2{"apikey":"codec-secret-1234"', redact=redact)
    assert "codec-secret-1234" not in str(caught.value)


@pytest.mark.parametrize("namespace", ["acme", "/a,b"])
def test_encode_refuses_namespaces_that_cannot_be_encoded(namespace: str) -> None:
    with pytest.raises(ValueError):
        encode_socketio(SocketIOPacket(SIO.CONNECT, namespace))


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode_socketio(SocketIOPacket(SIO.EVENT, data=["ev", float("nan")]))


# -- ClientSession -----------------------------------------------------------------------------


def opened_session(**kwargs: Any) -> ClientSession:
    session = ClientSession(**kwargs)
    assert session.receive(OPEN) == [Opened(parse_open(OPEN[1:]))]
    return session


def joined_session(*namespaces: str) -> ClientSession:
    session = opened_session()
    for namespace in ("/", *namespaces):
        session.connect_namespace(namespace)
        prefix = "" if namespace == "/" else f"{namespace},"
        [event] = session.receive(f'40{prefix}{{"sid":"sid{namespace}"}}')
        assert isinstance(event, NamespaceConnected)
    session.data_to_send()
    return session


def test_session_answers_ping_with_pong() -> None:
    session = opened_session()
    assert not session.has_data_to_send
    assert session.receive("2") == []
    assert session.receive("2probe") == []
    assert session.has_data_to_send
    assert session.data_to_send() == ["3", "3probe"]
    assert session.data_to_send() == []
    assert not session.has_data_to_send


def test_session_reports_packets_before_open_as_malformed() -> None:
    session = ClientSession()
    [event] = session.receive('42["ev"]')
    assert isinstance(event, Malformed)
    assert session.receive(OPEN)[0] == Opened(parse_open(OPEN[1:]))


def test_session_reports_a_second_open_as_malformed() -> None:
    session = opened_session()
    [event] = session.receive(OPEN)
    assert isinstance(event, Malformed) and "second" in event.reason


def test_session_reports_invalid_open_as_malformed_and_stays_unopened() -> None:
    session = ClientSession()
    [event] = session.receive("0{}")
    assert isinstance(event, Malformed)
    assert session.handshake is None and session.receive_timeout is None


def test_receive_timeout_is_ping_interval_plus_ping_timeout() -> None:
    session = ClientSession()
    assert session.receive_timeout is None
    session.receive('0{"sid":"s","pingInterval":300,"pingTimeout":200}')
    assert session.receive_timeout == pytest.approx(0.5)


def test_connect_namespace_queues_connect_packets_with_optional_auth() -> None:
    session = opened_session()
    session.connect_namespace("/")
    session.connect_namespace("/acme", auth={"token": "t"})
    session.connect_namespace("/acme")  # already pending: no second CONNECT
    assert session.data_to_send() == ["40", '40/acme,{"token":"t"}']
    assert session.pending_namespaces == {"/", "/acme"}
    assert session.connected_namespaces == frozenset()


def test_namespace_connected_moves_from_pending_to_connected_with_its_sid() -> None:
    session = opened_session()
    session.connect_namespace("/acme")
    assert session.receive('40/acme,{"sid":"abc"}') == [NamespaceConnected("/acme", "abc")]
    assert session.connected_namespaces == {"/acme"}
    assert session.pending_namespaces == frozenset()


def test_namespace_refused_reports_the_server_message() -> None:
    session = opened_session()
    session.connect_namespace("/acme")
    events = session.receive('44/acme,{"message":"Invalid namespace"}')
    assert events == [NamespaceRefused("/acme", "Invalid namespace")]
    assert session.pending_namespaces == frozenset()
    assert session.connected_namespaces == frozenset()
    session.connect_namespace("/acme")  # may be asked again after a refusal
    assert session.data_to_send()[-1] == "40/acme,"


def test_server_side_disconnect_of_a_namespace() -> None:
    session = joined_session("/acme")
    assert session.receive("41/acme,") == [NamespaceDisconnected("/acme")]
    assert session.connected_namespaces == {"/"}


def test_disconnect_namespace_sends_41_and_forgets_it() -> None:
    session = joined_session("/acme")
    session.disconnect_namespace("/acme")
    session.disconnect_namespace("/never-joined")  # no-op
    assert session.data_to_send() == ["41/acme,"]
    assert session.connected_namespaces == {"/"}
    # An event still in flight for the namespace we left is dropped.
    [event] = session.receive('42/acme,["late",1]')
    assert isinstance(event, Ignored)


def test_event_is_delivered_with_namespace_name_and_args() -> None:
    session = joined_session("/acme")
    events = session.receive('42/acme,["connection.update",{"state":"open"},2]')
    assert events == [EventReceived("/acme", "connection.update", [{"state": "open"}, 2])]
    assert session.receive('42["root.event"]') == [EventReceived("/", "root.event", [])]


def test_event_asking_for_an_ack_is_delivered_and_not_answered() -> None:
    session = joined_session()
    assert session.receive('4212["ev",1]') == [EventReceived("/", "ev", [1])]
    assert session.data_to_send() == []


def test_ack_from_server_is_ignored() -> None:
    session = joined_session()
    [event] = session.receive("433[1]")
    assert isinstance(event, Ignored)


def test_unsolicited_connect_and_errors_are_ignored() -> None:
    session = joined_session()
    assert isinstance(session.receive('40/other,{"sid":"x"}')[0], Ignored)
    assert isinstance(session.receive('44/other,{"message":"no"}')[0], Ignored)
    assert isinstance(session.receive("41/other,")[0], Ignored)
    assert session.connected_namespaces == {"/"}


@pytest.mark.parametrize("frame", ["", "9", "x", '42["unterminated', "42{}", "42[]", "4"])
def test_malformed_frames_yield_malformed_and_the_session_goes_on(frame: str) -> None:
    session = joined_session()
    [event] = session.receive(frame)
    assert isinstance(event, Malformed)
    assert session.receive('42["ok"]') == [EventReceived("/", "ok", [])]


def test_binary_packets_are_malformed_and_their_attachments_skipped() -> None:
    session = joined_session()
    events = session.receive('452-["ev",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    assert events == [Malformed("binary packets are not supported")]
    assert session.receive(b"\x00\x01") == []
    assert session.receive(b"\x02") == []
    # A binary frame that belongs to nothing is reported.
    [event] = session.receive(b"\x03")
    assert isinstance(event, Malformed)
    assert session.receive('42["after"]') == [EventReceived("/", "after", [])]


def test_upgrade_noop_and_pong_packets_are_ignored() -> None:
    session = opened_session()
    for frame in ("5", "6", "3"):
        [event] = session.receive(frame)
        assert isinstance(event, Ignored)
    assert session.data_to_send() == []


def test_engineio_close_closes_the_session() -> None:
    session = joined_session("/acme")
    [event] = session.receive("1")
    assert isinstance(event, Closed)
    assert session.closed and not session.is_open
    assert session.connected_namespaces == frozenset()
    assert isinstance(session.receive('42["ev"]')[0], Ignored)


def test_client_close_queues_engineio_close_and_stops_sending() -> None:
    session = joined_session("/acme")
    session.close()
    session.connect_namespace("/other")
    session.disconnect_namespace("/acme")
    assert session.data_to_send() == ["1"]


def test_malformed_reason_is_json_serialisable_and_short() -> None:
    session = joined_session()
    [event] = session.receive('42["' + "x" * 10_000)
    assert isinstance(event, Malformed)
    assert len(event.reason) < 150
    json.dumps(event.reason)


# -- hostile frames: receive() keeps its promise -------------------------------------------------


def session_state(session: ClientSession) -> tuple[object, ...]:
    """What a frame may not change when it is dropped as Malformed."""
    return (
        session.handshake,
        session.closed,
        session.connected_namespaces,
        session.pending_namespaces,
        session.receive_timeout,
        tuple(session.data_to_send()),
    )


def assert_one_malformed_and_nothing_else(session: ClientSession, frame: str | bytes) -> Malformed:
    before = session_state(session)
    events = session.receive(frame)
    assert len(events) == 1 and isinstance(events[0], Malformed), events
    assert session_state(session) == before
    # ...and the session goes on.
    if session.connected_namespaces:
        assert session.receive('42["ok"]') == [EventReceived("/", "ok", [])]
    return events[0]


@pytest.mark.parametrize("digit", ["²", "①", "٣", "𝟘"])
def test_unicode_digit_where_an_ack_id_is_expected_is_malformed(digit: str) -> None:
    # "²".isdigit() is True and int("²") raises; int("٣") is 3, which socket.io would never read.
    assert_one_malformed_and_nothing_else(joined_session(), f'42{digit}["x"]')
    assert_one_malformed_and_nothing_else(joined_session("/acme"), f'42/acme,{digit}["x"]')


@pytest.mark.parametrize("digit", ["²", "٣"])
def test_unicode_digit_where_an_attachment_count_is_expected_is_malformed(digit: str) -> None:
    assert_one_malformed_and_nothing_else(joined_session(), f'45{digit}-["x"]')


def test_ack_id_of_thousands_of_digits_is_malformed() -> None:
    # int() refuses more than 4300 digits with a ValueError that is not a ProtocolError.
    reason = assert_one_malformed_and_nothing_else(joined_session(), "42" + "7" * 5000 + '["x"]')
    assert "ack id" in reason.reason and len(reason.reason) < 200


def test_attachment_count_of_thousands_of_digits_is_malformed() -> None:
    assert_one_malformed_and_nothing_else(joined_session(), "45" + "7" * 5000 + '-["x"]')


def test_ack_id_is_a_javascript_safe_integer() -> None:
    session = joined_session()
    assert decode_socketio(f'2{2**53 - 1}["x"]').ack_id == 2**53 - 1
    assert_one_malformed_and_nothing_else(session, f'42{2**53}["x"]')
    assert_one_malformed_and_nothing_else(session, "42" + "0" * 17 + '["x"]')


def test_arrays_nested_a_thousand_deep_in_an_event_are_malformed() -> None:
    # json raises RecursionError (not ValueError) around 1000 levels.
    frame = '42["x",' + "[" * 1000 + "]" * 1000 + "]"
    reason = assert_one_malformed_and_nothing_else(joined_session(), frame)
    assert "deeper" in reason.reason


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000, 100_000])
def test_nesting_beyond_the_limit_is_malformed(depth: int) -> None:
    objects = '42["x",' + '{"a":' * depth + "1" + "}" * depth + "]"
    assert_one_malformed_and_nothing_else(joined_session(), objects)
    unbalanced = '42["x",' + "[" * depth
    assert_one_malformed_and_nothing_else(joined_session(), unbalanced)


def test_nesting_up_to_the_limit_is_delivered_and_brackets_in_strings_do_not_count() -> None:
    session = joined_session()
    nested: object = []
    for _ in range(MAX_JSON_DEPTH - 2):  # with the event's own list: MAX_JSON_DEPTH levels
        nested = [nested]
    [event] = session.receive("42" + json.dumps(["x", nested]))
    assert event == EventReceived("/", "x", [nested])
    assert_one_malformed_and_nothing_else(session, "42" + json.dumps(["x", [nested]]))
    text = "[" * 5000 + '\\"{'
    assert session.receive("42" + json.dumps(["x", text])) == [EventReceived("/", "x", [text])]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_an_event_are_malformed(constant: str) -> None:
    # JSON.stringify never writes them; Python's json would read them.
    assert_one_malformed_and_nothing_else(joined_session(), f'42["x",{constant}]')


def test_integer_of_thousands_of_digits_in_an_event_is_malformed() -> None:
    assert_one_malformed_and_nothing_else(joined_session(), '42["x",' + "9" * 5000 + "]")


@pytest.mark.parametrize("frame", [b"\x00", bytearray(b"\x01"), "", "\udc80", "4\ud800"])
def test_odd_frames_before_the_handshake_are_malformed(frame: str | bytes) -> None:
    assert_one_malformed_and_nothing_else(ClientSession(), frame)


def test_an_unexpected_error_while_decoding_is_one_malformed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = joined_session()

    def broken(text: str, **kwargs: Any) -> SocketIOPacket:
        raise RuntimeError("secret-bearing message that must not be shown")

    monkeypatch.setattr("whatsapp_operator.socketio.codec.decode_socketio", broken)
    [event] = session.receive('42["x"]')
    assert isinstance(event, Malformed)
    assert "RuntimeError" in event.reason and "secret" not in event.reason


# -- handshake numbers ---------------------------------------------------------------------------


def open_frame(**fields: object) -> str:
    body: dict[str, object] = {
        "sid": "eio-1",
        "upgrades": [],
        "pingInterval": 25000,
        "pingTimeout": 20000,
        "maxPayload": 1000000,
    }
    body.update(fields)
    return "0" + json.dumps({k: v for k, v in body.items() if v is not MISSING})


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def short_id(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} chars)"


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("pingInterval", float("inf"), "Infinity"),
        ("pingInterval", float("nan"), "NaN"),
        ("pingInterval", 10**400, "1000000000"),  # float() overflows
        ("pingInterval", 3_600_000, "3600000"),  # an hour: the watchdog would be off in practice
        ("pingInterval", 0.5, "0.5"),
        ("pingInterval", -1, "-1"),
        ("pingInterval", True, "true"),
        ("pingInterval", "25000", '"25000"'),
        ("pingInterval", None, "null"),
        ("pingInterval", MISSING, "nothing"),
        ("pingTimeout", float("-inf"), "-Infinity"),
        ("pingTimeout", 10**30, "1000000000"),
        ("pingTimeout", [], "[]"),
        ("maxPayload", 10**400, "1000000000"),  # int(float(...)) overflowed
        ("maxPayload", float("inf"), "Infinity"),
        ("maxPayload", float("nan"), "NaN"),
        ("maxPayload", 2**53, str(2**53)),
        ("maxPayload", 0, "0"),
        ("maxPayload", 1e6, "1000000.0"),
        ("maxPayload", False, "false"),
    ],
    ids=short_id,
)
def test_unusable_handshake_numbers_refuse_the_handshake(key: str, value: object, shown: str) -> None:
    session = ClientSession()
    session.connect_namespace("/")
    events = session.receive(open_frame(**{key: value}))
    assert len(events) == 1 and isinstance(events[0], HandshakeRefused), events
    reason = events[0].reason
    assert key in reason and shown in reason and len(reason) < 200
    # The session is over: no handshake, nothing more is read, the watchdog is not switched off.
    assert session.closed and not session.is_open and session.handshake is None
    assert session.pending_namespaces == frozenset()
    assert isinstance(session.receive('40{"sid":"x"}')[0], Ignored)
    with pytest.raises(HandshakeError):
        parse_open(open_frame(**{key: value})[1:])


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"pingInterval": 1, "pingTimeout": 1}, (0.001, 0.001)),
        ({"pingInterval": 600_000, "pingTimeout": 600_000}, (600.0, 600.0)),
        ({"pingInterval": 2.5, "pingTimeout": 1e3}, (0.0025, 1.0)),
    ],
)
def test_handshake_numbers_at_the_bounds_are_accepted(fields: dict[str, object], expected: tuple[float, float]) -> None:
    info = parse_open(open_frame(**fields, maxPayload=2**53 - 1)[1:])
    assert (info.ping_interval, info.ping_timeout, info.max_payload) == (*expected, 2**53 - 1)
    assert (MIN_PING_MS, MAX_PING_MS, MAX_PAYLOAD_LIMIT) == (1, 600_000, 2**53 - 1)


def test_refused_handshake_value_is_shown_short_and_redacted() -> None:
    register_secret("handshake-secret-4321")
    [event] = ClientSession(redact=redact).receive(open_frame(pingInterval="handshake-secret-4321"))
    assert isinstance(event, HandshakeRefused)
    assert "handshake-secret" not in event.reason and "***" in event.reason
    [event] = ClientSession(redact=redact).receive(open_frame(pingInterval="x" * 10_000))
    assert isinstance(event, HandshakeRefused) and len(event.reason) < 200


# -- redaction before truncation -----------------------------------------------------------------

STRADDLING = "straddling-secret-0123456789"


def test_protocol_error_preview_masks_a_secret_straddling_the_cut() -> None:
    register_secret(STRADDLING)
    # The preview shows the first 40 characters; the secret starts 10 before the cut.
    packet = "2" + "y" * 29 + STRADDLING + "{"
    with pytest.raises(ProtocolError) as caught:
        decode_socketio(packet, redact=redact)
    message = str(caught.value)
    assert STRADDLING[:6] not in message
    assert "***" in message


def test_refusal_message_masks_a_secret_straddling_the_cut() -> None:
    register_secret(STRADDLING)
    session = opened_session(redact=redact)
    session.connect_namespace("/acme")
    message = "m" * 190 + STRADDLING + " and more"
    [event] = session.receive("44/acme," + json.dumps({"message": message}))
    assert isinstance(event, NamespaceRefused)
    assert STRADDLING[:6] not in event.message
    assert event.message == "m" * 190 + "*** and mo"  # redacted, then cut at 200


# -- redaction is the caller's -------------------------------------------------------------------

SESSION_SECRET = "session-secret-2468"


def test_session_given_redact_shows_no_secret_in_malformed_previews_or_reasons() -> None:
    register_secret(SESSION_SECRET)
    session = ClientSession(redact=redact)
    events = [
        *session.receive("9" + SESSION_SECRET),  # unknown Engine.IO packet type
        *session.receive('0["' + SESSION_SECRET + '"]'),  # OPEN that is not an object
        *session.receive(OPEN),
        *session.receive("49" + SESSION_SECRET),  # unknown Socket.IO packet type
        *session.receive('42["x","' + SESSION_SECRET),  # invalid JSON
        *session.receive('42"' + SESSION_SECRET + '"'),  # EVENT payload not a list
    ]
    session.connect_namespace("/acme")
    events += session.receive('44/acme,{"message":"no ' + SESSION_SECRET + '"}')
    events += ClientSession(redact=redact).receive(open_frame(pingInterval=SESSION_SECRET))

    malformed = [event for event in events if isinstance(event, Malformed)]
    assert len(malformed) == 5
    assert all("***" in event.reason for event in malformed)
    assert [type(event) for event in events if not isinstance(event, Malformed)] == [
        Opened,
        NamespaceRefused,
        HandshakeRefused,
    ]
    assert all(SESSION_SECRET not in repr(event) for event in events)
    assert all("***" in repr(event) for event in events if not isinstance(event, Opened))

    # The module-level functions take the same parameter.
    for decode, text in [
        (decode_engineio, "9" + SESSION_SECRET),
        (decode_socketio, '2["x","' + SESSION_SECRET),
        (parse_open, '["' + SESSION_SECRET + '"]'),
    ]:
        with pytest.raises(ProtocolError) as caught:
            decode(text, redact=redact)
        assert SESSION_SECRET not in str(caught.value) and "***" in str(caught.value)


def test_session_masks_nothing_unless_given_redact() -> None:
    # The codec knows no secrets of its own: without `redact` a preview shows the frame as it came.
    register_secret(SESSION_SECRET)
    [event] = ClientSession().receive("9" + SESSION_SECRET)
    assert isinstance(event, Malformed) and SESSION_SECRET in event.reason
    with pytest.raises(ProtocolError) as caught:
        decode_socketio('2["x","' + SESSION_SECRET)
    assert SESSION_SECRET in str(caught.value)
    # Any Callable[[str], str] will do.
    [event] = ClientSession(redact=lambda text: text.replace("secret", "[hidden]")).receive("9" + SESSION_SECRET)
    assert isinstance(event, Malformed) and "session-[hidden]-2468" in event.reason
