"""The ledger's transactions, issued ranges and hash-chained journal (DESIGN §4).

On PostgreSQL an exclusion constraint makes a first transfer happen once per serial (I4).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "issued_ranges",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("origin_registry_id", sa.String(length=5), nullable=False),
        sa.Column("first_serial", sa.BigInteger(), nullable=False),
        sa.Column("last_serial", sa.BigInteger(), nullable=False),
        sa.Column("first_transferring_party", sa.String(length=3), nullable=False),
        sa.Column("authorization_id", sa.String(length=100), nullable=False),
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("last_serial >= first_serial", name="ck_issued_ranges_range"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_issued_ranges_start",
        "issued_ranges",
        ["ca_id", "origin_registry_id", "first_serial"],
        unique=True,
    )
    op.create_index(
        "ix_issued_ranges_authorization", "issued_ranges", ["first_transferring_party", "authorization_id"]
    )
    op.create_table(
        "transactions",
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column(
            "party",
            sa.String(length=3),
            nullable=True,
            comment="Initiating Party (null: Secretariat or a service)",
        ),
        sa.Column("from_account", sa.String(length=64), nullable=True),
        sa.Column("to_account", sa.String(length=64), nullable=True),
        sa.Column("from_party", sa.String(length=3), nullable=True),
        sa.Column("to_party", sa.String(length=3), nullable=True),
        sa.Column("from_registry_id", sa.String(length=5), nullable=True),
        sa.Column("to_registry_id", sa.String(length=5), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("ndc_use_year", sa.Integer(), nullable=True),
        sa.Column("purpose", sa.String(length=200), nullable=True),
        sa.Column("using_entity_id", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("operation_id", sa.String(length=200), nullable=True),
        sa.Column("initiated_by", sa.String(length=200), nullable=False),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column(
            "blocks", sa.JSON(), nullable=False, comment="Block snapshots of what moved (or is reserved)"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "expires_at", sa.DateTime(timezone=True), nullable=True, comment="awaiting_approval deadline"
        ),
        sa.PrimaryKeyConstraint("transaction_id"),
        sa.UniqueConstraint("operation_id"),
    )
    op.create_index("ix_transactions_from_account", "transactions", ["from_account", "transaction_id"])
    op.create_index("ix_transactions_to_account", "transactions", ["to_account", "transaction_id"])
    op.create_index("ix_transactions_from_party", "transactions", ["from_party", "transaction_id"])
    op.create_index("ix_transactions_to_party", "transactions", ["to_party", "transaction_id"])
    op.create_index("ix_transactions_status_expiry", "transactions", ["status", "expires_at"])
    op.create_table(
        "journal",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("entry_type", sa.String(length=32), nullable=False),
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("origin_registry_id", sa.String(length=5), nullable=False),
        sa.Column(
            "first_serial", sa.BigInteger(), nullable=False, comment="Union of the before and after ranges"
        ),
        sa.Column("last_serial", sa.BigInteger(), nullable=False),
        sa.Column(
            "payload", sa.JSON(), nullable=False, comment="What the hash covers, with seq and prev_hash"
        ),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
    )
    op.create_index(
        "ix_journal_serials", "journal", ["ca_id", "origin_registry_id", "first_serial", "last_serial"]
    )
    op.create_index("ix_journal_transaction", "journal", ["transaction_id"])
    op.create_index(
        "ix_journal_unsealed",
        "journal",
        ["id"],
        postgresql_where=sa.text("seq IS NULL"),
        sqlite_where=sa.text("seq IS NULL"),
    )
    head = op.create_table(
        "journal_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(head, [{"id": 1, "last_seq": 0, "last_hash": GENESIS}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE issued_ranges ADD CONSTRAINT ex_issued_ranges_once EXCLUDE USING gist "
            "(ca_id WITH =, origin_registry_id WITH =, int8range(first_serial, last_serial, '[]') WITH &&)"
        )


def downgrade() -> None:
    op.drop_table("journal_head")
    op.drop_index("ix_journal_unsealed", table_name="journal")
    op.drop_index("ix_journal_transaction", table_name="journal")
    op.drop_index("ix_journal_serials", table_name="journal")
    op.drop_table("journal")
    op.drop_index("ix_transactions_status_expiry", table_name="transactions")
    op.drop_index("ix_transactions_to_party", table_name="transactions")
    op.drop_index("ix_transactions_from_party", table_name="transactions")
    op.drop_index("ix_transactions_to_account", table_name="transactions")
    op.drop_index("ix_transactions_from_account", table_name="transactions")
    op.drop_table("transactions")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE issued_ranges DROP CONSTRAINT IF EXISTS ex_issued_ranges_once")
    op.drop_index("ix_issued_ranges_authorization", table_name="issued_ranges")
    op.drop_index("uq_issued_ranges_start", table_name="issued_ranges")
    op.drop_table("issued_ranges")
