"""The ledger: runs, release record, environment locks, audit trail.

Revision ID: 0001_ledger
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_ledger"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "ledger_runs",
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
    op.create_index("ix_ledger_runs_updated", "ledger_runs", ["updated"])
    op.create_table(
        "ledger_releases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("app", sa.String(200), nullable=False),
        sa.Column("environment", sa.String(1000), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("run_id", sa.String(80)),
        sa.Column("rolled_back_to", sa.String(200)),
        sa.Column("rca", sa.String(2000)),
        sa.Column("time", sa.String(32), nullable=False),
        sa.UniqueConstraint("app", "environment", "version", name="uq_ledger_release"),
    )
    op.create_table(
        "ledger_locks",
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
    op.create_table(
        "ledger_audit",
        sa.Column("run_id", sa.String(80), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("event", sa.String(100), nullable=False),
        sa.Column("hash", sa.String(80), nullable=False),
        sa.Column("prev", sa.String(80), nullable=False),
        sa.Column("entry", sa.Text, nullable=False),
    )


def downgrade():
    op.drop_table("ledger_audit")
    op.drop_table("ledger_locks")
    op.drop_table("ledger_releases")
    op.drop_index("ix_ledger_runs_updated", "ledger_runs")
    op.drop_table("ledger_runs")
