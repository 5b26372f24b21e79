"""Wire models of the ars service: MO issuance, MO blocks, authorizations (AEF Table 2), apply, first
transfers, domestic cancellation, and the nomenclatures they are validated against (API.md "Additional
registry services"; domain §2.2 A1–A4, A9, A10, A15, §5.3, §8).

Vocabularies are verbatim from the common nomenclatures (domain §5.3): `Sector` is Table 15(b), `ActivityType`
Table 51(b) with its 27 values, including the source's `C02 usage` (digit zero), which CARP accepts as
written. Metric, mitigation type, purposes and first-transfer definitions come from `contracts.actions`.
"""

import datetime as dt
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from contracts.actions import (
    OIMP_FIRST_TRANSFER_DEFINITIONS,
    FirstTransferDefinition,
    Metric,
    MitigationType,
    MOState,
    Purpose,
    TransactionStatus,
)
from contracts.identifiers import MAX_SERIAL, MAX_VINTAGE, MIN_VINTAGE
from contracts.parties import CooperativeApproachId, PartyCode, RegistryId
from contracts.party_sections import EntityId
from contracts.problems import CheckResult
from contracts.transactions import Block, Underlying

__all__ = [
    "AUTHORIZATION_ID_PATTERN",
    "TIMEFRAME_PATTERN",
    "ActivityType",
    "ArsEventType",
    "Authorization",
    "AuthorizationApplied",
    "AuthorizationApply",
    "AuthorizationCreate",
    "AuthorizationId",
    "AuthorizationRevoke",
    "AuthorizationStatus",
    "AuthorizationVersionCreate",
    "FirstTransferStatus",
    "Issuance",
    "IssuanceCreate",
    "MOBlock",
    "MOCancellation",
    "MOCancellationCreate",
    "MOFirstTransfer",
    "MOFirstTransferCreate",
    "MOUse",
    "Sector",
    "parse_timeframe",
]

#: Authorization ID (nomenclature Table 7): letters, digits, spaces and hyphens; no leading/trailing space.
AUTHORIZATION_ID_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9 -]{0,98}[A-Za-z0-9])?$"
#: Authorized timeframe (domain §5.3): `dddd - dddd`.
TIMEFRAME_PATTERN = r"^[0-9]{4} - [0-9]{4}$"

AuthorizationId = Annotated[
    str, StringConstraints(pattern=AUTHORIZATION_ID_PATTERN), Field(examples=["GH-AUTH-7"])
]
_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
_LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
_Serial = Annotated[int, Field(ge=1, le=MAX_SERIAL)]
_Quantity = Annotated[int, Field(ge=1, le=MAX_SERIAL)]
_Vintage = Annotated[int, Field(ge=MIN_VINTAGE, le=MAX_VINTAGE)]
_ConversionFactor = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}(\.[0-9]{1,10})?$")]


class Sector(StrEnum):
    """`Sector(s)` (nomenclature Table 15(b))."""

    AGRICULTURE = "Agriculture"
    BUILDING_AND_CONSTRUCTION = "Building and construction"
    CROSS_SECTORAL_MECHANISMS = "Cross-sectoral mechanisms"
    ENERGY_GENERATION = "Energy generation"
    FORESTRY_AND_LAND_USE = "Forestry and land use"
    INDUSTRIAL_PROCESSES = "Industrial processes"
    TRANSPORTATION = "Transportation"
    URBAN_DEVELOPMENT = "Urban development"
    WASTE_MANAGEMENT = "Waste management"


class ActivityType(StrEnum):
    """`Activity type(s)` (nomenclature Table 51(b)), verbatim, `C02 usage` with a digit zero included."""

    AFFORESTATION = "Afforestation"
    AGRICULTURE = "Agriculture"
    BIOGAS = "Biogas"
    BIOMASS_ENERGY = "Biomass Energy"
    CEMENT = "Cement"
    C02_USAGE = "C02 usage"
    COAL_BED_MINE_METHANE = "Coal bed/mine methane"
    ENERGY_DISTRIBUTION = "Energy distribution"
    ENERGY_EFFICIENCY_HOUSEHOLDS = "Energy Efficiency households"
    ENERGY_EFFICIENCY_INDUSTRY = "Energy Efficiency Industry"
    ENERGY_EFFICIENCY_OWN_GENERATION = "Energy Efficiency own generation"
    ENERGY_EFFICIENCY_SERVICE = "Energy Efficiency service"
    ENERGY_EFFICIENCY_SUPPLY_SIDE = "Energy Efficiency supply side"
    FOSSIL_FUEL_SWITCH = "Fossil fuel switch"
    FUGITIVE = "Fugitive"
    GEOTHERMAL = "Geothermal"
    HYDRO = "Hydro"
    LANDFILL_GAS = "Landfill gas"
    METHANE_AVOIDANCE = "Methane avoidance"
    N2O = "N2O"
    PFCS_AND_SF6 = "PFCs and SF6"
    REFORESTATION = "Reforestation"
    SOLAR = "Solar"
    TIDAL = "Tidal"
    TRANSPORT = "Transport"
    WASTE = "Waste"
    WIND = "Wind"


class AuthorizationStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class FirstTransferStatus(StrEnum):
    """The saga of one first transfer (docs/ars.md): pending until the IR answers for good.

    Under four-eyes (the Party section's setting) it waits `awaiting_approval` with the MOs reserved until
    another principal with the approver role approves it (then `pending`), or it is withdrawn or times out
    (`cancelled`, the MOs authorized again).
    """

    AWAITING_APPROVAL = "awaiting_approval"
    PENDING = "pending"
    COMPLETED = "completed"
    RELEASED = "released"
    REFUSED = "refused"
    CANCELLED = "cancelled"


class ArsEventType(StrEnum):
    """Event types the ars service publishes on its feed."""

    AUTHORIZATION_CREATED = "authorization.created"
    AUTHORIZATION_VERSIONED = "authorization.versioned"
    AUTHORIZATION_REVOKED = "authorization.revoked"
    MOS_ISSUED = "mos.issued"
    MOS_AUTHORIZED = "mos.authorized"
    MOS_CANCELLED = "mos.cancelled"
    FIRST_TRANSFER_COMPLETED = "first_transfer.completed"
    FIRST_TRANSFER_RELEASED = "first_transfer.released"


def parse_timeframe(value: str) -> tuple[int, int]:
    """(first year, last year) of a `dddd - dddd` timeframe; ValueError unless ordered and from 2021."""
    first_text, _, last_text = value.partition(" - ")
    first, last = int(first_text), int(last_text)
    if first < MIN_VINTAGE:
        raise ValueError(f"the timeframe starts in {first}; mitigation outcomes count from {MIN_VINTAGE}")
    if last < first:
        raise ValueError("the timeframe's last year is before its first")
    return first, last


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _distinct(values: list[Any] | None, what: str) -> None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct")


def _check_metric(metric: Metric, non_ghg: str | None, conversion_factor: str | None = None) -> None:
    if metric is Metric.NON_GHG and non_ghg is None:
        raise ValueError("metric non-GHG needs applicable_non_ghg_metric")
    if metric is Metric.GHG and non_ghg is not None:
        raise ValueError("applicable_non_ghg_metric applies to metric non-GHG only")
    if metric is Metric.GHG and conversion_factor is not None:
        raise ValueError("conversion_factor applies to metric non-GHG only")


class IssuanceCreate(_Strict):
    """`POST /v1/ars/{party}/issuances` (A1): new MOs of one CA and vintage, serials continuing the Party
    registry's sequence for that CA.

    `authorization_id` (an extension of API.md) issues the MOs directly under that authorization: they are
    authorized at once and, when it is an OIMP authorization whose first transfer definition is `Issuance`,
    first transferred into the Party's own IR holding account in the same step.
    """

    ca_id: CooperativeApproachId
    vintage: _Vintage
    quantity: _Quantity
    metric: Metric = Metric.GHG
    mitigation_type: MitigationType
    sector: Sector
    activity_type: ActivityType
    applicable_gwp_values: _Text | None = None
    applicable_non_ghg_metric: _Text | None = None
    conversion_factor: _ConversionFactor | None = Field(
        default=None, description="Non-GHG: t CO2 eq per unit (decimal)"
    )
    underlying: Underlying | None = Field(
        default=None, description="The underlying registry's units, 1:1 and in order (domain §4.3)"
    )
    authorization_id: AuthorizationId | None = None
    note: _LongText | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "IssuanceCreate":
        _check_metric(self.metric, self.applicable_non_ghg_metric, self.conversion_factor)
        if self.underlying is not None:
            count = self.underlying.last_unit_id - self.underlying.first_unit_id + 1
            if count != self.quantity:
                raise ValueError(
                    f"the underlying range holds {count} units; quantity is {self.quantity} (mapping is 1:1)"
                )
        return self


class MOBlock(BaseModel):
    """A block of mitigation outcomes in the ARS: a contiguous serial range with its invariants and state.

    API.md fixes the first nine fields and the four values of `state`. Units a first transfer in progress
    holds stay `authorized` on the wire with `reserved: true` (and the `operation_id`); they end
    `first_transferred` or lose the flag.
    """

    ca_id: str
    origin_registry_id: str
    first: int
    last: int
    quantity: int
    vintage: int
    state: MOState
    authorization_id: str | None
    authorization_version: int | None
    party: str
    unique_id_first: str = Field(examples=["CA0012-GHA01-GHA-1-2024"])
    unique_id_last: str
    metric: str
    mitigation_type: str
    sector: str
    activity_type: str
    applicable_gwp_values: str | None = None
    applicable_non_ghg_metric: str | None = None
    conversion_factor: str | None = None
    underlying: Underlying | None = None
    issuance_id: str
    reserved: bool = Field(default=False, description="Held by a first transfer in progress (`operation_id`)")
    operation_id: str | None = Field(default=None, description="The first transfer holding or that took them")
    transaction_id: str | None = Field(default=None, description="The IR transaction of the first transfer")


class Issuance(BaseModel):
    """201 answer of an issuance: the MO blocks created (and the first transfer when it is one)."""

    issuance_id: str
    party: str
    ca_id: str
    origin_registry_id: str
    vintage: int
    quantity: int
    first: int
    last: int
    blocks: list[MOBlock]
    first_transfer: "MOFirstTransfer | None" = None
    created_at: datetime
    created_by: str


class _AuthorizationTerms(_Strict):
    """AEF Table 2 fields a Party sets on every version (domain §5.3); CARP fills the documentation link."""

    date: dt.date = Field(description="Date of authorization (of this version)")
    ca_id: CooperativeApproachId
    purposes: Purpose
    authorized_quantity: _Quantity | None = None
    metric: Metric = Metric.GHG
    applicable_gwp_values: _Text | None = None
    applicable_non_ghg_metric: _Text | None = None
    sectors: list[Sector] = Field(min_length=1, max_length=len(Sector))
    activity_types: list[ActivityType] = Field(min_length=1, max_length=len(ActivityType))
    authorized_parties: list[PartyCode] | None = Field(
        default=None, min_length=1, max_length=200, description="Only these acquiring Parties (null: any)"
    )
    authorized_entities: list[EntityId] | None = Field(
        default=None, min_length=1, max_length=1000, description="Entity ids as in AEF Table 5"
    )
    oimp: _LongText | None = Field(
        default=None,
        description="OIMP authorized by the Party (e.g. CORSIA); needed when purposes cover OIMP",
    )
    timeframe: Annotated[str, StringConstraints(pattern=TIMEFRAME_PATTERN)] | None = Field(
        default=None,
        description="`dddd - dddd`: years the mitigation outcomes may occur",
        examples=["2021 - 2030"],
    )
    terms: _LongText | None = None
    first_transfer_definition: FirstTransferDefinition | None = Field(
        default=None, description="For OIMP (Table 22(b)): Authorisation, Issuance or Use or Cancellation"
    )
    additional_explanatory_information: _LongText | None = None

    @field_validator("date")
    @classmethod
    def _from_2021(cls, value: dt.date) -> dt.date:
        if value.year < MIN_VINTAGE:
            raise ValueError(f"an Article 6.2 authorization is dated from {MIN_VINTAGE}")
        return value

    @model_validator(mode="after")
    def _conditional_fields(self) -> "_AuthorizationTerms":
        _distinct(self.sectors, "sectors")
        _distinct(self.activity_types, "activity_types")
        _distinct(self.authorized_parties, "authorized_parties")
        _distinct(self.authorized_entities, "authorized_entities")
        _check_metric(self.metric, self.applicable_non_ghg_metric)
        if self.timeframe is not None:
            parse_timeframe(self.timeframe)
        if self.purposes.covers_oimp:
            if self.oimp is None:
                raise ValueError("purposes covering OIMP need `oimp` (the OIMP authorized, e.g. CORSIA)")
            if self.first_transfer_definition not in OIMP_FIRST_TRANSFER_DEFINITIONS:
                raise ValueError(
                    "purposes covering OIMP need first_transfer_definition: "
                    "Authorisation, Issuance or Use or Cancellation"
                )
        else:
            if self.oimp is not None:
                raise ValueError("`oimp` applies only to purposes covering OIMP")
            if self.first_transfer_definition is not None:
                raise ValueError("first_transfer_definition applies only to purposes covering OIMP")
        return self


class AuthorizationCreate(_AuthorizationTerms):
    """`POST /v1/ars/{party}/authorizations` (A2): an AEF Table 2 record, version 1."""

    authorization_id: AuthorizationId


class AuthorizationVersionCreate(_AuthorizationTerms):
    """`POST .../authorizations/{authorization_id}/versions` (A3): the whole record of the next version.

    The cooperative approach stays that of version 1.
    """


class AuthorizationRevoke(_Strict):
    """`POST .../authorizations/{authorization_id}/revoke` (A3): a last version, revoked."""

    date: dt.date | None = Field(default=None, description="Date of the revocation (default: today, UTC)")
    reason: _LongText | None = None


class Authorization(BaseModel):
    """One version of an authorization: every AEF Table 2 field, plus its status."""

    party: str
    authorization_id: str
    version: int
    date: dt.date
    ca_id: str
    purposes: Purpose
    authorized_quantity: int | None
    metric: Metric
    applicable_gwp_values: str | None
    applicable_non_ghg_metric: str | None
    sectors: list[str]
    activity_types: list[str]
    authorized_parties: list[str] | None
    authorized_entities: list[str] | None
    oimp: str | None
    timeframe: str | None
    terms: str | None
    first_transfer_definition: FirstTransferDefinition | None
    additional_explanatory_information: str | None
    status: AuthorizationStatus
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    created_at: datetime
    created_by: str
    table2: dict[str, Any] = Field(description="The AEF Table 2 row of this version, under the AEF keys")


class AuthorizationApply(_Strict):
    """`POST .../authorizations/{authorization_id}/apply`: pending MOs of this CA and vintage become authorized.

    Only MOs whose metric, sector and activity type the authorization covers are taken, from the low end.
    """

    ca_id: CooperativeApproachId
    vintage: _Vintage
    quantity: _Quantity


class AuthorizationApplied(BaseModel):
    """Answer of apply: the MO blocks now authorized (or being first transferred, for OIMP `Authorisation`)."""

    authorization_id: str
    authorization_version: int
    quantity: int
    blocks: list[MOBlock]
    first_transfer: "MOFirstTransfer | None" = None


class MOUse(_Strict):
    """`use` or `cancellation` of a first transfer at `Use or Cancellation` (domain A9, A10)."""

    purpose: _Text = Field(description="The OIMP purpose, e.g. CORSIA", examples=["CORSIA"])
    using_entity_id: EntityId | None = Field(
        default=None, description="The authorized entity using or cancelling (null: the Party itself)"
    )


class MOFirstTransferCreate(_Strict):
    """`POST /v1/ars/{party}/first-transfers` (A4/A15), with an `Idempotency-Key`.

    Exactly one of: `to_account` (an NDC first transfer to another Party's IR holding account, or the Party's
    own for an OIMP `Authorisation`/`Issuance` authorization), `use` or `cancellation` (an OIMP `Use or
    Cancellation` first transfer, which is that use or cancellation).
    """

    authorization_id: AuthorizationId
    vintage: _Vintage | None = Field(default=None, description="Only MOs of this vintage (default: any)")
    quantity: _Quantity
    to_account: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    to_registry: RegistryId | None = Field(
        default=None,
        description="A connected national registry (INTERREGISTRY §5.3); `to_account` is then its account id",
    )
    use: MOUse | None = None
    cancellation: MOUse | None = None
    note: _LongText | None = None

    @model_validator(mode="after")
    def _one_destination(self) -> "MOFirstTransferCreate":
        given = [x for x in (self.to_account, self.use, self.cancellation) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of to_account, use and cancellation")
        if self.to_registry is not None and self.to_account is None:
            raise ValueError("to_registry needs to_account (the registry's account id)")
        return self


class MOFirstTransfer(BaseModel):
    """A first transfer and where its saga stands: `pending` until the IR confirms (`completed`, with the
    ITMO blocks created) or refuses for good (`released`, with the failed checks; the MOs are authorized
    again). `refused`: the ARS's own checks failed; nothing was reserved. With `to_registry` it stays `pending`
    (`transaction_status: sent`) until the connected registry decides (INTERREGISTRY §5.3).
    """

    operation_id: str
    transaction_id: str | None = Field(description="The IR transaction (null until the IR answered)")
    status: FirstTransferStatus
    transaction_status: TransactionStatus | None = None
    party: str
    authorization_id: str
    authorization_version: int
    first_transfer_definition: FirstTransferDefinition
    quantity: int
    to_account: str | None
    to_registry: str | None = Field(
        default=None, description="The connected registry it was proposed to (null: into the IR)"
    )
    use: dict[str, Any] | None = Field(default=None, description="What the IR was asked to do at use")
    blocks: list[Block] = Field(description="The ITMO blocks created (empty until completed)")
    mo_blocks: list[dict[str, Any]] = Field(description="The MO serial ranges the operation holds or took")
    checks: list[CheckResult] = Field(default_factory=list)
    initiated_by: str | None = None
    approved_by: str | None = Field(default=None, description="Under four-eyes: who approved it")
    created_at: datetime
    completed_at: datetime | None = None


class MOCancellationCreate(_Strict):
    """`POST /v1/ars/{party}/cancellations`: domestic cancellation of MOs that will never be ITMOs (not an
    AEF action, domain §8). Name a serial range (`first`, `last`) or a `quantity` (with `vintage`, taken from
    the low end of the pending, or with `authorization_id` the authorized, MOs of the CA).
    """

    ca_id: CooperativeApproachId
    first: _Serial | None = None
    last: _Serial | None = None
    quantity: _Quantity | None = None
    vintage: _Vintage | None = None
    authorization_id: AuthorizationId | None = None
    reason: _LongText | None = None

    @model_validator(mode="after")
    def _range_or_quantity(self) -> "MOCancellationCreate":
        ranged = self.first is not None or self.last is not None
        if ranged == (self.quantity is not None):
            raise ValueError("give a serial range (first and last) or a quantity")
        if ranged and (self.first is None or self.last is None or self.last < self.first):
            raise ValueError("a range needs first and last, last not below first")
        return self


class MOCancellation(BaseModel):
    cancellation_id: str
    party: str
    quantity: int
    reason: str | None
    blocks: list[MOBlock]
    created_at: datetime
    created_by: str


Issuance.model_rebuild()
AuthorizationApplied.model_rebuild()
