"""From alert to restored: how long after an alert's webhook reaches the rulebook are the flags off, and
every host restored and validated, when a standard-change policy lets the rollback run without a person.

    .venv/bin/python bench/eda.py                     # the demo fleet (3 hosts) and 20 hosts, 5 runs each
    .venv/bin/python bench/eda.py --sizes 3 --repeat 3

One real ansible-rulebook runs the collection's rulebook (release.rollback.rollback, built-in webhook
source). For each run: a new demo fleet on the bad release (flags, code, Alembic database, load
balancer), its deploy posted to /deploy, then an Alertmanager webhook body posted to /alertmanager.
The clock starts when the rulebook received the alert (the event's ``meta.received_at``):

- **flags off**: the flag file read off, polled every 20 ms by this script;
- **hosts restored**: every host's /version answering the good release, polled every 20 ms;
- **validated**: the validate stage's end, from the report (``report.json`` ``from_webhook``).

Prints the figures (median of ``--repeat`` runs) and the machine. Not a test: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from release_rollback.demo import build_fleet, free_port  # noqa: E402
from run import machine  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "bench-eda-token"
POLICY = {
    "standard_change": {
        "name": "bench-standard-rollback",
        "scope": ["feature_flags", "code_config", "database", "infrastructure"],
        "max_minutes_since_deploy": 30,
        "max_automatic_per_release": 1,
        "change_window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00"},
    }
}


def post(port: int, endpoint: str, body: dict) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except OSError:
        return 0


def version(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=1) as resp:
            return json.loads(resp.read())["version"]
    except (OSError, ValueError, KeyError):
        return None


def decisions(home: Path, environment: str) -> list[dict]:
    trail = home / "events.jsonl"
    if not trail.is_file():
        return []
    return [e for e in map(json.loads, trail.read_text().splitlines()) if e.get("environment") == environment]


def wait(what, timeout: float, delay: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(delay)
    raise SystemExit(f"timed out after {timeout}s")


def flag_off(fleet) -> bool:
    try:
        return fleet.flag()["defaultVariant"] == "off"
    except (OSError, ValueError, KeyError):
        return False


def epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def one_run(root: Path, port: int, config: dict, config_file: Path, hosts: int, n: int) -> dict:
    environment = f"bench-{hosts}-{n}"
    fleet = build_fleet(root / environment, hosts)
    try:
        config["rollback_triggers"]["environments"].append(
            {
                "app": "demo-shop",
                "environment": environment,
                "inventory": str(fleet.inventory),
                "manifest": str(fleet.manifest),
                "policy": str(root / "policy.yml"),
            }
        )
        config_file.write_text(json.dumps(config))
        home = root / "eda"
        post(
            port,
            "deploy",
            {"app": "demo-shop", "environment": environment, "version": fleet.bad, "status": "succeeded"},
        )
        wait(lambda: decisions(home, environment), 120)
        alert = {
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "HighErrorRate", "app": "demo-shop", "environment": environment},
                }
            ],
        }
        assert post(port, "alertmanager", alert) == 200
        flags_off = wait(lambda: flag_off(fleet) and time.time(), 600)
        restored = wait(lambda: all(version(p) == fleet.good for p in fleet.ports.values()) and time.time(), 600)
        done = wait(lambda: next((e for e in decisions(home, environment) if e["kind"] == "alert"), None), 600, 0.2)
        if done["decision"] != "rolled back under a standard change" or done.get("exit_state") != "completed":
            raise SystemExit(f"the rollback did not complete: {done}")
        report = json.loads((Path(done["run_dir"]) / "report.json").read_text())
        marks = report["from_webhook"]
        received = epoch(marks["received"])
        return {
            "flags_off": flags_off - received,
            "hosts_restored": restored - received,
            "validated": marks["validated"]["seconds"],
            "report_flags_off": marks["flags_off"]["seconds"],
        }
    finally:
        fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 20])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-eda-") as tmp:
        root = Path(tmp)
        (root / "policy.yml").write_text(json.dumps(POLICY))
        config = {"rollback_triggers": {"runs_dir": str(root / "runs"), "environments": []}}
        config_file = root / "eda.yml"
        config_file.write_text(json.dumps(config))
        (root / "localhost.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
        port = free_port()
        env = dict(
            os.environ,
            ROLLBACK_WEBHOOK_HOST="127.0.0.1",
            ROLLBACK_WEBHOOK_PORT=str(port),
            ROLLBACK_WEBHOOK_TOKEN=TOKEN,
            ROLLBACK_TRIGGER_CONFIG=str(config_file),
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
            ANSIBLE_HOME=str(root / "ansible-home"),
            PATH=str(BIN) + os.pathsep + os.environ["PATH"],
        )
        with open(root / "rulebook.log", "ab") as log:
            rulebook = subprocess.Popen(
                [
                    str(BIN / "ansible-rulebook"),
                    "-r",
                    "release.rollback.rollback",
                    "-i",
                    str(root / "localhost.yml"),
                    "--env-vars",
                    "ROLLBACK_WEBHOOK_HOST,ROLLBACK_WEBHOOK_PORT,ROLLBACK_WEBHOOK_TOKEN,ROLLBACK_TRIGGER_CONFIG",
                ],
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait(lambda: post(port, "ready", {}) == 200, 120, 0.2)
            print(f"{'hosts':>5} {'webhook -> flags off':>21} {'-> every host restored':>23} {'-> validated':>13}")
            for hosts in args.sizes:
                samples = [one_run(root, port, config, config_file, hosts, n) for n in range(args.repeat)]
                med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
                figures = f"{med['flags_off']:>19.1f} s {med['hosts_restored']:>21.1f} s {med['validated']:>11.1f} s"
                print(
                    f"{hosts:>5} {figures}"
                    f"   (median of {len(samples)}; each run: "
                    + ", ".join(f"{s['flags_off']:.1f}/{s['hosts_restored']:.1f}/{s['validated']:.1f}" for s in samples)
                    + ")",
                    flush=True,
                )
        finally:
            rulebook.terminate()
            rulebook.wait(30)


if __name__ == "__main__":
    main()
