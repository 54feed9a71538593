"""Event triggers (docs/eda.md): what an alert, a failed deploy or a failed validation leads to.

``release-rollback trigger`` is called by the collection's rulebook (``extensions/eda/rulebooks/
rollback.yml``) for every event it matches. Under a file lock, so that two events can never both
plan, it decides one of:

- **recorded**: a deploy that succeeded; its time opens the alert window of its environment;
- **ignored**: no environment configured for the event, no deploy recorded, or outside the window;
- **duplicate**: a rollback was already planned for this deploy (or one of the environment is
  running): a repeated or flapping alert makes no second plan; the duplicate is audited in that run;
- **planned, approval requested** (the default): assess only, then the plan goes to the approvers
  through the manifest's notification channels with the exact command that approves and runs it;
- **rolled back under a standard change**: a standard-change policy (module_utils ``policy``) holds
  for the plan, so it runs with the policy as the approval of record (``policy:NAME``, the policy's
  sha256 and the triggering event in approval.json and the audit trail); people are notified after.

Planning, approving and running are the Engine's own ``plan``, ``approve`` and ``execute``: the same
implementation as the command line's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import boundedyaml, content, locks
from .engine import BadInput, Blocked, Engine, check_inventory, load_manifest
from .rundir import RunDir, make_private_dirs, write_atomic

policylib = content.module_utils("policy")
followup = content.module_utils("followup")
notifylib = content.module_utils("notify")
reportlib = content.module_utils("report")
auditlib = content.module_utils("audit")
stages = content.module_utils("stages")
planlib = content.module_utils("plan")

KINDS = ("alert", "deploy", "validation")


def _yaml(data: bytes) -> Any:
    return boundedyaml.loads(data.decode("utf-8"), boundedyaml.MANIFEST)


def load_config(path: str) -> tuple[dict[str, Any], dict[tuple[str, str], tuple[dict[str, Any], str]]]:
    """The trigger configuration and every environment's policy ``(policy, sha256)``, all checked before
    anything happens. Raises BadInput (one sentence with the fix)."""
    try:
        config = policylib.load_triggers(path, _yaml)
        policies = {}
        for env in config["environments"]:
            if env.get("policy"):
                policies[(env["app"], env["environment"])] = policylib.load_policy(env["policy"], _yaml)
    except policylib.PolicyError as exc:
        raise BadInput(f"{exc}. Nothing was changed.") from None
    return config, policies


@dataclass
class Event:
    kind: str
    app: str | None
    environment: str | None
    received_at: str
    summary: str
    version: str | None = None
    status: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What the run keeps of the event (trigger.json, the approval): no headers, no tokens."""
        return {
            "kind": self.kind,
            "app": self.app,
            "environment": self.environment,
            "version": self.version,
            "received_at": self.received_at,
            "summary": self.summary,
            "detail": self.detail,
        }


def _text(value: Any, limit: int = 200) -> str | None:
    if value is None:
        return None
    return str(value).replace("\n", " ")[:limit]


def parse_events(kind: str, doc: Any, labels: dict[str, str]) -> list[Event]:
    """The events in what the rulebook passed (``{"payload": ..., "meta": ...}``) or a bare payload."""
    if kind not in KINDS:
        raise BadInput(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(doc, dict):
        raise BadInput("the event must be a JSON object (the webhook's body, or the rulebook's event)")
    payload = doc.get("payload") if isinstance(doc.get("payload"), dict) else doc
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    received = _text(meta.get("received_at")) or datetime.now(UTC).isoformat()
    if kind == "alert":
        out, seen = [], set()
        for alert in payload.get("alerts") or []:
            if not isinstance(alert, dict) or alert.get("status", "firing") != "firing":
                continue
            alert_labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
            app, env = _text(alert_labels.get(labels["app"])), _text(alert_labels.get(labels["environment"]))
            if (app, env) in seen:
                continue
            seen.add((app, env))
            name = _text(alert_labels.get("alertname")) or "alert"
            detail = {
                "labels": {str(k)[:100]: _text(v) for k, v in list(alert_labels.items())[:50]},
                "annotations": {
                    str(k)[:100]: _text(v, 500) for k, v in list((alert.get("annotations") or {}).items())[:20]
                },
                "startsAt": _text(alert.get("startsAt")),
                "fingerprint": _text(alert.get("fingerprint")),
            }
            out.append(
                Event(
                    kind,
                    app,
                    env,
                    received,
                    f"Alertmanager alert {name} for {app} in {env}, firing since {detail['startsAt']}",
                    version=_text(alert_labels.get("version")),
                    status="firing",
                    detail=detail,
                )
            )
        return out
    app, env = _text(payload.get("app")), _text(payload.get("environment"))
    status, version = _text(payload.get("status")), _text(payload.get("version"))
    detail = {k: _text(payload.get(k), 500) for k in ("app", "environment", "version", "status", "check", "message")}
    detail = {k: v for k, v in detail.items() if v is not None}
    what = "deploy" if kind == "deploy" else f"post-deploy validation {detail.get('check') or ''}".rstrip()
    return [
        Event(kind, app, env, received, f"{what} of {app} {version or ''} to {env}: {status}", version, status, detail)
    ]


class Trigger:
    """Decides what each event leads to; its records are under ``<runs root>/../eda/``."""

    def __init__(self, config_path: str, runs_root: Path, view: Any):
        self.config_path = config_path
        self.config, self.policies = load_config(config_path)
        self.runs_root = runs_root
        self.view = view
        self.home = runs_root.parent / "eda"

    # ------------------------------------------------------------------------------ records
    def _read(self, name: str) -> dict[str, Any]:
        path = self.home / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            raise BadInput(
                f"{path} is damaged (not JSON): restore it or remove it, then send the event again"
            ) from None

    def _write(self, name: str, data: dict[str, Any]) -> None:
        write_atomic(self.home / name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _log(self, event: Event, decision: str, **fields: Any) -> dict[str, Any]:
        entry = {"decision": decision, "kind": event.kind, "app": event.app, "environment": event.environment}
        entry.update(fields)
        auditlib.append(str(self.home / "events.jsonl"), "trigger", received_at=event.received_at, **entry)
        self.view.info(f"{event.kind} {event.app}/{event.environment}: {decision}: {fields.get('why') or ''}")
        return entry

    @contextlib.contextmanager
    def _decision_lock(self):
        """One decision at a time on this machine: two events cannot both see no plan and both plan."""
        make_private_dirs(self.home)
        with open(self.home / "trigger.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------ decide
    def handle(self, kind: str, doc: Any) -> list[dict[str, Any]]:
        labels = self.config["labels"] or {"app": "app", "environment": "environment"}
        events = parse_events(kind, doc, labels)
        out = []
        for event in events:
            out.append(self._one(event))
        if not events:
            out.append({"decision": "ignored", "kind": kind, "why": "the event names no firing alert"})
        return out

    def _env(self, event: Event) -> dict[str, Any] | None:
        for env in self.config["environments"]:
            if env["app"] == event.app and env["environment"] == event.environment:
                return env
        return None

    def _one(self, event: Event) -> dict[str, Any]:
        key = f"{event.app}|{event.environment}"
        with self._decision_lock():
            deploys = self._read("deploys.json")
            if event.kind == "deploy":
                if event.status not in ("succeeded", "failed"):
                    return self._log(
                        event, "ignored", why=f"a deploy status is succeeded or failed, not {event.status}"
                    )
                deploys[key] = {"version": event.version, "time": event.received_at, "status": event.status}
                self._write("deploys.json", deploys)
                if event.status == "succeeded":
                    return self._log(event, "recorded", why=f"deploy of {event.version} at {event.received_at}")
            elif event.kind == "validation" and event.status not in ("failed", "failing"):
                return self._log(event, "ignored", why=f"validation {event.status}, not failed")
            env = self._env(event)
            if env is None:
                return self._log(
                    event, "ignored", why=f"no environment of {self.config_path} is app {event.app} {event.environment}"
                )
            deploy = deploys.get(key)
            if not deploy:
                return self._log(
                    event,
                    "ignored",
                    why=f"no deploy of {event.app} to {event.environment} is recorded: post it to /deploy",
                )
            received, deployed = policylib.parse_time(event.received_at), policylib.parse_time(deploy["time"])
            minutes = (received - deployed).total_seconds() / 60.0 if received and deployed else None
            if minutes is None or minutes > env["alert_window_minutes"]:
                return self._log(
                    event,
                    "ignored",
                    why=f"the deploy at {deploy['time']} is outside the {env['alert_window_minutes']}-minute window",
                )
            runs = self._read("runs.json")
            mine = [r for r in runs.get(key, []) if r.get("deploy_time") == deploy["time"]]
            if mine:
                earlier = mine[-1]
                with contextlib.suppress(OSError):
                    RunDir(Path(earlier["run_dir"])).audit("trigger.duplicate", **event.record())
                return self._log(
                    event,
                    "duplicate",
                    run_id=earlier["run_id"],
                    run_dir=earlier["run_dir"],
                    why=f"run {earlier['run_id']} was already made for the deploy at {deploy['time']}",
                )
            try:
                # What a plan is made from is checked before a run directory is made (as `plan` does).
                _raw, parsed = load_manifest(env["manifest"])
                inventory = check_inventory(env["inventory"])
            except BadInput as exc:
                return self._log(event, "failed", why=f"{exc}; fix {self.config_path}")
            try:
                locks.check(self.runs_root.parent / "locks", locks.lock_name(parsed, inventory))
            except locks.LockHeld as exc:
                return self._log(event, "duplicate", why=f"a rollback of this environment is running: {exc}")
            engine = Engine(RunDir.create(self.runs_root), self.view)
            rundir = engine.rundir
            write_atomic(rundir.path / "trigger.json", json.dumps(event.record(), indent=2) + "\n")
            entry = {
                "run_id": rundir.run_id,
                "run_dir": str(rundir.path),
                "deploy_time": deploy["time"],
                "version": deploy.get("version"),
                "kind": event.kind,
                "mode": "planning",
                "time": datetime.now(UTC).isoformat(),
            }
            runs.setdefault(key, []).append(entry)
            self._write("runs.json", runs)
            rundir.audit("trigger.received", **event.record())
            try:
                plan = engine.plan(env["inventory"], env["manifest"], operator=f"eda:{event.kind}")
            except Blocked as exc:
                self._mark(key, rundir.run_id, mode="blocked")
                return self._log(event, "blocked", run_id=rundir.run_id, run_dir=str(rundir.path), why=str(exc))
            except (BadInput, RuntimeError) as exc:
                self._mark(key, rundir.run_id, mode="failed")
                return self._log(event, "failed", run_id=rundir.run_id, run_dir=str(rundir.path), why=str(exc))
            automatic = sum(
                1
                for r in runs.get(key, [])
                if r.get("mode") == "policy" and r.get("from_version") == plan.get("from_version")
            )
            policy = self.policies.get((event.app, event.environment))
            if policy is None:
                unmet = ["no standard-change policy is configured for this environment"]
            else:
                unmet = policylib.unmet(
                    policy[0],
                    {
                        "app": event.app,
                        "environment": event.environment,
                        "kind": event.kind,
                        "plan": plan,
                        "destructive": planlib.destructive_changes(plan),
                        "deploy_time": deploy["time"],
                        "now": datetime.now(UTC).isoformat(),
                        "automatic_runs": automatic,
                    },
                )
            mode = "ask" if unmet else "policy"
            self._mark(key, rundir.run_id, mode=mode, from_version=plan.get("from_version"))
        # The decision is recorded: the rollback itself runs outside the decision lock (the environment
        # lock keeps a second rollback of it out), so events of other environments are not held up.
        if unmet:
            return self._ask(engine, plan, event, env, unmet)
        return self._run(engine, plan, event, env, policy)

    def _mark(self, key: str, run_id: str, **fields: Any) -> None:
        runs = self._read("runs.json")
        for entry in runs.get(key, []):
            if entry["run_id"] == run_id:
                entry.update(fields)
        self._write("runs.json", runs)

    # ------------------------------------------------------------------------------ act
    def approve_command(self, rundir: RunDir) -> str:
        return (
            f"release-rollback --runs-dir {shlex.quote(str(self.runs_root))} run {shlex.quote(str(rundir.plan_file))} "
            '--approver "$USER" --yes'
        )

    def _ask(self, engine: Engine, plan: dict[str, Any], event: Event, env: dict[str, Any], unmet: list[str]):
        """Plan and ask: the plan goes to the approvers with the command that approves and runs it."""
        rundir = engine.rundir
        _raw, parsed = load_manifest(env["manifest"])
        rep = reportlib.build(plan, None, {}, run_id=rundir.run_id)
        command = self.approve_command(rundir)
        rep["approval_request"] = {
            "plan_file": str(rundir.plan_file),
            "approve_command": command,
            "trigger": event.summary,
            "steps": [f"[{s['stage']}] {s['action']}" for s in plan.get("steps") or []],
            "not_automatic": unmet,
        }
        sent = followup.announce(str(rundir.path), parsed.get("notify"), notifylib.APPROVAL_REQUESTED, rep)
        rundir.audit("trigger.plan_and_ask", not_pre_approved=unmet, approve_command=command)
        return self._log(
            event,
            "planned, approval requested",
            run_id=rundir.run_id,
            run_dir=str(rundir.path),
            approve_command=command,
            not_pre_approved=unmet,
            notified=[f"{n['channel']}: {n['outcome']}" for n in sent]
            or [f"nobody: the manifest {env['manifest']} has no notify channels for the approvers"],
            why="; ".join(unmet),
        )

    def _run(self, engine: Engine, plan: dict[str, Any], event: Event, env: dict[str, Any], policy):
        """A standard change: the policy is the approval of record; people are told after the fact."""
        doc, sha = policy
        rundir = engine.rundir
        of_record = {
            "policy": {"name": doc["name"], "sha256": sha, "path": str(Path(env["policy"]).absolute())},
            "trigger": event.record(),
        }
        engine.approve(
            f"policy:{doc['name']}",
            f"standard change {doc['name']}: {event.summary}",
            of_record=of_record,
        )
        try:
            exit_state = engine.execute()
        except (Blocked, BadInput) as exc:
            return self._log(event, "blocked", run_id=rundir.run_id, run_dir=str(rundir.path), why=str(exc))
        return self._log(
            event,
            "rolled back under a standard change",
            run_id=rundir.run_id,
            run_dir=str(rundir.path),
            exit_state=exit_state,
            exit_code=stages.EXIT_CODES[exit_state],
            policy=doc["name"],
            policy_sha256=sha,
            why=f"policy {doc['name']} holds",
        )
