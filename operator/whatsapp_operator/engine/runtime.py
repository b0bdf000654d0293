"""The operator's engine, assembled: servers, registry, reconciler and publisher, and the loops
that run outside kopf's handlers.

kopf handlers (kube/handlers.py) only register objects and ask for create/delete/reconnect;
everything that happens later (Socket.IO events, resyncs after reconnects and on a timer,
recreation of instances removed behind our back) runs here, in the operator's event loop,
without blocking.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Sequence
from typing import Any

from whatsapp_operator.backoff import Backoff
from whatsapp_operator.config import OperatorConfig
from whatsapp_operator.engine.publisher import Publisher
from whatsapp_operator.engine.reconciliation import Reconciler
from whatsapp_operator.engine.registry import InstanceRegistry
from whatsapp_operator.engine.server import EvolutionServer
from whatsapp_operator.engine.spec import InstanceSpec, InvalidSpec
from whatsapp_operator.engine.state import InstanceState, Phase
from whatsapp_operator.engine.supervisor import Supervisor
from whatsapp_operator.engine.tracker import InstanceTracker, Key
from whatsapp_operator.evolution.client import EvolutionClient
from whatsapp_operator.evolution.errors import EvolutionError
from whatsapp_operator.evolution.events import EvolutionEvent, InstanceRemoved
from whatsapp_operator.kube.client import KubeClient, KubeError
from whatsapp_operator.kube.leadership import PeeringIdentity, PeeringLeadership
from whatsapp_operator.kube.nudge import StuckObjectNudger
from whatsapp_operator.kube.status_writer import StatusWriter
from whatsapp_operator.metrics import Metrics
from whatsapp_operator.reasons import Reason

logger = logging.getLogger("whatsapp_operator.engine.runtime")

# The server configured by the environment (EVOLUTION_API_URL); also its metrics label.
ENVIRONMENT_SERVER = "evolution"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Runtime:
    """Owns the process-wide parts and their wiring: it creates the Evolution servers, the
    registry, the reconciler and the publisher, starts and stops them, runs the resync and nudge
    loops, and turns stream and leadership callbacks into work. It holds no instance logic of its
    own: what to call in Evolution is the reconciler's, what to write the publisher's."""

    def __init__(
        self,
        config: OperatorConfig,
        *,
        kube: KubeClient | None = None,
        evolution: EvolutionClient | None = None,
        clock: Callable[[], str] = utc_now,
        peering: PeeringIdentity | None = None,
        leadership_interval: float = 5.0,
        namespaces: Sequence[str] = (),
    ):
        self.config = config
        self.kube = kube or KubeClient()
        self.clock = clock
        self.supervisor = Supervisor(initial_delay=config.reconnect_initial_delay, max_delay=config.reconnect_max_delay)
        # Every server lives here; this is the one place that creates them.
        self.servers: dict[str, EvolutionServer] = {}
        self.server = self._add_server(ENVIRONMENT_SERVER, config, rest=evolution)
        self.registry = InstanceRegistry(
            self._server_for, retry=lambda: Backoff(config.retry_initial_delay, config.retry_max_delay)
        )
        self.writer = StatusWriter(
            self.kube.patch_status,
            concurrency=config.max_concurrent_status_writes,
            on_rejected=self._status_rejected,
            supervisor=self.supervisor,
        )
        self.publisher = Publisher(
            self.kube, self.writer, self.supervisor, clock=clock, qr_overdue_after=config.qr_overdue_after
        )
        self.reconciler = Reconciler(self.publisher, clock=clock, still_wanted=self._still_wanted)
        self.nudger = StuckObjectNudger(
            self.kube,
            after=config.stuck_object_after,
            clock=clock,
            is_tracked=lambda key: self.registry.get(key) is not None,
            namespaces=tuple(namespaces),
        )
        self.metrics = Metrics(
            registry=self.registry,
            servers=self.servers,
            reconciler=self.reconciler.stats,
            publisher=self.publisher.stats,
            writer=self.writer.stats,
            supervisor=self.supervisor,
        )
        self.writer.on_written = self.metrics.event_to_status.observe
        self._resync_wanted = asyncio.Event()
        # Standalone, or until the peering object says a higher-priority replica is alive.
        self.active = True
        self.leadership = (
            None
            if peering is None
            else PeeringLeadership(self.kube, peering, on_change=self._leadership_changed, interval=leadership_interval)
        )

    def _add_server(self, name: str, config: OperatorConfig, *, rest: EvolutionClient | None = None) -> EvolutionServer:
        server = EvolutionServer(name, config, self, rest=rest)
        self.servers[name] = server
        return server

    def _server_for(self, spec: InstanceSpec) -> EvolutionServer:
        return self.server

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.metrics_port:
            await self.metrics.serve("0.0.0.0", self.config.metrics_port)
        self.publisher.start()
        for server in self.servers.values():
            server.start(self.supervisor)
        self.supervisor.run("resync", self._resync_loop)
        self.supervisor.run("nudge", self._nudge_loop)
        if self.leadership is not None:
            self.supervisor.run("leadership", self.leadership.run)

    async def stop(self) -> None:
        for tracker in self.registry:
            tracker.cancel_timers()
        await self.supervisor.stop()
        for server in self.servers.values():
            await server.close()
        await self.metrics.close()
        await self.publisher.stop()
        await self.kube.aclose()

    # -- objects (called by the kopf handlers) ---------------------------------------------------------

    def track(self, body: dict[str, Any]) -> InstanceTracker:
        """Register or refresh the tracker of an object. Raises InvalidSpec for an unusable spec."""
        tracker, new = self.registry.track(body)
        if new:
            self.publisher.follow(tracker.key, body.get("status"))
        return tracker

    def report_invalid_spec(self, body: dict[str, Any], error: InvalidSpec) -> None:
        meta = body["metadata"]
        message = f"The spec cannot be used: {error}."
        tracker = self.registry.get((meta["namespace"], meta["name"]))
        if tracker is None:
            self.publisher.publish_untracked(body, Reason.INVALID_SPEC, message)
            return
        tracker.generation = meta.get("generation")
        self.publisher.publish(tracker, tracker.state.failed(Reason.INVALID_SPEC, message))

    def untrack(self, tracker: InstanceTracker) -> None:
        if self.registry.untrack(tracker):
            self.publisher.forget(tracker.key)

    async def reconcile(self, tracker: InstanceTracker) -> None:
        await self.reconciler.reconcile(tracker)

    async def request_reconnect(self, tracker: InstanceTracker) -> None:
        await self.reconciler.request_reconnect(tracker)

    async def request_logout(self, tracker: InstanceTracker) -> None:
        await self.reconciler.request_logout(tracker)

    async def apply_settings(self, tracker: InstanceTracker) -> None:
        await self.reconciler.apply_settings(tracker)

    async def delete(self, tracker: InstanceTracker) -> None:
        """Remove the instance from Evolution; raises EvolutionError (status updated) while it cannot."""
        existed = await self.reconciler.delete(tracker)
        logger.info(
            "Instance %s removed from Evolution API%s",
            tracker.instance_name,
            "" if existed else " (it was already gone)",
        )
        self.untrack(tracker)

    async def _still_wanted(self, tracker: InstanceTracker) -> bool:
        """Before recreating, make sure the object was not deleted meanwhile (by another replica too)."""
        try:
            body = await self.kube.get_instance(tracker.namespace, tracker.name)
        except KubeError as error:
            raise EvolutionError(
                Reason.KUBERNETES_UNAVAILABLE, f"cannot confirm the resource still exists: {error}"
            ) from None
        meta = (body or {}).get("metadata") or {}
        if body is None or meta.get("uid") != tracker.uid or meta.get("deletionTimestamp"):
            logger.info(
                "Not recreating %s: %s/%s is gone or being deleted",
                tracker.instance_name,
                tracker.namespace,
                tracker.name,
            )
            self.untrack(tracker)
            return False
        return True

    # -- resync ------------------------------------------------------------------------------------------

    def request_resync(self) -> None:
        self._resync_wanted.set()

    async def _resync_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._resync_wanted.wait(), timeout=self.config.resync_interval)
            except TimeoutError:
                pass
            self._resync_wanted.clear()
            await self.resync_all()

    async def resync_all(self) -> None:
        if not self.active:
            return
        trackers = [t for t in self.registry if not t.deleting and t.state.phase is not Phase.FAILED]
        slots = asyncio.Semaphore(self.config.max_concurrent_requests)

        async def one(tracker: InstanceTracker) -> None:
            async with slots:
                try:
                    await self._resync_one(tracker)
                except Exception as error:  # noqa: BLE001 - one instance's surprise must not stop the others
                    self.supervisor.count_failure("instance-resync", error)
                    self._retry_resync_later(tracker)

        await asyncio.gather(*(one(tracker) for tracker in trackers))

    async def _resync_one(self, tracker: InstanceTracker) -> None:
        try:
            await self.reconciler.reconcile(tracker)
        except EvolutionError as error:
            logger.warning("Resync of %s/%s failed: %s", tracker.namespace, tracker.name, error)
            if error.retryable:
                self._retry_resync_later(tracker)

    def _retry_resync_later(self, tracker: InstanceTracker) -> None:
        """A resync that met a passing failure (Evolution still loading its instances after a restart,
        a 5xx) is tried again with backoff rather than at the next periodic resync."""
        if tracker.resync_retry is not None or tracker.deleting:
            return

        def retry() -> None:
            tracker.resync_retry = None
            if not tracker.removed and self.active and not tracker.deleting:
                self._resync_soon(tracker)

        tracker.resync_retry = asyncio.get_running_loop().call_later(tracker.retry.next_delay(), retry)

    def _resync_soon(self, tracker: InstanceTracker) -> None:
        self.supervisor.run(
            "instance-resync", lambda: self._resync_one(tracker), name=f"resync-{tracker.instance_name}", once=True
        )

    async def _nudge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.nudge_interval)
            if self.active:
                await self.nudge_stuck_objects()

    async def nudge_stuck_objects(self) -> None:
        await self.nudger.nudge()

    # -- what the Evolution servers report (ServerListener) -------------------------------------------

    def instance_event(self, tracker: InstanceTracker, event: EvolutionEvent, received_at: float) -> None:
        if tracker.deleting or not self.active:
            return
        if isinstance(event, InstanceRemoved) and tracker.expect_removal:
            return  # the operator itself is replacing the instance
        notices = tracker.state.apply_event(event, self.clock())
        self.publisher.publish(tracker, notices, received_at=received_at)
        if isinstance(event, InstanceRemoved):
            self.supervisor.run(
                "recreate",
                lambda: self.reconciler.recreate_after_removal(tracker, allowed=lambda: self.active),
                name=f"recreate-{event.instance}",
                once=True,
            )

    def instance_namespace_joined(self, tracker: InstanceTracker) -> None:
        if not tracker.deleting:
            self._resync_soon(tracker)

    def server_connected(self, server: EvolutionServer) -> None:
        trackers = [tracker for tracker in self.registry if tracker.server is server]
        logger.info("Following events of Evolution API %s; resyncing %d instance(s)", server.name, len(trackers))
        for tracker in trackers:
            notices = tracker.state.stream_restored()
            if notices:
                self.publisher.publish(tracker, notices)
        self.request_resync()  # Evolution replays nothing: read the truth after every (re)connect

    def server_down(self, server: EvolutionServer, message: str) -> None:
        for tracker in self.registry:
            if tracker.server is server:
                self.publisher.publish(tracker, tracker.state.stream_lost(message))

    # -- leadership ----------------------------------------------------------------------------------------

    def _leadership_changed(self, active: bool) -> None:
        self.active = active
        self.publisher.active = active
        if active:
            self.supervisor.run("take-over", self._take_over, once=True)

    async def _take_over(self) -> None:
        """Objects may have changed while another replica acted: drop trackers of deleted ones, resync."""
        for tracker in self.registry:
            try:
                body = await self.kube.get_instance(tracker.namespace, tracker.name)
            except KubeError as error:
                logger.warning("Cannot check %s/%s after taking over: %s", tracker.namespace, tracker.name, error)
                continue
            if body is None or body.get("metadata", {}).get("uid") != tracker.uid:
                self.untrack(tracker)
            else:
                tracker.generation = body["metadata"].get("generation")
                tracker.state = InstanceState.from_status(tracker.instance_name, body.get("status"))
                self.publisher.forget(tracker.key)
                self.publisher.follow(tracker.key, body.get("status"))
        self.request_resync()

    def _status_rejected(self, key: Key, message: str) -> None:
        self.publisher.status_rejected(self.registry.get(key), message)
