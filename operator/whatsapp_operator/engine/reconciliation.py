"""Bringing one instance in Evolution in line with its WhatsAppInstance."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from whatsapp_operator.backoff import Backoff
from whatsapp_operator.engine.state import WAITING_FOR_PERSON, Notice, NoticeType, Phase
from whatsapp_operator.engine.tracker import InstanceTracker, Key
from whatsapp_operator.evolution.client import ConnectResult, CreatedInstance, InstanceAlreadyExists, InstanceRejected
from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.evolution.errors import EvolutionError, InstanceNotFound
from whatsapp_operator.reasons import Reason

logger = logging.getLogger("whatsapp_operator.engine.reconciliation")
T = TypeVar("T")
_REMOVAL_WAIT_SECONDS = 30.0
DRIFT_CORRECTED = "DriftCorrected"


class StatusSink(Protocol):
    """Where reconciliation reports what changed (the Publisher)."""

    def publish(self, tracker: InstanceTracker, notices: list[Notice], *, received_at: float | None = None) -> None: ...

    def render_status_again(self, tracker: InstanceTracker) -> None: ...

    async def flush(self, key: Key) -> None: ...


@dataclass
class ReconcileStats:
    reconcile_errors: int = 0
    recreations: int = 0


class Reconciler:
    """Owns the Evolution side of each instance's life: create, adopt, observe, renew, delete,
    log out, apply settings, recreate after a removal. It calls the REST client of the tracker's
    server and reports through the status sink; it keeps no list of instances, never writes to
    Kubernetes itself, and asks `still_wanted` before it recreates an instance.

    Calls for one instance are serialised by its lock (Evolution builds duplicate sockets on
    concurrent connects); calls across instances are bounded by each REST client's slots.
    """

    def __init__(
        self,
        sink: StatusSink,
        *,
        clock: Callable[[], str],
        still_wanted: Callable[[InstanceTracker], Awaitable[bool]],
    ):
        self.sink = sink
        self.clock = clock
        self.still_wanted = still_wanted
        self.stats = ReconcileStats()

    # -- what kopf handlers and the resync ask for -----------------------------------------------------

    async def reconcile(self, tracker: InstanceTracker) -> None:
        """Make sure the instance exists in Evolution and the status tells its truth.

        Raises EvolutionError when Evolution could not be reached or refused; the status then says so.
        """
        if self._skipped(tracker):
            return
        async with tracker.lock:
            await self._reconcile_locked(tracker)

    def _skipped(self, tracker: InstanceTracker) -> bool:
        """Paused: no call at all. A server that cannot be used: say why, as a failed call would."""
        if tracker.paused:
            return True
        if tracker.server.problem is not None:
            raise self._fail_sync(tracker, tracker.server.problem)
        return False

    async def request_reconnect(self, tracker: InstanceTracker) -> None:
        """A person asks for a new QR cycle (the reconnect annotation)."""
        if self._skipped(tracker):
            return
        async with tracker.lock:
            if tracker.state.phase is Phase.LOGGED_OUT:
                await self._renew_locked(tracker)
            tracker.reconnect_requested = True
            await self._reconcile_locked(tracker)

    async def request_logout(self, tracker: InstanceTracker) -> None:
        """A person asks to unlink the number (the logout annotation); also stops a QR cycle.

        Evolution refusing because the instance is not connected is the wanted outcome already.
        """
        if self._skipped(tracker):
            return
        async with tracker.lock:
            try:
                await tracker.server.rest.logout(tracker.instance_name)
            except EvolutionError as error:
                raise self._fail_sync(tracker, error) from None
            notices = tracker.state.sync_succeeded() + tracker.state.logged_out(self.clock())
            self.sink.publish(tracker, notices)

    async def apply_settings(self, tracker: InstanceTracker) -> None:
        if self._skipped(tracker):
            return
        async with tracker.lock:
            await self._call(tracker, tracker.server.rest.set_settings(tracker.instance_name, tracker.spec.settings))
            self.sink.render_status_again(tracker)

    async def delete(self, tracker: InstanceTracker) -> bool:
        """Remove the instance from Evolution; True when it existed.

        Raises EvolutionError (status updated and written) while Evolution cannot do it.
        """
        tracker.deleting = True
        tracker.state.deleting = True
        if tracker.server.problem is not None:
            raise self._fail_sync(tracker, tracker.server.problem)
        async with tracker.lock:
            try:
                return await tracker.server.rest.delete_instance(tracker.instance_name)
            except EvolutionError as error:
                message = (
                    f"Cannot remove instance {tracker.instance_name} from Evolution API yet "
                    f"({error.message}); the resource is kept until Evolution answers."
                )
                self.sink.publish(tracker, tracker.state.sync_failed(error.reason, message))
                await self.sink.flush(tracker.key)
                raise

    async def recreate_after_removal(self, tracker: InstanceTracker, *, allowed: Callable[[], bool]) -> None:
        """Evolution removed the instance behind our back: create it again once the name is free."""
        tracker.exists = True  # it existed: what follows is a recreation
        # Wait without the instance's lock: a resync may meanwhile find the instance missing and
        # create it (or find it already back), and no resync may wait behind this for 30 s.
        await self._wait_until_released(tracker, until_repaired=True)
        async with tracker.lock:
            if tracker.deleting or tracker.removed or tracker.paused or not allowed():
                return
            try:
                await self._reconcile_locked(tracker)
            except EvolutionError as error:
                logger.warning(
                    "Recreating %s/%s failed (the next resync retries): %s", tracker.namespace, tracker.name, error
                )

    async def apply_webhook(self, tracker: InstanceTracker) -> None:
        """The spec's webhook changed (or went): tell Evolution (None disables it)."""
        if self._skipped(tracker):
            return
        async with tracker.lock:
            self._check_webhook(tracker)
            await self._call(tracker, tracker.server.rest.set_webhook(tracker.instance_name, tracker.webhook))
            self.sink.render_status_again(tracker)

    async def repair_drift(self, tracker: InstanceTracker) -> list[str]:
        """Read settings and webhook back (two reads) and put back what differs from the spec.

        Returns the names of the fields corrected; an Event `DriftCorrected` names them too.
        """
        if self._skipped(tracker) or not tracker.exists or tracker.deleting:
            return []
        async with tracker.lock:
            return await self._repair_drift_locked(tracker)

    async def _repair_drift_locked(self, tracker: InstanceTracker) -> list[str]:
        rest = tracker.server.rest
        name = tracker.instance_name
        corrected: list[str] = []
        found = await self._call(tracker, rest.find_settings(name))
        wanted = tracker.spec.settings
        differing = sorted(key for key, value in wanted.items() if found is None or found.get(key) != value)
        if differing:
            await self._call(tracker, rest.set_settings(name, wanted))
            corrected += [f"settings.{key}" for key in differing]
        if tracker.webhook_problem is None:
            webhook = await self._call(tracker, rest.find_webhook(name))
            changed = tracker.webhook.differences(webhook) if tracker.webhook is not None else []
            if tracker.webhook is None and webhook is not None:
                changed = ["enabled"]
            if changed:
                await self._call(tracker, rest.set_webhook(name, tracker.webhook))
                corrected += [f"webhook.{field}" for field in changed]
        if corrected:
            fields = ", ".join(corrected)
            self.sink.publish(
                tracker,
                [
                    Notice(
                        NoticeType.WARNING,
                        DRIFT_CORRECTED,
                        f"Put back what was changed in Evolution API outside the spec: {fields}.",
                    )
                ],
            )
        return corrected

    def _check_webhook(self, tracker: InstanceTracker) -> None:
        if tracker.webhook_problem is not None:
            raise self._fail_sync(tracker, EvolutionError(Reason.WEBHOOK_SECRET_MISSING, tracker.webhook_problem))

    async def _learn_lost(self, tracker: InstanceTracker, *, instance_id: bool) -> None:
        """Read the instance's row once for what this process does not know of it: its token (the
        connection Secret needs it; after a restart only Evolution has it) and, with `instance_id`,
        its id (a `remove.instance` that came late, after a resync had created the instance again,
        or that no removal followed, cleared it; the connection Secret is written again then)."""
        token = tracker.spec.connection_secret is not None and tracker.token is None
        if not (token or instance_id):
            return
        record = await self._call(tracker, tracker.server.rest.fetch_instance(tracker.instance_name))
        if record is None:
            return
        learned = False
        if instance_id and record.instance_id is not None:
            tracker.state.instance_id = record.instance_id
            learned = True
        if record.token is not None:
            tracker.token = record.token
            learned = True
        if learned:
            self.sink.render_status_again(tracker)

    # -- reconciliation ----------------------------------------------------------------------------------

    async def _reconcile_locked(self, tracker: InstanceTracker) -> None:
        tracker.reconcile_started = time.monotonic()
        try:
            state = await self._call(tracker, tracker.server.rest.connection_state(tracker.instance_name))
        except InstanceNotFound:
            await self._create_locked(tracker)
            return
        adopting = not tracker.exists
        if adopting:
            await self._adopt_locked(tracker)
        await self._learn_lost(tracker, instance_id=not adopting and tracker.state.instance_id is None)
        await self._observe_locked(tracker, state)

    async def _create_locked(self, tracker: InstanceTracker) -> None:
        recreated = tracker.exists or tracker.state.instance_id is not None
        if recreated and not await self.still_wanted(tracker):
            return
        created = await self._create_in_evolution(tracker)
        if recreated:
            self.stats.recreations += 1
        self.sink.publish(tracker, tracker.state.created(created.instance_id, recreated=recreated))
        spec = tracker.spec
        result = await self._call(tracker, tracker.server.rest.connect(spec.instance_name, number=spec.number))
        await self._apply_connect_result_locked(tracker, result)

    async def _create_in_evolution(self, tracker: InstanceTracker) -> CreatedInstance:
        spec = tracker.spec
        self._check_webhook(tracker)
        try:
            created = await self._call(
                tracker,
                tracker.server.rest.create_instance(
                    spec.instance_name, integration=spec.integration, settings=spec.settings, webhook=tracker.webhook
                ),
            )
        except InstanceAlreadyExists as error:
            # connectionState said 404 a moment ago: a removal is still being cleaned up, or another
            # client created the name in between. Either way the next attempt sorts it out.
            raise EvolutionError(
                Reason.INSTANCE_NAME_BUSY, f"{error.message}; Evolution is still releasing the name, retrying"
            ) from None
        except InstanceRejected as error:
            self.sink.publish(
                tracker,
                tracker.state.failed(
                    Reason.EVOLUTION_REJECTED_INSTANCE,
                    f"Evolution API refused to create the instance: {error.message}.",
                ),
            )
            raise
        tracker.exists = True
        tracker.token = created.token
        return created

    async def _renew_locked(self, tracker: InstanceTracker) -> None:
        """Replace a logged-out instance by a fresh one before pairing again.

        Evolution 2.3.6 stops processing the messages of an instance that logs out and pairs again
        in the same process (docs/evolution-api.md §3.7); a new instance under the same name has no such past.
        """
        tracker.expect_removal = True
        try:
            await self._call(tracker, tracker.server.rest.delete_instance(tracker.instance_name))
            await self._wait_until_released(tracker)
            created = await self._create_in_evolution(tracker)
        finally:
            tracker.expect_removal = False
        self.sink.publish(tracker, tracker.state.created(created.instance_id, renewed=True))

    async def _adopt_locked(self, tracker: InstanceTracker) -> None:
        name = tracker.instance_name
        rest = tracker.server.rest
        tracker.exists = True
        if tracker.state.instance_id is not None:
            return  # ours already: the operator restarted
        record = await self._call(tracker, rest.fetch_instance(name))
        tracker.token = record.token if record is not None else None
        if not tracker.server.broadcasts_globally:
            await self._call(tracker, rest.subscribe_events(name))
        self.sink.publish(tracker, tracker.state.created(record.instance_id if record else None, adopted=True))
        # What someone set by hand before is put back to the spec, and said so.
        await self._repair_drift_locked(tracker)

    async def _observe_locked(self, tracker: InstanceTracker, state: ConnectionState | None) -> None:
        name = tracker.instance_name
        rest = tracker.server.rest
        now = self.clock()
        current = tracker.state
        if state is None:
            raise self._fail_sync(
                tracker,
                EvolutionError(
                    Reason.EVOLUTION_NOT_READY, f"Evolution API has instance {name} but has not loaded it yet"
                ),
            )
        if state is ConnectionState.OPEN:
            notices: list[Notice] = []
            if current.phase is not Phase.CONNECTED or current.number is None:
                notices = await self._connected_locked(tracker, now)
            tracker.reconnect_requested = False
            self.sink.publish(tracker, notices)
        elif state is ConnectionState.CONNECTING:
            if current.phase is Phase.CONNECTED or (
                current.phase is Phase.CONNECTING and current.reason == Reason.RECONNECTING
            ):
                self.sink.publish(tracker, current.connecting(now))  # a paired session reconnecting
            else:
                # Read-only while connecting: returns the QR being shown (docs/evolution-api.md §3.3).
                result = await self._call(tracker, rest.connect(name))
                await self._apply_connect_result_locked(tracker, result)
        elif state is ConnectionState.CLOSE:
            if tracker.reconnect_requested or current.phase in (Phase.PENDING, Phase.CREATING):
                result = await self._call(tracker, rest.connect(name, number=tracker.spec.number))
                tracker.reconnect_requested = False
                await self._apply_connect_result_locked(tracker, result)
            elif current.phase in WAITING_FOR_PERSON:
                self.sink.render_status_again(tracker)
            else:
                # The close event was missed (no replay after a reconnect): the stored row tells why.
                record = await self._call(tracker, rest.fetch_instance(name))
                code = record.disconnection_reason_code if record else None
                self.sink.publish(tracker, current.closed(code, now))
        else:
            self.sink.render_status_again(tracker)

    async def _apply_connect_result_locked(self, tracker: InstanceTracker, result: ConnectResult) -> None:
        now = self.clock()
        current = tracker.state
        if result.state is ConnectionState.OPEN:
            notices = await self._connected_locked(tracker, now)
        elif result.qr is not None and (result.qr.code or result.qr.pairing_code):
            notices = current.qr_received(
                result.qr.code, result.qr.base64, result.qr.pairing_code, now, count=result.qr.count
            )
            if current.phase is not Phase.AWAITING_SCAN:
                notices += current.connecting(now)  # a stale cached QR: the fresh one follows by event
        else:
            notices = current.connecting(now)  # {"count":0}: the first QR is not ready yet (docs/evolution-api.md §7.1)
        self.sink.publish(tracker, notices)

    async def _connected_locked(self, tracker: InstanceTracker, now: str) -> list[Notice]:
        """Evolution says open: the stored row has the number and profile the state misses."""
        record = await self._call(tracker, tracker.server.rest.fetch_instance(tracker.instance_name))
        if record is None:
            return tracker.state.connected(None, None, None, now)
        return tracker.state.connected(record.owner_jid, record.profile_name, record.profile_picture_url, now)

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
                await tracker.server.rest.connection_state(tracker.instance_name)
            except InstanceNotFound:
                return
            except EvolutionError:
                pass
            await asyncio.sleep(wait.next_delay())

    # -- outcomes of Evolution calls -------------------------------------------------------------------

    async def _call(self, tracker: InstanceTracker, call: Awaitable[T]) -> T:
        """Await one Evolution call; a failure is reported on the status and raised, a success clears it."""
        try:
            result = await call
        except InstanceNotFound:
            raise
        except EvolutionError as error:
            raise self._fail_sync(tracker, error) from None
        notices = tracker.state.sync_succeeded()
        if notices:
            self.sink.publish(tracker, notices)
        tracker.retry.reset()
        return result

    def _fail_sync(self, tracker: InstanceTracker, error: EvolutionError) -> EvolutionError:
        self.stats.reconcile_errors += 1
        self.sink.publish(tracker, tracker.state.sync_failed(error.reason, error.message))
        return error
