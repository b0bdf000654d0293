"""A probe that names the long steps of the operator's event loop.

    LOOP_PROBE_FILE=/tmp/steps.txt PYTHONPATH=$PWD/bench/loop_probe \
        python bench/bench_process.py --instances 1000 --json

The path must be absolute (the bench runs the operator in another directory), and the variable
is not a `WHATSAPP_OPERATOR_*` one: the bench hands the operator none of those but its own.
Python imports `sitecustomize` at start-up from the path. In the operator's process only (the
command line names `whatsapp_operator`), every callback the event loop runs is timed; each that took
longer than 4 ms is written as one line: the monotonic time at its end, its duration, and the task
it stepped (name and coroutine) or the callback. Other processes that load it do nothing. Two
clock reads per callback: the figures of a probed run are a little higher than those of a plain run.
"""

from __future__ import annotations

import os
import sys
import time

_OUTPUT = os.environ.get("LOOP_PROBE_FILE")
_THRESHOLD = 0.004

if _OUTPUT and "whatsapp_operator" in " ".join(getattr(sys, "orig_argv", [])):
    import asyncio
    import asyncio.events

    _run = asyncio.events.Handle._run
    _log = open(_OUTPUT, "a", buffering=1)  # noqa: SIM115 - open for the life of the process

    def _timed_run(self: asyncio.events.Handle) -> None:
        started = time.perf_counter()
        _run(self)
        took = time.perf_counter() - started
        if took > _THRESHOLD:
            callback = self._callback  # type: ignore[attr-defined]
            owner = getattr(callback, "__self__", None)
            what = (
                f"task {owner.get_name()} {owner.get_coro()!r}" if isinstance(owner, asyncio.Task) else repr(callback)
            )
            _log.write(f"{time.monotonic():.3f} {took * 1000:.1f}ms {what[:400]}\n")

    asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]
