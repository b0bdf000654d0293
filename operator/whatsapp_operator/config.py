"""Operator configuration: one typed object, read from the environment and checked once at start-up.

Every setting is validated here, before anything else starts: a bad value is a `ConfigError`
whose message is `<setting>: <why>`, one line, which the command prints as
`whatsapp-operator: <setting>: <why>` before exiting with status 2. The allowed ranges below are
the ones README.md's Configuration table documents. The API key never appears in a message.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from whatsapp_operator.redaction import register_secret

# Allowed ranges (inclusive) of the numeric settings; README.md's Configuration table documents them.
RESYNC_SECONDS_RANGE = (10.0, 86_400.0)  # 10 s .. 1 day
REQUEST_TIMEOUT_SECONDS_RANGE = (1.0, 600.0)  # 1 s .. 10 min
NUDGE_SECONDS_RANGE = (5.0, 86_400.0)  # 5 s .. 1 day
MAX_CONCURRENT_REQUESTS_RANGE = (1, 1024)
METRICS_PORT_RANGE = (0, 65535)  # 0 turns the endpoint off
DRIFT_SECONDS_RANGE = (60.0, 86_400.0)  # 1 min .. 1 day
FLAPPING_CHANGES_RANGE = (2, 1000)
FLAPPING_WINDOW_SECONDS_RANGE = (60.0, 86_400.0)  # 1 min .. 1 day
MAX_API_KEY_LENGTH = 4096
_MAX_KEY_FILE_BYTES = 64 * 1024

# A decimal number in ASCII (float() alone would also take "nan", "inf", "1_0" and Arabic-Indic digits).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")  # what httpx validates as an IPv4 address
_SHOWN_CHARACTERS = 40
_SHOWN_PATH_CHARACTERS = 1000


class ConfigError(ValueError):
    """The environment does not describe a usable configuration: `<setting>: <why>`, one line."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"{setting}: {reason}")


class WebsocketMode(StrEnum):
    GLOBAL = "global"  # one root-namespace connection; Evolution runs with WEBSOCKET_GLOBAL_EVENTS=true
    INSTANCE = "instance"  # one namespace per instance, multiplexed over one connection
    AUTO = "auto"  # join both; switch to global as soon as the root namespace delivers an event


@dataclass(frozen=True)
class OperatorConfig:
    evolution_url: str
    evolution_api_key: str = field(repr=False)
    websocket_mode: WebsocketMode = WebsocketMode.AUTO
    resync_interval: float = 300.0
    request_timeout: float = 30.0
    max_concurrent_requests: int = 8
    # Calls that mostly wait inside Evolution (connect sleeps 2 s after starting a session) have a
    # bound of their own, so they do not hold the slots that bound load (docs/evolution-api.md §3.3).
    max_concurrent_connects: int = 64
    max_concurrent_status_writes: int = 16
    outage_grace: float = 5.0
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    retry_initial_delay: float = 2.0  # kopf handler retries (create, delete) while Evolution fails
    retry_max_delay: float = 120.0
    metrics_port: int = 9090  # 0 turns the endpoint off
    # An object still without the operator's finalizer (or still holding it, deleted and done with)
    # this long after kopf should have patched it is nudged: kopf waits for a new watch event after
    # a failed finalizer patch it does not retry (409).
    stuck_object_after: float = 60.0
    nudge_interval: float = 60.0  # how often objects kopf left waiting are looked for
    qr_overdue_after: float = 90.0  # Evolution normally shows the first QR within seconds
    # How often each instance's settings in Evolution are compared with its spec: two reads per
    # instance per interval, so an hour keeps it at 2 calls per instance-hour (README, "Drift repair").
    drift_interval: float = 3600.0
    # More than `flapping_changes` connection changes within `flapping_window` seconds: flapping
    # (InstanceState.configure_flapping).
    flapping_changes: int = 6
    flapping_window: float = 600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """The configuration the environment describes; `ConfigError` names the first bad setting.

        An unset or empty optional setting takes its default.
        """
        env = os.environ if environ is None else environ
        url = _evolution_url(env)
        api_key = _read_api_key(env)
        mode = _websocket_mode(env)
        config = cls(
            evolution_url=url,
            evolution_api_key=api_key,
            websocket_mode=mode,
            resync_interval=_seconds(env, "WHATSAPP_OPERATOR_RESYNC_SECONDS", 300.0, RESYNC_SECONDS_RANGE),
            request_timeout=_seconds(env, "EVOLUTION_REQUEST_TIMEOUT_SECONDS", 30.0, REQUEST_TIMEOUT_SECONDS_RANGE),
            # One setting for both: look every N seconds for objects kopf left waiting N seconds.
            nudge_interval=(nudge := _seconds(env, "WHATSAPP_OPERATOR_NUDGE_SECONDS", 60.0, NUDGE_SECONDS_RANGE)),
            stuck_object_after=nudge,
            max_concurrent_requests=_whole_number(
                env, "EVOLUTION_MAX_CONCURRENT_REQUESTS", 8, MAX_CONCURRENT_REQUESTS_RANGE
            ),
            max_concurrent_connects=_whole_number(
                env, "EVOLUTION_MAX_CONCURRENT_CONNECTS", 64, MAX_CONCURRENT_REQUESTS_RANGE
            ),
            metrics_port=_whole_number(
                env,
                "WHATSAPP_OPERATOR_METRICS_PORT",
                9090,
                METRICS_PORT_RANGE,
                what="a port number",
                note=" (0 turns the endpoint off)",
            ),
            drift_interval=_seconds(env, "WHATSAPP_OPERATOR_DRIFT_SECONDS", 3600.0, DRIFT_SECONDS_RANGE),
            flapping_changes=_whole_number(env, "WHATSAPP_OPERATOR_FLAPPING_CHANGES", 6, FLAPPING_CHANGES_RANGE),
            flapping_window=_seconds(
                env, "WHATSAPP_OPERATOR_FLAPPING_WINDOW_SECONDS", 600.0, FLAPPING_WINDOW_SECONDS_RANGE
            ),
        )
        register_secret(api_key)  # only once the whole configuration is valid
        return config


# -- the Evolution API URL -----------------------------------------------------------------------


def _evolution_url(env: Mapping[str, str]) -> str:
    """http(s)://host[:port][/path]: no credentials, query or fragment; a trailing slash is dropped."""
    name = "EVOLUTION_API_URL"
    raw = env.get(name, "").strip()
    if not raw:
        raise ConfigError(name, "not set (for example http://evolution-api:8080)")
    if not all("\x21" <= char <= "\x7e" for char in raw):
        raise ConfigError(
            name,
            "must be printable ASCII without spaces or control characters "
            "(write an international host name in its xn-- form)",
        )
    scheme, separator, rest = raw.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        raise ConfigError(name, "must start with http:// or https://")
    if "@" in rest:
        # The URL appears in error messages, and so in status: no user:password in it. Anywhere,
        # not only before the first "/": a password may hold a "/" that moves it into the path.
        raise ConfigError(
            name,
            "must not contain a user name or password (user:password@) or any '@'; "
            "the API key goes in EVOLUTION_API_KEY",
        )
    authority, slash, path = rest.partition("/")
    if "?" in rest or "#" in rest:
        raise ConfigError(name, "must not have a query (?...) or a fragment (#...)")
    host, port = _split_authority(name, authority)
    _check_host(name, host)
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise ConfigError(name, f"the port must be a number from 1 to 65535, got {_shown(port)}")
    return f"{scheme.lower()}://{authority}{slash}{path}".rstrip("/")


def _split_authority(name: str, authority: str) -> tuple[str, str | None]:
    """`host[:port]` or `[ipv6][:port]` -> (host, port or None)."""
    if authority.startswith("["):
        address, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(name, "has a malformed IPv6 address (write it as http://[::1]:8080)")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ConfigError(name, f"has an invalid IPv6 address {_shown(address)}") from None
        return f"[{address}]", after[1:] if after else None
    host, colon, port = authority.partition(":")
    return host, port if colon else None


def _check_host(name: str, host: str) -> None:
    if not host:
        raise ConfigError(name, "has no host name (for example http://evolution-api:8080)")
    if host.startswith("["):
        return  # an IPv6 address, checked already
    if _IPV4_STYLE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(name, f"has an invalid IPv4 address {_shown(host)}") from None
        return
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(
            name,
            f"has an invalid host name {_shown(host)} (letters, digits, '-' and '_' "
            "in dot-separated labels of up to 63 characters)",
        )


# -- the API key ---------------------------------------------------------------------------------


def _read_api_key(env: Mapping[str, str]) -> str:
    key = env.get("EVOLUTION_API_KEY", "").strip()
    key_file = env.get("EVOLUTION_API_KEY_FILE", "").strip()
    if key and key_file:
        raise ConfigError("EVOLUTION_API_KEY_FILE", "set only one of EVOLUTION_API_KEY and EVOLUTION_API_KEY_FILE")
    if key_file:
        return _check_api_key("EVOLUTION_API_KEY_FILE", _read_key_file(key_file), "the key in the file")
    if not key:
        raise ConfigError("EVOLUTION_API_KEY", "not set (set it, or EVOLUTION_API_KEY_FILE to a file holding it)")
    return _check_api_key("EVOLUTION_API_KEY", key, "the key")


def _read_key_file(path: str) -> str:
    name = "EVOLUTION_API_KEY_FILE"
    if "\x00" in path:
        raise ConfigError(name, "the path contains a NUL character")
    shown = _shown(path, _SHOWN_PATH_CHARACTERS)
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(name, f"cannot read {shown}: {error.strerror or type(error).__name__}") from None
    except UnicodeError:  # a lone surrogate the file system encoding cannot carry
        raise ConfigError(name, f"cannot read {shown}: the path cannot be encoded for the file system") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigError(name, f"{shown} is larger than {_MAX_KEY_FILE_BYTES} bytes: not an API key")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(name, f"{shown} is not UTF-8 text") from None
    key = text.strip()  # a trailing newline (echo, most editors) is not part of the key
    if not key:
        raise ConfigError(name, f"{shown} is empty")
    return key


def _check_api_key(name: str, key: str, what: str) -> str:
    """The key travels in an HTTP header and a URL query: visible ASCII only. Never shown in a message."""
    for char in key:
        if "\x21" <= char <= "\x7e":
            continue
        if char in "\r\n\u2028\u2029\x85\x0b\x0c":
            problem = "a line break"
        elif char.isspace():
            problem = "whitespace"
        elif char.isascii() or "\x80" <= char <= "\x9f":
            problem = "a control character"
        else:
            problem = "a character outside printable ASCII"
        raise ConfigError(
            name,
            f"{what} contains {problem} (the key is not shown); an Evolution API key is printable ASCII without spaces",
        )
    if len(key) > MAX_API_KEY_LENGTH:
        raise ConfigError(name, f"{what} is longer than {MAX_API_KEY_LENGTH} characters")
    return key


# -- the other settings --------------------------------------------------------------------------


def _websocket_mode(env: Mapping[str, str]) -> WebsocketMode:
    name = "EVOLUTION_WEBSOCKET_MODE"
    raw = env.get(name, "").strip()
    if not raw:
        return WebsocketMode.AUTO
    if raw.isascii():
        try:
            return WebsocketMode(raw.lower())
        except ValueError:
            pass
    raise ConfigError(name, f"must be one of: global, instance, auto; got {_shown(raw)}")


def _seconds(env: Mapping[str, str], name: str, default: float, bounds: tuple[float, float]) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    low, high = bounds
    expected = f"a number of seconds from {low:g} to {high:g}"
    if not _DECIMAL.fullmatch(raw):
        raise ConfigError(name, f"must be {expected}, got {_shown(raw)}")
    value = float(raw)
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(name, f"must be {expected}, got {_shown(raw)}")
    return value


def _whole_number(
    env: Mapping[str, str],
    name: str,
    default: int,
    bounds: tuple[int, int],
    what: str = "a whole number",
    note: str = "",
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    low, high = bounds
    # ASCII digits only ("٩".isdigit() is True too); the length check keeps int() away from huge inputs.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and low <= int(raw) <= high):
        raise ConfigError(name, f"must be {what} from {low} to {high}{note}, got {_shown(raw)}")
    return int(raw)


def _shown(value: str, limit: int = _SHOWN_CHARACTERS) -> str:
    """A value quoted for a one-line message: escaped to ASCII, at most `limit` characters."""
    if len(value) > limit:
        return ascii(value[:limit]) + "..."
    return ascii(value)
