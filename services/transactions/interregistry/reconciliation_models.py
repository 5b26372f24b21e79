"""Tables of reconciliation (INTERREGISTRY §8), on the transactions metadata; the use cases are
`reconciliation.py` (kept apart so `services/transactions/models.py` can import the tables without the
service layer, which imports the models).

- `reconciliation`: one run against one registry: cut-off (P, S), status, the stage awaiting R's answer and
  its `respond_by`, codes, inconsistent keys and ranges, diagnoses, the Secretariat's resolution. A partial
  unique index keeps at most one open run per registry (7004), even between two IR processes.
- `reconciliation_item`: the evidence of each stage — per-key totals of both sides, each transfer compared
  at stage 2, each disputed range (and how many block rows it froze), each stage-3 diagnosis.
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from services.transactions.models import metadata

__all__ = ["reconciliation", "reconciliation_item"]

_OPEN_SQL = "status IN ('initiated', 'totals_inconsistent', 'blocks_inconsistent')"
_PK = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only an INTEGER PRIMARY KEY

reconciliation = Table(
    "reconciliation",
    metadata,
    Column("reconciliation_id", String(40), primary_key=True),
    Column("registry_id", String(5), nullable=False),
    Column("status", String(40), nullable=False),
    Column("round", Integer, nullable=False),
    Column("stage", String(16), nullable=True, comment="The stage awaiting R's answer; null when none"),
    Column("cutoff_position", BigInteger, nullable=False),
    Column("cutoff_seq", BigInteger, nullable=False),
    Column("respond_by", DateTime(timezone=True), nullable=True),
    Column("initiated_by", String(200), nullable=False),
    Column("codes", JSON, nullable=False),
    Column("inconsistent_keys", JSON, nullable=False),
    Column("inconsistent_ranges", JSON, nullable=False),
    Column("diagnoses", JSON, nullable=False),
    Column("resolution", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(
        "status IN ('initiated', 'totals_inconsistent', 'blocks_inconsistent', 'completed',"
        " 'completed_with_manual_intervention', 'failed')",
        name="ck_reconciliation_status",
    ),
    # At most one open reconciliation per registry (7004), even between two IR processes.
    Index(
        "uq_reconciliation_open",
        "registry_id",
        unique=True,
        postgresql_where=_OPEN_SQL,
        sqlite_where=_OPEN_SQL,
    ),
    Index("ix_reconciliation_registry", "registry_id", "created_at"),
    Index("ix_reconciliation_due", "status", "respond_by"),
)

reconciliation_item = Table(
    "reconciliation_item",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column("reconciliation_id", String(40), nullable=False),
    Column("round", Integer, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("transfer_id", String(64), nullable=True),
    Column("consistent", Integer, nullable=False, comment="1 when both sides agree on the item"),
    Column("ir_value", JSON, nullable=True),
    Column("registry_value", JSON, nullable=True),
    Column("note", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "kind IN ('totals', 'transfer', 'range', 'diagnosis')", name="ck_reconciliation_item_kind"
    ),
    Index("ix_reconciliation_item_rec", "reconciliation_id", "id"),
)
