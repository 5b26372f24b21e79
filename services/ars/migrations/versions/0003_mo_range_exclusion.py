"""No two MO blocks of one (CA, originating registry) overlap: an exclusion constraint on PostgreSQL.

The serial counters and the unique start index already keep issuances apart; this makes the database
refuse any overlap whatever the code path (splits shrink a block before inserting the cut piece, and
coalescing deletes before widening, so no statement ever overlaps two rows). SQLite has no exclusion
constraints: there the single writer and the counters are the guard.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE mo_blocks ADD CONSTRAINT ex_mo_blocks_no_overlap EXCLUDE USING gist "
            "(ca_id WITH =, origin_registry_id WITH =, int8range(first_serial, last_serial, '[]') WITH &&)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE mo_blocks DROP CONSTRAINT IF EXISTS ex_mo_blocks_no_overlap")
