"""Headless Debian Chromium for the report tests, in a network namespace of its own (no network)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import ROOT, need

CHROMIUM = shutil.which("chromium")
ARTIFACTS = ROOT / "test-artifacts"  # gitignored: screenshots kept from the last test run
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(profile_dir: Path, *args: str) -> subprocess.CompletedProcess:
    need(CHROMIUM is not None, "Debian chromium (apt-get install chromium)")
    need(shutil.which("unshare") is not None, "unshare (util-linux)")
    cmd = ["unshare", "--net", CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def screenshot(profile_dir: Path, page: Path, name: str) -> Path:
    """A PNG of ``page`` kept in the test's tmp dir and copied to test-artifacts/NAME."""
    shot = profile_dir / name
    taken = chromium(profile_dir, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    return shot
