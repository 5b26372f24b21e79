"""`confidential_reads`: every read of a Party's AEF, submissions, corresponding adjustments or consistency
findings by someone outside the Party, with the fields it had designated confidential then (domain §6,
docs/reporting.md "Reads of a Party's reports"). Append-only: on PostgreSQL a trigger refuses UPDATE,
DELETE and TRUNCATE.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_REFUSE = """
CREATE FUNCTION confidential_reads_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the log of confidential reads is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "confidential_reads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=True),
        sa.Column("format", sa.String(length=10), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("designated", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_confidential_reads_party", "confidential_reads", ["party", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_REFUSE)
        op.execute(
            "CREATE TRIGGER confidential_reads_append_only BEFORE UPDATE OR DELETE ON confidential_reads "
            "FOR EACH ROW EXECUTE FUNCTION confidential_reads_append_only()"
        )
        op.execute(
            "CREATE TRIGGER confidential_reads_not_truncated BEFORE TRUNCATE ON confidential_reads "
            "FOR EACH STATEMENT EXECUTE FUNCTION confidential_reads_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER confidential_reads_not_truncated ON confidential_reads")
        op.execute("DROP TRIGGER confidential_reads_append_only ON confidential_reads")
        op.execute("DROP FUNCTION confidential_reads_append_only()")
    op.drop_index("ix_confidential_reads_party", table_name="confidential_reads")
    op.drop_table("confidential_reads")
