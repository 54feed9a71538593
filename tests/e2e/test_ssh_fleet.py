"""The code stage over real SSH on loopback, with services under supervisord, rolling in batches.

Each test starts one ``/usr/sbin/sshd`` per host address (127.0.0.2, .3, ...: distinct "hosts",
so one can be taken away mid-stage) and one supervisord running the demo applications, and stops
them, and the SSH control-master processes ansible leaves behind, by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from release_rollback.demo import BAD, GOOD, build_fleet

SSHD = "/usr/sbin/sshd"
BIN = Path(sys.executable).parent


def _port_free_on(addresses: list[str]) -> int:
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind((addresses[0], 0))
            port = sock.getsockname()[1]
        try:
            for addr in addresses[1:]:
                with socket.socket() as sock:
                    sock.bind((addr, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every loopback address")


def _wait_listen(addr: str, port: int, proc: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd on {addr}:{port} exited: {proc.stderr.read().decode()[-500:]}")
        with socket.socket() as sock:
            if sock.connect_ex((addr, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {addr}:{port} did not listen")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SshHosts:
    """sshd per loopback address with a generated host key and client key."""

    def __init__(self, root: Path, count: int):
        self.root = root
        root.mkdir(parents=True)
        self.addresses = [f"127.0.0.{i}" for i in range(2, 2 + count)]
        self.port = _port_free_on(self.addresses)
        self.key = root / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host_key")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        shutil.copy(f"{self.key}.pub", root / "authorized_keys")
        Path("/run/sshd").mkdir(exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        for addr in self.addresses:
            conf = root / f"sshd-{addr}.conf"
            conf.write_text(
                f"Port {self.port}\nListenAddress {addr}\nHostKey {root / 'host_key'}\n"
                f"PidFile {root / f'sshd-{addr}.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\n"
            )
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stderr=subprocess.PIPE)
            self.procs[addr] = proc
            _wait_listen(addr, self.port, proc)

    def host_vars(self, addr: str) -> dict:
        return {
            "ansible_connection": "ssh",
            "ansible_host": addr,
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o IdentitiesOnly=yes",
        }

    def stop(self) -> None:
        # sshd's per-connection children outlive the listener: collect them first, stop them after.
        children = [pid for proc in self.procs.values() for pid in _descendants(proc.pid)]
        for proc in self.procs.values():
            _stop(proc)
        # The control masters ansible leaves for 60 s: the ssh clients using our client key.
        key = str(self.key).encode()
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"ssh") and any(key in arg for arg in cmd):
                children.append(int(pid_dir.name))
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Supervisor:
    """One supervisord running a program per demo host (the demo application from current/)."""

    def __init__(self, root: Path, fleet):
        self.conf = root / "supervisord.conf"
        self.sock = root / "supervisor.sock"
        programs = ""
        for name, host_dir in fleet.hosts.items():
            current = host_dir / "app" / "current"
            programs += (
                f"\n[program:app-{name}]\ncommand={sys.executable} {current}/server.py --port {fleet.ports[name]}\n"
                f"directory={current}\nautorestart=false\nstartsecs=0\nstopasgroup=true\n"
                f"stdout_logfile={host_dir}/app.log\nredirect_stderr=true\n"
            )
        self.conf.write_text(
            f"[unix_http_server]\nfile={self.sock}\n[supervisord]\nlogfile={root}/supervisord.log\n"
            f"pidfile={root}/supervisord.pid\nnodaemon=true\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            f"[supervisorctl]\nserverurl=unix://{self.sock}\n" + programs
        )
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.ports = fleet.ports
        deadline = time.monotonic() + 15
        while any(self.version(h) is None for h in fleet.hosts):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"supervisord did not start the demo apps: see {root}/supervisord.log")
            time.sleep(0.1)

    def ctl(self, *args: str) -> str:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), *args], capture_output=True, text=True
        ).stdout

    def pid(self, host: str) -> int:
        return int(self.ctl("pid", f"app-{host}").strip())

    def version(self, host: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[host]}/version", timeout=2) as resp:
                return json.loads(resp.read())["version"]
        except OSError:
            return None

    def stop(self) -> None:
        self.ctl("shutdown")  # returns before the daemon exits: wait on its PID
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def ssh_fleet(tmp_path, need):
    """A demo fleet whose hosts web1..web3 are SSH hosts on 127.0.0.2..4, apps under supervisord."""
    need(os.path.exists(SSHD), "openssh-server (/usr/sbin/sshd)")
    need(shutil.which("supervisord", path=str(BIN)) is not None, "supervisor (PyPI) in the venv")
    fleet = build_fleet(tmp_path / "fleet", 3, start=False)
    ssh = SshHosts(tmp_path / "ssh", 3)
    sup = None
    try:
        sup = Supervisor(tmp_path, fleet)
        doc = yaml.safe_load(fleet.inventory.read_text())
        hosts = doc["all"]["children"]["app"]["hosts"]
        for (name, hv), addr in zip(hosts.items(), ssh.addresses, strict=True):
            # Host variables: the demo inventory's group_vars/all.yml says local and command.
            hv.update(
                ssh.host_vars(addr),
                rollback_service_manager="supervisor",
                rollback_service_name=f"app-{name}",
                rollback_supervisor_config=str(sup.conf),
                rollback_supervisorctl=str(BIN / "supervisorctl"),
            )
            hv.pop("rollback_restart_command")
        fleet.inventory.write_text(yaml.safe_dump(doc))
        code_only(fleet)
        yield fleet, ssh, sup
    finally:
        if sup:
            sup.stop()
        ssh.stop()
        fleet.stop()


def code_only(fleet) -> None:
    doc = yaml.safe_load(fleet.manifest.read_text())
    m = doc["rollback_manifest"]
    doc["rollback_manifest"] = {k: m[k] for k in ("app", "version", "reason", "validation")}
    fleet.manifest.write_text(yaml.safe_dump(doc))


def edit_inventory(fleet, change) -> None:
    doc = yaml.safe_load(fleet.inventory.read_text())
    change(doc)
    fleet.inventory.write_text(yaml.safe_dump(doc))


def run(cli, fleet, *extra):
    return cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes", *extra)


def test_ssh_hosts_roll_back_in_batches_with_supervisor_restarts(cli, ssh_fleet):
    fleet, _ssh, sup = ssh_fleet
    edit_inventory(fleet, lambda d: d["all"]["vars"].update(rollback_serial=2))  # on localhost too: the plan
    # web3 is a local-connection host next to the SSH hosts.
    edit_inventory(
        fleet,
        lambda d: d["all"]["children"]["app"]["hosts"]["web3"].update(ansible_connection="local"),
    )
    pids = {h: sup.pid(h) for h in fleet.hosts}
    assert {sup.version(h) for h in fleet.hosts} == {BAD}
    proc = run(cli, fleet)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in fleet.hosts:
        assert fleet.live(host) == f"./releases/{GOOD}"
        assert sup.version(host) == GOOD
        assert sup.pid(host) != pids[host]  # restarted by supervisord, for real
    plan = yaml.safe_load((cli.run_dirs()[-1] / "plan.yml").read_text())
    assert plan["serial"] == 2
    events = [json.loads(e) for e in (cli.run_dirs()[-1] / "events" / "code_config.jsonl").read_text().splitlines()]
    rollback = [e for e in events if e.get("task") == "Roll back, restart and verify" and "host" in e]
    order = [(e["event"], e["host"]) for e in rollback if e["event"] in ("runner_on_start", "runner_on_ok")]
    # Batches of two: web1 and web2 are switched, restarted and healthy (one module call each, side by
    # side) before web3 starts.
    assert order.index(("runner_on_ok", "web1")) < order.index(("runner_on_start", "web3"))
    assert order.index(("runner_on_ok", "web2")) < order.index(("runner_on_start", "web3"))
    assert order.index(("runner_on_start", "web2")) < order.index(("runner_on_ok", "web1"))


def test_a_host_lost_mid_stage_stops_the_batches_and_is_named(cli, ssh_fleet):
    fleet, ssh, sup = ssh_fleet
    web2_sshd = ssh.procs[ssh.addresses[1]]

    def change(d):
        d["all"]["vars"].update(rollback_serial=1)
        hosts = d["all"]["children"]["app"]["hosts"]
        # web1's restart takes web2's sshd away: web2 becomes unreachable during the stage.
        hosts["web1"].update(
            rollback_service_manager="command",
            rollback_restart_command=[
                "sh",
                "-c",
                f"kill {web2_sshd.pid} && {BIN / 'supervisorctl'} -c {sup.conf} restart app-web1",
            ],
        )
        # No lingering control master from the assess stage may keep web2 reachable.
        hosts["web2"]["ansible_ssh_args"] = "-o ControlMaster=no -o ControlPath=none"

    edit_inventory(fleet, change)
    proc = run(cli, fleet)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert web2_sshd.poll() is not None
    rep = json.loads((cli.run_dirs()[-1] / "report.json").read_text())
    assert rep["exit_state"] == "partially completed"
    step = next(s for s in rep["steps"] if s["stage"] == "code_config")
    assert step["status"] == "failed" and "web2" in step["summary"] and "unreachable" in step["summary"]
    # Unreachable means unreachable, with the transport's own error: never "no result", never a lock error.
    lost = step["hosts"]["web2"]
    assert lost["status"] == "failed" and "unreachable" in lost["msg"] and "Connection refused" in lost["msg"], lost
    assert "no result" not in lost["msg"] and "lock" not in lost["msg"]
    # Which host is on which release: web1 rolled back, web2 lost, web3 left alone on the bad release.
    assert rep["host_releases"] == {"web1": GOOD, "web2": BAD, "web3": BAD}
    assert fleet.live("web1") == f"./releases/{GOOD}" and sup.version("web1") == GOOD
    assert fleet.live("web3") == f"./releases/{BAD}" and sup.version("web3") == BAD
    assert "web2" in (cli.run_dirs()[-1] / "report.md").read_text()


def test_a_dry_run_over_ssh_restarts_nothing_and_changes_no_file(cli, ssh_fleet):
    """``run -i ... --check`` over SSH: the switch and restart each host would get are shown, and no
    host's file, link or directory changes, and supervisord restarts nothing."""
    from treestate import SERVICE_FILES, changes, tree_state

    fleet, _ssh, sup = ssh_fleet
    pids = {h: sup.pid(h) for h in fleet.hosts}
    ignore = (*SERVICE_FILES, "hosts/*/app.log")  # supervisord's log of each application
    before = tree_state(fleet.root, ignore)

    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--check")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in fleet.hosts:
        assert f"--- before: {fleet.app_root(host)}/current" in proc.stdout
        assert fleet.live(host) == f"./releases/{BAD}" and sup.version(host) == BAD
    assert f"+-> ./releases/{GOOD}" in proc.stdout
    assert {h: sup.pid(h) for h in fleet.hosts} == pids  # nothing restarted
    assert changes(before, tree_state(fleet.root, ignore)) == []
    (run_dir,) = cli.run_dirs()
    assert json.loads((run_dir / "state.json").read_text())["lifecycle"]["state"] == "planned"
    assert (run_dir / "dry-run" / "report.md").read_text().startswith("# DRY RUN, nothing changed")
