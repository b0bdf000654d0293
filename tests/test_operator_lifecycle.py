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
