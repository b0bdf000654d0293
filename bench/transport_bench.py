#!/usr/bin/env python3
"""Client CPU per status-sized PATCH: httpx over httpcore (its default) and over the operator's own
HTTP/1.1 transport (what both of its clients use).

    python bench/transport_bench.py [--requests 3000] [--concurrency 16]

An aiohttp server in a child process answers every request with a small JSON object; this process
sends PATCHes of 5 KB (a QR status patch) through each transport and prints its own CPU time per
request (time.process_time, so the server's work is not counted). The http11 runs use the operator's
cookie-less httpx client, as the operator does.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time

import httpx

from whatsapp_operator.http11 import CookielessClient, Http11Transport

SERVER = """
import sys
from aiohttp import web
async def answer(request):
    await request.read()
    return web.json_response({"kind": "WhatsAppInstance", "status": {"phase": "AwaitingScan"}})
app = web.Application()
app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""
BODY = b'{"status": {"qr": {"base64": "' + b"A" * 5000 + b'"}}}'


async def measure(kind: str, url: str, requests: int, concurrency: int) -> float:
    transport: httpx.AsyncBaseTransport | None = None
    client_class = CookielessClient
    if kind == "http11":
        transport = Http11Transport(max_connections=40)
    else:
        client_class = httpx.AsyncClient
    async with client_class(base_url=url, transport=transport, limits=httpx.Limits(max_connections=40)) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with slots:
                response = await client.request(
                    "PATCH", f"/apis/x/{index}", content=BODY, headers={"content-type": "application/merge-patch+json"}
                )
                response.json()

        await asyncio.gather(*(one(index) for index in range(50)))  # warm the pool
        started = time.process_time()
        await asyncio.gather(*(one(index) for index in range(requests)))
        return (time.process_time() - started) * 1000 / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        for kind in ("httpcore", "http11", "httpcore", "http11"):
            cpu = asyncio.run(measure(kind, f"http://127.0.0.1:{port}", args.requests, args.concurrency))
            print(f"{kind:9s} client CPU per request {cpu:.3f} ms")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
