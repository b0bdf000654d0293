"""Evolution API REST client: the few calls the operator needs, each with its contract traps handled.

Every call goes through `_request`, which bounds concurrency toward Evolution, turns transport
failures, HTTP errors and Evolution's HTTP-200 error bodies into `EvolutionError`, and never lets
the API key or an instance token reach a message. Instance tokens returned by Evolution
(`hash` on create, `token` in fetchInstances) are kept only as `InstanceToken`, which is
registered for redaction and shows as "***"; every other copy is dropped as soon as a response is
parsed. Webhook header values are secrets too: `WebhookConfig` masks them in its repr, and the
values the operator sends are registered for redaction.

Whatever Evolution (or a proxy in front of it) answers - any status, headers, encoding, size or
body - a call returns a parsed result or raises `EvolutionError`; only cancellation escapes. The
body is read with a size bound (after content decoding, so a compression bomb stays bounded),
decoded to text without trusting the declared charset, refused when nested deeper than
MAX_JSON_DEPTH, and every value kept from it goes through `whatsapp_operator.values`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import hmac
import itertools
import json as jsonlib
import logging
import re
import ssl
import traceback
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from whatsapp_operator import values
from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.evolution.errors import (
    SECRET_FIELDS,
    EvolutionError,
    InstanceNotFound,
    error_message_from_body,
    reason_for_status,
)
from whatsapp_operator.http11 import CookielessClient, Http11Transport, RequestMaker, json_body
from whatsapp_operator.pacing import LARGE_ANSWER_BYTES, ROWS_PER_TURN
from whatsapp_operator.reasons import Reason
from whatsapp_operator.redaction import MASK, redact, register_secret

logger = logging.getLogger("whatsapp_operator.evolution")

# Events every instance is subscribed to on its own namespace. These four names are valid in the
# /websocket/set enum of both 2.2.3 and 2.3.6; the create call accepts the longer list unvalidated.
INSTANCE_EVENTS_FOR_SET = ("QRCODE_UPDATED", "CONNECTION_UPDATE", "LOGOUT_INSTANCE", "REMOVE_INSTANCE")
INSTANCE_EVENTS_AT_CREATE = (*INSTANCE_EVENTS_FOR_SET, "INSTANCE_CREATE", "INSTANCE_DELETE", "STATUS_INSTANCE")
# A fetchInstances list of 10,000 instances is ~10 MB; far beyond that an answer is not Evolution's.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# Evolution's answers are a few levels deep; Python's json module would recurse ~1,000 levels deep
# (and raise RecursionError) on a hostile one, and so would anything that walks the parsed value.
MAX_JSON_DEPTH = 64

# The /webhook/set (and /websocket/set) event enum of each version (docs/evolution-api.md §3.10). An
# enabled webhook whose `events` list is empty is stored with the whole list of its version, so a
# stored list equal to one of these means "all events", as an empty list does.
WEBHOOK_EVENTS_2_2_3 = (
    "APPLICATION_STARTUP",
    "QRCODE_UPDATED",
    "MESSAGES_SET",
    "MESSAGES_UPSERT",
    "MESSAGES_EDITED",
    "MESSAGES_UPDATE",
    "MESSAGES_DELETE",
    "SEND_MESSAGE",
    "CONTACTS_SET",
    "CONTACTS_UPSERT",
    "CONTACTS_UPDATE",
    "PRESENCE_UPDATE",
    "CHATS_SET",
    "CHATS_UPSERT",
    "CHATS_UPDATE",
    "CHATS_DELETE",
    "GROUPS_UPSERT",
    "GROUP_UPDATE",
    "GROUP_PARTICIPANTS_UPDATE",
    "CONNECTION_UPDATE",
    "LABELS_EDIT",
    "LABELS_ASSOCIATION",
    "CALL",
    "TYPEBOT_START",
    "TYPEBOT_CHANGE_STATUS",
    "REMOVE_INSTANCE",
    "LOGOUT_INSTANCE",
)
WEBHOOK_EVENTS_2_3_6 = (
    *WEBHOOK_EVENTS_2_2_3,
    "SEND_MESSAGE_UPDATE",
    "INSTANCE_CREATE",
    "INSTANCE_DELETE",
    "STATUS_INSTANCE",
)
_ALL_EVENTS = (frozenset(WEBHOOK_EVENTS_2_2_3), frozenset(WEBHOOK_EVENTS_2_3_6))
# A disabled webhook is still stored with a url, and 2.2.3 checks it with isURL even when disabling
# (docs/evolution-api.md §3.11). A name under the reserved .invalid domain (RFC 2606) passes that
# check and never resolves, should someone re-enable the row in the manager without changing it.
DISABLED_WEBHOOK_URL = "http://webhook-disabled.invalid"
# Bounds on what a webhook or settings answer may hold; far beyond them an answer is not Evolution's.
MAX_WEBHOOK_EVENTS = 256
MAX_WEBHOOK_HEADERS = 64
_EVENT_NAME_LIMIT = 64
_HEADER_NAME_LIMIT = 256
_VERSION_LIMIT = 128
# The stored value of a header that cannot be sent as it is (null, an object...): no header value
# we send can contain a NUL character, so such a header always shows as a difference.
UNUSABLE_HEADER_VALUE = "\x00"
# Instance tokens are a VarChar(255) in Evolution's database.
_TOKEN_LIMIT = 255
# The settings the operator manages (docs/evolution-api.md §3.9); wavoipToken is never read.
MANAGED_BOOLEAN_SETTINGS = (
    "rejectCall",
    "groupsIgnore",
    "alwaysOnline",
    "readMessages",
    "readStatus",
    "syncFullHistory",
)


@dataclass(frozen=True)
class QRPayload:
    """A QR object as Evolution returns it; every field may be missing (`{"count":0}`)."""

    code: str | None = None
    base64: str | None = None
    pairing_code: str | None = None
    count: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QRPayload:
        return cls(
            code=values.token(data.get("code")),
            base64=values.token(data.get("base64"), values.IMAGE_LIMIT),
            pairing_code=values.token(data.get("pairingCode")),
            count=values.int64(data.get("count")),
        )


@dataclass(frozen=True)
class ConnectResult:
    state: ConnectionState | None  # OPEN when already connected, else None
    qr: QRPayload | None


class InstanceToken:
    """An instance's own API key (docs/evolution-api.md §2.1): shown as "***" everywhere, `reveal()`
    gives the value. It is registered for redaction when built, so no copy reaches a log either."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or not value:
            raise ValueError("an instance token is a non-empty string")
        register_secret(value)
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InstanceToken):
            return NotImplemented
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"), other._value.encode("utf-8", "surrogatepass")
        )

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def parse(cls, value: Any) -> InstanceToken | None:
        """The token of a hostile answer: a non-empty string of at most 255 characters, else None."""
        checked = values.token(value, _TOKEN_LIMIT)
        return cls(checked) if checked else None


@dataclass(frozen=True, repr=False)
class WebhookConfig:
    """An instance's webhook as the operator wants it (docs/evolution-api.md §3.11).

    `events` are subscription names (UPPER_SNAKE); empty means every event. `headers` are
    (name, value) pairs sorted by name; their values are secrets and never shown by repr."""

    url: str
    events: tuple[str, ...] = ()
    by_events: bool = False
    base64: bool = False
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", tuple(self.events))
        object.__setattr__(self, "headers", tuple(sorted((name, value) for name, value in self.headers)))

    def differences(self, other: WebhookConfig | None) -> list[str]:
        """Names of the spec fields that differ: "url", "events" (compared as sets), "byEvents", "base64", "headers"."""
        if other is None:
            return ["url", "events", "byEvents", "base64", "headers"]
        found: list[str] = []
        if self.url != other.url:
            found.append("url")
        if _event_set(self.events) != _event_set(other.events):
            found.append("events")
        if self.by_events != other.by_events:
            found.append("byEvents")
        if self.base64 != other.base64:
            found.append("base64")
        if self.headers != other.headers:
            found.append("headers")
        return found

    def as_body(self) -> dict[str, Any]:
        """The `webhook` object of a create or /webhook/set body. Every field is sent: /webhook/set
        keeps the stored value of a field it is not given (a Prisma update ignores undefined)."""
        return {
            "enabled": True,
            "url": self.url,
            "events": list(self.events),  # never missing: that is a TypeError (500, or a rolled-back create)
            "byEvents": self.by_events,
            "base64": self.base64,
            "headers": dict(self.headers),
        }

    def __repr__(self) -> str:
        headers = tuple((name, MASK) for name, _ in self.headers)
        return (
            f"WebhookConfig(url={redact(self.url)!r}, events={self.events!r}, by_events={self.by_events!r}, "
            f"base64={self.base64!r}, headers={headers!r})"
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> WebhookConfig | None:
        """The stored row of /webhook/find: None unless it is enabled. Raises ValueError when the row
        holds more events or headers than the bounds allow."""
        if row.get("enabled") is not True:
            return None
        return cls(
            url=values.token(row.get("url")) or "",
            events=_parse_events(row.get("events")),
            by_events=row.get("webhookByEvents") is True,
            base64=row.get("webhookBase64") is True,
            headers=_parse_headers(row.get("headers")),
        )


def _event_set(events: Iterable[str]) -> frozenset[str]:
    """Events as a set, with "all events" (empty, or a version's whole list) as the empty set."""
    found = frozenset(events)
    return frozenset() if found in _ALL_EVENTS else found


def _parse_events(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    if len(raw) > MAX_WEBHOOK_EVENTS:
        raise ValueError(f"the webhook has {len(raw)} events")
    return tuple(dict.fromkeys(name for item in raw if (name := values.token(item, _EVENT_NAME_LIMIT))))


def _parse_headers(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        return ()
    if len(raw) > MAX_WEBHOOK_HEADERS:
        raise ValueError(f"the webhook has {len(raw)} headers")
    headers: dict[str, str] = {}
    for key, value in raw.items():
        name = values.token(key, _HEADER_NAME_LIMIT)
        if name is None:
            name = UNUSABLE_HEADER_VALUE  # a name we would never send: still a difference
        if isinstance(value, str) and len(value) <= values.TOKEN_LIMIT:
            headers[name] = values.valid_unicode(value)
        elif isinstance(value, bool):
            headers[name] = "true" if value else "false"  # what Node's http sends for it
        elif values.int64(value) is not None:
            headers[name] = str(value)
        else:
            headers[name] = UNUSABLE_HEADER_VALUE
    return tuple(sorted(headers.items()))


@dataclass(frozen=True)
class ServerInfo:
    """`GET /` (docs/evolution-api.md §3.1)."""

    version: str | None
    whatsapp_web_version: str | None  # 2.3.x only


@dataclass(frozen=True)
class CreatedInstance:
    instance_id: str | None
    status: str | None
    qr: QRPayload | None
    token: InstanceToken | None = None  # the answer's `hash`


@dataclass(frozen=True)
class InstanceRecord:
    """One row of fetchInstances; its token only as an InstanceToken."""

    instance_id: str | None
    name: str
    connection_status: str | None
    owner_jid: str | None
    profile_name: str | None
    profile_picture_url: str | None
    disconnection_reason_code: int | None
    token: InstanceToken | None = None

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> InstanceRecord:
        """`row` as Evolution sent it: the token is taken out first, and nothing else of it is kept."""
        token = InstanceToken.parse(row.get("token"))
        row = _without_secrets(row)
        return cls(
            instance_id=values.token(row.get("id")),
            name=values.token(row.get("name")) or "",
            connection_status=values.token(row.get("connectionStatus")),
            owner_jid=values.token(row.get("ownerJid")),
            profile_name=values.text(row.get("profileName")),
            profile_picture_url=values.token(row.get("profilePicUrl")),
            disconnection_reason_code=values.int64(row.get("disconnectionReasonCode")),
            token=token,
        )


# A reconciliation starts with a connectionState read and continues with create/connect/fetch.
# Serving the follow-ups first finishes instances one by one: with 1,000 new resources the first
# QR codes appear at once instead of after every instance's first read (bench/README.md).
FOLLOW_UP_PRIORITY = 0
ENTRY_PRIORITY = 1


class PrioritySlots:
    """A semaphore that lets waiters in by priority (lower first), then by arrival."""

    def __init__(self, capacity: int):
        self._free = capacity
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._arrivals), granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()  # the slot was handed over just as the waiter was cancelled
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():  # cancelled waiters are skipped
                granted.set_result(None)
                return
        self._free += 1


class InstanceAlreadyExists(EvolutionError):
    def __init__(self, message: str):
        super().__init__("InstanceAlreadyExists", message, status=403, endpoint="create instance")


class InstanceRejected(EvolutionError):
    """Evolution refused to create the instance as specified (HTTP 400): only a spec change helps."""

    def __init__(self, message: str):
        super().__init__(Reason.EVOLUTION_REJECTED_REQUEST, message, status=400, endpoint="create instance")


class EvolutionClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_concurrent_requests: int = 8,
        max_concurrent_waits: int = 64,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ):
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        register_secret(api_key)  # whoever builds the client, the key never reaches a message or log
        self.base_url = base_url.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self._call_timeout = timeout
        # The system CAs, an SSLContext with the server's CA, or (asked for) none.
        self._transport = transport or Http11Transport(
            verify=verify, max_connections=max_concurrent_requests * 2 + max_concurrent_waits
        )
        self._http = CookielessClient(
            base_url=self.base_url,
            # Only the encodings _BodyReader decodes with a bound on the decoded size.
            headers={"apikey": api_key, "accept": "application/json", "accept-encoding": "gzip, deflate"},
            timeout=timeout,
            transport=self._transport,
        )
        self._requests = RequestMaker(self._http)
        # The bound on load toward Evolution: calls that make it work. A connect mostly sleeps inside
        # Evolution after starting the session (docs/evolution-api.md §3.3): it has slots of its own,
        # so a thousand new instances do not queue every other call behind those sleeps.
        self._slots = PrioritySlots(max_concurrent_requests)
        self._wait_slots = PrioritySlots(max_concurrent_waits)
        self.calls: dict[tuple[str, str], int] = {}  # (endpoint, outcome) -> count
        self._unexpected_logged: set[str] = set()  # kinds of unexpected failure already logged in full

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- instance lifecycle -------------------------------------------------------------------

    async def create_instance(
        self,
        name: str,
        *,
        integration: str,
        settings: dict[str, Any],
        webhook: WebhookConfig | None = None,
    ) -> CreatedInstance:
        body: dict[str, Any] = {
            "instanceName": name,
            "integration": integration,
            # qrcode:false returns at once; the QR cycle is started by connect(), which also
            # carries the pairing number, so create never blocks for Evolution's fixed 5 s wait.
            "qrcode": False,
            **settings,
            "websocket": {"enabled": True, "events": list(INSTANCE_EVENTS_AT_CREATE)},
        }
        if webhook is not None:
            # The nested object is stored as /webhook/set would (enabled forced true, §3.2); the
            # flat webhookUrl/webhookEvents fields of v1 are validated but never used.
            _register_header_values(webhook)
            body["webhook"] = webhook.as_body()
        try:
            data = await self._request("POST", "/instance/create", "create instance", json=body)
        except EvolutionError as error:
            if error.status == 403 and "already in use" in error.message:
                raise InstanceAlreadyExists(error.message) from None
            if error.status == 400:
                raise InstanceRejected(error.message) from None
            raise
        instance = data.get("instance") if isinstance(data, dict) else None
        if not isinstance(instance, dict):
            raise self._wrong_shape("create instance", "the answer has no instance object")
        qr = data.get("qrcode")
        return CreatedInstance(
            instance_id=values.token(instance.get("instanceId")),
            status=values.token(instance.get("status")),
            qr=QRPayload.from_json(qr) if isinstance(qr, dict) else None,
            token=InstanceToken.parse(data.get("hash")),  # a plain string in v2 (§3.2)
        )

    async def connect(self, name: str, *, number: str | None = None) -> ConnectResult:
        params = {"number": number} if number else None
        data = await self._request(
            "GET",
            f"/instance/connect/{_segment(name)}",
            "connect instance",
            params=params,
            instance=name,
            waits_inside=True,
        )
        if not isinstance(data, dict):
            raise self._wrong_shape("connect instance", "the answer is not an object")
        instance = data.get("instance")
        if isinstance(instance, dict):
            state = ConnectionState.parse(values.token(instance.get("state") or instance.get("status")))
            qr = data.get("qrcode")
            return ConnectResult(state=state, qr=QRPayload.from_json(qr) if isinstance(qr, dict) else None)
        return ConnectResult(state=None, qr=QRPayload.from_json(data))

    async def connection_state(self, name: str) -> ConnectionState | None:
        """The live in-memory state; None while Evolution is still loading it (docs/evolution-api.md §3.4)."""
        data = await self._request(
            "GET",
            f"/instance/connectionState/{_segment(name)}",
            "read connection state",
            instance=name,
            priority=ENTRY_PRIORITY,
        )
        instance = data.get("instance") if isinstance(data, dict) else None
        if not isinstance(instance, dict):
            raise self._wrong_shape("read connection state", "the answer has no instance object")
        raw = values.token(instance.get("state"))
        state = ConnectionState.parse(raw)
        if raw is not None and state is None:
            raise self._wrong_shape("read connection state", f"unknown state {raw[:40]!r}")
        return state

    async def fetch_instance(self, name: str) -> InstanceRecord | None:
        """The stored row of one instance; None when Evolution has it in its database only."""
        try:
            data = await self._request(
                "GET", "/instance/fetchInstances", "fetch instance", params={"instanceName": name}, instance=name
            )
        except InstanceNotFound:
            return None
        rows = data if isinstance(data, list) else [data]
        for row in rows:
            if isinstance(row, dict) and row.get("name") == name:
                return InstanceRecord.from_json(row)
        return None

    async def fetch_instances(self) -> dict[str, InstanceRecord]:
        """Every stored row, by instance name, without tokens: one call for the periodic resync.

        The rows' `connectionStatus` lags the live state (docs/evolution-api.md §3.5): callers decide
        on it only where it cannot mislead.
        """
        endpoint = "list instances"
        data = await self._request("GET", "/instance/fetchInstances", endpoint, priority=ENTRY_PRIORITY, rows=True)
        if not isinstance(data, _ArrayText):
            raise self._wrong_shape(endpoint, "the answer is not a list")
        records: dict[str, InstanceRecord] = {}
        async for row in self._read_rows(data, endpoint):
            if isinstance(row, dict):
                record = InstanceRecord.from_json({key: value for key, value in row.items() if key != "token"})
                if record.name:
                    records[record.name] = record
        return records

    async def _read_rows(self, listed: _ArrayText, endpoint: str) -> AsyncIterator[Any]:
        """The rows of a JSON array answer, decoded one at a time, ROWS_PER_TURN per turn of the loop:
        decoded whole, 10,000 rows (9 MB) held the loop for a large part of a second. The call is
        counted once the last row is read; a row that is not JSON, or nests deeper than the answer
        may, makes it a bad answer as it would have been decoded whole (the rows before it are
        dropped by the caller with the exception)."""
        try:
            for index, (row, start, end) in enumerate(json_array_rows(listed.text)):
                if index % ROWS_PER_TURN == 0:
                    await asyncio.sleep(0)
                # One level is the array's own: a row may nest one level less than the whole answer.
                if _nests_deeper(listed.text[start:end], row, MAX_JSON_DEPTH - 1):
                    raise _UnreadableAnswer(_TOO_DEEP)
                yield row
        except RecursionError:
            self._count(endpoint, "bad_response")
            raise _bad_answer(endpoint, _TOO_DEEP) from None
        except _UnreadableAnswer as error:
            self._count(endpoint, "bad_response")
            raise _bad_answer(endpoint, error.problem) from None
        except ValueError:
            self._count(endpoint, "bad_response")
            raise EvolutionError(
                Reason.EVOLUTION_BAD_RESPONSE, f"{endpoint}: Evolution API sent a non-JSON answer", endpoint=endpoint
            ) from None
        self._count(endpoint, "ok")

    async def delete_instance(self, name: str) -> bool:
        """Remove the instance; False when Evolution did not have it (404 counts as gone)."""
        try:
            await self._request("DELETE", f"/instance/delete/{_segment(name)}", "delete instance", instance=name)
        except InstanceNotFound:
            return False
        return True

    async def logout(self, name: str) -> bool:
        """Log the session out; False when it was not connected (docs/evolution-api.md §3.7)."""
        try:
            await self._request("DELETE", f"/instance/logout/{_segment(name)}", "log out instance", instance=name)
        except EvolutionError as error:
            if error.status == 400:
                return False
            raise
        return True

    async def set_settings(self, name: str, settings: dict[str, Any]) -> None:
        await self._request("POST", f"/settings/set/{_segment(name)}", "apply settings", json=settings, instance=name)

    async def find_settings(self, name: str) -> dict[str, Any] | None:
        """The stored settings the operator manages (docs/evolution-api.md §3.9): the six booleans
        and `msgCall`, each only when it has its type; None when Evolution has no settings row
        (or the instance is not loaded: find answers `null` then too)."""
        data = await self._request(
            "GET", f"/settings/find/{_segment(name)}", "read settings", instance=name, allow_null=True
        )
        if data is None:
            return None
        if not isinstance(data, dict):
            raise self._wrong_shape("read settings", "the answer is not an object")
        found: dict[str, Any] = {key: data[key] for key in MANAGED_BOOLEAN_SETTINGS if isinstance(data.get(key), bool)}
        message = data.get("msgCall", _MISSING)
        if message is None:
            found["msgCall"] = ""  # a nullable column; create stores '' for "no message"
        elif isinstance(message, str) and len(message) <= values.TEXT_LIMIT:
            found["msgCall"] = values.valid_unicode(message)
        return found

    async def set_webhook(self, name: str, webhook: WebhookConfig | None) -> None:
        """Store the instance's webhook, or disable it with None (docs/evolution-api.md §3.11).

        A disable sends `enabled: false` with DISABLED_WEBHOOK_URL (2.2.3 validates the url even
        then), no events, no headers (so none of the old header secrets stays stored) and both flags
        false."""
        if webhook is None:
            wanted: dict[str, Any] = {
                "enabled": False,
                "url": DISABLED_WEBHOOK_URL,
                "events": [],
                "byEvents": False,
                "base64": False,
                "headers": {},
            }
        else:
            _register_header_values(webhook)
            wanted = webhook.as_body()
        await self._request(
            "POST", f"/webhook/set/{_segment(name)}", "set webhook", json={"webhook": wanted}, instance=name
        )

    async def find_webhook(self, name: str) -> WebhookConfig | None:
        """The stored webhook, or None when there is none or it is disabled (docs/evolution-api.md §3.11)."""
        data = await self._request(
            "GET", f"/webhook/find/{_segment(name)}", "read webhook", instance=name, allow_null=True
        )
        if data is None:
            return None
        if not isinstance(data, dict):
            raise self._wrong_shape("read webhook", "the answer is not an object")
        try:
            return WebhookConfig.from_row(data)
        except ValueError as error:
            raise self._wrong_shape("read webhook", str(error)) from None

    async def server_info(self) -> ServerInfo:
        """`GET /` (docs/evolution-api.md §3.1). 2.3.x fetches web.whatsapp.com on every call, without
        a timeout of its own: the client's timeout bounds the call. Not a liveness probe."""
        data = await self._request("GET", "/", "read server info", priority=ENTRY_PRIORITY)
        if not isinstance(data, dict):
            raise self._wrong_shape("read server info", "the answer is not an object")
        return ServerInfo(
            version=values.token(data.get("version"), _VERSION_LIMIT),
            whatsapp_web_version=values.token(data.get("whatsappWebVersion"), _VERSION_LIMIT),
        )

    def use_api_key(self, api_key: str) -> None:
        """Send `api_key` on every later request (the global key was rotated; requests already on
        their way keep the old one)."""
        register_secret(api_key)
        self._http.headers["apikey"] = api_key
        self._requests.forget()

    async def subscribe_events(self, name: str) -> None:
        """Make sure the instance emits our events on its own namespace (needed for adopted instances)."""
        body = {"websocket": {"enabled": True, "events": list(INSTANCE_EVENTS_FOR_SET)}}
        await self._request(
            "POST", f"/websocket/set/{_segment(name)}", "subscribe events", json=body, instance=name, allow_empty=True
        )

    # -- transport ------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        instance: str | None = None,
        allow_empty: bool = False,
        allow_null: bool = False,
        priority: int = FOLLOW_UP_PRIORITY,
        waits_inside: bool = False,
        rows: bool = False,
    ) -> Any:
        """The parsed answer, or EvolutionError; nothing else escapes but cancellation. `allow_null`
        accepts a literal JSON `null` (find with no row), `allow_empty` also an empty body. With
        `rows`, a successful answer that is a JSON array comes back undecoded, as `_ArrayText`: its
        reader decodes it row by row (`_read_rows`) and counts the call."""
        try:
            slots = self._wait_slots if waits_inside else self._slots
            async with slots.slot(priority):
                answer = await self._exchange(method, path, endpoint, json=json, params=params)
            if rows and 200 <= answer.status < 300:
                text = _body_text(answer.body, answer.content_type)
                if text.startswith("[", _json_whitespace_end(text, 0)):
                    return _ArrayText(text)
            if len(answer.body) > LARGE_ANSWER_BYTES:
                # Decoding a list of thousands of rows holds the loop for tens of milliseconds:
                # the events that came in while it was read go first.
                await asyncio.sleep(0)
            return self._decode(answer, endpoint, instance=instance, allow_empty=allow_empty, allow_null=allow_null)
        except EvolutionError:
            raise
        except Exception as error:  # noqa: BLE001 - last resort: one odd answer must not stop a caller's loop
            raise self._unexpected(endpoint, error) from None

    async def _exchange(
        self, method: str, path: str, endpoint: str, *, json: Any, params: dict[str, str] | None
    ) -> _Answer:
        """Send the request and read the whole answer, its decoded size bounded by max_body_bytes.

        Sent straight to the transport, as the Kubernetes client's are (`RequestMaker`)."""
        if params:
            path += "?" + urlencode(params, quote_via=quote)
        if json is None:
            request = self._requests.build(method, path, None)
        else:
            request = self._requests.build(method, path, json_body(json), ("content-type", "application/json"))
        try:
            # httpx's timeout bounds each read; this bounds the whole call, so a server that
            # drip-feeds its answer cannot hold a slot for longer than one timeout.
            async with asyncio.timeout(self._call_timeout):
                response = await self._transport.handle_async_request(request)
                try:
                    if response.is_stream_consumed:
                        # A transport that hands over a response it has already read and decoded
                        # (httpx.MockTransport with `content=`/`json=`): only the size bound applies.
                        reader = _BodyReader((), self.max_body_bytes)
                        reader.feed(response.content)
                    else:
                        reader = _BodyReader(
                            response.headers.get_list("content-encoding", split_commas=True), self.max_body_bytes
                        )
                        async for chunk in response.aiter_raw():
                            reader.feed(chunk)
                finally:
                    await response.aclose()  # an answer left unread (too large) closes its connection
                return _Answer(
                    response.status_code,
                    response.reason_phrase,
                    response.headers.get("content-type", ""),
                    reader.finish(),
                )
        except (httpx.TimeoutException, TimeoutError):
            self._count(endpoint, "timeout")
            raise EvolutionError(
                Reason.EVOLUTION_UNREACHABLE,
                f"{endpoint}: Evolution API at {self.base_url} did not answer in time",
                endpoint=endpoint,
            ) from None
        except httpx.TransportError as error:
            self._count(endpoint, "unreachable")
            raise EvolutionError(
                Reason.EVOLUTION_UNREACHABLE,
                f"{endpoint}: cannot reach Evolution API at {self.base_url} ({type(error).__name__})",
                endpoint=endpoint,
            ) from None
        except httpx.HTTPError as error:  # DecodingError and whatever else httpx may add
            self._count(endpoint, "bad_response")
            raise EvolutionError(
                Reason.EVOLUTION_BAD_RESPONSE,
                f"{endpoint}: the answer of Evolution API could not be read ({type(error).__name__})",
                endpoint=endpoint,
            ) from None
        except _UnreadableAnswer as error:
            self._count(endpoint, "bad_response")
            raise _bad_answer(endpoint, error.problem) from None

    def _decode(
        self, answer: _Answer, endpoint: str, *, instance: str | None, allow_empty: bool, allow_null: bool = False
    ) -> Any:
        status = answer.status
        try:
            body = _parse_body(answer.body, answer.content_type)
        except _UnreadableAnswer as error:
            self._count(endpoint, "bad_response")
            raise EvolutionError(
                Reason.EVOLUTION_BAD_RESPONSE,
                f"{endpoint}: {error.problem} (HTTP {status})",
                status=status,
                endpoint=endpoint,
            ) from None
        if status < 200 or 300 <= status < 400:
            # Evolution answers 200/201 or an error; anything else came from something in between.
            self._count(endpoint, str(status))
            raise EvolutionError(
                Reason.EVOLUTION_UNEXPECTED_STATUS,
                f"{endpoint}: Evolution API answered HTTP {status}, which it never sends",
                status=status,
                endpoint=endpoint,
            )
        if status >= 400:
            self._count(endpoint, str(status))
            detail = error_message_from_body(body) or answer.reason_phrase
            message = f"{endpoint}: Evolution API answered HTTP {status}: {detail}"
            if status == 404 and instance is not None:
                raise InstanceNotFound(instance, message, endpoint=endpoint)
            raise EvolutionError(reason_for_status(status), message, status=status, endpoint=endpoint)
        if body is None and not allow_empty and not (allow_null and answer.body):
            self._count(endpoint, "bad_response")
            raise EvolutionError(
                Reason.EVOLUTION_BAD_RESPONSE,
                f"{endpoint}: Evolution API sent an empty answer",
                status=status,
                endpoint=endpoint,
            )
        if isinstance(body, str) and not allow_empty:
            self._count(endpoint, "bad_response")
            raise EvolutionError(
                Reason.EVOLUTION_BAD_RESPONSE,
                f"{endpoint}: Evolution API sent a non-JSON answer",
                status=status,
                endpoint=endpoint,
            )
        if isinstance(body, dict) and body.get("error") is True:
            # connect and restart catch their own failures and answer HTTP 200 {"error":true,...};
            # the usual cause is an instance that exists in the database but is not loaded yet.
            self._count(endpoint, "error_body")
            detail = error_message_from_body(body)
            if not detail or detail == "[object Object]":
                detail = "Evolution reported an error without details (the instance may not be loaded yet)"
            raise EvolutionError(Reason.EVOLUTION_NOT_READY, f"{endpoint}: {detail}", status=status, endpoint=endpoint)
        self._count(endpoint, "ok")
        return body

    def _unexpected(self, endpoint: str, error: Exception) -> EvolutionError:
        """A failure no rule above foresaw: counted as a bad answer, its traceback logged once per kind."""
        self._count(endpoint, "bad_response")
        kind = type(error).__name__
        if kind not in self._unexpected_logged:
            self._unexpected_logged.add(kind)
            try:
                details = redact("".join(traceback.format_exception(error)))
            except Exception:  # noqa: BLE001 - the traceback is a courtesy; the error is what matters
                details = kind
            logger.error(
                "%s: unexpected failure while reading the answer of Evolution API "
                "(further ones of this kind are logged without traceback):\n%s",
                endpoint,
                details,
            )
        else:
            logger.warning("%s: unexpected failure while reading the answer of Evolution API (%s)", endpoint, kind)
        return EvolutionError(
            Reason.EVOLUTION_BAD_RESPONSE,
            f"{endpoint}: the answer of Evolution API could not be read ({kind})",
            endpoint=endpoint,
        )

    def _count(self, endpoint: str, outcome: str) -> None:
        key = (endpoint, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1

    def _wrong_shape(self, endpoint: str, problem: str) -> EvolutionError:
        """An answer `_decode` accepted (and counted as ok) that the endpoint's reader cannot use:
        the call is counted again as a bad answer. Every reader checks the shape in the same step
        of the loop as `_decode`, so no metrics scrape sees the ok count go back."""
        ok = (endpoint, "ok")
        if self.calls.get(ok, 0) > 1:
            self.calls[ok] -= 1
        else:
            self.calls.pop(ok, None)
        self._count(endpoint, "bad_response")
        return _bad_answer(endpoint, problem)


def _segment(name: str) -> str:
    return quote(name, safe="")


def _without_secrets(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if not (isinstance(key, str) and key.lower() in SECRET_FIELDS)}


def _register_header_values(webhook: WebhookConfig) -> None:
    """The header values we send are secrets (tokens of the receiving service)."""
    for _, value in webhook.headers:
        register_secret(value)


_MISSING = object()


# -- reading an answer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    status: int
    reason_phrase: str
    content_type: str
    body: bytes  # after content decoding


class _UnreadableAnswer(Exception):
    """The answer cannot be used at all: too large, undecodable, nested too deeply."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


# Content codings a server may use although we did not accept them; httpx ignores other unknown ones.
_UNSUPPORTED_ENCODINGS = frozenset({"br", "zstd", "compress", "x-compress"})
_MAX_ENCODINGS = 4


class _Inflater:
    """One gzip or deflate layer whose total output is bounded (a bomb is stopped, not expanded)."""

    def __init__(self, encoding: str, limit: int):
        self._encoding = encoding
        self._limit = limit
        self._produced = 0
        self._started = False
        wbits = zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS
        self._decompressor = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> bytes:
        if not data or self._decompressor.eof:  # bytes after the end of the stream are ignored, as httpx does
            return b""
        first, self._started = not self._started, True
        try:
            out = self._decompressor.decompress(data, self._limit - self._produced + 1)
        except zlib.error:
            if first and self._encoding == "deflate":  # "deflate" is often sent without its zlib wrapper
                self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(data)
            raise _UnreadableAnswer(f"the answer is not valid {self._encoding} data") from None
        return self._count(out)

    def finish(self) -> bytes:
        try:
            return self._count(self._decompressor.flush())
        except zlib.error:
            raise _UnreadableAnswer(f"the answer is not valid {self._encoding} data") from None

    def _count(self, out: bytes) -> bytes:
        self._produced += len(out)
        if self._produced > self._limit:
            raise _UnreadableAnswer(f"answer larger than {self._limit} bytes")
        return out


class _BodyReader:
    """Decodes the content codings of an answer as it arrives and keeps at most `limit` decoded bytes."""

    def __init__(self, encodings: Iterable[str], limit: int):
        self._limit = limit
        self._size = 0
        self._chunks: list[bytes] = []
        self._layers: list[_Inflater] = []
        for name in reversed([encoding.strip().lower() for encoding in encodings]):
            if name in ("gzip", "x-gzip"):
                self._layers.append(_Inflater("gzip", limit))
            elif name == "deflate":
                self._layers.append(_Inflater("deflate", limit))
            elif name in _UNSUPPORTED_ENCODINGS:
                raise _UnreadableAnswer(f"the answer uses the content coding {name!r}, which was not accepted")
            # identity, empty and unknown names: the bytes are used as they are (as httpx does)
        if len(self._layers) > _MAX_ENCODINGS:
            raise _UnreadableAnswer(f"the answer has {len(self._layers)} content codings")

    def feed(self, data: bytes) -> None:
        self._keep(self._through(data, 0))

    def finish(self) -> bytes:
        for index, layer in enumerate(self._layers):
            self._keep(self._through(layer.finish(), index + 1))
        return b"".join(self._chunks)

    def _through(self, data: bytes, first_layer: int) -> bytes:
        for layer in self._layers[first_layer:]:
            if not data:
                break
            data = layer.feed(data)
        return data

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        if self._size > self._limit:
            raise _UnreadableAnswer(f"answer larger than {self._limit} bytes")
        self._chunks.append(data)


# Charsets a Content-Type may declare that are tried when the body is not UTF-8; others are ignored.
_FALLBACK_CHARSETS = {
    "iso-8859-1": "latin-1",
    "iso8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "windows-1252": "cp1252",
    "cp1252": "cp1252",
    "utf-16": "utf-16",
    "utf-16le": "utf-16-le",
    "utf-16-le": "utf-16-le",
    "utf-16be": "utf-16-be",
    "utf-16-be": "utf-16-be",
    "utf-32": "utf-32",
    "utf-32le": "utf-32-le",
    "utf-32-le": "utf-32-le",
    "utf-32be": "utf-32-be",
    "utf-32-be": "utf-32-be",
}


def _body_text(raw: bytes, content_type: str) -> str:
    """The body as text: UTF-16/32 if its first bytes say so (as json does), else UTF-8, else the
    declared charset when it is a known one, else UTF-8 with replacement characters. Never raises."""
    detected = jsonlib.detect_encoding(raw)
    try:
        if detected != "utf-8":  # a byte order mark or the NUL pattern of UTF-16/32
            return raw.decode(detected, "replace")
        return raw.decode("utf-8")
    except (UnicodeError, LookupError):
        pass
    fallback = _FALLBACK_CHARSETS.get(_declared_charset(content_type), "utf-8")
    try:
        return raw.decode(fallback, "replace")
    except (UnicodeError, LookupError):
        return raw.decode("utf-8", "replace")


def _declared_charset(content_type: str) -> str:
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("\"'").lower()
    return ""


def _bad_answer(endpoint: str, problem: str) -> EvolutionError:
    """An answer that arrived but is not what the endpoint gives."""
    return EvolutionError(Reason.EVOLUTION_BAD_RESPONSE, f"{endpoint}: {problem}", endpoint=endpoint)


def _parse_body(raw: bytes, content_type: str) -> Any:
    """None for an empty body, the JSON value, or the text of a body that is not JSON."""
    if not raw:
        return None
    text = _body_text(raw, content_type)
    try:
        value = jsonlib.loads(text)
    except RecursionError:  # json.loads recurses once per level and gives up near the recursion limit
        raise _UnreadableAnswer(_TOO_DEEP) from None
    except ValueError:  # not JSON (also: an integer beyond Python's digit limit)
        return text
    if _nests_deeper(text, value, MAX_JSON_DEPTH):
        raise _UnreadableAnswer(_TOO_DEEP)
    return value


_TOO_DEEP = f"the answer is nested deeper than {MAX_JSON_DEPTH} levels"


def _nests_deeper(text: str, value: Any, limit: int) -> bool:
    """Whether `value`, decoded from `text`, nests more than `limit` levels. Fewer brackets than the
    limit cannot nest deeper: the common case needs no walk at all."""
    return text.count("[") + text.count("{") > limit and _deeper_than(value, limit)


@dataclass(frozen=True)
class _ArrayText:
    """A successful answer whose text is a JSON array, not decoded yet (see `_read_rows`)."""

    text: str


_JSON_DECODER = jsonlib.JSONDecoder()  # what json.loads uses without arguments
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _json_whitespace_end(text: str, index: int) -> int:
    """The first index at or after `index` that is not JSON whitespace."""
    return _JSON_WHITESPACE.match(text, index).end()  # type: ignore[union-attr]  # `*` always matches


def json_array_rows(text: str) -> Iterator[tuple[Any, int, int]]:
    """The items of the JSON array `text`, each with the span of its text, decoded one at a time.

    For any text, yields exactly what `json.loads(text)` returns as a list, or raises `ValueError`
    where it would (after the items before the fault; RecursionError for items nested past the
    interpreter's limit, as json.loads). Separating the items is the only thing done here:
    `JSONDecoder.raw_decode` decodes each, so values mean what they mean to json.loads.
    """
    index = _json_whitespace_end(text, 0)
    if not text.startswith("[", index):
        raise ValueError("not a JSON array")
    index = _json_whitespace_end(text, index + 1)
    if text.startswith("]", index):
        index += 1
    else:
        while True:
            item, end = _JSON_DECODER.raw_decode(text, index)
            yield item, index, end
            index = _json_whitespace_end(text, end)
            if text.startswith(",", index):
                index = _json_whitespace_end(text, index + 1)
            elif text.startswith("]", index):
                index += 1
                break
            else:
                raise ValueError("expected ',' or ']' after an item")
    if _json_whitespace_end(text, index) != len(text):
        raise ValueError("extra data after the array")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether the arrays and objects of a parsed JSON value nest more than `limit` levels; level by
    level, without recursion (json.loads makes only dicts and lists)."""
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) in _CONTAINERS
        ]
        if not level:
            return False
    return bool(level)


_CONTAINERS = (dict, list)
