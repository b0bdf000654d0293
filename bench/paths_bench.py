#!/usr/bin/env python3
"""The operator's hot paths, each alone: CPU per received QR event, per Evolution read, per status write.

    python bench/paths_bench.py [--events 3000] [--rounds 3] [--only socketio|evolution|patch]
                                [--loop asyncio|uvloop] [--gap 0.02]

`bench_process.py` measures the whole operator per QR event; this script splits the two paths that
make most of it, so a change to one can be measured in a minute, away from the noise of a full run:

- `socketio_receive`: the fake Evolution API (tests/evolution_fake.py) in a child process emits
  `qrcode.updated` for 50 instances, one every 3 ms (each arrives alone, as the QR codes of
  thousands of waiting instances do); this process follows them with the operator's Socket.IO
  client and parses each as the runtime does (`parse_event`).
- `evolution_read`: against the same fake Evolution API, the operator's EvolutionClient reads
  `connectionState` of those instances, one call after the other (two such reads per instance
  each time the operator resumes).
- `status_patch`: the Kubernetes stand-in (tests/kube_standin.py) in a child process; this process
  sends QR status merge patches of the operator's size with the operator's KubeClient, one after
  the other. `raw_patch` sends the same requests over a bare asyncio protocol (write the bytes,
  wait for the answer's end): what any client must pay on this machine, the kernel included.

Figures are this process's own CPU (user and system, getrusage) per event or request, so the
child's work is not counted. Each round runs in a fresh event loop; compare rounds of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import string
import subprocess
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
INSTANCES = 50
PNG = "data:image/png;base64," + "A" * 900  # the size of a QR code's PNG data URI
EVENT_GAP = 0.003
T = TypeVar("T")


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _per(before: tuple[float, float], after: tuple[float, float], count: int) -> dict[str, float]:
    user, system = (after[0] - before[0]) / count * 1000, (after[1] - before[1]) / count * 1000
    return {"cpu_ms": round(user + system, 3), "user_ms": round(user, 3), "system_ms": round(system, 3)}


# -- children ---------------------------------------------------------------------------------------


async def evolution_child(events: int) -> None:
    import httpx

    import evolution_fake

    fake = evolution_fake.FakeEvolution(qrcode_limit=10**9, seed=1)
    url = await fake.start()
    async with httpx.AsyncClient(base_url=url, headers={"apikey": fake.api_key}) as client:
        for index in range(INSTANCES):
            body = {"instanceName": f"wa-{index}", "integration": "WHATSAPP-BAILEYS", "qrcode": True}
            (await client.post("/instance/create", json=body)).raise_for_status()
    print(url, fake.api_key, flush=True)
    while await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline):
        for index in range(events):
            await fake.issue_qr(f"wa-{index % INSTANCES}")
            await asyncio.sleep(EVENT_GAP)  # the pace is the scenario: one QR event at a time


async def kube_child(kubeconfig: str) -> None:
    import kube_standin
    from instances import instance_body

    kube = kube_standin.KubeStandin()
    await kube.start()
    kube.create("", "v1", "namespaces", {"metadata": {"name": "bench"}})
    for index in range(INSTANCES):
        kube.create("whatsapp-operator.io", "v1alpha1", "whatsappinstances", instance_body(f"wa-{index}"), "bench")
    kube.write_kubeconfig(kubeconfig)
    print("ready", flush=True)
    await asyncio.Event().wait()


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


# -- the paths --------------------------------------------------------------------------------------


async def evolution_read(url: str, api_key: str, calls: int) -> dict[str, Any]:
    from whatsapp_operator.evolution.client import EvolutionClient

    client = EvolutionClient(url, api_key)
    try:
        for index in range(INSTANCES):  # connections opened, URLs known: as in a running operator
            await client.connection_state(f"wa-{index}")
        before = _cpu()
        for index in range(calls):
            await client.connection_state(f"wa-{index % INSTANCES}")
        return _per(before, _cpu(), calls)
    finally:
        await client.aclose()


async def socketio_receive(url: str, api_key: str, child: subprocess.Popen[str], events: int) -> dict[str, Any]:
    from whatsapp_operator.evolution.events import parse_event
    from whatsapp_operator.socketio import SocketIOClient

    seen = 0
    started: tuple[float, float] | None = None
    done = asyncio.Event()

    class Listener:
        def on_connected(self) -> None:
            pass

        def on_disconnected(self, reason: str) -> None:
            pass

        def on_namespace_connected(self, namespace: str) -> None:
            pass

        def on_event(self, namespace: str, name: str, args: list[Any]) -> None:
            nonlocal seen, started
            if name != "qrcode.updated":
                return
            assert parse_event(name, args) is not None
            seen += 1
            if seen == 1:
                started = _cpu()  # from the first event on: the connection's setup is not counted
            elif seen == events:
                done.set()

    client = SocketIOClient(url, query={"apikey": api_key}, listener=Listener())
    running = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.wait_connected(), 30)
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        await asyncio.wait_for(done.wait(), 30 + events * EVENT_GAP * 4)
        assert started is not None
        return _per(started, _cpu(), events - 1)
    finally:
        await client.close()
        running.cancel()


def _status_patches(count: int) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(1)
    codes = ["".join(rng.choices(string.ascii_letters, k=240)) for _ in range(64)]
    return [
        (f"wa-{index % INSTANCES}", {"phase": "AwaitingScan", "qr": {"code": codes[index % 64], "base64": PNG}})
        for index in range(count)
    ]


async def status_patch(kubeconfig: str, count: int, gap: float = 0.0) -> dict[str, Any]:
    from whatsapp_operator.kube.client import KubeClient, login_from_environment

    os.environ["KUBECONFIG"] = kubeconfig
    kube = KubeClient(login_from_environment)
    kube.use_credentials(login_from_environment())
    patches = _status_patches(count)
    try:
        for name, patch in patches[:100]:  # the connection is open and warm before measuring
            await kube.patch_status("bench", name, patch)
        before = _cpu()
        for name, patch in patches:
            await kube.patch_status("bench", name, patch)
            if gap:
                await asyncio.sleep(gap)
        return _per(before, _cpu(), count)
    finally:
        await kube.aclose()


async def raw_patch(kubeconfig: str, count: int, gap: float = 0.0) -> dict[str, Any]:
    import yaml

    from whatsapp_operator.http11 import END, NEED_DATA, ResponseParser

    server = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()

    class Bare(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = ResponseParser()
            self.answered: asyncio.Future[None] = loop.create_future()

        def data_received(self, data: bytes) -> None:
            self.parser.feed(data)
            while (event := self.parser.next_event()) is not NEED_DATA:
                if event is END:
                    self.answered.set_result(None)
                    return

    transport, protocol = await loop.create_connection(Bare, host, int(port))
    messages = []
    for name, patch in _status_patches(count):
        body = json.dumps({"status": patch}, separators=(",", ":")).encode()
        path = f"/apis/whatsapp-operator.io/v1alpha1/namespaces/bench/whatsappinstances/{name}/status"
        head = f"PATCH {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/merge-patch+json\r\n"
        messages.append(head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body)
    try:
        before = _cpu()
        for message in messages:
            protocol.parser, protocol.answered = ResponseParser(), loop.create_future()
            transport.write(message)
            await protocol.answered
            if gap:
                await asyncio.sleep(gap)
        return _per(before, _cpu(), count)
    finally:
        transport.close()


async def wake_only(count: int, gap: float) -> dict[str, Any]:
    """The process asleep `gap` seconds and woken, `count` times, doing nothing else."""
    before = _cpu()
    for _ in range(count):
        await asyncio.sleep(gap)
    return _per(before, _cpu(), count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000, help="QR events and status patches per round (3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each path (3)")
    parser.add_argument(
        "--only", choices=("socketio", "evolution", "patch"), default=None, help="measure one path only"
    )
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="this process's event loop (asyncio)"
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds asleep after each status patch, as between two QR events (0: back to back); "
        "adds the row wake_only: the CPU of the sleep and the wake alone",
    )
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, Any]]] = {
        "socketio_receive": [],
        "evolution_read": [],
        "status_patch": [],
        "raw_patch": [],
    }
    if args.gap:
        rounds["wake_only"] = []

    if args.only in (None, "socketio", "evolution"):
        _evolution_rounds(args, rounds["socketio_receive"], rounds["evolution_read"])
    if args.only in (None, "patch"):
        _patch_rounds(args, rounds["status_patch"], rounds["raw_patch"], rounds.get("wake_only"))
    print(json.dumps({"events_per_round": args.events, "loop": args.loop, "gap": args.gap, "rounds": rounds}, indent=1))


def _run(args: argparse.Namespace, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a measured coroutine on the event loop asked for (the children always use asyncio's)."""
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)


def _evolution_rounds(args: argparse.Namespace, received: list[dict[str, Any]], read: list[dict[str, Any]]) -> None:
    evolution = _child("--evolution-child", str(args.events))
    try:
        assert evolution.stdout is not None
        url, api_key = evolution.stdout.readline().split()
        for _ in range(args.rounds):
            if args.only != "evolution":
                received.append(_run(args, socketio_receive(url, api_key, evolution, args.events)))
            if args.only != "socketio":
                read.append(_run(args, evolution_read(url, api_key, args.events)))
    finally:
        evolution.terminate()


def _patch_rounds(
    args: argparse.Namespace,
    ours: list[dict[str, Any]],
    raw: list[dict[str, Any]],
    woken: list[dict[str, Any]] | None,
) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        kubeconfig = str(Path(workdir) / "kubeconfig")
        kube = _child("--kube-child", kubeconfig)
        try:
            assert kube.stdout is not None and kube.stdout.readline().strip() == "ready"
            for _ in range(args.rounds):
                ours.append(_run(args, status_patch(kubeconfig, args.events, args.gap)))
                raw.append(_run(args, raw_patch(kubeconfig, args.events, args.gap)))
                if woken is not None:
                    woken.append(_run(args, wake_only(args.events, args.gap)))
        finally:
            kube.terminate()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--evolution-child"]:
        asyncio.run(evolution_child(int(sys.argv[2])))
    elif sys.argv[1:2] == ["--kube-child"]:
        asyncio.run(kube_child(sys.argv[2]))
    else:
        main()
