"""The REST client's error normalisation and response parsing, against a scripted transport."""

import json

import httpx
import pytest

from whatsapp_operator.evolution.client import EvolutionClient, InstanceAlreadyExists
from whatsapp_operator.evolution.errors import EvolutionError, InstanceNotFound, error_message_from_body

API_KEY = "super-secret-global-key"


def client_answering(status: int, body, *, raw: bool = False) -> EvolutionClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["apikey"] == API_KEY
        if raw:
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("body,expected", [
    ({"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}}, "Unauthorized"),
    ({"status": 404, "error": "Not Found", "response": {"message": ['The "x" instance does not exist']}},
     'The "x" instance does not exist'),
    ({"status": 400, "error": "Bad Request", "response": {"message": [["rejectCall is not of a type(s) boolean",
                                                                        "instance requires property \"groupsIgnore\""]]}},
     'rejectCall is not of a type(s) boolean; instance requires property "groupsIgnore"'),
    ({"error": True, "message": "[object Object]"}, "[object Object]"),
    ("plain text", "plain text"),
])
def test_error_messages_are_flattened(body, expected):
    assert error_message_from_body(body) == expected


@pytest.mark.parametrize("status,reason", [(400, "EvolutionRejectedRequest"), (401, "EvolutionUnauthorized"),
                                           (403, "EvolutionForbidden"), (500, "EvolutionServerError"),
                                           (503, "EvolutionServerError")])
async def test_http_errors_become_reasons(status, reason):
    client = client_answering(status, {"status": status, "error": "x", "response": {"message": ["went wrong"]}})
    with pytest.raises(EvolutionError) as caught:
        await client.connection_state("acme")
    assert caught.value.reason == reason
    assert f"HTTP {status}" in caught.value.message and "went wrong" in caught.value.message
    await client.aclose()


async def test_404_on_an_instance_route_is_instance_not_found():
    client = client_answering(404, {"status": 404, "error": "Not Found",
                                    "response": {"message": ['The "acme" instance does not exist']}})
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
    client = client_answering(500, {"status": 500, "error": "Internal Server Error",
                                    "response": {"message": "Cannot read properties of undefined (reading 'length')"}})
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
    client = client_answering(403, {"status": 403, "error": "Forbidden",
                                    "response": {"message": ['This name "acme" is already in use.']}})
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
    for body, state, code in [({"instance": {"instanceName": "acme", "state": "open"}}, "open", None),
                              ({"count": 0}, None, None),
                              ({"pairingCode": None, "code": "2@x", "base64": "data:x", "count": 3}, None, "2@x")]:
        result = await client_answering(200, body).connect("acme")
        assert result.state == state
        assert (result.qr.code if result.qr else None) == code


async def test_tokens_never_leave_the_client():
    rows = [{"id": "i-1", "name": "acme", "connectionStatus": "open", "ownerJid": "5511@s.whatsapp.net",
             "profileName": "ACME", "profilePicUrl": None, "token": "INSTANCE-TOKEN-123", "disconnectionReasonCode": None}]
    record = await client_answering(200, rows).fetch_instance("acme")
    assert record is not None and record.instance_id == "i-1"
    assert "INSTANCE-TOKEN-123" not in repr(record)


async def test_create_request_body():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(201, json={"instance": {"instanceName": "acme", "instanceId": "i-1",
                                                      "status": "close"}, "hash": "TOKEN-XYZ"})

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
    waiting = [asyncio.create_task(call("entry-1", 1)), asyncio.create_task(call("entry-2", 1)),
               asyncio.create_task(call("follow-up", 0))]
    cancelled = asyncio.create_task(call("cancelled", 0))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await asyncio.gather(holder, *waiting)
    assert order == ["follow-up", "entry-1", "entry-2"]
    async with slots.slot(5):  # every slot came back, the cancelled waiter's too
        pass
