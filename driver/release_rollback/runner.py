"""One stage, one ``ansible_runner.run()``: fresh private data dir, explicit cancel, streamed events."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ansiblecfg, content, jobs
from .rundir import RecordError

# Event fields worth keeping on disk; the rest (stdout duplicates, uuids of parents) is dropped.
_KEEP = ("event", "counter", "created", "stdout")

# ansible-runner reads ansible-playbook's output through pexpect, waiting for its password prompts
# (none by default) or a timeout. pexpect keeps everything read since the last pattern that matched,
# and a timeout does not clear it, so without a match the driver would hold the job's whole output
# in memory (about 0.3 KB per event). This pattern matches the marker that starts and ends every
# event in the output and answers nothing (None): what is kept is bounded by one event.
_EVENT_MARKER = {r"\x1b\[K": None}


@dataclass
class HostTally:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    task: str = ""
    read_back: dict[str, Any] | None = None  # the host's result as its module reported it (read back)
    locked: str | None = None  # the app root whose lock this run holds on the host (assess took it)
    lock_broken: dict[str, Any] | None = None  # the holder whose lock assess replaced (--break-lock)


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
    gate: dict[str, Any] | None = None  # the stage's gate decision, when it ran inside a job of several
    # What --diff printed (a dry run's): kept in memory and shown, never written to disk, since a config
    # file's diff may hold what the file holds.
    diffs: list[str] = field(default_factory=list)
    write_error: OSError | None = None  # its events could not be written (a full disk): the job is stopped


class EventSink:
    """The event handler: one JSON line per event to ``events/<stage>.jsonl``, a tally in memory.

    Returns False so ansible-runner keeps no copy of the event either.
    """

    def __init__(self, run: StageRun, path: Path, on_change: Callable[[StageRun], None] | None = None):
        self.run = run
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        self.on_change = on_change
        self.lock = threading.Lock()

    def _write(self, line: bytes) -> None:
        """One event, written at once (a driver killed with SIGKILL loses none it received). A write that
        fails (a full disk) leaves no half line, and stops the job: what it does could not be recorded."""
        if self.run.write_error:
            return
        size = os.fstat(self.fd).st_size
        try:
            if os.write(self.fd, line) != len(line):
                raise OSError(28, "No space left on device")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, size)
            self.run.write_error = RecordError(
                exc.errno, f"{self.path} could not be written ({exc.strerror})", str(self.path)
            )

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        kind = event.get("event", "")
        record = {k: event.get(k) for k in _KEEP if k in event}
        text = record.get("stdout") or ""
        if _DIFF in text:
            start = text.index(_DIFF)
            self.run.diffs.append(text[start:].rstrip())
            record["stdout"] = text[:start] + "(a diff: shown on the terminal, not kept on disk)"
        for key in ("host", "task", "task_action", "play", "role", "changed"):
            if key in data:
                record[key] = data[key]
        if kind in ("runner_on_failed", "runner_on_unreachable") and isinstance(data.get("res"), dict):
            record["msg"] = str(data["res"].get("msg", ""))[:2000]
        with self.lock:
            self._write((json.dumps(record, default=str) + "\n").encode("utf-8"))
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
        res = data.get("res") if isinstance(data.get("res"), dict) else {}
        reported = res.get("host_result") or (res.get("ansible_facts") or {}).get(f"rollback_host_result_{run.stage}")
        if host != "localhost" and isinstance(reported, dict) and reported.get("status"):
            # What the host's module read back, kept as it arrives: a stage that dies before it publishes
            # still knows these hosts' states.
            tally.read_back = {k: reported.get(k) for k in ("status", "changed", "release", "msg")}
        if res.get("locked") is True and res.get("app_root"):
            tally.locked = res["app_root"]
        if isinstance(res.get("lock_broken"), dict):
            tally.lock_broken = res["lock_broken"]
        if kind == "runner_on_ok":
            tally.ok += 1
            tally.changed += bool(res.get("changed"))
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            tally.failed += 1
            run.last_error = str((data.get("res") or {}).get("msg", ""))[:500]
        elif kind == "runner_on_unreachable":
            tally.unreachable += 1
        elif kind == "runner_on_skipped":
            tally.skipped += 1

    def close(self) -> None:
        os.close(self.fd)


# Where a diff begins in what ansible-playbook --diff prints for a task.
_DIFF = "--- before"

# Every stage playbook opens with this play; in a job of several stages it marks where one begins.
_GATE_PLAY = re.compile(r"^Stage (\w+): gate$")


class StageSplitter:
    """The event handler of one job that runs several stage playbooks (``playbooks/execute.yml``).

    Each stage keeps what it has when it runs alone: its own ``events/<stage>.jsonl`` and
    :class:`StageRun`. The gate play's start opens the next stage; ``on_gate`` is called with the
    gate's decision (its ``set_fact`` of ``rollback_gate``) and ``on_result`` with the result the
    stage published (its ``set_stats`` of ``rollback_result_<stage>``), both while the job goes on.
    """

    def __init__(
        self,
        stages: list[str],
        events_file: Callable[[str], Path],
        on_gate: Callable[[StageRun], None],
        on_result: Callable[[StageRun], None],
        on_change: Callable[[StageRun], None] | None = None,
    ):
        self.stages = stages
        self.events_file = events_file
        self.on_gate, self.on_result, self.on_change = on_gate, on_result, on_change
        self.runs: dict[str, StageRun] = {}
        self.sink: EventSink | None = None
        self._open(stages[0])

    def _open(self, stage: str) -> None:
        if self.sink is not None:
            self.sink.close()
        self.runs[stage] = StageRun(stage=stage)
        self.sink = EventSink(self.runs[stage], self.events_file(stage), self.on_change)

    @property
    def current(self) -> StageRun:
        assert self.sink is not None
        return self.sink.run

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        kind = event.get("event", "")
        if kind == "playbook_on_play_start":
            opened = _GATE_PLAY.match(data.get("play") or "")
            if opened and opened[1] in self.stages and opened[1] not in self.runs:
                self._open(opened[1])
        assert self.sink is not None
        self.sink(event)
        if kind == "runner_on_ok" and data.get("host") == "localhost":
            res = data.get("res") or {}
            run = self.current
            gate = (res.get("ansible_facts") or {}).get("rollback_gate")
            if isinstance(gate, dict) and run.gate is None:
                run.gate = gate
                self.on_gate(run)
            published = ((res.get("ansible_stats") or {}).get("data") or {}).get(f"rollback_result_{run.stage}")
            if isinstance(published, dict):
                run.result = published
                self.on_result(run)
        return False

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def ansible_env() -> dict[str, str]:
    """Environment of every stage run: the collection on the path, no writes into $HOME, and the
    ansible.cfg the operator's own ansible-playbook would read from here (``ansiblecfg``)."""
    cfg, from_cfg = ansiblecfg.job_env(os.environ)
    bindir = str(Path(sys.executable).parent)

    def operator_list(var: str, in_cfg: list[str], sep: str) -> list[str]:
        # A setting in the environment wins over the file's, as it does for ansible-playbook.
        return [p for p in os.environ[var].split(sep) if p.strip()] if os.environ.get(var) else in_cfg

    env = {
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "RELEASE_ROLLBACK_ANSIBLE_PLAYBOOK": shutil.which(
            "ansible-playbook", path=bindir + os.pathsep + os.environ.get("PATH", "")
        )
        or "ansible-playbook",
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
            dict.fromkeys(
                [
                    str(content.collections_path()),
                    *operator_list("ANSIBLE_COLLECTIONS_PATH", cfg.collections, os.pathsep),
                ]
            )
        ),
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        # The collection's filters are loaded once in ansible-playbook's own process, not again in each
        # worker it forks (the callback's documentation says why that matters).
        "ANSIBLE_CALLBACKS_ENABLED": ",".join(
            dict.fromkeys(
                [
                    "release.rollback.preload",
                    *(c.strip() for c in operator_list("ANSIBLE_CALLBACKS_ENABLED", cfg.callbacks, ",")),
                ]
            )
        ),
        **from_cfg,
    }
    return env


# What an ansible-runner job sets in its environment for its own callback and cache plugins. A driver
# started from inside such a job (the EDA rulebook's release.rollback.trigger playbook runs
# `release-rollback trigger`) would hand them to its own jobs, whose ansible-playbook would then load the
# outer job's callback instead of its own (docs/eda.md).
_OUTER_RUNNER_VARS = (
    "ANSIBLE_CALLBACK_PLUGINS",
    "ANSIBLE_STDOUT_CALLBACK",
    "ORIGINAL_STDOUT_CALLBACK",
    "ANSIBLE_LOAD_CALLBACK_PLUGINS",
    "ANSIBLE_CACHE_PLUGIN",
    "ANSIBLE_CACHE_PLUGIN_CONNECTION",
    "AWX_ISOLATED_DATA_DIR",
    "RUNNER_OMIT_EVENTS",
    "RUNNER_ONLY_FAILED_EVENTS",
)


def _forget_outer_runner() -> None:
    """Drop an enclosing ansible-runner job's plugin settings from this process's environment."""
    if os.environ.get("AWX_ISOLATED_DATA_DIR") or os.environ.get("ORIGINAL_STDOUT_CALLBACK"):
        for name in _OUTER_RUNNER_VARS:
            os.environ.pop(name, None)


def _last_stdout_line(private: Path, tail: int = 65536) -> str:
    """The last line ansible-playbook printed, for runs that died before publishing a result.

    Only the file's last ``tail`` bytes are read: a long job's output runs to tens of megabytes.
    """
    for stdout in sorted(private.glob("artifacts/*/stdout")):
        with stdout.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - tail))
            text = fh.read().decode("utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    return ""


def _guarded(private: Path, mark: str) -> dict[str, str]:
    """The environment that runs the job under the job guard (``jobguard.py``): an ``ansible-playbook``
    first on the PATH that starts the real one and stops the whole job if the driver dies."""
    bindir = private / "bin"
    bindir.mkdir(mode=0o700)
    shim = bindir / "ansible-playbook"
    shim.write_text(f"#!{sys.executable}\nfrom release_rollback.jobguard import main\n\nmain()\n")
    shim.chmod(0o700)
    (private / "job.mark").write_text(mark + "\n")
    env = ansible_env()
    env["PATH"] = str(bindir) + os.pathsep + env["PATH"]
    env.update(
        {
            jobs.MARK: mark,
            "RELEASE_ROLLBACK_PRIVATE": str(private),
            "RELEASE_ROLLBACK_DRIVER_PID": str(os.getpid()),
        }
    )
    return env


def _run_job(
    playbook: Path,
    prefix: str,
    inventory: str,
    extravars: dict[str, Any],
    handler: Callable[[dict[str, Any]], bool],
    cancel: threading.Event,
    limit: str | None = None,
    mark: str | None = None,
    check: bool = False,
) -> tuple[str, int | None, str]:
    """One ``ansible_runner.run()``: ``(status, rc, last line printed)``.

    ``mark`` (``<run id>:<job>``) marks every process of the job, so that the job guard, a cancel and
    ``resume`` find all of them (``jobs.py``). ``check``: ansible-playbook's ``--check --diff`` (a dry run).
    """
    import ansible_runner  # only the commands that start a job load it

    # The private data dir holds the extra vars (which may carry credentials): it lives outside the
    # run directory, in memory where the machine has /dev/shm, readable by this user only, and is
    # removed when the job ends (by the job guard when the driver dies; ``jobs.sweep`` otherwise).
    private = jobs.make_private(prefix)
    mark = mark or f"adhoc:{private.name}"
    _forget_outer_runner()

    def cancelled() -> bool:
        if cancel.is_set():
            # ansible's workers are in sessions of their own: ansible-runner's kill of the job's process
            # group would miss them and what they run. Stop every process of the job first.
            jobs.stop(mark)
            return True
        return False

    try:
        result = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(playbook),
            inventory=inventory,
            extravars=extravars,
            envvars=_guarded(private, mark),
            event_handler=handler,
            cancel_callback=cancelled,
            # The gate and publish plays run on localhost, which a host limit must not exclude.
            limit=f"{limit},localhost" if limit else None,
            cmdline="--check --diff" if check else None,
            passwords=_EVENT_MARKER,
            # How often ansible-runner asks whether to cancel while the job prints nothing (a long restart
            # or migration): a third Ctrl-C stops the job within this many seconds.
            settings={"pexpect_timeout": 0.25},
            quiet=True,
        )
        return result.status, result.rc, _last_stdout_line(private)
    finally:
        # The command that ran the job returns only once nothing of the job is left running.
        jobs.settle(mark)
        shutil.rmtree(private, ignore_errors=True)


def run_stage(
    stage: str,
    inventory: str,
    extravars: dict[str, Any],
    events_file: Path,
    cancel: threading.Event,
    on_change: Callable[[StageRun], None] | None = None,
    limit: str | None = None,
    playbook: Path | None = None,
    mark: str | None = None,
) -> StageRun:
    """Run one playbook (``playbooks/<stage>.yml``) and return its summary and published result."""
    run = StageRun(stage=stage)
    sink = EventSink(run, events_file, on_change)
    try:
        run.status, run.rc, last = _run_job(
            playbook or content.playbook(stage), stage, inventory, extravars, sink, cancel, limit, mark
        )
    finally:
        sink.close()
    if run.result is None and not run.last_error:
        run.last_error = last
    return run


@dataclass
class Job:
    """What one job of one or more stages left: each stage's run (those it reached, in order), and
    how the job ended."""

    runs: dict[str, StageRun]
    status: str
    rc: int | None
    last: str


def run_stages(
    stages: list[str],
    inventory: str,
    extravars: dict[str, Any],
    events_file: Callable[[str], Path],
    cancel: threading.Event,
    on_gate: Callable[[StageRun], None],
    on_result: Callable[[StageRun], None],
    on_change: Callable[[StageRun], None] | None = None,
    playbook: Path | None = None,
    mark: str | None = None,
    check: bool = False,
) -> Job:
    """Run stages as one job: ``playbooks/execute.yml`` (several), or the stage's own playbook (one).

    ``on_gate``/``on_result`` see each stage begin and end while the job runs.
    """
    if playbook is None:
        playbook = content.playbook("execute" if len(stages) > 1 else stages[0])
    splitter = StageSplitter(stages, events_file, on_gate, on_result, on_change)
    try:
        status, rc, last = _run_job(
            playbook,
            "execute" if len(stages) > 1 else stages[0],
            inventory,
            extravars,
            splitter,
            cancel,
            mark=mark,
            check=check,
        )
    finally:
        splitter.close()
    return Job(splitter.runs, status, rc, last)
