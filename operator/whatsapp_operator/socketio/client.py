"""Keeps one Socket.IO connection to Evolution API alive: the asyncio layer around `ClientSession`.

The protocol lives in `codec.py`; this module only moves frames between a `websockets` connection
and the session, and decides what to do when things go wrong: reconnect with backoff, retry
namespaces the server does not know yet, treat a silent server as dead.

The package stands alone (like `websockets`, it is handed its logger): the caller gives the
`redact` function and the `logger`. Everything that leaves this module (logs, websockets' wire log
included, `last_error`, listener reasons) is passed through `redact` first, because the connection
URL may carry a secret (Evolution's API key); registering that secret with whatever `redact`
consults is the caller's job. The reconnect delays come from any object with `next_delay()` and
`reset()` (`Delays`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import ssl as ssl_module
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import Event as WebSocketEvent
from websockets.protocol import Protocol as WebSocketProtocol
from websockets.protocol import State as WebSocketState
from websockets.streams import StreamReader

from .codec import (
    ROOT_NAMESPACE,
    ClientSession,
    Closed,
    EventReceived,
    HandshakeRefused,
    Ignored,
    Malformed,
    NamespaceConnected,
    NamespaceDisconnected,
    NamespaceRefused,
    Opened,
    Redact,
    SessionEvent,
    no_redaction,
    redacted_head,
)

DEFAULT_LOGGER_NAME = "whatsapp_operator.socketio"

# Far above anything Evolution sends (a QR code as a base64 PNG is ~10 KB) but still a bound.
MAX_FRAME_SIZE = 16 * 2**20
_CLOSE_TIMEOUT = 2.0
_SERVER_MESSAGE_LENGTH = 120

State = Literal["connecting", "connected", "disconnected"]


class Delays(Protocol):
    """A reconnect delay schedule (e.g. exponential backoff). The client copies the namespace
    schedule (`copy.copy`) to keep one per namespace."""

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""

    def reset(self) -> None:
        """Start the schedule over (called once an attempt succeeds)."""


@dataclass
class _ExponentialDelays:
    """The default `Delays`: exponential with jitter, uniform in [ceiling/2, ceiling], the ceiling
    doubling from `initial` up to `maximum`."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    attempts: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (self.factor**self.attempts))
        self.attempts += 1
        return self._random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class _RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """Hands `logger` only redacted messages, a traceback included: websockets logs the request
    line (the URL with its query) and frame contents at DEBUG, so its wire log is redacted at the
    source and no handler setup can leak a secret from it."""

    def __init__(self, logger: logging.Logger, redact: Redact) -> None:
        super().__init__(logger, None)
        self._redact = redact

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):  # logging itself would report this at emit time, not raise
            text = f"{msg} {args!r}"
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if isinstance(exc_info, BaseException):
                error: BaseException | None = exc_info
            elif isinstance(exc_info, tuple):
                error = exc_info[1]
            else:
                error = sys.exc_info()[1]
            if error is not None:
                text += "\n" + "".join(traceback.format_exception(error)).rstrip("\n")
        self.logger.log(level, "%s", self._redact(text), **kwargs)


class SocketIOListener(Protocol):
    """Receives what happens on the connection.

    Callbacks are synchronous and run inside the read loop: they must not block. Anything slow
    should be scheduled by the listener itself. An exception from a callback is logged and
    counted; it never stops the connection.
    """

    def on_connected(self) -> None:
        """The root namespace was joined; called on every (re)connect. Resync state here:
        events sent while we were away are lost (no connection-state recovery)."""

    def on_disconnected(self, reason: str) -> None:
        """A connection ended or a connection attempt failed; `reason` is redacted."""

    def on_namespace_connected(self, namespace: str) -> None:
        """A namespace added with `add_namespace` was joined (after every (re)join)."""

    def on_event(self, namespace: str, name: str, args: list[Any]) -> None:
        """An event arrived on a joined namespace ("/" included)."""


@dataclass
class SocketIOStats:
    connects: int = 0  # connections that reached "connected"
    reconnects: int = 0  # connects after the first
    disconnects: int = 0  # connected connections that were lost
    failed_connects: int = 0  # attempts that ended before reaching "connected"
    malformed_packets: int = 0
    ignored_packets: int = 0
    events_received: dict[str, int] = field(default_factory=dict)
    namespace_refusals: int = 0
    listener_errors: int = 0
    last_error: str | None = None  # redacted; kept after a successful reconnect


def build_socketio_url(base_url: str, path: str = "/socket.io/", query: Mapping[str, str] | None = None) -> str:
    """`http(s)://host[:port][/prefix]` -> `ws(s)://host[:port][/prefix]{path}?EIO=4&transport=websocket&...`."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError("the base URL must be http(s):// or ws(s):// with a host")
    if parts.query or parts.fragment:
        raise ValueError("the base URL must not carry a query or fragment; use `query`")
    full_path = parts.path.rstrip("/") + "/" + path.lstrip("/")
    params = [("EIO", "4"), ("transport", "websocket")]
    params += [(k, v) for k, v in (query or {}).items() if k not in ("EIO", "transport")]
    return urlunsplit((scheme, parts.netloc, full_path, urlencode(params), ""))


def _display_url(url: str, redact: Redact) -> str:
    # What logs may show: no query (the API key), no userinfo.
    parts = urlsplit(url)
    return redact(urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")))


def _server_message(body: bytes | bytearray | None, redact: Redact) -> str:
    """The short human message in a rejection body: plain text, or the JSON `message` field."""
    if not body:
        return ""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        text = parsed["message"]
    line = text.splitlines()[0] if text else ""
    # Bounded before the character loop (the body may be 1 MiB), far past the cut below.
    line = line[: _SERVER_MESSAGE_LENGTH + 64 * 1024]
    line = "".join(ch for ch in line if ch.isprintable())
    # Redact, then cut: cut first, a secret straddling the cut would leave its head uncovered.
    head, _ = redacted_head(line, _SERVER_MESSAGE_LENGTH, redact)
    return head


def describe_failure(exc: BaseException, *, redact: Redact = no_redaction) -> str:
    """A one-line reason for a failed or lost connection, passed through `redact`. Never includes
    the URL."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (400, 401, 403):
            # Evolution refuses the apikey with 400 (websocket transport) or 403 (polling).
            text = f"handshake refused by the server (HTTP {status}): authentication failed or not allowed"
        elif status == 404:
            text = (
                "handshake rejected by the server (HTTP 404): no Socket.IO endpoint at this path "
                "(is WEBSOCKET_ENABLED=true on Evolution API?)"
            )
        else:
            text = f"handshake rejected by the server (HTTP {status})"
        said = _server_message(exc.response.body, redact)
        if said:
            text += f" (server said: {said})"
    elif isinstance(exc, InvalidURI):
        text = "invalid server URL"  # str(exc) would contain the URL
    elif isinstance(exc, ConnectionClosed):
        if exc.rcvd is not None:
            text = f"connection closed by the server (code {exc.rcvd.code})"
        elif exc.sent is not None:  # this client closed it: the server sent what websockets refuses
            text = (
                f"connection closed by this client (code {exc.sent.code}: {exc.sent.reason[:_SERVER_MESSAGE_LENGTH]})"
            )
        else:
            text = "connection lost"
    elif isinstance(exc, InvalidHandshake):
        text = f"websocket handshake failed: {exc}"
    elif isinstance(exc, TimeoutError):
        text = "timed out opening the connection"
    elif isinstance(exc, OSError):
        text = f"cannot reach the server: {exc.strerror or exc}"
    else:
        text = f"unexpected error: {type(exc).__name__}: {exc}"
    return redact(text)


class _ConnectionEnded(Exception):
    """Ends the current connection; the message is a safe reason."""


class SocketIOClient:
    """A Socket.IO client that reconnects forever (until cancelled or closed).

    Joins the root namespace on every connection, plus the namespaces given to `add_namespace`,
    each retried with its own backoff while the server refuses it (Evolution creates a per-instance
    namespace only when it first emits on it).

    `redact` masks secrets in everything the client logs or reports (default: nothing masked; a
    query value such as an API key must be made known to it by the caller, raw and URL-encoded).
    `logger` receives the client's own records (default: the "whatsapp_operator.socketio" logger);
    websockets' wire log goes to its "wire" child, redacted.
    """

    def __init__(
        self,
        base_url: str,
        *,
        path: str = "/socket.io/",
        query: Mapping[str, str] | None = None,
        listener: SocketIOListener,
        backoff: Delays | None = None,
        namespace_backoff: Delays | None = None,
        open_timeout: float = 10.0,
        name: str = "evolution",
        redact: Redact = no_redaction,
        logger: logging.Logger | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
    ) -> None:
        # For wss:// URLs: None or True verifies with the system CAs, a context with its own CAs,
        # False does not verify at all (only when the caller was told so explicitly).
        self._ssl = _client_ssl(ssl)
        self._redact = redact
        self._logger = logger if logger is not None else logging.getLogger(DEFAULT_LOGGER_NAME)
        wire_logger = self._logger.getChild("wire")
        self._wire_logger: logging.Logger | _RedactingLogger = (
            wire_logger if redact is no_redaction else _RedactingLogger(wire_logger, redact)
        )
        self._url = build_socketio_url(base_url, path, query)
        self._display_url = _display_url(self._url, redact)
        self._listener = listener
        self._backoff: Delays = backoff if backoff is not None else _ExponentialDelays()
        self._namespace_backoff: Delays = (
            namespace_backoff if namespace_backoff is not None else _ExponentialDelays(initial=0.5, maximum=10.0)
        )
        self._open_timeout = open_timeout
        self._name = name
        self._stats = SocketIOStats()

        self._state: State = "disconnected"
        self._namespaces: set[str] = set()
        self._namespace_backoffs: dict[str, Delays] = {}
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        self._session: ClientSession | None = None
        self._outbox = asyncio.Event()  # session has frames to send
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._attempt: asyncio.Task[str] | None = None
        self._running = False
        self._closing = False
        self._last_failure: str | None = None

    # -- public state ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def stats(self) -> SocketIOStats:
        """Live counters (the same object throughout; read, do not replace)."""
        return self._stats

    @property
    def namespaces(self) -> frozenset[str]:
        """Namespaces added with `add_namespace` (the root namespace is implicit)."""
        return frozenset(self._namespaces)

    @property
    def connected_namespaces(self) -> frozenset[str]:
        """Added namespaces currently joined (the root namespace is not listed)."""
        session = self._session
        if session is None:
            return frozenset()
        return session.connected_namespaces & self._namespaces

    # -- namespaces -----------------------------------------------------------------------------

    def add_namespace(self, namespace: str) -> None:
        """Join `namespace` now if connected, else on every future connect; retried if refused."""
        if not namespace.startswith("/") or "," in namespace:
            raise ValueError(f"invalid Socket.IO namespace {namespace!r}")
        if namespace == ROOT_NAMESPACE:
            raise ValueError("the root namespace is always joined")
        if namespace in self._namespaces:
            return
        self._namespaces.add(namespace)
        self._join(namespace)

    def remove_namespace(self, namespace: str) -> None:
        """Leave `namespace` and stop retrying it."""
        self._namespaces.discard(namespace)
        self._namespace_backoffs.pop(namespace, None)
        self._cancel_retry(namespace)
        session = self._session
        if session is not None and session.is_open and namespace != ROOT_NAMESPACE:
            session.disconnect_namespace(namespace)
            self._outbox.set()

    def _join(self, namespace: str) -> None:
        # Namespaces are joined only once the root is: on_connected always precedes
        # on_namespace_connected, so the listener resyncs before per-instance events arrive.
        session = self._session
        if session is None or self._state != "connected" or namespace not in self._namespaces:
            return
        self._cancel_retry(namespace)
        session.connect_namespace(namespace)
        self._outbox.set()

    def _schedule_rejoin(self, namespace: str) -> None:
        if namespace not in self._namespaces or namespace in self._retry_timers:
            return
        backoff = self._namespace_backoffs.get(namespace)
        if backoff is None:
            backoff = self._namespace_backoffs[namespace] = copy.copy(self._namespace_backoff)
            backoff.reset()
        delay = backoff.next_delay()
        self._logger.debug("[%s] retrying namespace %s in %.2fs", self._name, namespace, delay)
        loop = asyncio.get_running_loop()
        self._retry_timers[namespace] = loop.call_later(delay, self._retry_now, namespace)

    def _retry_now(self, namespace: str) -> None:
        self._retry_timers.pop(namespace, None)
        self._join(namespace)

    def _cancel_retry(self, namespace: str) -> None:
        timer = self._retry_timers.pop(namespace, None)
        if timer is not None:
            timer.cancel()

    # -- lifecycle ------------------------------------------------------------------------------

    async def wait_connected(self) -> None:
        """Return once the root namespace is joined (immediately if it already is)."""
        await self._connected.wait()

    async def run(self) -> None:
        """Connect and stay connected until cancelled or `close()`d."""
        if self._running:
            raise RuntimeError("SocketIOClient.run() is already running")
        self._running = True
        self._closing = False
        self._stop.clear()
        self._stopped.clear()
        self._logger.info("[%s] starting Socket.IO client for %s", self._name, self._display_url)
        try:
            while not self._stop.is_set():
                self._state = "connecting"
                self._attempt = asyncio.ensure_future(self._connection())
                try:
                    reason = await self._attempt
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if self._closing and current is not None and not current.cancelling():
                        break  # close() cancelled the attempt, not someone cancelling run()
                    raise
                finally:
                    self._attempt = None
                # Read through the property: mypy narrows self._state to "connecting" from above.
                was_connected = self.state == "connected"
                self._state = "disconnected"
                self._connected.clear()
                self._connection_lost(reason, was_connected)
                if self._stop.is_set():
                    break
                delay = self._backoff.next_delay()
                self._log_retry(reason, was_connected, delay)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            if self._state == "connected":
                self._connection_lost("client closed", was_connected=True)
            self._state = "disconnected"
            self._connected.clear()
            self._running = False
            self._stopped.set()

    async def close(self) -> None:
        """Stop `run()`: close the connection and return once `run()` has returned."""
        self._closing = True
        self._stop.set()
        if self._attempt is not None:
            self._attempt.cancel()
        if self._running:
            await self._stopped.wait()

    def _connection_lost(self, reason: str, was_connected: bool) -> None:
        if was_connected:
            self._stats.disconnects += 1
        else:
            self._stats.failed_connects += 1
        if reason != "client closed":
            self._stats.last_error = reason
        self._notify("on_disconnected", reason)

    def _log_retry(self, reason: str, was_connected: bool, delay: float) -> None:
        if was_connected:
            self._logger.info("[%s] disconnected: %s; reconnecting in %.1fs", self._name, reason, delay)
        elif reason != self._last_failure:
            self._logger.warning("[%s] cannot connect: %s; retrying in %.1fs", self._name, reason, delay)
        else:
            # The same failure again (Evolution down, wrong key): say it once, not every retry.
            self._logger.debug("[%s] still cannot connect: %s; retrying in %.1fs", self._name, reason, delay)
        self._last_failure = None if was_connected else reason

    # -- one connection -------------------------------------------------------------------------

    async def _connection(self) -> str:
        """Run one connection to its end and return why it ended. Raises only CancelledError."""
        try:
            websocket = await connect(
                self._url,
                open_timeout=self._open_timeout,
                ping_interval=None,  # Engine.IO has its own heartbeat
                # Evolution's socket.io never accepts permessage-deflate (docs/evolution-api.md §4.1); with a
                # server that would, every QR frame would cost an inflate on the operator's one loop.
                compression=None,
                close_timeout=_CLOSE_TIMEOUT,
                max_size=MAX_FRAME_SIZE,
                logger=self._wire_logger,
                ssl=self._ssl if self._url.startswith("wss") else None,
                create_connection=_PushingConnection,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to connect is retried, never fatal
            return describe_failure(exc, redact=self._redact)
        assert isinstance(websocket, _PushingConnection)

        session = ClientSession(redact=self._redact)
        self._session = session
        self._outbox.clear()
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        watchdog = _SilenceWatchdog(
            self._open_timeout,
            lambda: session.receive_timeout if self._state == "connected" else None,
            lambda why: _settle(ended, why),
        )

        def pushed(text: str) -> None:
            # Called by the connection as each whole text frame arrives, outside any task.
            try:
                self._receive_frame(text, session, watchdog)
            except Exception as error:  # noqa: BLE001 - whatever it is ends this connection, not the loop
                websocket.on_text = None  # what still arrives waits in recv()'s queue, unread
                _settle(ended, self._ending(error))

        websocket.on_text = pushed
        receiver = asyncio.ensure_future(self._receive_loop(websocket, session, watchdog))
        sender = asyncio.ensure_future(self._send_loop(websocket, session))
        try:
            done, _ = await asyncio.wait({receiver, sender, ended}, return_when=asyncio.FIRST_COMPLETED)
            if ended in done:
                return ended.result()
            finished = receiver if receiver in done else sender
            error = finished.exception()
            if error is None:
                return finished.result()
            return self._ending(error)
        finally:
            websocket.on_text = None
            watchdog.cancel()
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)
            self._session = None
            for namespace in list(self._retry_timers):
                self._cancel_retry(namespace)
            try:
                await websocket.close()
            except BaseException:
                websocket.transport.abort()
                raise

    def _ending(self, error: BaseException) -> str:
        """Why a connection ends, from the exception that ended it; a bug is logged as one."""
        if isinstance(error, _ConnectionEnded):
            return str(error)
        if not isinstance(error, ConnectionClosed | OSError | InvalidHandshake):
            self._logger.error(
                "[%s] bug in the Socket.IO client: %s",
                self._name,
                self._redact("".join(traceback.format_exception(error))),
            )
        return describe_failure(error, redact=self._redact)

    async def _send_loop(self, websocket: ClientConnection, session: ClientSession) -> str:
        while True:
            await self._outbox.wait()
            self._outbox.clear()
            for frame in session.data_to_send():
                await websocket.send(frame)

    async def _receive_loop(
        self, websocket: _PushingConnection, session: ClientSession, watchdog: _SilenceWatchdog
    ) -> str:
        """The frames the connection did not push: those before the handshake ended, binary and
        fragmented ones (Evolution sends neither). Ends when the connection does."""
        while True:
            frame = await websocket.recv()
            websocket.queued -= 1
            self._receive_frame(frame, session, watchdog)

    def _receive_frame(self, frame: str | bytes, session: ClientSession, watchdog: _SilenceWatchdog) -> None:
        for event in session.receive(frame):
            self._handle(event, session)
        watchdog.heard()  # after the frame: the one that completes the handshake arms the heartbeat
        if session.has_data_to_send:  # a PONG or a CONNECT; most frames need no answer
            self._outbox.set()

    def _handle(self, event: SessionEvent, session: ClientSession) -> None:
        """Act on one session event; raises _ConnectionEnded when the connection is over."""
        if isinstance(event, EventReceived):
            counts = self._stats.events_received
            counts[event.name] = counts.get(event.name, 0) + 1
            self._notify("on_event", event.namespace, event.name, event.args)
        elif isinstance(event, Opened):
            session.connect_namespace(ROOT_NAMESPACE)
        elif isinstance(event, NamespaceConnected):
            if event.namespace == ROOT_NAMESPACE:
                self._root_joined()
            else:
                backoff = self._namespace_backoffs.get(event.namespace)
                if backoff is not None:
                    backoff.reset()
                self._logger.debug("[%s] joined namespace %s", self._name, event.namespace)
                self._notify("on_namespace_connected", event.namespace)
        elif isinstance(event, NamespaceRefused):
            if event.namespace == ROOT_NAMESPACE:
                raise _ConnectionEnded(self._redact(f"server refused the root namespace: {event.message}"))
            self._stats.namespace_refusals += 1
            self._logger.debug(
                "[%s] namespace %s refused: %s", self._name, event.namespace, self._redact(event.message)
            )
            self._schedule_rejoin(event.namespace)
        elif isinstance(event, NamespaceDisconnected):
            if event.namespace == ROOT_NAMESPACE:
                # Without the root namespace the connection is useless; a fresh one resyncs.
                raise _ConnectionEnded("server disconnected the root namespace")
            self._logger.debug("[%s] server left namespace %s", self._name, event.namespace)
            self._schedule_rejoin(event.namespace)
        elif isinstance(event, Malformed):
            self._stats.malformed_packets += 1
            self._logger.warning("[%s] dropped a malformed packet: %s", self._name, self._redact(event.reason))
        elif isinstance(event, Ignored):
            self._stats.ignored_packets += 1
            self._logger.debug("[%s] ignored: %s", self._name, event.reason)
        elif isinstance(event, Closed):
            raise _ConnectionEnded(event.reason)
        elif isinstance(event, HandshakeRefused):
            # Like any failed attempt: the reason goes to last_error, on_disconnected and a warning
            # (run() logs it), and the next attempt waits for the backoff.
            raise _ConnectionEnded(self._redact(f"refused the server's Engine.IO handshake: {event.reason}"))

    def _root_joined(self) -> None:
        self._state = "connected"
        self._backoff.reset()
        self._stats.connects += 1
        if self._stats.connects > 1:
            self._stats.reconnects += 1
        self._connected.set()
        self._logger.info("[%s] connected to %s", self._name, self._display_url)
        self._notify("on_connected")
        for namespace in sorted(self._namespaces):
            self._join(namespace)

    def _notify(self, callback: str, *args: Any) -> None:
        try:
            getattr(self._listener, callback)(*args)
        except Exception as exc:  # noqa: BLE001 - a listener bug must not stop the read loop
            self._stats.listener_errors += 1
            self._logger.error(
                "[%s] listener %s raised: %s",
                self._name,
                callback,
                self._redact("".join(traceback.format_exception(exc))),
            )


class _SilenceWatchdog:
    """Ends a connection whose server went quiet: no handshake within the open timeout, then no
    frame for longer than Engine.IO's heartbeat allows (`heartbeat()`, None until connected).

    One timer re-armed from the time of the last frame, instead of a timeout around every
    receive: a QR code every few milliseconds would otherwise create and cancel a timer each, a
    measurable share of the operator's CPU per event (bench/README.md). `give_up` is told why.
    """

    def __init__(
        self, open_timeout: float, heartbeat: Callable[[], float | None], give_up: Callable[[str], None]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._heartbeat = heartbeat
        self._give_up = give_up
        self._handshake_deadline = self._loop.time() + open_timeout
        self._last_frame_at = self._loop.time()
        self._timer = self._loop.call_at(self._handshake_deadline, self._check)
        self._armed_for_heartbeat = False

    def heard(self) -> None:
        self._last_frame_at = self._loop.time()
        if not self._armed_for_heartbeat and self._heartbeat() is not None:
            self._armed_for_heartbeat = True
            self._timer.cancel()
            self._check()

    def _check(self) -> None:
        heartbeat = self._heartbeat()
        now = self._loop.time()
        if heartbeat is None:
            due, why = self._handshake_deadline, "timed out waiting for the Socket.IO handshake"
        else:
            due, why = self._last_frame_at + heartbeat, f"no packet from the server for {heartbeat:.1f}s (ping timeout)"
        if now < due:
            self._timer = self._loop.call_at(due, self._check)
        else:
            self._give_up(why)

    def cancel(self) -> None:
        self._timer.cancel()


class _PushingConnection(ClientConnection):
    """A websockets client connection that hands each whole text frame to `on_text` as it arrives.

    websockets queues every frame for `recv()`, and the task awaiting it runs one step of the loop
    later: per QR event a future, a queue and a step of the loop, with thousands of events a minute
    (bench/README.md). Evolution sends one whole text frame per Engine.IO packet, so those are
    handed over at once; anything else (binary, fragmented, invalid UTF-8, frames before `on_text`
    is set) goes to `recv()` as before, and while any such message waits there, text frames queue
    behind it so that the order of packets is kept (`queued` counts them; the reader of `recv()`
    takes one off for each message it reads).

    Once websockets' parser stands between two frames, the connection also reads the frame headers
    itself (`_read_frames`): a whole text frame goes to `on_text` without websockets' parser, any
    other frame goes to websockets whole, as it came. What this relies on in websockets:
    docs/websockets.md (§3, §4).
    """

    on_text: Callable[[str], None] | None = None
    queued = 0
    # The frame reader (docs/websockets.md §4): the bytes not yet read while it reads them, None
    # while websockets' parser does; `reads_frames` False for good once it handed the rest over.
    _unread: bytearray | None = None
    # The limit of a whole text frame, worked out when the reader takes over: it stays the same
    # while no fragmented message is under way, the only time the reader pushes a frame.
    _text_limit: int | None = None
    reads_frames = True

    def data_received(self, data: bytes) -> None:
        unread = self._unread
        if unread is None:
            if not (self.reads_frames and _at_frame_boundary(self.protocol)):
                super().data_received(data)
                return
            self._text_limit = _frame_limit(self.protocol)  # no fragmented message under way here
            unread = self._unread = bytearray()
        unread += data
        self._read_frames(unread)

    def _read_frames(self, unread: bytearray) -> None:
        """Hand each whole text frame in `unread` to `on_text` and every other whole frame to
        websockets; from a frame websockets would refuse on, websockets reads everything."""
        protocol = self.protocol
        while len(unread) >= 2:
            first, second = unread[0], unread[1]
            length = second & 0x7F
            start = 2
            if length == 126:
                if len(unread) < 4:
                    return
                length, start = int.from_bytes(unread[2:4], "big"), 4
            elif length == 127:
                if len(unread) < 10:
                    return
                length, start = int.from_bytes(unread[2:10], "big"), 10
            pushed = first == _WHOLE_TEXT and not second & 0x80 and protocol.current_size is None
            if pushed:
                limit = self._text_limit
                accepted = limit is None or length <= limit
            else:
                accepted = not second & 0x80 and _accepted(first & 0x0F, length, protocol)
            if not accepted:
                # Masked, an unknown opcode, too long: websockets fails the connection with the
                # code for it as soon as it reads the header, and reads everything from here on.
                self._hand_over(unread)
                return
            end = start + length
            if len(unread) < end:
                return
            on_text = self.on_text
            if pushed and on_text is not None and not self.queued:
                try:
                    text = unread[start:end].decode()
                except UnicodeDecodeError:
                    pass  # websockets queues it and recv() fails the connection with 1007, as always
                else:
                    del unread[:end]
                    on_text(text)
                    continue
            frame = bytes(unread[:end])
            del unread[:end]
            super().data_received(frame)
            if protocol.state is not WebSocketState.OPEN:  # a close frame, or a frame websockets refused
                self._hand_over(unread)
                return

    def _hand_over(self, unread: bytearray) -> None:
        self._unread = None
        self.reads_frames = False
        if unread:
            super().data_received(bytes(unread))

    def eof_received(self) -> None:
        if self._unread is not None:
            self._hand_over(self._unread)  # a frame cut short: websockets says so when the stream ends
        super().eof_received()

    def process_event(self, event: WebSocketEvent) -> None:
        on_text = self.on_text
        if (
            on_text is not None
            and not self.queued
            and isinstance(event, Frame)
            and event.opcode is Opcode.TEXT
            and event.fin
        ):
            try:
                text = bytes(event.data).decode()
            except UnicodeDecodeError:
                pass  # recv() raises it and websockets closes the connection with 1007, as for any frame
            else:
                on_text(text)
                return
        if isinstance(event, Frame) and event.fin and event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self.queued += 1  # a whole message now waits for recv()
        super().process_event(event)


_WHOLE_TEXT = 0x81  # FIN, no reserved bit, opcode TEXT
_KNOWN_OPCODES = (0x0, 0x1, 0x2, 0x8, 0x9, 0xA)  # continuation, text, binary, close, ping, pong
_AT_EOF_CODE = getattr(getattr(StreamReader, "at_eof", None), "__code__", None)
_PARSE_CODE = getattr(getattr(WebSocketProtocol, "parse", None), "__code__", None)


def _at_frame_boundary(protocol: Any) -> bool:
    """Whether websockets' parser stands between two frames with nothing buffered, on an open
    connection without extensions and without websockets' debug log (which shows every frame).
    Anything unlike websockets 17 (docs/websockets.md §4) is not."""
    # The parser is a chain of generators (the client's parse, the protocol's frame loop, the
    # reader's wait for data): between frames the innermost waits in `at_eof`, called from the loop.
    outer, inner = None, getattr(protocol, "parser", None)
    for _ in range(8):
        deeper = getattr(inner, "gi_yieldfrom", None)
        if deeper is None:
            break
        outer, inner = inner, deeper
    if _AT_EOF_CODE is None or getattr(inner, "gi_code", None) is not _AT_EOF_CODE:
        return False
    if _PARSE_CODE is None or getattr(outer, "gi_code", None) is not _PARSE_CODE:
        return False
    reader = getattr(protocol, "reader", None)
    if getattr(reader, "buffer", b"?") or getattr(reader, "eof", True):
        return False
    return (
        getattr(protocol, "debug", True) is False  # with its debug log on, websockets shows every frame
        and getattr(protocol, "state", None) is WebSocketState.OPEN
        and getattr(protocol, "extensions", None) == []
        and getattr(protocol, "current_size", 0) is None
        and hasattr(protocol, "max_message_size")
        and hasattr(protocol, "max_fragment_size")
    )


def _frame_limit(protocol: Any) -> int | None:
    """The longest frame websockets reads next (None: any), as it works it out at each header: what
    is left of the message limit once a fragmented message's pieces are counted, within the
    fragment limit."""
    limit: int | None = protocol.max_message_size
    current: int | None = protocol.current_size
    if limit is not None and current is not None:
        limit -= current
    fragment_limit: int | None = protocol.max_fragment_size
    if fragment_limit is not None:
        limit = fragment_limit if limit is None else min(limit, fragment_limit)
    return limit


def _accepted(opcode: int, length: int, protocol: Any) -> bool:
    """Whether websockets reads this frame's payload rather than failing the connection at its
    header: a known opcode and a length within its limits. (Reserved bits and the rules of control
    frames it checks once the payload is read.)"""
    if opcode not in _KNOWN_OPCODES:
        return False
    limit = _frame_limit(protocol)
    return limit is None or length <= limit


def _settle(future: asyncio.Future[str], result: str) -> None:
    if not future.done():
        future.set_result(result)


def _client_ssl(wanted: ssl_module.SSLContext | bool | None) -> ssl_module.SSLContext | None:
    if wanted is None or wanted is True:
        return None
    if wanted is False:
        context = ssl_module.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
        return context
    return wanted
