"""A probe that says which of the operator's loop callbacks its CPU goes to.

    CPU_PROBE_FILE=/tmp/probe.txt PYTHONPATH=$PWD/bench/cpu_probe:$PWD/operator \
        python bench/bench_process.py --instances 1000 --json --event-loop asyncio
    kill -USR2 <operator pid>   # at the start of the stretch to measure: copy the file aside
    kill -USR2 <operator pid>   # at its end
    python bench/cpu_probe/diff.py before.txt after.txt 2000   # 2000: QR events in between

Only with asyncio's own loop (uvloop's handles are not Python objects). In the operator's process
only (the command line names `whatsapp_operator`), every callback the loop runs is timed with the
thread's CPU clock and added up under its name: a task by its coroutine, a transport's read by
the protocol it feeds. SIGUSR2 (and the end of the process) writes the totals: the process's
CPU, each callback's CPU and count, garbage collections by generation, and the per-object workers
kopf started by kind. With CPU_PROBE_FUNCTIONS=1 the first SIGUSR2 also wraps a few functions of
the QR path (each call then costs a few microseconds more: compare rows of one run, not runs).
Two clock reads per callback: a probed run costs a little more than a plain one.
"""

from __future__ import annotations

import atexit
import collections
import functools
import gc
import importlib
import os
import signal
import sys
import time
from typing import Any

_OUTPUT = os.environ.get("CPU_PROBE_FILE")

# The functions CPU_PROBE_FUNCTIONS=1 times (module, qualified name); nested calls count once.
_FUNCTIONS = [
    ("websockets.asyncio.connection", "Connection.data_received"),
    ("whatsapp_operator.socketio.client", "SocketIOClient._receive_frame"),
    ("whatsapp_operator.socketio.codec", "ClientSession.receive"),
    ("whatsapp_operator.evolution.stream", "parse_event"),
    ("whatsapp_operator.engine.runtime", "Runtime.instance_event"),
    ("whatsapp_operator.engine.state", "InstanceState.apply_event"),
    ("whatsapp_operator.engine.state", "InstanceState.render_status"),
    ("whatsapp_operator.kube.status_writer", "StatusWriter.submit"),
    ("whatsapp_operator.kube.status_writer", "merge_patch"),
    ("whatsapp_operator.http11", "RequestMaker.build"),
    ("whatsapp_operator.http11", "_request_bytes"),
    ("whatsapp_operator.http11", "_Connection.send"),
    ("whatsapp_operator.kube.echoes", "EchoFilter.admits"),
    ("json", "loads"),
]


def _install() -> None:
    import asyncio
    import asyncio.events

    from kopf._core.reactor import queueing

    clock = time.thread_time
    callbacks: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    function_calls: collections.Counter[str] = collections.Counter()
    collections_cpu: collections.Counter[int] = collections.Counter()
    collections_count: collections.Counter[int] = collections.Counter()
    workers: collections.Counter[str] = collections.Counter()
    collection_started = [0.0]

    def name_of(handle: asyncio.Handle) -> str:
        callback = handle._callback  # type: ignore[attr-defined]
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            coro = owner.get_coro()
            return "task " + getattr(coro, "__qualname__", repr(coro))
        if owner is not None:
            name = f"{type(owner).__name__}.{getattr(callback, '__name__', '?')}"
            protocol = getattr(owner, "_protocol", None)
            if protocol is not None:
                name += f" -> {type(protocol).__module__}.{type(protocol).__qualname__}"
            return name
        return str(getattr(callback, "__qualname__", repr(callback)))

    run = asyncio.events.Handle._run

    def timed_run(self: asyncio.Handle) -> None:
        started = clock()
        run(self)
        name = name_of(self)
        callbacks[name] += clock() - started
        calls[name] += 1

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collection_started[0] = clock()
        else:
            collections_cpu[info["generation"]] += clock() - collection_started[0]
            collections_count[info["generation"]] += 1

    gc.callbacks.append(on_collection)

    original_worker = queueing.worker

    async def worker(**kwargs: Any) -> None:
        key = kwargs.get("key")
        workers[getattr(key[0], "plural", str(key[0])) if key else "?"] += 1
        await original_worker(**kwargs)

    queueing.worker = worker

    def wrap(module: str, qualname: str) -> None:
        target: Any = importlib.import_module(module)
        *path, name = qualname.split(".")
        for part in path:
            target = getattr(target, part)
        function = getattr(target, name)
        label = f"{module.rsplit('.', 1)[-1]}:{qualname}"
        depth = [0]

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return function(*args, **kwargs)
            depth[0] += 1
            started = clock()
            try:
                return function(*args, **kwargs)
            finally:
                functions[label] += clock() - started
                function_calls[label] += 1
                depth[0] -= 1

        setattr(target, name, timed)

    wrapped = [False]

    def dump(*_: Any) -> None:
        if not wrapped[0] and os.environ.get("CPU_PROBE_FUNCTIONS") == "1":
            wrapped[0] = True
            for module, qualname in _FUNCTIONS:
                wrap(module, qualname)
        assert _OUTPUT is not None
        with open(_OUTPUT, "w", encoding="utf-8") as out:
            out.write(f"process_time {time.process_time():.4f}\n")
            out.writelines(f"{cpu:.4f} {calls[name]} {name}\n" for name, cpu in callbacks.most_common())
            out.writelines(f"{cpu:.4f} {function_calls[name]} function {name}\n" for name, cpu in functions.items())
            out.writelines(
                f"{collections_cpu[generation]:.4f} {collections_count[generation]} gc generation {generation}\n"
                for generation in sorted(collections_cpu)
            )
            out.writelines(f"0 {count} kopf workers started for {kind}\n" for kind, count in workers.items())

    signal.signal(signal.SIGUSR2, dump)
    atexit.register(dump)


if _OUTPUT and "whatsapp_operator" in " ".join(getattr(sys, "orig_argv", [])):
    _install()
