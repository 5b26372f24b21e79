"""Four-eyes for first transfers: `approved_by`, and room for the `awaiting_approval` status.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite rebuilds the table to change a column's type.
    with op.batch_alter_table("first_transfers") as table:
        table.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=32))
        table.add_column(sa.Column("approved_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("first_transfers") as table:
        table.drop_column("approved_by")
        table.alter_column("status", existing_type=sa.String(length=32), type_=sa.String(length=16))
