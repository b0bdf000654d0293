"""The Kubernetes API stand-in behaves like an apiserver where kopf and the operator rely on it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import kubernetes
import pytest
import yaml

from kopf_harness import running_operator
from kube_standin import KubeApiError, KubeStandin, json_patch, merge_patch, parse_label_selector
from schema_check import CRDS_DIR

G, V, P = "whatsapp-operator.io", "v1alpha1", "whatsappinstances"
WAIS = f"/apis/{G}/{V}/namespaces/default/{P}"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
# Valid for the CRD schema (the stand-in validates custom resources against it, as the apiserver).
NUMBER, OTHER_NUMBER = "5511987654321", "5511900000001"
BAILEYS = {"integration": "WHATSAPP-BAILEYS", "deletionPolicy": "Delete"}  # the schema's defaults for spec


def wai(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "WhatsAppInstance",
        "metadata": {"name": name},
        "spec": {"number": NUMBER, **spec},
    }


@pytest.fixture
async def kube() -> AsyncIterator[KubeStandin]:
    async with KubeStandin() as standin:
        yield standin


@pytest.fixture
async def api(kube: KubeStandin) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=kube.url) as session:
        yield session


async def call(
    api: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with api.request(method, path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def next_event(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    line = await asyncio.wait_for(resp.content.readline(), timeout=5)
    assert line, "the watch-stream ended"
    event: dict[str, Any] = json.loads(line)
    return event


# ---- create ------------------------------------------------------------------------------------


async def test_create_fills_server_side_metadata_and_drops_status(
    api: aiohttp.ClientSession,
) -> None:
    status, obj = await call(api, "POST", WAIS, {**wai("one"), "status": {"phase": "Fake"}})
    assert status == 201
    meta = obj["metadata"]
    assert meta["namespace"] == "default"
    assert meta["generation"] == 1
    assert len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert "status" not in obj


async def test_generate_name_gives_distinct_names(api: aiohttp.ClientSession) -> None:
    body = {"metadata": {"generateName": "ev-"}, "involvedObject": {"name": "x"}}
    (s1, e1), (s2, e2) = [await call(api, "POST", "/api/v1/namespaces/default/events", body) for _ in range(2)]
    assert (s1, s2) == (201, 201)
    assert e1["metadata"]["name"].startswith("ev-") and e2["metadata"]["name"].startswith("ev-")
    assert e1["metadata"]["name"] != e2["metadata"]["name"]


async def test_duplicate_create_is_409_status(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", WAIS, wai("one"))
    status, body = await call(api, "POST", WAIS, wai("one"))
    assert status == 409
    assert body["kind"] == "Status" and body["reason"] == "AlreadyExists" and body["code"] == 409


async def test_create_in_missing_namespace_is_404(api: aiohttp.ClientSession) -> None:
    status, body = await call(api, "POST", f"/apis/{G}/{V}/namespaces/nowhere/{P}", wai("one"))
    assert status == 404
    assert body["message"] == 'namespaces "nowhere" not found'


async def test_secret_string_data_is_folded_into_base64_data(kube: KubeStandin) -> None:
    kube.create(
        "",
        "v1",
        "secrets",
        {"metadata": {"name": "s"}, "stringData": {"k": "v"}},
        namespace="default",
    )
    kube.patch("", "v1", "secrets", "s", {"stringData": {"k2": "w"}}, namespace="default")
    secret = kube.get("", "v1", "secrets", "s", namespace="default")
    assert secret is not None
    assert secret["data"] == {"k": "dg==", "k2": "dw=="} and "stringData" not in secret


# ---- updates -----------------------------------------------------------------------------------


async def test_generation_changes_only_with_spec(kube: KubeStandin) -> None:
    created = kube.create(G, V, P, wai("one"), namespace="default")
    labelled = kube.patch(G, V, P, "one", {"metadata": {"labels": {"a": "b"}}}, namespace="default")
    with_status = kube.patch(
        G, V, P, "one", {"status": {"phase": "Connected"}}, namespace="default", subresource="status"
    )
    respecced = kube.patch(G, V, P, "one", {"spec": {"number": OTHER_NUMBER}}, namespace="default")
    assert [o["metadata"]["generation"] for o in (created, labelled, with_status, respecced)] == [
        1,
        1,
        1,
        2,
    ]
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (created, labelled, with_status, respecced)]
    assert rvs == sorted(set(rvs))


async def test_status_subresource_patch_changes_only_status(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", WAIS, wai("one"))
    status, obj = await call(
        api,
        "PATCH",
        f"{WAIS}/one/status",
        {
            "spec": {"number": OTHER_NUMBER},
            "metadata": {"labels": {"x": "y"}},
            "status": {"phase": "Connected"},
        },
        MERGE,
    )
    assert status == 200
    assert obj["status"] == {"phase": "Connected"}
    assert obj["spec"]["number"] == NUMBER and "labels" not in obj["metadata"]


async def test_main_endpoint_ignores_status(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", WAIS, wai("one"))
    await call(api, "PATCH", f"{WAIS}/one/status", {"status": {"phase": "Connected"}}, MERGE)
    _, obj = await call(
        api,
        "PATCH",
        f"{WAIS}/one",
        {"spec": {"number": OTHER_NUMBER}, "status": {"phase": "Hacked"}},
        MERGE,
    )
    assert obj["spec"]["number"] == OTHER_NUMBER
    assert obj["status"] == {"phase": "Connected"}


async def test_json_patch_with_failing_test_is_422_and_changes_nothing(
    api: aiohttp.ClientSession, kube: KubeStandin
) -> None:
    _, obj = await call(api, "POST", WAIS, wai("one"))
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "999999"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
    ]
    status, body = await call(api, "PATCH", f"{WAIS}/one", ops, JSONPATCH)
    assert status == 422 and body["kind"] == "Status"
    assert kube.get(G, V, P, "one", "default") == obj

    ops[0]["value"] = obj["metadata"]["resourceVersion"]
    status, patched = await call(api, "PATCH", f"{WAIS}/one", ops, JSONPATCH)
    assert status == 200 and patched["metadata"]["finalizers"] == ["f"]


async def test_json_patch_on_status_tests_the_whole_object(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", WAIS, wai("one"))
    ops = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": obj["metadata"]["resourceVersion"],
        },
        {"op": "add", "path": "/status", "value": {"phase": "Connected"}},
        {"op": "add", "path": "/spec/number", "value": OTHER_NUMBER},
    ]
    status, patched = await call(api, "PATCH", f"{WAIS}/one/status", ops, JSONPATCH)
    assert status == 200
    assert patched["status"] == {"phase": "Connected"} and patched["spec"]["number"] == NUMBER


async def test_put_needs_a_current_resource_version(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", WAIS, wai("one"))
    stale = {**obj, "spec": {"number": OTHER_NUMBER}}
    await call(api, "PATCH", f"{WAIS}/one", {"metadata": {"labels": {"a": "b"}}}, MERGE)
    status, body = await call(api, "PUT", f"{WAIS}/one", stale)
    assert status == 409 and body["reason"] == "Conflict"
    del stale["metadata"]["resourceVersion"]
    status, body = await call(api, "PUT", f"{WAIS}/one", stale)
    assert status == 422  # custom resources allow no unconditional update


async def test_put_replaces_the_object(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", WAIS, wai("one", instanceName="x"))
    replacement = {**obj, "spec": {"number": OTHER_NUMBER}}
    status, replaced = await call(api, "PUT", f"{WAIS}/one", replacement)
    assert status == 200
    assert replaced["spec"] == {"number": OTHER_NUMBER, **BAILEYS}  # integration defaulted again
    assert replaced["metadata"]["generation"] == 2


async def test_no_op_patch_keeps_the_resource_version(kube: KubeStandin) -> None:
    created = kube.create(G, V, P, wai("one"), namespace="default")
    same = kube.patch(G, V, P, "one", {"spec": {"number": NUMBER}}, namespace="default")
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_unsupported_patch_type_is_415(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", WAIS, wai("one"))
    status, _ = await call(api, "PATCH", f"{WAIS}/one", {"spec": {}}, {"Content-Type": "application/json"})
    assert status == 415


# ---- deletion ----------------------------------------------------------------------------------


async def test_finalizers_hold_deletion_until_the_last_is_removed(
    api: aiohttp.ClientSession, kube: KubeStandin
) -> None:
    kube.create(
        G,
        V,
        P,
        {**wai("one"), "metadata": {"name": "one", "finalizers": ["a", "b"]}},
        namespace="default",
    )
    status, marked = await call(api, "DELETE", f"{WAIS}/one")
    assert status == 200
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 0
    assert marked["metadata"]["generation"] == 2  # as the apiserver bumps it on marking
    status, _ = await call(api, "PATCH", f"{WAIS}/one", {"metadata": {"finalizers": ["a", "b", "c"]}}, MERGE)
    assert status == 422  # no new finalizers while being deleted

    kube.patch(G, V, P, "one", {"metadata": {"finalizers": ["b"]}}, namespace="default")
    assert kube.get(G, V, P, "one", "default") is not None
    kube.patch(G, V, P, "one", {"metadata": {"finalizers": None}}, namespace="default")
    status, body = await call(api, "GET", f"{WAIS}/one")
    assert status == 404 and body["reason"] == "NotFound"


async def test_delete_without_finalizers_is_immediate_and_404_after(
    api: aiohttp.ClientSession,
) -> None:
    await call(api, "POST", WAIS, wai("one"))
    assert (await call(api, "DELETE", f"{WAIS}/one"))[0] == 200
    assert (await call(api, "GET", f"{WAIS}/one"))[0] == 404
    assert (await call(api, "DELETE", f"{WAIS}/one"))[0] == 404


# ---- garbage collection (ownerReferences) ------------------------------------------------------


def owned_by(owner: dict[str, Any], name: str, **metadata: Any) -> dict[str, Any]:
    """A Secret whose ownerReferences name ``owner``, as the operator writes a connection Secret."""
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [reference], **metadata}, "stringData": {"token": "t"}}


async def test_removing_an_owner_deletes_its_dependents_in_the_background(
    api: aiohttp.ClientSession, kube: KubeStandin
) -> None:
    kube.create("", "v1", "namespaces", {"metadata": {"name": "other"}})
    owner = kube.create(G, V, P, {**wai("shop"), "metadata": {"name": "shop", "finalizers": ["f"]}}, "default")
    kube.create("", "v1", "secrets", owned_by(owner, "shop-evolution"), namespace="default")
    kube.create("", "v1", "secrets", {"metadata": {"name": "unrelated"}}, namespace="default")
    # The same uid named from another namespace: a namespaced owner owns only in its namespace.
    kube.create("", "v1", "secrets", owned_by(owner, "elsewhere"), namespace="other")
    async with api.get("/api/v1/namespaces/default/secrets?watch=true&resourceVersion=0") as watch:
        assert [(await next_event(watch))["object"]["metadata"]["name"] for _ in range(2)] == [
            "shop-evolution",
            "unrelated",
        ]
        # Marked for deletion, the owner is still there (its finalizer holds it): so are its dependents.
        await call(api, "DELETE", f"{WAIS}/shop")
        assert kube.get("", "v1", "secrets", "shop-evolution", "default") is not None
        kube.patch(G, V, P, "shop", {"metadata": {"finalizers": None}}, namespace="default")
        assert kube.get(G, V, P, "shop", "default") is None
        event = await next_event(watch)
        assert (event["type"], event["object"]["metadata"]["name"]) == ("DELETED", "shop-evolution")
    assert (await call(api, "GET", "/api/v1/namespaces/default/secrets/shop-evolution"))[0] == 404
    assert kube.get("", "v1", "secrets", "unrelated", "default") is not None
    assert kube.get("", "v1", "secrets", "elsewhere", "other") is not None


async def test_garbage_collection_respects_the_dependents_finalizers_and_cascades(kube: KubeStandin) -> None:
    owner = kube.create(G, V, P, wai("shop"), namespace="default")
    held = kube.create("", "v1", "secrets", owned_by(owner, "held", finalizers=["keep"]), namespace="default")
    grandchild = kube.create("", "v1", "secrets", owned_by(held, "grandchild"), namespace="default")
    kube.delete(G, V, P, "shop", namespace="default")  # no finalizers: removed at once
    marked = kube.get("", "v1", "secrets", "held", "default")
    assert marked is not None and marked["metadata"]["deletionTimestamp"]
    assert kube.get("", "v1", "secrets", "grandchild", "default") == grandchild  # its owner is still there
    kube.patch("", "v1", "secrets", "held", {"metadata": {"finalizers": None}}, namespace="default")
    assert kube.get("", "v1", "secrets", "held", "default") is None
    assert kube.get("", "v1", "secrets", "grandchild", "default") is None


async def test_a_dependent_with_another_owner_only_loses_the_reference(kube: KubeStandin) -> None:
    first = kube.create(G, V, P, wai("first"), namespace="default")
    second = kube.create(G, V, P, wai("second"), namespace="default")
    shared = owned_by(first, "shared")
    shared["metadata"]["ownerReferences"] += owned_by(second, "x")["metadata"]["ownerReferences"]
    kube.create("", "v1", "secrets", shared, namespace="default")
    kube.delete(G, V, P, "first", namespace="default")
    kept = kube.get("", "v1", "secrets", "shared", "default")
    assert kept is not None
    assert [ref["name"] for ref in kept["metadata"]["ownerReferences"]] == ["second"]
    kube.delete(G, V, P, "second", namespace="default")
    assert kube.get("", "v1", "secrets", "shared", "default") is None


async def test_a_cluster_scoped_owner_owns_across_namespaces(kube: KubeStandin) -> None:
    kube.create("", "v1", "namespaces", {"metadata": {"name": "other"}})
    owner = kube.create(
        G,
        V,
        "clusterevolutionservers",
        {"metadata": {"name": "main"}, "spec": {"url": "http://e:8080", "apiKeySecretRef": {"name": "k", "key": "k"}}},
    )
    assert owner["spec"]["websocket"] == {"mode": "auto"}  # served, with its CRD's schema and defaults
    kube.create("", "v1", "secrets", owned_by(owner, "a"), namespace="default")
    kube.create("", "v1", "secrets", owned_by(owner, "b"), namespace="other")
    kube.delete(G, V, "clusterevolutionservers", "main")
    assert kube.list("", "v1", "secrets") == []


# ---- lists and watches -------------------------------------------------------------------------


async def test_lists_carry_a_resource_version_and_filter_by_namespace_and_labels(
    api: aiohttp.ClientSession, kube: KubeStandin
) -> None:
    kube.create("", "v1", "namespaces", {"metadata": {"name": "other"}})
    kube.create(G, V, P, {**wai("a"), "metadata": {"name": "a", "labels": {"app": "x"}}}, "default")
    kube.create(G, V, P, wai("b"), namespace="other")
    _, everywhere = await call(api, "GET", f"/apis/{G}/{V}/{P}")
    _, selected = await call(api, "GET", f"/apis/{G}/{V}/{P}?labelSelector=app%3Dx")
    _, in_other = await call(api, "GET", f"/apis/{G}/{V}/namespaces/other/{P}")
    latest = kube.get(G, V, P, "b", "other")
    assert everywhere["kind"] == "WhatsAppInstanceList" and latest is not None
    assert everywhere["metadata"]["resourceVersion"] == latest["metadata"]["resourceVersion"]
    assert [o["metadata"]["name"] for o in everywhere["items"]] == ["a", "b"]
    assert [o["metadata"]["name"] for o in selected["items"]] == ["a"]
    assert [o["metadata"]["name"] for o in in_other["items"]] == ["b"]


async def test_watch_from_resource_version_replays_only_later_events(
    api: aiohttp.ClientSession, kube: KubeStandin
) -> None:
    first = kube.create(G, V, P, wai("first"), namespace="default")
    kube.create(G, V, P, wai("second"), namespace="default")
    kube.patch(G, V, P, "first", {"spec": {"number": OTHER_NUMBER}}, namespace="default")
    kube.delete(G, V, P, "second", namespace="default")
    since = first["metadata"]["resourceVersion"]
    async with api.get(WAIS, params={"watch": "true", "resourceVersion": since}) as resp:
        events = [await next_event(resp) for _ in range(3)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "second"),
        ("MODIFIED", "first"),
        ("DELETED", "second"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(since)  # DELETED has a new resourceVersion too


async def test_watch_without_resource_version_lists_then_streams(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    kube.create(G, V, P, wai("old"), namespace="default")
    async with api.get(WAIS, params={"watch": "1", "allowWatchBookmarks": "true"}) as resp:
        initial = await next_event(resp)
        bookmark = await next_event(resp)
        kube.create(G, V, P, wai("new"), namespace="default")
        live = await next_event(resp)
    assert (initial["type"], initial["object"]["metadata"]["name"]) == ("ADDED", "old")
    assert bookmark["type"] == "BOOKMARK"
    assert (live["type"], live["object"]["metadata"]["name"]) == ("ADDED", "new")


async def test_watch_from_a_compacted_resource_version_is_410_gone() -> None:
    async with KubeStandin(history_size=2) as kube:
        first = kube.create(G, V, P, wai("a"), namespace="default")
        for name in "bcd":
            kube.create(G, V, P, wai(name), namespace="default")
        async with aiohttp.ClientSession(base_url=kube.url) as api:
            since = first["metadata"]["resourceVersion"]
            async with api.get(WAIS, params={"watch": "true", "resourceVersion": since}) as resp:
                error = await next_event(resp)
                assert await resp.content.readline() == b""  # the stream ends after the error
    assert error["type"] == "ERROR"
    assert error["object"]["kind"] == "Status" and error["object"]["code"] == 410


async def test_watch_sends_bookmarks_with_the_current_version_when_idle() -> None:
    async with (
        KubeStandin(bookmark_interval=0.05) as kube,
        aiohttp.ClientSession(base_url=kube.url) as api,
    ):
        params = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": "1"}
        async with api.get(WAIS, params=params) as resp:
            after_replay = await next_event(resp)
            kube.create(G, V, P, wai("a"), namespace="default")
            added = await next_event(resp)
            idle = await next_event(resp)
    assert after_replay["type"] == "BOOKMARK" and added["type"] == "ADDED"
    assert after_replay["object"]["metadata"]["resourceVersion"] == "1"  # as of subscribing
    assert idle["type"] == "BOOKMARK"
    assert idle["object"]["metadata"]["resourceVersion"] == added["object"]["metadata"]["resourceVersion"]


async def test_watch_with_initial_events_marks_their_end(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    kube.create(G, V, P, wai("a"), namespace="default")
    params = {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
    }
    async with api.get(WAIS, params=params) as resp:
        added, bookmark = await next_event(resp), await next_event(resp)
    assert added["type"] == "ADDED"
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_watch_follows_the_label_selector(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    params = {"watch": "true", "labelSelector": "app=x,tier!=db", "resourceVersion": "1"}
    async with api.get(WAIS, params=params) as resp:
        kube.create(G, V, P, wai("unlabelled"), namespace="default")
        kube.create(
            G,
            V,
            P,
            {**wai("a"), "metadata": {"name": "a", "labels": {"app": "x"}}},
            namespace="default",
        )
        kube.patch(G, V, P, "a", {"metadata": {"labels": {"tier": "db"}}}, namespace="default")
        kube.patch(G, V, P, "unlabelled", {"metadata": {"labels": {"app": "x"}}}, namespace="default")
        events = [await next_event(resp) for _ in range(3)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("DELETED", "a"),
        ("ADDED", "unlabelled"),
    ]


async def test_watch_ends_at_timeout_seconds(api: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with api.get(WAIS, params={"watch": "true", "timeoutSeconds": "0.1"}) as resp:
        assert await asyncio.wait_for(resp.content.read(), timeout=5) == b""
    assert time.monotonic() - started < 2


async def test_stop_ends_open_watches_promptly(kube: KubeStandin, api: aiohttp.ClientSession) -> None:
    async with api.get(WAIS, params={"watch": "true"}) as resp:
        started = time.monotonic()
        await kube.stop()
        assert await asyncio.wait_for(resp.content.read(), timeout=5) == b""
    assert time.monotonic() - started < 2


# ---- discovery and bookkeeping -----------------------------------------------------------------


async def test_discovery_lists_core_resources_and_the_status_subresource(
    api: aiohttp.ClientSession,
) -> None:
    _, core = await call(api, "GET", "/api/v1")
    _, groups = await call(api, "GET", "/apis")
    _, ours = await call(api, "GET", f"/apis/{G}/{V}")
    by_name = {r["name"]: r for r in core["resources"] + ours["resources"]}
    assert {"namespaces", "events", "secrets"} <= by_name.keys()
    assert by_name["namespaces"]["namespaced"] is False
    assert {"list", "watch", "patch", "create"} <= set(by_name["events"]["verbs"])
    assert by_name[P]["shortNames"] == ["wai"] and by_name[P]["categories"] == ["whatsapp"]
    assert by_name[f"{P}/status"]["verbs"] == ["get", "patch", "update"]
    assert G in [g["name"] for g in groups["groups"]]
    assert "kopf.dev" not in [g["name"] for g in groups["groups"]]
    assert (await call(api, "GET", "/version"))[0] == 200


async def test_peering_resources_are_served_on_request() -> None:
    async with (
        KubeStandin(peering=True) as kube,
        aiohttp.ClientSession(base_url=kube.url) as api,
    ):
        _, peering = await call(api, "GET", "/apis/kopf.dev/v1")
    assert {(r["name"], r["namespaced"]) for r in peering["resources"]} == {
        ("clusterkopfpeerings", False),
        ("kopfpeerings", True),
    }


async def test_creating_a_crd_serves_its_resource() -> None:
    async with (
        KubeStandin(crds_installed=False) as kube,
        aiohttp.ClientSession(base_url=kube.url) as api,
    ):
        assert (await call(api, "GET", f"/apis/{G}/{V}"))[0] == 404
        crd = {
            "metadata": {"name": f"{P}.{G}"},
            "spec": {
                "group": G,
                "scope": "Namespaced",
                "names": {
                    "plural": P,
                    "singular": "whatsappinstance",
                    "kind": "WhatsAppInstance",
                },
                "versions": [{"name": V, "served": True, "storage": True, "subresources": {"status": {}}}],
            },
        }
        status, created = await call(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        _, ours = await call(api, "GET", f"/apis/{G}/{V}")
    assert status == 201
    assert {"type": "Established", "status": "True"}.items() <= created["status"]["conditions"][1].items()
    assert {r["name"] for r in ours["resources"]} == {P, f"{P}/status"}


async def test_requests_are_recorded_with_rbac_verbs(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    await call(api, "POST", WAIS, wai("one"))
    await call(api, "PATCH", f"{WAIS}/one/status", {"status": {}}, MERGE)
    await call(api, "GET", f"/apis/{G}/{V}/{P}")
    await call(api, "DELETE", f"{WAIS}/one")
    assert [(r.verb, r.api_group, r.resource, r.subresource, r.namespace, r.name) for r in kube.requests] == [
        ("create", G, P, None, "default", None),
        ("patch", G, P, "status", "default", "one"),
        ("list", G, P, None, None, None),
        ("delete", G, P, None, "default", "one"),
    ]
    assert kube.requests[1].content_type == "application/merge-patch+json"


async def test_official_client_works_through_the_kubeconfig(kube: KubeStandin, tmp_path: Any) -> None:
    kube.write_kubeconfig(tmp_path / "kubeconfig")
    client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(tmp_path / "kubeconfig")
    )
    custom = kubernetes.client.CustomObjectsApi(client)
    try:
        # The official client is synchronous; the stand-in runs on this loop, so use a thread.
        created = await asyncio.to_thread(custom.create_namespaced_custom_object, G, V, "default", P, wai("one"))
        with pytest.raises(kubernetes.client.ApiException) as raised:
            await asyncio.to_thread(custom.create_namespaced_custom_object, G, V, "default", P, wai("one"))
    finally:
        client.close()
    assert isinstance(created, dict) and created["metadata"]["uid"]
    assert raised.value.status == 409


async def test_wait_for_wakes_on_writes_and_reports_the_last_object(kube: KubeStandin) -> None:
    kube.create(G, V, P, wai("one"), namespace="default")
    waiter = asyncio.create_task(
        kube.wait_for(
            G,
            V,
            P,
            "one",
            lambda o: o is not None and o.get("status") == {"phase": "Connected"},
            namespace="default",
        )
    )
    await asyncio.sleep(0)  # let the waiter see the unready object first
    kube.patch(G, V, P, "one", {"status": {"phase": "Connected"}}, namespace="default", subresource="status")
    ready = await waiter
    assert ready is not None and ready["status"] == {"phase": "Connected"}
    with pytest.raises(AssertionError, match='"phase": "Connected"'):
        await kube.wait_for(G, V, P, "one", lambda o: o is None, namespace="default", timeout=0.05)


async def test_python_api_errors_carry_the_status(kube: KubeStandin) -> None:
    with pytest.raises(KubeApiError) as raised:
        kube.delete(G, V, P, "absent", namespace="default")
    assert raised.value.code == 404 and raised.value.status["reason"] == "NotFound"


# ---- the CRD schema ----------------------------------------------------------------------------


def set_status(kube: KubeStandin, status: dict[str, Any], name: str = "one") -> dict[str, Any]:
    return kube.patch(G, V, P, name, {"status": status}, namespace="default", subresource="status")


@pytest.mark.parametrize(
    "status,field,message",
    [
        (
            {"connection": {"statusReason": 2**63}},
            "status.connection.statusReason",
            ('Invalid value: "number": status.connection.statusReason in body must be of type integer: "number"'),
        ),
        (
            {"qr": {"count": True}},
            "status.qr.count",
            'Invalid value: "boolean": status.qr.count in body must be of type integer: "boolean"',
        ),
        (
            {"phase": "Ready"},
            "status.phase",
            (
                'Unsupported value: "Ready": supported values: "Pending", "Creating", "AwaitingScan", '
                '"Connecting", "Connected", "Disconnected", "LoggedOut", "Failed"'
            ),
        ),
    ],
)
async def test_a_status_outside_the_schema_is_422_and_changes_nothing(
    kube: KubeStandin, status: dict[str, Any], field: str, message: str
) -> None:
    kube.create(G, V, P, wai("one"), namespace="default")
    before = set_status(kube, {"phase": "Connected", "connection": {"statusReason": 200}})
    with pytest.raises(KubeApiError) as raised:
        set_status(kube, status)
    assert raised.value.code == 422 and raised.value.reason == "Invalid"
    details = raised.value.status["details"]
    assert details["causes"][0]["field"] == field
    assert details["causes"][0]["message"] == message
    assert raised.value.status["message"] == (
        f'WhatsAppInstance.whatsapp-operator.io "one" is invalid: {field}: {message}'
    )
    assert kube.get(G, V, P, "one", "default") == before  # same resourceVersion too


async def test_unknown_fields_are_pruned_silently(kube: KubeStandin) -> None:
    kube.create(G, V, P, wai("one"), namespace="default")
    written = set_status(kube, {"phase": "Connected", "bogus": 1, "qr": {"count": 1, "x": "y"}})
    assert written["status"] == {"phase": "Connected", "qr": {"count": 1}}
    again = set_status(kube, {"bogus": 2})  # nothing declared changes: a no-op write
    assert again["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    respecced = kube.patch(G, V, P, "one", {"spec": {"unknown": "x"}}, namespace="default")
    assert "unknown" not in respecced["spec"] and respecced["metadata"]["generation"] == 1


async def test_an_invalid_status_merge_patch_over_http_is_a_422_status(
    api: aiohttp.ClientSession, kube: KubeStandin
) -> None:
    _, created = await call(api, "POST", WAIS, wai("shop"))
    since = created["metadata"]["resourceVersion"]
    async with api.get(WAIS, params={"watch": "true", "resourceVersion": since}) as watch:
        status, body = await call(
            api,
            "PATCH",
            f"{WAIS}/shop/status",
            {"status": {"phase": "Connected", "connection": {"statusReason": 2**63}}},
            MERGE,
        )
        assert status == 422
        assert body == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'WhatsAppInstance.whatsapp-operator.io "shop" is invalid: '
            'status.connection.statusReason: Invalid value: "number": '
            'status.connection.statusReason in body must be of type integer: "number"',
            "reason": "Invalid",
            "details": {
                "name": "shop",
                "group": G,
                "kind": "WhatsAppInstance",
                "causes": [
                    {
                        "reason": "FieldValueTypeInvalid",
                        "message": 'Invalid value: "number": status.connection.statusReason in '
                        'body must be of type integer: "number"',
                        "field": "status.connection.statusReason",
                    }
                ],
            },
            "code": 422,
        }
        assert kube.get(G, V, P, "shop", "default") == created
        status, valid = await call(api, "PATCH", f"{WAIS}/shop/status", {"status": {"phase": "Connected"}}, MERGE)
        assert status == 200 and valid["status"] == {"phase": "Connected"}
        event = await next_event(watch)  # the refused write sent no event
        status, same = await call(api, "PATCH", f"{WAIS}/shop/status", {"status": {"bogus": 1}}, MERGE)
        assert status == 200 and same == valid  # pruned: a no-op
    assert event["type"] == "MODIFIED" and event["object"]["status"] == {"phase": "Connected"}
    assert [r.status for r in kube.requests if r.subresource == "status"] == [422, 200, 200]


async def test_every_kind_of_write_is_validated(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    status, body = await call(api, "POST", WAIS, wai("bad", number="123"))
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.number"
    assert kube.get(G, V, P, "bad", "default") is None
    no_spec = wai("nospec")
    del no_spec["spec"]
    status, body = await call(api, "POST", WAIS, no_spec)
    assert status == 422 and body["message"].endswith("is invalid: spec: Required value")

    _, obj = await call(api, "POST", WAIS, wai("one"))
    ops = [{"op": "replace", "path": "/spec/integration", "value": "EVOLUTION"}]
    status, body = await call(api, "PATCH", f"{WAIS}/one", ops, JSONPATCH)
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.integration"
    ops = [{"op": "add", "path": "/status", "value": {"conditions": [{"type": "Ready"}]}}]
    status, body = await call(api, "PATCH", f"{WAIS}/one/status", ops, JSONPATCH)
    assert status == 422 and body["details"]["causes"][0]["field"] == "status.conditions[0].status"
    status, body = await call(api, "PUT", f"{WAIS}/one", {**obj, "spec": {"number": "x"}})
    assert status == 422
    status, body = await call(api, "PUT", f"{WAIS}/one/status", {**obj, "status": {"qr": {"updatedAt": "today"}}})
    assert status == 422 and body["details"]["causes"][0]["field"] == "status.qr.updatedAt"
    assert kube.get(G, V, P, "one", "default") == obj


async def test_defaults_are_applied_on_create_and_update(kube: KubeStandin) -> None:
    created = kube.create(G, V, P, wai("one"), namespace="default")
    assert created["spec"] == {"number": NUMBER, **BAILEYS}
    patched = kube.patch(G, V, P, "one", {"spec": {"integration": None, "settings": {"rejectCall": True}}}, "default")
    assert patched["spec"]["integration"] == "WHATSAPP-BAILEYS"  # null: defaulted again
    assert patched["spec"]["settings"] == {
        "rejectCall": True,
        "groupsIgnore": False,
        "alwaysOnline": False,
        "readMessages": False,
        "readStatus": False,
        "syncFullHistory": False,
    }


async def test_a_crd_created_through_the_api_brings_its_schema() -> None:
    crd = yaml.safe_load((CRDS_DIR / f"{P}.{G}.yaml").read_text())
    async with KubeStandin(crds_installed=False) as kube:
        kube.create("apiextensions.k8s.io", "v1", "customresourcedefinitions", crd)
        kube.create(G, V, P, wai("one"), namespace="default")
        with pytest.raises(KubeApiError) as raised:
            set_status(kube, {"phase": "Ready"})
        assert raised.value.code == 422
        # Updating the CRD updates the schema: here, phase loses its enum.
        phase = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]
        del phase["enum"]
        current = kube.get("apiextensions.k8s.io", "v1", "customresourcedefinitions", f"{P}.{G}")
        assert current is not None
        kube.patch("apiextensions.k8s.io", "v1", "customresourcedefinitions", f"{P}.{G}", {"spec": crd["spec"]})
        assert set_status(kube, {"phase": "Ready"})["status"] == {"phase": "Ready"}


async def test_a_crd_with_a_schema_the_stand_in_cannot_check_is_refused() -> None:
    crd = yaml.safe_load((CRDS_DIR / f"{P}.{G}.yaml").read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["anyOf"] = []
    async with KubeStandin(crds_installed=False) as kube:
        with pytest.raises(KubeApiError, match="does not implement") as raised:
            kube.create("apiextensions.k8s.io", "v1", "customresourcedefinitions", crd)
        assert raised.value.code == 422
        assert kube.list("apiextensions.k8s.io", "v1", "customresourcedefinitions") == []


# ---- fault injection ---------------------------------------------------------------------------


async def test_fail_next_answers_a_conflict_without_side_effects(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    _, obj = await call(api, "POST", WAIS, wai("one"))
    kube.fail_next("PATCH", f"{WAIS}/one", 409)
    patch = {"metadata": {"labels": {"a": "b"}}}
    status, body = await call(api, "PATCH", f"{WAIS}/one", patch, MERGE)
    assert status == 409
    assert body["kind"] == "Status" and body["reason"] == "Conflict" and body["code"] == 409
    assert body["message"].startswith(f'Operation cannot be fulfilled on {P}.{G} "one": ')
    assert body["details"] == {"name": "one", "group": G, "kind": P}
    assert kube.get(G, V, P, "one", "default") == obj
    status, patched = await call(api, "PATCH", f"{WAIS}/one", patch, MERGE)
    assert status == 200 and patched["metadata"]["labels"] == {"a": "b"}
    assert [r.status for r in kube.requests if r.method == "PATCH"] == [409, 200]
    assert kube.failures_served == 1


async def test_fail_next_too_many_requests_carries_retry_after(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    kube.fail_next("GET", "/apis", 429)
    kube.fail_next("GET", "/apis", 429, retry_after=7)
    for expected in (1, 7):
        async with api.get(f"/apis/{G}/{V}/{P}") as resp:
            body = await resp.json()
            assert resp.status == 429 and resp.headers["Retry-After"] == str(expected)
        assert body["reason"] == "TooManyRequests"
        assert body["details"]["retryAfterSeconds"] == expected
    async with api.get(f"/apis/{G}/{V}/{P}") as resp:
        assert resp.status == 200 and "Retry-After" not in resp.headers


async def test_fail_next_internal_error_times_and_no_create(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    kube.fail_next("POST", WAIS, 500, times=2)
    for _ in range(2):
        status, body = await call(api, "POST", WAIS, wai("one"))
        assert status == 500 and body["reason"] == "InternalError"
        assert body["details"]["causes"] == [{"message": "injected fault"}]
        assert kube.get(G, V, P, "one", "default") is None
    assert (await call(api, "POST", WAIS, wai("one")))[0] == 201
    assert kube.failures_served == 2


async def test_fail_next_invalid_and_a_custom_body(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    await call(api, "POST", WAIS, wai("one"))
    kube.fail_next("PATCH", f"{WAIS}/one/status", 422)
    kube.fail_next("*", f"{WAIS}/one", 418, body={"teapot": True})
    status, body = await call(api, "PATCH", f"{WAIS}/one/status", {"status": {}}, MERGE)
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"] == 'WhatsAppInstance.whatsapp-operator.io "one" is invalid: injected fault'
    assert (await call(api, "GET", f"{WAIS}/one")) == (418, {"teapot": True})


async def test_fail_next_matches_the_content_type_and_patterns(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    await call(api, "POST", WAIS, wai("one"))
    kube.fail_next("patch", re.compile(rf"/{P}/[^/]+$"), 422, content_type="application/json-patch+json")
    status, _ = await call(api, "PATCH", f"{WAIS}/one/status", {"status": {}}, MERGE)
    assert status == 200  # neither the path pattern nor the content type matched
    status, _ = await call(api, "PATCH", f"{WAIS}/one", {"metadata": {"labels": {"a": "b"}}}, MERGE)
    assert status == 200  # a merge patch: not the content type asked for
    ops = [{"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]
    assert (await call(api, "PATCH", f"{WAIS}/one", ops, JSONPATCH))[0] == 422
    assert (await call(api, "PATCH", f"{WAIS}/one", ops, JSONPATCH))[0] == 200
    assert [(r.content_type, r.status) for r in kube.requests if r.method == "PATCH"] == [
        ("application/merge-patch+json", 200),
        ("application/merge-patch+json", 200),
        ("application/json-patch+json", 422),
        ("application/json-patch+json", 200),
    ]


async def test_fail_next_rules_are_used_in_order_and_never_on_watches(
    api: aiohttp.ClientSession, kube: KubeStandin
) -> None:
    kube.fail_next("GET", WAIS, 409)
    kube.fail_next("*", "/apis/", 500)
    async with api.get(WAIS, params={"watch": "true", "timeoutSeconds": "0.05"}) as watch:
        assert watch.status == 200
        await watch.read()
    assert [(await call(api, "GET", WAIS))[0] for _ in range(3)] == [409, 500, 200]
    assert kube.failures_served == 2
    watch_record = next(r for r in kube.requests if r.verb == "watch")
    assert watch_record.status == 200


async def test_clear_failures_forgets_the_rules(api: aiohttp.ClientSession, kube: KubeStandin) -> None:
    kube.fail_next("*", "/", 503, times=5)
    assert (await call(api, "GET", "/api/v1"))[0] == 503
    kube.clear_failures()
    assert (await call(api, "GET", "/api/v1"))[0] == 200
    assert kube.failures_served == 1
    with pytest.raises(ValueError):
        kube.fail_next("GET", "/", 200)
    with pytest.raises(ValueError):
        kube.fail_next("GET", "/", 500, times=0)


async def test_kopf_retries_through_injected_server_errors(kube: KubeStandin) -> None:
    registry, deleted = kopf.OperatorRegistry(), list[str]()
    status_and_delete_handlers(registry, deleted)
    settings = quick_settings()
    settings.networking.error_backoffs = [0.01] * 5
    kube.fail_next("PATCH", WAIS, 500, times=2, content_type="application/json-patch+json")
    kube.fail_next("PATCH", re.compile(r"/status$"), 503, times=2)
    async with running_operator(registry, server_url=kube.url, settings=settings):
        kube.create(G, V, P, wai("one"), namespace="default")
        await kube.wait_for(
            G,
            V,
            P,
            "one",
            namespace="default",
            predicate=lambda o: (
                o is not None
                and o.get("status", {}).get("phase") == "Creating"
                and KOPF_FINALIZER in o["metadata"].get("finalizers", [])
            ),
        )
    assert kube.failures_served == 4
    finalizer_patches = [r.status for r in kube.requests if r.content_type == JSONPATCH["Content-Type"]]
    assert finalizer_patches[:3] == [500, 500, 200]
    status_patches = [r.status for r in kube.requests if r.subresource == "status"]
    assert status_patches[:3] == [503, 503, 200]


# ---- pure helpers ------------------------------------------------------------------------------


def test_merge_patch_follows_rfc_7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3},
        "d": [2],
    }


def test_json_patch_operations() -> None:
    doc = {"a": [1, 2], "b": {"c~d/e": 1}}
    patched = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "remove", "path": "/a/0"},
            {"op": "move", "from": "/b/c~0d~1e", "path": "/f"},
            {"op": "copy", "from": "/f", "path": "/g"},
            {"op": "replace", "path": "/g", "value": 5},
            {"op": "test", "path": "/f", "value": 1},
        ],
    )
    assert patched == {"a": [2, 3], "b": {}, "f": 1, "g": 5}
    assert doc == {"a": [1, 2], "b": {"c~d/e": 1}}  # the input is untouched
    with pytest.raises(KubeApiError) as raised:
        json_patch(doc, [{"op": "remove", "path": "/missing"}])
    assert raised.value.code == 422


def test_label_selector_terms() -> None:
    def selects(selector: str, labels: dict[str, str]) -> bool:
        return parse_label_selector(selector)({"metadata": {"labels": labels}})

    assert selects("a", {"a": "1"}) and not selects("!a", {"a": "1"})
    assert selects("a in (1, 2),b notin (3)", {"a": "2", "b": "4"})
    assert not selects("a in (1,2)", {"a": "3"})
    assert selects("a==1", {"a": "1"}) and not selects("a=1,b=2", {"a": "1"})
    with pytest.raises(KubeApiError):
        parse_label_selector("a=1,=")


# ---- real kopf against the stand-in ------------------------------------------------------------


def quick_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 5  # a watch that somehow survives stopping ends soon anyway
    return settings


def status_and_delete_handlers(registry: kopf.OperatorRegistry, deleted: list[str]) -> None:
    @kopf.on.create(G, V, P, registry=registry)
    async def created(patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
        patch.status["phase"] = "Creating"
        # kopf 1.45 posts only explicit events by default (settings.posting.loggers is False).
        kopf.info(body, reason="Created", message="Instance seen")

    @kopf.on.delete(G, V, P, registry=registry)
    async def removed(name: str, **_: Any) -> None:
        deleted.append(name)


async def test_kopf_runs_create_status_finalizer_delete_cluster_wide(kube: KubeStandin) -> None:
    registry, deleted = kopf.OperatorRegistry(), list[str]()
    status_and_delete_handlers(registry, deleted)
    async with aiohttp.ClientSession(base_url=kube.url) as api:
        started = time.monotonic()
        async with running_operator(registry, server_url=kube.url, settings=quick_settings()):
            # A connection the operator does not own, opened while it runs (see kopf_harness).
            bystander = await api.get(WAIS, params={"watch": "true"})
            kube.create(G, V, P, wai("one"), namespace="default")
            handled = await kube.wait_for(
                G,
                V,
                P,
                "one",
                namespace="default",
                predicate=lambda o: (
                    o is not None
                    and o.get("status", {}).get("phase") == "Creating"
                    and KOPF_FINALIZER in o["metadata"].get("finalizers", [])
                ),
            )
            events = await kube.wait_until(lambda: kube.events_for("default", "one"))
            kube.delete(G, V, P, "one", namespace="default")
            await kube.wait_for(G, V, P, "one", lambda o: o is None, namespace="default")
        elapsed = time.monotonic() - started
        # Stopping the operator left the stand-in's other connections alone.
        kube.create(G, V, P, wai("after"), namespace="default")
        while (await next_event(bystander))["object"]["metadata"]["name"] != "after":
            pass
        bystander.release()
    assert handled is not None
    assert handled["spec"] == {"number": NUMBER, **BAILEYS}
    assert handled["metadata"]["generation"] == 1
    assert deleted == ["one"]
    assert [(e["reason"], e["involvedObject"]["kind"]) for e in events] == [("Created", "WhatsAppInstance")]
    assert elapsed < 5
    writes = {(r.verb, r.subresource, r.content_type) for r in kube.requests if r.resource == P}
    assert ("patch", "status", "application/merge-patch+json") in writes
    assert ("patch", None, "application/json-patch+json") in writes  # the finalizer, with a test op


async def test_kopf_runs_namespaced(kube: KubeStandin) -> None:
    registry, deleted = kopf.OperatorRegistry(), list[str]()
    status_and_delete_handlers(registry, deleted)
    kube.create("", "v1", "namespaces", {"metadata": {"name": "elsewhere"}})
    async with running_operator(registry, server_url=kube.url, settings=quick_settings(), namespaces=["default"]):
        kube.create(G, V, P, wai("outside"), namespace="elsewhere")
        kube.create(G, V, P, wai("inside"), namespace="default")
        await kube.wait_for(
            G,
            V,
            P,
            "inside",
            namespace="default",
            predicate=lambda o: o is not None and "status" in o,
        )
    outside = kube.get(G, V, P, "outside", "elsewhere")
    assert outside is not None and "status" not in outside
    verbs = {(r.verb, r.resource, r.namespace) for r in kube.requests}
    assert {
        ("list", "namespaces", None),
        ("watch", "namespaces", None),
        ("watch", P, "default"),
    } <= verbs
    assert not any(r.resource == P and r.namespace != "default" for r in kube.requests)


async def test_two_peering_operators_share_the_loop_without_stopping_each_other() -> None:
    def operator(tag: str, priority: int) -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings]:
        registry, settings = kopf.OperatorRegistry(), quick_settings()
        settings.peering.priority = priority
        # kopf keeps a paused peer's object workers until this timeout when it exits.
        settings.queueing.exit_timeout = 0.2

        @kopf.on.create(G, V, P, registry=registry)
        async def created(patch: kopf.Patch, **_: Any) -> None:
            patch.status["message"] = tag  # a field the CRD schema declares

        return registry, settings

    def peers(kube: KubeStandin) -> dict[str, Any]:
        peering = kube.get("kopf.dev", "v1", "clusterkopfpeerings", "default") or {}
        return peering.get("status") or {}

    async with KubeStandin(peering=True) as kube:
        kube.create("kopf.dev", "v1", "clusterkopfpeerings", {"metadata": {"name": "default"}})
        (reg_a, set_a), (reg_b, set_b) = operator("a", 10), operator("b", 20)
        async with running_operator(reg_a, server_url=kube.url, settings=set_a, standalone=False):
            async with running_operator(reg_b, server_url=kube.url, settings=set_b, standalone=False):
                both = await kube.wait_until(lambda: peers(kube) if len(peers(kube)) == 2 else None)
            kube.create(G, V, P, wai("after-b"), namespace="default")
            handled = await kube.wait_for(
                G,
                V,
                P,
                "after-b",
                namespace="default",
                predicate=lambda o: o is not None and "status" in o,
            )
    assert both is not None and handled is not None
    assert sorted(peer["priority"] for peer in both.values()) == [10, 20]
    assert handled["status"] == {"message": "a"}  # operator a outlived b's shutdown


# kopf cancels its credentials retriever before it ever ran when the startup fails.
@pytest.mark.filterwarnings("ignore:coroutine 'authenticator' was never awaited:RuntimeWarning")
async def test_harness_raises_what_kopf_failed_with_at_startup(kube: KubeStandin) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def refuse(**_: Any) -> None:
        raise kopf.PermanentError("no way")

    started = time.monotonic()
    with pytest.raises(Exception, match="handlers failed") as raised:
        async with running_operator(registry, server_url=kube.url):
            pytest.fail("the operator must not become ready")
    assert type(raised.value).__name__ == "ActivityError"
    assert time.monotonic() - started < 2


async def test_a_list_in_chunks_is_one_snapshot(kube: KubeStandin, api: aiohttp.ClientSession) -> None:
    for name in ("a", "b", "c", "d", "e"):
        kube.create(G, V, P, wai(name), namespace="default")
    async with api.get(WAIS, params={"limit": "2"}) as response:
        first = await response.json()
    assert [item["metadata"]["name"] for item in first["items"]] == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 3
    kube.create(G, V, P, wai("f"), namespace="default")  # after the snapshot: not in this list
    kube.delete(G, V, P, "c", namespace="default")
    names, token = [], first["metadata"]["continue"]
    while token:
        async with api.get(WAIS, params={"limit": "2", "continue": token}) as response:
            chunk = await response.json()
        assert chunk["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        names += [item["metadata"]["name"] for item in chunk["items"]]
        token = chunk["metadata"].get("continue")
    assert names == ["c", "d", "e"]
    async with api.get(WAIS) as response:  # no limit: everything, no token
        whole = await response.json()
    assert [item["metadata"]["name"] for item in whole["items"]] == ["a", "b", "d", "e", "f"]
    assert "continue" not in whole["metadata"]


async def test_an_expired_or_unknown_continue_token(kube: KubeStandin, api: aiohttp.ClientSession) -> None:
    for name in ("a", "b", "c"):
        kube.create(G, V, P, wai(name), namespace="default")
    async with api.get(WAIS, params={"limit": "1"}) as response:
        token = (await response.json())["metadata"]["continue"]
    kube.expire_list_continuations()
    async with api.get(WAIS, params={"limit": "1", "continue": token}) as response:
        assert response.status == 410 and (await response.json())["reason"] == "Expired"
    async with api.get(WAIS, params={"limit": "1", "continue": "never-issued"}) as response:
        assert response.status == 400
    async with api.get(WAIS, params={"limit": "many"}) as response:
        assert response.status == 400


async def test_a_list_asked_as_partial_object_metadata(kube: KubeStandin, api: aiohttp.ClientSession) -> None:
    kube.create(G, V, P, wai("one"), namespace="default")
    partial = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"
    async with api.get(WAIS, headers={"Accept": partial}) as response:
        body = await response.json()
    assert (body["kind"], body["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    (item,) = body["items"]
    assert set(item) == {"kind", "apiVersion", "metadata"} and item["metadata"]["name"] == "one"
    async with api.get(WAIS, headers={"Accept": "application/json"}) as response:
        body = await response.json()
    assert body["kind"] == "WhatsAppInstanceList" and body["items"][0]["spec"]["number"] == NUMBER
