"""Follows Evolution's Socket.IO events over ONE connection and hands typed events to the runtime.

Modes (EVOLUTION_WEBSOCKET_MODE):
- global: Evolution broadcasts every instance's events on the root namespace; demultiplex by the
  envelope's `instance`.
- instance: join one namespace per instance (multiplexed over the same connection). Evolution
  creates a namespace only at its first event, so joins are retried by the client.
- auto: join the root and the instance namespaces; the first event seen on the root proves that
  global events are on, and the instance namespaces are then left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any
from urllib.parse import quote_plus

from whatsapp_operator import redaction
from whatsapp_operator.backoff import Backoff
from whatsapp_operator.config import OperatorConfig, WebsocketMode
from whatsapp_operator.evolution.events import EvolutionEvent, MalformedEvent, parse_event
from whatsapp_operator.socketio import SocketIOClient

logger = logging.getLogger("whatsapp_operator.events")

ROOT = "/"


@dataclass
class StreamStats:
    malformed_events: int = 0
    ignored_events: int = 0


class EventStream:
    def __init__(
        self,
        config: OperatorConfig,
        *,
        on_event: Callable[[EvolutionEvent, float], None],
        on_connected: Callable[[], None],
        on_disconnected: Callable[[str], None],
        on_instance_joined: Callable[[str], None] = lambda instance_name: None,
        backoff: Backoff | None = None,
        namespace_backoff: Backoff | None = None,
        ssl: SSLContext | bool | None = None,
    ):
        self.mode = config.websocket_mode
        self.global_confirmed = self.mode is WebsocketMode.GLOBAL
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_instance_joined = on_instance_joined
        self._instances: set[str] = set()
        self.stats = StreamStats()
        # The key rides in the connection URL: masked raw and URL-encoded in whatever the client
        # logs or reports (the client redacts with redaction.redact but registers nothing itself).
        redaction.register_secret(config.evolution_api_key)
        redaction.register_secret(quote_plus(config.evolution_api_key))
        self.client = SocketIOClient(
            config.evolution_url,
            query={"apikey": config.evolution_api_key},
            listener=self,
            backoff=backoff or Backoff(config.reconnect_initial_delay, config.reconnect_max_delay),
            namespace_backoff=namespace_backoff or Backoff(config.reconnect_initial_delay, config.reconnect_max_delay),
            redact=redaction.redact,
            logger=logging.getLogger("whatsapp_operator.socketio"),
            ssl=ssl,
        )

    @property
    def uses_instance_namespaces(self) -> bool:
        return self.mode is not WebsocketMode.GLOBAL and not self.global_confirmed

    async def run(self) -> None:
        await self.client.run()

    def watch(self, instance_name: str) -> None:
        self._instances.add(instance_name)
        if self.uses_instance_namespaces:
            self.client.add_namespace(f"/{instance_name}")

    def unwatch(self, instance_name: str) -> None:
        self._instances.discard(instance_name)
        if f"/{instance_name}" in self.client.namespaces:
            self.client.remove_namespace(f"/{instance_name}")

    # -- SocketIOListener ------------------------------------------------------------------------

    def on_connected(self) -> None:
        self._on_connected()

    def on_disconnected(self, reason: str) -> None:
        self._on_disconnected(reason)

    def on_namespace_connected(self, namespace: str) -> None:
        # Events emitted before the join (the first QR, typically) are lost for good.
        logger.debug("Joined Socket.IO namespace %s", namespace)
        self._on_instance_joined(namespace[1:])

    def on_event(self, namespace: str, name: str, args: list[Any]) -> None:
        received_at = time.monotonic()
        if namespace == ROOT:
            if self.mode is WebsocketMode.INSTANCE:
                self.stats.ignored_events += 1
                return
            if not self.global_confirmed:
                self._switch_to_global()
            namespace_instance = None
        else:
            if self.global_confirmed:
                self.stats.ignored_events += 1  # the same event also arrives on the root namespace
                return
            namespace_instance = namespace[1:]
        try:
            event = parse_event(name, args, namespace_instance=namespace_instance)
        except MalformedEvent as error:
            self.stats.malformed_events += 1
            logger.warning("Ignored a malformed Evolution event: %s", error)
            return
        if event is None:
            self.stats.ignored_events += 1
            return
        self._on_event(event, received_at)

    def _switch_to_global(self) -> None:
        self.global_confirmed = True
        logger.info("Evolution broadcasts global events; following the root namespace only")
        for namespace in list(self.client.namespaces):
            self.client.remove_namespace(namespace)
