"""Real servers for the infrastructure and validation tests: nginx, HAProxy, Prometheus, Alertmanager.

Each one runs on loopback from files under a temp dir, is started by a test and stopped by PID.
Prometheus and Alertmanager come from Debian's packages, extracted (not installed) into a cache dir
by ``.ci/run``: ``$RELEASE_ROLLBACK_MONITORING_BIN`` or ``/var/cache/release-rollback/monitoring/usr/bin``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from release_rollback.demo import GOOD, Fleet, free_port

MONITORING_BIN = Path(
    os.environ.get("RELEASE_ROLLBACK_MONITORING_BIN", "/var/cache/release-rollback/monitoring/usr/bin")
)

# Debian's Alertmanager reads its built-in notification templates from this fixed path.
ALERTMANAGER_TEMPLATES = Path("/usr/share/prometheus/alertmanager/default.tmpl")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def http_json(url: str, data: object | None = None, timeout: float = 5.0) -> object:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode() or "null")


def wait_for(predicate, timeout: float = 30.0, delay: float = 0.2, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(delay)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def stop_pid(pid: int | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if not pid:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited. A child of this process stays a zombie (and answers signal 0)
    until it is reaped, so a child is reaped here; any other process is probed with signal 0."""
    try:
        reaped, _status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def version_of(url: str) -> str | None:
    code, body = http_get(url)
    try:
        return json.loads(body).get("version") if code == 200 else None
    except ValueError:
        return None


def upstreams(version: str, ports: list[int], extra: str = "") -> str:
    servers = "".join(f"    server 127.0.0.1:{p}{extra};\n" for p in ports)
    return f"# release {version}\nupstream app {{\n{servers}}}\n"


@dataclass
class GoodBackend:
    """A backend serving the previous (good) release: the demo's server started from that release's files."""

    fleet: Fleet
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self) -> GoodBackend:
        release = self.fleet.app_root("web1") / "releases" / GOOD
        self.proc = subprocess.Popen(
            [sys.executable, str(release / "server.py"), "--port", str(self.port)],
            cwd=release,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: version_of(f"http://127.0.0.1:{self.port}/version") == GOOD, what="the good backend")
        return self

    def stop(self) -> None:
        if self.proc:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=5)


@dataclass
class Nginx:
    """A real nginx on loopback whose http block includes ``upstreams.conf``, proxying / to upstream ``app``."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def upstreams(self) -> Path:
        return self.root / "upstreams.conf"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    def args(self) -> list[str]:
        return ["nginx", "-c", str(self.conf), "-p", str(self.root), "-e", str(self.root / "logs" / "error.log")]

    def command(self, *extra: str) -> str:
        return " ".join([*self.args(), *extra])

    def write(self, live: str) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        (self.root / "temp").mkdir(exist_ok=True)
        self.releases.mkdir(exist_ok=True)
        temps = "".join(
            f"    {kind}_temp_path {self.root}/temp/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf.write_text(
            "user root;\nworker_processes 1;\n"
            f"pid {self.root}/nginx.pid;\nerror_log {self.root}/logs/error.log;\n"
            "events { worker_connections 64; }\n"
            "http {\n    access_log off;\n" + temps + f"    include {self.upstreams};\n"
            f"    server {{\n        listen 127.0.0.1:{self.port};\n"
            "        location / { proxy_pass http://app; proxy_next_upstream off; }\n    }\n}\n"
        )
        self.upstreams.write_text(live)

    def start(self) -> Nginx:
        subprocess.run(self.args(), check=True, capture_output=True, timeout=30)
        wait_for(lambda: self.master_pid(), what="nginx's pid file")
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.root / "nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        stop_pid(self.master_pid(), signal.SIGQUIT)

    def version(self) -> str | None:
        return version_of(f"http://127.0.0.1:{self.port}/version")


@dataclass
class HAProxy:
    """A real HAProxy (master-worker) whose backends live in their own file, checked with ``haproxy -c``."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def main_cfg(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def backends(self) -> Path:
        return self.root / "backends.cfg"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @staticmethod
    def backend(version: str, ports: list[int]) -> str:
        servers = "".join(f"    server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(ports, 1))
        return f"# release {version}\nbackend app\n    mode http\n{servers}"

    def write(self, live: str) -> None:
        self.releases.mkdir(parents=True, exist_ok=True)
        self.main_cfg.write_text(
            "global\n    maxconn 64\n\n"
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n\n"
            f"frontend web\n    bind 127.0.0.1:{self.port}\n    default_backend app\n"
        )
        self.backends.write_text(live)

    def start(self) -> HAProxy:
        self.proc = subprocess.Popen(
            [
                "haproxy",
                "-W",
                "-db",
                "-p",
                str(self.root / "haproxy.pid"),
                "-f",
                str(self.main_cfg),
                "-f",
                str(self.backends),
            ],
            stdout=open(self.root / "haproxy.log", "ab"),  # noqa: SIM115 - handed to the child
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: http_get(f"http://127.0.0.1:{self.port}/version")[0] == 200, what="haproxy")
        return self

    def reload_command(self) -> str:
        return f"kill -USR2 {self.proc.pid}"

    def stop(self) -> None:
        if self.proc:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=10)

    def version(self) -> str | None:
        return version_of(f"http://127.0.0.1:{self.port}/version")


def infra_manifest(fleet: Fleet, infrastructure: dict, path: Path, **extra: object) -> Path:
    """The fleet's manifest with the given infrastructure section (other sections as ``extra``)."""
    doc = yaml.safe_load(fleet.manifest.read_text())
    manifest = {k: doc["rollback_manifest"][k] for k in ("app", "version", "reason", "validation")}
    manifest["infrastructure"] = infrastructure
    manifest.update(extra)
    path.write_text(yaml.safe_dump({"rollback_manifest": manifest}, sort_keys=False))
    return path


def has(binary: str) -> bool:
    return shutil.which(binary) is not None


def monitoring_binary(name: str) -> Path | None:
    path = MONITORING_BIN / name
    if path.is_file():
        return path
    found = shutil.which(name)
    return Path(found) if found else None


@dataclass
class Prometheus:
    """A real Prometheus scraping the demo fleet's /metrics every second, with a rule file for alerts."""

    root: Path
    targets: list[int]
    job: str = "demo-shop"
    alertmanager_port: int | None = None
    rules: str = ""
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        self.root.mkdir(parents=True, exist_ok=True)
        config: dict = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in self.targets]}]}
            ],
        }
        if self.rules:
            (self.root / "rules.yml").write_text(self.rules)
            config["rule_files"] = [str(self.root / "rules.yml")]
        if self.alertmanager_port:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]
            }
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [
                str(monitoring_binary("prometheus")),
                f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=open(self.root / "prometheus.log", "ab"),  # noqa: SIM115 - handed to the child
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: http_get(f"{self.url}/-/ready")[0] == 200, timeout=60, what="Prometheus to be ready")
        return self

    def query(self, promql: str) -> list:
        from urllib.parse import urlencode

        return http_json(f"{self.url}/api/v1/query?{urlencode({'query': promql})}")["data"]["result"]

    def wait_scraped(self, timeout: float = 60.0) -> None:
        want = len(self.targets)
        wait_for(
            lambda: len(self.query(f'up{{job="{self.job}"}} == 1')) == want,
            timeout=timeout,
            delay=0.5,
            what=f"Prometheus to scrape {want} targets",
        )

    def stop(self) -> None:
        if self.proc:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=10)


@dataclass
class Alertmanager:
    """A real Alertmanager (no clustering) that receives Prometheus's alerts; silences through its API."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    # Its configuration (route and receivers); by default every alert goes to a receiver that sends nothing.
    config: dict | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "alertmanager.yml").write_text(
            yaml.safe_dump(
                self.config or {"route": {"receiver": "null", "group_wait": "1s"}, "receivers": [{"name": "null"}]}
            )
        )
        self.proc = subprocess.Popen(
            [
                str(monitoring_binary("prometheus-alertmanager") or monitoring_binary("alertmanager")),
                f"--config.file={self.root / 'alertmanager.yml'}",
                f"--storage.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=open(self.root / "alertmanager.log", "ab"),  # noqa: SIM115 - handed to the child
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: http_get(f"{self.url}/-/ready")[0] == 200, timeout=60, what="Alertmanager to be ready")
        return self

    def alerts(self, **flags: str) -> list:
        from urllib.parse import urlencode

        return http_json(f"{self.url}/api/v2/alerts?{urlencode(flags)}")

    def post_alert(self, labels: dict, ends_at: str | None = None) -> None:
        """Fire an alert (or, with ``ends_at`` in the past, resolve it) as Prometheus would."""
        alert = {"labels": labels, "annotations": {"summary": "test"}}
        if ends_at:
            alert["endsAt"] = ends_at
        http_json(f"{self.url}/api/v2/alerts", [alert])

    def silence(self, matchers: dict, minutes: int = 30) -> str:
        from datetime import UTC, datetime, timedelta

        now = datetime.now(UTC)
        body = {
            "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
            "createdBy": "on-call",
            "comment": "known issue, mitigated",
        }
        return http_json(f"{self.url}/api/v2/silences", body)["silenceID"]

    def stop(self) -> None:
        if self.proc:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=10)
