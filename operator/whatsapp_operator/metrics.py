"""Prometheus metrics, read from the runtime's own counters at scrape time.

The counters live where the work happens (the Socket.IO client, the event stream, the Evolution
client, the status writer); a custom collector turns them into metrics when Prometheus asks, so
there is no second set of books to keep in step. Only the latency histogram is observed as it
happens. The endpoint is a few lines of asyncio on the operator's loop: no thread reads the
runtime's state while the loop changes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from whatsapp_operator.engine.state import Phase

if TYPE_CHECKING:
    from whatsapp_operator.engine.runtime import Runtime

logger = logging.getLogger("whatsapp_operator.metrics")
PREFIX = "whatsapp_operator"
SERVER = "evolution"  # one Evolution server per operator; the label keeps room for more


class RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        phases = Counter(tracker.state.phase for tracker in runtime.trackers.values())
        instances = GaugeMetricFamily(f"{PREFIX}_instances", "WhatsAppInstances by phase", labels=["phase"])
        for phase in Phase:
            instances.add_metric([phase.value], phases.get(phase, 0))
        yield instances

        client = runtime.stream.client
        stats = client.stats
        connected = GaugeMetricFamily(
            f"{PREFIX}_socketio_connected", "1 while the Socket.IO connection to Evolution is up", labels=["server"]
        )
        connected.add_metric([SERVER], 1.0 if client.state == "connected" else 0.0)
        yield connected
        reconnects = CounterMetricFamily(
            f"{PREFIX}_socketio_reconnects", "Socket.IO connections re-established after the first", labels=["server"]
        )
        reconnects.add_metric([SERVER], stats.reconnects)
        yield reconnects
        failed = CounterMetricFamily(
            f"{PREFIX}_socketio_failed_connects", "Socket.IO connection attempts that failed", labels=["server"]
        )
        failed.add_metric([SERVER], stats.failed_connects)
        yield failed

        events = CounterMetricFamily(
            f"{PREFIX}_events_received", "Socket.IO events received by type", labels=["server", "type"]
        )
        for name, count in sorted(stats.events_received.items()):
            events.add_metric([SERVER, name], count)
        yield events
        malformed = CounterMetricFamily(
            f"{PREFIX}_malformed_events",
            "Malformed Socket.IO packets and Evolution envelopes, ignored",
            labels=["server", "layer"],
        )
        malformed.add_metric([SERVER, "packet"], stats.malformed_packets)
        malformed.add_metric([SERVER, "envelope"], runtime.stream.stats.malformed_events)
        yield malformed

        calls = CounterMetricFamily(
            f"{PREFIX}_evolution_api_calls",
            "Evolution API calls by endpoint and outcome",
            labels=["endpoint", "outcome"],
        )
        for (endpoint, outcome), count in sorted(runtime.evolution.calls.items()):
            calls.add_metric([endpoint, outcome], count)
        yield calls

        errors = CounterMetricFamily(f"{PREFIX}_reconcile_errors", "Reconciliations that failed on an Evolution call")
        errors.add_metric([], runtime.stats.reconcile_errors)
        yield errors
        patches = CounterMetricFamily(f"{PREFIX}_status_patches", "Status patches by result", labels=["result"])
        writer = runtime.writer.stats
        patches.add_metric(["written"], writer.patches)
        patches.add_metric(["skipped_noop"], writer.skipped)
        patches.add_metric(["failed"], writer.failures)
        patches.add_metric(["rejected"], writer.rejected)
        yield patches

        restarts = CounterMetricFamily(
            f"{PREFIX}_task_restarts", "Background tasks started again after an unexpected failure", labels=["task"]
        )
        for task, count in sorted(runtime.supervisor.restarts.items()):
            restarts.add_metric([task], count)
        yield restarts

        recreations = CounterMetricFamily(
            f"{PREFIX}_recreations", "Instances created again after they disappeared from Evolution"
        )
        recreations.add_metric([], runtime.stats.recreations)
        yield recreations
        dropped = CounterMetricFamily(
            f"{PREFIX}_kubernetes_events_dropped",
            "Kubernetes Events given up on (the API refused them for good, or the backlog was full)",
        )
        dropped.add_metric([], runtime.stats.events_dropped)
        yield dropped


class Metrics:
    def __init__(self, runtime: Runtime):
        self.registry = CollectorRegistry()
        self.registry.register(RuntimeCollector(runtime))
        self.event_to_status = Histogram(
            f"{PREFIX}_event_to_status_seconds",
            "Time from an Evolution event's arrival to the acceptance of its status patch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
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
