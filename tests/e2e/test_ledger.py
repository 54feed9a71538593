"""The ledger shared by every controller: environment locks, the release record, the audit trail and the
runs of a team, in PostgreSQL (the team's) and in SQLite (the embedded default, here shared as one file).

Each controller is a separate process with its own working directory, HOME and runs home; they share only
the ledger. For PostgreSQL, controller A also runs under a host name of its own (a UTS namespace), so that
the other controller cannot see whether A's process lives and must go by A's lease: two machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import CLI, need
from dbkit import PG_ADMIN, create, drop, server_up
from helpers import assert_rolled_back, audit_events
from release_rollback.demo import BAD, GOOD, build_fleet
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.e2e

OTHER_HOST = "controller-a.example"
LEASE = 6  # seconds; a controller renews its lease every LEASE/3 s while it works
# A run whose every stage is not needed for what a test proves (no run is paused or killed in it).
CODE_ONLY = ("--scope", "code_config")


def assert_code_rolled_back(fleet) -> None:
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)


@contextlib.contextmanager
def postgresql_ledger(tmp_path: Path):
    """A new PostgreSQL database with a password of its own, as the team's ledger."""
    need(server_up(PG_ADMIN), "PostgreSQL on 127.0.0.1:5432 (psycopg installed)")
    password = "pw-" + uuid.uuid4().hex
    db = create("postgresql", tmp_path, password=password)
    url = f"postgresql://{db.name}@127.0.0.1:5432/{db.name}"
    engine = sa.create_engine(f"postgresql+psycopg://{db.name}:{password}@127.0.0.1:5432/{db.name}")
    try:
        yield "postgresql", url, password, engine
    finally:
        engine.dispose()
        drop(db)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    """(backend, URL the controllers are given, the password if any, an engine to look inside)."""
    if request.param == "sqlite":
        path = tmp_path / "shared" / "ledger.db"
        path.parent.mkdir()
        url = f"sqlite:///{path}"
        yield "sqlite", url, None, sa.create_engine(url)
        return
    with postgresql_ledger(tmp_path) as pg:
        yield pg


@pytest.fixture
def pg_ledger(tmp_path):
    """The PostgreSQL ledger alone, for what needs two machines (a clock of each controller's own)."""
    with postgresql_ledger(tmp_path) as pg:
        yield pg


class Controller:
    """One operator's controller: its own cwd, HOME and runs home; the ledger is all it shares."""

    def __init__(self, root: Path, user: str, ledger_url: str, password: str | None, host: str | None = None):
        """``password`` goes to PGPASSWORD; a URL with a password is given as ``--ledger`` instead."""
        self.root, self.user, self.host = root, user, host
        self.prefix: list[str] = []
        (root / "home").mkdir(parents=True)
        (root / ".rollback").mkdir()  # the runs home of this working directory: .rollback/runs
        self.env = {k: v for k, v in os.environ.items() if k not in ("XDG_STATE_HOME", "RELEASE_ROLLBACK_RUNS_DIR")}
        self.env.update(HOME=str(root / "home"), USER=user, RELEASE_ROLLBACK_LOCK_LEASE=str(LEASE))
        if make_url(ledger_url).password:
            self.prefix = ["--ledger", ledger_url]
        else:
            self.env["RELEASE_ROLLBACK_LEDGER"] = ledger_url
        if password:
            self.env["PGPASSWORD"] = password

    @property
    def runs(self) -> Path:
        return self.root / ".rollback" / "runs"

    def argv(self, *args: str) -> list[str]:
        cmd = [CLI, *self.prefix, *args]
        if self.host:
            # Another machine: a host name of its own (its process cannot be seen as alive from elsewhere).
            cmd = ["unshare", "-u", "sh", "-c", 'hostname "$0" && exec "$@"', self.host, *cmd]
        return cmd

    def __call__(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def popen(self, *args: str) -> subprocess.Popen:
        """The command in a process group of its own (``os.killpg`` pauses or stops the run and its jobs)."""
        return subprocess.Popen(
            self.argv(*args), cwd=self.root, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip

    def own_copy(self, fleet, environment: str | None = None) -> tuple[Path, Path]:
        """This controller's own checkout of the fleet's inventory and manifest (another path than anyone's),
        the manifest naming ``environment`` when given."""
        source = Path(fleet.inventory)  # hosts.yml, with group_vars/ beside it
        shutil.copytree(source.parent, self.root / "checkout" / "inventory")
        inventory = self.root / "checkout" / "inventory" / source.name
        doc = yaml.safe_load(Path(fleet.manifest).read_text())
        if environment:
            doc.setdefault("rollback_manifest", doc)["environment"] = environment
        manifest = self.root / "checkout" / "manifest.yml"
        manifest.write_text(yaml.safe_dump(doc))
        return inventory, manifest

    def plan_and_approve(
        self, fleet, inventory: Path | None = None, manifest: Path | None = None, *options: str
    ) -> Path:
        inventory, manifest = inventory or fleet.inventory, manifest or fleet.manifest
        planned = self("plan", "-i", str(inventory), "-m", str(manifest), *options)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        (run_dir,) = [p for p in self.runs.iterdir() if (p / "state.json").is_file()]
        approved = self("approve", str(run_dir / "plan.yml"), "--approver", self.user)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        return run_dir


def in_stage(run_dir: Path, stage: str) -> bool:
    try:
        state = json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return state.get("current_stage") == stage and (run_dir / "events" / f"{stage}.jsonl").exists()


def files_holding(root: Path, secret: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if secret.encode() in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def test_two_controllers_race_one_proceeds_the_holder_is_named_and_taken_back_after_kill_9(ledger, fleet, tmp_path):
    backend, url, password, engine = ledger
    two_machines = backend == "postgresql"
    if two_machines:
        probe = subprocess.run(["unshare", "-u", "true"], capture_output=True)
        need(probe.returncode == 0, "unshare -u (a UTS namespace: root) to give controller A a host name of its own")
    # A is given the password inside --ledger (it goes to PGPASSWORD, never to disk); B has it in PGPASSWORD.
    a_url = url.replace("@", f":{password}@", 1) if password else url
    a = Controller(tmp_path / "ctl-a", "alice", a_url, None, OTHER_HOST if two_machines else None)
    b = Controller(tmp_path / "ctl-b", "bob", url, password)
    run_a = a.plan_and_approve(fleet)
    run_b = b.plan_and_approve(fleet)

    # Both start at once: exactly one proceeds, the other is refused at the environment lock, naming the holder.
    procs = {"a": a.popen("run", str(run_a / "plan.yml")), "b": b.popen("run", str(run_b / "plan.yml"))}
    runs = {"a": run_a, "b": run_b}
    deadline = time.monotonic() + 240
    winner = None
    while winner is None and time.monotonic() < deadline:
        winner = next((k for k in runs if in_stage(runs[k], "code_config")), None)
        time.sleep(0.05)
    assert winner, {k: p.poll() for k, p in procs.items()}
    loser = "b" if winner == "a" else "a"
    _out, err = procs[loser].communicate(timeout=120)
    assert procs[loser].returncode == 3, err
    holder_host = OTHER_HOST if (two_machines and winner == "a") else socket.gethostname()
    holder_user = {"a": "alice", "b": "bob"}[winner]
    for fact in (f"run {runs[winner].name} by {holder_user}", f"pid {procs[winner].pid} on {holder_host}"):
        assert fact in err, err
    assert "status --team" in err and "Nothing was changed" in err
    assert set(json.loads((runs[loser] / "state.json").read_text())["stages"]) == {"assess"}

    # kill -9 of the holder in the middle of the code stage.
    procs[winner].kill()
    procs[winner].communicate(timeout=60)
    ctl = {"a": a, "b": b}
    refused = ctl[loser]("run", str(runs[loser] / "plan.yml"))
    assert refused.returncode == 3
    assert f"run {runs[winner].name} by {holder_user}" in refused.stderr
    if two_machines:
        # From another machine the holder's process cannot be checked: its lease holds until it runs out.
        assert "lease runs" in refused.stderr, refused.stderr
        time.sleep(LEASE + 1)
        refused = ctl[loser]("run", str(runs[loser] / "plan.yml"))
        assert refused.returncode == 3
        assert "lease ran out" in refused.stderr, refused.stderr
    else:
        assert "its process is gone" in refused.stderr, refused.stderr
    assert "--break-lock" in refused.stderr and f"release-rollback resume {runs[winner].name}" in refused.stderr

    # The holder's own resume takes the lock back and finishes.
    resumed = ctl[winner]("resume", str(runs[winner]))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_rolled_back(fleet)
    recovered = [e for e in audit_events(runs[winner]) if e["event"] == "lock.recovered" and e.get("ledger")]
    assert recovered and holder_user in recovered[0]["stale_holder"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM ledger_locks")).scalar() == 0

    # The other controller sees the run, its report and its audit trail in the ledger, with no files of it.
    team = ctl[loser]("status", "--team", "--json")
    assert team.returncode == 0, team.stderr
    rows = {r["run_id"]: r for r in json.loads(team.stdout)["runs"]}
    assert rows[runs[winner].name]["exit_state"] == "completed"
    assert rows[runs[winner].name]["operator"] == holder_user
    verified = ctl[loser]("audit", "verify", runs[winner].name)
    assert verified.returncode == 0 and "intact in the ledger" in verified.stdout, verified.stdout + verified.stderr
    here = ctl[winner]("audit", "verify", str(runs[winner]))
    assert here.returncode == 0 and "holds the same" in here.stdout, here.stdout + here.stderr

    # The release it rolled back is known-bad for every controller: the loser's fleet of three releases
    # (the bad one in the middle) plans past it, naming the run that rolled it back.
    newer = "20261201000000Z"
    fleet3 = build_fleet(tmp_path / "fleet3", 1, start=False, releases=(GOOD, BAD, newer))
    try:
        planned = ctl[loser](
            "plan", "-i", str(fleet3.inventory), "-m", str(fleet3.manifest), "--scope", "code_config",
            "--json",
        )  # fmt: skip
        assert planned.returncode == 0, planned.stdout + planned.stderr
        plan = json.loads(planned.stdout)["plan"]
        assert plan["to_version"] == GOOD
        assert any(
            f"release {BAD} is recorded as rolled back (known-bad) by run {runs[winner].name}" in r
            for r in plan["risks"]
        )
    finally:
        fleet3.stop()
    history = ctl[loser]("history", "demo-shop", "--json")
    marks = [(r["version"], r["status"]) for r in json.loads(history.stdout)["releases"]]
    assert marks.count((BAD, "rolled_back")) == 1 and (GOOD, "good") in marks
    # Rendering the report again (sign-off) records nothing twice: duplicates are impossible.
    signed = ctl[winner]("signoff", str(runs[winner]), "--by", "carol")
    assert signed.returncode == 0, signed.stderr
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT COUNT(*) FROM ledger_releases WHERE version = :v"), {"v": BAD}).scalar() == 1
        )
        saved = json.loads(
            conn.execute(sa.text("SELECT report FROM ledger_runs WHERE run_id = :r"), {"r": runs[winner].name}).scalar()
        )
    assert saved["signoff"]["by"] == "carol"
    if password:
        # The password was on A's command line and in B's PGPASSWORD, and is in no file of either controller.
        assert files_holding(tmp_path / "ctl-a", password) == [] and files_holding(tmp_path / "ctl-b", password) == []
        assert password not in refused.stderr + team.stdout + verified.stdout


def wait_in_stage(proc: subprocess.Popen, run_dir: Path, stage: str = "code_config") -> None:
    deadline = time.monotonic() + 240
    while not in_stage(run_dir, stage):
        assert proc.poll() is None and time.monotonic() < deadline, (proc.poll(), proc.stderr and proc.stderr.read())
        time.sleep(0.05)


@contextlib.contextmanager
def jobs_paused(proc: subprocess.Popen):
    """Pause the run's ansible-playbook job (the controller's driver goes on, renewing its lease): the run
    holds its environment, in the middle of a stage, until the block ends."""
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the run has no job to pause"
    for pid in children:
        os.kill(int(pid), signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGCONT)


def test_controllers_with_their_own_checkouts_share_the_environment_the_manifest_names(ledger, fleet, tmp_path):
    """Two operators, each with a checkout of the same inventory and manifest at a path of their own: the
    manifest's ``environment`` makes them one environment, so while A's rollback holds it B cannot plan
    one, and the release record is kept under the environment's name, not a controller's file path."""
    _backend, url, password, engine = ledger
    a = Controller(tmp_path / "ctl-a", "alice", url, password)
    b = Controller(tmp_path / "ctl-b", "bob", url, password)
    a_inventory, a_manifest = a.own_copy(fleet, environment="production")
    b_inventory, b_manifest = b.own_copy(fleet, environment="production")
    assert a_inventory != b_inventory
    run_a = a.plan_and_approve(fleet, a_inventory, a_manifest)
    proc = a.popen("run", str(run_a / "plan.yml"))
    wait_in_stage(proc, run_a)
    with jobs_paused(proc):  # A holds the environment, in its code stage
        refused = b("plan", "-i", str(b_inventory), "-m", str(b_manifest))
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert f"run {run_a.name} by alice" in refused.stderr, refused.stderr
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert_rolled_back(fleet)
    with engine.connect() as conn:
        marks = conn.execute(sa.text("SELECT version, status, environment FROM ledger_releases")).all()
    assert (BAD, "rolled_back", "production") in [tuple(m) for m in marks], marks
    assert f"{BAD} rolled back (known-bad) in production" in (run_a / "report.md").read_text()
    # The team's view names the run's environment the same way.
    team = b("status", "--team", "--json")
    row = {r["run_id"]: r for r in json.loads(team.stdout)["runs"]}[run_a.name]
    assert row["environment"] == "production", row


def test_a_controller_whose_clock_runs_ahead_does_not_take_a_live_lease(pg_ledger, fleet, tmp_path):
    """Leases are given and compared in the ledger's clock: controller B, on another machine whose clock runs
    five minutes ahead, finds A's two-minute lease live (A is working) and ``--break-lock`` does not take it
    over."""
    _backend, url, password, _engine = pg_ledger
    need(shutil.which("faketime") is not None, "faketime (Debian package faketime)")
    probe = subprocess.run(["unshare", "-u", "true"], capture_output=True)
    need(probe.returncode == 0, "unshare -u (a UTS namespace: root) to give controller A a host name of its own")
    a = Controller(tmp_path / "ctl-a", "alice", url, password, OTHER_HOST)
    b = Controller(tmp_path / "ctl-b", "bob", url, password)
    a.env["RELEASE_ROLLBACK_LOCK_LEASE"] = "120"
    run_a = a.plan_and_approve(fleet)
    run_b = b.plan_and_approve(fleet)
    proc = a.popen("run", str(run_a / "plan.yml"))
    wait_in_stage(proc, run_a)
    with jobs_paused(proc):  # A is working (its lease renewed), in its code stage
        ahead = subprocess.run(
            ["faketime", "-f", "+300s", *b.argv("run", str(run_b / "plan.yml"), "--break-lock")],
            cwd=b.root, env=b.env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert ahead.returncode == 3, ahead.stdout + ahead.stderr
        assert f"run {run_a.name} by alice" in ahead.stderr and "lease runs" in ahead.stderr, ahead.stderr
        assert set(json.loads((run_b / "state.json").read_text())["stages"]) == {"assess"}
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert_rolled_back(fleet)


def test_a_copy_of_a_run_brought_back_from_the_ledger_does_not_execute_its_plan_again(ledger, fleet, tmp_path):
    """B looks at A's approved run by its id (its directory is written on B's controller from the ledger);
    A then runs it to the end. B's copy, still approved, is refused: the plan executed once, on A."""
    _backend, url, password, _engine = ledger
    a = Controller(tmp_path / "ctl-a", "alice", url, password)
    b = Controller(tmp_path / "ctl-b", "bob", url, password)
    run_a = a.plan_and_approve(fleet, None, None, *CODE_ONLY)
    seen = b("status", run_a.name)
    assert seen.returncode == 0, seen.stdout + seen.stderr
    copy = b.runs / run_a.name
    assert "written there from the ledger" in seen.stderr and (copy / "approval.json").is_file()
    done = a("run", str(run_a / "plan.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert_code_rolled_back(fleet)
    again = b("run", str(copy / "plan.yml"))
    assert again.returncode == 3, again.stdout + again.stderr
    assert f"run {run_a.name} went on from another copy ({run_a}" in again.stderr, again.stderr
    assert "ended completed" in again.stderr and "execute its plan again" in again.stderr
    assert set(json.loads((copy / "state.json").read_text())["stages"]) == {"assess"}
    assert_code_rolled_back(fleet)


def test_an_awx_node_killed_in_its_code_stage_is_resumed_by_the_next_node_from_the_ledger(fleet, tmp_path):
    """The run's first node is killed (-9) in the code stage and its working directory deleted, as AWX does
    with a job's container; the next node resumes the run by its id alone, from the ledger, to the end."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = Controller(tmp_path / "node-1", "awx", ledger_url, None)
    run_dir = first.plan_and_approve(fleet)
    proc = first.popen("run", str(run_dir / "plan.yml"))
    wait_in_stage(proc, run_dir)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    shutil.rmtree(first.root)
    second = Controller(tmp_path / "node-2", "awx", ledger_url, None)
    resumed = second("resume", run_dir.name)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "written there from the ledger" in resumed.stderr
    assert_rolled_back(fleet)
    state = json.loads((second.runs / run_dir.name / "state.json").read_text())
    assert state["exit_state"] == "completed"
    events = [e["event"] for e in audit_events(second.runs / run_dir.name)]
    assert "lock.recovered" in events


def _cli(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_audit_chain_in_the_ledger_detects_an_edited_a_deleted_and_a_reordered_row(ledger, tmp_path, monkeypatch):
    """Runs recorded by one controller are imported into the team's ledger (twice: nothing doubles), then
    rows are edited, deleted, reordered and cut short in the database; ``audit verify RUN_ID`` from another
    place finds each, and with the run directory at hand it says where the two copies disagree."""
    from release_rollback.ledger import open_ledger
    from release_rollback.rundir import RunDir

    _backend, url, password, engine = ledger
    home = tmp_path / "old-controller" / ".rollback"
    monkeypatch.setenv("RELEASE_ROLLBACK_LEDGER", f"sqlite:///{tmp_path / 'old-controller' / 'own.db'}")
    runs = {}
    for name in ("intact", "edited", "deleted", "reordered", "cut", "disagree"):
        rundir = RunDir.create(home / "runs", run_id=f"20261206T0000{len(runs):02d}-{name}")
        for i in range(4):
            rundir.audit("step.done", step=i, operator="alice")
        rundir.write_state({"run_id": rundir.run_id, "operator": "alice", "inventory": "/srv/inv.yml", "stages": {}})
        runs[name] = rundir
    open_ledger(home / "runs").engine.dispose()
    env = {k: v for k, v in os.environ.items() if k != "RELEASE_ROLLBACK_RUNS_DIR"}
    env.update(RELEASE_ROLLBACK_LEDGER=url, HOME=str(tmp_path / "elsewhere"))
    if password:
        env["PGPASSWORD"] = password
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / ".rollback").mkdir(parents=True)
    first = _cli(elsewhere, env, "ledger", "import", str(home))
    assert first.returncode == 0 and "6 runs, 24 audit entries" in first.stdout, first.stdout + first.stderr
    again = _cli(elsewhere, env, "ledger", "import", str(home))
    assert again.returncode == 0 and "6 runs, 0 audit entries" in again.stdout, again.stdout + again.stderr
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM ledger_audit")).scalar() == 24

    def rid(name: str) -> dict:
        return {"r": runs[name].run_id}

    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ledger_audit SET entry = REPLACE(entry, 'alice', 'mallory') WHERE run_id = :r AND seq = 2"),
            rid("edited"),
        )
        conn.execute(sa.text("DELETE FROM ledger_audit WHERE run_id = :r AND seq = 2"), rid("deleted"))
        for old, new in ((2, -2), (3, 2), (-2, 3)):
            conn.execute(
                sa.text("UPDATE ledger_audit SET seq = :new WHERE run_id = :r AND seq = :old"),
                {**rid("reordered"), "old": old, "new": new},
            )
        conn.execute(sa.text("DELETE FROM ledger_audit WHERE run_id = :r AND seq = 4"), rid("cut"))
    expected = {
        "edited": "row 2 was edited",
        "deleted": "row 2 is out of place",
        "reordered": "row 2 is out of place",
        "cut": "rows were removed",
    }
    for name, problem in expected.items():
        checked = _cli(elsewhere, env, "audit", "verify", runs[name].run_id)
        assert checked.returncode == 1, (name, checked.stdout, checked.stderr)
        assert "the audit trail in the ledger" in checked.stderr and problem in checked.stderr, (name, checked.stderr)
    intact = _cli(elsewhere, env, "audit", "verify", runs["intact"].run_id)
    assert intact.returncode == 0 and "4 entries" in intact.stdout, intact.stdout + intact.stderr
    # The run directory's copy and the ledger's, each a valid chain, no longer say the same.
    from release_rollback import content

    content.module_utils("audit").append(str(runs["disagree"].audit_file), "step.done", step=99, operator="mallory")
    both = _cli(elsewhere, env, "audit", "verify", str(runs["disagree"].path))
    assert both.returncode == 1 and "disagree from entry 5" in both.stderr, both.stdout + both.stderr
    unknown = _cli(elsewhere, env, "audit", "verify", "20991231T000000-0000")
    assert unknown.returncode == 2 and "in the ledger" in unknown.stderr


def test_an_awx_style_run_whose_job_directory_is_deleted_after_every_node_keeps_its_record_in_the_ledger(
    ledger, tmp_path
):
    """Each workflow node runs in a fresh working directory and HOME that is deleted after it: the run, the
    sign-off node (which gets the run back with ``ledger export``), and a last look from a third place."""
    _backend, url, password, engine = ledger
    fleet = build_fleet(tmp_path / "fleet", 1)
    try:

        def node(name: str):
            work = tmp_path / "job" / name
            (work / ".rollback").mkdir(parents=True)
            env = {k: v for k, v in os.environ.items() if k not in ("XDG_STATE_HOME", "RELEASE_ROLLBACK_RUNS_DIR")}
            env.update(HOME=str(work), USER="awx", RELEASE_ROLLBACK_LEDGER=url)
            if password:
                env["PGPASSWORD"] = password
            return work, lambda *args: _cli(work, env, *args)

        work, cli = node("rollback")
        done = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert_rolled_back(fleet)
        (run_id,) = [p.name for p in (work / ".rollback" / "runs").iterdir() if (p / "state.json").is_file()]
        shutil.rmtree(work)

        # The sign-off node names the run by its id alone: its directory is written from the ledger first.
        work, cli = node("signoff")
        signed = cli("signoff", run_id, "--by", "rm-on-call", "--role", "release manager")
        assert signed.returncode == 0, signed.stdout + signed.stderr
        assert f"run {run_id} is not under" in signed.stderr and "written there from the ledger" in signed.stderr
        assert (work / ".rollback" / "runs" / run_id / "report.md").is_file()
        shutil.rmtree(work)
        # An id that no ledger holds is refused, and nothing is written.
        work, cli = node("typo")
        missing = cli("status", "20991231T000000-0000")
        assert missing.returncode == 2 and "nor the id of a run under" in missing.stderr, missing.stderr
        assert not (work / ".rollback" / "runs" / "20991231T000000-0000").exists()
        shutil.rmtree(work)

        work, cli = node("later")
        verified = cli("audit", "verify", run_id)
        assert verified.returncode == 0 and "intact in the ledger" in verified.stdout, verified.stdout + verified.stderr
        team = json.loads(cli("status", "--team", "--json").stdout)
        (row,) = [r for r in team["runs"] if r["run_id"] == run_id]
        assert row["exit_state"] == "completed" and row["operator"] == "awx"
        with engine.connect() as conn:
            saved = json.loads(
                conn.execute(sa.text("SELECT report FROM ledger_runs WHERE run_id = :r"), {"r": run_id}).scalar()
            )
            events = [
                e for (e,) in conn.execute(sa.text("SELECT event FROM ledger_audit WHERE run_id = :r"), {"r": run_id})
            ]
        assert saved["exit_state"] == "completed" and saved["signoff"]["by"] == "rm-on-call"
        assert "report.written" in events and "signoff.recorded" in events
        # The report as people read it comes back as files, from the ledger alone.
        again = cli("ledger", "export", str(work / "copy"), "--run", run_id)
        assert again.returncode == 0, again.stderr
        assert "rm-on-call" in (work / "copy" / run_id / "report.md").read_text()
        history = json.loads(cli("history", "demo-shop", "--json").stdout)["releases"]
        assert {(r["version"], r["status"], r["run_id"]) for r in history} >= {(BAD, "rolled_back", run_id)}
    finally:
        fleet.stop()
