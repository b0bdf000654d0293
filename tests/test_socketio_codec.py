"""The Engine.IO v4 / Socket.IO v5 codec and the client session state machine, sans-I/O."""

from __future__ import annotations

import json

import pytest

from whatsapp_operator.redaction import register_secret
from whatsapp_operator.socketio import (
    ClientSession,
    Closed,
    EngineIOPacket,
    EngineIOPacketType,
    EventReceived,
    HandshakeInfo,
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
OPEN = (
    '0{"sid":"eio-1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
)


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
            SocketIOPacket(
                SIO.BINARY_EVENT, "/a", ["ev", {"_placeholder": True, "num": 0}], attachments=1
            ),
            '51-/a,["ev",{"_placeholder":true,"num":0}]',
        ),
        (
            SocketIOPacket(
                SIO.BINARY_ACK, data=[{"_placeholder": True, "num": 0}], ack_id=4, attachments=1
            ),
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
        decode_socketio('2{"apikey":"codec-secret-1234"')
    assert "codec-secret-1234" not in str(caught.value)


@pytest.mark.parametrize("namespace", ["acme", "/a,b"])
def test_encode_refuses_namespaces_that_cannot_be_encoded(namespace: str) -> None:
    with pytest.raises(ValueError):
        encode_socketio(SocketIOPacket(SIO.CONNECT, namespace))


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode_socketio(SocketIOPacket(SIO.EVENT, data=["ev", float("nan")]))


# -- ClientSession -----------------------------------------------------------------------------


def opened_session() -> ClientSession:
    session = ClientSession()
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
    assert session.receive("2") == []
    assert session.receive("2probe") == []
    assert session.data_to_send() == ["3", "3probe"]
    assert session.data_to_send() == []


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
    events = session.receive(
        '452-["ev",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    )
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
