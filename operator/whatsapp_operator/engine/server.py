"""One Evolution API server as the operator sees it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from whatsapp_operator.config import OperatorConfig, WebsocketMode
from whatsapp_operator.engine.supervisor import Supervisor
from whatsapp_operator.engine.tracker import InstanceTracker
from whatsapp_operator.evolution.client import EvolutionClient
from whatsapp_operator.evolution.events import EvolutionEvent
from whatsapp_operator.evolution.stream import EventStream, StreamStats
from whatsapp_operator.socketio import SocketIOStats

logger = logging.getLogger("whatsapp_operator.engine.server")


class ServerListener(Protocol):
    """What a server tells the engine; each call names the tracker or server it concerns."""

    def instance_event(self, tracker: InstanceTracker, event: EvolutionEvent, received_at: float) -> None: ...

    def instance_namespace_joined(self, tracker: InstanceTracker) -> None: ...

    def server_connected(self, server: EvolutionServer) -> None: ...

    def server_down(self, server: EvolutionServer, message: str) -> None: ...


class EvolutionServer:
    """Owns what belongs to one Evolution server: its REST client, its Socket.IO event stream, the
    index of its instances by instance name, its outage timer and the `server` label of its
    metrics. It never touches Kubernetes or an instance's state: events and outages go to the
    listener, already matched to the tracker they concern."""

    def __init__(
        self,
        name: str,
        config: OperatorConfig,
        listener: ServerListener,
        *,
        rest: EvolutionClient | None = None,
    ):
        self.name = name
        self._outage_grace = config.outage_grace
        self._listener = listener
        self.rest = rest or EvolutionClient(
            config.evolution_url,
            config.evolution_api_key,
            timeout=config.request_timeout,
            max_concurrent_requests=config.max_concurrent_requests,
        )
        self.stream = EventStream(
            config,
            on_event=self._event,
            on_connected=self._connected,
            on_disconnected=self._disconnected,
            on_instance_joined=self._namespace_joined,
        )
        self.instances: dict[str, InstanceTracker] = {}  # by Evolution instance name
        self._outage_timer: asyncio.TimerHandle | None = None
        self._outage_reason = ""

    def __repr__(self) -> str:
        return f"EvolutionServer({self.name!r})"

    @property
    def connected(self) -> bool:
        return self.stream.client.state == "connected"

    @property
    def socketio_stats(self) -> SocketIOStats:
        return self.stream.client.stats

    @property
    def stream_stats(self) -> StreamStats:
        return self.stream.stats

    @property
    def api_calls(self) -> Mapping[tuple[str, str], int]:
        return self.rest.calls

    @property
    def broadcasts_globally(self) -> bool:
        """Events of every instance arrive on the root namespace: no per-instance subscription needed."""
        return self.stream.mode is WebsocketMode.GLOBAL

    def start(self, supervisor: Supervisor) -> None:
        supervisor.run("evolution-events", self.stream.run, name=f"evolution-events-{self.name}")

    async def close(self) -> None:
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        await self.stream.client.close()
        await self.rest.aclose()

    # -- the index of instances --------------------------------------------------------------------

    def owner_of(self, instance_name: str) -> InstanceTracker | None:
        return self.instances.get(instance_name)

    def add(self, tracker: InstanceTracker) -> None:
        self.instances[tracker.instance_name] = tracker
        self.stream.watch(tracker.instance_name)

    def remove(self, tracker: InstanceTracker) -> None:
        if self.instances.get(tracker.instance_name) is tracker:
            del self.instances[tracker.instance_name]
            self.stream.unwatch(tracker.instance_name)

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
        if self._outage_timer is None:
            self._outage_timer = asyncio.get_running_loop().call_later(self._outage_grace, self._outage_lasted)

    def _outage_lasted(self) -> None:
        self._outage_timer = None
        if not self.connected:
            self._listener.server_down(
                self, f"Evolution API event stream is down ({self._outage_reason}); reconnecting"
            )
