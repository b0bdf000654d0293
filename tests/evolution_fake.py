"""A fake Evolution API (v2.2.3 / v2.3.6) for tests: REST + Socket.IO on one port.

It follows docs/evolution-api.md (cited as §N below), including its traps, so that a test
passing against it says something about the real server.  Where the real server is lenient or odd, the fake
is lenient or odd the same way; where the contract leaves something undetermined the fake says so in a
comment (and in error text starting with "(fake)").

Layout of the model
-------------------
* ``FakeEvolution.instances`` is the "DB + memory" view.  A ``FakeInstance`` present in the dict has a DB
  row.  Its *memory* part (``state``, ``qr_count``, ``cached_qr``, ``pairing``, ``wuid``) is ``None`` /
  reset while the instance is not loaded into the process (after a restart, before ``load_instances``).
* Every Socket.IO emit goes through ``_emit`` which applies the two delivery modes of §4.3 and creates a
  per-instance namespace on its first emit (the namespace trap).
* Scenario controls (``issue_qr``, ``scan``, ``phone_logout`` ...) emit exactly the event sequences of
  §4.6/§4.7/§4.7.
* Out-of-band controls model what a person does in the manager UI or to the server itself:
  ``tamper_webhook`` / ``tamper_settings`` (drift), ``rotate_api_key`` (a new AUTHENTICATION_API_KEY).
  Read-back helpers ``webhook_of`` / ``settings_of`` / ``token_of`` show what Evolution stored.

Webhook (§3.11) and settings find (§3.9) follow the source of both tags: ``/webhook/set`` has a schema
that *requires* the ``webhook`` wrapper (400, unlike ``/websocket/set``); 2.2.3 checks ``url`` with
class-validator's ``isURL`` before anything else, also when disabling and also for the nested webhook at
create; ``enabled: true`` without ``events`` is a 500 TypeError; an empty list stores every event name of
the version; the Prisma upsert keeps the stored ``headers`` / ``webhookByEvents`` / ``webhookBase64`` when
a set does not send them.  ``/settings/find`` answers ``null`` for a missing row and for an instance that
is not in memory (SettingsService.find catches every error).

The HTTP side is a single aiohttp catch-all route with our own Express-like dispatcher (so unknown routes
get the Express 404 body) plus a middleware that puts Engine.IO's handshake checks (transport, apikey,
protocol version; §4.1, §4.2, §4.2, §4.2) in front of python-socketio's request handler.

Timing (opt-in; every option below is off by default so that the test suite stays fast):
* ``documented_waits=True`` keeps Evolution's fixed sleeps: ``POST /instance/create`` with ``qrcode: true``
  answers only after 5 s (§3.2), and ``GET /instance/connect`` sleeps 2 s before answering when it starts a
  socket (state ``close``, §3.3).  Off, both answer at once (the suite would otherwise wait seconds per test).
* ``qr_interval=S`` rotates QRs on its own: every instance in a QR cycle (``connecting``, unpaired) gets a new
  QR every S seconds, on a timer of its own whose first tick falls at a random point between 0.5 S and 1.5 S
  after its first QR, so that sessions are not synchronised (the real period is 45 s, §4.7; a benchmark may
  choose another).  The timer ends when the instance leaves its QR cycle; ``issue_qr`` does not move it.
* ``qr_renewal_every=K`` models the socket renewal of §4.7: when a socket's QR refs run out, Baileys closes
  with 408 and Evolution reconnects silently, so every K-th QR (by the instance's ``qr_count``) is preceded
  by a ``connection.update connecting/200`` that changes nothing visible.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as _dt
import ipaddress
import json
import random
import re
import secrets
import string
import struct
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable
from typing import Any, ClassVar

import engineio.packet
import socketio
from aiohttp import web

__all__ = [
    "EVENTS_2_2_3",
    "EVENTS_2_3_6",
    "FakeEvolution",
    "FakeInstance",
    "RecordedRequest",
]

DEFAULT_API_KEY = "evo-global-key-for-tests"

# §3.10: the websocket `events` enum (EventController.events) per version.
EVENTS_2_2_3: tuple[str, ...] = (
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
EVENTS_2_3_6: tuple[str, ...] = (
    EVENTS_2_2_3[:8]
    + ("SEND_MESSAGE_UPDATE",)
    + EVENTS_2_2_3[8:]
    + ("INSTANCE_CREATE", "INSTANCE_DELETE", "STATUS_INSTANCE")
)
assert len(EVENTS_2_2_3) == 27 and len(EVENTS_2_3_6) == 31

INTEGRATIONS = ("WHATSAPP-BAILEYS", "WHATSAPP-BUSINESS", "EVOLUTION")

# §7.8: names that exist on every JS object, so upstream's in-memory map "has" them.
JS_OBJECT_PROPERTIES = frozenset(
    {
        "constructor",
        "__proto__",
        "toString",
        "toLocaleString",
        "valueOf",
        "hasOwnProperty",
        "isPrototypeOf",
        "propertyIsEnumerable",
        "__defineGetter__",
        "__defineSetter__",
        "__lookupGetter__",
        "__lookupSetter__",
    }
)

# §4.7/§4.8: closes that do not reconnect.
NO_RECONNECT_CODES = frozenset({401, 402, 403, 406})

OBJECT_OBJECT_ERROR = {"error": True, "message": "[object Object]"}  # §1 "200 with an error inside"

_PAIRING_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"  # Baileys' pairing-code alphabet
_EMPTY = object()  # marker: answer with an empty body (Express `res.json(undefined)`)
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def _utc_iso() -> str:
    now = _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _local_iso_z() -> str:
    # §4.4: date_time is the *local* wall clock with a trailing Z.
    now = _dt.datetime.now()
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _cuid() -> str:
    return "c" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(24))


def _b64(n: int) -> str:
    return base64.b64encode(secrets.token_bytes(n)).decode()


def _new_qr_code() -> str:
    # §3.3: `ref,noiseKeyB64,identityKeyB64,advSecretB64`
    return f"2@{_b64(60)},{_b64(32)},{_b64(32)},{_b64(32)}"


def _png_data_url(text: str) -> str:
    """A real (1x1, grey) PNG carrying the QR text in a tEXt chunk, as a data URL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"tEXt", b"qr\x00" + text.encode())
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _pairing_code() -> str:
    return "".join(secrets.choice(_PAIRING_ALPHABET) for _ in range(8))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_fqdn_no_tld(host: str) -> bool:
    """validator.js isFQDN with require_tld:false (no underscores, no trailing dot, no numeric TLD)."""
    parts = host.split(".")
    if re.fullmatch(r"\d+", parts[-1]):
        return False
    for part in parts:
        if len(part) > 63 or not re.fullmatch(r"[a-z_\u00a1-\uffff0-9-]+", part, re.IGNORECASE):
            return False
        if re.search(r"[\uff01-\uff5e]", part) or part.startswith("-") or part.endswith("-") or "_" in part:
            return False
    return True


def _is_url(url: Any) -> bool:
    """class-validator ``isURL(url, {require_tld: false})`` = validator.js isURL with its defaults
    (protocol optional but http/https/ftp when given, host required).  2.2.3 checks webhook urls with it."""
    if not isinstance(url, str) or not url or re.search(r"[\s<>]", url) or url.startswith("mailto:"):
        return False
    if len(url) >= 2083:
        return False
    url = url.split("#", 1)[0].split("?", 1)[0]
    split = url.split("://")
    if len(split) > 1:
        if split.pop(0).lower() not in ("http", "https", "ftp"):
            return False
    elif url.startswith("//"):
        return False  # protocol-relative urls are not allowed
    url = "://".join(split)
    if not url:
        return False
    hostname = url.split("/")[0]
    at = hostname.split("@")
    if len(at) > 1:
        auth = at.pop(0)
        if auth == "" or len(auth.split(":")) > 2 or auth == ":":
            return False
    hostname = "@".join(at)
    ipv6: str | None = None
    wrapped = re.fullmatch(r"\[([^\]]+)\](?::([0-9]+))?", hostname)
    if wrapped:
        host, ipv6, port = "", wrapped.group(1), wrapped.group(2)
    else:
        host, _, port = hostname.partition(":")
    if port and (not re.fullmatch(r"[0-9]+", port) or not 0 < int(port) <= 65535):
        return False
    if _is_ip(host) or (host and _is_fqdn_no_tld(host)):
        return True
    return ipv6 is not None and _is_ip(ipv6) and ":" in ipv6


class _HttpError(Exception):
    """Something that Evolution's Express error handler turns into `{status, error, response:{message}}`."""

    def __init__(self, status: int, error: str, message: Any) -> None:
        super().__init__(f"{status} {message!r}")
        self.status = status
        self.body = {"status": status, "error": error, "response": {"message": message}}


# The exception classes of src/exceptions throw `message` as an ARRAY of the constructor args (§1) ...
def _bad_request(*msgs: Any) -> _HttpError:
    return _HttpError(400, "Bad Request", list(msgs))


def _not_found(*msgs: Any) -> _HttpError:
    return _HttpError(404, "Not Found", list(msgs))


def _forbidden(*msgs: Any) -> _HttpError:
    return _HttpError(403, "Forbidden", list(msgs))


def _unauthorized() -> _HttpError:
    # ... except a 401 raised without arguments: the STRING "Unauthorized" (§1).
    return _HttpError(401, "Unauthorized", "Unauthorized")


def _type_error(message: str) -> _HttpError:
    # A plain JS TypeError: no status, no error -> 500 "Internal Server Error" with a string message (§1).
    return _HttpError(500, "Internal Server Error", message)


def _js_json_error(raw: str, exc: json.JSONDecodeError, node24: bool) -> str:
    """Roughly V8's JSON.parse wording (§1: it depends on the Node version; 2.2.3=node 20, 2.3.6=node 24)."""
    pos = exc.pos
    msg = exc.msg
    if msg.startswith("Expecting property name"):
        text = f"Expected property name or '}}' in JSON at position {pos}"
    elif msg.startswith("Expecting ':'"):
        text = f"Expected ':' after property name in JSON at position {pos}"
    elif msg.startswith("Expecting ','"):
        text = f"Expected ',' or '}}' after property value in JSON at position {pos}"
    elif msg.startswith("Unterminated string"):
        text = f"Unterminated string in JSON at position {pos}"
    elif msg.startswith("Extra data"):
        text = f"Unexpected non-whitespace character after JSON at position {pos}"
    elif pos >= len(raw.rstrip()):
        return "Unexpected end of JSON input"
    else:
        return f"Unexpected token '{raw[pos]}', \"{raw[:30]}\" is not valid JSON"
    if node24:
        text += f" (line {exc.lineno} column {exc.colno})"
    return text


# --- a tiny subset of jsonschema 1.5.0 (§3: messages are `stack.replace('instance.', '')`) ------------


def _js_type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    raise ValueError(kind)


def _schema_errors(body: dict, props: list[tuple], required: tuple[str, ...] = (), path: str = "instance") -> list[str]:
    """props: (name, type, extra) with extra keys enum / pattern / items_enum.  Errors in jsonschema's
    order: properties (in schema order; type then enum/pattern), then required."""
    out: list[str] = []
    for name, kind, extra in props:
        if name not in body:
            continue
        value = body[name]
        where = f"{path}.{name}"
        if not _js_type_ok(value, kind):
            out.append(f"{where} is not of a type(s) {kind}")
        if "enum" in extra and value not in extra["enum"]:
            out.append(f"{where} is not one of enum values: {','.join(_js_str(v) for v in extra['enum'])}")
        if "pattern" in extra and isinstance(value, str) and not re.search(extra["pattern"], value, re.ASCII):
            out.append(f"{where} does not match pattern {json.dumps(extra['pattern'])}")
        if "items_enum" in extra and isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    out.append(f"{where}[{i}] is not of a type(s) string")
                if item not in extra["items_enum"]:
                    out.append(f"{where}[{i}] is not one of enum values: {','.join(extra['items_enum'])}")
    for name in required:
        if name not in body:
            out.append(f'{path} requires property "{name}"')
    return [m.replace("instance.", "", 1) for m in out]


def _js_str(v: Any) -> str:
    return {True: "true", False: "false", None: "null"}.get(v, str(v)) if isinstance(v, (bool, type(None))) else str(v)


# --------------------------------------------------------------------------------------------------
# public data classes
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RecordedRequest:
    """One HTTP request the fake answered.  ``headers`` has lower-cased names and keeps secrets."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    status: int | None = None
    raw_body: bytes = b""
    response: Any = None


@dataclasses.dataclass(eq=False)
class FakeInstance:
    """DB row + in-memory part of one instance.  ``state is None`` means "not loaded in memory"."""

    # --- DB ---
    name: str
    id: str
    token: str
    integration: str
    number: str | None = None  # as given at create; never updated on login (§3.2)
    business_id: str | None = None
    client_name: str = "evolution"
    db_connection_status: str = "close"  # lags the live state (§3.5)
    owner_jid: str | None = None
    profile_name: str | None = None
    profile_pic_url: str | None = None
    settings: dict | None = None  # the 8 setting values, or None (no row)
    websocket: dict | None = None  # {"enabled": bool, "events": [...]} or None (no row)
    webhook: dict | None = None  # the stored Webhook row's fields (url, headers, enabled, events, webhookBy...)
    disconnection_reason_code: int | None = None
    disconnection_at: str | None = None
    disconnection_object: str | None = None
    paired: bool = False  # session credentials exist
    created_at: str = dataclasses.field(default_factory=_utc_iso)
    updated_at: str = dataclasses.field(default_factory=_utc_iso)
    # --- memory (lost on restart) ---
    state: str | None = None  # "open" / "connecting" / "close" / None (not in memory)
    qr_count: int = 0
    cached_qr: dict = dataclasses.field(default_factory=lambda: {"count": 0})
    pairing: bool = False
    pairing_number: str | None = None
    wuid: str | None = None  # set on `open` in this process; becomes envelope `sender` (§4.4)
    memory_profile_pic_url: str | None = None
    # --- row metadata ---
    setting_meta: dict = dataclasses.field(default_factory=dict)
    websocket_meta: dict = dataclasses.field(default_factory=dict)
    webhook_meta: dict = dataclasses.field(default_factory=dict)

    @property
    def in_memory(self) -> bool:
        return self.state is not None

    def forget_memory(self) -> None:
        self.state = None
        self.qr_count = 0
        self.cached_qr = {"count": 0}
        self.pairing = False
        self.pairing_number = None
        self.wuid = None
        self.memory_profile_pic_url = None

    def qr_object(self) -> dict:
        """The `wa.QrCode` getter (§3.3): fields never set are left out, hence `{"count":0}`."""
        return {k: self.cached_qr[k] for k in ("pairingCode", "code", "base64", "count") if k in self.cached_qr}

    def touch(self) -> None:
        self.updated_at = _utc_iso()


@dataclasses.dataclass
class _Failure:
    method: str
    path_prefix: str
    status: int
    body: Any
    times: int
    headers: dict[str, str] | None = None


# --------------------------------------------------------------------------------------------------
# python-socketio server with Engine.IO connect/disconnect notifications
# --------------------------------------------------------------------------------------------------


class _SioServer(socketio.AsyncServer):
    def __init__(self, fake: FakeEvolution, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fake = fake

    async def _handle_eio_connect(self, eio_sid, environ):  # type: ignore[override]
        # python-engineio announces pingInterval truncated to whole seconds; the OPEN packet is still in
        # the socket's queue here, so announce the real value (Node sends milliseconds).
        sock = self.eio.sockets.get(eio_sid)
        for pkt in list(getattr(getattr(sock, "queue", None), "_queue", ())):
            if pkt.packet_type == engineio.packet.OPEN and isinstance(pkt.data, dict):
                pkt.data["pingInterval"] = round(self._fake.ping_interval * 1000)
        result = await super()._handle_eio_connect(eio_sid, environ)
        await self._fake._notify()
        return result

    async def _handle_eio_disconnect(self, eio_sid, reason):  # type: ignore[override]
        result = await super()._handle_eio_disconnect(eio_sid, reason)
        await self._fake._notify()
        return result


# --------------------------------------------------------------------------------------------------
# the fake
# --------------------------------------------------------------------------------------------------


class FakeEvolution:
    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        version: str = "2.3.6",
        global_events: bool = True,
        websocket_enabled: bool = True,
        qrcode_limit: int = 30,
        auto_qr: bool = True,
        create_qr_ready: bool = True,
        allowed_hosts_bypass: bool = False,
        allowed_hosts: str = "127.0.0.1,::1,::ffff:127.0.0.1",
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        server_url: str | None = None,
        expose_in_fetch_instances: bool = False,
        client_name: str = "evolution",
        wa_web_delay: float = 0.0,
        wa_web_version: str = "2.3000.1028459513",
        documented_waits: bool = False,
        qr_interval: float | None = None,
        qr_renewal_every: int | None = None,
        seed: int | None = None,
    ) -> None:
        if version not in ("2.2.3", "2.3.6"):
            raise ValueError("version must be '2.2.3' or '2.3.6'")
        self.api_key = api_key
        self.version = version
        self.global_events = global_events
        self.websocket_enabled = websocket_enabled
        self.qrcode_limit = qrcode_limit or 30  # §5: 0/invalid -> 30
        self.auto_qr = auto_qr
        self.create_qr_ready = create_qr_ready  # create waits 5 s: normally the first QR is there
        self.allowed_hosts_bypass = allowed_hosts_bypass
        self.allowed_hosts = allowed_hosts
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.server_url = server_url
        self.expose_in_fetch_instances = expose_in_fetch_instances
        self.client_name = client_name
        # §3.1 [2.3.6]: every GET / fetches web.whatsapp.com/sw.js with no timeout of its own; this is how
        # long that takes here (an egress-restricted cluster: as long as the TCP connect hangs).
        self.wa_web_delay = wa_web_delay
        self.wa_web_version = wa_web_version
        # Opt-in timing (see the module docstring): Evolution's fixed sleeps, QR rotation, socket renewal.
        self.documented_waits = documented_waits
        self.create_qr_wait = 5.0  # §3.2: create with qrcode:true waits a fixed 5 s
        self.connect_wait = 2.0  # §3.3: connect sleeps 2 s when it starts a socket
        if qr_interval is not None and qr_interval <= 0:
            raise ValueError("qr_interval must be positive")
        if qr_renewal_every is not None and qr_renewal_every < 1:
            raise ValueError("qr_renewal_every must be at least 1")
        self.qr_interval = qr_interval
        self.qr_renewal_every = qr_renewal_every
        self._rng = random.Random(seed)
        self._qr_timers: dict[str, asyncio.TimerHandle] = {}

        self.url: str = ""
        self.instances: dict[str, FakeInstance] = {}
        self.requests: list[RecordedRequest] = []
        self.emitted: list[tuple[tuple[str, ...], dict]] = []  # (namespaces it went to, envelope)
        self.namespace_attempts: list[tuple[str, bool]] = []  # (namespace, accepted)

        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._sio: _SioServer | None = None
        self._namespaces: set[str] = set()
        self._ns_clients: dict[str, set[str]] = {}
        self._failures: list[_Failure] = []
        self._tasks: set[asyncio.Task] = set()
        self._sio_transports: set[asyncio.BaseTransport] = set()
        self._changed: asyncio.Condition | None = None
        self._cleanup_gate: asyncio.Event | None = None
        self._load_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def events(self) -> tuple[str, ...]:
        return EVENTS_2_3_6 if self.version == "2.3.6" else EVENTS_2_2_3

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def port(self) -> int | None:
        return self._port

    async def start(self, port: int = 0, *, load: bool = True) -> str:
        """Start listening on 127.0.0.1 (ephemeral port the first time, the same port afterwards).

        A start after stop() is a process start: DB instances are reloaded and connected (§4.7) in the
        background unless ``load=False`` (then call ``load_instances()`` yourself)."""
        if self._runner is not None:
            raise RuntimeError("already running")
        self._ensure_sync_primitives()
        if not port and self._port:
            port = self._port
        self._sio = self._make_sio()
        app = web.Application(middlewares=[self._middleware], client_max_size=136 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._rest_entry)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._sio = None
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self._port}"
        if load and any(not i.in_memory for i in self.instances.values()):
            self._spawn(self.load_instances())
        return self.url

    async def stop(self) -> None:
        """Evolution down: pending work dies, TCP connections are dropped (no Socket.IO DISCONNECT), the
        port is closed, and memory-only state is lost (§4.1: no connection-state recovery)."""
        if self._runner is None:
            return
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for handle in self._qr_timers.values():
            handle.cancel()
        self._qr_timers.clear()
        sio = self._sio
        self._abort_socket_transports()
        if sio is not None:
            await self._close_eio_sockets(sio)
            await sio.shutdown()
        runner, self._runner, self._sio = self._runner, None, None
        await runner.cleanup()
        for inst in self.instances.values():
            inst.forget_memory()
        self._namespaces.clear()  # §4.3: namespaces exist only in the process that emitted on them
        self._ns_clients.clear()
        await self._notify()

    async def restart(self, *, load: bool = True) -> None:
        """Process restart on the same port (stop + start).  DB state is kept, memory is lost, then every
        DB instance is reloaded and connected (§4.7, §4.7) unless ``load=False``."""
        await self.stop()
        await self.start(self._port or 0, load=load)

    async def load_instances(self) -> None:
        """The startup load (`monitor.service.ts#setInstance`, §4.7): each DB instance is connected, and
        only put into memory once its socket exists.  The first `connecting` therefore goes to the global
        channel only (the instance is not yet in memory for the per-instance path).  Paired instances then
        go `open`; unpaired ones start issuing QRs (when auto_qr)."""
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        async with self._load_lock:
            for inst in list(self.instances.values()):
                if inst.in_memory or self.instances.get(inst.name) is not inst:
                    continue
                await self._emit(inst, "connection.update", self._conn_data(inst, "connecting", 200))
                inst.state = "connecting"
                if inst.integration != "WHATSAPP-BAILEYS":
                    inst.state = "open" if inst.integration == "WHATSAPP-BUSINESS" else "close"
                    continue
                if inst.paired:
                    await self._go_open(inst, inst.owner_jid or "", inst.profile_name, inst.profile_pic_url)
                elif self.auto_qr:
                    await self._issue_qr(inst)
        await self._notify()

    # ------------------------------------------------------------------ scenario controls

    async def issue_qr(self, name: str) -> str | None:
        """A new QR for a `connecting`, unpaired instance (rotation, §4.7).  Returns its `code`, or None when
        this QR hit QRCODE_LIMIT (strict equality, §4.7) and the limit sequence was emitted instead."""
        inst = self._live(name)
        if inst.state != "connecting" or inst.paired:
            raise RuntimeError(
                f"issue_qr: {name!r} is {inst.state!r} (paired={inst.paired}); QRs only come "
                "while an unpaired instance is connecting"
            )
        return await self._issue_qr(inst)

    async def scan(
        self,
        name: str,
        *,
        number: str = "5511987654321",
        profile_name: str | None = "ACME Support",
        picture: str | None = "https://pps.whatsapp.net/x.jpg",
    ) -> None:
        """The phone scans the QR: 515 restart-required -> silent reconnect -> `connecting`/200 ->
        `open`/200 with wuid, profileName, profilePictureUrl (§4.7).  ``profile_name=None`` models §4.6
        (push name not known yet: key absent in the event)."""
        inst = self._live(name)
        if inst.state != "connecting" or inst.paired:
            raise RuntimeError(f"scan: {name!r} is not showing a QR (state={inst.state!r})")
        inst.paired = True
        await self._emit(inst, "connection.update", self._conn_data(inst, "connecting", 200))
        await self._go_open(inst, f"{number}@s.whatsapp.net", profile_name, picture)

    async def phone_logout(self, name: str, code: int = 401) -> None:
        """Unlinked / banned from the phone: STATUS_INSTANCE closed, LOGOUT_INSTANCE (null),
        CONNECTION_UPDATE close/<code> (§4.7 "No reconnect", §7.5)."""
        if code not in NO_RECONNECT_CODES:
            raise ValueError(
                f"{code} is not a no-reconnect code {sorted(NO_RECONNECT_CODES)}; use transient_drop for the others"
            )
        inst = self._live(name)
        if inst.state not in ("open", "connecting"):
            raise RuntimeError(f"phone_logout: {name!r} has no socket (state={inst.state!r})")
        await self._close_sequence(inst, code, "Connection Failure")

    async def hit_qr_limit(self, name: str) -> None:
        """QR error event + CONNECTION_UPDATE refused/428, then memory state close, counter and cached QR
        reset, DB left at `connecting` (§4.7, §4.7).  No close event, no LOGOUT_INSTANCE."""
        inst = self._live(name)
        if inst.state != "connecting" or inst.paired:
            raise RuntimeError(f"hit_qr_limit: {name!r} is not in a QR cycle (state={inst.state!r})")
        await self._qr_limit(inst)

    async def remove_out_of_band(self, name: str) -> None:
        """DEL_INSTANCE expiry: REMOVE_INSTANCE only (no INSTANCE_DELETE), then the instance is gone (§7.6)."""
        inst = self.instances.get(name)
        if inst is None:
            raise KeyError(name)
        if inst.in_memory:
            await self._emit(inst, "remove.instance", None)
        if self.instances.get(name) is inst:
            del self.instances[name]
        await self._notify()

    async def transient_drop(self, name: str) -> None:
        """A silent reconnect (428/408/440/515...; §4.7): only `connecting`, then `open` for a paired instance
        (or more QRs for an unpaired one, when auto_qr)."""
        inst = self._live(name)
        if inst.state not in ("open", "connecting"):
            raise RuntimeError(f"transient_drop: {name!r} has no socket (state={inst.state!r})")
        await self._silent_reconnect(inst)

    async def emit_message_traffic(self, name: str, count: int) -> None:
        """`messages.upsert` noise (reaches the global channel unfiltered, §4.3)."""
        inst = self._live(name)
        remote = "5511900000000@s.whatsapp.net"
        for i in range(count):
            await self._emit(
                inst,
                "messages.upsert",
                {
                    "key": {"remoteJid": remote, "fromMe": False, "id": "3EB0" + secrets.token_hex(8).upper()},
                    "pushName": "Customer",
                    "status": "DELIVERY_ACK",
                    "message": {"conversation": f"message {i}"},
                    "messageType": "conversation",
                    "messageTimestamp": int(time.time()),
                    "instanceId": inst.id,
                    "source": "android",
                },
            )

    async def emit_event(self, name: str, wire_event: str, data: Any) -> None:
        """Emit any event for an existing instance through the normal delivery rules."""
        inst = self.instances.get(name)
        if inst is None:
            raise KeyError(name)
        await self._emit(inst, wire_event, data)

    async def drop_socket_clients(self, *, graceful: bool = False) -> None:
        """Disconnect every Socket.IO client from the server side.

        Default: a network-level drop (TCP closed, no Socket.IO DISCONNECT packet), after which clients
        normally auto-reconnect.  ``graceful=True``: first a Socket.IO DISCONNECT on every namespace
        (like Node's `io.disconnectSockets(true)`), which python-socketio/JS clients do NOT auto-recover."""
        sio = self._sio
        if sio is None:
            return
        if graceful:
            for ns, sids in list(self._ns_clients.items()):
                for sid in list(sids):
                    with contextlib.suppress(KeyError, ValueError, OSError):  # already gone
                        await sio.disconnect(sid, namespace=ns)
            for sock in list(sio.eio.sockets.values()):
                with contextlib.suppress(TimeoutError):  # let the DISCONNECT packets reach the wire
                    await asyncio.wait_for(sock.queue.join(), 1)
        self._abort_socket_transports(flush=graceful)
        await self._close_eio_sockets(sio)
        await self._notify()

    async def send_raw(self, text: str) -> None:
        """Send ``text`` as the payload of an Engine.IO MESSAGE packet (wire: "4" + text) to every client."""
        sio = self._sio
        if sio is None:
            return
        for eio_sid, sock in list(sio.eio.sockets.items()):
            if not sock.closed and not sock.closing:
                await sio.eio.send(eio_sid, text)

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int,
        body: object | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``times`` requests whose method matches and whose path starts with ``path_prefix`` are
        answered with ``status`` and ``body`` (dict/list -> JSON; str -> raw text/html, bytes -> raw;
        None -> Evolution's envelope for that status) without any side effect. ``headers`` are added
        to the answer (a proxy in front of Evolution may add odd ones: a wrong Content-Encoding...)."""
        self._failures.append(_Failure(method.upper(), path_prefix, status, body, times, headers))

    def hold_cleanups(self) -> None:
        """Keep the asynchronous delete / failed-create cleanup (§3.8) pending, so the window in which the
        name still exists (re-create -> 403) can be observed deterministically."""
        self._ensure_sync_primitives()
        assert self._cleanup_gate is not None
        self._cleanup_gate.clear()

    def release_cleanups(self) -> None:
        self._ensure_sync_primitives()
        assert self._cleanup_gate is not None
        self._cleanup_gate.set()

    # ------------------------------------------------------------------ out-of-band changes and read-back

    def webhook_of(self, name: str) -> dict | None:
        """The stored Webhook row (what /webhook/find answers once the instance is loaded), or None."""
        return self._webhook_row(self._stored(name))

    def settings_of(self, name: str) -> dict:
        """The stored settings (all eight values, wavoipToken included); {} without a row."""
        settings = self._stored(name).settings
        return dict(settings) if settings is not None else {}

    def token_of(self, name: str) -> str:
        """The instance's token (its own apikey; `hash` at create, `token` in fetchInstances)."""
        return self._stored(name).token

    async def tamper_webhook(self, name: str, **fields: Any) -> None:
        """Change the stored webhook out of band, as a person in the manager UI would (it calls
        /webhook/set with the global key, so the stored result follows the same rules: disabling
        clears `events`, an empty list with enabled means every event).  ``fields`` use the row's names
        (``url``, ``headers``, ``enabled``, ``events``, ``webhookByEvents``, ``webhookBase64``; also
        ``byEvents`` / ``base64``).  Without a stored row one is created (enabled, all events)."""
        inst = self._stored(name)
        aliases = {"byEvents": "webhookByEvents", "base64": "webhookBase64"}
        allowed = {"url", "headers", "enabled", "events", "webhookByEvents", "webhookBase64"}
        changes = {aliases.get(key, key): value for key, value in fields.items()}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"tamper_webhook: unknown fields {sorted(unknown)}")
        now = _utc_iso()
        if inst.webhook is None:
            inst.webhook = {
                "url": "https://manager.example/hook",
                "headers": None,
                "enabled": True,
                "events": [],
                "webhookByEvents": False,
                "webhookBase64": False,
            }
            inst.webhook_meta = {"id": _cuid(), "createdAt": now, "updatedAt": now}
        inst.webhook.update(changes)
        if not inst.webhook["enabled"]:
            inst.webhook["events"] = []
        elif not inst.webhook["events"]:
            inst.webhook["events"] = list(self.events)
        inst.webhook_meta["updatedAt"] = now
        await self._notify()

    async def tamper_settings(self, name: str, **fields: Any) -> None:
        """Change stored settings out of band (the manager UI's settings form; /settings/set)."""
        inst = self._stored(name)
        unknown = set(fields) - set(self._SETTINGS_KEYS)
        if unknown:
            raise TypeError(f"tamper_settings: unknown fields {sorted(unknown)}")
        defaults = {key: False for key in self._SETTINGS_KEYS} | {"msgCall": "", "wavoipToken": ""}
        inst.settings = {**defaults, **(inst.settings or {}), **fields}
        now = _utc_iso()
        inst.setting_meta = {
            "id": inst.setting_meta.get("id") or _cuid(),
            "createdAt": inst.setting_meta.get("createdAt") or now,
            "updatedAt": now,
        }
        await self._notify()

    def rotate_api_key(self, new: str) -> None:
        """Evolution now runs with AUTHENTICATION_API_KEY=``new``: the old key gets 401 on REST and is
        refused at the [2.3.6] Socket.IO handshake from now on.  Connections already open stay open; a
        real change needs a restart, so call ``restart()`` as well to model that part."""
        if not new:
            raise ValueError("an empty AUTHENTICATION_API_KEY means the public default; pass a key")
        self.api_key = new

    def _stored(self, name: str) -> FakeInstance:
        inst = self.instances.get(name)
        if inst is None:
            raise KeyError(f"no instance {name!r}")
        return inst

    # ------------------------------------------------------------------ waiting helpers

    @property
    def socket_clients(self) -> int:
        """Currently connected Engine.IO clients."""
        sio = self._sio
        if sio is None:
            return 0
        return sum(1 for s in sio.eio.sockets.values() if not s.closed and not s.closing)

    def namespace_clients(self, namespace: str) -> int:
        return len(self._ns_clients.get(namespace, ()))

    @property
    def namespaces(self) -> frozenset[str]:
        """Per-instance namespaces that exist in this process (created by their first emit)."""
        return frozenset(self._namespaces)

    async def wait_for_request(
        self, method: str, path_prefix: str, *, count: int = 1, timeout: float = 5
    ) -> RecordedRequest:
        """Wait until ``count`` requests matching method + path prefix have been answered; returns the
        count-th one (counted over the whole recording)."""
        method = method.upper()

        def found() -> RecordedRequest | None:
            hits = [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]
            return hits[count - 1] if len(hits) >= count else None

        await self._wait(lambda: found() is not None, timeout)
        result = found()
        assert result is not None
        return result

    async def wait_for_socket_client(self, count: int = 1, timeout: float = 5) -> None:
        """Wait until at least ``count`` Engine.IO clients are connected."""
        await self._wait(lambda: self.socket_clients >= count, timeout)

    async def wait_for_no_socket_clients(self, timeout: float = 5) -> None:
        await self._wait(lambda: self.socket_clients == 0, timeout)

    async def wait_for_namespace_client(self, namespace: str, count: int = 1, timeout: float = 5) -> None:
        """Wait until ``count`` Socket.IO clients are connected to ``namespace`` ("/" or "/<name>")."""
        await self._wait(lambda: self.namespace_clients(namespace) >= count, timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5) -> None:
        """Wait until ``predicate()`` is true; re-checked after every request, emit and (dis)connect."""
        await self._wait(predicate, timeout)

    async def wait_until_loaded(self, timeout: float = 5) -> None:
        """Wait until the startup load has finished: every DB instance in memory again and its first
        events (open, or the first QR) emitted (after start()/restart())."""
        await self._wait(
            lambda: (
                all(i.in_memory for i in self.instances.values())
                and not (self._load_lock is not None and self._load_lock.locked())
            ),
            timeout,
        )

    async def wait_until_gone(self, name: str, timeout: float = 5) -> None:
        """Wait until the instance has no DB row any more (delete cleanup finished)."""
        await self._wait(lambda: name not in self.instances, timeout)

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        self._ensure_sync_primitives()
        assert self._changed is not None
        cond = self._changed

        async def waiter() -> None:
            async with cond:
                await cond.wait_for(predicate)

        await asyncio.wait_for(waiter(), timeout)

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    def _ensure_sync_primitives(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        if self._cleanup_gate is None:
            self._cleanup_gate = asyncio.Event()
            self._cleanup_gate.set()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ Socket.IO side

    def _make_sio(self) -> _SioServer:
        sio = _SioServer(
            self,
            async_mode="aiohttp",
            namespaces="*",
            cors_allowed_origins="*",
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            logger=False,
            engineio_logger=False,
            max_http_buffer_size=1_000_000,
        )
        sio.on("connect", self._on_ns_connect, namespace="*")
        sio.on("disconnect", self._on_ns_disconnect, namespace="*")
        return sio

    async def _on_ns_connect(self, namespace: str, sid: str, environ: dict, auth: Any = None) -> bool:
        # §4.2: the Socket.IO `auth` payload is ignored; the handshake already checked the key.
        # §4.3 namespace trap: instance namespaces do not exist until something was emitted on them.
        if namespace != "/" and namespace not in self._namespaces:
            self.namespace_attempts.append((namespace, False))
            raise socketio.exceptions.ConnectionRefusedError("Invalid namespace")
        self.namespace_attempts.append((namespace, True))
        self._ns_clients.setdefault(namespace, set()).add(sid)
        await self._notify()
        return True

    async def _on_ns_disconnect(self, namespace: str, sid: str, reason: Any = None) -> None:
        self._ns_clients.get(namespace, set()).discard(sid)
        await self._notify()

    def _abort_socket_transports(self, *, flush: bool = False) -> None:
        for transport in list(self._sio_transports):
            with contextlib.suppress(OSError, RuntimeError):
                if flush:
                    transport.close()  # FIN after the buffered bytes
                else:
                    transport.abort()
        self._sio_transports.clear()

    async def _close_eio_sockets(self, sio: _SioServer) -> None:
        for eio_sid, sock in list(sio.eio.sockets.items()):
            with contextlib.suppress(OSError, RuntimeError, KeyError, asyncio.QueueFull):
                await sock.close(wait=False, abort=True)
                sock.queue.put_nowait(None)  # wake a pending long-poll / websocket writer
            sio.eio.sockets.pop(eio_sid, None)

    def _handshake_rejection(self, request: web.Request) -> str | None:
        """Evolution's `allowRequest` (§4.2, §4.2).  None = allowed."""
        if self.version == "2.2.3":
            return None  # 2.2.3: nothing checked
        query = request.query
        if self.allowed_hosts_bypass and "EIO" in query:
            peer = request.remote or ""
            if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", peer):
                peer = "::ffff:" + peer  # Node listens on "::" (§4.2)
            hosts = [h.strip() for h in (self.allowed_hosts or "127.0.0.1,::1,::ffff:127.0.0.1").split(",")]
            if peer in hosts:  # exact string match
                return None
        key = query.get("apikey") or request.headers.get("apikey")
        if not key:
            return "apiKey is required"
        if key == self.api_key or any(i.token == key for i in self.instances.values()):
            return None
        return "Invalid global token"

    @staticmethod
    def _eio_error(code: int, message: str, *, upgrade: bool) -> web.Response:
        if upgrade:
            # engine.io abortUpgrade(): always 400, plain text body (§4.2)
            return web.Response(status=400, text=message, content_type="text/html", headers={"Connection": "close"})
        # engine.io sendErrorMessage(): 403 for FORBIDDEN, else 400, JSON body (§4.2)
        return web.Response(
            status=403 if code == 4 else 400,
            content_type="application/json",
            text=json.dumps({"code": code, "message": message}, separators=(",", ":")),
        )

    async def _socketio_entry(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        transport = query.get("transport")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        sid = query.get("sid")
        record = None
        failure = None
        if sid is None:
            record = self._record(request, None, b"")
            failure = self._take_failure(record.method, record.path)
        if failure is not None:
            # fail_next() on "/socket.io/": e.g. an ingress answering 502 to the handshake
            body = failure.body if failure.body is not None else _REASONS.get(failure.status, "Error")
            if isinstance(body, (dict, list)):
                response = self._json_response(failure.status, body)
            else:
                response = web.Response(
                    status=failure.status,
                    body=body if isinstance(body, bytes) else str(body).encode(),
                    content_type="text/html",
                )
        elif transport not in ("polling", "websocket"):
            response = self._eio_error(0, "Transport unknown", upgrade=upgrade)
        elif sid is None and request.method != "GET":
            response = self._eio_error(2, "Bad handshake method", upgrade=upgrade)
        elif sid is None and transport == "websocket" and not upgrade:
            response = self._eio_error(3, "Bad request", upgrade=upgrade)
        elif sid is None and (reason := self._handshake_rejection(request)) is not None:
            response = self._eio_error(4, reason, upgrade=upgrade)
        elif sid is None and query.get("EIO") != "4":
            # §4.1: Engine.IO v3 clients; after the auth check (§4.2)
            response = self._eio_error(5, "Unsupported protocol version", upgrade=upgrade)
        else:
            assert self._sio is not None
            tr = request.transport
            if tr is not None:
                self._sio_transports.add(tr)
            if record is not None:
                record.status = 101 if upgrade else 200
                await self._notify()
            try:
                return await self._sio.handle_request(request)
            finally:
                if tr is not None:
                    self._sio_transports.discard(tr)
        if record is not None:
            record.status = response.status
            record.response = response.text if response.body is not None else None
            await self._notify()
        return response

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if self.websocket_enabled and request.path.startswith("/socket.io/"):
            return await self._socketio_entry(request)
        # WEBSOCKET_ENABLED=false: /socket.io/ is just an unknown Express route (§4.1)
        return await handler(request)

    async def _emit(self, inst: FakeInstance, wire_event: str, data: Any) -> None:
        """`WebsocketController.emit` (§4.3, §4.4)."""
        sio = self._sio
        if sio is None or not self.websocket_enabled:
            return
        envelope: dict[str, Any] = {"event": wire_event, "instance": inst.name, "data": data}
        if self.server_url is not None:
            envelope["server_url"] = self.server_url
        envelope["date_time"] = _local_iso_z()
        if inst.wuid:
            envelope["sender"] = inst.wuid
        envelope["apikey"] = inst.token if self.expose_in_fetch_instances else None
        sent_to: list[str] = []
        if self.global_events:
            # 1. global: every envelope on "/", unfiltered
            await sio.emit(wire_event, envelope, namespace="/")
            sent_to.append("/")
        # 2. per instance: in memory + websocket row enabled + UPPER_SNAKE name subscribed
        config_name = re.sub(r"[.-]", "_", wire_event).upper()
        ws = inst.websocket
        if (
            self.instances.get(inst.name) is inst
            and inst.in_memory
            and ws
            and ws.get("enabled")
            and config_name in (ws.get("events") or [])
        ):
            namespace = "/" + inst.name
            self._namespaces.add(namespace)  # io.of('/name') creates it on first use (§4.3)
            await sio.emit(wire_event, envelope, namespace=namespace)
            sent_to.append(namespace)
        self.emitted.append((tuple(sent_to), envelope))
        await self._notify()

    # ------------------------------------------------------------------ instance behaviour

    def _live(self, name: str) -> FakeInstance:
        inst = self.instances.get(name)
        if inst is None:
            raise KeyError(f"no instance {name!r}")
        if not inst.in_memory:
            raise RuntimeError(f"{name!r} is not loaded in memory (restart window)")
        return inst

    @staticmethod
    def _conn_data(inst: FakeInstance, state: str, reason: int) -> dict:
        """CONNECTION_UPDATE data (§4.6): wuid / profileName / profilePictureUrl are set by the code but
        vanish from the JSON while undefined (never-paired instance)."""
        data: dict[str, Any] = {"instance": inst.name}
        if inst.wuid:
            data["wuid"] = inst.wuid
        if (inst.wuid or inst.paired) and inst.profile_name is not None:
            data["profileName"] = inst.profile_name  # getProfileName(): client user or stored creds
        if inst.wuid:
            data["profilePictureUrl"] = inst.memory_profile_pic_url
        data["state"] = state
        data["statusReason"] = reason
        return data

    async def _begin_connect(self, inst: FakeInstance, number: str | None = None) -> None:
        """A new Baileys socket: pairing mode if a number is given (§3.3), CONNECTION_UPDATE connecting."""
        inst.pairing = bool(number)
        inst.pairing_number = number or None
        inst.state = "connecting"
        await self._emit(inst, "connection.update", self._conn_data(inst, "connecting", 200))

    async def _issue_qr(self, inst: FakeInstance) -> str | None:
        if inst.qr_count == self.qrcode_limit:  # strict equality (§4.7)
            await self._qr_limit(inst)
            return None
        if self.qr_renewal_every and inst.qr_count and inst.qr_count % self.qr_renewal_every == 0:
            # §4.7: the socket's QR refs ran out (408): a silent reconnect, only `connecting` shows
            await self._emit(inst, "connection.update", self._conn_data(inst, "connecting", 200))
        inst.qr_count += 1
        code = _new_qr_code()
        b64 = _png_data_url(code)
        pairing_code = _pairing_code() if inst.pairing else None  # a NEW code on every refresh (§3.3)
        inst.cached_qr = {"pairingCode": pairing_code, "code": code, "base64": b64, "count": inst.qr_count}
        inst.db_connection_status = "connecting"  # DB: `connecting` when a QR is generated (§3.5)
        inst.touch()
        # No `count` in the event (§4.6)
        await self._emit(
            inst,
            "qrcode.updated",
            {"qrcode": {"instance": inst.name, "pairingCode": pairing_code, "code": code, "base64": b64}},
        )
        if self.qr_interval is not None and inst.name not in self._qr_timers:
            # The instance's own rotation timer, first tick at a random phase (sessions are not in step).
            self._schedule_rotation(inst, self.qr_interval * (0.5 + self._rng.random()))
        return code

    def _schedule_rotation(self, inst: FakeInstance, delay: float) -> None:
        def fire() -> None:
            self._qr_timers.pop(inst.name, None)
            if self._in_qr_cycle(inst):
                assert self.qr_interval is not None
                self._schedule_rotation(inst, self.qr_interval)
                self._spawn(self._rotate(inst))

        self._qr_timers[inst.name] = asyncio.get_running_loop().call_later(delay, fire)

    def _in_qr_cycle(self, inst: FakeInstance) -> bool:
        return (
            self._runner is not None
            and self.instances.get(inst.name) is inst
            and inst.state == "connecting"
            and not inst.paired
        )

    async def _rotate(self, inst: FakeInstance) -> None:
        if self._in_qr_cycle(inst):
            await self._issue_qr(inst)

    async def _qr_limit(self, inst: FakeInstance) -> None:
        # §4.7 / §4.7: a *different* QRCODE_UPDATED shape, then refused/428 (hard-coded), then silence.
        await self._emit(
            inst, "qrcode.updated", {"message": "QR code limit reached, please login again", "statusCode": 500}
        )
        await self._emit(inst, "connection.update", self._conn_data(inst, "refused", 428))
        # monitor.service.ts#noConnection: qrcode = {count: 0}, state close; DB keeps `connecting`.
        inst.qr_count = 0
        inst.cached_qr = {"count": 0}
        inst.state = "close"

    async def _go_open(self, inst: FakeInstance, wuid: str, profile_name: str | None, picture: str | None) -> None:
        inst.wuid = wuid or None
        inst.memory_profile_pic_url = picture
        inst.owner_jid = wuid or inst.owner_jid
        if profile_name is not None:
            inst.profile_name = profile_name
        inst.profile_pic_url = picture
        inst.db_connection_status = "open"
        inst.touch()
        inst.state = "open"
        data: dict[str, Any] = {"instance": inst.name, "wuid": inst.wuid}
        if profile_name is not None:
            data["profileName"] = profile_name
        data["profilePictureUrl"] = picture
        data["state"] = "open"
        data["statusReason"] = 200
        await self._emit(inst, "connection.update", data)

    async def _silent_reconnect(self, inst: FakeInstance) -> None:
        inst.state = "connecting"
        await self._emit(inst, "connection.update", self._conn_data(inst, "connecting", 200))
        if inst.paired:
            await self._go_open(inst, inst.owner_jid or inst.wuid or "", inst.profile_name, inst.profile_pic_url)
        elif self.auto_qr:
            await self._issue_qr(inst)

    async def _close_sequence(self, inst: FakeInstance, code: int, message: str, *, in_memory: bool = True) -> None:
        """Non-reconnecting close (§4.7): STATUS_INSTANCE closed, DB close + disconnection*, LOGOUT_INSTANCE
        (only while in memory, §4.7), credentials deleted, CONNECTION_UPDATE close/<code>."""
        now = _utc_iso()
        boom = json.dumps(
            {
                "error": {
                    "data": None,
                    "isBoom": True,
                    "isServer": code >= 500,
                    "output": {
                        "statusCode": code,
                        "payload": {"statusCode": code, "error": _REASONS.get(code, "Error"), "message": message},
                        "headers": {},
                    },
                },
                "date": now,
            },
            separators=(",", ":"),
        )
        await self._emit(
            inst,
            "status.instance",
            {
                "instance": inst.name,
                "status": "closed",
                "disconnectionAt": now,
                "disconnectionReasonCode": code,
                "disconnectionObject": boom,
            },
        )
        inst.db_connection_status = "close"
        inst.disconnection_reason_code = code
        inst.disconnection_at = now
        inst.disconnection_object = boom
        inst.touch()
        if in_memory and self.instances.get(inst.name) is inst:
            await self._emit(inst, "logout.instance", None)
        inst.paired = False  # session wiped
        if inst.state is not None:
            inst.state = "close"  # stays in memory as `close`
        await self._emit(inst, "connection.update", self._conn_data(inst, "close", code))

    def _schedule_cleanup(self, inst: FakeInstance, *, logout_code: int | None = None) -> None:
        """`remove.instance` cleanup (§3.8): runs after the reply; until it has run the name still exists."""

        async def cleanup() -> None:
            assert self._cleanup_gate is not None
            await self._cleanup_gate.wait()
            await asyncio.sleep(0)  # never synchronous with the reply
            if self.instances.get(inst.name) is inst:
                del self.instances[inst.name]  # DB rows + memory entry gone
            await self._notify()
            if logout_code is not None:
                # §4.7: the logout started by the delete lands after REMOVE_INSTANCE, when the instance is
                # no longer in memory: status.instance + connection.update on "/" only, no logout.instance.
                await self._close_sequence(inst, logout_code, "Intentional Logout", in_memory=False)

        self._ensure_sync_primitives()
        self._spawn(cleanup())

    # ------------------------------------------------------------------ REST side

    def _record(self, request: web.Request, body: Any, raw: bytes) -> RecordedRequest:
        rec = RecordedRequest(
            method=request.method.upper(),
            path=request.path,
            query={k: v for k, v in request.query.items()},
            json=body,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw_body=raw,
        )
        self.requests.append(rec)
        return rec

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.method == method and path.startswith(failure.path_prefix):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _json_response(status: int, payload: Any) -> web.Response:
        if payload is _EMPTY:
            return web.Response(status=status, body=b"", content_type="application/json", charset="utf-8")
        return web.Response(
            status=status,
            text=json.dumps(payload, separators=(",", ":")),
            content_type="application/json",
            charset="utf-8",
        )

    async def _rest_entry(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        rec = self._record(request, None, raw)
        failure = self._take_failure(rec.method, rec.path)
        if failure is not None:
            body = failure.body
            if body is None:
                reason = _REASONS.get(failure.status, "Error")
                message: Any = reason if failure.status in (401, 500) else [reason]
                body = {"status": failure.status, "error": reason, "response": {"message": message}}
            if isinstance(body, (bytes, bytearray)):
                response = web.Response(status=failure.status, body=bytes(body))
            elif isinstance(body, str):
                response = web.Response(status=failure.status, text=body, content_type="text/html")
            else:
                response = self._json_response(failure.status, body)
            for header, value in (failure.headers or {}).items():
                response.headers[header] = value
            rec.status, rec.response = failure.status, body
            await self._notify()
            return response
        try:
            body = self._parse_body(request, raw)
            rec.json = body if self._is_json_request(request, raw) else None
            status, payload = await self._dispatch(request, body)
        except _HttpError as exc:
            status, payload = exc.status, exc.body
        rec.status = status
        rec.response = None if payload is _EMPTY else payload
        await self._notify()
        return self._json_response(status, payload)

    @staticmethod
    def _is_json_request(request: web.Request, raw: bytes) -> bool:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return bool(raw.strip()) and (ctype == "application/json" or ctype.endswith("+json"))

    def _parse_body(self, request: web.Request, raw: bytes) -> Any:
        """express.json(): only for JSON content types; strict (object/array) top level."""
        if not self._is_json_request(request, raw):
            return {}
        text = raw.decode("utf-8", errors="replace")
        node24 = self.version == "2.3.6"
        first = text.lstrip()[:1]
        if first not in ("{", "["):
            # body-parser strict mode
            raise _HttpError(
                400, "Internal Server Error", f"Unexpected token '{first}', \"{text.strip()[:30]}\" is not valid JSON"
            )
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            # §1: 400 but `error` says "Internal Server Error"; message is a string
            raise _HttpError(400, "Internal Server Error", _js_json_error(text, exc, node24)) from None

    _INSTANCE_ROUTES: ClassVar[dict[tuple[str, str, str], str]] = {
        ("GET", "instance", "connect"): "_h_connect",
        ("GET", "instance", "connectionstate"): "_h_connection_state",
        ("POST", "instance", "restart"): "_h_restart",
        ("DELETE", "instance", "logout"): "_h_logout",
        ("DELETE", "instance", "delete"): "_h_delete",
        ("POST", "settings", "set"): "_h_settings_set",
        ("GET", "settings", "find"): "_h_settings_find",
        ("POST", "websocket", "set"): "_h_websocket_set",
        ("GET", "websocket", "find"): "_h_websocket_find",
        ("POST", "webhook", "set"): "_h_webhook_set",
        ("GET", "webhook", "find"): "_h_webhook_find",
    }

    async def _dispatch(self, request: web.Request, body: Any) -> tuple[int, Any]:
        method = request.method.upper()
        raw_path = request.rel_url.raw_path
        segments = [s for s in raw_path.split("/")]
        # Express: non-strict routing (one trailing slash allowed), case-insensitive paths
        if len(segments) > 1 and segments[-1] == "" and raw_path != "/":
            segments = segments[:-1]
        parts = [urllib.parse.unquote(s) for s in segments[1:]]
        lower = [p.lower() for p in parts]
        if not isinstance(body, dict):
            body = {}

        if method == "GET" and raw_path == "/":
            return await self._h_root(request)
        if method == "POST" and lower == ["verify-creds"]:
            self._auth(request, None)
            return 200, {
                "status": 200,
                "message": "Credentials are valid",
                "facebookAppId": None,
                "facebookConfigId": None,
                "facebookUserToken": None,
            }
        if method == "POST" and lower == ["instance", "create"]:
            return await self._h_create(request, body)
        if method == "GET" and lower == ["instance", "fetchinstances"]:
            return self._h_fetch_instances(request)
        if len(parts) == 3 and parts[2]:
            handler_name = self._INSTANCE_ROUTES.get((method, lower[0], lower[1]))
            if handler_name is not None:
                name = parts[2]
                # guard chain (§2): instanceExistsGuard (404, before auth) -> authGuard
                if not self._exists(name):
                    raise _not_found(f'The "{name}" instance does not exist')
                self._auth(request, name)
                # §2.4: query params are merged into the DTO after auth and override the path name
                target = request.query.get("instanceName", name)
                handler = getattr(self, handler_name)
                return await handler(request, target, body)
        # unknown route -> Express-style 404 built from method + originalUrl (query included)
        raise _not_found(f"Cannot {method} {request.rel_url.raw_path_qs}")

    def _exists(self, name: str) -> bool:
        # "exists" = in memory or DB row (§2); JS object property names always "exist" (§7.8)
        return name in self.instances or name in JS_OBJECT_PROPERTIES

    def _auth(self, request: web.Request, instance_name: str | None) -> str:
        key = request.headers.get("apikey")  # case-insensitive header, no Bearer (§2)
        if not key:
            raise _unauthorized()
        if key == self.api_key:
            return "global"
        if instance_name is not None:
            inst = self.instances.get(instance_name)
            if inst is not None and inst.token == key:
                return "instance"
        raise _unauthorized()

    # ---- handlers

    async def _h_root(self, request: web.Request) -> tuple[int, Any]:
        info: dict[str, Any] = {
            "status": 200,
            "message": "Welcome to the Evolution API, it is working!",
            "version": self.version,
            "clientName": self.client_name,
            "manager": f"{request.scheme}://{request.host}/manager",
            "documentation": "https://doc.evolution-api.com",
        }
        if self.version == "2.3.6":
            # fetchLatestWaWebVersion() on every call, no timeout (§3.1)
            if self.wa_web_delay > 0:
                await asyncio.sleep(self.wa_web_delay)
            info["whatsappWebVersion"] = self.wa_web_version
        return 200, info

    def _create_schema(self) -> list[tuple]:
        s, b = "string", "boolean"
        props: list[tuple] = [
            ("instanceName", s, {}),
            ("token", s, {}),
            ("number", s, {"pattern": r"^\d+[\.@\w-]+"}),
            ("qrcode", b, {}),
            ("Integration", s, {"enum": list(INTEGRATIONS)}),  # misspelled key: `integration` is never checked
            ("rejectCall", b, {}),
            ("msgCall", s, {}),
            ("groupsIgnore", b, {}),
            ("alwaysOnline", b, {}),
            ("readMessages", b, {}),
            ("readStatus", b, {}),
            ("syncFullHistory", b, {}),
            ("wavoipToken", s, {}),
            ("proxyHost", s, {}),
            ("proxyPort", s, {}),
            ("proxyProtocol", s, {}),
            ("proxyUsername", s, {}),
            ("proxyPassword", s, {}),
            ("webhookUrl", s, {}),
            ("webhookByEvents", b, {}),
            ("webhookBase64", b, {}),
            ("webhookEvents", "array", {}),
            ("rabbitmqEnabled", b, {}),
            ("rabbitmqEvents", "array", {}),
            ("sqsEnabled", b, {}),
            ("sqsEvents", "array", {}),
        ]
        if self.version == "2.3.6":
            props += [("natsEnabled", b, {}), ("natsEvents", "array", {})]
        props += [
            ("chatwootAccountId", s, {}),
            ("chatwootToken", s, {}),
            ("chatwootUrl", s, {}),
            ("chatwootSignMsg", b, {}),
            ("chatwootReopenConversation", b, {}),
            ("chatwootConversationPending", b, {}),
            ("chatwootImportContacts", b, {}),
            ("chatwootNameInbox", s, {}),
            ("chatwootMergeBrazilContacts", b, {}),
            ("chatwootImportMessages", b, {}),
            ("chatwootDaysLimitImportMessages", "number", {}),
            ("chatwootOrganization", s, {}),
            ("chatwootLogo", s, {}),
        ]
        return props

    async def _h_create(self, request: web.Request, body: dict) -> tuple[int, Any]:
        name = body.get("instanceName")
        # instanceLoggedGuard (403, before auth).  A missing name makes Prisma match every row (§3.2).
        if name is None:
            if self.instances:
                raise _forbidden('This name "undefined" is already in use.')
        elif isinstance(name, str) and self._exists(name):
            raise _forbidden(f'This name "{name}" is already in use.')
        # authGuard: global key only for create (§2)
        if request.headers.get("apikey") != self.api_key or not self.api_key:
            raise _unauthorized()
        errors = _schema_errors(body, self._create_schema())
        # isNotEmpty('instanceName') only applies when instanceName is the ONLY key (§3.2 quirk)
        if set(body) <= {"instanceName"} and isinstance(name, str) and len(name) < 1:
            errors.append('The "instanceName" cannot be empty')
        if errors:
            raise _bad_request(errors)  # nested array (§1)
        integration = body.get("integration")
        if integration not in INTEGRATIONS:
            raise _bad_request("Invalid integration")  # channelController.init, before anything exists
        if not isinstance(name, str):
            raise _bad_request("(fake) create without instanceName on an empty server: not specified by the contract")

        token = body.get("token") or str(uuid.uuid4()).upper()
        number = body.get("number")
        inst = FakeInstance(
            name=name,
            id=str(uuid.uuid4()),
            token=token,
            integration=integration,
            number=number,
            business_id=body.get("businessId"),
            client_name=self.client_name,
        )
        inst.db_connection_status = "open" if integration == "WHATSAPP-BUSINESS" else "close"
        inst.state = "close"
        self.instances[name] = inst

        try:
            # eventManager.setInstance (§3.2 nested-object rules): key present => enabled forced true;
            # empty events = all; missing events => TypeError, create rolled back.
            ws_req = body.get("websocket")
            if self.websocket_enabled and ws_req:
                events = ws_req.get("events") if isinstance(ws_req, dict) else None
                if events is None:
                    raise _type_error("Cannot read properties of undefined (reading 'length')")
                stored = list(events) if len(events) else list(self.events)  # not validated at create
                inst.websocket = {"enabled": True, "events": stored}
                now = _utc_iso()
                inst.websocket_meta = {"id": _cuid(), "createdAt": now, "updatedAt": now}
            wh_req = body.get("webhook")
            if wh_req:
                # eventManager.setInstance -> webhook.set({enabled: true, ...}): the /webhook/set logic
                # without its schema (names unvalidated), so 2.2.3's isURL check applies here too.
                wh = wh_req if isinstance(wh_req, dict) else {}
                self._store_webhook(
                    inst,
                    {
                        "enabled": True,
                        "events": wh.get("events"),
                        "url": wh.get("url"),
                        "headers": wh.get("headers"),
                        "base64": wh.get("base64"),
                        "byEvents": wh.get("byEvents"),
                    },
                )

            await self._emit(inst, "instance.create", {"instanceName": name, "instanceId": inst.id})

            wavoip = body.get("wavoipToken")
            if self.version == "2.3.6" and wavoip:
                # §3.2: the settings setter touches a socket that does not exist yet
                raise _type_error("Cannot read properties of undefined (reading 'ws')")
            settings = {
                "rejectCall": body.get("rejectCall") is True,
                "msgCall": body.get("msgCall") or "",
                "groupsIgnore": body.get("groupsIgnore") is True,
                "alwaysOnline": body.get("alwaysOnline") is True,
                "readMessages": body.get("readMessages") is True,
                "readStatus": body.get("readStatus") is True,
                "syncFullHistory": body.get("syncFullHistory") is True,
                "wavoipToken": wavoip or "",
            }
            inst.settings = dict(settings)
            now = _utc_iso()
            inst.setting_meta = {"id": _cuid(), "createdAt": now, "updatedAt": now}

            web_business, token_business = None, ""
            if integration == "WHATSAPP-BUSINESS":
                if not number:
                    raise _bad_request("number is required")
                web_business = f"{self.server_url or ''}/webhook/meta"
                inst.state = "open"

            qrcode: Any = None
            if body.get("qrcode") is True and integration == "WHATSAPP-BAILEYS":
                # `number` + qrcode:true = pairing-code mode (§3.2/§3.3)
                await self._begin_connect(inst, number)
                if self.auto_qr and self.create_qr_ready:
                    await self._issue_qr(inst)  # the 5 s wait normally catches the first QR
                elif self.auto_qr:
                    self._spawn(self._qr_after_reply(inst))
                if self.documented_waits:
                    await asyncio.sleep(self.create_qr_wait)  # §3.2: a fixed 5 s, whatever happens
                qrcode = inst.qr_object()  # else {"count":0} (§7.1)
        except _HttpError as exc:
            # Failure rollback (§3.2): REMOVE_INSTANCE + async DB cleanup, then 400 [<message>]
            await self._emit(inst, "remove.instance", None)
            self._schedule_cleanup(inst)
            message = exc.body["response"]["message"]
            if isinstance(message, list):
                message = message[0]
            raise _bad_request(message) from None

        def echo(obj: Any, mapping: tuple[tuple[str, str], ...]) -> dict:
            # undefined keys vanish; the echo shows the REQUEST's value, not the stored one (§3.2)
            obj = obj if isinstance(obj, dict) else {}
            return {out: obj[src] for out, src in mapping if src in obj}

        result: dict[str, Any] = {
            "instance": {
                "instanceName": name,
                "instanceId": inst.id,
                "integration": integration,
                "webhookWaBusiness": web_business,
                "accessTokenWaBusiness": token_business,
                "status": inst.state,
            },
            "hash": token,
            "webhook": echo(
                body.get("webhook"),
                (
                    ("webhookUrl", "url"),
                    ("webhookHeaders", "headers"),
                    ("webhookByEvents", "byEvents"),
                    ("webhookBase64", "base64"),
                ),
            ),
            "websocket": echo(body.get("websocket"), (("enabled", "enabled"),)),
            "rabbitmq": echo(body.get("rabbitmq"), (("enabled", "enabled"),)),
        }
        if self.version == "2.3.6":
            result["nats"] = echo(body.get("nats"), (("enabled", "enabled"),))
        result["sqs"] = echo(body.get("sqs"), (("enabled", "enabled"),))
        result["settings"] = settings
        if qrcode is not None:
            result["qrcode"] = qrcode
        return 201, result

    async def _qr_after_reply(self, inst: FakeInstance) -> None:
        await asyncio.sleep(0)
        if self.instances.get(inst.name) is inst and inst.state == "connecting" and not inst.paired:
            await self._issue_qr(inst)

    async def _h_connect(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        inst = self.instances.get(name)
        if inst is None or not inst.in_memory:
            return 200, OBJECT_OBJECT_ERROR  # not in memory (§3.3)
        if inst.state == "open":
            return 200, {"instance": {"instanceName": name, "state": "open"}}
        if inst.state == "connecting":
            return 200, inst.qr_object()  # read-only, `number` ignored
        # close: new socket (+ pairing mode with ?number=), reply after "2 s" with whatever is cached:
        # {"count":0} or a STALE QR (the cached QR is never cleared, §3.3); the new QR follows the reply.
        await self._begin_connect(inst, request.query.get("number"))
        if self.documented_waits:
            await asyncio.sleep(self.connect_wait)  # §3.3: the socket is started, then a fixed 2 s sleep
        reply = inst.qr_object()
        if inst.paired:
            self._spawn(self._open_after_reply(inst))
        elif self.auto_qr:
            self._spawn(self._qr_after_reply(inst))
        return 200, reply

    async def _open_after_reply(self, inst: FakeInstance) -> None:
        await asyncio.sleep(0)
        if self.instances.get(inst.name) is inst and inst.state == "connecting":
            await self._go_open(inst, inst.owner_jid or "", inst.profile_name, inst.profile_pic_url)

    async def _h_connection_state(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        inst = self.instances.get(name)
        payload: dict[str, Any] = {"instanceName": name}
        if inst is not None and inst.in_memory:
            payload["state"] = inst.state  # never "refused" (§3.4)
        return 200, {"instance": payload}

    async def _h_restart(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        inst = self.instances.get(name)
        if inst is None or not inst.in_memory or inst.state == "close":
            return 200, OBJECT_OBJECT_ERROR  # §3.6
        # the socket is ended without a status code -> silent reconnect, processed after the reply
        if inst.state == "open":
            reply: Any = {"instance": {"instanceName": name, "state": "open"}}
        else:
            reply = inst.qr_object()

        async def reconnect() -> None:
            await asyncio.sleep(0)
            if self.instances.get(name) is inst and inst.state in ("open", "connecting"):
                await self._silent_reconnect(inst)

        self._spawn(reconnect())
        return 200, reply

    async def _h_logout(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        inst = self.instances.get(name)
        if inst is not None and inst.state == "close":
            raise _bad_request(f'The "{name}" instance is not connected')  # §3.7
        if inst is not None and inst.state in ("open", "connecting"):

            async def logout() -> None:  # logoutInstance() is not awaited
                await asyncio.sleep(0)
                if self.instances.get(name) is inst and inst.state in ("open", "connecting"):
                    await self._close_sequence(inst, 401, "Intentional Logout")

            self._spawn(logout())
        # not in memory: `waInstances[name]?.logoutInstance()` is a no-op, still "SUCCESS"
        return 200, {"status": "SUCCESS", "error": False, "response": {"message": "Instance logged out"}}

    async def _h_delete(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        inst = self.instances.get(name)
        if inst is None:
            # only reachable for JS-property names / query override: nothing to remove
            return 200, {"status": "SUCCESS", "error": False, "response": {"message": "Instance deleted"}}
        needs_logout = inst.state in ("open", "connecting")
        if inst.in_memory:
            await self._emit(inst, "instance.delete", {"instanceName": name, "instanceId": inst.id})
            await self._emit(inst, "remove.instance", None)
        self._schedule_cleanup(inst, logout_code=401 if needs_logout else None)
        return 200, {"status": "SUCCESS", "error": False, "response": {"message": "Instance deleted"}}

    _SETTINGS_KEYS = (
        "rejectCall",
        "msgCall",
        "groupsIgnore",
        "alwaysOnline",
        "readMessages",
        "readStatus",
        "syncFullHistory",
        "wavoipToken",
    )

    async def _h_settings_set(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        s, b = "string", "boolean"
        props = [
            ("rejectCall", b, {}),
            ("msgCall", s, {}),
            ("groupsIgnore", b, {}),
            ("alwaysOnline", b, {}),
            ("readMessages", b, {}),
            ("readStatus", b, {}),
            ("syncFullHistory", b, {}),
            ("wavoipToken", s, {}),
        ]
        required = ("rejectCall", "groupsIgnore", "alwaysOnline", "readMessages", "readStatus", "syncFullHistory")
        errors = _schema_errors(body, props, required)
        if errors:
            raise _bad_request(errors)
        inst = self.instances.get(name)
        if inst is None or not inst.in_memory:
            raise _type_error("Cannot read properties of undefined (reading 'setSettings')")  # (fake) wording
        wavoip = body.get("wavoipToken")
        if wavoip and inst.state not in ("open", "connecting"):
            raise _type_error("Cannot read properties of undefined (reading 'ws')")  # §3.9: no socket yet
        previous = inst.settings or {}
        inst.settings = {
            "rejectCall": body["rejectCall"],
            "msgCall": body.get("msgCall", previous.get("msgCall", "")),
            "groupsIgnore": body["groupsIgnore"],
            "alwaysOnline": body["alwaysOnline"],
            "readMessages": body["readMessages"],
            "readStatus": body["readStatus"],
            "syncFullHistory": body["syncFullHistory"],
            "wavoipToken": body.get("wavoipToken", previous.get("wavoipToken", "")),
        }
        now = _utc_iso()
        inst.setting_meta = {
            "id": inst.setting_meta.get("id") or _cuid(),
            "createdAt": inst.setting_meta.get("createdAt") or now,
            "updatedAt": now,
        }
        if wavoip:

            async def reconnect() -> None:  # a non-empty wavoipToken forces a reconnect
                await asyncio.sleep(0)
                if self.instances.get(name) is inst and inst.state in ("open", "connecting"):
                    await self._silent_reconnect(inst)

            self._spawn(reconnect())
        return 201, {"settings": {"instanceName": name, "settings": body}}

    async def _h_settings_find(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        # SettingsService.find catches everything (no memory entry, no row) and answers null (§3.9)
        inst = self.instances.get(name)
        if inst is None or not inst.in_memory or inst.settings is None:
            return 200, None
        return 200, {k: inst.settings.get(k) for k in self._SETTINGS_KEYS}

    def _websocket_row(self, inst: FakeInstance) -> dict | None:
        if inst.websocket is None:
            return None
        meta = inst.websocket_meta
        return {
            "id": meta.get("id"),
            "enabled": inst.websocket["enabled"],
            "events": list(inst.websocket["events"]),
            "createdAt": meta.get("createdAt"),
            "updatedAt": meta.get("updatedAt"),
            "instanceId": inst.id,
        }

    async def _h_websocket_set(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        # eventSchema: `websocket` itself is NOT required (§3.10)
        errors: list[str] = []
        if "websocket" in body:
            ws = body["websocket"]
            if not isinstance(ws, dict):
                errors.append("websocket is not of a type(s) object")
            else:
                errors += _schema_errors(
                    ws,
                    [
                        ("enabled", "boolean", {"enum": [True, False]}),
                        ("events", "array", {"items_enum": list(self.events)}),
                    ],
                    ("enabled",),
                    path="instance.websocket",
                )
        if errors:
            raise _bad_request(errors)
        if not self.websocket_enabled:
            return 201, _EMPTY  # WEBSOCKET_ENABLED=false: empty body
        ws = body.get("websocket")
        if ws is None:
            # flat body passes validation, then `data.websocket.events = []` crashes
            raise _type_error("Cannot set properties of undefined (setting 'events')")
        if not ws.get("enabled"):
            events: list[str] = []
        else:
            if ws.get("events") is None:
                raise _type_error("Cannot read properties of undefined (reading 'length')")
            events = list(ws["events"]) or list(self.events)
        inst = self.instances.get(name)
        if inst is None or not inst.in_memory:
            raise _type_error("Cannot read properties of undefined (reading 'instanceId')")
        inst.websocket = {"enabled": bool(ws.get("enabled")), "events": events}
        now = _utc_iso()
        inst.websocket_meta = {
            "id": inst.websocket_meta.get("id") or _cuid(),
            "createdAt": inst.websocket_meta.get("createdAt") or now,
            "updatedAt": now,
        }
        return 201, self._websocket_row(inst)

    async def _h_websocket_find(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        if not self.websocket_enabled:
            return 200, _EMPTY
        inst = self.instances.get(name)
        if inst is None or not inst.in_memory:
            return 200, None
        return 200, self._websocket_row(inst)

    def _webhook_row(self, inst: FakeInstance) -> dict | None:
        """The Prisma Webhook row (§3.11), in the model's column order."""
        if inst.webhook is None:
            return None
        meta = inst.webhook_meta
        return {
            "id": meta.get("id"),
            "url": inst.webhook["url"],
            "headers": json.loads(json.dumps(inst.webhook["headers"])),
            "enabled": inst.webhook["enabled"],
            "events": list(inst.webhook["events"]),
            "webhookByEvents": inst.webhook["webhookByEvents"],
            "webhookBase64": inst.webhook["webhookBase64"],
            "createdAt": meta.get("createdAt"),
            "updatedAt": meta.get("updatedAt"),
            "instanceId": inst.id,
        }

    def _store_webhook(self, inst: FakeInstance | None, wh: dict) -> dict | None:
        """WebhookController.set after the schema (§3.11): 2.2.3 isURL first (even when disabling), then
        the events rule, then the upsert keyed by the in-memory instance's id."""
        if self.version == "2.2.3" and not _is_url(wh.get("url")):
            raise _bad_request('Invalid "url" property')
        if not wh.get("enabled"):
            events: list[str] = []
        else:
            if wh.get("events") is None:
                raise _type_error("Cannot read properties of undefined (reading 'length')")
            if not isinstance(wh["events"], list):
                raise _type_error("(fake) events is not an array: not specified by the contract")
            events = list(wh["events"]) or list(self.events)
        if inst is None or not inst.in_memory:
            raise _type_error("Cannot read properties of undefined (reading 'instanceId')")
        if not isinstance(wh.get("url"), str):
            # the column is a required String: Prisma refuses the upsert (only reachable on 2.3.6)
            raise _type_error("(fake) Prisma: Argument `url` is missing or not a string")
        if len(wh["url"]) > 500:
            raise _type_error("(fake) Prisma: The provided value for the column is too long (url VarChar(500))")
        now = _utc_iso()
        previous = inst.webhook
        if previous is None:  # create: defaults for what was not given
            inst.webhook = {
                "url": wh["url"],
                "headers": wh.get("headers"),
                "enabled": wh.get("enabled"),
                "events": events,
                "webhookByEvents": bool(wh.get("byEvents", False)),
                "webhookBase64": bool(wh.get("base64", False)),
            }
            inst.webhook_meta = {"id": _cuid(), "createdAt": now, "updatedAt": now}
        else:  # update: undefined fields keep their stored value
            previous.update(url=wh["url"], enabled=wh.get("enabled"), events=events)
            if wh.get("headers") is not None:
                previous["headers"] = wh["headers"]
            if wh.get("byEvents") is not None:
                previous["webhookByEvents"] = wh["byEvents"]
            if wh.get("base64") is not None:
                previous["webhookBase64"] = wh["base64"]
            inst.webhook_meta["updatedAt"] = now
        return self._webhook_row(inst)

    async def _h_webhook_set(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        # webhookSchema: unlike the websocket one, the `webhook` wrapper IS required (§3.11)
        errors: list[str] = []
        wh = body.get("webhook")
        if "webhook" in body:
            if not isinstance(wh, dict):
                errors.append("webhook is not of a type(s) object")
            else:
                b = "boolean"
                errors += _schema_errors(
                    wh,
                    [
                        ("enabled", b, {}),
                        ("url", "string", {}),
                        ("headers", "object", {}),
                        ("byEvents", b, {}),
                        ("base64", b, {}),
                        ("events", "array", {"items_enum": list(self.events)}),
                    ],
                    ("enabled", "url"),
                    path="instance.webhook",
                )
                # isNotEmpty('enabled', 'url'): only when every key of the object is one of these two
                if set(wh) <= {"enabled", "url"} and wh.get("url") == "":
                    errors.append('The "url" cannot be empty')
        if wh is None:
            errors.append('instance requires property "webhook"')
        if errors:
            raise _bad_request(errors)  # nested array (§1)
        assert isinstance(wh, dict)
        return 201, self._store_webhook(self.instances.get(name), wh)

    async def _h_webhook_find(self, request: web.Request, name: str, body: dict) -> tuple[int, Any]:
        # EventController.get: null when not in memory or without a row
        inst = self.instances.get(name)
        if inst is None or not inst.in_memory:
            return 200, None
        return 200, self._webhook_row(inst)

    def _fetch_row(self, inst: FakeInstance) -> dict:
        row: dict[str, Any] = {
            "id": inst.id,
            "name": inst.name,
            "connectionStatus": inst.db_connection_status,
            "ownerJid": inst.owner_jid,
            "profileName": inst.profile_name,
            "profilePicUrl": inst.profile_pic_url,
            "integration": inst.integration,
            "number": inst.number,
            "businessId": inst.business_id,
            "token": inst.token,  # always included (§3.5)
            "clientName": inst.client_name,
            "disconnectionReasonCode": inst.disconnection_reason_code,
            "disconnectionObject": inst.disconnection_object,
            "disconnectionAt": inst.disconnection_at,
            "createdAt": inst.created_at,
            "updatedAt": inst.updated_at,
            "Chatwoot": None,
            "Proxy": None,
            "Rabbitmq": None,
        }
        if self.version == "2.3.6":
            row["Nats"] = None
        row["Sqs"] = None
        row["Websocket"] = self._websocket_row(inst)
        if inst.settings is None:
            row["Setting"] = None
        else:
            meta = inst.setting_meta
            row["Setting"] = {
                "id": meta.get("id"),
                **{k: inst.settings.get(k) for k in self._SETTINGS_KEYS},
                "createdAt": meta.get("createdAt"),
                "updatedAt": meta.get("updatedAt"),
                "instanceId": inst.id,
            }
        row["_count"] = {"Message": 0, "Contact": 0, "Chat": 0}
        return row

    def _h_fetch_instances(self, request: web.Request) -> tuple[int, Any]:
        key = request.headers.get("apikey")
        if not key:
            raise _unauthorized()
        if key == self.api_key:
            rows = list(self.instances.values())
        else:
            rows = [i for i in self.instances.values() if i.token == key]
            if not rows:
                raise _unauthorized()
        query = request.query
        if "instanceName" in query:
            wanted = query["instanceName"]
            live = self.instances.get(wanted)
            if live is None or not live.in_memory:
                raise _not_found(f'Instance "{wanted}" not found')
            rows = [i for i in rows if i.name == wanted]
        elif query.get("instanceId") or query.get("number"):
            ident = query.get("instanceId") or query.get("number")
            if query.get("instanceId"):
                match = next((i for i in self.instances.values() if i.id == ident), None)
            else:
                match = next((i for i in self.instances.values() if i.number == ident), None)  # creation number
            if match is None:
                raise _not_found(f'Instance "{ident}" not found')
            if not match.in_memory:
                raise _not_found(f'Instance "{match.name}" not found')
            rows = [i for i in rows if i is match]
        return 200, [self._fetch_row(i) for i in rows]
