"""The orchestration: plan (assess), approve, execute the stages with Go/No-Go, resume.

The procedure, the gates, the plan and the report come from the collection's module_utils; this
module only walks them, runs each stage through ansible-runner, keeps the run state and audits.
"""

from __future__ import annotations

import getpass
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from . import content
from .rundir import PlanFileError, RunDir, read_plan_file, utcnow
from .runner import StageRun, run_stage

stages = content.module_utils("stages")
planlib = content.module_utils("plan")
manifestlib = content.module_utils("manifest")
reportlib = content.module_utils("report")


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

    # ---------------------------------------------------------------------------------- assess
    def plan(
        self,
        inventory: str,
        manifest_file: str | None,
        target: str | None = None,
        scope: list[str] | None = None,
        operator: str | None = None,
    ) -> dict[str, Any]:
        """Run the assess stage and write plan.yml. Raises Blocked when the plan has blockers."""
        raw, _parsed = load_manifest(manifest_file)
        inventory = check_inventory(inventory)
        if target is not None:
            try:
                manifestlib.check_version(target, "--target")
            except manifestlib.ManifestError as exc:
                raise BadInput(str(exc)) from None
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
            raise Blocked("the plan is blocked: " + "; ".join(plan["blockers"]))
        return plan

    # --------------------------------------------------------------------------------- approve
    def approve(self, approver: str, reason: str | None = None, destructive: bool = False) -> dict[str, Any]:
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
            approval = planlib.approval_record(plan, approver, reason, destructive=destructive)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        self.rundir.write_approval(approval)
        self.rundir.audit(
            "approval.recorded",
            approver=approval["approver"],
            reason=approval["reason"],
            plan_hash=approval["plan_hash"],
            destructive=approval["destructive"],
        )
        return approval

    def load_plan(self) -> dict[str, Any]:
        try:
            return read_plan_file(self.rundir.plan_file)
        except PlanFileError as exc:
            raise BadInput(str(exc)) from None

    def approval_problem(self) -> str | None:
        return planlib.approval_problem(self.load_plan(), self.rundir.read_approval())

    # --------------------------------------------------------------------------------- execute
    def execute(self, resume: bool = False, limit: str | None = None) -> str:
        """Run every execution stage in order, applying the stage table. Returns the exit state."""
        plan = self.load_plan()
        approval = self.rundir.read_approval()
        problem = planlib.approval_problem(plan, approval)
        state = self.rundir.read_state()
        if problem:
            self.rundir.audit("run.refused", reason=problem)
            raise Blocked(problem)
        raw, _parsed = load_manifest(state.get("manifest_file"))
        results: dict[str, Any] = {name: s["result"] for name, s in state["stages"].items() if s.get("result")}
        self.rundir.audit(
            "run.resumed" if resume else "run.started",
            plan_hash=plan["hash"],
            approver=approval["approver"],
            limit=limit,
        )
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
        }
        aborted = None
        for name in stages.EXECUTION_STAGES:
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
                results[name] = planlib.gated_result(name, gate, now, now)
                state["stages"][name] = {"result": results[name]}
                self.rundir.write_state(state)
                self.rundir.audit("stage.skipped", stage=name, status=results[name]["status"], reason=gate["reason"])
                self.view.stage_end(name, results[name])
                continue
            extravars = dict(base)
            extravars.update({f"rollback_result_{k}": v for k, v in results.items() if k != name})
            result = self._run(name, state["inventory"], extravars, state, limit=limit if name != "report" else None)
            results[name] = result
            if self.cancel.is_set():
                aborted = f"interrupted by the operator during stage {name}"
                break
            verdict = stages.decide(name, result["status"])
            self.rundir.audit(
                "decision",
                stage=name,
                status=result["status"],
                go=verdict["go"],
                halt=verdict["halt"],
                limitation=verdict["limitation"],
            )
        if aborted:
            state["aborted"] = aborted
            self.rundir.audit("run.aborted", reason=aborted)
        # The report stage wrote the report; render it once more with the report stage's own result
        # (same renderer), or write it here when the stage could not.
        self._write_report(plan, approval, results, aborted=aborted)
        exit_state = stages.exit_state(results, aborted=bool(aborted))
        state["exit_state"] = exit_state
        self.rundir.write_state(state)
        self.rundir.audit("run.end", exit_state=exit_state)
        self.rundir.write_state(state)
        return exit_state

    def _write_report(self, plan, approval, results, aborted=None) -> None:
        rep = reportlib.build(
            plan, approval, results, run_id=self.rundir.run_id, aborted=bool(aborted), abort_reason=aborted
        )
        reportlib.write(str(self.rundir.path), rep)
        if (results.get("report") or {}).get("status") != stages.OK:
            self.rundir.audit("report.written", exit_state=rep["exit_state"], by="driver")

    # ------------------------------------------------------------------------------- one stage
    def _run(
        self,
        name: str,
        inventory: str,
        extravars: dict[str, Any],
        state: dict[str, Any],
        limit: str | None = None,
    ) -> dict[str, Any]:
        self.current_stage = name
        started = utcnow()
        state["stages"][name] = {"started": started, "status": "running"}
        state["current_stage"] = name
        self.rundir.write_state(state)
        self.rundir.audit("stage.start", stage=name)
        self.view.stage_start(name)
        run = run_stage(
            name,
            inventory,
            extravars,
            self.rundir.events_file(name),
            self.cancel,
            on_change=self.view.stage_progress,
            limit=limit,
        )
        result = run.result
        if result is None:
            why = "cancelled" if run.status == "canceled" else (run.last_error or f"ansible-runner ended {run.status}")
            result = {
                "stage": name,
                "status": stages.FAILED,
                "changed": None,
                "summary": f"the stage playbook ended without a result: {why}",
                "hosts": {
                    h: {"status": "failed" if t.failed or t.unreachable else "unknown"} for h, t in run.hosts.items()
                },
                "reached": True,
                "started": started,
                "ended": utcnow(),
            }
        state["stages"][name] = {
            "result": result,
            "runner_status": run.status,
            "rc": run.rc,
            "events": run.events,
        }
        state["current_stage"] = None
        self.rundir.write_state(state)
        self.rundir.audit(
            "stage.end",
            stage=name,
            status=result["status"],
            summary=result.get("summary"),
            runner_status=run.status,
            events=run.events,
        )
        self.view.stage_end(name, result)
        self.current_stage = None
        return result


def _finished(result: dict[str, Any]) -> bool:
    """A stage that resume does not run again."""
    return result.get("status") == stages.OK or (result.get("status") == stages.SKIPPED and result.get("reached"))
