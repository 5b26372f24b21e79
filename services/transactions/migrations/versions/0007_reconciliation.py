"""Reconciliation of the pair ledger (INTERREGISTRY §8): one `reconciliation` row per run with its cut-off,
status and findings (at most one open per registry: a partial unique index), and `reconciliation_item`, the
evidence of each stage (totals per key both sides, transfers compared, ranges frozen, diagnoses).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_OPEN = "status IN ('initiated', 'totals_inconsistent', 'blocks_inconsistent')"


def upgrade() -> None:
    op.create_table(
        "reconciliation",
        sa.Column("reconciliation_id", sa.String(length=40), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column(
            "stage",
            sa.String(length=16),
            nullable=True,
            comment="The stage awaiting R's answer; null when none",
        ),
        sa.Column("cutoff_position", sa.BigInteger(), nullable=False),
        sa.Column("cutoff_seq", sa.BigInteger(), nullable=False),
        sa.Column("respond_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("initiated_by", sa.String(length=200), nullable=False),
        sa.Column("codes", sa.JSON(), nullable=False),
        sa.Column("inconsistent_keys", sa.JSON(), nullable=False),
        sa.Column("inconsistent_ranges", sa.JSON(), nullable=False),
        sa.Column("diagnoses", sa.JSON(), nullable=False),
        sa.Column("resolution", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('initiated', 'totals_inconsistent', 'blocks_inconsistent', 'completed',"
            " 'completed_with_manual_intervention', 'failed')",
            name="ck_reconciliation_status",
        ),
        sa.PrimaryKeyConstraint("reconciliation_id"),
    )
    op.create_index(
        "uq_reconciliation_open",
        "reconciliation",
        ["registry_id"],
        unique=True,
        postgresql_where=sa.text(_OPEN),
        sqlite_where=sa.text(_OPEN),
    )
    op.create_index("ix_reconciliation_registry", "reconciliation", ["registry_id", "created_at"])
    op.create_index("ix_reconciliation_due", "reconciliation", ["status", "respond_by"])
    op.create_table(
        "reconciliation_item",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("reconciliation_id", sa.String(length=40), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("transfer_id", sa.String(length=64), nullable=True),
        sa.Column("consistent", sa.Integer(), nullable=False, comment="1 when both sides agree on the item"),
        sa.Column("ir_value", sa.JSON(), nullable=True),
        sa.Column("registry_value", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('totals', 'transfer', 'range', 'diagnosis')", name="ck_reconciliation_item_kind"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reconciliation_item_rec", "reconciliation_item", ["reconciliation_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_reconciliation_item_rec", table_name="reconciliation_item")
    op.drop_table("reconciliation_item")
    op.drop_index("ix_reconciliation_due", table_name="reconciliation")
    op.drop_index("ix_reconciliation_registry", table_name="reconciliation")
    op.drop_index("uq_reconciliation_open", table_name="reconciliation")
    op.drop_table("reconciliation")
