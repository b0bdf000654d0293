"""The Kubernetes side of `kubectl whatsapp`: logging in, the WhatsAppInstance calls, and their failures.

Owns `connect()` (kubeconfig like kubectl, else in-cluster, and the default namespace), `KubeApi`
(get, list, watch and merge-patch of WhatsAppInstances on the client's CustomObjectsApi, behind
the `Api` protocol that tests replace), the annotation patches that ask the operator for an action,
and the one-line messages for the API's errors. The API's names (group, version, plural,
annotations) come from `whatsapp_operator.names`, never spelled here.

It may not print, parse arguments or format objects for the terminal: `commands.py` does the
first two and `rendering.py` the last (its `one_line()` sanitizes the error text quoted here).
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from whatsapp_operator.cli.kubectl.rendering import one_line
from whatsapp_operator.names import GROUP, PLURAL, RECONNECT_ANNOTATION, RESOURCE, VERSION

_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class PluginError(Exception):
    """A failure worth one line on stderr and exit code 1."""


class Api(Protocol):
    def get(self, namespace: str, name: str) -> dict[str, Any]: ...
    def list(self, namespace: str | None) -> list[dict[str, Any]]: ...
    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def watch(
        self, namespace: str, name: str, resource_version: str | None
    ) -> Iterator[tuple[str, dict[str, Any]]]: ...


class KubeApi:
    """The four calls the plugin makes, on the kubernetes client's CustomObjectsApi."""

    def __init__(self, custom_objects: Any, watch_factory: Callable[[], Any] | None = None):
        self.custom_objects = custom_objects
        if watch_factory is None:
            import kubernetes.watch

            watch_factory = kubernetes.watch.Watch
        self.watch_factory = watch_factory

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom_objects.get_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, PLURAL, name
        )

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            result = self.custom_objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            result = self.custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return list(result.get("items") or [])

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        # The client sends a dict body to this endpoint as application/merge-patch+json.
        return self.custom_objects.patch_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, PLURAL, name, body
        )

    def watch(self, namespace: str, name: str, resource_version: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        kwargs: dict[str, Any] = {"field_selector": f"metadata.name={name}"}
        if resource_version:
            kwargs["resource_version"] = resource_version
        stream = self.watch_factory().stream(
            self.custom_objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            **kwargs,
        )
        for event in stream:
            yield str(event.get("type")), event.get("raw_object") or event.get("object") or {}


def connect(kubeconfig: str | None = None, context: str | None = None) -> tuple[Api, str]:
    """Log in like kubectl (kubeconfig, else in-cluster); returns the API and the default namespace."""
    import kubernetes.client
    import kubernetes.config

    logging.getLogger("urllib3").setLevel(logging.ERROR)  # no retry warnings on stderr
    try:
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        namespace = _kubeconfig_namespace(kubeconfig, context)
    except (kubernetes.config.ConfigException, OSError) as kube_error:
        if kubeconfig or context:
            raise PluginError(f"cannot use the kubeconfig: {one_line(kube_error)}") from None
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            raise PluginError(
                "no kubeconfig found (set KUBECONFIG or create ~/.kube/config) and not running inside a cluster"
            ) from None
        namespace = _service_account_namespace()
    return KubeApi(kubernetes.client.CustomObjectsApi()), namespace


def _kubeconfig_namespace(kubeconfig: str | None, context: str | None) -> str:
    import kubernetes.config

    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts or [] if c.get("name") == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"


def _service_account_namespace() -> str:
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            return file.read().strip() or "default"
    except OSError:
        return "default"


# -- annotations ----------------------------------------------------------------------------------


def annotation_patch(annotation: str, now: datetime.datetime) -> dict[str, Any]:
    """The merge patch that asks the operator for an action: the annotation set to a new UTC timestamp.

    Microseconds make two requests within one second still differ (the operator reacts to a change).
    """
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"annotations": {annotation: stamp}}}


def reconnect_patch(now: datetime.datetime) -> dict[str, Any]:
    return annotation_patch(RECONNECT_ANNOTATION, now)


# -- failures -------------------------------------------------------------------------------------


def describe_api_error(error: ApiException, *, namespace: str | None, name: str | None) -> str:
    """One line for an error response of the API server."""
    message = ""
    details = None
    try:
        body = json.loads(error.body) if error.body else None
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        message = one_line(body.get("message"))
        details = body.get("details")
    if error.status == 404:
        if name is not None and details is not None:
            return f'{RESOURCE} "{name}" not found in namespace "{namespace}"'
        return (
            f"the {RESOURCE} API ({GROUP}/{VERSION}) is not served by this cluster: "
            "is the CRD installed? (kubectl apply -f crds/)"
        )
    if error.status == 401:
        return "the Kubernetes API refused the credentials (401 Unauthorized): check the kubeconfig"
    return message or f"Kubernetes API error {error.status}: {one_line(error.reason)}"


def describe_unexpected_error(error: Exception) -> str:
    """One line for any other failure: the API not reachable, else the exception's type and text."""
    if isinstance(error, urllib3.exceptions.HTTPError):  # connection refused, TLS, timeouts
        reason = getattr(error, "reason", None) or error
        return f"cannot reach the Kubernetes API: {one_line(reason)}"
    return f"{type(error).__name__}: {one_line(error)}"
