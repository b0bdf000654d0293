#!/usr/bin/env python3
"""The CPU between two dumps of bench/cpu_probe/sitecustomize.py, by loop callback.

    python bench/cpu_probe/diff.py BEFORE AFTER [EVENTS]

EVENTS (the QR events between the dumps) adds a column of milliseconds per event. Rows named
`function ...` are inside the callbacks above them, and `gc ...` inside whichever callback
allocated: neither is added to "in callbacks".
"""

from __future__ import annotations

import sys


def load(path: str) -> tuple[float, dict[str, tuple[float, int]]]:
    process, rows = 0.0, {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("process_time "):
                process = float(line.split()[1])
                continue
            cpu, count, name = line.rstrip("\n").split(" ", 2)
            rows[name] = (float(cpu), int(count))
    return process, rows


def main() -> None:
    before_cpu, before = load(sys.argv[1])
    after_cpu, after = load(sys.argv[2])
    events = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    total = after_cpu - before_cpu
    rows = sorted(
        (
            (cpu - before.get(name, (0.0, 0))[0], count - before.get(name, (0.0, 0))[1], name)
            for name, (cpu, count) in after.items()
        ),
        reverse=True,
    )
    in_callbacks = sum(cpu for cpu, _, name in rows if not name.startswith(("function ", "gc ", "kopf workers ")))
    print(f"process CPU {total:.3f} s; in loop callbacks {in_callbacks:.3f} s; elsewhere {total - in_callbacks:.3f} s")
    for cpu, count, name in rows[:30]:
        if not count:
            continue
        per_event = f" {1000 * cpu / events:6.3f} ms/event" if events else ""
        share = 100 * cpu / total if total else 0.0
        print(f"{cpu:8.3f} s {share:5.1f}% {count:7d} calls {1e6 * cpu / count:7.1f} us/call{per_event}  {name[:120]}")


if __name__ == "__main__":
    main()
