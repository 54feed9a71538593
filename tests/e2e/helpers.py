"""Helpers shared by the end-to-end tests: the fleet's state, reports, the run command."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


def fleet_state(fleet) -> dict:
    """Everything a rollback may change, to prove that nothing changed."""
    return {
        "links": {h: fleet.live(h) for h in fleet.hosts},
        "db": fleet.db_revision(),
        "flags": fleet.flags.read_bytes(),
        "lb": (fleet.lb / "upstreams.conf").read_bytes(),
        "conf": {h: (d / "etc" / "app.conf").read_bytes() for h, d in fleet.hosts.items()},
        "marks": sorted(str(p) for p in fleet.root.glob("hosts/*/app/releases/*/ROLLED_BACK")),
    }


def audit_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]


def assert_rolled_back(fleet) -> None:
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    assert fleet.db_revision() == "a1"
    assert fleet.flag()["defaultVariant"] == "off"
    assert fleet.lb_release() == fleet.good


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def statuses(run_dir: Path) -> dict:
    return {s["stage"]: s["status"] for s in report(run_dir)["steps"]}


def version_of(fleet, host: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{fleet.ports[host]}/version", timeout=5) as resp:
        return json.loads(resp.read())["version"]


def run(cli, fleet, *extra: str):
    return cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes", *extra)


def edit_manifest(fleet, change) -> None:
    doc = yaml.safe_load(fleet.manifest.read_text())
    change(doc["rollback_manifest"])
    fleet.manifest.write_text(yaml.safe_dump(doc))


def resume_after_kill(cli, fleet, run_dir: Path, stage: str):
    """Resume a run whose driver was killed with SIGKILL inside ``stage``: it completes, and the
    trail names the interruption, the recovered lock, and still verifies. Returns the resume."""
    resumed = cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_rolled_back(fleet)
    assert set(statuses(run_dir).values()) == {"ok"}
    events = audit_events(run_dir)
    interrupted = next(e for e in events if e["event"] == "run.interrupted")
    assert interrupted["stage"] == stage
    assert "lock.recovered" in [e["event"] for e in events]
    assert cli("audit", "verify", str(run_dir)).returncode == 0
    return resumed


class FlagService:
    """An in-house flag service on a real port: PUT turns a flag off with the right bearer token, GET reads
    it back; ``fail`` answers every PUT 503. With ``slack_secret``, POST ``/slack/<secret>`` is a Slack
    incoming webhook whose URL is a secret (what it received is in ``slack``)."""

    def __init__(self, token: str, fail: bool = False, slack_secret: str | None = None):
        self.state = {"new-checkout": True}
        self.auth_seen: list[str] = []
        self.slack: list[dict] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, doc):
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._reply(200, {"enabled": service.state.get(self.path.rsplit("/", 1)[-1], True)})

            def do_PUT(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                service.auth_seen.append(self.headers.get("Authorization", ""))
                if fail:
                    return self._reply(503, {"error": "maintenance"})
                if self.headers.get("Authorization") != f"Bearer {token}":
                    return self._reply(401, {"error": "bad token"})
                service.state[self.path.rsplit("/", 1)[-1]] = False
                self._reply(200, {"enabled": False})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if slack_secret is None or self.path != f"/slack/{slack_secret}":
                    return self._reply(404, {"error": "no such webhook"})
                service.slack.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
