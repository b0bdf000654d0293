"""Random sequences of Evolution events and REST observations never break the status's promises.

Events are drawn as raw envelopes (any JSON-like value where a field is expected) and go through
`parse_event`, as on the wire; REST observations call the state machine's methods with arbitrary
values. After every step: the phase is one of the declared ones, the rendered status is within the
CRD's schema (nothing the apiserver would refuse or prune), Ready=True only while Connected, and the
status survives a round trip through `from_status` (an operator restart).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.engine.state import InstanceState, Phase
from whatsapp_operator.evolution.events import MalformedEvent, parse_event
from whatsapp_operator.reasons import Reason

from schema_check import load_crd_schema, prune, validate

STATUS_SCHEMA = load_crd_schema("whatsappinstances")["properties"]["status"]
NOW = "2026-01-01T00:00:00Z"

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**80)
    | st.floats()
    | st.text()
    | st.sampled_from(["\ud800", "open", "close", "connecting", "refused", ""])
)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
status_reasons = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([200, 401, 402, 403, 406, 408, 428, 440, 500, 515]),
    st.integers(),
    st.integers(min_value=2**63),
)
states = st.sampled_from(["open", "close", "connecting", "refused"]) | st.text(max_size=5)
strings = (
    st.none()
    | st.text(max_size=40)
    | st.sampled_from(["\ud800x", "5511987654321@s.whatsapp.net", "٥٥١١@s.whatsapp.net"])
)

connection_data = st.fixed_dictionaries(
    {"state": states},
    optional={"statusReason": status_reasons, "wuid": strings, "profileName": strings, "profilePictureUrl": strings},
)
qr_data = st.fixed_dictionaries(
    {}, optional={"code": strings, "base64": strings, "pairingCode": strings, "count": status_reasons}
)
event_data = st.one_of(
    st.tuples(st.just("connection.update"), connection_data | json_like),
    st.tuples(
        st.just("qrcode.updated"),
        st.fixed_dictionaries({"qrcode": qr_data})
        | json_like
        | st.fixed_dictionaries({"message": strings, "statusCode": status_reasons}),
    ),
    st.tuples(st.sampled_from(["logout.instance", "remove.instance", "messages.upsert"]), json_like),
)
envelopes = event_data.map(lambda pair: (pair[0], [{"event": pair[0], "instance": "shop", "data": pair[1]}]))
observations = st.one_of(
    st.tuples(st.just("event"), envelopes),
    st.tuples(st.just("created"), st.tuples(strings, st.booleans(), st.booleans())),
    st.tuples(st.just("connected"), st.tuples(strings, strings, strings)),
    st.tuples(st.just("qr"), st.tuples(strings, strings, strings, status_reasons)),
    st.tuples(st.just("closed"), status_reasons),
    st.tuples(st.just("connecting"), st.none()),
    st.tuples(
        st.just("sync_failed"),
        st.tuples(
            st.sampled_from(["EvolutionUnreachable", "EvolutionServerError", "EvolutionNotReady"]), st.text(max_size=30)
        ),
    ),
    st.tuples(st.sampled_from(["sync_succeeded", "stream_restored", "removed", "logged_out", "overdue"]), st.none()),
    st.tuples(st.just("stream_lost"), st.text(max_size=30)),
    st.tuples(st.just("failed"), st.text(min_size=1, max_size=30)),
)


def apply(state: InstanceState, kind: str, value) -> None:
    if kind == "event":
        name, args = value
        try:
            event = parse_event(name, args)
        except MalformedEvent:
            return
        if event is not None:
            state.apply_event(event, NOW)
    elif kind == "created":
        instance_id, adopted, recreated = value
        state.created(instance_id, adopted=adopted, recreated=recreated)
    elif kind == "connected":
        state.connected(*value, NOW)
    elif kind == "qr":
        code, base64, pairing, count = value
        if code or pairing:
            state.qr_received(code, base64, pairing, NOW, count=count)
    elif kind == "closed":
        state.closed(value, NOW)
    elif kind == "connecting":
        state.connecting(NOW)
    elif kind == "sync_failed":
        state.sync_failed(*value)
    elif kind == "stream_lost":
        state.stream_lost(value)
    elif kind == "failed":
        state.failed("InvalidSpec", value)
    elif kind == "overdue":
        state.qr_overdue(90)
    elif kind == "logged_out":
        state.logged_out(NOW)
    else:
        getattr(state, kind)()


def check(status: dict) -> None:
    causes = validate(STATUS_SCHEMA, status, "status")
    assert causes == [], causes
    assert prune(STATUS_SCHEMA, status, root=False) == status  # nothing the apiserver would drop
    json.dumps(status, ensure_ascii=False, allow_nan=False).encode("utf-8")
    for condition in status["conditions"]:
        assert condition["reason"] in set(Reason), condition  # the named vocabulary, nothing else
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] != "True" or status["phase"] == "Connected"


def without_none(value):
    """What the apiserver stores from a merge patch: keys set to null are removed."""
    if isinstance(value, dict):
        return {key: without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_none(item) for item in value]
    return value


@pytest.mark.properties
@given(steps=st.lists(observations, max_size=12), generation=st.integers(min_value=1, max_value=2**63 - 1))
def test_any_sequence_renders_a_valid_status(steps, generation):
    state = InstanceState("shop")
    for kind, value in steps:
        apply(state, kind, value)
        assert isinstance(state.phase, Phase)
        check(without_none(state.render_status(generation, NOW)))
    persisted = without_none(state.render_status(generation, NOW))
    restored = InstanceState.from_status("shop", persisted)
    assert restored.phase is state.phase
    check(without_none(restored.render_status(generation, NOW)))


@pytest.mark.properties
@given(
    status=json_like
    | st.dictionaries(st.sampled_from(["phase", "message", "qr", "connection", "conditions", "instanceId"]), json_like)
)
def test_any_persisted_status_restores_to_a_valid_state(status):
    state = InstanceState.from_status("shop", status if isinstance(status, dict) else None)
    check(without_none(state.render_status(1, NOW)))
