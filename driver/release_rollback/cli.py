"""The ``release-rollback`` command line: plan, approve, run, resume, status, report, audit, demo.

Exit codes: 0 completed, 1 unexpected error, 2 bad input (nothing changed), 3 blocked,
4 aborted, 5 partially completed, 6 waiting for operator (a blocking manual step: confirm, then resume).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from . import __version__, content, jobs
from .engine import (
    BadInput,
    Blocked,
    Engine,
    Waiting,
    check_inventory,
    load_inputs,
    operator_name,
    parse_window,
    stage_results,
)
from .rundir import RecordError, RunDir, RunFileDamaged, RunsHomeError, record_error_fix
from .view import make_view, print_summary

stages = content.module_utils("stages")
reportlib = content.module_utils("report")
auditlib = content.module_utils("audit")
followuplib = content.module_utils("followup")
lifecycle = content.module_utils("lifecycle")
manifestlib = content.module_utils("manifest")
manuallib = content.module_utils("manual")

SCOPES = ("feature_flags", "code_config", "database", "infrastructure", "validate")


def runs_home(start: Path | None = None) -> Path:
    """Where runs go when neither ``--runs-dir`` nor ``$RELEASE_ROLLBACK_RUNS_DIR`` says.

    The project's ``.rollback/runs``: the nearest directory upward from ``start`` (the working
    directory) that has a ``.rollback`` directory or is a git checkout (``.git``), so every
    directory of one checkout shares its runs and release record. Outside any project,
    ``$XDG_STATE_HOME/release-rollback/runs`` (``~/.local/state/release-rollback/runs``).
    """
    here = (start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        if (directory / ".rollback").is_dir() or (directory / ".git").exists():
            return directory / ".rollback" / "runs"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "release-rollback" / "runs"


def runs_root(ctx: click.Context) -> Path:
    """``--runs-dir`` (on the command or before it), else ``$RELEASE_ROLLBACK_RUNS_DIR``, else ``runs_home``."""
    given = (ctx.find_root().obj or {}).get("runs_dir") or os.environ.get("RELEASE_ROLLBACK_RUNS_DIR")
    return Path(given).absolute() if given else runs_home()


def _set_runs_dir(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_root().ensure_object(dict)["runs_dir"] = value


def runs_dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--runs-dir`` on a subcommand too (``release-rollback status --runs-dir X``)."""
    return click.option(
        "--runs-dir",
        type=click.Path(file_okay=False),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_set_runs_dir,
        help="Where run directories are (default: see `release-rollback --help`).",
    )(func)


# A run id as the ledger keeps it, and safe as one directory name under the runs directory.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class RunArg(click.ParamType):
    """A run given as its directory, a file inside it (the plan), or its run id under the runs directory.

    A run id that is not under the runs directory but is in the ledger (another controller's run, an AWX
    job's) is written there from the ledger first: the run directory is an export of the ledger."""

    name = "run"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, Path) or os.path.exists(value):
            return str(value)
        root = runs_root(ctx) if ctx is not None else runs_home()
        candidate = root / str(value)
        if os.sep not in str(value) and (candidate / "state.json").is_file():
            return str(candidate)
        if os.sep not in str(value) and not os.path.lexists(candidate) and RUN_ID_RE.match(str(value)):
            try:
                back = _from_ledger(root, str(value))
            except Exception as exc:
                self.fail(
                    f"{value} is not a run under {root}, and {_ledger_module().unreachable(exc)}",
                    param,
                    ctx,
                )
            if back is not None:
                return str(back)
        self.fail(f"{value} is neither a run directory nor the id of a run under {root} or in the ledger", param, ctx)


RUN = RunArg()


def _from_ledger(root: Path, run_id: str) -> Path | None:
    """``run_id`` written under ``root`` from the ledger, if a ledger is set up (given, or the default file
    there) and holds it, else None."""
    ledgers = _ledger_module()
    if not (os.environ.get(ledgers.ENV) or (root.absolute().parent / "ledger.db").is_file()):
        return None
    ledger = ledger_of(root)
    back = ledgers.bring_back(ledger, root, run_id)
    if back is not None:
        click.echo(
            f"release-rollback: run {run_id} is not under {root}: written there from the ledger {ledger.url}", err=True
        )
    return back


def _ledger_module():
    """The ledger module, loaded (with SQLAlchemy) only by the commands that use it."""
    from . import ledger

    return ledger


def ledger_of(root: Path):
    """The ledger of runs under ``root``."""
    return _ledger_module().open_ledger(root)


def fail(msg: str, code: int, json_mode: bool = False, **extra: Any) -> None:
    """One sentence on stderr and exit ``code``; with ``--json`` the same as JSON on stdout too."""
    if json_mode:
        click.echo(json.dumps({"error": msg, "exit_code": code, **extra}, indent=2, default=str))
    click.echo(f"release-rollback: {msg}", err=True)
    sys.exit(code)


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the engine's exceptions into one sentence and the exit code of DESIGN.md."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("json_mode"))
        try:
            return func(*args, **kwargs)
        except BadInput as exc:
            fail(str(exc), stages.BAD_INPUT_EXIT, as_json, exit_state="bad input")
        except Waiting as exc:
            fail(str(exc), stages.EXIT_CODES[stages.WAITING], as_json, exit_state=stages.WAITING)
        except Blocked as exc:
            fail(
                f"blocked: {exc}. Nothing was changed.",
                stages.EXIT_CODES[stages.RUN_BLOCKED],
                as_json,
                exit_state=stages.RUN_BLOCKED,
            )
        except RecordError as exc:
            fail(record_error_fix(exc), stages.UNEXPECTED_EXIT, as_json, exit_state="unexpected error")
        except (RunFileDamaged, RunsHomeError, FileExistsError) as exc:
            fail(str(exc), stages.BAD_INPUT_EXIT, as_json, exit_state="bad input")
        except FileNotFoundError as exc:
            fail(str(exc), stages.BAD_INPUT_EXIT, as_json, exit_state="bad input")
        except RuntimeError as exc:
            fail(str(exc), stages.UNEXPECTED_EXIT, as_json, exit_state="unexpected error")
        except Exception as exc:
            if not type(exc).__module__.startswith("sqlalchemy"):
                raise
            from . import ledger as ledgerlib

            fail(ledgerlib.unreachable(exc), stages.UNEXPECTED_EXIT, as_json, exit_state="unexpected error")
        except KeyboardInterrupt:
            fail(
                "interrupted by the operator (Ctrl-C or SIGTERM) before it ended",
                stages.EXIT_CODES[stages.ABORTED],
                as_json,
                exit_state=stages.ABORTED,
            )

    return wrapper


def _terminate_like_ctrl_c(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class Interrupts:
    """Ctrl-C or SIGTERM: stop at the next stage boundary; a second one explains, a third interrupts."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.count = 0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        stage = self.engine.current_stage or "the current step"
        if self.count == 1:
            self.engine.request_stop()
            click.echo(
                f"\nStopping after {stage} finishes (the next safe boundary). "
                "Press Ctrl-C again to see what interrupting it now would do.",
                err=True,
            )
        elif self.count == 2:
            click.echo(
                f"\nInterrupting now kills ansible-playbook in the middle of {stage}: hosts may be left "
                "mid-restart (each release switch itself is atomic). Press Ctrl-C once more to do it.",
                err=True,
            )
        else:
            self.engine.cancel.set()


def print_plan(plan: dict[str, Any]) -> None:
    label = plan.get("label") or "plan"
    click.echo(
        f"Rollback {label} {plan.get('run_id')} for {plan.get('app')}: "
        f"{plan.get('from_version')} -> {plan.get('to_version')}"
    )
    if label == "emergency plan":
        click.echo("  EMERGENCY PLAN: no manifest and no runbook; built from discovery and the run history")
    if plan.get("runbook"):
        click.echo(f"  runbook: {plan['runbook'].get('name')} ({plan['runbook'].get('file')})")
    if plan.get("layers"):
        click.echo("  layers:  " + ", ".join(f"{k} {v}" for k, v in plan["layers"].items()))
    click.echo(f"  reason:  {plan.get('reason')}")
    click.echo(f"  scope:   {', '.join(plan.get('scope') or []) or 'nothing'}")
    click.echo(f"  hash:    {plan.get('hash')}")
    click.echo("  hosts:")
    for host, info in sorted((plan.get("hosts") or {}).items()):
        click.echo(
            f"    {host:<20} live {info.get('live')}  ->  {info.get('target')}  ({info.get('layout')}, "
            f"{info.get('link_style')} link)"
            if not info.get("error")
            else f"    {host:<20} {info['error']}"
        )
    click.echo("  steps:")
    for i, step in enumerate(plan.get("steps") or [], 1):
        source = f"  (from {step['source']})" if step.get("source") else ""
        click.echo(f"    {i}. [{step['stage']}] {step['action']}{source}")
        if step.get("kind") == "manual":
            click.echo(f"         {step['position']} the {step['stage']} stage's automated work; id {step['manual']}")
            for line in str(step.get("instructions") or "").splitlines():
                click.echo(f"         | {line}")
        for flag in step.get("flags") or []:
            click.echo(f"         flag {flag['name']} ({flag['backend']}): now {flag['state']}")
    for host, why in sorted((plan.get("excluded") or {}).items()):
        click.echo(f"    {host:<20} left out ({why})")
    for risk in plan.get("risks") or []:
        click.echo(f"  risk:    {risk}")
    for blocker in plan.get("blockers") or []:
        click.echo(f"  BLOCKER: {blocker}")
    if plan.get("document_for_future"):
        click.echo(f"  {plan['document_for_future']}")


def finish(engine: Engine, exit_state: str, json_mode: bool) -> None:
    rundir = engine.rundir
    report_json = rundir.path / "report.json"
    rep = json.loads(report_json.read_text()) if report_json.is_file() else {}
    run_state, why = engine.run_state()
    commands = engine.next_commands()
    if json_mode:
        click.echo(
            json.dumps(
                {
                    "run_id": rundir.run_id,
                    "run_dir": str(rundir.path),
                    "exit_state": exit_state,
                    "run_state": lifecycle.describe(run_state, why),
                    "next": commands,
                    "exit_code": stages.EXIT_CODES[exit_state],
                    "report": str(rundir.path / "report.md"),
                    "stages": {s["stage"]: s["status"] for s in rep.get("steps", [])},
                    "known_limitations": rep.get("known_limitations", []),
                    "report_html": str(rundir.path / "report.html"),
                    "signoff": rep.get("signoff_status"),
                    "rca": rep.get("rca"),
                    # The report model's facts: what each stage did, each host, and the report's sections.
                    "steps": [
                        {k: s.get(k) for k in ("stage", "status", "duration_s", "done")} for s in rep.get("steps", [])
                    ],
                    "hosts": rep.get("hosts", []),
                    "manual_steps": rep.get("manual_steps", []),
                    "waiting_for": rep.get("waiting_for"),
                    "sections": rep.get("sections", []),
                },
                indent=2,
            )
        )
    else:
        print_summary(rep or {"exit_state": exit_state})
        step = engine.waiting_step() if exit_state == stages.WAITING else None
        if step:
            click.echo("\n" + engine.waiting_message(step))
        if (rep.get("rca") or {}).get("status") in ("filed", "pending"):
            click.echo(f"  RCA: {reportlib.rca_line(rep['rca'])}")
        click.echo(f"Report: {rundir.path / 'report.md'} (and report.html)")
    sys.exit(stages.EXIT_CODES[exit_state])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="release-rollback")
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where run directories go; also an option of every subcommand. Default: $RELEASE_ROLLBACK_RUNS_DIR, "
    "else .rollback/runs in the nearest directory upward that has .rollback/ or .git, else "
    "$XDG_STATE_HOME/release-rollback/runs.",
)
@click.option(
    "--ledger",
    "ledger_url",
    default=None,
    metavar="URL",
    help="The ledger of runs, release record, locks and audit trail, shared by every controller: "
    "postgresql://USER@HOST/DB (password in PGPASSWORD or ~/.pgpass) or sqlite:////path/ledger.db. "
    "Default: $RELEASE_ROLLBACK_LEDGER, else ledger.db next to the runs directory.",
)
@click.pass_context
def main(ctx: click.Context, runs_dir: str | None, ledger_url: str | None) -> None:
    """Roll a whole release back to the previous known-good release."""
    # SIGTERM is Ctrl-C for every command; run, resume and plan refine both (``Interrupts``).
    signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    ctx.ensure_object(dict)
    ctx.obj["runs_dir"] = runs_dir
    if ledger_url:
        from . import ledger as ledgerlib

        try:
            # A password in the URL goes to PGPASSWORD of this process, never into a file or a message.
            ledgerlib.configure(ledger_url)
        except ledgerlib.LedgerError as exc:
            fail(str(exc), stages.BAD_INPUT_EXIT)


def check_input(
    inventory: str, manifest: str | None, target: str | None, window: str | None, runbook: str | None = None
) -> None:
    """Check what a plan is made from before anything is written: bad input leaves no run directory."""
    load_inputs(manifest, runbook)
    check_inventory(inventory)
    if target is not None:
        try:
            manifestlib.check_version(target, "--target")
        except manifestlib.ManifestError as exc:
            raise BadInput(str(exc)) from None
    if window:
        parse_window(window)


def _plan_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--exclude",
        default=None,
        metavar="HOSTS",
        help="Leave these application hosts out of the plan (ansible host patterns); recorded as a risk.",
    )(func)
    func = click.option(
        "--limit",
        default=None,
        metavar="HOSTS",
        help="Plan only these application hosts (ansible host patterns); the others are recorded as left out.",
    )(func)
    func = click.option(
        "--separation-of-duties",
        is_flag=True,
        help="The approver must be someone other than the planner (break-glass self-approval is flagged).",
    )(func)
    func = click.option(
        "--window", default=None, help="Change window START/END (ISO 8601); outside it, running needs an override."
    )(func)
    func = click.option(
        "--scope",
        multiple=True,
        type=click.Choice(SCOPES),
        help="Limit the rollback to these stages (repeat the option).",
    )(func)
    func = click.option(
        "--runbook",
        type=click.Path(dir_okay=False),
        default=None,
        help="The application's runbook (YAML): its standard automated and manual steps per layer, merged with "
        "the manifest (docs/runbooks.md).",
    )(func)
    func = click.option("--target", default=None, help="Roll back to this release instead of the previous one.")(func)
    func = click.option(
        "-m",
        "--manifest",
        type=click.Path(dir_okay=False),
        default=None,
        help="The bad release's manifest (YAML).",
    )(func)
    return func


@main.command()
@runs_dir_option
@click.option("-i", "--inventory", required=True, help="Ansible inventory of the fleet.")
@_plan_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write the plan here.")
@click.option(
    "--break-lock",
    is_flag=True,
    help="Break host locks of runs whose driver is gone or that are final (audited).",
)
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handles_errors
def plan(
    ctx,
    inventory,
    manifest,
    target,
    runbook,
    scope,
    window,
    separation_of_duties,
    limit,
    exclude,
    output,
    break_lock,
    json_mode,
):
    """Assess the fleet and build the rollback plan (changes nothing)."""
    check_input(inventory, manifest, target, window, runbook)
    view = make_view(json_mode)
    engine = Engine(RunDir.create(runs_root(ctx)), view)
    try:
        with Interrupts(engine):
            result = engine.plan(
                inventory,
                manifest,
                target,
                list(scope),
                window=window,
                separation_of_duties=separation_of_duties,
                limit=limit,
                exclude=exclude,
                break_lock=break_lock,
                runbook=runbook,
            )
    except Blocked as exc:
        if not json_mode:
            raise
        blocked = engine.rundir.read_plan() if engine.rundir.plan_file.is_file() else None
        fail(
            f"blocked: {exc}. Nothing was changed.",
            stages.EXIT_CODES[stages.RUN_BLOCKED],
            True,
            exit_state=stages.RUN_BLOCKED,
            run_dir=str(engine.rundir.path),
            plan=blocked,
        )
    finally:
        view.close()
    if output:
        Path(output).write_text(engine.rundir.plan_file.read_text())
    if json_mode:
        click.echo(json.dumps({"run_dir": str(engine.rundir.path), "plan": result}, indent=2, default=str))
    else:
        print_plan(result)
        click.echo(f"\nPlan written to {engine.rundir.plan_file}")
        for command in engine.next_commands():
            click.echo(f"  next: {command}")


@main.command()
@runs_dir_option
@click.argument("plan_file", type=RUN)
@click.option("--approver", required=True, help="Who approves (recorded in the audit trail).")
@click.option("--reason", default="", help="Why it is approved.")
@click.option("--destructive", is_flag=True, help="Also approve destructive or irreversible steps.")
@click.option(
    "--break-glass",
    default=None,
    metavar="REASON",
    help="Self-approve a plan that requires separation of duties (flagged in the report).",
)
@handles_errors
def approve(plan_file, approver, reason, destructive, break_glass):
    """Approve a plan; the approval binds to the plan's content hash."""
    engine = Engine(RunDir.find(plan_file), make_view(False))
    approval = engine.approve(approver, reason, destructive, break_glass=break_glass)
    if approval.get("break_glass"):
        click.echo(f"BREAK-GLASS self-approval recorded: {approval['break_glass']}")
    click.echo(f"Approved by {approval['approver']} at {approval['time']} for plan {approval['plan_hash']}")


@main.command()
@runs_dir_option
@click.argument("plan_file", required=False, type=RUN)
@click.option("-i", "--inventory", default=None, help="Plan first against this inventory.")
@_plan_options
@click.option("--approver", default=None, help="Approve as NAME (with --yes, or at the prompt).")
@click.option("--reason", default="", help="Why it is approved.")
@click.option("--yes", is_flag=True, help="Approve without a prompt (needs --approver).")
@click.option("--break-lock", is_flag=True, help="Break a stale lock left by a dead rollback (audited).")
@click.option("--override-window", default=None, metavar="REASON", help="Run outside the change window (audited).")
@click.option(
    "--check",
    is_flag=True,
    help="Dry run: every stage with ansible-playbook --check --diff; changes nothing, needs no approval, "
    "and leaves the plan to be approved and run.",
)
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handles_errors
def run(
    ctx,
    plan_file,
    inventory,
    manifest,
    target,
    runbook,
    scope,
    window,
    separation_of_duties,
    limit,
    exclude,
    approver,
    reason,
    yes,
    break_lock,
    override_window,
    check,
    json_mode,
):
    """Run an approved plan (or plan, approve and run in one go); with --check, a dry run of it."""
    if bool(plan_file) == bool(inventory):
        raise BadInput("give either a PLAN file or -i INVENTORY (to plan first), not both or neither")
    if plan_file and (limit or exclude):
        raise BadInput(
            "a plan covers the hosts it was made for: plan again with --limit/--exclude, or use "
            "`release-rollback resume RUN_DIR --limit HOSTS` to retry failed hosts of a paused run"
        )
    if check:
        given = [
            name
            for name, value in (
                ("--approver", approver),
                ("--yes", yes),
                ("--break-lock", break_lock),
                ("--override-window", override_window),
            )
            if value
        ]
        if given:
            raise BadInput(
                f"--check is a dry run that changes nothing and needs no approval, so it does not take "
                f"{', '.join(given)}: drop {'it' if len(given) == 1 else 'them'}, "
                "or leave out --check to roll back for real"
            )
        dry_run(
            ctx, plan_file, inventory, manifest, target, scope, window, separation_of_duties, limit, exclude, json_mode,
            runbook=runbook,
        )  # fmt: skip
        return
    view = make_view(json_mode)
    try:
        # A run planned here goes on to roll back: its hosts are locked while they are assessed.
        engine = run_engine(
            ctx, view, plan_file, inventory, manifest, target, scope, window, separation_of_duties, limit, exclude,
            lock_hosts=True, break_lock=break_lock, runbook=runbook,
        )  # fmt: skip
        # A plan executes at most once: a run that already started or ended is refused first (a planned
        # one is approved below, at the prompt or with --approver --yes).
        if plan_file and engine.run_state()[0] != lifecycle.PLANNED:
            engine.check("run")
        problem = engine.approval_problem()
        try:
            if problem:
                plan_doc = engine.load_plan()
                if yes and approver:
                    engine.approve(approver, reason or "approved with --yes")
                elif sys.stdin.isatty() and not json_mode:
                    view.close()
                    print_plan(plan_doc)
                    name = click.prompt(
                        "Approve this plan? Type the approver's name (empty to refuse)",
                        default=approver or "",
                        show_default=bool(approver),
                    )
                    if not name.strip():
                        engine.rundir.audit("approval.refused", reason="refused at the prompt")
                        raise Blocked("the plan was not approved at the prompt")
                    engine.approve(name, reason or "approved at the prompt")
                    view = make_view(json_mode)
                    engine.view = view
                else:
                    engine.rundir.audit("run.refused", reason=problem)
                    raise Blocked(
                        f"{problem} (no terminal to ask on; the plan is {engine.rundir.plan_file}: approve it with "
                        f'`release-rollback approve {engine.rundir.plan_file} --approver "$USER"`, or pass '
                        "--approver NAME --yes)"
                    )
        except BaseException:
            # Not approved (refused, no terminal, Ctrl-C at the prompt): nothing was rolled back, so the
            # host locks this run took while assessing are given back.
            engine.release_host_locks(engine.load_plan(), engine.rundir.read_state(), why="the plan was not approved")
            raise
        with Interrupts(engine):
            try:
                exit_state = engine.execute(break_lock=break_lock, override_window=override_window)
            except (Blocked, BadInput):
                # Refused before any stage ran (change window, controller lock): give the host locks back.
                if set(engine.rundir.read_state().get("stages", {})) <= {"assess"}:
                    engine.release_host_locks(
                        engine.load_plan(), engine.rundir.read_state(), why="the run was refused before it started"
                    )
                raise
            exit_state, view = offer_confirmation(engine, view, exit_state, json_mode, override_window=override_window)
    finally:
        view.close()
    finish(engine, exit_state, json_mode)


def offer_confirmation(engine: Engine, view, exit_state: str, json_mode: bool, **resume_args: Any):
    """On a terminal, a run waiting for operator asks for the manual step's confirmation in place, then goes
    on (as ``confirm`` and ``resume`` would); an empty answer leaves it waiting. Returns the exit state and
    the view in use."""
    while exit_state == stages.WAITING and sys.stdin.isatty() and not json_mode:
        step = engine.waiting_step()
        if step is None:
            break
        view.close()
        click.echo(engine.waiting_message(step))
        name = click.prompt(
            f"Manual step {step['id']}: type your name to record it (empty to leave the run waiting)",
            default="",
            show_default=False,
        )
        if not name.strip():
            break
        done = click.confirm(f"Was {step['title']!r} done successfully?", default=True)
        note = click.prompt("A note (what was done, or what went wrong)", default="", show_default=False)
        engine.confirm(step["id"], name, note or None, failed=not done)
        view = make_view(json_mode)
        engine.view = view
        exit_state = engine.execute(resume=True, **resume_args)
    return exit_state, view


def run_engine(
    ctx, view, plan_file, inventory, manifest, target, scope, window, separation_of_duties, limit, exclude,
    lock_hosts=False, break_lock=False, runbook=None,
) -> Engine:  # fmt: skip
    """The run that ``run`` works on: the given plan's, or a new one planned here from ``-i INVENTORY``
    (Ctrl-C or SIGTERM while assessing stops before anything changes)."""
    if plan_file:
        return Engine(RunDir.find(plan_file), view)
    check_input(inventory, manifest, target, window, runbook)
    engine = Engine(RunDir.create(runs_root(ctx)), view)
    with Interrupts(engine):
        engine.plan(
            inventory,
            manifest,
            target,
            list(scope),
            window=window,
            separation_of_duties=separation_of_duties,
            lock_hosts=lock_hosts,
            limit=limit,
            exclude=exclude,
            break_lock=break_lock,
            runbook=runbook,
        )
    return engine


def dry_run(
    ctx, plan_file, inventory, manifest, target, scope, window, separation_of_duties, limit, exclude, json_mode,
    runbook=None,
):  # fmt: skip
    """``run --check``: plan first when given an inventory (without taking the hosts' locks), then the dry run
    of the plan through the engine's one execution path, with ansible-playbook's --check --diff."""
    view = make_view(json_mode)
    try:
        engine = run_engine(
            ctx, view, plan_file, inventory, manifest, target, scope, window, separation_of_duties, limit, exclude,
            runbook=runbook,
        )  # fmt: skip
        with Interrupts(engine):
            exit_state, dry = engine.dry_run()
    finally:
        view.close()
    finish_dry_run(engine, dry, exit_state, json_mode)


def finish_dry_run(engine: Engine, dry: Engine, exit_state: str, json_mode: bool) -> None:
    """What a dry run would do, its diffs, its report, and what to do next with the plan it left as it was."""
    report_md = dry.rundir.path / "report.md"
    report_json = dry.rundir.path / "report.json"
    rep = json.loads(report_json.read_text()) if report_json.is_file() else {}
    run_state, why = engine.run_state()
    commands = engine.next_commands()
    changes = dry.diffs
    if json_mode:
        click.echo(
            json.dumps(
                {
                    "dry_run": True,
                    "run_id": engine.rundir.run_id,
                    "run_dir": str(engine.rundir.path),
                    "dry_run_dir": str(dry.rundir.path),
                    "exit_state": exit_state,
                    "exit_code": stages.EXIT_CODES[exit_state],
                    "run_state": lifecycle.describe(run_state, why),
                    "next": commands,
                    "report": str(report_md),
                    "report_html": str(dry.rundir.path / "report.html"),
                    "stages": {s["stage"]: s["status"] for s in rep.get("steps", [])},
                    "steps": [
                        {k: s.get(k) for k in ("stage", "status", "duration_s", "done")} for s in rep.get("steps", [])
                    ],
                    "diffs": changes,
                },
                indent=2,
            )
        )
    else:
        for text in changes:
            click.echo(text)
        print_summary(rep or {"exit_state": exit_state})
        click.echo(
            f"DRY RUN (--check): nothing was changed. A real run of this plan would end {exit_state}. "
            f"Run {engine.rundir.run_id} is still {lifecycle.describe(run_state, why)}."
        )
        click.echo(f"Dry run report: {report_md} (and report.html); the run's own report is not written.")
    sys.exit(stages.EXIT_CODES[exit_state])


@main.command()
@runs_dir_option
@click.argument("run_dir", type=RUN)
@click.option(
    "--limit",
    default=None,
    help="Retry only these of the hosts that failed (ansible host patterns); hosts never attempted are still done.",
)
@click.option("--break-lock", is_flag=True, help="Break a stale lock left by another dead rollback (audited).")
@click.option("--override-window", default=None, metavar="REASON", help="Resume outside the change window (audited).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@handles_errors
def resume(run_dir, limit, break_lock, override_window, json_mode):
    """Continue a run from the first stage that did not finish."""
    view = make_view(json_mode)
    engine = Engine(RunDir.find(run_dir), view)
    try:
        with Interrupts(engine):
            exit_state = engine.execute(
                resume=True, retry_hosts=limit, break_lock=break_lock, override_window=override_window
            )
            exit_state, view = offer_confirmation(engine, view, exit_state, json_mode, override_window=override_window)
    finally:
        view.close()
    finish(engine, exit_state, json_mode)


@main.command()
@runs_dir_option
@click.argument("run_dir", type=RUN)
@click.argument("step")
@click.option("--by", "by", required=True, help="Who did the manual step (recorded in the audit trail and the report).")
@click.option("--note", default=None, help="What was done (or, with --failed, what went wrong).")
@click.option("--failed", is_flag=True, help="Record that the step could not be done (needs --note).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@handles_errors
def confirm(run_dir, step, by, note, failed, json_mode):
    """Record that a manual step of a run was done (or, with --failed, that it could not be)."""
    engine = Engine(RunDir.find(run_dir), make_view(True))
    record = engine.confirm(step, by, note, failed=failed)
    nexts = [f"release-rollback resume {engine.rundir.path}"]
    if json_mode:
        click.echo(
            json.dumps({"run_id": engine.rundir.run_id, "step": step, "record": record, "next": nexts}, indent=2)
        )
        return
    word = "recorded as FAILED" if failed else "confirmed"
    click.echo(f"Manual step {step} of run {engine.rundir.run_id} {word} by {record['by']} at {record['at']}.")
    for command in nexts:
        click.echo(f"  next: {command}")


@main.command("awx-workflow")
@click.option("-m", "--manifest", type=click.Path(dir_okay=False), default=None, help="A manifest with manual_steps.")
@click.option("--runbook", type=click.Path(dir_okay=False), default=None, help="The application's runbook (YAML).")
@click.option(
    "--workflows",
    type=click.Path(dir_okay=False, exists=True),
    default="awx/config/workflows.yml",
    show_default=True,
    help="The workflow definition to add the manual steps to.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write it here (default: stdout).")
@handles_errors
def awx_workflow(manifest, runbook, workflows, output):
    """The AWX workflow with an approval node per blocking manual step (from the manifest or the runbook),
    each followed by the job that records who approved it; apply it with awx/configure.yml -e @FILE."""
    import yaml

    _raw, parsed = load_inputs(manifest, runbook)
    steps = parsed.get("manual_steps") or []
    if not steps:
        raise BadInput(
            "neither the manifest nor the runbook has manual steps: give -m MANIFEST or --runbook FILE with some"
        )
    doc = yaml.safe_load(Path(workflows).read_text(encoding="utf-8"))
    for workflow in doc.get("controller_workflows") or []:
        workflow["workflow_nodes"] = manuallib.awx_workflow_nodes(
            workflow["workflow_nodes"], steps, timeout="{{ rollback_awx_approval_timeout }}"
        )
    text = (
        "---\n# Generated by `release-rollback awx-workflow`: "
        + workflows
        + " with the manual steps' approval nodes.\n"
    )
    text += yaml.safe_dump(doc, sort_keys=False, width=120)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}: apply it with `ansible-playbook awx/configure.yml -e @{output}`")
    else:
        click.echo(text, nl=False)


@main.command()
@runs_dir_option
@click.argument("run_dir", required=False, type=RUN)
@click.option("--team", is_flag=True, help="The recent runs of every controller recording in the ledger.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many runs --team lists."
)
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handles_errors
def status(ctx, run_dir, team, limit, json_mode):
    """Show a run's stages and exit state (the latest run by default); --team lists the team's recent runs."""
    if team:
        if run_dir is not None:
            raise BadInput("--team lists every run in the ledger: give it without RUN_DIR, or RUN_DIR without --team")
        team_status(ctx, limit, json_mode)
        return
    if run_dir is None:
        root = runs_root(ctx)
        runs = sorted(p for p in root.glob("*") if (p / "state.json").is_file()) if root.is_dir() else []
        if not runs:
            raise BadInput(f"no runs under {root}: start one with `release-rollback plan`")
        run_dir = runs[-1]
    rundir = RunDir.find(run_dir)
    state = rundir.read_state()
    engine = Engine(rundir, make_view(True))
    run_state, why = engine.run_state(state)
    commands = engine.next_commands(state)
    if json_mode:
        click.echo(
            json.dumps(dict(state, run_state=lifecycle.describe(run_state, why), next=commands), indent=2, default=str)
        )
        return
    click.echo(f"Run {rundir.run_id} ({rundir.path})")
    click.echo(
        f"  state:      {lifecycle.describe(run_state, why)}: {lifecycle.state_info(run_state)['means']}".replace(
            "{pid}", str((state.get("lifecycle") or {}).get("pid"))
        )
    )
    if state.get("exit_state"):
        click.echo(f"  exit state: {state['exit_state']}")
    alive = jobs.processes(engine.job_mark)
    if alive:
        click.echo(f"  jobs alive: {jobs.describe(alive)}")
    for name in stages.STAGE_NAMES:
        entry = state.get("stages", {}).get(name)
        if entry is None:
            click.echo(f"  {name:<15} not run")
            continue
        res = entry.get("result") or {}
        click.echo(f"  {name:<15} {res.get('status', entry.get('status', '?')):<12} {res.get('summary') or ''}")
        for host, hres in sorted((res.get("hosts") or {}).items()):
            if name != "report" and hres.get("status") not in (stages.OK, stages.SKIPPED):
                click.echo(f"    {host}: {hres.get('status')} - {hres.get('msg') or 'no detail'}")
    extras = reportlib.read_extras(str(rundir.path))
    if state.get("exit_state") and run_state != lifecycle.BLOCKED:
        click.echo(f"  sign-off:   {reportlib.signoff_status(extras['signoff'], state['exit_state'])}")
        click.echo(f"  RCA:        {reportlib.rca_line(extras['rca'])}")
    for command in commands:
        click.echo(f"  next: {command}")


def _age(stamp: str | None) -> str:
    from datetime import UTC, datetime

    try:
        then = datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "?"
    secs = max(0, int((datetime.now(UTC) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs // size} {unit} ago"
    return f"{secs} s ago"


def team_status(ctx: click.Context, limit: int, json_mode: bool) -> None:
    """The recent runs in the ledger, whoever ran them and wherever: who, what, state, age."""
    ledger = ledger_of(runs_root(ctx))
    runs = ledger.recent_runs(limit)
    if json_mode:
        click.echo(json.dumps({"ledger": ledger.url, "runs": runs}, indent=2, default=str))
        return
    click.echo(f"Recent runs in the ledger {ledger.url}:")
    if not runs:
        click.echo("  none yet: start one with `release-rollback plan`")
    for r in runs:
        what = f"{r.get('app') or '?'} {r.get('from_version') or '?'} -> {r.get('to_version') or '?'}"
        where = f"{r.get('operator') or '?'} on {r.get('controller') or '?'}"
        state = r.get("exit_state") or r.get("lifecycle") or "?"
        click.echo(f"  {r['run_id']:<22} {what:<48} {state:<20} {where:<28} {_age(r.get('created'))}")


@main.command()
@runs_dir_option
@click.argument("app")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handles_errors
def history(ctx, app, json_mode):
    """An application's releases in the ledger, marked known-bad (rolled back) or known-good."""
    ledger = ledger_of(runs_root(ctx))
    rows = ledger.history(app)
    if json_mode:
        click.echo(json.dumps({"ledger": ledger.url, "app": app, "releases": rows}, indent=2, default=str))
        return
    if not rows:
        raise BadInput(
            f"the ledger {ledger.url} has no release of {app}: check the name (`release-rollback status --team`)"
        )
    click.echo(f"Releases of {app} in the ledger {ledger.url}:")
    for r in rows:
        if r["status"] == "rolled_back":
            mark = f"BAD   rolled back by run {r['run_id']} to {r.get('rolled_back_to') or '?'}"
            mark += f"; RCA {r['rca']}" if r.get("rca") else ""
        else:
            mark = f"good  the release run {r['run_id']} went back to" if r.get("run_id") else "good"
        click.echo(f"  {r['version']:<20} {r['environment'] or '-':<40} {mark}  ({r['time']})")


@main.command()
@runs_dir_option
@click.argument("run_dir", type=RUN)
@click.option("--reason", required=True, help="Why the run is abandoned (recorded in the report and audit trail).")
@handles_errors
def abort(run_dir, reason):
    """End a paused, blocked or partially completed run as aborted."""
    engine = Engine(RunDir.find(run_dir), make_view(False))
    exit_state, kept = engine.abort(reason)
    click.echo(f"Run {engine.rundir.run_id} aborted: {reason}")
    if kept:
        click.echo(
            f"The host lock on {', '.join(kept)} could not be given back (events/unlock.jsonl says why): "
            "a new plan takes it back with --break-lock (audited)."
        )
    click.echo(f"Report: {engine.rundir.path / 'report.md'}")
    sys.exit(stages.EXIT_CODES[exit_state])


@main.command()
@runs_dir_option
@click.argument("run_dir", type=RUN)
@click.option("--format", "fmt", type=click.Choice(sorted(reportlib.RENDERERS)), default="md")
@handles_errors
def report(run_dir, fmt):
    """Print a run's report, rendering it again from the run's state (and rewrite report.*)."""
    rundir = RunDir.find(run_dir)
    run_state, _why = Engine(rundir, make_view(True)).run_state()
    if run_state in (lifecycle.PLANNED, lifecycle.APPROVED):
        raise BadInput(
            f"run {rundir.run_id} is {run_state} and has not run, so there is no rollback report: "
            f"its plan is {rundir.plan_file} (`release-rollback status {rundir.path}`)"
        )
    rep = rerender_report(rundir)
    click.echo(reportlib.RENDERERS[fmt](rep), nl=False)


def rerender_report(rundir: RunDir) -> dict[str, Any]:
    """Build the report again from the run directory and write report.md/json/html."""
    state = rundir.read_state()
    results = stage_results(state)
    plan_doc = rundir.read_plan() if rundir.plan_file.is_file() else {}
    rep = reportlib.build_for_run(
        str(rundir.path),
        plan_doc,
        rundir.read_approval(),
        results,
        aborted=bool(state.get("aborted")),
        abort_reason=state.get("aborted"),
    )
    reportlib.write(str(rundir.path), rep)
    rundir.report_to_ledger(rep)
    return rep


@main.command()
@runs_dir_option
@click.argument("run_dir", type=RUN)
@click.option("--by", "by", required=True, help="Who signs off (the Release Manager or DevOps Lead).")
@click.option("--role", default="release manager", show_default=True, help="In what role.")
@click.option("--note", default="", help="A note recorded with the sign-off.")
@click.option("--accept-gaps", is_flag=True, help="Sign off a partially completed rollback, accepting its gaps.")
@handles_errors
def signoff(run_dir, by, role, note, accept_gaps):
    """Confirm the rollback complete; recorded in the audit trail and the report."""
    rundir = RunDir.find(run_dir)
    state = rundir.read_state()
    engine = Engine(rundir, make_view(True))
    run_state, why = engine.run_state(state)
    if not lifecycle.allowed("signoff", run_state):
        # Like every command the run's state does not allow: exit 3, nothing changed.
        raise Blocked(
            lifecycle.refusal(
                "signoff",
                run_state,
                rundir.path,
                plan=rundir.plan_file,
                why=why,
                inventory=state.get("inventory"),
                manifest=state.get("manifest_file"),
            )
            or f"run {rundir.run_id} cannot be signed off"
        )
    rerender_report(rundir)
    try:
        record = followuplib.signoff(str(rundir.path), by, role, note, accept_gaps)
    except followuplib.SignoffError as exc:
        raise BadInput(str(exc)) from None
    rundir.write_state(state)
    rerender_report(rundir)
    exit_state = record["exit_state"]
    click.echo(f"Signed off by {record['by']} ({role}) at {record['time']}: the rollback {exit_state}.")


@main.command()
@runs_dir_option
@click.argument("run_dir", type=RUN)
@handles_errors
def rca(run_dir):
    """File the root-cause analysis ticket a tracker could not take during the run."""
    from .engine import load_manifest

    rundir = RunDir.find(run_dir)
    state = rundir.read_state()
    _raw, parsed = load_manifest(state.get("manifest_file"))
    if not parsed.get("rca"):
        raise BadInput("the run's manifest has no rca: section, so there is no tracker to file the ticket in")
    if state.get("exit_state") in (None, stages.RUN_BLOCKED):
        raise BadInput(
            f"the run ended {state.get('exit_state') or 'not yet'}: an RCA ticket is filed for rollbacks that ran"
        )
    rep = rerender_report(rundir)
    record = followuplib.file_rca(str(rundir.path), parsed["rca"], parsed.get("notify"), rep)
    rundir.write_state(state)
    rerender_report(rundir)
    if record["status"] != "filed":
        fail(f"RCA still pending: {record['error']}. Try again later with `release-rollback rca {run_dir}`.", 1)
    click.echo(f"RCA ticket {record['key']} ({record['tracker']}): {record['url']}")


@main.group()
@runs_dir_option
def audit():
    """The run's hash-chained audit trail."""


class LedgerRunArg(RunArg):
    """A run directory, or the id of a run the ledger holds (its directory may be gone, e.g. an AWX job's)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, Path) or os.path.exists(value) or os.sep in str(value):
            return super().convert(value, param, ctx)
        root = runs_root(ctx) if ctx is not None else runs_home()
        if (root / str(value) / "state.json").is_file():
            return str(root / str(value))
        ledger = ledger_of(root)
        if ledger.get_run(str(value)) is None:
            self.fail(
                f"{value} is neither a run directory nor a run in {root} or in the ledger {ledger.url}", param, ctx
            )
        return str(value)


@audit.command("verify")
@runs_dir_option
@click.argument("run_dir", type=LedgerRunArg())
@click.pass_context
@handles_errors
def audit_verify(ctx, run_dir):
    """Check that no audit entry was edited, removed or reordered, in the run directory and in the ledger,
    and that both say the same."""
    if not os.path.exists(run_dir):
        # Only in the ledger (the run directory is gone, e.g. with an AWX job's container).
        ledger = ledger_of(runs_root(ctx))
        row = ledger.get_run(run_dir) or {}
        result = ledger.verify_audit(run_dir, (row.get("state") or {}).get("audit_head"))
        if not result["ok"]:
            broken = f"row {result['broken_at']}: {result['problem']}"
            fail(f"the audit trail in the ledger {ledger.url} is broken at {broken}", 1)
        click.echo(
            f"audit trail intact in the ledger {ledger.url}: {result['entries']} entries (no run directory here)"
        )
        return
    rundir = RunDir.find(run_dir)
    head = rundir.read_state().get("audit_head")
    result = auditlib.verify(str(rundir.audit_file), head)
    if not result["ok"]:
        fail(f"audit trail broken at line {result['broken_at']}: {result['problem']}", 1)
    anchored = (
        f"anchored in {auditlib.anchor_file(str(rundir.audit_file))}, every line keyed"
        if result["anchored"]
        else "not anchored: recorded without the controller key, so the chain alone was checked"
    )
    ledger = rundir.ledger
    rows = ledger.audit_rows(rundir.run_id) if ledger is not None else []
    if not rows:
        where = (
            f"the ledger {ledger.url} has no copy of it: bring it in with "
            f"`release-rollback ledger import {rundir.path}`"
        )
        click.echo(f"audit trail intact: {result['entries']} entries ({anchored}); {where}")
        return
    in_ledger = ledger.verify_audit(rundir.run_id, head)
    if not in_ledger["ok"]:
        fail(
            f"the audit trail in the ledger {ledger.url} is broken at row {in_ledger['broken_at']}: "
            f"{in_ledger['problem']} (the run directory's copy is intact: {rundir.audit_file})",
            1,
        )
    compared = ledger.compare_audit(rundir.run_id, rundir.audit_file)
    if compared["differs_at"] is not None:
        fail(
            f"the audit trail in the run directory ({len(compared['file'])} entries) and in the ledger {ledger.url} "
            f"({len(compared['ledger'])} entries) disagree from entry {compared['differs_at']} on: each chain "
            "holds, so one of them was "
            "replaced or cut short; trust neither until you know which",
            1,
        )
    click.echo(f"audit trail intact: {result['entries']} entries ({anchored}); the ledger {ledger.url} holds the same")


@main.group("ledger")
@runs_dir_option
def ledger_group():
    """Bring run directories into the ledger, or write the ledger out as run directories."""


@ledger_group.command("import")
@runs_dir_option
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.pass_context
@handles_errors
def ledger_import(ctx, directory):
    """Bring run directories and releases.jsonl under DIRECTORY (a run, a runs directory, or the
    .rollback directory holding runs/) into the ledger. Giving it again adds nothing twice."""
    ledger = ledger_of(runs_root(ctx))
    result = _ledger_module().import_dir(ledger, Path(directory))
    click.echo(
        f"imported into the ledger {ledger.url}: {result['runs']} runs, {result['audit']} audit entries, "
        f"{result['releases']} release marks" + (f"; {result['skipped']}" if result["skipped"] else "")
    )


@ledger_group.command("export")
@runs_dir_option
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--run", "run_ids", multiple=True, help="Only this run (repeatable).")
@click.pass_context
@handles_errors
def ledger_export(ctx, directory, run_ids):
    """Write the ledger's runs out as run directories under DIRECTORY (plan.yml, approval.json, state.json,
    audit.jsonl, report.*), with DIRECTORY/releases.jsonl; an existing run directory is left as it is."""
    ledger = ledger_of(runs_root(ctx))
    result = _ledger_module().export_dir(ledger, Path(directory), list(run_ids))
    click.echo(
        f"exported from the ledger {ledger.url} into {Path(directory).absolute()}: {result['runs']} runs, "
        f"{result['releases']} release marks" + (f"; {result['skipped']}" if result["skipped"] else "")
    )


@main.command()
@runs_dir_option
@click.option(
    "--kind",
    type=click.Choice(["alert", "deploy", "validation"]),
    default=None,
    help="What the event is: an Alertmanager alert, a deploy's outcome, a post-deploy validation's outcome.",
)
@click.option(
    "--event-file",
    type=click.File("r"),
    default=None,
    help="The event as JSON (the rulebook's event, or the webhook's body); - reads standard input.",
)
@click.option(
    "--config",
    "config_file",
    envvar="RELEASE_ROLLBACK_TRIGGER_CONFIG",
    required=True,
    type=click.Path(dir_okay=False),
    help="The triggers' configuration (environments, inventories, manifests, policies); "
    "default $RELEASE_ROLLBACK_TRIGGER_CONFIG.",
)
@click.option("--check", is_flag=True, help="Only check the configuration and its policies, then exit.")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handles_errors
def trigger(ctx, kind, event_file, config_file, check, json_mode):
    """Decide what an event leads to: ignore, duplicate, plan and ask, or a standard-change rollback."""
    from . import trigger as triggerlib

    if check:
        config, policies = triggerlib.load_config(config_file)
        for env in config["environments"]:
            pol = policies.get((env["app"], env["environment"]))
            what = f"policy {pol[0]['name']} (sha256 {pol[1]})" if pol else "no policy: every rollback is asked for"
            click.echo(f"{env['app']} {env['environment']}: {what}")
        return
    if kind is None or event_file is None:
        raise BadInput("give --kind and --event-file (or --check to check the configuration only)")
    try:
        doc = json.loads(event_file.read(1 << 20))
    except ValueError:
        raise BadInput("the event is not JSON: pass the webhook's JSON body or the rulebook's event") from None
    view = make_view(json_mode)
    try:
        given = (ctx.find_root().obj or {}).get("runs_dir") or os.environ.get("RELEASE_ROLLBACK_RUNS_DIR")
        trig = triggerlib.Trigger(config_file, runs_root(ctx), view)
        if not given and trig.config.get("runs_dir"):
            # The configuration's runs directory, unless --runs-dir (or $RELEASE_ROLLBACK_RUNS_DIR) says.
            trig.runs_root = Path(trig.config["runs_dir"]).absolute()
            trig.home = trig.runs_root.parent / "eda"
        decisions = trig.handle(kind, doc)
    finally:
        view.close()
    for decision in decisions:
        if json_mode:
            click.echo(json.dumps(decision, default=str))
        else:
            click.echo(f"{decision['decision']}: {decision.get('why') or ''}")
            if decision.get("approve_command"):
                click.echo(f"  approve and run: {decision['approve_command']}")
    codes = [d.get("exit_code", 0) for d in decisions]
    sys.exit(max(codes) if codes else 0)


@main.command()
@runs_dir_option
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to build the demo fleet (default: a new temporary directory).",
)
@click.option("--hosts", "host_count", type=click.IntRange(1, 50), default=3, help="How many demo hosts.")
@click.option("--keep", is_flag=True, help="Keep the demo fleet (its directory and running services) afterwards.")
@click.option(
    "--containers",
    is_flag=True,
    help="A fleet of podman containers on a bad image instead (needs podman, runc and busybox-static).",
)
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handles_errors
def demo(ctx, workdir, host_count, keep, containers, json_mode):
    """Build a local fleet on a bad release and roll it back end to end."""
    if containers:
        from . import demo_containers

        sys.exit(
            demo_containers.run_container_demo(workdir, host_count, keep, runs_root(ctx), json_mode, operator_name())
        )
    from . import demo as demolib

    sys.exit(demolib.run_demo(workdir, host_count, keep, runs_root(ctx), json_mode, operator_name()))


if __name__ == "__main__":  # pragma: no cover
    main()
