"""The processes of a run's jobs: found by the mark every job carries, stopped, and cleaned up after.

Every ansible job the driver starts carries ``RELEASE_ROLLBACK_JOB=<run id>:<job>`` in its environment,
which ansible-playbook, its workers and the modules they run inherit. A job's processes are the ones
with that mark whose command is ansible-playbook (the main process and its workers, which start
sessions of their own), and everything below them (the modules, and what they run, such as
``alembic downgrade``). A service that a restart command started and that left its parent is not
part of the job: it is a daemon, and stopping the job never stops it.

Linux only (``/proc``); elsewhere no job is ever found alive, which is what the driver did before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MARK = "RELEASE_ROLLBACK_JOB"
PRIVATE_PREFIX = "rollback-"


@dataclass
class Proc:
    pid: int
    ppid: int
    cmdline: str


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _table() -> dict[int, Proc]:
    procs: dict[int, Proc] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return procs
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = _read(f"/proc/{pid}/stat").decode("utf-8", "replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        procs[pid] = Proc(pid, ppid, cmd)
    return procs


def _marked(pid: int, prefix: str) -> bool:
    try:
        env = _read(f"/proc/{pid}/environ")
    except OSError:
        return False
    needle = f"{MARK}={prefix}".encode()
    return any(item.startswith(needle) for item in env.split(b"\0"))


def processes(prefix: str) -> list[Proc]:
    """The live processes of the jobs whose mark starts with ``prefix`` (``<run id>:`` for a whole run)."""
    table = _table()
    me = os.getpid()
    roots = {
        p.pid for p in table.values() if p.pid != me and "ansible-playbook" in p.cmdline and _marked(p.pid, prefix)
    }
    if not roots:
        return []
    children: dict[int, list[int]] = {}
    for p in table.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return [table[pid] for pid in sorted(found) if pid in table]


def describe(procs: list[Proc]) -> str:
    return ", ".join(f"pid {p.pid} ({p.cmdline[:80]})" for p in procs[:6]) + (" ..." if len(procs) > 6 else "")


def stop(prefix: str, rounds: int = 20) -> list[int]:
    """Stop every process of the jobs marked ``prefix``: frozen first (so none starts another), then
    killed. Returns the pids it killed."""
    killed: list[int] = []
    for _ in range(rounds):
        procs = processes(prefix)
        if not procs:
            break
        for p in procs:
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGSTOP)
        # What a frozen process had just started is found on the next round. Every process frozen here
        # is killed too, found again or not: one whose parent exited meanwhile is no longer below the
        # job's ansible-playbook, and left frozen it would hold what it holds (a file lock) for ever.
        for pid in sorted({p.pid for p in procs} | {p.pid for p in processes(prefix)}):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)
    return killed


def settle(prefix: str, grace: float = 5.0) -> list[int]:
    """After a job has ended: give its last processes ``grace`` seconds to exit (on a loaded machine
    they may still be going when ansible-runner returns), then stop whatever is left, so that no
    process of the job outlives the command that ran it. Returns the pids it had to kill."""
    deadline = time.monotonic() + grace
    while processes(prefix):
        if time.monotonic() >= deadline:
            return stop(prefix)
        time.sleep(0.1)
    return []


def private_roots() -> list[Path]:
    """Where a job's private data dir (which holds its extra vars) may live: memory first."""
    roots = []
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        roots.append(shm)
    roots.append(Path(tempfile.gettempdir()))
    return roots


def make_private(prefix: str) -> Path:
    """A 0700 private data dir for one job, in memory (``/dev/shm``) where the machine has it, so the
    extra vars it holds do not reach a disk."""
    for root in private_roots():
        try:
            return Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{prefix}-", dir=root))
        except OSError:
            continue
    raise OSError("no writable temporary directory for the job's private data")


def sweep(prefix: str = "") -> list[Path]:
    """Remove the private data dirs of jobs that are no longer alive (a driver killed with SIGKILL
    before its job guard could remove them). Returns what it removed."""
    removed = []
    for root in private_roots():
        try:
            entries = list(root.glob(f"{PRIVATE_PREFIX}*"))
        except OSError:
            continue
        for path in entries:
            owner = path / "job.mark"
            try:
                mark = owner.read_text().strip()
            except OSError:
                continue  # not a job dir of this tool, or not ours to read
            if not mark.startswith(prefix) or processes(mark):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
