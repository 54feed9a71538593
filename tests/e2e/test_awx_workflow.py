"""The AWX workflow of awx/config/, played node by node against a real fleet and real PostgreSQL.

No AWX runs here, so the test does what AWX does with the definition: it walks the nodes from
assess, runs each job template's playbook as its own ansible-runner job with the workflow's launch
variables, the template's extra vars and survey defaults, every set_stats artifact published so
far, and the variables AWX gives a workflow's job (awx_job_id, awx_workflow_job_id); it injects the
environment variables of the job template's credentials from the credential types' injectors, as
AWX does; it follows the success/failure/always edges by the job's outcome; and it decides the
approval nodes on a replay of the AWX API (the documented shapes of /api/v2/workflow_jobs/<id>/,
its workflow_nodes/ and /api/v2/workflow_approvals/<id>/), where the approval jobs read who
approved. Each job starts in an empty container: the run directory is wiped before every job, so
what outlives a job is only what its artifacts carry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import dbkit
import pytest
import sqlalchemy as sa
import yaml
from helpers import FlagService
from release_rollback.runner import run_stage

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class _Loader(yaml.SafeLoader):
    """YAML with Ansible's ``!unsafe`` (the credential types' injector templates)."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
CONFIG = {
    k: v for f in sorted((ROOT / "awx" / "config").glob("*.yml")) for k, v in yaml.load(f.read_text(), _Loader).items()
}
TEMPLATES = {t["name"]: t for t in CONFIG["controller_templates"]}
(WORKFLOW,) = CONFIG["controller_workflows"]
NODES = {n["identifier"]: n for n in WORKFLOW["workflow_nodes"]}
CONFIGURE_VARS = yaml.safe_load((ROOT / "awx" / "configure.yml").read_text())[0]["vars"]
CREDENTIAL_TYPES = {c["name"]: c for c in CONFIG["controller_credential_types"]}
CREDENTIALS = {c["name"]: c for c in CONFIG["controller_credentials"]}

API_TOKEN = "awx-PLANTED-5b0e8c7a31"
FLAGS_TOKEN = "flags-PLANTED-9c3d71e2a4"
PASSWORD = "pw-PLANTED-0a7f5e9d13"
SLACK_SECRET = "T0PLANTED/B0PLANTED/slack7e21c4d9"
WORKFLOW_JOB_ID = 4242


class AwxApi:
    """A replay of the AWX API for one workflow job: GET only, the documented response shapes, bearer token."""

    def __init__(self, launch_vars: dict, nodes: dict | None = None):
        self.launch_vars = launch_vars
        self.definition = nodes or NODES
        self.nodes: dict[str, dict] = {}  # identifier -> workflow approval
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                api.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {API_TOKEN}":
                    return self._reply(401, {"detail": "Authentication credentials were not provided."})
                url = urlparse(self.path)
                doc = api.answer(url.path, parse_qs(url.query))
                self._reply(200 if doc is not None else 404, doc if doc is not None else {"detail": "Not found."})

            def _reply(self, code, doc):
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def decide(self, identifier: str, username: str, approve: bool) -> None:
        """A user presses Approve (or Deny) on the approval node's workflow approval."""
        approval_id = 900 + len(self.nodes)
        self.nodes[identifier] = {
            "id": approval_id,
            "type": "workflow_approval",
            "url": f"/api/v2/workflow_approvals/{approval_id}/",
            "name": self.definition[identifier]["unified_job_template"]["name"],
            "description": self.definition[identifier]["unified_job_template"]["description"],
            "status": "successful" if approve else "failed",
            "failed": not approve,
            "finished": "2026-12-05T18:30:00.000000Z",
            "can_approve_or_deny": False,
            "approval_expiration": None,
            "timed_out": False,
            "summary_fields": {
                "workflow_approval_template": {
                    "id": 77,
                    "name": self.definition[identifier]["unified_job_template"]["name"],
                },
                "source_workflow_job": {
                    "id": WORKFLOW_JOB_ID,
                    "name": WORKFLOW["name"],
                    "status": "running",
                    "failed": False,
                    "elapsed": 0.0,
                },
                "approved_or_denied_by": {"id": 7, "username": username, "first_name": "", "last_name": ""},
                "user_capabilities": {"delete": True, "start": False},
            },
        }

    def answer(self, path: str, query: dict) -> dict | None:
        base = f"/api/v2/workflow_jobs/{WORKFLOW_JOB_ID}/"
        if path == base:
            return {
                "id": WORKFLOW_JOB_ID,
                "type": "workflow_job",
                "name": WORKFLOW["name"],
                "status": "running",
                "launch_type": "manual",
                "extra_vars": json.dumps(self.launch_vars),
                "summary_fields": {"created_by": {"id": 3, "username": "oncall"}},
            }
        if path == base + "workflow_nodes/":
            wanted = query.get("identifier", [None])[0]
            results = [
                {
                    "id": 5000 + i,
                    "type": "workflow_job_node",
                    "identifier": ident,
                    "workflow_job": WORKFLOW_JOB_ID,
                    "job": approval["id"],
                    "do_not_run": False,
                    "summary_fields": {
                        "job": {
                            "id": approval["id"],
                            "name": approval["name"],
                            "status": approval["status"],
                            "failed": approval["failed"],
                            "elapsed": 12.5,
                            "type": "workflow_approval",
                        }
                    },
                }
                for i, (ident, approval) in enumerate(self.nodes.items())
                if wanted in (None, ident)
            ]
            return {"count": len(results), "next": None, "previous": None, "results": results}
        m = re.fullmatch(r"/api/v2/workflow_approvals/(\d+)/", path)
        if m:
            return next((a for a in self.nodes.values() if a["id"] == int(m.group(1))), None)
        return None


def credential_env(template: dict, inputs: dict[str, dict], api: AwxApi) -> dict[str, str]:
    """The environment AWX gives a job from its template's credentials (their types' env injectors)."""
    names = [
        n
        for ref in ([template["credentials"]] if isinstance(template["credentials"], str) else template["credentials"])
        for n in _credential_names(ref)
    ]
    env = {}
    for name in names:
        ctype = CREDENTIALS[name]["credential_type"]
        if ctype == "Red Hat Ansible Automation Platform":
            env.update(
                {"CONTROLLER_HOST": api.url, "CONTROLLER_OAUTH_TOKEN": API_TOKEN, "CONTROLLER_VERIFY_SSL": "false"}
            )
            continue
        given = inputs.get(name, {})
        for var, tpl in CREDENTIAL_TYPES[ctype]["injectors"]["env"].items():
            (field,) = re.fullmatch(r"\{\{ (\w+) \}\}", tpl).groups()
            env[var] = given.get(field, "")
    return env


def _credential_names(ref: str) -> list[str]:
    expr = re.fullmatch(r"\{\{ (.*) \}\}", ref).group(1)
    names: list[str] = []
    for part in expr.split(" + "):
        part = part.strip()
        if part.startswith("["):
            names += [CONFIGURE_VARS[p.strip()] for p in part.strip("[]").split(",")]
        else:
            value = CONFIGURE_VARS[part]
            names += value if isinstance(value, list) else [value]
    return names


@contextmanager
def environ(extra: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def play_workflow(
    fleet, launch_vars: dict, approvals: dict[str, tuple[str, bool]], tmp_path: Path, inputs=None, nodes=None
):
    """Run the workflow (``nodes``: another definition of its nodes, e.g. with manual steps); return the
    nodes in order with their outcome, the artifacts, the API replay and each job's printed output."""
    nodes = nodes or NODES
    api = AwxApi(launch_vars, nodes)
    events = tmp_path / "events"
    events.mkdir(exist_ok=True)
    (tmp_path / "containers").mkdir(exist_ok=True)
    run_dir = Path(launch_vars["rollback_run_dir"])
    artifacts: dict = {}
    ran: list[tuple[str, bool]] = []
    output: dict[str, str] = {}
    pending = ["assess"]
    try:
        while pending:
            ident = pending.pop(0)
            node = nodes[ident]
            ujt = node["unified_job_template"]
            if ujt["type"] == "workflow_approval":
                who, ok = approvals.get(ident, ("nobody", False))
                api.decide(ident, who, ok)
            else:
                template = TEMPLATES[ujt["name"]]
                spec = (template.get("survey_spec") or {}).get("spec") or []
                survey = {q["variable"]: q["default"] for q in spec if "default" in q}
                # A workflow's job gets its launcher as awx_user_name (AWX's awx_meta_vars: the workflow job's creator).
                awx_vars = {
                    "awx_job_id": 100 + len(ran),
                    "awx_workflow_job_id": WORKFLOW_JOB_ID,
                    "awx_user_name": "oncall",
                }
                # AWX's precedence: template extra vars < survey defaults < artifacts of earlier nodes < the
                # workflow's launch variables.
                # A node's own extra data (the manual step a record node is for) comes with the node's prompts.
                extravars = {
                    **template.get("extra_vars", {}),
                    **survey,
                    **node.get("extra_data", {}),
                    **artifacts,
                    **launch_vars,
                    **awx_vars,
                }
                with environ(credential_env(template, inputs or {}, api)):
                    job = run_stage(
                        Path(template["playbook"]).stem,
                        str(fleet.inventory),
                        extravars,
                        events / f"{ident}.jsonl",
                        threading.Event(),
                    )
                ok = job.status == "successful"
                artifacts.update(job.stats)
                # The job's container is thrown away: what it wrote is kept aside (scanned for secrets), and
                # the next job starts with no run directory.
                if run_dir.exists():
                    shutil.move(run_dir, tmp_path / "containers" / ident)
                output[ident] = "\n".join(
                    json.loads(line).get("stdout", "") for line in (events / f"{ident}.jsonl").read_text().splitlines()
                )
            ran.append((ident, ok))
            related = node["related"]
            for edge in (related["success_nodes"] if ok else related["failure_nodes"]) + related["always_nodes"]:
                if edge["identifier"] not in pending:
                    pending.append(edge["identifier"])
    finally:
        api.close()
    return ran, artifacts, api, output


def _leaks(artifacts: dict, *roots: Path, secrets=(PASSWORD, FLAGS_TOKEN, API_TOKEN, SLACK_SECRET)) -> list[str]:
    text = json.dumps(artifacts)
    found = [f"{s[:10]}... in the artifacts" for s in secrets if s in text]
    for root in roots:
        for f in root.rglob("*") if root.exists() else []:
            if f.is_file():
                found += [f"{s[:10]}... in {f}" for s in secrets if s.encode() in f.read_bytes()]
    return found


def launch(fleet, tmp_path) -> dict:
    return {
        **yaml.safe_load(fleet.manifest.read_text()),  # pasted into the workflow's launch variables
        "rollback_approval_reason": "checkout errors",
        "rollback_run_dir": str(tmp_path / "run"),
        "rollback_release_record": str(tmp_path / "containers" / "releases.jsonl"),
    }


def _order(ran):
    return [i for i, _ in ran]


@pytest.mark.parametrize("denied", [(), ("database_approval",)], ids=["approved", "database_denied"])
def test_awx_workflow_rolls_the_fleet_back_with_artifacts_between_nodes(fleet, tmp_path, denied):
    approvals = {
        "plan_approval": ("rita", True),
        "database_approval": ("dba", "database_approval" not in denied),
        "signoff_approval": ("sam", True),
    }
    launch_vars = launch(fleet, tmp_path)
    ran, artifacts, api, _ = play_workflow(fleet, launch_vars, approvals, tmp_path)

    # The approver of record is the AWX user who approved the node, read from the API (not typed at launch).
    assert artifacts["rollback_approval"]["approver"] == "rita"
    # The planner of record is the AWX user who launched the workflow, not the container's $USER.
    assert artifacts["rollback_plan"]["created_by"] == "oncall"
    assert artifacts["rollback_approval"]["plan_hash"] == artifacts["rollback_plan"]["hash"]
    assert artifacts["rollback_approval"]["destructive"] is False
    assert artifacts["rollback_awx_approval"]["node"] == "plan_approval"
    assert f"/api/v2/workflow_approvals/{api.nodes['plan_approval']['id']}/" in api.requests
    assert artifacts["rollback_destructive_changes"] == []
    # The run record outlives the containers: the report and the audit head are artifacts.
    report = artifacts["rollback_report"]
    record = artifacts["rollback_run_record"]
    statuses = {s["stage"]: s["status"] for s in report["steps"]}
    assert record["run_id"] == report["run_id"] and record["audit_head"]["seq"] == len(record["audit"])
    assert json.loads(record["audit"][-1])["hash"] == record["audit_head"]["hash"]
    assert [e["run_id"] for e in record["release_record"]] == [record["run_id"]]  # the release record's entry
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    assert fleet.flag()["defaultVariant"] == "off" and fleet.lb_release() == fleet.good
    if not denied:
        assert _order(ran) == [
            "assess",
            "plan_approval",
            "record_approval",
            "feature_flags",
            "code_config",
            "destructive_check",
            "database_approval",
            "database",
            "infrastructure",
            "validate",
            "report",
            "signoff_approval",
            "signoff",
        ]
        assert all(ok for _, ok in ran)
        assert fleet.db_revision() == "a1"
        assert report["exit_state"] == "completed" and set(statuses.values()) == {"ok"}
        # The sign-off job restored the run from the artifacts and signed it off in the approver's name.
        assert artifacts["rollback_signoff"]["by"] == "sam"
        assert artifacts["rollback_signoff"]["plan_hash"] == report["plan_hash"]
        # Appended to the restored trail: it chains to the report job's audit head.
        entries = [json.loads(line) for line in record["audit"]]
        at = [e["event"] for e in entries].index("signoff.recorded")
        assert at > 1 and entries[at]["prev"] == entries[at - 1]["hash"] and entries[at]["seq"] == at + 1
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert report["signoff"]["by"] == "sam"
        # Outside AWX the same playbook signs off with the name given (the report job's run directory, kept aside).
        kept = tmp_path / "containers" / "report"
        playbook = [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "signoff.yml")]
        proc = subprocess.run(
            [*playbook, "-e", f"rollback_run_dir={kept}", "-e", "rollback_signed_off_by=grace"],
            cwd=ROOT,
            env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert json.loads((kept / "signoff.json").read_text())["by"] == "grace"
    else:
        assert "database" not in _order(ran)
        assert ("database_approval", False) in ran and ran[-1] == ("signoff", False)
        assert fleet.db_revision() == "b2"  # never migrated without the approval
        assert report["exit_state"] == "partially completed"
        assert "database: not run" in report["known_limitations"]
        assert "rollback_signoff" not in artifacts  # partially completed: not without accepting the gaps


@pytest.fixture
def services(fleet):
    """The fleet's flags on the flag service, its notifications to Slack: the token and the webhook URL are
    only in the credentials, the manifest names their environment variables (credential types' injectors)."""
    svc = FlagService(FLAGS_TOKEN, slack_secret=SLACK_SECRET)
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["flags"] = {
        "backend": "http",
        "names": ["new-checkout"],
        "token_env": "ROLLBACK_FLAGS_TOKEN",
        "request": {
            "method": "PUT",
            "url": svc.url + "/flags/{flag}",
            "headers": {"Authorization": "Bearer {token}"},
            "body": {"enabled": False},
        },
        "read_back": {"url": svc.url + "/flags/{flag}", "field": "enabled", "off_value": False},
    }
    doc["rollback_manifest"]["notify"] = {"channels": [{"kind": "slack", "url_env": "ROLLBACK_SLACK_WEBHOOK"}]}
    fleet.manifest.write_text(yaml.safe_dump(doc))
    yield svc
    svc.close()


@pytest.fixture
def destructive_pg(fleet, tmp_path, need):
    """The fleet's database on PostgreSQL at c3, whose rollback to a1 drops orders.coupon (destructive);
    its URL (with the password) only in the database credential, not in the manifest."""
    need(dbkit.server_up(dbkit.PG_ADMIN), "PostgreSQL on 127.0.0.1:5432")
    db = dbkit.create("postgresql", tmp_path, PASSWORD)
    config = dbkit.write_project(tmp_path / "app", "destructive")
    dbkit.alembic(config, db.url, "upgrade", "c3")
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["database"].update({"config": str(config), "backup_dir": str(tmp_path / "backups")})
    doc["rollback_manifest"]["database"].pop("url")
    doc["rollback_manifest"]["database"]["critical_tables"] = ["orders"]
    doc["rollback_manifest"]["environment"] = "production"
    fleet.manifest.write_text(yaml.safe_dump(doc))
    yield db
    dbkit.drop(db)


@pytest.mark.parametrize("approve", [True, False], ids=["destructive_approved", "destructive_denied"])
def test_a_destructive_database_step_runs_only_after_the_destructive_approval_node(
    fleet, destructive_pg, services, tmp_path, approve
):
    db = destructive_pg
    approvals = {
        "plan_approval": ("rita", True),
        "destructive_approval": ("dana", approve),
        "signoff_approval": ("sam", True),
    }
    # The team's ledger (PostgreSQL): its URL and password only in the ledger credential.
    ledger_password = "ledger-" + PASSWORD[::-1]
    ledger_db = dbkit.create("postgresql", tmp_path, ledger_password)
    inputs = {
        "release-rollback database": {"db_url": db.url},
        "release-rollback feature flags": {"flags_token": FLAGS_TOKEN},
        "release-rollback notifications": {"slack_webhook_url": f"{services.url}/slack/{SLACK_SECRET}"},
        "release-rollback ledger": {
            "ledger_url": f"postgresql://{ledger_db.name}@127.0.0.1:5432/{ledger_db.name}",
            "ledger_password": ledger_password,
        },
    }
    launch_vars = launch(fleet, tmp_path)
    launch_vars["rollback_ledger_command"] = str(BIN / "release-rollback")
    try:
        ran, artifacts, api, output = play_workflow(fleet, launch_vars, approvals, tmp_path, inputs)
        # Every container is gone; the report, the audit trail and the sign-off are in the ledger.
        engine = ledger_db.engine()
        with engine.connect() as conn:
            run_id = artifacts["rollback_report"]["run_id"]
            saved = conn.execute(
                sa.text("SELECT report, exit_state FROM ledger_runs WHERE run_id = :r"), {"r": run_id}
            ).one()
            events = [
                e for (e,) in conn.execute(sa.text("SELECT event FROM ledger_audit WHERE run_id = :r"), {"r": run_id})
            ]
            marks = conn.execute(sa.text("SELECT version, status, environment FROM ledger_releases")).all()
        engine.dispose()
    finally:
        dbkit.drop(ledger_db)
    assert saved.exit_state == artifacts["rollback_report"]["exit_state"]
    assert len(events) == artifacts["rollback_run_record"]["audit_head"]["seq"]
    assert "report.written" in events
    if approve:
        assert "signoff.recorded" in events and json.loads(saved.report)["signoff"]["by"] == "sam"
        # The release record is kept under the environment the manifest names, as the driver keeps it.
        assert (fleet.bad, "rolled_back", "production") in [tuple(m) for m in marks], marks
    assert not _leaks(artifacts, tmp_path / "containers", tmp_path / "events", secrets=(ledger_password,))

    order = _order(ran)
    assert ("destructive_check", False) in ran  # the check found destructive steps: its failure path asks
    (change,) = artifacts["rollback_destructive_changes"]
    assert change["stage"] == "database" and change["id"] == "b2" and "coupon" in change["why"]
    assert "orders.coupon" in output["destructive_check"] or "b2 -> a1" in output["destructive_check"]
    assert "database_approval" not in order
    report = artifacts["rollback_report"]
    statuses = {s["stage"]: s["status"] for s in report["steps"]}
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    if approve:
        assert (
            order.index("destructive_approval") < order.index("record_destructive_approval") < order.index("database")
        )
        approval = artifacts["rollback_approval"]
        # The same approval record as the CLI's --destructive, bound to the plan, in the approver's name.
        assert approval["destructive"] is True and approval["destructive_steps"] == ["b2"]
        assert approval["approver"] == "dana" and approval["plan_hash"] == artifacts["rollback_plan"]["hash"]
        assert artifacts["rollback_awx_approval"]["node"] == "destructive_approval"
        assert f"/api/v2/workflow_approvals/{api.nodes['destructive_approval']['id']}/" in api.requests
        assert db.revision() == "a1"
        assert db.scalar("SELECT count(*) FROM information_schema.columns WHERE column_name = 'coupon'") == 0
        assert statuses["database"] == "ok" and report["exit_state"] == "completed"
        assert report["approval"]["destructive_steps"] == ["b2"]
        assert report["database"]["backup"]  # data first: the backup taken before the destructive step is named
    else:
        assert "record_destructive_approval" not in order
        assert order.index("destructive_approval") + 1 == order.index("database")
        assert artifacts["rollback_approval"]["destructive"] is False
        assert db.revision() == "c3"  # the destructive step never ran
        assert statuses["database"] == "blocked"
        why = next(s for s in report["steps"] if s["stage"] == "database")["summary"]
        assert "b2 -> a1" in why and "would lose data" in why, why
        assert report["exit_state"] == "partially completed"
    # The credentials' environment reached the modules: the flag went off with the token, Slack was told.
    assert services.state == {"new-checkout": False} and services.auth_seen == [f"Bearer {FLAGS_TOKEN}"]
    assert statuses["feature_flags"] == "ok"
    assert services.slack and report["exit_state"] in services.slack[-1]["text"]
    # The secrets (only in the credentials) reached neither the artifacts nor a file of the run.
    assert not _leaks(artifacts, tmp_path / "containers", tmp_path / "events", tmp_path / "backups")
    assert (tmp_path / "containers" / "report" / "report.json").is_file() and not (tmp_path / "run").exists()


def test_a_workflow_launched_with_an_approval_is_refused_before_anything_changes(fleet, tmp_path):
    """Launch variables rank above artifacts: a rollback_approval given at launch would replace the
    approval job's record in every later node. The approval job reads the launch variables from the
    API and refuses; the workflow goes to the report and nothing changes."""
    launch_vars = launch(fleet, tmp_path)
    launch_vars["rollback_approval"] = {
        "approver": "mallory",
        "time": "2026-12-05T18:00:00Z",
        "reason": "",
        "plan_hash": "sha256:" + "0" * 64,
        "destructive": True,
        "destructive_steps": ["b2"],
    }
    before = {h: fleet.live(h) for h in fleet.hosts}
    ran, artifacts, api, output = play_workflow(
        fleet, launch_vars, {"plan_approval": ("rita", True), "signoff_approval": ("sam", True)}, tmp_path
    )
    assert _order(ran)[:4] == ["assess", "plan_approval", "record_approval", "report"]
    assert ("record_approval", False) in ran
    assert "Refused: the workflow was launched with rollback_approval" in output["record_approval"]
    # Refused before reading any approval; the sign-off job refuses the same way.
    assert api.requests[0] == f"/api/v2/workflow_jobs/{WORKFLOW_JOB_ID}/"
    assert not [r for r in api.requests if r.startswith("/api/v2/workflow_approvals/")]
    assert "signoff" not in _order(ran) or ("signoff", False) in ran
    assert {h: fleet.live(h) for h in fleet.hosts} == before
    assert fleet.db_revision() == "b2" and fleet.flag()["defaultVariant"] != "off"
    assert "rollback_awx_approval" not in artifacts


def test_an_approver_typed_at_launch_is_refused(fleet, tmp_path):
    """The approver comes from the API only: a name typed at launch (rollback_approved_by) is refused
    by the approval job, and the workflow goes to the report."""
    launch_vars = launch(fleet, tmp_path)
    launch_vars["rollback_approved_by"] = "alice"  # typed at launch: not an approver of record
    ran, artifacts, _, output = play_workflow(fleet, launch_vars, {"plan_approval": ("rita", True)}, tmp_path)
    assert ("record_approval", False) in ran
    assert "rollback_approved_by" in output["record_approval"]
    assert "rollback_approval" not in artifacts
    assert fleet.db_revision() == "b2"


def test_a_changing_stage_job_template_launched_outside_the_workflow_refuses(fleet, tmp_path):
    """Outside the workflow nothing checks the launch variables, so a changing stage refuses to run there,
    even with an approval record in its variables."""
    manifest = yaml.safe_load(fleet.manifest.read_text())
    forged = {"approver": "mallory", "plan_hash": "sha256:" + "0" * 64, "destructive": True, "destructive_steps": []}
    job = run_stage(
        "code_config",
        str(fleet.inventory),
        {**manifest, "rollback_approval": forged, "awx_job_id": 7, "rollback_run_dir": str(tmp_path / "run")},
        tmp_path / "events.jsonl",
        threading.Event(),
    )
    assert job.status == "failed"
    printed = "\n".join(
        json.loads(line).get("stdout", "") for line in (tmp_path / "events.jsonl").read_text().splitlines()
    )
    assert "runs in AWX only as a node of the release-rollback workflow" in printed
    assert all(fleet.live(h) == f"./releases/{fleet.bad}" for h in fleet.hosts)


def test_each_blocking_manual_step_is_an_approval_node_whose_approver_confirms_it(fleet, tmp_path):
    """`release-rollback awx-workflow` adds an approval node per blocking manual step (its instructions in
    the node's description) and the job that records its approver as the confirmation; the database stage
    starts only after it (docs/runbooks.md)."""
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["manual_steps"] = [
        {
            "id": "purge-cdn",
            "title": "Purge the CDN",
            "instructions": "Purge `/static/*` in the [CDN console](https://cdn.example.com/purge).",
            "stage": "code_config",
            "owner": "web on-call",
        },
        {"title": "Tell support", "instructions": "Post in #support.", "stage": "validate", "blocking": False},
    ]
    fleet.manifest.write_text(yaml.safe_dump(doc))
    generated = tmp_path / "workflow.yml"
    proc = subprocess.run(
        [str(BIN / "release-rollback"), "awx-workflow", "-m", str(fleet.manifest), "-o", str(generated)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (workflow,) = yaml.safe_load(generated.read_text())["controller_workflows"]
    nodes = {n["identifier"]: n for n in workflow["workflow_nodes"]}
    approvals = [n for n in nodes.values() if n["unified_job_template"]["type"] == "workflow_approval"]
    manual = [n for n in approvals if n["identifier"].startswith("manual_")]
    assert [n["identifier"] for n in manual] == ["manual_purge-cdn"]  # one per blocking step, none for the other
    assert "[CDN console](https://cdn.example.com/purge)" in manual[0]["unified_job_template"]["description"]
    # Denied: the step failed, and the code stage's rule (halt) sends the workflow to the report.
    assert manual[0]["related"]["failure_nodes"] == [{"identifier": "report"}]
    assert nodes["code_config"]["related"]["success_nodes"] == [{"identifier": "manual_purge-cdn"}]
    assert len(approvals) == len(NODES_APPROVALS) + 1

    launch_vars = launch(fleet, tmp_path)
    decisions = {
        "plan_approval": ("rita", True),
        "manual_purge-cdn": ("webops", True),
        "database_approval": ("dba", True),
        "signoff_approval": ("sam", True),
    }
    ran, artifacts, _api, _ = play_workflow(fleet, launch_vars, decisions, tmp_path, nodes=nodes)
    order = _order(ran)
    assert order.index("code_config") < order.index("manual_purge-cdn") < order.index("manual_purge-cdn_record")
    assert order.index("manual_purge-cdn_record") < order.index("database")
    # Every node but the sign-off, which a partially completed rollback does not get without accepting its gaps.
    assert [i for i, ok in ran if not ok] == ["signoff"], ran
    assert artifacts["rollback_manual_confirmations"]["purge-cdn"]["by"] == "webops"
    assert fleet.db_revision() == "a1"
    report = artifacts["rollback_report"]
    assert report["exit_state"] == "partially completed"  # the non-blocking step was never confirmed
    steps = {m["id"]: m for m in report["manual_steps"]}
    assert steps["purge-cdn"]["status"] == "confirmed" and steps["purge-cdn"]["by"] == "webops"
    assert any("manual step tell-support" in line and "not confirmed" in line for line in report["known_limitations"])


NODES_APPROVALS = [n for n in NODES.values() if n["unified_job_template"]["type"] == "workflow_approval"]
