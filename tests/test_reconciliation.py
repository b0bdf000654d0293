"""The Reconciler alone: a scripted REST client, a recording sink, no kopf and no Kubernetes.

The REST fake answers only what each test scripts, so a call the reconciler should not make fails
the test (KeyError) instead of being answered leniently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from whatsapp_operator.engine.reconciliation import Reconciler
from whatsapp_operator.engine.spec import InstanceSpec
from whatsapp_operator.engine.state import InstanceState, Notice, Phase
from whatsapp_operator.engine.tracker import InstanceTracker, Key
from whatsapp_operator.evolution.client import (
    ConnectResult,
    CreatedInstance,
    InstanceAlreadyExists,
    InstanceRecord,
    InstanceRejected,
    QRPayload,
)
from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.evolution.errors import EvolutionError, InstanceNotFound
from whatsapp_operator.reasons import Reason

NOW = "2026-11-30T12:00:00Z"


class ScriptedRest:
    """Answers each REST call from a per-method script (a list consumed in order)."""

    def __init__(self, **script: list[Any]):
        self.script = script
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _answer(self, method: str, *args: Any) -> Any:
        self.calls.append((method, args))
        answer = self.script[method].pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def connection_state(self, name: str) -> Any:
        return self._answer("connection_state", name)

    async def create_instance(
        self, name: str, *, integration: str, settings: dict[str, Any], webhook: Any = None
    ) -> Any:
        return self._answer("create_instance", name)

    async def connect(self, name: str, *, number: str | None = None) -> Any:
        return self._answer("connect", name, number)

    async def fetch_instance(self, name: str) -> Any:
        return self._answer("fetch_instance", name)

    async def subscribe_events(self, name: str) -> Any:
        return self._answer("subscribe_events", name)

    async def set_settings(self, name: str, settings: dict[str, Any]) -> Any:
        return self._answer("set_settings", name, settings)

    async def find_settings(self, name: str) -> Any:
        return self._answer("find_settings", name)

    async def find_webhook(self, name: str) -> Any:
        return self._answer("find_webhook", name)

    async def set_webhook(self, name: str, webhook: Any) -> Any:
        return self._answer("set_webhook", name, webhook)

    async def logout(self, name: str) -> Any:
        return self._answer("logout", name)

    async def delete_instance(self, name: str) -> Any:
        return self._answer("delete_instance", name)

    def called(self) -> list[str]:
        return [method for method, _ in self.calls]


@dataclass
class StubServer:
    rest: ScriptedRest
    broadcasts_globally: bool = False
    problem: EvolutionError | None = None


@dataclass
class RecordingSink:
    published: list[tuple[Phase, list[Notice]]] = field(default_factory=list)
    flushed: list[Key] = field(default_factory=list)

    def publish(self, tracker: InstanceTracker, notices: list[Notice], *, received_at: float | None = None) -> None:
        self.published.append((tracker.state.phase, list(notices)))

    def render_status_again(self, tracker: InstanceTracker) -> None:
        self.publish(tracker, [])

    async def flush(self, key: Key) -> None:
        self.flushed.append(key)

    def reasons(self) -> list[str]:
        return [notice.reason for _, notices in self.published for notice in notices]


def tracker_on(rest: ScriptedRest, *, state: InstanceState | None = None, globally: bool = False) -> InstanceTracker:
    return InstanceTracker(
        namespace="default",
        name="shop",
        uid="uid-1",
        generation=1,
        spec=InstanceSpec("shop", "WHATSAPP-BAILEYS", None, {"rejectCall": True}),
        state=state or InstanceState("shop"),
        server=StubServer(rest, globally),  # type: ignore[arg-type]
    )


def reconciler(sink: RecordingSink, *, wanted: bool = True) -> Reconciler:
    async def still_wanted(tracker: InstanceTracker) -> bool:
        return wanted

    return Reconciler(sink, clock=lambda: NOW, still_wanted=still_wanted)


def qr(code: str) -> ConnectResult:
    return ConnectResult(state=None, qr=QRPayload(code=code, base64="data:image/png;base64,AA==", count=1))


async def test_a_missing_instance_is_created_and_its_qr_published():
    rest = ScriptedRest(
        connection_state=[InstanceNotFound("shop", "not found")],
        create_instance=[CreatedInstance("id-1", "created", None)],
        connect=[qr("2@abc")],
    )
    sink = RecordingSink()
    tracker = tracker_on(rest)
    await reconciler(sink).reconcile(tracker)
    assert rest.called() == ["connection_state", "create_instance", "connect"]
    assert tracker.exists and tracker.state.instance_id == "id-1"
    assert tracker.state.phase is Phase.AWAITING_SCAN and tracker.state.qr is not None
    assert sink.reasons() == [Reason.CREATED, Reason.QR_CODE_ISSUED]


async def test_an_existing_instance_is_adopted_with_our_subscription_and_settings():
    rest = ScriptedRest(
        connection_state=[ConnectionState.OPEN],
        fetch_instance=[
            InstanceRecord("id-7", "shop", "open", "5511@s.whatsapp.net", "ACME", None, None),
            InstanceRecord("id-7", "shop", "open", "5511@s.whatsapp.net", "ACME", None, None),
        ],
        subscribe_events=[None],
        find_settings=[{"rejectCall": False}],  # rejectCall differs from the spec's
        set_settings=[None],
        find_webhook=[None],
    )
    sink = RecordingSink()
    tracker = tracker_on(rest)
    await reconciler(sink).reconcile(tracker)
    assert rest.called() == [
        "connection_state",
        "fetch_instance",
        "subscribe_events",
        "find_settings",
        "set_settings",
        "find_webhook",
        "fetch_instance",
    ]
    assert tracker.state.phase is Phase.CONNECTED and tracker.state.number == "5511"
    assert Reason.ADOPTED in sink.reasons() and "DriftCorrected" in sink.reasons()


async def test_drift_repair_reads_twice_and_writes_nothing_when_nothing_drifted():
    settings = {"rejectCall": True, "groupsIgnore": False, "alwaysOnline": False, "readMessages": False}
    settings |= {"readStatus": False, "syncFullHistory": False, "msgCall": ""}
    rest = ScriptedRest(find_settings=[dict(settings)], find_webhook=[None])
    tracker = tracker_on(rest)
    tracker.exists = True
    tracker.spec = InstanceSpec("shop", "WHATSAPP-BAILEYS", None, settings)
    assert await reconciler(RecordingSink()).repair_drift(tracker) == []
    assert rest.called() == ["find_settings", "find_webhook"]


async def test_a_paused_instance_gets_no_call():
    rest = ScriptedRest()  # any call would fail the test with a KeyError
    tracker = tracker_on(rest)
    tracker.paused = True
    recon = reconciler(RecordingSink())
    await recon.reconcile(tracker)
    await recon.request_reconnect(tracker)
    await recon.apply_settings(tracker)
    assert rest.calls == []


async def test_an_instance_on_a_server_that_does_not_exist_says_so():
    rest = ScriptedRest()
    tracker = tracker_on(rest)
    tracker.server.problem = EvolutionError(Reason.SERVER_NOT_FOUND, "EvolutionServer team does not exist")  # type: ignore[misc]
    with pytest.raises(EvolutionError):
        await reconciler(RecordingSink()).reconcile(tracker)
    assert tracker.state.sync_error is not None and tracker.state.sync_error.reason == Reason.SERVER_NOT_FOUND
    assert rest.calls == []


async def test_adoption_skips_the_subscription_when_the_server_broadcasts_globally():
    rest = ScriptedRest(
        connection_state=[ConnectionState.CLOSE],
        fetch_instance=[InstanceRecord("id-7", "shop", "close", None, None, None, None)],
        find_settings=[None],
        set_settings=[None],
        find_webhook=[None],
        connect=[qr("2@abc")],
    )
    tracker = tracker_on(rest, globally=True)
    await reconciler(RecordingSink()).reconcile(tracker)
    assert "subscribe_events" not in rest.called()


async def test_a_failed_call_is_reported_on_the_status_and_raised():
    rest = ScriptedRest(connection_state=[EvolutionError(Reason.EVOLUTION_UNREACHABLE, "connection refused")])
    sink = RecordingSink()
    tracker = tracker_on(rest)
    recon = reconciler(sink)
    with pytest.raises(EvolutionError):
        await recon.reconcile(tracker)
    assert tracker.state.sync_error is not None and tracker.state.sync_error.reason == Reason.EVOLUTION_UNREACHABLE
    assert recon.stats.reconcile_errors == 1


async def test_a_rejected_create_fails_the_instance_for_good():
    rest = ScriptedRest(
        connection_state=[InstanceNotFound("shop", "not found")],
        create_instance=[InstanceRejected("instanceName is invalid")],
    )
    tracker = tracker_on(rest)
    with pytest.raises(InstanceRejected):
        await reconciler(RecordingSink()).reconcile(tracker)
    assert tracker.state.phase is Phase.FAILED and tracker.state.reason == Reason.EVOLUTION_REJECTED_INSTANCE


async def test_a_name_still_being_released_is_a_passing_failure():
    rest = ScriptedRest(
        connection_state=[InstanceNotFound("shop", "not found")],
        create_instance=[InstanceAlreadyExists("This name is already in use")],
    )
    with pytest.raises(EvolutionError) as raised:
        await reconciler(RecordingSink()).reconcile(tracker_on(rest))
    assert raised.value.reason == Reason.INSTANCE_NAME_BUSY


async def test_an_instance_the_object_no_longer_wants_is_not_recreated():
    rest = ScriptedRest(connection_state=[InstanceNotFound("shop", "not found")])
    state = InstanceState("shop", instance_id="id-1", phase=Phase.CONNECTED)
    tracker = tracker_on(rest, state=state)
    recon = reconciler(RecordingSink(), wanted=False)
    await recon.reconcile(tracker)
    assert rest.called() == ["connection_state"]
    assert recon.stats.recreations == 0


async def test_logout_of_a_session_that_is_not_connected_is_logged_out():
    rest = ScriptedRest(logout=[False])
    state = InstanceState("shop", instance_id="id-1", phase=Phase.AWAITING_SCAN)
    tracker = tracker_on(rest, state=state)
    await reconciler(RecordingSink()).request_logout(tracker)
    assert tracker.state.phase is Phase.LOGGED_OUT


async def test_a_delete_evolution_refuses_keeps_the_object_and_says_why():
    rest = ScriptedRest(delete_instance=[EvolutionError(Reason.EVOLUTION_SERVER_ERROR, "HTTP 500")])
    sink = RecordingSink()
    tracker = tracker_on(rest)
    with pytest.raises(EvolutionError):
        await reconciler(sink).delete(tracker)
    assert tracker.deleting and sink.flushed == [("default", "shop")]
    assert tracker.state.sync_error is not None and "kept until Evolution answers" in tracker.state.sync_error.message
