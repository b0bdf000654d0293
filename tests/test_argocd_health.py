"""The Argo CD health checks (manifests/argocd/health.lua for WhatsAppInstance, server-health.lua
for EvolutionServer and ClusterEvolutionServer), run in Lua 5.1 and 5.4 through lupa.

Argo CD runs a script with gopher-lua (Lua 5.1) and the live object as the global `obj`;
the script returns {status, message}. The ConfigMap patch must carry the same scripts: regenerate
it with `python tests/test_argocd_health.py` after editing a .lua file.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51, lua54

from whatsapp_operator.engine.state import InstanceState
from whatsapp_operator.evolution.events import ConnectionUpdated

ARGOCD_DIR = Path(__file__).resolve().parent.parent / "manifests" / "argocd"
HEALTH_LUA = ARGOCD_DIR / "health.lua"
SERVER_HEALTH_LUA = ARGOCD_DIR / "server-health.lua"
PATCH_YAML = ARGOCD_DIR / "argocd-cm-patch.yaml"
HEALTH_KEY = "resource.customizations.health.whatsapp-operator.io_WhatsAppInstance"
# argocd-cm key -> the script it carries, in the order of the patch.
SCRIPTS = {
    HEALTH_KEY: HEALTH_LUA,
    "resource.customizations.health.whatsapp-operator.io_EvolutionServer": SERVER_HEALTH_LUA,
    "resource.customizations.health.whatsapp-operator.io_ClusterEvolutionServer": SERVER_HEALTH_LUA,
}
NOW = "2025-03-01T12:00:00Z"


def render_patch(scripts: dict[str, str]) -> str:
    """The argocd-cm patch: each script (by key) as a literal block, byte for byte."""
    data = ""
    for key, lua in scripts.items():
        body = "".join(f"    {line}" if line.strip() else "\n" for line in lua.splitlines(keepends=True))
        data += f"  {key}: |\n{body}"
    return (
        "# Generated from health.lua and server-health.lua by `python tests/test_argocd_health.py`;\n"
        "# do not edit by hand. Adds the health checks of WhatsAppInstance, EvolutionServer and\n"
        "# ClusterEvolutionServer to Argo CD (see README.md beside this file).\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: argocd-cm  # no namespace: apply it with -n to wherever Argo CD runs\n"
        "data:\n"
        f"{data}"
    )


def repository_scripts() -> dict[str, str]:
    return {key: path.read_text(encoding="utf-8") for key, path in SCRIPTS.items()}


# -- running the script ----------------------------------------------------------------------------


# gopher-lua implements Lua 5.1; 5.4 guards against relying on 5.1-only behaviour.
RUNTIMES = {"lua51": lua51, "lua54": lua54}


def to_lua(lua: Any, value: Any) -> Any:
    """Python (JSON-like) values to Lua tables, recursively; None becomes nil, like Argo CD's JSON."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    return value


def health(obj: dict[str, Any], runtime: str = "lua51", script: Path = HEALTH_LUA) -> dict[str, Any]:
    lua = RUNTIMES[runtime].LuaRuntime(unpack_returned_tuples=True)
    assert lua.lua_version[0] == 5 and lua.lua_version[1] == int(runtime[-1])
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script.read_text(encoding="utf-8"))
    assert set(result.keys()) == {"status", "message"}
    return {"status": result["status"], "message": result["message"]}


def wai(status: dict[str, Any] | None = None, generation: int = 1, **metadata: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "whatsapp-operator.io/v1alpha1",
        "kind": "WhatsAppInstance",
        "metadata": {
            "name": "shop-123",
            "namespace": "default",
            "generation": generation,
            **metadata,
        },
        "spec": {"number": "5511987654321"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def rendered(state: InstanceState, generation: int = 1) -> dict[str, Any]:
    """The status exactly as the operator writes it (JSON nulls dropped, like the API server)."""
    status = state.render_status(generation, NOW)
    return {key: value for key, value in status.items() if value is not None}


def state_in(phase: str) -> InstanceState:
    state = InstanceState(instance_name="default-shop-123")
    if phase == "Pending":
        return state
    state.created("id-1")
    if phase == "Creating":
        return state
    if phase == "AwaitingScan":
        state.qr_received("2@abc,def,ghi,jkl", None, "WZYEH1YY", NOW)
    elif phase == "Connecting":
        state.connecting(NOW)
    elif phase == "Connected":
        state.connected("5511987654321@s.whatsapp.net", "ACME", None, NOW)
    elif phase == "Disconnected":
        state.qr_limit_reached("QR code limit reached", NOW)
    elif phase == "LoggedOut":
        state.connected("5511987654321@s.whatsapp.net", "ACME", None, NOW)
        state.connection_updated(
            ConnectionUpdated(
                instance="default-shop-123",
                state="close",
                status_reason=401,
                wuid=None,
                profile_name=None,
                profile_picture_url=None,
            ),
            NOW,
        )
    elif phase == "Failed":
        state.failed("EvolutionRejectedInstance", "Evolution API rejected the instance: bad name.")
    assert state.phase.value == phase
    return state


EXPECTED = {
    "Pending": "Progressing",
    "Creating": "Progressing",
    "AwaitingScan": "Suspended",
    "Connecting": "Progressing",
    "Connected": "Healthy",
    "Disconnected": "Degraded",
    "LoggedOut": "Degraded",
    "Failed": "Degraded",
}


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("phase", list(EXPECTED))
def test_every_phase_as_the_operator_renders_it(phase: str, runtime: str) -> None:
    state = state_in(phase)
    result = health(wai(rendered(state)), runtime)
    assert result["status"] == EXPECTED[phase]
    assert result["message"] == state.message
    assert result["message"]  # never empty


def test_messages_are_the_status_message() -> None:
    assert health(wai(rendered(state_in("Connected"))))["message"] == "Connected to WhatsApp as +5511987654321."
    awaiting = health(wai(rendered(state_in("AwaitingScan"))))
    assert awaiting == {
        "status": "Suspended",
        "message": "Waiting for a scan: enter pairing code WZYEH1YY in WhatsApp on the phone, or scan the QR code.",
    }
    failed = health(wai(rendered(state_in("Failed"))))
    assert failed == {
        "status": "Degraded",
        "message": "Evolution API rejected the instance: bad name.",
    }


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_no_status_yet(runtime: str) -> None:
    expected = {"status": "Progressing", "message": "Waiting for the operator"}
    assert health(wai(None), runtime) == expected
    assert health(wai({}), runtime) == expected
    assert health(wai({"observedGeneration": 1, "conditions": []}), runtime) == expected


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("phase", ["Connected", "Failed", "AwaitingScan"])
def test_deletion_in_progress_is_progressing_whatever_the_phase(phase: str, runtime: str) -> None:
    state = state_in(phase)
    state.deleting = True
    obj = wai(rendered(state), deletionTimestamp="2025-03-01T11:59:00Z", finalizers=["x"])
    assert health(obj, runtime) == {
        "status": "Progressing",
        "message": "Removing the instance from Evolution API",
    }


def test_deletion_blocked_by_evolution_says_why() -> None:
    state = state_in("Connected")
    state.deleting = True
    state.sync_failed("EvolutionUnreachable", "Evolution API is unreachable: connection refused")
    obj = wai(rendered(state), deletionTimestamp="2025-03-01T11:59:00Z")
    assert health(obj) == {
        "status": "Progressing",
        "message": "Removing the instance from Evolution API; waiting: "
        "Evolution API is unreachable: connection refused",
    }


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_generation_lag_is_progressing(runtime: str) -> None:
    status = rendered(state_in("Connected"), generation=2)
    assert health(wai(status, generation=2), runtime)["status"] == "Healthy"
    assert health(wai(status, generation=3), runtime) == {
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation 3 (status is for generation 2)",
    }
    # A spec fix for a Failed instance shows as Progressing until the operator has looked at it.
    failed = rendered(state_in("Failed"), generation=1)
    assert health(wai(failed, generation=2), runtime)["status"] == "Progressing"
    # Without a top-level observedGeneration, the Ready condition's is used.
    no_top = copy.deepcopy(status)
    del no_top["observedGeneration"]
    assert health(wai(no_top, generation=3), runtime)["status"] == "Progressing"
    del no_top["conditions"]
    assert health(wai(no_top, generation=3), runtime)["status"] == "Healthy"


def test_stalled_condition_degrades_even_outside_failed() -> None:
    status = rendered(state_in("Creating"))
    status["conditions"].append(
        {
            "type": "Stalled",
            "status": "True",
            "reason": "InvalidSpec",
            "message": "instanceName is unusable",
            "observedGeneration": 1,
        }
    )
    assert health(wai(status)) == {"status": "Degraded", "message": "instanceName is unusable"}
    status["conditions"][-1]["status"] = "False"
    assert health(wai(status))["status"] == "Progressing"


def test_evolution_unreachable_makes_health_unknown_but_keeps_the_reason() -> None:
    state = state_in("Connected")
    state.sync_failed("EvolutionUnreachable", "Evolution API is unreachable: connection refused")
    result = health(wai(rendered(state)))
    assert result == {
        "status": "Unknown",
        "message": "Evolution API is unreachable: connection refused (last known phase: Connected)",
    }


# -- Synced=False: the last call to Evolution failed --------------------------------------------------


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("EvolutionUnauthorized", "Evolution API refused the API key"),
        ("EvolutionServerError", "Evolution API answered 500: Internal Server Error"),
        ("EvolutionRejectedRequest", "Evolution API rejected the settings: msgCall is too long"),
    ],
)
def test_connected_with_synced_false_is_degraded_not_healthy(reason: str, message: str, runtime: str) -> None:
    # Ready stays True (the number is still connected), but the error must not hide behind it.
    state = state_in("Connected")
    state.sync_failed(reason, message)
    status = rendered(state)
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert health(wai(status), runtime) == {"status": "Degraded", "message": message}


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_awaiting_scan_with_synced_false_is_degraded_not_suspended(runtime: str) -> None:
    state = state_in("AwaitingScan")
    state.sync_failed("EvolutionServerError", "Evolution API answered 500 to connect")
    assert health(wai(rendered(state)), runtime) == {
        "status": "Degraded",
        "message": "Evolution API answered 500 to connect",
    }


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("phase", ["Connected", "AwaitingScan", "Creating"])
def test_unreachable_evolution_stays_unknown_although_synced_is_false(phase: str, runtime: str) -> None:
    state = state_in(phase)
    state.sync_failed("EvolutionUnreachable", "Evolution API is unreachable: connection refused")
    status = rendered(state)
    kinds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert kinds["Ready"] == ("Unknown", "EvolutionUnreachable")
    assert kinds["Synced"] == ("False", "EvolutionUnreachable")
    assert health(wai(status), runtime) == {
        "status": "Unknown",
        "message": f"Evolution API is unreachable: connection refused (last known phase: {phase})",
    }


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_deletion_with_synced_false_stays_progressing(runtime: str) -> None:
    state = state_in("Connected")
    state.deleting = True
    state.sync_failed("EvolutionServerError", "Evolution API answered 500 to delete")
    obj = wai(rendered(state), deletionTimestamp="2025-03-01T11:59:00Z")
    assert health(obj, runtime) == {
        "status": "Progressing",
        "message": "Removing the instance from Evolution API; waiting: Evolution API answered 500 to delete",
    }


def test_synced_false_without_a_message_uses_the_status_message_and_clears_with_success() -> None:
    status = rendered(state_in("Connected"))
    for condition in status["conditions"]:
        if condition["type"] == "Synced":
            condition.update(status="False", reason="EvolutionBadResponse", message="")
    assert health(wai(status)) == {"status": "Degraded", "message": "Connected to WhatsApp as +5511987654321."}
    # The next successful call sets Synced=True again: Healthy without anyone doing anything.
    state = state_in("Connected")
    state.sync_failed("EvolutionServerError", "Evolution API answered 502")
    assert health(wai(rendered(state)))["status"] == "Degraded"
    state.sync_succeeded()
    assert health(wai(rendered(state)))["status"] == "Healthy"


def test_synced_false_does_not_hide_a_generation_lag_or_a_failure() -> None:
    # A newer spec not yet observed is Progressing (the operator is about to act on it), as for Failed.
    state = state_in("Connected")
    state.sync_failed("EvolutionRejectedRequest", "Evolution API rejected the settings")
    assert health(wai(rendered(state), generation=2))["status"] == "Progressing"
    failed = state_in("Failed")
    failed.sync_failed("EvolutionRejectedRequest", "Evolution API rejected the instance: bad name.")
    assert health(wai(rendered(failed)))["status"] == "Degraded"


def test_unrecognised_phase_is_unknown() -> None:
    result = health(wai({"phase": "Hibernating", "message": "zzz"}))
    assert result == {"status": "Unknown", "message": "Unrecognised phase Hibernating: zzz"}


def test_phase_without_message_uses_the_phase() -> None:
    assert health(wai({"phase": "Connected"})) == {"status": "Healthy", "message": "Connected"}


# -- EvolutionServer and ClusterEvolutionServer ---------------------------------------------------


SERVER_KINDS = ["EvolutionServer", "ClusterEvolutionServer"]


def evolution_server(
    kind: str, status: dict[str, Any] | None = None, generation: int = 1, **metadata: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "whatsapp-operator.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "main", "generation": generation, **metadata},
        "spec": {"url": "http://evolution:8080", "apiKeySecretRef": {"name": "evo", "key": "apikey"}},
    }
    if kind == "EvolutionServer":
        obj["metadata"]["namespace"] = "default"
    if status is not None:
        obj["status"] = status
    return obj


def server_status(ready: str, reason: str, message: str = "", generation: int = 1) -> dict[str, Any]:
    condition = {"type": "Ready", "status": ready, "reason": reason, "observedGeneration": generation}
    if message:
        condition["message"] = message
    return {
        "observedGeneration": generation,
        "version": "2.3.6",
        "socketConnected": ready == "True",
        "instances": 3,
        "message": message or reason,
        "conditions": [condition],
    }


def server_health(obj: dict[str, Any], runtime: str = "lua51") -> dict[str, Any]:
    return health(obj, runtime, SERVER_HEALTH_LUA)


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_ready_server_is_healthy(kind: str, runtime: str) -> None:
    status = server_status("True", "Connected", "Connected to Evolution API 2.3.6; 3 instances.")
    assert server_health(evolution_server(kind, status), runtime) == {
        "status": "Healthy",
        "message": "Connected to Evolution API 2.3.6; 3 instances.",
    }
    # Without a message, the reason says it.
    assert server_health(evolution_server(kind, server_status("True", "Connected")), runtime) == {
        "status": "Healthy",
        "message": "Connected",
    }


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize(
    "reason,message",
    [
        ("EvolutionUnreachable", "Evolution API is unreachable: connection refused"),
        ("EvolutionUnauthorized", "Evolution API refused the API key"),
        ("ServerKeyMissing", 'Secret "evo" has no key "apikey"'),
        ("TLSError", "certificate verify failed"),
        ("", "no reason given"),
    ],
)
def test_a_server_not_ready_for_a_lasting_reason_is_degraded(
    kind: str, reason: str, message: str, runtime: str
) -> None:
    assert server_health(evolution_server(kind, server_status("False", reason, message)), runtime) == {
        "status": "Degraded",
        "message": message,
    }


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize("reason", ["Pending", "Connecting", "Reconnecting"])
def test_a_server_on_its_way_to_ready_is_progressing(kind: str, reason: str, runtime: str) -> None:
    message = "Connecting to Evolution API"
    assert server_health(evolution_server(kind, server_status("False", reason, message)), runtime) == {
        "status": "Progressing",
        "message": message,
    }
    unknown = server_status("Unknown", "Pending", "Waiting for Evolution API's answer")
    assert server_health(evolution_server(kind, unknown), runtime) == {
        "status": "Progressing",
        "message": "Waiting for Evolution API's answer",
    }


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_server_without_status_or_ready_condition_waits_for_the_operator(kind: str, runtime: str) -> None:
    expected = {"status": "Progressing", "message": "Waiting for the operator"}
    assert server_health(evolution_server(kind), runtime) == expected
    assert server_health(evolution_server(kind, {}), runtime) == expected
    assert server_health(evolution_server(kind, {"observedGeneration": 1, "conditions": []}), runtime) == expected
    other = {"conditions": [{"type": "Warning", "status": "True", "reason": "InsecureSkipVerify"}]}
    assert server_health(evolution_server(kind, other), runtime) == expected


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_server_status_older_than_its_spec_is_progressing(kind: str, runtime: str) -> None:
    status = server_status("True", "Connected", "Connected.", generation=2)
    assert server_health(evolution_server(kind, status, generation=2), runtime)["status"] == "Healthy"
    assert server_health(evolution_server(kind, status, generation=3), runtime) == {
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation 3 (status is for generation 2)",
    }
    # A failing server whose spec was just fixed is Progressing, not Degraded, until observed.
    failing = server_status("False", "EvolutionUnauthorized", "Evolution API refused the API key", generation=2)
    assert server_health(evolution_server(kind, failing, generation=3), runtime)["status"] == "Progressing"
    # Without a top-level observedGeneration, the Ready condition's is used.
    del status["observedGeneration"]
    assert server_health(evolution_server(kind, status, generation=3), runtime)["status"] == "Progressing"
    del status["conditions"][0]["observedGeneration"]
    assert server_health(evolution_server(kind, status, generation=3), runtime)["status"] == "Healthy"


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_server_being_deleted_is_progressing(kind: str) -> None:
    obj = evolution_server(kind, server_status("True", "Connected"), deletionTimestamp=NOW, finalizers=["x"])
    assert server_health(obj) == {
        "status": "Progressing",
        "message": "Being deleted; kept while WhatsAppInstances use it",
    }


# -- the ConfigMap patch ---------------------------------------------------------------------------


def test_configmap_patch_carries_the_scripts_unchanged() -> None:
    scripts = repository_scripts()
    patch = yaml.safe_load(PATCH_YAML.read_text(encoding="utf-8"))
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    assert list(patch["data"]) == list(SCRIPTS)
    for key, lua in scripts.items():
        assert patch["data"][key] == lua, "regenerate with: python tests/test_argocd_health.py"
    assert PATCH_YAML.read_text(encoding="utf-8") == render_patch(scripts)


def test_every_kind_of_the_group_has_a_health_check() -> None:
    crds = Path(__file__).resolve().parent.parent / "crds"
    kinds = {yaml.safe_load(path.read_text())["spec"]["names"]["kind"] for path in crds.glob("*.yaml")}
    assert {key.rsplit("_", 1)[1] for key in SCRIPTS} == kinds
    assert all(key.startswith("resource.customizations.health.whatsapp-operator.io_") for key in SCRIPTS)


def test_render_patch_round_trips_blank_lines_and_indentation() -> None:
    lua = 'local a = 1\n\nif a then\n  return {status = "Healthy"}\nend\n'
    other = "return {}\n"
    data = yaml.safe_load(render_patch({HEALTH_KEY: lua, "x": other}))["data"]
    assert data == {HEALTH_KEY: lua, "x": other}


if __name__ == "__main__":
    PATCH_YAML.write_text(render_patch(repository_scripts()), encoding="utf-8")
    print(f"wrote {PATCH_YAML}", file=sys.stderr)
