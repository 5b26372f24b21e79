"""Tables of the transactions service: its own metadata, so it never mixes with another service's.

The ledger's tables are SQLAlchemy Core `Table`s (the hot paths are Core statements, DESIGN §2); the
migrations in `migrations/versions` build exactly this schema (tests/integration/test_migrations.py), plus
the PostgreSQL-only exclusion constraint on `blocks` (I1), which Alembic's comparison does not see.

`blocks`: the *current* blocks only, one row per contiguous serial range with every invariant copied
(DESIGN §4, INTERREGISTRY §1/§5/§8). History lives in `journal`. Serials and quantities are 64-bit.
"""

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    func,
    literal_column,
)
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

from kit.idempotency import idempotency_table
from kit.outbox import outbox_tables

__all__ = [
    "BLOCK_STATES",
    "Model",
    "blocks",
    "idempotency_keys",
    "issued_ranges",
    "journal",
    "journal_head",
    "journal_range",
    "metadata",
    "outbox",
    "outbox_relay",
    "transactions",
]

metadata = MetaData()

#: Every state a block row may have (contracts.actions.BlockState), spelled out for the CHECK constraint.
BLOCK_STATES = ("held", "reserved", "used_ndc", "used_oimp", "cancelled", "transferred_out", "pending_in")
_STATE_LIST = ", ".join(f"'{state}'" for state in BLOCK_STATES)

_PK = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only an INTEGER PRIMARY KEY


class Model(SQLModel, registry=registry(metadata=metadata)):
    """Base of this service's SQLModel tables."""


outbox, outbox_relay = outbox_tables(metadata)
idempotency_keys = idempotency_table(metadata)

blocks = Table(
    "blocks",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    # The identifier's elements (domain §4.1) and the serial range.
    Column("ca_id", String(6), nullable=False),
    Column("origin_registry_id", String(5), nullable=False),
    Column("first_transferring_party", String(3), nullable=False),
    Column("first_serial", BigInteger, nullable=False),
    Column("last_serial", BigInteger, nullable=False),
    Column("vintage", Integer, nullable=False),
    # Invariants copied on every split (DESIGN §4; AEF Table 3/4 columns).
    Column("metric", String(16), nullable=False),
    Column("applicable_gwp_values", String(200), nullable=True),
    Column("applicable_non_ghg_metric", String(200), nullable=True),
    Column("conversion_factor", Numeric(30, 10), nullable=True),
    Column("mitigation_type", String(64), nullable=False),
    Column("sector", String(200), nullable=True),
    Column("activity_type", String(200), nullable=True),
    Column("authorization_id", String(100), nullable=False),
    Column("authorization_version", Integer, nullable=False),
    Column("purposes", String(16), nullable=False),
    # Authorized Parties snapshot at first transfer: sorted alpha-3 codes joined by "," (NULL: any Party).
    Column("authorized_parties", Text, nullable=True),
    Column("first_transfer_definition", String(32), nullable=True),
    # Underlying-unit mapping (1:1, split by offset): registry id and the range that maps to first..last.
    Column("underlying_registry_id", String(32), nullable=True),
    Column("underlying_first", BigInteger, nullable=True),
    Column("underlying_last", BigInteger, nullable=True),
    # Where the units are and what they may do.
    Column("state", String(16), nullable=False),
    Column("account_id", String(40), nullable=True),
    Column("party", String(3), nullable=False, comment="Holder Party (of account_id, or the last holder)"),
    Column("reserved_by", String(40), nullable=True, comment="Transaction holding the reservation"),
    Column("to_registry_id", String(5), nullable=True, comment="transferred_out: the registry it went to"),
    Column("transfer_id", String(64), nullable=True, comment="transferred_out / pending_in: IRX transfer"),
    Column("frozen_by", String(64), nullable=True, comment="Reconciliation that froze the range (4006)"),
    Column("last_transaction_id", String(40), nullable=True, comment="Transaction that last changed it"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("first_serial >= 1", name="ck_blocks_first_positive"),
    CheckConstraint("last_serial >= first_serial", name="ck_blocks_range"),
    CheckConstraint(f"state IN ({_STATE_LIST})", name="ck_blocks_state"),
    # No two current blocks start at the same serial (I1 on SQLite too, partly; PostgreSQL adds EXCLUDE).
    Index("uq_blocks_serial_start", "ca_id", "origin_registry_id", "first_serial", unique=True),
    # Coalescing looks up the block ending just below a range.
    Index("ix_blocks_serial_end", "ca_id", "origin_registry_id", "last_serial"),
    # Selection in the DESIGN order and holdings pages: account, state, vintage, CA, registry, serial.
    Index(
        "ix_blocks_account_order",
        "account_id",
        "state",
        "vintage",
        "ca_id",
        "origin_registry_id",
        "first_serial",
    ),
    Index("ix_blocks_party_state", "party", "state"),
    Index("ix_blocks_reserved_by", "reserved_by"),
)

#: Every serial range that became an ITMO here (first transfers; later, acquisitions of never-seen
#: serials from connected registries). I2 compares it with the current blocks, I4 checks it never overlaps.
issued_ranges = Table(
    "issued_ranges",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column("ca_id", String(6), nullable=False),
    Column("origin_registry_id", String(5), nullable=False),
    Column("first_serial", BigInteger, nullable=False),
    Column("last_serial", BigInteger, nullable=False),
    Column("first_transferring_party", String(3), nullable=False),
    Column("authorization_id", String(100), nullable=False),
    Column("transaction_id", String(40), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column(
        "acquired_from_registry",
        String(5),
        nullable=True,
        comment="Acquisition of never-seen serials from this connected registry (null: a first transfer)",
    ),
    CheckConstraint("last_serial >= first_serial", name="ck_issued_ranges_range"),
    Index("uq_issued_ranges_start", "ca_id", "origin_registry_id", "first_serial", unique=True),
    Index("ix_issued_ranges_authorization", "first_transferring_party", "authorization_id"),
)

transactions = Table(
    "transactions",
    metadata,
    Column("transaction_id", String(40), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("status", String(24), nullable=False),
    Column("party", String(3), nullable=True, comment="Initiating Party (null: Secretariat or a service)"),
    Column("from_account", String(64), nullable=True),
    Column("to_account", String(64), nullable=True),
    Column("from_party", String(3), nullable=True),
    Column("to_party", String(3), nullable=True),
    Column("from_registry_id", String(5), nullable=True),
    Column("to_registry_id", String(5), nullable=True),
    Column("quantity", BigInteger, nullable=False),
    Column("ndc_use_year", Integer, nullable=True),
    Column("purpose", String(200), nullable=True),
    Column("using_entity_id", String(64), nullable=True),
    Column("note", Text, nullable=True),
    Column("operation_id", String(200), nullable=True, unique=True),
    Column("initiated_by", String(200), nullable=False),
    Column("approved_by", String(200), nullable=True),
    Column("checks", JSON, nullable=False),
    Column("actions", JSON, nullable=False),
    Column("blocks", JSON, nullable=False, comment="Block snapshots of what moved (or is reserved)"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True, comment="awaiting_approval deadline"),
    Column("corrects", String(40), nullable=True, comment="correction: the transaction it reverses"),
    Column("interregistry", JSON, nullable=True, comment="Transfer to/from a connected registry: its link"),
    Index("ix_transactions_from_account", "from_account", "transaction_id"),
    Index("ix_transactions_to_account", "to_account", "transaction_id"),
    Index("ix_transactions_from_party", "from_party", "transaction_id"),
    Index("ix_transactions_to_party", "to_party", "transaction_id"),
    Index("ix_transactions_status_expiry", "status", "expires_at"),
    Index("ix_transactions_corrects", "corrects"),
)

#: The hash-chained journal (DESIGN §4). Rows are written unsealed (`seq`, hashes NULL) in the moving
#: transaction and sealed after commit, in commit order, by `journal.JournalSealer` (docs/ledger.md).
journal = Table(
    "journal",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=True, unique=True),
    Column("transaction_id", String(40), nullable=False),
    Column("entry_type", String(32), nullable=False),
    Column("ca_id", String(6), nullable=False),
    Column("origin_registry_id", String(5), nullable=False),
    Column("first_serial", BigInteger, nullable=False, comment="Union of the before and after ranges"),
    Column("last_serial", BigInteger, nullable=False),
    Column("payload", JSON, nullable=False, comment="What the hash covers, with seq and prev_hash"),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ix_journal_serials", "ca_id", "origin_registry_id", "first_serial", "last_serial"),
    Index("ix_journal_transaction", "transaction_id"),
    Index("ix_journal_unsealed", "id", postgresql_where="seq IS NULL", sqlite_where="seq IS NULL"),
)


def journal_range() -> Any:
    """`int8range(first_serial, last_serial, '[]')` exactly as the PostgreSQL index spells it."""
    return func.int8range(journal.c.first_serial, journal.c.last_serial, literal_column("'[]'"))


# PostgreSQL only (migration 0004): a unit's history by range containment (`@>`), not a scan of its series.
Index(
    "ix_journal_range",
    journal.c.ca_id,
    journal.c.origin_registry_id,
    journal_range(),
    postgresql_using="gist",
).ddl_if(dialect="postgresql")

journal_head = Table(
    "journal_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

# The inter-registry tables live on this metadata too (one schema, one migration chain); imported last
# because they import `metadata` from here.
from services.transactions.interregistry import models as _interregistry_models  # noqa: E402, F401
from services.transactions.interregistry import reconciliation_models as _reconciliation_models  # noqa: E402, F401
