"""Fixtures that run the real operator against the Kubernetes stand-in and the fake Evolution API."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import pytest
from hypothesis import HealthCheck, settings

from whatsapp_operator import redaction
from whatsapp_operator.config import OperatorConfig, WebsocketMode
from whatsapp_operator.engine.runtime import Runtime
from whatsapp_operator.kube.handlers import build_registry, configure_settings
from whatsapp_operator.kube.leadership import PeeringIdentity
from whatsapp_operator.names import GROUP, PLURAL, VERSION

from evolution_fake import FakeEvolution
from instances import instance_body
from kopf_harness import running_operator
from kube_standin import KubeStandin

# Property-based tests take their budget from a profile, never from their own decorator, so that
# bench/fuzz.py can run the very same properties with 100,000 inputs each.
settings.register_profile(
    "ci", max_examples=150, deadline=None, derandomize=False, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=100_000, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
if os.environ.get("HYPOTHESIS_MAX_EXAMPLES"):  # bench/fuzz.py --examples N
    settings.register_profile(
        "sized", parent=settings.get_profile("long"), max_examples=int(os.environ["HYPOTHESIS_MAX_EXAMPLES"])
    )
    settings.load_profile("sized")
else:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if os.environ.get("TEST_EVENT_LOOP") == "uvloop":  # the suite on the loop the command runs on (.ci/run)

    def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


NAMESPACE = "default"
# Every Kubernetes API request the operator made in this session (checked against RBAC last).
OPERATOR_REQUESTS: list[Any] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The RBAC coverage check reads what the integration tests recorded: it goes last.
    items.sort(key=lambda item: item.get_closest_marker("after_integration_tests") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "after_integration_tests: runs after every other test")


@dataclasses.dataclass
class OperatorUnderTest:
    kube: KubeStandin
    evolution: FakeEvolution
    runtime: Runtime

    def create(
        self,
        name: str,
        spec: dict[str, Any] | None = None,
        namespace: str = NAMESPACE,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body = instance_body(name, {"integration": "WHATSAPP-BAILEYS", **(spec or {})}, annotations=annotations or {})
        return self.kube.create(GROUP, VERSION, PLURAL, body, namespace=namespace)

    def get(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self.kube.get(GROUP, VERSION, PLURAL, name, namespace)

    def patch(self, name: str, patch: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
        return self.kube.patch(GROUP, VERSION, PLURAL, name, patch, namespace)

    def delete(self, name: str, namespace: str = NAMESPACE) -> None:
        self.kube.delete(GROUP, VERSION, PLURAL, name, namespace)

    async def wait_status(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], namespace: str = NAMESPACE, timeout: float = 10
    ) -> dict[str, Any]:
        obj = await self.kube.wait_for(
            GROUP,
            VERSION,
            PLURAL,
            name,
            lambda o: o is not None and predicate(o.get("status") or {}),
            namespace,
            timeout,
        )
        assert obj is not None
        return obj["status"]

    async def wait_phase(
        self, name: str, phase: str, namespace: str = NAMESPACE, timeout: float = 10
    ) -> dict[str, Any]:
        return await self.wait_status(name, lambda s: s.get("phase") == phase, namespace, timeout)

    async def wait_gone(self, name: str, namespace: str = NAMESPACE, timeout: float = 10) -> None:
        await self.kube.wait_for(GROUP, VERSION, PLURAL, name, lambda o: o is None, namespace, timeout)

    def event_reasons(self, name: str, namespace: str = NAMESPACE) -> list[str]:
        return [event["reason"] for event in self.kube.events_for(namespace, name)]

    async def wait_event(self, name: str, reason: str, namespace: str = NAMESPACE, timeout: float = 10) -> None:
        await self.kube.wait_until(
            lambda: reason in self.event_reasons(name, namespace),
            timeout=timeout,
            describe=lambda: f"events of {name}: {self.event_reasons(name, namespace)}",
        )


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`whatsapp-operator ARGS` of this checkout in a child process, without Evolution settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOLUTION_", "WHATSAPP_OPERATOR_"))}
    code = "import sys; from whatsapp_operator.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], check=False, env=env, capture_output=True, text=True, timeout=60
    )


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def fast_config(evolution: FakeEvolution, **overrides: Any) -> OperatorConfig:
    values: dict[str, Any] = {
        "evolution_url": evolution.url,
        "evolution_api_key": evolution.api_key,
        "websocket_mode": WebsocketMode.AUTO,
        "resync_interval": 3600.0,
        "request_timeout": 5.0,
        "outage_grace": 0.2,
        "reconnect_initial_delay": 0.02,
        "reconnect_max_delay": 0.2,
        "retry_initial_delay": 0.05,
        "retry_max_delay": 0.3,
        "metrics_port": 0,
    }
    values.update(overrides)
    return OperatorConfig(**values)


@pytest.fixture(autouse=True)
def secrets_stay_with_their_property_test(request: pytest.FixtureRequest) -> Any:
    """The secrets a property test registers (random API keys and tokens, thousands of them) are
    forgotten after it: registration is process-wide, and a random "global" once made every later
    test's redact() mask that word in Evolution's "Invalid global token"."""
    if not getattr(request.function, "is_hypothesis_test", False):
        yield
        return
    with redaction._lock:
        saved = (set(redaction._token_secrets), redaction._token_lengths, set(redaction._other_secrets))
        pattern = redaction._other_pattern
    yield
    with redaction._lock:
        redaction._token_secrets.clear()
        redaction._token_secrets.update(saved[0])
        redaction._token_lengths = saved[1]
        redaction._other_secrets.clear()
        redaction._other_secrets.update(saved[2])
        redaction._other_pattern = pattern


@pytest.fixture
async def kube() -> AsyncIterator[KubeStandin]:
    standin = KubeStandin()
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
async def evolution_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[FakeEvolution] = []

    async def start(**options: Any) -> FakeEvolution:
        fake = FakeEvolution(**options)
        await fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        if fake.running:
            await fake.stop()


@pytest.fixture
async def evolution(evolution_factory: Callable[..., Any]) -> FakeEvolution:
    return await evolution_factory()


@contextlib.asynccontextmanager
async def run_operator(
    kube: KubeStandin, evolution: FakeEvolution, *, peering: PeeringIdentity | None = None, **overrides: Any
) -> AsyncIterator[OperatorUnderTest]:
    """The product's registry, run by kopf in this event loop; standalone unless `peering` is given."""
    runtimes: list[Runtime] = []
    registry = build_registry(
        fast_config(evolution, **overrides),
        peering=peering,
        login=lambda: kopf.ConnectionInfo(server=kube.url),
        on_runtime=runtimes.append,
        leadership_interval=0.05,
    )
    settings = kopf.OperatorSettings()
    configure_settings(settings)
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 15
    settings.queueing.exit_timeout = 0.2
    first_request = len(kube.requests)
    try:
        async with running_operator(
            registry,
            server_url=kube.url,
            settings=settings,
            add_login=False,
            standalone=peering is None,
            peering_name=peering.name if peering else None,
            identity=peering.identity if peering else None,
            priority=peering.priority if peering else None,
        ):
            yield OperatorUnderTest(kube, evolution, runtimes[0])
    finally:
        OPERATOR_REQUESTS.extend(kube.requests[first_request:])


@pytest.fixture
def operator_factory(kube: KubeStandin) -> Callable[..., Any]:
    return functools.partial(run_operator, kube)


@pytest.fixture
async def operator(
    operator_factory: Callable[..., Any], evolution: FakeEvolution, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[OperatorUnderTest]:
    caplog.set_level(logging.DEBUG)
    async with operator_factory(evolution) as running:
        yield running
