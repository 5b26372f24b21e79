"""Tables of the reporting service: the read model built from the producers' feeds (docs/reporting.md).

Plain SQLAlchemy Core tables (hot paths are Core statements, DESIGN §2), kept in this service's metadata so
Alembic compares them with migrations/versions/0002_read_model.py.

- `feed_cursors`: the last position applied, per producer feed.
- `inbox`: every event id applied; an event already in it is skipped (replays never double count).
- `aef_actions`: one row per AEF Table 3 row (a transaction side × a maximal contiguous serial run).
- `movements`: every block a completed transaction left somewhere (holder Party, registry, state), in
  application order: holdings at any instant are repainted from them (domain §5.5).
- `authorizations`: one row per authorization version with its Table 2 row (domain §5.3).
- `entities`: authorized entities (Table 5); `ndc_periods`: the Parties' NDC implementation periods.
- `submissions` and `submission_chunks`: frozen AEF versions, as the canonical JSON bytes served back
  unchanged, stored in chunks of at most 1 MiB, with their SHA-256 (on PostgreSQL a trigger refuses any
  change to a chunk, migration 0008).
- `year_end_holdings` and `year_end_holding_rows`: Table 4 of closed years, frozen (derived: a rebuild of
  the read model drops them with the rest).
- `sections` (with the confidentiality designations) and `cooperative_approaches`: for the public register.
- `party_feed_heads` and `party_events`: the per-Party event feed (`GET /v1/events`, docs/events.md), each
  item stored as the JSON bytes served, with a consecutive position per Party. Not part of the rebuildable
  read model: a published log (an item already there is never appended twice, see `feed.py`).
- `webhooks` and `webhook_deliveries`: the Parties' Standard Webhooks endpoints and each message's
  delivery state (`webhooks.py`).
- `confidential_reads`: reads of a Party's reports from outside the Party, append-only.
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

__all__ = [
    "Model",
    "aef_actions",
    "authorizations",
    "cooperative_approaches",
    "entities",
    "feed_cursors",
    "inbox",
    "metadata",
    "movements",
    "ndc_periods",
    "party_events",
    "party_feed_heads",
    "sections",
    "submission_chunks",
    "submissions",
    "webhook_deliveries",
    "webhooks",
    "year_end_holding_rows",
    "year_end_holdings",
]

metadata = MetaData()


class Model(SQLModel, registry=registry(metadata=metadata)):
    """Base of this service's SQLModel tables."""


def _id() -> Column:
    return Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)


def _block_columns() -> list[Column]:
    """The invariants of a serial range that the AEF reports (domain §5.4, §5.5)."""
    return [
        Column("ca_id", String(6), nullable=False),
        Column("origin_registry_id", String(5), nullable=False),
        Column("first_transferring_party", String(3), nullable=False),
        Column("first_serial", BigInteger, nullable=False),
        Column("last_serial", BigInteger, nullable=False),
        Column("vintage", Integer, nullable=False),
        Column("authorization_id", String(100), nullable=False),
        Column("metric", String(16), nullable=False),
        Column("mitigation_type", String(64), nullable=False),
        Column("applicable_gwp_values", String(200), nullable=True),
        Column("applicable_non_ghg_metric", String(200), nullable=True),
        Column("conversion_factor", String(40), nullable=True),
        Column("underlying_registry_id", String(200), nullable=True),
        Column("underlying_first", BigInteger, nullable=True),
        Column("underlying_last", BigInteger, nullable=True),
    ]


feed_cursors = Table(
    "feed_cursors",
    metadata,
    Column("producer", String(50), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

inbox = Table(
    "inbox",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("producer", String(50), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("type", String(100), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

aef_actions = Table(
    "aef_actions",
    metadata,
    _id(),
    Column("transaction_id", String(40), nullable=False),
    Column("party", String(3), nullable=False),
    Column("registry_id", String(5), nullable=False),
    Column("action_at", DateTime(timezone=True), nullable=False),
    Column("action_type", String(40), nullable=False),
    Column("action_subtype", String(80), nullable=True),
    *_block_columns(),
    Column("transferring_party_id", String(3), nullable=True),
    Column("acquiring_party_id", String(3), nullable=True),
    Column("purpose_oimp", Text, nullable=True),
    Column("using_cancelling_party_id", String(3), nullable=True),
    Column("using_cancelling_entity_id", String(100), nullable=True),
    Column("ndc_use_year", Integer, nullable=True),
    Index("ix_aef_actions_party_at", "party", "action_at"),
)

movements = Table(
    "movements",
    metadata,
    _id(),
    Column("transaction_id", String(40), nullable=False),
    Column("moved_at", DateTime(timezone=True), nullable=False),
    Column("party", String(3), nullable=False),
    Column("registry_id", String(5), nullable=True),
    Column("state", String(20), nullable=False),
    *_block_columns(),
    Index("ix_movements_series", "ca_id", "origin_registry_id", "first_serial"),
    Index("ix_movements_party", "party", "ca_id", "origin_registry_id"),
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("authorization_id", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("authorized_on", Date, nullable=False),
    Column("status", String(20), nullable=False),
    Column("table2", JSON, nullable=False),
)

entities = Table(
    "entities",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("entity_id", String(100), primary_key=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("data", JSON, nullable=False),
)

ndc_periods = Table(
    "ndc_periods",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("first_year", Integer, primary_key=True),
    Column("last_year", Integer, nullable=False),
)

submissions = Table(
    "submissions",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("major", Integer, primary_key=True),
    Column("minor", Integer, primary_key=True),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("submitted_by", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    #: SHA-256 (hex) of the version's bytes, taken as they were frozen; served as `Repr-Digest`.
    Column("sha256", String(64), nullable=False),
    #: When `aef.submission.created` went into the Party's feed (null: not yet; `feed.announce_submissions`).
    Column("announced_at", DateTime(timezone=True), nullable=True),
    Index("ix_submissions_unannounced", "announced_at"),
)

#: The bytes of a frozen version, in order (`seq` from 0): written as the tables stream, so a large
#: Party-year is never one value in memory; their concatenation is the canonical JSON served back.
submission_chunks = Table(
    "submission_chunks",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("major", Integer, primary_key=True),
    Column("minor", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("bytes", LargeBinary, nullable=False),
    ForeignKeyConstraint(
        ["party", "year", "major", "minor"],
        ["submissions.party", "submissions.year", "submissions.major", "submissions.minor"],
        name="fk_submission_chunks_submission",
    ),
)

#: Table 4 of a closed year, frozen when a submission of that year first needs it once no later movement
#: can still be dated inside the year (docs/reporting.md, "Year-end holdings"); `holding_count` rows follow
#: in `year_end_holding_rows`, in Table 4 order.
year_end_holdings = Table(
    "year_end_holdings",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("taken_at", DateTime(timezone=True), nullable=False),
    Column("holding_count", Integer, nullable=False),
)

year_end_holding_rows = Table(
    "year_end_holding_rows",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("holding", JSON, nullable=False),
    ForeignKeyConstraint(
        ["party", "year"],
        ["year_end_holdings.party", "year_end_holdings.year"],
        name="fk_year_end_holding_rows_snapshot",
    ),
)

#: Party sections as party_sections last published them: registry id, status and the confidentiality
#: designations (`confidential_fields`: AEF field names, domain §6) the public register strips.
sections = Table(
    "sections",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("registry_id", String(5), nullable=False),
    Column("status", String(20), nullable=False),
    Column("confidential_fields", JSON, nullable=False),
)

cooperative_approaches = Table(
    "cooperative_approaches",
    metadata,
    Column("ca_id", String(6), primary_key=True),
    Column("data", JSON, nullable=False),
)

#: The last position given in each Party's feed: the row an appender locks (DESIGN §5, `feed.append`).
party_feed_heads = Table(
    "party_feed_heads",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

#: One item of one Party's feed: `body` is the item's JSON exactly as served, so a replay from
#: `after=0` returns the same bytes forever; `event_id` is unique per Party (a re-derivation skips it).
party_events = Table(
    "party_events",
    metadata,
    Column("party", String(3), primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("event_id", String(36), nullable=False),
    Column("type", String(100), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
    UniqueConstraint("party", "event_id", name="uq_party_events_event"),
    Index("ix_party_events_type", "party", "type", "position"),
)

#: A Party's webhook endpoint (Standard Webhooks 1.0.0): the signing secret (and the previous one while
#: it still signs after a rotation), the feed position fanned out so far, and the failure streak.
webhooks = Table(
    "webhooks",
    metadata,
    Column("webhook_id", String(40), primary_key=True),
    Column("party", String(3), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("description", Text, nullable=True),
    Column("status", String(20), nullable=False),
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100), nullable=True),
    Column("previous_secret_until", DateTime(timezone=True), nullable=True),
    Column("cursor", BigInteger, nullable=False),
    Column("failing_since", DateTime(timezone=True), nullable=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("disabled_reason", String(40), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Index("ix_webhooks_party", "party"),
)

#: One message (one feed item) for one endpoint: the body sent on every attempt, its state, when the next
#: attempt is due, and the log of attempts made.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    _id(),
    Column("webhook_id", String(40), nullable=False),
    Column("party", String(3), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("type", String(100), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("log", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(
        ["webhook_id"], ["webhooks.webhook_id"], name="fk_webhook_deliveries_webhook", ondelete="CASCADE"
    ),
    UniqueConstraint("webhook_id", "position", name="uq_webhook_deliveries_item"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
)

#: Every read of a Party's reports by someone outside the Party (the Secretariat, an auditor): who, what,
#: when, and the fields the Party had designated confidential at that moment (domain §6: "immutable audit
#: log of reads of confidential data"). Append-only: on PostgreSQL a trigger refuses changes (0009).
confidential_reads = Table(
    "confidential_reads",
    metadata,
    _id(),
    Column("read_at", DateTime(timezone=True), nullable=False),
    Column("party", String(3), nullable=False),
    Column("year", Integer, nullable=False),
    Column("subject", String(40), nullable=False),
    Column("version", String(20), nullable=True),
    Column("format", String(10), nullable=False),
    Column("client_id", String(200), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("designated", JSON, nullable=False),
    Index("ix_confidential_reads_party", "party", "id"),
)
