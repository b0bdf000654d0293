"""A small version of each fault of bench/faults.py: the work completes and the status is right after it.

Evolution restarts and Socket.IO drops come from the fake (tests/evolution_fake.py); failures of the
Kubernetes API from the stand-in's fail_next() (answered with a Status, no side effect); operator
crashes are a SIGKILL of the real command (`python -m whatsapp_operator run`) in a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from whatsapp_operator.names import FINALIZER, GROUP, PLURAL, VERSION

from conftest import NAMESPACE, condition
from evolution_fake import FakeEvolution
from instances import instance_body
from kube_standin import KubeStandin

STATUS_PATH = re.compile(rf"^/apis/{re.escape(GROUP)}/{VERSION}/namespaces/[^/]+/{PLURAL}/[^/]+/status$")
OBJECT_PATH = re.compile(rf"^/apis/{re.escape(GROUP)}/{VERSION}/namespaces/[^/]+/{PLURAL}/[^/]+$")
EVENTS_PATH = re.compile(r"^/api/v1/namespaces/[^/]+/events$")
JSON_PATCH = "application/json-patch+json"


def creates_answered(evolution: FakeEvolution, name: str, status: int = 201) -> int:
    return sum(
        1
        for r in evolution.requests
        if r.method == "POST"
        and r.path == "/instance/create"
        and isinstance(r.json, dict)
        and r.json.get("instanceName") == name
        and r.status == status
    )


def shows_current_qr(evolution: FakeEvolution, name: str):
    """AwaitingScan with the QR the fake shows now, Synced=True."""

    def check(status: dict[str, Any]) -> bool:
        inst = evolution.instances.get(name)
        synced = condition(status, "Synced")
        return (
            inst is not None
            and status.get("phase") == "AwaitingScan"
            and (status.get("qr") or {}).get("code") == inst.cached_qr.get("code")
            and synced is not None
            and synced["status"] == "True"
        )

    return check


class Held:
    """Holds the fake's calls of one REST handler until `release()`: before they run (`answer=True`),
    or after they ran but before they answer (`answer=False`). `entered` is set once one arrived."""

    def __init__(
        self, evolution: FakeEvolution, handler: str, monkeypatch: pytest.MonkeyPatch, *, answer: bool = True
    ) -> None:
        self.entered = asyncio.Event()
        self._gate = asyncio.Event()
        original = getattr(evolution, handler)

        async def held(*args: Any) -> Any:
            if answer:
                self.entered.set()
                await self._gate.wait()
                return await original(*args)
            result = await original(*args)
            self.entered.set()
            await self._gate.wait()
            return result

        monkeypatch.setattr(evolution, handler, held)

    def release(self) -> None:
        self._gate.set()


# -- Evolution -----------------------------------------------------------------------------------


async def test_evolution_restart_during_a_create_neither_duplicates_nor_loses_it(operator, monkeypatch):
    evolution = operator.evolution
    creates = Held(evolution, "_h_create", monkeypatch, answer=False)
    operator.create("shop", {"instanceName": "shop"})
    await asyncio.wait_for(creates.entered.wait(), timeout=10)
    created = evolution.instances["shop"].id  # Evolution has it; the answer is on its way
    await evolution.restart()  # ... and never arrives
    creates.release()
    await evolution.wait_until_loaded()
    status = await operator.wait_status("shop", shows_current_qr(evolution, "shop"), timeout=15)
    assert evolution.instances["shop"].id == created == status["instanceId"]
    assert creates_answered(evolution, "shop") <= 1  # a second create would be refused (name in use) or be a duplicate
    assert "Recreated" not in operator.event_reasons("shop")
    assert "unreachable" not in status["message"].lower()


async def test_socketio_drop_then_a_missed_qr_is_read_by_the_resync(operator):
    evolution = operator.evolution
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_status("shop", shows_current_qr(evolution, "shop"))
    connects = operator.runtime.server.stream.client.stats.connects
    await evolution.drop_socket_clients()
    code = await evolution.issue_qr("shop")  # nobody listens: Evolution replays nothing
    status = await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)
    assert operator.runtime.server.stream.client.stats.connects == connects + 1
    assert condition(status, "Synced")["status"] == "True"
    assert creates_answered(evolution, "shop") == 1


async def test_a_remove_instance_event_without_a_removal_leaves_the_instance_id_right(operator, monkeypatch):
    # Evolution sends remove.instance before its cleanup; one that comes late (the instance was
    # created again meanwhile) or is not followed by a removal leaves the instance where it was.
    from whatsapp_operator.engine import reconciliation

    monkeypatch.setattr(reconciliation, "_REMOVAL_WAIT_SECONDS", 0.5)  # how long the name may stay taken
    evolution = operator.evolution
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_status("shop", shows_current_qr(evolution, "shop"))
    await evolution.emit_event("shop", "remove.instance", None)
    await operator.wait_phase("shop", "Pending")
    status = await operator.wait_status("shop", lambda s: s.get("phase") == "AwaitingScan" and s.get("instanceId"))
    assert status["instanceId"] == evolution.instances["shop"].id
    assert creates_answered(evolution, "shop") == 1


async def test_a_removal_already_repaired_by_a_resync_does_not_stall_later_resyncs(operator):
    evolution = operator.evolution
    for name in ("shop", "other"):
        operator.create(name, {"instanceName": name})
        await operator.wait_status(name, shows_current_qr(evolution, name))
    # Evolution loses "shop" while a resync of it is under way (as after an Evolution restart):
    # the resync holds the instance's lock when the remove.instance event arrives. The lock is
    # taken here only to make that order certain.
    tracker = operator.runtime.registry.get((NAMESPACE, "shop"))
    await tracker.lock.acquire()
    resync = asyncio.create_task(operator.runtime.reconcile(tracker))
    await asyncio.sleep(0)  # the resync now waits for the lock, first in line
    await evolution.remove_out_of_band("shop")
    await operator.wait_phase("shop", "Pending")  # the event was handled: the recreation waits in line
    tracker.lock.release()
    await operator.wait_event("shop", "Recreated")  # done by the resync
    await resync
    assert creates_answered(evolution, "shop") == 2
    # Two Socket.IO drops, each hiding a QR rotation of the other instance: each reconnect's resync
    # must read it. The first one does; the second waits for the resync started by the first.
    await evolution.drop_socket_clients()
    code = await evolution.issue_qr("other")
    await operator.wait_status("other", lambda s: (s.get("qr") or {}).get("code") == code, timeout=5)
    await evolution.drop_socket_clients()
    code = await evolution.issue_qr("other")
    await operator.wait_status("other", lambda s: (s.get("qr") or {}).get("code") == code, timeout=3)
    assert creates_answered(evolution, "shop") == 2


# -- the Kubernetes API ----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [409, 429, 500])
async def test_a_burst_of_failed_status_patches_is_retried_until_written(operator, kube, failure):
    evolution = operator.evolution
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_status("shop", shows_current_qr(evolution, "shop"))
    failed_before = operator.runtime.writer.stats.failures
    kube.fail_next("PATCH", STATUS_PATH, failure, times=3)
    code = await evolution.issue_qr("shop")
    status = await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)
    assert kube.failures_served == 3
    assert operator.runtime.writer.stats.failures - failed_before == 3
    assert condition(status, "Synced")["status"] == "True"


@pytest.mark.parametrize("failure", [429, 500])
async def test_a_burst_of_failed_event_posts_still_delivers_the_event(operator, kube, failure):
    evolution = operator.evolution
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_status("shop", shows_current_qr(evolution, "shop"))
    await operator.wait_event("shop", "QRCodeIssued")
    kube.fail_next("POST", EVENTS_PATH, failure, times=2)
    await evolution.scan("shop")
    await operator.wait_phase("shop", "Connected")
    await operator.wait_event("shop", "Connected", timeout=15)
    assert kube.failures_served == 2
    assert operator.event_reasons("shop").count("Connected") == 1
    assert operator.runtime.publisher.stats.events_dropped == 0


# kopf retries a 429 or a 5xx of its own requests after 1 s, then 1 s again: 4 s is plenty for two.
FINALIZER_WAIT = 4.0


# kopf handles a 429 and a 5xx alike (api.request retries both): one on creation, the other on deletion.
@pytest.mark.parametrize("failure", [500])
async def test_a_burst_of_failed_finalizer_patches_on_creation_delays_it(operator, kube, failure):
    evolution = operator.evolution
    kube.fail_next("PATCH", OBJECT_PATH, failure, times=2, content_type=JSON_PATCH)
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_status("shop", shows_current_qr(evolution, "shop"), timeout=FINALIZER_WAIT)
    assert kube.failures_served == 2
    assert FINALIZER in operator.get("shop")["metadata"]["finalizers"]
    assert creates_answered(evolution, "shop") == 1


@pytest.mark.parametrize("failure", [429])
async def test_a_burst_of_failed_finalizer_patches_on_deletion_delays_it(operator, kube, failure):
    evolution = operator.evolution
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_status("shop", shows_current_qr(evolution, "shop"))
    kube.fail_next("PATCH", OBJECT_PATH, failure, times=2, content_type=JSON_PATCH)
    operator.delete("shop")
    await evolution.wait_until_gone("shop")  # the delete handler ran; removing the finalizer fails twice
    await operator.wait_gone("shop", timeout=FINALIZER_WAIT)
    assert kube.failures_served == 2
    assert creates_answered(evolution, "shop") == 1


# -- the operator process --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`python -m whatsapp_operator run --all-namespaces --standalone` against the stand-in and the fake."""

    def __init__(self, kube: KubeStandin, evolution: FakeEvolution, tmp_path: Path) -> None:
        self.kubeconfig = tmp_path / "kubeconfig"
        kube.write_kubeconfig(self.kubeconfig)
        self.evolution = evolution
        self.log = tmp_path / "operator.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOLUTION_", "KUBERNETES_", "WHATSAPP_"))}
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            EVOLUTION_API_URL=self.evolution.url,
            EVOLUTION_API_KEY=self.evolution.api_key,
            WHATSAPP_OPERATOR_RESYNC_SECONDS="30",
            WHATSAPP_OPERATOR_METRICS_PORT=str(_free_port()),
        )
        with self.log.open("a") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "whatsapp_operator",
                "run",
                "--all-namespaces",
                "--standalone",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def kill(self) -> None:
        assert self.process is not None and self.process.returncode is None, self.tail()
        self.process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(self.process.wait(), timeout=10) == -signal.SIGKILL

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@contextlib.asynccontextmanager
async def operator_process(
    kube: KubeStandin, evolution: FakeEvolution, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    process = OperatorProcess(kube, evolution, tmp_path)
    try:
        yield process
    finally:
        await process.stop()


def _create(kube: KubeStandin, name: str) -> None:
    kube.create(GROUP, VERSION, PLURAL, instance_body(name), namespace=NAMESPACE)


async def _wait_status(kube: KubeStandin, name: str, predicate, process: OperatorProcess, timeout: float = 30):
    try:
        obj = await kube.wait_for(
            GROUP,
            VERSION,
            PLURAL,
            name,
            lambda o: o is not None and predicate(o.get("status") or {}),
            NAMESPACE,
            timeout,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\noperator log:\n{process.tail()}") from None
    return obj


async def test_operator_killed_during_a_create_is_finished_by_the_next_process(kube, evolution, tmp_path, monkeypatch):
    creates = Held(evolution, "_h_create", monkeypatch)
    async with operator_process(kube, evolution, tmp_path) as operator:
        await operator.start()
        _create(kube, "shop")
        await asyncio.wait_for(creates.entered.wait(), timeout=30)
        await operator.kill()  # the create call is in flight: its answer never reaches the operator
        creates.release()
        await evolution.wait_until(lambda: "shop" in evolution.instances)
        await operator.start()
        obj = await _wait_status(kube, "shop", shows_current_qr(evolution, "shop"), operator)
        assert obj["status"]["instanceId"] == evolution.instances["shop"].id
        assert FINALIZER in obj["metadata"]["finalizers"]
        assert creates_answered(evolution, "shop") == 1  # adopted, not created twice
        assert "Adopted" in [e["reason"] for e in kube.events_for(NAMESPACE, "shop")]
        kube.delete(GROUP, VERSION, PLURAL, "shop", NAMESPACE)
        await kube.wait_for(GROUP, VERSION, PLURAL, "shop", lambda o: o is None, NAMESPACE, timeout=30)
        await evolution.wait_until_gone("shop")


async def test_operator_killed_during_a_delete_is_finished_by_the_next_process(kube, evolution, tmp_path, monkeypatch):
    async with operator_process(kube, evolution, tmp_path) as operator:
        await operator.start()
        _create(kube, "shop")
        await _wait_status(kube, "shop", shows_current_qr(evolution, "shop"), operator)
        deletes = Held(evolution, "_h_delete", monkeypatch)
        kube.delete(GROUP, VERSION, PLURAL, "shop", NAMESPACE)
        await asyncio.wait_for(deletes.entered.wait(), timeout=30)
        await operator.kill()  # Evolution removes the instance, the finalizer stays: nobody heard the answer
        deletes.release()
        await evolution.wait_until_gone("shop")
        assert FINALIZER in kube.get(GROUP, VERSION, PLURAL, "shop", NAMESPACE)["metadata"]["finalizers"]
        await operator.start()
        try:
            await kube.wait_for(GROUP, VERSION, PLURAL, "shop", lambda o: o is None, NAMESPACE, timeout=30)
        except AssertionError as error:
            raise AssertionError(f"{error}\noperator log:\n{operator.tail()}") from None
        assert "shop" not in evolution.instances
        assert creates_answered(evolution, "shop") == 1  # not brought back to life


NUDGED = "kopf.whatsapp-operator.io/nudged"


# kopf does not retry a 409 on its finalizer JSON patch: it logs "Throttling for 1 seconds due to an
# unexpected error: APIConflictError" and waits for the object's next watch event. (A real apiserver
# answers 409 when another writer changed the object in between.) The operator looks for objects
# left waiting every minute and gives each one (an annotation under kopf's prefix); here the test
# runs that look itself, with no minimum age.
async def test_a_refused_finalizer_patch_kopf_gives_up_on_is_nudged_on_creation(
    operator_factory, kube, evolution, caplog
):
    caplog.set_level(logging.INFO)
    async with operator_factory(evolution, stuck_object_after=0.0) as operator:
        kube.fail_next("PATCH", OBJECT_PATH, 409, times=2, content_type=JSON_PATCH)
        operator.create("shop", {"instanceName": "shop"})
        await nudge_while_refused(
            operator, kube, caplog, lambda: FINALIZER in operator.get("shop")["metadata"].get("finalizers", [])
        )
        await operator.wait_status("shop", shows_current_qr(evolution, "shop"), timeout=FINALIZER_WAIT)
        assert FINALIZER in operator.get("shop")["metadata"]["finalizers"]
        assert creates_answered(evolution, "shop") == 1


async def test_a_refused_finalizer_patch_kopf_gives_up_on_is_nudged_on_deletion(
    operator_factory, kube, evolution, caplog
):
    caplog.set_level(logging.INFO)
    async with operator_factory(evolution, stuck_object_after=0.0) as operator:
        operator.create("shop", {"instanceName": "shop"})
        await operator.wait_status("shop", shows_current_qr(evolution, "shop"))
        kube.fail_next("PATCH", OBJECT_PATH, 409, times=2, content_type=JSON_PATCH)
        operator.delete("shop")
        await evolution.wait_until_gone("shop")
        await nudge_while_refused(operator, kube, caplog, lambda: operator.get("shop") is None)
        await operator.wait_gone("shop", timeout=FINALIZER_WAIT)
        assert creates_answered(evolution, "shop") == 1


async def test_objects_kopf_handles_normally_are_not_nudged(operator_factory, kube, evolution):
    async with operator_factory(evolution, stuck_object_after=0.0) as operator:
        operator.create("shop", {"instanceName": "shop"})
        await operator.wait_status("shop", shows_current_qr(evolution, "shop"))
        before = (operator.get("shop")["metadata"].get("annotations") or {}).get(NUDGED)
        await operator.runtime.nudge_stuck_objects()
        assert (operator.get("shop")["metadata"].get("annotations") or {}).get(NUDGED) == before


async def nudge_while_refused(operator, kube, caplog, done) -> None:
    """Nudge as the operator's resync would, once kopf's throttling after each refusal is over.

    Events that arrive while kopf throttles are consumed without being processed, so a nudge is
    useful only afterwards (in production the resync comes minutes later; kopf's first delays
    are 1, 1, 2, 3 s)."""
    handled = 0
    while not done():
        await kube.wait_until(lambda handled=handled: done() or kube.failures_served > handled, timeout=5)
        if done():
            break
        handled = kube.failures_served

        async def throttling_over(handled: int = handled) -> None:
            while caplog.text.count("Throttling is over") < handled:
                await asyncio.sleep(0.05)  # kopf's own timer; it logs when it is over

        await asyncio.wait_for(throttling_over(), 10)
        await operator.runtime.nudge_stuck_objects()
    assert kube.failures_served == 2
