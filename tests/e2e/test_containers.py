"""Container releases through the CLI, on real podman containers (three hosts: web2 over loopback SSH).

Each host is a container of its own (name, port, state directory) run from images built here from a
busybox-static root filesystem, labelled with their version and serving /health and /version. The
deploys are real: the container is replaced by the new release's image and the snapshot role records
it. One plan, approval and run proves the rollback; the rejection cases run before it, on the same
fleet, and change nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import CLI, need
from release_rollback.demo import build_fleet, free_port
from release_rollback.demo_containers import CONTAINERS_CONF, build_image
from test_ssh_fleet import SSHD, SshHosts

ROOT = Path(__file__).resolve().parents[2]
GOOD_OLD, GOOD, MARKED, BAD = "1.0.0", "1.1.0", "1.1.5", "1.2.0"
HOSTS = ("web1", "web2", "web3")


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {proc.stderr}")
    return proc


def inspect(name: str) -> dict | None:
    proc = podman("container", "inspect", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def image_id(ref: str) -> str:
    return "sha256:" + json.loads(podman("image", "inspect", ref).stdout)[0]["Id"]


def answer(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=3) as resp:
            return resp.read().decode().strip()
    except OSError:
        return None


class Fleet:
    def __init__(self, root: Path):
        self.root = root
        self.tag = "rr" + uuid.uuid4().hex[:8]
        self.repo = f"localhost/{self.tag}-shop"
        self.ports = {h: free_port() for h in HOSTS}
        self.names = {h: f"{self.tag}-{h}" for h in HOSTS}
        self.state = {h: root / h / "state" for h in HOSTS}
        self.inventory = root / "hosts.yml"
        self.manifest = root / "manifest.yml"
        self.env_file = root / "app.env"
        self.built: list[str] = []

    def build(self, version: str, healthy: bool = True, extra: str = "", **labels: str) -> str:
        built = build_image(self.root, self.repo, version, healthy=healthy, build=extra, labels=labels)
        self.built.append(built)
        return built

    def deploy(self, host: str, version: str) -> None:
        """What a deploy does: the container is replaced by one of the new release's image."""
        podman("rm", "-f", "-t", "0", self.names[host], check=False)
        podman(
            "run", "-d", "--name", self.names[host], "--network", "host", "--ulimit", "host",
            "--env-file", str(self.env_file), "--label", "team=shop",
            f"{self.repo}:{version}", "/bin/busybox", "httpd", "-f", "-p", str(self.ports[host]), "-h", "/www",
        )  # fmt: skip

    def write_inventory(self, conf: Path, ssh_vars: dict | None = None) -> None:
        hosts = {
            h: {
                "rollback_app_root": str(self.state[h]),
                "rollback_container": self.names[h],
                "rollback_health_url": f"http://127.0.0.1:{self.ports[h]}/health",
                "rollback_version_url": f"http://127.0.0.1:{self.ports[h]}/version",
            }
            for h in HOSTS
        }
        if ssh_vars:
            # web2 over loopback SSH: nothing of the controller's environment reaches the module there.
            hosts["web2"].update(ssh_vars)
        doc = {
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "rollback_code_mechanism": "containers",
                    "rollback_containers_conf": str(conf),
                    "rollback_container_stop_timeout": 1,
                    "rollback_container_env_file": str(self.env_file),
                    "rollback_container_run_args": ["--ulimit", "host"],
                    "rollback_verify_retries": 40,
                    "rollback_verify_delay": 0.25,
                },
                "children": {"app": {"hosts": hosts}},
            }
        }
        self.inventory.write_text(yaml.safe_dump(doc))
        self.manifest.write_text(
            yaml.safe_dump(
                {
                    "rollback_manifest": {
                        "app": "shop",
                        "version": BAD,
                        "reason": "health check fails on 1.2.0",
                        "validation": {"retries": 20, "delay": 0.25, "timeout": 5},
                    }
                }
            )
        )

    def snapshot(self, inventory: Path | None = None, *extra: str) -> None:
        """The snapshot role at deploy time, on every host (ansible-playbook, as a deploy runs it)."""
        play = self.root / "snapshot.yml"
        play.write_text(
            yaml.safe_dump([{"hosts": "app", "gather_facts": False, "roles": ["release.rollback.snapshot"]}])
        )
        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
            ANSIBLE_HOME=str(self.root / ".ansible"),
            ANSIBLE_LOCAL_TEMP=str(self.root / ".ansible" / "tmp"),
            ANSIBLE_REMOTE_TMP=str(self.root / ".ansible" / "rtmp"),
        )
        playbook = Path(sys.executable).parent / "ansible-playbook"
        proc = subprocess.run(
            [str(playbook), "-i", str(inventory or self.inventory), str(play), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]

    def remove(self) -> None:
        ids = podman("ps", "-a", "-q", "--filter", f"name={self.tag}", check=False).stdout.split()
        if ids:
            podman("rm", "-f", "-t", "0", *ids, check=False)
        if self.built:
            podman("rmi", "-f", *self.built, check=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    need(shutil.which("podman") is not None and shutil.which("busybox") is not None, "podman and busybox-static")
    root = tmp_path_factory.mktemp("containers")
    conf = root / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)
    fleet = Fleet(root)
    fleet.env_file.write_text("SHOP_TOKEN=s3cr3t-never-on-disk\n")
    need(os.path.exists(SSHD), "openssh-server (sshd)")
    ssh = SshHosts(root / "ssh", 1)
    fleet.write_inventory(conf, ssh.host_vars(ssh.addresses[0]))
    try:
        fleet.ids = {v: fleet.build(v, healthy=(v != BAD)) for v in (GOOD_OLD, GOOD, BAD)}
        # A release between the good and the bad one, labelled known-bad: never a candidate.
        fleet.build(MARKED, **{"release.rollback.known-bad": "true"})
        for h in HOSTS:
            fleet.state[h].mkdir(parents=True)
            fleet.deploy(h, GOOD)
        fleet.snapshot()
        for h in HOSTS:
            fleet.deploy(h, BAD)
        fleet.snapshot()
        # Tags move after the deploy: :latest and :stable name the bad image and the oldest one.
        podman("tag", f"{fleet.repo}:{BAD}", f"{fleet.repo}:latest")
        podman("tag", f"{fleet.repo}:{GOOD_OLD}", f"{fleet.repo}:stable")
        yield fleet
    finally:
        fleet.remove()
        ssh.stop()
        os.environ.pop("CONTAINERS_CONF", None)


def rr(fleet, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args, "--runs-dir", str(fleet.root / "runs")],
        cwd=fleet.root,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def live_state(fleet) -> dict:
    return {h: (inspect(fleet.names[h]) or {}).get("Image") for h in HOSTS}


def test_a_pruned_previous_image_or_a_missing_runtime_blocks_the_plan_and_nothing_changes(fleet, tmp_path):
    """One plan: web1 has no container runtime, web2 and web3 lost the previous image."""
    doc = yaml.safe_load(fleet.inventory.read_text())
    doc["all"]["children"]["app"]["hosts"]["web1"]["rollback_container_runtime"] = "podman-not-here"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump(doc))
    saved = fleet.root / "good.tar"
    podman("save", "-q", "-o", str(saved), fleet.ids[GOOD])
    before = live_state(fleet)
    podman("rmi", "-f", fleet.ids[GOOD])
    try:
        planned = rr(fleet, "plan", "--json", "-i", str(inventory), "-m", str(fleet.manifest))
        assert planned.returncode == 3, planned.stdout + planned.stderr
        blockers = json.loads(planned.stdout)["plan"]["blockers"]
        runtime = "host web1 could not be assessed: the container runtime podman-not-here is not installed on this host"
        assert any(b.startswith(runtime) for b in blockers), blockers
        joined = " | ".join(blockers)
        for h in ("web2", "web3"):
            missing = f"host {h}: the previous image {fleet.repo}:{GOOD} ({fleet.ids[GOOD]}) is not on this host"
            assert missing in joined
        assert "podman load -i FILE" in joined and f"podman pull {fleet.repo}:{GOOD}" in joined
        assert live_state(fleet) == before
    finally:
        podman("load", "-q", "-i", str(saved))
        podman("tag", fleet.ids[GOOD], f"{fleet.repo}:{GOOD}")
    assert image_id(fleet.ids[GOOD]) == fleet.ids[GOOD]


def test_rollback_by_digest_through_the_cli(fleet):
    assert {answer(fleet.ports[h], "version") for h in HOSTS} == {BAD}
    planned = rr(fleet, "plan", "--json", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    plan = json.loads(planned.stdout)["plan"]
    run_dir = Path(json.loads(planned.stdout)["run_dir"])
    for h in HOSTS:
        entry = plan["hosts"][h]
        assert (entry["live"], entry["target"]) == (BAD, GOOD)
        assert (entry["live_digest"], entry["target_digest"]) == (fleet.ids[BAD], fleet.ids[GOOD])
        assert entry["target_source"] == "deploy record" and entry["skipped"] == [MARKED]
    # The record holds the run configuration with the env file by reference, never its values.
    record = json.loads((fleet.state["web1"] / "snapshots" / BAD / "record.json").read_text())
    assert record["previous_digest"] == fleet.ids[GOOD] and record["run"]["env_file"] == str(fleet.env_file)
    assert record["run"]["env_names"] == ["SHOP_TOKEN"]
    assert "s3cr3t" not in json.dumps(record)

    # Check mode: each container's digest change is shown, and nothing is stopped, renamed or run.
    before = live_state(fleet)
    dry = rr(fleet, "run", str(run_dir / "plan.yml"), "--check")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for h in HOSTS:
        assert f"--- before: container {fleet.names[h]}" in dry.stdout
    assert f"-{fleet.repo} {fleet.ids[BAD]} ({BAD})" in dry.stdout
    assert f"+{fleet.repo} {fleet.ids[GOOD]} ({GOOD})" in dry.stdout
    assert live_state(fleet) == before and inspect(f"{fleet.names['web1']}.rolled-back-{BAD}") is None

    approved = rr(fleet, "approve", str(run_dir), "--approver", "alice")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    # After the approval: the tag of the target moves to another image, and web3 is redeployed with a
    # rebuilt 1.2.0 (same version label, another digest).
    podman("tag", fleet.ids[GOOD_OLD], f"{fleet.repo}:{GOOD}")
    rebuilt = fleet.build(BAD, healthy=False, extra="rebuilt")
    fleet.deploy("web3", BAD)
    assert inspect(fleet.names["web3"])["Image"] == rebuilt.split(":", 1)[1]

    done = rr(fleet, "run", str(run_dir / "plan.yml"), "--yes")
    out = done.stdout + done.stderr
    state = json.loads((run_dir / "state.json").read_text())
    hosts = state["stages"]["code_config"]["result"]["hosts"]
    statuses = {h: v["status"] for h, v in (hosts or {}).items()}
    assert statuses == {"web1": "ok", "web2": "ok", "web3": "stale"}, out[-4000:]
    # Recreated from the previous image by digest, whatever the tags say now; health and version read back.
    for h in ("web1", "web2"):
        c = inspect(fleet.names[h])
        assert "sha256:" + c["Image"] == fleet.ids[GOOD] and c["State"]["Running"]
        assert answer(fleet.ports[h], "version") == GOOD and answer(fleet.ports[h], "health") is not None
        assert hosts[h]["version"] == GOOD and hosts[h]["health"] == 200 and hosts[h]["digest"] == fleet.ids[GOOD]
        env = dict(e.split("=", 1) for e in c["Config"]["Env"])
        assert env["SHOP_TOKEN"] == "s3cr3t-never-on-disk" and c["Config"]["Labels"]["team"] == "shop"
        assert "s3cr3t" not in " ".join(c["Config"]["CreateCommand"])  # by reference, not on a command line
        # The old container is kept, stopped and renamed, on the bad image.
        old = inspect(f"{fleet.names[h]}.rolled-back-{BAD}")
        assert old is not None and not old["State"]["Running"] and "sha256:" + old["Image"] == fleet.ids[BAD]
    # Compare-and-swap: web3 ran another digest than the plan's "from": left untouched, reported stale.
    assert inspect(fleet.names["web3"])["Image"] == rebuilt.split(":", 1)[1]
    assert inspect(f"{fleet.names['web3']}.rolled-back-{BAD}") is None
    assert rebuilt in hosts["web3"]["msg"] and fleet.ids[BAD] in hosts["web3"]["msg"]
    assert "s3cr3t" not in "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())


def test_one_plan_and_one_report_for_a_container_host_and_a_release_directory_host(fleet, tmp_path):
    """A mixed fleet: web1 deploys release directories, ctr1 a container; one plan, one run, one report."""
    dirs = build_fleet(tmp_path / "dirs", 1, releases=(GOOD, BAD))
    try:
        fleet.deploy("web1", BAD)  # the container host is back on the bad release
        doc = yaml.safe_load(dirs.inventory.read_text())
        ctr = yaml.safe_load(fleet.inventory.read_text())["all"]
        doc["all"]["children"]["app"]["hosts"]["ctr1"] = dict(
            {k: v for k, v in ctr["vars"].items() if k.startswith("rollback_")},
            **ctr["children"]["app"]["hosts"]["web1"],
        )
        dirs.inventory.write_text(yaml.safe_dump(doc))
        manifest = tmp_path / "mixed.yml"
        m = yaml.safe_load(dirs.manifest.read_text())["rollback_manifest"]
        m = {k: m[k] for k in ("app", "reason", "validation")}
        manifest.write_text(yaml.safe_dump({"rollback_manifest": dict(m, version=BAD)}))

        done = rr(fleet, "run", "-i", str(dirs.inventory), "-m", str(manifest), "--approver", "alice", "--yes")

        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-4000:]
        run_dir = Path(sorted((fleet.root / "runs").glob("*/report.json"))[-1]).parent
        plan = yaml.safe_load((run_dir / "plan.yml").read_text())
        assert set(plan["hosts"]) == {"web1", "ctr1"}
        assert plan["hosts"]["ctr1"]["mechanism"] == "containers" and "mechanism" not in plan["hosts"]["web1"]
        hosts = json.loads((run_dir / "state.json").read_text())["stages"]["code_config"]["result"]["hosts"]
        assert {h: (v["status"], v["release"]) for h, v in hosts.items()} == {
            "web1": ("ok", GOOD),
            "ctr1": ("ok", GOOD),
        }
        report = (run_dir / "report.md").read_text()
        assert "web1" in report and "ctr1" in report
        assert os.readlink(dirs.app_root("web1") / "current").endswith(GOOD)
        assert "sha256:" + inspect(fleet.names["web1"])["Image"] == fleet.ids[GOOD]
        # The second rollback of the same container keeps both old containers.
        assert inspect(f"{fleet.names['web1']}.rolled-back-{BAD}-2") is not None
    finally:
        dirs.stop()


def compose_file(fleet, web: str, worker: str) -> str:
    services = {
        name: {
            "image": f"{fleet.repo}:{version}",
            "ports": [f"{port}:8080"],
            "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
        }
        for name, version, port in (("web", web, fleet.compose_ports[0]), ("worker", worker, fleet.compose_ports[1]))
    }
    return yaml.safe_dump({"services": services}, sort_keys=False)


def test_a_compose_project_rolls_back_only_the_changed_service(fleet, tmp_path):
    project, project_dir = f"{fleet.tag}c", tmp_path / "project"
    project_dir.mkdir()
    fleet.compose_ports = (free_port(), free_port())
    path = project_dir / "compose.yml"
    state = tmp_path / "state"
    state.mkdir()
    inventory = tmp_path / "compose-hosts.yml"
    ctr = yaml.safe_load(fleet.inventory.read_text())["all"]
    host = {
        "rollback_code_mechanism": "compose",
        "rollback_compose_file": str(path),
        "rollback_compose_project": project,
        "rollback_app_root": str(state),
        "rollback_health_url": f"http://127.0.0.1:{fleet.compose_ports[0]}/health",
        "rollback_version_url": f"http://127.0.0.1:{fleet.compose_ports[0]}/version",
    }
    common = {k: v for k, v in ctr["vars"].items() if k != "rollback_code_mechanism"}
    inventory.write_text(yaml.safe_dump({"all": {"vars": common, "children": {"app": {"hosts": {"cmp1": host}}}}}))

    def compose(*args: str) -> None:
        proc = subprocess.run(
            ["podman-compose", "-p", project, "-f", str(path), *args], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def containers() -> dict:
        out = podman("ps", "-a", "--format", "json", "--filter", f"label=com.docker.compose.project={project}").stdout
        return {(c["Names"] or [""])[0]: c for c in json.loads(out or "[]")}

    try:
        podman("tag", fleet.ids[GOOD], f"{fleet.repo}:{GOOD}")  # earlier tests moved the tag
        # Deploy 1.1.0 (both services), then 1.2.0, which changes only the web service.
        good_file = compose_file(fleet, GOOD, GOOD)
        path.write_text(good_file)
        compose("up", "-d")
        fleet.snapshot(inventory, "-e", f"rollback_snapshot_release={GOOD}")
        podman("rm", "-f", "-t", "0", f"{project}_web_1")
        path.write_text(compose_file(fleet, BAD, GOOD))
        compose("up", "-d", "--no-deps", "web")
        fleet.snapshot(inventory, "-e", f"rollback_snapshot_release={BAD}")
        worker_before = containers()[f"{project}_worker_1"]["Id"]
        bad_image = inspect(f"{project}_web_1")["Image"]
        assert answer(fleet.compose_ports[0], "version") == BAD
        # The tag of 1.1.0 moves after the deploy: the rollback still runs the recorded digest.
        podman("tag", fleet.ids[GOOD_OLD], f"{fleet.repo}:{GOOD}")
        manifest = tmp_path / "manifest.yml"
        manifest.write_text(fleet.manifest.read_text())

        done = rr(fleet, "run", "-i", str(inventory), "-m", str(manifest), "--approver", "alice", "--yes")

        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-4000:]
        run_dir = Path(sorted((fleet.root / "runs").glob("*/report.json"))[-1]).parent
        hosts = json.loads((run_dir / "state.json").read_text())["stages"]["code_config"]["result"]["hosts"]
        assert hosts["cmp1"]["status"] == "ok" and hosts["cmp1"]["release"] == GOOD, hosts
        assert path.read_text() == good_file  # the previous compose file is restored
        now = containers()
        assert now[f"{project}_worker_1"]["Id"] == worker_before  # the unchanged service was left alone
        web = inspect(f"{project}_web_1")
        assert "sha256:" + web["Image"] == fleet.ids[GOOD] and web["State"]["Running"]
        assert answer(fleet.compose_ports[0], "version") == GOOD
        old = inspect(f"{project}_web_1.rolled-back-{BAD}")
        assert old is not None and not old["State"]["Running"] and old["Image"] == bad_image
    finally:
        podman("tag", fleet.ids[GOOD], f"{fleet.repo}:{GOOD}", check=False)
        ids = list(containers())
        if ids:
            podman("rm", "-f", "-t", "0", *ids, check=False)
        podman("network", "rm", "-f", f"{project}_default", check=False)
