"""The heap freezer's decisions, and what freezing does in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from whatsapp_operator.heap import HeapFreezer


class FakeCollector:
    def __init__(self) -> None:
        self.now = 0.0
        self.full = 0
        self.calls: list[str] = []

    def freezer(self, refresh_interval: float = 3600.0) -> HeapFreezer:
        return HeapFreezer(
            refresh_interval=refresh_interval,
            clock=lambda: self.now,
            full_collections=lambda: self.full,
            freeze=lambda: self.calls.append("freeze"),
            refresh=self.refresh,
        )

    def refresh(self) -> None:
        self.calls.append("refresh")
        self.full += 1  # the refresh is a full collection of its own


def test_freezes_at_start_and_after_each_full_collection_only() -> None:
    collector = FakeCollector()
    freezer = collector.freezer()
    assert freezer.step() == "freeze"  # what start-up left
    assert [freezer.step() for _ in range(3)] == [None, None, None]
    collector.full += 1
    assert freezer.step() == "freeze"
    assert freezer.step() is None
    collector.full += 2
    assert freezer.step() == "freeze"
    assert collector.calls == ["freeze", "freeze", "freeze"]


def test_refreshes_once_per_interval_and_freezes_what_survived() -> None:
    collector = FakeCollector()
    freezer = collector.freezer(refresh_interval=100.0)
    freezer.step()
    collector.now = 99.0
    assert freezer.step() is None
    collector.now = 100.0
    assert freezer.step() == "refresh"
    assert collector.calls == ["freeze", "refresh", "freeze"]
    assert freezer.step() is None  # the refresh's own full collection is not frozen twice
    collector.now = 150.0
    assert freezer.step() is None
    collector.now = 200.0
    assert freezer.step() == "refresh"


def test_in_a_process_of_its_own_frozen_objects_leave_full_collections() -> None:
    script = textwrap.dedent(
        """
        import gc, json
        from whatsapp_operator.heap import HeapFreezer

        class Node:
            def __init__(self):
                self.me = self  # a cycle: only the cyclic collector can free it

        live = [Node() for _ in range(20_000)]
        freezer = HeapFreezer()
        freezer.step()
        frozen_at_start = gc.get_freeze_count()
        garbage = [Node() for _ in range(1_000)]
        gc.collect()  # a full collection: the new objects survive it (still referenced)
        freezer.step()
        frozen_after = gc.get_freeze_count()
        del garbage  # cyclic garbage, but frozen: it waits for the refresh
        unreachable_before_refresh = gc.collect()
        freezer.refresh()
        print(json.dumps([frozen_at_start, frozen_after, unreachable_before_refresh, gc.get_freeze_count()]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    frozen_at_start, frozen_after, unreachable_before_refresh, frozen_after_refresh = json.loads(
        done.stdout.splitlines()[-1]
    )
    assert frozen_at_start >= 20_000
    assert frozen_after >= frozen_at_start + 1_000
    assert unreachable_before_refresh == 0  # the frozen cycles were not even looked at
    assert frozen_after_refresh == 0  # the refresh unfroze everything (the next step freezes again)
