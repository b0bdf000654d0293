"""schema_check validates, prunes and defaults like the apiserver does for our CRD's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schema_check import (
    CRDS_DIR,
    Cause,
    UnsupportedSchema,
    admit,
    apply_defaults,
    check_supported,
    invalid_message,
    load_crd_schema,
    prune,
    validate,
)

SCHEMA = load_crd_schema("whatsappinstances")
STATUS = SCHEMA["properties"]["status"]
NUMBER = "5511987654321"


def instance(**status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "whatsapp-operator.io/v1alpha1",
        "kind": "WhatsAppInstance",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"integration": "WHATSAPP-BAILEYS", "number": NUMBER},
    }
    if status:
        obj["status"] = status
    return obj


def fields(causes: list[Cause]) -> list[str]:
    return [cause.field for cause in causes]


# ---- loading -----------------------------------------------------------------------------------


def test_the_schema_is_found_by_plural_name_kind_or_path() -> None:
    path = CRDS_DIR / "whatsappinstances.whatsapp-operator.io.yaml"
    for ref in (
        "whatsappinstances",
        "whatsappinstances.whatsapp-operator.io",
        "WhatsAppInstance",
        path,
        str(path),
        Path("whatsappinstances.whatsapp-operator.io.yaml"),
    ):
        assert load_crd_schema(ref) == SCHEMA
    assert SCHEMA["required"] == ["spec"] and "status" in SCHEMA["properties"]
    with pytest.raises(LookupError):
        load_crd_schema("nothings")
    with pytest.raises(LookupError):
        load_crd_schema("whatsappinstances", version="v9")


def test_keywords_it_does_not_implement_are_refused_not_ignored() -> None:
    check_supported(SCHEMA)  # everything our CRD uses, CEL rules and descriptions included
    for schema in (
        {"type": "object", "properties": {"a": {"type": "string", "anyOf": []}}},
        {"type": "array", "items": {"type": "string", "uniqueItems": True}},
        {"type": "string", "format": "email"},
    ):
        with pytest.raises(UnsupportedSchema):
            check_supported(schema)


# ---- types -------------------------------------------------------------------------------------


def test_an_integer_beyond_int64_is_a_number_as_the_apiserver_decodes_it() -> None:
    causes = validate(SCHEMA, instance(connection={"statusReason": 2**63}))
    assert causes == [
        Cause(
            "status.connection.statusReason",
            'Invalid value: "number": status.connection.statusReason in body must be of type integer: "number"',
            "FieldValueTypeInvalid",
        )
    ]
    assert str(causes[0]) == (
        'status.connection.statusReason: Invalid value: "number": '
        'status.connection.statusReason in body must be of type integer: "number"'
    )
    for fine in (2**63 - 1, -(2**63), 0, 401):
        assert validate(SCHEMA, instance(connection={"statusReason": fine})) == []
    assert fields(validate(SCHEMA, instance(observedGeneration=-(2**63) - 1))) == ["status.observedGeneration"]


@pytest.mark.parametrize(
    "value,kind",
    [
        (True, "boolean"),
        (False, "boolean"),
        (1.0, "number"),
        (2.5, "number"),
        ("1", "string"),
        (None, "null"),
        ([1], "array"),
        ({}, "object"),
    ],
)
def test_only_a_json_integer_is_an_integer(value: Any, kind: str) -> None:
    (cause,) = validate(STATUS, {"qr": {"count": value}}, "status")
    assert cause.field == "status.qr.count"
    assert cause.message.endswith(f'must be of type integer: "{kind}"')


def test_number_string_and_boolean_types() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "number"}, "s": {"type": "string"}, "b": {"type": "boolean"}},
    }
    assert validate(schema, {"n": 1, "s": "", "b": False}) == []
    assert validate(schema, {"n": 1.5}) == []
    assert fields(validate(schema, {"n": True, "s": 1, "b": 0})) == ["n", "s", "b"]
    assert (
        validate(schema, "x")[0].message == 'Invalid value: "string": <root> in body must be of type object: "string"'
    )


def test_nullable() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "nullable": True}, "b": {"type": "string"}}}
    assert validate(schema, {"a": None}) == []
    assert fields(validate(schema, {"b": None})) == ["b"]


# ---- value rules -------------------------------------------------------------------------------


def test_enum() -> None:
    (cause,) = validate(SCHEMA, instance(phase="Ready"))
    assert cause == Cause(
        "status.phase",
        'Unsupported value: "Ready": supported values: "Pending", "Creating", '
        '"AwaitingScan", "Connecting", "Connected", "Disconnected", "LoggedOut", "Failed"',
        "FieldValueNotSupported",
    )
    assert validate(SCHEMA, instance(phase="Connected")) == []
    # JSON equality: true is not 1, 1 is 1.0.
    assert fields(validate({"type": "integer", "enum": [1]}, True)) == [""]
    assert validate({"type": "number", "enum": [1]}, 1.0) == []


def test_pattern_and_lengths_count_characters() -> None:
    spec = SCHEMA["properties"]["spec"]
    assert validate(spec, {"number": NUMBER, "instanceName": "shop_1-a"}, "spec") == []
    causes = validate(spec, {"number": "+5511", "instanceName": "", "settings": {"msgCall": "x" * 101}}, "spec")
    # The empty name breaks minLength and the pattern: both are reported, as by the apiserver.
    assert fields(causes) == ["spec.number", "spec.instanceName", "spec.instanceName", "spec.settings.msgCall"]
    assert causes[0].message == ("Invalid value: \"+5511\": spec.number in body should match '^[1-9][0-9]{6,14}$'")
    assert causes[1].message == 'Invalid value: "": spec.instanceName in body should be at least 1 chars long'
    assert causes[3] == Cause("spec.settings.msgCall", "Too long: may not be longer than 100", "FieldValueTooLong")
    message = SCHEMA["properties"]["spec"]["properties"]["settings"]["properties"]["msgCall"]
    assert validate(message, "é" * 100) == [] and validate(message, "🙂" * 100) == []  # characters, not bytes
    assert len(validate(message, "é" * 101)) == 1


def test_minimum_maximum_and_item_counts() -> None:
    schema = {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer", "minimum": 0, "maximum": 10}}
    assert validate(schema, [0, 10]) == []
    assert fields(validate(schema, [-1, 11])) == ["[0]", "[1]"]
    assert fields(validate(schema, [])) == [""]
    assert validate(schema, [1, 2, 3])[0] == Cause("", "Too many: 3: must have at most 2 items", "FieldValueTooMany")
    exclusive = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert validate(exclusive, 0.1) == [] and len(validate(exclusive, 0)) == 1


@pytest.mark.parametrize(
    "text,valid",
    [
        ("2026-01-01T00:00:00Z", True),
        ("2026-01-01T00:00:00.123456+02:00", True),
        ("2026-12-31t23:59:60z", True),
        ("2026-01-01", False),
        ("2026-01-01T00:00:00", False),
        ("2026-13-01T00:00:00Z", False),
        ("2026-02-30T00:00:00Z", False),
        ("2026-01-01T24:00:00Z", False),
        ("yesterday", False),
        ("", False),
    ],
)
def test_date_time_is_rfc_3339(text: str, valid: bool) -> None:
    causes = validate(STATUS, {"qr": {"updatedAt": text}}, "status")
    assert (causes == []) is valid
    if not valid:
        assert causes[0].message.endswith(f'must be of type date-time: "{text}"')


def test_required_fields_and_map_list_keys() -> None:
    ready = {"type": "Ready", "status": "True"}
    assert validate(SCHEMA, instance(conditions=[ready, {"type": "Synced", "status": "False"}])) == []
    causes = validate(SCHEMA, instance(conditions=[ready, {"status": "Maybe"}, dict(ready, status="False")]))
    assert [(c.field, c.reason) for c in causes] == [
        ("status.conditions[1].type", "FieldValueRequired"),
        ("status.conditions[1].status", "FieldValueNotSupported"),
        ("status.conditions[2]", "FieldValueDuplicate"),
    ]
    assert causes[2].message == 'Duplicate value: {"type":"Ready"}'
    without_spec = instance()
    del without_spec["spec"]
    assert validate(SCHEMA, without_spec) == [Cause("spec", "Required value", "FieldValueRequired")]


def test_metadata_of_the_whole_object_is_left_to_the_apiserver() -> None:
    obj = instance()
    obj["metadata"]["labels"] = {"a": "b"}
    assert validate(SCHEMA, obj) == []
    schema = {"type": "object", "properties": {"metadata": {"type": "string"}}}
    assert validate(schema, {"metadata": {}}) == []  # the root: skipped
    assert fields(validate(schema, {"metadata": {}}, root=False)) == ["metadata"]


# ---- pruning and defaulting --------------------------------------------------------------------


def test_prune_drops_undeclared_fields_and_keeps_type_and_object_meta() -> None:
    obj = instance(
        phase="Connected",
        bogus=1,
        qr={"code": "2@x", "extra": {"deep": True}},
        conditions=[{"type": "Ready", "status": "True", "note": "x"}],
    )
    obj["spec"]["unknown"] = "x"
    obj["metadata"]["anything"] = {"kept": True}
    obj["extraTopLevel"] = 1
    pruned = prune(SCHEMA, obj)
    assert pruned == instance(
        phase="Connected", qr={"code": "2@x"}, conditions=[{"type": "Ready", "status": "True"}]
    ) | {"metadata": {"name": "shop", "namespace": "default", "anything": {"kept": True}}}
    assert obj["spec"]["unknown"] == "x"  # the input is left alone
    assert prune(STATUS, {"kind": "x", "phase": "Pending"}, root=False) == {"phase": "Pending"}


def test_prune_honours_preserve_unknown_fields_and_additional_properties() -> None:
    schema = {
        "type": "object",
        "properties": {
            "free": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"typed": {"type": "object", "properties": {"a": {"type": "string"}}}},
            },
            "map": {
                "type": "object",
                "additionalProperties": {"type": "object", "properties": {"b": {"type": "string"}}},
            },
        },
    }
    value = {"free": {"any": [1, {"x": 2}], "typed": {"a": "1", "z": 2}}, "map": {"k": {"b": "1", "c": 2}}}
    assert prune(schema, value, root=False) == {
        "free": {"any": [1, {"x": 2}], "typed": {"a": "1"}},
        "map": {"k": {"b": "1"}},
    }
    assert fields(validate(schema, {"map": {"k": {"b": 1}}})) == ["map.k.b"]


def test_defaults_apply_to_absent_fields_inside_present_objects() -> None:
    spec = SCHEMA["properties"]["spec"]
    # No settings: none of theirs.
    assert apply_defaults(spec, {}) == {"integration": "WHATSAPP-BAILEYS", "deletionPolicy": "Delete"}
    defaulted = apply_defaults(spec, {"settings": {"rejectCall": True}})
    assert defaulted["settings"] == {
        "rejectCall": True,
        "groupsIgnore": False,
        "alwaysOnline": False,
        "readMessages": False,
        "readStatus": False,
        "syncFullHistory": False,
    }
    # A null in a non-nullable field: defaulted if it has a default, dropped otherwise.
    assert apply_defaults(spec, {"integration": None, "number": None}) == {
        "integration": "WHATSAPP-BAILEYS",
        "deletionPolicy": "Delete",
    }
    assert apply_defaults(
        {"type": "object", "properties": {"a": {"type": "string", "nullable": True}}}, {"a": None}
    ) == {"a": None}


def test_a_defaulted_object_gets_the_defaults_of_its_own_fields() -> None:
    # As the apiserver does: `default: {}` on an object, then its fields' defaults inside it.
    for plural in ("evolutionservers", "clusterevolutionservers"):
        spec = load_crd_schema(plural)["properties"]["spec"]
        assert apply_defaults(spec, {"url": "http://e"}) == {"url": "http://e", "websocket": {"mode": "auto"}}
        assert apply_defaults(spec, {"websocket": {"mode": "global"}, "tls": {}}) == {
            "websocket": {"mode": "global"},
            "tls": {"insecureSkipVerify": False},
        }
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "default": {}, "properties": {"b": {"type": "integer", "default": 1}}}},
    }
    assert apply_defaults(schema, {}) == {"a": {"b": 1}}
    assert apply_defaults(schema, {"a": None}) == {"a": {"b": 1}}


def test_every_crd_of_the_repository_is_within_what_it_implements() -> None:
    for plural in ("whatsappinstances", "evolutionservers", "clusterevolutionservers"):
        check_supported(load_crd_schema(plural))


def test_admit_prunes_defaults_then_validates() -> None:
    obj = instance(phase="Pending", extra="x")
    del obj["spec"]["integration"]
    admitted, causes = admit(SCHEMA, obj)
    assert causes == []
    assert admitted["spec"]["integration"] == "WHATSAPP-BAILEYS" and "extra" not in admitted["status"]
    _, causes = admit(SCHEMA, instance(phase="Nope"))
    assert fields(causes) == ["status.phase"]
    assert admit(None, {"x": 1}) == ({"x": 1}, [])


def test_the_apiservers_invalid_message() -> None:
    one = Cause("status.phase", 'Unsupported value: "X"', "FieldValueNotSupported")
    two = Cause("spec", "Required value", "FieldValueRequired")
    assert invalid_message("WhatsAppInstance", "whatsapp-operator.io", "shop", [one]) == (
        'WhatsAppInstance.whatsapp-operator.io "shop" is invalid: status.phase: Unsupported value: "X"'
    )
    assert invalid_message("WhatsAppInstance", "whatsapp-operator.io", "shop", [one, two, one]).endswith(
        'is invalid: [status.phase: Unsupported value: "X", spec: Required value]'
    )


# ---- what the operator renders -----------------------------------------------------------------


def test_the_status_the_operator_renders_is_within_the_schema() -> None:
    from whatsapp_operator.engine.state import InstanceState
    from whatsapp_operator.evolution.events import ConnectionUpdated

    state = InstanceState("shop")
    state.created("id-1")
    state.qr_received("2@x", "data:x", "ABCD1234", "2026-01-01T00:00:00Z")
    awaiting = state.render_status(1, "2026-01-01T00:00:00Z")
    state.connection_updated(
        ConnectionUpdated("shop", "open", 200, "5511@s.whatsapp.net", "ACME", "https://p"), "2026-01-01T00:01:00Z"
    )
    connected = state.render_status(2, "2026-01-01T00:01:00Z")
    for status in (awaiting, connected):
        # Sent as a merge patch: its nulls delete fields, so they never reach validation.
        sent = apply_defaults(STATUS, status)
        assert validate(STATUS, sent, "status") == []
        assert prune(STATUS, sent, root=False) == sent  # nothing the apiserver would drop silently


# ---- properties --------------------------------------------------------------------------------


@pytest.mark.properties
@given(st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False)))
def test_integer_accepts_exactly_the_int64_range(value: Any) -> None:
    valid = type(value) is int and -(2**63) <= value < 2**63
    assert (validate({"type": "integer", "format": "int64"}, value) == []) is valid


@pytest.mark.properties
@given(st.text())
def test_max_length_counts_code_points(text: str) -> None:
    assert (validate({"type": "string", "maxLength": 5}, text) == []) is (len(text) <= 5)
