"""One stage, one ``ansible_runner.run()``: fresh private data dir, explicit cancel, streamed events."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from . import content

# Event fields worth keeping on disk; the rest (stdout duplicates, uuids of parents) is dropped.
_KEEP = ("event", "counter", "created", "stdout")


@dataclass
class HostTally:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    task: str = ""


@dataclass
class StageRun:
    """What one stage run left in memory: a summary, never the event stream."""

    stage: str
    status: str = "running"  # ansible-runner's status: successful, failed, canceled, timeout, error
    rc: int | None = None
    result: dict[str, Any] | None = None  # the stage's set_stats artifact rollback_result_<stage>
    stats: dict[str, Any] = field(default_factory=dict)  # the whole set_stats data
    hosts: dict[str, HostTally] = field(default_factory=dict)
    task: str = ""
    events: int = 0
    last_error: str = ""


class EventSink:
    """The event handler: one JSON line per event to ``events/<stage>.jsonl``, a tally in memory.

    Returns False so ansible-runner keeps no copy of the event either.
    """

    def __init__(self, run: StageRun, path: Path, on_change: Callable[[StageRun], None] | None = None):
        self.run = run
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.fh = os.fdopen(fd, "a", encoding="utf-8")
        self.on_change = on_change
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        kind = event.get("event", "")
        record = {k: event.get(k) for k in _KEEP if k in event}
        for key in ("host", "task", "task_action", "play", "role", "changed"):
            if key in data:
                record[key] = data[key]
        if kind in ("runner_on_failed", "runner_on_unreachable") and isinstance(data.get("res"), dict):
            record["msg"] = str(data["res"].get("msg", ""))[:2000]
        with self.lock:
            self.fh.write(json.dumps(record, default=str) + "\n")
            self._tally(kind, data)
        if self.on_change is not None:
            self.on_change(self.run)
        return False

    def _tally(self, kind: str, data: dict[str, Any]) -> None:
        run = self.run
        run.events += 1
        if kind == "playbook_on_task_start":
            run.task = data.get("task", "")
            return
        if kind == "playbook_on_stats":
            run.stats = data.get("artifact_data") or {}
            run.result = run.stats.get(f"rollback_result_{run.stage}")
            return
        host = data.get("host")
        if not host or not kind.startswith("runner_on_"):
            return
        tally = run.hosts.setdefault(host, HostTally())
        tally.task = data.get("task", "")
        if kind == "runner_on_ok":
            tally.ok += 1
            tally.changed += bool((data.get("res") or {}).get("changed"))
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            tally.failed += 1
            run.last_error = str((data.get("res") or {}).get("msg", ""))[:500]
        elif kind == "runner_on_unreachable":
            tally.unreachable += 1
        elif kind == "runner_on_skipped":
            tally.skipped += 1

    def close(self) -> None:
        self.fh.close()


def ansible_env() -> dict[str, str]:
    """Environment of every stage run: the collection on the path, no writes into $HOME."""
    bindir = str(Path(sys.executable).parent)
    env = {
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
            [str(content.collections_path())]
            + [p for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]
        ),
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    env.setdefault("ANSIBLE_FORKS", os.environ.get("ANSIBLE_FORKS", "50"))
    return env


def _last_stdout_line(private: Path) -> str:
    """The last line ansible-playbook printed, for runs that died before publishing a result."""
    for stdout in sorted(private.glob("artifacts/*/stdout")):
        lines = [line for line in stdout.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    return ""


def run_stage(
    stage: str,
    inventory: str,
    extravars: dict[str, Any],
    events_file: Path,
    cancel: threading.Event,
    on_change: Callable[[StageRun], None] | None = None,
    limit: str | None = None,
    check: bool = False,
    playbook: Path | None = None,
) -> StageRun:
    """Run ``playbooks/<stage>.yml`` and return its summary and published result."""
    run = StageRun(stage=stage)
    sink = EventSink(run, events_file, on_change)
    # The private data dir holds the extra vars (which may carry credentials): it lives outside the
    # run directory, readable by this user only, and is removed when the stage ends.
    private = tempfile.mkdtemp(prefix=f"rollback-{stage}-")
    try:
        cmdline = "--check --diff" if check else None
        result = ansible_runner.run(
            private_data_dir=private,
            playbook=str(playbook or content.playbook(stage)),
            inventory=inventory,
            extravars=extravars,
            envvars=ansible_env(),
            event_handler=sink,
            cancel_callback=cancel.is_set,
            # The gate and publish plays run on localhost, which a host limit must not exclude.
            limit=f"{limit},localhost" if limit else None,
            cmdline=cmdline,
            quiet=True,
        )
        run.status = result.status
        run.rc = result.rc
        if run.result is None and not run.last_error:
            run.last_error = _last_stdout_line(Path(private))
    finally:
        sink.close()
        shutil.rmtree(private, ignore_errors=True)
    return run
