"""The real operator against the Kubernetes stand-in and a fake Evolution API: the happy path."""

from __future__ import annotations

from conftest import condition


async def test_create_reaches_awaiting_scan_with_the_qr_in_status(operator):
    operator.create("shop-123", {"instanceName": "shop-123"})
    status = await operator.wait_phase("shop-123", "AwaitingScan")
    fake_instance = operator.evolution.instances["shop-123"]
    assert status["qr"]["code"] == fake_instance.cached_qr["code"]
    assert status["qr"]["base64"].startswith("data:image/png;base64,")
    assert status["instanceName"] == "shop-123"
    assert status["instanceId"] == fake_instance.id
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Synced")["status"] == "True"
    await operator.wait_event("shop-123", "QRCodeIssued")
    assert "Created" in operator.event_reasons("shop-123")


async def test_qr_rotation_replaces_the_code_without_a_new_event(operator):
    operator.create("shop", {"instanceName": "shop"})
    first = await operator.wait_phase("shop", "AwaitingScan")
    new_code = await operator.evolution.issue_qr("shop")
    status = await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == new_code)
    assert status["qr"]["code"] != first["qr"]["code"]
    assert status["qr"]["count"] == first["qr"]["count"] + 1
    assert operator.event_reasons("shop").count("QRCodeIssued") == 1


async def test_scan_connects_with_number_and_profile(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.scan("shop", number="5511987654321", profile_name="ACME Support")
    status = await operator.wait_phase("shop", "Connected")
    assert "qr" not in status
    assert status["connection"]["number"] == "5511987654321"
    assert status["connection"]["profileName"] == "ACME Support"
    assert status["connection"]["state"] == "open"
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Reconciling") is None
    await operator.wait_event("shop", "Connected")


async def test_logout_from_the_phone_is_logged_out(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.scan("shop")
    await operator.wait_phase("shop", "Connected")
    await operator.evolution.phone_logout("shop")
    status = await operator.wait_phase("shop", "LoggedOut")
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Ready")["reason"] == "LoggedOut"
    assert status["connection"]["statusReason"] == 401
    await operator.wait_event("shop", "LoggedOut")


async def test_reconnect_annotation_after_logout_issues_a_new_qr(operator):
    operator.create("shop", {"instanceName": "shop"})
    first = await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.scan("shop")
    await operator.wait_phase("shop", "Connected")
    await operator.evolution.phone_logout("shop")
    await operator.wait_phase("shop", "LoggedOut")
    old_id = operator.get("shop")["status"]["instanceId"]
    operator.patch("shop", {"metadata": {"annotations": {"whatsapp-operator.io/reconnect": "1"}}})
    status = await operator.wait_phase("shop", "AwaitingScan")
    assert status["qr"]["code"] != first["qr"]["code"]
    # A fresh instance, not a re-pair of the logged-out one (Evolution 2.3.6 would stop processing
    # its messages): deleted, released, created again under the same name.
    assert status["instanceId"] == operator.evolution.instances["shop"].id != old_id
    await operator.evolution.wait_for_request("DELETE", "/instance/delete/shop")
    await operator.wait_event("shop", "Renewed")
    assert "Recreated" not in operator.event_reasons("shop")


async def test_logout_annotation_unlinks_a_connected_number(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.scan("shop")
    await operator.wait_phase("shop", "Connected")
    operator.patch("shop", {"metadata": {"annotations": {"whatsapp-operator.io/logout": "1"}}})
    status = await operator.wait_phase("shop", "LoggedOut")
    await operator.evolution.wait_for_request("DELETE", "/instance/logout/shop")
    assert condition(status, "Synced")["status"] == "True"
    assert operator.evolution.instances["shop"].state == "close"


async def test_logout_annotation_stops_a_qr_cycle(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    operator.patch("shop", {"metadata": {"annotations": {"whatsapp-operator.io/logout": "now"}}})
    status = await operator.wait_phase("shop", "LoggedOut")
    assert "qr" not in status
    # Evolution answers the logout before it runs it (docs/evolution-api.md 3.7): the status can be
    # written first.
    await operator.evolution.wait_until(lambda: operator.evolution.instances["shop"].state == "close")


async def test_qr_limit_stops_at_disconnected_until_asked(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.hit_qr_limit("shop")
    status = await operator.wait_phase("shop", "Disconnected")
    assert condition(status, "Ready")["reason"] == "QRCodeLimitReached"
    assert "qr" not in status
    connects = len([r for r in operator.evolution.requests if r.path.startswith("/instance/connect/")])
    await operator.runtime.resync_all()  # a resync must not start a QR cycle nobody asked for
    assert len([r for r in operator.evolution.requests if r.path.startswith("/instance/connect/")]) == connects
    assert operator.get("shop")["status"]["phase"] == "Disconnected"


async def test_pairing_number_is_sent_and_the_code_reported(operator):
    operator.create("shop", {"instanceName": "shop", "number": "5511987654321"})
    status = await operator.wait_status("shop", lambda s: bool((s.get("qr") or {}).get("pairingCode")))
    connect = await operator.evolution.wait_for_request("GET", "/instance/connect/shop")
    assert connect.query.get("number") == "5511987654321"
    assert status["qr"]["pairingCode"] in status["message"]


async def test_default_instance_name_is_namespace_dash_name(operator):
    operator.create("web.shop")
    status = await operator.wait_phase("web.shop", "AwaitingScan")
    assert status["instanceName"] == "default-web-shop"
    assert "default-web-shop" in operator.evolution.instances


async def test_settings_are_applied_at_creation_and_on_change(operator):
    operator.create("shop", {"instanceName": "shop", "settings": {"rejectCall": True, "msgCall": "busy"}})
    await operator.wait_phase("shop", "AwaitingScan")
    create = await operator.evolution.wait_for_request("POST", "/instance/create")
    assert create.json["rejectCall"] is True and create.json["msgCall"] == "busy"
    operator.patch("shop", {"spec": {"settings": {"rejectCall": False, "alwaysOnline": True}}})
    request = await operator.evolution.wait_for_request("POST", "/settings/set/shop")
    assert request.json["alwaysOnline"] is True and request.json["rejectCall"] is False
    await operator.wait_status("shop", lambda s: s.get("observedGeneration") == 2)


async def test_delete_removes_the_instance_and_releases_the_finalizer(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    operator.delete("shop")
    await operator.wait_gone("shop")
    await operator.evolution.wait_for_request("DELETE", "/instance/delete/shop")
    await operator.evolution.wait_until_gone("shop")
    assert "shop" not in operator.runtime.server.instances


async def test_delete_of_an_instance_already_gone_from_evolution_completes(operator):
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    operator.evolution.fail_next(
        "DELETE",
        "/instance/delete/shop",
        404,
        {"status": 404, "error": "Not Found", "response": {"message": ['The "shop" instance does not exist']}},
    )
    operator.delete("shop")
    await operator.wait_gone("shop")


async def test_reserved_instance_name_fails_with_a_reason(operator):
    operator.create("bad", {"instanceName": "constructor"})
    status = await operator.wait_phase("bad", "Failed")
    assert condition(status, "Stalled")["status"] == "True"
    assert condition(status, "Ready")["reason"] == "InvalidSpec"
    assert "reserved" in status["message"]
    assert not [r for r in operator.evolution.requests if r.path == "/instance/create"]
    operator.delete("bad")
    await operator.wait_gone("bad")


async def test_two_resources_cannot_share_one_evolution_instance(operator):
    operator.create("first", {"instanceName": "shared"})
    await operator.wait_phase("first", "AwaitingScan")
    operator.create("second", {"instanceName": "shared"})
    status = await operator.wait_phase("second", "Failed")
    assert "already used by default/first" in status["message"]
    assert operator.get("first")["status"]["phase"] == "AwaitingScan"
    assert len([r for r in operator.evolution.requests if r.path == "/instance/create"]) == 1


async def test_a_qr_code_that_never_comes_is_reported(evolution_factory, operator_factory):
    evolution = await evolution_factory(auto_qr=False)  # Evolution reconnects without QR codes (§7.2)
    async with operator_factory(evolution, qr_overdue_after=0.3) as operator:
        operator.create("shop", {"instanceName": "shop"})
        status = await operator.wait_status(
            "shop", lambda s: (condition(s, "Ready") or {}).get("reason") == "QRCodeOverdue"
        )
        assert status["phase"] == "Connecting"
        assert "No QR code from Evolution" in status["message"]
        await operator.wait_event("shop", "QRCodeOverdue")
        code = await evolution.issue_qr("shop")  # it recovers by itself once a QR arrives
        status = await operator.wait_phase("shop", "AwaitingScan")
        assert status["qr"]["code"] == code
