"""A real Unleash server (npm unleash-server 7.5.1 on Node >= 20 and PostgreSQL) for the tests.

Installed once into ``.cache/unleash`` under the project (gitignored; ``.ci/run`` pre-installs it),
started on a random port with its own database, stopped and dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from release_rollback.demo import free_port

VERSION = "7.5.1"
ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".cache" / "unleash"
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}


def node_ok() -> bool:
    node = shutil.which("node")
    if not node:
        return False
    out = subprocess.run([node, "-p", "process.versions.node"], capture_output=True, text=True)
    return out.returncode == 0 and int(out.stdout.split(".")[0]) >= 20


def installed() -> bool:
    pkg = PREFIX / "node_modules" / "unleash-server" / "package.json"
    return pkg.is_file() and json.loads(pkg.read_text()).get("version") == VERSION


def install() -> None:
    """npm install unleash-server into the cache (about 40 s the first time)."""
    if installed():
        return
    PREFIX.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(PREFIX),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"unleash-server@{VERSION}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )


def psql(sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-qAtc", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )


def postgres_ok() -> bool:
    return bool(shutil.which("psql")) and psql("select 1").returncode == 0


class Unleash:
    """One running server: ``url``, the admin ``token``, and a small admin API client."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "*:*." + secrets.token_hex(16)
        self.database = "unleash_test_" + secrets.token_hex(4)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        created = psql(f"create database {self.database}")
        if created.returncode != 0:
            raise RuntimeError(f"cannot create database {self.database}: {created.stderr}")
        script = self.workdir / "start.js"
        script.write_text("require('unleash-server').start({}).catch((e) => { console.error(e); process.exit(1); });\n")
        env = dict(
            os.environ,
            NODE_PATH=str(PREFIX / "node_modules"),
            DATABASE_URL=f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{self.database}",
            DATABASE_SSL="false",
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(self.port),
            INIT_ADMIN_API_TOKENS=self.token,
            CHECK_VERSION="false",
            SEND_TELEMETRY="false",
            LOG_LEVEL="warn",
        )
        self.log = self.workdir / "unleash.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["node", str(script)], cwd=self.workdir, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"unleash-server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"unleash-server did not become healthy in {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        psql(f"drop database if exists {self.database} with (force)")

    # ------------------------------------------------------------------------------- admin API
    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def create_flag(self, name: str, on_in: tuple[str, ...], project: str = "default") -> None:
        status, body = self.api("POST", f"/api/admin/projects/{project}/features", {"name": name, "type": "release"})
        assert status in (200, 201), body
        for env in on_in:
            base = f"/api/admin/projects/{project}/features/{name}/environments/{env}"
            strategy = {
                "name": "flexibleRollout",
                "parameters": {"rollout": "100", "stickiness": "default", "groupId": name},
            }
            status, body = self.api("POST", base + "/strategies", strategy)
            assert status == 200, body
            status, body = self.api("POST", base + "/on")
            assert status == 200, body
        assert all(self.enabled(name, env, project) for env in on_in)

    def enabled(self, name: str, environment: str, project: str = "default") -> bool:
        status, body = self.api("GET", f"/api/admin/projects/{project}/features/{name}")
        assert status == 200, body
        return next(e for e in body["environments"] if e["name"] == environment)["enabled"]
