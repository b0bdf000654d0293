"""`python -m whatsapp_operator run` as users start it: a real process, kubeconfig login, kopf.run."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import pytest
from test_metrics import scrape

from whatsapp_operator.names import GROUP, PLURAL, VERSION

from conftest import NAMESPACE
from instances import instance_body
from kube_standin import KubeStandin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_the_command_runs_the_operator_end_to_end(evolution, tmp_path, event_loop):
    async with KubeStandin() as kube:
        kubeconfig = tmp_path / "kubeconfig"
        kube.write_kubeconfig(kubeconfig)
        metrics_port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith(("EVOLUTION_", "KUBERNETES_"))}
        env.update(
            KUBECONFIG=str(kubeconfig),
            EVOLUTION_API_URL=evolution.url,
            EVOLUTION_API_KEY=evolution.api_key,
            WHATSAPP_OPERATOR_METRICS_PORT=str(metrics_port),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "whatsapp_operator",
            "run",
            "--all-namespaces",
            "--verbose",
            "--event-loop",
            event_loop,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            kube.create(GROUP, VERSION, PLURAL, instance_body("shop"), namespace=NAMESPACE)
            obj = await kube.wait_for(
                GROUP,
                VERSION,
                PLURAL,
                "shop",
                lambda o: (o or {}).get("status", {}).get("phase") == "AwaitingScan",
                NAMESPACE,
                timeout=30,
            )
            assert obj["status"]["qr"]["code"] == evolution.instances["shop"].cached_qr["code"]
            samples = await scrape(metrics_port)
            assert samples[("whatsapp_operator_instances", (("phase", "AwaitingScan"),))] == 1
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        log = output.decode()
        assert process.returncode == 0, log[-2000:]
        assert "QRCodeIssued" in log
        assert f"Running on {event_loop}'s event loop" in log
        # Nothing left running at the stop: kopf would have waited 5 s for it before cancelling.
        assert "Hung tasks stopping is skipped: no tasks given." in log
        assert evolution.api_key not in log  # --verbose logs HTTP and websocket traffic too
        assert evolution.instances["shop"].token not in log
