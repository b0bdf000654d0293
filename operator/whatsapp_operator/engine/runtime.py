"""The operator's engine: one tracker per WhatsAppInstance, Evolution calls, events in, status out.

kopf handlers (handlers.py) only register objects and ask for create/delete/reconnect; everything
that happens later (Socket.IO events, resyncs after reconnects and on a timer, recreation of
instances removed behind our back) runs here, in the operator's event loop, without blocking.
REST calls for one instance are serialised by its lock (Evolution builds duplicate sockets on
concurrent connects); calls across instances are bounded by the Evolution client's semaphore.
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from whatsapp_operator.backoff import Backoff
from whatsapp_operator.config import OperatorConfig, WebsocketMode
from whatsapp_operator.engine.spec import InstanceSpec, InvalidSpec
from whatsapp_operator.engine.state import WAITING_FOR_PERSON, InstanceState, Notice, Phase
from whatsapp_operator.engine.supervisor import Supervisor
from whatsapp_operator.evolution.client import (
    ConnectResult,
    CreatedInstance,
    EvolutionClient,
    InstanceAlreadyExists,
    InstanceRejected,
)
from whatsapp_operator.evolution.errors import EvolutionError, InstanceNotFound
from whatsapp_operator.evolution.events import EvolutionEvent, InstanceRemoved
from whatsapp_operator.evolution.stream import EventStream
from whatsapp_operator.kube.client import KubeClient, KubeError
from whatsapp_operator.kube.leadership import PeeringIdentity, PeeringLeadership
from whatsapp_operator.kube.status_writer import STATUS_REJECTED, Key, StatusWriter
from whatsapp_operator.metrics import Metrics
from whatsapp_operator.names import FINALIZER, NUDGE_ANNOTATION

logger = logging.getLogger("whatsapp_operator.engine.runtime")
T = TypeVar("T")
_REMOVAL_WAIT_SECONDS = 30.0
# An Evolution restart moves every instance at once (two Events each): room for thousands, posted
# by a few workers so a burst drains in seconds.
_EVENT_BACKLOG = 10_000
_EVENT_POSTERS = 4
# An Event refused for a passing reason (429, 5xx, the API unreachable) is tried again, as
# client-go's recorder does (12 attempts, about 10 s apart at most).
_EVENT_ATTEMPTS = 12


def _older_than(timestamp: Any, now: datetime.datetime, seconds: float) -> bool:
    try:
        then = datetime.datetime.fromisoformat(str(timestamp))
    except ValueError:
        return False
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.UTC)
    return (now - then).total_seconds() >= seconds


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class InstanceTracker:
    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: InstanceSpec
    state: InstanceState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exists: bool = False  # confirmed present in Evolution since this operator started
    deleting: bool = False
    expect_removal: bool = False  # the operator itself is replacing the instance
    resync_retry: asyncio.TimerHandle | None = None
    qr_watch: asyncio.TimerHandle | None = None
    reconnect_requested: bool = False
    retry: Backoff = field(default_factory=Backoff)
    status_rejection: str | None = None  # the last refusal of this object's status, reported once

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def involved(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid}


@dataclass
class RuntimeStats:
    reconcile_errors: int = 0
    recreations: int = 0
    events_dropped: int = 0


class Runtime:
    def __init__(
        self,
        config: OperatorConfig,
        *,
        kube: KubeClient | None = None,
        evolution: EvolutionClient | None = None,
        clock: Callable[[], str] = utc_now,
        peering: PeeringIdentity | None = None,
        leadership_interval: float = 5.0,
    ):
        self.config = config
        self.kube = kube or KubeClient()
        self.evolution = evolution or EvolutionClient(
            config.evolution_url,
            config.evolution_api_key,
            timeout=config.request_timeout,
            max_concurrent_requests=config.max_concurrent_requests,
        )
        self.clock = clock
        # The namespaces (globs) kopf serves; empty: all. Objects elsewhere are never nudged.
        self.namespaces: tuple[str, ...] = ()
        self.supervisor = Supervisor(initial_delay=config.reconnect_initial_delay, max_delay=config.reconnect_max_delay)
        self.metrics = Metrics(self)
        self.writer = StatusWriter(
            self.kube.patch_status,
            concurrency=config.max_concurrent_status_writes,
            on_written=self.metrics.event_to_status.observe,
            on_rejected=self._status_rejected,
            supervisor=self.supervisor,
        )
        self.stream = EventStream(
            config,
            on_event=self.on_event,
            on_connected=self._stream_connected,
            on_disconnected=self._stream_disconnected,
            on_instance_joined=self._instance_namespace_joined,
        )
        self.trackers: dict[Key, InstanceTracker] = {}
        self.by_instance: dict[str, InstanceTracker] = {}
        self.stats = RuntimeStats()
        self._events: asyncio.Queue[tuple[dict[str, Any], Notice]] = asyncio.Queue(maxsize=_EVENT_BACKLOG)
        self._resync_wanted = asyncio.Event()
        self._outage_timer: asyncio.TimerHandle | None = None
        self._outage_reason = ""
        # Standalone, or until the peering object says a higher-priority replica is alive.
        self.active = True
        self.leadership = (
            None
            if peering is None
            else PeeringLeadership(self.kube, peering, on_change=self._leadership_changed, interval=leadership_interval)
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.metrics_port:
            await self.metrics.serve("0.0.0.0", self.config.metrics_port)
        self.writer.start()
        self.supervisor.run("evolution-events", self.stream.run)
        self.supervisor.run("resync", self._resync_loop)
        self.supervisor.run("nudge", self._nudge_loop)
        for index in range(_EVENT_POSTERS):
            self.supervisor.run("kubernetes-events", self._post_events, name=f"kubernetes-events-{index}")
        if self.leadership is not None:
            self.supervisor.run("leadership", self.leadership.run)

    async def stop(self) -> None:
        if self._outage_timer is not None:
            self._outage_timer.cancel()
        for tracker in self.trackers.values():
            for timer in (tracker.resync_retry, tracker.qr_watch):
                if timer is not None:
                    timer.cancel()
        await self.supervisor.stop()
        await self.stream.client.close()
        await self.metrics.close()
        await self.writer.stop()
        await self.evolution.aclose()
        await self.kube.aclose()

    # -- objects (called by the kopf handlers) ---------------------------------------------------

    def track(self, body: dict[str, Any]) -> InstanceTracker:
        """Register or refresh the tracker of an object. Raises InvalidSpec for an unusable spec."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        tracker = self.trackers.get(key)
        spec = InstanceSpec.parse(meta["namespace"], meta["name"], body.get("spec"))
        if tracker is not None and tracker.uid == meta.get("uid"):
            tracker.spec = InstanceSpec(tracker.spec.instance_name, spec.integration, spec.number, spec.settings)
            tracker.generation = meta.get("generation")
            return tracker
        status = body.get("status") or {}
        # The name is fixed once written to status: a later default change must not orphan it.
        instance_name = status.get("instanceName") or spec.instance_name
        owner = self.by_instance.get(instance_name)
        if owner is not None and owner.key != key:
            raise InvalidSpec(
                f"instance name {instance_name!r} is already used by "
                f"{owner.namespace}/{owner.name}; choose another spec.instanceName"
            )
        spec = InstanceSpec(instance_name, spec.integration, spec.number, spec.settings)
        tracker = InstanceTracker(
            namespace=key[0],
            name=key[1],
            uid=meta.get("uid", ""),
            generation=meta.get("generation"),
            spec=spec,
            state=InstanceState.from_status(instance_name, status),
            retry=Backoff(self.config.retry_initial_delay, self.config.retry_max_delay),
        )
        self.trackers[key] = tracker
        self.by_instance[instance_name] = tracker
        self.writer.track(key, status)
        self.stream.watch(instance_name)
        return tracker

    def report_invalid_spec(self, body: dict[str, Any], error: InvalidSpec) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        tracker = self.trackers.get(key)
        if tracker is None:
            status = body.get("status") or {}
            state = InstanceState.from_status(status.get("instanceName") or "", status)
            self.writer.track(key, status)
            notices = state.failed("InvalidSpec", f"The spec cannot be used: {error}.")
            self.writer.submit(key, state.render_status(meta.get("generation"), self.clock()))
            self._queue_notices(
                {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid", "")}, notices
            )
            return
        tracker.generation = meta.get("generation")
        self.publish(tracker, tracker.state.failed("InvalidSpec", f"The spec cannot be used: {error}."))

    def untrack(self, tracker: InstanceTracker) -> None:
        self.trackers.pop(tracker.key, None)
        for timer in (tracker.resync_retry, tracker.qr_watch):
            if timer is not None:
                timer.cancel()
        if self.by_instance.get(tracker.spec.instance_name) is tracker:
            del self.by_instance[tracker.spec.instance_name]
            self.stream.unwatch(tracker.spec.instance_name)
        self.writer.forget(tracker.key)

    async def reconcile(self, tracker: InstanceTracker) -> None:
        """Make sure the instance exists in Evolution and the status tells its truth.

        Raises EvolutionError when Evolution could not be reached or refused; the status then says so.
        """
        async with tracker.lock:
            await self._reconcile_locked(tracker)

    async def request_reconnect(self, tracker: InstanceTracker) -> None:
        """A person asks for a new QR cycle (the reconnect annotation)."""
        async with tracker.lock:
            if tracker.state.phase is Phase.LOGGED_OUT:
                await self._renew_locked(tracker)
            tracker.reconnect_requested = True
            await self._reconcile_locked(tracker)

    async def request_logout(self, tracker: InstanceTracker) -> None:
        """A person asks to unlink the number (the logout annotation); also stops a QR cycle."""
        async with tracker.lock:
            try:
                await self.evolution.logout(tracker.spec.instance_name)
            except EvolutionError as error:
                if error.status != 400:  # 400: "not connected", the wanted outcome already
                    raise self._fail_sync(tracker, error) from None
            notices = tracker.state.sync_succeeded() + tracker.state.logged_out(self.clock())
            self.publish(tracker, notices)

    async def _renew_locked(self, tracker: InstanceTracker) -> None:
        """Replace a logged-out instance by a fresh one before pairing again.

        Evolution 2.3.6 stops processing the messages of an instance that logs out and pairs again
        in the same process (docs/evolution-api.md §3.7); a new instance under the same name has no such past.
        """
        name = tracker.spec.instance_name
        tracker.expect_removal = True
        try:
            await self._evolution_call(tracker, self.evolution.delete_instance(name))
            await self._wait_until_released(tracker)
            created = await self._create_in_evolution(tracker)
        finally:
            tracker.expect_removal = False
        self.publish(tracker, tracker.state.created(created.instance_id, renewed=True))

    async def apply_settings(self, tracker: InstanceTracker) -> None:
        async with tracker.lock:
            await self._evolution_call(
                tracker, self.evolution.set_settings(tracker.spec.instance_name, tracker.spec.settings)
            )
            self.publish(tracker, [])

    async def delete(self, tracker: InstanceTracker) -> None:
        """Remove the instance from Evolution; raises EvolutionError (status updated) while it cannot."""
        tracker.deleting = True
        tracker.state.deleting = True
        async with tracker.lock:
            try:
                existed = await self.evolution.delete_instance(tracker.spec.instance_name)
            except EvolutionError as error:
                message = (
                    f"Cannot remove instance {tracker.spec.instance_name} from Evolution API yet "
                    f"({error.message}); the resource is kept until Evolution answers."
                )
                self.publish(tracker, tracker.state.sync_failed(error.reason, message))
                await self.writer.flush(tracker.key)
                raise
        logger.info(
            "Instance %s removed from Evolution API%s",
            tracker.spec.instance_name,
            "" if existed else " (it was already gone)",
        )
        self.untrack(tracker)

    # -- reconciliation ----------------------------------------------------------------------------

    async def _reconcile_locked(self, tracker: InstanceTracker) -> None:
        name = tracker.spec.instance_name
        try:
            state = await self._evolution_call(tracker, self.evolution.connection_state(name))
        except InstanceNotFound:
            await self._create_locked(tracker)
            return
        if not tracker.exists:
            await self._adopt_locked(tracker)
        await self._observe_locked(tracker, state)

    async def _create_locked(self, tracker: InstanceTracker) -> None:
        recreated = tracker.exists or tracker.state.instance_id is not None
        if recreated and not await self._still_wanted(tracker):
            return
        created = await self._create_in_evolution(tracker)
        if recreated:
            self.stats.recreations += 1
        self.publish(tracker, tracker.state.created(created.instance_id, recreated=recreated))
        spec = tracker.spec
        result = await self._evolution_call(tracker, self.evolution.connect(spec.instance_name, number=spec.number))
        await self._apply_connect_result_locked(tracker, result)

    async def _create_in_evolution(self, tracker: InstanceTracker) -> CreatedInstance:
        spec = tracker.spec
        try:
            created = await self._evolution_call(
                tracker,
                self.evolution.create_instance(
                    spec.instance_name, integration=spec.integration, settings=spec.settings
                ),
            )
        except InstanceAlreadyExists as error:
            # connectionState said 404 a moment ago: a removal is still being cleaned up, or another
            # client created the name in between. Either way the next attempt sorts it out.
            raise EvolutionError(
                "InstanceNameBusy", f"{error.message}; Evolution is still releasing the name, retrying"
            ) from None
        except InstanceRejected as error:
            self.publish(
                tracker,
                tracker.state.failed(
                    "EvolutionRejectedInstance", f"Evolution API refused to create the instance: {error.message}."
                ),
            )
            raise
        tracker.exists = True
        return created

    async def _still_wanted(self, tracker: InstanceTracker) -> bool:
        """Before recreating, make sure the object was not deleted meanwhile (by another replica too)."""
        try:
            body = await self.kube.get_instance(tracker.namespace, tracker.name)
        except KubeError as error:
            raise EvolutionError(
                "KubernetesUnavailable", f"cannot confirm the resource still exists: {error}"
            ) from None
        meta = (body or {}).get("metadata") or {}
        if body is None or meta.get("uid") != tracker.uid or meta.get("deletionTimestamp"):
            logger.info(
                "Not recreating %s: %s/%s is gone or being deleted",
                tracker.spec.instance_name,
                tracker.namespace,
                tracker.name,
            )
            self.untrack(tracker)
            return False
        return True

    async def _adopt_locked(self, tracker: InstanceTracker) -> None:
        name = tracker.spec.instance_name
        tracker.exists = True
        if tracker.state.instance_id is not None:
            return  # ours already: the operator restarted
        record = await self._evolution_call(tracker, self.evolution.fetch_instance(name))
        if self.stream.mode is not WebsocketMode.GLOBAL:
            await self._evolution_call(tracker, self.evolution.subscribe_events(name))
        await self._evolution_call(tracker, self.evolution.set_settings(name, tracker.spec.settings))
        self.publish(tracker, tracker.state.created(record.instance_id if record else None, adopted=True))

    async def _observe_locked(self, tracker: InstanceTracker, state: str | None) -> None:
        name = tracker.spec.instance_name
        now = self.clock()
        current = tracker.state
        if state is None:
            raise self._fail_sync(
                tracker,
                EvolutionError("EvolutionNotReady", f"Evolution API has instance {name} but has not loaded it yet"),
            )
        if state == "open":
            notices: list[Notice] = []
            if current.phase is not Phase.CONNECTED or current.number is None:
                notices = await self._connected_locked(tracker, now)
            tracker.reconnect_requested = False
            self.publish(tracker, notices)
        elif state == "connecting":
            if current.phase is Phase.CONNECTED or (
                current.phase is Phase.CONNECTING and current.reason == "Reconnecting"
            ):
                self.publish(tracker, current.connecting(now))  # a paired session reconnecting
            else:
                # Read-only while connecting: returns the QR being shown (docs/evolution-api.md §3.3).
                result = await self._evolution_call(tracker, self.evolution.connect(name))
                await self._apply_connect_result_locked(tracker, result)
        elif state == "close":
            if tracker.reconnect_requested or current.phase in (Phase.PENDING, Phase.CREATING):
                result = await self._evolution_call(tracker, self.evolution.connect(name, number=tracker.spec.number))
                tracker.reconnect_requested = False
                await self._apply_connect_result_locked(tracker, result)
            elif current.phase in WAITING_FOR_PERSON:
                self.publish(tracker, [])
            else:
                # The close event was missed (no replay after a reconnect): the stored row tells why.
                record = await self._evolution_call(tracker, self.evolution.fetch_instance(name))
                code = record.disconnection_reason_code if record else None
                self.publish(tracker, current.closed(code, now))
        else:
            self.publish(tracker, [])

    async def _apply_connect_result_locked(self, tracker: InstanceTracker, result: ConnectResult) -> None:
        now = self.clock()
        current = tracker.state
        if result.state == "open":
            notices = await self._connected_locked(tracker, now)
        elif result.qr is not None and (result.qr.code or result.qr.pairing_code):
            notices = current.qr_received(
                result.qr.code, result.qr.base64, result.qr.pairing_code, now, count=result.qr.count
            )
            if current.phase is not Phase.AWAITING_SCAN:
                notices += current.connecting(now)  # a stale cached QR: the fresh one follows by event
        else:
            notices = current.connecting(now)  # {"count":0}: the first QR is not ready yet (docs/evolution-api.md §7.1)
        self.publish(tracker, notices)

    async def _connected_locked(self, tracker: InstanceTracker, now: str) -> list[Notice]:
        """Evolution says open: the stored row has the number and profile the state misses."""
        record = await self._evolution_call(tracker, self.evolution.fetch_instance(tracker.spec.instance_name))
        if record is None:
            return tracker.state.connected(None, None, None, now)
        return tracker.state.connected(record.owner_jid, record.profile_name, record.profile_picture_url, now)

    async def _evolution_call(self, tracker: InstanceTracker, call: Awaitable[T]) -> T:
        try:
            result = await call
        except InstanceNotFound:
            raise
        except EvolutionError as error:
            raise self._fail_sync(tracker, error) from None
        notices = tracker.state.sync_succeeded()
        if notices:
            self.publish(tracker, notices)
        tracker.retry.reset()
        return result

    def _fail_sync(self, tracker: InstanceTracker, error: EvolutionError) -> EvolutionError:
        self.stats.reconcile_errors += 1
        self.publish(tracker, tracker.state.sync_failed(error.reason, error.message))
        return error

    # -- resync ----------------------------------------------------------------------------------

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
        trackers = [t for t in self.trackers.values() if not t.deleting and t.state.phase is not Phase.FAILED]
        slots = asyncio.Semaphore(self.config.max_concurrent_requests)

        async def one(tracker: InstanceTracker) -> None:
            async with slots:
                try:
                    await self._resync_one(tracker)
                except Exception as error:  # noqa: BLE001 - one instance's surprise must not stop the others
                    self.supervisor.count_failure("instance-resync", error)
                    self._retry_resync_later(tracker)

        await asyncio.gather(*(one(tracker) for tracker in trackers))

    async def _nudge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.nudge_interval)
            if self.active:
                await self.nudge_stuck_objects()

    async def nudge_stuck_objects(self) -> None:
        """Give kopf a new watch event for objects whose finalizer patch it gave up on.

        kopf retries a 429 or a 5xx of its finalizer JSON patch, but after a 409 it waits for the
        object's next watch event. A new object then never gets created in Evolution, and a
        deleted one stays Terminating after its instance is gone. An annotation under kopf's own
        prefix (outside the objects' essence: no handler runs for it) is that event.
        """
        try:
            objects = await self.kube.list_instances()
        except KubeError as error:
            logger.debug("Cannot list WhatsAppInstances to find objects kopf left waiting: %s", error)
            return
        now = datetime.datetime.now(datetime.UTC)
        for obj in objects:
            meta = obj.get("metadata") or {}
            if self.namespaces and not any(
                fnmatch.fnmatchcase(str(meta.get("namespace")), pattern) for pattern in self.namespaces
            ):
                continue
            finalizers = meta.get("finalizers") or []
            deleting = meta.get("deletionTimestamp")
            if deleting:
                key = (meta.get("namespace"), meta.get("name"))
                waiting = (
                    FINALIZER in finalizers
                    and key not in self.trackers
                    and _older_than(deleting, now, self.config.stuck_object_after)
                )
            else:
                waiting = FINALIZER not in finalizers and _older_than(
                    meta.get("creationTimestamp"), now, self.config.stuck_object_after
                )
            if not waiting:
                continue
            logger.warning(
                "%s/%s waits for kopf to %s its finalizer; nudging it",
                meta.get("namespace"),
                meta.get("name"),
                "remove" if deleting else "add",
            )
            try:
                await self.kube.annotate_instance(
                    str(meta.get("namespace")), str(meta.get("name")), NUDGE_ANNOTATION, self.clock()
                )
            except KubeError as error:
                logger.warning("Could not nudge %s/%s: %s", meta.get("namespace"), meta.get("name"), error)

    # -- events from Evolution -------------------------------------------------------------------

    def on_event(self, event: EvolutionEvent, received_at: float) -> None:
        tracker = self.by_instance.get(event.instance)
        if tracker is None or tracker.deleting or not self.active:
            return
        if isinstance(event, InstanceRemoved) and tracker.expect_removal:
            return  # the operator itself is replacing the instance
        notices = tracker.state.apply_event(event, self.clock())
        self.publish(tracker, notices, received_at=received_at)
        if isinstance(event, InstanceRemoved):
            self.supervisor.run(
                "recreate", lambda: self._recreate_after_removal(tracker), name=f"recreate-{event.instance}", once=True
            )

    async def _wait_until_released(self, tracker: InstanceTracker, *, until_repaired: bool = False) -> None:
        """Evolution's cleanup runs after a removal; the name is free only once it answers 404.

        With `until_repaired`, the wait also ends when another path (a resync) has created the
        instance again meanwhile: the tracker then holds an instance id once more.
        """
        wait = Backoff(initial=0.2, maximum=2.0)
        deadline = time.monotonic() + _REMOVAL_WAIT_SECONDS
        while not tracker.deleting and time.monotonic() < deadline:
            if until_repaired and tracker.state.instance_id is not None:
                return
            try:
                await self.evolution.connection_state(tracker.spec.instance_name)
            except InstanceNotFound:
                return
            except EvolutionError:
                pass
            await asyncio.sleep(wait.next_delay())

    async def _recreate_after_removal(self, tracker: InstanceTracker) -> None:
        tracker.exists = True  # it existed: what follows is a recreation
        # Wait without the instance's lock: a resync may meanwhile find the instance missing and
        # create it (or find it already back), and no resync may wait behind this for 30 s.
        await self._wait_until_released(tracker, until_repaired=True)
        async with tracker.lock:
            if tracker.deleting or self.trackers.get(tracker.key) is not tracker or not self.active:
                return
            try:
                await self._reconcile_locked(tracker)
            except EvolutionError as error:
                logger.warning(
                    "Recreating %s/%s failed (the next resync retries): %s", tracker.namespace, tracker.name, error
                )

    # -- leadership --------------------------------------------------------------------------------

    def _leadership_changed(self, active: bool) -> None:
        self.active = active
        if active:
            self.supervisor.run("take-over", self._take_over, once=True)

    async def _take_over(self) -> None:
        """Objects may have changed while another replica acted: drop trackers of deleted ones, resync."""
        for tracker in list(self.trackers.values()):
            try:
                body = await self.kube.get_instance(tracker.namespace, tracker.name)
            except KubeError as error:
                logger.warning("Cannot check %s/%s after taking over: %s", tracker.namespace, tracker.name, error)
                continue
            if body is None or body.get("metadata", {}).get("uid") != tracker.uid:
                self.untrack(tracker)
            else:
                tracker.generation = body["metadata"].get("generation")
                tracker.state = InstanceState.from_status(tracker.spec.instance_name, body.get("status"))
                self.writer.forget(tracker.key)
                self.writer.track(tracker.key, body.get("status"))
        self.request_resync()

    # -- event stream health -----------------------------------------------------------------------

    def _stream_connected(self) -> None:
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        logger.info("Following Evolution API events; resyncing %d instance(s)", len(self.trackers))
        for tracker in list(self.trackers.values()):
            notices = tracker.state.stream_restored()
            if notices:
                self.publish(tracker, notices)
        self.request_resync()  # Evolution replays nothing: read the truth after every (re)connect

    def _instance_namespace_joined(self, instance_name: str) -> None:
        tracker = self.by_instance.get(instance_name)
        if tracker is None or tracker.deleting:
            return
        self.supervisor.run(
            "instance-resync", lambda: self._resync_one(tracker), name=f"resync-{instance_name}", once=True
        )

    async def _resync_one(self, tracker: InstanceTracker) -> None:
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
            if self.trackers.get(tracker.key) is tracker and self.active and not tracker.deleting:
                self.supervisor.run(
                    "instance-resync",
                    lambda: self._resync_one(tracker),
                    name=f"resync-{tracker.spec.instance_name}",
                    once=True,
                )

        tracker.resync_retry = asyncio.get_running_loop().call_later(tracker.retry.next_delay(), retry)

    def _stream_disconnected(self, reason: str) -> None:
        self._outage_reason = reason
        if self._outage_timer is None:
            self._outage_timer = asyncio.get_running_loop().call_later(self.config.outage_grace, self._report_outage)

    def _report_outage(self) -> None:
        self._outage_timer = None
        if self.stream.client.state == "connected":
            return
        message = f"Evolution API event stream is down ({self._outage_reason}); reconnecting"
        for tracker in list(self.trackers.values()):
            self.publish(tracker, tracker.state.stream_lost(message))

    # -- output ----------------------------------------------------------------------------------

    def publish(self, tracker: InstanceTracker, notices: list[Notice], *, received_at: float | None = None) -> None:
        if not self.active:
            return  # another replica writes status now
        self._watch_for_overdue_qr(tracker)
        status = tracker.state.render_status(tracker.generation, self.clock())
        self.writer.submit(tracker.key, status, received_at=received_at)
        self._queue_notices(tracker.involved, notices)

    def _watch_for_overdue_qr(self, tracker: InstanceTracker) -> None:
        """Evolution can reconnect forever without a QR code (docs/evolution-api.md §7.2): tell the user after a while."""
        waiting = tracker.state.phase is Phase.CONNECTING and tracker.state.reason == "WaitingForQRCode"
        if not waiting:
            if tracker.qr_watch is not None:
                tracker.qr_watch.cancel()
                tracker.qr_watch = None
            return
        if tracker.qr_watch is not None:
            return
        waited = self.config.qr_overdue_after

        def check() -> None:
            tracker.qr_watch = None
            if self.trackers.get(tracker.key) is tracker:
                notices = tracker.state.qr_overdue(waited)
                if notices:
                    self.publish(tracker, notices)

        tracker.qr_watch = asyncio.get_running_loop().call_later(waited, check)

    def _queue_notices(self, involved: dict[str, Any], notices: list[Notice]) -> None:
        for notice in notices:
            log = logger.warning if notice.type == "Warning" else logger.info
            log("%s/%s %s: %s", involved["namespace"], involved["name"], notice.reason, notice.message)
            try:
                self._events.put_nowait((involved, notice))
            except asyncio.QueueFull:
                self.stats.events_dropped += 1

    async def _post_events(self) -> None:
        while True:
            involved, notice = await self._events.get()
            await self._post_event(involved, notice)

    async def _post_event(self, involved: dict[str, Any], notice: Notice) -> None:
        retry = Backoff(initial=1.0, maximum=10.0)
        for attempt in range(1, _EVENT_ATTEMPTS + 1):
            try:
                await self.kube.post_event(involved, type=notice.type, reason=notice.reason, message=notice.message)
                return
            except KubeError as error:
                passing = error.status is None or error.status == 429 or error.status >= 500
                if not passing or attempt == _EVENT_ATTEMPTS:
                    self.stats.events_dropped += 1
                    logger.warning(
                        "Could not post a Kubernetes Event (%s %s): %s", notice.reason, involved["name"], error
                    )
                    return
            await asyncio.sleep(retry.next_delay())

    def _status_rejected(self, key: Key, message: str) -> None:
        """The apiserver refused a status as invalid: say so once per distinct refusal, as an Event."""
        tracker = self.trackers.get(key)
        if tracker is None or tracker.status_rejection == message:
            return
        tracker.status_rejection = message
        self._queue_notices(tracker.involved, [Notice("Warning", STATUS_REJECTED, message)])
