"""The demo fleet builder: two fleets built side by side never share a port; a service that could not
listen on its port is reported as not started even when another process listens there; and a fleet's
database copied from the builder's cache is the one Alembic builds, for the scripts the release has."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from release_rollback import demo, demo_service
from release_rollback.demo import build_fleet, free_port

SERVICE = [sys.executable, "-m", "release_rollback.demo_service"]


def test_free_port_never_gives_two_processes_on_the_machine_the_same_port(tmp_path):
    # Two builders at once, as two test workers or a demo beside a test run are. The kernel alone
    # hands a just-closed port to the next caller: 1200 draws from its ~14000 would repeat about fifty.
    script = "from release_rollback.demo import free_port\nprint(*(free_port() for _ in range(600)))"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    ports = [int(p) for out in outs for p in out.split()]
    assert len(ports) == 1200
    assert len(set(ports)) == 1200, f"{1200 - len(set(ports))} ports were given twice"
    registry = tmp_path / f"release-rollback-ports-{os.getuid()}"
    assert oct(registry.stat().st_mode & 0o777) == "0o600"
    assert {int(line.split()[0]) for line in registry.read_text().splitlines()} == set(ports)


def _lb_dir(root: Path, port: int) -> Path:
    lb = root / "lb"
    lb.mkdir()
    (lb / "upstreams.conf").write_text(
        textwrap.dedent("""\
        # release 20261120093000Z
        upstream app {
            server 127.0.0.1:9;
        }
        """)
    )
    (lb / "port").write_text(str(port))
    return lb


def test_a_load_balancer_that_cannot_listen_is_not_started_though_another_process_answers_on_its_port(tmp_path):
    port = free_port()
    lb = _lb_dir(tmp_path, port)
    with socket.socket() as other:  # another fleet's service, on the port this one was given
        other.bind(("127.0.0.1", port))
        other.listen()
        started = subprocess.run([*SERVICE, "lb-start", str(lb)], capture_output=True, text=True, timeout=60)
    assert started.returncode == 1, started.stdout + started.stderr
    assert f"the load balancer did not start on port {port}" in started.stderr
    assert "Address already in use" in started.stderr
    assert demo_service.main(["lb-reload", str(lb)]) == 1  # and nothing of it is left running


def test_a_load_balancer_on_a_free_port_starts_reloads_and_stops(tmp_path):
    lb = _lb_dir(tmp_path, free_port())
    started = subprocess.run([*SERVICE, "lb-start", str(lb)], capture_output=True, text=True, timeout=60)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert demo_service.main(["lb-reload", str(lb)]) == 0
    finally:
        assert demo_service.main(["lb-stop", str(lb)]) == 0
    assert not (lb / "lb.pid").exists()


def test_a_pid_file_whose_pid_now_names_another_process_is_stale_and_nothing_is_signalled(tmp_path):
    """A kept fleet's pid files outlive its processes; once the pid is reused, the file names a process of
    this user that the fleet never started. Stop and reload must leave that process alone."""
    host, lb = tmp_path / "web1", tmp_path / "lb"
    (host / "run").mkdir(parents=True)
    lb.mkdir()
    other = subprocess.Popen(["sleep", "60"])  # holds the pid the files name
    try:
        started = demo_service._start_time(other.pid)
        assert started is not None
        # Written when the pid belonged to a process that started earlier.
        for pidfile in (host / "run" / "app.pid", lb / "lb.pid"):
            pidfile.write_text(f"{other.pid} {int(started) - 1}\n")
        reload = subprocess.run([*SERVICE, "lb-reload", str(lb)], capture_output=True, text=True, timeout=60)
        assert reload.returncode == 1 and f"the load balancer in {lb} is not running" in reload.stderr
        stop = subprocess.run([*SERVICE, "stop", str(host)], capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert other.poll() is None, "a process the fleet never started was signalled"
        assert not (host / "run" / "app.pid").exists()  # the stale file is gone
        # The same process, named with its own start time, is the one the file means: stop ends it.
        demo_service._write_pid(host / "run" / "app.pid", other.pid)
        stop = subprocess.run([*SERVICE, "stop", str(host)], capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert other.wait(timeout=10) == -15
    finally:
        other.kill()
        other.wait()


def _dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return list(conn.iterdump())


def test_a_fleet_database_is_built_by_alembic_once_and_copied_for_the_same_scripts_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a cache of this test's own
    runs = []
    real_run = demo.subprocess.run
    monkeypatch.setattr(demo.subprocess, "run", lambda cmd, **kw: runs.append(cmd) or real_run(cmd, **kw))
    first = build_fleet(tmp_path / "a", 1, start=False)
    assert [cmd[1:3] for cmd in runs] == [["-m", "alembic"]]
    second = build_fleet(tmp_path / "b", 1, start=False)
    assert len(runs) == 1  # copied, not migrated again
    assert len(list((tmp_path / "cache" / "release-rollback" / "demo-db").glob("*.sqlite3"))) == 1
    assert first.db_revision() == second.db_revision() == "b2"
    assert _dump(second.db) == _dump(first.db)
    assert "orders" in " ".join(_dump(second.db))
    # A release whose script differs (the same file, now revision b3) is migrated by Alembic, not given
    # the cached b2.
    release = tmp_path / "c" / "release"
    shutil.copytree(first.app_root("web1") / "releases" / demo.BAD, release)
    b2 = release / "migrations" / "versions" / "b2_orders_index.py"
    b2.write_text(b2.read_text().replace('revision = "b2"', 'revision = "b3"'))
    demo._migrate(release, tmp_path / "c" / "app.db")
    assert len(runs) == 2
    with sqlite3.connect(tmp_path / "c" / "app.db") as conn:
        assert conn.execute("select version_num from alembic_version").fetchone() == ("b3",)


def test_fleet_stop_of_a_directory_that_is_no_demo_fleet_says_so_and_touches_nothing(tmp_path):
    (tmp_path / "lb").mkdir()
    (tmp_path / "lb" / "lb.pid").write_text("1 0\n")
    proc = subprocess.run([*SERVICE, "fleet-stop", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"{tmp_path} is not a demo fleet (it has no hosts/ directory): give the directory the demo named"
    )
    assert (tmp_path / "lb" / "lb.pid").read_text() == "1 0\n"
