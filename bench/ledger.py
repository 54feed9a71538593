"""The ledger's overhead per run, SQLite and PostgreSQL, next to a whole rollback's time.

    .venv/bin/python bench/ledger.py                  # 3 demo hosts, 3 rollbacks per backend
    .venv/bin/python bench/ledger.py --repeat 5 --pg postgresql://postgres@127.0.0.1:5432/postgres

For each backend: a whole rollback of the demo fleet (flags, code, Alembic database, load balancer,
validation, report) through the CLI, recording in a fresh ledger of that backend; then the same run's
ledger work replayed alone against another fresh ledger: the lock taken and given back, the known-bad
query, the plan, the approval, one state write and one audit copy per audit entry of the run (every
audit entry is followed by a copy; state is written less often, so this is an upper bound), the report
and its release marks. Prints medians and the machine. Not a test: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sqlalchemy as sa  # noqa: E402
from release_rollback.demo import build_fleet  # noqa: E402
from release_rollback.ledger import Ledger  # noqa: E402
from run import machine  # noqa: E402

CLI = str(Path(sys.executable).parent / "release-rollback")


def pg_database(admin: str):
    name = "rr_bench_" + uuid.uuid4().hex[:10]
    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with eng.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        eng.dispose()

    return sa.make_url(admin).set(database=name).render_as_string(hide_password=False), drop


def rollback(work: Path, url: str) -> tuple[float, Path]:
    fleet = build_fleet(work / "fleet", 3)
    try:
        env = dict(os.environ, RELEASE_ROLLBACK_LEDGER=url)
        start = time.perf_counter()
        done = subprocess.run(
            [CLI, "--runs-dir", str(work / "runs"), "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest),
             "--approver", "bench", "--yes"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the rollback failed: {done.stderr}")
    finally:
        fleet.stop()
    (run_dir,) = [p for p in (work / "runs").iterdir() if (p / "state.json").is_file()]
    return seconds, run_dir


def replay(url: str, run_dir: Path, work: Path) -> float:
    """The ledger work of ``run_dir``'s run, alone, against a fresh ledger at ``url``."""
    import yaml

    plan = yaml.safe_load((run_dir / "plan.yml").read_text())
    approval = json.loads((run_dir / "approval.json").read_text())
    state = json.loads((run_dir / "state.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    lines = (run_dir / "audit.jsonl").read_text().splitlines()
    copy = work / f"replay-{uuid.uuid4().hex[:6]}" / run_dir.name
    copy.mkdir(parents=True)
    trail = copy / "audit.jsonl"
    ledger = Ledger.connect(url)  # made and migrated before the clock starts, as on a ledger in use
    start = time.perf_counter()
    lock = ledger.acquire_lock("bench-env", run_dir.name, "bench")
    ledger.known_bad(plan.get("app"))
    ledger.save_run(run_dir.name, plan=plan, app=plan.get("app"))
    ledger.save_run(run_dir.name, approval=approval)
    with trail.open("w") as fh:
        for line in lines:
            fh.write(line + "\n")
            fh.flush()
            ledger.save_run(run_dir.name, state=state, exit_state=state.get("exit_state"))
            ledger.sync_audit(run_dir.name, trail)
    ledger.save_run(run_dir.name, report=report)
    ledger.record_from_report(report, state.get("inventory") or "")
    lock.release()
    seconds = time.perf_counter() - start
    if len(ledger.audit_rows(run_dir.name)) != len(lines):
        raise SystemExit("the replay lost audit entries")
    ledger.engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pg", default=os.environ.get("RR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()
    admin = sa.make_url(args.pg).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    print(machine())
    for backend in ("sqlite", "postgresql"):
        whole, ledger_s, entries = [], [], 0
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
                work = Path(tmp)
                drops = []
                if backend == "sqlite":
                    urls = [f"sqlite:///{work / 'run-ledger.db'}", f"sqlite:///{work / 'replay-ledger.db'}"]
                else:
                    made = [pg_database(admin) for _ in range(2)]
                    urls, drops = [u for u, _ in made], [d for _, d in made]
                try:
                    seconds, run_dir = rollback(work, urls[0])
                    whole.append(seconds)
                    ledger_s.append(replay(urls[1], run_dir, work))
                    entries = len((run_dir / "audit.jsonl").read_text().splitlines())
                finally:
                    for drop in drops:
                        drop()
        w, led = statistics.median(whole), statistics.median(ledger_s)
        print(
            f"{backend:<10} whole rollback (3 hosts, every stage) {w:6.2f} s · its ledger work "
            f"({entries} audit entries) {led * 1000:7.1f} ms = {100 * led / w:4.1f} % · median of {args.repeat}"
        )


if __name__ == "__main__":
    main()
