"""Hostile manifests against the bounded loader: the time and peak memory of `release-rollback plan`
on a YAML alias bomb and a 66 MB manifest (both refused with exit 2), next to a normal manifest's
refusal for a missing inventory (the same start-up, no hostile input).

    .venv/bin/python bench/hostile_input.py [--repeat 3]

Not a test: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "tests")]

from test_hostile import ALIAS_BOMB, huge_manifest  # noqa: E402  (the inputs the tests use)

CLI = str(Path(sys.executable).parent / "release-rollback")


def measure(manifest: Path, inventory: Path, runs: Path) -> tuple[float, float, int, str]:
    """(seconds, peak RSS in MB, exit code, first line of stderr) of one `plan` in a fresh process."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "dt = time.monotonic() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(dt, rss, p.returncode, p.stderr.splitlines()[0] if p.stderr else '', sep='\\t')\n"
    )
    cmd = [sys.executable, "-c", code, CLI, "--runs-dir", str(runs), "plan", "-i", str(inventory), "-m", str(manifest)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().split("\t")
    return float(out[0]), float(out[1]), int(out[2]), out[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        inventory = tmp_path / "hosts.yml"
        inventory.write_text("all: {}\n")
        bomb = tmp_path / "bomb.yml"
        bomb.write_text(ALIAS_BOMB)
        big = huge_manifest(tmp_path / "big.yml")
        normal = tmp_path / "normal.yml"
        normal.write_text("rollback_manifest:\n  app: shop\n  version: '20261126081500Z'\n")
        cases = [
            ("start-up only (missing inventory)", normal, tmp_path / "missing.yml"),
            ("alias bomb in flags.request.body", bomb, inventory),
            (f"{big.stat().st_size / 2**20:.0f} MiB manifest (a list of flag names)", big, inventory),
        ]
        print(f"{'input':<44} {'seconds (median)':>17} {'peak RSS MB':>12}  exit  first line")
        for label, manifest, inv in cases:
            samples = [measure(manifest, inv, tmp_path / "runs") for _ in range(args.repeat)]
            secs = statistics.median(s[0] for s in samples)
            rss = max(s[1] for s in samples)
            print(f"{label:<44} {secs:>17.3f} {rss:>12.1f}  {samples[0][2]:>4}  {samples[0][3][:90]}")


if __name__ == "__main__":
    main()
