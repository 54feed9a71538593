"""Process management for the demo fleet: the restart command of a demo host, and the demo load balancer.

    python -m release_rollback.demo_service restart HOST_DIR     stop the app, start it from current/
    python -m release_rollback.demo_service stop HOST_DIR
    python -m release_rollback.demo_service fleet-stop FLEET_DIR stop every app and the load balancer of a fleet
    python -m release_rollback.demo_service lb-check FILE        validate an upstreams file
    python -m release_rollback.demo_service lb-serve LB_DIR      run the load balancer (reloads on SIGHUP)
    python -m release_rollback.demo_service lb-reload LB_DIR     send it SIGHUP

A host directory holds ``app/`` (the deploy_to), ``run/app.pid``, ``run/app.log`` and ``port``. A pid
file holds the process's pid and start time; one that names no running process, or a process started
at another time (the pid reused), is stale: stop removes it and signals nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_SERVER_LINE = re.compile(r"^\s*server\s+(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5});\s*$")


def _stat(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (the state is first); empty when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (field 22, clock ticks since boot): with the pid, it names one process, which
    a reused pid does not."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def _write_pid(pidfile: Path, pid: int) -> None:
    pidfile.write_text(f"{pid} {_start_time(pid)}\n")


def _pid(pidfile: Path) -> int | None:
    """The process the pid file names, if it still runs: the same pid *and* the same start time. Pids
    wrap (a busy machine reuses one within minutes), and a kept fleet's file may name another
    process of this user by now, which must never be signalled."""
    try:
        pid, started = pidfile.read_text().split()
        pid = int(pid)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == started else None  # no such process: no start time


def _running(pid: int) -> bool:
    """Alive and not a zombie (a stopped app whose parent has not reaped it yet counts as gone)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def _stop_pid(pidfile: Path, timeout: float = 5.0) -> None:
    pid = _pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it when it is our own child (the fleet builder started it), else just probe it.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        if not _running(pid):
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on TCP ``port``: a listener of some other
    process on that port (ours then fails to bind and exits) does not count."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def _started(proc: subprocess.Popen, port: int, log: Path, what: str, timeout: float = 10.0) -> int:
    """0 once ``proc`` holds the socket listening on ``port``; 1, saying so with the last lines of its
    ``log``, if it exits or ``timeout`` seconds pass first. Another process answering on the port
    does not count: ``proc`` then fails to bind and exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _listens(proc.pid, port):
            return 0
        time.sleep(0.05)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    print(f"{what} did not start on port {port}: {' | '.join(tail) or 'no output'}", file=sys.stderr)
    return 1


def start(host_dir: Path) -> int:
    run = host_dir / "run"
    run.mkdir(exist_ok=True)
    port = int((host_dir / "port").read_text())
    server = host_dir / "app" / "current" / "server.py"
    log = open(run / "app.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, str(server), "--port", str(port)],
        cwd=host_dir / "app" / "current",
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    _write_pid(run / "app.pid", proc.pid)
    return _started(proc, port, run / "app.log", "the application")


def restart(host_dir: Path) -> int:
    _stop_pid(host_dir / "run" / "app.pid")
    return start(host_dir)


def lb_check(path: Path) -> int:
    """Accept an upstreams file with one ``upstream NAME { ... }`` block of ``server IP:PORT;`` lines."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return 1
    body = [line for line in lines if line.strip() and not line.strip().startswith("#")]
    if not body or not re.match(r"^\s*upstream\s+\w+\s*\{\s*$", body[0]) or body[-1].strip() != "}":
        print(f"{path}: expected 'upstream NAME {{ ... }}'", file=sys.stderr)
        return 1
    for n, line in enumerate(body[1:-1], 2):
        if not _SERVER_LINE.match(line):
            print(f"{path}: line {n} is not 'server IP:PORT;': {line.strip()}", file=sys.stderr)
            return 1
    if len(body) < 3:
        print(f"{path}: no servers in the upstream block", file=sys.stderr)
        return 1
    return 0


def _read_upstreams(path: Path) -> dict:
    text = path.read_text()
    release = re.search(r"#\s*release\s+(\S+)", text)
    servers = [f"{m.group(1)}:{m.group(2)}" for m in map(_SERVER_LINE.match, text.splitlines()) if m]
    return {"release": release.group(1) if release else None, "servers": servers}


def lb_serve(lb_dir: Path) -> int:
    conf = lb_dir / "upstreams.conf"
    state = {"config": _read_upstreams(conf), "reloads": 0}

    def reload(signum, frame):
        if lb_check(conf) == 0:
            state["config"] = _read_upstreams(conf)
            state["reloads"] += 1

    signal.signal(signal.SIGHUP, reload)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(dict(state["config"], reloads=state["reloads"])).encode()
            self.send_response(200 if self.path == "/upstreams" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            pass

    port = int((lb_dir / "port").read_text())
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()
    return 0


def lb_start(lb_dir: Path) -> int:
    log = open(lb_dir / "lb.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "release_rollback.demo_service", "lb-serve", str(lb_dir)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
    )
    log.close()
    _write_pid(lb_dir / "lb.pid", proc.pid)
    return _started(proc, int((lb_dir / "port").read_text()), lb_dir / "lb.log", "the load balancer")


def lb_reload(lb_dir: Path) -> int:
    pid = _pid(lb_dir / "lb.pid")
    if pid is None:
        print(f"the load balancer in {lb_dir} is not running", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGHUP)
    return 0


def fleet_stop(root: Path) -> int:
    """Stop what a demo fleet runs: every host's application and the load balancer."""
    if not (root / "hosts").is_dir():
        print(
            f"{root} is not a demo fleet (it has no hosts/ directory): give the directory the demo named",
            file=sys.stderr,
        )
        return 2
    for host_dir in sorted((root / "hosts").iterdir()):
        _stop_pid(host_dir / "run" / "app.pid")
    _stop_pid(root / "lb" / "lb.pid")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    verb, path = argv[0], Path(argv[1])
    actions = {
        "restart": restart,
        "start": start,
        "stop": lambda p: _stop_pid(p / "run" / "app.pid") or 0,
        "fleet-stop": fleet_stop,
        "lb-check": lb_check,
        "lb-serve": lb_serve,
        "lb-start": lb_start,
        "lb-reload": lb_reload,
        "lb-stop": lambda p: _stop_pid(p / "lb.pid") or 0,
    }
    if verb not in actions:
        print(__doc__, file=sys.stderr)
        return 2
    return actions[verb](path)


if __name__ == "__main__":
    sys.exit(main())
