"""From alert to restored: the collection's rulebook under the real ansible-rulebook (its built-in webhook
source), fed by a real Alertmanager 0.25 and by deploy and validation callbacks, against real local fleets.

One Alertmanager, one ansible-rulebook and one notification receiver serve the whole module; each test
has its own fleet and its own environment in the shared trigger configuration (re-read at every event).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, need
from e2e.helpers import assert_rolled_back, audit_events, fleet_state
from infra_services import Alertmanager, monitoring_binary, stop_pid, wait_for
from release_rollback.demo import build_fleet, free_port
from replay import ReplayServer

pytestmark = pytest.mark.integration

TOKEN = "eda-test-token-4c1f9a"
APP = "demo-shop"


class Eda:
    """The shared services: Alertmanager -> ansible-rulebook (release.rollback.rollback) -> trigger."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.config = root / "eda.yml"
        self.runs = root / "runs"
        self.home = root / "eda"
        self.environments: list[dict] = []
        self.write_config()
        self.receiver = ReplayServer().start()
        self.proc: subprocess.Popen | None = None
        self.alertmanager = Alertmanager(
            root / "alertmanager",
            config={
                "route": {
                    "receiver": "eda",
                    "group_by": ["alertname", "app", "environment"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "eda",
                        "webhook_configs": [
                            {
                                "url": f"http://127.0.0.1:{self.port}/alertmanager",
                                "send_resolved": True,
                                "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}},
                            }
                        ],
                    }
                ],
            },
        )

    def write_config(self) -> None:
        doc = {"rollback_triggers": {"runs_dir": str(self.runs), "environments": self.environments}}
        self.config.write_text(yaml.safe_dump(doc))

    def start(self) -> Eda:
        (self.root / "localhost.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
        env = dict(
            os.environ,
            ROLLBACK_WEBHOOK_HOST="127.0.0.1",
            ROLLBACK_WEBHOOK_PORT=str(self.port),
            ROLLBACK_WEBHOOK_TOKEN=TOKEN,
            ROLLBACK_TRIGGER_CONFIG=str(self.config),
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
            PATH=str(BIN) + os.pathsep + os.environ["PATH"],
        )
        self.log = self.root / "rulebook.log"
        self.proc = subprocess.Popen(
            [
                str(BIN / "ansible-rulebook"),
                "-r",
                "release.rollback.rollback",
                "-i",
                str(self.root / "localhost.yml"),
                "--env-vars",
                "ROLLBACK_WEBHOOK_HOST,ROLLBACK_WEBHOOK_PORT,ROLLBACK_WEBHOOK_TOKEN,ROLLBACK_TRIGGER_CONFIG",
            ],
            cwd=self.root,
            env=env,
            stdout=open(self.log, "ab"),  # noqa: SIM115 - handed to the child
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: self.post("ready", {"ping": True}) == 200, timeout=120, what="ansible-rulebook's webhook")
        self.alertmanager.start()
        return self

    def stop(self) -> None:
        self.alertmanager.stop()
        if self.proc:
            stop_pid(self.proc.pid)
        self.receiver.stop()

    def post(self, endpoint: str, body: dict, token: str = TOKEN) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except OSError:
            return 0

    def add(self, environment: str, fleet, policy: Path | None = None, manifest: Path | None = None) -> None:
        """A fleet as ``environment`` of the app; its manifest notifies the approvers at /approvers/<env>."""
        manifest = manifest or fleet.manifest
        doc = yaml.safe_load(manifest.read_text())
        doc["rollback_manifest"]["notify"] = {
            "channels": [
                {"kind": "webhook", "name": "approvers", "url": f"{self.receiver.url}/approvers/{environment}"}
            ]
        }
        manifest.write_text(yaml.safe_dump(doc))
        self.receiver.answer(f"/approvers/{environment}", (200, "text/plain", "ok"))
        entry = {
            "app": APP,
            "environment": environment,
            "inventory": str(fleet.inventory),
            "manifest": str(manifest),
            "alert_window_minutes": 30,
        }
        if policy:
            entry["policy"] = str(policy)
        self.environments.append(entry)
        self.write_config()

    def decisions(self, environment: str) -> list[dict]:
        trail = self.home / "events.jsonl"
        if not trail.is_file():
            return []
        entries = [json.loads(line) for line in trail.read_text().splitlines()]
        return [e for e in entries if e.get("environment") == environment]

    def wait(self, environment: str, decision: str, timeout: float = 240) -> dict:
        def found():
            return next((e for e in self.decisions(environment) if e["decision"] == decision), None)

        try:
            return wait_for(found, timeout=timeout, delay=0.5, what=f"decision {decision!r} for {environment}")
        except AssertionError:
            raise AssertionError(
                f"no {decision!r} for {environment}: {self.decisions(environment)}; rulebook log tail:\n"
                + self.log.read_text()[-3000:]
            ) from None

    def notes(self, environment: str) -> list[dict]:
        return [r.json() for r in self.receiver.to(f"/approvers/{environment}")]

    def deployed(self, environment: str, fleet) -> None:
        """The deploy callback: the bad release went out just now."""
        body = {"app": APP, "environment": environment, "version": fleet.bad, "status": "succeeded"}
        assert self.post("deploy", body) == 200
        self.wait(environment, "recorded")


@pytest.fixture(scope="module")
def eda(tmp_path_factory, ansible_home):
    need((BIN / "ansible-rulebook").is_file(), "ansible-rulebook (pip install -e '.[test]')")
    need(subprocess.run(["java", "-version"], capture_output=True).returncode == 0, "Java 17 (openjdk-17-jre-headless)")
    need(
        monitoring_binary("prometheus-alertmanager") is not None or monitoring_binary("alertmanager") is not None,
        "Alertmanager",
    )
    services = Eda(tmp_path_factory.mktemp("eda")).start()
    yield services
    services.stop()


@pytest.fixture
def own_fleet(tmp_path):
    fleet = build_fleet(tmp_path / "fleet", 3)
    yield fleet
    fleet.stop()


def write_policy(path: Path, **changes) -> Path:
    policy = {
        "name": "flags-and-code",
        "description": "a bad release's flags and code may go back without a person within 30 minutes",
        "app": APP,
        "scope": ["feature_flags", "code_config"],
        "max_minutes_since_deploy": 30,
        "max_automatic_per_release": 1,
        "change_window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00"},
    }
    policy.update(changes)
    path.write_text(yaml.safe_dump({"standard_change": policy}))
    return path


def flags_and_code_manifest(fleet, path: Path) -> Path:
    """The fleet's manifest without database and infrastructure: a flags-and-code rollback."""
    doc = yaml.safe_load(fleet.manifest.read_text())
    for section in ("database", "infrastructure"):
        doc["rollback_manifest"].pop(section)
    path.write_text(yaml.safe_dump(doc))
    return path


def fire(eda: Eda, environment: str, alertname: str = "HighErrorRate") -> dict:
    labels = {"alertname": alertname, "app": APP, "environment": environment, "severity": "page"}
    eda.alertmanager.post_alert(labels)
    return labels


def run_dirs(eda: Eda) -> dict[str, Path]:
    return {p.name: p for p in eda.runs.glob("*") if (p / "state.json").is_file()}


# ---------------------------------------------------------------------------------------------- tests
def test_an_alert_makes_a_plan_that_changes_nothing_until_the_notified_command_approves_and_runs_it(eda, own_fleet):
    fleet = own_fleet
    eda.add("ask", fleet)
    eda.deployed("ask", fleet)
    before = fleet_state(fleet)
    fire(eda, "ask")

    decided = eda.wait("ask", "planned, approval requested")
    assert decided["not_pre_approved"] == ["no standard-change policy is configured for this environment"]
    run_dir = Path(decided["run_dir"])
    # The approvers got the plan with the exact command that approves it.
    wait_for(lambda: eda.notes("ask"), timeout=30, what="the approvers' notification")
    (note,) = eda.notes("ask")
    assert note["event"] == "approval requested"
    assert note["plan_file"] == str(run_dir / "plan.yml")
    command = note["approve_command"]
    assert (
        command == (f'release-rollback --runs-dir {eda.runs} run {run_dir / "plan.yml"} --approver "$USER" --yes')
        and command in note["text"]
    )
    assert "Alertmanager alert HighErrorRate for demo-shop in ask" in note["text"]
    # Nothing changed: assess only, no approval, the run planned.
    time.sleep(2)
    assert fleet_state(fleet) == before
    assert not (run_dir / "approval.json").exists()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["lifecycle"]["state"] == "planned"
    trigger = json.loads((run_dir / "trigger.json").read_text())
    assert trigger["kind"] == "alert" and trigger["detail"]["labels"]["alertname"] == "HighErrorRate"
    assert TOKEN not in (run_dir / "trigger.json").read_text() + (run_dir / "audit.jsonl").read_text()

    # The on-call engineer pastes the command: the rollback completes.
    argv = shlex.split(command.replace('"$USER"', "oncall-ada"))
    done = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_rolled_back(fleet)
    approval = json.loads((run_dir / "approval.json").read_text())
    assert approval["approver"] == "oncall-ada" and "policy" not in approval
    report = json.loads((run_dir / "report.json").read_text())
    assert report["exit_state"] == "completed"
    assert report["from_webhook"]["kind"] == "alert"
    assert report["from_webhook"]["validated"]["seconds"] > 0


def test_a_matching_standard_change_policy_rolls_back_with_no_person_and_the_policy_as_approval_of_record(
    eda, own_fleet, tmp_path
):
    fleet = own_fleet
    policy = write_policy(tmp_path / "standard-change.yml")
    manifest = flags_and_code_manifest(fleet, tmp_path / "manifest.yml")
    eda.add("std", fleet, policy=policy, manifest=manifest)
    eda.deployed("std", fleet)
    fire(eda, "std")

    decided = eda.wait("std", "rolled back under a standard change")
    assert decided["exit_state"] == "completed", decided
    run_dir = Path(decided["run_dir"])
    # Rolled back: every host on the good release, the flag off.
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    assert fleet.flag()["defaultVariant"] == "off"
    # The policy is the approval of record: its name, its file's sha256 and the alert.
    sha = hashlib.sha256(policy.read_bytes()).hexdigest()
    approval = json.loads((run_dir / "approval.json").read_text())
    assert approval["approver"] == "policy:flags-and-code"
    assert approval["policy"] == {"name": "flags-and-code", "sha256": sha, "path": str(policy)}
    assert approval["trigger"]["kind"] == "alert"
    assert approval["trigger"]["detail"]["labels"]["alertname"] == "HighErrorRate"
    recorded = next(e for e in audit_events(run_dir) if e["event"] == "approval.recorded")
    assert recorded["approver"] == "policy:flags-and-code" and recorded["policy"]["sha256"] == sha
    assert recorded["trigger"]["summary"].startswith("Alertmanager alert HighErrorRate")
    assert subprocess.run([str(BIN / "release-rollback"), "audit", "verify", str(run_dir)]).returncode == 0
    # People were told after the fact (started, completed), never asked.
    wait_for(lambda: any(n["event"] == "completed" for n in eda.notes("std")), timeout=30, what="the notice")
    events = [n["event"] for n in eda.notes("std")]
    assert "approval requested" not in events and events[-1] == "completed"
    completed = eda.notes("std")[-1]
    assert completed["approver"] == "policy:flags-and-code" and sha in completed["text"]
    # The report's timeline measures from the webhook's arrival.
    report = json.loads((run_dir / "report.json").read_text())
    marks = report["from_webhook"]
    assert marks["flags_off"]["seconds"] is not None and marks["validated"]["seconds"] is not None
    assert marks["flags_off"]["seconds"] <= marks["all_hosts_restored"]["seconds"] <= marks["validated"]["seconds"]
    line = f"From the alert webhook received at {marks['received']}: flags off {marks['flags_off']['seconds']:.1f} s"
    assert line in (run_dir / "report.md").read_text() and line in (run_dir / "report.html").read_text()


def test_a_policy_that_does_not_cover_a_destructive_database_step_only_plans_and_asks(eda, own_fleet, tmp_path):
    import dbkit

    fleet = own_fleet
    # The release's database step drops a column the bad release wrote to: destructive.
    db = dbkit.create("sqlite", tmp_path)
    config = dbkit.write_project(tmp_path / "app", "destructive")
    dbkit.alembic(config, db.url, "upgrade", "b2")
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["database"].update({"config": str(config), "url": db.url, "target_revision": "a1"})
    doc["rollback_manifest"].pop("infrastructure")
    fleet.manifest.write_text(yaml.safe_dump(doc))
    policy = write_policy(tmp_path / "standard-change.yml", scope=["feature_flags", "code_config", "database"])
    eda.add("destructive", fleet, policy=policy)
    eda.deployed("destructive", fleet)
    before = fleet_state(fleet)
    # A failed post-deploy validation, through its callback.
    body = {"app": APP, "environment": "destructive", "version": fleet.bad, "status": "failed", "check": "smoke"}
    assert eda.post("validation", body) == 200

    decided = eda.wait("destructive", "planned, approval requested")
    assert decided["kind"] == "validation"
    assert any("destructive step, never pre-approved" in why for why in decided["not_pre_approved"]), decided
    wait_for(lambda: eda.notes("destructive"), timeout=30, what="the approvers' notification")
    (note,) = eda.notes("destructive")
    assert note["event"] == "approval requested" and "Not pre-approved: the plan has a destructive step" in note["text"]
    run_dir = Path(decided["run_dir"])
    assert not (run_dir / "approval.json").exists()
    assert fleet_state(fleet) == before
    assert dbkit.alembic(config, db.url, "current").stdout.split()[0] == "b2"


def test_a_flapping_alert_makes_one_plan(eda, own_fleet):
    fleet = own_fleet
    eda.add("flap", fleet)
    eda.deployed("flap", fleet)
    # Fired and resolved 5 times in about 10 s (the pacing is the sleeps; nothing here is timed).
    for _ in range(5):
        labels = fire(eda, "flap", alertname="Flapping")
        time.sleep(0.9)
        eda.alertmanager.post_alert(labels, ends_at=datetime.now(UTC).isoformat())
        time.sleep(0.9)
    eda.wait("flap", "planned, approval requested")
    # Alertmanager delivered the flapping alert more than once; every later delivery found the open plan.
    wait_for(lambda: [e for e in eda.decisions("flap") if e["decision"] == "duplicate"], timeout=120, what="a repeat")
    time.sleep(8)  # let the rulebook finish what Alertmanager sent
    runs = json.loads((eda.home / "runs.json").read_text())[f"{APP}|flap"]
    assert len(runs) == 1
    assert len([n for n in eda.notes("flap") if n["event"] == "approval requested"]) == 1

    # Each duplicate is audited in the run it found, then logged as a decision: Alertmanager may still be
    # delivering, so the two are read until one reading of both agrees; a duplicate never audited, or
    # audited twice, never agrees.
    def agreed():
        audited = [e for e in audit_events(Path(runs[0]["run_dir"])) if e["event"] == "trigger.duplicate"]
        decisions = [e["decision"] for e in eda.decisions("flap") if e["kind"] == "alert"]
        return decisions if len(audited) == decisions.count("duplicate") else None

    decisions = wait_for(agreed, timeout=60, delay=0.5, what="every duplicate decision audited in the run it found")
    assert decisions.count("planned, approval requested") == 1, decisions
    assert len(decisions) >= 2 and set(decisions) == {"planned, approval requested", "duplicate"}, decisions


def test_a_request_without_the_token_is_refused_and_reaches_no_rule(eda):
    import urllib.error

    seen = len(eda.decisions("token"))
    body = {"app": APP, "environment": "token", "version": "x", "status": "succeeded"}
    for token in ("wrong", ""):
        req = urllib.request.Request(
            f"http://127.0.0.1:{eda.port}/deploy",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 401
    # With the token the same request is recorded: the refusals above were the token's doing.
    assert eda.post("deploy", body) == 200
    eda.wait("token", "recorded")
    assert len(eda.decisions("token")) == seen + 1


def test_two_events_at_the_same_moment_make_one_plan(own_fleet, tmp_path):
    """The decision lock: two trigger processes started together for the same deploy cannot both plan."""
    fleet = own_fleet
    config = tmp_path / "eda.yml"
    env = {"app": APP, "environment": "race", "inventory": str(fleet.inventory), "manifest": str(fleet.manifest)}
    config.write_text(
        yaml.safe_dump({"rollback_triggers": {"runs_dir": str(tmp_path / "runs"), "environments": [env]}})
    )
    cmd = [str(BIN / "release-rollback"), "trigger", "--config", str(config), "--event-file", "-", "--json", "--kind"]
    deploy = {"app": APP, "environment": "race", "version": fleet.bad, "status": "succeeded"}
    assert subprocess.run([*cmd, "deploy"], input=json.dumps(deploy), text=True, capture_output=True).returncode == 0
    alert = {"status": "firing", "alerts": [{"status": "firing", "labels": {"app": APP, "environment": "race"}}]}
    import fcntl

    # Hold the decision lock while both start: neither may decide (nor create a run) until it is free.
    with open(tmp_path / "eda" / "trigger.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        procs = [
            subprocess.Popen(
                [*cmd, "alert"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        for proc in procs:
            proc.stdin.write(json.dumps(alert))
            proc.stdin.close()
        time.sleep(4)
        assert not list((tmp_path / "runs").glob("*")), "a trigger decided while another held the decision lock"
        assert all(proc.poll() is None for proc in procs)
        fcntl.flock(held, fcntl.LOCK_UN)
    outs = [(proc.stdout.read(), proc.stderr.read()) for proc in procs]
    for proc in procs:
        proc.wait(timeout=300)
    decisions = sorted(json.loads(out).get("decision", out + err) for out, err in outs)
    assert decisions == ["duplicate", "planned, approval requested"], outs
    assert len([p for p in (tmp_path / "runs").glob("*") if (p / "state.json").is_file()]) == 1
