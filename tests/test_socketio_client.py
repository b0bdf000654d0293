"""SocketIOClient against a real python-socketio server (aiohttp) on 127.0.0.1.

The server stands in for Evolution API: per-instance namespaces can be made to refuse with
"Invalid namespace" until they "exist", and an aiohttp middleware refuses the websocket upgrade
without the right `apikey`, as Evolution 2.3.3+ does (docs/evolution-api.md §4.2, §4.2).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

import whatsapp_operator.socketio
from whatsapp_operator.backoff import Backoff
from whatsapp_operator.redaction import redact, register_secret
from whatsapp_operator.socketio import SocketIOClient, build_socketio_url, describe_failure

TIMEOUT = 5.0


# -- stand-ins -----------------------------------------------------------------------------------


class RecordingListener:
    """Records every callback; `expect()` awaits the next one of a kind."""

    def __init__(self) -> None:
        self.history: list[tuple[Any, ...]] = []
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.fail_on_event: str | None = None

    def _record(self, *item: Any) -> None:
        self.history.append(item)
        self._queue.put_nowait(item)

    def on_connected(self) -> None:
        self._record("connected")

    def on_disconnected(self, reason: str) -> None:
        self._record("disconnected", reason)

    def on_namespace_connected(self, namespace: str) -> None:
        self._record("namespace_connected", namespace)

    def on_event(self, namespace: str, name: str, args: list[Any]) -> None:
        self._record("event", namespace, name, args)
        if name == self.fail_on_event:
            raise RuntimeError("listener bug")

    async def expect(self, kind: str) -> tuple[Any, ...]:
        """The next callback of `kind`, skipping others (they stay in `history`)."""

        async def next_of_kind() -> tuple[Any, ...]:
            while True:
                item = await self._queue.get()
                if item[0] == kind:
                    return item

        return await asyncio.wait_for(next_of_kind(), TIMEOUT)


@dataclass
class FakeEvolution:
    sio: socketio.AsyncServer
    base_url: str = ""
    accepting: set[str] = field(default_factory=set)  # namespaces that "exist" besides "/"
    api_key: str | None = None
    reject_status: int = 400
    joins: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)
    refusals: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    leaves: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)
    rejected_handshakes: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def root_sid(self) -> str:
        """The sid of the next client joining "/"."""
        while True:
            namespace, sid = await asyncio.wait_for(self.joins.get(), TIMEOUT)
            if namespace == "/":
                return sid

    def eio_sid(self, sid: str) -> str:
        return str(self.sio.manager.eio_sid_from_sid(sid, "/"))


@pytest.fixture
async def evolution() -> AsyncIterator[FakeEvolution]:
    sio = socketio.AsyncServer(async_mode="aiohttp", namespaces="*")
    server = FakeEvolution(sio)

    @sio.on("connect", namespace="*")
    async def connect(namespace: str, sid: str, environ: dict[str, Any], auth: Any) -> None:
        if namespace != "/" and namespace not in server.accepting:
            server.refusals.put_nowait(namespace)
            raise socketio.exceptions.ConnectionRefusedError("Invalid namespace")
        server.joins.put_nowait((namespace, sid))

    @sio.on("disconnect", namespace="*")
    async def disconnect(namespace: str, sid: str, reason: str) -> None:
        server.leaves.put_nowait((namespace, sid))

    @web.middleware
    async def require_apikey(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/socket.io/") and server.api_key is not None:
            given = request.query.get("apikey")
            if given != server.api_key:
                server.rejected_handshakes.put_nowait(given or "")
                body = (
                    "apiKey is required"
                    if server.reject_status == 400
                    else json.dumps({"code": 4, "message": "Invalid global token"})
                )
                return web.Response(status=server.reject_status, text=body)
        return await handler(request)

    app = web.Application(middlewares=[require_apikey])
    sio.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def fast_client(base_url: str, listener: RecordingListener, **kwargs: Any) -> SocketIOClient:
    return SocketIOClient(
        base_url,
        listener=listener,
        backoff=Backoff(initial=0.01, maximum=0.05),
        namespace_backoff=Backoff(initial=0.01, maximum=0.05),
        open_timeout=2.0,
        **kwargs,
    )


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[SocketIOClient], None]]:
    """Starts clients' run() and closes them at the end of the test."""
    started: list[tuple[SocketIOClient, asyncio.Task[None]]] = []

    def start(client: SocketIOClient) -> None:
        started.append((client, asyncio.create_task(client.run())))

    yield start
    for client, task in started:
        await asyncio.wait_for(client.close(), TIMEOUT)
        await asyncio.wait_for(task, TIMEOUT)


# -- connection and events -----------------------------------------------------------------------


async def test_connects_joins_root_and_delivers_events(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    client = fast_client(evolution.base_url, listener)
    running(client)
    await listener.expect("connected")
    await evolution.root_sid()
    assert client.state == "connected"

    await evolution.sio.emit("connection.update", {"state": "open"}, namespace="/")
    await evolution.sio.emit("two.args", ("a", 1), namespace="/")
    assert await listener.expect("event") == (
        "event",
        "/",
        "connection.update",
        [{"state": "open"}],
    )
    assert await listener.expect("event") == ("event", "/", "two.args", ["a", 1])
    assert client.stats.connects == 1 and client.stats.reconnects == 0
    assert client.stats.events_received == {"connection.update": 1, "two.args": 1}


async def test_wait_connected_resolves_once_the_root_namespace_is_joined(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    client = fast_client(evolution.base_url, listener)
    assert client.state == "disconnected"
    running(client)
    await asyncio.wait_for(client.wait_connected(), TIMEOUT)
    assert client.state == "connected"
    assert listener.history[0] == ("connected",)


async def test_namespace_is_retried_until_the_server_accepts_it(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    client = fast_client(evolution.base_url, listener)
    client.add_namespace("/acme")
    running(client)
    await listener.expect("connected")

    # Evolution has not emitted on /acme yet: refused, and asked again.
    for _ in range(2):
        assert await asyncio.wait_for(evolution.refusals.get(), TIMEOUT) == "/acme"
    assert client.connected_namespaces == frozenset()
    assert client.state == "connected"  # the rest of the connection is unaffected

    evolution.accepting.add("/acme")
    assert await listener.expect("namespace_connected") == ("namespace_connected", "/acme")
    assert client.connected_namespaces == {"/acme"}
    assert client.stats.namespace_refusals >= 2

    await evolution.sio.emit("qrcode.updated", {"qr": "x"}, namespace="/acme")
    assert await listener.expect("event") == ("event", "/acme", "qrcode.updated", [{"qr": "x"}])


async def test_namespace_added_while_connected_is_joined_at_once(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    evolution.accepting.add("/acme")
    client = fast_client(evolution.base_url, listener)
    running(client)
    await listener.expect("connected")
    client.add_namespace("/acme")
    assert await listener.expect("namespace_connected") == ("namespace_connected", "/acme")
    assert client.namespaces == {"/acme"}


async def test_remove_namespace_leaves_it_on_the_server(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    evolution.accepting.add("/acme")
    client = fast_client(evolution.base_url, listener)
    client.add_namespace("/acme")
    running(client)
    await listener.expect("namespace_connected")

    client.remove_namespace("/acme")
    namespace, _ = await asyncio.wait_for(evolution.leaves.get(), TIMEOUT)
    assert namespace == "/acme"
    assert client.namespaces == frozenset() and client.connected_namespaces == frozenset()

    # Events on the namespace left are not delivered; the root still is.
    await evolution.sio.emit("qrcode.updated", {}, namespace="/acme")
    await evolution.sio.emit("marker", namespace="/")
    assert await listener.expect("event") == ("event", "/", "marker", [])


async def test_remove_namespace_stops_retrying_it(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    client = fast_client(evolution.base_url, listener)
    client.add_namespace("/acme")
    client.add_namespace("/other")
    running(client)
    await listener.expect("connected")
    assert await asyncio.wait_for(evolution.refusals.get(), TIMEOUT) in {"/acme", "/other"}

    client.remove_namespace("/acme")
    # At most one CONNECT for /acme was already in flight; after it, only /other is asked for.
    after = [await asyncio.wait_for(evolution.refusals.get(), TIMEOUT) for _ in range(6)]
    assert after.count("/acme") <= 1
    assert after[-4:] == ["/other"] * 4
    assert client.namespaces == {"/other"}


# -- reconnection --------------------------------------------------------------------------------


async def test_server_disconnecting_the_client_leads_to_a_reconnect_and_rejoin(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    evolution.accepting.add("/acme")
    client = fast_client(evolution.base_url, listener)
    client.add_namespace("/acme")
    running(client)
    sid = await evolution.root_sid()
    await listener.expect("namespace_connected")

    await evolution.sio.disconnect(sid)
    _, reason = await listener.expect("disconnected")
    assert "root namespace" in reason
    await listener.expect("connected")
    assert await listener.expect("namespace_connected") == ("namespace_connected", "/acme")
    assert client.stats.reconnects == 1 and client.stats.disconnects == 1


async def test_engineio_close_from_server_leads_to_a_reconnect(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    client = fast_client(evolution.base_url, listener)
    running(client)
    sid = await evolution.root_sid()
    await listener.expect("connected")

    await evolution.sio.eio.disconnect(evolution.eio_sid(sid))
    _, reason = await listener.expect("disconnected")
    assert "closed" in reason
    await listener.expect("connected")
    assert client.state == "connected"
    assert client.stats.connects == 2


async def test_server_restart_on_the_same_port_leads_to_a_reconnect(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    async def start_server(port: int) -> web.AppRunner:
        sio = socketio.AsyncServer(async_mode="aiohttp")
        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = await start_server(0)
    port = runner.addresses[0][1]
    client = fast_client(f"http://127.0.0.1:{port}", listener)
    running(client)
    await listener.expect("connected")

    await runner.cleanup()  # Evolution goes away...
    await listener.expect("disconnected")
    runner = await start_server(port)  # ...and comes back
    try:
        await listener.expect("connected")
        assert client.stats.reconnects == 1
    finally:
        await client.close()
        await runner.cleanup()


async def test_unreachable_server_is_retried_with_a_readable_reason(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    # Bind then close a socket to find a port nothing listens on.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()

    client = fast_client(f"http://127.0.0.1:{port}", listener)
    running(client)
    for _ in range(2):
        _, reason = await listener.expect("disconnected")
        assert reason.startswith("cannot reach the server")
    assert client.state != "connected"
    assert client.stats.failed_connects >= 2 and client.stats.connects == 0


# -- handshake authentication --------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403])
async def test_refused_handshake_is_retried_without_leaking_the_key(
    status: int,
    evolution: FakeEvolution,
    listener: RecordingListener,
    running: Callable[[SocketIOClient], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = f"wrong-key-{status}-5678"
    evolution.api_key = "the-right-key-1234"
    evolution.reject_status = status
    # The client registers nothing itself: the caller makes the key known to its redact function.
    register_secret(secret)
    client = fast_client(evolution.base_url, listener, query={"apikey": secret}, redact=redact)
    running(client)

    for _ in range(2):
        assert await asyncio.wait_for(evolution.rejected_handshakes.get(), TIMEOUT) == secret
        _, reason = await listener.expect("disconnected")
        assert f"handshake refused by the server (HTTP {status})" in reason
    last_error = client.stats.last_error
    assert last_error is not None and "refused" in last_error
    assert secret not in last_error
    expected_message = "apiKey is required" if status == 400 else "Invalid global token"
    assert expected_message in last_error
    assert client.state != "connected"

    # The server now accepts that key (e.g. fixed in Evolution): the client gets in by itself.
    evolution.api_key = secret
    await listener.expect("connected")

    # The client's own logs, websockets' wire log included (the test server's access log is not ours).
    client_logs = [r.getMessage() for r in caplog.records if r.name.startswith(("whatsapp_", "websockets"))]
    assert any("apikey=***" in message for message in client_logs)
    assert all(secret not in message for message in client_logs)
    assert all(secret not in str(item) for item in listener.history)


async def test_right_key_connects_and_is_sent_in_the_query(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    evolution.api_key = "the-right-key-1234"
    client = fast_client(evolution.base_url, listener, query={"apikey": "the-right-key-1234"})
    running(client)
    await listener.expect("connected")
    assert evolution.rejected_handshakes.empty()
    assert client.stats.failed_connects == 0


async def test_missing_socketio_endpoint_says_so(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    app = web.Application()  # like Evolution with WEBSOCKET_ENABLED=false: 404 on /socket.io/
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        client = fast_client(f"http://127.0.0.1:{runner.addresses[0][1]}", listener)
        running(client)
        _, reason = await listener.expect("disconnected")
        assert "HTTP 404" in reason and "WEBSOCKET_ENABLED" in reason
        await client.close()
    finally:
        await runner.cleanup()


# -- robustness ----------------------------------------------------------------------------------


async def test_malformed_packet_is_counted_and_the_connection_stays_up(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    client = fast_client(evolution.base_url, listener)
    running(client)
    sid = await evolution.root_sid()
    await listener.expect("connected")

    await evolution.sio.eio.send(evolution.eio_sid(sid), '2["unterminated')
    await evolution.sio.emit("after", {"ok": True}, namespace="/")
    assert await listener.expect("event") == ("event", "/", "after", [{"ok": True}])
    assert client.stats.malformed_packets == 1
    assert client.stats.connects == 1 and client.state == "connected"


async def test_listener_exception_does_not_stop_the_read_loop(
    evolution: FakeEvolution, listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    listener.fail_on_event = "boom"
    client = fast_client(evolution.base_url, listener)
    running(client)
    await listener.expect("connected")

    await evolution.sio.emit("boom", namespace="/")
    await evolution.sio.emit("after", namespace="/")
    assert (await listener.expect("event"))[2] == "boom"
    assert (await listener.expect("event"))[2] == "after"
    assert client.stats.listener_errors == 1
    assert client.stats.connects == 1


async def test_close_stops_run_and_reports_the_disconnect(
    evolution: FakeEvolution, listener: RecordingListener
) -> None:
    client = fast_client(evolution.base_url, listener)
    task = asyncio.create_task(client.run())
    await listener.expect("connected")

    await asyncio.wait_for(client.close(), TIMEOUT)
    await asyncio.wait_for(task, TIMEOUT)  # run() returns normally, no CancelledError
    assert client.state == "disconnected"
    assert listener.history[-1] == ("disconnected", "client closed")
    namespace, _ = await asyncio.wait_for(evolution.leaves.get(), TIMEOUT)
    assert namespace == "/"


async def test_cancelling_run_propagates_cancellation(evolution: FakeEvolution, listener: RecordingListener) -> None:
    client = fast_client(evolution.base_url, listener)
    task = asyncio.create_task(client.run())
    await listener.expect("connected")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert client.state == "disconnected"


# -- heartbeat (hand-rolled Engine.IO server: python-socketio's cannot go silent) ----------------


async def open_session(websocket: ServerConnection, *, ping_interval: int = 25000, ping_timeout: int = 20000) -> None:
    """The server's side of a handshake: Engine.IO OPEN, the client's CONNECT to the root, the answer."""
    await websocket.send(f'0{{"sid":"s1","upgrades":[],"pingInterval":{ping_interval},"pingTimeout":{ping_timeout}}}')
    assert await websocket.recv() == "40"
    await websocket.send('40{"sid":"root"}')


@contextlib.asynccontextmanager
async def hand_rolled_server(
    handler: Callable[[ServerConnection], Awaitable[None]],
    listener: RecordingListener,
    running: Callable[[SocketIOClient], None],
) -> AsyncIterator[SocketIOClient]:
    """`handler` serving websockets on a free port, and a running client connecting to it."""
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = fast_client(f"http://127.0.0.1:{port}", listener)
        running(client)
        yield client


async def test_silent_server_is_treated_as_dead_and_pings_are_answered(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    pongs: asyncio.Queue[str] = asyncio.Queue()
    connections: asyncio.Queue[None] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        connections.put_nowait(None)
        await open_session(websocket, ping_interval=100, ping_timeout=100)
        await websocket.send("2")
        pongs.put_nowait(str(await websocket.recv()))
        await websocket.wait_closed()  # then silence: no more pings

    async with hand_rolled_server(handler, listener, running) as client:
        await listener.expect("connected")
        assert await asyncio.wait_for(pongs.get(), TIMEOUT) == "3"

        _, reason = await listener.expect("disconnected")
        assert "ping timeout" in reason
        await listener.expect("connected")
        assert connections.qsize() == 2
        await client.close()


async def test_a_server_that_keeps_talking_stays_connected_past_the_heartbeat(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    # The silence limit counts from the last frame, not from the connection's start: events every
    # 50 ms over a second keep a connection whose heartbeat allows 200 ms of silence.
    async def handler(websocket: ServerConnection) -> None:
        await open_session(websocket, ping_interval=100, ping_timeout=100)
        for index in range(20):
            await asyncio.sleep(0.05)  # the pace is the scenario: a server talking more often than it must
            await websocket.send(f'42["tick",{index}]')
        await websocket.wait_closed()  # then silence

    async with hand_rolled_server(handler, listener, running) as client:
        await listener.expect("connected")
        _, reason = await listener.expect("disconnected")
        assert "ping timeout" in reason
        ticks = [item[3] for item in listener.history if item[0] == "event" and item[2] == "tick"]
        assert ticks == [[index] for index in range(20)]  # every one arrived before the silence ended it
        await client.close()


async def test_packets_keep_their_order_when_one_arrives_fragmented(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    # Whole text frames are handed over as they arrive; a fragmented message goes through
    # websockets' own queue. The frames behind it must wait for it, not overtake it.
    async def handler(websocket: ServerConnection) -> None:
        await open_session(websocket)
        await websocket.send('42["n",1]')
        await websocket.send(["42", '["n",', "2]"])  # one message in three frames
        for number in (3, 4, 5):
            await websocket.send(f'42["n",{number}]')
        await websocket.send(["42", '["n",6]'])
        await websocket.send('42["n",7]')
        await websocket.wait_closed()

    async with hand_rolled_server(handler, listener, running) as client:
        numbers = [(await listener.expect("event"))[3] for _ in range(7)]
        assert numbers == [[1], [2], [3], [4], [5], [6], [7]]
        assert client.state == "connected"
        await client.close()


async def test_a_text_frame_that_is_not_utf8_ends_the_connection_and_it_comes_back(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    connections: asyncio.Queue[None] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        connections.put_nowait(None)
        await open_session(websocket)
        if connections.qsize() == 1:
            await websocket.protocol_send_invalid_text()  # type: ignore[attr-defined]
        await websocket.send('42["after",{}]')
        await websocket.wait_closed()

    async def send_invalid_text(websocket: ServerConnection) -> None:
        websocket.protocol.send_text(b"42\xff\xfe")  # websockets' sans-I/O layer does not check what it sends
        websocket.send_data()

    ServerConnection.protocol_send_invalid_text = send_invalid_text  # type: ignore[attr-defined]
    try:
        async with hand_rolled_server(handler, listener, running) as client:
            await listener.expect("connected")
            _, reason = await listener.expect("disconnected")
            assert reason.startswith("connection closed by this client (code 1007: ")
            await listener.expect("connected")
            assert (await listener.expect("event"))[2] == "after"
            assert connections.qsize() == 2
            await client.close()
    finally:
        del ServerConnection.protocol_send_invalid_text  # type: ignore[attr-defined]


async def test_the_client_does_not_offer_permessage_deflate(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    # A server that accepted it would make the operator inflate every QR frame on its one loop;
    # Evolution's socket.io never accepts it (docs/evolution-api.md §4.1).
    extensions: asyncio.Queue[str | None] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        assert websocket.request is not None
        extensions.put_nowait(websocket.request.headers.get("Sec-WebSocket-Extensions"))
        await websocket.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:  # websockets' server accepts deflate when offered
        port = server.sockets[0].getsockname()[1]
        running(fast_client(f"http://127.0.0.1:{port}", listener))
        assert await asyncio.wait_for(extensions.get(), TIMEOUT) is None


async def test_handshake_that_never_comes_times_out(
    listener: RecordingListener, running: Callable[[SocketIOClient], None]
) -> None:
    async def handler(websocket: ServerConnection) -> None:
        await websocket.wait_closed()  # accepts the websocket, never sends OPEN

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = SocketIOClient(
            f"http://127.0.0.1:{port}",
            listener=listener,
            backoff=Backoff(initial=0.01, maximum=0.05),
            open_timeout=0.5,  # room for a loaded machine to finish the websocket upgrade itself
        )
        running(client)
        _, reason = await listener.expect("disconnected")
        assert "handshake" in reason
        await client.close()


# -- hostile frames and handshakes ---------------------------------------------------------------

# Each of these made ClientSession.receive() raise: the connection dropped and the operator ran a
# full REST resync per frame.
HOSTILE_FRAMES = [
    '2²["x"]',  # a Unicode digit where the ack id goes
    '5²-["x"]',  # a Unicode digit where the attachment count goes
    "2" + "7" * 5000 + '["x"]',  # an ack id of 5000 digits (int() stops at 4300)
    '2["x",' + "[" * 1000 + "]" * 1000 + "]",  # nested 1000 deep (RecursionError)
]


async def test_hostile_frames_from_evolution_are_counted_and_the_connection_stays_up(
    evolution_factory: Callable[..., Awaitable[Any]],
    listener: RecordingListener,
    running: Callable[[SocketIOClient], None],
) -> None:
    fake = await evolution_factory()  # tests/evolution_fake.py, as in the operator's tests
    client = fast_client(fake.url, listener, query={"apikey": fake.api_key})
    running(client)
    await listener.expect("connected")
    malformed = client.stats.malformed_packets

    for frame in HOSTILE_FRAMES:
        await fake.send_raw(frame)
    await fake.send_raw('2["after",{"ok":true}]')
    assert await listener.expect("event") == ("event", "/", "after", [{"ok": True}])
    assert client.stats.malformed_packets == malformed + len(HOSTILE_FRAMES)
    assert client.stats.connects == 1 and client.stats.disconnects == 0
    assert client.state == "connected"
    assert not [item for item in listener.history if item[0] == "disconnected"]


async def test_handshake_with_an_hour_long_ping_interval_is_refused_and_retried(
    evolution_factory: Callable[..., Awaitable[Any]],
    listener: RecordingListener,
    running: Callable[[SocketIOClient], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="whatsapp_operator.socketio")
    # An hour between pings would leave a dead connection unnoticed for an hour.
    fake = await evolution_factory(ping_interval=3600.0)
    client = fast_client(fake.url, listener, query={"apikey": fake.api_key})
    running(client)

    for _ in range(2):  # refused, then retried after the backoff
        _, reason = await listener.expect("disconnected")
        assert reason == (
            "refused the server's Engine.IO handshake: pingInterval is 3600000; "
            "it must be a number of milliseconds from 1 to 600000"
        )
    assert client.stats.last_error == reason
    assert client.stats.connects == 0 and client.stats.failed_connects >= 2
    assert client.stats.malformed_packets == 0
    assert fake.namespace_attempts == []  # no namespace joined on a refused connection
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "whatsapp_operator.socketio" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "cannot connect: refused the server's Engine.IO" in warnings[0]

    fake.ping_interval = 25.0  # the server is fixed: the next attempt gets in by itself
    await listener.expect("connected")
    assert client.stats.connects == 1


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ('"pingInterval":Infinity,"pingTimeout":20000', "pingInterval is Infinity"),
        ('"pingInterval":NaN,"pingTimeout":20000', "pingInterval is NaN"),
        ('"pingInterval":25000,"pingTimeout":1e999', "pingTimeout is Infinity"),
        ('"pingInterval":1e400,"pingTimeout":20000', "pingInterval is Infinity"),
        ('"pingInterval":25000,"pingTimeout":20000,"maxPayload":' + "9" * 400, "maxPayload is 999"),
        ('"pingInterval":25000,"pingTimeout":20000,"maxPayload":NaN', "maxPayload is NaN"),
    ],
)
async def test_handshake_with_unusable_numbers_ends_the_connection_with_a_reason(
    numbers: str,
    expected: str,
    listener: RecordingListener,
    running: Callable[[SocketIOClient], None],
) -> None:
    received: list[str | bytes] = []
    connections: asyncio.Queue[None] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        connections.put_nowait(None)
        await websocket.send('0{"sid":"s1","upgrades":[],' + numbers + "}")
        async for message in websocket:
            received.append(message)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = fast_client(f"http://127.0.0.1:{port}", listener)
        running(client)
        for _ in range(2):
            _, reason = await listener.expect("disconnected")
            assert reason.startswith("refused the server's Engine.IO handshake: " + expected)
        assert connections.qsize() >= 2  # reconnected after the backoff
        assert received == []  # nothing sent on a refused handshake: no CONNECT
        assert client.stats.connects == 0 and client.stats.failed_connects >= 2
        assert client.stats.last_error is not None and expected in client.stats.last_error
        await client.close()


STRADDLING = "client-straddling-secret-0123456789"


@pytest.mark.parametrize("json_body", [False, True])
def test_server_message_masks_a_secret_straddling_the_cut(json_body: bool) -> None:
    register_secret(STRADDLING)
    # The server's message is cut at 120 characters; the secret starts 10 before the cut.
    message = "x" * 110 + STRADDLING + " and more"
    body = json.dumps({"code": 4, "message": message}) if json_body else message
    response = Response(400, "Bad Request", Headers(), body.encode())
    reason = describe_failure(InvalidStatus(response), redact=redact)
    assert STRADDLING[:6] not in reason
    assert "(server said: " + "x" * 110 + "*** and mo)" in reason  # redacted, then cut at 120


# -- URL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "path", "expected"),
    [
        ("http://h:8080", "/socket.io/", "ws://h:8080/socket.io/?EIO=4&transport=websocket"),
        ("https://h", "/socket.io/", "wss://h/socket.io/?EIO=4&transport=websocket"),
        ("http://h/evo", "/socket.io/", "ws://h/evo/socket.io/?EIO=4&transport=websocket"),
        ("http://h/evo/", "socket.io/", "ws://h/evo/socket.io/?EIO=4&transport=websocket"),
        ("ws://h", "/custom/", "ws://h/custom/?EIO=4&transport=websocket"),
    ],
)
def test_url_is_built_from_the_http_base_url(base_url: str, path: str, expected: str) -> None:
    assert build_socketio_url(base_url, path) == expected


def test_url_carries_the_query_after_the_engineio_parameters() -> None:
    url = build_socketio_url("http://h", query={"apikey": "a b+c", "EIO": "3"})
    assert url == "ws://h/socket.io/?EIO=4&transport=websocket&apikey=a+b%2Bc"


@pytest.mark.parametrize("base_url", ["ftp://h", "h:8080", "http://h?apikey=x", "http://h#frag"])
def test_url_rejects_unusable_base_urls(base_url: str) -> None:
    with pytest.raises(ValueError) as caught:
        build_socketio_url(base_url)
    assert "apikey=x" not in str(caught.value)


def test_root_namespace_cannot_be_added(listener: RecordingListener) -> None:
    client = fast_client("http://h", listener)
    with pytest.raises(ValueError):
        client.add_namespace("/")
    with pytest.raises(ValueError):
        client.add_namespace("acme")
    assert client.namespaces == frozenset()


# -- redaction and logger are the caller's -------------------------------------------------------

LOG_SECRET = "client-log-secret-9876"


async def test_client_given_redact_and_a_logger_logs_no_secret(
    listener: RecordingListener,
    running: Callable[[SocketIOClient], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    register_secret(LOG_SECRET)

    async def handler(websocket: ServerConnection) -> None:
        await websocket.send('0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000}')
        assert await websocket.recv() == "40"
        await websocket.send('40{"sid":"root"}')
        assert await websocket.recv() == "40/acme,"
        await websocket.send('44/acme,{"message":"no namespace for ' + LOG_SECRET + '"}')
        await websocket.send('42["unterminated","' + LOG_SECRET)  # Malformed: its preview quotes the secret
        await websocket.send('42["after",{}]')
        await websocket.wait_closed()

    own_logger = logging.getLogger("test_socketio.own")
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = fast_client(
            f"http://127.0.0.1:{port}",
            listener,
            query={"apikey": LOG_SECRET},
            redact=redact,
            logger=own_logger,
        )
        client.add_namespace("/acme")
        running(client)
        assert await listener.expect("event") == ("event", "/", "after", [{}])
        await client.close()

    assert client.stats.malformed_packets == 1 and client.stats.namespace_refusals >= 1
    # Every record of the client went to the logger given, or to its "wire" child (websockets' log
    # of the connection), redacted. websockets.server is the test server's log, not ours.
    records = [
        r
        for r in caplog.records
        if r.name.startswith(("whatsapp_", "websockets", "test_socketio")) and r.name != "websockets.server"
    ]
    assert {r.name for r in records} == {"test_socketio.own", "test_socketio.own.wire"}
    messages = [r.getMessage() for r in records]
    assert all(LOG_SECRET not in message for message in messages)
    malformed = [m for m in messages if "dropped a malformed packet" in m]
    assert len(malformed) == 1 and "***" in malformed[0]
    assert any("namespace /acme refused: no namespace for ***" in m for m in messages)
    wire = [r.getMessage() for r in records if r.name == "test_socketio.own.wire"]
    assert any("apikey=***" in m for m in wire)  # the request line, query included
    assert any("unterminated" in m and "***" in m for m in wire)  # the frame, as websockets shows it
    assert all(LOG_SECRET not in str(item) for item in listener.history)


def test_client_registers_no_secret_itself() -> None:
    # The operator's registry of secrets is the caller's to fill (EventStream registers the key).
    SocketIOClient("http://h", query={"apikey": "unregistered-key-1357"}, listener=RecordingListener(), redact=redact)
    assert redact("unregistered-key-1357 unregistered-key-1357") == "unregistered-key-1357 unregistered-key-1357"


def test_default_logger_and_delays() -> None:
    client = SocketIOClient("http://h", listener=RecordingListener())
    assert client._logger.name == "whatsapp_operator.socketio"
    assert client._wire_logger.name == "whatsapp_operator.socketio.wire"
    backoff = client._backoff
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.25 <= delays[0] <= 0.5 and all(15.0 <= delay <= 30.0 for delay in delays[6:])
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    namespace_delays = [client._namespace_backoff.next_delay() for _ in range(8)]
    assert 0.25 <= namespace_delays[0] <= 0.5 and all(5.0 <= delay <= 10.0 for delay in namespace_delays[6:])


# -- the package stands alone --------------------------------------------------------------------

SOCKETIO_DIR = Path(whatsapp_operator.socketio.__file__).parent


def _outside_imports(source: Path) -> list[str]:
    """Imports in `source` of anything in whatsapp_operator outside whatsapp_operator.socketio."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.ImportFrom):
            if node.level > 1:  # from .. / from ..x: above the socketio package
                found.append(f"{source.name}:{node.lineno}: from {'.' * node.level}{node.module or ''}")
            elif node.level == 0 and node.module is not None:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                if node.module == "whatsapp_operator" or any(
                    name.startswith("whatsapp_operator.") and not name.startswith("whatsapp_operator.socketio")
                    for name in names
                ):
                    found.append(f"{source.name}:{node.lineno}: from {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "whatsapp_operator" and not (
                    alias.name == "whatsapp_operator.socketio" or alias.name.startswith("whatsapp_operator.socketio.")
                ):
                    found.append(f"{source.name}:{node.lineno}: import {alias.name}")
    return found


def test_socketio_package_imports_nothing_else_from_the_operator() -> None:
    sources = sorted(SOCKETIO_DIR.glob("*.py"))
    assert {source.name for source in sources} >= {"__init__.py", "client.py", "codec.py"}
    assert [found for source in sources for found in _outside_imports(source)] == []


def test_the_import_check_catches_an_outside_import(tmp_path: Path) -> None:
    for line in [
        "from ..redaction import redact",
        "from .. import backoff",
        "from whatsapp_operator.backoff import Backoff",
        "from whatsapp_operator import redaction",
        "import whatsapp_operator.redaction",
        "def f():\n    from ..backoff import Backoff",
    ]:
        source = tmp_path / "module.py"
        source.write_text(line + "\n")
        assert _outside_imports(source), line
    source.write_text("from .codec import ClientSession\nfrom whatsapp_operator.socketio.codec import Redact\n")
    assert _outside_imports(source) == []


def test_importing_socketio_loads_no_other_operator_module() -> None:
    code = (
        "import json, sys, whatsapp_operator.socketio\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('whatsapp_operator'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(result.stdout))
    assert loaded == {
        "whatsapp_operator",
        "whatsapp_operator.socketio",
        "whatsapp_operator.socketio.client",
        "whatsapp_operator.socketio.codec",
    }


async def test_over_a_real_connection_events_are_read_without_websockets_parser(
    listener: RecordingListener, running: Callable[[SocketIOClient], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/websockets.md §4: once the session is open, whole text frames bypass websockets' parser.
    fed: list[int] = []
    original = ClientProtocol.receive_data

    def receive_data(self: ClientProtocol, data: bytes | bytearray) -> None:
        fed.append(len(data))
        original(self, data)

    monkeypatch.setattr(ClientProtocol, "receive_data", receive_data)

    async def handler(websocket: ServerConnection) -> None:
        await open_session(websocket)
        for number in range(20):
            await websocket.send(f'42["n",{number}]')
            await asyncio.sleep(0.001)  # each in a segment of its own, as QR codes come
        await websocket.wait_closed()

    async with hand_rolled_server(handler, listener, running) as client:
        numbers = [(await listener.expect("event"))[3] for _ in range(20)]
        assert numbers == [[number] for number in range(20)]
        await client.close()
    assert len(fed) < 10, fed  # the handshake and the session's opening, not the twenty events
