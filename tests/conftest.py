"""Shared test fixtures: a real local fleet, the CLI as a subprocess, and service checks.

A test that needs a missing service fails (on CI and off it): no test skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLI = str(BIN / "release-rollback")


@pytest.fixture(scope="session", autouse=True)
def ansible_home(tmp_path_factory):
    """Keep ansible's writes out of the user's home, put the venv's tools first on PATH, and give
    every process the tests start a bytecode cache: for the driver's and the collection's files
    (a checkout has no ``__pycache__``, and a machine may set ``PYTHONDONTWRITEBYTECODE``, so each
    CLI call, job guard and fleet service would compile them from source again), and for
    zip-imported code (tests/pyboot)."""
    home = tmp_path_factory.mktemp("ansible-home")
    saved = dict(os.environ)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.update(
        {
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_REMOTE_TMP": str(home / "remote-tmp"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "PATH": str(BIN) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "tests" / "pyboot")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            ),
            "RELEASE_ROLLBACK_TEST_ZIP_BYTECODE": str(tmp_path_factory.getbasetemp().parent / "zip-bytecode"),
        }
    )
    yield home
    os.environ.clear()
    os.environ.update(saved)


def need(condition: bool, what: str) -> None:
    """A test's precondition on the machine: a missing service fails the test, on CI and off it.

    Nothing skips: `make test` installs what the tests need (.ci/test-deps), so a missing service
    is a broken setup to fix, never a test to pass over.
    """
    if not condition:
        pytest.fail(f"{what} is missing: run `make test-deps` (no test skips for a missing service)")


@pytest.fixture(name="need")
def need_fixture():
    """``need(condition, what)`` for tests: fail when the machine lacks what the test drives."""
    return need


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip from anywhere (a marker, a plugin, a helper) is a failure: no test may skip."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, and no test may skip: {report.longrepr}"


@pytest.fixture
def fleet(tmp_path):
    """A three-host demo fleet on the bad release, services running; stopped afterwards."""
    from release_rollback.demo import build_fleet

    built = build_fleet(tmp_path / "fleet", 3)
    yield built
    subprocess.run(["chattr", "-i", str(built.flags)], capture_output=True)
    built.stop()


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


class Cli:
    def __init__(self, runs: Path, cwd: Path):
        self.runs = runs
        self.cwd = cwd

    def __call__(
        self, *args: str, input: str | None = None, timeout: int = 300, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        cmd = [CLI, "--runs-dir", str(self.runs), *args]
        return subprocess.run(
            cmd,
            cwd=self.cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def popen(self, *args: str) -> subprocess.Popen:
        """The CLI started in the background (to kill, signal or race it)."""
        return subprocess.Popen(
            [CLI, "--runs-dir", str(self.runs), *args],
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.runs.glob("*") if (p / "state.json").exists())


@pytest.fixture
def cli(runs_dir, tmp_path):
    return Cli(runs_dir, tmp_path)


@pytest.fixture(scope="session")
def mu():
    """The collection's module_utils, imported the way the driver imports them."""
    from release_rollback import content

    class _MU:
        stages = content.module_utils("stages")
        plan = content.module_utils("plan")
        manifest = content.module_utils("manifest")
        releases = content.module_utils("releases")
        audit = content.module_utils("audit")
        flagd = content.module_utils("flagd")
        report = content.module_utils("report")
        service = content.module_utils("service")

    return _MU
