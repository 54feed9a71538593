"""What the operator sees: a live table on a TTY, plain lines in CI and pipes, nothing with --json.

While a run goes, the view shows outcomes: one row per stage (pending, running, ok, failed,
skipped, blocked) with its duration, and one line per host with what it is doing or what it ended
on. What a finished stage did is worded by the report model (``report_model.account``); the
final summary renders the report model itself, so it shows what ``status`` and the report show.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from . import content
from .runner import StageRun

stages = content.module_utils("stages")
model = content.module_utils("report_model")

_MARK = {
    "ok": "ok",
    "failed": "FAILED",
    "unavailable": "UNAVAILABLE",
    "skipped": "skipped",
    "blocked": "BLOCKED",
}
_STYLE = {
    "ok": "green",
    "FAILED": "bold red",
    "UNAVAILABLE": "yellow",
    "BLOCKED": "magenta",
    "skipped": "dim",
    "pending": "dim",
    "running": "cyan",
    "not run": "dim",
}

# Tasks that are machinery, not work a person would recognise: Ansible's own (argument specs,
# facts), every stage's gate and publish plays (roles/stage), and the controller's own bookkeeping
# (the run directory, the batch decision). The view never shows them.
_MACHINERY = re.compile(
    r"^(Validating arguments against arg spec|Gathering Facts|Collect earlier results|Decide whether this stage"
    r"|Say why the stage does not run|Build the result of stage|Publish the result of stage|Show the result of stage"
    r"|Fail the job when|Explain how this role is used|Note the|Record the|Fix the run directory"
    r"|Decide whether this batch)"
)


def mark(status: str | None) -> str:
    return _MARK.get(status or "", status or "")


def _duration(result: dict[str, Any], took: float | None) -> str:
    """A stage's duration; none for a stage that did not run."""
    if result.get("status") == stages.SKIPPED or took is None:
        return ""
    return f"{max(took, 0.0):.1f}s"


def what_was_done(stage: str, result: dict[str, Any]) -> str:
    if result.get("dry_run"):
        return str(model.dry_account(stage, result, None))
    return str(model.account(stage, result, None))


class PlainView:
    """One line per event worth knowing, to ``stream`` (stdout by default)."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.started: dict[str, float] = {}

    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.stream, flush=True)

    def info(self, msg: str) -> None:
        self._say(msg)

    def stage_start(self, stage: str) -> None:
        self.started[stage] = time.monotonic()
        self._say(f"stage {stage}: started")

    def stage_progress(self, run: StageRun) -> None:
        pass

    def _took(self, stage: str) -> float | None:
        begun = self.started.pop(stage, None)
        return None if begun is None else time.monotonic() - begun

    def stage_end(self, stage: str, result: dict[str, Any]) -> None:
        took = _duration(result, self._took(stage))
        self._say(
            f"stage {stage}: {mark(result.get('status'))}{f' ({took})' if took else ''} - "
            f"{what_was_done(stage, result)}"
        )
        for host, res in sorted((result.get("hosts") or {}).items()):
            if res.get("status") not in ("ok", "skipped"):
                self._say(f"  {host}: {res.get('status')} - {res.get('msg')}")

    def close(self) -> None:
        pass


class LiveView(PlainView):
    """A rich live table of stages and hosts, refreshed as ansible-runner's events arrive.

    It is transient: when the command ends it gives way to the final summary (``print_summary``).
    """

    def __init__(self, console=None):
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.rows: dict[str, list[str]] = {}
        self.hosts: dict[str, str] = {}
        self.seen: dict[tuple[str, str], int] = {}
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=True)
        self.live.start()

    def _table(self):
        from rich.table import Table
        from rich.text import Text

        table = Table(title="release-rollback", expand=False)
        table.add_column("stage")
        table.add_column("status")
        table.add_column("time", justify="right")
        table.add_column("detail", overflow="fold", max_width=90)
        for stage in stages.STAGE_NAMES:
            if stage in self.rows:
                status, took, detail = self.rows[stage]
                table.add_row(stage, Text(status, style=_STYLE.get(status, "")), took, Text(detail))
        if self.hosts:
            table.add_section()
            for host, detail in sorted(self.hosts.items()):
                table.add_row(Text(f"  {host}"), "", "", Text(detail))
        return table

    def _refresh(self) -> None:
        self.live.update(self._table())

    def info(self, msg: str) -> None:
        self.live.console.print(msg)

    def stage_start(self, stage: str) -> None:
        self.started[stage] = time.monotonic()
        if stage != "assess":
            for later in stages.STAGE_NAMES[stages.STAGE_NAMES.index(stage) + 1 :]:
                self.rows.setdefault(later, ["pending", "", ""])
        self.rows[stage] = ["running", "", ""]
        self.hosts = {}
        self._refresh()

    def stage_progress(self, run: StageRun) -> None:
        row = self.rows.get(run.stage)
        if not row or row[0] != "running":
            return  # a finished stage's last events, or a stage its gate keeps from running
        for host, tally in run.hosts.items():
            done = tally.ok + tally.failed + tally.unreachable
            key = (run.stage, host)
            if done == self.seen.get(key, 0):
                continue  # the host skipped its last task: it did not do it
            self.seen[key] = done
            if tally.task and not _MACHINERY.match(tally.task):
                self.hosts[host] = tally.task
                row[2] = tally.task
        self._refresh()

    def stage_end(self, stage: str, result: dict[str, Any]) -> None:
        status = mark(result.get("status"))
        self.rows[stage] = [status, _duration(result, self._took(stage)), what_was_done(stage, result)]
        self.hosts = {
            h: f"{mark(r.get('status'))}: {r.get('msg') or ''}"
            for h, r in (result.get("hosts") or {}).items()
            if h != "localhost"
        }
        self._refresh()

    def close(self) -> None:
        self.live.stop()


def make_view(json_mode: bool):
    if json_mode:
        return PlainView(stream=sys.stderr, quiet=True)
    if sys.stdout.isatty():
        return LiveView()
    return PlainView()


def print_summary(rep: dict[str, Any], stream=None) -> None:
    """The run's final summary, rendered from the report model: stages, hosts, limitations, next steps.

    On a terminal it is a table; elsewhere plain lines.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream or sys.stdout)
    sections = {s["id"]: s for s in rep.get("sections") or []}
    steps = sections.get("steps")
    hosts = sections.get("hosts")
    if console.is_terminal:
        if steps:
            title = f"release-rollback: {rep.get('exit_state')}"
            if rep.get("dry_run"):
                title = f"release-rollback DRY RUN, nothing changed: would end {rep.get('exit_state')}"
            table = Table(title=title, expand=False)
            for col in ("stage", "status", "time", "what was done"):
                table.add_column(col, overflow="fold", max_width=90 if col == "what was done" else None)
            for stage, status, _start, _end, secs, done in steps["table"]["rows"]:
                word = mark(status)
                table.add_row(stage, Text(word, style=_STYLE.get(word, "")), f"{secs}s" if secs else "", Text(done))
            if hosts:
                table.add_section()
                for host, status, start, target, now, health, version in hosts["table"]["rows"]:
                    read = ", ".join(
                        x for x in (f"health {health}" if health else "", f"version {version}" if version else "") if x
                    )
                    line = _host_line(start, target, now) + (f"; {read}" if read else "")
                    table.add_row(
                        Text(f"  {host}"), Text(mark(status), style=_STYLE.get(mark(status), "")), "", Text(line)
                    )
            console.print(table)
    else:
        if steps:
            for stage, status, _start, _end, secs, done in steps["table"]["rows"]:
                console.print(
                    f"  {stage:<15} {mark(status):<12} {secs + 's' if secs else '':>7}  {done}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        if hosts:
            for host, status, start, target, now, health, version in hosts["table"]["rows"]:
                read = "".join(
                    x for x in (f", health {health}" if health else "", f", version {version}" if version else "")
                )
                console.print(
                    f"  host {host:<10} {mark(status):<12} {_host_line(start, target, now)}{read}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
    manual = sections.get("manual")
    for step, where, owner, status, by, at, note, source in (manual or {}).get("table", {}).get("rows", []):
        who = f" by {by} at {at}" if by else ""
        console.print(
            f"  manual {step} [{where}, {owner}, from {source}]: {status}{who}{': ' + note if note else ''}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    dry = " (DRY RUN: what a real run would end; nothing was changed)" if rep.get("dry_run") else ""
    console.print(f"\nExit state: {rep.get('exit_state')}{dry}", markup=False, highlight=False)
    if rep.get("run_state"):
        console.print(f"Run state:  {rep['run_state']}", markup=False, highlight=False)
    for item in rep.get("known_limitations") or []:
        console.print(f"  limitation: {item}", markup=False, highlight=False, soft_wrap=True)
    for item in rep.get("next_steps") or []:
        # The run's own next commands are printed bare, ready to paste; the rest are notes.
        command = item[1:-1] if item.startswith("`") and item.endswith("`") and item.count("`") == 2 else None
        console.print(
            f"  next: {command}" if command else f"  note: {item}", markup=False, highlight=False, soft_wrap=True
        )


def _host_line(start: str, target: str, now: str) -> str:
    """A host's row: where it started, where it is and its target; a host left out of the plan has only what
    the report says of it."""
    if not start and not target:
        return now
    return f"{start} -> {now} (target {target})"
