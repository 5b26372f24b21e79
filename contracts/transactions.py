"""Wire models of the transactions service: blocks, transactions, checks, holdings, units, the journal,
the internal first-transfer call and the internal balances (API.md "Transactions and holdings"; DESIGN §4).

Serials and quantities are JSON integers (64-bit); a client whose JSON parser loses integers above 2^53
reads serials from the `unique_id_*` strings, which are authoritative.
"""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.actions import (
    ActionSubtype,
    ActionType,
    BlockState,
    FirstTransferDefinition,
    Metric,
    MitigationType,
    Purpose,
    TransactionStatus,
    TransactionType,
)
from contracts.identifiers import MAX_SERIAL, MAX_VINTAGE, MIN_VINTAGE, UniqueIdStr
from contracts.parties import CooperativeApproachId, PartyCode, RegistryId
from contracts.problems import CheckResult

__all__ = [
    "MAX_BLOCKS_PER_TRANSACTION",
    "AccountBalance",
    "AefAction",
    "Block",
    "BlockRange",
    "CheckDefinition",
    "CorrectionCreate",
    "DirectoryInvalidation",
    "FirstTransferBlock",
    "FirstTransferCreate",
    "FirstTransferUse",
    "Holdings",
    "InterregistryLink",
    "InvariantReport",
    "InvariantViolation",
    "JournalEntry",
    "PartyBalance",
    "Transaction",
    "TransactionAwaitingApproval",
    "TransactionCompleted",
    "TransactionCreate",
    "TransactionValidation",
    "Underlying",
    "UnitHistory",
]

#: Most blocks one request may name or one first transfer may create (INTERREGISTRY 2009 uses the same bound).
MAX_BLOCKS_PER_TRANSACTION = 10_000

Serial = Annotated[int, Field(ge=1, le=MAX_SERIAL)]
Quantity = Annotated[int, Field(ge=1, le=MAX_SERIAL)]
Vintage = Annotated[int, Field(ge=MIN_VINTAGE, le=MAX_VINTAGE)]
_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
_Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
_EntityId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
_AccountRef = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DirectoryInvalidation(_Strict):
    """`POST /internal/v1/directory/invalidations`: party_sections changed this; drop what the ledger cached."""

    party: PartyCode
    account_id: _AccountRef | None = Field(
        default=None, description="The account that changed; absent: the section, its settings or NDC periods"
    )


class AccountBalance(BaseModel):
    """`GET /internal/v1/accounts/{account_id}/balance`: units still in the account, by state (0 if none)."""

    account_id: str
    held: int = Field(ge=0)
    reserved: int = Field(ge=0, description="Held but reserved by a pending transaction")
    pending_in: int = Field(ge=0, description="Arriving from a connected registry, not yet spendable")
    total: int = Field(ge=0, description="held + reserved + pending_in: an account may close only at 0")


class PartyBalance(BaseModel):
    """`GET /internal/v1/party-sections/{party}/balance`: what a section still holds, per account."""

    party: PartyCode
    total: int = Field(ge=0)
    accounts: dict[str, int] = Field(default_factory=dict, description="Non-zero totals by account id")


class Underlying(_Strict):
    """The underlying registry's units a block represents, 1:1 and in order (domain §4.3)."""

    registry_id: _Text = Field(examples=["GS"])
    first_unit_id: Serial
    last_unit_id: Serial

    @model_validator(mode="after")
    def _ordered(self) -> "Underlying":
        if self.last_unit_id < self.first_unit_id:
            raise ValueError("last_unit_id must not be below first_unit_id")
        return self


class Block(BaseModel):
    """A current block: a contiguous serial range with its invariants, state and place (DESIGN §4).

    API.md fixes the first fifteen fields; the rest are the invariants the AEF needs (domain §5.4).
    """

    unique_id_first: str = Field(examples=["CA0012-GHA01-GHA-1-2024"])
    unique_id_last: str = Field(examples=["CA0012-GHA01-GHA-400-2024"])
    ca_id: str
    origin_registry_id: str
    first_transferring_party: str
    first: int
    last: int
    quantity: int
    vintage: int
    state: BlockState
    account_id: str | None
    authorization_id: str
    authorization_version: int
    metric: str
    mitigation_type: str
    applicable_gwp_values: str | None = None
    applicable_non_ghg_metric: str | None = None
    conversion_factor: str | None = Field(default=None, description="Non-GHG: t CO2 eq per unit (decimal)")
    sector: str | None = None
    activity_type: str | None = None
    purposes: str
    authorized_parties: list[str] | None = Field(
        default=None, description="Parties the authorization names (null: not restricted)"
    )
    first_transfer_definition: str | None = None
    first_transferred: bool = Field(default=True, description="Always true in the IR: ITMOs only")
    underlying: Underlying | None = None
    party: str = Field(description="The holding Party (for transferred_out, the last one)")
    reserved_by: str | None = None
    to_registry_id: str | None = None
    transfer_id: str | None = None
    frozen: bool = False


class BlockRange(_Strict):
    """An exact serial range named by its first and last unique identifiers (same invariants)."""

    unique_id_first: UniqueIdStr
    unique_id_last: UniqueIdStr


class TransactionCreate(_Strict):
    """Body of `POST /v1/transactions` and `POST /v1/transactions/validate`.

    Give `quantity` (taken from the low end in the order vintage, CA, originating registry, serial) or
    `blocks` (exact ranges); with both, the quantity must equal the ranges' total (check Q03).
    """

    type: TransactionType
    from_account: _AccountRef
    to_account: _AccountRef | None = Field(
        default=None,
        description="transfer: the destination (with `to_registry`: the connected registry's own account"
        " identifier, opaque, ≤ 64 characters); uses and cancellations go to the Party's account",
    )
    to_registry: RegistryId | None = Field(
        default=None,
        description="transfer to a connected national registry (INTERREGISTRY §5): its registry id; the"
        " transaction is then `sent` until the registry answers or `respond_by` passes",
    )
    quantity: Quantity | None = None
    blocks: list[BlockRange] | None = Field(default=None, min_length=1, max_length=MAX_BLOCKS_PER_TRANSACTION)
    ndc_use_year: int | None = Field(default=None, ge=2021, le=2100)
    purpose: _Text | None = Field(
        default=None, description="use_oimp: the OIMP purpose (e.g. CORSIA); cancellations: its purpose"
    )
    using_entity_id: _EntityId | None = None
    note: _Note | None = None


class AefAction(BaseModel):
    """One side of a completed transaction as the AEF reports it (domain §5.4): one per Party concerned."""

    party: str
    registry_id: str
    action_type: ActionType
    action_subtype: ActionSubtype | None = None
    transferring_party_id: str | None = None
    acquiring_party_id: str | None = None
    using_cancelling_party_id: str | None = None
    using_cancelling_entity_id: str | None = None
    purpose_oimp: str | None = None
    ndc_use_year: int | None = None


class InterregistryLink(BaseModel):
    """The inter-registry side of a transaction (INTERREGISTRY §5, §6): the transfer it is at the IR."""

    transfer_id: str = Field(examples=["GHA01-tx_01JNX3"])
    direction: str = Field(description="`ir_to_registry` (outgoing) or `registry_to_ir` (incoming)")
    registry_id: str = Field(description="The connected registry", examples=["CHE01"])
    respond_by: datetime | None = Field(default=None, description="Outgoing: the IR's deadline once sent")


class Transaction(BaseModel):
    """A ledger transaction (API.md); `checks` lists the checks that failed (empty when all passed)."""

    transaction_id: str
    type: str = Field(description="A TransactionType, `first_transfer` or `correction`")
    status: TransactionStatus
    from_account: str | None
    to_account: str | None
    from_party: str | None
    to_party: str | None
    quantity: int
    blocks: list[Block] = Field(description="What moved (or is reserved), in serial order per block")
    ndc_use_year: int | None = None
    purpose: str | None = None
    using_entity_id: str | None = None
    note: str | None = None
    actions: list[AefAction] = Field(default_factory=list, description="AEF type/subtype per Party side")
    initiated_by: str
    approved_by: str | None = None
    created_at: datetime
    completed_at: datetime | None
    checks: list[CheckResult] = Field(default_factory=list)
    corrects: str | None = Field(
        default=None, description="`correction` only: the transaction it reverses (domain A16)"
    )
    interregistry: InterregistryLink | None = Field(
        default=None, description="A transfer to or from a connected registry: its IRX transfer"
    )


class CorrectionCreate(_Strict):
    """Body of `POST /v1/admin/corrections` (secretariat_admin; a second one approves, domain A16).

    Reverses a completed transfer with a compensating `correction` transaction: the units go back from the
    account the transfer put them in to the account they came from. The transfer itself is never edited.
    """

    transaction_id: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    reason: _Note = Field(description="The documented request behind the correction (audit record)")


class TransactionValidation(BaseModel):
    """`POST /v1/transactions/validate`: the checks' verdict; nothing is recorded or reserved."""

    valid: bool
    checks: list[CheckResult] = Field(description="Failed checks (empty when valid)")
    quantity: int = Field(ge=0, description="Units the transaction would move")
    blocks: list[Block] = Field(description="The ranges it would take, as they are now")
    four_eyes: bool = Field(description="Whether it would wait for an approver")


class CheckDefinition(BaseModel):
    """An entry of the check catalogue (`GET /v1/checks`): codes are stable and never reused."""

    code: str = Field(examples=["T01"])
    title: str
    applies_to: list[str] = Field(description="Transaction types the check runs for")
    reference: str | None = Field(default=None, description="Where the rule comes from (domain §7.2 T1–T11)")


class Holdings(BaseModel):
    """`GET /v1/accounts/{account_id}/holdings`: the account's current blocks, a page at a time."""

    account_id: str
    total: int = Field(ge=0, description="Units in the account in the states listed (all pages)")
    items: list[Block]
    next_cursor: str | None = None


class JournalEntry(BaseModel):
    """One hash-chained journal entry (DESIGN §4). `seq` and the hashes are null until sealed."""

    seq: int | None
    transaction_id: str
    entry_type: str
    block_before: dict[str, Any] | None
    block_after: dict[str, Any] | None
    at: datetime
    actor: str
    prev_hash: str | None
    hash: str | None


class UnitHistory(BaseModel):
    """`GET /v1/units/{unique_id}`: the block holding the unit now, and every journal entry about it."""

    unique_id: str
    block: Block
    history: list[JournalEntry]


class InvariantViolation(BaseModel):
    invariant: str = Field(examples=["I1"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class InvariantReport(BaseModel):
    """`GET /v1/admin/invariants`: DESIGN §4 I1–I6 over the whole ledger."""

    ok: bool
    checked: list[str]
    violations: list[InvariantViolation]
    journal_entries: int = Field(ge=0)
    blocks: int = Field(ge=0)


class FirstTransferBlock(_Strict):
    """An MO block the ARS first-transfers: serial range and every invariant (DESIGN §4)."""

    ca_id: CooperativeApproachId
    origin_registry_id: RegistryId
    first: Serial
    last: Serial
    vintage: Vintage
    metric: Metric = Metric.GHG
    applicable_gwp_values: _Text | None = None
    applicable_non_ghg_metric: _Text | None = None
    conversion_factor: str | None = Field(default=None, pattern=r"^[0-9]{1,20}(\.[0-9]{1,10})?$")
    mitigation_type: MitigationType
    sector: _Text | None = None
    activity_type: _Text | None = None
    underlying: Underlying | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "FirstTransferBlock":
        if self.last < self.first:
            raise ValueError("last must not be below first")
        if self.underlying and (
            self.underlying.last_unit_id - self.underlying.first_unit_id != self.last - self.first
        ):
            raise ValueError("the underlying range must have as many units as the block")
        return self


class FirstTransferUse(_Strict):
    """OIMP `Use or Cancellation`: the first transfer is this use or cancellation, in the same transaction."""

    type: TransactionType = Field(
        description="use_oimp, cancellation, voluntary_cancellation or omge_cancellation"
    )
    purpose: _Text | None = None
    using_entity_id: _EntityId | None = None

    @model_validator(mode="after")
    def _a_use_or_cancellation(self) -> "FirstTransferUse":
        if self.type in (TransactionType.TRANSFER, TransactionType.USE_NDC):
            raise ValueError("a first transfer at use or cancellation is use_oimp or a cancellation")
        return self


class FirstTransferCreate(_Strict):
    """`POST /internal/v1/first-transfers` (the ARS, role `service`): make the blocks ITMOs in the IR.

    Idempotent by `operation_id`: the same id with the same body returns the first answer, never new units.
    """

    operation_id: Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]
    first_transferring_party: PartyCode
    authorization_id: _Text
    authorization_version: int = Field(ge=1)
    purposes: Purpose
    authorized_parties: list[PartyCode] | None = None
    first_transfer_definition: FirstTransferDefinition
    authorized_quantity: int | None = Field(
        default=None, ge=1, description="The authorization's Authorized quantity, when it sets one (T6)"
    )
    to_account: _AccountRef | None = Field(
        default=None,
        description="Destination IR holding account; with `to_registry`, the registry's own account id",
    )
    to_registry: RegistryId | None = Field(
        default=None,
        description="A connected registry (INTERREGISTRY §5.3): the first transfer is proposed to it and "
        "happens when it accepts (202 `sent` until then)",
    )
    use: FirstTransferUse | None = Field(
        default=None, description="Use or Cancellation: what happens at once"
    )
    blocks: list[FirstTransferBlock] = Field(min_length=1, max_length=MAX_BLOCKS_PER_TRANSACTION)
    initiated_by: str | None = Field(default=None, max_length=200, description="The ARS caller's client id")
    note: _Note | None = None

    @model_validator(mode="after")
    def _destination(self) -> "FirstTransferCreate":
        if (self.to_account is None) == (self.use is None):
            raise ValueError("give exactly one of to_account and use")
        if (
            self.use is not None
            and self.first_transfer_definition is not FirstTransferDefinition.USE_OR_CANCELLATION
        ):
            raise ValueError("use applies only to the first transfer definition 'Use or Cancellation'")
        if self.to_registry is not None and self.to_account is None:
            raise ValueError("to_registry needs to_account (the registry's account id)")
        return self


class TransactionAwaitingApproval(BaseModel):
    """Data of the `transaction.awaiting_approval` event: a transaction waits for an approver of `party`
    (four-eyes on the source account), so the Party's feed and webhooks can call one before it expires."""

    transaction_id: str
    type: str
    party: str = Field(description="The Party whose approver decides")
    from_party: str | None
    to_party: str | None
    from_registry_id: str | None
    to_registry_id: str | None
    from_account: str | None
    to_account: str | None
    quantity: int
    initiated_by: str
    expires_at: datetime | None = Field(description="Terminated unless decided by then")


class TransactionCompleted(BaseModel):
    """Data of the `transaction.completed` event: everything the AEF needs (domain §5.4)."""

    transaction_id: str
    type: str
    completed_at: datetime
    from_party: str | None
    to_party: str | None
    from_registry_id: str | None
    to_registry_id: str | None
    from_account: str | None
    to_account: str | None
    quantity: int
    parties: list[str] = Field(description="Every Party concerned (both sides of a transfer)")
    actions: list[AefAction] = Field(description="Empty for an internal transfer (not an AEF action)")
    ndc_use_year: int | None = None
    purpose: str | None = None
    using_entity_id: str | None = None
    blocks: list[Block] = Field(description="The moved ranges with every invariant, as they arrived")
    corrects: str | None = Field(
        default=None, description="`correction` only: the transaction it reverses (no AEF action of its own)"
    )
