"""Real databases for the database-stage tests: one fresh database per test on the machine's
PostgreSQL and MariaDB servers (or an SQLite file), an Alembic project written per test, and an
independent reading of the schema (SQLAlchemy's inspector) to compare against."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

PG_ADMIN = os.environ.get("RR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN = os.environ.get("RR_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
ENV_PY = Path(__file__).resolve().parent.parent / "driver/release_rollback/demo_assets/migrations/env.py"

ORDERS = """
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("total_cents", sa.Integer, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.execute(
        "INSERT INTO orders (id, total_cents, created_at) VALUES (1, 1250, '2026-11-20'), (2, 990, '2026-11-21')"
    )
"""

COUPONS = """
    op.create_table(
        "coupons",
        sa.Column("code", sa.String(20), primary_key=True),
        sa.Column("percent", sa.Integer, nullable=False),
    )
    op.execute("INSERT INTO coupons (code, percent) VALUES ('WELCOME', 10), ('SPRING', 15), ('VIP', 30)")
"""

# name -> (upgrade body, downgrade body[, helper code of the revision file]); each chain is a1 <- b2 <- c3.
CHAINS = {
    # Two reversible steps: indexes only, no data lost on the way down.
    "safe": {
        "a1": (ORDERS, 'op.drop_table("orders")'),
        "b2": (
            'op.create_index("ix_orders_created_at", "orders", ["created_at"])',
            'op.drop_index("ix_orders_created_at", table_name="orders")',
        ),
        "c3": (
            'op.create_index("ix_orders_total", "orders", ["total_cents"])',
            'op.drop_index("ix_orders_total", table_name="orders")',
        ),
    },
    # b2 added a column the bad release wrote to: undoing it drops the column and its data.
    "destructive": {
        "a1": (ORDERS, 'op.drop_table("orders")'),
        "b2": (
            'op.add_column("orders", sa.Column("coupon", sa.String(40), nullable=True))\n'
            "    op.execute(\"UPDATE orders SET coupon = 'WELCOME' WHERE id = 1\")",
            'op.drop_column("orders", "coupon")',
        ),
        "c3": (
            'op.create_index("ix_orders_total", "orders", ["total_cents"])',
            'op.drop_index("ix_orders_total", table_name="orders")',
        ),
    },
    # c3 cannot be undone.
    "irreversible": {
        "a1": (ORDERS, 'op.drop_table("orders")'),
        "b2": (
            'op.create_index("ix_orders_created_at", "orders", ["created_at"])',
            'op.drop_index("ix_orders_created_at", table_name="orders")',
        ),
        "c3": (
            'op.execute("UPDATE orders SET total_cents = total_cents * 100")',
            'raise NotImplementedError("amounts were converted to cents; there is no way back")',
        ),
    },
    # b2's downgrade drops its index, then fails: c3 -> b2 works, b2 -> a1 stops half-way.
    "failing": {
        "a1": (ORDERS, 'op.drop_table("orders")'),
        "b2": (
            'op.create_index("ix_orders_created_at", "orders", ["created_at"])',
            'op.drop_index("ix_orders_created_at", table_name="orders")\n'
            '    op.execute("INSERT INTO orders (no_such_column) VALUES (1)")',
        ),
        "c3": (
            'op.create_index("ix_orders_total", "orders", ["total_cents"])',
            'op.drop_index("ix_orders_total", table_name="orders")',
        ),
    },
    # b2 added the coupons table; its downgrade drops it, then fails: on MariaDB the drop stays.
    "half": {
        "a1": (ORDERS, 'op.drop_table("orders")'),
        "b2": (
            COUPONS,
            'op.drop_table("coupons")\n    op.execute("INSERT INTO orders (no_such_column) VALUES (1)")',
        ),
        "c3": (
            'op.create_index("ix_orders_total", "orders", ["total_cents"])',
            'op.drop_index("ix_orders_total", table_name="orders")',
        ),
    },
    # The classifier's blind spots, one per chain, each in b2's downgrade.
    "helper_drop": {
        "a1": (ORDERS, 'op.drop_table("orders")'),
        "b2": (COUPONS, "_drop_coupons()", 'def _drop_coupons():\n    op.drop_table("coupons")\n'),
        "c3": (
            'op.create_index("ix_orders_total", "orders", ["total_cents"])',
            'op.drop_index("ix_orders_total", table_name="orders")',
        ),
    },
    "set_null": {
        "a1": (
            ORDERS + '    op.add_column("orders", sa.Column("legacy_ref", sa.String(40), nullable=True))\n',
            'op.drop_table("orders")',
        ),
        "b2": (
            "op.execute(\"UPDATE orders SET legacy_ref = 'migrated'\")",
            'op.execute("UPDATE orders SET legacy_ref = NULL")',
        ),
        "c3": (
            'op.create_index("ix_orders_total", "orders", ["total_cents"])',
            'op.drop_index("ix_orders_total", table_name="orders")',
        ),
    },
    "raises": {
        "a1": (ORDERS, 'op.drop_table("orders")'),
        "b2": (
            'op.create_index("ix_orders_created_at", "orders", ["created_at"])',
            "bind = op.get_bind()\n"
            '    if bind.execute(sa.text("SELECT COUNT(*) FROM orders WHERE total_cents > 100000")).scalar():\n'
            '        raise RuntimeError("orders above 1000.00 exist: convert them by hand first")\n'
            '    op.drop_index("ix_orders_created_at", table_name="orders")',
        ),
        "c3": (
            'op.create_index("ix_orders_total", "orders", ["total_cents"])',
            'op.drop_index("ix_orders_total", table_name="orders")',
        ),
    },
    # b2's downgrade takes its time (to be killed in the middle of it).
    "slow": {
        "a1": (ORDERS, 'op.drop_table("orders")'),
        "b2": (
            'op.create_index("ix_orders_created_at", "orders", ["created_at"])',
            'time.sleep(120)\n    op.drop_index("ix_orders_created_at", table_name="orders")',
            "import time",
        ),
        "c3": (
            'op.create_index("ix_orders_total", "orders", ["total_cents"])',
            'op.drop_index("ix_orders_total", table_name="orders")',
        ),
    },
}

# An application's env.py that reads its own variable, and falls back to an SQLite file in the release.
APP_ENV_PY = '''"""Alembic environment of an application that reads APP_DB_URL."""

import os

from alembic import context
from sqlalchemy import create_engine

HERE = os.path.dirname(os.path.abspath(__file__))
url = os.environ.get("APP_DB_URL") or "sqlite:///" + os.path.join(os.path.dirname(HERE), "app.db")
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
'''

_REVISION = '''"""{name}

Revision ID: {name}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{name}"
down_revision = {down_repr}
branch_labels = None
depends_on = None

{helpers}
def upgrade():
    {upgrade}


def downgrade():
    {downgrade}
'''


def write_project(root: Path, chain: str, env_py: str | None = None) -> Path:
    """An Alembic project (alembic.ini, env.py, versions/) for ``chain``; returns alembic.ini."""
    (root / "migrations" / "versions").mkdir(parents=True)
    if env_py is None:
        shutil.copy2(ENV_PY, root / "migrations" / "env.py")
    else:
        (root / "migrations" / "env.py").write_text(env_py)
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\nsqlalchemy.url = sqlite:///unused.db\n"
        "[loggers]\nkeys = root\n[handlers]\nkeys = console\n[formatters]\nkeys = generic\n"
        "[logger_root]\nlevel = WARNING\nhandlers = console\n"
        "[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\nlevel = NOTSET\nformatter = generic\n"
        "[formatter_generic]\nformat = %(levelname)s %(name)s %(message)s\n"
    )
    down = None
    for name, (upgrade, downgrade, *helpers) in CHAINS[chain].items():
        (root / "migrations" / "versions" / f"{name}.py").write_text(
            _REVISION.format(
                name=name,
                down=down or "",
                down_repr=repr(down),
                upgrade=upgrade.strip(),
                downgrade=downgrade.strip(),
                helpers="".join(h + "\n\n" for h in helpers),
            )
        )
        down = name
    return root / "alembic.ini"


def alembic(config: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(config), *args],
        cwd=config.parent,
        env=dict(os.environ, DATABASE_URL=url, APP_DB_URL=url),  # APP_DB_URL: for APP_ENV_PY
        capture_output=True,
        text=True,
        check=True,
    )


@dataclass
class Database:
    dialect: str  # postgresql, mysql or sqlite
    name: str
    url: str
    tmp: Path
    password: str | None = None

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url)

    def revision(self) -> str | None:
        eng = self.engine()
        try:
            with eng.connect() as conn:
                row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
        finally:
            eng.dispose()
        return row[0] if row else None

    def scalar(self, sql: str):
        eng = self.engine()
        try:
            with eng.connect() as conn:
                return conn.execute(sa.text(sql)).scalar()
        finally:
            eng.dispose()

    def schema(self) -> dict:
        return schema_of(self.url)


def schema_of(url: str) -> dict:
    """Tables, columns (type, nullable) and indexes, read independently of the product's code."""
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            insp = sa.inspect(conn)
            out = {}
            for table in sorted(insp.get_table_names()):
                out[table] = {
                    "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
                    "indexes": sorted((ix["name"], tuple(ix["column_names"])) for ix in insp.get_indexes(table)),
                }
            return out
    finally:
        eng.dispose()


def server_up(admin_url: str) -> bool:
    try:
        eng = sa.create_engine(admin_url)
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        eng.dispose()
        return True
    except Exception:
        return False


def _admin(url: str):
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def create(dialect: str, tmp: Path, password: str | None = None) -> Database:
    """A new, empty database (and, with ``password``, its own login role)."""
    name = "rr_" + uuid.uuid4().hex[:12]
    if dialect == "sqlite":
        path = tmp / f"{name}.db"
        return Database("sqlite", name, f"sqlite:///{path}", tmp)
    if dialect == "postgresql":
        eng = _admin(PG_ADMIN)
        with eng.connect() as conn:
            user = "postgres"
            if password:
                user = name
                conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
            conn.execute(sa.text(f"CREATE DATABASE {name} OWNER {user}"))
        eng.dispose()
        cred = f"{name}:{password}" if password else "postgres"
        return Database("postgresql", name, f"postgresql+psycopg://{cred}@127.0.0.1:5432/{name}", tmp, password)
    eng = _admin(MARIADB_ADMIN)
    with eng.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
        user = "root"
        if password:
            user = name
            conn.execute(sa.text(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"))
            conn.execute(sa.text(f"CREATE USER '{name}'@'localhost' IDENTIFIED BY '{password}'"))
            conn.execute(sa.text(f"GRANT ALL ON {name}.* TO '{name}'@'%'"))
            conn.execute(sa.text(f"GRANT ALL ON {name}.* TO '{name}'@'localhost'"))
    eng.dispose()
    cred = f"{user}:{password}" if password else user
    return Database("mysql", name, f"mysql+pymysql://{cred}@127.0.0.1:3306/{name}", tmp, password)


def drop(db: Database) -> None:
    if db.dialect == "sqlite":
        return
    if db.dialect == "postgresql":
        eng = _admin(PG_ADMIN)
        with eng.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)"))
            if db.password:
                conn.execute(sa.text(f"DROP ROLE IF EXISTS {db.name}"))
        eng.dispose()
        return
    eng = _admin(MARIADB_ADMIN)
    with eng.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db.name}"))
        if db.password:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{db.name}'@'%'"))
            conn.execute(sa.text(f"DROP USER IF EXISTS '{db.name}'@'localhost'"))
    eng.dispose()


def restore(dialect: str, backup: str, into: Database) -> None:
    """Restore a backup the stage took into the scratch database ``into`` with the stock tools."""
    if dialect == "postgresql":
        subprocess.run(
            [
                "pg_restore",
                "--no-owner",
                "--no-privileges",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                into.name,
                backup,
            ],
            check=True,
            capture_output=True,
        )
    elif dialect == "mysql":
        with open(backup, "rb") as fh:
            subprocess.run(
                ["mariadb", "-h", "127.0.0.1", "-u", "root", into.name], stdin=fh, check=True, capture_output=True
            )
    else:
        shutil.copy2(backup, into.url.split("///", 1)[1])


# ------------------------------------------------------------------ SQL scripts (golang-migrate)


def _drop_index(dialect: str, name: str) -> str:
    return f"DROP INDEX {name} ON orders;" if dialect == "mysql" else f"DROP INDEX {name};"


def sql_chain(chain: str, dialect: str) -> dict[int, tuple[str, str | None]]:
    """version -> (up script, down script or None) in the golang-migrate convention."""
    orders = (
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, total_cents INTEGER NOT NULL, created_at VARCHAR(32) NOT NULL);\n"
        "INSERT INTO orders (id, total_cents, created_at) VALUES (1, 1250, '2026-11-20'), (2, 990, '2026-11-21');\n"
    )
    ix_created = "CREATE INDEX ix_orders_created_at ON orders (created_at);\n"
    ix_total = "CREATE INDEX ix_orders_total ON orders (total_cents);\n"
    chains = {
        "safe": {
            1: (orders, "DROP TABLE orders;\n"),
            2: (ix_created, _drop_index(dialect, "ix_orders_created_at")),
            3: (ix_total, _drop_index(dialect, "ix_orders_total")),
        },
        "failing": {
            1: (orders, "DROP TABLE orders;\n"),
            2: (
                ix_created,
                _drop_index(dialect, "ix_orders_created_at") + "\nINSERT INTO orders (no_such_column) VALUES (1);\n",
            ),
            3: (ix_total, _drop_index(dialect, "ix_orders_total")),
        },
        "guarded": {
            1: (orders, "DROP TABLE orders;\n"),
            2: ("ALTER TABLE orders ADD COLUMN coupon VARCHAR(40);\n", "ALTER TABLE orders DROP COLUMN coupon;\n"),
            3: (ix_total, None),  # no down script
        },
    }
    return chains[chain]


def write_sql_project(root: Path, chain: str, dialect: str) -> Path:
    root.mkdir(parents=True)
    names = {1: "orders", 2: "second", 3: "third"}
    for version, (up, down) in sql_chain(chain, dialect).items():
        (root / f"{version:03d}_{names[version]}.up.sql").write_text(up)
        if down is not None:
            (root / f"{version:03d}_{names[version]}.down.sql").write_text(down)
    return root


def migrate_up(db: Database, root: Path, to: int) -> None:
    """Apply the up scripts to version ``to`` as golang-migrate would (independent of the product)."""
    eng = db.engine()
    try:
        with eng.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL)"
                )
            )
        for path in sorted(root.glob("*.up.sql")):
            version = int(path.name.split("_", 1)[0])
            if version > to:
                break
            with eng.begin() as conn:
                for statement in path.read_text().split(";"):
                    if statement.strip():
                        conn.execute(sa.text(statement))
                conn.execute(sa.text("DELETE FROM schema_migrations"))
                conn.execute(
                    sa.text("INSERT INTO schema_migrations (version, dirty) VALUES (:v, :d)"),
                    {"v": version, "d": False},
                )
    finally:
        eng.dispose()


def migration_state(db: Database) -> tuple[int, bool] | None:
    eng = db.engine()
    try:
        with eng.connect() as conn:
            row = conn.execute(sa.text("SELECT version, dirty FROM schema_migrations")).first()
    finally:
        eng.dispose()
    return (int(row[0]), bool(row[1])) if row else None


# ----------------------------------------------------------------------------------- sqitch

SQITCH_CHANGES = {1: "orders", 2: "second", 3: "third"}
SQITCH_ENV = dict(os.environ, SQITCH_FULLNAME="Test Deployer", SQITCH_EMAIL="deployer@example.com")


def write_sqitch_project(root: Path, chain: str, dialect: str) -> Path:
    """A sqitch project whose changes are the SQL chain's versions (deploy = up, revert = down)."""
    (root / "deploy").mkdir(parents=True)
    (root / "revert").mkdir()
    lines = ["%syntax-version=1.0.0", "%project=shop", ""]
    for version, (up, down) in sql_chain(chain, dialect).items():
        name = SQITCH_CHANGES[version]
        req = " [orders]" if version > 1 else ""
        lines.append(f"{name}{req} 2026-11-2{version}T10:00:00Z Dev <dev@example.com> # change {version}")
        (root / "deploy" / f"{name}.sql").write_text(up)
        if down is not None:
            (root / "revert" / f"{name}.sql").write_text(down)
    (root / "sqitch.plan").write_text("\n".join(lines) + "\n")
    return root


def sqitch_target(db: Database) -> str:
    if db.dialect == "sqlite":
        return "db:sqlite:" + db.url.split("///", 1)[1]
    engine = {"postgresql": "pg", "mysql": "mysql"}[db.dialect]
    user = "postgres" if db.dialect == "postgresql" else "root"
    port = 5432 if db.dialect == "postgresql" else 3306
    return f"db:{engine}://{user}@127.0.0.1:{port}/{db.name}"


def sqitch_registry(db: Database) -> str | None:
    """Every test database gets its own registry (MariaDB and SQLite keep it outside the database)."""
    return None if db.dialect == "postgresql" else f"sqitch_{db.name}"


def sqitch_deploy(db: Database, root: Path, to: str) -> None:
    cmd = ["sqitch", "deploy", "--target", sqitch_target(db), "--to", to]
    if sqitch_registry(db):
        cmd += ["--registry", sqitch_registry(db)]
    subprocess.run(cmd, cwd=root, env=SQITCH_ENV, check=True, capture_output=True)


def drop_sqitch_registry(db: Database) -> None:
    if db.dialect == "mysql":
        eng = _admin(MARIADB_ADMIN)
        with eng.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {sqitch_registry(db)}"))
        eng.dispose()


def sqitch_deployed(db: Database, root: Path) -> str | None:
    cmd = ["sqitch", "status", "--target", sqitch_target(db)]
    if sqitch_registry(db):
        cmd += ["--registry", sqitch_registry(db)]
    res = subprocess.run(cmd, cwd=root, env=SQITCH_ENV, capture_output=True, text=True)
    for line in res.stdout.splitlines():
        if line.startswith("# Name:"):
            return line.split(":", 1)[1].strip()
    return None


def write_manifest(path: Path, fleet, config: Path, url: str, backup_dir: Path, **extra) -> Path:
    """A manifest rolling ``fleet``'s database back to a1 with the Alembic project of ``config``."""
    database = {
        "tool": "alembic",
        "config": str(config),
        "url": url,
        "python": sys.executable,
        "target_revision": "a1",
        "backup_dir": str(backup_dir),
        "critical_tables": ["orders"],
        "assertions": [{"name": "orders kept", "sql": "SELECT COUNT(*) FROM orders", "expect": 2}],
    }
    database.update(extra)
    doc = {"rollback_manifest": {"app": "shop", "version": fleet.bad, "database": database}}
    path.write_text(yaml.safe_dump(doc))
    return path


# ------------------------------------------------------------------------ shared fixtures
# Imported by the database test modules (``from dbkit import app_host, make_db``).


@pytest.fixture
def make_db(tmp_path, need):
    """``make_db(dialect, password=None)``: a fresh database on the machine's server, dropped afterwards."""
    made = []

    def make(dialect: str, password: str | None = None) -> Database:
        if dialect == "postgresql":
            need(server_up(PG_ADMIN), "PostgreSQL on 127.0.0.1:5432 (psycopg installed)")
        if dialect == "mysql":
            need(server_up(MARIADB_ADMIN), "MariaDB on 127.0.0.1:3306 (PyMySQL installed)")
        db = create(dialect, tmp_path, password)
        made.append(db)
        return db

    yield make
    for db in made:
        drop(db)


@pytest.fixture
def app_host(tmp_path):
    """One application host on the bad release (no service needed for --scope database)."""
    from release_rollback.demo import build_fleet

    fleet = build_fleet(tmp_path / "fleet", 1, start=False)
    yield fleet
    fleet.stop()
