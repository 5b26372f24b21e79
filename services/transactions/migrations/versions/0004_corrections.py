"""Corrections (domain A16) link to the transaction they reverse; unit history by range on PostgreSQL.

`transactions.corrects` names the transfer a `correction` reverses. On PostgreSQL a GiST index on the
journal's serial ranges lets `GET /v1/units/{id}` find a unit's entries with `@>` instead of scanning every
entry of its (CA, registry) that starts below it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(
            sa.Column(
                "corrects",
                sa.String(length=40),
                nullable=True,
                comment="correction: the transaction it reverses",
            )
        )
    op.create_index("ix_transactions_corrects", "transactions", ["corrects"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_journal_range ON journal USING gist "
            "(ca_id, origin_registry_id, int8range(first_serial, last_serial, '[]'))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_journal_range")
    op.drop_index("ix_transactions_corrects", table_name="transactions")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("corrects")
