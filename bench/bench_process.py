#!/usr/bin/env python3
"""What users see: the operator in its own process, against the stand-in and the fake, with a floor.

    python bench/bench_process.py --instances 1000 [--window 60] [--json] [--profile FILE]
                                  [--qr-interval 20] [--renewal-every 3] [--timeout S] [--log-file PATH]

Three processes on one machine:

  1. this script: the Kubernetes stand-in (tests/kube_standin.py) and the fake Evolution API
     (tests/evolution_fake.py, with Evolution's documented waits, a new QR for every waiting instance
     every --qr-interval seconds on staggered timers, and a socket renewal (`connecting`) before every
     --renewal-every-th QR), both on 127.0.0.1 in one asyncio loop. It sees every write the stand-in
     commits (the moment its store and watches get it) and every event the fake emits. Its heap is
     frozen after each full garbage collection, as the operator's is (whatsapp_operator/heap.py;
     --no-freeze-heap to leave CPython's defaults): with 10,000 instances each full collection of
     the stand-in's and the fake's objects held this loop for seconds, stalls a real apiserver (Go)
     and a real Evolution (Node) do not have, which landed in both the operator's and the floor's
     tails.
  2. the operator as users run it: `python -m whatsapp_operator run --standalone --namespace bench`
     (kubeconfig login, kopf.run), production defaults except WHATSAPP_OPERATOR_RESYNC_SECONDS=--window.
     CPU from /proc/<pid>/stat (utime+stime), RSS from /proc/<pid>/status.
  3. the floor: `bench_process.py --floor-child ...`, which sends bare status merge-PATCHes of the
     operator's own QR patch size to WhatsAppInstances in namespace `floor` (not watched by the
     operator), at the rate of the operator's QR patches, during the waiting window. Each patch carries
     its CLOCK_MONOTONIC send time; process 1 takes its commit time on the same clock.

Phases: create N objects -> all AwaitingScan; the waiting window (from the start of one periodic resync,
seen as its unfiltered GET /instance/fetchInstances, to the start of the next: one resync period holding
exactly one periodic resync) with QR rotation and the floor; operator restart (SIGTERM,
a new QR for every instance while it is down, start, until every status shows a QR issued after the
stop); scan all -> all Connected; the idle window (again one resync period). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench_instances import Histogram, histogram_quantiles, machine

from whatsapp_operator.heap import HeapFreezer

ROOT = Path(__file__).resolve().parent.parent
GROUP, VERSION, PLURAL = "whatsapp-operator.io", "v1alpha1", "whatsappinstances"
NAMESPACE = "bench"  # the operator watches only this namespace
FLOOR_NAMESPACE = "floor"  # the floor's objects: same kind, not watched by the operator
MERGE_PATCH = "application/merge-patch+json"
CODE_PLACEHOLDER = "@@FLOOR-CODE@@"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -------------------------------------------------------------------------------------------------
# process 3: the floor
# -------------------------------------------------------------------------------------------------


async def floor_child(args: argparse.Namespace) -> int:
    """Bare status merge-PATCHes at a steady rate until stdin closes; prints a JSON summary."""
    import aiohttp

    template = Path(args.floor_template).read_text(encoding="utf-8")
    prefix, suffix = template.split(json.dumps(CODE_PLACEHOLDER), 1)
    names = [f"floor-{i:05d}" for i in range(args.floor_objects)]
    base = f"{args.floor_child}/apis/{GROUP}/{VERSION}/namespaces/{FLOOR_NAMESPACE}/{PLURAL}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()  # EOF: the parent closed the pipe
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    slots = asyncio.Semaphore(16)  # as many in flight as the operator's status writers
    sent = errors = 0
    tasks: set[asyncio.Task[None]] = set()
    cpu0 = time.process_time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:

        async def one(name: str, body: str) -> None:
            nonlocal errors
            async with slots:
                try:
                    async with session.patch(
                        f"{base}/{name}/status", data=body, headers={"Content-Type": MERGE_PATCH}
                    ) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1

        interval = 1.0 / args.floor_rate
        next_at = time.monotonic()
        seq = 0
        while not stop.is_set():
            seq += 1
            now = time.monotonic()
            token = f"floor:{seq}:{now:.6f}:"
            code = token + "x" * max(0, args.floor_code_len - len(token))
            body = prefix + json.dumps(code) + suffix
            task = asyncio.create_task(one(names[seq % len(names)], body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
    watcher.cancel()
    summary = {"sent": sent, "errors": errors, "cpu_seconds": round(time.process_time() - cpu0, 3)}
    print(json.dumps(summary), flush=True)
    return 0


# -------------------------------------------------------------------------------------------------
# process 2: the operator
# -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when this script dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def operator_version() -> str:
    """HEAD, plus "+dirty" when operator/ has uncommitted changes: what a starting operator process loads."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "operator"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


class OperatorProcess:
    def __init__(
        self, kubeconfig: Path, url: str, api_key: str, resync: float, log_path: Path, extra: Sequence[str] = ()
    ) -> None:
        self.kubeconfig, self.url, self.api_key, self.resync = kubeconfig, url, api_key, resync
        self.extra = list(extra)  # more options for `whatsapp-operator run`
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.versions: list[str] = []  # the operator code each start ran (others may commit meanwhile)
        self.metrics_port = free_port()
        log_path.write_text("")

    async def event_to_status(self) -> Histogram | None:
        """The operator's own histogram: an event's arrival in the operator to its accepted patch."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            text = (await asyncio.wait_for(reader.read(), 10)).decode("utf-8", "replace")
            writer.close()
        except (OSError, TimeoutError):
            return None
        buckets: list[tuple[float, float]] = []
        total = count = 0.0
        for line in text.splitlines():
            if line.startswith("whatsapp_operator_event_to_status_seconds_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
            elif line.startswith("whatsapp_operator_event_to_status_seconds_sum"):
                total = float(line.rsplit(" ", 1)[1])
            elif line.startswith("whatsapp_operator_event_to_status_seconds_count"):
                count = float(line.rsplit(" ", 1)[1])
        return buckets, total, count

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self, profile: str | None) -> list[str]:
        wrapper = ["-m", "cProfile", "-o", profile] if profile else []
        run = ["-m", "whatsapp_operator", "run", "--standalone", "--namespace", NAMESPACE, *self.extra]
        return [sys.executable, *wrapper, *run]

    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("EVOLUTION_", "KUBERNETES_", "WHATSAPP_OPERATOR_"))
        }
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            EVOLUTION_API_URL=self.url,
            EVOLUTION_API_KEY=self.api_key,
            EVOLUTION_WEBSOCKET_MODE="global",
            WHATSAPP_OPERATOR_RESYNC_SECONDS=str(self.resync),
            WHATSAPP_OPERATOR_METRICS_PORT=str(self.metrics_port),
            PYTHONUNBUFFERED="1",
        )
        return env

    async def start(self, profile: str | None = None) -> float:
        self.starts += 1
        self.versions.append(operator_version())
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"===== bench_process.py: operator start #{self.starts}: {' '.join(self.command(profile))}\n")
            log.flush()
            started = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                *self.command(profile),
                env=self.env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        return started

    async def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, up to `timeout` for a clean exit (cProfile writes its file then), then SIGKILL."""
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout=timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.wait_for(process.wait(), timeout=10)
            return None

    def kill_now(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        return proc_rss_mb(self.pid)

    def log_summary(self) -> dict[str, Any]:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        return {
            "file": str(self.log_path),
            "lines": len(lines),
            "warning_lines": sum(1 for line in lines if " WARNING " in line),
            "error_lines": sum(1 for line in lines if " ERROR " in line),
            "tracebacks": text.count("Traceback (most recent call last)"),
        }


# -------------------------------------------------------------------------------------------------
# process 1: what the stand-in and the fake see
# -------------------------------------------------------------------------------------------------


def percentiles_ms(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "p99": None}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]

    return {
        "n": len(ordered),
        "p50": round(pick(0.50) * 1000, 2),
        "p90": round(pick(0.90) * 1000, 2),
        "p99": round(pick(0.99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
    }


class Observer:
    """Fed by the stand-in's commits, the fake's requests and the fake's emits (all in this loop)."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)
        self.total = len(names)
        # statuses of the managed objects
        self.phase: dict[str, str | None] = {}
        self.awaiting: set[str] = set()
        self.connected: set[str] = set()
        self.first_awaiting_at: float | None = None
        self.all_awaiting_at: float | None = None
        # QR codes emitted recently per instance: (code, monotonic emit time)
        self.recent_qr: dict[str, collections.deque[tuple[str, float]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=16)
        )
        self.qr_events = 0
        self.renewals = 0  # connection.update connecting while the instance waits for a scan
        self.emits: collections.Counter[str] = collections.Counter()
        # (commit time, latency) samples
        self.qr_latency: list[tuple[float, float]] = []
        self.floor_latency: list[tuple[float, float]] = []
        self.qr_shown = 0
        # after a restart: the instances whose status shows a QR emitted after `fresh_since`
        self.fresh_since: float | None = None
        self.fresh: set[str] = set()
        # requests
        self.evolution_requests: collections.Counter[str] = collections.Counter()
        self.kube_requests: collections.Counter[str] = collections.Counter()
        self.status_patches = 0  # PATCH .../whatsappinstances/<managed>/status
        self.qr_patch_body: Any = None
        self.watching = False
        # periodic resyncs: when each began (its unfiltered fetchInstances)
        self.ticks: list[float] = []
        self.on_tick: Callable[[], None] = lambda: None  # called as each periodic resync begins

    # -- the stand-in ---------------------------------------------------------------------------

    def commit(self, namespace: str, name: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        now = time.monotonic()
        status = obj.get("status") or {}
        code = (status.get("qr") or {}).get("code")
        old_code = ((((old or {}).get("status") or {}).get("qr")) or {}).get("code")
        if namespace == FLOOR_NAMESPACE:
            if isinstance(code, str) and code != old_code and code.startswith("floor:"):
                self.floor_latency.append((now, now - float(code.split(":")[2])))
            return
        if namespace != NAMESPACE or name not in self.names:
            return
        phase = status.get("phase")
        if phase != self.phase.get(name):
            self.phase[name] = phase
            (self.awaiting.add if phase == "AwaitingScan" else self.awaiting.discard)(name)
            (self.connected.add if phase == "Connected" else self.connected.discard)(name)
            if phase == "AwaitingScan":
                if self.first_awaiting_at is None:
                    self.first_awaiting_at = now
                if self.all_awaiting_at is None and len(self.awaiting) == self.total:
                    self.all_awaiting_at = now
        if isinstance(code, str) and code != old_code:
            for emitted_code, emitted_at in self.recent_qr.get(name, ()):
                if emitted_code == code:
                    self.qr_latency.append((now, now - emitted_at))
                    self.qr_shown += 1
                    if self.fresh_since is not None and emitted_at >= self.fresh_since:
                        self.fresh.add(name)
                    break

    # -- the fake -------------------------------------------------------------------------------

    def emitted(self, envelope: dict[str, Any]) -> None:
        event = envelope.get("event", "?")
        self.emits[event] += 1
        name = envelope.get("instance")
        data = envelope.get("data") or {}
        if event == "qrcode.updated" and isinstance(data.get("qrcode"), dict) and name in self.names:
            self.recent_qr[name].append((data["qrcode"]["code"], time.monotonic()))
            self.qr_events += 1
        elif (
            event == "connection.update"
            and name in self.names
            and data.get("state") == "connecting"
            and self.phase.get(name) == "AwaitingScan"
        ):
            self.renewals += 1

    def evolution_request(self, method: str, path: str, query: dict[str, str]) -> None:
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] == "socket.io":
            key = "socket.io"
        else:
            key = f"{method} /" + "/".join(parts[:2])
        self.evolution_requests[key] += 1
        if key == "GET /instance/fetchInstances" and not query:
            # The periodic resync starts with one unfiltered list per server (then reads one by one
            # only what the list cannot vouch for); nothing else lists every instance.
            now = time.monotonic()
            self.ticks.append(now)
            self.on_tick()

    def kube_request(self, request: Any) -> None:
        resource = request.resource or request.path
        if request.subresource:
            resource += "/" + request.subresource
        where = f" ({request.namespace})" if request.namespace in (NAMESPACE, FLOOR_NAMESPACE) else ""
        self.kube_requests[f"{request.verb} {resource}{where}"] += 1
        if request.verb == "watch" and request.resource == PLURAL:
            self.watching = True
        if (
            request.verb == "patch"
            and request.resource == PLURAL
            and request.subresource == "status"
            and request.namespace == NAMESPACE
        ):
            self.status_patches += 1
            body = request.body
            if isinstance(body, dict) and isinstance(((body.get("status") or {}).get("qr") or {}).get("code"), str):
                self.qr_patch_body = body


class _Sink(list):  # type: ignore[type-arg]
    """Stands in for a fake's request or emit log: hands each entry to a callback, keeps nothing."""

    def __init__(self, callback: Callable[[Any], None]) -> None:
        super().__init__()
        self.callback = callback

    def append(self, item: Any) -> None:
        self.callback(item)


def observed_standin(observer: Observer, kube_standin: Any) -> Any:
    class ObservedStandin(kube_standin.KubeStandin):  # type: ignore[misc, name-defined]
        def _commit(self, rt: Any, key: tuple[str, str], obj: Any, old: Any, type_: str) -> Any:
            result = super()._commit(rt, key, obj, old, type_)
            if rt.plural == PLURAL and type_ != "DELETED":
                observer.commit(key[0], key[1], obj, old)
            return result

    return ObservedStandin()


# -------------------------------------------------------------------------------------------------
# the run
# -------------------------------------------------------------------------------------------------


class Timeout(Exception):
    pass


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        import evolution_fake
        import kube_standin

        self.args = args
        self.n = args.instances
        self.names = [f"wa-{i:05d}" for i in range(self.n)]
        self.observer = Observer(self.names)
        self.kube = observed_standin(self.observer, kube_standin)
        self.kube.requests = _Sink(self.observer.kube_request)
        self.evolution = evolution_fake.FakeEvolution(
            documented_waits=True,
            qr_interval=args.qr_interval,
            qr_renewal_every=args.renewal_every or None,
            qrcode_limit=1_000_000,  # no instance reaches QRCODE_LIMIT within the run
            seed=1,
        )
        self.evolution.requests = _Sink(lambda r: self.observer.evolution_request(r.method, r.path, r.query))
        self.evolution.emitted = _Sink(lambda e: self.observer.emitted(e[1]))
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-process-"))
        self.timeout = args.timeout or (120.0 + 0.6 * self.n)
        self.result: dict[str, Any] = {
            "instances": self.n,
            "machine": machine(),
            "settings": {
                "window_s": args.window,
                "operator_resync_s": args.window,
                "qr_interval_s": args.qr_interval,
                "socket_renewal_every_qr": args.renewal_every,
                "evolution_documented_waits": True,
                "process_1_heap_frozen": not args.no_freeze_heap,
                "operator_command": "",
            },
            "figures": {},
            "complete": False,
        }
        self.operator: OperatorProcess | None = None
        self.floor: asyncio.subprocess.Process | None = None
        self.tick_snaps: list[dict[str, Any]] = []
        self.progress: Callable[[], str] = lambda: "-"
        self.observer.on_tick = lambda: self.tick_snaps.append(self.snapshot())

    # -- waiting --------------------------------------------------------------------------------

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float | None = None) -> float:
        """Re-checked after every write to the stand-in and at least every 0.2 s; returns monotonic time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"{what} ({self.progress()})")
            with contextlib.suppress(AssertionError):
                await self.kube.wait_until(predicate, timeout=min(0.2, remaining))
        return time.monotonic()

    # -- the phases -----------------------------------------------------------------------------

    def create_objects(self) -> None:
        for name in self.names:
            self.create_instance(name, NAMESPACE)

    def create_floor_objects(self, count: int) -> None:
        for i in range(count):
            self.create_instance(f"floor-{i:05d}", FLOOR_NAMESPACE, labels={"bench": "floor"})

    def create_instance(self, name: str, namespace: str, labels: dict[str, str] | None = None) -> None:
        from instances import instance_body  # tests/, on the path since __init__

        spec = {"instanceName": name, "integration": "WHATSAPP-BAILEYS"}
        self.kube.create(GROUP, VERSION, PLURAL, instance_body(name, spec, labels=labels or None), namespace=namespace)

    async def start_floor(self, rate: float, objects: int) -> None:
        body = json.loads(json.dumps(self.observer.qr_patch_body))
        code = body["status"]["qr"]["code"]
        body["status"]["qr"]["code"] = CODE_PLACEHOLDER
        template = self.workdir / "floor-template.json"
        template.write_text(json.dumps(body), encoding="utf-8")
        self.result["settings"]["status_qr_patch_bytes"] = len(json.dumps(self.observer.qr_patch_body))
        self.result["settings"]["floor"] = {"rate_per_s": round(rate, 2), "objects": objects}
        self.floor = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--floor-child",
            self.kube.url,
            "--floor-template",
            str(template),
            "--floor-objects",
            str(objects),
            "--floor-rate",
            str(rate),
            "--floor-code-len",
            str(len(code)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )

    async def stop_floor(self) -> dict[str, Any]:
        if self.floor is None:
            return {}
        assert self.floor.stdin is not None
        self.floor.stdin.close()
        out, _ = await asyncio.wait_for(self.floor.communicate(), timeout=30)
        self.floor = None
        return json.loads(out.decode().strip().splitlines()[-1])

    async def run(self) -> dict[str, Any]:
        figures = self.result["figures"]
        await self.kube.start()
        await self.evolution.start()
        kubeconfig = self.workdir / "kubeconfig"
        self.kube.write_kubeconfig(kubeconfig)
        for namespace in (NAMESPACE, FLOOR_NAMESPACE):
            self.kube.create("", "v1", "namespaces", {"metadata": {"name": namespace}})
        profile = self.args.profile
        self.operator = operator = OperatorProcess(
            kubeconfig,
            self.evolution.url,
            self.evolution.api_key,
            float(self.args.window),
            Path(self.args.log_file),
            ["--event-loop", self.args.event_loop],
        )
        self.result["settings"]["operator_command"] = " ".join(operator.command(profile)).replace(
            sys.executable, "python"
        )
        began = time.monotonic()
        try:
            await operator.start(profile)
            await self.wait(lambda: self.observer.watching, "the operator's watch", 60)
            await asyncio.sleep(1.0)  # kopf lists, then watches: let it settle

            # 3. N new instances -> first / all AwaitingScan -----------------------------------------
            self.log(f"creating {self.n} objects")
            self.create_floor_objects(min(self.n, 1000))
            created = time.monotonic()
            self.create_objects()
            self.progress = lambda: f"{len(self.observer.awaiting)}/{self.n} AwaitingScan"
            await self.wait(lambda: self.observer.all_awaiting_at is not None, "all AwaitingScan")
            assert self.observer.first_awaiting_at is not None and self.observer.all_awaiting_at is not None
            figures["create"] = {
                "first_awaiting_scan_s": round(self.observer.first_awaiting_at - created, 2),
                "all_awaiting_scan_s": round(self.observer.all_awaiting_at - created, 2),
                "evolution_requests": dict(sorted(self.observer.evolution_requests.items())),
            }
            figures["rss_mb"] = {"after_create": round(operator.rss_mb(), 1)}
            self.log(f"all AwaitingScan after {figures['create']['all_awaiting_scan_s']} s")

            # 1, 2, 4, 5. the waiting window, with the floor -----------------------------------------
            await self.start_floor(self.n / self.args.qr_interval, min(self.n, 1000))
            figures["waiting_window"] = await self.window(time.monotonic(), "waiting", with_qr=True)
            floor = await self.stop_floor()
            figures["waiting_window"]["floor_process"] = floor
            self.log(f"waiting window: {json.dumps(figures['waiting_window']['qr_event_to_status_ms'])}")

            # 7. operator restart -> every status right again ------------------------------------------
            figures["rss_mb"]["before_restart"] = round(operator.rss_mb(), 1)
            figures["operator_restart"] = await self.restart(profile)
            self.log(f"restart: {figures['operator_restart']}")

            # scan everything, then the idle window ----------------------------------------------------
            scan_started = time.monotonic()
            for name in self.names:
                await self.evolution.scan(name)
            self.progress = lambda: f"{len(self.observer.connected)}/{self.n} Connected"
            await self.wait(lambda: len(self.observer.connected) == self.n, "all Connected")
            figures["scan_all_connected_s"] = round(time.monotonic() - scan_started, 2)
            figures["idle_window"] = await self.window(time.monotonic(), "idle", with_qr=False)
            figures["rss_mb"]["end"] = round(operator.rss_mb(), 1)
            self.result["complete"] = True
        except Timeout as error:
            self.result["error"] = f"timed out waiting for {error}"
        except Exception as error:  # noqa: BLE001 - the figures so far still go out
            self.result["error"] = f"{type(error).__name__}: {error}"
        finally:
            with contextlib.suppress(Exception):
                await self.stop_floor()
            self.result["operator_exit_code"] = await operator.stop()
            operator.kill_now()
            self.result["operator_log"] = operator.log_summary()
            self.result["operator_versions"] = operator.versions
            with contextlib.suppress(Exception):
                await self.evolution.stop()
            with contextlib.suppress(Exception):
                await self.kube.stop()
        self.result["wall_s"] = round(time.monotonic() - began, 1)
        self.result["totals"] = {
            "kubernetes_requests": dict(sorted(self.observer.kube_requests.items())),
            "evolution_requests": dict(sorted(self.observer.evolution_requests.items())),
            "evolution_emits": dict(sorted(self.observer.emits.items())),
            "periodic_resyncs_seen": len(self.observer.ticks),
        }
        self.result["figures"] = figures
        return self.result

    def snapshot(self) -> dict[str, Any]:
        """Everything a window needs, taken at the end of each periodic resync (synchronously, on the
        fake's request that completes it)."""
        obs = self.observer
        return {
            "at": obs.ticks[-1] if obs.ticks else time.monotonic(),
            "cpu": self.operator.cpu() if self.operator is not None and self.operator.process else 0.0,
            "qr": obs.qr_events,
            "renewals": obs.renewals,
            "patches": obs.status_patches,
            "rest": collections.Counter(obs.evolution_requests),
            "kube": collections.Counter(obs.kube_requests),
        }

    async def window(self, after: float, label: str, *, with_qr: bool) -> dict[str, Any]:
        obs = self.observer
        self.log(f"{label}: waiting for a periodic resync to end")
        first = len(self.tick_snaps)
        limit = 3 * self.args.window + self.timeout
        await self.wait(
            lambda: any(s["at"] > after for s in self.tick_snaps[first:]), f"{label}: a periodic resync", limit
        )
        index = next(i for i in range(first, len(self.tick_snaps)) if self.tick_snaps[i]["at"] > after)
        self.log(f"{label}: window open")
        assert self.operator is not None
        inside_before = await self.operator.event_to_status()  # read just after the window opened
        await self.wait(lambda: len(self.tick_snaps) > index + 1, f"{label}: the next periodic resync", limit)
        inside_after = await self.operator.event_to_status()  # and just after it closed
        snap, end_snap = self.tick_snaps[index], self.tick_snaps[index + 1]
        start, end = snap["at"], end_snap["at"]
        seconds = end - start

        def delta(key: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
            before, after_ = snap[key], end_snap[key]
            return {
                k: after_[k] - before.get(k, 0)
                for k in sorted(after_)
                if after_[k] - before.get(k, 0) and k not in skip
            }

        rest = delta("rest", ("socket.io",))
        rest_total = sum(rest.values())
        patches = end_snap["patches"] - snap["patches"]
        qr = end_snap["qr"] - snap["qr"]
        cpu = end_snap["cpu"] - snap["cpu"]
        hours = seconds / 3600
        result: dict[str, Any] = {
            "seconds": round(seconds, 2),
            "periodic_resyncs_in_window": 1,
            "operator_cpu_s": round(cpu, 3),
            "operator_cpu_percent": round(100 * cpu / seconds, 2),
            "status_writes": patches,
            "status_writes_per_instance_hour": round(patches / self.n / hours, 2),
            "evolution_rest_calls": rest,
            "evolution_rest_calls_per_instance_hour": round(rest_total / self.n / hours, 2),
            "kubernetes_requests": delta("kube"),
        }
        if with_qr:
            lat = [latency for at, latency in obs.qr_latency if start <= at <= end]
            floor = [latency for at, latency in obs.floor_latency if start <= at <= end]
            qr_lat, floor_lat = percentiles_ms(lat), percentiles_ms(floor)
            result.update(
                qr_events=qr,
                socket_renewals=end_snap["renewals"] - snap["renewals"],
                qr_event_to_status_ms=qr_lat,
                floor_send_to_store_ms=floor_lat,
                ratio_p50=_ratio(qr_lat.get("p50"), floor_lat.get("p50")),
                ratio_p99=_ratio(qr_lat.get("p99"), floor_lat.get("p99")),
                operator_cpu_ms_per_qr_event=round(1000 * cpu / qr, 3) if qr else None,
                # The part of the QR latency spent inside the operator (arrival of the frame to the
                # accepted PATCH), from its own histogram: bucket-interpolated, in ms.
                inside_operator_ms=_inside_ms(inside_before, inside_after),
                status_writes_per_qr_event=round(patches / qr, 3) if qr else None,
            )
        return result

    async def restart(self, profile: str | None) -> dict[str, Any]:
        assert self.operator is not None
        obs = self.observer
        stopped_at = time.monotonic()
        code = await self.operator.stop()
        exited = time.monotonic()
        obs.fresh_since, obs.fresh = time.monotonic(), set()
        for name in self.names:
            await self.evolution.issue_qr(name)
        process_1_cpu = time.process_time()
        started = await self.operator.start(f"{profile}.after-restart" if profile else None)
        await self.wait(
            lambda: len(obs.fresh) == self.n, "every status to show a QR issued while the operator was down"
        )
        done = time.monotonic()
        process_1_cpu = time.process_time() - process_1_cpu
        return {
            # Which side the restart waits for: a process whose CPU seconds come near the wall time
            # (one core each: both are single event loops) is the one that sets the pace.
            "operator_cpu_s": round(self.operator.cpu(), 2),
            "process_1_cpu_s": round(process_1_cpu, 2),
            "stop_s": round(exited - stopped_at, 2),
            "exit_code": code,
            "new_qr_issue_s": round(started - exited, 2),
            "from_start_to_all_right_s": round(done - started, 2),
            "from_sigterm_to_all_right_s": round(done - stopped_at, 2),
        }

    def log(self, text: str) -> None:
        if not self.args.quiet:
            print(f"[bench_process] {text}", file=sys.stderr, flush=True)


def _inside_ms(before: Histogram | None, after: Histogram | None) -> dict[str, Any] | None:
    if before is None or after is None or len(before[0]) != len(after[0]):
        return None
    buckets = [(le, n - n0) for (le, n), (_, n0) in zip(after[0], before[0], strict=True)]
    quantiles = histogram_quantiles((buckets, after[1] - before[1], after[2] - before[2]))
    return {key: (round(value * 1000, 2) if key != "n" else value) for key, value in quantiles.items()}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


# -------------------------------------------------------------------------------------------------
# output
# -------------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    f = result["figures"]
    s = result["settings"]
    lines = [
        (
            f"whatsapp-operator, process bench: {result['instances']} instances, "
            f"{'complete' if result['complete'] else 'INCOMPLETE: ' + str(result.get('error'))}, "
            f"wall {result['wall_s']} s"
        ),
        (
            f"operator: {s['operator_command']}; resync {s['operator_resync_s']} s; QR every {s['qr_interval_s']} s, "
            f"renewal every {s['socket_renewal_every_qr']} QRs; QR status patch {s.get('status_qr_patch_bytes')} B"
        ),
    ]
    rows: list[tuple[str, str]] = []
    w = f.get("waiting_window")
    if w:
        q, fl = w["qr_event_to_status_ms"], w["floor_send_to_store_ms"]
        rows += [
            (
                "1. QR event -> status seen (ms)",
                (
                    f"p50 {q['p50']} p99 {q['p99']} (n={q['n']}); floor p50 {fl['p50']} p99 {fl['p99']} "
                    f"(n={fl['n']}); ratio p50 {w['ratio_p50']} p99 {w['ratio_p99']}; inside the operator "
                    f"{w.get('inside_operator_ms')}"
                ),
            ),
            (
                "2. operator CPU per QR event (ms)",
                (
                    f"{w['operator_cpu_ms_per_qr_event']} ({w['operator_cpu_s']} s CPU / {w['qr_events']} QR events "
                    f"over {w['seconds']} s, {w['periodic_resyncs_in_window']} resync)"
                ),
            ),
        ]
    c = f.get("create")
    if c:
        rows.append(
            ("3. N new -> AwaitingScan (s)", f"first {c['first_awaiting_scan_s']}, all {c['all_awaiting_scan_s']}")
        )
    i = f.get("idle_window")
    if w:
        rows.append(
            (
                "4. status writes",
                f"{w['status_writes_per_qr_event']} per QR event (waiting); "
                + (f"{i['status_writes']} in the idle window ({i['seconds']} s)" if i else "idle: -"),
            )
        )
        rows.append(
            (
                "5. REST calls / instance-hour",
                f"waiting {w['evolution_rest_calls_per_instance_hour']}; "
                + (f"connected+idle {i['evolution_rest_calls_per_instance_hour']}" if i else "idle: -"),
            )
        )
    r = f.get("rss_mb", {})
    rows.append(("6. operator RSS (MB)", f"after create {r.get('after_create')}, end {r.get('end')}"))
    o = f.get("operator_restart")
    if o:
        rows.append(
            (
                "7. restart -> all right (s)",
                (
                    f"{o['from_sigterm_to_all_right_s']} from SIGTERM ({o['from_start_to_all_right_s']} from the new "
                    f"process's start; stop took {o['stop_s']})"
                ),
            )
        )
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines) + "\n"


def profile_summary(path: str, top: int = 20) -> dict[str, Any]:
    """The operator's cProfile output: total, top functions by own time and by cumulative time."""
    import pstats

    stats = pstats.Stats(path)
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in rows.values())

    def name(key: tuple[str, int, str]) -> str:
        filename, line, func = key
        for marker in ("site-packages/", "/operator/", "/lib/python3"):
            if marker in filename:
                filename = filename.split(marker, 1)[1]
                break
        return f"{filename}:{line}({func})"

    def table(index: int) -> list[dict[str, Any]]:
        ordered = sorted(rows.items(), key=lambda item: item[1][index], reverse=True)[:top]
        return [
            {"function": name(key), "ncalls": row[1], "tottime_s": round(row[2], 3), "cumtime_s": round(row[3], 3)}
            for key, row in ordered
        ]

    return {"file": path, "total_tottime_s": round(total, 2), "by_tottime": table(2), "by_cumtime": table(3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000, help="WhatsAppInstances (default 1000)")
    parser.add_argument(
        "--window",
        type=float,
        default=60.0,
        help="the operator's resync period; each window runs from the start of one periodic resync to the "
        "start of the next (default 60, at least 10)",
    )
    parser.add_argument("--qr-interval", type=float, default=20.0, help="seconds between QRs per instance (20)")
    parser.add_argument(
        "--renewal-every", type=int, default=3, help="a socket renewal (connecting) before every K-th QR (3; 0: none)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON document")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per wait (default 120 + 0.6 x N)")
    parser.add_argument("--profile", metavar="FILE", default=None, help="run the operator under cProfile -o FILE")
    parser.add_argument("--log-file", default="/tmp/bench_process-operator.log", help="the operator's log")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--event-loop", choices=("uvloop", "asyncio"), default="uvloop", help="the operator's event loop (uvloop)"
    )
    parser.add_argument(
        "--no-freeze-heap", action="store_true", help="process 1 keeps CPython's garbage collection defaults"
    )
    # the floor child (process 3)
    parser.add_argument("--floor-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--floor-template", help=argparse.SUPPRESS)
    parser.add_argument("--floor-objects", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--floor-rate", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--floor-code-len", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_child:
        return asyncio.run(floor_child(args))
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    if args.window < 10:
        parser.error("--window must be at least 10 (the operator's smallest resync period)")
    bench = Bench(args)

    async def guarded() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        freezer = None if args.no_freeze_heap else asyncio.create_task(HeapFreezer().run())
        try:
            return await bench.run()
        finally:
            if freezer is not None:
                freezer.cancel()

    try:
        result = asyncio.run(guarded())
    finally:
        if bench.operator is not None:
            bench.operator.kill_now()
    if args.profile and Path(args.profile).exists():
        result["profile"] = profile_summary(args.profile)
    print(json.dumps(result, indent=2))
    if not args.json:
        print()
        print(render(result), end="")
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
