"""Benchmarks of release-rollback: time-to-restore against the floor, driver overhead, peak memory.

    .venv/bin/python bench/run.py                  # everything (N = 10, 50, 200)
    .venv/bin/python bench/run.py --sizes 10 50    # fewer fleet sizes
    .venv/bin/python bench/run.py --only memory

Prints the figures and the machine they ran on. Not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import fleet as benchfleet  # noqa: E402

BIN = Path(sys.executable).parent
CLI = str(BIN / "release-rollback")


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ansible = subprocess.run([str(BIN / "ansible-playbook"), "--version"], capture_output=True, text=True).stdout
    core = ansible.splitlines()[0] if ansible else "ansible-core ?"
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {mem:.1f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, {core}"
    )


def env(home: Path) -> dict:
    return dict(
        os.environ,
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TMP=str(home / "rtmp"),
        PATH=str(BIN) + os.pathsep + os.environ["PATH"],
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
    )


class PeakRSS:
    """Polls a process's VmHWM (its own peak resident set, children excluded) until it exits."""

    def __init__(self, pid: int):
        self.pid, self.peak_kb = pid, 0
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while True:
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                return
            time.sleep(0.05)


def timed(cmd: list[str], cwd: Path, environ: dict) -> tuple[float, int, float]:
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rss = PeakRSS(proc.pid)
    _out, err = proc.communicate()
    took = time.monotonic() - start
    if proc.returncode not in (0,):
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {err[-2000:]}")
    rss.thread.join(timeout=1)
    return took, proc.returncode, rss.peak_kb / 1024


FLOOR = """---
# The floor: the smallest stock playbook doing the same switch and restart on every host.
- name: Floor rollback
  hosts: app
  gather_facts: false
  tasks:
    - name: Point current at the previous release
      ansible.builtin.file:
        src: ./releases/{good}
        dest: "{{{{ rollback_app_root }}}}/current"
        state: link
        force: true
    - name: Restart
      ansible.builtin.command: /bin/true
      changed_when: true
"""


def mitogen_env() -> dict:
    """The environment that runs Ansible with mitogen's linear strategy, or an error naming the fix."""
    try:
        import ansible_mitogen
    except ImportError:
        raise SystemExit("--mitogen needs mitogen in the venv: .venv/bin/pip install mitogen") from None
    plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear"}


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def code_only_run(built: dict, root: Path, environ: dict, runs: Path) -> tuple[float, float, float, dict]:
    """One `run --scope code_config` (assess, code stage, report).

    Returns (total s, code stage s, driver peak RSS MB, the report's time to restore from the approval).
    """
    shutil.rmtree(runs, ignore_errors=True)
    cmd = [CLI, "--runs-dir", str(runs), "run", "-i", str(built["inventory"]), "-m", str(built["manifest"])]
    total_s, _, rss_mb = timed([*cmd, "--scope", "code_config", "--approver", "bench", "--yes"], root, environ)
    (run_dir,) = [p for p in runs.iterdir() if (p / "state.json").exists()]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["exit_state"] == "completed", state["exit_state"]
    assert all(
        os.readlink(Path(h) / "current") == f"./releases/{benchfleet.GOOD}" for h in (root / "hosts").glob("*/app")
    )
    assert not any((root / "hosts").glob("*/app/.rollback.lock")), "a host lock was left behind"
    ttr = json.loads((run_dir / "report.json").read_text())["time_to_restore"]
    return total_s, state["stages"]["code_config"]["seconds"], rss_mb, ttr


def bench_code_stage(
    sizes: list[int], work: Path, repeat: int = 3, extra_env: dict | None = None, transport: str = "local"
) -> list[dict]:
    """Floor and rollback, interleaved on the same fleet, ``repeat`` times each; medians are reported."""
    rows = []
    for n in sizes:
        root = work / f"fleet-{n}"
        sshd = benchfleet.Sshd(work / "sshd") if transport == "ssh" else None
        built = benchfleet.build(root, n, sshd=sshd)
        server = benchfleet.start_server(root)
        environ = dict(env(work / f"home-{n}"), **(extra_env or {}))
        floor = root / "floor.yml"
        floor.write_text(FLOOR.format(good=benchfleet.GOOD))
        floors, stages_s, totals, rss, first, every = [], [], [], [], [], []
        try:
            for _ in range(repeat):
                benchfleet.reset(root)
                floors.append(
                    timed([str(BIN / "ansible-playbook"), "-i", str(built["inventory"]), str(floor)], root, environ)[0]
                )
                benchfleet.reset(root)
                total_s, code_s, rss_mb, ttr = code_only_run(built, root, environ, root / "runs")
                first.append(ttr["first_host_restored"]["seconds"])
                every.append(ttr["all_hosts_restored"]["seconds"])
                totals.append(total_s)
                stages_s.append(code_s)
                rss.append(rss_mb)
        finally:
            server.terminate()
            server.wait()
            if sshd:
                sshd.stop()
        floor_s, code_s, total_s = median(floors), median(stages_s), median(totals)
        rows.append(
            {
                "hosts": n,
                "transport": transport,
                "repeat": repeat,
                "floor_s": floor_s,
                "code_stage_s": code_s,
                "code_only_run_s": total_s,
                "stage_ratio": code_s / floor_s,
                "run_ratio": total_s / floor_s,
                "driver_peak_rss_mb": max(rss),
                "approval_to_first_host_s": median(first),
                "approval_to_all_hosts_s": median(every),
                "samples": {
                    "floor_s": floors,
                    "code_stage_s": stages_s,
                    "code_only_run_s": totals,
                    "approval_to_first_host_s": first,
                    "approval_to_all_hosts_s": every,
                },
            }
        )
        print(
            f"  {transport} N={n:<4} floor {floor_s:6.1f}s | code stage {code_s:6.1f}s ({code_s / floor_s:.2f}x) | "
            f"code-only run {total_s:6.1f}s ({total_s / floor_s:.2f}x) | driver peak RSS {max(rss):.0f} MB | "
            f"approval to first host {median(first):.1f}s, to all hosts {median(every):.1f}s   (median of {repeat})",
            flush=True,
        )
    return rows


def bench_driver_overhead(work: Path, repeat: int = 3) -> dict:
    from release_rollback.demo import build_fleet

    samples: dict[str, list[float]] = {"driver": [], "ansible-playbook": []}
    pairs = []
    for i in range(repeat):
        # The two ways take turns going first, so that neither always meets the warmer machine.
        order = ("driver", "ansible-playbook") if i % 2 == 0 else ("ansible-playbook", "driver")
        one = _driver_overhead_once(work / f"overhead-{i}", build_fleet, order)
        for way, took in one.items():
            samples[way].append(took)
        pairs.append(one["driver"] / one["ansible-playbook"])
    results = {way: median(values) for way, values in samples.items()}
    ratio = median(pairs)
    print(
        f"  full rollback, 3 hosts: driver {results['driver']:.1f}s, ansible-playbook rollback.yml "
        f"{results['ansible-playbook']:.1f}s (medians); overhead {100 * (ratio - 1):+.0f}% "
        f"(median of {repeat} paired runs: {', '.join(f'{100 * (r - 1):+.0f}%' for r in pairs)})",
        flush=True,
    )
    return {
        "driver_s": results["driver"],
        "playbook_s": results["ansible-playbook"],
        "ratio": ratio,
        "paired_ratios": pairs,
        "samples": samples,
    }


def _driver_overhead_once(work: Path, build_fleet, order=("driver", "ansible-playbook")) -> dict:
    work.mkdir(parents=True)
    results = {}
    for way in order:
        built = build_fleet(work / f"demo-{way}", 3)
        environ = env(work / f"home-{way}")
        try:
            if way == "driver":
                cmd = [
                    CLI,
                    "--runs-dir",
                    str(work / "runs-driver"),
                    "run",
                    "-i",
                    str(built.inventory),
                    "-m",
                    str(built.manifest),
                    "--approver",
                    "bench",
                    "--yes",
                ]
            else:
                cmd = [
                    str(BIN / "ansible-playbook"),
                    "-i",
                    str(built.inventory),
                    str(ROOT / "playbooks" / "rollback.yml"),
                    "-e",
                    f"@{built.manifest}",
                    "-e",
                    "rollback_approved_by=bench",
                    "-e",
                    f"rollback_run_dir={work / 'run-playbook'}",
                ]
            results[way], _, _ = timed(cmd, work, environ)
            assert built.db_revision() == "a1" and built.lb_release() == built.good
        finally:
            built.stop()
    return results


EVENTS_HEAD = """---
- name: Emit many events
  hosts: localhost
  gather_facts: false
  tasks:
"""
# Tasks of 100 loop items each: a loop's final result holds every item, so one giant loop would
# measure the size of that one result, not the number of events.
EVENTS_TASK = """    - name: "Events {chunk}"
      ansible.builtin.debug:
        msg: "{{{{ item }}}}"
      loop: "{{{{ range({n}) | list }}}}"
"""


def events_playbook(count: int) -> str:
    chunks = [EVENTS_TASK.format(chunk=i, n=min(100, count - i * 100)) for i in range((count + 99) // 100)]
    return EVENTS_HEAD + "".join(chunks)


def bench_events(counts: list[int], work: Path) -> list[dict]:
    """The driver's event handling alone: one ansible-runner job emitting many events, in this process's child."""
    rows = []
    for count in counts:
        playbook = work / f"events-{count}.yml"
        playbook.write_text(events_playbook(count))
        script = (
            "import sys, threading, resource\n"
            "from pathlib import Path\n"
            "from release_rollback.runner import run_stage\n"
            f"run = run_stage('bench', 'localhost,', {{}}, Path({str(work / f'events-{count}.jsonl')!r}), "
            f"threading.Event(), playbook=Path({str(playbook)!r}))\n"
            "print(run.events, run.status)\n"
        )
        environ = env(work / "home-events")
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=work,
        )
        rss = PeakRSS(proc.pid)
        out, err = proc.communicate()
        took = time.monotonic() - start
        rss.thread.join(timeout=1)
        if proc.returncode != 0:
            raise RuntimeError(f"the event benchmark failed: {err[-2000:]}")
        events = int(out.split()[0]) if out.strip() else 0
        rows.append({"loop_items": count, "events": events, "seconds": took, "driver_peak_rss_mb": rss.peak_kb / 1024})
        print(f"  {events:>7} events: {took:6.1f}s, driver peak RSS {rss.peak_kb / 1024:.0f} MB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 50, 200])
    parser.add_argument("--events", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each timing; the median is reported.")
    parser.add_argument("--mitogen", action="store_true", help="Also time the code stage under mitogen.")
    parser.add_argument("--only", choices=["code", "overhead", "memory", "mitogen"], default=None)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument(
        "--transport",
        choices=["local", "ssh"],
        default="local",
        help="How the code benchmark reaches its hosts: the local connection, or real SSH to one loopback "
        "address per host (needs /usr/sbin/sshd and root).",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="rollback-bench-"))
    figures: dict = {"machine": machine()}
    try:
        if args.only in (None, "code"):
            print("code stage time-to-restore vs the floor (file link + restart per host):", flush=True)
            figures["code"] = bench_code_stage(args.sizes, work, args.repeat, transport=args.transport)
            if len(figures["code"]) > 1:
                a, b = figures["code"][0], figures["code"][-1]
                print(
                    f"  growth N={a['hosts']}->{b['hosts']}: floor x{b['floor_s'] / a['floor_s']:.1f}, code stage "
                    f"x{b['code_stage_s'] / a['code_stage_s']:.1f} (hosts x{b['hosts'] / a['hosts']:.0f})"
                )
        if args.mitogen or args.only == "mitogen":
            print("the same under mitogen (strategy mitogen_linear), floor included:", flush=True)
            figures["code_mitogen"] = bench_code_stage(
                args.sizes, work / "mitogen", args.repeat, mitogen_env(), transport=args.transport
            )
        if args.only in (None, "overhead"):
            print("driver overhead for the same plan:", flush=True)
            figures["overhead"] = bench_driver_overhead(work, args.repeat)
        if args.only in (None, "memory"):
            print("driver peak memory against the event count (one ansible-runner job):", flush=True)
            figures["memory"] = bench_events(args.events, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
