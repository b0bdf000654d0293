"""Parsing Evolution's Socket.IO envelopes."""

import pytest

from whatsapp_operator.evolution.events import (
    ConnectionUpdated,
    InstanceLoggedOut,
    InstanceRemoved,
    MalformedEvent,
    QRLimitReached,
    QRUpdated,
    parse_event,
)


def envelope(event: str, data, instance="acme") -> list:
    return [{"event": event, "instance": instance, "data": data, "date_time": "2025-10-21T14:42:10.004Z",
             "apikey": None}]


def test_qr_event():
    data = {"qrcode": {"instance": "acme", "pairingCode": None, "code": "2@a,b,c,d", "base64": "data:image/png;base64,xx"}}
    assert parse_event("qrcode.updated", envelope("qrcode.updated", data)) == QRUpdated(
        "acme", "2@a,b,c,d", "data:image/png;base64,xx", None)


def test_qr_limit_event_has_another_shape():
    data = {"message": "QR code limit reached, please login again", "statusCode": 500}
    assert parse_event("qrcode.updated", envelope("qrcode.updated", data)) == QRLimitReached(
        "acme", "QR code limit reached, please login again")


def test_connection_update_open_with_profile():
    data = {"instance": "acme", "wuid": "5511@s.whatsapp.net", "profileName": "ACME", "profilePictureUrl": None,
            "state": "open", "statusReason": 200}
    assert parse_event("connection.update", envelope("connection.update", data)) == ConnectionUpdated(
        "acme", "open", 200, "5511@s.whatsapp.net", "ACME", None)


def test_logout_and_remove_have_null_data():
    assert parse_event("logout.instance", envelope("logout.instance", None)) == InstanceLoggedOut("acme")
    assert parse_event("remove.instance", envelope("remove.instance", None)) == InstanceRemoved("acme")


def test_namespace_names_the_instance_when_the_envelope_does_not():
    args = [{"event": "logout.instance", "data": None}]
    assert parse_event("logout.instance", args, namespace_instance="shop") == InstanceLoggedOut("shop")


def test_unfollowed_events_are_none():
    assert parse_event("messages.upsert", envelope("messages.upsert", {"key": {}})) is None
    assert parse_event("instance.create", envelope("instance.create", {})) is None


@pytest.mark.parametrize("name,args", [
    ("connection.update", []),
    ("connection.update", ["not an object"]),
    ("connection.update", envelope("connection.update", {"statusReason": 200})),
    ("connection.update", envelope("connection.update", None)),
    ("qrcode.updated", envelope("qrcode.updated", {"qrcode": {}})),
    ("qrcode.updated", envelope("qrcode.updated", {"other": 1})),
    ("logout.instance", [{"event": "logout.instance", "data": None}]),
])
def test_malformed_envelopes_raise(name, args):
    with pytest.raises(MalformedEvent):
        parse_event(name, args)
