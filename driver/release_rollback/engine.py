"""The orchestration: plan (assess), approve, execute the stages with Go/No-Go, resume.

The procedure, the gates, the plan and the report come from the collection's module_utils; this
module only walks them, runs each stage through ansible-runner, keeps the run state and audits.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import boundedyaml, content, jobs, locks
from .rundir import PlanFileError, RecordError, RunDir, environment_of, read_plan_file, utcnow
from .runner import StageRun, run_stage, run_stages

stages = content.module_utils("stages")
planlib = content.module_utils("plan")
manifestlib = content.module_utils("manifest")
reportlib = content.module_utils("report")
followup = content.module_utils("followup")
notifylib = content.module_utils("notify")
lifecycle = content.module_utils("lifecycle")
manuallib = content.module_utils("manual")

# The stages playbooks/execute.yml runs as one job: every execution stage but the report.
JOB_STAGES = [n for n in stages.EXECUTION_STAGES if n != "report"]


class BadInput(Exception):
    """Bad input: exit 2, nothing changed. The message is one sentence with the fix."""


class Blocked(Exception):
    """Inputs or approval missing: exit 3, nothing changed."""


class Waiting(Exception):
    """The run waits for an operator to confirm a manual step: exit 6, nothing changed."""


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


def _read_yaml_file(path: str, what: str, option: str, too_large_fix: str) -> Any:
    """A manifest or runbook file as YAML, bounded before anything is built (size, nesting, aliases and
    list lengths: boundedyaml.MANIFEST). Raises BadInput with one sentence and the fix."""
    try:
        return boundedyaml.load_file(path, boundedyaml.MANIFEST)
    except FileNotFoundError:
        raise BadInput(f"the {what} {path} does not exist: check the path given with {option}") from None
    except boundedyaml.TooLarge as exc:
        raise BadInput(f"the {what} {path} {exc}, over the limit for a {too_large_fix}") from None
    except boundedyaml.YAMLSyntax as exc:
        where = f" at line {exc.mark.line + 1}, column {exc.mark.column + 1}" if exc.mark else ""
        raise BadInput(f"the {what} {path} is not valid YAML{where}: fix the syntax there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"the {what} {path} cannot be read ({exc.__class__.__name__}): check the file") from None


def load_manifest(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and check a manifest file: ``(raw, parsed)``. Raises BadInput with one sentence."""
    if not path:
        return {}, manifestlib.parse_manifest(None)
    raw = _read_yaml_file(path, "manifest", "-m", "release manifest: give the manifest the deploy wrote")
    try:
        parsed = manifestlib.parse_manifest(raw)
    except manifestlib.ManifestError as exc:
        raise BadInput(f"the manifest {path} is invalid: {exc}") from None
    if isinstance(raw, dict) and "rollback_manifest" in raw:
        raw = raw["rollback_manifest"]
    return raw or {}, parsed


def load_runbook(path: str) -> dict[str, Any]:
    """Read and check a runbook file. Raises BadInput with one sentence and the fix."""
    raw = _read_yaml_file(path, "runbook", "--runbook", "runbook: split it per application")
    try:
        return manuallib.check_runbook(raw, f"the runbook {path}")
    except manuallib.RunbookError as exc:
        raise BadInput(str(exc)) from None


def load_inputs(manifest_file: str | None, runbook_file: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest with the runbook merged in (``manual.compose``): ``(raw, parsed)``, as ``load_manifest``.
    What the approval binds is this merge: a runbook edited after the approval voids it too."""
    raw, parsed = load_manifest(manifest_file)
    if not runbook_file:
        return raw, parsed
    runbook = load_runbook(runbook_file)
    try:
        raw = manuallib.compose(raw, runbook, str(Path(runbook_file).absolute()))
        parsed = manifestlib.parse_manifest(raw)
    except manuallib.RunbookError as exc:
        raise BadInput(str(exc)) from None
    except manifestlib.ManifestError as exc:
        raise BadInput(f"the runbook {runbook_file} gives an invalid step: {exc}; fix it in the runbook") from None
    return raw, parsed


def last_rollback(runs_root: Path, inventory: str, this_run: str) -> dict[str, Any] | None:
    """The last rollback of the same application in the run history, for an emergency plan: the newest
    other run under ``runs_root`` made from the same inventory that went past assessing. Its run id, app,
    scope and manual steps (from its plan)."""
    for run_dir in sorted(runs_root.iterdir(), reverse=True) if runs_root.is_dir() else []:
        if run_dir.name == this_run or not (run_dir / "plan.yml").is_file():
            continue
        try:
            state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
            if state.get("inventory") != inventory or set(state.get("stages") or {}) <= {"assess"}:
                continue
            plan = read_plan_file(run_dir / "plan.yml")
        except (PlanFileError, OSError, ValueError):
            continue
        return {
            "run_id": run_dir.name,
            "app": plan.get("app"),
            "scope": list(plan.get("scope") or []),
            "manual_steps": [
                {k: m.get(k) for k in ("title", "stage", "position")} for m in plan.get("manual_steps") or []
            ],
        }
    return None


def stage_results(state: dict[str, Any]) -> dict[str, Any]:
    """The results the run's stages published so far (state.json), by stage name."""
    return {name: entry["result"] for name, entry in (state.get("stages") or {}).items() if entry.get("result")}


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
    # A dry run (``run --check``): this engine's run directory is ``<run>/dry-run/`` of the run ``dry_run_of``,
    # its jobs run with ansible-playbook's --check --diff, and it notifies, records and locks nothing.
    dry_run_of: RunDir | None = None

    @property
    def stop_file(self) -> Path:
        """Written when the operator asks to stop: a job running several stages stops at the next gate."""
        return self.rundir.path / "stop-requested"

    def request_stop(self) -> None:
        """Stop at the next stage boundary (first Ctrl-C, SIGTERM), including inside a job of several stages
        (of the dry run this engine is running, if it is running one)."""
        self.stop_after_stage.set()
        with contextlib.suppress(OSError):
            (self._dry_engine or self).stop_file.write_text(utcnow() + "\n")

    @property
    def job_mark(self) -> str:
        """The mark every process of this run's jobs carries (``jobs.py``)."""
        return f"{self.rundir.run_id}:"

    # ------------------------------------------------------------------------------- lifecycle
    def run_state(self, state: dict[str, Any] | None = None) -> tuple[str, str | None]:
        """The run's lifecycle state and, when paused, why. A run recorded as running whose driver is
        gone is paused (interrupted)."""
        state = state if state is not None else self.rundir.read_state()
        life = state.get("lifecycle") or {}
        name = life.get("state")
        if name is None:
            return _legacy_state(state, self.rundir)
        if name == lifecycle.RUNNING and not _driver_alive(life):
            return lifecycle.PAUSED, lifecycle.INTERRUPTED
        return name, life.get("why")

    def next_commands(self, state: dict[str, Any] | None = None) -> list[str]:
        """What the operator runs next, ready to paste."""
        state = state if state is not None else self.rundir.read_state()
        name, _why = self.run_state(state)
        return lifecycle.next_commands(
            name,
            self.rundir.path,
            plan=self.rundir.plan_file,
            pid=(state.get("lifecycle") or {}).get("pid"),
            inventory=state.get("inventory"),
            manifest=state.get("manifest_file"),
            step=(state.get("lifecycle") or {}).get("step"),
        )

    def _move(self, state: dict[str, Any], to: str, why: str | None = None, **detail: Any) -> None:
        """Record a lifecycle transition in the state file and the audit trail."""
        previous = (state.get("lifecycle") or {}).get("state")
        state["lifecycle"] = {"state": to, "why": why, "since": utcnow(), **detail}
        if to == lifecycle.RUNNING:
            state["lifecycle"].update(pid=os.getpid(), host=socket.gethostname())
        self.rundir.write_state(state)
        self.rundir.audit("run.state", state=to, why=why, previous=previous)

    def _allow(self, command: str, state: dict[str, Any]) -> tuple[str, str | None]:
        """Raise Blocked, saying what to do instead, unless ``command`` may be given to the run now."""
        name, why = self.run_state(state)
        problem = lifecycle.refusal(
            command,
            name,
            self.rundir.path,
            plan=self.rundir.plan_file,
            pid=(state.get("lifecycle") or {}).get("pid"),
            why=why,
            inventory=state.get("inventory"),
            manifest=state.get("manifest_file"),
            step=(state.get("lifecycle") or {}).get("step"),
        )
        if problem:
            self.rundir.audit(f"{command}.refused", reason=problem, state=name)
            raise Blocked(problem)
        return name, why

    def check(self, command: str) -> None:
        """Raise Blocked, saying what to do instead, unless the run's state allows ``command``."""
        self._allow(command, self.rundir.read_state())

    def _no_live_jobs(self, command: str) -> None:
        """Refuse while any process of this run's jobs is alive (a driver killed with its guard).

        A command that ran a job returns only once the job's processes are gone (``jobs.settle``), so
        a process found here belongs to a job whose driver did not finish it."""
        alive = jobs.processes(self.job_mark)
        if alive:
            pids = " ".join(str(p.pid) for p in alive)
            problem = (
                f"a job of run {self.rundir.run_id} is still running ({jobs.describe(alive)}): wait for it to end, "
                f"or stop it with `kill -TERM {pids}`, then {command} again"
            )
            self.rundir.audit(f"{command}.refused", reason=problem)
            raise Blocked(problem)
        jobs.sweep(self.job_mark)

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
        limit: str | None = None,
        exclude: str | None = None,
        break_lock: bool = False,
        runbook: str | None = None,
    ) -> dict[str, Any]:
        """Run the assess stage and write plan.yml. Raises Blocked when the plan has blockers.

        With ``lock_hosts`` (a run that goes on to roll back) the hosts' locks are taken while they are
        assessed, so that the code stage needs no lock pass; a blocked plan gives them back.
        ``limit``/``exclude`` (host patterns) take application hosts out of the plan; they are listed in
        it, as a risk, and in the report.
        """
        raw, parsed = load_inputs(manifest_file, runbook)
        inventory = check_inventory(inventory)
        ledger = self.rundir.ledger
        try:
            env_lock = locks.lock_name(parsed, inventory)
            locks.check(self.lock_dir(), env_lock)
            if ledger is not None:
                ledger.check_lock(env_lock)
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
            "environment": environment_of(parsed, inventory),
            "manifest_file": str(Path(manifest_file).absolute()) if manifest_file else None,
            "runbook_file": str(Path(runbook).absolute()) if runbook else None,
            "stages": {},
            "exit_state": None,
        }
        self.rundir.audit(
            "run.created",
            runbook_file=state["runbook_file"],
            run_id=self.rundir.run_id,
            operator=operator,
            inventory=inventory,
            manifest_file=state["manifest_file"],
            limit=limit,
            exclude=exclude,
        )
        # Assessing: a driver that dies now leaves a run that can only be aborted (which frees its locks).
        self._move(state, lifecycle.RUNNING, stage="assess")
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
            "rollback_plan_limit": limit or "",
            "rollback_plan_exclude": exclude or "",
            # The driver reads the ledger itself (below); the role reads it only under plain ansible-playbook and AWX.
            "rollback_ledger": "",
        }
        if ledger is not None and parsed.get("app"):
            # Releases rolled back by anyone recording in the same ledger (another controller, an AWX job).
            extravars["rollback_ledger_known_bad"] = ledger.known_bad(parsed["app"])
        if not raw:
            # Neither a manifest nor a runbook: an emergency plan, from discovery and the last rollback of the
            # same application in the run history.
            extravars["rollback_last_rollback"] = last_rollback(self.rundir.path.parent, inventory, self.rundir.run_id)
        if break_lock:
            # Host locks of runs that cannot be working any more go at once (each one audited); a holder
            # this controller cannot check waits for the hour (rollback_break_stale_lock).
            extravars["rollback_break_lock_runs"] = self.breakable_runs()
            self.rundir.audit("lock.break_requested", breakable_runs=len(extravars["rollback_break_lock_runs"]))
        results: dict[str, Any] = {}
        self._job(["assess"], inventory, extravars, state, results, owed={"assess": []})
        result = results.get("assess") or {}
        plan = result.get("plan")
        if not plan:
            self._move(state, lifecycle.PAUSED, lifecycle.INTERRUPTED)
            why = result.get("summary") or self._last_line or "no output"
            raise RuntimeError(
                f"the assess stage ended without a plan ({why}); see {self.rundir.events_file('assess')}, "
                f"then end this run with `release-rollback abort {self.rundir.path} --reason failed` and plan again"
            )
        self.rundir.write_plan(plan)
        state["plan_hash"] = plan["hash"]
        self.rundir.audit(
            "plan.built",
            plan_hash=plan["hash"],
            from_version=plan.get("from_version"),
            to_version=plan.get("to_version"),
            scope=plan.get("scope"),
            excluded=plan.get("excluded"),
            blockers=plan.get("blockers"),
            label=plan.get("label"),
            manual_steps=[m["id"] for m in plan.get("manual_steps") or []],
        )
        if plan.get("blockers"):
            state["exit_state"] = stages.RUN_BLOCKED
            self._move(state, lifecycle.BLOCKED)
            self.rundir.audit("run.end", exit_state=stages.RUN_BLOCKED, reason=plan["blockers"][0])
            rep = self._write_report(plan, None, {"assess": result})
            followup.after_run(str(self.rundir.path), parsed, rep)
            self._write_report(plan, None, {"assess": result})
            self.rundir.write_state(state)
            raise Blocked("the plan is blocked: " + "; ".join(plan["blockers"]))
        self._move(state, lifecycle.PLANNED)
        return plan

    # --------------------------------------------------------------------------------- approve
    def approve(
        self,
        approver: str,
        reason: str | None = None,
        destructive: bool = False,
        break_glass: str | None = None,
        of_record: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Approve exactly the plan. ``of_record``: what else the approval of record holds, in approval.json
        and the audit trail (a standard-change policy's name and sha256, and the event that triggered it)."""
        state = self.rundir.read_state()
        plan = self.load_plan()
        if plan.get("blockers"):
            raise Blocked("the plan has blockers and cannot be approved: " + plan["blockers"][0])
        current, _why = self._allow("approve", state)
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
        approval.update(of_record or {})
        self.rundir.write_approval(approval)
        self.rundir.audit(
            "approval.recorded",
            approver=approval["approver"],
            reason=approval["reason"],
            plan_hash=approval["plan_hash"],
            destructive=approval["destructive"],
            break_glass=approval.get("break_glass"),
            **(of_record or {}),
        )
        if current in (lifecycle.PLANNED, lifecycle.APPROVED):
            self._move(state, lifecycle.APPROVED)
        return approval

    # ------------------------------------------------------------------------------ manual steps
    def waiting_step(self, state: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The manual step a run waiting for operator waits for (from the plan), or None."""
        state = state if state is not None else self.rundir.read_state()
        name, _why = self.run_state(state)
        if name != lifecycle.WAITING or not self.rundir.plan_file.is_file():
            return None
        return manuallib.find(self.load_plan(), (state.get("lifecycle") or {}).get("step"))

    def waiting_message(self, step: dict[str, Any]) -> str:
        """What a run waiting for operator says: the step, its instructions, and the commands to confirm it."""
        nexts = self.next_commands()
        return (
            f"run {self.rundir.run_id} is waiting for operator at manual step {step['id']} ({step['title']}, "
            f"owner {step['owner']}, {step['position']} {step['stage']}).\n"
            f"Instructions:\n{step['instructions']}\n"
            f"When it is done, confirm it: `{nexts[0]}`\n"
            f"If it could not be done: `{nexts[1]}`\n"
            f"Then: `{nexts[2]}`"
        )

    def confirm(self, step_id: str, by: str, note: str | None = None, failed: bool = False) -> dict[str, Any]:
        """Record that an operator did a manual step (or that it failed): audited, in ``manual.json``."""
        if not isinstance(by, str) or not by.strip() or len(by) > 200 or "\n" in by:
            raise BadInput("--by must be a one-line name, e.g. --by alice")
        if failed and not (note or "").strip():
            raise BadInput("a failed manual step needs --note saying what went wrong: add --note TEXT")
        if note is not None and len(note) > 2000:
            raise BadInput("--note must be at most 2000 characters")
        state = self.rundir.read_state()
        self._allow("confirm", state)
        plan = self.load_plan()
        step = manuallib.find(plan, step_id)
        if step is None:
            known = ", ".join(m["id"] for m in plan.get("manual_steps") or []) or "none"
            raise BadInput(
                f"the plan of run {self.rundir.run_id} has no manual step {step_id}: its manual steps are {known}"
            )
        records = self.rundir.read_manual()
        earlier = records.get(step_id)
        record = {
            "status": manuallib.FAILED if failed else manuallib.CONFIRMED,
            "by": by.strip(),
            "at": utcnow(),
            "note": (note or "").strip(),
            "title": step["title"],
            "plan_hash": plan.get("hash"),
        }
        if earlier:
            record["earlier"] = [*(earlier.get("earlier") or []), {k: v for k, v in earlier.items() if k != "earlier"}]
        records[step_id] = record
        self.rundir.write_manual(records)
        self.rundir.audit(
            "manual.failed" if failed else "manual.confirmed",
            step=step_id,
            title=step["title"],
            by=record["by"],
            note=record["note"],
            stage=step["stage"],
            position=step["position"],
        )
        results = stage_results(state)
        self._write_report(plan, self.rundir.read_approval(), results, audit=False)
        return record

    # ----------------------------------------------------------------------------------- abort
    def abort(self, reason: str) -> tuple[str, list[str]]:
        """End an unfinished run (planned, approved, paused or partially completed) as aborted. Returns the exit
        state and the hosts whose lock could not be given back."""
        state = self.rundir.read_state()
        self._allow("abort", state)
        self._no_live_jobs("abort")
        plan = self.load_plan() if self.rundir.plan_file.is_file() else {}
        results = stage_results(state)
        state.update(exit_state=stages.ABORTED, aborted=reason, aborted_by_command=True)
        self.rundir.audit("run.aborted", reason=reason, by=operator_name())
        kept = self.release_host_locks(plan, state, why="the run was aborted")
        self._move(state, lifecycle.ABORTED)
        self._write_report(plan, self.rundir.read_approval(), results, aborted=reason)
        self.rundir.audit("run.end", exit_state=stages.ABORTED)
        self.rundir.write_state(state)
        return stages.ABORTED, kept

    def release_host_locks(self, plan: dict[str, Any], state: dict[str, Any], why: str) -> list[str]:
        """Give back the host locks this run may hold (taken at assess, or kept by hosts that failed).

        Returns the hosts whose lock may still be held: those where giving it back failed or that could not
        be reached (every host of the plan when the job itself failed)."""
        assessing = "assess" in ((state.get("lifecycle") or {}).get("stage") or "") and not plan
        if not assessing and (
            not plan.get("hosts") or not (plan.get("locked") or "code_config" in state.get("stages", {}))
        ):
            return []
        extravars: dict[str, Any] = {"rollback_plan": plan or {"run_id": self.rundir.run_id, "hosts": {}}}
        if assessing:
            # Killed while it assessed: there is no plan, so every application host is asked.
            extravars["rollback_unlock_hosts"] = "app"
        run = run_stage(
            "unlock",
            state["inventory"],
            extravars,
            self.rundir.events_file("unlock"),
            threading.Event(),
            playbook=content.playbook("unlock"),
            mark=f"{self.job_mark}unlock",
        )
        kept = sorted(h for h, t in run.hosts.items() if t.failed or t.unreachable)
        if run.status != "successful" and not kept:
            kept = sorted(plan.get("hosts") or run.hosts)
        self.rundir.audit(
            "host_locks.released", reason=why, runner_status=run.status, hosts=sorted(run.hosts), kept=kept
        )
        return kept

    def load_plan(self) -> dict[str, Any]:
        try:
            return read_plan_file(self.rundir.plan_file)
        except PlanFileError as exc:
            raise BadInput(str(exc)) from None

    def approval_problem(self) -> str | None:
        return planlib.approval_problem(self.load_plan(), self.rundir.read_approval())

    # --------------------------------------------------------------------------------- dry run
    def dry_run(self) -> tuple[str, Engine]:
        """``run --check``: the plan's stages through the same engine and stage list as a real run, each
        job with ansible-playbook's ``--check --diff``, in ``<run>/dry-run/``. Needs no approval and does
        not consume the plan (it stays planned or approved, and can still be approved and run); a plan
        whose manifest or inventory changed since it was made is still refused. Returns the dry run's
        exit state and its engine (whose run directory holds its report)."""
        state = self.rundir.read_state()
        if not self.rundir.plan_file.is_file():
            raise Blocked(
                f"run {self.rundir.run_id} has no plan, so there is nothing to dry-run: end it with "
                f"`release-rollback abort {self.rundir.path} --reason interrupted`, then plan again"
            )
        name, why = self.run_state(state)
        if name not in (lifecycle.PLANNED, lifecycle.APPROVED):
            nexts = self.next_commands(state)
            if name == lifecycle.COMPLETED and state.get("inventory"):
                # A dry run of the same rollback needs a plan of its own.
                nexts.append(
                    lifecycle.next_commands(
                        lifecycle.ABORTED,
                        self.rundir.path,
                        inventory=state["inventory"],
                        manifest=state.get("manifest_file"),
                    )[-1]
                )
            problem = (
                f"run {self.rundir.run_id} is {lifecycle.describe(name, why)}: a dry run (--check) is for a plan "
                "that has not started; " + ("next: " + " or ".join(f"`{c}`" for c in nexts) if nexts else "")
            ).rstrip("; ")
            self.rundir.audit("dry_run.refused", reason=problem, state=name)
            raise Blocked(problem)
        plan = self.load_plan()
        if plan.get("hash") != planlib.plan_hash(plan):
            raise BadInput(
                "the plan was edited after it was built (its hash no longer matches): build a new plan "
                "with `release-rollback plan`"
            )
        if plan.get("blockers"):
            raise Blocked("the plan is blocked: " + "; ".join(plan["blockers"]))
        raw, parsed = load_inputs(state.get("manifest_file"), state.get("runbook_file"))
        problem = planlib.binding_problem(plan, planlib.manifest_digest(parsed))
        if problem:
            self.rundir.audit("dry_run.refused", reason=problem)
            raise Blocked(problem)
        approval = self.rundir.read_approval()
        if planlib.approval_problem(plan, approval):
            # No approval is needed to change nothing: the stages run as if approved, without the
            # destructive database steps (a real run without --destructive would be refused them too).
            approval = planlib.approval_record(plan, "dry run (check mode, no approval)", "run --check")
        earlier = self.rundir.path / RunDir.DRY_RUN
        if (earlier / "state.json").is_file():
            life = RunDir(earlier).read_state().get("lifecycle") or {}
            if life.get("state") == lifecycle.RUNNING and _driver_alive(life):
                problem = (
                    f"a dry run of run {self.rundir.run_id} is running now (driver pid {life.get('pid')}): wait for it "
                    f"to end, or stop it with `kill -TERM {life.get('pid')}`, then run --check again"
                )
                self.rundir.audit("dry_run.refused", reason=problem)
                raise Blocked(problem)
        dry = Engine(
            RunDir.dry_run_of(self.rundir), self.view, self.cancel, self.stop_after_stage, dry_run_of=self.rundir
        )
        self._dry_engine = dry
        window, now = plan.get("window"), utcnow()
        outside = bool(window) and not (window["start"] <= now <= window["end"])
        if outside:
            # A dry run may come before the window; a real run now would be refused (exit 3) unless overridden.
            self.view.info(
                f"note: it is {now}, outside the plan's change window {window['start']} - {window['end']}: a real run "
                "now would be refused unless given --override-window REASON"
            )
        self.rundir.audit(
            "dry_run.start",
            dry_run_dir=str(dry.rundir.path),
            plan_hash=plan["hash"],
            approver=approval["approver"],
            outside_window=outside,
        )
        dry_state = {
            "run_id": dry.rundir.run_id,
            "created": utcnow(),
            "dry_run_of": str(self.rundir.path),
            "operator": operator_name(),
            "inventory": state["inventory"],
            "manifest_file": state.get("manifest_file"),
            # What the plan was made from (the assess stage's result): the stages' gates read it.
            "stages": {k: v for k, v in (state.get("stages") or {}).items() if k == "assess"},
            "exit_state": None,
        }
        dry.rundir.write_state(dry_state)
        exit_state = stages.ABORTED
        try:
            exit_state = dry._execute(plan, approval, dry_state, raw, parsed, resume=False, retry_hosts=None)
        finally:
            self.rundir.audit(
                "dry_run.end",
                exit_state=exit_state,
                report=str(dry.rundir.path / "report.md"),
                note="a dry run changed nothing; the plan is as it was",
            )
        return exit_state, dry

    # --------------------------------------------------------------------------------- execute
    def execute(
        self,
        resume: bool = False,
        retry_hosts: str | None = None,
        break_lock: bool = False,
        override_window: str | None = None,
    ) -> str:
        """Run (or resume) the plan: every stage it still owes, in order, under the stage table.
        Returns the exit state. ``retry_hosts`` (``resume --limit``) narrows which failed hosts the
        code stage tries again; hosts it never attempted are always finished."""
        command = "resume" if resume else "run"
        state = self.rundir.read_state()
        if not self.rundir.plan_file.is_file():
            raise Blocked(
                f"run {self.rundir.run_id} has no plan (it stopped while it assessed the hosts): end it with "
                f"`release-rollback abort {self.rundir.path} --reason interrupted`, which gives its host locks back, "
                "then plan again"
            )
        self._allow(command, state)
        if resume:
            self._no_live_jobs("resume")
        plan = self.load_plan()
        approval = self.rundir.read_approval()
        problem = planlib.approval_problem(plan, approval)
        if problem:
            self.rundir.audit("run.refused", reason=problem)
            raise Blocked(problem)
        raw, parsed = load_inputs(state.get("manifest_file"), state.get("runbook_file"))
        problem = planlib.binding_problem(plan, planlib.manifest_digest(parsed))
        if problem:
            self.rundir.audit("run.refused", reason=problem)
            raise Blocked(problem)
        if resume:
            step = self.waiting_step(state)
            if step and not self.rundir.read_manual().get(step["id"]):
                self.rundir.audit("resume.refused", reason="waiting for operator", step=step["id"])
                raise Waiting(self.waiting_message(step))
        self._check_window(plan, override_window)
        lock = self._lock(plan, state, break_lock)
        try:
            # A copy of the run brought here from the ledger, after another copy went on: its plan ran there.
            ledger = self.rundir.ledger
            further = ledger.went_on_elsewhere(self.rundir.run_id, self.rundir.audit_file) if ledger else None
        except BaseException:
            lock.release()
            raise
        if further:
            lock.release()
            self.rundir.audit("run.refused", reason=further)
            raise Blocked(further)
        if not self.stop_after_stage.is_set():
            self.stop_file.unlink(missing_ok=True)
        try:
            return self._execute(plan, approval, state, raw, parsed, resume, retry_hosts)
        finally:
            self.stop_file.unlink(missing_ok=True)
            lock.release()

    def lock_dir(self) -> Path:
        return self.rundir.path.parent.parent / "locks"

    def _lock(self, plan: dict[str, Any], state: dict[str, Any], break_lock: bool) -> locks.Lock:
        name = locks.lock_name(plan, state.get("inventory"))
        try:
            lock = locks.acquire(
                self.lock_dir(),
                name,
                self.rundir.run_id,
                state.get("operator") or operator_name(),
                break_stale=break_lock,
                run_dir=str(self.rundir.path),
            )
        except locks.LockHeld as exc:
            self.rundir.audit("lock.refused", reason=str(exc))
            raise Blocked(str(exc)) from None
        if lock.taken_over:
            same = lock.taken_over.get("run_id") == self.rundir.run_id
            self.rundir.audit("lock.recovered" if same else "lock.broken", stale_holder=locks.describe(lock.taken_over))
        self.rundir.audit("lock.acquired", lock=name)
        ledger = self.rundir.ledger
        if ledger is None:
            return lock
        # The same lock in the ledger, which every controller recording there sees (a lease, renewed while
        # this run works): the lock file above only stops rollbacks started from this runs home.
        try:
            held = ledger.acquire_lock(
                name,
                self.rundir.run_id,
                state.get("operator") or operator_name(),
                run_dir=str(self.rundir.path),
                break_stale=break_lock,
            )
        except locks.LockHeld as exc:
            lock.release()
            self.rundir.audit("lock.refused", reason=str(exc), ledger=ledger.url)
            raise Blocked(str(exc)) from None
        except BaseException:
            lock.release()  # the ledger failed: this runs home's lock is given back too
            raise
        if held.taken_over:
            same = held.taken_over.get("run_id") == self.rundir.run_id
            self.rundir.audit(
                "lock.recovered" if same else "lock.broken",
                stale_holder=locks.describe(held.taken_over, held.holder["since"]),  # the ledger's clock
                why=held.taken_over.get("stale"),
                ledger=ledger.url,
            )
        self.rundir.audit("lock.acquired", lock=name, ledger=ledger.url)
        return locks.Locks([held, lock])

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
        self,
        plan: dict[str, Any],
        approval: dict[str, Any],
        state: dict[str, Any],
        raw: dict[str, Any],
        parsed: dict[str, Any],
        resume: bool,
        retry_hosts: str | None,
    ) -> str:
        for name, entry in state.get("stages", {}).items():
            if entry.get("status") == "running" and not entry.get("result"):
                self.rundir.audit(
                    "run.interrupted",
                    stage=name,
                    started=entry.get("started"),
                    note="the driver stopped during this stage; what it still owes runs again",
                )
        results = stage_results(state)
        manual = self.rundir.read_manual()
        if self.dry_run_of is not None:
            # A dry run changes nothing, so it goes past the manual steps as if each were done: it shows every
            # stage's diff. The real run waits for them.
            manual = {
                m["id"]: {"status": manuallib.CONFIRMED, "by": "dry run (assumed done)"}
                for m in plan.get("manual_steps") or []
            }
        self.rundir.audit(
            "run.resumed" if resume else "run.started",
            plan_hash=plan["hash"],
            approver=approval["approver"],
            retry_hosts=retry_hosts,
        )
        if self.dry_run_of is None:
            started = reportlib.build(plan, approval, results, run_id=self.rundir.run_id)
            followup.announce(str(self.rundir.path), parsed.get("notify"), notifylib.STARTED, started)
        state["exit_state"] = None
        state["aborted"] = None
        self._move(state, lifecycle.RUNNING, resumed=resume)
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
            "rollback_retry_hosts": retry_hosts or "",
            "rollback_stop_file": str(self.stop_file),
            # Who confirmed which manual step: a blocking one without a record stops the stages after it.
            "rollback_manual_confirmations": manual,
        }
        aborted = None
        waiting = None
        attempted: set[str] = set()
        while not aborted:
            todo = [n for n in JOB_STAGES if n not in attempted and not _done(n, results)]
            if not todo:
                break
            first = planlib.stage_gate(todo[0], results, plan, approval, manual=manual)
            if first.get("stop") and first.get("waiting"):
                # A blocking manual step comes first: nothing starts until an operator confirms it.
                waiting = manuallib.find(plan, first["waiting"])
                break
            if self.stop_after_stage.is_set() or self.cancel.is_set():
                aborted = f"stopped by the operator before stage {todo[0]}"
                break
            if not self._worth_a_job(todo, results, plan, approval, manual):
                # Nothing left can run (the stage table, the scope or the approval says so): record why
                # without starting ansible.
                for name in todo:
                    gate = planlib.stage_gate(name, results, plan, approval, manual=manual)
                    now = utcnow()
                    results[name] = self._stage_skipped(name, gate, planlib.gated_result(name, gate, now, now), state)
                break
            extravars = dict(base, rollback_prior_results=dict(results))
            owed = {n: self._owed_hosts(n, plan, results) for n in todo}
            job = self._job(todo if len(todo) > 1 else todo[:1], state["inventory"], extravars, state, results, owed)
            attempted.update(job)
            if self.cancel.is_set():
                aborted = f"interrupted by the operator during stage {self._unfinished or todo[0]}"
            elif self.stop_after_stage.is_set() and [n for n in todo if n not in attempted]:
                aborted = f"stopped by the operator before stage {next(n for n in todo if n not in attempted)}"
            elif not job:
                # The job ended before any stage began (it could not start): the first stage failed.
                name = todo[0]
                attempted.add(name)
                clock = self._stage_begin(name, state)
                result = _no_result(StageRun(stage=name), "failed", self._last_line, utcnow(), owed[name])
                results[name] = self._stage_finish(
                    name, state, result, clock, {"runner_status": "failed", "rc": None, "events": 0}
                )
                self._decide(name, result)
        if not aborted and waiting is None:
            # A blocking manual step after the last stage that ran (e.g. after validation).
            waiting = manuallib.waiting(plan, results, manual)
        if aborted:
            state["aborted"] = aborted
            self.rundir.audit("run.aborted", reason=aborted)
            if (
                "code_config" not in results
                and plan.get("locked")
                and not self._locks_given_back
                and self.dry_run_of is None
            ):
                self.release_host_locks(plan, state, why=f"the run was stopped before stage code_config: {aborted}")
        elif waiting is not None:
            # Not the end of the run: the report is written (below) without the report stage, which records the
            # release and runs once, when the run ends.
            self.rundir.audit(
                "manual.waiting",
                step=waiting["id"],
                title=waiting["title"],
                stage=waiting["stage"],
                owner=waiting["owner"],
            )
        elif "report" in stages.EXECUTION_STAGES:
            results["report"] = self._bookkeep("report", state, lambda: self._report_stage(plan, approval, results))
        # The report stage wrote the report; render it once more with the report stage's own result
        # (same renderer), or write it here when the stage could not.
        exit_state = stages.exit_state(results, aborted=bool(aborted))
        if waiting is not None and not aborted:
            exit_state = stages.WAITING
        elif exit_state == stages.COMPLETED and manuallib.gaps(plan, manual):
            # A manual step that failed (or was never confirmed) is a gap like a stage that did not end ok.
            exit_state = stages.PARTIAL
        halted = any(
            r.get("status") == stages.PENDING or stages.decide(n, r.get("status", stages.FAILED))["halt"]
            for n, r in results.items()
            if n in JOB_STAGES and r.get("status") not in (stages.BLOCKED, stages.STALE)
        )
        blocked = any(r.get("status") in (stages.BLOCKED, stages.STALE) for n, r in results.items() if n in JOB_STAGES)
        state["exit_state"] = exit_state
        to, why = lifecycle.after_execution(exit_state, halted, bool(aborted), blocked, waiting=waiting is not None)
        if waiting is not None and to == lifecycle.WAITING:
            self._move(state, to, why, step=waiting["id"])
        else:
            self._move(state, to, why)
        rep = self._write_report(plan, approval, results, aborted=aborted)
        self.rundir.audit("run.end", exit_state=exit_state, state=to, why=why)
        # Notifications and the RCA ticket never change the exit state: a channel or tracker that is
        # down is recorded (RCA pending) and retried with `release-rollback rca RUN_DIR`. A dry run
        # notifies nobody and opens no ticket.
        if self.dry_run_of is None and exit_state != stages.WAITING:
            followup.after_run(str(self.rundir.path), parsed, rep)
            self._write_report(plan, approval, results, aborted=aborted, audit=False)
        self.rundir.write_state(state)
        return exit_state

    def _worth_a_job(
        self, todo: list[str], results: dict[str, Any], plan: dict[str, Any], approval: Any, manual: dict[str, Any]
    ) -> bool:
        """Whether any stage still owed may run; a code stage that does not run but holds host locks taken
        at assess needs its job too (it gives them back)."""
        if "code_config" in todo and plan.get("locked"):
            return True
        return any(planlib.stage_gate(n, results, plan, approval, manual=manual)["run"] for n in todo)

    def _owed_hosts(self, name: str, plan: dict[str, Any], results: dict[str, Any]) -> list[str]:
        """The hosts a stage works on in this attempt (for a stage that ends without a result)."""
        if name == "code_config":
            return planlib.hosts_owed(plan, results.get(name))
        if name == "validate":
            return sorted(plan.get("hosts") or {})
        return []

    def _write_report(self, plan, approval, results, aborted=None, audit=True) -> dict[str, Any]:
        if self.dry_run_of is not None:
            # A dry run's report: the same writer as rollback_report's (dry_run), into <run>/dry-run/.
            rep, _paths = reportlib.write_dry_run_report(
                str(self.dry_run_of.path), plan, approval, results, aborted=bool(aborted), abort_reason=aborted
            )
            return rep
        rep = reportlib.build_for_run(
            str(self.rundir.path), plan, approval, results, aborted=bool(aborted), abort_reason=aborted
        )
        reportlib.write(str(self.rundir.path), rep)
        if audit and (results.get("report") or {}).get("status") != stages.OK:
            self.rundir.audit("report.written", exit_state=rep["exit_state"], by="driver")
        return rep

    # ------------------------------------------------------------------------------ one job
    def _job(
        self,
        names: list[str],
        inventory: str,
        extravars: dict[str, Any],
        state: dict[str, Any],
        results: dict[str, Any],
        owed: dict[str, list[str]],
    ) -> set[str]:
        """Run ``names`` as one ansible-runner job: ``playbooks/execute.yml`` for several stages, the
        stage's own playbook for one. Each stage is begun, ended, audited and written to the state file
        as it happens, from the job's events; a stage the job began but never published ends failed,
        with every host it owed ``unknown``. The one path every stage runs by, for run and resume.
        Returns the stages the job began or published."""
        clocks: dict[str, float] = {}
        seen: set[str] = set()
        stage_list = JOB_STAGES if len(names) > 1 else names
        mark = f"{self.job_mark}{'execute' if len(names) > 1 else names[0]}"

        def unrecorded(callback):
            """A run file that cannot be written (a full disk) stops the job at once: nothing may change
            that the run cannot record. The error is raised once the job is stopped."""

            def call(run: StageRun) -> None:
                try:
                    callback(run)
                    if run.write_error:
                        raise run.write_error
                except RecordError as exc:
                    if self._record_error is None:
                        self._record_error = exc
                        self.cancel.set()

            return call

        @unrecorded
        def on_change(run: StageRun) -> None:
            self.view.stage_progress(run)
            if run.stage == "assess":
                self._record_host_locks(run)

        @unrecorded
        def on_gate(run: StageRun) -> None:
            gate = run.gate or {}
            if gate.get("run") and not gate.get("stop") and not gate.get("done"):
                clocks[run.stage] = self._stage_begin(run.stage, state)
                seen.add(run.stage)

        @unrecorded
        def on_result(run: StageRun) -> None:
            gate, result = run.gate or {"run": True}, run.result or {}
            if run.stage == "code_config" and not gate.get("run") and extravars["rollback_plan"].get("locked"):
                # The job gave back the locks taken at assess (code_config.yml imports unlock.yml).
                self._locks_given_back = True
                self.rundir.audit(
                    "host_locks.released",
                    reason=f"stage code_config does not run: {gate.get('reason')}",
                    runner_status="published",
                    hosts=sorted(h for h, t in run.hosts.items() if h != "localhost" and t.ok),
                )
            if gate.get("stop") or gate.get("done"):
                # Stopped before this stage (resume runs it), or done by an earlier attempt: nothing new.
                return
            seen.add(run.stage)
            if not gate.get("run"):
                results[run.stage] = self._stage_skipped(run.stage, gate, result, state)
            else:
                clock = clocks.pop(run.stage, None) or self._stage_begin(run.stage, state)
                facts = {"runner_status": "published", "rc": None, "events": run.events, "job": mark}
                results[run.stage] = self._stage_finish(run.stage, state, result, clock, facts)
                self._decide(run.stage, result)

        state["job"] = {"mark": mark, "stages": list(names), "started": utcnow()}
        self.rundir.write_state(state)
        self.rundir.audit("job.start", mark=mark, stages=list(names))
        job = run_stages(
            stage_list,
            inventory,
            extravars,
            self.rundir.events_file,
            self.cancel,
            on_gate,
            on_result,
            on_change=on_change,
            mark=mark,
            check=self.dry_run_of is not None,
        )
        if self._record_error is not None:
            # The job was stopped: the run stays as last recorded (the stage running), paused (interrupted)
            # once this driver has exited; `resume` does what the stage still owes.
            raise self._record_error
        self._last_line = job.last
        for run in job.runs.values():
            self.diffs.extend(f"[{run.stage}]\n{text}" for text in run.diffs)
        state.pop("job", None)
        for name in seen:
            if name in state["stages"] and "job" in state["stages"][name]:
                state["stages"][name].update(runner_status=job.status, rc=job.rc)
        self.rundir.write_state(state)
        self.rundir.audit("job.end", mark=mark, runner_status=job.status, rc=job.rc)
        self._unfinished = next(iter(clocks), None)
        for name, clock in list(clocks.items()):
            # The stage began but published nothing: the job died (or was interrupted) inside it.
            run = job.runs[name]
            result = _no_result(run, job.status, job.last, state["stages"][name]["started"], owed.get(name, []))
            facts = {"runner_status": job.status, "rc": job.rc, "events": run.events, "job": mark}
            results[name] = self._stage_finish(name, state, result, clock, facts)
            if not self.cancel.is_set():
                self._decide(name, result)
        return seen

    def _record_host_locks(self, run: StageRun) -> None:
        """Every host lock this run takes while assessing is recorded in the run as soon as its event
        arrives (``host-locks.jsonl``), and a lock it broke (``--break-lock``) is audited with its holder."""
        for host, tally in run.hosts.items():
            if tally.locked and host not in self._locks_recorded:
                self._locks_recorded.add(host)
                self.rundir.note_host_lock(host, tally.locked, broke=tally.lock_broken)
            # A plan made for later takes no lock, but --break-lock still replaces a gone or final run's: audited
            # either way.
            if tally.lock_broken and host not in self._locks_broken:
                self._locks_broken.add(host)
                self.rundir.audit("host_lock.broken", host=host, app_root=tally.locked, holder=tally.lock_broken)

    def breakable_runs(self) -> list[str]:
        """The runs under this runs root that cannot be working any more (their driver is gone on this
        machine, or the run is final): ``--break-lock`` replaces their host locks at once."""
        out = []
        for run_dir in sorted(self.rundir.path.parent.iterdir()):
            if run_dir == self.rundir.path or not (run_dir / "state.json").is_file():
                continue
            try:
                name, _why = Engine(RunDir(run_dir), self.view).run_state()
            except (ValueError, OSError):
                continue
            if name != lifecycle.RUNNING:
                out.append(run_dir.name)
        return out

    _last_line: str = ""
    _dry_engine: Engine | None = None  # the dry run this engine is running (run --check)
    diffs: list[str] = field(default_factory=list)  # what --diff printed, in memory only (a dry run's)
    _unfinished: str | None = None  # the stage the last job began and never published
    _locks_given_back: bool = False  # a job's code stage gave back the host locks taken at assess
    _record_error: OSError | None = None  # a run file could not be written during the job (a full disk)
    _locks_recorded: set[str] = field(default_factory=set)  # hosts whose lock this run recorded taking
    _locks_broken: set[str] = field(default_factory=set)  # hosts where this run audited replacing another's lock

    def _release_record_file(self, plan: dict[str, Any]) -> str:
        """The release record file the report writes: the plan's, or the one beside this runs directory.

        The plan's default (``<its run directory>/../../releases.jsonl``) follows the run directory when the
        run was brought to another controller (from the ledger); a file the plan names otherwise is kept."""
        here = str(self.rundir.path.parent.parent / "releases.jsonl")
        record = plan.get("release_record")
        suffix = "/../../releases.jsonl"
        if not record or (record.endswith(suffix) and Path(record[: -len(suffix)]).name == self.rundir.run_id):
            return here
        return record

    def _report_stage(self, plan: dict[str, Any], approval: dict[str, Any], results: dict[str, Any]):
        """The report stage on the controller: report files, release record, audit entry."""
        started = utcnow()
        record = self._release_record_file(plan)
        try:
            if self.dry_run_of is not None:
                # The dry run's own report, in its directory: no release record, no audit of the run's.
                rep, paths = reportlib.write_dry_run_report(str(self.dry_run_of.path), plan, approval, results)
            else:
                rep, paths, _recorded = reportlib.write_run_report(
                    str(self.rundir.path), plan, approval, results, record
                )
                self.rundir.report_to_ledger(rep)
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
        attempts = _attempts(state["stages"].get(name))
        state["stages"][name] = {"started": utcnow(), "status": "running"}
        if attempts:
            state["stages"][name]["attempts"] = attempts
        state["current_stage"] = name
        self.rundir.write_state(state)
        self.rundir.audit("stage.start", stage=name)
        self.view.stage_start(name)
        return time.monotonic()

    def _stage_finish(
        self, name: str, state: dict[str, Any], result: dict[str, Any], clock: float, facts: dict[str, Any]
    ) -> dict[str, Any]:
        if self.dry_run_of is not None:
            result = dict(result, dry_run=True)
        attempts = (state["stages"].get(name) or {}).get("attempts")
        if attempts:
            # Every earlier attempt stays in the result beside this one: the report shows them all.
            result = dict(result, attempts=attempts)
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
        if self.dry_run_of is not None:
            result = dict(result, dry_run=True)
        attempts = _attempts(state["stages"].get(name))
        state["stages"][name] = {"result": dict(result, attempts=attempts) if attempts else result}
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


def _attempts(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A stage's earlier attempts, the one in ``entry`` (its state file entry) last: a result it published,
    or an attempt interrupted before it published one (the driver died in it)."""
    if not entry:
        return []
    earlier = list((entry.get("result") or {}).get("attempts") or entry.get("attempts") or [])
    if entry.get("result"):
        last = {k: v for k, v in entry["result"].items() if k != "attempts"}
    elif entry.get("status") == "running":
        last = {
            "status": "interrupted",
            "summary": "the driver stopped during this stage before it published a result; what it did is "
            "in the run's records and the stage's events",
            "started": entry.get("started"),
            "ended": None,
        }
    else:
        return earlier
    return [*earlier, last]


def _done(name: str, results: dict[str, Any]) -> bool:
    """A stage this execution does not need to attempt again: finished, and not a validation that a
    later change made stale."""
    res = results.get(name)
    if not res or not planlib.finished(res):
        return False
    return not (name == "validate" and stages.stale_validation(results))


def _driver_alive(life: dict[str, Any]) -> bool:
    """Whether the driver that recorded a run as running is still alive (on this machine)."""
    if life.get("host") not in (None, socket.gethostname()):
        return True  # another controller's process: it cannot be checked from here
    return bool(life.get("pid")) and locks.alive(int(life["pid"]))


def _legacy_state(state: dict[str, Any], rundir: RunDir) -> tuple[str, str | None]:
    """The lifecycle state of a run recorded before runs kept one."""
    exit_state = state.get("exit_state")
    if exit_state == stages.ABORTED:
        return lifecycle.ABORTED, None
    if exit_state == stages.COMPLETED:
        return lifecycle.COMPLETED, None
    if exit_state == stages.PARTIAL:
        return lifecycle.PARTIAL, None
    if exit_state == stages.RUN_BLOCKED and not any(k != "assess" for k in state.get("stages", {})):
        return lifecycle.BLOCKED, None
    if not rundir.plan_file.is_file():
        return lifecycle.PAUSED, lifecycle.INTERRUPTED
    if not state.get("stages") or set(state["stages"]) == {"assess"}:
        return (lifecycle.APPROVED if rundir.read_approval() else lifecycle.PLANNED), None
    return lifecycle.PAUSED, lifecycle.INTERRUPTED


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


def _no_result(run: StageRun, status: str, last_error: str, started: str, owed: list[str]) -> dict[str, Any]:
    """The result of a stage whose playbook ended (or was killed) before it published one.

    Every host the stage owed is ``unknown``: nothing read it back, so nothing says it is ok.
    """
    why = "cancelled" if status == "canceled" else (run.last_error or last_error or f"ansible-runner ended {status}")
    task = next((t.task for h, t in run.hosts.items() if h != "localhost" and t.task), "") or run.task
    hosts = {}
    for host in owed:
        tally = run.hosts.get(host)
        if tally and tally.read_back:
            # The host's module read its state back before the stage ended: that is what it runs.
            hosts[host] = dict(tally.read_back, msg=f"{tally.read_back.get('msg')} (read back before the stage ended)")
            continue
        failed = bool(tally and (tally.failed or tally.unreachable))
        hosts[host] = {
            "status": stages.FAILED if failed else stages.UNKNOWN,
            "changed": None,
            # Not read back: which release it runs is not known (resume reads it again).
            "release": "unknown",
            "msg": (
                "failed before the stage ended: " + (run.last_error or why)
                if failed
                else f"not read back: the stage ended ({why}) before this host reported"
                + (f" (last task: {task})" if task else "")
            ),
        }
    return {
        "stage": run.stage,
        "status": stages.FAILED,
        "changed": None,
        "summary": f"the stage playbook ended without a result: {why}",
        "hosts": hosts,
        "reached": True,
        "started": started,
        "ended": utcnow(),
    }
