"""The orchestration: plan (assess), approve, execute the stages with Go/No-Go, resume.

The procedure, the gates, the plan and the report come from the collection's module_utils; this
module only walks them, runs each stage through ansible-runner, keeps the run state and audits.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from . import content, locks
from .rundir import PlanFileError, RunDir, read_plan_file, utcnow
from .runner import StageRun, run_stage, run_stages

stages = content.module_utils("stages")
planlib = content.module_utils("plan")
manifestlib = content.module_utils("manifest")
reportlib = content.module_utils("report")
followup = content.module_utils("followup")
notifylib = content.module_utils("notify")

# The stages playbooks/execute.yml runs as one job: every execution stage but the report.
JOB_STAGES = [n for n in stages.EXECUTION_STAGES if n != "report"]


class BadInput(Exception):
    """Bad input: exit 2, nothing changed. The message is one sentence with the fix."""


class Blocked(Exception):
    """Inputs or approval missing: exit 3, nothing changed."""


class View(Protocol):
    def info(self, msg: str) -> None: ...
    def stage_start(self, stage: str) -> None: ...
    def stage_progress(self, run: StageRun) -> None: ...
    def stage_end(self, stage: str, result: dict[str, Any]) -> None: ...


def operator_name() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:
        return "unknown"


def load_manifest(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and check a manifest file: ``(raw, parsed)``. Raises BadInput with one sentence."""
    if not path:
        return {}, manifestlib.parse_manifest(None)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"the manifest {path} does not exist: check the path given with -m") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"the manifest {path} cannot be read ({exc.__class__.__name__}): check the file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadInput(f"the manifest {path} is not valid YAML{where}: fix the syntax there") from None
    try:
        parsed = manifestlib.parse_manifest(raw)
    except manifestlib.ManifestError as exc:
        raise BadInput(f"the manifest {path} is invalid: {exc}") from None
    if isinstance(raw, dict) and "rollback_manifest" in raw:
        raw = raw["rollback_manifest"]
    return raw or {}, parsed


def check_inventory(inventory: str) -> str:
    path = Path(inventory)
    if not path.exists():
        raise BadInput(f"the inventory {inventory} does not exist: pass an inventory file or directory with -i")
    return str(path.absolute())


@dataclass
class Engine:
    rundir: RunDir
    view: View
    cancel: threading.Event = field(default_factory=threading.Event)
    stop_after_stage: threading.Event = field(default_factory=threading.Event)
    current_stage: str | None = None

    @property
    def stop_file(self) -> Path:
        """Written when the operator asks to stop: a job running several stages stops at the next gate."""
        return self.rundir.path / "stop-requested"

    def request_stop(self) -> None:
        """Stop at the next stage boundary (first Ctrl-C, SIGTERM), including inside a job of several stages."""
        self.stop_after_stage.set()
        with contextlib.suppress(OSError):
            self.stop_file.write_text(utcnow() + "\n")

    # ---------------------------------------------------------------------------------- assess
    def plan(
        self,
        inventory: str,
        manifest_file: str | None,
        target: str | None = None,
        scope: list[str] | None = None,
        operator: str | None = None,
        window: str | None = None,
        separation_of_duties: bool = False,
        lock_hosts: bool = False,
    ) -> dict[str, Any]:
        """Run the assess stage and write plan.yml. Raises Blocked when the plan has blockers.

        With ``lock_hosts`` (a run that goes on to roll back) the hosts' locks are taken while they are
        assessed, so that the code stage needs no lock pass; a blocked plan gives them back.
        """
        raw, parsed = load_manifest(manifest_file)
        inventory = check_inventory(inventory)
        try:
            locks.check(self.lock_dir(), locks.lock_name(parsed.get("app"), inventory))
        except locks.LockHeld as exc:
            raise Blocked(str(exc)) from None
        if target is not None:
            try:
                manifestlib.check_version(target, "--target")
            except manifestlib.ManifestError as exc:
                raise BadInput(str(exc)) from None
        window_doc = parse_window(window) if window else None
        operator = operator or operator_name()
        state = {
            "run_id": self.rundir.run_id,
            "created": utcnow(),
            "operator": operator,
            "inventory": inventory,
            "manifest_file": str(Path(manifest_file).absolute()) if manifest_file else None,
            "stages": {},
            "exit_state": None,
        }
        self.rundir.write_state(state)
        self.rundir.audit(
            "run.created",
            run_id=self.rundir.run_id,
            operator=operator,
            inventory=inventory,
            manifest_file=state["manifest_file"],
        )
        extravars = {
            "rollback_manifest": raw,
            "rollback_run_id": self.rundir.run_id,
            "rollback_run_dir": str(self.rundir.path),
            "rollback_operator": operator,
            "rollback_inventory": inventory,
            "rollback_manifest_file": state["manifest_file"],
            "rollback_target": target or "",
            "rollback_scope": list(scope or []),
            "rollback_window": window_doc,
            "rollback_separation_of_duties": separation_of_duties,
            "rollback_lock_at_assess": lock_hosts,
        }
        result = self._run("assess", inventory, extravars, state)
        plan = result.get("plan")
        if not plan:
            raise RuntimeError(f"the assess stage published no plan: {result.get('summary')}")
        self.rundir.write_plan(plan)
        state["plan_hash"] = plan["hash"]
        self.rundir.write_state(state)
        self.rundir.audit(
            "plan.built",
            plan_hash=plan["hash"],
            from_version=plan.get("from_version"),
            to_version=plan.get("to_version"),
            scope=plan.get("scope"),
            blockers=plan.get("blockers"),
        )
        if plan.get("blockers"):
            state["exit_state"] = stages.RUN_BLOCKED
            self.rundir.write_state(state)
            self.rundir.audit("run.end", exit_state=stages.RUN_BLOCKED, reason=plan["blockers"][0])
            rep = self._write_report(plan, None, {"assess": result})
            followup.after_run(str(self.rundir.path), parsed, rep)
            self._write_report(plan, None, {"assess": result})
            self.rundir.write_state(state)
            raise Blocked("the plan is blocked: " + "; ".join(plan["blockers"]))
        return plan

    # --------------------------------------------------------------------------------- approve
    def approve(
        self, approver: str, reason: str | None = None, destructive: bool = False, break_glass: str | None = None
    ) -> dict[str, Any]:
        plan = self.load_plan()
        if plan.get("hash") != planlib.plan_hash(plan):
            self.rundir.audit("approval.refused", approver=approver, reason="plan edited after it was built")
            raise BadInput(
                "the plan was edited after it was built (its hash no longer matches): build a new plan "
                "with `release-rollback plan`"
            )
        if plan.get("blockers"):
            raise Blocked("the plan has blockers and cannot be approved: " + plan["blockers"][0])
        try:
            approval = planlib.approval_record(plan, approver, reason, destructive=destructive, break_glass=break_glass)
        except ValueError as exc:
            self.rundir.audit("approval.refused", approver=approver, reason=str(exc))
            raise Blocked(str(exc)) from None
        self.rundir.write_approval(approval)
        self.rundir.audit(
            "approval.recorded",
            approver=approval["approver"],
            reason=approval["reason"],
            plan_hash=approval["plan_hash"],
            destructive=approval["destructive"],
            break_glass=approval.get("break_glass"),
        )
        return approval

    def abort(self, reason: str) -> str:
        """End a run that is not running (paused, blocked or partial) as aborted, with the reason."""
        state = self.rundir.read_state()
        plan = self.load_plan() if self.rundir.plan_file.is_file() else {}
        lock_file = self.lock_dir() / f"{locks.lock_name(plan.get('app'), state.get('inventory'))}.lock"
        if lock_file.is_file():
            holder = json.loads(lock_file.read_text())
            if holder.get("run_id") == self.rundir.run_id and locks.alive(int(holder.get("pid", -1))):
                raise Blocked(
                    f"run {self.rundir.run_id} is running ({locks.describe(holder)}): stop it with Ctrl-C, "
                    f"or SIGTERM to pid {holder.get('pid')}"
                )
        results = {n: e["result"] for n, e in state.get("stages", {}).items() if e.get("result")}
        state.update(exit_state=stages.ABORTED, aborted=reason, aborted_by_command=True)
        self.rundir.audit("run.aborted", reason=reason, by=operator_name())
        self.release_host_locks(plan, state, why="the run was aborted")
        self._write_report(plan, self.rundir.read_approval(), results, aborted=reason)
        self.rundir.audit("run.end", exit_state=stages.ABORTED)
        self.rundir.write_state(state)
        return stages.ABORTED

    def release_host_locks(self, plan: dict[str, Any], state: dict[str, Any], why: str) -> None:
        """Give back the host locks this run may hold (taken at assess, or kept by hosts that failed)."""
        if not plan.get("hosts") or not (plan.get("locked") or "code_config" in state.get("stages", {})):
            return
        run = run_stage(
            "unlock",
            state["inventory"],
            {"rollback_plan": plan},
            self.rundir.events_file("unlock"),
            threading.Event(),
            playbook=content.playbook("unlock"),
        )
        self.rundir.audit("host_locks.released", reason=why, runner_status=run.status, hosts=sorted(run.hosts))

    def load_plan(self) -> dict[str, Any]:
        try:
            return read_plan_file(self.rundir.plan_file)
        except PlanFileError as exc:
            raise BadInput(str(exc)) from None

    def approval_problem(self) -> str | None:
        return planlib.approval_problem(self.load_plan(), self.rundir.read_approval())

    # --------------------------------------------------------------------------------- execute
    def execute(
        self,
        resume: bool = False,
        limit: str | None = None,
        break_lock: bool = False,
        override_window: str | None = None,
    ) -> str:
        """Run every execution stage in order, applying the stage table. Returns the exit state."""
        plan = self.load_plan()
        approval = self.rundir.read_approval()
        problem = planlib.approval_problem(plan, approval)
        state = self.rundir.read_state()
        if problem:
            self.rundir.audit("run.refused", reason=problem)
            raise Blocked(problem)
        if state.get("exit_state") == stages.ABORTED and state.get("aborted_by_command"):
            raise Blocked(f"run {self.rundir.run_id} was aborted ({state.get('aborted')}): start a new plan")
        self._check_window(plan, override_window)
        lock = self._lock(plan, state, break_lock)
        if not self.stop_after_stage.is_set():
            self.stop_file.unlink(missing_ok=True)
        try:
            return self._execute(plan, approval, state, resume, limit)
        finally:
            self.stop_file.unlink(missing_ok=True)
            lock.release()

    def lock_dir(self) -> Path:
        return self.rundir.path.parent.parent / "locks"

    def _lock(self, plan: dict[str, Any], state: dict[str, Any], break_lock: bool) -> locks.Lock:
        name = locks.lock_name(plan.get("app"), state.get("inventory"))
        try:
            lock = locks.acquire(
                self.lock_dir(),
                name,
                self.rundir.run_id,
                state.get("operator") or operator_name(),
                break_stale=break_lock,
            )
        except locks.LockHeld as exc:
            self.rundir.audit("lock.refused", reason=str(exc))
            raise Blocked(str(exc)) from None
        if lock.taken_over:
            same = lock.taken_over.get("run_id") == self.rundir.run_id
            self.rundir.audit("lock.recovered" if same else "lock.broken", stale_holder=locks.describe(lock.taken_over))
        self.rundir.audit("lock.acquired", lock=name)
        return lock

    def _check_window(self, plan: dict[str, Any], override: str | None) -> None:
        window = plan.get("window")
        if not window:
            return
        now = utcnow()
        if window["start"] <= now <= window["end"]:
            return
        if override:
            self.rundir.audit("window.override", now=now, window=window, reason=override)
            return
        self.rundir.audit("window.refused", now=now, window=window)
        raise Blocked(
            f"it is {now}, outside the change window {window['start']} - {window['end']}; "
            "pass --override-window REASON to go ahead anyway (it is audited)"
        )

    def _execute(
        self, plan: dict[str, Any], approval: dict[str, Any], state: dict[str, Any], resume: bool, limit: str | None
    ) -> str:
        for name, entry in state.get("stages", {}).items():
            if entry.get("status") == "running" and not entry.get("result"):
                self.rundir.audit(
                    "run.interrupted",
                    stage=name,
                    started=entry.get("started"),
                    note="the driver stopped during this stage; it runs again",
                )
        raw, parsed = load_manifest(state.get("manifest_file"))
        results: dict[str, Any] = {name: s["result"] for name, s in state["stages"].items() if s.get("result")}
        self.rundir.audit(
            "run.resumed" if resume else "run.started",
            plan_hash=plan["hash"],
            approver=approval["approver"],
            limit=limit,
        )
        started = reportlib.build(plan, approval, results, run_id=self.rundir.run_id)
        followup.announce(str(self.rundir.path), parsed.get("notify"), notifylib.STARTED, started)
        state["exit_state"] = None
        state["aborted"] = None
        self.rundir.write_state(state)
        base = {
            "rollback_manifest": raw,
            "rollback_plan": plan,
            "rollback_approval": approval,
            "rollback_run_id": self.rundir.run_id,
            "rollback_run_dir": str(self.rundir.path),
            "rollback_fail_on_stage_failure": False,
            # The driver notifies and files the RCA ticket itself, once the exit state is final.
            "rollback_report_followup": False,
            # A resumed run locks the hosts again in the code stage (the locks taken at assess may be gone).
            "rollback_resumed": resume,
        }
        aborted = None
        together: set[str] = set()
        in_scope = [n for n in JOB_STAGES if n in (plan.get("scope") or [])]
        if not resume and len(in_scope) > 1 and not (self.stop_after_stage.is_set() or self.cancel.is_set()):
            # A run that starts afresh runs the stages from feature_flags to validate as one job (with
            # one stage in scope, that stage's own job is the smaller one); the stages the job did not
            # finish (it stopped or died before them) are run below, one job each.
            together, aborted = self._run_together(plan, state, results, base)
        for name in stages.EXECUTION_STAGES:
            if name in together:
                continue
            if aborted:
                break
            done = results.get(name)
            # Validation that passed before a stage changed something again (on resume) runs again.
            revalidate = name == "validate" and stages.stale_validation(results)
            if resume and done and _finished(done) and name != "report" and not revalidate:
                continue
            if self.stop_after_stage.is_set() or self.cancel.is_set():
                aborted = f"stopped by the operator before stage {name}"
                break
            gate = planlib.stage_gate(name, results, plan, approval)
            if not gate["run"]:
                now = utcnow()
                results[name] = self._stage_skipped(name, gate, planlib.gated_result(name, gate, now, now), state)
                if name == "code_config" and plan.get("locked"):
                    # The hosts were locked while they were assessed; nothing rolls them back now.
                    self.release_host_locks(plan, state, why=f"stage code_config does not run: {gate['reason']}")
                continue
            extravars = dict(base)
            extravars.update({f"rollback_result_{k}": v for k, v in results.items() if k != name})
            # --limit re-runs a stage on some hosts only when the stage already ran on the others;
            # a stage that never ran runs everywhere.
            stage_limit = limit if (limit and name != "report" and done and done.get("hosts")) else None
            if name == "report":
                # The report is written on the controller: the driver does the report stage's work
                # itself (the same code as the rollback_report module) instead of starting a playbook.
                result = self._bookkeep(name, state, lambda: self._report_stage(plan, approval, results))
            else:
                result = self._run(name, state["inventory"], extravars, state, limit=stage_limit)
            if stage_limit:
                result = merge_limited(done, result)
                state["stages"][name]["result"] = result
                self.rundir.write_state(state)
            results[name] = result
            if self.cancel.is_set():
                aborted = f"interrupted by the operator during stage {name}"
                break
            self._decide(name, result)
        if aborted:
            state["aborted"] = aborted
            self.rundir.audit("run.aborted", reason=aborted)
        # The report stage wrote the report; render it once more with the report stage's own result
        # (same renderer), or write it here when the stage could not.
        rep = self._write_report(plan, approval, results, aborted=aborted)
        exit_state = stages.exit_state(results, aborted=bool(aborted))
        state["exit_state"] = exit_state
        self.rundir.write_state(state)
        self.rundir.audit("run.end", exit_state=exit_state)
        # Notifications and the RCA ticket never change the exit state: a channel or tracker that is
        # down is recorded (RCA pending) and retried with `release-rollback rca RUN_DIR`.
        followup.after_run(str(self.rundir.path), parsed, rep)
        self._write_report(plan, approval, results, aborted=aborted, audit=False)
        self.rundir.write_state(state)
        return exit_state

    def _write_report(self, plan, approval, results, aborted=None, audit=True) -> dict[str, Any]:
        rep = reportlib.build_for_run(
            str(self.rundir.path), plan, approval, results, aborted=bool(aborted), abort_reason=aborted
        )
        reportlib.write(str(self.rundir.path), rep)
        if audit and (results.get("report") or {}).get("status") != stages.OK:
            self.rundir.audit("report.written", exit_state=rep["exit_state"], by="driver")
        return rep

    # ------------------------------------------------------------------------------- one stage
    def _run(
        self,
        name: str,
        inventory: str,
        extravars: dict[str, Any],
        state: dict[str, Any],
        limit: str | None = None,
    ) -> dict[str, Any]:
        """Run one stage playbook through ansible-runner."""

        def work() -> tuple[dict[str, Any], dict[str, Any]]:
            started = utcnow()
            run = run_stage(
                name,
                inventory,
                extravars,
                self.rundir.events_file(name),
                self.cancel,
                on_change=self.view.stage_progress,
                limit=limit,
            )
            result = run.result or _no_result(run, run.status, run.last_error, started)
            return result, {"runner_status": run.status, "rc": run.rc, "events": run.events}

        return self._bookkeep(name, state, work)

    def _run_together(
        self, plan: dict[str, Any], state: dict[str, Any], results: dict[str, Any], base: dict[str, Any]
    ) -> tuple[set[str], str | None]:
        """Run feature_flags to validate as one ansible-runner job (``playbooks/execute.yml``).

        One ansible-playbook start instead of five; each stage is still begun, ended, audited and
        written to the state file as it happens, from the job's events. The job stops at the next
        gate when the operator asks (``request_stop`` writes the stop file the gates look for).
        Returns the stages it finished and, when the operator interrupted it, why the run is aborted.
        """
        extravars = dict(base)
        # Results of the job's own stages are facts inside the job: extra vars would override them.
        extravars.update({f"rollback_result_{k}": v for k, v in results.items() if k not in JOB_STAGES})
        extravars["rollback_stop_file"] = str(self.stop_file)
        finished: set[str] = set()
        clocks: dict[str, float] = {}

        def on_gate(run: StageRun) -> None:
            gate = run.gate or {}
            if gate.get("run") and not gate.get("stop"):
                clocks[run.stage] = self._stage_begin(run.stage, state)

        def on_result(run: StageRun) -> None:
            gate, result = run.gate or {"run": True}, run.result or {}
            if gate.get("stop"):
                # Stopped before this stage: nothing of it ran and nothing is recorded (resume runs it).
                pass
            elif not gate.get("run"):
                results[run.stage] = self._stage_skipped(run.stage, gate, result, state)
                finished.add(run.stage)
            else:
                clock = clocks.get(run.stage) or self._stage_begin(run.stage, state)
                facts = {"runner_status": "published", "rc": None, "events": run.events, "job": "execute"}
                results[run.stage] = self._stage_finish(run.stage, state, result, clock, facts)
                finished.add(run.stage)
                self._decide(run.stage, result)
            if run.stage == "code_config" and not gate.get("run") and plan.get("locked"):
                # The job gave back the locks taken at assess (code_config.yml imports unlock.yml).
                self.rundir.audit(
                    "host_locks.released",
                    reason=f"stage code_config does not run: {gate.get('reason')}",
                    runner_status="published",
                    hosts=sorted(h for h, t in run.hosts.items() if h != "localhost" and t.ok),
                )

        runs, status, rc, last = run_stages(
            JOB_STAGES,
            state["inventory"],
            extravars,
            self.rundir.events_file,
            self.cancel,
            on_gate,
            on_result,
            on_change=self.view.stage_progress,
        )
        for name in finished:
            if "job" in state["stages"][name]:
                state["stages"][name].update(runner_status=status, rc=rc, events=runs[name].events)
        self.rundir.write_state(state)
        for name, run in runs.items():
            if name in finished or name not in clocks:
                continue
            # The stage began but published nothing: the job died (or was interrupted) inside it.
            result = _no_result(run, status, last, state["stages"][name]["started"])
            facts = {"runner_status": status, "rc": rc, "events": run.events, "job": "execute"}
            results[name] = self._stage_finish(name, state, result, clocks[name], facts)
            finished.add(name)
            if self.cancel.is_set():
                return finished, f"interrupted by the operator during stage {name}"
            self._decide(name, result)
        return finished, None

    def _report_stage(self, plan: dict[str, Any], approval: dict[str, Any], results: dict[str, Any]):
        """The report stage on the controller: report files, release record, audit entry."""
        started = utcnow()
        record = plan.get("release_record") or str(self.rundir.path.parent.parent / "releases.jsonl")
        try:
            rep, paths, _recorded = reportlib.write_run_report(str(self.rundir.path), plan, approval, results, record)
            host = {"status": stages.OK, "changed": True, "msg": f"report written to {paths['md']}"}
            host["exit_state"] = rep["exit_state"]
        except OSError as exc:
            host = {"status": stages.FAILED, "changed": False, "msg": f"the report could not be written: {exc}"}
        result = stages.aggregate("report", {"localhost": host}, ["localhost"])
        result.update(started=started, ended=utcnow())
        return result, {"runner_status": "in-process", "rc": 0 if host["status"] == stages.OK else 1, "events": 0}

    def _bookkeep(self, name: str, state: dict[str, Any], work) -> dict[str, Any]:
        """State, audit trail and view around one stage's ``work`` (which returns its result and run facts)."""
        clock = self._stage_begin(name, state)
        result, facts = work()
        return self._stage_finish(name, state, result, clock, facts)

    def _stage_begin(self, name: str, state: dict[str, Any]) -> float:
        self.current_stage = name
        state["stages"][name] = {"started": utcnow(), "status": "running"}
        state["current_stage"] = name
        self.rundir.write_state(state)
        self.rundir.audit("stage.start", stage=name)
        self.view.stage_start(name)
        return time.monotonic()

    def _stage_finish(
        self, name: str, state: dict[str, Any], result: dict[str, Any], clock: float, facts: dict[str, Any]
    ) -> dict[str, Any]:
        state["stages"][name] = dict(result=result, seconds=round(time.monotonic() - clock, 3), **facts)
        state["current_stage"] = None
        self.rundir.write_state(state)
        self.rundir.audit(
            "stage.end",
            stage=name,
            status=result["status"],
            summary=result.get("summary"),
            runner_status=facts["runner_status"],
            events=facts["events"],
        )
        self.view.stage_end(name, result)
        self.current_stage = None
        return result

    def _stage_skipped(
        self, name: str, gate: dict[str, Any], result: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, Any]:
        """A stage its gate kept from running: recorded, audited and shown, with the gate's reason."""
        state["stages"][name] = {"result": result}
        self.rundir.write_state(state)
        self.rundir.audit("stage.skipped", stage=name, status=result["status"], reason=gate["reason"])
        self.view.stage_end(name, result)
        return result

    def _decide(self, name: str, result: dict[str, Any]) -> None:
        verdict = stages.decide(name, result["status"])
        self.rundir.audit(
            "decision",
            stage=name,
            status=result["status"],
            go=verdict["go"],
            halt=verdict["halt"],
            limitation=verdict["limitation"],
        )


def merge_limited(previous: dict[str, Any], limited: dict[str, Any]) -> dict[str, Any]:
    """The stage result after a ``--limit`` run: the limited hosts' new results over the previous ones."""
    hosts = dict(previous.get("hosts") or {})
    hosts.update(limited.get("hosts") or {})
    extra = {k: v for k, v in limited.items() if k not in ("stage", "status", "changed", "summary", "hosts", "reached")}
    merged = stages.aggregate(limited["stage"], hosts, sorted(hosts), extra=extra)
    merged["changed"] = bool(previous.get("changed") or limited.get("changed"))
    return merged


def parse_window(text: str) -> dict[str, str]:
    """``START/END`` in ISO 8601 (UTC when no offset) -> ``{"start": ..., "end": ...}`` in UTC Z form."""
    from datetime import UTC, datetime

    try:
        start_s, end_s = text.split("/")
        out = []
        for part in (start_s, end_s):
            when = datetime.fromisoformat(part.strip().replace("Z", "+00:00"))
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
            out.append(when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise BadInput(
            f"--window {text!r} is not START/END in ISO 8601: use e.g. 2026-11-26T22:00Z/2026-11-27T02:00Z"
        ) from None
    if out[0] >= out[1]:
        raise BadInput(f"--window {text!r} ends before it starts: give START/END in that order")
    return {"start": out[0], "end": out[1]}


def _no_result(run: StageRun, status: str, last_error: str, started: str) -> dict[str, Any]:
    """The result of a stage whose playbook ended (or was killed) before it published one."""
    why = "cancelled" if status == "canceled" else (run.last_error or last_error or f"ansible-runner ended {status}")
    return {
        "stage": run.stage,
        "status": stages.FAILED,
        "changed": None,
        "summary": f"the stage playbook ended without a result: {why}",
        "hosts": {h: {"status": "failed" if t.failed or t.unreachable else "unknown"} for h, t in run.hosts.items()},
        "reached": True,
        "started": started,
        "ended": utcnow(),
    }


def _finished(result: dict[str, Any]) -> bool:
    """A stage that resume does not run again."""
    return result.get("status") == stages.OK or (result.get("status") == stages.SKIPPED and result.get("reached"))
