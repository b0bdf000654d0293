"""The aiohttp transport under httpx: what httpx callers rely on holds (errors, raw bodies, timeouts)."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from whatsapp_operator.http_transport import AiohttpTransport, CookielessClient


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"ok": true}'), headers={"Content-Encoding": "gzip"})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {"method": request.method, "body": (await request.read()).decode(), "key": request.headers.get("apikey")},
            status=201,
            reason="Made",
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/gzip", gzipped)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_requests_and_answers_go_through_unchanged(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, transport=AiohttpTransport()) as client:
        response = await client.patch("/echo", content=b'{"a":1}', headers={"apikey": "k"})
        assert response.status_code == 201 and response.reason_phrase == "Made"
        assert response.json() == {"method": "PATCH", "body": '{"a":1}', "key": "k"}


async def test_bodies_arrive_raw_for_callers_that_decode_them_and_decoded_for_the_rest(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, transport=AiohttpTransport()) as client:
        async with client.stream("GET", "/gzip") as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert gzip.decompress(raw) == b'{"ok": true}'
        assert (await client.get("/gzip")).json() == {"ok": True}


async def test_a_refused_connection_is_an_httpx_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_a_slow_answer_is_an_httpx_timeout(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, transport=AiohttpTransport(), timeout=0.2) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.get("/slow")


async def test_cookies_a_server_sets_are_neither_kept_nor_sent() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=abc; Path=/"}, json={})

    async with CookielessClient(base_url="http://kube.test", transport=httpx.MockTransport(answer)) as client:
        await client.get("/a")
        await client.get("/b")
        assert not client.cookies
    assert seen == [None, None]
