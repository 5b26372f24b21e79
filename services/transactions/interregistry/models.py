"""Tables of the inter-registry protocol (INTERREGISTRY §2–§4), on the transactions service's metadata.

- `registry`: one connected national registry (§2.1): its record, lifecycle status, `version` (ETag), the
  last accepted `seq` (`last_seq_in`, moved by compare-and-set in the accepting transaction, §3 step 7),
  its acknowledged inbox position, and what its last `hello` said (clock skew, negotiated version).
- `registry`'s `clients`: the OAuth2 client ids allowed to speak for the registry (§2.2); a `registry` token
  of another client is refused 1004 even when its `registry_id` claim names the registry.
- `registry_key`: every key a registry message was verified with (§2.3), so stored messages stay verifiable
  after rotation; `revoked_at` refuses messages signed with the kid from then on (set by the Secretariat,
  with who and why). A kid revoked before any message used it has a row without key, thumbprint or dates.
- `irx_message`: the message log and the inbox in one table (§12). Direction `registry_to_ir`: an accepted
  POST with its stored answer (replays return it). Direction `ir_to_registry`: an inbox message, inserted
  with the state change it announces and `position` NULL; the relay gives it the next consecutive position
  of its registry, completes the envelope (`seq` = position, `sent_at`) and signs it.
- `irx_inbox_cursor`: per registry, the last position the relay handed out. The relay locks this row
  (`FOR UPDATE`), so one relay at a time numbers a registry's inbox and positions follow commit order.
- `irx_transfer`: every transfer between the IR and a connected registry, both directions (§5.1, §6): its
  status (the single decider's compare-and-set target, S1), deadline, the ledger transaction, the blocks as
  proposed, the codes, the messages that proposed, decided and announced it, and for incoming proposals
  the body hash and the stored answer (a proposal repeated under a new message id gets it again, S6). A
  `cancel` of an unknown id leaves a `cancelled` tombstone without a transaction (S8).
- `conformance_run`: results of conformance runs (§11). Production activation needs a passing run; the
  conformance kit (issue 8) writes these rows, nothing here does.

Refusals of §3 (1xxx, 3001) are not stored anywhere: they are logged and counted (`irx_refusals_total`).
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.transactions.models import metadata

__all__ = [
    "DIRECTION_IN",
    "DIRECTION_OUT",
    "conformance_run",
    "irx_inbox_cursor",
    "irx_message",
    "irx_transfer",
    "registry",
    "registry_key",
]

#: `irx_message.direction` values; the same words as `contracts.interregistry.TransferDirection`.
DIRECTION_IN = "registry_to_ir"
DIRECTION_OUT = "ir_to_registry"

_PK = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only an INTEGER PRIMARY KEY

registry = Table(
    "registry",
    metadata,
    Column("registry_id", String(5), primary_key=True),
    Column("party", String(3), nullable=False),
    Column("name", String(200), nullable=False),
    Column("environment", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("jwks_url", String(2048), nullable=True),
    Column("jwks", JSON, nullable=True),
    Column("signing", String(16), nullable=False),
    Column("response_timeout_s", Integer, nullable=False),
    Column("contacts", JSON, nullable=False),
    Column("webhook_url", String(2048), nullable=True),
    Column("version", Integer, nullable=False),
    Column("last_seq_in", BigInteger, nullable=False),
    Column("acked_position", BigInteger, nullable=False),
    Column("clock_skew_ms", BigInteger, nullable=True),
    Column("skew_flagged", Boolean, nullable=False),
    Column("hello_at", DateTime(timezone=True), nullable=True),
    Column("irx_version", String(9), nullable=True),
    Column("conformance_run_id", String(200), nullable=True),
    Column("clients", JSON, nullable=False, comment="OAuth2 client ids that may speak for it (1004)"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("status_changed_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "status IN ('onboarding', 'testing', 'active', 'suspended', 'disconnected')",
        name="ck_registry_status",
    ),
    CheckConstraint("last_seq_in >= 0", name="ck_registry_last_seq"),
    CheckConstraint("acked_position >= 0", name="ck_registry_acked"),
)

registry_key = Table(
    "registry_key",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column("registry_id", String(5), nullable=False),
    Column("kid", String(200), nullable=False),
    Column("jwk", JSON, nullable=True),
    Column("thumbprint", String(64), nullable=True),
    Column("first_seen", DateTime(timezone=True), nullable=True),
    Column("last_seen", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_by", String(200), nullable=True),
    Column("revocation_note", Text, nullable=True),
    UniqueConstraint("registry_id", "kid", "thumbprint", name="uq_registry_key"),
)

irx_message = Table(
    "irx_message",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column("registry_id", String(5), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("message_id", String(36), nullable=False),
    Column("type", String(40), nullable=False),
    Column("seq", BigInteger, nullable=True),
    Column("position", BigInteger, nullable=True),
    Column("transfer_id", String(64), nullable=True),
    Column("envelope", JSON, nullable=False),
    Column("signature", Text, nullable=True),
    Column("kid", String(200), nullable=True),
    Column("key_thumbprint", String(64), nullable=True),
    Column("verification", String(16), nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("response_status", Integer, nullable=True),
    Column("response_body", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("positioned_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("direction IN ('registry_to_ir', 'ir_to_registry')", name="ck_irx_message_direction"),
    # A message id is the sender's idempotency key: unique per sender and direction, never across
    # registries (one registry must not be able to read another's stored answer by reusing its id).
    UniqueConstraint("registry_id", "direction", "message_id", name="uq_irx_message_id"),
    UniqueConstraint("registry_id", "position", name="uq_irx_message_position"),
    Index("ix_irx_message_registry_log", "registry_id", "id"),
    Index("ix_irx_message_transfer", "transfer_id"),
    Index(
        "ix_irx_message_unpositioned",
        "registry_id",
        "id",
        postgresql_where="position IS NULL AND direction = 'ir_to_registry'",
        sqlite_where="position IS NULL AND direction = 'ir_to_registry'",
    ),
)

irx_inbox_cursor = Table(
    "irx_inbox_cursor",
    metadata,
    Column("registry_id", String(5), primary_key=True),
    Column("last_position", BigInteger, nullable=False),
)

conformance_run = Table(
    "conformance_run",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("registry_id", String(5), nullable=False),
    Column("result", String(16), nullable=False),
    Column("report", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("result IN ('pass', 'fail')", name="ck_conformance_run_result"),
    Index("ix_conformance_run_registry", "registry_id"),
)

irx_transfer = Table(
    "irx_transfer",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("direction", String(16), nullable=False),
    Column("registry_id", String(5), nullable=False),
    Column("transaction_id", String(40), nullable=True, comment="Null: a tombstone or a rejected proposal"),
    Column("status", String(24), nullable=False),
    Column("respond_by", DateTime(timezone=True), nullable=True),
    Column("quantity", BigInteger, nullable=True),
    Column("blocks", JSON, nullable=False, comment="TransferBlock list as proposed"),
    Column("codes", JSON, nullable=False),
    Column("proposal_sha256", String(64), nullable=True, comment="Incoming: body hash (4007 vs replay)"),
    Column("proposal_message_id", String(36), nullable=True),
    Column("decision_message_id", String(36), nullable=True),
    Column("final_message_id", String(36), nullable=True),
    Column("response_status", Integer, nullable=True, comment="Incoming: the stored answer"),
    Column("response_body", JSON, nullable=True),
    Column(
        "pending",
        JSON,
        nullable=True,
        comment="Manual acceptance: the pending_in ranges and what each was before (undone on refusal)",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("direction IN ('registry_to_ir', 'ir_to_registry')", name="ck_irx_transfer_direction"),
    # The terminator's scan: sent transfers past respond_by.
    Index("ix_irx_transfer_due", "status", "respond_by"),
    Index("ix_irx_transfer_transaction", "transaction_id"),
    Index("ix_irx_transfer_registry", "registry_id", "direction", "transfer_id"),
)
