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
