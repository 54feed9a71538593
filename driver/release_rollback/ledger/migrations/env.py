"""Alembic environment of the ledger: migrations run on the connection the ledger hands over."""

from alembic import context
from release_rollback.ledger.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="ledger_schema_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
