# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run lifecycle as data: its states, the commands that move a run between them, and what each
state tells the operator to do next.

Written once. The driver checks every command against ``TRANSITIONS`` before it changes anything,
records each move in the run's state, and prints ``next_commands``; ``docs/lifecycle.md`` (its state
diagram and table) is generated from the same data. Pure Python, standard library only.
"""

from __future__ import annotations

import shlex

PLANNED = "planned"  # a plan exists; nobody approved it
APPROVED = "approved"  # approved, never run
RUNNING = "running"  # a driver is executing it now
PAUSED = "paused"  # stopped before the plan was done: blocked, halted or interrupted
COMPLETED = "completed"
PARTIAL = "partially completed"  # every stage was reached; some left documented gaps
ABORTED = "aborted"
BLOCKED = "blocked"  # the plan itself is blocked: it can never be approved
WAITING = "waiting for operator"  # at a blocking manual step: `confirm` records it, `resume` goes on

# Why a run is paused.
HALTED = "halted"  # a stage failed and the procedure stops the changing stages (or hosts are still owed)
INTERRUPTED = "interrupted"  # the driver or its job died inside a stage
STOPPED = "stopped by the operator"  # Ctrl-C or SIGTERM: stopped at a stage boundary, or inside a stage
REFUSED = "blocked"  # a stage refused to start: approval void, inputs changed, live state not the plan's

FINAL = (COMPLETED, ABORTED, BLOCKED)

# Every state: whether it is final, what it means, and what the operator does next. ``{plan}``,
# ``{run_dir}``, ``{pid}`` and ``{inventory}``/``{manifest}`` are filled with the run's real values.
STATES = (
    {
        "name": PLANNED,
        "final": False,
        "means": "planned, awaiting approval: nothing has changed",
        "next": [
            'release-rollback approve {plan} --approver "$USER"',
            "release-rollback abort {run_dir} --reason {why}",
        ],
    },
    {
        "name": APPROVED,
        "final": False,
        "means": "approved, not run yet: nothing has changed",
        "next": ["release-rollback run {plan}", "release-rollback abort {run_dir} --reason {why}"],
    },
    {
        "name": RUNNING,
        "final": False,
        "means": "running now (driver pid {pid})",
        "next": ["release-rollback status {run_dir}", "kill -TERM {pid}"],
    },
    {
        "name": PAUSED,
        "final": False,
        "means": "paused: the plan is not finished; hosts and systems are as the report lists them",
        "next": ["release-rollback resume {run_dir}", "release-rollback abort {run_dir} --reason {why}"],
    },
    {
        "name": WAITING,
        "final": False,
        "means": "waiting for operator: a blocking manual step must be done and confirmed before the next step starts",
        "next": [
            'release-rollback confirm {run_dir} {step} --by "$USER" --note {note}',
            'release-rollback confirm {run_dir} {step} --by "$USER" --failed --note {failed}',
            "release-rollback resume {run_dir}",
            "release-rollback abort {run_dir} --reason {why}",
        ],
    },
    {
        "name": PARTIAL,
        "final": False,
        "means": "partially completed: every stage was reached, some left gaps (the known limitations)",
        "next": [
            "release-rollback resume {run_dir}",
            'release-rollback signoff {run_dir} --by "$USER" --accept-gaps',
            "release-rollback abort {run_dir} --reason {why}",
        ],
    },
    {
        "name": COMPLETED,
        "final": True,
        "means": "completed: every stage in scope was done and read back",
        "next": ['release-rollback signoff {run_dir} --by "$USER"'],
    },
    {
        "name": ABORTED,
        "final": True,
        "means": "aborted: it never executes again",
        "next": ["release-rollback status {run_dir}", "release-rollback plan -i {inventory} -m {manifest}"],
    },
    {
        "name": BLOCKED,
        "final": True,
        "means": "blocked: the plan cannot be approved, nothing has changed",
        "next": ["release-rollback status {run_dir}", "release-rollback plan -i {inventory} -m {manifest}"],
    },
)

# The commands an operator gives, and the states each is allowed from. ``to`` is where the command
# itself moves the run; ``run`` and ``resume`` then end in whatever the execution reached (``ENDS``).
TRANSITIONS = (
    {"command": "plan", "from": (), "to": (PLANNED, BLOCKED)},
    {"command": "approve", "from": (PLANNED, APPROVED), "to": (APPROVED,)},
    # Approving again while paused (e.g. adding `--destructive` for a refused database step) binds
    # the same plan; the run stays where it is.
    {"command": "approve", "from": (PAUSED, PARTIAL), "to": ()},
    {"command": "run", "from": (APPROVED,), "to": (RUNNING,)},
    {"command": "resume", "from": (PAUSED, PARTIAL, WAITING), "to": (RUNNING,)},
    # A manual step's confirmation (or failure) is recorded in the run; `resume` goes on from it. A step
    # recorded failed may be confirmed again once it was done after all (paused, partially completed).
    {"command": "confirm", "from": (WAITING, PAUSED, PARTIAL), "to": ()},
    {"command": "abort", "from": (PLANNED, APPROVED, PAUSED, PARTIAL, WAITING), "to": (ABORTED,)},
    {"command": "signoff", "from": (COMPLETED, PARTIAL), "to": ()},
)
# Where an execution (run, resume) ends; a driver that dies leaves RUNNING, read as PAUSED/INTERRUPTED.
ENDS = (COMPLETED, PARTIAL, PAUSED, WAITING)

_BY_NAME = {s["name"]: s for s in STATES}
_FROM = {}
for _t in TRANSITIONS:
    _FROM.setdefault(_t["command"], set()).update(_t["from"])


def state_info(name):
    return _BY_NAME[name]


def allowed(command, state):
    """Whether ``command`` may be given to a run in ``state``."""
    return state in _FROM[command]


def refusal(command, state, run_dir, plan=None, pid=None, why=None, inventory=None, manifest=None, step=None):
    """None when ``command`` is allowed in ``state``; otherwise one sentence that says why not and
    what to do instead, with the run's real paths."""
    if allowed(command, state):
        return None
    label = describe(state, why)
    nexts = next_commands(state, run_dir, plan=plan, pid=pid, inventory=inventory, manifest=manifest, step=step)
    hint = (": " + " or ".join("`%s`" % c for c in nexts)) if nexts else ""
    if command == "run" and state in (PAUSED, PARTIAL, RUNNING):
        what = "this plan has already started executing (run %s is %s); a plan executes once" % (
            _run_id(run_dir),
            label,
        )
    elif command in ("run", "resume") and state in FINAL:
        what = "run %s is %s and never executes again (a plan executes at most once)" % (_run_id(run_dir), label)
    elif command == "resume" and state in (PLANNED, APPROVED):
        what = "run %s has not started (%s), so there is nothing to resume" % (_run_id(run_dir), label)
    elif command == "abort" and state in FINAL:
        what = "run %s is %s, which is final; only an unfinished run can be aborted" % (_run_id(run_dir), label)
    elif command == "abort" and state == RUNNING:
        what = "run %s is running now; stop it first" % _run_id(run_dir)
    else:
        what = "`%s` is not possible while run %s is %s" % (command, _run_id(run_dir), label)
    return what + hint


def describe(state, why=None):
    """``paused (halted)``-style label of a state."""
    return "%s (%s)" % (state, why) if why and state == PAUSED else state


def next_commands(state, run_dir, plan=None, pid=None, inventory=None, manifest=None, step=None):
    """The commands that move a run in ``state`` on, ready to paste (real paths and run ids); ``step``: the
    manual step a run waiting for operator waits for."""
    plan = plan or "%s/plan.yml" % run_dir
    values = {
        "run_dir": shlex.quote(str(run_dir)),
        "plan": shlex.quote(str(plan)),
        "pid": pid if pid is not None else "PID",
        "inventory": shlex.quote(str(inventory)) if inventory else "INVENTORY",
        "manifest": shlex.quote(str(manifest)) if manifest else "MANIFEST",
        "why": shlex.quote("why it is abandoned"),
        "step": shlex.quote(str(step)) if step else "STEP",
        "note": shlex.quote("what was done"),
        "failed": shlex.quote("what went wrong"),
    }
    return [c.format(**values) for c in _BY_NAME[state]["next"]]


def after_execution(exit_state, halted, stopped, blocked, waiting=False):
    """The state an execution (run or resume) ends in, and why when paused.

    ``exit_state`` is ``stages.exit_state`` of the results; ``halted``: a stage halted the changing
    stages or hosts are still owed; ``stopped``: the operator stopped it (Ctrl-C, SIGTERM), which
    pauses the run (``resume`` goes on, ``abort`` ends it); ``blocked``: a stage refused to start;
    ``waiting``: a blocking manual step nobody confirmed keeps the next stage from starting.
    """
    if stopped:
        return PAUSED, STOPPED
    if waiting:
        return WAITING, None
    if exit_state == COMPLETED:
        return COMPLETED, None
    if halted:
        return PAUSED, HALTED
    if blocked:
        return PAUSED, REFUSED
    return PARTIAL, None


def _run_id(run_dir):
    return str(run_dir).rstrip("/").rsplit("/", 1)[-1]


def mermaid():
    """The lifecycle as a Mermaid state diagram (docs/lifecycle.md)."""
    ident = {s["name"]: s["name"].replace(" ", "_") for s in STATES}
    lines = ["stateDiagram-v2"]
    for s in STATES:
        if ident[s["name"]] != s["name"]:
            lines.append("    %s: %s" % (ident[s["name"]], s["name"]))
    for t in TRANSITIONS:
        sources = t["from"] or ("[*]",)
        for src in sources:
            for dst in t["to"]:
                lines.append("    %s --> %s: %s" % (ident.get(src, src), ident[dst], t["command"]))
    for end in ENDS:
        lines.append("    %s --> %s: run/resume ends" % (ident[RUNNING], ident[end]))
    lines.append("    %s --> %s: driver or job died (read as paused, interrupted)" % (ident[RUNNING], ident[PAUSED]))
    for s in FINAL:
        lines.append("    %s --> [*]" % ident[s])
    return "\n".join(_unique(lines))


def _unique(lines):
    seen, out = set(), []
    for line in lines:
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def markdown():
    """docs/lifecycle.md: the diagram, the states with what each prints next, and the commands."""
    out = [
        "# The run lifecycle",
        "",
        "Generated from `plugins/module_utils/lifecycle.py` (`python -m release_rollback.docs`); the driver",
        "checks every command against the same data. Do not edit by hand.",
        "",
        "```mermaid",
        mermaid(),
        "```",
        "",
        "## States and what the tool prints next",
        "",
        "| state | final | what it means | what the tool prints next |",
        "|---|---|---|---|",
    ]
    example = "/srv/ops/.rollback/runs/20261204T031500-1234"
    for s in STATES:
        nexts = next_commands(
            s["name"],
            example,
            pid=4242,
            inventory="inventories/prod/hosts.yml",
            manifest="manifest.yml",
            step="purge-cdn",
        )
        out.append(
            "| %s | %s | %s | %s |"
            % (
                s["name"],
                "yes" if s["final"] else "no",
                s["means"].replace("{pid}", "4242"),
                "<br>".join("`%s`" % c for c in nexts),
            )
        )
    out += [
        "",
        "A paused run says why: **halted** (a stage failed and the procedure stops the changing stages, or",
        "hosts of a halted batch are still owed), **blocked** (a stage refused to start: the approval is",
        "void because the plan, the manifest or the inventory changed, or the live state is no longer the",
        "plan's \"from\" state), **stopped by the operator** (Ctrl-C or SIGTERM; the run's exit code is 4) or",
        "**interrupted** (the driver or its job died inside a stage). Only `abort` makes a run *aborted*.",
        "",
        "A run **waiting for operator** stopped before a blocking manual step of its plan (docs/runbooks.md): the",
        "run printed the step's instructions and the exact `confirm` command; `run` and `resume` exit with code 6.",
        "`resume` before `confirm` changes nothing, says it is still waiting and repeats the command. A manual step",
        "confirmed `--failed` applies its stage's failure rule.",
        "",
        "## Commands",
        "",
        "| command | allowed from | moves the run to |",
        "|---|---|---|",
    ]
    for t in TRANSITIONS:
        out.append(
            "| `%s` | %s | %s |"
            % (
                t["command"],
                ", ".join(t["from"]) or "(a new run)",
                ", ".join(t["to"]) or "(unchanged: recorded in the run)",
            )
        )
    out += [
        "",
        "`run` and `resume` end in: %s. A run that is `running` while its driver is gone is read as" % ", ".join(ENDS),
        "`paused (interrupted)`, and `resume` takes it over once no job of the run is alive.",
        "",
    ]
    return "\n".join(out)
