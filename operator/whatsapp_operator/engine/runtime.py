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
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from whatsapp_operator.backoff import Backoff
from whatsapp_operator.config import OperatorConfig
from whatsapp_operator.engine.publisher import Publisher
from whatsapp_operator.engine.reconciliation import Reconciler
from whatsapp_operator.engine.registry import InstanceRegistry
from whatsapp_operator.engine.server import Endpoint, EvolutionServer
from whatsapp_operator.engine.spec import ORPHAN, InstanceSpec, InvalidSpec
from whatsapp_operator.engine.state import InstanceState, Notice, NoticeType, Phase
from whatsapp_operator.engine.supervisor import Supervisor
from whatsapp_operator.engine.tracker import InstanceTracker, Key
from whatsapp_operator.evolution.client import EvolutionClient, WebhookConfig
from whatsapp_operator.evolution.client import InstanceRecord as EvolutionRecord
from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.evolution.errors import EvolutionError
from whatsapp_operator.evolution.events import EvolutionEvent, InstanceRemoved
from whatsapp_operator.kube.client import KubeClient, KubeError
from whatsapp_operator.kube.leadership import PeeringIdentity, PeeringLeadership
from whatsapp_operator.kube.nudge import StuckObjectNudger
from whatsapp_operator.kube.servers import (
    DeclaredServer,
    ServerDeclarations,
    ServerHealth,
    ServerInUse,
    secret_value,
)
from whatsapp_operator.kube.servers import (
    operator_namespace as _operator_namespace,
)
from whatsapp_operator.kube.status_writer import StatusWriter
from whatsapp_operator.metrics import Metrics
from whatsapp_operator.names import PAUSED_ANNOTATION
from whatsapp_operator.pacing import ROWS_PER_TURN
from whatsapp_operator.reasons import Reason
from whatsapp_operator.values import posix_time, utc_now

logger = logging.getLogger("whatsapp_operator.engine.runtime")

# The server configured by the environment (EVOLUTION_API_URL); also its metrics label.
ENVIRONMENT_SERVER = "evolution"
# How often declared servers' Secrets (a rotated key) and versions are read again.
SERVER_CHECK_SECONDS = 30.0
__all__ = ["ENVIRONMENT_SERVER", "Runtime", "ServerInUse"]


# A waiting instance gets a new QR code every 20 to 60 s; none for this long means an event was
# missed (the QR-limit refusal leaves the stored state at `connecting`): read it.
QR_STALE_SECONDS = 120.0


def list_confirms(tracker: InstanceTracker, row: EvolutionRecord | None, now: datetime.datetime) -> bool:
    """Whether the stored row, which lags the live state, still proves the status right."""
    state = tracker.state
    if row is None or not tracker.exists or state.sync_error is not None or state.stream_error is not None:
        return False
    if state.instance_id is not None and row.instance_id is not None and state.instance_id != row.instance_id:
        return False  # removed and created again by someone else
    stored = row.connection_status
    if state.phase is Phase.CONNECTED:
        return stored == ConnectionState.OPEN and state.number is not None
    if state.phase is Phase.AWAITING_SCAN:
        return stored == ConnectionState.CONNECTING and _recent(state.qr.updated_at if state.qr else None, now)
    if state.phase is Phase.DISCONNECTED:
        return stored in (ConnectionState.CLOSE, ConnectionState.CONNECTING)
    if state.phase is Phase.LOGGED_OUT:
        return stored == ConnectionState.CLOSE
    return False  # pending, creating, connecting: the live state is what matters


def _recent(timestamp: str | None, now: datetime.datetime) -> bool:
    then = posix_time(timestamp)
    return then is not None and now.timestamp() - then < QR_STALE_SECONDS


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
        operator_namespace: str | None = None,
    ):
        self._started = False
        self.config = config
        self.kube = kube or KubeClient()
        self.clock = clock
        self.supervisor = Supervisor(initial_delay=config.reconnect_initial_delay, max_delay=config.reconnect_max_delay)
        # Every server lives here, by its metrics label; this is the one place that creates them.
        self.servers: dict[str, EvolutionServer] = {}
        self.server = self._add_server(
            ENVIRONMENT_SERVER,
            endpoint=Endpoint(config.evolution_url, config.evolution_api_key, config.websocket_mode),
            rest=evolution,
        )
        self.declarations = ServerDeclarations(self.kube, operator_namespace or _operator_namespace())
        self.server_check_interval = SERVER_CHECK_SECONDS
        self.drift_interval = config.drift_interval
        InstanceState.configure_flapping(config.flapping_changes, config.flapping_window)
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

    def _add_server(
        self,
        name: str,
        *,
        endpoint: Endpoint | None = None,
        rest: EvolutionClient | None = None,
        problem: EvolutionError | None = None,
    ) -> EvolutionServer:
        server = EvolutionServer(
            name,
            self.config,
            self,
            self.supervisor,
            endpoint=endpoint,
            rest=rest,
            on_demand=name != ENVIRONMENT_SERVER,
            problem=problem,
        )
        self.servers[name] = server
        if self._started:
            server.start()
        return server

    def _server_for(self, spec: InstanceSpec) -> EvolutionServer:
        """The server unit an instance lives on; a declared server that does not exist (yet) is a
        unit that says so on every call, and becomes usable when its object appears."""
        ref = spec.server_ref
        if ref is None:
            return self.server
        server = self.servers.get(ref.label)
        if server is None:
            server = self._add_server(ref.label, problem=self.declarations.missing(ref))
        return server

    # -- Evolution servers declared by objects ------------------------------------------------------------

    async def declare_server(self, body: dict[str, Any]) -> None:
        """An EvolutionServer or ClusterEvolutionServer was created or changed: (re)connect its unit."""
        declared = self.declarations.remember(body)
        server = self.servers.get(declared.ref.label) or self._add_server(declared.ref.label, problem=None)
        await self._refresh_server(server, declared)

    async def _refresh_server(self, server: EvolutionServer, declared: DeclaredServer) -> None:
        """Read the server's Secret again (a rotated key is used at once), then its version."""
        was_usable = server.problem is None and server.endpoint is not None
        try:
            endpoint = await self.declarations.endpoint(declared)
        except EvolutionError as problem:
            await server.unusable(problem)
        else:
            changed = await server.use(endpoint)
            if changed or not was_usable:
                logger.info("Evolution server %s: using %s", server.name, endpoint.url)
                for tracker in self.registry:
                    if tracker.server is server:
                        self._resync_soon(tracker)
        health = ServerHealth()
        if server.problem is None:
            try:
                info = await server.rest.server_info()
            except EvolutionError as error:
                health = ServerHealth(problem=error)
            else:
                health = ServerHealth(info.version, info.whatsapp_web_version)
        await self.declarations.report(server, declared, self._instances_on(server), health)

    async def retire_server(self, body: dict[str, Any]) -> None:
        """A server object is being deleted: refused (ServerInUse) while instances still use it."""
        declared = self.declarations.remember(body)
        server = self.servers.get(declared.ref.label)
        users = self._instances_on(server) if server is not None else 0
        if users:
            await self.declarations.report(server, declared, users, deleting=True)
            raise ServerInUse(declared.ref.label, users)
        self.declarations.forget(declared.ref)
        if server is not None:
            del self.servers[declared.ref.label]
            await server.close()

    def _report_server_soon(self, server: EvolutionServer) -> None:
        """A declared server's status follows its socket and its number of instances."""
        if server is self.server or not self._started:
            return
        declared = self.declarations.get(server.name)
        if declared is None:
            return

        async def report() -> None:
            await self.declarations.report(server, declared, self._instances_on(server))

        self.supervisor.run("server-status", report, name=f"server-status-{server.name}", once=True)

    def _instances_on(self, server: EvolutionServer | None) -> int:
        return sum(1 for tracker in self.registry if tracker.server is server)

    async def check_servers(self) -> None:
        for declared in self.declarations.all():
            server = self.servers.get(declared.ref.label)
            if server is not None:
                await self._refresh_server(server, declared)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.metrics_port:
            await self.metrics.serve("0.0.0.0", self.config.metrics_port)
        self.publisher.start()
        self._started = True
        for server in self.servers.values():
            server.start()
        self.supervisor.run("resync", self._resync_loop)
        self.supervisor.run("nudge", self._nudge_loop)
        self.supervisor.run("drift", self._drift_loop)
        self.supervisor.run("server-check", lambda: self._every(lambda: self.server_check_interval, self.check_servers))
        if self.leadership is not None:
            self.supervisor.run("leadership", self.leadership.run)

    async def stop(self) -> None:
        for tracker in self.registry:
            tracker.cancel_timers()
        await self.supervisor.stop()
        for server in list(self.servers.values()):
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
            self._report_server_soon(tracker.server)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        self.set_paused(tracker, annotations.get(PAUSED_ANNOTATION) == "true")
        return tracker

    def set_paused(self, tracker: InstanceTracker, paused: bool) -> None:
        """The paused annotation: no call to Evolution for this instance while it says "true"."""
        if paused == tracker.paused:
            return
        tracker.paused = paused
        now = self.clock()
        self.publisher.publish(tracker, tracker.state.pause(now) if paused else tracker.state.resume(now))

    async def prepare(self, tracker: InstanceTracker) -> None:
        """Read what the spec points at in Kubernetes (the webhook's header Secrets) before calls."""
        webhook = tracker.spec.webhook
        tracker.webhook, tracker.webhook_problem = None, None
        if webhook is None:
            return
        headers: list[tuple[str, str]] = []
        for header, ref in webhook.headers:
            try:
                secret = await self.kube.get_secret(tracker.namespace, ref.name)
            except KubeError as error:
                tracker.webhook_problem = f"cannot read Secret {ref.name} for webhook header {header}: {error}"
                return
            value = secret_value(secret, ref.key) if secret is not None else None
            if value is None:
                tracker.webhook_problem = (
                    f"webhook header {header} needs key {ref.key!r} of Secret {tracker.namespace}/{ref.name}, "
                    "which does not exist"
                )
                return
            headers.append((header, value))
        tracker.webhook = WebhookConfig(
            url=webhook.url,
            events=webhook.events,
            by_events=webhook.by_events,
            base64=webhook.base64,
            headers=tuple(headers),
        )

    async def ensure_connection_secret(self, tracker: InstanceTracker) -> None:
        """Write spec.writeConnectionSecretToRef again if it is missing or differs (someone edited it)."""
        name = tracker.spec.connection_secret
        if name is None or tracker.token is None or tracker.removed or tracker.server.endpoint is None:
            return
        await self.publisher.write_connection_secret(
            tracker, name, url=tracker.server.endpoint.url, token=tracker.token.reveal()
        )

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
            self._report_server_soon(tracker.server)

    async def reconcile(self, tracker: InstanceTracker) -> None:
        await self.reconciler.reconcile(tracker)
        await self.ensure_connection_secret(tracker)

    async def apply_webhook(self, tracker: InstanceTracker) -> None:
        await self.reconciler.apply_webhook(tracker)

    async def request_reconnect(self, tracker: InstanceTracker) -> None:
        await self.reconciler.request_reconnect(tracker)
        await self.ensure_connection_secret(tracker)  # a renewed instance has a new token

    async def request_logout(self, tracker: InstanceTracker) -> None:
        await self.reconciler.request_logout(tracker)

    async def apply_settings(self, tracker: InstanceTracker) -> None:
        await self.reconciler.apply_settings(tracker)

    async def delete(self, tracker: InstanceTracker) -> None:
        """Remove the instance from Evolution; raises EvolutionError (status updated) while it cannot.

        With deletionPolicy Orphan, or while paused (no call to Evolution at all), only the
        Kubernetes object goes: an Event says the instance stays in Evolution.
        """
        why = "deletionPolicy is Orphan" if tracker.spec.deletion_policy == ORPHAN else None
        why = why or ("the resource is paused" if tracker.paused else None)
        if why is not None:
            self.publisher.notify(
                tracker.involved,
                [
                    Notice(
                        NoticeType.NORMAL,
                        "Orphaned",
                        f"Instance {tracker.instance_name} stays in Evolution API ({why}); only the resource is removed.",
                    )
                ],
            )
            self.untrack(tracker)
            return
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
                await self.resync_from_lists()  # the periodic safety net
                continue
            self._resync_wanted.clear()
            await self.resync_all()  # after a (re)connect: events may have been missed, read everything

    def _resyncable(self) -> list[InstanceTracker]:
        return [t for t in self.registry if not t.deleting and not t.paused and t.state.phase is not Phase.FAILED]

    async def resync_all(self) -> None:
        """Read every instance in Evolution one by one and correct its status."""
        if not self.active:
            return
        await self._resync(self._resyncable())

    async def resync_from_lists(self) -> None:
        """The periodic resync: one list call per server says which instances exist and, where its
        stored state can be trusted (docs/evolution-api.md §3.5), that the status is right; only
        the others are read one by one. Events arrive while the socket is up, and every reconnect
        reads everything, so this only has to catch what slipped through."""
        if not self.active:
            return
        by_server: dict[EvolutionServer, list[InstanceTracker]] = {}
        for tracker in self._resyncable():
            by_server.setdefault(tracker.server, []).append(tracker)
        doubtful: list[InstanceTracker] = []
        now = datetime.datetime.now(datetime.UTC)
        for server, trackers in by_server.items():
            try:
                rows = await server.rest.fetch_instances()
            except EvolutionError as error:
                logger.warning("Listing the instances of %s failed (%s); reading them one by one", server.name, error)
                doubtful += trackers
                continue
            for index, tracker in enumerate(trackers):
                if index % ROWS_PER_TURN == 0:
                    await asyncio.sleep(0)  # thousands of instances: let the events through meanwhile
                if list_confirms(tracker, rows.get(tracker.instance_name), now):
                    notices = tracker.state.tick(self.clock())  # a flapping episode may have ended quietly
                    if notices:
                        self.publisher.publish(tracker, notices)
                else:
                    doubtful.append(tracker)
        await self._resync(doubtful)

    async def _resync(self, trackers: list[InstanceTracker]) -> None:
        await self._for_each(trackers, self._resync_one, "instance-resync", on_failure=self._retry_resync_later)

    async def _resync_one(self, tracker: InstanceTracker) -> None:
        notices = tracker.state.tick(self.clock())  # a flapping episode may have ended quietly
        if notices:
            self.publisher.publish(tracker, notices)
        try:
            await self.reconcile(tracker)
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

    async def _every(
        self, interval: Callable[[], float], job: Callable[[], Awaitable[None]], *, first: float | None = None
    ) -> None:
        """Run `job` every `interval()` seconds (the first time after `first`) while this replica leads."""
        delay = interval() if first is None else first
        while True:
            await asyncio.sleep(delay)
            if self.active:
                await job()
            delay = interval()

    async def _for_each(
        self,
        trackers: list[InstanceTracker],
        job: Callable[[InstanceTracker], Awaitable[None]],
        kind: str,
        on_failure: Callable[[InstanceTracker], None] = lambda tracker: None,
    ) -> None:
        """`job` for every tracker, as many at once as REST calls may be in flight; one instance's
        surprise is counted under `kind` and does not stop the others."""
        slots = asyncio.Semaphore(self.config.max_concurrent_requests)

        async def one(tracker: InstanceTracker) -> None:
            async with slots:
                try:
                    await job(tracker)
                except Exception as error:  # noqa: BLE001 - one instance's surprise must not stop the others
                    self.supervisor.count_failure(kind, error)
                    on_failure(tracker)

        await asyncio.gather(*(one(tracker) for tracker in trackers))

    async def _drift_loop(self) -> None:
        while True:
            await self.drift_round(list(self.registry))

    async def drift_round(
        self, trackers: list[InstanceTracker], sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """One drift period: every instance checked once, the checks spread evenly over the period,
        so Evolution gets a steady trickle of reads (two per instance per period), not a burst of
        twice the instance count at once. A check that takes longer than its share slows the round
        instead of piling up."""
        if not trackers:
            await sleep(self.drift_interval)
            return
        spacing = self.drift_interval / len(trackers)
        for tracker in trackers:
            await sleep(spacing)
            if self.active and not tracker.removed:
                await self.repair_drift([tracker])

    async def repair_drift(self, trackers: list[InstanceTracker]) -> None:
        """Settings and webhook read back and put back; the connection Secret checked (per instance:
        two reads of Evolution, one of Kubernetes)."""

        async def one(tracker: InstanceTracker) -> None:
            if tracker.paused or tracker.deleting or tracker.removed or not tracker.exists:
                return
            try:
                await self.prepare(tracker)
                await self.reconciler.repair_drift(tracker)
                await self.ensure_connection_secret(tracker)
            except EvolutionError as error:
                logger.warning("Drift check of %s/%s failed: %s", tracker.namespace, tracker.name, error)

        await self._for_each(trackers, one, "drift")

    async def _nudge_loop(self) -> None:
        # Half a period out of step with the resync, which starts with it: both begin by decoding a
        # list of every instance, and together they held the loop for 150 ms at 1,000 (bench/README.md).
        interval = self.config.nudge_interval
        await self._every(lambda: interval, self.nudge_stuck_objects, first=interval / 2)

    async def nudge_stuck_objects(self) -> None:
        await self.nudger.nudge()

    # -- what the Evolution servers report (ServerListener) -------------------------------------------

    def instance_event(self, tracker: InstanceTracker, event: EvolutionEvent, received_at: float) -> None:
        if tracker.deleting or not self.active:
            return
        if isinstance(event, InstanceRemoved) and tracker.expect_removal:
            return  # the operator itself is replacing the instance
        if tracker.state.is_silent_renewal(event):
            return  # one every few QR codes while waiting for a scan: nothing to render or write
        notices = tracker.state.apply_event(event, self.clock())
        self.publisher.publish(tracker, notices, received_at=received_at)
        if isinstance(event, InstanceRemoved):
            self.supervisor.run(
                "recreate",
                lambda: self._recreate(tracker),
                name=f"recreate-{event.instance}",
                once=True,
            )

    async def _recreate(self, tracker: InstanceTracker) -> None:
        await self.reconciler.recreate_after_removal(tracker, allowed=lambda: self.active)
        await self.ensure_connection_secret(tracker)  # a recreated instance has a new token

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
        # Evolution replays nothing: read again what was read before this (re)connect. Instances
        # whose first reconciliation starts after it (kopf resuming thousands of objects at start)
        # read the truth then, with the socket already up: reading them twice would only cost.
        connected_at = time.monotonic()
        self.supervisor.run(
            "resync",
            lambda: self._resync_after_connect(server, connected_at),
            name=f"resync-after-connect-{server.name}",
            once=True,
        )
        self._report_server_soon(server)
        if server.socketio_stats.connects > 1:  # Evolution may have restarted from an older backup
            self.supervisor.run(
                "drift", lambda: self.repair_drift(trackers), name=f"drift-after-reconnect-{server.name}", once=True
            )

    async def _resync_after_connect(self, server: EvolutionServer, connected_at: float) -> None:
        if not self.active:
            return
        await self._resync(
            [
                tracker
                for tracker in self._resyncable()
                if tracker.server is server
                and tracker.reconcile_started is not None
                and tracker.reconcile_started < connected_at
            ]
        )

    def server_down(self, server: EvolutionServer, message: str) -> None:
        self._report_server_soon(server)
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
                server = tracker.state.server
                tracker.state = InstanceState.from_status(tracker.instance_name, body.get("status"))
                tracker.state.server = server
                self.publisher.forget(tracker.key)
                self.publisher.follow(tracker.key, body.get("status"))
        self.request_resync()

    def _status_rejected(self, key: Key, message: str) -> None:
        self.publisher.status_rejected(self.registry.get(key), message)
