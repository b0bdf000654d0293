"""The fake Evolution API checked against docs/evolution-api.md (REST via httpx, Socket.IO via python-socketio)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import socketio

try:
    from evolution_fake import EVENTS_2_2_3, EVENTS_2_3_6, FakeEvolution
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.evolution_fake import EVENTS_2_2_3, EVENTS_2_3_6, FakeEvolution

KEY = "evo-global-key-for-tests"
AUTH = {"apikey": KEY}
UUID_UPPER = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$")


# --------------------------------------------------------------------------------------------- helpers


class Listener:
    """A python-socketio client that queues every (namespace, event, data) it receives."""

    def __init__(self, namespaces: tuple[str, ...] = ("/",), *, reconnection: bool = True) -> None:
        self.namespaces = namespaces
        self.sio = socketio.AsyncClient(
            reconnection=reconnection, reconnection_delay=0.02, reconnection_delay_max=0.05, randomization_factor=0
        )
        self.queue: asyncio.Queue = asyncio.Queue()
        self.connects: asyncio.Queue = asyncio.Queue()
        self.disconnects: asyncio.Queue = asyncio.Queue()
        for ns in namespaces:
            self.sio.on("*", self._collector(ns), namespace=ns)
            self.sio.on("connect", self._marker(self.connects, ns), namespace=ns)
            self.sio.on("disconnect", self._disconnect_marker(ns), namespace=ns)

    def _collector(self, ns: str):
        async def handler(event: str, data=None) -> None:
            await self.queue.put((ns, event, data))

        return handler

    def _disconnect_marker(self, ns: str):
        async def handler(reason=None) -> None:
            await self.disconnects.put((ns, reason))

        return handler

    @staticmethod
    def _marker(queue: asyncio.Queue, ns: str):
        async def handler(*args) -> None:
            await queue.put(ns)

        return handler

    async def connect(self, url: str, key: str | None = KEY, **kwargs) -> None:
        target = f"{url}?apikey={key}" if key else url
        await self.sio.connect(
            target, namespaces=list(self.namespaces), transports=["websocket"], wait_timeout=2, **kwargs
        )

    async def next(self, timeout: float = 2) -> tuple[str, str, dict]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def take(self, n: int) -> list[tuple[str, str, dict]]:
        return [await self.next() for _ in range(n)]

    async def close(self) -> None:
        await self.sio.disconnect()

    async def expect_refused(self, url: str, key: str | None = KEY) -> str:
        """connect() must fail (handshake refused or namespace refused); returns the error text."""
        try:
            with pytest.raises(socketio.exceptions.ConnectionError) as info:
                await self.connect(url, key=key)
        finally:
            http = self.sio.eio.http  # a refused handshake leaves the aiohttp session open
            if http is not None and not http.closed:
                await http.close()
        return str(info.value)


@pytest.fixture
async def fake() -> AsyncIterator[FakeEvolution]:
    server = FakeEvolution()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http(fake: FakeEvolution) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5) as client:
        yield client


@pytest.fixture
async def listeners() -> AsyncIterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        await listener.close()


async def create(http: httpx.AsyncClient, name: str, **extra) -> httpx.Response:
    body = {"instanceName": name, "integration": "WHATSAPP-BAILEYS", **extra}
    return await http.post("/instance/create", json=body, headers=AUTH)


async def raw_http(port: int, request: str) -> tuple[int, dict[str, str], str]:
    """Send a raw HTTP/1.1 request (needed for a websocket upgrade that gets refused)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    body = (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
    writer.close()
    return status, headers, body


def ws_upgrade_request(path: str) -> str:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


# --------------------------------------------------------------------------------------------- REST


@pytest.mark.parametrize("version", ["2.2.3", "2.3.6"])
async def test_root_info_depends_on_version(version: str) -> None:
    server = FakeEvolution(version=version)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.get("/")
        assert r.status_code == 200
        info = r.json()
        assert info["version"] == version
        assert info["message"] == "Welcome to the Evolution API, it is working!"
        assert ("whatsappWebVersion" in info) is (version == "2.3.6")
    finally:
        await server.stop()


async def test_error_envelopes_and_guard_order(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    r = await http.get("/foo?x=1")
    assert (r.status_code, r.json()) == (
        404,
        {"status": 404, "error": "Not Found", "response": {"message": ["Cannot GET /foo?x=1"]}},
    )
    # unknown instance: 404 BEFORE auth (no key at all)
    r = await http.get("/instance/connectionState/ghost")
    assert (r.status_code, r.json()) == (
        404,
        {"status": 404, "error": "Not Found", "response": {"message": ['The "ghost" instance does not exist']}},
    )

    token = (await create(http, "acme", token="ACME-TOKEN")).json()["hash"]
    assert token == "ACME-TOKEN"
    await create(http, "beta")
    unauthorized = {"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}}
    r = await http.get("/instance/connectionState/acme")
    assert (r.status_code, r.json()) == (401, unauthorized)  # string message, not an array
    r = await http.get("/instance/connectionState/acme", headers={"apikey": "wrong"})
    assert (r.status_code, r.json()) == (401, unauthorized)
    r = await http.get("/instance/connectionState/acme", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 401  # no Bearer support
    r = await http.get("/instance/connectionState/acme", headers={"APIKEY": KEY})
    assert r.status_code == 200  # header name is case-insensitive
    # an instance token works for its own instance only, and never for create
    r = await http.get("/instance/connectionState/acme", headers={"apikey": token})
    assert r.json() == {"instance": {"instanceName": "acme", "state": "close"}}
    r = await http.get("/instance/connectionState/beta", headers={"apikey": token})
    assert r.status_code == 401
    r = await http.post(
        "/instance/create", json={"instanceName": "gamma", "integration": "WHATSAPP-BAILEYS"}, headers={"apikey": token}
    )
    assert (r.status_code, r.json()) == (401, unauthorized)
    # name in use: 403 before auth
    r = await http.post("/instance/create", json={"instanceName": "acme", "integration": "WHATSAPP-BAILEYS"})
    assert (r.status_code, r.json()) == (
        403,
        {"status": 403, "error": "Forbidden", "response": {"message": ['This name "acme" is already in use.']}},
    )
    # fetchInstances with an instance token: only rows carrying that token
    r = await http.get("/instance/fetchInstances", headers={"apikey": token})
    assert [row["name"] for row in r.json()] == ["acme"]
    r = await http.get("/instance/fetchInstances")
    assert (r.status_code, r.json()) == (401, unauthorized)
    r = await http.post("/verify-creds", headers={"apikey": token})
    assert r.status_code == 401
    r = await http.post("/verify-creds", headers=AUTH)
    assert r.json()["message"] == "Credentials are valid"


@pytest.mark.parametrize("version", ["2.2.3", "2.3.6"])
async def test_create_response_shape(version: str) -> None:
    server = FakeEvolution(version=version)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await create(http, "acme", qrcode=False, groupsIgnore=True, websocket={"enabled": False, "events": []})
        assert r.status_code == 201
        body = r.json()
        expected_keys = ["instance", "hash", "webhook", "websocket", "rabbitmq"]
        expected_keys += ["nats"] if version == "2.3.6" else []
        expected_keys += ["sqs", "settings"]
        assert list(body) == expected_keys  # no `qrcode` without qrcode:true
        assert body["instance"] == {
            "instanceName": "acme",
            "instanceId": server.instances["acme"].id,
            "integration": "WHATSAPP-BAILEYS",
            "webhookWaBusiness": None,
            "accessTokenWaBusiness": "",
            "status": "close",
        }
        assert UUID_UPPER.match(body["hash"])  # generated token: uppercase UUIDv4
        assert body["webhook"] == {} and body["rabbitmq"] == {} and body["sqs"] == {}
        # the echo shows the request's `enabled`; the stored row is forced to enabled + all events
        assert body["websocket"] == {"enabled": False}
        stored = server.instances["acme"].websocket
        assert stored == {"enabled": True, "events": list(EVENTS_2_3_6 if version == "2.3.6" else EVENTS_2_2_3)}
        assert body["settings"] == {
            "rejectCall": False,
            "msgCall": "",
            "groupsIgnore": True,
            "alwaysOnline": False,
            "readMessages": False,
            "readStatus": False,
            "syncFullHistory": False,
            "wavoipToken": "",
        }
    finally:
        await server.stop()


async def test_create_rejections(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    r = await http.post("/instance/create", json={"instanceName": "acme"}, headers=AUTH)
    assert (r.status_code, r.json()["response"]["message"]) == (400, ["Invalid integration"])
    r = await create(http, "acme", integration="WHATSAPP")
    assert (r.status_code, r.json()["response"]["message"]) == (400, ["Invalid integration"])
    r = await http.post("/instance/create", json={"instanceName": ""}, headers=AUTH)
    assert r.json()["response"]["message"] == [['The "instanceName" cannot be empty']]
    r = await create(http, "acme", qrcode="yes", number="+5511")
    assert (r.status_code, r.json()) == (
        400,
        {
            "status": 400,
            "error": "Bad Request",
            "response": {
                "message": [
                    ['number does not match pattern "^\\\\d+[\\\\.@\\\\w-]+"', "qrcode is not of a type(s) boolean"]
                ]
            },
        },
    )
    assert fake.instances == {}
    assert (await create(http, "acme")).status_code == 201
    # missing instanceName once any instance exists: Prisma `name: undefined` matches every row
    r = await http.post("/instance/create", json={"integration": "WHATSAPP-BAILEYS"}, headers=AUTH)
    assert (r.status_code, r.json()["response"]["message"]) == (403, ['This name "undefined" is already in use.'])
    for js_name in ("constructor", "__proto__", "toString"):
        r = await create(http, js_name)
        assert (r.status_code, r.json()["response"]["message"]) == (403, [f'This name "{js_name}" is already in use.'])


async def test_create_nested_websocket_without_events_rolls_back_asynchronously(
    fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]
) -> None:
    listener = Listener()
    listeners.append(listener)
    await listener.connect(fake.url)
    fake.hold_cleanups()
    r = await create(http, "acme", websocket={"enabled": True})
    assert (r.status_code, r.json()) == (
        400,
        {
            "status": 400,
            "error": "Bad Request",
            "response": {"message": ["Cannot read properties of undefined (reading 'length')"]},
        },
    )
    _, event, envelope = await listener.next()
    assert (event, envelope["instance"], envelope["data"]) == ("remove.instance", "acme", None)
    # the rollback cleanup is asynchronous: the name is still taken until it has run
    assert (await create(http, "acme")).status_code == 403
    fake.release_cleanups()
    await fake.wait_until_gone("acme")
    assert (await http.get("/instance/connectionState/acme", headers=AUTH)).status_code == 404
    assert (await create(http, "acme")).status_code == 201


async def test_malformed_json_error_depends_on_node_version() -> None:
    for version, suffix in (("2.2.3", ""), ("2.3.6", " (line 1 column 2)")):
        server = FakeEvolution(version=version)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                r = await http.post(
                    "/instance/create", content=b"{bad", headers={**AUTH, "Content-Type": "application/json"}
                )
            assert (r.status_code, r.json()) == (
                400,
                {
                    "status": 400,
                    "error": "Internal Server Error",
                    "response": {"message": f"Expected property name or '}}' in JSON at position 1{suffix}"},
                },
            )
        finally:
            await server.stop()


async def test_settings_schema_and_round_trip(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    await create(http, "acme")
    r = await http.post("/settings/set/acme", json={"rejectCall": "no", "alwaysOnline": False}, headers=AUTH)
    assert (r.status_code, r.json()) == (
        400,
        {
            "status": 400,
            "error": "Bad Request",
            "response": {
                "message": [
                    [
                        "rejectCall is not of a type(s) boolean",
                        'instance requires property "groupsIgnore"',
                        'instance requires property "readMessages"',
                        'instance requires property "readStatus"',
                        'instance requires property "syncFullHistory"',
                    ]
                ]
            },
        },
    )
    settings = {
        "rejectCall": True,
        "msgCall": "Calls are not answered here",
        "groupsIgnore": True,
        "alwaysOnline": False,
        "readMessages": False,
        "readStatus": False,
        "syncFullHistory": False,
    }
    r = await http.post("/settings/set/acme", json=settings, headers=AUTH)
    assert (r.status_code, r.json()) == (201, {"settings": {"instanceName": "acme", "settings": settings}})
    r = await http.get("/settings/find/acme", headers=AUTH)
    assert r.json() == {**settings, "wavoipToken": ""}
    # a non-empty wavoipToken needs a socket (§3.9)
    r = await http.post("/settings/set/acme", json={**settings, "wavoipToken": "x"}, headers=AUTH)
    assert r.status_code == 500 and isinstance(r.json()["response"]["message"], str)


@pytest.mark.parametrize("version", ["2.2.3", "2.3.6"])
async def test_websocket_set_traps(version: str) -> None:
    server = FakeEvolution(version=version)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            await create(http, "acme")
            r = await http.post(
                "/websocket/set/acme", json={"enabled": True, "events": ["QRCODE_UPDATED"]}, headers=AUTH
            )
            assert (r.status_code, r.json()) == (
                500,
                {
                    "status": 500,
                    "error": "Internal Server Error",
                    "response": {"message": "Cannot set properties of undefined (setting 'events')"},
                },
            )
            r = await http.post("/websocket/set/acme", json={"websocket": {"enabled": True}}, headers=AUTH)
            assert r.json()["response"]["message"] == "Cannot read properties of undefined (reading 'length')"
            r = await http.post(
                "/websocket/set/acme",
                json={"websocket": {"enabled": True, "events": ["INSTANCE_CREATE"]}},
                headers=AUTH,
            )
            if version == "2.2.3":
                assert r.status_code == 400
                assert r.json()["response"]["message"] == [
                    ["websocket.events[0] is not one of enum values: " + ",".join(EVENTS_2_2_3)]
                ]
            else:
                assert r.status_code == 201 and r.json()["events"] == ["INSTANCE_CREATE"]
            r = await http.post(
                "/websocket/set/acme", json={"websocket": {"enabled": True, "events": []}}, headers=AUTH
            )
            row = r.json()
            assert r.status_code == 201
            assert row["events"] == list(EVENTS_2_3_6 if version == "2.3.6" else EVENTS_2_2_3)
            assert set(row) == {"id", "enabled", "events", "createdAt", "updatedAt", "instanceId"}
            r = await http.post(
                "/websocket/set/acme",
                json={"websocket": {"enabled": False, "events": ["QRCODE_UPDATED"]}},
                headers=AUTH,
            )
            assert (r.json()["enabled"], r.json()["events"]) == (False, [])
            r = await http.get("/websocket/find/acme", headers=AUTH)
            assert r.json()["id"] == row["id"] and r.json()["enabled"] is False
    finally:
        await server.stop()


async def test_websocket_disabled_server() -> None:
    server = FakeEvolution(websocket_enabled=False)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.get("/socket.io/?EIO=4&transport=polling")
            assert (r.status_code, r.json()) == (
                404,
                {
                    "status": 404,
                    "error": "Not Found",
                    "response": {"message": ["Cannot GET /socket.io/?EIO=4&transport=polling"]},
                },
            )
            # nested websocket without events is fine: the websocket setter returns early
            assert (await create(http, "acme", websocket={"enabled": True})).status_code == 201
            r = await http.post(
                "/websocket/set/acme", json={"websocket": {"enabled": True, "events": []}}, headers=AUTH
            )
            assert (r.status_code, r.content) == (201, b"")
            r = await http.get("/websocket/find/acme", headers=AUTH)
            assert (r.status_code, r.content) == (200, b"")
    finally:
        await server.stop()


async def test_fetch_instances_rows_and_lookups(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    await create(http, "acme", number="5511999999999", token="T1")
    r = await http.get("/instance/fetchInstances", headers=AUTH)
    (row,) = r.json()
    assert list(row) == [
        "id",
        "name",
        "connectionStatus",
        "ownerJid",
        "profileName",
        "profilePicUrl",
        "integration",
        "number",
        "businessId",
        "token",
        "clientName",
        "disconnectionReasonCode",
        "disconnectionObject",
        "disconnectionAt",
        "createdAt",
        "updatedAt",
        "Chatwoot",
        "Proxy",
        "Rabbitmq",
        "Nats",
        "Sqs",
        "Websocket",
        "Setting",
        "_count",
    ]
    assert (row["token"], row["connectionStatus"], row["number"]) == ("T1", "close", "5511999999999")
    r = await http.get("/instance/fetchInstances", params={"number": "5511999999999"}, headers=AUTH)
    assert [x["name"] for x in r.json()] == ["acme"]
    r = await http.get("/instance/fetchInstances", params={"instanceId": row["id"]}, headers=AUTH)
    assert [x["name"] for x in r.json()] == ["acme"]
    r = await http.get("/instance/fetchInstances", params={"instanceName": "nope"}, headers=AUTH)
    assert (r.status_code, r.json()["response"]["message"]) == (404, ['Instance "nope" not found'])


async def test_query_parameter_overrides_the_path_name(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    token_a = (await create(http, "a")).json()["hash"]
    await create(http, "b", qrcode=True)
    # §2.4: authorised against "a", acts on "b"
    r = await http.get("/instance/connectionState/a", params={"instanceName": "b"}, headers={"apikey": token_a})
    assert r.json() == {"instance": {"instanceName": "b", "state": "connecting"}}


async def test_fail_next_and_wait_for_request(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    await create(http, "acme")
    fake.fail_next("GET", "/instance/connectionState", 500, "TypeError: boom", times=2)
    for _ in range(2):
        r = await http.get("/instance/connectionState/acme", headers=AUTH)
        assert (r.status_code, r.text) == (500, "TypeError: boom")
    r = await http.get("/instance/connectionState/acme", headers=AUTH)
    assert r.status_code == 200
    fake.fail_next("GET", "/instance/connect/", 200, {"error": True, "message": "[object Object]"})
    r = await http.get("/instance/connect/acme", headers=AUTH)
    assert r.json() == {"error": True, "message": "[object Object]"}
    assert fake.instances["acme"].state == "close"  # no side effect
    fake.fail_next("DELETE", "/instance/delete", 401)
    r = await http.delete("/instance/delete/acme", headers=AUTH)
    assert r.json() == {"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}}
    assert "acme" in fake.instances

    waiter = asyncio.create_task(fake.wait_for_request("POST", "/settings/set/", timeout=2))
    await asyncio.sleep(0)
    assert not waiter.done()
    await http.post("/settings/set/acme", json={"rejectCall": True}, headers={"apikey": "secret-xyz"})
    recorded = await waiter
    assert recorded.headers["apikey"] == "secret-xyz"
    assert recorded.json == {"rejectCall": True}
    assert (recorded.status, recorded.path) == (401, "/settings/set/acme")
    with pytest.raises(asyncio.TimeoutError):
        await fake.wait_for_request("POST", "/settings/set/", count=2, timeout=0.05)


# ------------------------------------------------------------------ webhook, settings find, tokens, key


WEBHOOK_ROW_KEYS = [
    "id",
    "url",
    "headers",
    "enabled",
    "events",
    "webhookByEvents",
    "webhookBase64",
    "createdAt",
    "updatedAt",
    "instanceId",
]


@pytest.mark.parametrize("version", ["2.2.3", "2.3.6"])
async def test_webhook_set_and_find(version: str) -> None:
    server = FakeEvolution(version=version)
    all_events = list(EVENTS_2_3_6 if version == "2.3.6" else EVENTS_2_2_3)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/webhook/set/ghost", json={}, headers=AUTH)
            assert r.status_code == 404  # guard before the schema
            await create(http, "acme")
            r = await http.get("/webhook/find/acme", headers=AUTH)
            assert (r.status_code, r.text) == (200, "null")
            # the wrapper is required by the schema (400), unlike /websocket/set (500)
            flat = {"enabled": True, "url": "https://hooks.example/evo", "events": []}
            r = await http.post("/webhook/set/acme", json=flat, headers=AUTH)
            assert (r.status_code, r.json()["response"]["message"]) == (400, [['instance requires property "webhook"']])
            r = await http.post("/webhook/set/acme", json={"webhook": {"enabled": True}}, headers=AUTH)
            assert r.json()["response"]["message"] == [['webhook requires property "url"']]
            r = await http.post("/webhook/set/acme", json={"webhook": {"enabled": True, "url": ""}}, headers=AUTH)
            assert r.json()["response"]["message"] == [['The "url" cannot be empty']]
            r = await http.post(
                "/webhook/set/acme",
                json={"webhook": {"enabled": "yes", "url": "https://h.example", "events": ["NOPE"], "headers": []}},
                headers=AUTH,
            )
            assert r.status_code == 400
            assert r.json()["response"]["message"][0][:3] == [
                "webhook.enabled is not of a type(s) boolean",
                "webhook.headers is not of a type(s) object",
                f"webhook.events[0] is not one of enum values: {','.join(all_events)}",
            ]
            # enabled without events: a TypeError (500); on 2.2.3 after the url check
            r = await http.post(
                "/webhook/set/acme", json={"webhook": {"enabled": True, "url": "https://h.example"}}, headers=AUTH
            )
            assert (r.status_code, r.json()["response"]["message"]) == (
                500,
                "Cannot read properties of undefined (reading 'length')",
            )
            # 2.2.3 checks the url with isURL, also when disabling; 2.3.6 stores anything
            bad = {"webhook": {"enabled": False, "url": "not a url", "events": []}}
            r = await http.post("/webhook/set/acme", json=bad, headers=AUTH)
            if version == "2.2.3":
                assert (r.status_code, r.json()["response"]["message"]) == (400, ['Invalid "url" property'])
                assert server.webhook_of("acme") is None
            else:
                assert r.status_code == 201 and r.json()["url"] == "not a url"
            full = {
                "enabled": True,
                "url": "https://hooks.example/evo",
                "events": [],
                "headers": {"x-token": "s3cret"},
                "byEvents": True,
                "base64": True,
            }
            r = await http.post("/webhook/set/acme", json={"webhook": full}, headers=AUTH)
            assert r.status_code == 201
            row = r.json()
            assert list(row) == WEBHOOK_ROW_KEYS
            assert row["events"] == all_events  # empty list = every name of the version
            assert (row["url"], row["headers"], row["webhookByEvents"], row["webhookBase64"]) == (
                "https://hooks.example/evo",
                {"x-token": "s3cret"},
                True,
                True,
            )
            assert row["instanceId"] == server.instances["acme"].id
            r = await http.get("/webhook/find/acme", headers=AUTH)
            assert r.json() == row == server.webhook_of("acme")
            # an update keeps what it does not send (Prisma ignores undefined)
            r = await http.post(
                "/webhook/set/acme",
                json={"webhook": {"enabled": True, "url": "https://other.example", "events": ["CALL"]}},
                headers=AUTH,
            )
            row = r.json()
            assert (row["url"], row["events"], row["headers"], row["webhookByEvents"], row["webhookBase64"]) == (
                "https://other.example",
                ["CALL"],
                {"x-token": "s3cret"},
                True,
                True,
            )
            # disabling stores events [] (and whatever url was sent)
            off = {"enabled": False, "url": "http://webhook-disabled.invalid", "events": [], "headers": {}}
            r = await http.post("/webhook/set/acme", json={"webhook": off}, headers=AUTH)
            assert (r.status_code, r.json()["enabled"], r.json()["events"], r.json()["headers"]) == (201, False, [], {})
            # not loaded in memory: find answers null, set is a TypeError
            await server.restart(load=False)
            r = await http.get("/webhook/find/acme", headers=AUTH)
            assert (r.status_code, r.text) == (200, "null")
            r = await http.post("/webhook/set/acme", json={"webhook": full}, headers=AUTH)
            assert (r.status_code, r.json()["response"]["message"]) == (
                500,
                "Cannot read properties of undefined (reading 'instanceId')",
            )
            assert server.webhook_of("acme") is not None  # the row is still stored
    finally:
        await server.stop()


@pytest.mark.parametrize("version", ["2.2.3", "2.3.6"])
async def test_webhook_nested_at_create(version: str) -> None:
    server = FakeEvolution(version=version)
    all_events = list(EVENTS_2_3_6 if version == "2.3.6" else EVENTS_2_2_3)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            hook = {"enabled": False, "url": "https://hooks.example/evo", "events": [], "headers": {"x-k": "v"}}
            r = await create(http, "acme", webhook=hook)
            assert r.status_code == 201
            # the echo; the stored row is enabled (forced) with every event
            assert r.json()["webhook"] == {"webhookUrl": "https://hooks.example/evo", "webhookHeaders": {"x-k": "v"}}
            row = server.webhook_of("acme")
            assert row is not None
            assert (row["enabled"], row["events"], row["headers"]) == (True, all_events, {"x-k": "v"})
            assert (row["webhookByEvents"], row["webhookBase64"]) == (False, False)  # column defaults
            # names are not validated at create
            r = await create(http, "named", webhook={"url": "https://h.example", "events": ["NOPE", "CALL"]})
            assert r.status_code == 201 and server.webhook_of("named")["events"] == ["NOPE", "CALL"]
            # no events: TypeError, create rolled back (400)
            r = await create(http, "broken", webhook={"url": "https://h.example"})
            assert (r.status_code, r.json()["response"]["message"]) == (
                400,
                ["Cannot read properties of undefined (reading 'length')"],
            )
            await server.wait_until_gone("broken")
            # 2.2.3's isURL applies at create too
            r = await create(http, "badurl", webhook={"url": "no url here", "events": []})
            if version == "2.2.3":
                assert (r.status_code, r.json()["response"]["message"]) == (400, ['Invalid "url" property'])
                await server.wait_until_gone("badurl")
            else:
                assert r.status_code == 201
    finally:
        await server.stop()


async def test_settings_find_answers_null_without_row_or_memory(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    await create(http, "acme", rejectCall=True, msgCall="busy")
    r = await http.get("/settings/find/acme", headers=AUTH)
    assert r.json() == fake.settings_of("acme")
    assert fake.settings_of("acme")["rejectCall"] is True and fake.settings_of("acme")["msgCall"] == "busy"
    fake.instances["acme"].settings = None
    r = await http.get("/settings/find/acme", headers=AUTH)
    assert (r.status_code, r.text) == (200, "null")
    assert fake.settings_of("acme") == {}
    await fake.tamper_settings("acme", alwaysOnline=True)
    await fake.restart(load=False)
    r = await http.get("/settings/find/acme", headers=AUTH)
    assert (r.status_code, r.text) == (200, "null")  # SettingsService.find catches everything
    await fake.load_instances()
    r = await http.get("/settings/find/acme", headers=AUTH)
    assert r.json()["alwaysOnline"] is True and r.json()["rejectCall"] is False


async def test_instance_token_is_hash_and_row_token_and_opens_only_its_routes(
    fake: FakeEvolution, http: httpx.AsyncClient
) -> None:
    r = await create(http, "acme", token="ACME-TOKEN-1234")
    assert r.json()["hash"] == "ACME-TOKEN-1234" == fake.token_of("acme")
    generated = (await create(http, "other")).json()["hash"]
    assert UUID_UPPER.match(generated) and fake.token_of("other") == generated
    rows = (await http.get("/instance/fetchInstances", headers=AUTH)).json()
    assert {row["name"]: row["token"] for row in rows} == {"acme": "ACME-TOKEN-1234", "other": generated}
    own = {"apikey": "ACME-TOKEN-1234"}
    assert (await http.get("/webhook/find/acme", headers=own)).status_code == 200
    assert (await http.get("/settings/find/acme", headers=own)).status_code == 200
    assert (await http.get("/instance/connectionState/acme", headers=own)).status_code == 200
    assert (await http.get("/webhook/find/other", headers=own)).status_code == 401
    assert [row["name"] for row in (await http.get("/instance/fetchInstances", headers=own)).json()] == ["acme"]
    r = await http.post(
        "/instance/create", json={"instanceName": "third", "integration": "WHATSAPP-BAILEYS"}, headers=own
    )
    assert r.status_code == 401  # create takes the global key only
    with pytest.raises(KeyError):
        fake.token_of("ghost")


async def test_tamper_webhook_and_settings(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    await create(http, "acme", webhook={"url": "https://hooks.example/evo", "events": ["CALL"]})
    await fake.tamper_webhook("acme", url="https://evil.example", byEvents=True, headers={"x": "y"})
    row = (await http.get("/webhook/find/acme", headers=AUTH)).json()
    assert (row["url"], row["webhookByEvents"], row["headers"], row["events"]) == (
        "https://evil.example",
        True,
        {"x": "y"},
        ["CALL"],
    )
    await fake.tamper_webhook("acme", events=[])
    assert fake.webhook_of("acme")["events"] == list(EVENTS_2_3_6)  # the manager's set rules
    await fake.tamper_webhook("acme", enabled=False)
    assert (fake.webhook_of("acme")["enabled"], fake.webhook_of("acme")["events"]) == (False, [])
    with pytest.raises(TypeError):
        await fake.tamper_webhook("acme", colour="red")
    await create(http, "bare")
    await fake.tamper_webhook("bare")  # someone adds a webhook where there was none
    assert fake.webhook_of("bare")["enabled"] is True
    await fake.tamper_settings("acme", rejectCall=True, msgCall="go away")
    r = await http.get("/settings/find/acme", headers=AUTH)
    assert (r.json()["rejectCall"], r.json()["msgCall"], r.json()["groupsIgnore"]) == (True, "go away", False)
    with pytest.raises(TypeError):
        await fake.tamper_settings("acme", rejectcall=True)


async def test_rotate_api_key(fake: FakeEvolution, http: httpx.AsyncClient) -> None:
    await create(http, "acme")
    fake.rotate_api_key("a-brand-new-key")
    for request in (
        http.get("/instance/connectionState/acme", headers=AUTH),
        http.get("/instance/fetchInstances", headers=AUTH),
        http.post("/verify-creds", headers=AUTH),
        http.post("/instance/create", json={"instanceName": "b", "integration": "WHATSAPP-BAILEYS"}, headers=AUTH),
    ):
        r = await request
        assert (r.status_code, r.json()["response"]["message"]) == (401, "Unauthorized")
    r = await http.get("/socket.io/?EIO=4&transport=polling", headers=AUTH)
    assert (r.status_code, r.json()) == (403, {"code": 4, "message": "Invalid global token"})
    new = {"apikey": "a-brand-new-key"}
    assert (await http.get("/instance/connectionState/acme", headers=new)).status_code == 200
    assert (await http.get("/socket.io/?EIO=4&transport=polling", headers=new)).status_code == 200
    with pytest.raises(ValueError):
        fake.rotate_api_key("")


async def test_root_is_slow_on_2_3_6_only() -> None:
    for version, slow in (("2.2.3", False), ("2.3.6", True)):
        server = FakeEvolution(version=version, wa_web_delay=0.3, wa_web_version="2.3000.1")
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                started = asyncio.get_running_loop().time()
                info = (await http.get("/")).json()
                took = asyncio.get_running_loop().time() - started
            assert (took >= 0.3) is slow
            assert info.get("whatsappWebVersion") == ("2.3000.1" if slow else None)
        finally:
            await server.stop()


# --------------------------------------------------------------------------------------------- Socket.IO


async def test_handshake_auth_2_3_6(fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]) -> None:
    r = await http.get("/socket.io/?EIO=4&transport=polling")
    assert (r.status_code, r.json()) == (403, {"code": 4, "message": "apiKey is required"})
    r = await http.get("/socket.io/?EIO=4&transport=polling&apikey=wrong")
    assert (r.status_code, r.json()) == (403, {"code": 4, "message": "Invalid global token"})
    # Engine.IO v3 is refused after the auth check (§4.2)
    r = await http.get("/socket.io/?EIO=3&transport=polling")
    assert r.status_code == 403
    r = await http.get(f"/socket.io/?EIO=3&transport=polling&apikey={KEY}")
    assert (r.status_code, r.json()) == (400, {"code": 5, "message": "Unsupported protocol version"})
    # the key may come as a header, or be ANY instance's token
    r = await http.get("/socket.io/?EIO=4&transport=polling", headers=AUTH)
    assert r.status_code == 200 and r.text.startswith("0{")
    handshake = json.loads(r.text[1:])
    assert (handshake["pingInterval"], handshake["pingTimeout"]) == (25000, 20000)
    token = (await create(http, "acme")).json()["hash"]
    r = await http.get(f"/socket.io/?EIO=4&transport=polling&apikey={token}")
    assert r.status_code == 200
    # websocket transport refused on the upgrade: HTTP 400, plain text (§4.2)
    status, _, body = await raw_http(fake.port, ws_upgrade_request("/socket.io/?EIO=4&transport=websocket"))
    assert (status, body) == (400, "apiKey is required")
    status, _, body = await raw_http(fake.port, ws_upgrade_request("/socket.io/?EIO=4&transport=websocket&apikey=bad"))
    assert (status, body) == (400, "Invalid global token")
    # python-socketio: refused without a key, accepted with one
    await Listener(reconnection=False).expect_refused(fake.url, key=None)
    assert (fake.requests[-1].status, fake.requests[-1].response) == (400, "apiKey is required")
    listener = Listener()
    listeners.append(listener)
    await listener.connect(fake.url, key=token)
    await fake.wait_for_socket_client(1)
    handshakes = [r for r in fake.requests if r.path == "/socket.io/"]
    assert (handshakes[-1].query.get("apikey"), handshakes[-1].status) == (token, 101)


async def test_handshake_2_2_3_needs_no_key(listeners: list[Listener]) -> None:
    server = FakeEvolution(version="2.2.3")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.get("/socket.io/?EIO=4&transport=polling")
            assert r.status_code == 200 and r.text.startswith("0{")
        listener = Listener()
        listeners.append(listener)
        await listener.connect(server.url, key=None)
        assert server.namespace_clients("/") == 1
        assert server.socket_clients == 2  # the raw polling handshake is a session too
        await listener.close()
    finally:
        await server.stop()


async def test_allowed_hosts_bypass_and_ping_settings() -> None:
    server = FakeEvolution(allowed_hosts_bypass=True, ping_interval=0.5, ping_timeout=0.25)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.get("/socket.io/?EIO=4&transport=polling")  # loopback peer: no key needed
            assert r.status_code == 200
            handshake = json.loads(r.text[1:])
            assert (handshake["pingInterval"], handshake["pingTimeout"]) == (500, 250)
            r = await http.get("/socket.io/?transport=polling")  # no EIO: no bypass (§4.2)
            assert (r.status_code, r.json()["message"]) == (403, "apiKey is required")
    finally:
        await server.stop()


async def test_connect_answers_count_zero_then_emits_qr(
    fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]
) -> None:
    listener = Listener()
    listeners.append(listener)
    await listener.connect(fake.url)
    await create(http, "acme")
    _, event, envelope = await listener.next()
    assert (event, envelope["data"]) == (
        "instance.create",
        {"instanceName": "acme", "instanceId": fake.instances["acme"].id},
    )
    assert set(envelope) == {"event", "instance", "data", "date_time", "apikey"}  # no sender, no server_url
    assert envelope["apikey"] is None and envelope["date_time"].endswith("Z")

    r = await http.get("/instance/connect/acme", headers=AUTH)
    assert r.json() == {"count": 0}  # the realistic trap (§7.1)
    _, event, envelope = await listener.next()
    assert (event, envelope["data"]) == (
        "connection.update",
        {"instance": "acme", "state": "connecting", "statusReason": 200},
    )
    _, event, envelope = await listener.next()
    assert event == "qrcode.updated"
    qr = envelope["data"]["qrcode"]
    assert list(qr) == ["instance", "pairingCode", "code", "base64"]  # no count in the event
    assert qr["pairingCode"] is None and qr["code"].startswith("2@")
    assert qr["base64"].startswith("data:image/png;base64,iVBORw0KGgo")
    # while connecting, connect is read-only and ignores ?number=
    r = await http.get("/instance/connect/acme", params={"number": "5511987654321"}, headers=AUTH)
    assert r.json() == {"pairingCode": None, "code": qr["code"], "base64": qr["base64"], "count": 1}
    r = await http.get("/instance/connectionState/acme", headers=AUTH)
    assert r.json() == {"instance": {"instanceName": "acme", "state": "connecting"}}
    r = await http.get("/instance/fetchInstances", headers=AUTH)
    assert r.json()[0]["connectionStatus"] == "connecting"  # written when a QR is generated


async def test_create_with_qrcode_and_pairing_mode(
    fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]
) -> None:
    listener = Listener()
    listeners.append(listener)
    await listener.connect(fake.url)
    r = await create(http, "acme", qrcode=True, number="5511987654321")
    body = r.json()
    assert body["instance"]["status"] == "connecting"
    assert re.fullmatch(r"[1-9A-HJ-NP-TV-Z]{8}", body["qrcode"]["pairingCode"])
    assert body["qrcode"]["count"] == 1
    events = await listener.take(3)
    assert [e[1] for e in events] == ["instance.create", "connection.update", "qrcode.updated"]
    assert events[2][2]["data"]["qrcode"]["pairingCode"] == body["qrcode"]["pairingCode"]
    await fake.issue_qr("acme")
    _, _, envelope = await listener.next()
    assert envelope["data"]["qrcode"]["pairingCode"] not in (None, body["qrcode"]["pairingCode"])


async def test_create_qrcode_before_first_qr_is_count_zero(listeners: list[Listener]) -> None:
    server = FakeEvolution(create_qr_ready=False)
    await server.start()
    try:
        listener = Listener()
        listeners.append(listener)
        await listener.connect(server.url)
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await create(http, "acme", qrcode=True)
        assert r.json()["qrcode"] == {"count": 0}
        events = await listener.take(3)
        assert [e[1] for e in events] == ["instance.create", "connection.update", "qrcode.updated"]
        await listener.close()
    finally:
        await server.stop()


async def test_global_versus_per_instance_delivery(
    fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]
) -> None:
    glob = Listener()
    listeners.append(glob)
    await glob.connect(fake.url)
    await create(http, "acme", websocket={"enabled": True, "events": ["QRCODE_UPDATED"]})
    await create(http, "other")  # no websocket config: global channel only
    # nothing subscribed was emitted on /acme yet: the namespace does not exist
    error = await Listener(("/acme",), reconnection=False).expect_refused(fake.url)
    assert "/acme" in error and ("/acme", False) in fake.namespace_attempts

    await http.get("/instance/connect/acme", headers=AUTH)
    assert [e[1] for e in await glob.take(4)] == [
        "instance.create",
        "instance.create",
        "connection.update",
        "qrcode.updated",
    ]
    # created by the first subscribed emit (after the global broadcast, as in Node)
    await fake.wait_until(lambda: "/acme" in fake.namespaces)
    per = Listener(("/acme",))
    listeners.append(per)
    await per.connect(fake.url)
    await fake.wait_for_namespace_client("/acme")

    await http.get("/instance/connect/other", headers=AUTH)
    assert [(e[1], e[2]["instance"]) for e in await glob.take(2)] == [
        ("connection.update", "other"),
        ("qrcode.updated", "other"),
    ]
    await fake.emit_message_traffic("acme", 3)
    await fake.issue_qr("acme")
    seen = [(e[1], e[2]["instance"]) for e in await glob.take(4)]
    assert seen == [("messages.upsert", "acme")] * 3 + [("qrcode.updated", "acme")]
    # the namespace got only the subscribed event (first thing it sees, although it was connected
    # while the connection.update and the message traffic went out)
    ns, event, envelope = await per.next()
    assert (ns, event, envelope["instance"]) == ("/acme", "qrcode.updated", "acme")
    assert envelope == [e for e in fake.emitted if e[0] == ("/", "/acme")][-1][1]


@pytest.mark.parametrize("version", ["2.2.3", "2.3.6"])
async def test_instance_create_opens_the_namespace_only_on_2_3_6(version: str, listeners: list[Listener]) -> None:
    server = FakeEvolution(version=version)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            await create(http, "acme", websocket={"enabled": True, "events": []})  # [] = the version's list
        listener = Listener(("/acme",), reconnection=False)
        if version == "2.3.6":
            listeners.append(listener)
            await listener.connect(server.url)
            assert server.namespace_clients("/acme") == 1
        else:
            assert "/acme" in await listener.expect_refused(server.url)
    finally:
        await server.stop()


async def test_delete_ordering_and_403_until_cleanup(
    fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]
) -> None:
    await create(http, "acme", websocket={"enabled": True, "events": []})
    await http.get("/instance/connect/acme", headers=AUTH)
    await fake.wait_until(lambda: fake.instances["acme"].qr_count == 1)
    glob, per = Listener(), Listener(("/acme",))
    listeners += [glob, per]
    await glob.connect(fake.url)
    await per.connect(fake.url)

    fake.hold_cleanups()
    r = await http.delete("/instance/delete/acme", headers=AUTH)
    assert r.json() == {"status": "SUCCESS", "error": False, "response": {"message": "Instance deleted"}}
    # cleanup pending: the name still exists
    r = await create(http, "acme")
    assert (r.status_code, r.json()["response"]["message"]) == (403, ['This name "acme" is already in use.'])
    assert (await http.get("/instance/connectionState/acme", headers=AUTH)).status_code == 200
    fake.release_cleanups()
    await fake.wait_until_gone("acme")
    # §4.7 order on "/": instance.delete, remove.instance, status.instance, connection.update close/401
    events = await glob.take(4)
    assert [e[1] for e in events] == ["instance.delete", "remove.instance", "status.instance", "connection.update"]
    assert events[1][2]["data"] is None
    assert events[2][2]["data"]["status"] == "closed" and events[2][2]["data"]["disconnectionReasonCode"] == 401
    assert events[3][2]["data"] == {"instance": "acme", "state": "close", "statusReason": 401}
    # the namespace saw the two events sent while the instance was still in memory, nothing after
    assert [e[1] for e in await per.take(2)] == ["instance.delete", "remove.instance"]
    assert all(e[0] == ("/",) for e in fake.emitted[-2:])
    assert (await http.get("/instance/connectionState/acme", headers=AUTH)).status_code == 404
    assert (await create(http, "acme")).status_code == 201


async def test_qr_limit_sequence() -> None:
    server = FakeEvolution(qrcode_limit=2)
    await server.start()
    listener = Listener()
    try:
        await listener.connect(server.url)
        async with httpx.AsyncClient(base_url=server.url) as http:
            await create(http, "acme")
            await http.get("/instance/connect/acme", headers=AUTH)
            assert [e[1] for e in await listener.take(3)] == ["instance.create", "connection.update", "qrcode.updated"]
            assert await server.issue_qr("acme") is not None  # QR 2 = the limit
            await listener.next()
            assert await server.issue_qr("acme") is None  # the next `qr` trips the limit
            (_, e1, env1), (_, e2, env2) = await listener.take(2)
            assert (e1, env1["data"]) == (
                "qrcode.updated",
                {"message": "QR code limit reached, please login again", "statusCode": 500},
            )
            assert (e2, env2["data"]) == (
                "connection.update",
                {"instance": "acme", "state": "refused", "statusReason": 428},
            )
            r = await http.get("/instance/connectionState/acme", headers=AUTH)
            assert r.json()["instance"]["state"] == "close"  # never "refused" over REST
            r = await http.get("/instance/fetchInstances", headers=AUTH)
            assert r.json()[0]["connectionStatus"] == "connecting"  # the DB lags
            r = await http.get("/instance/connect/acme", headers=AUTH)
            assert r.json() == {"count": 0}  # counter and cached QR reset
            await listener.next()  # connecting
            _, event, _ = await listener.next()
            assert event == "qrcode.updated" and server.instances["acme"].qr_count == 1
    finally:
        await listener.close()
        await server.stop()


async def test_scan_logout_and_the_stale_cached_qr(
    fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]
) -> None:
    listener = Listener()
    listeners.append(listener)
    await listener.connect(fake.url)
    await create(http, "acme")
    await http.get("/instance/connect/acme", headers=AUTH)
    *_, (_, _, qr_env) = await listener.take(3)
    old_code = qr_env["data"]["qrcode"]["code"]

    await fake.scan("acme", number="5511987654321", profile_name="ACME Support", picture="https://pps/x.jpg")
    (_, _, connecting), (_, _, opened) = await listener.take(2)
    assert connecting["data"] == {"instance": "acme", "state": "connecting", "statusReason": 200}
    assert "sender" not in connecting
    assert opened["data"] == {
        "instance": "acme",
        "wuid": "5511987654321@s.whatsapp.net",
        "profileName": "ACME Support",
        "profilePictureUrl": "https://pps/x.jpg",
        "state": "open",
        "statusReason": 200,
    }
    assert opened["sender"] == "5511987654321@s.whatsapp.net"
    (row,) = (await http.get("/instance/fetchInstances", headers=AUTH)).json()
    assert (row["connectionStatus"], row["ownerJid"], row["profileName"], row["profilePicUrl"], row["number"]) == (
        "open",
        "5511987654321@s.whatsapp.net",
        "ACME Support",
        "https://pps/x.jpg",
        None,
    )
    r = await http.get("/instance/connect/acme", headers=AUTH)
    assert r.json() == {"instance": {"instanceName": "acme", "state": "open"}}

    r = await http.delete("/instance/logout/acme", headers=AUTH)
    assert r.json() == {"status": "SUCCESS", "error": False, "response": {"message": "Instance logged out"}}
    events = await listener.take(3)
    assert [e[1] for e in events] == ["status.instance", "logout.instance", "connection.update"]
    assert events[1][2]["data"] is None
    assert events[2][2]["data"]["state"] == "close" and events[2][2]["data"]["statusReason"] == 401
    assert events[2][2]["sender"] == "5511987654321@s.whatsapp.net"  # not cleared on logout
    (row,) = (await http.get("/instance/fetchInstances", headers=AUTH)).json()
    assert (row["connectionStatus"], row["disconnectionReasonCode"]) == ("close", 401)
    assert isinstance(row["disconnectionObject"], str) and json.loads(row["disconnectionObject"])["error"]["isBoom"]
    r = await http.delete("/instance/logout/acme", headers=AUTH)
    assert (r.status_code, r.json()["response"]["message"]) == (400, ['The "acme" instance is not connected'])
    r = await http.post("/instance/restart/acme", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"error": True, "message": "[object Object]"})
    # the cached QR is never cleared: connect answers with the OLD QR, then a new one (count 2) follows
    r = await http.get("/instance/connect/acme", headers=AUTH)
    assert (r.json()["code"], r.json()["count"]) == (old_code, 1)
    await listener.next()
    _, event, envelope = await listener.next()
    assert event == "qrcode.updated" and envelope["data"]["qrcode"]["code"] != old_code
    assert fake.instances["acme"].cached_qr["count"] == 2


async def test_phone_ban_transient_drop_and_rest_restart(
    fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]
) -> None:
    listener = Listener()
    listeners.append(listener)
    await listener.connect(fake.url)
    await create(http, "acme", qrcode=True)
    await fake.scan("acme")
    await listener.take(5)
    await fake.transient_drop("acme")
    assert [e[2]["data"]["state"] for e in await listener.take(2)] == ["connecting", "open"]
    r = await http.post("/instance/restart/acme", headers=AUTH)
    assert r.json() == {"instance": {"instanceName": "acme", "state": "open"}}
    assert [e[2]["data"]["state"] for e in await listener.take(2)] == ["connecting", "open"]
    await fake.phone_logout("acme", code=403)
    events = await listener.take(3)
    assert [e[1] for e in events] == ["status.instance", "logout.instance", "connection.update"]
    assert events[2][2]["data"]["statusReason"] == 403
    with pytest.raises(ValueError):
        await fake.phone_logout("acme", code=428)


async def test_remove_out_of_band(fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]) -> None:
    listener = Listener()
    listeners.append(listener)
    await listener.connect(fake.url)
    await create(http, "acme")
    await listener.next()
    await fake.remove_out_of_band("acme")
    _, event, envelope = await listener.next()
    assert (event, envelope["data"]) == ("remove.instance", None)
    assert listener.queue.empty()  # no instance.delete
    assert (await http.get("/instance/connectionState/acme", headers=AUTH)).status_code == 404


async def test_restart_drops_namespaces_and_reemits(
    fake: FakeEvolution, http: httpx.AsyncClient, listeners: list[Listener]
) -> None:
    await create(http, "paired", qrcode=True, websocket={"enabled": True, "events": ["CONNECTION_UPDATE"]})
    await fake.scan("paired")
    await create(http, "fresh")
    glob = Listener()
    listeners.append(glob)
    await glob.connect(fake.url)
    probe = Listener(("/paired",), reconnection=False)
    await probe.connect(fake.url)
    await probe.close()

    await fake.restart(load=False)
    await fake.wait_for_namespace_client("/")  # the client reconnected by itself
    assert fake.namespaces == frozenset()
    assert "/paired" in await Listener(("/paired",), reconnection=False).expect_refused(fake.url)
    # startup window: DB rows exist, memory does not
    async with httpx.AsyncClient(base_url=fake.url) as http2:
        r = await http2.get("/instance/connectionState/paired", headers=AUTH)
        assert r.json() == {"instance": {"instanceName": "paired"}}
        r = await http2.get("/instance/connect/paired", headers=AUTH)
        assert r.json() == {"error": True, "message": "[object Object]"}
        r = await http2.get("/instance/fetchInstances", params={"instanceName": "paired"}, headers=AUTH)
        assert (r.status_code, r.json()["response"]["message"]) == (404, ['Instance "paired" not found'])
        r = await http2.get("/instance/fetchInstances", headers=AUTH)
        assert {row["name"]: row["connectionStatus"] for row in r.json()} == {"paired": "open", "fresh": "close"}

        await fake.load_instances()
        events = [
            (e[1], e[2]["instance"], e[2]["data"].get("state") if e[2]["data"] else None, "sender" in e[2])
            for e in await glob.take(4)
        ]
        assert events == [
            ("connection.update", "paired", "connecting", False),
            ("connection.update", "paired", "open", True),
            ("connection.update", "fresh", "connecting", False),
            ("qrcode.updated", "fresh", None, False),
        ]
        # only `open` went to /paired (the first `connecting` is sent before the instance is in memory)
        assert [e[0] for e in fake.emitted[-4:]] == [("/",), ("/", "/paired"), ("/",), ("/",)]
        r = await http2.get("/instance/connectionState/fresh", headers=AUTH)
        assert r.json()["instance"]["state"] == "connecting"
    per = Listener(("/paired",))
    listeners.append(per)
    await per.connect(fake.url)


async def test_stop_and_start_reuse_the_port(fake: FakeEvolution, listeners: list[Listener]) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        await create(http, "acme")
    url = fake.url
    await fake.stop()
    async with httpx.AsyncClient(base_url=url) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")
    assert fake.instances["acme"].state is None  # memory gone, DB row kept
    assert await fake.start() == url
    await fake.wait_until_loaded()  # reloaded and connected (§4.7)
    assert (fake.instances["acme"].state, fake.instances["acme"].qr_count) == ("connecting", 1)
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.get("/instance/connectionState/acme", headers=AUTH)
        assert r.json()["instance"]["state"] == "connecting"


async def test_send_raw_and_drop_socket_clients(fake: FakeEvolution, listeners: list[Listener]) -> None:
    listener = Listener()
    listeners.append(listener)
    await listener.connect(fake.url)
    await listener.connects.get()
    await fake.send_raw('2["unknown.event",{"x":1}]')
    assert await listener.next() == ("/", "unknown.event", {"x": 1})
    # network-level drop: the client notices and reconnects on its own
    await fake.drop_socket_clients()
    reason = socketio.AsyncClient.reason
    assert await asyncio.wait_for(listener.disconnects.get(), 2) == ("/", reason.TRANSPORT_ERROR)
    assert await asyncio.wait_for(listener.connects.get(), 2) == "/"
    await fake.wait_for_socket_client(1)
    # graceful Socket.IO DISCONNECT: python-socketio does not come back
    await fake.drop_socket_clients(graceful=True)
    assert await asyncio.wait_for(listener.disconnects.get(), 2) == ("/", reason.SERVER_DISCONNECT)
    await fake.wait_for_no_socket_clients()
    assert fake.namespace_clients("/") == 0 and not listener.sio.connected


async def test_envelope_options_wavoip_rollback_and_connect_number(listeners: list[Listener]) -> None:
    server = FakeEvolution(server_url="http://evolution.evolution.svc:8080", expose_in_fetch_instances=True)
    await server.start()
    try:
        listener = Listener()
        listeners.append(listener)
        await listener.connect(server.url)
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await create(http, "acme", token="TOKEN-1")
            _, _, envelope = await listener.next()
            assert list(envelope) == ["event", "instance", "data", "server_url", "date_time", "apikey"]
            assert (envelope["server_url"], envelope["apikey"]) == ("http://evolution.evolution.svc:8080", "TOKEN-1")
            # ?number= on a closed instance selects pairing mode for the new cycle
            await http.get("/instance/connect/acme", params={"number": "5511987654321"}, headers=AUTH)
            await listener.next()
            _, _, envelope = await listener.next()
            assert re.fullmatch(r"[1-9A-HJ-NP-TV-Z]{8}", envelope["data"]["qrcode"]["pairingCode"])
            # restart while connecting answers with the QR object, then reconnects silently
            r = await http.post("/instance/restart/acme", headers=AUTH)
            assert r.json()["count"] == 1
            assert [e[1] for e in await listener.take(2)] == ["connection.update", "qrcode.updated"]
            # §3.2: wavoipToken at create fails on 2.3.6 and the create is rolled back
            r = await create(http, "beta", wavoipToken="abc")
            assert (r.status_code, r.json()["response"]["message"]) == (
                400,
                ["Cannot read properties of undefined (reading 'ws')"],
            )
            assert [e[1] for e in await listener.take(2)] == ["instance.create", "remove.instance"]
            await server.wait_until_gone("beta")
            # an injected failure on the Socket.IO handshake (e.g. an ingress 502)
            server.fail_next("GET", "/socket.io/", 502, "Bad Gateway")
            r = await http.get(f"/socket.io/?EIO=4&transport=polling&apikey={KEY}")
            assert (r.status_code, r.text) == (502, "Bad Gateway")
    finally:
        await server.stop()


# --------------------------------------------------------------------------------------------- opt-in timing


async def test_documented_waits_are_opt_in_and_keep_the_fixed_sleeps(listeners: list[Listener]) -> None:
    """§3.2: create with qrcode:true answers after a fixed 5 s; §3.3: connect that starts a socket sleeps 2 s
    before answering (the QR follows the reply). Without the option both answer at once."""
    assert FakeEvolution().documented_waits is False
    server = FakeEvolution(documented_waits=True)
    assert (server.create_qr_wait, server.connect_wait) == (5.0, 2.0)
    await server.start()
    try:
        listener = Listener()
        listeners.append(listener)
        await listener.connect(server.url)
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            started = loop.time()
            assert (await create(http, "plain")).status_code == 201  # no qrcode: no wait
            assert loop.time() - started < 1.5

            async def timed(call) -> tuple[float, httpx.Response]:
                began = loop.time()
                response = await call
                return loop.time() - began, response

            (create_s, created), (connect_s, connected) = await asyncio.gather(
                timed(create(http, "withqr", qrcode=True)),
                timed(http.get("/instance/connect/plain", headers=AUTH)),
            )
            assert 5.0 <= create_s < 7.0 and created.json()["qrcode"]["count"] == 1
            assert 2.0 <= connect_s < 4.0 and connected.json() == {"count": 0}
            # connecting: connect is read-only and answers at once
            started = loop.time()
            await server.wait_until(lambda: server.instances["plain"].qr_count == 1, timeout=2)
            assert (await http.get("/instance/connect/plain", headers=AUTH)).json()["count"] == 1
            assert loop.time() - started < 1.5
    finally:
        await server.stop()


async def test_qr_rotation_and_socket_renewal_are_opt_in(listeners: list[Listener]) -> None:
    """qr_interval: a new QR for every waiting instance on its own timer (first tick at a random phase);
    qr_renewal_every=3: every 3rd QR is preceded by `connecting` (§4.7 silent reconnect); none once paired."""
    plain = FakeEvolution()
    assert (plain.qr_interval, plain.qr_renewal_every) == (None, None)
    server = FakeEvolution(qr_interval=0.3, qr_renewal_every=3, seed=7)
    await server.start()
    try:
        listener = Listener()
        listeners.append(listener)
        await listener.connect(server.url)
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            await create(http, "acme")
            await http.get("/instance/connect/acme", headers=AUTH)
            seen: list[tuple[float, str, dict]] = []
            while sum(1 for _, e, _ in seen if e == "qrcode.updated") < 7:
                _, event, envelope = await listener.next(timeout=3)
                if event != "instance.create":
                    seen.append((loop.time(), event, envelope["data"]))
            kinds = [("qr" if e == "qrcode.updated" else d["state"]) for _, e, d in seen]
            assert kinds == ["connecting", "qr", "qr", "qr", "connecting", "qr", "qr", "qr", "connecting", "qr"]
            assert all(
                d == {"instance": "acme", "state": "connecting", "statusReason": 200}
                for _, e, d in seen
                if e != "qrcode.updated"
            )
            qr_times = [t for t, e, _ in seen if e == "qrcode.updated"]
            gaps = [b - a for a, b in itertools.pairwise(qr_times)]
            assert 0.1 <= gaps[0] <= 0.6  # the first tick: between 0.5 and 1.5 intervals
            assert all(0.2 <= gap <= 0.5 for gap in gaps[1:])
            assert len({d["qrcode"]["code"] for _, e, d in seen if e == "qrcode.updated"}) == 7
            assert server.instances["acme"].qr_count == 7
            # a manual QR does not move the timer; a scan ends the rotation
            await server.issue_qr("acme")
            await server.scan("acme")
            while True:
                _, event, envelope = await listener.next()
                if event == "connection.update" and envelope["data"]["state"] == "open":
                    break
            await asyncio.sleep(0.8)
            assert listener.queue.empty()
            assert "acme" not in server._qr_timers
    finally:
        await server.stop()
