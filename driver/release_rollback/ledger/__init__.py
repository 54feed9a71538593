"""The rollback ledger: runs, the release record, environment locks and the audit trail in a database.

One implementation (SQLAlchemy Core, schema by Alembic migrations) for two backends:

- SQLite, the default: ``ledger.db`` next to the runs directory (``.rollback/ledger.db``), no set-up;
- PostgreSQL for a team and AWX: ``--ledger postgresql://USER@HOST/DB`` or ``$RELEASE_ROLLBACK_LEDGER``.
  The password comes from libpq (``PGPASSWORD``, ``~/.pgpass``); one given inside the URL is moved to
  ``PGPASSWORD`` of this process at once and is never written anywhere: every URL shown is redacted.

The run directory stays as the files people and tools read; every write of it (plan, approval, state,
audit entries, report) is copied into the ledger, and the ledger is what other controllers see: their
locks, their known-bad releases, their runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from .. import content
from ..rundir import environment_of
from . import schema

auditlib = content.module_utils("audit")

ENV = "RELEASE_ROLLBACK_LEDGER"
LEASE_ENV = "RELEASE_ROLLBACK_LOCK_LEASE"  # seconds a controller lock's lease lasts without renewal
DEFAULT_LEASE = 120.0
MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0001_ledger"  # the newest migration under migrations/versions (a unit test keeps them equal)


class LedgerError(RuntimeError):
    """The ledger cannot be used; one sentence with the fix, the URL redacted."""


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def redact(url: str) -> str:
    """The URL as it may be shown: any password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<a ledger URL that cannot be parsed>"


def configure(url: str) -> str:
    """Use the ledger at ``url`` in this process and the commands it starts (``--ledger``).

    A password inside the URL goes to ``PGPASSWORD`` and out of the URL; returns the redacted URL."""
    try:
        parsed = make_url(url)
    except Exception:
        raise LedgerError(
            "--ledger is not a database URL: give sqlite:////path/ledger.db or postgresql://USER@HOST/DB "
            "(the password in PGPASSWORD or ~/.pgpass)"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"--ledger {redact(url)} is neither SQLite nor PostgreSQL: give sqlite:////path/ledger.db or "
            "postgresql://USER@HOST/DB (the password in PGPASSWORD or ~/.pgpass)"
        )
    if parsed.password:
        os.environ["PGPASSWORD"] = str(parsed.password)
        parsed = sa.URL.create(
            parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
        )
    clean = parsed.render_as_string(hide_password=False)
    os.environ[ENV] = clean
    return clean


def ledger_url(runs_root: Path) -> str:
    """``$RELEASE_ROLLBACK_LEDGER`` (set by ``--ledger``), else SQLite next to the runs directory."""
    given = os.environ.get(ENV)
    if given:
        return configure(given) if make_url(given).password else given
    return f"sqlite:///{Path(runs_root).absolute().parent / 'ledger.db'}"


def _engine_url(url: str):
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"the ledger {redact(url)} is neither SQLite nor PostgreSQL: give sqlite:////path/ledger.db or "
            "postgresql://USER@HOST/DB"
        )
    return parsed


_OPEN: dict[str, Ledger] = {}
_OPEN_LOCK = threading.Lock()


def open_ledger(runs_root: Path) -> Ledger:
    """The ledger this process uses for runs under ``runs_root`` (created and migrated on first use)."""
    url = ledger_url(runs_root)
    with _OPEN_LOCK:
        if url not in _OPEN:
            _OPEN[url] = Ledger.connect(url)
        return _OPEN[url]


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _load(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def lease_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE))
    except ValueError:
        return DEFAULT_LEASE


def _alive(pid: int) -> bool:
    from ..locks import alive

    return alive(pid)


@dataclass
class LeaseLock:
    """An environment lock held in the ledger; renewed in the background until ``release``."""

    ledger: Ledger
    name: str
    holder: dict[str, Any]
    taken_over: dict[str, Any] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LeaseLock:
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        lease = lease_seconds()
        while not self._stop.wait(lease / 3):
            with contextlib.suppress(Exception), self.ledger.engine.begin() as conn:
                conn.execute(
                    sa.update(schema.locks)
                    .where(schema.locks.c.name == self.name, schema.locks.c.token == self.holder["token"])
                    .values(expires=self.ledger.clock(conn) + lease)
                )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception), self.ledger.engine.begin() as conn:
            conn.execute(
                sa.delete(schema.locks).where(
                    schema.locks.c.name == self.name, schema.locks.c.token == self.holder["token"]
                )
            )


class Ledger:
    """The one interface to the ledger's database."""

    def __init__(self, url: str, engine: sa.Engine):
        self.url = redact(url)
        self.engine = engine

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    # ---------------------------------------------------------------------------- connection
    @classmethod
    def connect(cls, url: str) -> Ledger:
        eng_url = _engine_url(url)
        kwargs: dict[str, Any] = {}
        if eng_url.get_backend_name() == "sqlite":
            path = eng_url.database
            if path and path != ":memory:":
                from ..rundir import make_private_dirs

                make_private_dirs(Path(path).parent)
                # The file is the controller's alone (0600 whatever the umask).
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 10, "application_name": "release-rollback"}
        try:
            engine = sa.create_engine(eng_url, **kwargs)
        except Exception as exc:
            raise LedgerError(f"the ledger {redact(url)} cannot be opened ({_first_line(exc)})") from None
        ledger = cls(url, engine)
        ledger.migrate()
        return ledger

    @contextlib.contextmanager
    def _sqlite_migration_lock(self):
        """Two processes starting on a new SQLite ledger: one migrates, the other waits, then finds it done.
        (SQLite's deferred transactions would let both read "no schema" and both create the tables.)"""
        path = self.engine.url.database if self.backend == "sqlite" else None
        if not path or path == ":memory:":
            yield
            return
        fd = os.open(f"{path}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic), one controller at a time."""
        try:
            with self.engine.connect() as conn:
                # The usual case, without loading Alembic: the schema is at the newest migration.
                if sa.inspect(conn).has_table("ledger_schema_version"):
                    current = conn.execute(sa.text("SELECT version_num FROM ledger_schema_version")).scalar()
                    if current == HEAD:
                        return
            from alembic import command
            from alembic.config import Config
            from alembic.runtime.migration import MigrationContext
            from alembic.script import ScriptDirectory

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            head = ScriptDirectory.from_config(cfg).get_current_head()
            with self._sqlite_migration_lock(), self.engine.begin() as conn:
                if self.backend == "postgresql":
                    # Two controllers starting on a new ledger: one migrates, the other waits, then finds it done.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7100171)"))
                ctx = MigrationContext.configure(conn, opts={"version_table": "ledger_schema_version"})
                if ctx.get_current_revision() != head:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(
                f"the ledger {self.url} cannot be reached or set up ({_first_line(exc)}): check --ledger "
                f"(or ${ENV}), that the server runs and that the password is in PGPASSWORD or ~/.pgpass"
            ) from None

    # ----------------------------------------------------------------------------------- runs
    def _upsert(self, conn, table, key: dict[str, Any], values: dict[str, Any]) -> None:
        where = [table.c[k] == v for k, v in key.items()]
        if conn.execute(sa.update(table).where(*where).values(**values)).rowcount == 0:
            conn.execute(sa.insert(table).values(**key, **values))

    def save_run(self, run_id: str, **values: Any) -> None:
        cols = set(schema.runs.c.keys())
        row = {k: (_dump(v) if k in ("plan", "approval", "state", "report") else v) for k, v in values.items()}
        row = {k: v for k, v in row.items() if k in cols}
        row["updated"] = utcnow()
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    self._upsert(conn, schema.runs, {"run_id": run_id}, row)
                return
            except sa.exc.IntegrityError:
                if attempt:
                    raise

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schema.runs).where(schema.runs.c.run_id == run_id)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        for key in ("plan", "approval", "state", "report"):
            out[key] = _load(out[key])
        return out

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        cols = [c for c in schema.runs.c if c.name not in ("plan", "approval", "state", "report")]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols).order_by(schema.runs.c.created.desc()).limit(limit)).mappings()
            return [dict(r) for r in rows]

    def run_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(schema.runs.c.run_id).order_by(schema.runs.c.run_id))]

    # ------------------------------------------------------------------------- release record
    def record_release(
        self,
        app: str,
        environment: str,
        version: str,
        status: str,
        run_id: str | None,
        rolled_back_to: str | None = None,
        rca: str | None = None,
        at: str | None = None,
    ) -> bool:
        """Mark ``version`` of ``app`` in ``environment`` rolled back (known-bad) or good.

        One row per release (a UNIQUE constraint): a rolled-back mark replaces a good one; a good mark
        never replaces a rolled-back one (a known-bad release stays known-bad). Returns whether it changed."""
        t = schema.releases
        values = {"status": status, "run_id": run_id, "rolled_back_to": rolled_back_to, "rca": rca}
        values["time"] = at or utcnow()
        key = {"app": app, "environment": environment, "version": version}
        where = [t.c.app == app, t.c.environment == environment, t.c.version == version]
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    current = conn.execute(sa.select(t.c.status, t.c.run_id, t.c.rca).where(*where)).first()
                    if current is None:
                        conn.execute(sa.insert(t).values(**key, **values))
                        return True
                    if current.status == "rolled_back" and status == "good":
                        return False
                    if (current.status, current.run_id) == (status, run_id):
                        if rca and rca != current.rca:
                            conn.execute(sa.update(t).where(*where).values(rca=rca))
                            return True
                        return False
                    conn.execute(sa.update(t).where(*where).values(**values))
                    return True
            except sa.exc.IntegrityError:
                # Another controller recorded the same release meanwhile: read its mark and decide again.
                if attempt:
                    raise
        return False

    def known_bad(self, app: str | None) -> dict[str, str | None]:
        """Releases of ``app`` rolled back in any environment, by anyone: version -> run id."""
        t = schema.releases
        query = sa.select(t.c.version, t.c.run_id).where(t.c.status == "rolled_back")
        if app:
            query = query.where(t.c.app == app)
        with self.engine.connect() as conn:
            return {str(v): r for v, r in conn.execute(query.order_by(t.c.time))}

    def history(self, app: str) -> list[dict[str, Any]]:
        t = schema.releases
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.app == app).order_by(t.c.version.desc(), t.c.environment))
            return [dict(r) for r in rows.mappings()]

    def all_releases(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(schema.releases).order_by(schema.releases.c.id)).mappings()]

    # ----------------------------------------------------------------------------------- locks
    def clock(self, conn) -> float:
        """The ledger's time (seconds since the epoch) that every lease is given and compared in.

        PostgreSQL's server clock, so that controllers whose own clocks disagree still agree on whether
        a lease ran out; a SQLite ledger is on this machine, whose clock it is."""
        if self.backend == "postgresql":
            return float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar())
        return time.time()

    def lock_holder(self, name: str) -> tuple[dict[str, Any] | None, float]:
        """The holder of ``name`` (or None) and the ledger's time it was read at."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schema.locks).where(schema.locks.c.name == name)).mappings().first()
            now = self.clock(conn)
        return (dict(row) if row else None), now

    @staticmethod
    def stale(holder: dict[str, Any], now: float) -> str | None:
        """Why ``holder`` cannot be working any more at the ledger's time ``now`` (its lease ran out, or its
        process is gone here), or None."""
        if float(holder["expires"]) < now:
            return f"its lease ran out {int(now - float(holder['expires']))} s ago"
        if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid") or -1)):
            return "its process is gone"
        return None

    def check_lock(self, name: str) -> None:
        """Raise LockHeld when a rollback that may still be working holds ``name`` in the ledger."""
        from ..locks import LockHeld

        holder, now = self.lock_holder(name)
        if holder and not self.stale(holder, now):
            raise LockHeld(self._held_message(holder, now))

    def _held_message(self, holder: dict[str, Any], now: float) -> str:
        from ..locks import describe

        return (
            f"another rollback holds this environment in the ledger {self.url}: {describe(holder, now)}; its lease "
            f"runs {max(0, int(float(holder['expires']) - now))} s more and is renewed while it works: wait "
            "for it to end, or see the team's runs with `release-rollback status --team`"
        )

    def acquire_lock(
        self, name: str, run_id: str, operator: str, run_dir: str | None = None, break_stale: bool = False
    ) -> LeaseLock:
        """Take the environment lock ``name`` (one transaction: an insert, or a compare-and-swap of a stale
        holder) or raise LockHeld naming the holder and the way out."""
        from ..locks import LockHeld, describe

        t = schema.locks
        holder = {
            "name": name,
            "run_id": run_id,
            "run_dir": run_dir,
            "operator": operator,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": os.urandom(8).hex(),
        }
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    # Lease times are the ledger's (clock), never this controller's own.
                    now = self.clock(conn)
                    holder.update(since=now, expires=now + lease_seconds())
                    conn.execute(sa.insert(t).values(**holder))
                return LeaseLock(self, name, holder).start()
            except sa.exc.IntegrityError:
                pass
            current, now = self.lock_holder(name)
            if current is None:
                continue
            why = self.stale(current, now)
            if why is None:
                raise LockHeld(self._held_message(current, now))
            if not (break_stale or current.get("run_id") == run_id):
                raise LockHeld(
                    f"a stale lock from a rollback that stopped ({why}) holds this environment in the ledger "
                    f"{self.url}: {describe(current, now)}; if that run is really gone, run again with --break-lock "
                    f"(it is audited), or finish it with `release-rollback resume {current.get('run_id')}` "
                    "on its controller"
                )
            with self.engine.begin() as conn:
                now = self.clock(conn)
                holder.update(since=now, expires=now + lease_seconds())
                swapped = conn.execute(
                    sa.update(t).where(t.c.name == name, t.c.token == current["token"]).values(**holder)
                ).rowcount
            if swapped == 1:
                return LeaseLock(self, name, holder, taken_over=dict(current, stale=why)).start()
        raise LockHeld(f"the ledger's lock {name} keeps changing hands: another rollback is starting; try again")

    # ----------------------------------------------------------------------------------- audit
    def audit_rows(self, run_id: str) -> list[dict[str, Any]]:
        t = schema.audit
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.run_id == run_id).order_by(t.c.seq)).mappings()
            return [dict(r) for r in rows]

    def sync_audit(self, run_id: str, audit_file: Path) -> int:
        """Copy the entries of ``audit_file`` the ledger does not have yet, continuing its chain; returns
        how many. Entries that do not continue the ledger's chain are not copied (``audit verify`` says so)."""
        t = schema.audit
        if not audit_file.is_file():
            return 0
        with self.engine.begin() as conn:
            last = conn.execute(
                sa.select(t.c.seq, t.c.hash).where(t.c.run_id == run_id).order_by(t.c.seq.desc()).limit(1)
            ).first()
            seq, prev = (last.seq, last.hash) if last else (0, auditlib.GENESIS)
            new = []
            for line in audit_file.read_text(encoding="utf-8").splitlines()[seq:]:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break
                follows = entry.get("prev") == prev and entry.get("seq") == seq + 1
                if not follows or entry.get("hash") != auditlib.entry_hash(entry):
                    break
                seq, prev = seq + 1, entry["hash"]
                new.append(
                    {
                        "run_id": run_id,
                        "seq": seq,
                        "event": str(entry.get("event"))[:100],
                        "hash": entry["hash"],
                        "prev": entry["prev"],
                        "entry": json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str),
                    }
                )
            if new:
                conn.execute(sa.insert(t), new)
        return len(new)

    def compare_audit(self, run_id: str, audit_file: Path) -> dict[str, Any]:
        """The run directory's audit hashes next to the ledger's: ``file``, ``ledger`` (rows, in order) and
        ``differs_at``, the first entry (1-based) where they part, or None when they are the same. When
        one is the other cut short, they part just after the shorter one."""
        file_hashes: list[str] = []
        if audit_file.is_file():
            for line in audit_file.read_text(encoding="utf-8").splitlines():
                try:
                    file_hashes.append(str(json.loads(line)["hash"]))
                except (ValueError, KeyError, TypeError):
                    break  # a torn last line: the entries before it are the file's
        rows = self.audit_rows(run_id)
        ledger_hashes = [r["hash"] for r in rows]
        differs_at = None
        if file_hashes != ledger_hashes:
            differs_at = next(
                (i + 1 for i, (a, b) in enumerate(zip(file_hashes, ledger_hashes, strict=False)) if a != b),
                min(len(file_hashes), len(ledger_hashes)) + 1,
            )
        return {"file": file_hashes, "ledger": rows, "differs_at": differs_at}

    def went_on_elsewhere(self, run_id: str, audit_file: Path) -> str | None:
        """Why this copy of run ``run_id`` (its ``audit_file``) is behind the ledger's, or None.

        Another copy of the run (another controller's, brought back from the ledger earlier) went on
        when the ledger holds an audit entry this copy does not: one past its end, or another at the
        same place. Running this copy then would execute the plan a second time."""
        compared = self.compare_audit(run_id, audit_file)
        at, rows = compared["differs_at"], compared["ledger"]
        if at is None or at > len(rows):
            return None  # the same, or this copy is ahead (entries the ledger has not been sent yet)
        row = self.get_run(run_id) or {}
        where = f"{row.get('run_dir')} on {row.get('controller')}" if row.get("run_dir") else "another controller"
        ended = f", and ended {row['exit_state']}" if row.get("exit_state") else ""
        return (
            f"run {run_id} went on from another copy ({where}{ended}): the ledger {self.url} holds its audit entry "
            f"{at} ({rows[at - 1]['event']}), which this directory does not, so running it here would execute its "
            f"plan again; see `release-rollback status {run_id}` where it ran, or plan again"
        )

    def verify_audit(self, run_id: str, expected_head: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check the run's chain in the ledger: every row's hash, its link to the row before, its place.
        ``expected_head`` (the head the run's state recorded) also catches removed last rows."""
        rows = self.audit_rows(run_id)
        prev, n = auditlib.GENESIS, 0
        for row in rows:
            n += 1
            bad = None
            entry = _load(row["entry"])
            if not isinstance(entry, dict) or not row["hash"] == entry.get("hash") == auditlib.entry_hash(entry):
                bad = f"row {n} was edited: its content no longer matches its hash"
            elif row["seq"] != n or entry.get("seq") != n:
                bad = (
                    f"row {n} is out of place (seq {row['seq']}, entry {entry.get('seq')}): "
                    "rows were removed or reordered"
                )
            elif entry.get("prev") != prev:
                bad = f"row {n} does not follow row {n - 1}: a row was edited, removed or reordered"
            if bad:
                return {"ok": False, "entries": len(rows), "broken_at": n, "problem": bad}
            prev = entry["hash"]
        if expected_head and isinstance(expected_head.get("seq"), int) and expected_head["seq"] > n:
            return {
                "ok": False,
                "entries": n,
                "broken_at": n + 1,
                "problem": f"the run recorded {expected_head['seq']} entries but the ledger has {n}: rows were removed",
            }
        if expected_head and expected_head.get("seq") == n and expected_head.get("hash") not in (None, prev):
            return {
                "ok": False,
                "entries": n,
                "broken_at": n,
                "problem": f"row {n} is not the entry the run recorded last",
            }
        return {"ok": True, "entries": n, "broken_at": None, "problem": "", "head": prev}

    # --------------------------------------------------------------------- the run directory
    def sync_run(self, rundir, report: bool = True) -> None:
        """Copy what the run directory holds into the ledger: plan, approval, state, audit entries, report,
        and the release record the report carries."""
        run_id = rundir.run_id
        state = {}
        if (rundir.path / "state.json").is_file():
            with contextlib.suppress(Exception):
                state = rundir.read_state()
        plan = None
        if rundir.plan_file.is_file():
            with contextlib.suppress(Exception):
                plan = rundir.read_plan()
        # A run without the driver (ansible-playbook, AWX) has no state.json: its plan names the environment.
        environment = environment_of(state) or environment_of(plan or {})
        values: dict[str, Any] = {
            "run_dir": str(rundir.path),
            "controller": socket.gethostname(),
            "created": state.get("created"),
            "operator": state.get("operator"),
            "environment": environment or None,
            "lifecycle": (state.get("lifecycle") or {}).get("state"),
            "exit_state": state.get("exit_state"),
            "state": state or None,
        }
        if plan:
            values.update(plan=plan, app=plan.get("app"), from_version=plan.get("from_version"))
            values["to_version"] = plan.get("to_version")
        approval = rundir.read_approval()
        if approval is not None:
            values["approval"] = approval
        rep = None
        if report and (rundir.path / "report.json").is_file():
            rep = _load((rundir.path / "report.json").read_text(encoding="utf-8"))
            if isinstance(rep, dict):
                values["report"] = rep
                # A run without the driver (ansible-playbook, AWX) has no state.json: its report says.
                for key in ("app", "from_version", "to_version", "exit_state"):
                    values[key] = values.get(key) or rep.get(key)
                values["operator"] = values.get("operator") or (rep.get("approval") or {}).get("approver")
        self.save_run(run_id, **{k: v for k, v in values.items() if v is not None})
        self.sync_audit(run_id, rundir.audit_file)
        if isinstance(rep, dict):
            self.record_from_report(rep, environment)

    def record_from_report(self, rep: dict[str, Any], environment: str) -> None:
        """The release marks ``rep``'s release record carries, in its environment (the manifest's name, which
        the report carries) or else ``environment``."""
        record = rep.get("release_record") or {}
        environment = record.get("environment") or environment
        if record.get("status") != "rolled back" or not rep.get("app") or not record.get("version"):
            return
        rca = rep.get("rca") or {}
        link = rca.get("url") or rca.get("key") if isinstance(rca, dict) else None
        self.record_release(
            rep["app"],
            environment,
            str(record["version"]),
            "rolled_back",
            rep.get("run_id"),
            rolled_back_to=record.get("previous_known_good"),
            rca=link,
            at=rep.get("generated"),
        )
        if record.get("previous_known_good"):
            self.record_release(
                rep["app"],
                environment,
                str(record["previous_known_good"]),
                "good",
                rep.get("run_id"),
                at=rep.get("generated"),
            )


DatabaseError = sa.exc.SQLAlchemyError


def unreachable(exc: BaseException) -> str:
    """One sentence for a ledger that failed in the middle of a command (no URL, no password in it)."""
    return (
        f"the ledger could not be read or written ({_first_line(exc)}); what the run directory holds is intact: "
        f"check the ledger's server (--ledger or ${ENV}), then give the command again"
    )


def import_dir(ledger: Ledger, directory: Path) -> dict[str, Any]:
    from .transfer import import_dir as run

    return run(ledger, directory)


def export_dir(ledger: Ledger, directory: Path, run_ids: list[str]) -> dict[str, Any]:
    from .transfer import export_dir as run

    return run(ledger, directory, run_ids)


def bring_back(ledger: Ledger, runs_root: Path, run_id: str) -> Path | None:
    """The run ``run_id`` as a run directory under ``runs_root``, written from the ledger when only the
    ledger holds it (another controller's run, an AWX job's whose container is gone); None if it has none."""
    from ..rundir import make_private_dirs
    from .transfer import export_run

    row = ledger.get_run(run_id)
    if row is None:
        return None
    make_private_dirs(runs_root)
    export_run(ledger, row, runs_root / run_id)
    return runs_root / run_id


__all__ = ["LeaseLock", "Ledger", "LedgerError", "configure", "export_dir", "import_dir", "open_ledger", "redact"]
