"""`parse_event` is total (hypothesis): any JSON-like arguments give a typed event, None or
MalformedEvent, and what it returns can go into a status patch as is.

The budget comes from the hypothesis profile (tests/conftest.py), never from @settings here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.evolution.events import (
    CONNECTION_UPDATE,
    LOGOUT_INSTANCE,
    QRCODE_UPDATED,
    REMOVE_INSTANCE,
    ConnectionUpdated,
    InstanceLoggedOut,
    InstanceRemoved,
    MalformedEvent,
    QRLimitReached,
    QRUpdated,
    parse_event,
)
from whatsapp_operator.values import IMAGE_LIMIT, INT64_MAX, INT64_MIN, TEXT_LIMIT, TOKEN_LIMIT, posix_time, utc_now

pytestmark = pytest.mark.properties

EVENT_TYPES = (QRUpdated, QRLimitReached, ConnectionUpdated, InstanceLoggedOut, InstanceRemoved)
# The bound of every string field of every event.
LIMITS = {
    "instance": TOKEN_LIMIT,
    "code": TOKEN_LIMIT,
    "base64": IMAGE_LIMIT,
    "pairing_code": TOKEN_LIMIT,
    "message": TEXT_LIMIT,
    "state": TOKEN_LIMIT,
    "wuid": TOKEN_LIMIT,
    "profile_name": TEXT_LIMIT,
    "profile_picture_url": TOKEN_LIMIT,
}

# -- strategies ----------------------------------------------------------------------------------

# Lone surrogates included: Python's json reads "\ud800" from the wire.
CHARS = st.characters(categories=["Cs"]) | st.characters()
SHORT_TEXT = st.text(CHARS, max_size=12)
# Strings around every limit, plain or ending in a lone surrogate.
LONG_TEXT = st.builds(
    lambda n, tail: "x" * n + tail,
    st.sampled_from(
        [
            TEXT_LIMIT - 1,
            TEXT_LIMIT,
            TEXT_LIMIT + 1,
            TOKEN_LIMIT - 1,
            TOKEN_LIMIT,
            TOKEN_LIMIT + 1,
            IMAGE_LIMIT - 1,
            IMAGE_LIMIT + 1,
        ]
    ),
    st.sampled_from(["", "\ud800", "é"]),
)
INTEGERS = st.one_of(
    st.integers(),
    st.integers(INT64_MIN - 3, INT64_MIN + 3),
    st.integers(INT64_MAX - 3, INT64_MAX + 3),
    st.builds(lambda exponent, sign: sign * 10**exponent, st.integers(19, 1000), st.sampled_from([1, -1])),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTEGERS,
    st.floats(),  # NaN and +-Infinity included
    SHORT_TEXT,
    LONG_TEXT,
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(SHORT_TEXT, children, max_size=4),
    max_leaves=10,
)
NAMES = st.one_of(
    st.sampled_from([QRCODE_UPDATED, CONNECTION_UPDATE, LOGOUT_INSTANCE, REMOVE_INSTANCE]),
    st.sampled_from(["messages.upsert", "instance.create", ""]),
    SHORT_TEXT,
    JSON_LIKE,  # not even a string
)


def optional_fields(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


ANY = st.one_of(JSON_LIKE, SCALARS)
QRCODES = optional_fields(code=ANY, pairingCode=ANY, base64=ANY, instance=ANY)
DATA = st.one_of(
    JSON_LIKE,
    optional_fields(qrcode=st.one_of(QRCODES, ANY), message=ANY, statusCode=ANY),
    optional_fields(state=ANY, statusReason=ANY, wuid=ANY, profileName=ANY, profilePictureUrl=ANY, instance=ANY),
)
ENVELOPES = optional_fields(event=ANY, instance=ANY, data=DATA, date_time=ANY, apikey=ANY)
ARGS = st.one_of(
    JSON_LIKE,  # not even a list
    st.lists(st.one_of(ENVELOPES, JSON_LIKE), max_size=3),
    st.builds(lambda envelope, rest: [envelope, *rest], ENVELOPES, st.lists(JSON_LIKE, max_size=2)),
)
NAMESPACE_INSTANCES = st.one_of(st.none(), SHORT_TEXT, LONG_TEXT)


# -- properties ----------------------------------------------------------------------------------


def check_event(event: Any) -> None:
    assert isinstance(event, EVENT_TYPES)
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if field.name == "status_reason":
            assert value is None or (type(value) is int and INT64_MIN <= value <= INT64_MAX), value
            continue
        if field.name in ("instance", "state", "message"):
            assert isinstance(value, str) and value
        if value is None:
            continue
        assert isinstance(value, str) and value, (field.name, value)
        value.encode("utf-8")  # no lone surrogate
        assert len(value) <= LIMITS[field.name], (field.name, len(value))


@given(NAMES, ARGS, NAMESPACE_INSTANCES)
def test_parse_event_returns_an_event_or_none_or_raises_malformed_event(
    name: Any, args: Any, namespace_instance: str | None
) -> None:
    try:
        event = parse_event(name, args, namespace_instance=namespace_instance)
    except MalformedEvent as exc:
        assert isinstance(str(exc), str)
        return
    if event is not None:
        check_event(event)


@given(
    st.sampled_from([QRCODE_UPDATED, CONNECTION_UPDATE]),
    ENVELOPES.filter(lambda e: isinstance(e.get("data"), dict)),
    NAMESPACE_INSTANCES,
)
def test_followed_events_with_object_data_are_events_or_malformed(
    name: str, envelope: dict[str, Any], namespace_instance: str | None
) -> None:
    try:
        event = parse_event(name, [envelope], namespace_instance=namespace_instance)
    except MalformedEvent:
        return
    check_event(event)
    assert isinstance(event, QRUpdated | QRLimitReached | ConnectionUpdated)


@given(st.one_of(INTEGERS, st.floats(), st.booleans(), SHORT_TEXT, st.none()))
def test_status_reason_is_kept_exactly_when_it_is_an_int64(reason: Any) -> None:
    args = [{"instance": "acme", "data": {"state": "close", "statusReason": reason}}]
    event = parse_event(CONNECTION_UPDATE, args)
    assert isinstance(event, ConnectionUpdated)
    is_int64 = type(reason) is int and INT64_MIN <= reason <= INT64_MAX
    assert event.status_reason == (reason if is_int64 else None)
    if isinstance(reason, float) and math.isnan(reason):
        assert event.status_reason is None


@given(st.one_of(st.text(max_size=60), st.none(), st.integers(), st.floats(), st.datetimes().map(str)))
def test_posix_time_is_a_number_or_none_for_any_input(value: Any) -> None:
    moment = posix_time(value)
    assert moment is None or isinstance(moment, float)


def test_posix_time_reads_utc_and_zoneless_times_alike() -> None:
    assert posix_time("2026-01-01T00:00:00Z") == posix_time("2026-01-01T00:00:00") == 1767225600.0
    assert posix_time("not a time") is None and posix_time(None) is None


def test_utc_now_is_the_kubernetes_time_of_this_second() -> None:
    before = int(time.time())
    text = utc_now()
    after = int(time.time())
    assert len(text) == 20 and text.endswith("Z")
    assert before <= posix_time(text) <= after  # type: ignore[operator]
