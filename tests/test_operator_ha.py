"""Two replicas with kopf peering: one acts, the other takes over when it leaves."""

from __future__ import annotations

import asyncio

from whatsapp_operator.kube.leadership import PeeringIdentity, is_leader

from conftest import run_operator
from kube_standin import KubeStandin

PEERING = "whatsapp-operator"


def test_leader_rule_follows_kopf():
    import datetime

    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    fresh = {"priority": 10, "lifetime": 60, "lastseen": "2026-01-01T00:00:00+00:00"}
    stale = {"priority": 99, "lifetime": 60, "lastseen": "2025-12-31T23:00:00+00:00"}
    assert is_leader({"me": {"priority": 20}, "other": fresh}, "me", 20, now)
    assert not is_leader({"other": fresh}, "me", 5, now)
    assert not is_leader({"other": fresh}, "me", 10, now)  # a tie pauses everybody in kopf
    assert is_leader({"other": stale}, "me", 5, now)  # dead peers do not count


async def test_one_replica_acts_and_the_other_takes_over(evolution):
    async with KubeStandin(peering=True) as kube:
        kube.create(
            "kopf.dev",
            "v1",
            "clusterkopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}},
        )
        standby_id = PeeringIdentity(PEERING, "replica-b", 100)
        async with run_operator(kube, evolution, peering=standby_id) as standby:
            async with run_operator(kube, evolution, peering=PeeringIdentity(PEERING, "replica-a", 200)) as active:
                await asyncio.wait_for(standby.runtime.leadership.wait_until(False), 10)
                await asyncio.wait_for(active.runtime.leadership.wait_until(True), 10)
                active.create("shop", {"instanceName": "shop"})
                await active.wait_phase("shop", "AwaitingScan")
                assert "shop" in active.runtime.server.instances
                assert "shop" not in standby.runtime.server.instances
                assert len([r for r in evolution.requests if r.path == "/instance/create"]) == 1
            # The active replica left the peering: the standby resumes the object and follows it.
            await asyncio.wait_for(standby.runtime.leadership.wait_until(True), 10)
            await evolution.scan("shop")
            status = await standby.wait_phase("shop", "Connected")
            assert status["connection"]["number"] == "5511987654321"
            assert len([r for r in evolution.requests if r.path == "/instance/create"]) == 1
