"""Keeps the operator's background tasks alive: a task that fails is logged, counted and started again.

The operator's work outside kopf's handlers runs in long-lived tasks (the event stream, the
resync loop, the status writers, the Event posters, the leadership watch) and in short per-instance
ones (a resync retried after a failure, a recreation). A bug or an input nobody foresaw must not
end any of them for the life of the process: a dead resync loop would leave every missed event
uncorrected, silently. The supervisor logs the traceback, counts the restart by kind (the
`whatsapp_operator_task_restarts_total{task}` metric) and starts the task again after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from whatsapp_operator.backoff import Backoff

logger = logging.getLogger("whatsapp_operator.engine.supervisor")


class Supervisor:
    """Owns background tasks and their restart counts; knows nothing of what the tasks do."""

    def __init__(self, *, initial_delay: float = 0.5, max_delay: float = 30.0, stable_after: float = 60.0):
        self.restarts: dict[str, int] = {}  # task kind -> restarts since the process started
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        # A task that ran this long before failing starts again at the initial delay.
        self._stable_after = stable_after
        self._tasks: set[asyncio.Task[None]] = set()

    def run(
        self, kind: str, factory: Callable[[], Awaitable[Any]], *, name: str | None = None, once: bool = False
    ) -> asyncio.Task[None]:
        """Run `factory()` in a task, and again after a backoff whenever it raises.

        A long-lived task (`once=False`) is also started again when it returns, since it never
        should. `kind` labels the restart metric: keep it a fixed word, never an instance name.
        """
        task = asyncio.ensure_future(self._keep(kind, factory, once))
        task.set_name(name or kind)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def count_failure(self, kind: str, error: BaseException, delay: float | None = None) -> None:
        """Log and count one unexpected failure of a task of `kind` that its caller will run again."""
        self.restarts[kind] = self.restarts.get(kind, 0) + 1
        when = "" if delay is None else f" in {delay:.1f} s"
        logger.error(
            "Background task %s failed; starting it again%s",
            kind,
            when,
            exc_info=(type(error), error, error.__traceback__),
        )

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep(self, kind: str, factory: Callable[[], Awaitable[Any]], once: bool) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self._initial_delay, self._max_delay)
        while True:
            started = loop.time()
            failure: BaseException | None = None
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - whatever it was, the task must go on
                failure = error
            else:
                if once:
                    return
            if loop.time() - started >= self._stable_after:
                backoff.reset()
            delay = backoff.next_delay()
            if failure is None:
                self.restarts[kind] = self.restarts.get(kind, 0) + 1
                logger.error("Background task %s ended unexpectedly; starting it again in %.1f s", kind, delay)
            else:
                self.count_failure(kind, failure, delay)
            await asyncio.sleep(delay)
