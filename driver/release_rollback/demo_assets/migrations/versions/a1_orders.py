"""The good release's schema: an orders table.

Revision ID: a1
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("total_cents", sa.Integer, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )


def downgrade():
    op.drop_table("orders")
