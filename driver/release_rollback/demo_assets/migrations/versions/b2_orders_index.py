"""The bad release's migration: an index on orders.created_at (reversible, no data lost).

Revision ID: b2
Revises: a1
"""

from alembic import op

revision = "b2"
down_revision = "a1"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_orders_created_at", "orders", ["created_at"])


def downgrade():
    op.drop_index("ix_orders_created_at", table_name="orders")
