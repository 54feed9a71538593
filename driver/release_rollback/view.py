"""What the operator sees: a live table on a TTY, plain lines in CI and pipes, nothing with --json."""

from __future__ import annotations

import sys
import time
from typing import Any

from .runner import StageRun

_MARK = {
    "ok": "ok",
    "failed": "FAILED",
    "unavailable": "UNAVAILABLE",
    "skipped": "skipped",
    "blocked": "BLOCKED",
}


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

    def stage_end(self, stage: str, result: dict[str, Any]) -> None:
        took = time.monotonic() - self.started.pop(stage, time.monotonic())
        status = _MARK.get(result.get("status", ""), result.get("status"))
        self._say(f"stage {stage}: {status} ({took:.1f}s) - {result.get('summary')}")
        for host, res in sorted((result.get("hosts") or {}).items()):
            if res.get("status") not in ("ok", "skipped"):
                self._say(f"  {host}: {res.get('status')} - {res.get('msg')}")

    def close(self) -> None:
        pass


class LiveView(PlainView):
    """A rich live table of stages and hosts, refreshed as ansible-runner's events arrive."""

    def __init__(self):
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.rows: dict[str, list[str]] = {}
        self.hosts: dict[str, str] = {}
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def _table(self):
        from rich.table import Table

        table = Table(title="release-rollback", expand=False)
        table.add_column("stage")
        table.add_column("status")
        table.add_column("detail", overflow="fold", max_width=90)
        for stage, (status, detail) in self.rows.items():
            table.add_row(stage, status, detail)
        if self.hosts:
            table.add_section()
            for host, detail in sorted(self.hosts.items()):
                table.add_row(f"  {host}", "", detail)
        return table

    def _refresh(self) -> None:
        self.live.update(self._table())

    def info(self, msg: str) -> None:
        self.live.console.print(msg)

    def stage_start(self, stage: str) -> None:
        self.started[stage] = time.monotonic()
        self.rows[stage] = ["running", ""]
        self.hosts = {}
        self._refresh()

    def stage_progress(self, run: StageRun) -> None:
        self.rows[run.stage] = ["running", run.task]
        self.hosts = {
            h: f"ok {t.ok}  changed {t.changed}  failed {t.failed}  unreachable {t.unreachable}  {t.task}"
            for h, t in run.hosts.items()
            if h != "localhost"
        }
        self._refresh()

    def stage_end(self, stage: str, result: dict[str, Any]) -> None:
        took = time.monotonic() - self.started.pop(stage, time.monotonic())
        status = _MARK.get(result.get("status", ""), result.get("status"))
        self.rows[stage] = [f"{status} {took:.1f}s", str(result.get("summary") or "")]
        self.hosts = {}
        self._refresh()

    def close(self) -> None:
        self.live.stop()


def make_view(json_mode: bool):
    if json_mode:
        return PlainView(stream=sys.stderr, quiet=True)
    if sys.stdout.isatty():
        return LiveView()
    return PlainView()
