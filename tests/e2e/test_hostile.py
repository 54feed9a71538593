"""Hostile hosts, hostile input, hostile timing, through the CLI on real local fleets.

What the tool reads from a host is checked like input (a release is a real directory directly inside
``releases/`` with a release name); what it writes on a host never follows a link it did not create;
a manifest is bounded before it is parsed; a full disk, a read-only runs home and a damaged state
file are one sentence each; an audit trail rewritten with recomputed hashes fails ``audit verify``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import CLI, Cli
from helpers import assert_rolled_back, edit_manifest, fleet_state, report, resume_after_kill
from release_rollback import jobs

pytestmark = pytest.mark.e2e

STAND_IN = "20261125000000Z"  # newer than the good release, older than the bad one: the next candidate


def plan(cli, fleet, *extra: str):
    return cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), *extra)


def run(cli, fleet, *extra: str):
    return cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes", *extra)


def plan_doc(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "plan.yml").read_text())


def stand_in_release(fleet, host: str) -> Path:
    """A directory outside the app root that looks like a release, linked into ``releases/``."""
    stand_in = fleet.root / "elsewhere" / host
    shutil.copytree(fleet.app_root(host) / "releases" / fleet.good, stand_in)
    (stand_in / "REVISION").write_text(STAND_IN + "\n")
    os.symlink(stand_in, fleet.app_root(host) / "releases" / STAND_IN)
    return stand_in


# --------------------------------------------------------------- names and paths read from hosts
def test_a_link_in_releases_to_a_stand_in_directory_is_passed_over_and_never_made_current(cli, fleet):
    for host in fleet.hosts:
        stand_in_release(fleet, host)
    done = run(cli, fleet)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_rolled_back(fleet)  # the real previous release, not the newer link
    assert all(STAND_IN not in fleet.live(h) for h in fleet.hosts)
    (run_dir,) = cli.run_dirs()
    doc = plan_doc(run_dir)
    assert doc["to_version"] == fleet.good
    risk = next(r for r in doc["risks"] if "passed over" in r)
    assert f"releases/{STAND_IN} is a symbolic link (to {fleet.root / 'elsewhere' / 'web1'})" in risk
    assert doc["hosts"]["web2"]["passed_over"][STAND_IN].startswith("a symbolic link")
    # As an explicit target it is refused, and nothing changes.
    before = fleet_state(fleet)
    refused = plan(cli, fleet, "--target", STAND_IN)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"target release {STAND_IN} on host web1 is refused: releases/{STAND_IN} is a symbolic link" in (
        refused.stderr
    )
    assert fleet_state(fleet) == before


def test_release_directories_with_a_newline_or_shell_characters_in_their_names_are_passed_over(cli, fleet):
    releases = fleet.app_root("web2") / "releases"
    hostile = [STAND_IN + "\nx", "20261125000001Z;$(id)"]
    for name in hostile:
        shutil.copytree(releases / fleet.good, releases / name)
    proc = plan(cli, fleet)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = plan_doc(cli.run_dirs()[-1])
    assert doc["to_version"] == fleet.good
    assert {h: v["target"] for h, v in doc["hosts"].items()} == dict.fromkeys(fleet.hosts, fleet.good)
    assert doc["hosts"]["web2"]["passed_over"] == {
        repr(hostile[0]): "not a release name (letters, digits, '.', '_', '+' or '-' only)",
        hostile[1]: "not a release name (letters, digits, '.', '_', '+' or '-' only)",
    }
    risk = next(r for r in doc["risks"] if "passed over" in r)
    assert "web2: releases/'20261125000000Z\\nx' is not a release name" in risk
    assert "releases/20261125000001Z;$(id) is not a release name" in risk


def test_a_live_link_to_a_linked_release_blocks_the_plan(cli, fleet):
    stand_in_release(fleet, "web3")
    tmp = fleet.app_root("web3") / "current.new"
    os.symlink(f"./releases/{STAND_IN}", tmp)
    os.replace(tmp, fleet.app_root("web3") / "current")
    proc = plan(cli, fleet)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"current points to ./releases/{STAND_IN}, which is a symbolic link" in proc.stderr


# ------------------------------------------------------------ writes never follow a planted link
def test_planted_rolled_back_and_rollback_tmp_links_leave_their_targets_untouched(cli, fleet):
    victims = {}
    for name in ("mark-target", "tmp-target"):
        victims[name] = fleet.root / "victims" / name
        victims[name].parent.mkdir(exist_ok=True)
        victims[name].write_bytes(b"precious bytes that no rollback may change\n")
    mark = fleet.app_root("web2") / "releases" / fleet.bad / "ROLLED_BACK"
    os.symlink(victims["mark-target"], mark)
    tmp = fleet.hosts["web3"] / "etc" / "app.conf.rollback-tmp"
    os.symlink(victims["tmp-target"], tmp)
    conf_before = (fleet.hosts["web3"] / "etc" / "app.conf").read_bytes()
    proc = run(cli, fleet)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    for victim in victims.values():
        assert victim.read_bytes() == b"precious bytes that no rollback may change\n"
    # The hosts with a planted link fail with the path named, untouched; the other host is rolled back.
    code = report(cli.run_dirs()[-1])["steps"][2]
    assert code["hosts"]["web1"]["status"] == "ok"
    assert code["hosts"]["web2"]["status"] == "failed"
    assert f"{mark} is a symbolic link (to {victims['mark-target']})" in code["hosts"]["web2"]["msg"]
    assert f"{tmp} is a symbolic link (to {victims['tmp-target']})" in code["hosts"]["web3"]["msg"]
    assert fleet.live("web1") == f"./releases/{fleet.good}"
    assert fleet.live("web2") == fleet.live("web3") == f"./releases/{fleet.bad}"
    assert os.readlink(mark) == str(victims["mark-target"]) and os.readlink(tmp) == str(victims["tmp-target"])
    conf = fleet.hosts["web3"] / "etc" / "app.conf"
    assert not conf.is_symlink() and conf.read_bytes() == conf_before


def test_under_umask_000_the_run_directory_lock_and_release_record_stay_private(cli, fleet):
    env = dict(os.environ)
    proc = subprocess.run(
        [
            "sh",
            "-c",
            'umask 000 && exec "$@"',
            "sh",
            CLI,
            "--runs-dir",
            str(cli.runs),
            "run",
            "-i",
            str(fleet.inventory),
            "-m",
            str(fleet.manifest),
            "--approver",
            "alice",
            "--yes",
        ],
        cwd=cli.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    home = cli.runs.parent
    for directory in (cli.runs, run_dir, run_dir / "events", home / "locks"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for path in [home / "releases.jsonl", *run_dir.iterdir(), *(run_dir / "events").iterdir()]:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


# --------------------------------------------------------------------------------- bounded input
ALIAS_BOMB = """\
rollback_manifest:
  app: shop
  version: "20261126081500Z"
  flags:
    backend: http
    names: [new-checkout]
    request:
      method: PUT
      url: "https://flags.example.com/{flag}"
      body:
        a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
        c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
        d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
        e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
        f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
        g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
        h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    read_back: {url: "https://flags.example.com/{flag}", field: enabled, off_value: false}
"""


def written(text: str):
    def write(path: Path) -> Path:
        path.write_text(text)
        return path

    return write


def huge_manifest(path: Path, megabytes: int = 66) -> Path:
    line = b"      - flag-0000000000\n"
    with path.open("wb") as fh:
        fh.write(b"rollback_manifest:\n  app: shop\n  flags:\n    backend: flagd\n    file: /srv/flags.json\n")
        fh.write(b"    names:\n")
        fh.write(line * (megabytes * (1 << 20) // len(line)))
    return path


@pytest.mark.parametrize(
    "make,fragment",
    [
        (written(ALIAS_BOMB), "expands to more than 200000 values (YAML aliases?)"),
        (huge_manifest, "is larger than 1024 KiB"),
        (written("rollback_manifest:\n  reason: " + "[" * 40 + "]" * 40 + "\n"), "nests deeper"),
        (written("a: &x [1]\n" + "".join(f"k{i}: *x\n" for i in range(101))), "more than 100 YAML aliases"),
    ],
    ids=["alias-bomb", "66MB", "deep", "aliases"],
)
def test_an_oversized_manifest_is_refused_with_one_sentence_before_it_is_parsed(cli, tmp_path, make, fragment):
    manifest = make(tmp_path / "manifest.yml")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    proc = cli("plan", "-i", str(inventory), "-m", str(manifest))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert "over the limit for a release manifest" in proc.stderr and proc.stderr.count("\n") == 1


# --------------------------------------------------------------------- an anchored audit trail
def test_an_audit_trail_rewritten_with_recomputed_hashes_fails_audit_verify(cli, fleet):
    assert plan(cli, fleet).returncode == 0
    (run_dir,) = cli.run_dirs()
    intact = cli("audit", "verify", str(run_dir))
    assert intact.returncode == 0 and "every line keyed" in intact.stdout, intact.stdout + intact.stderr
    # History rewritten: who planned it, every hash recomputed, the head in state.json updated too.
    trail = run_dir / "audit.jsonl"
    prev, rows = "sha256:" + "0" * 64, []
    for line in trail.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("operator"):
            entry["operator"] = "mallory"
        entry["prev"] = prev
        body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        entry["hash"] = prev = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        rows.append(json.dumps(entry, sort_keys=True, separators=(",", ":")))
    trail.write_text("\n".join(rows) + "\n")
    state = json.loads((run_dir / "state.json").read_text())
    state["audit_head"] = {"hash": prev, "seq": len(rows)}
    (run_dir / "state.json").write_text(json.dumps(state))
    broken = cli("audit", "verify", str(run_dir))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "audit trail broken at line 1: line 1 does not carry the controller key's MAC" in broken.stderr


# ------------------------------------------------------- an interrupted stage keeps its facts
def wait_for(predicate, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def slow_lb_reload(fleet, seconds: float) -> Path:
    """The load balancer's reload takes ``seconds`` (a config that must drain connections): the stage is
    killed after the config was replaced and before it is verified."""
    script = fleet.root / "slow-reload.sh"
    started = fleet.root / "reloading"
    script.write_text(
        f"#!/bin/sh\ntouch {started}\nsleep {seconds}\n"
        f'exec {sys.executable} -m release_rollback.demo_service lb-reload "$1"\n'
    )
    script.chmod(0o755)
    edit_manifest(fleet, lambda m: m["infrastructure"].update(reload_command=f"{script} {fleet.lb}"))
    return started


def kill_9_when(cli, fleet, stage: str, happened) -> Path:
    """Run in the background, kill the driver with SIGKILL once ``happened()``, inside ``stage`` (before
    the stage published its result), and let its job die with it. Returns the run directory."""
    proc = cli.popen("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    wait_for(lambda: happened() or proc.poll() is not None, what=f"the {stage} stage to change something")
    proc.kill()
    proc.wait()
    (run_dir,) = cli.run_dirs()
    wait_for(lambda: not jobs.processes(f"{run_dir.name}:"), what="the job to die with its driver", timeout=20)
    entry = json.loads((run_dir / "state.json").read_text())["stages"][stage]
    assert "result" not in entry, f"the {stage} stage published before the kill: the test proves nothing"
    return run_dir


def test_kill_9_in_the_flags_stage_then_resume_reports_the_first_attempts_before_states(cli, fleet):
    on = fleet.flag()
    assert on["defaultVariant"] == "on" and on["targeting"]
    run_dir = kill_9_when(cli, fleet, "feature_flags", lambda: fleet.flag()["defaultVariant"] == "off")
    resume_after_kill(cli, fleet, run_dir, "feature_flags")
    flag = report(run_dir)["flags"]["new-checkout"]
    # The state before this run turned it off, targeting rule included, not the "off" the resume found.
    assert flag["before"] == {"state": "ENABLED", "defaultVariant": "on", "targeting": on["targeting"], "off": False}
    assert flag["after"]["off"] and flag["earlier_attempt"] is True and flag["time"]
    step = next(s for s in report(run_dir)["steps"] if s["stage"] == "feature_flags")
    assert [a["status"] for a in step["attempts"]] == ["interrupted"] and step["status"] == "ok"
    assert "feature_flags, attempt 1 of 2" in (run_dir / "report.md").read_text()


def test_kill_9_in_the_infrastructure_stage_then_resume_reports_the_file_it_restored_and_kept(cli, fleet):
    reloading = slow_lb_reload(fleet, 6)
    bad_conf = (fleet.lb / "upstreams.conf").read_bytes()
    run_dir = kill_9_when(cli, fleet, "infrastructure", reloading.exists)
    assert fleet.lb_release() == fleet.good  # replaced before the kill, not yet reloaded and verified
    resume_after_kill(cli, fleet, run_dir, "infrastructure")
    infra = report(run_dir)["infrastructure"]
    assert infra["restored"] is True and infra["earlier_attempt"] is True
    assert infra["kept"] == str(fleet.lb / "upstreams.conf.rolled-back")
    assert Path(infra["kept"]).read_bytes() == bad_conf
    step = next(s for s in report(run_dir)["steps"] if s["stage"] == "infrastructure")
    assert [a["status"] for a in step["attempts"]] == ["interrupted"]


# ------------------------------------------------------------------ failures as one sentence
@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
    return filler


def test_a_full_disk_is_one_sentence_and_resume_completes_once_space_returns(fleet, tmp_path):
    with tmpfs(tmp_path / "home", "size=4m,mode=0700") as home:
        runs = Cli(home / "runs", tmp_path)
        proc = runs.popen("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "a", "--yes")
        wait_for(lambda: any((d / "events" / "code_config.jsonl").exists() for d in runs.run_dirs()), "code_config")
        filler = fill(home)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, out + err
        (run_dir,) = runs.run_dirs()
        assert "could not be written (No space left on device); everything written before is intact" in err
        assert f"then `release-rollback resume {run_dir}`" in err and err.count("\n") == 1, err
        state = json.loads((run_dir / "state.json").read_text())  # the last state written, whole
        assert state["lifecycle"]["state"] == "running"
        assert "paused (interrupted)" in runs("status", str(run_dir)).stdout
        filler.unlink()
        resumed = runs("resume", str(run_dir))
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert_rolled_back(fleet)
        verified = runs("audit", "verify", str(run_dir))
        assert verified.returncode == 0 and "every line keyed" in verified.stdout, verified.stdout + verified.stderr
        # A damaged state file is one sentence, with the previous version to put back.
        good = (run_dir / "state.json").read_text()
        (run_dir / "state.json").write_text(good[: len(good) // 2])
        damaged = runs("status", str(run_dir))
        assert damaged.returncode == 2 and damaged.stderr.count("\n") == 1, damaged.stderr
        assert f"the run's state {run_dir / 'state.json'} is damaged" in damaged.stderr
        assert f"`cp {run_dir / 'state.json.prev'} {run_dir / 'state.json'}`" in damaged.stderr
        shutil.copy(run_dir / "state.json.prev", run_dir / "state.json")
        assert runs("status", str(run_dir)).returncode == 0


def test_a_read_only_runs_home_is_one_sentence_and_changes_nothing(fleet, tmp_path):
    before = fleet_state(fleet)
    with tmpfs(tmp_path / "ro", "size=1m,ro") as home:
        proc = Cli(home / "runs", tmp_path)("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the runs home {tmp_path / 'ro' / 'runs'} cannot be written (Read-only file system)" in proc.stderr
    assert "pass --runs-dir" in proc.stderr and proc.stderr.count("\n") == 1
    assert fleet_state(fleet) == before


# ----------------------------------------------------------------------- locks with a way out
def test_kill_9_while_assessing_then_a_new_run_with_break_lock_proceeds_at_once(cli, fleet):
    proc = cli.popen("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    locks = [fleet.app_root(h) / ".rollback.lock" for h in fleet.hosts]
    wait_for(lambda: all(p.exists() for p in locks), what="every host lock taken while assessing")
    wait_for(lambda: any((d / "host-locks.jsonl").exists() for d in cli.run_dirs()), what="the locks recorded")
    proc.kill()
    proc.wait()
    (dead,) = cli.run_dirs()
    wait_for(lambda: not jobs.processes(f"{dead.name}:"), what="the assess job to die", timeout=20)
    recorded = [json.loads(line)["host"] for line in (dead / "host-locks.jsonl").read_text().splitlines()]
    assert recorded and set(recorded) <= set(fleet.hosts)  # recorded as they were taken
    # Without --break-lock the holder is named, with the way out.
    refused = run(cli, fleet)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"locked by run {dead.name}" in refused.stderr and "--break-lock" in refused.stderr
    # The holder's driver is gone on this machine: --break-lock takes its locks at once (not after an hour).
    done = run(cli, fleet, "--break-lock")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_rolled_back(fleet)
    new = cli.run_dirs()[-1]
    broken = [
        e
        for e in (json.loads(x) for x in (new / "audit.jsonl").read_text().splitlines())
        if e["event"] == "host_lock.broken"
    ]
    assert sorted(e["host"] for e in broken) == sorted(fleet.hosts)
    assert {e["holder"]["run_id"] for e in broken} == {dead.name}
    assert not [p for p in locks if p.exists()]
