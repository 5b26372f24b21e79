"""Tables of the ars service: its own metadata, so it never mixes with another service's.

SQLAlchemy Core `Table`s (the hot paths are Core statements, DESIGN §2); migration 0002 builds exactly this
schema. Serials, quantities and underlying unit ids are 64-bit.

- `serial_counters`: the last serial allocated per (CA, originating registry); issuance bumps it in the
  transaction that inserts the blocks, so serials are gap-free and never shared (docs/ars.md).
- `issuances`: one row per MO issuance (A1).
- `mo_blocks`: the current MO blocks, contiguous serial ranges with every invariant and a state
  (`contracts.actions.MOState`); `operation_id` names the first transfer reserving or having taken them.
- `authorizations`: one row per authorization version (AEF Table 2); `authorization_heads` one per
  authorization, its current version and status (versions serialise on it).
- `first_transfers`: the saga's outbox: one row per first transfer with the exact request the IR gets.
- `mo_cancellations`: domestic cancellations (not AEF actions).
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

from kit.idempotency import idempotency_table
from kit.outbox import outbox_tables

__all__ = [
    "MO_STATES",
    "Model",
    "authorization_heads",
    "authorizations",
    "first_transfers",
    "idempotency_keys",
    "issuances",
    "metadata",
    "mo_blocks",
    "mo_cancellations",
    "outbox",
    "outbox_relay",
    "serial_counters",
]

metadata = MetaData()

#: Every state an MO block row may have (contracts.actions.MOState), for the CHECK constraint.
MO_STATES = ("pending_authorization", "authorized", "reserved", "first_transferred", "cancelled")
_STATE_LIST = ", ".join(f"'{state}'" for state in MO_STATES)
_PK = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only an INTEGER PRIMARY KEY


class Model(SQLModel, registry=registry(metadata=metadata)):
    """Base of this service's SQLModel tables."""


outbox, outbox_relay = outbox_tables(metadata)
idempotency_keys = idempotency_table(metadata)

serial_counters = Table(
    "serial_counters",
    metadata,
    Column("ca_id", String(6), primary_key=True),
    Column("registry_id", String(5), primary_key=True),
    Column("last_serial", BigInteger, nullable=False),
)

issuances = Table(
    "issuances",
    metadata,
    Column("issuance_id", String(40), primary_key=True),
    Column("party", String(3), nullable=False),
    Column("ca_id", String(6), nullable=False),
    Column("origin_registry_id", String(5), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("first_serial", BigInteger, nullable=False),
    Column("last_serial", BigInteger, nullable=False),
    Column("metric", String(16), nullable=False),
    Column("mitigation_type", String(64), nullable=False),
    Column("sector", String(200), nullable=False),
    Column("activity_type", String(200), nullable=False),
    Column("applicable_gwp_values", String(200), nullable=True),
    Column("applicable_non_ghg_metric", String(200), nullable=True),
    Column("conversion_factor", String(40), nullable=True),
    Column("underlying_registry_id", String(200), nullable=True),
    Column("underlying_first", BigInteger, nullable=True),
    Column("underlying_last", BigInteger, nullable=True),
    Column("authorization_id", String(100), nullable=True),
    Column("note", Text, nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_issuances_party", "party", "issuance_id"),
)

mo_blocks = Table(
    "mo_blocks",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column("party", String(3), nullable=False),
    Column("ca_id", String(6), nullable=False),
    Column("origin_registry_id", String(5), nullable=False),
    Column("first_serial", BigInteger, nullable=False),
    Column("last_serial", BigInteger, nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("metric", String(16), nullable=False),
    Column("mitigation_type", String(64), nullable=False),
    Column("sector", String(200), nullable=False),
    Column("activity_type", String(200), nullable=False),
    Column("applicable_gwp_values", String(200), nullable=True),
    Column("applicable_non_ghg_metric", String(200), nullable=True),
    Column("conversion_factor", String(40), nullable=True),
    Column("underlying_registry_id", String(200), nullable=True),
    Column("underlying_first", BigInteger, nullable=True),
    Column("state", String(32), nullable=False),
    Column("authorization_id", String(100), nullable=True),
    Column("authorization_version", Integer, nullable=True),
    Column("operation_id", String(64), nullable=True),
    Column("transaction_id", String(64), nullable=True),
    Column("cancellation_id", String(40), nullable=True),
    Column("issuance_id", String(40), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("last_serial >= first_serial", name="ck_mo_blocks_range"),
    CheckConstraint(f"state IN ({_STATE_LIST})", name="ck_mo_blocks_state"),
    UniqueConstraint("ca_id", "origin_registry_id", "first_serial", name="uq_mo_blocks_first"),
    Index("ix_mo_blocks_take", "party", "state", "vintage", "ca_id", "origin_registry_id", "first_serial"),
    Index("ix_mo_blocks_authorization", "party", "authorization_id", "state"),
    Index("ix_mo_blocks_operation", "operation_id"),
)

authorization_heads = Table(
    "authorization_heads",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("authorization_id", String(100), primary_key=True),
    Column("ca_id", String(6), nullable=False),
    Column("current_version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("authorization_id", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("date", Date, nullable=False),
    Column("ca_id", String(6), nullable=False),
    Column("purposes", String(16), nullable=False),
    Column("authorized_quantity", BigInteger, nullable=True),
    Column("metric", String(16), nullable=False),
    Column("applicable_gwp_values", String(200), nullable=True),
    Column("applicable_non_ghg_metric", String(200), nullable=True),
    Column("sectors", JSON, nullable=False),
    Column("activity_types", JSON, nullable=False),
    Column("authorized_parties", JSON, nullable=True),
    Column("authorized_entities", JSON, nullable=True),
    Column("oimp", Text, nullable=True),
    Column("timeframe", String(11), nullable=True),
    Column("terms", Text, nullable=True),
    Column("first_transfer_definition", String(32), nullable=True),
    Column("additional_explanatory_information", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revocation_reason", Text, nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

first_transfers = Table(
    "first_transfers",
    metadata,
    Column("operation_id", String(64), primary_key=True),
    Column("party", String(3), nullable=False),
    Column("authorization_id", String(100), nullable=False),
    Column("authorization_version", Integer, nullable=False),
    Column("first_transfer_definition", String(32), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("to_account", String(64), nullable=True),
    Column("use", JSON, nullable=True),
    Column("request", JSON, nullable=False),
    Column("mo_ranges", JSON, nullable=False),
    Column("status", String(32), nullable=False),
    Column("transaction_id", String(64), nullable=True),
    Column("transaction_status", String(32), nullable=True),
    Column("result_blocks", JSON, nullable=True),
    Column("checks", JSON, nullable=True),
    Column("origin", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("initiated_by", String(200), nullable=False),
    Column("approved_by", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Index("ix_first_transfers_pending", "status", "next_attempt_at"),
    Index("ix_first_transfers_party", "party", "operation_id"),
)

mo_cancellations = Table(
    "mo_cancellations",
    metadata,
    Column("cancellation_id", String(40), primary_key=True),
    Column("party", String(3), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
