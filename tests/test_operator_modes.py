"""Websocket delivery modes and Evolution versions (handshake auth or none)."""

from __future__ import annotations

import asyncio

import pytest

from whatsapp_operator.config import WebsocketMode


@pytest.mark.parametrize(
    "global_events,mode",
    [
        (True, WebsocketMode.GLOBAL),
        (False, WebsocketMode.INSTANCE),
        (True, WebsocketMode.AUTO),
        (False, WebsocketMode.AUTO),
    ],
)
@pytest.mark.parametrize("version", ["2.3.6", "2.2.3"])
async def test_full_cycle_in_every_mode_and_version(evolution_factory, operator_factory, global_events, mode, version):
    evolution = await evolution_factory(global_events=global_events, version=version)
    async with operator_factory(evolution, websocket_mode=mode) as operator:
        operator.create("shop", {"instanceName": "shop"})
        await operator.wait_phase("shop", "AwaitingScan")
        code = await evolution.issue_qr("shop")
        await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)
        await evolution.scan("shop", number="5511987654321", profile_name="ACME")
        status = await operator.wait_phase("shop", "Connected")
        assert status["connection"]["profileName"] == "ACME"
        stream = operator.runtime.server.stream
        if mode is WebsocketMode.AUTO:
            assert stream.global_confirmed is global_events
        if not global_events:
            assert "/shop" in stream.client.connected_namespaces
        await evolution.phone_logout("shop")
        await operator.wait_phase("shop", "LoggedOut")


async def test_global_mode_ignores_other_instances_traffic(evolution_factory, operator_factory):
    evolution = await evolution_factory(global_events=True)
    async with operator_factory(evolution, websocket_mode=WebsocketMode.GLOBAL) as operator:
        operator.create("shop", {"instanceName": "shop"})
        await operator.wait_phase("shop", "AwaitingScan")
        import httpx

        async with httpx.AsyncClient(base_url=evolution.url, headers={"apikey": evolution.api_key}) as http:
            await http.post(
                "/instance/create",
                json={"instanceName": "someone-else", "integration": "WHATSAPP-BAILEYS", "qrcode": True},
            )
        await evolution.wait_until(lambda: evolution.instances["someone-else"].state == "connecting")
        await evolution.scan("someone-else")
        await evolution.emit_message_traffic("someone-else", 20)
        code = await evolution.issue_qr("shop")
        status = await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)
        assert status["phase"] == "AwaitingScan"
        assert "someone-else" not in operator.runtime.server.instances


async def test_wrong_api_key_is_refused_at_the_handshake_and_reported(evolution_factory, operator_factory):
    evolution = await evolution_factory(version="2.3.6")
    async with operator_factory(evolution, evolution_api_key="not-the-right-key") as operator:
        operator.create("shop", {"instanceName": "shop"})
        await operator.kube.wait_until(
            lambda: "refused" in (operator.runtime.server.stream.client.stats.last_error or "")
        )
        assert evolution.socket_clients == 0
        status = await operator.wait_status(
            "shop", lambda s: any(c["type"] == "Synced" and c["status"] == "False" for c in s.get("conditions") or [])
        )
        assert "not-the-right-key" not in repr(status)


async def test_v2_2_3_checks_no_key_at_the_handshake(evolution_factory, operator_factory):
    evolution = await evolution_factory(version="2.2.3")
    async with operator_factory(evolution, evolution_api_key="a-key-2.2.3-never-checks") as operator:
        await asyncio.wait_for(operator.runtime.server.stream.client.wait_connected(), 5)
        assert operator.runtime.server.stream.client.state == "connected"
        assert evolution.socket_clients == 1
