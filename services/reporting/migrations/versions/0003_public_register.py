"""The public register's inputs: Party sections (with confidentiality designations) and cooperative
approaches, as party_sections publishes them (docs/reporting.md).

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
    op.create_table(
        "sections",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("confidential_fields", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("party"),
    )
    op.create_table(
        "cooperative_approaches",
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("ca_id"),
    )


def downgrade() -> None:
    op.drop_table("cooperative_approaches")
    op.drop_table("sections")
