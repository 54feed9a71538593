"""The embedded default: a local fleet on a bad release, rolled back end to end.

``build_fleet`` lays out N local-connection hosts in ansistrano layout (a good release and the bad
one, live), starts a real HTTP service per host on its own loopback port, migrates an SQLite
database to the bad release's head, writes a flagd file with the bad release's flag on, and starts
a small load balancer on the bad release's upstreams. Tests build their fleets with it too.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shlex
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import content, demo_service

ASSETS = Path(__file__).resolve().parent / "demo_assets"
GOOD = "20261120093000Z"
BAD = "20261126081500Z"
FLAG = "new-checkout"
OTHER_FLAG = "dark-mode"


@dataclass
class Fleet:
    root: Path
    inventory: Path
    manifest: Path
    hosts: dict[str, Path] = field(default_factory=dict)  # host name -> host directory
    ports: dict[str, int] = field(default_factory=dict)
    db: Path = Path()
    flags: Path = Path()
    lb: Path = Path()
    good: str = GOOD
    bad: str = BAD

    def app_root(self, host: str) -> Path:
        return self.hosts[host] / "app"

    def live(self, host: str) -> str:
        return os.readlink(self.app_root(host) / "current")

    def db_revision(self) -> str | None:
        with sqlite3.connect(self.db) as conn:
            row = conn.execute("select version_num from alembic_version").fetchone()
        return row[0] if row else None

    def flag(self, name: str = FLAG) -> dict:
        return json.loads(self.flags.read_text())["flags"][name]

    def lb_release(self) -> str | None:
        text = (self.lb / "upstreams.conf").read_text()
        return text.splitlines()[0].split()[-1] if text.startswith("# release") else None

    def stop(self) -> None:
        demo_service.fleet_stop(self.root)


# How long a port handed out by ``free_port`` is kept from every other caller on this machine.
PORT_HOLD_SECONDS = 30 * 60


def _port_registry() -> Path:
    return Path(tempfile.gettempdir()) / f"release-rollback-ports-{os.getuid()}"


def free_port() -> int:
    """A loopback TCP port that nothing listens on and that no other caller on this machine was
    given in the last ``PORT_HOLD_SECONDS``.

    A fleet chooses its ports when it is laid out and listens on them later, and again after every
    restart. The kernel hands a port that nobody holds to the next caller, so without a record two
    fleets built side by side (two test workers, a demo next to a test run) could be given the same
    port, and one of the two services would fail to listen. The record is a file under the temporary
    directory, one ``port time`` line per port, rewritten under an exclusive lock."""
    fd = os.open(_port_registry(), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        now = time.time()
        held: dict[int, float] = {}
        for line in fh:
            port, _, when = line.partition(" ")
            try:
                if now - float(when) < PORT_HOLD_SECONDS:
                    held[int(port)] = float(when)
            except ValueError:
                continue  # a line cut short by a crash: its port is simply not held
        for _ in range(10_000):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in held:
                break
        else:
            raise RuntimeError(
                f"no loopback port is free that {_port_registry()} does not hold: "
                f"stop the demo fleets left running, or remove that file"
            )
        held[port] = now
        fh.seek(0)
        fh.truncate()
        fh.write("".join(f"{p} {t}\n" for p, t in held.items()))
    return port


def _release(app: Path, version: str, broken: bool, with_b2: bool) -> Path:
    rel = app / "releases" / version
    rel.mkdir(parents=True)
    (rel / "REVISION").write_text(version + "\n")
    shutil.copy2(ASSETS / "server.py", rel / "server.py")
    if broken:
        (rel / "BROKEN_RELEASE").write_text("this release answers /health with 500\n")
    shutil.copy2(ASSETS / "alembic.ini", rel / "alembic.ini")
    shutil.copytree(ASSETS / "migrations", rel / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    if not with_b2:
        (rel / "migrations" / "versions" / "b2_orders_index.py").unlink()
    return rel


def _config(good: bool, port: int) -> str:
    if good:
        return f"port = {port}\ncheckout = classic\n"
    return f"port = {port}\ncheckout = new\npayment_timeout_ms = 250\n"


def _upstreams(version: str, ports: list[int]) -> str:
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in ports)
    return f"# release {version}\nupstream app {{\n{servers}}}\n"


def _migrate(release: Path, db: Path) -> None:
    """Create ``db`` at the head of ``release``'s Alembic scripts.

    Alembic builds it once per set of scripts (and Alembic and SQLAlchemy versions) into the user's
    cache (``$XDG_CACHE_HOME/release-rollback/demo-db``); later fleets copy that file, which saves
    each fleet a Python start and Alembic's import (about a second). Without a usable cache directory
    every fleet runs Alembic."""
    scripts = [release / "alembic.ini", *sorted((release / "migrations").rglob("*.py"))]
    key = hashlib.sha256(" ".join(importlib.metadata.version(dist) for dist in ("alembic", "sqlalchemy")).encode())
    for script in scripts:
        key.update(b"\0" + script.relative_to(release).as_posix().encode() + b"\0" + script.read_bytes())
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cache = Path(xdg) / "release-rollback" / "demo-db"
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = cache.lstat()
        usable = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022
    except OSError:
        usable = False
    cached = cache / f"{key.hexdigest()}.sqlite3"
    if usable and cached.is_file():
        shutil.copyfile(cached, db)
        return
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(release / "alembic.ini"), "upgrade", "head"],
        check=True,
        capture_output=True,
        cwd=release,
        env=dict(os.environ, DATABASE_URL=f"sqlite:///{db}"),
    )
    if usable:
        partial = cache / f".{cached.name}.{os.getpid()}"
        shutil.copyfile(db, partial)
        os.replace(partial, cached)  # whole or absent, for a builder running alongside


def build_fleet(root: Path, host_count: int = 3, start: bool = True, releases: tuple[str, ...] = (GOOD, BAD)) -> Fleet:
    """Lay out and start the demo fleet under ``root`` (which must be empty or absent)."""
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty: give the demo an empty or new directory")
    live = releases[-1]
    fleet = Fleet(root=root, inventory=root / "inventory" / "hosts.yml", manifest=root / "manifest.yml")
    for i in range(1, host_count + 1):
        name = f"web{i}"
        host_dir = root / "hosts" / name
        app = host_dir / "app"
        port = free_port()
        (host_dir / "etc").mkdir(parents=True)
        (app / "shared").mkdir(parents=True)
        (app / "shared" / "uploads.txt").write_text("user data that a rollback must never touch\n")
        for version in releases:
            is_live = version == live
            _release(app, version, broken=is_live and len(releases) > 1, with_b2=is_live)
            snap = app / "snapshots" / version / "files" / str(host_dir / "etc" / "app.conf").lstrip("/")
            snap.parent.mkdir(parents=True)
            snap.write_text(_config(not is_live, port))
        os.symlink(f"./releases/{live}", app / "current")
        (host_dir / "etc" / "app.conf").write_text(_config(False, port))
        (host_dir / "port").write_text(str(port))
        fleet.hosts[name] = host_dir
        fleet.ports[name] = port

    # The database, migrated to the live release's head by the live release's own Alembic scripts.
    fleet.db = root / "db" / "app.db"
    fleet.db.parent.mkdir()
    _migrate(fleet.app_root("web1") / "releases" / live, fleet.db)

    # Flags: the bad release's flag on, with targeting; another release's flag that must stay as it is.
    fleet.flags = root / "flags" / "flags.json"
    fleet.flags.parent.mkdir()
    fleet.flags.write_text(
        json.dumps(
            {
                "flags": {
                    FLAG: {
                        "state": "ENABLED",
                        "variants": {"on": True, "off": False},
                        "defaultVariant": "on",
                        "targeting": {"if": [{"in": ["@example.com", {"var": "email"}]}, "on", "off"]},
                    },
                    OTHER_FLAG: {
                        "state": "ENABLED",
                        "variants": {"on": True, "off": False},
                        "defaultVariant": "on",
                    },
                }
            },
            indent=2,
        )
        + "\n"
    )

    # The load balancer: upstreams per release, the live one in place.
    fleet.lb = root / "lb"
    (fleet.lb / "releases").mkdir(parents=True)
    ports = list(fleet.ports.values())
    for version in releases:
        # The bad release added a canary backend that does not exist.
        extra = [free_port()] if version == live and len(releases) > 1 else []
        (fleet.lb / "releases" / f"{version}.conf").write_text(_upstreams(version, ports + extra))
    shutil.copy2(fleet.lb / "releases" / f"{live}.conf", fleet.lb / "upstreams.conf")
    (fleet.lb / "port").write_text(str(free_port()))

    _write_inventory(fleet)
    _write_manifest(fleet, live, releases)
    if start:
        for host_dir in fleet.hosts.values():
            if demo_service.start(host_dir) != 0:
                raise RuntimeError(f"the demo application on {host_dir} did not start: see {host_dir}/run/app.log")
        if demo_service.lb_start(fleet.lb) != 0:
            raise RuntimeError(f"the demo load balancer did not start: see {fleet.lb}/lb.log")
    return fleet


def _service_cmd(verb: str, path: Path) -> list[str]:
    return [sys.executable, "-m", "release_rollback.demo_service", verb, str(path)]


def _write_inventory(fleet: Fleet) -> None:
    inv_dir = fleet.inventory.parent
    inv_dir.mkdir()
    shutil.copytree(content.demo_inventory_dir() / "group_vars", inv_dir / "group_vars")
    hosts = {}
    for name, host_dir in fleet.hosts.items():
        port = fleet.ports[name]
        hosts[name] = {
            "rollback_app_root": str(host_dir / "app"),
            "rollback_config_files": [str(host_dir / "etc" / "app.conf")],
            "rollback_restart_command": _service_cmd("restart", host_dir),
            "rollback_health_url": f"http://127.0.0.1:{port}/health",
            "rollback_version_url": f"http://127.0.0.1:{port}/version",
        }
    doc = {
        "all": {
            "vars": {"ansible_python_interpreter": sys.executable},
            "children": {
                "app": {"hosts": hosts},
                "db": {"hosts": {"db1": {}}},
                "infra": {"hosts": {"lb1": {}}},
            },
        }
    }
    fleet.inventory.write_text(
        "# Demo fleet: local-connection hosts, generated by `release-rollback demo`.\n"
        + yaml.safe_dump(doc, sort_keys=False, width=200)
    )


def _write_manifest(fleet: Fleet, live: str, releases: tuple[str, ...]) -> None:
    release_dir = fleet.app_root("web1") / "releases" / live
    manifest = {
        "rollback_manifest": {
            "app": "demo-shop",
            "version": live,
            "reason": "post-deploy validation failed: /health answers 500 on the new release",
            "flags": {"backend": "flagd", "file": str(fleet.flags), "names": [FLAG]},
            "database": {
                "tool": "alembic",
                "config": str(release_dir / "alembic.ini"),
                "url": f"sqlite:///{fleet.db}",
                "python": sys.executable,
                "target_revision": "a1",
                "backup_dir": str(fleet.db.parent / "backups"),
                "critical_tables": ["orders"],
            },
            "infrastructure": {
                "kind": "config_file",
                "path": str(fleet.lb / "upstreams.conf"),
                "snapshot": str(fleet.lb / "releases" / "{version}.conf"),
                "validate_command": " ".join(_service_cmd("lb-check", Path("{path}"))),
                "reload_command": " ".join(_service_cmd("lb-reload", fleet.lb)),
            },
            "validation": {"retries": 20, "delay": 0.25, "timeout": 5},
        }
    }
    if len(releases) < 2:
        manifest["rollback_manifest"].pop("database")
    fleet.manifest.write_text(
        "# Release manifest of the demo's bad release.\n" + yaml.safe_dump(manifest, sort_keys=False)
    )


def run_demo(
    workdir: str | None, host_count: int, keep: bool, runs_root: Path | None, json_mode: bool, operator: str
) -> int:
    """Build the fleet, plan, approve as the demo approver, run, and print what changed.

    The fleet (its directory and services) is removed afterwards unless ``keep``; the run directory
    with its report stays where runs go.
    """
    from .engine import Engine
    from .rundir import RunDir
    from .view import make_view

    stages = content.module_utils("stages")
    root = Path(workdir).absolute() if workdir else Path(tempfile.mkdtemp(prefix="release-rollback-demo-"))
    say = (lambda *a: print(*a, file=sys.stderr)) if json_mode else print
    say(f"Building a demo fleet of {host_count} host(s) in {root} ...")
    try:
        fleet = build_fleet(root, host_count)
    except BaseException:
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        say(f"Fleet on the bad release {fleet.bad} (its /health answers 500); previous good release {fleet.good}.")
        view = make_view(json_mode)
        rundir = RunDir.create(runs_root if runs_root is not None else root / "runs")
        engine = Engine(rundir, view)
        try:
            engine.plan(str(fleet.inventory), str(fleet.manifest), operator=operator)
            engine.approve("demo-approver", "demo: approved by the embedded demo")
            exit_state = engine.execute()
        finally:
            view.close()
        summary = {
            "exit_state": exit_state,
            "run_dir": str(rundir.path),
            "report": str(rundir.path / "report.md"),
            "hosts": {h: fleet.live(h) for h in fleet.hosts},
            "database_revision": fleet.db_revision(),
            "flag": {FLAG: "off" if fleet.flag()["defaultVariant"] == "off" else "on"},
            "load_balancer_release": fleet.lb_release(),
            "fleet": str(root),
            "fleet_kept": keep,
        }
        if json_mode:
            print(json.dumps(summary, indent=2))
        else:
            say("")
            for host, link in summary["hosts"].items():
                say(f"  {host}: current -> {link}")
            say(f"  database revision: {summary['database_revision']}")
            say(f"  flag {FLAG}: {summary['flag'][FLAG]}")
            say(f"  load balancer upstreams: release {summary['load_balancer_release']}")
            say(f"\nExit state: {exit_state}")
            say(f"Report: {summary['report']}")
        return stages.EXIT_CODES[exit_state]
    finally:
        if keep:
            say(
                f"Demo fleet kept in {root} with its services running (--keep); stop them with: "
                f"{shlex.join([sys.executable, '-m', 'release_rollback.demo_service', 'fleet-stop', str(root)])}"
            )
        else:
            fleet.stop()
            shutil.rmtree(root, ignore_errors=True)
            say(f"Demo fleet {root} stopped and removed (--keep leaves it).")
