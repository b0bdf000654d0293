"""Every background task comes back after an unexpected exception: logged, counted, started again."""

from __future__ import annotations

import asyncio

from test_metrics import scrape

from whatsapp_operator.engine.supervisor import Supervisor
from whatsapp_operator.kube.leadership import PeeringIdentity

from conftest import run_operator
from kube_standin import KubeStandin

PEERING = "whatsapp-operator"  # the name the ClusterRole grants


class Injected(RuntimeError):
    """The failure a test injects; nothing in the operator expects it."""


def fail_once(original):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise Injected("injected failure")
        return original(*args, **kwargs)

    return wrapper


def state_reads(operator) -> int:
    return len([r for r in operator.evolution.requests if r.path == "/instance/connectionState/shop"])


async def wait_restarts(runtime, task: str, count: int = 1) -> None:
    async def restarted() -> None:
        while runtime.supervisor.restarts.get(task, 0) < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(restarted(), 10)


async def test_supervisor_restarts_a_failing_task_and_counts_it():
    supervisor = Supervisor(initial_delay=0.01, max_delay=0.02)
    runs = []
    done = asyncio.Event()

    async def task():
        runs.append(1)
        if len(runs) < 3:
            raise Injected("boom")
        done.set()

    supervisor.run("job", task, once=True)
    await asyncio.wait_for(done.wait(), 5)
    assert supervisor.restarts == {"job": 2}
    await supervisor.stop()


async def test_a_long_lived_task_that_returns_is_started_again():
    supervisor = Supervisor(initial_delay=0.01, max_delay=0.02)
    runs = []

    async def loop():
        runs.append(1)
        if len(runs) >= 3:
            await asyncio.Event().wait()

    supervisor.run("loop", loop)
    while len(runs) < 3:
        await asyncio.sleep(0.01)
    assert supervisor.restarts == {"loop": 2}
    await supervisor.stop()


async def test_event_stream_comes_back(operator, caplog):
    client = operator.runtime.server.stream.client
    await client.wait_connected()
    client._connection = fail_once(client._connection)
    await operator.evolution.drop_socket_clients()
    await wait_restarts(operator.runtime, "evolution-events")
    await asyncio.wait_for(client.wait_connected(), 10)
    assert "Background task evolution-events failed" in caplog.text
    assert "Injected: injected failure" in caplog.text  # the traceback is logged
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    code = await operator.evolution.issue_qr("shop")
    await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)


async def test_resync_loop_comes_back(operator):
    runtime = operator.runtime
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    original = runtime.resync_all

    async def broken_once():
        runtime.resync_all = original
        raise Injected("injected failure")

    runtime.resync_all = broken_once
    runtime.request_resync()
    await wait_restarts(runtime, "resync")
    reads = state_reads(operator)
    runtime.request_resync()
    await operator.evolution.wait_for_request("GET", "/instance/connectionState/shop", count=reads + 1)


async def test_status_writer_comes_back_and_loses_no_status(operator):
    runtime = operator.runtime
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await runtime.writer.flush(("default", "shop"))
    runtime.writer._write = fail_once(runtime.writer._write)
    code = await operator.evolution.issue_qr("shop")
    await wait_restarts(runtime, "status-writer")
    await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)


async def test_event_poster_comes_back(operator):
    runtime = operator.runtime
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_event("shop", "QRCodeIssued")
    runtime.kube.post_event = fail_once(runtime.kube.post_event)
    await operator.evolution.scan("shop")
    await wait_restarts(runtime, "kubernetes-events")
    await operator.evolution.phone_logout("shop")
    await operator.wait_event("shop", "LoggedOut")


async def test_instance_resync_retry_comes_back(operator):
    runtime = operator.runtime
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    runtime.reconciler.reconcile = fail_once(runtime.reconciler.reconcile)
    reads = state_reads(operator)
    await runtime.resync_all()
    assert runtime.supervisor.restarts["instance-resync"] == 1
    await operator.evolution.wait_for_request("GET", "/instance/connectionState/shop", count=reads + 1)


async def test_leadership_watch_comes_back(evolution):
    async with KubeStandin(peering=True) as kube:
        kube.create(
            "kopf.dev",
            "v1",
            "clusterkopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}},
        )
        async with run_operator(kube, evolution, peering=PeeringIdentity(PEERING, "replica-a", 200)) as running:
            runtime = running.runtime
            await asyncio.wait_for(runtime.leadership.wait_until(True), 10)
            runtime.kube.get_cluster_peering = fail_once(runtime.kube.get_cluster_peering)
            await wait_restarts(runtime, "leadership")
            calls = len([r for r in kube.requests if f"clusterkopfpeerings/{PEERING}" in r.path])
            while len([r for r in kube.requests if f"clusterkopfpeerings/{PEERING}" in r.path]) == calls:
                await asyncio.sleep(0.01)
            assert runtime.leadership.active is True


async def test_restarts_are_exported(operator):
    port = await operator.runtime.metrics.serve("127.0.0.1", 0)
    operator.runtime.supervisor.restarts["resync"] = 2
    samples = await scrape(port)
    assert samples[("whatsapp_operator_task_restarts_total", (("task", "resync"),))] == 2
