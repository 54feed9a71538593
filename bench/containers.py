"""Container rollback time per host, next to the floor (a bare ``podman run`` of the previous image).

Not a test: prints figures and the machine, asserts nothing about time. Needs podman, runc and
busybox-static (``.ci/test-deps``); builds two images from a busybox root filesystem, runs one
container per host on the bad one, and measures per host, as the median of ``--repeat`` rounds:

- floor: ``podman run -d`` of the previous image by digest (what any rollback must at least do);
- mechanism: the containers mechanism's discover, switch (stop, rename, run by digest, mark) and
  verify (health and version over HTTP, read back), in-process, without Ansible;
- module: the ``code_rollback`` module through ``ansible`` (local connection, one call for every host),
  divided by the number of hosts.

    .venv/bin/python bench/containers.py --hosts 3 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release_rollback import content
from release_rollback.demo_containers import CONTAINERS_CONF, build_image, deploy
from run import machine

ROOT = Path(__file__).resolve().parents[1]


def sh(*argv: str, stdin=None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, stdin=stdin, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean(prefix: str) -> None:
    ids = sh("podman", "ps", "-a", "-q", "--filter", f"name={prefix}").split()
    if ids:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True)


def runner(argv, env=None):
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    return proc.returncode, proc.stdout, proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-containers-"))
    conf = work / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)
    tag = "bench" + uuid.uuid4().hex[:6]
    repo = f"localhost/{tag}"
    mech = content.module_utils("code_mechanisms.containers").Containers()
    hosts = {f"{tag}-web{i}": free_port() for i in range(1, args.hosts + 1)}
    floor, mechanism, module = [], [], []
    version = sh("podman", "version", "--format", "{{.Client.Version}}").strip()
    try:
        good, bad = build_image(work, repo, "1.1.0"), build_image(work, repo, "1.2.0", healthy=False)
        for _ in range(args.repeat):
            # The floor: a bare run of the previous image by digest, per host.
            for name, port in hosts.items():
                start = time.perf_counter()
                sh("podman", "run", "-d", "--name", name + "-floor", "--network", "host", "--ulimit", "host", good,
                   "/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/www")  # fmt: skip
                floor.append(time.perf_counter() - start)
                subprocess.run(["podman", "rm", "-f", "-t", "0", name + "-floor"], capture_output=True)
            # The mechanism, in-process.
            for name, port in hosts.items():
                deploy(name, bad, port)
                clean(f"{name}.rolled-back")
                state = work / "state" / name
                state.mkdir(parents=True, exist_ok=True)
                p = dict(
                    {k: v.get("default") for k, v in mech.args.items()},
                    app_root=str(state), container=name, target="1.1.0", target_digest=good, expect_digest=bad,
                    run_id=None, lock=False, user="bench", reason="bench", stop_timeout=1,
                    health_url=f"http://127.0.0.1:{port}/health", version_url=f"http://127.0.0.1:{port}/version",
                    retries=40, delay=0.1, timeout=5,
                )  # fmt: skip
                (state / "marks.json").unlink(missing_ok=True)
                start = time.perf_counter()
                info = mech.discover(p, runner)
                switched = mech.switch(p, info, False, runner)
                _result, failure = mech.restart_and_verify(p, switched, runner, False)
                mechanism.append(time.perf_counter() - start)
                if failure:
                    raise SystemExit(failure)
            # The module through ansible, every host in one call.
            inv = {"all": {"hosts": {}}}
            for name, port in hosts.items():
                deploy(name, bad, port)
                clean(f"{name}.rolled-back")
                (work / "state" / name / "marks.json").unlink(missing_ok=True)
                inv["all"]["hosts"][name] = {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "port": port,
                }
            (work / "hosts.json").write_text(json.dumps(inv))
            host = "{{ inventory_hostname }}"
            url = "http://127.0.0.1:{{ port }}"
            module_args = (
                f"mechanism=containers container={host} app_root={work}/state/{host} target=1.1.0 "
                f"target_digest={good} expect_digest={bad} stop_timeout=1 containers_conf={conf} "
                f"health_url={url}/health version_url={url}/version"
            )
            env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_HOME=str(work / ".a"))
            start = time.perf_counter()
            proc = subprocess.run(
                [str(Path(sys.executable).parent / "ansible"), "all", "-i", str(work / "hosts.json"),
                 "-m", "release.rollback.code_rollback", "-a", module_args],
                capture_output=True, text=True, env=env, timeout=600,
            )  # fmt: skip
            module.append((time.perf_counter() - start) / len(hosts))
            if proc.returncode != 0:
                raise SystemExit(proc.stdout[-3000:] + proc.stderr[-2000:])
    finally:
        clean(tag)
        for ref in (f"{repo}:1.1.0", f"{repo}:1.2.0"):
            subprocess.run(["podman", "rmi", "-f", ref], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(machine())
    print(f"podman {version}, runc, {args.hosts} hosts, "
          f"median of {args.repeat} rounds, seconds per host")  # fmt: skip
    print(f"  floor (podman run -d of the previous digest)   {statistics.median(floor):.3f}")
    print(f"  mechanism (discover, switch, verify, read back) {statistics.median(mechanism):.3f}")
    print(f"  code_rollback module through ansible           {statistics.median(module):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
