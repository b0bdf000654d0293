"""The CRD's CEL rules and structure, checked without an apiserver (cel-python evaluates the rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

CRD = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "crds" / "whatsappinstances.whatsapp-operator.io.yaml").read_text()
)
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]


def evaluate(rule: str, **activation: Any) -> bool:
    environment = celpy.Environment()
    program = environment.program(environment.compile(rule))
    return bool(program.evaluate({key: celpy.json_to_cel(value) for key, value in activation.items()}))


def spec_rules_hold(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(evaluate(rule["rule"], self=new, oldSelf=old) for rule in SPEC["x-kubernetes-validations"])


BAILEYS = {"integration": "WHATSAPP-BAILEYS"}


@pytest.mark.parametrize(
    "old,new,allowed",
    [
        ({**BAILEYS, "instanceName": "shop"}, {**BAILEYS, "instanceName": "shop", "number": "5511987654321"}, True),
        ({**BAILEYS, "instanceName": "shop"}, {**BAILEYS, "instanceName": "other"}, False),
        ({**BAILEYS, "instanceName": "shop"}, dict(BAILEYS), False),  # removing it would switch to the default name
        (dict(BAILEYS), {**BAILEYS, "instanceName": "shop"}, False),  # adding it later too
        (dict(BAILEYS), {**BAILEYS, "settings": {"rejectCall": True}}, True),
        (dict(BAILEYS), {"integration": "EVOLUTION"}, False),
    ],
)
def test_instance_name_and_integration_are_immutable(old, new, allowed):
    assert spec_rules_hold(old, new) is allowed


@pytest.mark.parametrize(
    "name,allowed",
    [("shop-123", True), ("constructor", False), ("__proto__", False), ("toString", False), ("Constructor", True)],
)
def test_names_evolution_cannot_hold_are_refused(name, allowed):
    rule = SPEC["properties"]["instanceName"]["x-kubernetes-validations"][0]["rule"]
    assert evaluate(rule, self=name) is allowed


def test_the_operator_and_the_crd_reserve_the_same_names():
    from whatsapp_operator.engine.spec import RESERVED_INSTANCE_NAMES

    rule = SPEC["properties"]["instanceName"]["x-kubernetes-validations"][0]["rule"]
    assert all(not evaluate(rule, self=name) for name in RESERVED_INSTANCE_NAMES)


def test_schema_is_structural():
    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node, f"{path} has no type"
        for key, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(SCHEMA, "")


def test_printer_columns_and_names():
    columns = [(c["name"], c.get("priority", 0)) for c in VERSION["additionalPrinterColumns"]]
    assert columns == [
        ("Phase", 0),
        ("Number", 0),
        ("Profile", 0),
        ("Ready", 0),
        ("Age", 0),
        ("Instance", 1),
        ("Message", 1),
    ]
    names = CRD["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == ("WhatsAppInstance", ["wai"], ["whatsapp"])
    assert VERSION["subresources"] == {"status": {}}


def test_status_schema_lists_every_field_the_operator_writes():
    """A real apiserver prunes unknown status fields silently: each one written must be declared."""
    from whatsapp_operator.engine.state import InstanceState
    from whatsapp_operator.evolution.events import ConnectionUpdated

    state = InstanceState("shop")
    state.created("id-1")
    state.qr_received("2@x", "data:x", "ABCD1234", "2026-01-01T00:00:00Z")
    awaiting = state.render_status(1, "2026-01-01T00:00:00Z")
    state.connection_updated(
        ConnectionUpdated("shop", "open", 200, "5511@s.whatsapp.net", "ACME", "https://p"), "2026-01-01T00:01:00Z"
    )
    state.sync_failed("EvolutionServerError", "boom")
    connected = state.render_status(1, "2026-01-01T00:01:00Z")
    declared = SCHEMA["properties"]["status"]

    def check(value: Any, schema: dict[str, Any], path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                assert key in schema.get("properties", {}), f"status{path}.{key} is not in the CRD schema"
                if item is not None:
                    check(item, schema["properties"][key], f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                check(item, schema["items"], f"{path}[]")

    for status in (awaiting, connected):
        check(status, declared, "")
