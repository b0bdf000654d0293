"""The operator's own Kubernetes client: status patches and a fresh login after a 401."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import httpx
import kopf
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.kube.client import KubeClient, KubeError

from instances import instance_body


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """`app` on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def apiserver():
    seen: list[tuple[str, str, dict]] = []

    async def patch_status(request: web.Request) -> web.Response:
        if request.headers.get("authorization") != "Bearer rotated-token":
            return web.json_response({"kind": "Status", "code": 401, "message": "Unauthorized"}, status=401)
        seen.append((request.path, request.content_type, await request.json()))
        return web.json_response({"status": {}})

    app = web.Application()
    app.router.add_patch(
        "/apis/whatsapp-operator.io/v1alpha1/namespaces/{ns}/whatsappinstances/{name}/status", patch_status
    )
    async with serving(app) as url:
        yield url, seen


async def test_a_401_loads_fresh_credentials_and_retries_once(apiserver):
    url, seen = apiserver
    logins = []

    def login() -> kopf.ConnectionInfo:
        logins.append(1)
        return kopf.ConnectionInfo(server=url, token="rotated-token")

    kube = KubeClient(login=login)
    kube.use_credentials(kopf.ConnectionInfo(server=url, token="expired-token"))
    await kube.patch_status("default", "shop", {"phase": "Connected"})
    assert seen == [
        (
            "/apis/whatsapp-operator.io/v1alpha1/namespaces/default/whatsappinstances/shop/status",
            "application/merge-patch+json",
            {"status": {"phase": "Connected"}},
        )
    ]
    assert len(logins) == 1
    await kube.aclose()


async def test_a_401_that_persists_is_an_error_without_the_token(apiserver):
    url, _ = apiserver
    kube = KubeClient(login=lambda: kopf.ConnectionInfo(server=url, token="still-wrong-token"))
    kube.use_credentials(kopf.ConnectionInfo(server=url, token="expired-token"))
    with pytest.raises(KubeError) as caught:
        await kube.patch_status("default", "shop", {"phase": "Connected"})
    assert caught.value.status == 401
    assert "still-wrong-token" not in str(caught.value) and "expired-token" not in str(caught.value)
    await kube.aclose()


async def test_a_status_patch_answered_200_with_something_not_json_is_an_error() -> None:
    # The object a status PATCH returns is not decoded (nobody reads it), but a 200 that is not
    # JSON came from something in between (a login page of a proxy): not taken as written.
    async def html(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="<html>sign in</html>", content_type="text/html")

    async def accepted(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            body=b'{"kind": "WhatsAppInstance", "status": {"qr": {"base64": "' + b"A" * 4000 + b'"}}}',
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_patch(
        "/apis/whatsapp-operator.io/v1alpha1/namespaces/default/whatsappinstances/proxied/status", html
    )
    app.router.add_patch(
        "/apis/whatsapp-operator.io/v1alpha1/namespaces/default/whatsappinstances/shop/status", accepted
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    kube = KubeClient(login=None)
    kube.use_credentials(kopf.ConnectionInfo(server=url, token="t"))
    try:
        assert await kube.patch_status("default", "shop", {"phase": "Connected"}) is None
        with pytest.raises(KubeError) as caught:
            await kube.patch_status("default", "proxied", {"phase": "Connected"})
        assert caught.value.status is None and "not JSON" in str(caught.value)
    finally:
        await kube.aclose()
        await runner.cleanup()


async def test_every_request_carries_the_clients_headers_and_basic_auth():
    received: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.json_response({"status": {}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    async with serving(app) as url:
        kube = KubeClient()
        kube.use_credentials(kopf.ConnectionInfo(server=url, username="admin", password="pw"))
        try:
            await kube.patch_status("default", "shop", {"phase": "Connected"})
            await kube.get_instance("default", "shop")
        finally:
            await kube.aclose()
    patch, get = received
    assert patch["Authorization"] == get["Authorization"] == "Basic YWRtaW46cHc="
    assert patch["Content-Type"] == "application/merge-patch+json" and "Content-Type" not in get
    assert patch["User-Agent"] == get["User-Agent"] == "whatsapp-operator"
    assert patch["Accept"] == get["Accept"] == "application/json"


async def all_pages(client: KubeClient, page_size: int = 200) -> list[list[dict]]:
    return [page async for page in client.instance_metadata_pages(page_size)]


async def test_the_instance_metadata_list_asks_for_metadata_only_a_page_at_a_time(kube):
    # The stand-in answers as a real apiserver does: a PartialObjectMetadataList, no spec, no status,
    # at most `limit` items and a continue token while more remain.
    from whatsapp_operator.names import GROUP, PLURAL, VERSION

    for name in ("a", "b", "c", "d", "e"):
        kube.create(GROUP, VERSION, PLURAL, instance_body(name), namespace="default")
    client = KubeClient()
    client.use_credentials(kopf.ConnectionInfo(server=kube.url))
    try:
        pages = await all_pages(client, page_size=2)
    finally:
        await client.aclose()
    assert [[meta["name"] for meta in page] for page in pages] == [["a", "b"], ["c", "d"], ["e"]]
    assert all(meta["namespace"] == "default" and "uid" in meta for page in pages for meta in page)
    listed = [r for r in kube.requests if r.verb == "list" and r.resource == PLURAL]
    assert [r.status for r in listed] == [200, 200, 200]


async def test_a_continue_token_that_expired_mid_way_is_a_kube_error(kube):
    from whatsapp_operator.names import GROUP, PLURAL, VERSION

    for name in ("a", "b", "c"):
        kube.create(GROUP, VERSION, PLURAL, instance_body(name), namespace="default")
    client = KubeClient()
    client.use_credentials(kopf.ConnectionInfo(server=kube.url))
    seen: list[str] = []
    try:
        with pytest.raises(KubeError) as raised:
            async for page in client.instance_metadata_pages(2):
                seen += [meta["name"] for meta in page]
                kube.expire_list_continuations()
    finally:
        await client.aclose()
    assert seen == ["a", "b"] and raised.value.status == 410


async def test_a_server_that_sends_the_full_list_is_read_the_same_way():
    received: list[tuple[str, str]] = []

    async def full_list(request: web.Request) -> web.Response:
        received.append((request.headers.get("Accept", ""), request.query_string))
        item = {"kind": "WhatsAppInstance", "metadata": {"name": "a"}, "spec": {}, "status": {"qr": {"code": "x"}}}
        return web.json_response({"kind": "WhatsAppInstanceList", "items": [item, "not an object", {"spec": {}}]})

    app = web.Application()
    app.router.add_get("/apis/whatsapp-operator.io/v1alpha1/whatsappinstances", full_list)
    async with serving(app) as url:
        client = KubeClient()
        client.use_credentials(kopf.ConnectionInfo(server=url))
        try:
            found = await all_pages(client)
        finally:
            await client.aclose()
    assert found == [[{"name": "a"}]]
    assert received == [
        ("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json", "limit=200")
    ]


async def test_status_patches_and_reads_share_one_kept_alive_connection():
    # A status patch's answer is read to its end without being decoded: the connection must still
    # go back to the pool, or every write would open a new one.
    peers: list[object] = []

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"kind": "WhatsAppInstance", "status": {"qr": {"base64": "A" * 4000}}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with serving(app) as url:
        kube = KubeClient(login=None)
        kube.use_credentials(kopf.ConnectionInfo(server=url, token="t"))
        try:
            for index in range(5):
                assert await kube.patch_status("default", f"shop-{index}", {"phase": "Connected"}) is None
            assert (await kube.get_instance("default", "shop-0"))["kind"] == "WhatsAppInstance"
            assert await kube.patch_status("default", "shop-0", {"phase": "Connected"}) is None
        finally:
            await kube.aclose()
    assert len(peers) == 7 and len(set(peers)) == 1


async def test_the_nudger_leaves_the_loop_to_others_while_it_walks_thousands_of_objects(monkeypatch):
    from whatsapp_operator.kube.nudge import StuckObjectNudger
    from whatsapp_operator.pacing import ROWS_PER_TURN

    kube = KubeClient(login=None)
    listed = [
        {"namespace": "default", "name": f"shop-{index}", "finalizers": ["whatsapp-operator.io/finalizer"]}
        for index in range(1000)
    ]

    async def instance_metadata_pages() -> AsyncIterator[list[dict]]:
        yield listed  # a server that ignored `limit`

    monkeypatch.setattr(kube, "instance_metadata_pages", instance_metadata_pages)
    nudger = StuckObjectNudger(kube, after=60, clock=lambda: "now", is_tracked=lambda key: True)
    turns = 0
    nudging = asyncio.ensure_future(nudger.nudge())
    while not nudging.done():
        await asyncio.sleep(0)
        turns += 1
    nudging.result()
    assert turns >= 1000 // ROWS_PER_TURN


ANSWERS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=9), inner, max_size=3),
    max_leaves=8,
)
PAGE_ANSWERS = st.fixed_dictionaries(
    {},
    optional={
        "items": st.lists(st.one_of(ANSWERS, st.fixed_dictionaries({"metadata": ANSWERS})), max_size=4) | ANSWERS,
        "metadata": st.fixed_dictionaries({}, optional={"continue": st.sampled_from(["a", "b", ""]) | ANSWERS})
        | ANSWERS,
    },
)


@pytest.mark.properties
@given(st.lists(st.one_of(PAGE_ANSWERS, ANSWERS), min_size=1, max_size=6))
def test_any_answers_give_pages_of_metadata_objects_or_a_kube_error(answers: list[Any]) -> None:
    # Whatever a server sends for each page, even continue tokens forever: pages of dicts, a bounded
    # number of requests, and no exception but KubeError.
    from whatsapp_operator.kube import client as client_module

    kube = KubeClient(login=None)
    asked: list[str] = []

    def answer(request: int) -> Any:
        return answers[min(request, len(answers) - 1)]  # the last answer again and again

    async def call(method: str, path: str, **_: Any) -> Any:
        asked.append(path)
        return answer(len(asked) - 1)

    async def read() -> list[list[dict]]:
        pages: list[list[dict]] = []
        try:
            async for page in kube.instance_metadata_pages():
                pages.append(page)
        except KubeError:
            pass
        return pages

    with mock.patch.object(kube, "_call", call), mock.patch.object(client_module, "MAX_LIST_PAGES", 20):
        pages = asyncio.run(read())
    assert all(isinstance(meta, dict) for page in pages for meta in page)
    # One page per answer that is an object; an answer that is not one ends the list without a page.
    assert len(asked) <= 20 and len(pages) == len(asked) - (0 if isinstance(answer(len(asked) - 1), dict) else 1)


CONTENT_TYPE_NAMES = st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE", "X-Content-Type", "Accept"])
CONTENT_TYPE_VALUES = st.one_of(
    st.sampled_from(["application/json", "Application/JSON ; charset=utf-8", "application/json;v=2", " text/html", ""]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)


@pytest.mark.properties
@given(st.lists(st.tuples(CONTENT_TYPE_NAMES, CONTENT_TYPE_VALUES), max_size=4))
def test_an_answer_is_json_as_its_headers_say_whatever_they_are(headers: list[tuple[str, str]]) -> None:
    # The check reads the raw headers; it must say what httpx's Headers.get() says, several
    # Content-Type headers included.
    from whatsapp_operator.kube.client import _is_json

    response = httpx.Response(200, headers=headers)
    content_type = response.headers.get("content-type", "")
    assert _is_json(response) == (content_type.split(";", 1)[0].strip().lower() == "application/json")
