"""The WhatsAppInstance spec, parsed and checked beyond what the CRD schema can express."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

INSTANCE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
NUMBER_PATTERN = re.compile(r"^[1-9][0-9]{6,14}$")
DEFAULT_INTEGRATION = "WHATSAPP-BAILEYS"
# Evolution keeps instances in a JavaScript object: these names collide with its properties, so
# Evolution treats them as taken (docs/evolution-api.md §7.8).
RESERVED_INSTANCE_NAMES = frozenset(
    {
        "constructor",
        "__proto__",
        "prototype",
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
BOOLEAN_SETTINGS = ("rejectCall", "groupsIgnore", "alwaysOnline", "readMessages", "readStatus", "syncFullHistory")


class InvalidSpec(ValueError):
    """The spec passed the CRD schema but cannot be used; the message says what to change."""


@dataclass(frozen=True)
class InstanceSpec:
    instance_name: str
    integration: str
    number: str | None
    settings: dict[str, Any]

    @classmethod
    def parse(cls, namespace: str, name: str, spec: dict[str, Any] | None) -> InstanceSpec:
        spec = spec or {}
        instance_name = spec.get("instanceName") or default_instance_name(namespace, name)
        check_instance_name(instance_name)
        integration = spec.get("integration") or DEFAULT_INTEGRATION
        if integration != DEFAULT_INTEGRATION:
            raise InvalidSpec(f"integration {integration!r} is not supported; use {DEFAULT_INTEGRATION}")
        number = spec.get("number") or None
        if number is not None and not NUMBER_PATTERN.match(str(number)):
            raise InvalidSpec(
                "number must be digits only, with the country code and no '+' (for example 5511987654321)"
            )
        return cls(
            instance_name, integration, str(number) if number else None, evolution_settings(spec.get("settings"))
        )


def default_instance_name(namespace: str, name: str) -> str:
    # Kubernetes names may contain dots; Evolution names become URL segments and Socket.IO
    # namespaces, so only [A-Za-z0-9_-] is kept.
    return f"{namespace}-{name}".replace(".", "-")


def check_instance_name(instance_name: str) -> None:
    if not INSTANCE_NAME_PATTERN.match(instance_name):
        raise InvalidSpec(
            f"instance name {instance_name!r} must be 1-128 characters of A-Z, a-z, 0-9, '_' and '-'; "
            "set spec.instanceName explicitly"
        )
    if instance_name in RESERVED_INSTANCE_NAMES:
        raise InvalidSpec(
            f"instance name {instance_name!r} is reserved by Evolution API; choose another spec.instanceName"
        )


def evolution_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The spec's settings as Evolution's create and /settings/set bodies expect them (all keys present)."""
    settings = settings or {}
    body: dict[str, Any] = {key: bool(settings.get(key, False)) for key in BOOLEAN_SETTINGS}
    body["msgCall"] = str(settings.get("msgCall") or "")
    return body
