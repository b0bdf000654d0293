"""Property tests: whatever Evolution (or a proxy) answers, a client call returns or raises EvolutionError.

Every answer is served by an `httpx.MockTransport` as a raw byte stream (in random chunks), so the
client's own reading runs: content decoding, size bound, charset, JSON, depth, value checks. The
budget comes from the hypothesis profile in conftest.py (bench/fuzz.py reuses these tests).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import math
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from whatsapp_operator.evolution.client import (
    DEFAULT_MAX_BODY_BYTES,
    MANAGED_BOOLEAN_SETTINGS,
    EvolutionClient,
    InstanceToken,
    WebhookConfig,
    json_array_rows,
)
from whatsapp_operator.evolution.errors import MAX_MESSAGE_LENGTH, EvolutionError, error_message_from_body
from whatsapp_operator.values import INT64_MAX, INT64_MIN

pytestmark = pytest.mark.properties

API_KEY = "property-test-global-api-key-7f3a"
OUTCOMES = {"ok", "timeout", "unreachable", "error_body", "bad_response"}
PROPERTY_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies -------------------------------------------------------------------------------------

# Instance tokens live only under these keys; their values are never generated anywhere else.
SECRET_KEYS = st.sampled_from(["token", "hash", "apikey", "Token", "apiKey", "HASH"])
TOKEN_VALUES = st.text("0123456789ABCDEF", min_size=16, max_size=32).map(lambda tail: f"TKN{tail}")
# Webhook header values are secrets too; they live only in the `headers` of webhook rows.
HEADER_VALUES = st.text("0123456789abcdef", min_size=16, max_size=24).map(lambda tail: f"HDR{tail}")

lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.text(st.one_of(st.characters(), lone_surrogates), max_size=12)
numbers = st.one_of(
    st.integers(),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**64, -(2**70), 10**40, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
scalars = st.one_of(st.none(), numbers, texts)


def with_secrets(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda plain, secrets: {**plain, **secrets},
        st.dictionaries(texts, children, max_size=3),
        st.dictionaries(SECRET_KEYS, TOKEN_VALUES, max_size=2),
    )


json_values = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=4), with_secrets(children)), max_leaves=12
)


class Deep:
    """A value nested `depth` levels deep; written out as JSON text directly (json.dumps would recurse)."""

    def __init__(self, depth: int, leaf: Any, kind: str):
        self.depth, self.leaf, self.kind = depth, leaf, kind

    def as_python(self) -> Any:
        value = self.leaf
        for _ in range(self.depth):
            value = [value] if self.kind == "list" else {"message": value}
        return value

    def json(self, ensure_ascii: bool) -> str:
        opening, closing = ("[", "]") if self.kind == "list" else ('{"message": ', "}")
        return opening * self.depth + json.dumps(self.leaf, ensure_ascii=ensure_ascii) + closing * self.depth


deep_values = st.builds(
    Deep, st.one_of(st.integers(1, 100), st.integers(1, 3000)), scalars, st.sampled_from(["list", "dict"])
)
qr_objects = st.fixed_dictionaries(
    {},
    optional={
        "code": st.one_of(texts, numbers, st.none()),
        "base64": st.one_of(texts, st.just("data:" + "A" * 300_000)),
        "pairingCode": st.one_of(texts, st.none()),
        "count": numbers,
    },
)
instance_rows = st.builds(
    lambda fields, secrets: {**fields, **secrets},
    st.fixed_dictionaries(
        {"name": st.one_of(st.just("acme"), texts)},
        optional={
            "id": scalars,
            "connectionStatus": scalars,
            "ownerJid": scalars,
            "profileName": st.one_of(texts, st.just("N" * 5000)),
            "profilePicUrl": scalars,
            "disconnectionReasonCode": numbers,
        },
    ),
    st.dictionaries(SECRET_KEYS, TOKEN_VALUES, max_size=2),
)
# What Evolution documents (and what it sends when it fails), with arbitrary values inside.
envelopes = st.one_of(
    st.builds(
        lambda status, message: {"status": status, "error": "Bad Request", "response": {"message": message}},
        numbers,
        st.one_of(json_values, deep_values),
    ),
    st.builds(lambda message: {"error": True, "message": message}, json_values),
    st.builds(
        lambda state, qr: {"instance": {"instanceName": "acme", "state": state}, "qrcode": qr},
        st.one_of(texts, st.none()),
        qr_objects,
    ),
    qr_objects,
    st.lists(instance_rows, max_size=4),
    st.builds(
        lambda instance, token: {"instance": instance, "hash": token},
        st.fixed_dictionaries({"instanceName": texts, "instanceId": scalars, "status": scalars}),
        TOKEN_VALUES,
    ),
)
webhook_rows = st.fixed_dictionaries(
    {"enabled": st.one_of(st.just(True), st.just(True), scalars)},
    optional={
        "id": scalars,
        "url": st.one_of(texts, scalars, st.just("https://" + "u" * 5000)),
        "events": st.one_of(
            st.lists(st.one_of(st.sampled_from(["CALL", "QRCODE_UPDATED"]), texts, numbers), max_size=6),
            scalars,
            st.just(["CALL"] * 300),
        ),
        "headers": st.one_of(
            st.dictionaries(
                st.one_of(texts, st.just("x-token"), st.just("k" * 300)),
                st.one_of(HEADER_VALUES, HEADER_VALUES, scalars, st.lists(HEADER_VALUES, max_size=2)),
                max_size=4,
            ),
            scalars,
            st.just({f"h{index}": "v" for index in range(70)}),
        ),
        "webhookByEvents": scalars,
        "webhookBase64": scalars,
        "instanceId": scalars,
    },
)
settings_answers = st.fixed_dictionaries(
    {},
    optional={
        **{key: st.one_of(st.booleans(), scalars) for key in MANAGED_BOOLEAN_SETTINGS},
        "msgCall": st.one_of(texts, scalars, st.just("M" * 3000)),
        "wavoipToken": TOKEN_VALUES,
    },
)
server_infos = st.fixed_dictionaries(
    {},
    optional={
        "status": numbers,
        "message": texts,
        "version": st.one_of(texts, scalars, st.just("2.3.6"), st.just("9" * 500)),
        "whatsappWebVersion": st.one_of(texts, scalars, st.just("2.3000.1028459513")),
        "clientName": scalars,
    },
)
bodies = st.one_of(json_values, deep_values, envelopes, webhook_rows, settings_answers, server_infos)

ENCODINGS = [
    "",
    "identity",
    "gzip",
    "x-gzip",
    "deflate",
    "br",
    "zstd",
    "gzip, gzip",
    "deflate, gzip",
    "garbage",
    "gzip;q=1",
    "GZIP",
    " gzip ",
    "compress",
]
CHARSETS = [
    "utf-8",
    "UTF-8",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "latin-1",
    "iso-8859-1",
    "cp1252",
    "ascii",
    "idna",
    "punycode",
    "rot13",
    "base64",
    "zlib",
    "no-such-charset",
    "",
    "\x00",
    "utf-8\x00",
    "x" * 200,
]
# More headers, some repeating or contradicting the ones above.
ODD_HEADERS = [
    (b"content-encoding", b"gzip"),
    (b"content-encoding", b"deflate"),
    (b"content-encoding", b"\xff\xfe"),
    (b"content-encoding", b""),
    (b"content-type", b"text/plain; charset=utf-16"),
    (b"content-type", b"application/json; charset=\xe9"),
    (b"content-length", b"999999999"),
    (b"content-length", b"-1"),
    (b"transfer-encoding", b"chunked"),
    (b"x-odd", b"\x00\x01\x7f\xff"),
]


@dataclasses.dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunk_sizes: list[int]
    fail_after: int | None  # the connection breaks after this many chunks


def to_json(value: Any, ensure_ascii: bool = True) -> str:
    """JSON text as json.dumps writes it (NaN, Infinity, lone surrogates included), Deep values too."""
    if isinstance(value, Deep):
        return value.json(ensure_ascii)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"{json.dumps(key, ensure_ascii=ensure_ascii)}: {to_json(item, ensure_ascii)}"
                for key, item in value.items()
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item, ensure_ascii) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def to_python(value: Any) -> Any:
    if isinstance(value, Deep):
        return value.as_python()
    if isinstance(value, dict):
        return {key: to_python(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_python(item) for item in value]
    return value


def encode_body(value: Any, ensure_ascii: bool, charset: str) -> bytes:
    text = to_json(value, ensure_ascii)
    if charset.lower() in ("utf-16", "utf-16-le", "utf-32"):
        return text.encode(charset.lower(), "surrogatepass")
    return text.encode("utf-8", "surrogatepass")


def compress(body: bytes, encoding: str) -> bytes:
    for name in [part.strip().lower() for part in encoding.split(",")]:
        if name in ("gzip", "x-gzip"):
            body = gzip.compress(body)
        elif name == "deflate":
            body = zlib.compress(body)
    return body


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    status = draw(st.one_of(st.integers(100, 599), st.sampled_from([0, 1, 99, 600, 999, 1000, 2**16])))
    encoding = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=8)))
    charset = draw(st.one_of(st.sampled_from(CHARSETS), st.text(max_size=8)))
    kind = draw(st.sampled_from(["json", "json", "json", "bytes", "empty", "text"]))
    if kind == "json":
        body = encode_body(draw(bodies), draw(st.booleans()), charset)
    elif kind == "bytes":
        body = draw(st.binary(max_size=512))
    elif kind == "text":
        body = draw(texts).encode("utf-8", "surrogatepass")
    else:
        body = b""
    # Mostly the body really is in the coding the header names; sometimes it is not.
    if draw(st.integers(0, 3)) > 0:
        body = compress(body, encoding)
    headers = [
        (
            b"content-type",
            draw(st.sampled_from([b"application/json", b"text/html", b"", b";;;"]))
            + (b"; charset=" + charset.encode("utf-8", "surrogatepass") if charset else b""),
        )
    ]
    if encoding:
        headers.append((b"content-encoding", encoding.encode("utf-8", "surrogatepass")))
    headers += draw(st.lists(st.sampled_from(ODD_HEADERS), max_size=2))
    chunk_sizes = draw(st.lists(st.integers(1, 4096), max_size=3))
    fail_after = draw(st.sampled_from([None, None, None, None, 0, 1, 2]))
    return Answer(status, headers, body, chunk_sizes, fail_after)


class ChunkedStream(httpx.AsyncByteStream):
    """The answer's bytes in the given chunk sizes (the rest at once), optionally breaking off."""

    def __init__(self, answer: Answer):
        self.answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body, sent = self.answer.body, 0
        for index, size in enumerate([*self.answer.chunk_sizes, len(body)]):
            if self.answer.fail_after is not None and index >= self.answer.fail_after:
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
            if sent >= len(body):
                break
            yield body[sent : sent + size]
            sent += size


# The header value the operator sends: a server that echoes it back (in an error, in an answer) must not
# get it into a message or a repr.
OUR_HEADER_VALUE = "HDR-our-own-outbound-header-value-91"
OUR_WEBHOOK = WebhookConfig(url="https://hooks.example/evo", events=("CALL",), headers=(("x-token", OUR_HEADER_VALUE),))

CALLS: dict[str, Callable[[EvolutionClient], Any]] = {
    "create_instance": lambda client: client.create_instance(
        "acme", integration="WHATSAPP-BAILEYS", settings={"rejectCall": True}
    ),
    "connect": lambda client: client.connect("acme", number="5511999999999"),
    "connection_state": lambda client: client.connection_state("acme"),
    "fetch_instance": lambda client: client.fetch_instance("acme"),
    "fetch_instances": lambda client: client.fetch_instances(),
    "delete_instance": lambda client: client.delete_instance("acme"),
    "logout": lambda client: client.logout("acme"),
    "set_settings": lambda client: client.set_settings("acme", {"rejectCall": False}),
    "subscribe_events": lambda client: client.subscribe_events("acme"),
    "create_instance_with_webhook": lambda client: client.create_instance(
        "acme", integration="WHATSAPP-BAILEYS", settings={}, webhook=OUR_WEBHOOK
    ),
    "set_webhook": lambda client: client.set_webhook("acme", OUR_WEBHOOK),
    "disable_webhook": lambda client: client.set_webhook("acme", None),
    "find_webhook": lambda client: client.find_webhook("acme"),
    "find_settings": lambda client: client.find_settings("acme"),
    "server_info": lambda client: client.server_info(),
}


def secrets_in(answer: Answer) -> list[str]:
    """Token values that are somewhere in the body (compressed or not, they all came from TOKEN_VALUES)."""
    raw = answer.body
    for decompress in (
        gzip.decompress,
        zlib.decompress,
        lambda data: gzip.decompress(gzip.decompress(data)),
        lambda data: zlib.decompress(gzip.decompress(data)),
    ):
        try:
            raw = decompress(raw)
            break
        except Exception:  # noqa: BLE001, S112 - not in that coding
            continue
    text = raw.decode("utf-8", "replace")
    if b"\x00" in raw:  # maybe UTF-16 or UTF-32
        text += raw.decode("utf-16", "replace") + raw.decode("utf-32", "replace")
    found: list[str] = []
    for marker in ("TKN", "HDR"):
        start = text.find(marker)
        while start != -1:
            found.append(text[start : start + 35].split('"')[0])
            start = text.find(marker, start + 3)
    return [value for value in found if len(value) >= 19]


def check_value(value: Any, secrets: list[str], path: str = "result") -> None:
    """Parsed values fit a status patch: int64 integers (never bool for counts), UTF-8 encodable text.
    Secrets are kept only where they are meant to be: an InstanceToken, a webhook's header values."""
    if isinstance(value, InstanceToken):
        assert str(value) == repr(value) == "***", path
        assert 0 < len(value.reveal()) <= 255, path
        value.reveal().encode("utf-8")
    elif isinstance(value, WebhookConfig):
        check_value(value.url, secrets, f"{path}.url")
        check_value(value.events, secrets, f"{path}.events")
        assert isinstance(value.by_events, bool) and isinstance(value.base64, bool), path
        assert len(value.events) <= 256 and len(value.headers) <= 64, path
        for name, header in value.headers:
            check_value(name, secrets, f"{path}.headers")
            header.encode("utf-8")
            assert len(header) <= 4096, path
        assert not any(header in repr(value) for _, header in value.headers if header.startswith("HDR")), path
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            check_value(getattr(value, field.name), secrets, f"{path}.{field.name}")
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            check_value(item, secrets, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_value(key, secrets, f"{path} key")
            check_value(item, secrets, f"{path}[{key!r}]")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        assert INT64_MIN <= value <= INT64_MAX, path
    elif isinstance(value, str):
        value.encode("utf-8")
        assert not any(secret in value for secret in secrets), path
    elif isinstance(value, float):
        assert math.isfinite(value) or True  # no float is kept today; tolerated if one ever is
    else:
        raise AssertionError(f"{path}: unexpected {type(value).__name__}")


def check_error(error: EvolutionError, secrets: list[str]) -> None:
    assert isinstance(error.reason, str) and error.reason
    assert API_KEY not in error.message and API_KEY not in str(error)
    assert not any(secret in error.message for secret in secrets), error.message
    assert OUR_HEADER_VALUE not in error.message and OUR_HEADER_VALUE not in str(error)
    error.message.encode("utf-8")
    assert len(error.message) <= MAX_MESSAGE_LENGTH


async def exercise(answer: Answer, call: str, max_body_bytes: int) -> None:
    served = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal served
        served += 1
        assert request.headers["apikey"] == API_KEY
        return httpx.Response(answer.status, headers=answer.headers, stream=ChunkedStream(answer))

    client = EvolutionClient(
        "http://evolution.test", API_KEY, transport=httpx.MockTransport(handler), max_body_bytes=max_body_bytes
    )
    secrets = secrets_in(answer)
    try:
        result = await CALLS[call](client)
    except EvolutionError as error:
        check_error(error, secrets)
    else:
        check_value(result, secrets)
        assert not any(secret in repr(result) for secret in secrets)
        assert OUR_HEADER_VALUE not in repr(result)
    finally:
        await client.aclose()
    assert served == 1
    assert sum(client.calls.values()) == 1
    ((_, outcome),) = client.calls
    assert outcome in OUTCOMES or outcome.lstrip("-").isdigit(), outcome
    event(f"outcome: {outcome if outcome in OUTCOMES else 'HTTP error'}")


# -- properties -------------------------------------------------------------------------------------

_runner: asyncio.Runner | None = None


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run one example on the module's event loop (hypothesis cannot drive an async test itself)."""
    global _runner
    if _runner is None:
        _runner = asyncio.Runner()
    _runner.run(coroutine)


@pytest.fixture(scope="module", autouse=True)
def _close_the_event_loop() -> Iterator[None]:
    global _runner
    yield
    if _runner is not None:
        _runner.close()
        _runner = None


@PROPERTY_SETTINGS
@given(
    answer=answers(),
    call=st.sampled_from(sorted(CALLS)),
    max_body_bytes=st.sampled_from([DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, 1, 64, 1024]),
)
def test_every_answer_is_a_result_or_an_evolution_error(answer: Answer, call: str, max_body_bytes: int) -> None:
    run(exercise(answer, call, max_body_bytes))


@PROPERTY_SETTINGS
@given(status=st.integers(100, 599), body=bodies, call=st.sampled_from(sorted(CALLS)))
def test_documented_bodies_as_plain_json(status: int, body: Any, call: str) -> None:
    """The same with well-formed JSON (ASCII-escaped), where more answers get past decoding to parsing."""
    raw = to_json(body).encode()
    answer = Answer(status, [(b"content-type", b"application/json")], raw, [], None)
    run(exercise(answer, call, DEFAULT_MAX_BODY_BYTES))


@PROPERTY_SETTINGS
@given(
    failure=st.sampled_from(
        [
            httpx.ConnectError,
            httpx.ReadTimeout,
            httpx.ConnectTimeout,
            httpx.ReadError,
            httpx.RemoteProtocolError,
            httpx.DecodingError,
            httpx.TooManyRedirects,
            httpx.UnsupportedProtocol,
            httpx.ProxyError,
            RuntimeError,
            ValueError,
            UnicodeDecodeError,
            RecursionError,
            MemoryError,
            LookupError,
        ]
    ),
    call=st.sampled_from(sorted(CALLS)),
)
def test_every_failure_of_the_transport_is_an_evolution_error(failure: type[Exception], call: str) -> None:
    async def scenario() -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if failure is UnicodeDecodeError:
                raise UnicodeDecodeError("utf-8", API_KEY.encode(), 0, 1, f"bad {API_KEY}")
            if issubclass(failure, httpx.RequestError):
                raise failure(f"failed with {API_KEY}", request=request)
            raise failure(f"failed with {API_KEY}")

        client = EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler))
        with pytest.raises(EvolutionError) as caught:
            await CALLS[call](client)
        check_error(caught.value, [])
        await client.aclose()

    run(scenario())


@PROPERTY_SETTINGS
@given(body=st.one_of(json_values, deep_values, envelopes, texts))
def test_error_messages_are_bounded_and_never_show_a_token(body: Any) -> None:
    message = error_message_from_body(to_python(body))
    message.encode("utf-8")
    assert len(message) <= 2000
    secrets = secrets_in(Answer(200, [], to_json(body).encode("utf-8", "surrogatepass"), [], None))
    assert not any(secret in message for secret in secrets)


@PROPERTY_SETTINGS
@given(
    status=st.sampled_from([200, 201, 400, 401, 403, 404, 500]),
    where=st.sampled_from(["message", "nested", "response", "error"]),
    call=st.sampled_from(["create_instance_with_webhook", "set_webhook"]),
)
def test_an_answer_that_echoes_our_webhook_never_shows_its_header_values(status: int, where: str, call: str) -> None:
    """Whatever part of the request a server echoes back (the create answer echoes `webhookHeaders`), the
    header values we sent reach no message and no repr: they are registered for redaction when sent."""

    async def scenario() -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            sent = request.content.decode()
            echoed: Any = {
                "message": {"status": status, "error": "Bad Request", "response": {"message": [sent]}},
                "nested": {"status": status, "response": {"message": [[json.loads(sent)]]}},
                "response": {"instance": {"instanceId": "i"}, "webhook": json.loads(sent).get("webhook")},
                "error": {"error": True, "message": sent},
            }[where]
            return httpx.Response(status, json=echoed)

        client = EvolutionClient("http://evolution.test", API_KEY, transport=httpx.MockTransport(handler))
        try:
            result = await CALLS[call](client)
        except EvolutionError as error:
            check_error(error, [OUR_HEADER_VALUE])
        else:
            assert OUR_HEADER_VALUE not in repr(result)
        finally:
            await client.aclose()

    run(scenario())


# -- a JSON array decoded row by row (the instance list) ---------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
json_space = st.text(" \t\n\r", max_size=3)


@PROPERTY_SETTINGS
@given(rows=st.lists(json_values, max_size=8), spaces=st.lists(json_space, min_size=20, max_size=20))
def test_rows_decoded_one_by_one_are_what_json_loads_returns(rows: list[Any], spaces: list[str]) -> None:
    # Items separated by any JSON whitespace, around commas and brackets.
    gaps = iter(spaces * 4)
    text = next(gaps) + "[" + next(gaps)
    text += (next(gaps) + "," + next(gaps)).join(json.dumps(row) for row in rows) + next(gaps) + "]" + next(gaps)
    decoded = list(json_array_rows(text))
    assert [row for row, _, _ in decoded] == json.loads(text)
    assert [json.loads(text[start:end]) for _, start, end in decoded] == json.loads(text)


@PROPERTY_SETTINGS
@given(text=st.one_of(st.text(max_size=40), st.text('[]{},:" 0123456789.eE-+truefalsn\\ \t\n', max_size=40)))
def test_any_text_rows_decode_exactly_when_json_loads_does(text: str) -> None:
    # Whatever the text: the same list as json.loads when that is a list, else a ValueError.
    try:
        expected: Any = json.loads(text)
    except (ValueError, RecursionError):
        expected = None
    try:
        rows: Any = [row for row, _, _ in json_array_rows(text)]
    except (ValueError, RecursionError):
        rows = None
    if isinstance(expected, list):
        assert repr(rows) == repr(expected)  # repr: NaN equals itself there
    else:
        assert rows is None, f"{text!r}: rows {rows!r} where json.loads gave {expected!r}"
