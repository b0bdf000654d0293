"""What the operator remembers about one WhatsAppInstance between kopf's calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from whatsapp_operator.backoff import Backoff
from whatsapp_operator.engine.spec import InstanceSpec
from whatsapp_operator.engine.state import InstanceState

if TYPE_CHECKING:
    from whatsapp_operator.engine.server import EvolutionServer
    from whatsapp_operator.evolution.client import InstanceToken, WebhookConfig

Key = tuple[str, str]  # (namespace, name) of the WhatsAppInstance


@dataclass(eq=False)
class InstanceTracker:
    """One WhatsAppInstance: its spec, its state machine, the server that holds its instance, and
    the per-instance coordination (lock, timers, retry backoff). Plain data: it calls nothing."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: InstanceSpec
    state: InstanceState
    server: EvolutionServer
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exists: bool = False  # confirmed present in Evolution since this operator started
    deleting: bool = False
    removed: bool = False  # no longer tracked: timers and late tasks leave it alone
    expect_removal: bool = False  # the operator itself is replacing the instance
    resync_retry: asyncio.TimerHandle | None = None
    qr_watch: asyncio.TimerHandle | None = None
    reconnect_requested: bool = False
    retry: Backoff = field(default_factory=Backoff)
    reconcile_started: float | None = None  # time.monotonic() of the last reconciliation's first read
    paused: bool = False  # the paused annotation: no call to Evolution for this instance
    # The webhook as Evolution should have it (header values read from their Secrets), or why it
    # cannot be built; None when the spec has none.
    webhook: WebhookConfig | None = None
    webhook_problem: str | None = None
    token: InstanceToken | None = field(default=None, repr=False)  # the instance's own API key

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def instance_name(self) -> str:
        return self.spec.instance_name

    @property
    def involved(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid}

    def cancel_timers(self) -> None:
        for timer in (self.resync_retry, self.qr_watch):
            if timer is not None:
                timer.cancel()
        self.resync_retry = self.qr_watch = None
