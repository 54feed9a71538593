"""The ledger's tables (SQLAlchemy Core). Alembic migrations under ``migrations/`` create and change them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# One row per run: what it planned, who approved it, where it stands, how it ended, its report.
runs = sa.Table(
    "ledger_runs",
    metadata,
    sa.Column("run_id", sa.String(80), primary_key=True),
    sa.Column("app", sa.String(200)),
    sa.Column("environment", sa.String(1000)),
    sa.Column("operator", sa.String(200)),
    sa.Column("controller", sa.String(255)),
    sa.Column("run_dir", sa.String(2000)),
    sa.Column("created", sa.String(32)),
    sa.Column("updated", sa.String(32)),
    sa.Column("lifecycle", sa.String(40)),
    sa.Column("exit_state", sa.String(40)),
    sa.Column("from_version", sa.String(200)),
    sa.Column("to_version", sa.String(200)),
    sa.Column("plan", sa.Text),
    sa.Column("approval", sa.Text),
    sa.Column("state", sa.Text),
    sa.Column("report", sa.Text),
)

# The release record: one mark per release of an application in an environment. A rolled-back release
# is known-bad; the release a rollback went back to is known-good (unless it was ever marked bad).
releases = sa.Table(
    "ledger_releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.String(200), nullable=False),
    sa.Column("environment", sa.String(1000), nullable=False),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # rolled_back | good
    sa.Column("run_id", sa.String(80)),
    sa.Column("rolled_back_to", sa.String(200)),
    sa.Column("rca", sa.String(2000)),
    sa.Column("time", sa.String(32), nullable=False),
    sa.UniqueConstraint("app", "environment", "version", name="uq_ledger_release"),
)

# Environment locks with a lease: the holder renews ``expires`` while it works; a holder that stops
# renewing (killed) is stale once the lease has run out.
locks = sa.Table(
    "ledger_locks",
    metadata,
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("run_id", sa.String(80), nullable=False),
    sa.Column("run_dir", sa.String(2000)),
    sa.Column("operator", sa.String(200)),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("token", sa.String(40), nullable=False),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)

# Every run's hash-chained audit trail, entry for entry as in the run directory's audit.jsonl.
audit = sa.Table(
    "ledger_audit",
    metadata,
    sa.Column("run_id", sa.String(80), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("event", sa.String(100), nullable=False),
    sa.Column("hash", sa.String(80), nullable=False),
    sa.Column("prev", sa.String(80), nullable=False),
    sa.Column("entry", sa.Text, nullable=False),
)
