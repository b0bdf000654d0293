"""EvolutionServer and ClusterEvolutionServer objects: what they declare, their Secrets, their status."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass
from typing import Any

from whatsapp_operator.config import WebsocketMode
from whatsapp_operator.engine.server import Endpoint, EvolutionServer
from whatsapp_operator.engine.spec import SecretKeyRef, ServerRef
from whatsapp_operator.evolution.errors import EvolutionError
from whatsapp_operator.kube.client import KubeClient, KubeError
from whatsapp_operator.names import CLUSTER_SERVER_KIND, CLUSTER_SERVER_PLURAL, SERVER_KIND, SERVER_PLURAL
from whatsapp_operator.reasons import Reason
from whatsapp_operator.values import utc_now

logger = logging.getLogger("whatsapp_operator.kube.servers")
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MAX_SECRET_VALUE = 64 * 1024


def operator_namespace() -> str:
    """Where ClusterEvolutionServer Secrets live: the operator's own namespace."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            return file.read().strip() or "whatsapp-operator"
    except OSError:
        return "whatsapp-operator"


class ServerInUse(Exception):
    def __init__(self, label: str, users: int):
        super().__init__(f"{label} is still used by {users} WhatsAppInstance(s); it is removed after them")
        self.users = users


@dataclass(frozen=True)
class DeclaredServer:
    ref: ServerRef
    uid: str
    generation: int | None
    url: str
    api_key: SecretKeyRef
    secret_namespace: str
    websocket_mode: WebsocketMode
    ca: SecretKeyRef | None
    insecure_skip_verify: bool

    @property
    def plural(self) -> str:
        return CLUSTER_SERVER_PLURAL if self.ref.namespace is None else SERVER_PLURAL


@dataclass(frozen=True)
class ServerHealth:
    """What the runtime learnt of a server, for its status."""

    version: str | None = None
    whatsapp_web_version: str | None = None
    problem: EvolutionError | None = None


class ServerDeclarations:
    """Owns the declared servers as read from their objects: parsing, their Secrets (read only the
    one named), and their status. It never calls Evolution and owns no connection."""

    def __init__(self, kube: KubeClient, operator_namespace: str):
        self.kube = kube
        self.operator_namespace = operator_namespace
        self._declared: dict[str, DeclaredServer] = {}
        self._written: dict[str, dict[str, Any]] = {}
        self._health: dict[str, ServerHealth] = {}  # the last version read, kept between reports

    def all(self) -> list[DeclaredServer]:
        return list(self._declared.values())

    def get(self, label: str) -> DeclaredServer | None:
        """The declaration of the server whose label (`ServerRef.label`) this is."""
        return self._declared.get(label)

    def missing(self, ref: ServerRef) -> EvolutionError:
        where = "" if ref.namespace is None else f" in namespace {ref.namespace}"
        return EvolutionError(
            Reason.SERVER_NOT_FOUND,
            f"{ref.kind} {ref.name}{where} does not exist; the instance waits for it",
        )

    def remember(self, body: dict[str, Any]) -> DeclaredServer:
        declared = parse_server(body, self.operator_namespace)
        self._declared[declared.ref.label] = declared
        return declared

    def forget(self, ref: ServerRef) -> None:
        self._declared.pop(ref.label, None)
        self._written.pop(ref.label, None)
        self._health.pop(ref.label, None)

    async def endpoint(self, declared: DeclaredServer) -> Endpoint:
        """The endpoint with the key (and CA bundle) read from their Secrets now."""
        api_key = await self._secret_value(declared, declared.api_key)
        ca = await self._secret_value(declared, declared.ca) if declared.ca is not None else None
        return Endpoint(declared.url, api_key, declared.websocket_mode, ca, declared.insecure_skip_verify)

    async def _secret_value(self, declared: DeclaredServer, ref: SecretKeyRef) -> str:
        where = f"Secret {declared.secret_namespace}/{ref.name}"
        try:
            secret = await self.kube.get_secret(declared.secret_namespace, ref.name)
        except KubeError as error:
            raise EvolutionError(Reason.SERVER_KEY_MISSING, f"cannot read {where}: {error}") from None
        if secret is None:
            raise EvolutionError(Reason.SERVER_KEY_MISSING, f"{where} of {declared.ref.shown} does not exist")
        value = secret_value(secret, ref.key)
        if value is None:
            raise EvolutionError(
                Reason.SERVER_KEY_MISSING, f"{where} of {declared.ref.shown} has no usable key {ref.key!r}"
            )
        return value

    async def report(
        self,
        server: EvolutionServer | None,
        declared: DeclaredServer,
        instances: int,
        health: ServerHealth | None = None,
        *,
        deleting: bool = False,
    ) -> None:
        """Write the server object's status (only what changed since the last write)."""
        if health is None:
            health = self._health.get(declared.ref.label, ServerHealth())
        self._health[declared.ref.label] = health
        problem = (server.problem if server is not None else None) or health.problem
        connected = server is not None and server.connected
        if problem is not None:
            ready = ("False", problem.reason, problem.message)
        elif server is not None and instances and not connected:
            ready = ("False", "Reconnecting", "The Socket.IO event stream is not connected; reconnecting.")
        else:
            ready = ("True", "Available", "Evolution API answers" + (" and streams events." if connected else "."))
        conditions = [_condition("Ready", *ready, declared.generation)]
        if declared.insecure_skip_verify:
            conditions.append(
                _condition(
                    "TLSVerified",
                    "False",
                    "InsecureSkipVerify",
                    "tls.insecureSkipVerify is true: the server's certificate is not checked.",
                    declared.generation,
                )
            )
        if deleting:
            conditions.append(
                _condition(
                    "InUse",
                    "True",
                    "InstancesRemain",
                    f"Deletion waits: {instances} WhatsAppInstance(s) still use this server.",
                    declared.generation,
                )
            )
        status: dict[str, Any] = {
            "observedGeneration": declared.generation,
            "socketConnected": connected,
            "instances": instances,
            "message": ready[2],
        }
        if health.version is not None:
            status["version"] = health.version
        if health.whatsapp_web_version is not None:
            status["whatsappWebVersion"] = health.whatsapp_web_version
        previous = self._written.get(declared.ref.label)
        status["conditions"] = _keep_transition_times(conditions, (previous or {}).get("conditions"))
        if previous == status:
            return
        try:
            await self.kube.patch_custom_status(declared.plural, declared.ref.namespace, declared.ref.name, status)
        except KubeError as error:
            logger.warning("Could not write the status of %s: %s", declared.ref.label, error)
            return
        self._written[declared.ref.label] = status


class InvalidServer(ValueError):
    """A server object this operator cannot use; the message says what is wrong."""


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidServer(f"{where} must be an object")
    return value


def _text(value: Any, where: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidServer(f"{where} must be a string")
    return value


def parse_server(body: dict[str, Any], operator_namespace: str) -> DeclaredServer:
    """The declaration of an EvolutionServer or ClusterEvolutionServer; raises InvalidServer."""
    meta = _object(body.get("metadata"), "metadata")
    spec = _object(body.get("spec"), "spec")
    name = _text(meta.get("name"), "metadata.name")
    if not name:
        raise InvalidServer("metadata.name is missing")
    namespace = _text(meta.get("namespace"), "metadata.namespace")
    cluster = body.get("kind") == CLUSTER_SERVER_KIND or not namespace
    ref = ServerRef(CLUSTER_SERVER_KIND if cluster else SERVER_KIND, name, None if cluster else namespace)
    key_ref = _object(spec.get("apiKeySecretRef"), "spec.apiKeySecretRef")
    tls = _object(spec.get("tls"), "spec.tls")
    ca_ref = _object(tls.get("caSecretRef"), "spec.tls.caSecretRef")
    try:
        mode = WebsocketMode(_object(spec.get("websocket"), "spec.websocket").get("mode") or WebsocketMode.AUTO.value)
    except ValueError:
        mode = WebsocketMode.AUTO
    generation = meta.get("generation")
    return DeclaredServer(
        ref=ref,
        uid=str(meta.get("uid", "")),
        generation=generation if isinstance(generation, int) and not isinstance(generation, bool) else None,
        url=_text(spec.get("url"), "spec.url").rstrip("/"),
        api_key=SecretKeyRef(
            _text(key_ref.get("name"), "spec.apiKeySecretRef.name"),
            _text(key_ref.get("key"), "spec.apiKeySecretRef.key"),
        ),
        secret_namespace=operator_namespace if cluster else namespace,
        websocket_mode=mode,
        ca=SecretKeyRef(
            _text(ca_ref.get("name"), "spec.tls.caSecretRef.name"),
            _text(ca_ref.get("key"), "spec.tls.caSecretRef.key") or "ca.crt",
        )
        if ca_ref
        else None,
        insecure_skip_verify=tls.get("insecureSkipVerify") is True,
    )


def secret_value(secret: Any, key: str) -> str | None:
    """One value of a Secret as text; None when absent, empty, not base64, not UTF-8 or oversized."""
    data = secret.get("data") if isinstance(secret, dict) else None
    raw = data.get(key) if isinstance(data, dict) else None
    if not isinstance(raw, str) or not raw or len(raw) > MAX_SECRET_VALUE * 2:
        return None
    try:
        value = base64.b64decode(raw, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return value or None


def _condition(kind: str, status: str, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "observedGeneration": generation,
        "lastTransitionTime": utc_now(),
    }


def _keep_transition_times(conditions: list[dict[str, Any]], previous: Any) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous or [] if isinstance(c, dict)}
    for condition in conditions:
        old = before.get(condition["type"])
        if old is not None and old.get("status") == condition["status"]:
            condition["lastTransitionTime"] = old.get("lastTransitionTime")
    return conditions
