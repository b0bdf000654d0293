"""Coalesced status writes: per instance, the latest wanted status wins and no-op patches are skipped.

Events for one instance can arrive faster than the apiserver accepts patches (QR rotations, a
reconnect storm after an Evolution restart). Callers `submit()` the full wanted status; a bounded
pool of workers sends, per instance, one merge patch with the difference from what was last
written. Whatever arrived in the meantime is folded into the next patch.

A patch the apiserver refuses as invalid (422, or 400) is not retried: the same document would be
refused again forever. The writer reports it through `on_rejected` and writes a small fallback
instead (the conditions with `Synced=False`, reason `StatusRejected`), so the refusal is visible on
the object; the next submission is tried in full again. Other failures (409, 429, 5xx, the API
unreachable) are retried with backoff until they pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from whatsapp_operator.backoff import Backoff
from whatsapp_operator.engine.supervisor import Supervisor
from whatsapp_operator.kube.client import KubeError
from whatsapp_operator.reasons import Reason

logger = logging.getLogger("whatsapp_operator.status")

Key = tuple[str, str]  # (namespace, name)
PatchFn = Callable[[str, str, dict[str, Any]], Awaitable[None]]
STATUS_REJECTED = Reason.STATUS_REJECTED
_REJECTED_STATUSES = frozenset({400, 422})


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch turning `old` into `new` (None marks a removed key; lists are replaced)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        if old[key] is not None:
            patch[key] = None
    for key, value in new.items():
        previous = old.get(key)
        if isinstance(value, dict) and isinstance(previous, dict):
            nested = merge_patch(previous, value)
            if nested:
                patch[key] = nested
        elif value != previous:
            if value is None and key not in old:
                continue
            patch[key] = value
    return patch


@dataclass
class _Slot:
    written: dict[str, Any]
    wanted: dict[str, Any] | None = None
    queued: bool = False
    version: int = 0
    written_version: int = 0
    received_at: float | None = None  # monotonic arrival time of the oldest unwritten event
    flushed: asyncio.Event = field(default_factory=asyncio.Event)
    # The patch submit() worked out for the worker: (wanted, written, patch), good while both are
    # still the same objects.
    prepared: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None = None


def apply_merge_patch(document: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386: `document` with `patch` applied (a new dict; the inputs are not changed)."""
    result = dict(document)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            previous = result.get(key)
            result[key] = apply_merge_patch(previous if isinstance(previous, dict) else {}, value)
        else:
            result[key] = value
    return result


def rejection_fallback(wanted: dict[str, Any], message: str, generation: Any) -> dict[str, Any]:
    """The smallest status patch that says a status was refused: Synced=False and the message."""
    conditions = [c for c in wanted.get("conditions") or [] if isinstance(c, dict) and c.get("type") != "Synced"]
    previous = next(
        (c for c in wanted.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Synced"), {}
    )
    synced = {
        "type": "Synced",
        "status": "False",
        "reason": STATUS_REJECTED,
        "message": message,
        "observedGeneration": generation,
    }
    if previous.get("lastTransitionTime"):
        synced["lastTransitionTime"] = previous["lastTransitionTime"]
    return {"message": message, "conditions": [*conditions, {k: v for k, v in synced.items() if v is not None}]}


@dataclass
class WriterStats:
    patches: int = 0
    skipped: int = 0
    failures: int = 0
    rejected: int = 0  # patches the apiserver refused as invalid (not retried)


class StatusWriter:
    def __init__(
        self,
        patch: PatchFn,
        *,
        concurrency: int = 16,
        retry: Backoff | None = None,
        on_written: Callable[[float], None] | None = None,
        on_rejected: Callable[[Key, str], None] | None = None,
        supervisor: Supervisor | None = None,
    ):
        self._patch = patch
        self._concurrency = concurrency
        self._retry_template = retry or Backoff(initial=0.2, maximum=10.0)
        self._slots: dict[Key, _Slot] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        # Told the seconds from an event's arrival to its accepted patch (the metrics' histogram).
        self.on_written = on_written
        self._on_rejected = on_rejected
        self._supervisor = supervisor or Supervisor()
        self.stats = WriterStats()

    def start(self) -> None:
        for index in range(self._concurrency):
            self._workers.append(self._supervisor.run("status-writer", self._work, name=f"status-writer-{index}"))

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    def track(self, key: Key, current_status: dict[str, Any] | None) -> None:
        """Start from what the object holds now, so the first patch is a true difference."""
        if key not in self._slots:
            self._slots[key] = _Slot(written=dict(current_status or {}))

    def forget(self, key: Key) -> None:
        slot = self._slots.pop(key, None)
        if slot is not None:
            slot.flushed.set()

    def submit(self, key: Key, status: dict[str, Any], *, received_at: float | None = None) -> None:
        slot = self._slots.get(key)
        if slot is None:
            return
        if not slot.queued:
            patch = merge_patch(slot.written, status)
            if not patch:
                # Nothing to write and no write under way (a resync that confirms the status, an
                # event that changed nothing): settled here, without waking a worker for it.
                slot.wanted = status
                slot.version += 1
                slot.written_version = slot.version
                self.stats.skipped += 1
                slot.flushed.set()
                return
            slot.prepared = (status, slot.written, patch)
        slot.wanted = status
        slot.version += 1
        if received_at is not None and slot.received_at is None:
            slot.received_at = received_at
        slot.flushed.clear()
        if not slot.queued:
            slot.queued = True
            self._queue.put_nowait(key)

    async def flush(self, key: Key, timeout: float = 30.0) -> None:
        """Wait until everything submitted for `key` so far has been written (or given up)."""
        slot = self._slots.get(key)
        if slot is None or slot.version == slot.written_version:
            return
        await asyncio.wait_for(slot.flushed.wait(), timeout)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            slot = self._slots.get(key)
            if slot is None:
                continue
            try:
                await self._write(key, slot)
            except BaseException:
                # The slot is still marked queued: hand the key to another worker before this one
                # goes (the supervisor restarts it), or the instance's status would never be written.
                if self._slots.get(key) is slot and slot.queued:
                    self._queue.put_nowait(key)
                raise

    async def _write(self, key: Key, slot: _Slot) -> None:
        backoff = Backoff(self._retry_template.initial, self._retry_template.maximum)
        while self._slots.get(key) is slot and slot.wanted is not None:
            wanted, version, received_at = slot.wanted, slot.version, slot.received_at
            slot.received_at = None
            prepared, slot.prepared = slot.prepared, None
            if prepared is not None and prepared[0] is wanted and prepared[1] is slot.written:
                patch = prepared[2]
            else:
                patch = merge_patch(slot.written, wanted)
            if not patch:
                self.stats.skipped += 1
                slot.written_version = version
            else:
                try:
                    await self._patch(key[0], key[1], patch)
                except KubeError as error:
                    if error.status == 404:
                        self.forget(key)  # the object is gone; nothing left to report on
                        return
                    if error.status in _REJECTED_STATUSES:
                        await self._rejected(key, slot, wanted, str(error))
                        slot.written_version = version
                        if slot.version == version:
                            slot.queued = False
                            slot.flushed.set()
                            return
                        continue
                    self.stats.failures += 1
                    logger.warning("Status patch for %s/%s failed (will retry): %s", key[0], key[1], error)
                    slot.received_at = received_at
                    await asyncio.sleep(backoff.next_delay())
                    continue
                self.stats.patches += 1
                slot.written = wanted
                slot.written_version = version
                if received_at is not None and self.on_written is not None:
                    self.on_written(time.monotonic() - received_at)
            if slot.version == version:
                slot.queued = False
                slot.flushed.set()
                return

    async def _rejected(self, key: Key, slot: _Slot, wanted: dict[str, Any], error: str) -> None:
        self.stats.rejected += 1
        message = f"Kubernetes refused the status this operator rendered ({error}); reporting only this error"
        logger.error("Status patch for %s/%s refused: %s", key[0], key[1], error)
        if self._on_rejected is not None:
            self._on_rejected(key, message)
        fallback = merge_patch(
            slot.written,
            apply_merge_patch(slot.written, rejection_fallback(wanted, message, wanted.get("observedGeneration"))),
        )
        if not fallback:
            return
        try:
            await self._patch(key[0], key[1], fallback)
        except KubeError as second:
            logger.error("Status patch for %s/%s refused again, even reduced to the error: %s", key[0], key[1], second)
            return
        slot.written = apply_merge_patch(slot.written, fallback)
