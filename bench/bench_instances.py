#!/usr/bin/env python3
"""Scale benchmark: the real operator (kopf + runtime) managing N WhatsAppInstances, in one process.

    python bench/bench_instances.py --instances 1000 [--mode global|instance|auto] [--json]
                                    [--profile FILE] [--timeout SECONDS] [--log-file PATH]

The Kubernetes stand-in (tests/kube_standin.py), the fake Evolution API (tests/evolution_fake.py)
and the operator (tests/conftest.py: run_operator) share one asyncio loop, so every figure below
is the cost of all three on one core. See bench/README.md for what each figure means.

Phases (each waits on the stand-in's wait_until, which re-checks after every write; no sleeps):
  1. create      N objects at once -> every status.phase == AwaitingScan
  2. qr storm    a new QR for every instance in one burst -> every status.qr.code is the new one
  3. scan        every instance scanned in one burst -> every status.phase == Connected
  4. restart     evolution.restart() -> socket reconnected, N connectionState reads answered after
                 the restart, every status Connected with Synced=True
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import dataclasses
import gc
import io
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
try:  # installed (pip install -e .): do not lengthen sys.path, every failed import walks all of it
    import whatsapp_operator  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "operator"))

from whatsapp_operator.config import OperatorConfig, WebsocketMode
from whatsapp_operator.engine.runtime import Runtime
from whatsapp_operator.names import GROUP, PLURAL, VERSION
from whatsapp_operator.redaction import install_log_filter

from conftest import run_operator
from evolution_fake import FakeEvolution
from kube_standin import KubeStandin

NAMESPACE = "default"
NAME_PREFIX = "bench-"


# -------------------------------------------------------------------------------------------------
# configuration: production defaults, not the test suite's fast_config
# -------------------------------------------------------------------------------------------------


def production_config_overrides(mode: WebsocketMode) -> dict[str, Any]:
    """Every OperatorConfig knob at its production default (read from the dataclass, so this stays
    right when a default changes), except: no metrics endpoint, the websocket mode under test, and
    the periodic resync pushed out of the run so that a timer resync never lands inside a measured
    phase. run_operator() starts from tests' fast_config; these overrides replace all of its values
    (tiny backoffs, 0.2 s outage grace, 5 s request timeout)."""
    values = {
        f.name: f.default
        for f in dataclasses.fields(OperatorConfig)
        if f.default is not dataclasses.MISSING and f.name not in ("evolution_url", "evolution_api_key")
    }
    values.update(websocket_mode=mode, metrics_port=0, resync_interval=3600.0)
    return values


# -------------------------------------------------------------------------------------------------
# recorders: count what the fakes see without keeping every request in memory
# -------------------------------------------------------------------------------------------------


class EvolutionRecorder(list):  # type: ignore[type-arg]
    """Replaces FakeEvolution.requests: counts (method, path prefix) and keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.kept_key: str | None = None  # while set, requests of this key are kept in `kept`
        self.kept: list[Any] = []

    def append(self, request: Any) -> None:
        parts = [p for p in request.path.split("/") if p]
        prefix = "/" + "/".join(parts[:2]) if parts and parts[0] != "socket.io" else "/socket.io/ (handshake)"
        key = f"{request.method} {prefix}"
        self.counts[key] += 1
        if key == self.kept_key:
            self.kept.append(request)  # the fake sets .status on it once it has answered


class CountingList(list):  # type: ignore[type-arg]
    """Replaces FakeEvolution.emitted: counts events by name and keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def append(self, item: Any) -> None:
        self.counts[item[1].get("event", "?")] += 1


class KubeRecorder(list):  # type: ignore[type-arg]
    """Replaces KubeStandin.requests: counts (verb, resource[/subresource]) and keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.watch_timeouts: set[str] = set()

    def append(self, request: Any) -> None:
        resource = request.resource or request.path
        if request.subresource:
            resource += "/" + request.subresource
        self.counts[f"{request.verb} {resource}"] += 1
        if request.verb == "watch":
            self.watch_timeouts.add(request.query.get("timeoutSeconds", "none"))


def diff(after: collections.Counter[str], before: collections.Counter[str]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in sorted(after) if after[key] - before.get(key, 0)}


# -------------------------------------------------------------------------------------------------
# following N statuses cheaply
# -------------------------------------------------------------------------------------------------


class StatusBoard:
    """Reads WhatsAppInstance statuses straight from the stand-in's store (no deep copies) and, on
    each re-check, looks only at the objects written since the previous check (the stand-in's
    change history), so waiting for N objects costs O(writes), not O(N x writes). When the history
    no longer reaches back to the last check, every pending object is re-read."""

    def __init__(self, kube: KubeStandin):
        self.kube = kube
        self.rt = kube._type(GROUP, VERSION, PLURAL)
        self.store: dict[tuple[str, str], dict[str, Any]] = kube._store[self.rt]
        self.last_rv = kube._rv
        self.full_rescans = 0

    def status(self, name: str) -> dict[str, Any]:
        obj = self.store.get((NAMESPACE, name))
        return (obj or {}).get("status") or {}

    def changed_since_last(self) -> set[str] | None:
        """Names of the instances written since the last call; None when the history has a gap."""
        history = self.kube._history
        names: set[str] = set()
        reached = False
        for change in reversed(history):
            if change.rv <= self.last_rv:
                reached = True
                break
            if change.rt is self.rt:
                names.add(change.obj["metadata"]["name"])
        gap = not reached and (not history or history[0].rv > self.last_rv + 1)
        self.last_rv = self.kube._rv
        if gap:
            self.full_rescans += 1
            return None
        return names

    async def wait_all(
        self,
        names: Iterable[str],
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        *,
        reached_at: dict[str, float] | None = None,
    ) -> float:
        """Wait until predicate(status) holds for every name; returns the monotonic time it did.

        Raises PhaseTimeout (with how many made it) after `timeout` seconds."""
        pending = set(names)
        total = len(pending)
        self.changed_since_last()  # start from now: everything pending is checked once below
        first = [True]

        def check() -> bool:
            changed = self.changed_since_last()
            candidates = pending if (first[0] or changed is None) else (pending & changed)
            first[0] = False
            now = time.monotonic()
            for name in list(candidates):
                if predicate(self.status(name)):
                    pending.discard(name)
                    if reached_at is not None:
                        reached_at[name] = now
            return not pending

        try:
            await self.kube.wait_until(check, timeout=timeout)
        except AssertionError:
            raise PhaseTimeout(what, total - len(pending), total, timeout, sorted(pending)[:5]) from None
        return time.monotonic()


class EventTally:
    """Counts the Kubernetes Events in the stand-in by reason, incrementally from its change history
    (a full recount only when the history does not reach back to the previous count)."""

    def __init__(self, kube: KubeStandin):
        self.kube = kube
        self.rt = kube._type("", "v1", "events")
        self.last_rv = 0
        self.counts: collections.Counter[str] = collections.Counter()

    def update(self) -> collections.Counter[str]:
        history = self.kube._history
        if history and history[0].rv > self.last_rv + 1:
            self.counts = collections.Counter(e.get("reason", "?") for e in self.kube._store[self.rt].values())
        else:
            for change in reversed(history):
                if change.rv <= self.last_rv:
                    break
                if change.rt is self.rt:
                    self.counts[change.obj.get("reason", "?")] += (
                        1 if change.type == "ADDED" else (-1 if change.type == "DELETED" else 0)
                    )
        self.last_rv = self.kube._rv
        return self.counts

    async def wait_for(self, wanted: dict[str, int], timeout: float) -> bool:
        """Wait (bounded) until at least `wanted[reason]` Events of each reason exist."""
        try:
            await self.kube.wait_until(lambda: all(self.update()[r] >= n for r, n in wanted.items()), timeout=timeout)
        except AssertionError:
            return False
        return True


class PhaseTimeout(Exception):
    def __init__(self, what: str, done: int, total: int, timeout: float, examples: list[str]):
        super().__init__(f"{what}: only {done}/{total} within {timeout:.0f}s (e.g. {examples})")
        self.done, self.total = done, total


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def connected_and_synced(status: dict[str, Any]) -> bool:
    synced = condition(status, "Synced")
    return status.get("phase") == "Connected" and synced is not None and synced.get("status") == "True"


# -------------------------------------------------------------------------------------------------
# small helpers
# -------------------------------------------------------------------------------------------------


def rss_kib() -> dict[str, int]:
    values: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


Histogram = tuple[list[tuple[float, float]], float, float]  # cumulative (le, count), sum, count


def event_to_status_histogram(runtime: Runtime, since: Histogram | None = None) -> Histogram:
    """The operator's own event->status histogram (what Prometheus scrapes), minus `since`."""
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for metric in runtime.metrics.event_to_status.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    if since is not None:
        buckets = [(le, n - n0) for (le, n), (_, n0) in zip(buckets, since[0], strict=True)]
        total, count = total - since[1], count - since[2]
    return buckets, total, count


def histogram_quantiles(histogram: Histogram) -> dict[str, float | int]:
    """Quantiles as Prometheus' histogram_quantile() estimates them (linear within a bucket)."""
    buckets, total, count = histogram
    if count <= 0:
        return {"n": 0}

    def quantile(q: float) -> float:
        rank = q * count
        lower_le, lower_n = 0.0, 0.0
        for le, n in buckets:
            if n >= rank:
                if le == float("inf"):
                    return lower_le
                return lower_le + (le - lower_le) * ((rank - lower_n) / max(n - lower_n, 1e-12))
            lower_le, lower_n = le, n
        return lower_le

    return {
        "n": int(count),
        "p50": quantile(0.50),
        "p95": quantile(0.95),
        "p99": quantile(0.99),
        "mean": total / count,
    }


def percentiles(samples: list[float]) -> dict[str, float | int]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]

    return {
        "n": len(ordered),
        "min": ordered[0],
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def kube_event_reasons(kube: KubeStandin) -> dict[str, int]:
    rt = kube._type("", "v1", "events")
    return dict(sorted(collections.Counter(e.get("reason", "?") for e in kube._store[rt].values()).items()))


_TRACE_FRAMES = 10
_OWNERS = (  # innermost frame first: an allocation belongs to the first of these on its stack
    ("operator (whatsapp_operator)", "/whatsapp_operator/"),
    ("kopf", "/kopf/"),
    ("k8s stand-in", "kube_standin.py"),
    ("fake Evolution", "evolution_fake.py"),
)


def traced_by_owner(snapshot: tracemalloc.Snapshot, instances: int) -> dict[str, dict[str, float]]:
    """Memory still allocated since tracing started, by who asked for it: the innermost frame of the
    allocation's stack that lies in the operator, kopf, the stand-in or the fake (else "other")."""
    sizes: collections.Counter[str] = collections.Counter()
    for trace in snapshot.traces:
        owner = "other (no owner frame on the stack)"
        for frame in trace.traceback:  # most recent call first
            match = next((label for label, needle in _OWNERS if needle in frame.filename), None)
            if match is not None:
                owner = match
                break
        sizes[owner] += trace.size
    return {
        owner: {"kib": size / 1024, "per_instance_kib": size / 1024 / instances} for owner, size in sizes.most_common()
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
    }


# -------------------------------------------------------------------------------------------------
# the benchmark
# -------------------------------------------------------------------------------------------------


async def bench(instances: int, mode: WebsocketMode, timeout: float, *, trace_memory: bool = False) -> dict[str, Any]:
    names = [f"{NAME_PREFIX}{i:05d}" for i in range(instances)]
    result: dict[str, Any] = {
        "instances": instances,
        "mode": mode.value,
        "machine": machine(),
        "phases": {},
        "complete": False,
    }
    overrides = production_config_overrides(mode)
    result["config"] = {k: (v.value if isinstance(v, WebsocketMode) else v) for k, v in overrides.items()}

    kube = KubeStandin()
    kube_requests = KubeRecorder()
    kube.requests = kube_requests
    evolution = FakeEvolution(global_events=mode is not WebsocketMode.INSTANCE)
    evo_requests = EvolutionRecorder()
    evolution.requests = evo_requests
    evo_emitted = CountingList()
    evolution.emitted = evo_emitted
    await kube.start()
    await evolution.start()
    board = StatusBoard(kube)
    tally = EventTally(kube)
    try:
        async with run_operator(kube, evolution, **overrides) as operator:
            shutdown_started = await _measure(
                operator,
                kube,
                evolution,
                names,
                timeout,
                trace_memory,
                result,
                board,
                tally,
                kube_requests,
                evo_requests,
                evo_emitted,
            )
    except AssertionError as error:  # the harness says kopf did not stop in time: report, do not hide figures
        result["shutdown_error"] = str(error)
    else:
        result["shutdown_seconds"] = time.monotonic() - shutdown_started
    await evolution.stop()
    await kube.stop()
    return result


async def _measure(
    operator: Any,
    kube: KubeStandin,
    evolution: FakeEvolution,
    names: list[str],
    timeout: float,
    trace_memory: bool,
    result: dict[str, Any],
    board: StatusBoard,
    tally: EventTally,
    kube_requests: KubeRecorder,
    evo_requests: EvolutionRecorder,
    evo_emitted: CountingList,
) -> float:
    """The phases, inside the running operator; fills `result` and returns when it started to stop."""
    instances = len(names)
    socket_clients_seen: list[int] = []
    phases = result["phases"]
    runtime = operator.runtime
    await evolution.wait_for_socket_client(1, timeout=30)
    gc.collect()
    rss_before = rss_kib()
    result["memory"] = {"rss_before_kib": rss_before["VmRSS"]}
    if trace_memory:
        tracemalloc.start(_TRACE_FRAMES)

    current: list[Any] = [None, None]  # the phase running now and its start snapshot

    def snapshot(name: str) -> tuple[collections.Counter[str], collections.Counter[str], float, float]:
        start = (
            collections.Counter(evo_requests.counts),
            collections.Counter(kube_requests.counts),
            time.monotonic(),
            time.process_time(),
        )
        current[:] = [name, start]
        return start

    def close_phase(name: str, start: tuple[Any, ...], end: tuple[float, float], **extra: Any) -> dict[str, Any]:
        evo0, kube0, t0, cpu0 = start
        socket_clients_seen.append(evolution.socket_clients)
        phase = {
            "seconds": end[0] - t0,
            "cpu_seconds": end[1] - cpu0,
            "evolution_requests": diff(evo_requests.counts, evo0),
            "kubernetes_requests": diff(kube_requests.counts, kube0),
            **extra,
        }
        phases[name] = phase
        current[:] = [None, None]
        return phase

    try:
        # 1. create N objects at once; wait until every one shows its first QR -----------------
        start = snapshot("create")
        for name in names:
            operator.create(name, {"instanceName": name})
        reached: dict[str, float] = {}
        done = (
            await board.wait_all(
                names, lambda s: s.get("phase") == "AwaitingScan", timeout, "create -> AwaitingScan", reached_at=reached
            ),
            time.process_time(),
        )
        per_instance = percentiles([t - start[2] for t in reached.values()])
        # Events trail the statuses (one poster task): wait for them, bounded, before moving on.
        await tally.wait_for({"Created": instances, "QRCodeIssued": instances}, timeout)
        close_phase(
            "create", start, done, time_to_awaiting_scan=per_instance, events_posted_by=time.monotonic() - start[2]
        )
        gc.collect()
        result["memory"]["rss_after_create_kib"] = rss_kib()["VmRSS"]
        if trace_memory:
            result["memory"]["traced_after_create"] = traced_by_owner(tracemalloc.take_snapshot(), instances)
            tracemalloc.stop()

        # 2. QR rotation storm: a new QR for every instance, as one burst ----------------------
        histogram0 = event_to_status_histogram(runtime)
        patches0 = runtime.writer.stats.patches
        start = snapshot("qr_storm")
        new_codes = await asyncio.gather(*(evolution.issue_qr(name) for name in names))
        emitted = time.monotonic()
        wanted = dict(zip(names, new_codes, strict=True))
        done = (
            await board.wait_all(
                names,
                lambda s: (s.get("qr") or {}).get("code") == wanted.get(s.get("instanceName", "")),
                timeout,
                "qr storm -> new code in every status",
            ),
            time.process_time(),
        )
        # A patch is visible in the stand-in a moment before the writer records its latency.
        await asyncio.gather(*(runtime.writer.flush((NAMESPACE, name)) for name in names))
        histogram = event_to_status_histogram(runtime, since=histogram0)
        close_phase(
            "qr_storm",
            start,
            done,
            burst_emit_seconds=emitted - start[2],
            event_to_status=histogram_quantiles(histogram),
            status_patches=runtime.writer.stats.patches - patches0,
        )

        # 3. scan every instance; wait until all Connected ---------------------------------------
        start = snapshot("scan")
        await asyncio.gather(*(evolution.scan(name) for name in names))
        emitted = time.monotonic()
        done = (
            await board.wait_all(names, lambda s: s.get("phase") == "Connected", timeout, "scan -> Connected"),
            time.process_time(),
        )
        await tally.wait_for({"Connected": instances}, timeout)
        close_phase("scan", start, done, burst_emit_seconds=emitted - start[2])

        # 4. Evolution restart: reconnect + REST resync ------------------------------------------
        # The resync of a Connected instance writes nothing when Evolution confirms it, so the
        # stand-in cannot tell when it is over: the fake's wait_until (re-checked after every
        # request it answers, emit and (dis)connect) waits until every instance has had its
        # connectionState answered after the restart; then the statuses are checked.
        reconnects0 = runtime.server.stream.client.stats.reconnects
        watch_rv = kube._rv
        evo_requests.kept_key, evo_requests.kept = "GET /instance/connectionState", []
        answered: set[str] = set()
        unanswered: list[Any] = []
        start = snapshot("restart")
        await evolution.restart()
        restarted = time.monotonic()
        reconnected_at: list[float] = []

        def resynced() -> bool:
            if not reconnected_at and evolution.socket_clients >= 1:
                reconnected_at.append(time.monotonic())
            unanswered.extend(evo_requests.kept)
            evo_requests.kept.clear()
            for request in [r for r in unanswered if r.status is not None]:
                unanswered.remove(request)
                if request.status == 200:
                    answered.add(request.path.rsplit("/", 1)[-1])
            return bool(reconnected_at) and len(answered) >= instances

        try:
            await evolution.wait_until(resynced, timeout=timeout)
        except TimeoutError:
            raise PhaseTimeout(
                "restart -> every instance's connectionState answered", len(answered), instances, timeout, []
            ) from None
        resync_read = (time.monotonic(), time.process_time())
        evo_requests.kept_key = None
        synced = (
            await board.wait_all(names, connected_and_synced, timeout, "restart -> Connected+Synced"),
            time.process_time(),
        )
        history = kube._history
        left_connected = {
            change.obj["metadata"]["name"]
            for change in history
            if change.rv > watch_rv
            and change.rt is board.rt
            and (change.obj.get("status") or {}).get("phase") != "Connected"
        }
        history_complete = not history or history[0].rv <= watch_rv + 1
        close_phase(
            "restart",
            start,
            max(synced, resync_read),
            evolution_restart_seconds=restarted - start[2],
            socket_back_after=(reconnected_at[0] - start[2]) if reconnected_at else None,
            operator_reconnects=runtime.server.stream.client.stats.reconnects - reconnects0,
            statuses_that_left_connected=len(left_connected),
            # False: the stand-in's bounded change history did not reach back to the
            # restart, so the count above is a lower bound.
            left_connected_count_exact=history_complete,
        )
        result["complete"] = True
    except PhaseTimeout as error:
        result["error"] = str(error)
        if current[0] is not None:
            close_phase(
                current[0],
                current[1],
                (time.monotonic(), time.process_time()),
                timed_out=f"{error.done}/{error.total} reached",
            )

    # 5. totals, memory, connections ---------------------------------------------------------
    gc.collect()
    rss_end = rss_kib()
    mem = result["memory"]
    mem.update(rss_end_kib=rss_end["VmRSS"], peak_rss_kib=rss_end["VmHWM"])
    if "rss_after_create_kib" in mem:
        mem["per_instance_after_create_kib"] = (mem["rss_after_create_kib"] - mem["rss_before_kib"]) / instances
    mem["per_instance_end_kib"] = (rss_end["VmRSS"] - mem["rss_before_kib"]) / instances
    writer = runtime.writer.stats
    client = runtime.server.stream.client.stats
    result["totals"] = {
        "evolution_requests": dict(sorted(evo_requests.counts.items())),
        "evolution_calls_by_outcome": {f"{e} {o}": n for (e, o), n in sorted(runtime.server.rest.calls.items())},
        "kubernetes_requests": dict(sorted(kube_requests.counts.items())),
        "status_patches": {"written": writer.patches, "skipped_noop": writer.skipped, "failed": writer.failures},
        "kubernetes_events": kube_event_reasons(kube),
        "events_dropped": runtime.publisher.stats.events_dropped,
        "reconcile_errors": runtime.reconciler.stats.reconcile_errors,
        "evolution_emitted": dict(sorted(evo_emitted.counts.items())),
        "socketio": {
            "clients_now": evolution.socket_clients,
            "clients_at_phase_ends": socket_clients_seen,
            "handshakes": evo_requests.counts.get("GET /socket.io/ (handshake)", 0),
            "connects": client.connects,
            "reconnects": client.reconnects,
            "failed_connects": client.failed_connects,
            "namespace_refusals": client.namespace_refusals,
            "events_received": dict(sorted(client.events_received.items())),
        },
        "watch_timeout_seconds": sorted(kube_requests.watch_timeouts),
        "status_board_full_rescans": board.full_rescans,
    }
    return time.monotonic()


async def _wait(kube: KubeStandin, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        await kube.wait_until(predicate, timeout=timeout)
    except AssertionError:
        raise PhaseTimeout(what, 0, 1, timeout, []) from None


# -------------------------------------------------------------------------------------------------
# output
# -------------------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


_PHASE_LABELS = {
    "create": "create N -> all AwaitingScan",
    "qr_storm": "QR storm -> every status has new code",
    "scan": "scan all -> all Connected",
    "restart": "Evolution restart -> resynced, Connected",
}


def _phase_detail(key: str, p: dict[str, Any], n: int) -> str:
    if key == "create":
        t = p["time_to_awaiting_scan"]
        return (
            f"per instance first {t['min']:.2f} p50 {t['p50']:.2f} p95 {t['p95']:.2f} max {t['max']:.2f} s; "
            f"{n / p['seconds']:.0f} instances/s; Events posted after {p['events_posted_by']:.2f} s"
        )
    if key == "qr_storm":
        lat = p["event_to_status"]
        return (
            f"burst emitted in {p['burst_emit_seconds']:.2f} s; event->status ms p50 {fmt_ms(lat.get('p50'))} "
            f"p95 {fmt_ms(lat.get('p95'))} p99 {fmt_ms(lat.get('p99'))} max {fmt_ms(lat.get('max'))} "
            f"(n={lat['n']} patches)"
        )
    if key == "scan":
        return f"burst emitted in {p['burst_emit_seconds']:.2f} s"
    reads = p["evolution_requests"].get("GET /instance/connectionState", 0)
    back = p["socket_back_after"]
    return (
        f"restart took {p['evolution_restart_seconds']:.2f} s; socket back after "
        f"{'-' if back is None else f'{back:.2f}'} s; {reads} connectionState reads; "
        f"{'' if p['left_connected_count_exact'] else '>='}{p['statuses_that_left_connected']} "
        f"statuses left Connected"
    )


def render(result: dict[str, Any]) -> str:
    out = io.StringIO()
    w = out.write
    m = result["machine"]
    n = result["instances"]
    w(
        f"whatsapp-operator bench: {n} instances, mode={result['mode']}, "
        f"{'complete' if result['complete'] else 'INCOMPLETE'} (wall {result.get('wall_seconds', 0):.1f} s)\n"
    )
    w(
        f"machine: {m['nproc']} CPUs ({m['affinity']} usable) {m['cpu']}, {m['implementation']} {m['python']}, "
        f"Linux {m['kernel']}; stand-in + fake Evolution + operator in one process, one event loop\n"
    )
    c = result["config"]
    w(
        f"config: production defaults (max_concurrent_requests={c['max_concurrent_requests']}, "
        f"max_concurrent_status_writes={c['max_concurrent_status_writes']}, request_timeout={c['request_timeout']}s, "
        f"outage_grace={c['outage_grace']}s, reconnect {c['reconnect_initial_delay']}..{c['reconnect_max_delay']}s, "
        f"retry {c['retry_initial_delay']}..{c['retry_max_delay']}s), periodic resync {c['resync_interval']:.0f}s "
        f"(off for the run); kopf watch timeoutSeconds={','.join(result['totals']['watch_timeout_seconds'])}\n"
    )
    if result.get("error"):
        w(f"ERROR: {result['error']}\n")
    w("\n")
    ph = result["phases"]
    w(f"{'phase':<40}{'wall s':>9}{'CPU s':>8}  detail\n")
    for key, label in _PHASE_LABELS.items():
        if key in ph:
            p = ph[key]
            detail = f"TIMED OUT: {p['timed_out']}" if "timed_out" in p else _phase_detail(key, p, n)
            w(f"{label:<40}{p['seconds']:>9.2f}{p['cpu_seconds']:>8.2f}  {detail}\n")
    w("\nEvolution REST calls (as the fake saw them)\n")
    order = [k for k in ("create", "qr_storm", "scan", "restart") if k in ph]
    keys = sorted(
        {k for name in order for k in ph[name]["evolution_requests"]} | set(result["totals"]["evolution_requests"])
    )
    w(f"  {'method path prefix':<42}" + "".join(f"{k:>10}" for k in order) + f"{'total':>10}\n")
    for key in keys:
        w(
            f"  {key:<42}"
            + "".join(f"{ph[k]['evolution_requests'].get(key, 0):>10}" for k in order)
            + f"{result['totals']['evolution_requests'].get(key, 0):>10}\n"
        )
    w("\nKubernetes API requests (as the stand-in saw them)\n")
    startup = {
        k: v
        for k, v in result["totals"]["kubernetes_requests"].items()
        if order and not any(ph[name]["kubernetes_requests"].get(k) for name in order)
    }
    keys = sorted(set(result["totals"]["kubernetes_requests"]) - set(startup))
    w(f"  {'verb resource':<42}" + "".join(f"{k:>10}" for k in order) + f"{'total':>10}\n")
    for key in keys:
        w(
            f"  {key:<42}"
            + "".join(f"{ph[k]['kubernetes_requests'].get(key, 0):>10}" for k in order)
            + f"{result['totals']['kubernetes_requests'].get(key, 0):>10}\n"
        )
    if startup and order:
        w(
            f"  at start-up only: {sum(startup.values())} requests "
            f"({', '.join(f'{k} {v}' for k, v in sorted(startup.items()))})\n"
        )
    t = result["totals"]
    sp = t["status_patches"]
    w(f"\nstatus patches: written {sp['written']}, skipped (no-op) {sp['skipped_noop']}, failed {sp['failed']}\n")
    ev = t["kubernetes_events"]
    w(
        f"Kubernetes Events posted: {sum(ev.values())} ({', '.join(f'{k} {v}' for k, v in ev.items())}); "
        f"dropped (queue full) {t['events_dropped']}; reconcile errors {t['reconcile_errors']}\n"
    )
    mem = result["memory"]
    after_create = f"{mem['rss_after_create_kib'] / 1024:.1f} MiB" if "rss_after_create_kib" in mem else "-"
    w(
        f"memory (process RSS): before {mem['rss_before_kib'] / 1024:.1f} MiB, after create "
        f"{after_create}, end {mem['rss_end_kib'] / 1024:.1f} MiB, "
        f"peak {mem['peak_rss_kib'] / 1024:.1f} MiB; per instance "
        + (
            f"{mem['per_instance_after_create_kib']:.1f} KiB after create, "
            if "per_instance_after_create_kib" in mem
            else ""
        )
        + f"{mem['per_instance_end_kib']:.1f} KiB at the end\n"
    )
    traced = mem.get("traced_after_create")
    if traced:
        w(
            "  traced Python allocations made during create and still held after it (tracemalloc): "
            + ", ".join(f"{owner} {v['per_instance_kib']:.1f} KiB" for owner, v in traced.items())
            + " per instance\n"
        )
    s = t["socketio"]
    w(
        f"Socket.IO: clients at the fake now {s['clients_now']} (at phase ends {s['clients_at_phase_ends']}), "
        f"handshakes {s['handshakes']} (one per Evolution process), operator connects {s['connects']} "
        f"(reconnects {s['reconnects']}, failed {s['failed_connects']}, namespace refusals "
        f"{s['namespace_refusals']}); events received {sum(s['events_received'].values())}\n"
    )
    if "shutdown_error" in result:
        w(f"operator shutdown: {result['shutdown_error']}\n")
    else:
        w(f"operator shutdown: {result['shutdown_seconds']:.2f} s\n")
    if result.get("profile"):
        w("\n" + result["profile"])
    return out.getvalue()


# -------------------------------------------------------------------------------------------------
# profile summary
# -------------------------------------------------------------------------------------------------

_BUCKETS = (
    ("operator (whatsapp_operator)", "/whatsapp_operator/"),
    ("kopf", "/kopf/"),
    ("k8s stand-in (tests/kube_standin.py)", "kube_standin.py"),
    ("fake Evolution (tests/evolution_fake.py)", "evolution_fake.py"),
    ("bench script", "bench_instances.py"),
    ("aiohttp / multidict / yarl", ("/aiohttp/", "/multidict/", "/yarl/")),
    ("httpx / httpcore / h11 / anyio", ("/httpx/", "/httpcore/", "/h11/", "/anyio/")),
    ("python-socketio / engineio", ("/socketio/", "/engineio/")),
    ("websockets", "/websockets/"),
    ("json", ("/json/", "_json")),
    ("copy (deepcopy)", "/copy.py"),
    ("logging", "/logging/"),
    ("asyncio + selectors", ("/asyncio/", "selectors.py")),
)


def profile_summary(profiler: cProfile.Profile, top: int = 25) -> str:
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    shares: collections.Counter[str] = collections.Counter()
    for (filename, _, _), row in stats.stats.items():  # type: ignore[attr-defined]
        bucket = "other (builtins, C calls, stdlib)"
        for label, spec in _BUCKETS:
            needles = (spec,) if isinstance(spec, str) else spec
            if any(needle in filename for needle in needles):
                bucket = label
                break
        shares[bucket] += row[2]
    out = io.StringIO()
    out.write(f"profile: {total:.1f} s of own (tottime) CPU under cProfile, by package\n")
    for label, seconds in shares.most_common():
        out.write(f"  {label:<44}{seconds:>8.1f} s {100 * seconds / total:>5.1f} %\n")
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(top)
    out.write("\ntop functions by own time:\n" + _trim_pstats(stream.getvalue()))
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(r"whatsapp_operator|kopf/_core", top)
    out.write("\noperator and kopf functions by cumulative time:\n" + _trim_pstats(stream.getvalue()))
    return out.getvalue()


def _trim_pstats(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return (
        "\n".join(
            line.replace(str(ROOT) + "/", "").replace(sys.prefix + "/", "") for line in lines[start:] if line.strip()
        )
        + "\n"
    )


# -------------------------------------------------------------------------------------------------
# main
# -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000, help="number of WhatsAppInstances (default 1000)")
    parser.add_argument(
        "--mode",
        choices=[m.value for m in WebsocketMode if m is not WebsocketMode.AUTO] + ["auto"],
        default="global",
        help="global: Evolution with WEBSOCKET_GLOBAL_EVENTS=true and the "
        "operator in global mode (default); instance: one Socket.IO namespace per instance; "
        "auto: global Evolution, operator in auto mode",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds each phase may take (default max(120, 0.6 s x instances))"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        default=None,
        help="run under cProfile, write the raw stats to FILE and print a summary "
        "(cProfile roughly doubles every figure: use it to find where time goes, not for figures)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace allocations during the create phase and split the memory kept by owner "
        "(operator, kopf, stand-in, fake); slows the run: use for the memory split, not for timings",
    )
    parser.add_argument(
        "--log-file",
        default="/tmp/bench_instances.log",
        help="the operator's INFO log goes here, as in production (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    timeout = args.timeout or max(120.0, 0.6 * args.instances)

    # The operator logs at INFO, as the CLI does, into a file: formatting costs what it costs in production.
    handler = logging.FileHandler(args.log_file, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    install_log_filter()
    for noisy in ("httpx", "httpcore", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    profiler = cProfile.Profile() if args.profile else None
    started = time.monotonic()
    if profiler is not None:
        profiler.enable()
    try:
        result = asyncio.run(bench(args.instances, WebsocketMode(args.mode), timeout, trace_memory=args.tracemalloc))
    finally:
        if profiler is not None:
            profiler.disable()
    result["wall_seconds"] = time.monotonic() - started
    result["log_file"] = args.log_file
    if profiler is not None:
        profiler.dump_stats(args.profile)
        result["profile"] = profile_summary(profiler)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(render(result), end="")
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
