"""The REST client's error normalisation and response parsing, against a scripted transport."""

import asyncio
import gzip
import json
import struct
import tracemalloc
import zlib

import httpx
import pytest

from whatsapp_operator.evolution.client import (
    DEFAULT_MAX_BODY_BYTES,
    DISABLED_WEBHOOK_URL,
    UNUSABLE_HEADER_VALUE,
    EvolutionClient,
    InstanceAlreadyExists,
    InstanceToken,
    QRPayload,
    ServerInfo,
    WebhookConfig,
)
from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.evolution.errors import EvolutionError, InstanceNotFound, error_message_from_body
from whatsapp_operator.redaction import redact
from whatsapp_operator.values import IMAGE_LIMIT

try:
    from evolution_fake import EVENTS_2_2_3, EVENTS_2_3_6, FakeEvolution
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.evolution_fake import EVENTS_2_2_3, EVENTS_2_3_6, FakeEvolution

API_KEY = "super-secret-global-key"


def client_answering(status: int, body, *, raw: bool = False) -> EvolutionClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["apikey"] == API_KEY
        if raw:
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    "body,expected",
    [
        ({"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}}, "Unauthorized"),
        (
            {"status": 404, "error": "Not Found", "response": {"message": ['The "x" instance does not exist']}},
            'The "x" instance does not exist',
        ),
        (
            {
                "status": 400,
                "error": "Bad Request",
                "response": {
                    "message": [["rejectCall is not of a type(s) boolean", 'instance requires property "groupsIgnore"']]
                },
            },
            'rejectCall is not of a type(s) boolean; instance requires property "groupsIgnore"',
        ),
        ({"error": True, "message": "[object Object]"}, "[object Object]"),
        ("plain text", "plain text"),
    ],
)
def test_error_messages_are_flattened(body, expected):
    assert error_message_from_body(body) == expected


@pytest.mark.parametrize(
    "status,reason",
    [
        (400, "EvolutionRejectedRequest"),
        (401, "EvolutionUnauthorized"),
        (403, "EvolutionForbidden"),
        (500, "EvolutionServerError"),
        (503, "EvolutionServerError"),
    ],
)
async def test_http_errors_become_reasons(status, reason):
    client = client_answering(status, {"status": status, "error": "x", "response": {"message": ["went wrong"]}})
    with pytest.raises(EvolutionError) as caught:
        await client.connection_state("acme")
    assert caught.value.reason == reason
    assert f"HTTP {status}" in caught.value.message and "went wrong" in caught.value.message
    await client.aclose()


async def test_404_on_an_instance_route_is_instance_not_found():
    client = client_answering(
        404, {"status": 404, "error": "Not Found", "response": {"message": ['The "acme" instance does not exist']}}
    )
    with pytest.raises(InstanceNotFound):
        await client.connection_state("acme")
    assert await client.delete_instance("acme") is False
    await client.aclose()


async def test_http_200_error_body_is_an_error():
    client = client_answering(200, {"error": True, "message": "[object Object]"})
    with pytest.raises(EvolutionError) as caught:
        await client.connect("acme")
    assert caught.value.reason == "EvolutionNotReady"
    assert "[object Object]" not in caught.value.message
    await client.aclose()


async def test_500_with_a_string_message():
    client = client_answering(
        500,
        {
            "status": 500,
            "error": "Internal Server Error",
            "response": {"message": "Cannot read properties of undefined (reading 'length')"},
        },
    )
    with pytest.raises(EvolutionError) as caught:
        await client.create_instance("acme", integration="WHATSAPP-BAILEYS", settings={})
    assert "Cannot read properties of undefined" in caught.value.message
    await client.aclose()


async def test_non_json_answer_is_a_bad_response():
    client = client_answering(200, "<html>proxy</html>", raw=True)
    with pytest.raises(EvolutionError) as caught:
        await client.connection_state("acme")
    assert caught.value.reason == "EvolutionBadResponse"
    await client.aclose()


async def test_name_in_use_is_already_exists():
    client = client_answering(
        403, {"status": 403, "error": "Forbidden", "response": {"message": ['This name "acme" is already in use.']}}
    )
    with pytest.raises(InstanceAlreadyExists):
        await client.create_instance("acme", integration="WHATSAPP-BAILEYS", settings={})
    await client.aclose()


async def test_unreachable_server():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler))
    with pytest.raises(EvolutionError) as caught:
        await client.connection_state("acme")
    assert caught.value.reason == "EvolutionUnreachable" and caught.value.retryable
    await client.aclose()


async def test_connect_answers():
    for body, state, code in [
        ({"instance": {"instanceName": "acme", "state": "open"}}, "open", None),
        ({"count": 0}, None, None),
        ({"pairingCode": None, "code": "2@x", "base64": "data:x", "count": 3}, None, "2@x"),
    ]:
        result = await client_answering(200, body).connect("acme")
        assert result.state == state
        assert (result.qr.code if result.qr else None) == code


async def test_tokens_never_leave_the_client():
    rows = [
        {
            "id": "i-1",
            "name": "acme",
            "connectionStatus": "open",
            "ownerJid": "5511@s.whatsapp.net",
            "profileName": "ACME",
            "profilePicUrl": None,
            "token": "INSTANCE-TOKEN-123",
            "disconnectionReasonCode": None,
        }
    ]
    record = await client_answering(200, rows).fetch_instance("acme")
    assert record is not None and record.instance_id == "i-1"
    assert "INSTANCE-TOKEN-123" not in repr(record)


async def test_create_request_body():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(
            201,
            json={"instance": {"instanceName": "acme", "instanceId": "i-1", "status": "close"}, "hash": "TOKEN-XYZ"},
        )

    client = EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler))
    created = await client.create_instance("acme", integration="WHATSAPP-BAILEYS", settings={"rejectCall": True})
    assert created.instance_id == "i-1"
    assert "TOKEN-XYZ" not in repr(created)
    assert seen["instanceName"] == "acme" and seen["integration"] == "WHATSAPP-BAILEYS"
    assert seen["qrcode"] is False and seen["rejectCall"] is True
    assert "QRCODE_UPDATED" in seen["websocket"]["events"]


async def test_follow_up_calls_are_served_before_new_entries():
    import asyncio

    from whatsapp_operator.evolution.client import PrioritySlots

    slots = PrioritySlots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with slots.slot(1):
            await release.wait()

    async def call(name: str, priority: int) -> None:
        async with slots.slot(priority):
            order.append(name)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)  # the holder takes the only slot
    waiting = [
        asyncio.create_task(call("entry-1", 1)),
        asyncio.create_task(call("entry-2", 1)),
        asyncio.create_task(call("follow-up", 0)),
    ]
    cancelled = asyncio.create_task(call("cancelled", 0))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await asyncio.gather(holder, *waiting)
    assert order == ["follow-up", "entry-1", "entry-2"]
    async with slots.slot(5):  # every slot came back, the cancelled waiter's too
        pass


# -- answers that used to escape as something other than EvolutionError ----------------------------

GOOD_STATE = (200, b'{"instance": {"instanceName": "acme", "state": "open"}}', {"content-type": "application/json"})


def scripted_client(*answers: tuple[int, bytes, dict[str, str]], **options) -> EvolutionClient:
    """A client whose transport streams `answers` in turn (raw bytes, as from a socket), then GOOD_STATE."""
    pending = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        status, body, headers = pending.pop(0) if pending else GOOD_STATE
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    return EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler), **options)


async def bad_response_then_recovery(client: EvolutionClient) -> EvolutionError:
    """The first call fails with EvolutionBadResponse, counted; the next call on the same client works."""
    with pytest.raises(EvolutionError) as caught:
        await client.connection_state("acme")
    assert caught.value.reason == "EvolutionBadResponse", caught.value
    assert caught.value.retryable
    assert client.calls.get(("read connection state", "bad_response")) == 1
    assert API_KEY not in caught.value.message
    assert await client.connection_state("acme") == "open"
    await client.aclose()
    return caught.value


def nested(depth: int, leaf: str = '"x"') -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


async def test_gzip_header_on_a_body_that_is_not_gzip():
    body = b'{"instance": {"state": "open"}}'
    await bad_response_then_recovery(scripted_client((200, body, {"content-encoding": "gzip"})))


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'{"instance": "open"}', b'{"instance": {"state": "sideways"}}'], ids=["list", "flat", "state"]
)
async def test_json_of_the_wrong_shape_is_counted_as_a_bad_answer_not_ok(body: bytes):
    client = scripted_client((200, body, {"content-type": "application/json"}))
    await bad_response_then_recovery(client)
    assert client.calls.get(("read connection state", "ok")) == 1  # the recovery only


async def test_a_200_answer_nested_1000_levels_deep():
    error = await bad_response_then_recovery(scripted_client((200, nested(1000), {})))
    assert "nested deeper than" in error.message


async def test_a_4xx_whose_message_is_nested_hundreds_of_levels_deep():
    body = b'{"status": 400, "error": "Bad Request", "response": {"message": ' + nested(600) + b"}}"
    error = await bad_response_then_recovery(scripted_client((400, body, {"content-type": "application/json"})))
    assert error.status == 400


def test_error_messages_are_bounded_in_depth_and_size():
    deep: list = ["bottom"]
    for _ in range(5000):
        deep = [deep]
    assert error_message_from_body({"response": {"message": deep}}).endswith("…")
    wide = {"response": {"message": [f"part {index}" for index in range(100_000)]}}
    assert len(error_message_from_body(wide)) < 2000
    assert len(error_message_from_body("x" * 10_000_000)) < 2000
    for text in [
        "x" * (64 * 1024 - 5) + API_KEY,
        "apikey=abc " + "x" * 100_000 + API_KEY,
        " " * 100_000 + API_KEY + " trailing",
        "token=" + "t" * 70_000 + " " + API_KEY,
    ]:
        message = EvolutionError("X", f"HTTP 500: {error_message_from_body(text)}").message
        assert API_KEY[:6] not in message and "abc" not in message and "ttt" not in message
    assert (
        error_message_from_body({"message": {"token": "TOKEN-IN-A-MESSAGE", "x": [1, None, 2**80]}})
        == "{token: ***, x: [1, null, 1208925819614629174706176]}"
    )


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/json; charset=utf-16", b"\xff\x00\xd8"),  # not UTF-16 at all
        ("application/json; charset=utf-16", b'{"instance": {"state": "op\xe9n"}'),
        ("application/json; charset=idna", b"\x00\x00\x00\xff"),  # a codec that is not a charset
        ("application/json; charset=no-such-charset", b"\xc3("),
        ("application/json; charset=\x00", b"\xc3("),
    ],
)
async def test_a_declared_charset_that_does_not_fit_the_bytes(content_type, body):
    await bad_response_then_recovery(scripted_client((200, body, {"content-type": content_type})))


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/json; charset=utf-16", b'{"instance": {"state": "open"}}'),  # UTF-8 first
        ("application/json; charset=utf-16", '{"instance": {"state": "open"}}'.encode("utf-16")),  # BOM
        ("application/json", '\ufeff{"instance": {"state": "open"}}'.encode()),  # UTF-8 BOM
    ],
)
async def test_json_is_read_whatever_the_declared_charset(content_type, body):
    client = scripted_client((200, body, {"content-type": content_type}))
    assert await client.connection_state("acme") == "open"
    await client.aclose()


async def test_an_answer_larger_than_the_limit():
    fits = b'{"instance": {"state": "open"}, "padding": "' + b"x" * 900 + b'"}'
    too_large = fits + b" " * 1000
    client = scripted_client((200, fits, {}), (200, too_large, {}), max_body_bytes=len(fits))
    assert await client.connection_state("acme") == "open"
    error = await bad_response_then_recovery(client)
    assert f"answer larger than {len(fits)} bytes" in error.message


def gzip_bomb(mebibytes: int) -> bytes:
    """gzip of `mebibytes` MiB of zeros in ~1 KB per MiB: independent full-flush blocks, repeated."""
    zeros = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()[:-8]  # the final empty block; the trailer is made for the whole stream
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    return head + block * (mebibytes - 1) + end + struct.pack("<II", crc, (mebibytes << 20) & 0xFFFFFFFF)


@pytest.mark.parametrize("encoding", ["gzip", "gzip, identity", "identity, gzip"])
async def test_a_gzip_bomb_is_stopped_at_the_limit(encoding):
    bomb = gzip_bomb(256)
    assert len(bomb) < 300_000
    client = scripted_client((200, bomb, {"content-encoding": encoding}))
    tracemalloc.start()
    try:
        error = await bad_response_then_recovery(client)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"answer larger than {DEFAULT_MAX_BODY_BYTES} bytes" in error.message
    assert peak < 3 * DEFAULT_MAX_BODY_BYTES  # not the 256 MiB the bomb expands to


async def test_gzip_and_deflate_answers_are_decoded():
    body = b'{"instance": {"instanceName": "acme", "state": "open"}}'
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    answers = [
        (200, gzip.compress(body), {"content-encoding": "gzip"}),
        (200, zlib.compress(body), {"content-encoding": "deflate"}),
        (200, raw_deflate.compress(body) + raw_deflate.flush(), {"content-encoding": "deflate"}),
        (200, gzip.compress(gzip.compress(body)), {"content-encoding": "gzip, gzip"}),
        (200, body, {"content-encoding": "x-unknown"}),
    ]
    client = scripted_client(*answers)
    for _ in answers:
        assert await client.connection_state("acme") == "open"
    await client.aclose()


async def test_an_unexpected_failure_is_a_bad_response_logged_once(caplog):
    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"surprise carrying {API_KEY}")

    client = EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler))
    for _ in range(3):
        with pytest.raises(EvolutionError) as caught:
            await client.connection_state("acme")
        assert caught.value.reason == "EvolutionBadResponse"
    assert client.calls[("read connection state", "bad_response")] == 3
    tracebacks = [record for record in caplog.records if "Traceback" in record.getMessage()]
    assert len(tracebacks) == 1 and API_KEY not in caplog.text
    await client.aclose()


async def test_cancellation_is_not_turned_into_an_error():
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    client = EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler))
    call = asyncio.create_task(client.connection_state("acme"))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await client.aclose()


def test_the_client_registers_its_api_key_for_redaction():
    key = "key-only-this-client-knows-0123"
    EvolutionClient("http://evolution.test", key)
    assert key not in redact(f"an error that quotes {key}")


def test_messages_are_redacted_before_they_are_clipped():
    error = EvolutionError("X", "word " * 58 + API_KEY + " and more")
    assert API_KEY[:8] not in error.message and len(error.message) <= 300


def json_answer(body) -> tuple[int, bytes, dict[str, str]]:
    """A 200 with `body` as JSON text (lone surrogates as \\uXXXX escapes, as Evolution may send them)."""
    return 200, json.dumps(body).encode(), {"content-type": "application/json"}


async def test_parsed_values_fit_the_status():
    lone = "\ud800"
    qr = {
        "code": f"2@{lone}",
        "base64": "data:image/png;base64," + "A" * (IMAGE_LIMIT + 1),
        "pairingCode": "X" * 5000,
        "count": 2**64,
    }
    row = {
        "id": "i-1",
        "name": "acme",
        "profileName": "N" * 5000 + lone,
        "disconnectionReasonCode": 2**63,
        "ownerJid": lone,
        "hash": "H-123456",
        "apikey": "A-123456",
    }
    client = scripted_client(
        json_answer({"instance": {"instanceName": "acme", "state": "close"}, "qrcode": qr}),
        json_answer({"count": True}),
        json_answer([row]),
        json_answer([{**row, "disconnectionReasonCode": 401}]),
    )
    result = await client.connect("acme")
    assert result.qr == QRPayload(code="2@\ufffd", base64=None, pairing_code=None, count=None)
    assert (await client.connect("acme")).qr == QRPayload()
    record = await client.fetch_instance("acme")
    assert record is not None
    assert record.profile_name is not None and len(record.profile_name) == 1024 and record.profile_name[-1] == "…"
    assert record.disconnection_reason_code is None and record.owner_jid == "\ufffd"
    assert "H-123456" not in repr(record) and "A-123456" not in repr(record)
    record = await client.fetch_instance("acme")
    assert record is not None and record.disconnection_reason_code == 401
    await client.aclose()


@pytest.mark.parametrize("status", [101, 103, 301, 302, 304])
async def test_a_status_evolution_never_sends_is_an_error(status):
    client = client_answering(status, {"instance": {"state": "open"}})
    with pytest.raises(EvolutionError) as raised:
        await client.connection_state("shop")
    assert raised.value.reason == "EvolutionUnexpectedStatus" and str(status) in str(raised.value)
    await client.aclose()


async def test_a_call_is_bounded_as_a_whole_not_only_per_read():
    async def drip(request):
        async def body():
            for _ in range(100):
                await asyncio.sleep(0.05)  # each read comes well within the timeout
                yield b" "
            yield b'{"instance": {"state": "open"}}'

        return httpx.Response(200, headers={"content-type": "application/json"}, content=body())

    client = EvolutionClient("http://evolution.test", API_KEY, timeout=0.3, transport=httpx.MockTransport(drip))
    with pytest.raises(EvolutionError) as raised:
        await client.connection_state("shop")
    assert raised.value.reason == "EvolutionUnreachable" and "in time" in str(raised.value)
    await client.aclose()


# -- webhook, settings, tokens, server info, key rotation ------------------------------------------


FAKE_KEY = "evo-global-key-for-tests"
HOOK = WebhookConfig(
    url="https://hooks.example/evo",
    events=("MESSAGES_UPSERT", "CONNECTION_UPDATE"),
    by_events=True,
    base64=False,
    headers=(("x-token", "hook-secret-value-1"), ("authorization", "Bearer hook-secret-value-2")),
)


@pytest.fixture(params=["2.2.3", "2.3.6"])
async def evolution(request):
    server = FakeEvolution(version=request.param)
    await server.start()
    client = EvolutionClient(server.url, FAKE_KEY, timeout=5)
    yield server, client
    await client.aclose()
    await server.stop()


def test_webhook_config_masks_header_values_and_sorts_them():
    assert HOOK.headers == (("authorization", "Bearer hook-secret-value-2"), ("x-token", "hook-secret-value-1"))
    for text in (repr(HOOK), str(HOOK), f"{HOOK}", repr([HOOK])):
        assert "hook-secret-value" not in text and "***" in text and "x-token" in text
    assert HOOK.as_body() == {
        "enabled": True,
        "url": "https://hooks.example/evo",
        "events": ["MESSAGES_UPSERT", "CONNECTION_UPDATE"],
        "byEvents": True,
        "base64": False,
        "headers": {"authorization": "Bearer hook-secret-value-2", "x-token": "hook-secret-value-1"},
    }
    assert WebhookConfig(url="u").as_body()["events"] == []  # never missing


def test_webhook_differences():
    assert HOOK.differences(HOOK) == []
    assert HOOK.differences(None) == ["url", "events", "byEvents", "base64", "headers"]
    reordered = WebhookConfig(
        url=HOOK.url, events=tuple(reversed(HOOK.events)), by_events=True, headers=tuple(reversed(HOOK.headers))
    )
    assert HOOK.differences(reordered) == []  # events as sets, headers sorted
    other = WebhookConfig(url="https://x.example", events=("CALL",), by_events=False, base64=True)
    assert HOOK.differences(other) == ["url", "events", "byEvents", "base64", "headers"]
    # "all events": an empty list, or a version's whole list (what Evolution stores for an empty one)
    every = WebhookConfig(url="u")
    for version_list in (EVENTS_2_2_3, EVENTS_2_3_6):
        assert every.differences(WebhookConfig(url="u", events=version_list)) == []
    assert every.differences(WebhookConfig(url="u", events=EVENTS_2_3_6[:-1])) == ["events"]


def test_instance_token_is_masked_and_registered():
    token = InstanceToken("INSTANCE-TOKEN-ONLY-HERE-42")
    assert str(token) == repr(token) == f"{token}" == "***"
    assert token.reveal() == "INSTANCE-TOKEN-ONLY-HERE-42"
    assert "INSTANCE-TOKEN-ONLY-HERE-42" not in redact("leaked INSTANCE-TOKEN-ONLY-HERE-42")
    assert token == InstanceToken("INSTANCE-TOKEN-ONLY-HERE-42") and token != InstanceToken("OTHER-TOKEN")
    assert (
        InstanceToken.parse("") is None and InstanceToken.parse(42) is None and InstanceToken.parse("x" * 256) is None
    )
    with pytest.raises(ValueError):
        InstanceToken("")


async def test_create_with_a_webhook_and_the_token(evolution):
    server, client = evolution
    created = await client.create_instance(
        "acme", integration="WHATSAPP-BAILEYS", settings={"groupsIgnore": True}, webhook=HOOK
    )
    sent = server.requests[-1].json
    assert sent["webhook"] == HOOK.as_body()
    assert created.token is not None and created.token.reveal() == server.token_of("acme")
    assert server.token_of("acme") not in repr(created)
    stored = server.webhook_of("acme")
    assert stored is not None and (stored["url"], stored["webhookByEvents"]) == (HOOK.url, True)
    assert sorted(stored["events"]) == sorted(HOOK.events) and stored["headers"] == dict(HOOK.headers)
    assert await client.find_webhook("acme") == HOOK
    record = await client.fetch_instance("acme")
    assert record is not None and record.token == created.token
    assert server.token_of("acme") not in repr(record)
    # the header values we sent are redacted from then on
    assert "hook-secret-value-1" not in redact("header hook-secret-value-1")


async def test_set_find_and_disable_a_webhook(evolution):
    server, client = evolution
    await client.create_instance("acme", integration="WHATSAPP-BAILEYS", settings={})
    assert await client.find_webhook("acme") is None
    everything = WebhookConfig(url="https://hooks.example/all")
    await client.set_webhook("acme", everything)
    assert server.webhook_of("acme")["events"] == list(server.events)  # stored as the whole list
    found = await client.find_webhook("acme")
    assert found is not None and everything.differences(found) == []
    await client.set_webhook("acme", HOOK)
    assert HOOK.differences(await client.find_webhook("acme")) == []
    # drift made in the manager UI shows as differences
    await server.tamper_webhook("acme", url="https://evil.example", headers={"x-token": "changed"}, base64=True)
    assert HOOK.differences(await client.find_webhook("acme")) == ["url", "base64", "headers"]
    # removal: disabled, with a url 2.2.3 accepts, no events, no headers left behind
    await client.set_webhook("acme", None)
    assert server.requests[-1].json == {
        "webhook": {
            "enabled": False,
            "url": DISABLED_WEBHOOK_URL,
            "events": [],
            "byEvents": False,
            "base64": False,
            "headers": {},
        }
    }
    assert server.requests[-1].status == 201
    stored = server.webhook_of("acme")
    assert (stored["enabled"], stored["events"], stored["headers"], stored["webhookBase64"]) == (False, [], {}, False)
    assert await client.find_webhook("acme") is None
    with pytest.raises(InstanceNotFound):
        await client.find_webhook("ghost")


async def test_an_invalid_webhook_url_is_rejected_on_2_2_3_only(evolution):
    server, client = evolution
    await client.create_instance("acme", integration="WHATSAPP-BAILEYS", settings={})
    bad = WebhookConfig(url="not a url")
    if server.version == "2.2.3":
        with pytest.raises(EvolutionError) as raised:
            await client.set_webhook("acme", bad)
        assert raised.value.reason == "EvolutionRejectedRequest" and 'Invalid "url" property' in raised.value.message
    else:
        await client.set_webhook("acme", bad)
        assert bad.differences(await client.find_webhook("acme")) == []


async def test_find_settings(evolution):
    server, client = evolution
    await client.create_instance(
        "acme", integration="WHATSAPP-BAILEYS", settings={"rejectCall": True, "msgCall": "busy", "groupsIgnore": True}
    )
    assert await client.find_settings("acme") == {
        "rejectCall": True,
        "msgCall": "busy",
        "groupsIgnore": True,
        "alwaysOnline": False,
        "readMessages": False,
        "readStatus": False,
        "syncFullHistory": False,
    }
    await server.tamper_settings("acme", alwaysOnline=True, wavoipToken="never-read")
    found = await client.find_settings("acme")
    assert found is not None and found["alwaysOnline"] is True and "wavoipToken" not in found
    server.instances["acme"].settings = None
    assert await client.find_settings("acme") is None


async def test_settings_answers_are_typed():
    client = scripted_client(
        json_answer({"rejectCall": "yes", "groupsIgnore": True, "msgCall": None, "readStatus": 1, "extra": True}),
        json_answer({"msgCall": 5}),
        json_answer([]),
    )
    assert await client.find_settings("acme") == {"groupsIgnore": True, "msgCall": ""}
    assert await client.find_settings("acme") == {}
    with pytest.raises(EvolutionError) as raised:
        await client.find_settings("acme")
    assert raised.value.reason == "EvolutionBadResponse"
    await client.aclose()


async def test_webhook_answers_are_bounded_and_typed():
    row = {"enabled": True, "url": "https://h.example", "events": ["CALL", "CALL", 7, None, "X" * 100]}
    client = scripted_client(
        json_answer({**row, "headers": {"a": 1, "b": True, "c": None, "d": {"x": "y"}, "e": "ok"}}),
        json_answer({**row, "enabled": None}),
        json_answer({**row, "url": None, "headers": "nope", "webhookByEvents": "true"}),
        json_answer({**row, "events": ["CALL"] * 257}),
        json_answer({**row, "headers": {f"h{i}": "v" for i in range(65)}}),
        json_answer("a string"),
        (200, b"", {"content-type": "application/json"}),
    )
    found = await client.find_webhook("acme")
    assert found is not None and found.events == ("CALL",)
    assert found.headers == (
        ("a", "1"),
        ("b", "true"),
        ("c", UNUSABLE_HEADER_VALUE),
        ("d", UNUSABLE_HEADER_VALUE),
        ("e", "ok"),
    )
    assert await client.find_webhook("acme") is None  # not enabled
    found = await client.find_webhook("acme")
    assert found is not None and (found.url, found.headers, found.by_events) == ("", (), False)
    for _ in range(4):  # too many events, too many headers, not an object, empty body
        with pytest.raises(EvolutionError) as raised:
            await client.find_webhook("acme")
        assert raised.value.reason == "EvolutionBadResponse"
    await client.aclose()


async def test_server_info(evolution):
    server, client = evolution
    info = await client.server_info()
    expected_web = server.wa_web_version if server.version == "2.3.6" else None
    assert info == ServerInfo(version=server.version, whatsapp_web_version=expected_web)


async def test_server_info_is_bounded_by_the_timeout_and_parsed_with_care():
    server = FakeEvolution(version="2.3.6", wa_web_delay=5)
    await server.start()
    client = EvolutionClient(server.url, FAKE_KEY, timeout=0.2)
    try:
        with pytest.raises(EvolutionError) as raised:
            await client.server_info()
        assert raised.value.reason == "EvolutionUnreachable"
    finally:
        await client.aclose()
        await server.stop()
    client = scripted_client(
        json_answer({"version": ["2.3.6"], "whatsappWebVersion": "9" * 200}),
        json_answer({"version": "2.3.6\ud800"}),
        json_answer([1]),
    )
    assert await client.server_info() == ServerInfo(None, None)
    assert await client.server_info() == ServerInfo("2.3.6\ufffd", None)
    with pytest.raises(EvolutionError):
        await client.server_info()
    await client.aclose()


async def test_use_api_key_after_a_rotation(evolution):
    server, client = evolution
    await client.create_instance("acme", integration="WHATSAPP-BAILEYS", settings={})
    server.rotate_api_key("rotated-global-key-5c1d")
    with pytest.raises(EvolutionError) as raised:
        await client.find_settings("acme")
    assert raised.value.reason == "EvolutionUnauthorized"
    client.use_api_key("rotated-global-key-5c1d")
    assert await client.find_settings("acme") is not None
    assert server.requests[-1].headers["apikey"] == "rotated-global-key-5c1d"
    assert "rotated-global-key-5c1d" not in redact("key rotated-global-key-5c1d")


async def test_connects_waiting_inside_evolution_do_not_hold_the_slots_that_bound_load():
    # Evolution answers /instance/connect only after its own sleep: here, never until released.
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/instance/connect/"):
            await release.wait()
            return httpx.Response(200, json={"count": 0})
        return httpx.Response(200, json={"instance": {"instanceName": "x", "state": "close"}})

    client = EvolutionClient(
        "http://evolution.test",
        API_KEY,
        transport=httpx.MockTransport(handler),
        max_concurrent_requests=1,
        max_concurrent_waits=4,
    )
    connects = [asyncio.ensure_future(client.connect(f"i{n}")) for n in range(4)]
    # With one load slot, a read still goes through while four connects wait inside Evolution.
    assert await asyncio.wait_for(client.connection_state("x"), 5) is ConnectionState.CLOSE
    assert not any(task.done() for task in connects)
    release.set()
    await asyncio.gather(*connects)
    await client.aclose()


async def test_a_list_of_thousands_of_rows_leaves_the_loop_to_others_while_it_is_read():
    # The operator has one event loop: a QR event that arrives while the periodic resync reads a
    # list of every instance must not wait for all of it (whatsapp_operator/pacing.py).
    from whatsapp_operator.pacing import ROWS_PER_TURN

    picture = "https://pps.whatsapp.net/" + "p" * 200  # rows of about the size Evolution sends
    rows = [
        {"name": f"shop-{index:04d}", "connectionStatus": "open", "id": f"id-{index}", "profilePicUrl": picture}
        for index in range(1000)
    ]
    client = client_answering(200, rows)
    turns = 0
    listing = asyncio.ensure_future(client.fetch_instances())
    while not listing.done():
        await asyncio.sleep(0)
        turns += 1
    records = listing.result()
    await client.aclose()
    assert len(records) == 1000
    # The rows are decoded and read ROWS_PER_TURN per turn of the loop, the first ones included.
    assert turns >= 1000 // ROWS_PER_TURN + 1


@pytest.mark.parametrize(
    "body,problem",
    [
        ('[{"name": "shop-1", "connectionStatus": "open"}, {"name": "shop-2", ', "non-JSON answer"),
        ('[{"name": "shop-1"}] trailing', "non-JSON answer"),
        ('[{"name": "shop-1"}, ' + "[" * 70 + "]" * 70 + "]", "nested deeper than 64 levels"),
    ],
)
async def test_an_instance_list_that_breaks_after_good_rows_is_a_bad_answer_and_nothing_of_it_is_kept(body, problem):
    # The list is decoded row by row; a fault after good rows makes the whole answer bad, as it was
    # when it was decoded at once, and the call is counted once, as a bad answer.
    client = client_answering(200, body, raw=True)
    with pytest.raises(EvolutionError) as caught:
        await client.fetch_instances()
    await client.aclose()
    assert problem in str(caught.value)
    assert client.calls == {("list instances", "bad_response"): 1}


async def test_an_instance_list_nested_just_within_the_bound_is_read():
    row = {"name": "shop-1", "connectionStatus": "open", "deep": json.loads("[" * 62 + "]" * 62)}  # 64 levels in all
    client = client_answering(200, [row])
    records = await client.fetch_instances()
    await client.aclose()
    assert list(records) == ["shop-1"]
    assert client.calls == {("list instances", "ok"): 1}
