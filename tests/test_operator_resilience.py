"""Outages, restarts and surprises on either side: the status is right afterwards."""

from __future__ import annotations

import logging

import pytest

from conftest import condition

ERROR_BODY_401 = {"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}}


async def test_socket_drop_then_resync_repairs_missed_events(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    client = operator.runtime.server.stream.client
    connects = client.stats.connects
    # Evolution keeps no event history: the scan happens while nobody listens.
    await operator.evolution.stop()
    await operator.evolution.start(load=False)
    instance = operator.evolution.instances["shop"]
    instance.state, instance.paired = "open", True
    instance.owner_jid, instance.profile_name = "5511911112222@s.whatsapp.net", "After Outage"
    status = await operator.wait_phase("shop", "Connected")
    assert client.stats.connects > connects
    assert status["connection"]["number"] == "5511911112222"
    assert status["connection"]["profileName"] == "After Outage"
    assert condition(status, "Synced")["status"] == "True"


async def test_server_side_disconnect_reconnects_and_keeps_following(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    connects = operator.runtime.server.stream.client.stats.connects
    await operator.evolution.drop_socket_clients()
    await operator.evolution.wait_for_socket_client()
    code = await operator.evolution.issue_qr("shop")
    await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)
    assert operator.runtime.server.stream.client.stats.connects == connects + 1


async def test_evolution_restart_brings_paired_instances_back(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.scan("shop")
    await operator.wait_phase("shop", "Connected")
    await operator.evolution.restart()
    status = await operator.wait_status(
        "shop", lambda s: s.get("phase") == "Connected" and condition(s, "Synced")["status"] == "True"
    )
    assert status["connection"]["number"] == "5511987654321"


async def test_evolution_down_is_reported_and_recovered(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.stop()
    status = await operator.wait_status("shop", lambda s: condition(s, "Synced")["status"] == "False")
    assert condition(status, "Synced")["reason"] == "EvolutionUnreachable"
    assert condition(status, "Ready")["status"] == "Unknown"
    await operator.evolution.start()
    status = await operator.wait_status("shop", lambda s: condition(s, "Synced")["status"] == "True")
    assert status["phase"] == "AwaitingScan"


async def test_instance_removed_out_of_band_is_recreated(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    old_id = operator.evolution.instances["shop"].id
    await operator.evolution.remove_out_of_band("shop")
    await operator.wait_event("shop", "Recreated")
    status = await operator.wait_status(
        "shop", lambda s: s.get("instanceId") not in (None, old_id) and s.get("phase") == "AwaitingScan"
    )
    assert status["instanceId"] == operator.evolution.instances["shop"].id


async def test_instance_missing_at_resync_is_recreated(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    del operator.evolution.instances["shop"]  # vanished without any event (e.g. database restored)
    await operator.runtime.resync_all()
    await operator.wait_event("shop", "Recreated")
    assert "shop" in operator.evolution.instances


async def test_evolution_down_during_delete_keeps_the_object_until_it_answers(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.stop()
    operator.delete("shop")
    status = await operator.wait_status(
        "shop", lambda s: condition(s, "Synced")["status"] == "False" and condition(s, "Reconciling") is not None
    )
    assert "kept until Evolution answers" in condition(status, "Synced")["message"]
    assert condition(status, "Reconciling")["reason"] == "Deleting"
    assert operator.get("shop")["metadata"].get("deletionTimestamp")
    await operator.evolution.start()
    await operator.wait_gone("shop", timeout=15)
    await operator.evolution.wait_until_gone("shop")


async def test_existing_instance_is_adopted_not_duplicated(evolution, operator_factory):
    import httpx

    async with httpx.AsyncClient(base_url=evolution.url, headers={"apikey": evolution.api_key}) as http:
        response = await http.post(
            "/instance/create", json={"instanceName": "legacy", "integration": "WHATSAPP-BAILEYS", "qrcode": False}
        )
        assert response.status_code == 201
        await http.get("/instance/connect/legacy")
    await evolution.wait_until(lambda: evolution.instances["legacy"].state == "connecting")
    await evolution.scan("legacy", number="5511900001111", profile_name="Legacy")
    async with operator_factory(evolution) as operator:
        operator.create("legacy", {"instanceName": "legacy"})
        status = await operator.wait_phase("legacy", "Connected")
        assert status["instanceId"] == evolution.instances["legacy"].id
        assert status["connection"]["number"] == "5511900001111"
        await operator.wait_event("legacy", "Adopted")
        creates = [r for r in evolution.requests if r.path == "/instance/create"]
        assert len(creates) == 1  # only ours from above


async def test_crash_between_create_and_status_write_is_recovered_by_adoption(evolution, operator_factory, kube):
    async with operator_factory(evolution) as operator:
        operator.create("shop", {"instanceName": "shop"})
        await operator.evolution.wait_for_request("POST", "/instance/create")
        await operator.wait_phase("shop", "AwaitingScan")
    # Simulate the lost status write: the object forgets everything the operator wrote.
    kube.patch(
        "whatsapp-operator.io",
        "v1alpha1",
        "whatsappinstances",
        "shop",
        {"status": None},
        namespace="default",
        subresource="status",
    )
    async with operator_factory(evolution) as operator:
        status = await operator.wait_status("shop", lambda s: s.get("phase") == "AwaitingScan")
        assert status["instanceId"] == evolution.instances["shop"].id
        assert status["qr"]["code"] == evolution.instances["shop"].cached_qr["code"]
        await operator.wait_event("shop", "Adopted")
        assert len([r for r in evolution.requests if r.path == "/instance/create"]) == 1


@pytest.mark.parametrize(
    "status,body,reason,text",
    [
        (
            400,
            {
                "status": 400,
                "error": "Bad Request",
                "response": {"message": [["rejectCall is not of a type(s) boolean"]]},
            },
            "EvolutionRejectedRequest",
            "rejectCall is not of a type(s) boolean",
        ),
        (401, ERROR_BODY_401, "EvolutionUnauthorized", "Unauthorized"),
        (
            403,
            {"status": 403, "error": "Forbidden", "response": {"message": ["Missing global api key"]}},
            "EvolutionForbidden",
            "Missing global api key",
        ),
        (
            500,
            {
                "status": 500,
                "error": "Internal Server Error",
                "response": {"message": "Cannot read properties of undefined"},
            },
            "EvolutionServerError",
            "Cannot read properties of undefined",
        ),
    ],
)
async def test_evolution_errors_surface_as_synced_false(operator, status, body, reason, text):
    operator.evolution.fail_next("GET", "/instance/connectionState/shop", status, body, times=1)
    operator.create("shop", {"instanceName": "shop"})
    result = await operator.wait_status(
        "shop", lambda s: condition(s, "Synced") is not None and condition(s, "Synced")["status"] == "False"
    )
    synced = condition(result, "Synced")
    assert synced["reason"] == reason
    assert text in synced["message"] and f"HTTP {status}" in synced["message"]
    await operator.wait_event("shop", reason)
    # The next attempt succeeds and clears the error.
    result = await operator.wait_status(
        "shop", lambda s: s.get("phase") == "AwaitingScan" and condition(s, "Synced")["status"] == "True"
    )


async def test_http_200_error_body_from_connect_is_synced_false(operator):
    operator.evolution.fail_next("GET", "/instance/connect/shop", 200, {"error": True, "message": "[object Object]"})
    operator.create("shop", {"instanceName": "shop"})
    result = await operator.wait_status(
        "shop", lambda s: condition(s, "Synced") is not None and condition(s, "Synced")["status"] == "False"
    )
    assert condition(result, "Synced")["reason"] == "EvolutionNotReady"
    await operator.wait_status(
        "shop", lambda s: s.get("phase") == "AwaitingScan" and condition(s, "Synced")["status"] == "True"
    )


async def test_create_rejected_by_evolution_is_failed(operator):
    operator.evolution.fail_next(
        "POST",
        "/instance/create",
        400,
        {"status": 400, "error": "Bad Request", "response": {"message": ["Invalid integration"]}},
    )
    operator.create("shop", {"instanceName": "shop"})
    status = await operator.wait_phase("shop", "Failed")
    assert condition(status, "Stalled")["status"] == "True"
    assert condition(status, "Stalled")["reason"] == "EvolutionRejectedInstance"
    assert "Invalid integration" in status["message"]
    await operator.wait_event("shop", "EvolutionRejectedInstance")
    creates = [r for r in operator.evolution.requests if r.path == "/instance/create"]
    assert len(creates) == 1 and "shop" not in operator.evolution.instances  # not retried: only a spec change helps


async def test_malformed_and_unknown_packets_are_counted_not_fatal(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    stream = operator.runtime.server.stream
    for raw in (
        '2["broken',
        "9x",
        '2["connection.update",{"instance":"shop","data":"nope"}]',
        '2["qrcode.updated",{"instance":"shop","data":{"qrcode":{}}}]',
        '2["totally.unknown",{}]',
    ):
        await operator.evolution.send_raw(raw)
    code = await operator.evolution.issue_qr("shop")  # still following events afterwards
    await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)
    # One connection delivers in order: the garbage sent before the QR has been handled by now.
    assert stream.client.stats.malformed_packets >= 2
    assert stream.stats.malformed_events == 2
    assert stream.stats.ignored_events >= 1


async def test_api_key_never_appears_in_status_events_or_logs(operator, caplog):
    key = operator.evolution.api_key
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    operator.evolution.fail_next("GET", "/instance/connectionState/shop", 401, ERROR_BODY_401)
    await operator.runtime.resync_all()
    await operator.evolution.drop_socket_clients()
    await operator.evolution.wait_for_socket_client()
    token = operator.evolution.instances["shop"].token
    everything = repr(operator.get("shop")) + repr(operator.kube.list("", "v1", "events", "default"))
    everything += caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert key not in everything
    assert token not in everything
    assert "apikey=***" in caplog.text or "apikey" not in caplog.text
    assert any(r.levelno >= logging.INFO for r in caplog.records)


async def test_instances_not_loaded_yet_after_a_restart_are_read_again(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.scan("shop")
    await operator.wait_phase("shop", "Connected")
    # Evolution is back but has not loaded its instances yet (docs/evolution-api.md §7.7): no state, errors.
    await operator.evolution.restart(load=False)
    status = await operator.wait_status("shop", lambda s: condition(s, "Synced")["reason"] == "EvolutionNotReady")
    assert "not loaded" in condition(status, "Synced")["message"]
    await operator.evolution.load_instances()
    status = await operator.wait_status(
        "shop", lambda s: condition(s, "Synced")["status"] == "True" and s.get("phase") == "Connected"
    )
    assert condition(status, "Ready")["status"] == "True"


async def test_a_restart_after_an_outage_reports_what_is_true_now(operator_factory, evolution):
    async with operator_factory(evolution) as first:
        first.create("shop", {"instanceName": "shop"})
        await first.wait_phase("shop", "AwaitingScan")
        await evolution.scan("shop")
        await first.wait_phase("shop", "Connected")
        await evolution.stop()
        await first.wait_status("shop", lambda s: condition(s, "Ready")["reason"] == "EvolutionUnreachable")
    await evolution.start()
    async with operator_factory(evolution) as second:
        await second.runtime.server.stream.client.wait_connected()
        status = await second.wait_status(
            "shop", lambda s: condition(s, "Synced")["status"] == "True" and "down" not in s["message"]
        )
        assert status["phase"] == "Connected"
        assert status["message"] == "Connected to WhatsApp as +5511987654321."
        assert condition(status, "Ready") | {"lastTransitionTime": None} == condition(status, "Ready") | {
            "status": "True",
            "reason": "Connected",
            "lastTransitionTime": None,
        }


async def test_a_status_the_apiserver_refuses_is_reported_once_and_not_retried(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.runtime.writer.flush(("default", "shop"))
    status_path = "/apis/whatsapp-operator.io/v1alpha1/namespaces/default/whatsappinstances/shop/status"
    patches_before = len([r for r in operator.kube.requests if r.path == status_path])
    operator.kube.fail_next("PATCH", status_path, 422)  # the rendered status refused, once
    await operator.evolution.scan("shop")
    status = await operator.wait_status("shop", lambda s: condition(s, "Synced")["status"] == "False")
    synced = condition(status, "Synced")
    assert synced["reason"] == "StatusRejected" and "422" in synced["message"]
    assert status["phase"] == "AwaitingScan"  # the refused status was not written
    await operator.wait_event("shop", "StatusRejected")
    # The refused document was sent once, then the fallback: no retry loop.
    assert len([r for r in operator.kube.requests if r.path == status_path]) == patches_before + 2
    # The next change is written in full again and clears the report.
    await operator.evolution.phone_logout("shop")
    status = await operator.wait_status("shop", lambda s: s.get("phase") == "LoggedOut")
    assert condition(status, "Synced")["status"] == "True"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"body": b"not gzip at all", "headers": {"Content-Encoding": "gzip"}}, id="bad-gzip"),
        pytest.param(
            {"body": b"[" * 1000 + b"]" * 1000, "headers": {"Content-Type": "application/json"}}, id="deep-json"
        ),
        pytest.param(
            {
                "body": b'{"instance": {"state": "open"}}',
                "headers": {"Content-Type": "application/json; charset=utf-16"},
            },
            id="bad-charset",
        ),
    ],
)
async def test_a_bad_answer_during_a_resync_does_not_end_the_resyncs(operator, answer):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    runtime = operator.runtime
    operator.evolution.fail_next("GET", "/instance/connectionState/shop", 200, **answer)
    reads = len([r for r in operator.evolution.requests if r.path == "/instance/connectionState/shop"])
    runtime.request_resync()
    await operator.evolution.wait_for_request("GET", "/instance/connectionState/shop", count=reads + 1)
    # Evolution changed behind our back; a later resync (periodic or after a reconnect) must see it.
    instance = operator.evolution.instances["shop"]
    instance.state, instance.paired = "open", True
    instance.owner_jid, instance.profile_name = "5511911112222@s.whatsapp.net", "Seen Later"
    runtime.request_resync()
    status = await operator.wait_status("shop", lambda s: s.get("phase") == "Connected")
    assert status["connection"]["number"] == "5511911112222"
    assert runtime.supervisor.restarts.get("resync", 0) == 0  # handled where it happened, not by a restart
