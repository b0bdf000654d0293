"""The periodic resync reads one list per server and only the instances the list cannot vouch for.

Events lost without a reconnect (a reconnect reads everything) are simulated by muting the
runtime's event callback while Evolution changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from whatsapp_operator.engine import runtime as runtime_module

from conftest import OperatorUnderTest


@contextlib.contextmanager
def events_lost(operator: OperatorUnderTest) -> Iterator[None]:
    runtime = operator.runtime
    original = runtime.instance_event
    runtime.instance_event = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        runtime.instance_event = original  # type: ignore[method-assign]


def requests_since(operator: OperatorUnderTest, start: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [(r.method, r.path, dict(r.query)) for r in operator.evolution.requests[start:]]


async def test_nothing_missed_costs_one_list_call(operator: OperatorUnderTest) -> None:
    for name in ("shop", "cafe", "bar"):
        operator.create(name, {"instanceName": name})
    for name in ("shop", "cafe", "bar"):
        await operator.wait_phase(name, "AwaitingScan")
    await operator.evolution.scan("bar")
    await operator.wait_status(
        "bar", lambda s: s.get("phase") == "Connected" and (s.get("connection") or {}).get("number")
    )
    start = len(operator.evolution.requests)
    await operator.runtime.resync_from_lists()
    assert requests_since(operator, start) == [("GET", "/instance/fetchInstances", {})]


async def test_a_missed_scan_is_found(operator: OperatorUnderTest) -> None:
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    with events_lost(operator):
        await operator.evolution.scan("shop")
    await operator.runtime.resync_from_lists()
    await operator.wait_phase("shop", "Connected")


async def test_a_missed_removal_is_repaired(operator: OperatorUnderTest) -> None:
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    with events_lost(operator):
        await operator.evolution.remove_out_of_band("shop")
    await operator.runtime.resync_from_lists()
    await operator.wait_event("shop", "Recreated")
    assert "shop" in operator.evolution.instances


async def test_a_missed_qr_limit_is_found_once_the_qr_is_stale(operator: OperatorUnderTest, monkeypatch: Any) -> None:
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    with events_lost(operator):
        await operator.evolution.hit_qr_limit("shop")  # the stored state stays `connecting`
    start = len(operator.evolution.requests)
    await operator.runtime.resync_from_lists()
    assert requests_since(operator, start) == [("GET", "/instance/fetchInstances", {})]  # a fresh QR vouches
    monkeypatch.setattr(runtime_module, "QR_STALE_SECONDS", 0.0)
    await operator.runtime.resync_from_lists()
    status = await operator.wait_status("shop", lambda s: s.get("phase") != "AwaitingScan")
    assert status["phase"] in ("Disconnected", "Connecting")


async def test_a_connect_rereads_only_what_was_read_before_it(operator: OperatorUnderTest) -> None:
    import time

    for name in ("shop", "cafe"):
        operator.create(name, {"instanceName": name})
        await operator.wait_phase(name, "AwaitingScan")
    runtime = operator.runtime
    between = time.monotonic()
    cafe = runtime.registry.get(("default", "cafe"))
    assert cafe is not None
    await runtime.reconciler.reconcile(cafe)  # read after the (simulated) connect
    start = len(operator.evolution.requests)
    await runtime._resync_after_connect(runtime.server, between)
    paths = [r.path for r in operator.evolution.requests[start:]]
    assert "/instance/connectionState/shop" in paths and "/instance/connectionState/cafe" not in paths


async def test_the_nudger_runs_half_a_period_out_of_step_with_the_resync(monkeypatch: Any) -> None:
    # Both start with the runtime and both begin by decoding a list of every instance: in step, they
    # held the loop together (bench/README.md, "Fourth round").
    import asyncio
    import types

    delays: list[float] = []
    nudged: list[int] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 3:
            raise asyncio.CancelledError

    async def nudge() -> None:
        nudged.append(len(delays))

    host = types.SimpleNamespace(active=True, config=types.SimpleNamespace(nudge_interval=60.0))
    host.nudge_stuck_objects = nudge
    host._every = lambda *args, **kwargs: runtime_module.Runtime._every(host, *args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(runtime_module.asyncio, "sleep", sleep)
    with contextlib.suppress(asyncio.CancelledError):
        await runtime_module.Runtime._nudge_loop(host)  # type: ignore[arg-type]
    assert delays == [30.0, 60.0, 60.0]
    assert nudged == [1, 2]
