"""The reporting read model: feed cursors, inbox, AEF action rows, block movements, authorization
versions, authorized entities, NDC periods and frozen submissions (docs/reporting.md).

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


def _id() -> sa.Column:
    return sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
    )


def _block_columns() -> list[sa.Column]:
    return [
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("origin_registry_id", sa.String(length=5), nullable=False),
        sa.Column("first_transferring_party", sa.String(length=3), nullable=False),
        sa.Column("first_serial", sa.BigInteger(), nullable=False),
        sa.Column("last_serial", sa.BigInteger(), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("authorization_id", sa.String(length=100), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("mitigation_type", sa.String(length=64), nullable=False),
        sa.Column("applicable_gwp_values", sa.String(length=200), nullable=True),
        sa.Column("applicable_non_ghg_metric", sa.String(length=200), nullable=True),
        sa.Column("conversion_factor", sa.String(length=40), nullable=True),
        sa.Column("underlying_registry_id", sa.String(length=200), nullable=True),
        sa.Column("underlying_first", sa.BigInteger(), nullable=True),
        sa.Column("underlying_last", sa.BigInteger(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "feed_cursors",
        sa.Column("producer", sa.String(length=50), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("producer"),
    )
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("producer", sa.String(length=50), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "aef_actions",
        _id(),
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("action_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action_type", sa.String(length=40), nullable=False),
        sa.Column("action_subtype", sa.String(length=80), nullable=True),
        *_block_columns(),
        sa.Column("transferring_party_id", sa.String(length=3), nullable=True),
        sa.Column("acquiring_party_id", sa.String(length=3), nullable=True),
        sa.Column("purpose_oimp", sa.Text(), nullable=True),
        sa.Column("using_cancelling_party_id", sa.String(length=3), nullable=True),
        sa.Column("using_cancelling_entity_id", sa.String(length=100), nullable=True),
        sa.Column("ndc_use_year", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_aef_actions_party_at", "aef_actions", ["party", "action_at"])
    op.create_table(
        "movements",
        _id(),
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        *_block_columns(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_movements_series", "movements", ["ca_id", "origin_registry_id", "first_serial"])
    op.create_index("ix_movements_party", "movements", ["party", "ca_id", "origin_registry_id"])
    op.create_table(
        "authorizations",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("authorization_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("authorized_on", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("table2", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("party", "authorization_id", "version"),
    )
    op.create_table(
        "entities",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("entity_id", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("party", "entity_id"),
    )
    op.create_table(
        "ndc_periods",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("first_year", sa.Integer(), nullable=False),
        sa.Column("last_year", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("party", "first_year"),
    )
    op.create_table(
        "submissions",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("major", sa.Integer(), nullable=False),
        sa.Column("minor", sa.Integer(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_by", sa.String(length=200), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("party", "year", "major", "minor"),
    )


def downgrade() -> None:
    for name in ("submissions", "ndc_periods", "entities", "authorizations"):
        op.drop_table(name)
    op.drop_index("ix_movements_party", table_name="movements")
    op.drop_index("ix_movements_series", table_name="movements")
    op.drop_table("movements")
    op.drop_index("ix_aef_actions_party_at", table_name="aef_actions")
    op.drop_table("aef_actions")
    op.drop_table("inbox")
    op.drop_table("feed_cursors")
