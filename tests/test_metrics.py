"""The Prometheus endpoint reports what the operator saw."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_follow_the_instances(operator):
    port = await operator.runtime.metrics.serve("127.0.0.1", 0)
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.send_raw('2["broken')
    code = await operator.evolution.issue_qr("shop")
    await operator.wait_status("shop", lambda s: (s.get("qr") or {}).get("code") == code)
    samples = await scrape(port)
    assert samples[("whatsapp_operator_instances", (("phase", "AwaitingScan"),))] == 1
    assert samples[("whatsapp_operator_instances", (("phase", "Connected"),))] == 0
    assert samples[("whatsapp_operator_socketio_connected", (("server", "evolution"),))] == 1
    assert (
        samples[("whatsapp_operator_events_received_total", (("server", "evolution"), ("type", "qrcode.updated")))] >= 2
    )
    assert samples[("whatsapp_operator_malformed_events_total", (("layer", "packet"), ("server", "evolution")))] == 1
    assert (
        samples[
            (
                "whatsapp_operator_evolution_api_calls_total",
                (("endpoint", "create instance"), ("outcome", "ok"), ("server", "evolution")),
            )
        ]
        == 1
    )
    assert samples[("whatsapp_operator_event_to_status_seconds_count", ())] >= 1
    assert samples[("whatsapp_operator_status_patches_total", (("result", "written"),))] >= 2
    assert samples[("whatsapp_operator_recreations_total", ())] == 0
    assert samples[("whatsapp_operator_kubernetes_events_dropped_total", ())] == 0


async def test_recreations_and_dropped_events_are_exported(operator):
    port = await operator.runtime.metrics.serve("127.0.0.1", 0)
    operator.create("shop", {"instanceName": "shop"})
    await operator.wait_phase("shop", "AwaitingScan")
    await operator.evolution.remove_out_of_band("shop")
    await operator.wait_event("shop", "Recreated")
    operator.kube.fail_next("POST", "/api/v1/namespaces/default/events", 403)  # refused for good: not retried
    await operator.evolution.scan("shop")
    await operator.wait_phase("shop", "Connected")

    async def dropped() -> None:
        while operator.runtime.publisher.stats.events_dropped < 1:  # a counter: nothing to await but its change
            await asyncio.sleep(0.01)

    await asyncio.wait_for(dropped(), 10)
    samples = await scrape(port)
    assert samples[("whatsapp_operator_recreations_total", ())] == 1
    assert samples[("whatsapp_operator_kubernetes_events_dropped_total", ())] == 1


async def test_unknown_path_is_404(operator):
    port = await operator.runtime.metrics.serve("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /secrets HTTP/1.1\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 404")
    writer.close()
