"""Running a real kopf operator inside a pytest-asyncio test, and stopping it cleanly.

kopf.operator() cancels every task created after it started, which includes pytest-asyncio's
own and the in-process API stand-in's. spawn_tasks() + run_tasks() take an ``ignored`` set
instead; here it is every task that this operator did not create, so a stopping operator
leaves the stand-in's connections and a second operator (e.g. an HA peer) alone.
Which tasks an operator created is traced with a task factory and a context variable:
a task created while the variable is set (by kopf, or by its tasks' descendants) is the
operator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import weakref
from collections.abc import AsyncIterator, Collection, Iterator
from typing import Any

import kopf

STARTUP_TIMEOUT = 10.0

_owner: contextvars.ContextVar[weakref.WeakSet[asyncio.Task[Any]] | None] = contextvars.ContextVar(
    "kopf_harness_owner", default=None
)
_login_urls: weakref.WeakKeyDictionary[kopf.OperatorRegistry, str] = weakref.WeakKeyDictionary()
_factory_users: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
_previous_factories: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _tracing_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
    previous = _previous_factories.get(loop)
    task = previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)
    owned = _owner.get()  # the creator's context: the factory runs inside create_task()
    if owned is not None:
        owned.add(task)
    return task


@contextlib.contextmanager
def _task_tracing(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    # Shared by operators running at the same time in one loop; the last one out restores.
    if not _factory_users.get(loop):
        _previous_factories[loop] = loop.get_task_factory()
        loop.set_task_factory(_tracing_factory)
    _factory_users[loop] = _factory_users.get(loop, 0) + 1
    try:
        yield
    finally:
        _factory_users[loop] -= 1
        if not _factory_users[loop]:
            loop.set_task_factory(_previous_factories.pop(loop))


class _NotOwned(Collection[asyncio.Task[Any]]):
    """A live view for run_tasks(ignored=...): every task except this operator's."""

    def __init__(self, owned: weakref.WeakSet[asyncio.Task[Any]]) -> None:
        self._owned = owned

    def __contains__(self, task: object) -> bool:
        return task not in self._owned

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(t for t in asyncio.all_tasks() if t not in self._owned)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _ensure_login(registry: kopf.OperatorRegistry, server_url: str) -> None:
    # One handler per registry, reading the URL at login time: re-entering the harness with the
    # same registry (e.g. for a second stand-in) must not register a second login handler.
    if registry not in _login_urls:

        @kopf.on.login(registry=registry, id="kopf-harness-login")
        def _login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=_login_urls[registry], default_namespace="default")

    _login_urls[registry] = server_url


@contextlib.asynccontextmanager
async def running_operator(
    registry: kopf.OperatorRegistry,
    *,
    server_url: str,
    settings: kopf.OperatorSettings | None = None,
    namespaces: list[str] | None = None,
    standalone: bool = True,
    peering_name: str | None = None,
    identity: str | None = None,
    priority: int | None = None,
    add_login: bool = True,
    stop_timeout: float = 10.0,
) -> AsyncIterator[None]:
    """Run kopf with ``registry`` against ``server_url`` (cluster-wide unless ``namespaces``).

    Yields once kopf is ready (startup handlers done). On exit, raises the stop flag, waits up
    to ``stop_timeout`` for every task of this operator, cancels leftovers, and re-raises what
    kopf failed with.
    """
    loop = asyncio.get_running_loop()
    settings = settings if settings is not None else kopf.OperatorSettings()
    if add_login:
        _ensure_login(registry, server_url)
    ready_flag, stop_flag = asyncio.Event(), asyncio.Event()
    owned: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
    # kopf installs SIGINT/SIGTERM handlers on the loop and never removes them.
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def run() -> None:
        _owner.set(owned)  # from here on, every task created is this operator's
        tasks = await kopf.spawn_tasks(
            registry=registry,
            settings=settings,
            standalone=standalone,
            peering_name=peering_name,
            identity=identity,  # type: ignore[arg-type]
            priority=priority,
            clusterwide=not namespaces,
            namespaces=namespaces or (),
            ready_flag=ready_flag,
            stop_flag=stop_flag,
        )
        # Once any root task exits, kopf stops anyway. kopf's stop-flag checker leaves its
        # child "stop-flag waiter" pending then, and run_tasks() waits 5 s for that "hung" task;
        # raising the flag lets the waiter finish at once.
        for task in tasks:
            task.add_done_callback(lambda _: stop_flag.set())
        await kopf.run_tasks(tasks, ignored=_NotOwned(owned))

    with _task_tracing(loop):
        runner = asyncio.create_task(run(), name="kopf harness")
        try:
            ready = asyncio.create_task(ready_flag.wait(), name="kopf harness readiness")
            await asyncio.wait([runner, ready], timeout=STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            await asyncio.wait([ready])
            if runner.done():
                runner.result()  # raises what kopf failed with at startup
                raise RuntimeError("kopf exited before it was ready")
            if not ready_flag.is_set():
                raise TimeoutError(f"kopf was not ready within {STARTUP_TIMEOUT}s")
            yield
        finally:
            stop_flag.set()
            _, leftovers = await asyncio.wait([runner, *owned], timeout=stop_timeout)
            for task in leftovers:
                task.cancel()
            if leftovers:
                await asyncio.wait(leftovers)
            if not runner.cancelled():
                runner.exception()  # retrieved: raised below, or kopf's log tells if the test failed
            for sig, handler in saved_signals.items():
                if loop.remove_signal_handler(sig):
                    signal.signal(sig, handler)
    if leftovers:
        raise AssertionError(f"kopf did not stop within {stop_timeout}s: {leftovers}")
    runner.result()
