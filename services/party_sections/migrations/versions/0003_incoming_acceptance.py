"""The section setting `incoming_acceptance` (INTERREGISTRY §6): how the IR Party section takes transfers
from connected national registries. Existing sections keep taking them at once (`automatic`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sections") as batch:
        batch.add_column(
            sa.Column("incoming_acceptance", sa.String(length=16), nullable=False, server_default="automatic")
        )


def downgrade() -> None:
    with op.batch_alter_table("sections") as batch:
        batch.drop_column("incoming_acceptance")
