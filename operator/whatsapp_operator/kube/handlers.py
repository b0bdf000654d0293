"""kopf wiring: thin handlers that hand each WhatsAppInstance to the runtime.

`build_registry()` returns a fresh kopf registry bound to one Runtime, so the CLI and the tests
run exactly the same handlers without module-level state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import kopf

from whatsapp_operator.config import OperatorConfig
from whatsapp_operator.engine.runtime import Runtime, ServerInUse
from whatsapp_operator.engine.spec import InvalidSpec
from whatsapp_operator.engine.tracker import InstanceTracker
from whatsapp_operator.evolution.client import InstanceRejected
from whatsapp_operator.evolution.errors import EvolutionError
from whatsapp_operator.kube import echoes
from whatsapp_operator.kube.client import login_from_environment
from whatsapp_operator.kube.essence import LeanAnnotationsDiffBaseStorage
from whatsapp_operator.kube.leadership import PeeringIdentity
from whatsapp_operator.kube.servers import InvalidServer
from whatsapp_operator.names import (
    ANNOTATION_PREFIX,
    CLUSTER_SERVER_PLURAL,
    FINALIZER,
    GROUP,
    LOGOUT_ANNOTATION,
    PAUSED_ANNOTATION,
    PLURAL,
    RECONNECT_ANNOTATION,
    SERVER_PLURAL,
    VERSION,
)

logger = logging.getLogger("whatsapp_operator.kube.handlers")


def configure_settings(settings: kopf.OperatorSettings) -> None:
    # The status belongs to the operator's own writer: kopf keeps its progress in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = LeanAnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    # Kubernetes Events come from the runtime, one per transition; kopf's per-handler events would
    # repeat every retry of an outage.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf starts a task per object when an event arrives and ends it after `idle_timeout` without
    # events. Without the echo filter, a waiting instance's task would get the echo of its status
    # write with every QR code (every 20 s or so): a minute keeps that task instead of starting a
    # new one each time. With the filter only real changes reach it, and kopf's 5 s lets the tasks
    # of a burst (thousands of objects at a start, each a few KB) go soon after it.
    settings.queueing.idle_timeout = 5.0 if echoes.installed() else 60.0


def build_registry(
    config: OperatorConfig,
    *,
    peering: PeeringIdentity | None = None,
    login: Callable[[], kopf.ConnectionInfo] | None = login_from_environment,
    on_runtime: Callable[[Runtime], None] | None = None,
    leadership_interval: float = 5.0,
    namespaces: Sequence[str] = (),
) -> kopf.OperatorRegistry:
    """Handlers bound to a new Runtime. `peering` names this process in kopf's peering (HA)."""
    # Before kopf starts watching: the echoes of the runtime's status writes stop at the stream.
    echoes.install(GROUP, (PLURAL, SERVER_PLURAL, CLUSTER_SERVER_PLURAL))
    registry = kopf.OperatorRegistry()
    runtime = Runtime(config, peering=peering, leadership_interval=leadership_interval, namespaces=namespaces)
    if on_runtime is not None:
        on_runtime(runtime)

    if login is not None:
        runtime.kube.login = login

        @kopf.on.login(registry=registry)
        async def log_in(**_: Any) -> kopf.ConnectionInfo:
            # Loading a kubeconfig may run an exec plugin: keep it off the event loop. The
            # credentials are handed over here, in the loop's thread.
            info = await asyncio.to_thread(login)
            runtime.kube.use_credentials(info)
            return info

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings)
        await runtime.start()

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await runtime.stop()

    # Explicit ids: kopf names its progress annotations after them, and they must stay stable.
    @kopf.on.resume(GROUP, VERSION, PLURAL, id="ensure-instance", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="ensure-instance", registry=registry)
    async def ensure_instance(body: kopf.Body, **_: Any) -> None:
        await _act(runtime, body, runtime.reconcile)

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="apply-spec", registry=registry)
    async def spec_changed(body: kopf.Body, old: Any, new: Any, **_: Any) -> None:
        async def apply(tracker: InstanceTracker) -> None:
            if (old or {}).get("settings") != (new or {}).get("settings"):
                await runtime.apply_settings(tracker)
            if (old or {}).get("webhook") != (new or {}).get("webhook"):
                await runtime.apply_webhook(tracker)
            await runtime.reconcile(tracker)

        await _act(runtime, body, apply)

    @kopf.on.field(
        GROUP,
        VERSION,
        PLURAL,
        field=("metadata", "annotations", RECONNECT_ANNOTATION),
        id="reconnect",
        registry=registry,
    )  # a tuple: the annotation's name has dots in it
    async def reconnect_requested(body: kopf.Body, new: Any, reason: Any, **_: Any) -> None:
        if new and str(reason) != "delete":
            await _act(runtime, body, runtime.request_reconnect)

    @kopf.on.field(
        GROUP, VERSION, PLURAL, field=("metadata", "annotations", LOGOUT_ANNOTATION), id="logout", registry=registry
    )
    async def logout_requested(body: kopf.Body, new: Any, reason: Any, **_: Any) -> None:
        if new and str(reason) != "delete":
            await _act(runtime, body, runtime.request_logout)

    @kopf.on.field(
        GROUP, VERSION, PLURAL, field=("metadata", "annotations", PAUSED_ANNOTATION), id="pause", registry=registry
    )
    async def pause_changed(body: kopf.Body, **_: Any) -> None:
        # track() reads the annotation and pauses or resumes; a resumed instance is reconciled.
        await _act(runtime, body, runtime.reconcile)

    for kind_plural in (SERVER_PLURAL, CLUSTER_SERVER_PLURAL):
        _register_server_handlers(registry, runtime, kind_plural)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="remove-instance", registry=registry)
    async def remove_instance(body: kopf.Body, **_: Any) -> None:
        try:
            tracker = _track(runtime, body)
        except kopf.PermanentError:
            return  # an unusable spec never reached Evolution
        try:
            await runtime.delete(tracker)
        except EvolutionError as error:
            raise kopf.TemporaryError(str(error), delay=tracker.retry.next_delay()) from None

    return registry


def _register_server_handlers(registry: kopf.OperatorRegistry, runtime: Runtime, plural: str) -> None:
    @kopf.on.resume(GROUP, VERSION, plural, id="declare-server", registry=registry)
    @kopf.on.create(GROUP, VERSION, plural, id="declare-server", registry=registry)
    @kopf.on.update(GROUP, VERSION, plural, field="spec", id="declare-server", registry=registry)
    async def declare_server(body: kopf.Body, **_: Any) -> None:
        try:
            await runtime.declare_server(_plain(body))
        except InvalidServer as error:
            raise kopf.PermanentError(f"invalid server: {error}") from None

    @kopf.on.delete(GROUP, VERSION, plural, id="retire-server", registry=registry)
    async def retire_server(body: kopf.Body, **_: Any) -> None:
        try:
            await runtime.retire_server(_plain(body))
        except InvalidServer:
            return  # never declared: nothing uses it
        except ServerInUse as error:
            raise kopf.TemporaryError(str(error), delay=10) from None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _track(runtime: Runtime, body: kopf.Body) -> InstanceTracker:
    raw = _plain(body)
    try:
        return runtime.track(raw)
    except InvalidSpec as error:
        runtime.report_invalid_spec(raw, error)
        raise kopf.PermanentError(f"invalid spec: {error}") from None


async def _act(runtime: Runtime, body: kopf.Body, action: Callable[[InstanceTracker], Awaitable[None]]) -> None:
    """Run one runtime action for the object; Evolution failures become kopf retries, or a stop
    when Evolution refused the instance itself (only a spec change helps then)."""
    tracker = _track(runtime, body)
    try:
        await runtime.prepare(tracker)
        await action(tracker)
    except InstanceRejected as error:
        raise kopf.PermanentError(str(error)) from None
    except EvolutionError as error:
        raise kopf.TemporaryError(str(error), delay=tracker.retry.next_delay()) from None
