"""What the operator tells Kubernetes about its instances."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from whatsapp_operator.backoff import Backoff
from whatsapp_operator.engine.state import InstanceState, Notice, NoticeType, Phase
from whatsapp_operator.engine.supervisor import Supervisor
from whatsapp_operator.engine.tracker import InstanceTracker, Key
from whatsapp_operator.kube.client import KubeClient, KubeError
from whatsapp_operator.kube.status_writer import StatusWriter
from whatsapp_operator.names import API_VERSION, KIND
from whatsapp_operator.reasons import Reason

logger = logging.getLogger("whatsapp_operator.engine.publisher")

# An Evolution restart moves every instance at once (two Events each): room for thousands, posted
# by a few workers so a burst drains in seconds.
_EVENT_BACKLOG = 10_000
_EVENT_POSTERS = 4
# An Event refused for a passing reason (429, 5xx, the API unreachable) is tried again, as
# client-go's recorder does (12 attempts, about 10 s apart at most).
_EVENT_ATTEMPTS = 12
# Marks the connection Secrets the operator writes (value: the WhatsAppInstance's name).
CONNECTION_SECRET_LABEL = "whatsapp-operator.io/instance"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class PublisherStats:
    events_dropped: int = 0


class Publisher:
    """Owns the output to Kubernetes: statuses (through the status writer), Kubernetes Events, and
    the overdue-QR timer. It renders what an instance's state machine says and decides nothing
    about Evolution; it calls no Evolution API and changes no phase except through the state
    machine's own `qr_overdue()`. While another replica leads (`active` False) it writes nothing."""

    def __init__(
        self,
        kube: KubeClient,
        writer: StatusWriter,
        supervisor: Supervisor,
        *,
        clock: Callable[[], str],
        qr_overdue_after: float,
    ):
        self.kube = kube
        self.writer = writer
        self.supervisor = supervisor
        self.clock = clock
        self.qr_overdue_after = qr_overdue_after
        self.active = True
        self.stats = PublisherStats()
        self._events: asyncio.Queue[tuple[dict[str, Any], Notice]] = asyncio.Queue(maxsize=_EVENT_BACKLOG)
        self._rejections: dict[Key, str] = {}  # the last refusal of each object's status, reported once

    def start(self) -> None:
        self.writer.start()
        for index in range(_EVENT_POSTERS):
            self.supervisor.run("kubernetes-events", self._post_events, name=f"kubernetes-events-{index}")

    async def stop(self) -> None:
        await self.writer.stop()

    # -- which objects ---------------------------------------------------------------------------

    def follow(self, key: Key, status: dict[str, Any] | None) -> None:
        """Start publishing for an object whose status is now `status`."""
        self.writer.track(key, status)

    def forget(self, key: Key) -> None:
        self.writer.forget(key)
        self._rejections.pop(key, None)

    async def flush(self, key: Key) -> None:
        await self.writer.flush(key)

    # -- status and Events ---------------------------------------------------------------------------

    def publish(self, tracker: InstanceTracker, notices: list[Notice], *, received_at: float | None = None) -> None:
        """Write the tracker's status as its state machine renders it now, and post `notices`."""
        if not self.active:
            return  # another replica writes status now
        self._watch_for_overdue_qr(tracker)
        status = tracker.state.render_status(tracker.generation, self.clock())
        self.writer.submit(tracker.key, status, received_at=received_at)
        self.notify(tracker.involved, notices)

    def render_status_again(self, tracker: InstanceTracker) -> None:
        """Nothing new to announce, but the status must be rendered and written again (a spec or
        generation change, or an Evolution call that confirmed what the status says)."""
        self.publish(tracker, [])

    def publish_untracked(self, body: dict[str, Any], reason: Reason, message: str) -> None:
        """An object the engine will not track (its spec is unusable) still gets a status saying why."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        status = body.get("status") or {}
        state = InstanceState.from_status(status.get("instanceName") or "", status)
        self.writer.track(key, status)
        notices = state.failed(reason, message)
        self.writer.submit(key, state.render_status(meta.get("generation"), self.clock()))
        self.notify({"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid", "")}, notices)

    def status_rejected(self, tracker: InstanceTracker | None, message: str) -> None:
        """The apiserver refused a status as invalid: say so once per distinct refusal, as an Event."""
        if tracker is None or self._rejections.get(tracker.key) == message:
            return
        self._rejections[tracker.key] = message
        self.notify(tracker.involved, [Notice(NoticeType.WARNING, Reason.STATUS_REJECTED, message)])

    def notify(self, involved: dict[str, Any], notices: list[Notice]) -> None:
        for notice in notices:
            log = logger.warning if notice.type is NoticeType.WARNING else logger.info
            log("%s/%s %s: %s", involved["namespace"], involved["name"], notice.reason, notice.message)
            try:
                self._events.put_nowait((involved, notice))
            except asyncio.QueueFull:
                self.stats.events_dropped += 1

    # -- the connection Secret -------------------------------------------------------------------------

    async def write_connection_secret(self, tracker: InstanceTracker, name: str, *, url: str, token: str) -> None:
        """The Secret applications use (url, instance, token), owned by the WhatsAppInstance so it
        goes with it; written again when it is missing or its data differs."""
        if not self.active:
            return
        data = {
            "url": _b64(url),
            "instance": _b64(tracker.instance_name),
            "token": _b64(token),
        }
        try:
            current = await self.kube.get_secret(tracker.namespace, name)
            if current is not None and current.get("data") == data:
                return
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "namespace": tracker.namespace,
                    "labels": {CONNECTION_SECRET_LABEL: tracker.name},
                    "ownerReferences": [
                        {
                            "apiVersion": API_VERSION,
                            "kind": KIND,
                            "name": tracker.name,
                            "uid": tracker.uid,
                            "controller": True,
                        }
                    ],
                },
                "data": data,
            }
            if current is None:
                await self.kube.create_secret(tracker.namespace, body)
                what = "written"
            else:
                owners = (current.get("metadata") or {}).get("ownerReferences") or []
                if not any(isinstance(o, dict) and o.get("uid") == tracker.uid for o in owners):
                    # Someone else's Secret under that name: never take it over.
                    raise KubeError(409, f"Secret {name} exists and does not belong to this WhatsAppInstance")
                body["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
                await self.kube.replace_secret(tracker.namespace, name, body)
                what = "written again"
        except KubeError as error:
            logger.warning("Connection Secret %s/%s not written: %s", tracker.namespace, name, error)
            self.notify(
                tracker.involved,
                [Notice(NoticeType.WARNING, "ConnectionSecretFailed", f"Secret {name} could not be written: {error}.")],
            )
            return
        self.notify(
            tracker.involved,
            [
                Notice(
                    NoticeType.NORMAL, "ConnectionSecretWritten", f"Secret {name} {what} with url, instance and token."
                )
            ],
        )

    # -- the overdue-QR timer --------------------------------------------------------------------------

    def _watch_for_overdue_qr(self, tracker: InstanceTracker) -> None:
        """Evolution can reconnect forever without a QR code (docs/evolution-api.md §7.2): tell the user after a while."""
        waiting = tracker.state.phase is Phase.CONNECTING and tracker.state.reason == Reason.WAITING_FOR_QR_CODE
        if not waiting:
            if tracker.qr_watch is not None:
                tracker.qr_watch.cancel()
                tracker.qr_watch = None
            return
        if tracker.qr_watch is not None:
            return
        waited = self.qr_overdue_after

        def check() -> None:
            tracker.qr_watch = None
            if not tracker.removed:
                notices = tracker.state.qr_overdue(waited)
                if notices:
                    self.publish(tracker, notices)

        tracker.qr_watch = asyncio.get_running_loop().call_later(waited, check)

    # -- posting Events ---------------------------------------------------------------------------------

    async def flush_events(self) -> None:
        """Wait until every Event queued so far has been posted (or given up)."""
        await self._events.join()

    async def _post_events(self) -> None:
        while True:
            involved, notice = await self._events.get()
            try:
                await self._post_event(involved, notice)
            finally:
                self._events.task_done()

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
