"""The WhatsAppInstance spec, parsed and checked beyond what the CRD schema can express."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from whatsapp_operator.names import CLUSTER_SERVER_KIND, SERVER_KIND

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
DELETE = "Delete"
ORPHAN = "Orphan"
BOOLEAN_SETTINGS = ("rejectCall", "groupsIgnore", "alwaysOnline", "readMessages", "readStatus", "syncFullHistory")


class InvalidSpec(ValueError):
    """The spec passed the CRD schema but cannot be used; the message says what to change."""


@dataclass(frozen=True)
class ServerRef:
    """An EvolutionServer (in the instance's namespace) or a ClusterEvolutionServer."""

    kind: str
    name: str
    namespace: str | None  # None for the cluster kind

    @property
    def label(self) -> str:
        """How status.server and the metrics name it."""
        return f"{self.kind}/{self.name}" if self.namespace is None else f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def shown(self) -> str:
        """status.server: the namespace is the instance's own, so it is left out."""
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    events: tuple[str, ...]
    by_events: bool
    base64: bool
    headers: tuple[tuple[str, SecretKeyRef], ...]  # header name -> where its value is, sorted by name


@dataclass(frozen=True)
class InstanceSpec:
    instance_name: str
    integration: str
    number: str | None
    settings: dict[str, Any]
    server_ref: ServerRef | None = None
    webhook: WebhookSpec | None = None
    connection_secret: str | None = None
    deletion_policy: str = DELETE

    @classmethod
    def parse(cls, namespace: str, name: str, spec: dict[str, Any] | None) -> InstanceSpec:
        spec = spec or {}
        if not isinstance(spec, dict):
            raise InvalidSpec("spec must be an object")
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
        policy = spec.get("deletionPolicy") or DELETE
        if policy not in (DELETE, ORPHAN):
            raise InvalidSpec(f"deletionPolicy must be {DELETE} or {ORPHAN}")
        connection = spec.get("writeConnectionSecretToRef") or {}
        connection_secret = connection.get("name") if isinstance(connection, dict) else None
        webhook = parse_webhook(spec.get("webhook"))
        return cls(
            instance_name,
            integration,
            str(number) if number else None,
            evolution_settings(spec.get("settings")),
            server_ref=parse_server_ref(namespace, spec.get("serverRef")),
            webhook=webhook,
            connection_secret=str(connection_secret) if connection_secret else None,
            deletion_policy=policy,
        )


def parse_server_ref(namespace: str, ref: Any) -> ServerRef | None:
    if not ref:
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref["name"]:
        raise InvalidSpec("serverRef needs a name")
    kind = ref.get("kind") or SERVER_KIND
    if kind == SERVER_KIND:
        return ServerRef(SERVER_KIND, ref["name"], namespace)
    if kind == CLUSTER_SERVER_KIND:
        return ServerRef(CLUSTER_SERVER_KIND, ref["name"], None)
    raise InvalidSpec(f"serverRef.kind must be {SERVER_KIND} or {CLUSTER_SERVER_KIND}")


def parse_webhook(webhook: Any) -> WebhookSpec | None:
    if not webhook:
        return None
    if not isinstance(webhook, dict) or not isinstance(webhook.get("url"), str):
        raise InvalidSpec("webhook needs a url")
    header_list = webhook.get("headers") or []
    events = webhook.get("events") or []
    if not isinstance(header_list, list) or not isinstance(events, list):
        raise InvalidSpec("webhook.headers and webhook.events must be lists")
    headers: list[tuple[str, SecretKeyRef]] = []
    for header in header_list:
        value_from = header.get("valueFrom") if isinstance(header, dict) else None
        ref = value_from.get("secretKeyRef") if isinstance(value_from, dict) else None
        if (
            not isinstance(header, dict)
            or not isinstance(header.get("name"), str)
            or not isinstance(ref, dict)
            or not ref.get("name")
            or not ref.get("key")
        ):
            raise InvalidSpec("each webhook header needs a name and valueFrom.secretKeyRef {name, key}")
        headers.append((header["name"], SecretKeyRef(str(ref["name"]), str(ref["key"]))))
    return WebhookSpec(
        url=webhook["url"],
        events=tuple(sorted({str(event) for event in events})),
        by_events=bool(webhook.get("byEvents", False)),
        base64=bool(webhook.get("base64", False)),
        headers=tuple(sorted(headers, key=lambda item: item[0].lower())),
    )


def default_instance_name(namespace: str, name: str) -> str:
    # Kubernetes names may contain dots; Evolution names become URL segments and Socket.IO
    # namespaces, so only [A-Za-z0-9_-] is kept.
    return f"{namespace}-{name}".replace(".", "-")


def check_instance_name(instance_name: str) -> None:
    if not isinstance(instance_name, str) or not INSTANCE_NAME_PATTERN.match(instance_name):
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
    if not isinstance(settings, dict):
        raise InvalidSpec("settings must be an object")
    body: dict[str, Any] = {key: bool(settings.get(key, False)) for key in BOOLEAN_SETTINGS}
    body["msgCall"] = str(settings.get("msgCall") or "")
    return body
