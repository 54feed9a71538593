"""The job guard: runs in place of ``ansible-playbook`` inside every job the driver starts.

ansible-runner starts ``ansible-playbook`` on a pseudo-terminal of its own, with SIGHUP ignored, and
ansible's workers start sessions of their own: a driver that dies (even ``kill -9``) would leave the
job, and a migration inside it, running unsupervised. The guard starts the real ansible-playbook as
its child and asks the kernel to signal it when the driver dies (``PR_SET_PDEATHSIG``). Then it
stops every process of the job (``jobs.stop``), removes the job's private data dir (its extra vars),
and exits. The driver stopping a job (a third Ctrl-C) goes through the same ``jobs.stop``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys

from . import jobs

PR_SET_PDEATHSIG = 1


def _parent_death_signal(sig: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def main() -> None:
    real = os.environ["RELEASE_ROLLBACK_ANSIBLE_PLAYBOOK"]
    mark = os.environ.get(jobs.MARK, "")
    private = os.environ.get("RELEASE_ROLLBACK_PRIVATE")
    driver = int(os.environ.get("RELEASE_ROLLBACK_DRIVER_PID", "0"))
    child: subprocess.Popen | None = None

    def stop(signum: int, frame: object) -> None:
        # The driver died (or the job is being stopped): nothing of the job may go on.
        if mark:
            jobs.stop(mark)
        if child is not None:
            with contextlib.suppress(OSError):
                child.kill()
        if private and signum == signal.SIGUSR1:
            shutil.rmtree(private, ignore_errors=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGUSR1, stop)
    signal.signal(signal.SIGTERM, stop)
    _parent_death_signal(signal.SIGUSR1)
    # The driver may have died before the request above took effect.
    if driver and os.getppid() != driver:
        stop(signal.SIGUSR1, None)
    child = subprocess.Popen([real, *sys.argv[1:]])
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:  # pragma: no cover - retried by Python itself since 3.5
            continue
    sys.exit(rc)


if __name__ == "__main__":
    main()
