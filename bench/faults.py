#!/usr/bin/env python3
"""Fault suite: the real operator process, a few hundred instances, rounds of faults, figures.

    python bench/faults.py [--instances 300] [--rounds-scale 1.0] [--json out.json] [--resync 30]
                           [--only KIND,...] [--seed N] [--timeout SECONDS] [--log-file PATH]
                           [--progress] [--verbose] [--trace FILE]

The operator runs as users start it, in its own process (`python -m whatsapp_operator run
--all-namespaces --standalone`, kubeconfig login, kopf.run), against the Kubernetes stand-in
(tests/kube_standin.py) and the fake Evolution API (tests/evolution_fake.py), both served from this
script's event loop on 127.0.0.1. With N instances live (a third of them paired), it runs rounds of
faults of each kind:

  evolution_restart        FakeEvolution.restart(); every other round right after a batch of new
                           objects was created and the fake had received some of their creates
  socketio_drop            FakeEvolution.drop_socket_clients(), then QR rotations (and now and then a
                           scan) that the operator cannot hear: only its resync after the reconnect
                           can make those statuses right
  kube_status_409/429/500  the next B status patches of the operator answered 409 / 429 / 500, while
                           QR rotations make it write statuses
  kube_event_post          the next B Event posts answered 500 or 429, while a scan and an
                           out-of-band removal make it post Events (Connected, Recreated); also
                           counts those Events still missing 20 s later (events_missing)
  kube_finalizer_patch     the next B JSON patches (kopf's finalizer add/remove) answered 500 / 409 /
                           429 in turn, while a batch of objects is created and another deleted
  operator_kill            SIGKILL of the operator at a random point (after j of the Evolution
                           create/delete calls of a batch of creates and deletes, j random), then a
                           fresh operator process

After each round it waits (bounded) until everything is right again and checks:
  duplicated          instances whose `POST /instance/create` was answered 201 more often than once
                      plus the number of times this script removed them behind the operator's back
  lost                live WhatsAppInstances whose instance is not in Evolution
  orphaned            instances still in Evolution although this script deleted their object and
                      the deletion completed
  stuck_finalizers    objects this script deleted that are still there
  wrong_after_resync  live objects whose status is not right one resync period after the fault
                      ended: phase = the fake's truth (open -> Connected; a QR cycle ->
                      AwaitingScan with .status.qr.code = the fake's current QR), Synced=True, and
                      no message about an outage
  not_right_after_2_resyncs  rounds after which the above still did not all hold two resync
                      periods after the fault (what was still wrong then is reported once and left
                      out of later rounds' waits, so one lasting failure does not stall the run)
  time_to_right_s     from the fault's start until all of the above held, p50 / max over rounds

One JSON document goes to stdout (and to --json FILE). Exit code 0 when every count is 0.
`--trace FILE` appends, for every round not right after one resync, the requests the fake received
since the round began (with what this script did, marked ---) to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import os
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from evolution_fake import FakeEvolution
from instances import instance_body
from kube_standin import KubeStandin

GROUP, VERSION, PLURAL = "whatsapp-operator.io", "v1alpha1", "whatsappinstances"
NAMESPACE = "default"
FINALIZER = "whatsapp-operator.io/finalizer"
JSON_PATCH = "application/json-patch+json"
# Anchored at both ends: right whether fail_next() matches with search() or fullmatch().
STATUS_PATH = re.compile(r"^/apis/whatsapp-operator\.io/v1alpha1/namespaces/[^/]+/whatsappinstances/[^/]+/status$")
OBJECT_PATH = re.compile(r"^/apis/whatsapp-operator\.io/v1alpha1/namespaces/[^/]+/whatsappinstances/[^/]+$")
EVENTS_PATH = re.compile(r"^/api/v1/namespaces/[^/]+/events$")
OUTAGE_WORDS = ("unreachable", "is down", "last known phase", "not loaded", "kept until")

# Rounds per fault kind at --rounds-scale 1.
ROUNDS = {
    "evolution_restart": 20,
    "socketio_drop": 100,
    "kube_status_409": 10,
    "kube_status_429": 10,
    "kube_status_500": 10,
    "kube_event_post": 10,
    "kube_finalizer_patch": 10,
    "operator_kill": 20,
}


# -------------------------------------------------------------------------------------------------
# recorders: the fakes record every request; keep only what the checks need
# -------------------------------------------------------------------------------------------------


class RecentList(list):  # type: ignore[type-arg]
    """Stands in for a fake's request/emit log: keeps the latest entries only (memory stays flat)."""

    def __init__(self, keep: int = 2000, on_append: Callable[[Any], None] | None = None) -> None:
        super().__init__()
        self.keep = keep
        self.on_append = on_append

    def append(self, item: Any) -> None:
        if self.on_append is not None:
            self.on_append(item)
        super().append(item)
        if len(self) > 2 * self.keep:
            del self[: len(self) - self.keep]


class EvolutionLedger:
    """Every create and delete call the fake received; the fake sets `.status` once it answered."""

    def __init__(self, trace: bool = False) -> None:
        self.creates: list[Any] = []
        self.deletes: list[Any] = []
        # (wall time, request) of the latest calls, for --trace: dumped for a round that goes wrong.
        self.trace: collections.deque[tuple[float, Any]] | None = collections.deque(maxlen=50_000) if trace else None

    def see(self, request: Any) -> None:
        if self.trace is not None:
            self.trace.append((time.time(), request))
        if request.method == "POST" and request.path == "/instance/create":
            self.creates.append(request)
        elif request.method == "DELETE" and request.path.startswith("/instance/delete/"):
            self.deletes.append(request)

    def created_201(self) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        for request in self.creates:
            if request.status == 201 and isinstance(request.json, dict):
                counts[str(request.json.get("instanceName"))] += 1
        return counts

    def calls_for(self, creates: Iterable[str], deletes: Iterable[str]) -> int:
        wanted_creates, wanted_deletes = set(creates), set(deletes)
        made = sum(1 for r in self.creates if isinstance(r.json, dict) and r.json.get("instanceName") in wanted_creates)
        return made + sum(1 for r in self.deletes if r.path.rsplit("/", 1)[-1] in wanted_deletes)


# -------------------------------------------------------------------------------------------------
# the operator process
# -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when this script dies, however it dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class OperatorProcess:
    def __init__(
        self, kubeconfig: Path, evolution: FakeEvolution, resync: float, log_path: Path, *, verbose: bool = False
    ) -> None:
        self.kubeconfig = kubeconfig
        self.verbose = verbose
        self.evolution = evolution
        self.resync = resync
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0
        self.rss_kib_max = 0
        self._sampler: asyncio.Task[None] | None = None
        log_path.write_text("")

    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("EVOLUTION_", "KUBERNETES_", "WHATSAPP_OPERATOR_"))
        }
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            EVOLUTION_API_URL=self.evolution.url,
            EVOLUTION_API_KEY=self.evolution.api_key,
            WHATSAPP_OPERATOR_RESYNC_SECONDS=str(self.resync),
            # Objects kopf left waiting after a 409 on its finalizer patch are nudged within a resync period.
            WHATSAPP_OPERATOR_NUDGE_SECONDS=str(max(5.0, self.resync / 3)),
            WHATSAPP_OPERATOR_METRICS_PORT=str(free_port()),
            PYTHONUNBUFFERED="1",
        )
        return env

    async def start(self) -> None:
        assert self.process is None or self.process.returncode is not None
        self.starts += 1
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"===== faults.py: operator start #{self.starts} =====\n")
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "whatsapp_operator",
                "run",
                "--all-namespaces",
                "--standalone",
                *(["--verbose"] if self.verbose else []),
                env=self.env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.create_task(self._sample_rss())

    async def kill(self) -> None:
        """SIGKILL, then wait until the process is gone (bounded)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        self.kills += 1
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.wait_for(process.wait(), timeout=10)

    async def stop(self) -> int | None:
        """SIGTERM, up to 10 s for a clean exit, then SIGKILL. Always leaves no process behind."""
        process = self.process
        if self._sampler is not None:
            self._sampler.cancel()
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.wait_for(process.wait(), timeout=10)
            return None

    def kill_now(self) -> None:
        """Last resort at exit (no event loop needed)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    async def _sample_rss(self) -> None:
        while True:
            process = self.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(OSError, ValueError):
                    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.rss_kib_max = max(self.rss_kib_max, int(line.split()[1]))
            await asyncio.sleep(0.5)

    def log_summary(self) -> dict[str, Any]:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        background = [line for line in lines if "Background task" in line and "failed" in line]
        return {
            "file": str(self.log_path),
            "lines": len(lines),
            "error_lines": sum(1 for line in lines if " ERROR " in line),
            "tracebacks": text.count("Traceback (most recent call last)"),
            "background_task_failures": len(background),
        }


# -------------------------------------------------------------------------------------------------
# the suite
# -------------------------------------------------------------------------------------------------


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == kind), None)


def summary(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(samples), 3), "max": round(max(samples), 3)}


class Suite:
    def __init__(
        self,
        kube: KubeStandin,
        evolution: FakeEvolution,
        operator: OperatorProcess,
        *,
        instances: int,
        resync: float,
        rng: random.Random,
        deadline: float,
        trace: str | None = None,
    ) -> None:
        self.kube = kube
        self.evolution = evolution
        self.operator = operator
        self.instances = instances
        self.resync = resync
        self.rng = rng
        self.deadline = deadline  # monotonic: no new round starts after it
        self.ledger = EvolutionLedger(trace is not None)
        self.trace_file = trace
        evolution.requests = RecentList(on_append=self.ledger.see)
        evolution.emitted = RecentList(keep=500)
        kube.requests = RecentList()
        self.rt = kube._type(GROUP, VERSION, PLURAL)
        self.store: dict[tuple[str, str], dict[str, Any]] = kube._store[self.rt]
        self.serial = 0
        self.live: set[str] = set()  # created by this script and not deleted by it
        self.deleted: set[str] = set()  # deleted by this script
        self.removed_out_of_band: collections.Counter[str] = collections.Counter()
        # Reported once, then left out of the waits: one lasting failure must not stall every later round.
        self.reported: dict[str, set[str]] = {key: set() for key in ("duplicated", "lost", "orphaned", "stuck")}
        self.results: dict[str, dict[str, Any]] = {}
        self.samples: dict[str, list[float]] = collections.defaultdict(list)

    # -- objects -------------------------------------------------------------------------------------

    def create(self, count: int) -> list[str]:
        names = []
        for _ in range(count):
            self.serial += 1
            name = f"fault-{self.serial:05d}"
            spec = {"instanceName": name, "integration": "WHATSAPP-BAILEYS"}
            self.kube.create(GROUP, VERSION, PLURAL, instance_body(name, spec), namespace=NAMESPACE)
            self.live.add(name)
            names.append(name)
        return names

    def delete(self, count: int) -> list[str]:
        settled = sorted(name for name in self.live if self.wrong(name) is None)
        names = self.rng.sample(settled, min(count, len(settled)))
        for name in names:
            self.kube.delete(GROUP, VERSION, PLURAL, name, NAMESPACE)
            self.live.discard(name)
            self.deleted.add(name)
        return names

    def unpaired(self) -> list[str]:
        """Live instances showing a QR in the fake (so a rotation or a scan is possible)."""
        result = []
        for name in sorted(self.live):
            inst = self.evolution.instances.get(name)
            if inst is not None and inst.state == "connecting" and not inst.paired:
                result.append(name)
        return result

    # -- the truth -------------------------------------------------------------------------------------

    def wrong(self, name: str) -> str | None:
        """Why the status of a live object is not right now, or None when it is."""
        obj = self.store.get((NAMESPACE, name))
        if obj is None:
            return "object missing"
        inst = self.evolution.instances.get(name)
        if inst is None:
            return "not in Evolution"
        status = obj.get("status") or {}
        phase = status.get("phase")
        if inst.state == "open":
            if phase != "Connected":
                return f"phase {phase}, Evolution says open"
        elif inst.state == "connecting" and not inst.paired and inst.cached_qr.get("code"):
            if phase != "AwaitingScan":
                return f"phase {phase}, Evolution shows a QR"
            if (status.get("qr") or {}).get("code") != inst.cached_qr["code"]:
                return "QR code is not Evolution's current one"
        else:
            return f"Evolution state {inst.state!r} (paired={inst.paired}) is not settled"
        synced = condition(status, "Synced")
        if synced is None or synced.get("status") != "True":
            return f"Synced={None if synced is None else synced.get('status')}"
        messages = [str(status.get("message") or "")]
        messages += [str(c.get("message") or "") for c in status.get("conditions") or [] if isinstance(c, dict)]
        if any(word in message.lower() for message in messages for word in OUTAGE_WORDS):
            return f"message mentions an outage: {status.get('message')!r}"
        ready = condition(status, "Ready")
        if ready is not None and ready.get("status") == "Unknown":
            return "Ready=Unknown"
        return None

    def wrong_statuses(self) -> dict[str, str]:
        """Live objects whose status is not right, leaving out those already reported as lost."""
        return {name: reason for name in self.live - self.reported["lost"] if (reason := self.wrong(name)) is not None}

    def stuck(self) -> set[str]:
        return {name for name in self.deleted if (NAMESPACE, name) in self.store}

    def orphans(self) -> set[str]:
        return {
            name for name in self.deleted if (NAMESPACE, name) not in self.store and name in self.evolution.instances
        }

    def lost(self) -> set[str]:
        return {name for name in self.live if (NAMESPACE, name) in self.store and name not in self.evolution.instances}

    def duplicates(self) -> set[str]:
        created = self.ledger.created_201()
        return {name for name, count in created.items() if count > 1 + self.removed_out_of_band[name]}

    def all_right(self) -> bool:
        """Every live status right, every deleted object gone and its instance too; what was already
        reported as lasting damage (lost, stuck, orphaned) is left out."""
        return (
            not self.stuck() - self.reported["stuck"]
            and not self.orphans() - self.reported["orphaned"]
            and not self.wrong_statuses()
        )

    # -- waiting ---------------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, *, min_interval: float = 0.05) -> bool:
        """True as soon as predicate() holds, False after `timeout`. Re-checked after writes to the
        stand-in (at most every `min_interval`) and at least every 0.1 s for changes in the fake."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        last = [0.0]

        def check() -> bool:
            now = loop.time()
            if now - last[0] < min_interval:
                return False
            last[0] = now
            return bool(predicate())

        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                return bool(predicate())
            last[0] = 0.0
            try:
                await self.kube.wait_until(check, timeout=min(0.1, remaining))
                return True
            except AssertionError:
                continue

    async def wait_for_calls(self, creates: list[str], deletes: list[str], count: int, timeout: float) -> None:
        """Until the fake has received `count` create/delete calls for these names (bounded)."""
        if count <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await self.evolution.wait_until(lambda: self.ledger.calls_for(creates, deletes) >= count, timeout=timeout)

    # -- rounds ----------------------------------------------------------------------------------------

    def result(self, kind: str) -> dict[str, Any]:
        return self.results.setdefault(
            kind,
            {
                "rounds": 0,
                "duplicated": 0,
                "lost": 0,
                "orphaned": 0,
                "stuck_finalizers": 0,
                "wrong_after_resync": 0,
                "not_right_after_2_resyncs": 0,
                "time_to_right_s": summary([]),
                "examples": [],
            },
        )

    async def settle(self, kind: str, started: float, fault_end: float) -> None:
        """After a fault: wait until everything is right (bounded), then count what is wrong."""
        loop = asyncio.get_running_loop()
        result = self.result(kind)
        result["rounds"] += 1
        right = await self.wait_for(self.all_right, timeout=max(0.0, fault_end + self.resync - loop.time()))
        if right:
            self.samples[kind].append(loop.time() - started)
        else:
            wrong = self.wrong_statuses()
            result["wrong_after_resync"] += len(wrong)
            self._example(
                result,
                "after one resync",
                wrong,
                self.stuck() - self.reported["stuck"],
                self.orphans() - self.reported["orphaned"],
            )
            self.dump_trace(
                f"{kind} round {result['rounds']}: not right one resync after the fault "
                f"({len(wrong)} wrong: {dict(sorted(wrong.items())[:5])})",
                started,
            )
            right = await self.wait_for(self.all_right, timeout=max(0.0, fault_end + 2 * self.resync - loop.time()))
            if right:
                self.samples[kind].append(loop.time() - started)
            else:
                result["not_right_after_2_resyncs"] += 1
        # Evolution's delete cleanup runs just after its reply: give a completed deletion a moment.
        with contextlib.suppress(TimeoutError):
            await self.evolution.wait_until(lambda: not self.orphans() - self.reported["orphaned"], timeout=2)
        found = {
            "lost": self.lost(),
            "stuck": self.stuck(),
            "orphaned": self.orphans(),
            "duplicated": self.duplicates(),
        }
        new = {key: names - self.reported[key] for key, names in found.items()}
        result["lost"] += len(new["lost"])
        result["stuck_finalizers"] += len(new["stuck"])
        result["orphaned"] += len(new["orphaned"])
        result["duplicated"] += len(new["duplicated"])
        if any(new.values()):
            self._example(
                result,
                "at the end of the round",
                {n: "lost" for n in new["lost"]},
                new["stuck"],
                new["orphaned"],
                new["duplicated"],
            )
        for key, names in new.items():
            self.reported[key] |= names
        result["time_to_right_s"] = summary(self.samples[kind])

    def dump_trace(self, title: str, since: float) -> None:
        """--trace: the fake's requests from `since` (loop time) on, appended to the trace file."""
        if self.ledger.trace is None or self.trace_file is None:
            return
        start = time.time() - (asyncio.get_running_loop().time() - since) - 1.0
        with open(self.trace_file, "a", encoding="utf-8") as out:
            out.write(f"===== {title}\n")
            for at, request in self.ledger.trace:
                if at >= start:
                    stamp = time.strftime("%H:%M:%S", time.localtime(at)) + f",{int(at * 1000) % 1000:03d}"
                    if isinstance(request, str):
                        out.write(f"{stamp} --- {request}\n")
                    else:
                        out.write(f"{stamp} {request.method} {request.path} -> {request.status}\n")

    def note(self, text: str) -> None:
        """--trace: what this script did, between the requests."""
        if self.ledger.trace is not None:
            self.ledger.trace.append((time.time(), text))

    @staticmethod
    def _example(
        result: dict[str, Any],
        when: str,
        wrong: dict[str, str],
        stuck: set[str] = frozenset(),
        orphans: set[str] = frozenset(),
        dups: set[str] = frozenset(),
    ) -> None:
        if len(result["examples"]) >= 5:
            return
        result["examples"].append(
            {
                "round": result["rounds"],
                "when": when,
                "wrong": dict(sorted(wrong.items())[:3]),
                "wrong_count": len(wrong),
                "stuck": sorted(stuck)[:3],
                "orphaned": sorted(orphans)[:3],
                "duplicated": sorted(dups)[:3],
            }
        )

    def batch(self) -> int:
        return max(2, self.instances // 30)

    async def evolution_restart(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if index % 2 == 1:  # while creates are in flight
            names = self.create(self.batch())
            await self.wait_for_calls(names, [], self.rng.randint(1, len(names)), timeout=30)
            started = loop.time()
        self.note("Evolution restarting")
        await self.evolution.restart()
        self.note("Evolution restarted")
        fault_end = loop.time()
        with contextlib.suppress(TimeoutError):
            await self.evolution.wait_until_loaded(timeout=30)
        await self.settle("evolution_restart", started, fault_end)

    async def socketio_drop(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.evolution.drop_socket_clients()
        self.note("Socket.IO clients dropped")
        # Evolution keeps no history: what happens now reaches the operator only through a resync.
        unpaired = self.unpaired()
        for name in self.rng.sample(unpaired, min(3, len(unpaired))):
            self.note(f"new QR for {name}: {await self.evolution.issue_qr(name)}")
        if index % 5 == 4 and len(unpaired) > self.instances // 3:
            name = self.rng.choice(unpaired)
            await self.evolution.scan(name)
            self.note(f"{name} scanned")
        fault_end = loop.time()
        await self.settle("socketio_drop", started, fault_end)

    async def _burst(
        self,
        kind: str,
        method: str,
        path: re.Pattern[str],
        statuses: list[int],
        times: int,
        trigger: Callable[[], Any],
        *,
        content_type: str | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        served_before = failures_served(self.kube)
        started = loop.time()
        self.note(f"{kind}: the next {times} {method} {path.pattern} answered {statuses}")
        for status in statuses:
            self.kube.fail_next(
                method, path, status, times=times, content_type=content_type, retry_after=1 if status == 429 else None
            )
        await trigger()
        wanted = served_before + times * len(statuses)
        await self.wait_for(lambda: failures_served(self.kube) >= wanted, timeout=20)
        served = failures_served(self.kube) - served_before
        self.kube.clear_failures()
        fault_end = loop.time()
        result = self.result(kind)
        result["failures_served"] = result.get("failures_served", 0) + served
        await self.settle(kind, started, fault_end)

    async def _rotate(self, count: int) -> None:
        unpaired = self.unpaired()
        for name in self.rng.sample(unpaired, min(count, len(unpaired))):
            self.note(f"new QR for {name}: {await self.evolution.issue_qr(name)}")

    async def kube_status(self, index: int, status: int) -> None:
        await self._burst(f"kube_status_{status}", "PATCH", STATUS_PATH, [status], 6, lambda: self._rotate(4))

    def events_posted(self, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of the (object name, reason) Events exist in the stand-in."""
        events = self.kube._store[self.kube._type("", "v1", "events")].values()
        return {
            key
            for event in events
            if (key := ((event.get("involvedObject") or {}).get("name"), event.get("reason"))) in wanted
        }

    async def kube_event_post(self, index: int) -> None:
        wanted: set[tuple[str, str]] = set()

        async def trigger() -> None:
            unpaired = self.unpaired()
            picks = self.rng.sample(unpaired, min(2, len(unpaired)))
            if picks and len(unpaired) > self.instances // 3:
                await self.evolution.scan(picks[0])
                wanted.add((picks[0], "Connected"))
            if len(picks) > 1:
                self.removed_out_of_band[picks[1]] += 1
                await self.evolution.remove_out_of_band(picks[1])
                wanted.add((picks[1], "Recreated"))
            self.note(f"Events expected: {sorted(wanted)}")

        await self._burst("kube_event_post", "POST", EVENTS_PATH, [500 if index % 2 == 0 else 429], 4, trigger)
        # The operator tries an Event a few times with backoff: wait for them, bounded.
        await self.wait_for(lambda: self.events_posted(wanted) == wanted, timeout=20, min_interval=0.2)
        result = self.result("kube_event_post")
        result["events_expected"] = result.get("events_expected", 0) + len(wanted)
        result["events_missing"] = result.get("events_missing", 0) + len(wanted - self.events_posted(wanted))

    async def kube_finalizer_patch(self, index: int) -> None:
        status = (500, 409, 429)[index % 3]  # the first is 500: a --rounds-scale 0.1 run stays short

        async def trigger() -> None:
            self.create(2)
            self.delete(2)

        await self._burst("kube_finalizer_patch", "PATCH", OBJECT_PATH, [status], 3, trigger, content_type=JSON_PATCH)

    async def operator_kill(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        creates = self.create(self.batch())
        deletes = self.delete(self.batch())
        calls = self.rng.randint(0, len(creates) + len(deletes))
        await self.wait_for_calls(creates, deletes, calls, timeout=30)
        await self.operator.kill()
        self.note(f"operator killed after {calls} calls (creates {creates}, deletes {deletes})")
        await self.operator.start()
        fault_end = loop.time()
        await self.settle("operator_kill", started, fault_end)

    # -- the whole run -----------------------------------------------------------------------------------

    async def setup(self) -> float:
        """N objects, a third of them paired, every status right."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.create(self.instances)
        if not await self.wait_for(
            lambda: all(self.wrong(n) is None for n in self.live), timeout=max(120.0, 0.5 * self.instances)
        ):
            raise RuntimeError(f"setup: statuses not right: {list(self.wrong_statuses().items())[:5]}")
        for name in self.unpaired()[: self.instances // 3]:
            await self.evolution.scan(name)
        if not await self.wait_for(self.all_right, timeout=max(60.0, 0.2 * self.instances)):
            raise RuntimeError(f"setup: statuses not right after the scans: {list(self.wrong_statuses().items())[:5]}")
        return loop.time() - started

    def schedule(
        self, scale: float, kube_faults: bool, only: set[str] | None = None
    ) -> list[tuple[str, Callable[[], Any]]]:
        plan: list[tuple[str, Callable[[], Any]]] = []
        actions: dict[str, Callable[[int], Any]] = {
            "evolution_restart": self.evolution_restart,
            "socketio_drop": self.socketio_drop,
            "kube_status_409": lambda i: self.kube_status(i, 409),
            "kube_status_429": lambda i: self.kube_status(i, 429),
            "kube_status_500": lambda i: self.kube_status(i, 500),
            "kube_event_post": self.kube_event_post,
            "kube_finalizer_patch": self.kube_finalizer_patch,
            "operator_kill": self.operator_kill,
        }
        for kind, rounds in ROUNDS.items():
            if (kind.startswith("kube_") and not kube_faults) or (only and kind not in only):
                continue
            for index in range(max(1, round(rounds * scale))):
                plan.append((kind, lambda action=actions[kind], i=index: action(i)))
        self.rng.shuffle(plan)
        return plan


def failures_served(kube: KubeStandin) -> int:
    served = getattr(kube, "failures_served", 0)
    return served if isinstance(served, int) else len(served)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    began = loop.time()
    rng = random.Random(args.seed)
    kube = KubeStandin()
    # No QR limit within the run: every restart starts a new QR cycle for each unpaired instance.
    evolution = FakeEvolution(qrcode_limit=10_000)
    await kube.start()
    await evolution.start()
    workdir = Path(tempfile.mkdtemp(prefix="faults-"))
    kubeconfig = workdir / "kubeconfig"
    kube.write_kubeconfig(kubeconfig)
    if args.trace:
        Path(args.trace).write_text("")
    operator = OperatorProcess(kubeconfig, evolution, args.resync, Path(args.log_file), verbose=args.verbose)
    suite = Suite(
        kube,
        evolution,
        operator,
        instances=args.instances,
        resync=args.resync,
        rng=rng,
        deadline=began + args.timeout,
        trace=args.trace,
    )
    kube_faults = hasattr(kube, "fail_next")
    document: dict[str, Any] = {
        "instances": args.instances,
        "faults": suite.results,
        "operator": {},
        "resync_seconds": args.resync,
        "rounds_scale": args.rounds_scale,
        "seed": args.seed,
        "complete": False,
    }
    if not kube_faults:
        document["skipped"] = "KubeStandin.fail_next is missing: no Kubernetes API faults"
    try:
        await operator.start()
        document["setup_s"] = round(await suite.setup(), 3)
        plan = suite.schedule(args.rounds_scale, kube_faults, set(args.only.split(",")) if args.only else None)
        for done, (kind, action) in enumerate(plan, start=1):
            if loop.time() > suite.deadline:
                document["stopped"] = f"--timeout reached after {done - 1} of {len(plan)} rounds"
                break
            round_started = loop.time()
            await action()
            if args.progress:
                print(
                    f"[{loop.time() - began:7.1f}s] {done}/{len(plan)} {kind}: "
                    f"{loop.time() - round_started:.2f}s live={len(suite.live)}",
                    file=sys.stderr,
                    flush=True,
                )
        else:
            document["complete"] = True
    except Exception as error:  # noqa: BLE001 - the figures so far still go out, with the error
        document["error"] = f"{type(error).__name__}: {error}"
    finally:
        code = await operator.stop()
        with contextlib.suppress(Exception):
            await evolution.stop()
        with contextlib.suppress(Exception):
            await kube.stop()
        operator.kill_now()
    document["faults"] = {kind: suite.results[kind] for kind in ROUNDS if kind in suite.results}
    for kind, result in document["faults"].items():
        result["time_to_right_s"] = summary(suite.samples[kind])
        if not result["examples"]:
            del result["examples"]
    document["operator"] = {
        "restarts": operator.starts - 1,
        "rss_mb_max": round(operator.rss_kib_max / 1024, 1),
        "exit_code_at_end": code,
        "log": operator.log_summary(),
    }
    document["live_at_end"] = len(suite.live)
    document["wall_s"] = round(loop.time() - began, 1)
    return document


def clean(document: dict[str, Any]) -> bool:
    counted = ("duplicated", "lost", "orphaned", "stuck_finalizers", "wrong_after_resync", "not_right_after_2_resyncs")
    return document.get("complete", False) and all(
        result.get(key, 0) == 0 for result in document["faults"].values() for key in counted
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--instances", type=int, default=300, help="WhatsAppInstances live during the run (default 300)"
    )
    parser.add_argument(
        "--rounds-scale",
        type=float,
        default=1.0,
        help="multiply every fault kind's number of rounds (at least 1 each; default 1)",
    )
    parser.add_argument(
        "--resync",
        type=float,
        default=30.0,
        help="the operator's WHATSAPP_OPERATOR_RESYNC_SECONDS, also the 'right within' period (default 30)",
    )
    parser.add_argument(
        "--only", metavar="KIND[,KIND]", default=None, help=f"run only these fault kinds ({', '.join(ROUNDS)})"
    )
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the JSON document to FILE")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="no new round starts after this many seconds (default 3600)"
    )
    parser.add_argument(
        "--log-file", default="/tmp/faults-operator.log", help="the operator's log (default %(default)s)"
    )
    parser.add_argument("--progress", action="store_true", help="one line per round on stderr")
    parser.add_argument("--verbose", action="store_true", help="run the operator with --verbose (debug log)")
    parser.add_argument(
        "--trace",
        metavar="FILE",
        default=None,
        help="for every round not right one resync after its fault, append the requests the fake "
        "Evolution received since the round began (time, method, path, status) to FILE",
    )
    args = parser.parse_args(argv)
    if args.instances < 3:
        parser.error("--instances must be at least 3")
    if args.only and set(args.only.split(",")) - set(ROUNDS):
        parser.error(f"--only: unknown kind(s) {sorted(set(args.only.split(',')) - set(ROUNDS))}")

    async def guarded() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        return await run(args)

    document = asyncio.run(guarded())
    text = json.dumps(document, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0 if clean(document) else 1


if __name__ == "__main__":
    sys.exit(main())
