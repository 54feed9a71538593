"""A job's last processes do not outlive the command that ran it: `jobs.settle` waits for a process
that is exiting and stops one that stays (real processes, marked as the driver marks its jobs)."""

from __future__ import annotations

import os
import subprocess
import time

from release_rollback import jobs


def _job_process(mark: str, seconds: float) -> subprocess.Popen:
    """A process that looks like a job's ansible-playbook (its name and the job's mark)."""
    env = dict(os.environ, **{jobs.MARK: mark})
    proc = subprocess.Popen(["bash", "-c", f"exec -a ansible-playbook sleep {seconds}"], env=env)
    # While bash execs sleep its /proc entries are briefly unreadable: wait until the job is seen.
    deadline = time.monotonic() + 5
    while not jobs.processes(mark) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def test_a_process_that_is_exiting_is_waited_for_not_killed():
    mark = f"settle-{os.getpid()}-a:"
    proc = _job_process(mark, 1.0)
    assert jobs.processes(mark), "the marked process is found"
    started = time.monotonic()
    assert jobs.settle(mark, grace=5.0) == []
    assert proc.wait(timeout=5) == 0  # it ended by itself
    assert time.monotonic() - started < 5.0
    assert jobs.processes(mark) == []


def test_a_process_that_stays_is_stopped_once_the_grace_is_over():
    mark = f"settle-{os.getpid()}-b:"
    proc = _job_process(mark, 60)
    killed = jobs.settle(mark, grace=0.5)
    assert proc.pid in killed
    assert proc.wait(timeout=5) != 0
    assert jobs.processes(mark) == []


def _state(pid: int) -> str:
    """The process's state letter (T: stopped, Z: a zombie), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_a_process_orphaned_while_the_job_is_stopped_is_killed_not_left_frozen(monkeypatch):
    """The job's worker exits between the listing and the freeze (the driver was killed, ansible-playbook
    is going down): its child, reparented away from the job's tree, is frozen with the rest and must be
    killed with it, or it stays stopped for ever holding its file lock."""
    mark = f"settle-{os.getpid()}-c:"
    main = _job_process(mark, 60)
    env = dict(os.environ, **{jobs.MARK: mark})
    worker = subprocess.Popen(["bash", "-c", "exec -a ansible-playbook bash -c 'sleep 60 & wait'"], env=env)
    deadline = time.monotonic() + 5
    while len(jobs.processes(mark)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    (child,) = [p.pid for p in jobs.processes(mark) if p.pid not in (main.pid, worker.pid)]

    listed = jobs.processes
    calls = []

    def worker_exits_after_the_first_listing(prefix):
        found = listed(prefix)
        if not calls:
            worker.kill()
            worker.wait()
        calls.append(found)
        return found

    monkeypatch.setattr(jobs, "processes", worker_exits_after_the_first_listing)
    killed = jobs.stop(mark)
    assert child in killed and main.pid in killed
    deadline = time.monotonic() + 5
    while _state(child) not in ("", "Z") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(child) in ("", "Z"), f"the orphaned child is left in state {_state(child)!r}"
    assert main.wait(timeout=5) != 0
