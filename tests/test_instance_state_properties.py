"""Random sequences of Evolution events and REST observations never break the status's promises.

Events are drawn as raw envelopes (any JSON-like value where a field is expected) and go through
`parse_event`, as on the wire; REST observations call the state machine's methods with arbitrary
values. After every step: the phase is one of the declared ones, the rendered status is within the
CRD's schema (nothing the apiserver would refuse or prune), Ready=True only while Connected, and the
status survives a round trip through `from_status` (an operator restart).

With a clock that moves between steps, pause/resume and bursts of connection changes are mixed in:
paused shows as `status.paused` and Synced=Paused, and notices stay bounded (one Flapping per
episode, no per-change notice while flapping, Stable only to end an episode).
"""

from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from whatsapp_operator.engine.state import InstanceState, Notice, Phase
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
            st.sampled_from(
                [
                    "EvolutionUnreachable",
                    "EvolutionServerError",
                    "EvolutionNotReady",
                    "ServerNotFound",
                    "ServerKeyMissing",
                ]
            ),
            st.text(max_size=30),
        ),
    ),
    st.tuples(st.sampled_from(["sync_succeeded", "stream_restored", "removed", "logged_out", "overdue"]), st.none()),
    st.tuples(st.just("stream_lost"), st.text(max_size=30)),
    st.tuples(st.just("failed"), st.text(min_size=1, max_size=30)),
)
# Connection changes in a burst: alternately `open` and a drop (connecting or a plain close).
bursts = st.lists(st.sampled_from(["open", "connecting", "close"]), min_size=1, max_size=12)
timed_observations = st.one_of(
    observations,
    st.tuples(st.sampled_from(["pause", "resume", "tick"]), st.none()),
    st.tuples(st.just("burst"), bursts),
)
# Seconds between two steps: mostly within a flapping window, sometimes beyond it.
gaps = st.sampled_from([0, 0, 1, 5, 20, 59, 61, 300, 3600])
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def apply(state: InstanceState, kind: str, value, now: str = NOW) -> list[Notice]:
    if kind == "event":
        name, args = value
        try:
            event = parse_event(name, args)
        except MalformedEvent:
            return []
        if event is not None:
            return state.apply_event(event, now)
        return []
    if kind == "created":
        instance_id, adopted, recreated = value
        return state.created(instance_id, adopted=adopted, recreated=recreated)
    if kind == "connected":
        return state.connected(*value, now)
    if kind == "qr":
        code, base64, pairing, count = value
        return state.qr_received(code, base64, pairing, now, count=count) if code or pairing else []
    if kind == "closed":
        return state.closed(value, now)
    if kind == "connecting":
        return state.connecting(now)
    if kind == "sync_failed":
        return state.sync_failed(*value)
    if kind == "stream_lost":
        return state.stream_lost(value)
    if kind == "failed":
        return state.failed("InvalidSpec", value)
    if kind == "overdue":
        return state.qr_overdue(90)
    if kind == "logged_out":
        return state.logged_out(now)
    if kind in ("pause", "resume", "tick"):
        return list(getattr(state, kind)(now))
    if kind == "burst":
        notices = []
        for change in value:
            if change == "open":
                notices += state.connected("5511987654321@s.whatsapp.net", None, None, now)
            elif change == "connecting":
                notices += state.connecting(now)
            else:
                notices += state.closed(408, now)
        return notices
    result = getattr(state, kind)()
    return result if isinstance(result, list) else []


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


def condition_of(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


@pytest.mark.properties
@given(
    steps=st.lists(st.tuples(gaps, timed_observations), max_size=20),
    limits=st.sampled_from([(None, None), (2, 60.0), (3, 600.0), (6, 600.0)]),
)
def test_pause_and_rapid_changes_keep_the_promises(steps, limits):
    changes, window = limits
    state = InstanceState("shop", flapping_changes=changes, flapping_window=window)
    elapsed = 0
    flapping = False  # an episode announced and not yet ended
    for gap, (kind, value) in steps:
        elapsed += gap
        now = (START + datetime.timedelta(seconds=elapsed)).isoformat().replace("+00:00", "Z")
        was_paused = state.paused
        notices = apply(state, kind, value, now)
        reasons = [notice.reason for notice in notices]
        # Flapping opens an episode once, Stable closes it; neither twice in a row.
        assert reasons.count("Flapping") <= 1 and reasons.count("Stable") <= 1
        for reason in reasons:  # in order: a burst's changes before its Flapping are announced
            if reason == "Flapping":
                assert not flapping, "a second Flapping notice in one episode"
                flapping = True
                event("flapping")
            elif reason == "Stable":
                assert flapping, "Stable without an episode"
                event("stable")
                flapping = False
            else:
                assert not (flapping and reason in ("Connected", "Disconnected")), reasons  # held back
        assert flapping == (state.flapping is not None)
        # Pause and resume: one notice on each change, none when repeated.
        assert reasons.count("Paused") == (kind == "pause" and not was_paused)
        assert reasons.count("Resumed") == (kind == "resume" and was_paused)
        assert all(notice.type in ("Normal", "Warning") for notice in notices)
        status = without_none(state.render_status(1, now))
        check(status)
        assert status.get("paused", False) is state.paused
        synced = condition_of(status, "Synced")
        assert (synced["reason"] == "Paused") == state.paused
        assert synced["status"] == "False" or not state.paused
        ready = condition_of(status, "Ready")
        if ready["reason"] == "Flapping":
            assert flapping and ready["status"] == ("True" if state.phase is Phase.CONNECTED else "False")
    persisted = without_none(state.render_status(1, NOW))
    restored = InstanceState.from_status("shop", persisted)
    assert restored.paused is state.paused and restored.phase is state.phase
    check(without_none(restored.render_status(1, NOW)))


def _within_schema_spec(value):
    """What the status guard must return, written the plain way (the operator's is one pass)."""
    if isinstance(value, dict):
        cleaned = {key: _within_schema_spec(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if item is not None or value[key] is None}
    if isinstance(value, list):
        return [_within_schema_spec(item) for item in value]
    if isinstance(value, str):
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value <= 2**63 - 1 else None
    return value


# lone surrogates (which hypothesis draws rarely on its own), other non-ASCII, and anything
_any_character = st.sampled_from(["a", "\ud800", "\udfff", "é", "\u20ac"]) | st.characters(exclude_categories=())
_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(_any_character),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=30,
)


@given(document=st.dictionaries(st.text(max_size=5), _documents, max_size=6))
def test_the_status_guard_keeps_what_fits_and_drops_or_mends_the_rest(document):
    from whatsapp_operator.engine.state import _within_schema

    guarded = _within_schema(document)
    assert guarded == _within_schema_spec(document)
    json.dumps(guarded, ensure_ascii=False).encode("utf-8")  # and it can be sent


@pytest.mark.properties
@given(
    steps=st.lists(st.tuples(gaps, timed_observations), max_size=20),
    limits=st.sampled_from([(None, None), (2, 60.0), (6, 600.0)]),
    reason=st.sampled_from([None, 200, 408, 428]),
    later=gaps,
)
def test_a_renewal_called_silent_changes_nothing_when_applied(steps, limits, reason, later):
    # The runtime skips the events the state calls silent renewals: applying one must have been a no-op.
    import copy
    import dataclasses

    from whatsapp_operator.evolution.connection import ConnectionState
    from whatsapp_operator.evolution.events import ConnectionUpdated

    changes, window = limits
    state = InstanceState("shop", flapping_changes=changes, flapping_window=window)
    elapsed = 0
    for gap, (kind, value) in steps:
        elapsed += gap
        apply(state, kind, value, (START + datetime.timedelta(seconds=elapsed)).isoformat().replace("+00:00", "Z"))
    renewal = ConnectionUpdated("shop", ConnectionState.CONNECTING, reason, None, None, None)
    if not state.is_silent_renewal(renewal):
        return
    event("silent renewal")
    now = (START + datetime.timedelta(seconds=elapsed + later)).isoformat().replace("+00:00", "Z")
    rendered = state.render_status(1, now)  # rendering records when conditions first appear
    before = copy.deepcopy(state)
    assert state.apply_event(renewal, now) == []
    assert state.render_status(1, now) == rendered
    # Nothing changed but the pruning of connection changes older than the window, which every
    # later observation does as well before it counts them.
    assert dataclasses.replace(state, connection_changes=[]) == dataclasses.replace(before, connection_changes=[])
    assert set(state.connection_changes) <= set(before.connection_changes)
