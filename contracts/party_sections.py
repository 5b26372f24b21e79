"""Wire models of the party_sections service: sections and their lifecycle, settings, cooperative
approaches, authorized entities, NDC periods, and the internal lookups other services make
(API.md "Reference data and Party sections"; domain §3, §5.6, §6).
"""

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.accounts import AccountStatus, AccountType
from contracts.aef import AefField
from contracts.parties import CooperativeApproachId, PartyCode, RegistryId, registry_party

__all__ = [
    "SECTION_MOVES",
    "AccountLookup",
    "AuthorizedEntity",
    "AuthorizedEntityCreate",
    "ConfidentialDesignation",
    "CooperativeApproach",
    "CooperativeApproachCreate",
    "EntityId",
    "IncomingAcceptance",
    "LongText",
    "NdcPeriod",
    "PartySection",
    "PartySectionCreate",
    "SectionEvent",
    "SectionLookup",
    "SectionMove",
    "SectionSettings",
    "SectionSettingsPatch",
    "SectionStatus",
    "ShortText",
]

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
EntityId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class SectionStatus(StrEnum):
    """Party section lifecycle (domain §3.3)."""

    REQUESTED = "requested"
    OPEN = "open"
    SUSPENDED = "suspended"
    CLOSING = "closing"
    CLOSED = "closed"


#: The Secretariat's moves: path action → (statuses it applies to, status it leads to). `close` is taken
#: twice: open|suspended → closing (holdings leave, proposals are cancelled), then closing → closed.
SECTION_MOVES: dict[str, tuple[frozenset[SectionStatus], SectionStatus]] = {
    "open": (frozenset({SectionStatus.REQUESTED}), SectionStatus.OPEN),
    "suspend": (frozenset({SectionStatus.OPEN}), SectionStatus.SUSPENDED),
    "reactivate": (frozenset({SectionStatus.SUSPENDED}), SectionStatus.OPEN),
    "close": (frozenset({SectionStatus.OPEN, SectionStatus.SUSPENDED}), SectionStatus.CLOSING),
    "finalize_close": (frozenset({SectionStatus.CLOSING}), SectionStatus.CLOSED),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfidentialDesignation(_Strict):
    """A field a Party designates confidential, with the basis it states (domain §6)."""

    field: AefField = Field(examples=["authorizations.authorized_quantity"])
    basis: LongText = Field(description="Why the field is confidential (the stated basis)")


class IncomingAcceptance(StrEnum):
    """How the section takes transfers from connected national registries (INTERREGISTRY §6)."""

    AUTOMATIC = "automatic"
    MANUAL = "manual"


class SectionSettings(BaseModel):
    four_eyes: bool = Field(default=False, description="Unit movements need a second principal's approval")
    confidential_fields: list[ConfidentialDesignation] = Field(default_factory=list)
    incoming_acceptance: IncomingAcceptance = Field(
        default=IncomingAcceptance.AUTOMATIC,
        description="`manual`: a transfer from a connected registry waits (202, units `pending_in`) for an "
        "approver's `POST /v1/transactions/{id}/approve` or `/reject` before its `respond_by`",
    )


class SectionSettingsPatch(_Strict):
    """`PATCH /v1/party-sections/{party}/settings` (with `If-Match`): only the fields sent change."""

    four_eyes: bool | None = None
    confidential_fields: list[ConfidentialDesignation] | None = Field(default=None, max_length=200)
    incoming_acceptance: IncomingAcceptance | None = None

    @model_validator(mode="after")
    def _unique_fields(self) -> "SectionSettingsPatch":
        if self.confidential_fields is not None:
            names = [designation.field for designation in self.confidential_fields]
            if len(names) != len(set(names)):
                raise ValueError("each field may be designated once")
        return self


class PartySectionCreate(_Strict):
    party: PartyCode
    registry_id: RegistryId = Field(
        description="`AAA##` with the Party's own alpha-3 code", examples=["GHA01"]
    )
    ars: bool = Field(
        default=False, description="Whether the Party also uses the Additional Registry Services"
    )

    @model_validator(mode="after")
    def _registry_of_the_party(self) -> "PartySectionCreate":
        if registry_party(self.registry_id) != self.party:
            raise ValueError(f"registry_id {self.registry_id} must start with the Party's code {self.party}")
        return self


class PartySection(BaseModel):
    party: PartyCode
    registry_id: RegistryId
    status: SectionStatus
    ars: bool
    settings: SectionSettings
    version: int = Field(ge=1, description="Also the ETag; send it back as If-Match")
    created_at: datetime
    updated_at: datetime


class SectionMove(_Strict):
    """Body of open/suspend/reactivate/close: why (kept in the audit trail)."""

    reason: LongText | None = None


class SectionEvent(BaseModel):
    """One audited move of a section (who, when, why)."""

    party: PartyCode
    from_status: SectionStatus | None
    to_status: SectionStatus
    actor: str
    reason: str | None
    at: datetime


class CooperativeApproachCreate(_Strict):
    ca_id: CooperativeApproachId = Field(examples=["CA0012"])
    name: ShortText
    participants: list[PartyCode] = Field(min_length=2, max_length=200)

    @model_validator(mode="after")
    def _distinct(self) -> "CooperativeApproachCreate":
        if len(set(self.participants)) != len(self.participants):
            raise ValueError("participants must be distinct")
        return self


class CooperativeApproach(BaseModel):
    ca_id: CooperativeApproachId
    name: str
    participants: list[PartyCode] = Field(description="Alpha-3 codes, sorted")
    created_at: datetime


class AuthorizedEntityCreate(_Strict):
    """An authorized entity (AEF Table 5, domain §5.6)."""

    entity_id: EntityId = Field(description="The Party's own id for the entity", examples=["GH-ENT-001"])
    name: ShortText
    country_of_incorporation: PartyCode
    identification_number: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
    ]
    ca_id: CooperativeApproachId
    date_of_authorization: date
    conditions: LongText | None = None
    change_and_revocation_conditions: LongText | None = None
    additional_explanatory_information: LongText | None = None


class AuthorizedEntity(AuthorizedEntityCreate):
    model_config = ConfigDict(extra="ignore")

    party: PartyCode
    created_at: datetime


class NdcPeriod(_Strict):
    first_year: int = Field(ge=2021, le=2100)
    last_year: int = Field(ge=2021, le=2100)

    @model_validator(mode="after")
    def _ordered(self) -> "NdcPeriod":
        if self.last_year < self.first_year:
            raise ValueError("last_year must not be before first_year")
        return self


class AccountLookup(BaseModel):
    """`GET /internal/v1/accounts/{account_id}`: what another service checks before moving units."""

    account_id: str
    party: PartyCode
    registry_id: RegistryId
    type: AccountType
    type_code: int
    status: AccountStatus
    holder_entity_id: str | None
    section_status: SectionStatus
    four_eyes: bool


class SectionLookup(BaseModel):
    """`GET /internal/v1/party-sections/{party}`: section state, settings and NDC periods in one read."""

    party: PartyCode
    registry_id: RegistryId
    status: SectionStatus
    ars: bool
    four_eyes: bool
    # A default, so the ledger still reads the answer of a party_sections deployed before the setting.
    incoming_acceptance: IncomingAcceptance = IncomingAcceptance.AUTOMATIC
    ndc_periods: list[NdcPeriod]
    version: int
