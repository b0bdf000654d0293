"""Parsing Evolution's Socket.IO envelopes."""

import pytest

from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.evolution.events import (
    ConnectionUpdated,
    InstanceLoggedOut,
    InstanceRemoved,
    MalformedEvent,
    QRLimitReached,
    QRUpdated,
    parse_event,
)
from whatsapp_operator.values import IMAGE_LIMIT, INT64_MAX, INT64_MIN, TEXT_LIMIT, TOKEN_LIMIT


def envelope(event: str, data, instance="acme") -> list:
    return [
        {"event": event, "instance": instance, "data": data, "date_time": "2025-10-21T14:42:10.004Z", "apikey": None}
    ]


def test_qr_event():
    data = {
        "qrcode": {"instance": "acme", "pairingCode": None, "code": "2@a,b,c,d", "base64": "data:image/png;base64,xx"}
    }
    assert parse_event("qrcode.updated", envelope("qrcode.updated", data)) == QRUpdated(
        "acme", "2@a,b,c,d", "data:image/png;base64,xx", None
    )


def test_qr_limit_event_has_another_shape():
    data = {"message": "QR code limit reached, please login again", "statusCode": 500}
    assert parse_event("qrcode.updated", envelope("qrcode.updated", data)) == QRLimitReached(
        "acme", "QR code limit reached, please login again"
    )


def test_connection_update_open_with_profile():
    data = {
        "instance": "acme",
        "wuid": "5511@s.whatsapp.net",
        "profileName": "ACME",
        "profilePictureUrl": None,
        "state": "open",
        "statusReason": 200,
    }
    assert parse_event("connection.update", envelope("connection.update", data)) == ConnectionUpdated(
        "acme", "open", 200, "5511@s.whatsapp.net", "ACME", None
    )


def test_logout_and_remove_have_null_data():
    assert parse_event("logout.instance", envelope("logout.instance", None)) == InstanceLoggedOut("acme")
    assert parse_event("remove.instance", envelope("remove.instance", None)) == InstanceRemoved("acme")


def test_namespace_names_the_instance_when_the_envelope_does_not():
    args = [{"event": "logout.instance", "data": None}]
    assert parse_event("logout.instance", args, namespace_instance="shop") == InstanceLoggedOut("shop")


def test_unfollowed_events_are_none():
    assert parse_event("messages.upsert", envelope("messages.upsert", {"key": {}})) is None
    assert parse_event("instance.create", envelope("instance.create", {})) is None


@pytest.mark.parametrize(
    "name,args",
    [
        ("connection.update", []),
        ("connection.update", ["not an object"]),
        ("connection.update", envelope("connection.update", {"statusReason": 200})),
        ("connection.update", envelope("connection.update", None)),
        ("qrcode.updated", envelope("qrcode.updated", {"qrcode": {}})),
        ("qrcode.updated", envelope("qrcode.updated", {"other": 1})),
        ("logout.instance", [{"event": "logout.instance", "data": None}]),
    ],
)
def test_malformed_envelopes_raise(name, args):
    with pytest.raises(MalformedEvent):
        parse_event(name, args)


# -- any JSON value: a typed event, None or MalformedEvent, with values fit for a status patch ---


def short_id(value):
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} chars)"


@pytest.mark.parametrize(
    "args",
    [{"0": {}}, {}, "envelope", 7, 10**400, 1.5, float("nan"), None, True, [None], [[{"instance": "acme"}]]],
    ids=short_id,
)
def test_args_that_are_not_a_list_starting_with_an_object_are_malformed(args):
    # A dict made args[0] raise KeyError, an int TypeError.
    with pytest.raises(MalformedEvent):
        parse_event("logout.instance", args)


@pytest.mark.parametrize("name", [None, 7, ["logout.instance"], {"a": 1}])
def test_names_that_are_not_strings_are_not_followed(name):
    assert parse_event(name, envelope("logout.instance", None)) is None


@pytest.mark.parametrize(
    "reason,expected",
    [
        (INT64_MAX, INT64_MAX),
        (INT64_MIN, INT64_MIN),
        (INT64_MAX + 1, None),
        (INT64_MIN - 1, None),
        (10**400, None),
        (True, None),
        (False, None),
        (428.0, None),
        (float("nan"), None),
        (float("inf"), None),
        ("428", None),
        ([428], None),
        (None, None),
    ],
    ids=short_id,
)
def test_status_reason_is_an_int64_or_none(reason, expected):
    data = {"state": "close", "statusReason": reason}
    event = parse_event("connection.update", envelope("connection.update", data))
    assert isinstance(event, ConnectionUpdated)
    assert event.status_reason == expected and type(event.status_reason) in (int, type(None))


def test_lone_surrogates_become_replacement_characters():
    data = {
        "state": "open",
        "statusReason": 200,
        "wuid": "55\udfff@s.whatsapp.net",
        "profileName": "AC\ud83dME",
        "profilePictureUrl": "https://pps/\udc00",
    }
    event = parse_event("connection.update", envelope("connection.update", data, instance="ac\ud800me"))
    assert event == ConnectionUpdated(
        "ac\ufffdme", ConnectionState.OPEN, 200, "55\ufffd@s.whatsapp.net", "AC\ufffdME", "https://pps/\ufffd"
    )
    # A state with a lone surrogate is no state Evolution has: a malformed event, whose message is clean.
    data["state"] = "op\ud800en"
    with pytest.raises(MalformedEvent) as raised:
        parse_event("connection.update", envelope("connection.update", data, instance="acme"))
    assert "unknown state 'op\ufffden'" in str(raised.value)
    for value in (event.instance, event.state, event.wuid, event.profile_name, event.profile_picture_url):
        value.encode("utf-8")


def test_oversized_strings_are_dropped_or_shortened():
    data = {
        "state": "open",
        "wuid": "w" * (TOKEN_LIMIT + 1),
        "profileName": "n" * (TEXT_LIMIT + 50),
        "profilePictureUrl": "u" * (TOKEN_LIMIT + 1),
    }
    event = parse_event("connection.update", envelope("connection.update", data))
    assert event.wuid is None and event.profile_picture_url is None
    assert event.profile_name == "n" * (TEXT_LIMIT - 1) + "…"
    with pytest.raises(MalformedEvent):  # a state too long to be one
        parse_event("connection.update", envelope("connection.update", {"state": "s" * (TOKEN_LIMIT + 1)}))


def test_qr_values_are_bounded_tokens_and_the_image_has_its_own_limit():
    image = "data:image/png;base64," + "A" * (TOKEN_LIMIT * 4)  # longer than a token, a fine PNG
    qrcode = {"code": "2@" + "c" * TOKEN_LIMIT, "pairingCode": "WZYE\ud800H1Y", "base64": image}
    event = parse_event("qrcode.updated", envelope("qrcode.updated", {"qrcode": qrcode}))
    assert event == QRUpdated("acme", None, image, "WZYE\ufffdH1Y")
    qrcode = {"code": "2@abc", "base64": "A" * (IMAGE_LIMIT + 1)}
    event = parse_event("qrcode.updated", envelope("qrcode.updated", {"qrcode": qrcode}))
    assert event == QRUpdated("acme", "2@abc", None, None)


def test_qr_with_neither_a_usable_code_nor_a_pairing_code_is_malformed():
    for qrcode in ({"code": "c" * (TOKEN_LIMIT + 1)}, {"code": 12, "pairingCode": True}, {"code": ""}):
        with pytest.raises(MalformedEvent):
            parse_event("qrcode.updated", envelope("qrcode.updated", {"qrcode": qrcode}))


def test_qr_limit_message_is_shortened_valid_text():
    data = {"message": "limit \udc00" + "x" * TEXT_LIMIT, "statusCode": 500}
    event = parse_event("qrcode.updated", envelope("qrcode.updated", data))
    assert isinstance(event, QRLimitReached)
    assert len(event.message) == TEXT_LIMIT and event.message.startswith("limit \ufffd")
    assert parse_event("qrcode.updated", envelope("qrcode.updated", {"statusCode": 500})) == QRLimitReached(
        "acme", "QR code limit reached"
    )


def test_an_unusable_instance_name_falls_back_to_the_namespace_or_is_malformed():
    args = envelope("logout.instance", None, instance="i" * (TOKEN_LIMIT + 1))
    assert parse_event("logout.instance", args, namespace_instance="shop") == InstanceLoggedOut("shop")
    with pytest.raises(MalformedEvent):
        parse_event("logout.instance", args)
    with pytest.raises(MalformedEvent):
        parse_event("logout.instance", envelope("logout.instance", None, instance=["acme"]))
