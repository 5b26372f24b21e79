"""The ARS: serial counters, issuances, MO blocks, authorizations and their versions, the first-transfer
saga's operations, domestic cancellations (docs/ars.md).

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

_STATES = "'pending_authorization', 'authorized', 'reserved', 'first_transferred', 'cancelled'"


def upgrade() -> None:
    op.create_table(
        "serial_counters",
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("last_serial", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ca_id", "registry_id"),
    )
    op.create_table(
        "issuances",
        sa.Column("issuance_id", sa.String(length=40), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("origin_registry_id", sa.String(length=5), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("first_serial", sa.BigInteger(), nullable=False),
        sa.Column("last_serial", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("mitigation_type", sa.String(length=64), nullable=False),
        sa.Column("sector", sa.String(length=200), nullable=False),
        sa.Column("activity_type", sa.String(length=200), nullable=False),
        sa.Column("applicable_gwp_values", sa.String(length=200), nullable=True),
        sa.Column("applicable_non_ghg_metric", sa.String(length=200), nullable=True),
        sa.Column("conversion_factor", sa.String(length=40), nullable=True),
        sa.Column("underlying_registry_id", sa.String(length=200), nullable=True),
        sa.Column("underlying_first", sa.BigInteger(), nullable=True),
        sa.Column("underlying_last", sa.BigInteger(), nullable=True),
        sa.Column("authorization_id", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issuance_id"),
    )
    op.create_index("ix_issuances_party", "issuances", ["party", "issuance_id"])
    op.create_table(
        "mo_blocks",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("origin_registry_id", sa.String(length=5), nullable=False),
        sa.Column("first_serial", sa.BigInteger(), nullable=False),
        sa.Column("last_serial", sa.BigInteger(), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("mitigation_type", sa.String(length=64), nullable=False),
        sa.Column("sector", sa.String(length=200), nullable=False),
        sa.Column("activity_type", sa.String(length=200), nullable=False),
        sa.Column("applicable_gwp_values", sa.String(length=200), nullable=True),
        sa.Column("applicable_non_ghg_metric", sa.String(length=200), nullable=True),
        sa.Column("conversion_factor", sa.String(length=40), nullable=True),
        sa.Column("underlying_registry_id", sa.String(length=200), nullable=True),
        sa.Column("underlying_first", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("authorization_id", sa.String(length=100), nullable=True),
        sa.Column("authorization_version", sa.Integer(), nullable=True),
        sa.Column("operation_id", sa.String(length=64), nullable=True),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("cancellation_id", sa.String(length=40), nullable=True),
        sa.Column("issuance_id", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("last_serial >= first_serial", name="ck_mo_blocks_range"),
        sa.CheckConstraint(f"state IN ({_STATES})", name="ck_mo_blocks_state"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ca_id", "origin_registry_id", "first_serial", name="uq_mo_blocks_first"),
    )
    op.create_index(
        "ix_mo_blocks_take",
        "mo_blocks",
        ["party", "state", "vintage", "ca_id", "origin_registry_id", "first_serial"],
    )
    op.create_index("ix_mo_blocks_authorization", "mo_blocks", ["party", "authorization_id", "state"])
    op.create_index("ix_mo_blocks_operation", "mo_blocks", ["operation_id"])
    op.create_table(
        "authorization_heads",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("authorization_id", sa.String(length=100), nullable=False),
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("party", "authorization_id"),
    )
    op.create_table(
        "authorizations",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("authorization_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("purposes", sa.String(length=16), nullable=False),
        sa.Column("authorized_quantity", sa.BigInteger(), nullable=True),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("applicable_gwp_values", sa.String(length=200), nullable=True),
        sa.Column("applicable_non_ghg_metric", sa.String(length=200), nullable=True),
        sa.Column("sectors", sa.JSON(), nullable=False),
        sa.Column("activity_types", sa.JSON(), nullable=False),
        sa.Column("authorized_parties", sa.JSON(), nullable=True),
        sa.Column("authorized_entities", sa.JSON(), nullable=True),
        sa.Column("oimp", sa.Text(), nullable=True),
        sa.Column("timeframe", sa.String(length=11), nullable=True),
        sa.Column("terms", sa.Text(), nullable=True),
        sa.Column("first_transfer_definition", sa.String(length=32), nullable=True),
        sa.Column("additional_explanatory_information", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("party", "authorization_id", "version"),
    )
    op.create_table(
        "first_transfers",
        sa.Column("operation_id", sa.String(length=64), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("authorization_id", sa.String(length=100), nullable=False),
        sa.Column("authorization_version", sa.Integer(), nullable=False),
        sa.Column("first_transfer_definition", sa.String(length=32), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("to_account", sa.String(length=64), nullable=True),
        sa.Column("use", sa.JSON(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("mo_ranges", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("transaction_status", sa.String(length=32), nullable=True),
        sa.Column("result_blocks", sa.JSON(), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("initiated_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("operation_id"),
    )
    op.create_index("ix_first_transfers_pending", "first_transfers", ["status", "next_attempt_at"])
    op.create_index("ix_first_transfers_party", "first_transfers", ["party", "operation_id"])
    op.create_table(
        "mo_cancellations",
        sa.Column("cancellation_id", sa.String(length=40), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cancellation_id"),
    )


def downgrade() -> None:
    op.drop_table("mo_cancellations")
    op.drop_index("ix_first_transfers_party", table_name="first_transfers")
    op.drop_index("ix_first_transfers_pending", table_name="first_transfers")
    op.drop_table("first_transfers")
    op.drop_table("authorizations")
    op.drop_table("authorization_heads")
    op.drop_index("ix_mo_blocks_operation", table_name="mo_blocks")
    op.drop_index("ix_mo_blocks_authorization", table_name="mo_blocks")
    op.drop_index("ix_mo_blocks_take", table_name="mo_blocks")
    op.drop_table("mo_blocks")
    op.drop_index("ix_issuances_party", table_name="issuances")
    op.drop_table("issuances")
    op.drop_table("serial_counters")
