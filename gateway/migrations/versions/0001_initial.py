"""Initial schema: the OAuth2 client store.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=True),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_index("ix_oauth_clients_party", "oauth_clients", ["party"])


def downgrade() -> None:
    op.drop_index("ix_oauth_clients_party", table_name="oauth_clients")
    op.drop_table("oauth_clients")
