"""The HTTP/1.1 transport under both httpx clients (Kubernetes API and Evolution API).

httpx stays the client API. Its default transport (httpcore) checks every pooled connection's
socket on every request, and aiohttp's request machinery (ClientRequest, connector, tracing, cookie
filtering) still cost about as much CPU per status write as everything else the operator does for a
QR event (bench/README.md, profile). Both APIs need little: one origin per client, HTTP/1.1
keep-alive, bodies framed by Content-Length, chunked or the connection's end, TLS with the
configured context. This module does exactly that: a sans-I/O response parser (`ResponseParser`,
property-tested on arbitrary bytes) and a pooled asyncio transport around it. Response bodies are
passed on raw: httpx decodes any Content-Encoding, or the caller does with its own bounds. No proxy
support (neither client used one before). `CookielessClient` is the httpx client both use.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx

MAX_HEAD_BYTES = 64 * 1024  # status line + headers (Go's server allows 1 MB, its client 10 MB; ours only reads)
MAX_CHUNK_LINE_BYTES = 4096
_NO_BODY_STATUSES = frozenset({204, 304})


class ProtocolError(Exception):
    """The bytes are not an HTTP/1.1 response this client can read."""


@dataclass(frozen=True)
class ResponseHead:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]


class _NeedData:
    pass


class _End:
    pass


NEED_DATA = _NeedData()
END = _End()
Event = ResponseHead | bytes | _NeedData | _End


class ResponseParser:
    """One response, from bytes to events: a `ResponseHead`, body `bytes` pieces, then `END`.

    `feed()` the bytes as they come and `feed_eof()` when the peer closes; `next_event()` returns
    `NEED_DATA` until more is needed, and raises `ProtocolError` for anything malformed, truncated or
    over the bounds.
    """

    def __init__(self, *, head_request: bool = False) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._head_request = head_request
        self._state = "head"
        self._remaining = 0
        self._keep_alive = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def feed_eof(self) -> None:
        self._eof = True

    @property
    def received_nothing(self) -> bool:
        """No byte of an answer yet: a closed keep-alive connection, not a half answer."""
        return self._state == "head" and not self._buffer

    def next_event(self) -> Event:
        state = self._state
        if state == "head":
            return self._head()
        if state == "length":
            return self._length_body()
        if state == "size":
            return self._chunk_size()
        if state == "data":
            return self._chunk_data()
        if state == "crlf":
            return self._chunk_crlf()
        if state == "trailers":
            return self._trailers()
        if state == "close":
            return self._until_close()
        return END

    # -- the head ---------------------------------------------------------------------------------

    def _head(self) -> Event:
        while True:
            end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError(f"response head longer than {MAX_HEAD_BYTES} bytes")
                if self._eof:
                    raise ProtocolError("connection closed before the response head ended")
                return NEED_DATA
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            head, http10, connection_close = _parse_head(raw)
            if 100 <= head.status < 200:
                if head.status == 101:
                    raise ProtocolError("unexpected 101 Switching Protocols")
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._keep_alive = not http10 and not connection_close
            self._frame(head)
            return head

    def _frame(self, head: ResponseHead) -> None:
        if self._head_request or head.status in _NO_BODY_STATUSES:
            self._finish()
            return
        transfer_encoding = [value for name, value in head.headers if name == b"transfer-encoding"]
        if transfer_encoding:
            codings = [part.strip().lower() for value in transfer_encoding for part in value.split(b",")]
            if codings[-1] == b"chunked":
                self._state = "size"
            else:  # RFC 9112 6.3: not chunked last, so the body runs to the end of the connection
                self._state, self._keep_alive = "close", False
            return
        lengths = {
            part.strip() for name, value in head.headers if name == b"content-length" for part in value.split(b",")
        }
        if not lengths:
            self._state, self._keep_alive = "close", False
            return
        if len(lengths) > 1:
            raise ProtocolError("conflicting Content-Length values")
        (length,) = lengths
        if not length.isdigit() or not length.isascii() or len(length) > 18:
            raise ProtocolError("malformed Content-Length")
        self._remaining = int(length)
        self._state = "length"
        if self._remaining == 0:
            self._finish()

    # -- bodies -----------------------------------------------------------------------------------

    def _counted(self, truncated: str) -> bytes | None:
        """Up to `_remaining` bytes of what has arrived; None when nothing has yet."""
        if not self._buffer:
            if self._eof:
                raise ProtocolError(truncated)
            return None
        piece = bytes(self._buffer[: self._remaining])
        del self._buffer[: len(piece)]
        self._remaining -= len(piece)
        return piece

    def _length_body(self) -> Event:
        piece = self._counted("connection closed before the body ended")
        if piece is None:
            return NEED_DATA
        if self._remaining == 0:
            self._finish()
        return piece

    def _until_close(self) -> Event:
        if self._buffer:
            piece = bytes(self._buffer)
            self._buffer.clear()
            return piece
        if self._eof:
            self._finish()
            return END
        return NEED_DATA

    def _line(self) -> bytes | None:
        end = self._buffer.find(b"\r\n", 0, MAX_CHUNK_LINE_BYTES)
        if end < 0:
            if len(self._buffer) >= MAX_CHUNK_LINE_BYTES:
                raise ProtocolError("chunk line too long")
            if self._eof:
                raise ProtocolError("connection closed inside a chunked body")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _chunk_size(self) -> Event:
        line = self._line()
        if line is None:
            return NEED_DATA
        size = line.split(b";", 1)[0].strip()
        if not size or len(size) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size):
            raise ProtocolError("malformed chunk size")
        self._remaining = int(size, 16)
        self._state = "data" if self._remaining else "trailers"
        return self.next_event()

    def _chunk_data(self) -> Event:
        piece = self._counted("connection closed inside a chunk")
        if piece is None:
            return NEED_DATA
        if self._remaining == 0:
            self._state = "crlf"
        return piece

    def _chunk_crlf(self) -> Event:
        if len(self._buffer) < 2:
            if self._eof:
                raise ProtocolError("connection closed inside a chunked body")
            return NEED_DATA
        if self._buffer[:2] != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")
        del self._buffer[:2]
        self._state = "size"
        return self.next_event()

    def _trailers(self) -> Event:
        while True:
            line = self._line()
            if line is None:
                return NEED_DATA
            if not line:
                self._finish()
                return END

    def _finish(self) -> None:
        self._state = "done"

    @property
    def reusable(self) -> bool:
        """The answer ended cleanly and the connection may carry another request. Bytes after the
        end of the answer were never asked for: such a connection is not trusted again."""
        return self._state == "done" and self._keep_alive and not self._buffer and not self._eof


def _parse_head(raw: bytes) -> tuple[ResponseHead, bool, bool]:
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ProtocolError("malformed status line")
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not code.isascii():
        raise ProtocolError("malformed status code")
    headers: list[tuple[bytes, bytes]] = []
    connection_close = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not _is_token(name):
            raise ProtocolError("malformed header line")
        name = name.lower()
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise ProtocolError("control character in a header value")
        if name == b"connection" and b"close" in [token.strip().lower() for token in value.split(b",")]:
            connection_close = True
        headers.append((name, value))
    head = ResponseHead(status=int(code), reason=parts[2] if len(parts) == 3 else b"", headers=headers)
    return head, parts[0] == b"HTTP/1.0", connection_close


_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _is_token(name: bytes) -> bool:
    # Deleting every token character leaves nothing: one C call, not a Python step per byte.
    return not name.translate(None, _TOKEN)


# -- the connection and the pool --------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One socket. Carries one request at a time; `parser` is the answer being read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, as create_connection makes; uvloop's does not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # bytes nobody asked for, on an idle connection
            self.close()
            return
        self.parser.feed(data)
        self._wake()

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()

    def _ended(self) -> None:
        self.closed = True
        if self.parser is not None:
            self.parser.feed_eof()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send(self, data: bytes, *, head_request: bool) -> None:
        assert self.transport is not None
        self.parser = ResponseParser(head_request=head_request)
        self.transport.write(data)

    async def next_event(self, timeout: float | None) -> ResponseHead | bytes | _End:
        assert self.parser is not None
        while True:
            event = self.parser.next_event()
            if not isinstance(event, _NeedData):
                return event
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A bare timer rather than asyncio.timeout(): every answer waits here once, and the
            # context manager's bookkeeping cost more than the wait itself.
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: Http11Transport, origin: _Origin, connection: _Connection, read: float | None):
        self._transport = transport
        self._origin = origin
        self._connection = connection
        self._read_timeout = read
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._done:
            return
        try:
            while True:
                event = await self._connection.next_event(self._read_timeout)
                if isinstance(event, _End):
                    break
                if isinstance(event, bytes):
                    yield event
        except BaseException as error:  # noqa: BLE001 - released on every way out, then re-raised
            self._release(reuse=False)
            raise _httpx_error(error) from None
        self._release(reuse=True)

    async def aclose(self) -> None:
        self._release(reuse=False)

    async def discard(self) -> None:
        """Read the rest of the answer and drop it, as `async for` over the body would, without
        an async generator per answer (a status write's answer, read by nobody)."""
        if self._done:
            return
        connection, timeout = self._connection, self._read_timeout
        try:
            while not isinstance(await connection.next_event(timeout), _End):
                pass
        except BaseException as error:  # noqa: BLE001 - released on every way out, then re-raised
            self._release(reuse=False)
            raise _httpx_error(error) from None
        self._release(reuse=True)

    def _release(self, *, reuse: bool) -> None:
        if self._done:
            return
        self._done = True
        parser = self._connection.parser
        keep = reuse and parser is not None and parser.reusable and not self._connection.closed
        self._transport._release(self._origin, self._connection, keep=keep)


_Origin = tuple[str, str, int]


class Http11Transport(httpx.AsyncBaseTransport):
    """Pooled HTTP/1.1 keep-alive connections for httpx, at most `max_connections` in use at once."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 64):
        self._verify = verify
        self._ssl: ssl.SSLContext | None = verify if isinstance(verify, ssl.SSLContext) else None
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}")
        origin: _Origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        try:
            body = request.content  # read already: RequestMaker's requests are
        except httpx.RequestNotRead:
            body = await request.aread()
        message = _request_bytes(request, body)
        head_request = request.method == "HEAD"
        if self._slots.locked():  # all connections in use: wait, for at most the pool timeout
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in time") from None
        else:
            await self._slots.acquire()  # a free slot: taken at once
        try:
            for attempt in (1, 2):
                connection, reused = await self._connection(origin, timeouts.get("connect"))
                connection.send(message, head_request=head_request)
                try:
                    event = await connection.next_event(timeouts.get("read"))
                except ProtocolError:
                    assert connection.parser is not None
                    if reused and attempt == 1 and connection.parser.received_nothing:
                        # The server closed this idle connection as we sent: nothing was read, so
                        # nothing was answered. Once more on a new connection, as browsers do.
                        connection.close()
                        continue
                    connection.close()
                    raise
                except BaseException:
                    connection.close()
                    raise
                assert isinstance(event, ResponseHead)
                return httpx.Response(
                    status_code=event.status,
                    headers=event.headers,
                    stream=_Body(self, origin, connection, timeouts.get("read")),
                    extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
                    request=request,
                )
            raise ProtocolError("unreachable")  # pragma: no cover - the loop returns or raises
        except BaseException as error:  # noqa: BLE001 - released on every way out, then re-raised
            self._slots.release()
            raise _httpx_error(error) from None

    async def _connection(self, origin: _Origin, timeout: float | None) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection, True
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error}") from None
        return connection, False

    def _tls(self) -> ssl.SSLContext:
        # Built at the first https connection: loading the system CAs is wasted on a plain-http server.
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
            if not self._verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        return self._ssl

    def _release(self, origin: _Origin, connection: _Connection, *, keep: bool) -> None:
        self._slots.release()
        if keep and not self._closed:
            connection.parser = None
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def _request_bytes(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path or b"/"
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if name.lower() in (b"transfer-encoding", b"content-length"):
            continue  # the body is sent whole, framed by its length
        lines += (name, b": ", value, b"\r\n")
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines += (b"content-length: ", str(len(body)).encode("ascii"), b"\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def _httpx_error(error: BaseException) -> BaseException:
    if isinstance(error, httpx.HTTPError) or not isinstance(error, Exception):
        return error  # httpx's own, or CancelledError/KeyboardInterrupt: unchanged
    if isinstance(error, ProtocolError):
        return httpx.RemoteProtocolError(str(error))
    if isinstance(error, TimeoutError):
        return httpx.ReadTimeout("no answer in time")
    if isinstance(error, OSError):
        return httpx.ReadError(str(error))
    return error


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


class CookielessClient(httpx.AsyncClient):
    """An httpx client that neither keeps nor sends cookies.

    Neither the Kubernetes API nor Evolution API sets one, yet httpx builds urllib request and
    response objects for every answer to look for them: about 4 % of the operator's CPU per status
    write (bench/README.md, profile). Cookies a server might set are ignored, as client-go does.
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        return None


_NO_COOKIES = _NoCookies()


def json_body(document: Any) -> bytes:
    """A request body as httpx's `json=` encodes it: compact, UTF-8, no NaN or infinity (ValueError,
    as for a lone surrogate: UnicodeEncodeError, or anything not JSON: TypeError)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # given a Content-Length even without a body
_SIZED_HEADERS_KEPT = 4096  # body lengths whose headers RequestMaker keeps (then it starts again)


class RequestMaker:
    """The requests `AsyncClient.build_request` makes for one client (its base URL, headers and
    timeouts), for callers that hand them straight to the client's transport.

    `AsyncClient.send` runs an auth flow, a redirect loop, cookie and hook steps, none of which the
    operator's clients use (credentials are headers, neither API redirects), and `build_request`
    parses and merges the URL and the headers again for every call: together about a tenth of the
    operator's CPU when it resumes 10,000 instances (bench/README.md, "Fifth round"). Here each URL
    is parsed once and the headers merged once per variant; `forget()` after the client's headers
    change.
    """

    def __init__(self, client: httpx.AsyncClient, *, url_cache_size: int = 100_000) -> None:
        self.client = client
        self._url_cache_size = url_cache_size
        self._urls: dict[str, httpx.URL] = {}
        self._headers: dict[tuple[tuple[str, str], ...], httpx.Headers] = {}
        self._sized: dict[tuple[tuple[tuple[str, str], ...], int | None], httpx.Headers] = {}
        self._timeout = client.timeout.as_dict()

    def url(self, path: str) -> httpx.URL:
        """The absolute URL of `path` (with its query, if any), as httpx merges it with the base URL.
        Kept for the next call unless it has a query: those (a list's continue token) rarely repeat."""
        url = self._urls.get(path)
        if url is None:
            base = self.client.base_url  # httpx keeps it ending in "/": a path prefix stays
            url = base.copy_with(raw_path=base.raw_path + path.lstrip("/").encode("ascii"))
            if "?" not in path:
                if len(self._urls) >= self._url_cache_size:
                    self._urls.clear()
                self._urls[path] = url
        return url

    def build(self, method: str, path: str, content: bytes | None, *headers: tuple[str, str]) -> httpx.Request:
        """A request with the client's headers, `headers` set over them: the request, headers in
        their order, and body `build_request` makes. It is given its body as a ready stream and its
        `Host` with the merged headers: `Request(content=...)` would copy the headers twice and
        look for each automatic header again, 30 of the 35 microseconds a request took here."""
        body = b"" if content is None else content
        # With a body, the headers differ by its length only: each length seen is kept, its
        # headers ready (a status write's length varies little), rather than set per request.
        sized = len(body) if body else (0 if method.upper() in _BODY_METHODS else None)
        merged = self._sized.get((headers, sized))
        if merged is None:
            merged = self._merged(headers)
            if body:
                merged = httpx.Headers([*merged.raw, (b"Content-Length", str(len(body)).encode())])  # last
            elif sized == 0:  # httpx puts "Content-Length: 0" right after Host
                raw = merged.raw
                at = 1 if raw and raw[0][0].lower() == b"host" else 0
                merged = httpx.Headers([*raw[:at], (b"Content-Length", b"0"), *raw[at:]])
            if len(self._sized) >= _SIZED_HEADERS_KEPT:
                self._sized.clear()
            self._sized[(headers, sized)] = merged
        request = httpx.Request(
            method, self.url(path), headers=merged, stream=httpx.ByteStream(body), extensions={"timeout": self._timeout}
        )
        request.read()
        return request

    def _merged(self, headers: tuple[tuple[str, str], ...]) -> httpx.Headers:
        merged = self._headers.get(headers)
        if merged is None:
            merged = httpx.Headers(self.client.headers)
            for name, value in headers:
                merged[name] = value
            base = self.client.base_url
            if "Host" not in merged and base.host:
                merged = httpx.Headers([(b"Host", base.netloc), *merged.raw])  # first, as httpx puts it
            self._headers[headers] = merged
        return merged

    def forget(self) -> None:
        """The client's headers or timeout changed: merge them again."""
        self._headers.clear()
        self._sized.clear()
        self._timeout = self.client.timeout.as_dict()


async def discard_answer(response: httpx.Response) -> None:
    """Read a response's body to its end and drop it: its connection goes back to the pool."""
    stream = response.stream
    if isinstance(stream, _Body):
        await stream.discard()
        return
    assert isinstance(stream, httpx.AsyncByteStream)
    async for _ in stream:
        pass
