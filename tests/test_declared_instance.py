"""The whole instance, declared: Evolution servers as objects, webhook, connection Secret,
deletion policy, pause, drift repair. Real kopf and runtime against the stand-ins."""

from __future__ import annotations

import base64
from typing import Any

from whatsapp_operator.names import CLUSTER_SERVER_PLURAL, GROUP, SERVER_PLURAL, VERSION

from conftest import NAMESPACE, OperatorUnderTest, condition
from evolution_fake import FakeEvolution
from kube_standin import KubeStandin

OPERATOR_NAMESPACE = "whatsapp-operator"


def requests_to(evolution: FakeEvolution, method: str, path_prefix: str) -> list[Any]:
    return [r for r in evolution.requests if r.method == method and r.path.startswith(path_prefix)]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def create_secret(kube: KubeStandin, name: str, data: dict[str, str], namespace: str = NAMESPACE) -> None:
    kube.create(
        "", "v1", "secrets", {"metadata": {"name": name}, "data": {k: b64(v) for k, v in data.items()}}, namespace
    )


def replace_secret_data(kube: KubeStandin, name: str, data: dict[str, str], namespace: str = NAMESPACE) -> None:
    kube.patch("", "v1", "secrets", name, {"data": {k: b64(v) for k, v in data.items()}}, namespace)


def declare_server(
    kube: KubeStandin, evolution: FakeEvolution, name: str, *, cluster: bool = False, secret: str | None = None
) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterEvolutionServer" if cluster else "EvolutionServer",
        "metadata": {"name": name},
        "spec": {
            "url": evolution.url,
            "apiKeySecretRef": {"name": secret or f"{name}-key", "key": "apiKey"},
            "websocket": {"mode": "auto"},
        },
    }
    if cluster:
        return kube.create(GROUP, VERSION, CLUSTER_SERVER_PLURAL, body)
    return kube.create(GROUP, VERSION, SERVER_PLURAL, body, NAMESPACE)


def ensure_operator_namespace(kube: KubeStandin) -> None:
    if kube.get("", "v1", "namespaces", OPERATOR_NAMESPACE) is None:
        kube.create("", "v1", "namespaces", {"metadata": {"name": OPERATOR_NAMESPACE}})


async def wait_server_status(
    kube: KubeStandin, plural: str, name: str, predicate: Any, namespace: str | None = NAMESPACE
) -> dict[str, Any]:
    obj = await kube.wait_for(
        GROUP, VERSION, plural, name, lambda o: o is not None and predicate(o.get("status") or {}), namespace, 10
    )
    assert obj is not None
    return obj["status"]


def synced_reason(status: dict[str, Any]) -> str | None:
    synced = condition(status, "Synced")
    return synced["reason"] if synced else None


async def test_two_servers_of_both_kinds_each_with_its_instance_and_one_socket(
    operator: OperatorUnderTest, evolution_factory: Any, monkeypatch: Any
) -> None:
    kube = operator.kube
    team = await evolution_factory()
    shared = await evolution_factory()
    ensure_operator_namespace(kube)
    create_secret(kube, "team-key", {"apiKey": team.api_key})
    create_secret(kube, "shared-key", {"apiKey": shared.api_key}, namespace=OPERATOR_NAMESPACE)
    declare_server(kube, team, "team")
    declare_server(kube, shared, "shared", cluster=True)

    operator.create("shop", {"instanceName": "shop", "serverRef": {"kind": "EvolutionServer", "name": "team"}})
    operator.create("cafe", {"instanceName": "cafe", "serverRef": {"kind": "ClusterEvolutionServer", "name": "shared"}})
    shop = await operator.wait_phase("shop", "AwaitingScan")
    cafe = await operator.wait_phase("cafe", "AwaitingScan")
    assert shop["server"] == "EvolutionServer/team" and cafe["server"] == "ClusterEvolutionServer/shared"
    assert "shop" in team.instances and "shop" not in shared.instances and "shop" not in operator.evolution.instances
    assert "cafe" in shared.instances and "cafe" not in team.instances
    await team.wait_for_socket_client(1)
    await shared.wait_for_socket_client(1)
    assert team.socket_clients == 1 and shared.socket_clients == 1

    status = await wait_server_status(
        kube, SERVER_PLURAL, "team", lambda s: s.get("instances") == 1 and s.get("socketConnected") is True
    )
    assert status["version"] == team.version
    assert condition(status, "Ready")["status"] == "True"
    cluster_status = await wait_server_status(
        kube, CLUSTER_SERVER_PLURAL, "shared", lambda s: s.get("instances") == 1, namespace=None
    )
    assert condition(cluster_status, "Ready")["status"] == "True"

    # The last instance gone: the server's socket closes.
    operator.delete("shop")
    await operator.wait_gone("shop")
    await team.wait_for_no_socket_clients()


async def test_a_missing_server_and_a_missing_secret_resolve_by_themselves(
    operator: OperatorUnderTest, evolution_factory: Any
) -> None:
    kube = operator.kube
    team = await evolution_factory()
    operator.create("shop", {"instanceName": "shop", "serverRef": {"name": "team"}})
    status = await operator.wait_status("shop", lambda s: synced_reason(s) == "ServerNotFound")
    assert "EvolutionServer team" in condition(status, "Synced")["message"]

    declare_server(kube, team, "team")
    await operator.wait_status("shop", lambda s: synced_reason(s) == "ServerKeyMissing")
    server = await wait_server_status(
        kube, SERVER_PLURAL, "team", lambda s: (condition(s, "Ready") or {}).get("reason") == "ServerKeyMissing"
    )
    assert condition(server, "Ready")["status"] == "False"

    create_secret(kube, "team-key", {"apiKey": team.api_key})
    await operator.runtime.check_servers()
    await operator.wait_phase("shop", "AwaitingScan")
    assert "shop" in team.instances


async def test_a_rotated_key_is_used_without_a_restart(operator: OperatorUnderTest, evolution_factory: Any) -> None:
    kube = operator.kube
    team = await evolution_factory()
    create_secret(kube, "team-key", {"apiKey": team.api_key})
    declare_server(kube, team, "team")
    operator.create("shop", {"instanceName": "shop", "serverRef": {"name": "team"}})
    await operator.wait_phase("shop", "AwaitingScan")
    connects_before = team.socket_clients

    team.rotate_api_key("rotated-key-0123456789")
    replace_secret_data(kube, "team-key", {"apiKey": "rotated-key-0123456789"})
    await operator.runtime.check_servers()
    await team.wait_for_socket_client(1)
    assert connects_before == 1
    # New REST calls and the new socket both work: a fresh QR reaches the status.
    code = await team.issue_qr("shop")
    await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)
    await operator.runtime.resync_all()
    status = await operator.wait_status("shop", lambda s: synced_reason(s) == "Synced")
    assert status["phase"] == "AwaitingScan"


async def test_a_server_in_use_is_kept_until_its_instances_are_gone(
    operator: OperatorUnderTest, evolution_factory: Any
) -> None:
    kube = operator.kube
    team = await evolution_factory()
    create_secret(kube, "team-key", {"apiKey": team.api_key})
    declare_server(kube, team, "team")
    operator.create("shop", {"instanceName": "shop", "serverRef": {"name": "team"}})
    await operator.wait_phase("shop", "AwaitingScan")

    kube.delete(GROUP, VERSION, SERVER_PLURAL, "team", NAMESPACE)
    status = await wait_server_status(kube, SERVER_PLURAL, "team", lambda s: condition(s, "InUse") is not None)
    assert "1 WhatsAppInstance" in condition(status, "InUse")["message"]
    assert kube.get(GROUP, VERSION, SERVER_PLURAL, "team", NAMESPACE) is not None

    operator.delete("shop")
    await operator.wait_gone("shop")  # removed from Evolution through the server it still had
    await team.wait_until_gone("shop")
    await kube.wait_for(GROUP, VERSION, SERVER_PLURAL, "team", lambda o: o is None, NAMESPACE, 30)


async def test_webhook_at_create_on_change_removed_and_drift_put_back(operator: OperatorUnderTest) -> None:
    kube = operator.kube
    evolution = operator.evolution
    create_secret(kube, "hook-auth", {"token": "Bearer s3cr3t-hook-value"})
    webhook = {
        "url": "https://hooks.example/evo",
        "events": ["MESSAGES_UPSERT", "CONNECTION_UPDATE"],
        "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "hook-auth", "key": "token"}}}],
    }
    operator.create("shop", {"instanceName": "shop", "webhook": webhook})
    await operator.wait_phase("shop", "AwaitingScan")
    stored = evolution.webhook_of("shop")
    assert stored is not None and stored["enabled"] is True and stored["url"] == "https://hooks.example/evo"
    assert sorted(stored["events"]) == ["CONNECTION_UPDATE", "MESSAGES_UPSERT"]
    assert stored["headers"] == {"Authorization": "Bearer s3cr3t-hook-value"}

    operator.patch("shop", {"spec": {"webhook": {**webhook, "url": "https://hooks.example/v2"}}})
    await evolution.wait_until(lambda: (evolution.webhook_of("shop") or {}).get("url") == "https://hooks.example/v2")

    await evolution.tamper_webhook("shop", url="https://attacker.example/")
    await evolution.tamper_settings("shop", rejectCall=True)
    tracker = operator.runtime.registry.get((NAMESPACE, "shop"))
    assert tracker is not None
    await operator.runtime.repair_drift([tracker])
    assert evolution.webhook_of("shop")["url"] == "https://hooks.example/v2"
    assert evolution.settings_of("shop")["rejectCall"] is False
    await operator.wait_event("shop", "DriftCorrected")
    drift = next(e for e in kube.events_for(NAMESPACE, "shop") if e["reason"] == "DriftCorrected")
    assert "webhook.url" in drift["message"] and "settings.rejectCall" in drift["message"]
    assert "s3cr3t" not in str(kube.events_for(NAMESPACE, "shop"))

    operator.patch("shop", {"spec": {"webhook": None}})
    await evolution.wait_until(lambda: not (evolution.webhook_of("shop") or {}).get("enabled"))


async def test_a_drift_round_spreads_the_checks_over_the_period(operator: OperatorUnderTest) -> None:
    evolution = operator.evolution
    for name in ("a", "b", "c"):
        operator.create(name, {"instanceName": name})
    for name in ("a", "b", "c"):
        await operator.wait_phase(name, "AwaitingScan")
    trackers = [operator.runtime.registry.get((NAMESPACE, name)) for name in ("a", "b", "c")]
    assert all(trackers)
    timeline: list[str] = []

    async def recording_sleep(seconds: float) -> None:
        # What had been read before each pause: one instance's two reads per pause, not all at once.
        reads = [r.path for r in evolution.requests if r.path.startswith(("/settings/find/", "/webhook/find/"))]
        timeline.append(f"sleep {seconds:g} after {len(reads)} reads")

    operator.runtime.drift_interval = 30.0
    await operator.runtime.drift_round(trackers, sleep=recording_sleep)  # type: ignore[arg-type]
    reads = [r.path for r in evolution.requests if r.path.startswith(("/settings/find/", "/webhook/find/"))]
    assert timeline == ["sleep 10 after 0 reads", "sleep 10 after 2 reads", "sleep 10 after 4 reads"]
    assert sorted(reads) == sorted(f"/{kind}/find/{name}" for kind in ("settings", "webhook") for name in "abc")


async def test_connection_secret_written_rewritten_and_gone_with_the_instance(operator: OperatorUnderTest) -> None:
    kube = operator.kube
    evolution = operator.evolution
    operator.create("shop", {"instanceName": "shop", "writeConnectionSecretToRef": {"name": "shop-evolution"}})
    await operator.wait_phase("shop", "AwaitingScan")
    secret = await kube.wait_for("", "v1", "secrets", "shop-evolution", lambda o: o is not None, NAMESPACE, 10)
    assert secret is not None
    data = {key: unb64(value) for key, value in secret["data"].items()}
    assert data == {"url": evolution.url, "instance": "shop", "token": evolution.token_of("shop")}
    owner = secret["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "WhatsAppInstance" and owner["uid"] == operator.get("shop")["metadata"]["uid"]
    status = operator.get("shop")["status"]
    assert evolution.token_of("shop") not in str(status)

    kube.delete("", "v1", "secrets", "shop-evolution", NAMESPACE)
    tracker = operator.runtime.registry.get((NAMESPACE, "shop"))
    assert tracker is not None
    await operator.runtime.repair_drift([tracker])
    again = kube.get("", "v1", "secrets", "shop-evolution", NAMESPACE)
    assert again is not None and unb64(again["data"]["token"]) == evolution.token_of("shop")

    replace_secret_data(kube, "shop-evolution", {"token": "edited"})
    await operator.runtime.repair_drift([tracker])
    assert unb64(kube.get("", "v1", "secrets", "shop-evolution", NAMESPACE)["data"]["token"]) == evolution.token_of(
        "shop"
    )

    operator.delete("shop")
    await operator.wait_gone("shop")
    await kube.wait_for("", "v1", "secrets", "shop-evolution", lambda o: o is None, NAMESPACE, 10)


async def test_orphan_leaves_the_instance_in_evolution(operator: OperatorUnderTest) -> None:
    operator.create("shop", {"instanceName": "shop", "deletionPolicy": "Orphan"})
    await operator.wait_phase("shop", "AwaitingScan")
    deletes_before = len(requests_to(operator.evolution, "DELETE", "/instance/delete/shop"))
    operator.delete("shop")
    await operator.wait_gone("shop")
    assert "shop" in operator.evolution.instances
    assert len(requests_to(operator.evolution, "DELETE", "/instance/delete/shop")) == deletes_before
    await operator.wait_event("shop", "Orphaned")


async def test_pause_stops_every_call_and_resume_catches_up(operator: OperatorUnderTest) -> None:
    evolution = operator.evolution
    operator.create("shop", {"instanceName": "shop"}, annotations={"whatsapp-operator.io/paused": "true"})
    status = await operator.wait_status("shop", lambda s: s.get("paused") is True)
    assert synced_reason(status) == "Paused"
    await operator.runtime.resync_all()
    assert "shop" not in evolution.instances and not requests_to(evolution, "GET", "/instance/")

    operator.patch("shop", {"metadata": {"annotations": {"whatsapp-operator.io/paused": None}}})
    status = await operator.wait_phase("shop", "AwaitingScan")
    assert not status.get("paused") and synced_reason(status) == "Synced"
    await operator.wait_event("shop", "Resumed")


async def test_flapping_is_reported_once_instead_of_an_event_per_change(
    operator_factory: Any, evolution: FakeEvolution
) -> None:
    async with operator_factory(evolution, flapping_changes=2, flapping_window=600.0) as operator:
        operator.create("shop", {"instanceName": "shop"})
        await operator.wait_phase("shop", "AwaitingScan")
        await evolution.scan("shop")
        await operator.wait_phase("shop", "Connected")
        for _ in range(4):  # each drop: out of Connected and back in
            await evolution.transient_drop("shop")
            await operator.wait_status("shop", lambda s: (condition(s, "Ready") or {}).get("reason") == "Flapping")
        status = await operator.wait_phase("shop", "Connected")
        assert "changed connection" in condition(status, "Ready")["message"]
        await operator.wait_event("shop", "Flapping")
        await operator.runtime.publisher.flush_events()
        reasons = operator.event_reasons("shop")
        assert reasons.count("Flapping") == 1
        assert reasons.count("Connected") == 1  # the first connection only: the later ones were held back


def test_a_servers_key_stays_out_of_its_repr_and_tls_is_verified_unless_told_otherwise() -> None:
    from whatsapp_operator.config import WebsocketMode
    from whatsapp_operator.engine.server import Endpoint, _verification

    endpoint = Endpoint("https://evo.example", "k3y-that-must-not-show", WebsocketMode.AUTO)
    assert "k3y" not in repr(endpoint)
    assert _verification(endpoint) is True
    assert _verification(Endpoint("https://evo.example", "k", WebsocketMode.AUTO, insecure_skip_verify=True)) is False
