"""One Evolution API server as the operator sees it."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from whatsapp_operator.config import OperatorConfig, WebsocketMode
from whatsapp_operator.engine.supervisor import Supervisor
from whatsapp_operator.engine.tracker import InstanceTracker
from whatsapp_operator.evolution.client import EvolutionClient
from whatsapp_operator.evolution.errors import EvolutionError
from whatsapp_operator.evolution.events import EvolutionEvent
from whatsapp_operator.evolution.stream import EventStream, StreamStats
from whatsapp_operator.reasons import Reason
from whatsapp_operator.socketio import SocketIOStats

logger = logging.getLogger("whatsapp_operator.engine.server")


class ServerListener(Protocol):
    """What a server tells the engine; each call names the tracker or server it concerns."""

    def instance_event(self, tracker: InstanceTracker, event: EvolutionEvent, received_at: float) -> None: ...

    def instance_namespace_joined(self, tracker: InstanceTracker) -> None: ...

    def server_connected(self, server: EvolutionServer) -> None: ...

    def server_down(self, server: EvolutionServer, message: str) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """Where a server is and how to reach it; a change of any part means new connections."""

    url: str
    api_key: str
    websocket_mode: WebsocketMode
    ca_bundle: str | None = None  # PEM: the CAs the server's certificate must chain to
    insecure_skip_verify: bool = False

    def __repr__(self) -> str:  # the API key stays out of every repr and log
        return f"Endpoint(url={self.url!r}, websocket_mode={self.websocket_mode.value!r})"


class EvolutionServer:
    """Owns what belongs to one Evolution server: its REST client, its Socket.IO event stream, the
    index of its instances by instance name, its outage timer and the `server` label of its
    metrics. It never touches Kubernetes or an instance's state: events and outages go to the
    listener, already matched to the tracker they concern.

    A server declared by an object may be unusable for a while (the object or its Secret is
    missing): `problem` then says why, and every use of `rest` raises it. A server `on_demand`
    opens its event stream with its first instance and closes it with its last.
    """

    def __init__(
        self,
        name: str,
        config: OperatorConfig,
        listener: ServerListener,
        supervisor: Supervisor,
        *,
        endpoint: Endpoint | None = None,
        rest: EvolutionClient | None = None,
        on_demand: bool = False,
        problem: EvolutionError | None = None,
    ):
        self.name = name
        self._config = config
        self._listener = listener
        self._supervisor = supervisor
        self.on_demand = on_demand
        self.endpoint: Endpoint | None = None
        self._problem = problem
        self._rest: EvolutionClient | None = None
        self.stream: EventStream | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._started = False
        self.instances: dict[str, InstanceTracker] = {}  # by Evolution instance name
        self._outage_timer: asyncio.TimerHandle | None = None
        self._outage_reason = ""
        self._calls_before: dict[tuple[str, str], int] = {}  # API calls of replaced clients (metrics)
        if endpoint is not None:
            self._connect_to(endpoint, rest=rest)

    def __repr__(self) -> str:
        return f"EvolutionServer({self.name!r})"

    # -- what the engine reads -------------------------------------------------------------------

    @property
    def problem(self) -> EvolutionError | None:
        """Why the server cannot be used now; None when it can."""
        if self._problem is not None:
            return self._problem
        if self._rest is None:
            return EvolutionError(Reason.EVOLUTION_NOT_READY, f"{self.name} is still being set up")
        return None

    @property
    def rest(self) -> EvolutionClient:
        """The REST client; raises the server's problem while it has one."""
        problem = self.problem
        if problem is not None:
            raise problem
        assert self._rest is not None
        return self._rest

    @property
    def connected(self) -> bool:
        return self.stream is not None and self.stream.client.state == "connected"

    @property
    def broadcasts_globally(self) -> bool:
        """Events of every instance arrive on the root namespace: no per-instance subscription needed."""
        return self.endpoint is not None and self.endpoint.websocket_mode is WebsocketMode.GLOBAL

    @property
    def socketio_stats(self) -> SocketIOStats:
        return self.stream.client.stats if self.stream is not None else SocketIOStats()

    @property
    def stream_stats(self) -> StreamStats:
        return self.stream.stats if self.stream is not None else StreamStats()

    @property
    def api_calls(self) -> Mapping[tuple[str, str], int]:
        calls = dict(self._calls_before)
        if self._rest is not None:
            for key, count in self._rest.calls.items():
                calls[key] = calls.get(key, 0) + count
        return calls

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        self._follow_if_needed()

    async def close(self) -> None:
        self._started = False
        await self._stop_stream()
        if self._rest is not None:
            await self._rest.aclose()
            self._rest = None

    async def use(self, endpoint: Endpoint) -> bool:
        """Reach the server at `endpoint` from now on; True when anything changed.

        A rotated key, a new URL or a new mode means a new REST client and a new socket: calls
        already under way finish with the old ones.
        """
        self._problem = None
        if endpoint == self.endpoint and self._rest is not None:
            return False
        old_rest = self._rest
        await self._stop_stream()
        self._connect_to(endpoint)
        if old_rest is not None:
            for key, count in old_rest.calls.items():
                self._calls_before[key] = self._calls_before.get(key, 0) + count
            await old_rest.aclose()
        self._follow_if_needed()
        return True

    async def unusable(self, problem: EvolutionError) -> None:
        """The server cannot be used (its object or Secret is gone): say why on every call."""
        self._problem = problem
        await self._stop_stream()

    def _connect_to(self, endpoint: Endpoint, *, rest: EvolutionClient | None = None) -> None:
        self.endpoint = endpoint
        config = replace(
            self._config,
            evolution_url=endpoint.url,
            evolution_api_key=endpoint.api_key,
            websocket_mode=endpoint.websocket_mode,
        )
        verify = _verification(endpoint)
        self._rest = rest or EvolutionClient(
            endpoint.url,
            endpoint.api_key,
            timeout=config.request_timeout,
            max_concurrent_requests=config.max_concurrent_requests,
            max_concurrent_waits=config.max_concurrent_connects,
            verify=verify,
        )
        self.stream = EventStream(
            config,
            on_event=self._event,
            on_connected=self._connected,
            on_disconnected=self._disconnected,
            on_instance_joined=self._namespace_joined,
            ssl=verify if endpoint.url.startswith("https") else None,
        )
        for instance_name in self.instances:
            self.stream.watch(instance_name)

    def _follow_if_needed(self) -> None:
        wanted = self._started and self.problem is None and (not self.on_demand or bool(self.instances))
        if wanted and self._stream_task is None and self.stream is not None:
            stream = self.stream
            self._stream_task = self._supervisor.run(
                "evolution-events", stream.run, name=f"evolution-events-{self.name}"
            )
        elif not wanted and self._stream_task is not None:
            # Under the supervisor, which keeps a reference to the task until it is done.
            self._supervisor.run("evolution-events", self._stop_stream, name=f"close-events-{self.name}", once=True)

    async def _stop_stream(self) -> None:
        task, self._stream_task = self._stream_task, None
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.stream is not None:
            await self.stream.client.close()

    # -- the index of instances --------------------------------------------------------------------

    def owner_of(self, instance_name: str) -> InstanceTracker | None:
        return self.instances.get(instance_name)

    def add(self, tracker: InstanceTracker) -> None:
        self.instances[tracker.instance_name] = tracker
        if self.stream is not None:
            self.stream.watch(tracker.instance_name)
        self._follow_if_needed()

    def remove(self, tracker: InstanceTracker) -> None:
        if self.instances.get(tracker.instance_name) is tracker:
            del self.instances[tracker.instance_name]
            if self.stream is not None:
                self.stream.unwatch(tracker.instance_name)
            self._follow_if_needed()

    # -- the event stream ----------------------------------------------------------------------------

    def _event(self, event: EvolutionEvent, received_at: float) -> None:
        tracker = self.instances.get(event.instance)
        if tracker is not None:
            self._listener.instance_event(tracker, event, received_at)

    def _namespace_joined(self, instance_name: str) -> None:
        tracker = self.instances.get(instance_name)
        if tracker is not None:
            self._listener.instance_namespace_joined(tracker)

    def _connected(self) -> None:
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        self._listener.server_connected(self)

    def _disconnected(self, reason: str) -> None:
        # A short drop is normal (Evolution restarts, load balancers): only an outage that lasts
        # past the grace period is reported on the instances.
        self._outage_reason = reason
        if self._outage_timer is None and self._stream_task is not None:
            self._outage_timer = asyncio.get_running_loop().call_later(self._config.outage_grace, self._outage_lasted)

    def _outage_lasted(self) -> None:
        self._outage_timer = None
        if not self.connected and self._stream_task is not None:
            self._listener.server_down(
                self, f"Evolution API event stream is down ({self._outage_reason}); reconnecting"
            )


def _verification(endpoint: Endpoint) -> ssl.SSLContext | bool:
    """How the server's certificate is checked: the system CAs, a given CA bundle, or (only when
    asked for explicitly, and reported) not at all."""
    if endpoint.insecure_skip_verify:
        return False
    if endpoint.ca_bundle:
        return ssl.create_default_context(cadata=endpoint.ca_bundle)
    return True
