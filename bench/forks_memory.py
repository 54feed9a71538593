"""What one host in flight costs the controller's memory, for the forks the driver picks.

    .venv/bin/python bench/forks_memory.py                 # 50 local hosts, 50 forks
    .venv/bin/python bench/forks_memory.py --hosts 20 --forks 20

Starts ansible-playbook with ``--forks`` on that many local-connection hosts, each running a
module that waits (``command: sleep``), and while every host is in flight sums the proportional set
size (PSS, ``/proc/<pid>/smaps_rollup``) of ansible-playbook's process tree: its own process, its
forked workers, and the module processes under them. Prints the total, the share per host, and the
machine. ``driver/release_rollback/ansiblecfg.py`` uses the per-host figure to cap the default forks
by the controller's available memory. Not a test: nothing asserts on memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine  # noqa: E402

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.command: sleep {wait}
"""


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--forks", type=int, default=50)
    ap.add_argument("--wait", type=int, default=8, help="seconds each host's module waits")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rr-forks-") as work:
        inventory = Path(work) / "hosts.yml"
        hosts = "".join(f"    h{i}:\n" for i in range(args.hosts))
        inventory.write_text(
            f"all:\n  hosts:\n{hosts}  vars:\n    ansible_connection: local\n"
            f"    ansible_python_interpreter: {sys.executable}\n"
        )
        book = Path(work) / "wait.yml"
        book.write_text(PLAYBOOK.format(wait=args.wait))
        playbook = str(Path(sys.executable).parent / "ansible-playbook")
        env = dict(os.environ, ANSIBLE_FORKS=str(args.forks), ANSIBLE_HOST_KEY_CHECKING="False")
        proc = subprocess.Popen([playbook, "-i", str(inventory), str(book)], env=env, stdout=subprocess.DEVNULL)
        peak, peak_procs, modules = 0, 0, 0
        deadline = time.monotonic() + args.wait + 60
        while proc.poll() is None and time.monotonic() < deadline:
            pids = tree(proc.pid)
            waiting = sum(1 for p in pids if Path(f"/proc/{p}/comm").exists() and _comm(p) == "sleep")
            total = sum(pss_kb(p) for p in pids)
            if total > peak:
                peak, peak_procs, modules = total, len(pids), waiting
            time.sleep(0.5)
        proc.wait()
    in_flight = max(1, min(args.hosts, args.forks))
    print(machine())
    print(
        f"{args.hosts} local hosts, {args.forks} forks: peak PSS of ansible-playbook's tree {peak / 1024:.0f} MB "
        f"in {peak_procs} processes ({modules} hosts' modules waiting at the peak); "
        f"{peak / 1024 / in_flight:.1f} MB per host in flight"
    )


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    main()
