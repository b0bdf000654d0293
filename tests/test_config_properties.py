"""Properties of `OperatorConfig.from_env` over arbitrary environments.

Whatever text the environment holds, `from_env` either returns a configuration whose every value is
within the range README.md documents, or raises `ConfigError` whose one-line message starts with the
name of a setting and never shows the API key. Nothing else may escape (no ValueError from int(), no
UnicodeDecodeError from a key file, no traceback).

The budget comes from the hypothesis profile (tests/conftest.py); bench/fuzz.py runs the same
properties with the "long" profile.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from whatsapp_operator import config as config_module
from whatsapp_operator.config import ConfigError, OperatorConfig, WebsocketMode

SETTINGS = (
    "EVOLUTION_API_URL",
    "EVOLUTION_API_KEY",
    "EVOLUTION_API_KEY_FILE",
    "EVOLUTION_WEBSOCKET_MODE",
    "WHATSAPP_OPERATOR_RESYNC_SECONDS",
    "WHATSAPP_OPERATOR_METRICS_PORT",
    "EVOLUTION_REQUEST_TIMEOUT_SECONDS",
    "EVOLUTION_MAX_CONCURRENT_REQUESTS",
    "EVOLUTION_MAX_CONCURRENT_CONNECTS",
    "WHATSAPP_OPERATOR_DRIFT_SECONDS",
    "WHATSAPP_OPERATOR_FLAPPING_CHANGES",
    "WHATSAPP_OPERATOR_FLAPPING_WINDOW_SECONDS",
)
# The documented ranges (README.md, Configuration), written out here rather than imported.
RESYNC = (10.0, 86_400.0)
REQUEST_TIMEOUT = (1.0, 600.0)
CONCURRENCY = (1, 1024)
PORT = (0, 65535)
DRIFT = (60.0, 86_400.0)
FLAPPING_CHANGES = (2, 1000)
FLAPPING_WINDOW = (60.0, 86_400.0)
# Every generated key carrying this marker is distinctive: no message may ever contain the marker.
MARKER = "Zq9SECRETk3y"
CONFIG_SOURCE = Path(config_module.__file__).read_text(encoding="utf-8")
KEY_FILE = "<the key file>"  # replaced by the path of a file holding the drawn content

# Any character, lone surrogates included: os.environ decodes undecodable bytes to surrogates.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
NASTY = st.sampled_from(
    [
        "\n",
        "\r\n",
        "\x00",
        "\x1b[31m",
        "\x7f",
        "\x85",
        "\u202e",
        "\u2066",
        "\u200f",
        " ",
        "\t",
        "\u00a0",
        "\u2028",
        "é",
        "٩",
        "９",
        "\udcff",
        "@",
        "?",
        "#",
        ":",
        "/",
        "[",
        "]",
        "%",
        ".",
    ]
)


def near(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """Mostly good values (so that every setting gets checked, not only the first ones); otherwise bad
    ones, arbitrary text, and values with a little arbitrary text inserted, prepended or appended."""
    base = st.sampled_from(good + bad)
    noise = st.one_of(ANY_TEXT, NASTY)
    anything = st.one_of(
        st.sampled_from(bad),
        ANY_TEXT,
        st.builds(lambda a, b: a + b, base, noise),
        st.builds(lambda a, b: a + b, noise, base),
        st.builds(lambda a, b, c: a[: len(a) // 2] + b + c[len(c) // 2 :], base, noise, base),
    )
    return st.integers(0, 99).flatmap(lambda roll: st.sampled_from(good) if roll < 85 else anything)


URLS = near(
    [
        "http://evo:8080",
        "https://evolution-api.evolution.svc.cluster.local:8080/",
        "http://127.0.0.1:1",
        "http://[::1]:65535/api",
        "HTTP://Evo",
        "http://evo_api",
        "http://evo.",
        "http://e/v/o/",
    ],
    [
        "http://evo:65536",
        "http://u:p@evo",
        "http://evo/?a=1",
        "http://evo#x",
        "http://",
        "http://:80",
        "ftp://evo",
        "http://evo:٩٠",
        "http://999.1.1.1",
        "http://[fe80::1%25eth0]:80",
        "http://evo:0",
    ],
)
SECONDS = near(
    ["10", "300", "86400", "1", "600", "30", "1e3", "5.", ".5e2", ""],
    ["86400.5", "600.0001", "0.5", "1e999", "nan", "inf", "-inf", "-1", "0", "+30", "1_000", "٣٠"],
)
LONG_SECONDS = near(
    ["60", "600", "86400", "60.0", "1e3", "3600.5", ""],
    ["59.999", "86400.5", "1e999", "nan", "inf", "-600", "0", "+600", "6_00", "٦٠٠", "600s"],
)
CHANGES = near(["2", "6", "1000", " 12 ", "0600", ""], ["1", "0", "1001", "6.0", "+6", "-6", "٦", "1" * 20])
WHOLE = near(
    ["1", "8", "1024", "0", "65535", "9090", "", " 8 "], ["1025", "0.5", "65536", "٩٠٩٠", "-1", "+8", "1" * 20]
)
MODES = near(["auto", "global", "instance", "GLOBAL", " Instance ", ""], ["both", "globa", "ınstance"])
PRINTABLE_KEYS = st.text(
    st.sampled_from(string.ascii_letters + string.digits + string.punctuation), min_size=1, max_size=30
)
KEYS = st.one_of(
    PRINTABLE_KEYS,
    ANY_TEXT,
    st.builds(
        lambda a, b: a + MARKER + b,
        st.one_of(PRINTABLE_KEYS, ANY_TEXT, NASTY),
        st.one_of(PRINTABLE_KEYS, ANY_TEXT, NASTY, st.just("")),
    ),
)
KEY_FILE_CONTENT = st.one_of(
    KEYS.map(lambda key: key.encode("utf-8", "surrogatepass") + b"\n"),
    st.binary(max_size=40),
    st.builds(lambda key: b"\xff" + key.encode("utf-8", "surrogatepass"), KEYS),
    st.just(b"k" * 70_000),
)
VALUES = {
    "EVOLUTION_API_URL": URLS,
    "EVOLUTION_API_KEY": KEYS,
    "EVOLUTION_API_KEY_FILE": st.one_of(st.just(KEY_FILE), ANY_TEXT),
    "EVOLUTION_WEBSOCKET_MODE": MODES,
    "WHATSAPP_OPERATOR_RESYNC_SECONDS": SECONDS,
    "WHATSAPP_OPERATOR_METRICS_PORT": WHOLE,
    "EVOLUTION_REQUEST_TIMEOUT_SECONDS": SECONDS,
    "EVOLUTION_MAX_CONCURRENT_REQUESTS": WHOLE,
    "EVOLUTION_MAX_CONCURRENT_CONNECTS": WHOLE,
    "WHATSAPP_OPERATOR_DRIFT_SECONDS": LONG_SECONDS,
    "WHATSAPP_OPERATOR_FLAPPING_CHANGES": CHANGES,
    "WHATSAPP_OPERATOR_FLAPPING_WINDOW_SECONDS": LONG_SECONDS,
}
# How often each setting is present: a URL and a key most of the time, so that valid
# configurations come up too; the key file in a quarter of the cases.
PRESENT = {"EVOLUTION_API_URL": 0.9, "EVOLUTION_API_KEY": 0.8, "EVOLUTION_API_KEY_FILE": 0.25}


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    env = {}
    for name, values in VALUES.items():
        if draw(st.integers(0, 99)) < 100 * PRESENT.get(name, 0.5):
            env[name] = draw(values)
    return env


ENVIRONMENTS = environments()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-properties") / "apikey"


@pytest.fixture(scope="module", autouse=True)
def no_secret_registration() -> Any:
    # from_env registers the key for redaction, process-wide: thousands of random "keys" would
    # make every later redact() mask ordinary words in the other tests.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config_module, "register_secret", lambda value: None)
        yield


def within(value: float, bounds: tuple[float, float]) -> bool:
    return math.isfinite(value) and bounds[0] <= value <= bounds[1]


def check_valid(config: OperatorConfig) -> None:
    url = config.evolution_url
    parts = urlsplit(url)
    assert parts.scheme in ("http", "https")
    assert parts.hostname
    assert parts.username is None and parts.password is None and "@" not in url
    assert parts.query == "" and parts.fragment == "" and "?" not in url and "#" not in url
    assert parts.port is None or 1 <= parts.port <= 65535
    assert all("\x21" <= char <= "\x7e" for char in url) and not url.endswith("/")
    httpx.URL(url)  # the REST client accepts it
    key = config.evolution_api_key
    assert 1 <= len(key) <= 4096 and all("\x21" <= char <= "\x7e" for char in key)
    assert isinstance(config.websocket_mode, WebsocketMode)
    assert within(config.resync_interval, RESYNC)
    assert within(config.request_timeout, REQUEST_TIMEOUT)
    assert type(config.max_concurrent_requests) is int
    assert CONCURRENCY[0] <= config.max_concurrent_requests <= CONCURRENCY[1]
    assert type(config.metrics_port) is int and PORT[0] <= config.metrics_port <= PORT[1]
    assert within(config.drift_interval, DRIFT)
    assert type(config.flapping_changes) is int
    assert FLAPPING_CHANGES[0] <= config.flapping_changes <= FLAPPING_CHANGES[1]
    assert within(config.flapping_window, FLAPPING_WINDOW)


def check_error(error: ConfigError, env: dict[str, str], key: str | None) -> None:
    message = str(error)
    assert error.setting in SETTINGS and message.startswith(f"{error.setting}: ")
    assert message.isascii() and message.isprintable(), "one printable line"
    assert MARKER not in message
    if error.setting in ("WHATSAPP_OPERATOR_DRIFT_SECONDS", "WHATSAPP_OPERATOR_FLAPPING_WINDOW_SECONDS"):
        assert message.startswith(f"{error.setting}: must be a number of seconds from 60 to 86400, got ")
    if error.setting == "WHATSAPP_OPERATOR_FLAPPING_CHANGES":
        assert message.startswith(f"{error.setting}: must be a whole number from 2 to 1000, got ")
    if key:
        others = [value for name, value in env.items() if name not in ("EVOLUTION_API_KEY",)]
        # A key that is part of the module's own text (hypothesis mines its string constants: it
        # found "evolutio", inside "http://evolution-api:8080") cannot be told apart from that text.
        distinctive = len(key) >= 8 and not any(key in value for value in others) and key not in CONFIG_SOURCE
        assert not distinctive or key not in message
        assert not distinctive or ascii(key)[1:-1] not in message


@pytest.mark.properties
@settings()
@given(env=ENVIRONMENTS, file_content=KEY_FILE_CONTENT)
def test_from_env_gives_a_valid_config_or_names_the_setting(
    env: dict[str, str], file_content: bytes, key_file: Path
) -> None:
    key = env.get("EVOLUTION_API_KEY")
    if env.get("EVOLUTION_API_KEY_FILE") == KEY_FILE:
        key_file.write_bytes(file_content)
        env["EVOLUTION_API_KEY_FILE"] = str(key_file)
        if not key or not key.strip():
            key = file_content.decode("utf-8", "replace")
    try:
        config = OperatorConfig.from_env(env)
    except ConfigError as error:
        event(f"refused: {error.setting}")  # --hypothesis-show-statistics shows the spread
        check_error(error, env, key)
    else:
        event("valid")
        check_valid(config)


@pytest.mark.properties
@settings()
@given(env=ENVIRONMENTS)
def test_from_env_is_deterministic_and_does_not_change_the_mapping(env: dict[str, str]) -> None:
    env.pop("EVOLUTION_API_KEY_FILE", None)  # no file reads here
    before = dict(env)

    def outcome() -> Any:
        try:
            return OperatorConfig.from_env(env)
        except ConfigError as error:
            return str(error)

    assert outcome() == outcome()
    assert env == before
