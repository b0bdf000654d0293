"""The Socket.IO connection's own frame reader against websockets' parser (docs/websockets.md §4).

The connection hands whole text frames to the Socket.IO session without websockets' parser and
gives websockets every other frame whole. Whatever the server sends, cut into whatever pieces TCP
delivers, the client must see what websockets alone would have shown: the same messages in the
same order, the same answers (pongs, close frames) and the same end of the connection. The
property drives one connection with the reader and one without (`reads_frames` False) over the same
bytes and compares the two.

The budget comes from the hypothesis profile (tests/conftest.py), never from @settings here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.uri import parse_uri

from whatsapp_operator.socketio import client as socketio_client
from whatsapp_operator.socketio.client import _PushingConnection

pytestmark = pytest.mark.properties

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# websockets' log of the connection, not at debug level: with it, websockets reads every frame itself.
QUIET = logging.getLogger("test_socketio_frames.wire")
QUIET.setLevel(logging.INFO)
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class RecordingTransport(asyncio.Transport):
    """What a socket would be to the connection: records what it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.eof_written = False
        self.lost: Callable[[Exception | None], None] | None = None  # the connection's connection_lost

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        # As a socket does: the connection hears of it one step of the loop later.
        if not self.closing and self.lost is not None:
            asyncio.get_running_loop().call_soon(self.lost, None)
        self.closing = True

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def server_frame(opcode: int, payload: bytes, *, fin: bool = True, length_form: int = 0, first_bits: int = 0) -> bytes:
    """One frame as a server sends it (unmasked). `length_form` 0: the shortest header; 126 or 127:
    that longer form whatever the length (RFC 6455 does not forbid it to the reader)."""
    first = (0x80 if fin else 0) | first_bits | opcode
    n = len(payload)
    if length_form == 127 or n > 0xFFFF:
        head = bytes([first, 127]) + n.to_bytes(8, "big")
    elif length_form == 126 or n > 125:
        head = bytes([first, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, n])
    return head + payload


def client_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """The frames the client wrote (masked, as clients must): opcode, fin and unmasked payload."""
    frames = []
    offset = 0
    while offset < len(data):
        first, second = data[offset], data[offset + 1]
        length, offset = second & 0x7F, offset + 2
        if length == 126:
            length, offset = int.from_bytes(data[offset : offset + 2], "big"), offset + 2
        elif length == 127:
            length, offset = int.from_bytes(data[offset : offset + 8], "big"), offset + 8
        mask, offset = data[offset : offset + 4], offset + 4
        payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(data[offset : offset + length]))
        frames.append((first & 0x0F, bool(first & 0x80), payload))
        offset += length
    return frames


@dataclass
class Seen:
    """What the operator's side saw of one connection."""

    messages: list[tuple[str, Any]] = field(default_factory=list)
    sent: list[tuple[int, bool, bytes]] = field(default_factory=list)
    end: tuple[Any, ...] = ()


async def follow(
    stream: bytes,
    cuts: list[int],
    *,
    reads_frames: bool,
    max_size: Any,
    eof: bool,
    spy: Callable[[Any], None] | None = None,
    cuts_after_answer: bool = False,
) -> Seen:
    """Feed the handshake answer and the server's bytes after it, cut at `cuts` (positions in the
    whole, or in `stream` with the answer a piece of its own), to one connection."""
    protocol = ClientProtocol(parse_uri("ws://evolution.test/socket.io/"), max_size=max_size, logger=QUIET)
    connection = _PushingConnection(protocol, ping_interval=None, ping_timeout=None, close_timeout=0.01, max_queue=None)
    connection.reads_frames = reads_frames
    transport = RecordingTransport()
    connection.connection_made(transport)
    transport.lost = connection.connection_lost
    if spy is not None:
        spy(protocol)
    seen = Seen()
    connection.on_text = lambda text: seen.messages.append(("pushed", text))
    handshake = asyncio.ensure_future(connection.handshake())
    await asyncio.sleep(0)
    request, _, _ = bytes(transport.written).partition(b"\r\n\r\n")
    del transport.written[:]
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        + accept
        + b"\r\n\r\n"
    )
    data = answer + stream
    if cuts_after_answer:
        cuts = [len(answer), *(len(answer) + cut for cut in cuts)]
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(points):
        if not transport.closing:
            connection.data_received(data[start:end])
    if eof and not transport.closing:
        connection.eof_received()
    await handshake
    while connection.queued:
        try:
            message = await asyncio.wait_for(connection.recv(), 1)
        except ConnectionClosed as closed:
            seen.messages.append(("recv ended", closed.rcvd.code if closed.rcvd else None))
            break
        connection.queued -= 1
        seen.messages.append(("queued", message))
    seen.sent = client_frames(bytes(transport.written))
    close_rcvd = protocol.close_rcvd
    close_sent = protocol.close_sent
    seen.end = (
        protocol.state,
        close_rcvd and (close_rcvd.code, close_rcvd.reason),
        close_sent and close_sent.code,
        repr(protocol.parser_exc),
        transport.closing,
        transport.eof_written,
    )
    transport.close()
    await asyncio.sleep(0)
    return seen


# -- what a server may send ------------------------------------------------------------------------

LENGTH_FORMS = st.sampled_from([0, 0, 0, 126, 127])
UTF8_TEXT = st.text(max_size=300).map(lambda text: text.encode())
PAYLOAD = st.binary(max_size=300)
SHORT = st.binary(max_size=125)


@st.composite
def whole_message(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["text", "text", "text", "binary", "ping", "pong", "not utf-8"]))
    form = draw(LENGTH_FORMS)
    if kind == "text":
        return server_frame(TEXT, draw(UTF8_TEXT), length_form=form)
    if kind == "binary":
        return server_frame(BINARY, draw(PAYLOAD), length_form=form)
    if kind == "not utf-8":
        return server_frame(
            TEXT, b"42[" + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82"])) + b"]"
        )
    return server_frame(PING if kind == "ping" else PONG, draw(SHORT), length_form=form)


@st.composite
def fragmented_message(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    whole = draw(UTF8_TEXT if opcode == TEXT else PAYLOAD)
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), min_size=1, max_size=3)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=False)]
    frames = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        frames.append(server_frame(opcode if index == 0 else CONTINUATION, piece, fin=last))
        if not last and draw(st.booleans()):
            frames.append(server_frame(PING, draw(SHORT)))
    return b"".join(frames)


# Last frames that end the connection, cleanly or not (256 bytes is the smallest limit drawn below).
ENDINGS = {
    "close": server_frame(CLOSE, (1000).to_bytes(2, "big") + b"bye"),
    "close with a bad code": server_frame(CLOSE, (999).to_bytes(2, "big")),
    "masked text": bytes([0x81, 0x80 | 4]) + b"\x01\x02\x03\x04" + b"abcd",
    "reserved bit 1": server_frame(TEXT, b"42[]", first_bits=0x40),
    "reserved bit 3": server_frame(TEXT, b"42[]", first_bits=0x10),
    "unknown opcode": server_frame(0x3, b"x"),
    "unknown control opcode": server_frame(0xB, b"x"),
    "text too long": server_frame(TEXT, b"a" * 400),
    "binary too long": server_frame(BINARY, b"a" * 400),
    "ping too long": server_frame(PING, b"p" * 126),
    "fragmented ping": server_frame(PING, b"p", fin=False),
    "continuation alone": server_frame(CONTINUATION, b"x"),
    "text inside a fragmented message": server_frame(TEXT, b"4", fin=False) + server_frame(TEXT, b"2[]"),
    "fragments over the message limit": b"".join(
        server_frame(BINARY if n == 0 else CONTINUATION, b"b" * 90, fin=n == 3) for n in range(4)
    ),
    "ping over the fragment limit": server_frame(PING, b"p" * 120),
    "masked, the header alone": bytes([0x82, 0x80 | 100]),
}


@st.composite
def server_stream(draw: st.DrawFn) -> bytes:
    messages = st.lists(st.one_of(whole_message(), whole_message(), fragmented_message()), max_size=6)
    before, after = draw(messages), draw(messages)
    ending = draw(st.sampled_from([b"", b"", *ENDINGS.values()]))
    if ending and draw(st.booleans()):
        return b"".join(before) + ending[: draw(st.integers(1, len(ending) - 1))]  # the stream stops inside it
    noise = draw(st.sampled_from([b"", b"", b"\x81", b"\x81\x7e\x00", b"\x82\x7f" + bytes(8)]))
    return b"".join(before) + ending + b"".join(after) + noise


SERVER_STREAM = server_stream()
MAX_SIZES = st.sampled_from([None, 256, (300, 100), 2**20])


@given(stream=SERVER_STREAM, cuts=st.lists(st.integers(0, 10_000), max_size=6), max_size=MAX_SIZES, eof=st.booleans())
def test_the_frame_reader_shows_what_websockets_shows(stream: bytes, cuts: list[int], max_size: Any, eof: bool) -> None:
    async def both() -> tuple[Seen, Seen]:
        ours = await follow(stream, cuts, reads_frames=True, max_size=max_size, eof=eof)
        theirs = await follow(stream, cuts, reads_frames=False, max_size=max_size, eof=eof)
        return ours, theirs

    ours, theirs = asyncio.run(both())
    # A message websockets queued for recv() may be pushed by the reader instead: what counts is
    # what the session receives, in order.
    assert [text for _, text in ours.messages] == [text for _, text in theirs.messages]
    assert [how for how, _ in ours.messages if how == "recv ended"] == [
        how for how, _ in theirs.messages if how == "recv ended"
    ]
    assert ours.sent == theirs.sent
    assert ours.end == theirs.end


@pytest.mark.parametrize("cut_short", [False, True])
@pytest.mark.parametrize("name", sorted(ENDINGS))
@pytest.mark.parametrize("max_size", [256, (300, 100)])
async def test_each_way_to_end_shows_what_websockets_shows(name: str, cut_short: bool, max_size: Any) -> None:
    prelude = server_frame(TEXT, b'42["before",1]') + server_frame(PING, b"p") + server_frame(TEXT, b'42["before",2]')
    # Cut short, the stream stops inside the last frame, and may end there.
    ending = ENDINGS[name][:-1] if cut_short else ENDINGS[name] + server_frame(TEXT, b'42["after",3]')
    stream = prelude + ending
    starts = [0, 16, 19, 35]
    for eof in (False, True) if cut_short else (False,):
        ours = await follow(stream, starts, reads_frames=True, max_size=max_size, eof=eof, cuts_after_answer=True)
        theirs = await follow(stream, starts, reads_frames=False, max_size=max_size, eof=eof, cuts_after_answer=True)
        assert [text for _, text in ours.messages] == [text for _, text in theirs.messages]
        assert ours.sent == theirs.sent
        assert ours.end == theirs.end


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("form", [0, 126, 127])
async def test_every_length_form_is_read(length: int, form: int) -> None:
    if form == 126 and length > 0xFFFF:
        return  # does not fit: server_frame uses the 64-bit form, tested with form 127
    text = "42" + "x" * max(0, length - 2)
    stream = server_frame(TEXT, text.encode()[:length], length_form=form) + server_frame(TEXT, b'42["next"]')
    seen = await follow(stream, [0], reads_frames=True, max_size=2**20, eof=False, cuts_after_answer=True)
    assert seen.messages == [("pushed", text[:length]), ("pushed", '42["next"]')]


# -- the reader is the one reading -----------------------------------------------------------------


def counting_receive_data(calls: list[int]) -> Callable[[Any], None]:
    def spy(protocol: Any) -> None:
        original = protocol.receive_data

        def receive_data(data: bytes) -> None:
            calls.append(len(data))
            original(data)

        protocol.receive_data = receive_data

    return spy


def texts_and_a_ping() -> tuple[bytes, list[int]]:
    frames = [server_frame(TEXT, f'42["qrcode.updated",{{"n":{n}}}]'.encode()) for n in range(10)]
    frames.insert(5, server_frame(PING, b"p"))
    stream = b"".join(frames)
    return stream, [len(b"".join(frames[:index])) for index in range(len(frames))]


TEXTS = [f'42["qrcode.updated",{{"n":{n}}}]' for n in range(10)]


async def follow_texts_and_a_ping() -> tuple[Seen, list[int]]:
    """Ten events and a ping, each frame in a piece of its own after the handshake answer; also the
    sizes of what websockets' parser was fed."""
    stream, frame_starts = texts_and_a_ping()
    calls: list[int] = []
    seen = await follow(
        stream,
        frame_starts,
        reads_frames=True,
        max_size=2**20,
        eof=False,
        spy=counting_receive_data(calls),
        cuts_after_answer=True,
    )
    return seen, calls


async def test_whole_text_frames_bypass_websockets_parser_and_a_ping_still_gets_its_pong() -> None:
    seen, calls = await follow_texts_and_a_ping()
    assert seen.messages == [("pushed", text) for text in TEXTS]
    assert seen.sent == [(PONG, True, b"p")]
    assert len(calls) == 2  # the handshake answer and the ping: not one of the texts


async def test_frames_arriving_byte_by_byte_are_read_whole() -> None:
    stream, _ = texts_and_a_ping()
    stream += server_frame(TEXT, ("42" + "é" * 200).encode(), length_form=127)
    seen = await follow(
        stream, list(range(1, len(stream))), reads_frames=True, max_size=2**20, eof=False, cuts_after_answer=True
    )
    expected = [*TEXTS, "42" + "é" * 200]
    assert seen.messages == [("pushed", text) for text in expected]
    assert seen.sent == [(PONG, True, b"p")]


async def test_with_websockets_debug_log_on_websockets_reads_and_logs_every_frame() -> None:
    QUIET.setLevel(logging.DEBUG)
    try:
        seen, calls = await follow_texts_and_a_ping()
    finally:
        QUIET.setLevel(logging.INFO)
    assert [text for _, text in seen.messages] == TEXTS
    assert len(calls) == 12  # the answer and every frame


async def test_a_websockets_parser_of_another_shape_is_left_to_read_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socketio_client, "_AT_EOF_CODE", None)
    seen, calls = await follow_texts_and_a_ping()
    assert [text for _, text in seen.messages] == TEXTS
    assert seen.sent == [(PONG, True, b"p")]
    assert len(calls) == 12  # the answer and every frame
