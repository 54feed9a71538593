"""``release-rollback demo --containers``: a fleet of podman containers on a bad image, rolled back by digest.

Each demo host is a local-connection inventory host with a container of its own, run from images
built here from a busybox-static root filesystem (no registry needed), labelled with their version
and serving ``/health`` and ``/version`` with busybox ``httpd``. The bad image has no ``/health``.
Each host's deploy record is written by the containers mechanism's own snapshot, as the snapshot
role does at deploy time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

from . import content
from .demo import free_port
from .engine import BadInput

GOOD, BAD = "1.1.0", "1.2.0"
# What podman needs on machines without systemd cgroups or with tight ulimits (runc, cgroupfs).
CONTAINERS_CONF = '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n'


def check_machine() -> None:
    """One sentence with the fix when this machine cannot run the container demo."""
    missing = [tool for tool in ("podman", "runc", "busybox") if shutil.which(tool) is None]
    if missing:
        needs = ", ".join(missing)
        raise BadInput(f"the container demo needs {needs}: apt-get install podman runc busybox-static")


def podman(*args: str, stdin=None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, stdin=stdin, timeout=300)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {proc.stderr.strip()[-500:]}")
    return proc


def build_image(
    work: Path, repo: str, version: str, healthy: bool = True, build: str = "", labels: dict | None = None
) -> str:
    """An image ``repo:version`` from a busybox root filesystem; returns its digest (``sha256:<id>``).

    ``build`` tells apart two builds of one version (another digest, the same version label)."""
    rootfs = work / f"rootfs-{version}{build}"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "www").mkdir()
    shutil.copy2(shutil.which("busybox"), rootfs / "bin" / "busybox")
    (rootfs / "www" / "version").write_text(version + "\n")
    (rootfs / "www" / "build").write_text(build + "\n")
    if healthy:
        (rootfs / "www" / "health").write_text("ok\n")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    changes = [f"LABEL org.opencontainers.image.version={version}"]
    changes += [f"LABEL {k}={v}" for k, v in (labels or {}).items()]
    podman("import", "-q", *(a for c in changes for a in ("--change", c)), "-", f"{repo}:{version}", stdin=tar.stdout)
    tar.wait()
    shutil.rmtree(rootfs)
    return "sha256:" + json.loads(podman("image", "inspect", f"{repo}:{version}").stdout)[0]["Id"]


def deploy(name: str, ref: str, port: int) -> None:
    """What a deploy does: the container is replaced by one of the new image."""
    podman("rm", "-f", "-t", "0", name, check=False)
    podman("run", "-d", "--name", name, "--network", "host", "--ulimit", "host", ref,
           "/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/www")  # fmt: skip


def _runner(argv):
    proc = subprocess.run(argv, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


class ContainerFleet:
    def __init__(self, root: Path, host_count: int):
        self.root = root
        self.conf = root / "containers.conf"
        self.tag = "demo" + uuid.uuid4().hex[:6]
        self.repo = f"localhost/{self.tag}-shop"
        self.hosts = {f"web{i}": f"{self.tag}-web{i}" for i in range(1, host_count + 1)}
        self.ports = {h: free_port() for h in self.hosts}
        self.inventory = root / "inventory" / "hosts.yml"
        self.manifest = root / "manifest.yml"

    def build(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(CONTAINERS_CONF)
        os.environ["CONTAINERS_CONF"] = str(self.conf)
        self.good = build_image(self.root, self.repo, GOOD)
        self.bad = build_image(self.root, self.repo, BAD, healthy=False)
        mech = content.module_utils("code_mechanisms.containers").Containers()
        defaults = {k: v.get("default") for k, v in mech.args.items()}
        for ref in (self.good, self.bad):  # deploy 1.1.0, then the bad 1.2.0
            for host, name in self.hosts.items():
                deploy(name, ref, self.ports[host])
                state = self.root / "state" / host
                state.mkdir(parents=True, exist_ok=True)
                params = dict(
                    defaults, app_root=str(state), container=name, previous=None, run_args=["--ulimit", "host"]
                )
                params.update(db_revision=None, flags=[], infra_ref=None)
                mech.snapshot(params, _runner, False)  # the deploy's record, as the snapshot role writes it
        self.inventory.parent.mkdir(parents=True, exist_ok=True)
        hosts = {
            h: {
                "rollback_app_root": str(self.root / "state" / h),
                "rollback_container": name,
                "rollback_health_url": f"http://127.0.0.1:{self.ports[h]}/health",
                "rollback_version_url": f"http://127.0.0.1:{self.ports[h]}/version",
            }
            for h, name in self.hosts.items()
        }
        doc = {
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "rollback_code_mechanism": "containers",
                    "rollback_containers_conf": str(self.conf),
                    "rollback_container_stop_timeout": 1,
                    "rollback_verify_retries": 40,
                    "rollback_verify_delay": 0.25,
                },
                "children": {"app": {"hosts": hosts}},
            }
        }
        self.inventory.write_text(
            "# Demo container fleet, generated by `release-rollback demo --containers`.\n"
            + yaml.safe_dump(doc, sort_keys=False, width=200)
        )
        manifest = {
            "rollback_manifest": {
                "app": "demo-shop",
                "version": BAD,
                "reason": f"post-deploy validation failed: image {BAD} answers /health with 404",
                "validation": {"retries": 20, "delay": 0.25, "timeout": 5},
            }
        }
        self.manifest.write_text(yaml.safe_dump(manifest, sort_keys=False))

    def live(self, host: str) -> str:
        c = json.loads(podman("container", "inspect", self.hosts[host]).stdout)[0]
        version = {self.good: GOOD, self.bad: BAD}.get("sha256:" + c["Image"], "?")
        return f"{version} (sha256:{c['Image'][:12]}, {c['State']['Status']})"

    def remove(self) -> None:
        ids = podman("ps", "-a", "-q", "--filter", f"name={self.tag}", check=False).stdout.split()
        if ids:
            podman("rm", "-f", "-t", "0", *ids, check=False)
        for version in (GOOD, BAD):
            podman("rmi", "-f", f"{self.repo}:{version}", check=False)


def run_container_demo(
    workdir: str | None, host_count: int, keep: bool, runs_root: Path | None, json_mode: bool, operator: str
) -> int:
    """Build the container fleet, plan, approve as the demo approver, run, and print what changed."""
    from .engine import Engine
    from .rundir import RunDir
    from .view import make_view

    check_machine()
    stages = content.module_utils("stages")
    root = Path(workdir).absolute() if workdir else Path(tempfile.mkdtemp(prefix="release-rollback-demo-"))
    say = (lambda *a: print(*a, file=sys.stderr)) if json_mode else print
    fleet = ContainerFleet(root, host_count)
    say(f"Building a demo container fleet of {host_count} host(s) in {root} ...")
    try:
        fleet.build()
        say(f"Containers on the bad image {BAD} ({fleet.bad[:19]}…, no /health); previous good image {GOOD}.")
        view = make_view(json_mode)
        rundir = RunDir.create(runs_root if runs_root is not None else root / "runs")
        engine = Engine(rundir, view)
        try:
            engine.plan(str(fleet.inventory), str(fleet.manifest), operator=operator)
            engine.approve("demo-approver", "demo: approved by the embedded demo")
            exit_state = engine.execute()
        finally:
            view.close()
        kept = podman("ps", "-a", "--format", "{{.Names}}", "--filter", f"name={fleet.tag}.*rolled-back").stdout.split()
        summary = {
            "exit_state": exit_state,
            "run_dir": str(rundir.path),
            "report": str(rundir.path / "report.md"),
            "hosts": {h: fleet.live(h) for h in fleet.hosts},
            "kept_containers": sorted(kept),
            "fleet": str(root),
            "fleet_kept": keep,
        }
        if json_mode:
            print(json.dumps(summary, indent=2))
        else:
            say("")
            for host, live in summary["hosts"].items():
                say(f"  {host}: container {fleet.hosts[host]} runs {live}")
            say(f"  old containers kept, stopped: {', '.join(summary['kept_containers']) or 'none'}")
            say(f"\nExit state: {exit_state}")
            say(f"Report: {summary['report']}")
        return stages.EXIT_CODES[exit_state]
    finally:
        if keep:
            remove = f"podman rm -f $(podman ps -aq --filter name={fleet.tag})"
            say(f"Demo containers kept (--keep): remove them with: {remove}")
        else:
            fleet.remove()
            shutil.rmtree(root, ignore_errors=True)
            say(f"Demo fleet {root} stopped and removed (--keep leaves it).")
