"""The ledger's current blocks (DESIGN §4): one row per contiguous serial range, every invariant copied.

On PostgreSQL an exclusion constraint enforces I1 (no two current blocks of the same CA and originating
registry overlap); it needs `btree_gist` for the `=` parts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_STATES = "'held', 'reserved', 'used_ndc', 'used_oimp', 'cancelled', 'transferred_out', 'pending_in'"


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("origin_registry_id", sa.String(length=5), nullable=False),
        sa.Column("first_transferring_party", sa.String(length=3), nullable=False),
        sa.Column("first_serial", sa.BigInteger(), nullable=False),
        sa.Column("last_serial", sa.BigInteger(), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("applicable_gwp_values", sa.String(length=200), nullable=True),
        sa.Column("applicable_non_ghg_metric", sa.String(length=200), nullable=True),
        sa.Column("conversion_factor", sa.Numeric(30, 10), nullable=True),
        sa.Column("mitigation_type", sa.String(length=64), nullable=False),
        sa.Column("sector", sa.String(length=200), nullable=True),
        sa.Column("activity_type", sa.String(length=200), nullable=True),
        sa.Column("authorization_id", sa.String(length=100), nullable=False),
        sa.Column("authorization_version", sa.Integer(), nullable=False),
        sa.Column("purposes", sa.String(length=16), nullable=False),
        sa.Column("authorized_parties", sa.Text(), nullable=True),
        sa.Column("first_transfer_definition", sa.String(length=32), nullable=True),
        sa.Column("underlying_registry_id", sa.String(length=32), nullable=True),
        sa.Column("underlying_first", sa.BigInteger(), nullable=True),
        sa.Column("underlying_last", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column(
            "party",
            sa.String(length=3),
            nullable=False,
            comment="Holder Party (of account_id, or the last holder)",
        ),
        sa.Column(
            "reserved_by", sa.String(length=40), nullable=True, comment="Transaction holding the reservation"
        ),
        sa.Column(
            "to_registry_id",
            sa.String(length=5),
            nullable=True,
            comment="transferred_out: the registry it went to",
        ),
        sa.Column(
            "transfer_id",
            sa.String(length=64),
            nullable=True,
            comment="transferred_out / pending_in: IRX transfer",
        ),
        sa.Column(
            "frozen_by",
            sa.String(length=64),
            nullable=True,
            comment="Reconciliation that froze the range (4006)",
        ),
        sa.Column(
            "last_transaction_id",
            sa.String(length=40),
            nullable=True,
            comment="Transaction that last changed it",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("first_serial >= 1", name="ck_blocks_first_positive"),
        sa.CheckConstraint("last_serial >= first_serial", name="ck_blocks_range"),
        sa.CheckConstraint(f"state IN ({_STATES})", name="ck_blocks_state"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_blocks_serial_start", "blocks", ["ca_id", "origin_registry_id", "first_serial"], unique=True
    )
    op.create_index("ix_blocks_serial_end", "blocks", ["ca_id", "origin_registry_id", "last_serial"])
    op.create_index(
        "ix_blocks_account_order",
        "blocks",
        ["account_id", "state", "vintage", "ca_id", "origin_registry_id", "first_serial"],
    )
    op.create_index("ix_blocks_party_state", "blocks", ["party", "state"])
    op.create_index("ix_blocks_reserved_by", "blocks", ["reserved_by"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE blocks ADD CONSTRAINT ex_blocks_no_overlap EXCLUDE USING gist "
            "(ca_id WITH =, origin_registry_id WITH =, int8range(first_serial, last_serial, '[]') WITH &&)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE blocks DROP CONSTRAINT IF EXISTS ex_blocks_no_overlap")
    op.drop_index("ix_blocks_reserved_by", table_name="blocks")
    op.drop_index("ix_blocks_party_state", table_name="blocks")
    op.drop_index("ix_blocks_account_order", table_name="blocks")
    op.drop_index("ix_blocks_serial_end", table_name="blocks")
    op.drop_index("uq_blocks_serial_start", table_name="blocks")
    op.drop_table("blocks")
