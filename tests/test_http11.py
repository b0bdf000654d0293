"""The Kubernetes client's HTTP/1.1 transport: the response parser on hostile bytes (property tests),
and the transport against real servers (aiohttp's, raw sockets for answers aiohttp would not send,
TLS with a test CA)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.http11 import (
    END,
    MAX_HEAD_BYTES,
    NEED_DATA,
    CookielessClient,
    Http11Transport,
    ProtocolError,
    RequestMaker,
    ResponseHead,
    ResponseParser,
)

# -- the parser ----------------------------------------------------------------------------------


def _run(parser: ResponseParser, pieces: list[bytes], *, eof: bool = True) -> tuple[ResponseHead | None, bytes, bool]:
    """Feed the pieces one by one; return the head, the body and whether END came."""
    head: ResponseHead | None = None
    body = b""
    pending = list(pieces)
    closed = False
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            if pending:
                parser.feed(pending.pop(0))
                continue
            if eof and not closed:
                parser.feed_eof()
                closed = True
                continue
            return head, body, False
        if event is END:
            return head, body, True
        if isinstance(event, ResponseHead):
            assert head is None
            head = event
        else:
            assert isinstance(event, bytes)
            body += event


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[start:end] for start, end in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.properties
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=600), max_size=6), st.booleans())
def test_any_bytes_give_events_or_a_protocol_error(data: bytes, cuts: list[int], head_request: bool) -> None:
    parser = ResponseParser(head_request=head_request)
    try:
        _run(parser, _split(data, cuts))
    except ProtocolError:
        pass


HEADER_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda name: name not in ("content-length", "transfer-encoding", "connection")
)
HEADER_VALUES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 /;=,", max_size=20).map(str.strip)


@pytest.mark.properties
@given(
    status=st.integers(min_value=200, max_value=599).filter(lambda code: code not in (204, 304)),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5),
    body=st.binary(max_size=3000),
    chunked=st.booleans(),
    chunk_sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=10),
    interim=st.booleans(),
)
def test_a_well_formed_answer_comes_out_whole_however_it_is_cut(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    chunked: bool,
    chunk_sizes: list[int],
    cuts: list[int],
    interim: bool,
) -> None:
    lines = [f"HTTP/1.1 {status} Some Reason"] + [f"{name}: {value}" for name, value in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = b""
        rest, sizes = body, list(chunk_sizes)
        while rest:
            size = sizes.pop(0) if sizes else len(rest)
            framed += f"{len(rest[:size]):x};ext=1\r\n".encode() + rest[:size] + b"\r\n"
            rest = rest[size:]
        framed += b"0\r\nx-trailer: 1\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        framed = body
    message = ("\r\n".join(lines) + "\r\n\r\n").encode() + framed
    if interim:
        message = b"HTTP/1.1 100 Continue\r\n\r\n" + message
    parser = ResponseParser()
    head, received, ended = _run(parser, _split(message, cuts), eof=False)
    assert ended and head is not None
    assert head.status == status and head.reason == b"Some Reason"
    assert received == body
    assert [(name.decode(), value.decode()) for name, value in head.headers[: len(headers)]] == [
        (name.lower(), value) for name, value in headers
    ]
    assert parser.reusable


@pytest.mark.parametrize(
    ("message", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", False),  # bytes nobody asked for
    ],
)
def test_which_connections_may_carry_another_request(message: bytes, reusable: bool) -> None:
    parser = ResponseParser()
    _, _, ended = _run(parser, [message], eof=False)
    assert ended and parser.reusable is reusable


def test_a_body_without_length_runs_to_the_close_and_the_connection_is_not_reused() -> None:
    parser = ResponseParser()
    head, body, ended = _run(parser, [b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"])
    assert head is not None and body == b"all of it" and ended and not parser.reusable


def test_a_head_request_has_no_body_whatever_the_length_says() -> None:
    parser = ResponseParser(head_request=True)
    _, body, ended = _run(parser, [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"], eof=False)
    assert ended and body == b"" and parser.reusable


@pytest.mark.parametrize(
    "message",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 20x OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa3\r\n\r\n",  # an Arabic-Indic digit
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",  # closed before the body ended
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nok",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * (MAX_HEAD_BYTES + 10),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000,
    ],
)
def test_malformed_or_truncated_answers_are_protocol_errors(message: bytes) -> None:
    with pytest.raises(ProtocolError):
        _run(ResponseParser(), [message])


def test_nothing_received_is_told_apart_from_half_an_answer() -> None:
    parser = ResponseParser()
    parser.feed_eof()
    assert parser.received_nothing
    with pytest.raises(ProtocolError):
        parser.next_event()
    half = ResponseParser()
    half.feed(b"HTTP/1.1 2")
    half.feed_eof()
    assert not half.received_nothing


# -- the transport against servers ---------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[object]]]:
    connections: list[object] = []  # the client address of every connection a request came on

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {"method": request.method, "body": (await request.read()).decode(), "path": request.path_qs},
            status=201,
            reason="Made",
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"one,", b"two,", b"three"):
            await response.write(piece)
        await response.write_eof()
        return response

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"ok": true}'), headers={"Content-Encoding": "gzip"})

    async def closing(request: web.Request) -> web.Response:
        return web.Response(text="bye", headers={"Connection": "close"})

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    @web.middleware
    async def count_connections(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        if peer not in connections:
            connections.append(peer)
        return await handler(request)

    app = web.Application(middlewares=[count_connections])
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/close", closing)
    app.router.add_get("/empty", empty)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, keepalive_timeout=0.3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", connections
    await runner.cleanup()


async def test_requests_and_answers_go_through_and_connections_are_reused(server: tuple[str, list[object]]) -> None:
    url, connections = server
    async with CookielessClient(base_url=url, transport=Http11Transport()) as client:
        for index in range(5):
            response = await client.patch(f"/echo?n={index}", content=b'{"a":1}')
            assert response.status_code == 201 and response.reason_phrase == "Made"
            assert response.json() == {"method": "PATCH", "body": '{"a":1}', "path": f"/echo?n={index}"}
        assert (await client.get("/chunked")).content == b"one,two,three"
        assert (await client.get("/gzip")).json() == {"ok": True}
        assert (await client.get("/empty")).status_code == 204
        head = await client.head("/echo")
        assert head.status_code == 201 and head.content == b""
    assert len(connections) == 1


async def test_concurrent_requests_open_connections_up_to_the_bound(server: tuple[str, list[object]]) -> None:
    url, connections = server
    async with CookielessClient(base_url=url, transport=Http11Transport(max_connections=3)) as client:
        answers = await asyncio.gather(*(client.post("/echo", content=str(n).encode()) for n in range(12)))
    assert sorted(answer.json()["body"] for answer in answers) == sorted(str(n) for n in range(12))
    assert 1 <= len(connections) <= 3


async def test_a_connection_the_server_closed_is_not_used_again(server: tuple[str, list[object]]) -> None:
    url, connections = server
    async with CookielessClient(base_url=url, transport=Http11Transport()) as client:
        assert (await client.get("/close")).text == "bye"
        assert (await client.get("/echo")).status_code == 201
        assert len(connections) == 2
        await asyncio.sleep(0.6)  # the server's keep-alive timeout (0.3 s) closes the idle connection
        assert (await client.get("/echo")).status_code == 201
    assert len(connections) == 3


async def test_timeouts_and_refusals_are_httpx_errors(server: tuple[str, list[object]]) -> None:
    url, _ = server
    async with CookielessClient(base_url=url, transport=Http11Transport(), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow")
        assert (await client.get("/echo")).status_code == 201  # the timed-out connection was dropped
    async with CookielessClient(base_url="http://127.0.0.1:9", transport=Http11Transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/")


async def test_a_full_pool_times_out_as_a_pool_timeout(server: tuple[str, list[object]]) -> None:
    url, _ = server
    transport = Http11Transport(max_connections=1)
    async with CookielessClient(base_url=url, transport=transport, timeout=httpx.Timeout(5, pool=0.1)) as client:
        async with client.stream("GET", "/chunked"):  # holds the only connection
            with pytest.raises(httpx.PoolTimeout):
                await client.get("/echo")
        assert (await client.get("/echo")).status_code == 201  # released when the stream closed


async def test_a_cancelled_request_frees_its_slot(server: tuple[str, list[object]]) -> None:
    url, _ = server
    async with CookielessClient(base_url=url, transport=Http11Transport(max_connections=1)) as client:
        task = asyncio.ensure_future(client.get("/slow"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await client.get("/echo")).status_code == 201


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _raw_server(answer: Answer) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    return head + await reader.readexactly(length)


async def test_odd_answers_are_protocol_errors_and_interim_answers_are_skipped() -> None:
    answers = iter(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"NOT HTTP AT ALL\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ]
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(next(answers))
        await writer.drain()
        writer.close()

    server, url = await _raw_server(answer)
    async with server, CookielessClient(base_url=url, transport=Http11Transport()) as client:
        assert (await client.get("/")).text == "ok"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")


async def test_a_request_is_sent_once_more_when_a_kept_connection_closes_unanswered() -> None:
    requests: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            requests.append(request)
            if len(requests) == 2:  # reads the second request, then closes without a word
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    server, url = await _raw_server(answer)
    async with server, CookielessClient(base_url=url, transport=Http11Transport()) as client:
        assert (await client.get("/first")).text == "ok"
        assert (await client.patch("/second", content=b"{}")).text == "ok"
    assert [request.split(b" ")[1] for request in requests] == [b"/first", b"/second", b"/second"]
    assert b"content-length: 2\r\n" in requests[1].lower()


async def test_tls_with_the_servers_ca_and_refused_without_it() -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
        await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    async with server:
        async with CookielessClient(base_url=url, transport=Http11Transport(verify=trusting)) as client:
            assert (await client.get("/")).text == "secure"
        async with CookielessClient(base_url=url, transport=Http11Transport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("/")
        async with CookielessClient(base_url=url, transport=Http11Transport(verify=False)) as client:
            assert (await client.get("/")).text == "secure"


async def test_bodies_arrive_raw_for_callers_that_decode_them_and_decoded_for_the_rest(
    server: tuple[str, list[object]],
) -> None:
    url, _ = server
    async with CookielessClient(base_url=url, transport=Http11Transport()) as client:
        async with client.stream("GET", "/gzip") as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert gzip.decompress(raw) == b'{"ok": true}'  # the Evolution client bounds the decoded size itself
        assert (await client.get("/gzip")).json() == {"ok": True}


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


async def test_made_requests_are_those_the_client_builds_with_urls_parsed_once() -> None:
    async with CookielessClient(
        base_url="https://apiserver.example:6443/k8s/clusters/c1", headers={"accept": "application/json"}, timeout=7.0
    ) as client:
        maker = RequestMaker(client)
        for path in ("/api/v1/namespaces/a/secrets/b", "/apis/g/v1/things?labelSelector=a%3Db&limit=200"):
            assert maker.url(path) == client._merge_url(path)  # a path prefix stays, as httpx merges it
            assert (maker.url(path) is maker.url(path)) is ("?" not in path)  # a query is seldom asked twice
            made = maker.build("PATCH", path, b"{}", ("content-type", "application/merge-patch+json"))
            built = client.build_request(
                "PATCH", path, content=b"{}", headers={"content-type": "application/merge-patch+json"}
            )
            assert (made.method, made.url, made.extensions) == (built.method, built.url, built.extensions)
            assert made.headers.raw == built.headers.raw  # the same headers, in the same order
            assert made.content == built.content == b"{}"
        for method, content in (("GET", None), ("DELETE", None), ("POST", None), ("PUT", b""), ("POST", b"[1]")):
            made = maker.build(method, "/api/v1/x", content)
            built = client.build_request(method, "/api/v1/x", content=content)
            assert (made.method, made.url, made.headers.raw) == (built.method, built.url, built.headers.raw), method
            assert made.content == built.content
        for content in (b"[1]", b"[1, 2]", b"[3]", b""):  # the kept headers of each length, and none mixed up
            made = maker.build("PATCH", "/api/v1/x", content, ("content-type", "application/merge-patch+json"))
            built = client.build_request(
                "PATCH", "/api/v1/x", content=content, headers={"content-type": "application/merge-patch+json"}
            )
            assert made.headers.raw == built.headers.raw and made.content == content
            made.headers["x-changed-by-a-caller"] = "1"  # a request's headers are its own
        assert "x-changed-by-a-caller" not in maker.build("PATCH", "/api/v1/x", b"[1]").headers
        assert "apikey" not in maker.build("GET", "/", None).headers
        client.headers["apikey"] = "rotated"
        assert "apikey" not in maker.build("GET", "/", None).headers  # merged before the change ...
        maker.forget()
        assert maker.build("GET", "/", None).headers["apikey"] == "rotated"  # ... and again after forget()
