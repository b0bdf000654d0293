"""Prometheus metrics, read from each component's own counters at scrape time.

The counters live where the work happens (each server's Socket.IO client, event stream and REST
client; the reconciler, the publisher, the status writer, the supervisor); a custom collector
turns them into metrics when Prometheus asks, so there is no second set of books to keep in step.
Only the latency histogram is observed as it happens. The endpoint is a few lines of asyncio on
the operator's loop: no thread reads the components' state while the loop changes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from whatsapp_operator.engine.state import Phase
from whatsapp_operator.evolution.stream import StreamStats
from whatsapp_operator.socketio import SocketIOStats

logger = logging.getLogger("whatsapp_operator.metrics")
PREFIX = "whatsapp_operator"


class PhaseCounts(Protocol):
    def phase_counts(self) -> Counter[Phase]: ...


class ServerSource(Protocol):
    """What one Evolution server exposes to metrics; `name` is its `server` label."""

    @property
    def name(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    @property
    def socketio_stats(self) -> SocketIOStats: ...

    @property
    def stream_stats(self) -> StreamStats: ...

    @property
    def api_calls(self) -> Mapping[tuple[str, str], int]: ...


class ReconcilerStats(Protocol):
    reconcile_errors: int
    recreations: int


class PublisherStats(Protocol):
    events_dropped: int


class WriterStats(Protocol):
    patches: int
    skipped: int
    failures: int
    rejected: int


class Restarts(Protocol):
    restarts: dict[str, int]


class ComponentCollector(Collector):
    """Reads the components' stats objects; owns none of them."""

    def __init__(
        self,
        *,
        registry: PhaseCounts,
        servers: Mapping[str, ServerSource],
        reconciler: ReconcilerStats,
        publisher: PublisherStats,
        writer: WriterStats,
        supervisor: Restarts,
    ):
        self.registry = registry
        self.servers = servers  # read at every scrape: servers may come and go
        self.reconciler = reconciler
        self.publisher = publisher
        self.writer = writer
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        phases = self.registry.phase_counts()
        instances = GaugeMetricFamily(f"{PREFIX}_instances", "WhatsAppInstances by phase", labels=["phase"])
        for phase in Phase:
            instances.add_metric([phase.value], phases.get(phase, 0))
        yield instances
        yield from self._servers()

        errors = CounterMetricFamily(f"{PREFIX}_reconcile_errors", "Reconciliations that failed on an Evolution call")
        errors.add_metric([], self.reconciler.reconcile_errors)
        yield errors
        patches = CounterMetricFamily(f"{PREFIX}_status_patches", "Status patches by result", labels=["result"])
        patches.add_metric(["written"], self.writer.patches)
        patches.add_metric(["skipped_noop"], self.writer.skipped)
        patches.add_metric(["failed"], self.writer.failures)
        patches.add_metric(["rejected"], self.writer.rejected)
        yield patches

        restarts = CounterMetricFamily(
            f"{PREFIX}_task_restarts", "Background tasks started again after an unexpected failure", labels=["task"]
        )
        for task, count in sorted(self.supervisor.restarts.items()):
            restarts.add_metric([task], count)
        yield restarts

        recreations = CounterMetricFamily(
            f"{PREFIX}_recreations", "Instances created again after they disappeared from Evolution"
        )
        recreations.add_metric([], self.reconciler.recreations)
        yield recreations
        dropped = CounterMetricFamily(
            f"{PREFIX}_kubernetes_events_dropped",
            "Kubernetes Events given up on (the API refused them for good, or the backlog was full)",
        )
        dropped.add_metric([], self.publisher.events_dropped)
        yield dropped

    def _servers(self) -> Iterator[Metric]:
        servers = sorted(self.servers.values(), key=lambda server: server.name)
        connected = GaugeMetricFamily(
            f"{PREFIX}_socketio_connected", "1 while the Socket.IO connection to Evolution is up", labels=["server"]
        )
        reconnects = CounterMetricFamily(
            f"{PREFIX}_socketio_reconnects", "Socket.IO connections re-established after the first", labels=["server"]
        )
        failed = CounterMetricFamily(
            f"{PREFIX}_socketio_failed_connects", "Socket.IO connection attempts that failed", labels=["server"]
        )
        events = CounterMetricFamily(
            f"{PREFIX}_events_received", "Socket.IO events received by type", labels=["server", "type"]
        )
        malformed = CounterMetricFamily(
            f"{PREFIX}_malformed_events",
            "Malformed Socket.IO packets and Evolution envelopes, ignored",
            labels=["server", "layer"],
        )
        calls = CounterMetricFamily(
            f"{PREFIX}_evolution_api_calls",
            "Evolution API calls by endpoint and outcome",
            labels=["server", "endpoint", "outcome"],
        )
        for server in servers:
            stats = server.socketio_stats
            connected.add_metric([server.name], 1.0 if server.connected else 0.0)
            reconnects.add_metric([server.name], stats.reconnects)
            failed.add_metric([server.name], stats.failed_connects)
            for name, count in sorted(stats.events_received.items()):
                events.add_metric([server.name, name], count)
            malformed.add_metric([server.name, "packet"], stats.malformed_packets)
            malformed.add_metric([server.name, "envelope"], server.stream_stats.malformed_events)
            for (endpoint, outcome), count in sorted(server.api_calls.items()):
                calls.add_metric([server.name, endpoint, outcome], count)
        yield from (connected, reconnects, failed, events, malformed, calls)


class Metrics:
    """The Prometheus registry, its endpoint, and the one histogram observed as work happens."""

    def __init__(
        self,
        *,
        registry: PhaseCounts,
        servers: Mapping[str, ServerSource],
        reconciler: ReconcilerStats,
        publisher: PublisherStats,
        writer: WriterStats,
        supervisor: Restarts,
    ):
        self.registry = CollectorRegistry()
        self.registry.register(
            ComponentCollector(
                registry=registry,
                servers=servers,
                reconciler=reconciler,
                publisher=publisher,
                writer=writer,
                supervisor=supervisor,
            )
        )
        self.event_to_status = Histogram(
            f"{PREFIX}_event_to_status_seconds",
            "Time from an Evolution event's arrival to the acceptance of its status patch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self._server: asyncio.Server | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> int:
        """Serve GET /metrics; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        logger.info("Serving Prometheus metrics on %s:%d/metrics", host, bound)
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=10)
            while (await asyncio.wait_for(reader.readline(), timeout=10)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] in ("/metrics", "/"):
                body, status = self.render(), "200 OK"
                content_type = "text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, content_type = b"not found\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
