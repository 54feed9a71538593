"""A benchmark fleet: N hosts in ansistrano layout, served by one HTTP process.

The hosts are reached over the local connection, or over real SSH (``--transport ssh``): one sshd
on a free port of every loopback address, each host a distinct address (127.0.0.2, 127.0.0.3, ...),
so ansible opens one SSH connection (and ControlPersist master) per host as it would on a fleet.

Each host has two releases and ``current`` on the bad one. One process listens on one loopback port
per host and answers ``/health`` and ``/version`` from the host's ``current/REVISION`` at request
time, so a switch is visible to real HTTP checks without N interpreters. The restart command is a
real process start (``/bin/true``): what is measured is the rollback machinery, not an app's boot.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import random
import selectors
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from io import BytesIO
from pathlib import Path

import yaml

GOOD = "20261120093000Z"
BAD = "20261126081500Z"


def _free_port(taken: list) -> int:
    """A free loopback port below the ephemeral range, so that no client connection of an earlier
    run (the HTTP checks make thousands, left in TIME_WAIT) holds it when the server binds it."""
    used = {p for p, _ in taken}
    for port in range(random.randrange(20000, 26000), 32000):
        if port in used:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port between 20000 and 32000")


class Sshd:
    """One sshd answering on every loopback address (and refusing any other), with its own keys."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.key = root / "client_key"
        for key in (root / "host_key", self.key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (root / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        Path("/run/sshd").mkdir(exist_ok=True)
        self.port = _free_port([])
        conf = root / "sshd.conf"
        conf.write_text(
            f"Port {self.port}\nListenAddress 0.0.0.0\nHostKey {root / 'host_key'}\n"
            f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\n"
            # A fleet's worth of connections at once (the default drops some past 10 unauthenticated).
            "MaxStartups 1000\nMaxSessions 100\n"
            "Match Address *,!127.0.0.0/8\n  DenyUsers *\n"
        )
        # Its log goes to a file: a pipe nobody reads fills up and stalls every session at a fleet's scale.
        self.log = root / "sshd.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)], stderr=log)
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-500:]}")
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on port {self.port}")

    def host_vars(self, i: int) -> dict:
        return {
            "ansible_connection": "ssh",
            "ansible_host": str(ipaddress.IPv4Address("127.0.0.2") + i),
            "ansible_port": self.port,
            "ansible_user": getpass.getuser(),
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o IdentitiesOnly=yes",
        }

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # The ControlPersist masters ansible leaves behind, and the sessions they hold.
        subprocess.run(["pkill", "-f", str(self.key)], capture_output=True)


def build(root: Path, n: int, python: str = sys.executable, sshd: Sshd | None = None) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    hosts = {}
    ports = []
    for i in range(n):
        name = f"h{i:04d}"
        app = root / "hosts" / name / "app"
        for version in (GOOD, BAD):
            (app / "releases" / version).mkdir(parents=True, exist_ok=True)
            (app / "releases" / version / "REVISION").write_text(version + "\n")
        (app / "shared").mkdir(exist_ok=True)
        if not (app / "current").is_symlink():
            os.symlink(f"./releases/{BAD}", app / "current")
        port = _free_port(ports)
        ports.append((port, str(app)))
        hosts[name] = {
            **(sshd.host_vars(i) if sshd else {}),
            "rollback_app_root": str(app),
            "rollback_restart_command": ["/bin/true"],
            "rollback_health_url": f"http://127.0.0.1:{port}/health",
            "rollback_version_url": f"http://127.0.0.1:{port}/version",
        }
    inventory = root / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {
                        "ansible_connection": "ssh" if sshd else "local",
                        "ansible_python_interpreter": python,
                        "rollback_verify_retries": 40,
                        "rollback_verify_delay": 0.25,
                    },
                    "children": {"app": {"hosts": hosts}},
                }
            }
        )
    )
    manifest = root / "manifest.yml"
    manifest.write_text(yaml.safe_dump({"rollback_manifest": {"app": "bench", "version": BAD, "reason": "bench"}}))
    (root / "ports.json").write_text(json.dumps(ports))
    return {"inventory": inventory, "manifest": manifest, "hosts": list(hosts), "root": root}


def reset(root: Path) -> None:
    """Put every host back on the bad release (between repetitions)."""
    for app in (root / "hosts").glob("*/app"):
        tmp = app / "current.bench-tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(f"./releases/{BAD}", tmp)
        os.replace(tmp, app / "current")
        for mark in app.glob("releases/*/ROLLED_BACK"):
            mark.unlink()


def start_server(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the benchmark's HTTP server did not start: {proc.stderr.read()[-2000:]}")
    return proc


class _Handler(BaseHTTPRequestHandler):
    app: str = ""

    def do_GET(self):
        version = (Path(self.app) / "current" / "REVISION").read_text().strip()
        body = json.dumps({"version": version, "status": "ok"}).encode()
        self.send_response(200 if self.path in ("/health", "/version") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(root: Path) -> None:
    sel = selectors.DefaultSelector()
    for port, app in json.loads((root / "ports.json").read_text()):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, app)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _addr = key.fileobj.accept()
            conn.setblocking(True)
            conn.settimeout(5)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                out = BytesIO()
                handler = _Handler.__new__(_Handler)
                handler.app = key.data
                handler.rfile = BytesIO(data)
                handler.wfile = out
                handler.client_address = ("127.0.0.1", 0)
                handler.server = None
                handler.request_version = "HTTP/1.1"
                handler.raw_requestline = handler.rfile.readline()
                if handler.parse_request():
                    handler.do_GET()
                conn.sendall(out.getvalue())
            except OSError:
                pass
            finally:
                conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(Path(sys.argv[2]))
