"""Property tests for the parsers of what users and the cluster hand the operator: the
WhatsAppInstance spec, EvolutionServer objects and Secret data. Bodies normally passed the CRD
schema, but an old schema, a hand-made object or a Secret anyone wrote are input like any other."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.engine.spec import InstanceSpec, InvalidSpec
from whatsapp_operator.kube.servers import InvalidServer, parse_server, secret_value

pytestmark = pytest.mark.properties

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    [
        "instanceName",
        "integration",
        "number",
        "settings",
        "serverRef",
        "webhook",
        "writeConnectionSecretToRef",
        "deletionPolicy",
    ]
)
SPECS = st.one_of(st.none(), st.dictionaries(FIELDS, JSON, max_size=8))


@given(SPECS)
def test_a_spec_parses_or_is_refused_with_a_reason(spec: Any) -> None:
    try:
        parsed = InstanceSpec.parse("default", "shop", spec)
    except InvalidSpec as error:
        assert str(error)
        return
    assert parsed.deletion_policy in ("Delete", "Orphan")
    assert parsed.webhook is None or isinstance(parsed.webhook.url, str)


@given(
    st.fixed_dictionaries(
        {"url": JSON, "headers": st.lists(JSON, max_size=3), "events": JSON},
    )
)
def test_a_webhook_of_any_shape_parses_or_is_refused(webhook: dict[str, Any]) -> None:
    try:
        InstanceSpec.parse("default", "shop", {"webhook": webhook})
    except InvalidSpec:
        pass


@given(
    st.fixed_dictionaries(
        {"kind": st.one_of(st.none(), st.sampled_from(["EvolutionServer", "ClusterEvolutionServer"]), JSON)},
        optional={"metadata": JSON, "spec": JSON},
    )
)
def test_a_server_object_of_any_shape_parses_or_is_refused_with_a_reason(body: dict[str, Any]) -> None:
    try:
        declared = parse_server(body, "whatsapp-operator")
    except InvalidServer as error:
        assert str(error)
        return
    assert isinstance(declared.url, str) and isinstance(declared.api_key.name, str)


@given(st.one_of(JSON, st.fixed_dictionaries({"data": JSON})), st.text(max_size=8))
def test_a_secret_value_is_text_or_nothing(secret: Any, key: str) -> None:
    value = secret_value(secret, key)
    assert value is None or (isinstance(value, str) and value)


def test_a_secret_value_reads_base64_text() -> None:
    assert secret_value({"data": {"apiKey": base64.b64encode(b"k3y\n").decode()}}, "apiKey") == "k3y"
    assert secret_value({"data": {"apiKey": "not base64!"}}, "apiKey") is None
    assert secret_value({"data": {"apiKey": base64.b64encode(b"\xff").decode()}}, "apiKey") is None
