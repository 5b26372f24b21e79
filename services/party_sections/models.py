"""Tables of the party_sections service: its own metadata, so it never mixes with another service's.

SQLModel classes define the tables; the repository queries them through their Core `Table`s (the names
exported below). Constraint names are explicit so the hand-written migrations can name them too.
"""

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from kit.outbox import outbox_tables

__all__ = [
    "AccountRow",
    "AuditRow",
    "CooperativeApproachRow",
    "EntityRow",
    "Model",
    "NdcPeriodRow",
    "ParticipantRow",
    "SectionRow",
    "accounts",
    "audit_log",
    "ca_participants",
    "cooperative_approaches",
    "entities",
    "metadata",
    "ndc_periods",
    "outbox",
    "outbox_relay",
    "sections",
]

metadata = MetaData()


class Model(SQLModel, registry=registry(metadata=metadata)):
    """Base of this service's SQLModel tables."""


def _utc_column(nullable: bool = False) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=nullable))


class SectionRow(Model, table=True):
    """A Party section (domain §3.3): one per Party, ever; `version` is its ETag."""

    __tablename__ = "sections"
    __table_args__ = (UniqueConstraint("registry_id", name="uq_sections_registry_id"),)

    party: str = Field(sa_type=String(3), primary_key=True)
    registry_id: str = Field(sa_type=String(5))
    status: str = Field(sa_type=String(16))
    ars: bool
    four_eyes: bool
    # [{"field": "<table>.<key>", "basis": "..."}]: a small list read and written whole with the settings.
    confidential_fields: list[dict[str, str]] = Field(sa_column=Column(JSON, nullable=False))
    # `automatic` or `manual` (contracts.party_sections.IncomingAcceptance): read by the ledger's directory.
    incoming_acceptance: str = Field(sa_column=Column(String(16), nullable=False, server_default="automatic"))
    version: int = Field(sa_type=BigInteger)
    created_at: datetime = _utc_column()
    updated_at: datetime = _utc_column()


class AuditRow(Model, table=True):
    """Every change to the service's data: who (client id), when, why (reason), what (action, details)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_party_subject", "party", "subject", "id"),)

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    # Null for changes that belong to no one Party (a cooperative approach).
    party: str | None = Field(default=None, sa_type=String(3))
    subject: str = Field(sa_type=String(100), description="section, account:<id>, entity:<id>, ...")
    action: str = Field(sa_type=String(50))
    from_status: str | None = Field(default=None, sa_type=String(16))
    to_status: str | None = Field(default=None, sa_type=String(16))
    actor: str = Field(sa_type=String(64))
    reason: str | None = Field(default=None, sa_type=Text)
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    at: datetime = _utc_column()


class AccountRow(Model, table=True):
    """An IR account; `account_id` is `{registry_id}-{type_code}-{n}` and never changes."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("party", "type_code", "n", name="uq_accounts_party_type_n"),
        ForeignKeyConstraint(["party"], ["sections.party"], name="fk_accounts_party"),
    )

    account_id: str = Field(sa_type=String(32), primary_key=True)
    party: str = Field(sa_type=String(3))
    registry_id: str = Field(sa_type=String(5))
    type: str = Field(sa_type=String(40))
    type_code: int = Field(sa_type=Integer)
    n: int = Field(sa_type=BigInteger)
    name: str = Field(sa_type=String(200))
    status: str = Field(sa_type=String(16))
    holder_entity_id: str | None = Field(default=None, sa_type=String(100))
    # The accounts made when the section opened; those of terminal types are never closed (domain §3.2).
    is_default: bool
    version: int = Field(sa_type=BigInteger)
    created_at: datetime = _utc_column()
    updated_at: datetime = _utc_column()


class CooperativeApproachRow(Model, table=True):
    """A cooperative approach registered by the Secretariat (CARP id `CA####`)."""

    __tablename__ = "cooperative_approaches"

    ca_id: str = Field(sa_type=String(6), primary_key=True)
    name: str = Field(sa_type=String(200))
    created_at: datetime = _utc_column()


class ParticipantRow(Model, table=True):
    """A Party participating in a cooperative approach."""

    __tablename__ = "ca_participants"
    __table_args__ = (
        Index("ix_ca_participants_party", "party"),
        ForeignKeyConstraint(["ca_id"], ["cooperative_approaches.ca_id"], name="fk_ca_participants_ca_id"),
    )

    ca_id: str = Field(sa_type=String(6), primary_key=True)
    party: str = Field(sa_type=String(3), primary_key=True)


class EntityRow(Model, table=True):
    """An authorized entity of a Party (AEF Table 5, domain §5.6); `entity_id` is unique per Party."""

    __tablename__ = "authorized_entities"
    __table_args__ = (
        ForeignKeyConstraint(["party"], ["sections.party"], name="fk_authorized_entities_party"),
        ForeignKeyConstraint(
            ["ca_id"], ["cooperative_approaches.ca_id"], name="fk_authorized_entities_ca_id"
        ),
    )

    party: str = Field(sa_type=String(3), primary_key=True)
    entity_id: str = Field(sa_type=String(64), primary_key=True)
    name: str = Field(sa_type=String(200))
    country_of_incorporation: str = Field(sa_type=String(3))
    identification_number: str = Field(sa_type=String(100))
    ca_id: str = Field(sa_type=String(6))
    date_of_authorization: date = Field(sa_column=Column(Date, nullable=False))
    conditions: str | None = Field(default=None, sa_type=Text)
    change_and_revocation_conditions: str | None = Field(default=None, sa_type=Text)
    additional_explanatory_information: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _utc_column()


class NdcPeriodRow(Model, table=True):
    """One NDC implementation period of a Party (the AEF submission table's first/last year)."""

    __tablename__ = "ndc_periods"
    __table_args__ = (ForeignKeyConstraint(["party"], ["sections.party"], name="fk_ndc_periods_party"),)

    party: str = Field(sa_type=String(3), primary_key=True)
    first_year: int = Field(sa_type=Integer, primary_key=True)
    last_year: int = Field(sa_type=Integer)


def _table(model: type[Model]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


sections = _table(SectionRow)
audit_log = _table(AuditRow)
accounts = _table(AccountRow)
cooperative_approaches = _table(CooperativeApproachRow)
ca_participants = _table(ParticipantRow)
entities = _table(EntityRow)
ndc_periods = _table(NdcPeriodRow)
outbox, outbox_relay = outbox_tables(metadata)
