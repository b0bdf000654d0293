"""The CRD's CEL rules and structure, checked without an apiserver (cel-python evaluates the rules)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from schema_check import admit, validate

REPO = Path(__file__).resolve().parent.parent


def load_crd(plural: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((REPO / "crds" / f"{plural}.whatsapp-operator.io.yaml").read_text())
    return crd


CRD = load_crd("whatsappinstances")
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
SERVER_CRDS = {plural: load_crd(plural) for plural in ("evolutionservers", "clusterevolutionservers")}
ALL_CRDS = [CRD, *SERVER_CRDS.values()]


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


@pytest.mark.parametrize("crd", ALL_CRDS, ids=lambda crd: crd["spec"]["names"]["kind"])
def test_schema_is_structural(crd: dict[str, Any]) -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node, f"{path} has no type"
        for key, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert crd["spec"]["group"] == "whatsapp-operator.io"
    walk(version["schema"]["openAPIV3Schema"], "")


def test_printer_columns_and_names():
    columns = [(c["name"], c.get("priority", 0)) for c in VERSION["additionalPrinterColumns"]]
    assert columns == [
        ("Server", 0),
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


# ---- WhatsAppInstance: server, webhook, connection Secret, deletion policy ----------------------

SERVER_REF_IMMUTABLE = (
    "serverRef is immutable: moving a number to another server means pairing again; create a new WhatsAppInstance"
)
MAIN = {"kind": "ClusterEvolutionServer", "name": "main"}


@pytest.mark.parametrize(
    "old,new,allowed",
    [
        (dict(BAILEYS), dict(BAILEYS), True),  # the environment's server, kept
        ({**BAILEYS, "serverRef": MAIN}, {**BAILEYS, "serverRef": dict(MAIN)}, True),
        ({**BAILEYS, "serverRef": MAIN}, {**BAILEYS, "serverRef": MAIN, "deletionPolicy": "Orphan"}, True),
        (dict(BAILEYS), {**BAILEYS, "serverRef": MAIN}, False),  # added after creation
        ({**BAILEYS, "serverRef": MAIN}, dict(BAILEYS), False),  # removed: back to the environment's server
        ({**BAILEYS, "serverRef": MAIN}, {**BAILEYS, "serverRef": {**MAIN, "name": "other"}}, False),  # renamed
        ({**BAILEYS, "serverRef": MAIN}, {**BAILEYS, "serverRef": {**MAIN, "kind": "EvolutionServer"}}, False),
    ],
)
def test_server_ref_cannot_be_added_removed_or_changed(old, new, allowed):
    assert spec_rules_hold(old, new) is allowed


def test_server_ref_rule_says_why():
    (rule,) = [r for r in SPEC["x-kubernetes-validations"] if "serverRef" in r["rule"]]
    assert rule["message"] == SERVER_REF_IMMUTABLE
    assert evaluate(rule["rule"], self={"serverRef": MAIN}, oldSelf={"serverRef": MAIN})
    assert not evaluate(rule["rule"], self={}, oldSelf={"serverRef": MAIN})


def evolution_subscription_names() -> tuple[list[str], list[str]]:
    """The webhook/websocket event names of Evolution 2.2.3 and 2.3.6, from docs/evolution-api.md §3.10."""
    doc = (REPO / "docs" / "evolution-api.md").read_text()
    section = doc.split("### 3.10", 1)[1].split("### 3.11", 1)[0]
    old = section.split("**[2.2.3], 27 names:**", 1)[1].split("- **[2.3.6]", 1)[0]
    new = section.split("**[2.3.6], 31 names:** the same plus", 1)[1].split(". Other", 1)[0]
    names_223 = re.findall(r"[A-Z][A-Z_]+", old)
    return names_223, names_223 + re.findall(r"[A-Z][A-Z_]+", new)


def test_webhook_events_are_evolutions_subscription_names():
    names_223, names_236 = evolution_subscription_names()
    assert len(names_223) == 27 and len(names_236) == 31 == len(set(names_236))
    events = SPEC["properties"]["webhook"]["properties"]["events"]
    assert sorted(events["items"]["enum"]) == sorted(names_236)
    assert set(names_223) < set(events["items"]["enum"])
    assert events["maxItems"] == 31 and events["x-kubernetes-list-type"] == "set"
    webhook = {"url": "https://hooks.example.com/wa", "events": names_236}
    assert validate(SPEC, {**BAILEYS, "webhook": webhook}, "spec") == []
    causes = validate(SPEC, {**BAILEYS, "webhook": {**webhook, "events": ["QRCODE_UPDATED", "qrcode.updated"]}}, "spec")
    assert [(c.field, c.reason) for c in causes] == [("spec.webhook.events[1]", "FieldValueNotSupported")]
    doubled = validate(SPEC, {**BAILEYS, "webhook": {**webhook, "events": ["CALL", "CALL"]}}, "spec")
    assert [(c.field, c.reason) for c in doubled] == [("spec.webhook.events[1]", "FieldValueDuplicate")]


def test_webhook_url_is_http():
    for url, valid in [("https://h.example/x?token=1", True), ("http://10.0.0.1:3000", True), ("ftp://h", False)]:
        causes = validate(SPEC, {**BAILEYS, "webhook": {"url": url}}, "spec")
        assert (causes == []) is valid, (url, causes)
    assert [c.field for c in validate(SPEC, {**BAILEYS, "webhook": {}}, "spec")] == ["spec.webhook.url"]


def header(name: str, **item: Any) -> dict[str, Any]:
    return {"name": name, **item}


SECRET_VALUE = {"valueFrom": {"secretKeyRef": {"name": "shop-webhook", "key": "token"}}}


def test_webhook_header_values_come_only_from_secrets():
    def admitted(*headers: dict[str, Any]) -> tuple[Any, list[str]]:
        spec = {**BAILEYS, "webhook": {"url": "https://h.example", "headers": list(headers)}}
        obj, causes = admit(SCHEMA, {"apiVersion": "v", "kind": "WhatsAppInstance", "metadata": {}, "spec": spec})
        return obj["spec"]["webhook"]["headers"], [f"{c.field}: {c.message}" for c in causes]

    headers, causes = admitted(header("Authorization", **SECRET_VALUE))
    assert causes == [] and headers == [header("Authorization", **SECRET_VALUE)]
    # An inline value is not a field of the schema: pruned (kubectl's strict field validation refuses
    # it outright), and without valueFrom the header is refused.
    headers, causes = admitted(header("Authorization", value="Bearer s3cret"))
    assert headers == [{"name": "Authorization"}]
    assert causes == ["spec.webhook.headers[0].valueFrom: Required value"]
    headers, causes = admitted(header("Authorization", value="Bearer s3cret", **SECRET_VALUE))
    assert causes == [] and "value" not in headers[0]
    # valueFrom holds a Secret reference and nothing else (no configMapKeyRef, no fieldRef).
    item = SPEC["properties"]["webhook"]["properties"]["headers"]["items"]
    assert set(item["properties"]) == {"name", "valueFrom"}
    assert set(item["properties"]["valueFrom"]["properties"]) == {"secretKeyRef"}
    assert item["properties"]["valueFrom"]["required"] == ["secretKeyRef"]
    _, causes = admitted(header("X", valueFrom={"configMapKeyRef": {"name": "c", "key": "k"}}))
    assert causes == ["spec.webhook.headers[0].valueFrom.secretKeyRef: Required value"]


def test_webhook_headers_are_http_tokens_keyed_by_name_and_bounded():
    def causes(*headers: dict[str, Any]) -> list[str]:
        spec = {**BAILEYS, "webhook": {"url": "https://h.example", "headers": list(headers)}}
        return [f"{c.field} {c.reason}" for c in validate(SPEC, spec, "spec")]

    assert causes(header("X-Api-Key", **SECRET_VALUE), header("Authorization", **SECRET_VALUE)) == []
    assert causes(header("Bad Header", **SECRET_VALUE)) == ["spec.webhook.headers[0].name FieldValueInvalid"]
    assert causes(header("X:y", **SECRET_VALUE)) == ["spec.webhook.headers[0].name FieldValueInvalid"]
    assert causes(header("A", **SECRET_VALUE), header("A", **SECRET_VALUE)) == [
        "spec.webhook.headers[1] FieldValueDuplicate"
    ]
    many = [header(f"X-{n}", **SECRET_VALUE) for n in range(21)]
    assert causes(*many) == ["spec.webhook.headers FieldValueTooMany"]
    assert causes(*many[:20]) == []


def test_connection_secret_and_deletion_policy():
    def causes(**spec: Any) -> list[str]:
        return [c.field for c in validate(SPEC, {**BAILEYS, **spec}, "spec")]

    assert causes(writeConnectionSecretToRef={"name": "shop-123-evolution"}, deletionPolicy="Orphan") == []
    assert causes(writeConnectionSecretToRef={}) == ["spec.writeConnectionSecretToRef.name"]
    assert causes(writeConnectionSecretToRef={"name": "Shop_123"}) == ["spec.writeConnectionSecretToRef.name"]
    assert causes(deletionPolicy="Keep") == ["spec.deletionPolicy"]
    assert causes(serverRef={"kind": "Issuer", "name": "main"}) == ["spec.serverRef.kind"]
    assert causes(serverRef={"kind": "EvolutionServer"}) == ["spec.serverRef.name"]


def test_instance_defaults():
    obj = {"apiVersion": "v", "kind": "WhatsAppInstance", "metadata": {}, "spec": {}}
    admitted, causes = admit(SCHEMA, obj)
    assert causes == []
    assert admitted["spec"] == {"integration": "WHATSAPP-BAILEYS", "deletionPolicy": "Delete"}  # no serverRef
    obj["spec"] = {"serverRef": {"name": "evo"}, "webhook": {"url": "https://h.example"}}
    admitted, causes = admit(SCHEMA, obj)
    assert causes == []
    assert admitted["spec"]["serverRef"] == {"kind": "EvolutionServer", "name": "evo"}
    assert admitted["spec"]["webhook"] == {"url": "https://h.example", "byEvents": False, "base64": False}


def test_instance_status_names_its_server_and_pause():
    status = SCHEMA["properties"]["status"]["properties"]
    assert status["server"]["type"] == "string" and status["paused"]["type"] == "boolean"
    assert validate(SCHEMA["properties"]["status"], {"server": "ClusterEvolutionServer/main", "paused": True}) == []
    (column,) = [c for c in VERSION["additionalPrinterColumns"] if c["name"] == "Server"]
    assert column["jsonPath"] == ".status.server"


# ---- EvolutionServer and ClusterEvolutionServer -------------------------------------------------


def server_schema(plural: str) -> dict[str, Any]:
    schema: dict[str, Any] = SERVER_CRDS[plural]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def server(plural: str, **spec: Any) -> dict[str, Any]:
    kind = SERVER_CRDS[plural]["spec"]["names"]["kind"]
    body = {"url": "http://evolution-api.evolution:8080", "apiKeySecretRef": {"name": "evo", "key": "apikey"}}
    return {
        "apiVersion": "whatsapp-operator.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "main"},
        "spec": body | spec,
    }


@pytest.mark.parametrize(
    "plural,kind,scope,short",
    [
        ("evolutionservers", "EvolutionServer", "Namespaced", "evs"),
        ("clusterevolutionservers", "ClusterEvolutionServer", "Cluster", "cevs"),
    ],
)
def test_server_names_scope_and_columns(plural: str, kind: str, scope: str, short: str) -> None:
    crd = SERVER_CRDS[plural]
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{plural}.whatsapp-operator.io"
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"], names["categories"]) == (
        kind,
        plural,
        kind.lower(),
        [short],
        ["whatsapp"],
    )
    assert crd["spec"]["scope"] == scope
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("URL", "string", ".spec.url", 0),
        ("Version", "string", ".status.version", 0),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', 0),
        ("Instances", "integer", ".status.instances", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Message", "string", ".status.message", 1),
    ]
    # The cluster kind keeps its Secrets in the operator's namespace, and says so.
    secret_ref = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["apiKeySecretRef"]
    assert ("operator's namespace" in secret_ref["description"]) is (scope == "Cluster")


def test_both_server_kinds_share_one_spec_and_status():
    namespaced, cluster = (server_schema(p) for p in SERVER_CRDS)

    def without_descriptions(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
        if isinstance(node, list):
            return [without_descriptions(v) for v in node]
        return node

    assert without_descriptions(namespaced) == without_descriptions(cluster)
    assert (
        namespaced["properties"]["status"]["properties"]["conditions"]
        == SCHEMA["properties"]["status"]["properties"]["conditions"]
    )


@pytest.mark.parametrize("plural", list(SERVER_CRDS))
def test_server_defaults_and_required_fields(plural: str) -> None:
    schema = server_schema(plural)
    admitted, causes = admit(schema, server(plural))
    assert causes == []
    assert admitted["spec"] == {
        "url": "http://evolution-api.evolution:8080",
        "apiKeySecretRef": {"name": "evo", "key": "apikey"},
        "websocket": {"mode": "auto"},
    }
    admitted, causes = admit(schema, server(plural, tls={"caSecretRef": {"name": "evo-ca"}}))
    assert causes == [] and admitted["spec"]["tls"] == {
        "caSecretRef": {"name": "evo-ca", "key": "ca.crt"},
        "insecureSkipVerify": False,
    }
    obj = server(plural)
    del obj["spec"]["apiKeySecretRef"]["key"], obj["spec"]["url"]
    assert sorted(c.field for c in admit(schema, obj)[1]) == ["spec.apiKeySecretRef.key", "spec.url"]
    bad = server(plural, url="evolution:8080", websocket={"mode": "both"})
    assert sorted(c.field for c in admit(schema, bad)[1]) == ["spec.url", "spec.websocket.mode"]
    status = {
        "observedGeneration": 3,
        "version": "2.3.6",
        "whatsappWebVersion": "2.3000.1025190524",
        "socketConnected": True,
        "instances": 12,
        "message": "Connected to Evolution API 2.3.6.",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Connected", "observedGeneration": 3}],
    }
    assert validate(schema["properties"]["status"], status, "status") == []


@pytest.mark.parametrize("plural", list(SERVER_CRDS))
@pytest.mark.parametrize(
    "tls,allowed",
    [
        ({}, True),
        ({"caSecretRef": {"name": "ca", "key": "ca.crt"}, "insecureSkipVerify": False}, True),
        ({"insecureSkipVerify": True}, True),
        ({"caSecretRef": {"name": "ca", "key": "ca.crt"}, "insecureSkipVerify": True}, False),
        ({"caSecretRef": {"name": "ca"}}, True),  # before defaulting
    ],
)
def test_tls_takes_a_ca_or_skips_verification_not_both(plural: str, tls: dict[str, Any], allowed: bool) -> None:
    node = server_schema(plural)["properties"]["spec"]["properties"]["tls"]
    (rule,) = node["x-kubernetes-validations"]
    assert evaluate(rule["rule"], self=tls) is allowed
    assert "Warning condition" in node["properties"]["insecureSkipVerify"]["description"]


@pytest.mark.parametrize(
    "url,allowed",
    [
        ("http://evolution-api.evolution:8080", True),
        ("https://evo.example.com/api", True),
        ("http://user:secret@evo.example.com", False),
        ("http://evo.example.com/?apikey=x", False),
        ("http://evo.example.com/#top", False),
        ("http://evo.example.com /x", False),
    ],
)
def test_server_url_holds_no_credentials_query_or_fragment(url: str, allowed: bool) -> None:
    node = server_schema("evolutionservers")["properties"]["spec"]["properties"]["url"]
    (rule,) = node["x-kubernetes-validations"]
    assert evaluate(rule["rule"], self=url) is allowed
