"""Operator configuration: one typed object, read from the environment once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from whatsapp_operator.redaction import register_secret


class ConfigError(ValueError):
    """The environment does not describe a usable configuration."""


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
    max_concurrent_status_writes: int = 16
    outage_grace: float = 5.0
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    retry_initial_delay: float = 2.0  # kopf handler retries (create, delete) while Evolution fails
    retry_max_delay: float = 120.0
    metrics_port: int = 9090  # 0 turns the endpoint off
    qr_overdue_after: float = 90.0  # Evolution normally shows the first QR within seconds

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        url = env.get("EVOLUTION_API_URL", "").strip().rstrip("/")
        if not url:
            raise ConfigError("EVOLUTION_API_URL is not set (for example http://evolution-api:8080)")
        if not url.startswith(("http://", "https://")):
            raise ConfigError("EVOLUTION_API_URL must start with http:// or https://")
        api_key = _read_api_key(env)
        try:
            mode = WebsocketMode(env.get("EVOLUTION_WEBSOCKET_MODE", "auto").strip().lower())
        except ValueError:
            raise ConfigError("EVOLUTION_WEBSOCKET_MODE must be one of: global, instance, auto") from None
        return cls(
            evolution_url=url,
            evolution_api_key=api_key,
            websocket_mode=mode,
            resync_interval=_positive_float(env, "WHATSAPP_OPERATOR_RESYNC_SECONDS", 300.0),
            request_timeout=_positive_float(env, "EVOLUTION_REQUEST_TIMEOUT_SECONDS", 30.0),
            max_concurrent_requests=int(_positive_float(env, "EVOLUTION_MAX_CONCURRENT_REQUESTS", 8)),
            metrics_port=_port(env, "WHATSAPP_OPERATOR_METRICS_PORT", 9090),
        )


def _read_api_key(env: Mapping[str, str]) -> str:
    key = env.get("EVOLUTION_API_KEY", "").strip()
    key_file = env.get("EVOLUTION_API_KEY_FILE", "").strip()
    if key and key_file:
        raise ConfigError("set only one of EVOLUTION_API_KEY and EVOLUTION_API_KEY_FILE")
    if key_file:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"cannot read EVOLUTION_API_KEY_FILE: {error.strerror}") from None
    if not key:
        raise ConfigError("EVOLUTION_API_KEY (or EVOLUTION_API_KEY_FILE) is not set")
    register_secret(key)
    return key


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name} must be a port number (0 turns it off), got {raw!r}")
    return int(raw)
