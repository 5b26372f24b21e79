"""Inter-registry protocol (INTERREGISTRY §2–§4): registry records, their keys, the message log and inbox,
the per-registry inbox cursor of the relay, and conformance run results.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "registry",
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("jwks_url", sa.String(length=2048), nullable=True),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("signing", sa.String(length=16), nullable=False),
        sa.Column("response_timeout_s", sa.Integer(), nullable=False),
        sa.Column("contacts", sa.JSON(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2048), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_seq_in", sa.BigInteger(), nullable=False),
        sa.Column("acked_position", sa.BigInteger(), nullable=False),
        sa.Column("clock_skew_ms", sa.BigInteger(), nullable=True),
        sa.Column("skew_flagged", sa.Boolean(), nullable=False),
        sa.Column("hello_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("irx_version", sa.String(length=9), nullable=True),
        sa.Column("conformance_run_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('onboarding', 'testing', 'active', 'suspended', 'disconnected')",
            name="ck_registry_status",
        ),
        sa.CheckConstraint("last_seq_in >= 0", name="ck_registry_last_seq"),
        sa.CheckConstraint("acked_position >= 0", name="ck_registry_acked"),
        sa.PrimaryKeyConstraint("registry_id"),
    )
    op.create_table(
        "registry_key",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("kid", sa.String(length=200), nullable=False),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("thumbprint", sa.String(length=64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("registry_id", "kid", "thumbprint", name="uq_registry_key"),
    )
    op.create_table(
        "irx_message",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("transfer_id", sa.String(length=64), nullable=True),
        sa.Column("envelope", sa.JSON(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=True),
        sa.Column("kid", sa.String(length=200), nullable=True),
        sa.Column("key_thumbprint", sa.String(length=64), nullable=True),
        sa.Column("verification", sa.String(length=16), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("positioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "direction IN ('registry_to_ir', 'ir_to_registry')", name="ck_irx_message_direction"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("registry_id", "direction", "message_id", name="uq_irx_message_id"),
        sa.UniqueConstraint("registry_id", "position", name="uq_irx_message_position"),
    )
    op.create_index("ix_irx_message_registry_log", "irx_message", ["registry_id", "id"])
    op.create_index("ix_irx_message_transfer", "irx_message", ["transfer_id"])
    op.create_index(
        "ix_irx_message_unpositioned",
        "irx_message",
        ["registry_id", "id"],
        postgresql_where=sa.text("position IS NULL AND direction = 'ir_to_registry'"),
        sqlite_where=sa.text("position IS NULL AND direction = 'ir_to_registry'"),
    )
    op.create_table(
        "irx_inbox_cursor",
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("registry_id"),
    )
    op.create_table(
        "conformance_run",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("result IN ('pass', 'fail')", name="ck_conformance_run_result"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_conformance_run_registry", "conformance_run", ["registry_id"])


def downgrade() -> None:
    op.drop_index("ix_conformance_run_registry", table_name="conformance_run")
    op.drop_table("conformance_run")
    op.drop_table("irx_inbox_cursor")
    op.drop_index("ix_irx_message_unpositioned", table_name="irx_message")
    op.drop_index("ix_irx_message_transfer", table_name="irx_message")
    op.drop_index("ix_irx_message_registry_log", table_name="irx_message")
    op.drop_table("irx_message")
    op.drop_table("registry_key")
    op.drop_table("registry")
