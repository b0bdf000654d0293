"""Echoes of status writes stop before kopf; everything a handler or kopf itself may need passes."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.kube import echoes
from whatsapp_operator.kube.echoes import EchoFilter
from whatsapp_operator.kube.handlers import configure_settings
from whatsapp_operator.names import FINALIZER, GROUP, PLURAL, VERSION

from instances import instance_body
from kopf_harness import running_operator
from kube_standin import KubeStandin


def instance(uid: str = "u1", **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WhatsAppInstance",
        "metadata": {"name": "shop", "namespace": "default", "uid": uid, "finalizers": [FINALIZER], **metadata},
        "spec": {"instanceName": "shop"},
        "status": {"phase": "AwaitingScan"},
    }


def modified(body: dict[str, Any], version: str, **status: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    changed["metadata"]["resourceVersion"] = version
    changed["metadata"]["managedFields"] = [{"manager": "whatsapp-operator", "time": version}]
    changed["status"].update(status)
    return {"type": "MODIFIED", "object": changed}


def test_a_status_only_change_of_a_settled_object_is_dropped() -> None:
    echoes_ = EchoFilter(finalizer=FINALIZER)
    body = instance()
    assert echoes_.admits({"type": None, "object": body})  # the listing row
    assert not echoes_.admits(modified(body, "2", qr={"code": "a"}))
    assert not echoes_.admits(modified(body, "3", qr={"code": "b"}))
    assert echoes_.skipped == 2


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b: b["spec"].update(instanceName="other"), id="spec"),
        pytest.param(
            lambda b: b["metadata"].update(annotations={"whatsapp-operator.io/reconnect": "1"}), id="annotation"
        ),
        pytest.param(lambda b: b["metadata"].update(labels={"team": "a"}), id="label"),
        pytest.param(lambda b: b["metadata"].update(deletionTimestamp="2026-12-01T00:00:00Z"), id="deletion"),
        pytest.param(lambda b: b["metadata"].update(finalizers=[]), id="finalizer removed"),
        pytest.param(lambda b: b["metadata"].update(generation=2), id="generation"),
    ],
)
def test_any_change_outside_the_status_passes(change: Any) -> None:
    echoes_ = EchoFilter(finalizer=FINALIZER)
    body = instance()
    assert echoes_.admits({"type": "ADDED", "object": body})
    event = modified(body, "2")
    change(event["object"])
    assert echoes_.admits(event)


def test_objects_kopf_has_a_finalizer_patch_for_see_every_event() -> None:
    # kopf's finalizer JSON patch tests the resourceVersion: after a conflict with a status write
    # it waits for the object's next event, whatever it carries.
    for body in (instance(finalizers=[]), instance(deletionTimestamp="2026-12-01T00:00:00Z")):
        echoes_ = EchoFilter(finalizer=FINALIZER)
        assert echoes_.admits({"type": "ADDED", "object": body})
        assert echoes_.admits(modified(body, "2", phase="Connecting"))
        assert echoes_.admits(modified(body, "3", phase="Connecting"))


def test_the_first_event_of_an_object_and_non_modifications_pass() -> None:
    echoes_ = EchoFilter(finalizer=FINALIZER)
    body = instance()
    assert echoes_.admits(modified(body, "2"))  # never seen before: kopf must see it
    assert echoes_.admits({"type": "ADDED", "object": body})
    assert echoes_.admits({"type": None, "object": body})
    assert echoes_.admits({"type": "DELETED", "object": body})
    assert echoes_.admits(modified(body, "3"))  # after the deletion, it is new again
    assert echoes_.admits({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})


def test_a_relisting_forgets_objects_deleted_while_the_watch_was_down() -> None:
    echoes_ = EchoFilter(finalizer=FINALIZER)
    for uid in ("u1", "u2"):
        echoes_.admits({"type": None, "object": instance(uid)})
    echoes_.listing_done()
    assert set(echoes_.last_seen) == {"u1", "u2"}
    echoes_.admits({"type": None, "object": instance("u2")})  # the watch restarted: u1 is gone
    echoes_.listing_done()
    assert set(echoes_.last_seen) == {"u2"}


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6))
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
METADATA = st.fixed_dictionaries(
    {"uid": st.sampled_from(["u1", "u2"])},
    optional={
        "resourceVersion": st.text(max_size=3),
        "managedFields": st.lists(JSON, max_size=2),
        "annotations": st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["1", "2"]), max_size=2),
        "finalizers": st.lists(st.sampled_from([FINALIZER, "other"]), max_size=2),
        "deletionTimestamp": st.sampled_from(["2026-12-01T00:00:00Z"]),
        "generation": st.integers(1, 2),
    },
)
BODIES = st.one_of(
    st.fixed_dictionaries(
        {"metadata": METADATA},
        optional={"spec": st.sampled_from([{"n": 1}, {"n": 2}]), "status": JSON, "kind": st.just("WhatsAppInstance")},
    ),
    JSON,  # anything at all: hostile input must pass through to kopf, not crash the stream
)
EVENTS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from([None, "ADDED", "MODIFIED", "MODIFIED", "DELETED"]), "object": BODIES}
    ),
    JSON,
)


def _lasting(body: dict[str, Any]) -> Any:
    """What a handler or kopf's finalizer logic may look at: all but status and volatile metadata."""
    metadata = {k: v for k, v in body["metadata"].items() if k not in ("resourceVersion", "managedFields")}
    return metadata, {k: v for k, v in body.items() if k not in ("status", "metadata")}


@pytest.mark.properties
@given(st.lists(EVENTS, max_size=25))
def test_kopf_never_misses_a_change_it_could_act_on(events: list[Any]) -> None:
    echoes_ = EchoFilter(finalizer=FINALIZER)
    admitted: dict[str, Any] = {}  # kopf's view: the last admitted body of each object
    for event in events:
        if echoes_.admits(event):
            body = event.get("object") if isinstance(event, dict) else None
            uid = body.get("metadata", {}).get("uid") if isinstance(body, dict) else None
            if isinstance(body, dict) and isinstance(body.get("metadata"), dict) and isinstance(uid, str):
                admitted[uid] = None if event.get("type") == "DELETED" else body
            continue
        # Dropped: only a modification of an object kopf saw, identical to kopf's view outside
        # the status, with the finalizer on and no deletion mark.
        body = event["object"]
        assert event["type"] == "MODIFIED"
        seen = admitted.get(body["metadata"]["uid"])
        assert seen is not None and _lasting(seen) == _lasting(body)
        assert FINALIZER in body["metadata"]["finalizers"] and "deletionTimestamp" not in body["metadata"]


def test_install_wraps_kopfs_watch_once() -> None:
    from kopf._cogs.clients import watching

    assert echoes.install(GROUP, (PLURAL,))
    wrapped = watching.infinite_watch
    assert getattr(wrapped, "__wrapped__", None) is not None
    assert echoes.install(GROUP, (PLURAL,))
    assert watching.infinite_watch is wrapped


def test_kopfs_per_object_tasks_end_soon_only_when_the_echoes_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from kopf._cogs.clients import watching

    assert echoes.install(GROUP, (PLURAL,)) and echoes.installed()
    settings = kopf.OperatorSettings()
    configure_settings(settings)
    assert settings.queueing.idle_timeout == 5.0  # only real changes reach the tasks
    monkeypatch.setattr(watching, "infinite_watch", watching.infinite_watch.__wrapped__)
    assert not echoes.installed()
    configure_settings(settings)
    assert settings.queueing.idle_timeout == 60.0  # every echo would: keep each task for a minute


def our_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure_settings(settings)
    settings.watching.server_timeout = 5
    return settings


async def create_and_wait_for_the_finalizer(kube: KubeStandin, name: str) -> None:
    kube.create(GROUP, VERSION, PLURAL, instance_body(name), namespace="default")
    await kube.wait_for(
        GROUP,
        VERSION,
        PLURAL,
        name,
        lambda o: o is not None and FINALIZER in o["metadata"].get("finalizers", []),
        namespace="default",
    )


async def test_kopf_sees_no_status_echo_but_every_other_change(kube: KubeStandin) -> None:
    echoes.install(GROUP, (PLURAL,))
    registry = kopf.OperatorRegistry()
    seen: list[dict[str, Any]] = []

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def created(**_: Any) -> None:
        pass

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def removed(**_: Any) -> None:
        pass

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def spy(body: kopf.Body, **_: Any) -> None:
        seen.append({"status": dict(body.get("status", {})), "annotations": dict(body.metadata.annotations)})

    async with running_operator(registry, server_url=kube.url, settings=our_settings()):
        await create_and_wait_for_the_finalizer(kube, "shop")
        for count in range(5):
            kube.patch(
                GROUP,
                VERSION,
                PLURAL,
                "shop",
                {"status": {"message": f"write {count}"}},
                "default",
                subresource="status",
            )
        kube.patch(GROUP, VERSION, PLURAL, "shop", {"metadata": {"annotations": {"team": "a"}}}, "default")
        await kube.wait_until(lambda: any(s["annotations"].get("team") == "a" for s in seen))
    # Whenever kopf saw the object after the writes, it carried the latest status; never one between.
    assert {s["status"].get("message") for s in seen} <= {None, "write 4"}
    assert seen[-1]["status"] == {"message": "write 4"}


async def test_kopf_removes_its_finalizer_when_a_status_write_races_its_patch(kube: KubeStandin) -> None:
    echoes.install(GROUP, (PLURAL,))
    registry, raced = kopf.OperatorRegistry(), list[str]()

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def created(**_: Any) -> None:
        pass

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def removed(name: str, **_: Any) -> None:
        # As the runtime's status writer may: kopf's finalizer patch then tests a stale version.
        if raced:
            return
        raced.append(name)
        kube.patch(GROUP, VERSION, PLURAL, name, {"status": {"phase": "Disconnected"}}, "default", subresource="status")

    async with running_operator(registry, server_url=kube.url, settings=our_settings()):
        await create_and_wait_for_the_finalizer(kube, "shop")
        kube.delete(GROUP, VERSION, PLURAL, "shop", namespace="default")
        await kube.wait_for(GROUP, VERSION, PLURAL, "shop", lambda o: o is None, namespace="default", timeout=5)
    # A failed `test` of the resourceVersion is a 422 on a real apiserver.
    conflicts = [r for r in kube.requests if r.content_type == "application/json-patch+json" and r.status == 422]
    assert conflicts, "the finalizer patch did not meet the status write"
