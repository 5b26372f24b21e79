"""Year-end holdings: Table 4 of a closed year, frozen once no later movement can be dated inside it
(docs/reporting.md, "Year-end holdings").

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


def upgrade() -> None:
    op.create_table(
        "year_end_holdings",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holding_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("party", "year"),
    )
    op.create_table(
        "year_end_holding_rows",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("holding", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["party", "year"],
            ["year_end_holdings.party", "year_end_holdings.year"],
            name="fk_year_end_holding_rows_snapshot",
        ),
        sa.PrimaryKeyConstraint("party", "year", "seq"),
    )


def downgrade() -> None:
    op.drop_table("year_end_holding_rows")
    op.drop_table("year_end_holdings")
