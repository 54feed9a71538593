"""How well the suite's files fill the test workers: measured, and the same files under other orders.

    CI=true .venv/bin/pytest -v -n 2 --dist loadfile --durations=0 -o console_output_style=classic > /tmp/suite.log
    .venv/bin/python bench/suite_schedule.py /tmp/suite.log

`--dist loadfile` gives each worker whole files, one after the other: the suite ends when the worker
with the most left ends. pytest-xdist hands out the files with the most tests first (its
`--loadscope-reorder`, the default), and a worker takes its next file when two tests of its current
one are left. This reads each test's time (setup + call + teardown, from `--durations=0`) and each
worker's files (from `-v`), and replays the same schedule for:

- xdist's default order (most tests first), which is what ran;
- the collection order (`--no-loadscope-reorder`);
- the longest file first (what a scheduler that knew the times would do);

next to the bound no order can beat: the longer of (all the test time / workers) and the longest file.
Prints the figures and the machine. Not a test: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ROOT, machine

DURATION = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(.+?)\s*$")
RESULT = re.compile(r"^\[(gw\d+)\] (?:\[\s*\d+%\] )?(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (.+?)\s*$")
WALL = re.compile(r" in ([0-9.]+)s")


def parse(log: str) -> tuple[dict[str, float], dict[str, list[str]], list[str], float | None]:
    times: dict[str, float] = defaultdict(float)
    workers: dict[str, list[str]] = defaultdict(list)
    order: list[str] = []  # as the workers reported the tests
    wall = None
    for line in log.splitlines():
        if m := DURATION.match(line):
            times[m.group(3)] += float(m.group(1))
        elif m := RESULT.match(line):
            if m.group(3) not in workers[m.group(1)]:
                workers[m.group(1)].append(m.group(3))
                order.append(m.group(3))
        elif line.startswith("=") and (m := WALL.search(line)) and ("passed" in line or "failed" in line):
            wall = float(m.group(1))
    return times, workers, order, wall


def collection() -> list[str]:
    """The suite's test ids in pytest's collection order (the order xdist's own sort starts from)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if "::" in line]


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def replay(files: list[tuple[str, list[float]]], nodes: int) -> float:
    """xdist's LoadScopeScheduling: one file to each worker, a second where the first has two tests or
    fewer, then the next file to a worker whenever two or fewer of its tests are left. Returns when the
    last worker ends."""
    queue = list(files)
    todo: list[list[float]] = [[] for _ in range(nodes)]
    clock = [0.0] * nodes

    def give(node: int) -> None:
        if queue and len(todo[node]) <= 2:
            todo[node].extend(queue.pop(0)[1])

    for node in range(nodes):
        if queue:
            todo[node].extend(queue.pop(0)[1])
    for node in range(nodes):
        give(node)
    while any(todo):
        node = min((n for n in range(nodes) if todo[n]), key=lambda n: clock[n] + todo[n][0])
        clock[node] += todo[node].pop(0)
        give(node)
    return max(clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="pytest's output with -v -n N --dist loadfile --durations=0")
    args = parser.parse_args()
    times, workers, order, wall = parse(args.log.read_text())
    if not times or not workers:
        sys.exit(f"{args.log} has no per-test durations or no worker lines: run pytest with -v and --durations=0")
    nodes = len(workers)
    ran = set(order)
    by_file: dict[str, list[float]] = defaultdict(list)
    for nodeid in collection():
        if nodeid in ran:
            by_file[file_of(nodeid)].append(times.get(nodeid, 0.0))
    collected = list(by_file.items())
    most_tests = sorted(collected, key=lambda item: -len(item[1]))
    longest = sorted(collected, key=lambda item: -sum(item[1]))
    total = sum(times.values())

    print(f"machine: {machine()}")
    print(f"{len(order)} tests in {len(by_file)} files on {nodes} workers; test time {total:.0f} s in all")
    if wall is not None:
        print(f"measured wall time: {wall:.0f} s")
    for name, tests in sorted(workers.items()):
        print(f"  {name}: {sum(times.get(t, 0.0) for t in tests):.0f} s of tests, {len(tests)} tests")
    print("the longest files:")
    for name, tests in longest[:8]:
        print(f"  {sum(tests):6.0f} s  {len(tests):3d} tests  {name}")
    bound = max(total / nodes, sum(longest[0][1]))
    print("the same tests replayed (s):")
    print(f"  xdist's default, most tests first: {replay(most_tests, nodes):.0f}")
    print(f"  collection order:                  {replay(collected, nodes):.0f}")
    print(f"  longest file first:                {replay(longest, nodes):.0f}")
    print(f"  no order does better than:         {bound:.0f}")


if __name__ == "__main__":
    main()
