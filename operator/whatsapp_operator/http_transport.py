"""An httpx transport on aiohttp's connection pool.

httpx stays the client API (timeouts, URLs, headers, streaming), but its default transport
(httpcore) checks every pooled connection on every request, through anyio, for socket state:
with a pool of a few dozen connections that was most of the operator's CPU per status patch
(bench/README.md). aiohttp's pool hands out an idle connection without that scan. The bodies
are passed on raw (no decompression here): the callers decode them as before, with their bounds.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

_CHUNK = 64 * 1024


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


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as error:
            raise httpx.ReadError(str(error)) from None
        except TimeoutError as error:
            raise httpx.ReadTimeout(str(error)) from None

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one aiohttp session (created in the running loop on first use)."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 100):
        self._ssl: ssl.SSLContext | bool = verify
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        body = await request.aread()
        try:
            response = await session.request(
                request.method,
                str(request.url),
                headers=[(key.decode("latin-1"), value.decode("latin-1")) for key, value in request.headers.raw],
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
                compress=None,
            )
        except aiohttp.ServerTimeoutError as error:
            raise httpx.ConnectTimeout(str(error)) from None
        except TimeoutError as error:
            raise httpx.ConnectTimeout(str(error) or "timed out") from None
        except aiohttp.ClientConnectorError as error:
            raise httpx.ConnectError(str(error)) from None
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
            raise httpx.ReadError(str(error)) from None
        except aiohttp.ClientResponseError as error:  # a malformed answer (bad status line, headers)
            raise httpx.RemoteProtocolError(str(error)) from None
        except aiohttp.ClientError as error:
            raise httpx.TransportError(str(error)) from None
        except asyncio.CancelledError:
            raise
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
