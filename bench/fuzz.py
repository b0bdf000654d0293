"""Run the suite's property-based tests with many inputs each and print one JSON document.

The CI suite runs every property (tests marked `properties`) with a small budget so that it stays
fast; this script runs the very same tests with 100,000 inputs per target (the `long` hypothesis
profile, or `--examples N`) and reports, per target, how many inputs were tried, how many failed,
and how long it took. A failure's minimal example is in the pytest output saved beside the JSON.

    python bench/fuzz.py                         # every target, 100,000 inputs each
    python bench/fuzz.py --examples 2000 -k codec # a quick look at some targets
    python bench/fuzz.py --jobs 2 --json fuzz.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "- 300 passing, 0 failing, and 41 invalid test cases" (older hypothesis: "... passing examples, ...")
STATISTICS = re.compile(r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?,(?: and)? (\d+) invalid")


def collect(selection: str | None) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "properties", "tests"]
    if selection:
        command += ["-k", selection]
    output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False).stdout
    return [line.strip() for line in output.splitlines() if "::" in line and not line.startswith(" ")]


def run_target(target: str, examples: int | None, log_dir: Path) -> dict[str, object]:
    env = dict(os.environ, HYPOTHESIS_PROFILE="long")
    if examples is not None:
        env["HYPOTHESIS_MAX_EXAMPLES"] = str(examples)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seconds = time.monotonic() - started
    log = log_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", target) + ".log")
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    passing = failing = invalid = 0
    for match in STATISTICS.finditer(result.stdout):
        passing += int(match.group(1))
        failing += int(match.group(2))
        invalid += int(match.group(3))
    return {
        "target": target,
        "inputs": passing + failing,
        "failures": failing,
        "invalid": invalid,
        "test_failed": result.returncode != 0,
        "seconds": round(seconds, 1),
        "log": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=None, help="inputs per target (default: 100,000)")
    parser.add_argument("-k", dest="selection", default=None, help="pytest -k expression to pick targets")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at once (each in its own process)")
    parser.add_argument("--json", type=Path, default=None, help="also write the document to this file")
    parser.add_argument("--logs", type=Path, default=ROOT / "bench" / "fuzz-logs", help="pytest output per target")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    targets = collect(args.selection)
    if not targets:
        print("no property-based tests selected", file=sys.stderr)
        return 2
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda target: run_target(target, args.examples, args.logs), targets))
    document = {
        "examples_per_target": args.examples or 100_000,
        "targets": results,
        "inputs": sum(int(r["inputs"]) for r in results),  # type: ignore[call-overload]
        "failures": sum(int(r["failures"]) for r in results),  # type: ignore[call-overload]
        "seconds": round(time.monotonic() - started, 1),
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 1 if any(r["test_failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
