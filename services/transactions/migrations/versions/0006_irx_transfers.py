"""Inter-registry transfers (INTERREGISTRY §5, §6): the `irx_transfer` record of every transfer between
the IR and a connected registry (and of cancel tombstones, S8), the ledger transaction's link to it, and
the registry an acquired (never-seen) range came from in `issued_ranges`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "irx_transfer",
        sa.Column("transfer_id", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column(
            "transaction_id",
            sa.String(length=40),
            nullable=True,
            comment="Null: a tombstone or a rejected proposal",
        ),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("respond_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=True),
        sa.Column("blocks", sa.JSON(), nullable=False, comment="TransferBlock list as proposed"),
        sa.Column("codes", sa.JSON(), nullable=False),
        sa.Column(
            "proposal_sha256",
            sa.String(length=64),
            nullable=True,
            comment="Incoming: body hash (4007 vs replay)",
        ),
        sa.Column("proposal_message_id", sa.String(length=36), nullable=True),
        sa.Column("decision_message_id", sa.String(length=36), nullable=True),
        sa.Column("final_message_id", sa.String(length=36), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True, comment="Incoming: the stored answer"),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "direction IN ('registry_to_ir', 'ir_to_registry')", name="ck_irx_transfer_direction"
        ),
        sa.PrimaryKeyConstraint("transfer_id"),
    )
    op.create_index("ix_irx_transfer_due", "irx_transfer", ["status", "respond_by"])
    op.create_index("ix_irx_transfer_transaction", "irx_transfer", ["transaction_id"])
    op.create_index("ix_irx_transfer_registry", "irx_transfer", ["registry_id", "direction", "transfer_id"])
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(
            sa.Column(
                "interregistry",
                sa.JSON(),
                nullable=True,
                comment="Transfer to/from a connected registry: its link",
            )
        )
    with op.batch_alter_table("issued_ranges") as batch:
        batch.add_column(
            sa.Column(
                "acquired_from_registry",
                sa.String(length=5),
                nullable=True,
                comment="Acquisition of never-seen serials from this connected registry (null: a first transfer)",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("issued_ranges") as batch:
        batch.drop_column("acquired_from_registry")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("interregistry")
    op.drop_index("ix_irx_transfer_registry", table_name="irx_transfer")
    op.drop_index("ix_irx_transfer_transaction", table_name="irx_transfer")
    op.drop_index("ix_irx_transfer_due", table_name="irx_transfer")
    op.drop_table("irx_transfer")
