"""Garbage collection for thousands of long-lived objects: full collections walk only what is new.

CPython's cyclic collector walks every tracked object in a full (generation 2) collection. With
10,000 instances the operator holds millions of them (trackers and their states, kopf's per-object
memories, parsed bodies), and each full collection held the event loop 1.4-1.8 s
(bench/README.md, "Garbage collection"): every QR event that arrived meanwhile waited, and a restart
paid it again at each growth step of the heap.

What survives a full collection is live. `gc.freeze()` moves it to the permanent generation, which
later collections skip, so the next full collection walks only what was allocated since. Objects
that die later are still freed by reference counting at once; only those caught in a reference cycle
wait, until the refresh: once an hour everything is unfrozen, collected in one pause, and frozen
again. Only the operator's process does this (the CLI starts it): a library user's or a test's
process keeps CPython's defaults.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("whatsapp_operator.heap")

REFRESH_SECONDS = 3600.0
CHECK_SECONDS = 1.0


def _full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


def _refresh() -> None:
    gc.unfreeze()
    gc.collect()


@dataclass
class HeapFreezer:
    """Freezes the heap after every full collection and refreshes it every `refresh_interval`.

    The collector's operations are injected so that tests can watch the decisions without freezing
    the test process itself."""

    refresh_interval: float = REFRESH_SECONDS
    clock: Callable[[], float] = time.monotonic
    full_collections: Callable[[], int] = _full_collections
    freeze: Callable[[], None] = gc.freeze
    refresh: Callable[[], None] = _refresh
    _seen: int = field(default=-1, init=False)
    _refreshed_at: float | None = field(default=None, init=False)

    def step(self) -> str | None:
        """One check: "refresh", "freeze" or None (nothing to do)."""
        now = self.clock()
        if self._refreshed_at is None:
            self._refreshed_at = now
        if now - self._refreshed_at >= self.refresh_interval:
            started = time.perf_counter()
            self.refresh()  # a full collection of everything: what survives is frozen below
            self._refreshed_at = now
            logger.debug("Heap refreshed: one full collection in %.3f s", time.perf_counter() - started)
            self.freeze()
            self._seen = self.full_collections()
            return "refresh"
        collections = self.full_collections()
        if collections != self._seen:
            # The first check freezes what start-up left (kopf, the client libraries, the
            # configuration); later ones what survived the collector's own full collection.
            self.freeze()
            self._seen = collections
            return "freeze"
        return None

    async def run(self, check_interval: float = CHECK_SECONDS) -> None:
        while True:
            await asyncio.sleep(check_interval)
            self.step()
