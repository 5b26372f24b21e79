"""Action, purpose and state vocabularies: the AEF's verbatim values and the registry's own status machines.

AEF values (domain §2.1, §5.3, §5.4; nomenclature Tables 12, 16, 22, 25, 26, 36, 49) are kept verbatim,
including the source's spellings ("Authorisation" in first-transfer definitions, "Authorization" in action
types and subtypes, "Use or Cancellation" vs "Use or cancellation"): CARP accepts exactly these strings, so
"fixing" one would produce a rejected submission.

Registry-internal vocabularies (`TransactionType`, `TransactionStatus`, `BlockState`, `MOState`) are lowercase
snake_case identifiers from API.md, DESIGN.md §4 and INTERREGISTRY.md §1.
"""

from enum import StrEnum

__all__ = [
    "ALLOWED_SUBTYPES",
    "OIMP_FIRST_TRANSFER_DEFINITIONS",
    "SPENDABLE_BLOCK_STATES",
    "TERMINAL_BLOCK_STATES",
    "TERMINAL_STATUSES",
    "ActionSubtype",
    "ActionType",
    "BlockState",
    "FirstTransferDefinition",
    "MOState",
    "Metric",
    "MitigationType",
    "Purpose",
    "TransactionStatus",
    "TransactionType",
    "covers_ndc",
    "covers_oimp",
    "subtype_allowed",
]


class ActionType(StrEnum):
    """AEF Table 3 `Action type` (nomenclature Table 25(b))."""

    AUTHORIZATION = "Authorization"
    FIRST_TRANSFER = "First transfer"
    TRANSFER = "Transfer"
    ACQUISITION = "Acquisition"
    USE = "Use"
    CANCELLATION = "Cancellation"
    # Distinct from CANCELLATION although the nomenclature describes both alike.
    VOLUNTARY_CANCELLATION = "Voluntary Cancellation"


class ActionSubtype(StrEnum):
    """AEF Table 3 `Action subtype` (nomenclature Table 26(b))."""

    FIRST_TRANSFER_TO_ANOTHER_PARTY = "First transfer to another Party"
    AUTHORIZATION = "Authorization"
    ISSUANCE = "Issuance"
    USE_OR_CANCELLATION = "Use or cancellation"
    MANDATORY_TRANSFER_TO_ADAPTATION_FUND = "Mandatory transfer to the Adaptation Fund (A6.4 ERs)"
    VOLUNTARY_TRANSFER_TO_ADAPTATION_FUND = "Voluntary transfer to the Adaptation Fund (A6.4 ERs)"
    MANDATORY_CANCELLATION_OMGE = "Mandatory cancellation to deliver OMGE"
    VOLUNTARY_CANCELLATION_OMGE = "Voluntary cancellation to deliver OMGE"
    OTHER_CANCELLATIONS = "Other cancellations"
    NOT_YET_DEFINED = "Not yet defined"


_CANCELLATION_SUBTYPES = frozenset(
    {
        ActionSubtype.MANDATORY_CANCELLATION_OMGE,
        ActionSubtype.VOLUNTARY_CANCELLATION_OMGE,
        ActionSubtype.OTHER_CANCELLATIONS,
    }
)

#: Subtypes each action type may carry, as domain §2.1 reads Table 26(b) (an interpretation, flagged there).
#: An empty set means the subtype cell stays blank. A blank subtype is accepted for every type.
ALLOWED_SUBTYPES: dict[ActionType, frozenset[ActionSubtype]] = {
    ActionType.AUTHORIZATION: frozenset(),
    ActionType.FIRST_TRANSFER: frozenset(
        {
            ActionSubtype.FIRST_TRANSFER_TO_ANOTHER_PARTY,
            ActionSubtype.AUTHORIZATION,
            ActionSubtype.ISSUANCE,
            ActionSubtype.USE_OR_CANCELLATION,
            ActionSubtype.NOT_YET_DEFINED,
        }
        | _CANCELLATION_SUBTYPES
    ),
    ActionType.TRANSFER: frozenset(
        {
            ActionSubtype.MANDATORY_TRANSFER_TO_ADAPTATION_FUND,
            ActionSubtype.VOLUNTARY_TRANSFER_TO_ADAPTATION_FUND,
            ActionSubtype.NOT_YET_DEFINED,
        }
    ),
    ActionType.ACQUISITION: frozenset(),
    ActionType.USE: frozenset(),
    ActionType.CANCELLATION: _CANCELLATION_SUBTYPES | {ActionSubtype.NOT_YET_DEFINED},
    ActionType.VOLUNTARY_CANCELLATION: _CANCELLATION_SUBTYPES | {ActionSubtype.NOT_YET_DEFINED},
}


def subtype_allowed(action_type: ActionType | str, subtype: ActionSubtype | str | None) -> bool:
    """Whether `subtype` (None = blank) may accompany `action_type`; unknown strings are never allowed."""
    try:
        allowed = ALLOWED_SUBTYPES[ActionType(action_type)]
    except ValueError:
        return False
    if subtype is None:
        return True
    try:
        return ActionSubtype(subtype) in allowed
    except ValueError:
        return False


class Purpose(StrEnum):
    """`Purposes for authorization` (nomenclature Table 16(b)). OIMP means IMP and OP together."""

    NDC = "NDC"
    OIMP = "OIMP"
    IMP = "IMP"
    OP = "OP"
    NDC_AND_OIMP = "NDC and OIMP"
    NDC_AND_IMP = "NDC and IMP"
    NDC_AND_OP = "NDC and OP"

    @property
    def covers_ndc(self) -> bool:
        """Units authorized for this purpose may be used towards an NDC."""
        return self in _NDC_PURPOSES

    @property
    def covers_oimp(self) -> bool:
        """Units may serve some other international mitigation purpose (IMP, OP or both)."""
        return self is not Purpose.NDC

    @property
    def covers_imp(self) -> bool:
        """Units may be used for an international mitigation purpose (e.g. CORSIA)."""
        return self in _IMP_PURPOSES

    @property
    def covers_op(self) -> bool:
        """Units may be cancelled for other purposes as determined by the first transferring Party."""
        return self in _OP_PURPOSES


_NDC_PURPOSES = frozenset({Purpose.NDC, Purpose.NDC_AND_OIMP, Purpose.NDC_AND_IMP, Purpose.NDC_AND_OP})
_IMP_PURPOSES = frozenset({Purpose.OIMP, Purpose.IMP, Purpose.NDC_AND_OIMP, Purpose.NDC_AND_IMP})
_OP_PURPOSES = frozenset({Purpose.OIMP, Purpose.OP, Purpose.NDC_AND_OIMP, Purpose.NDC_AND_OP})


def covers_ndc(purpose: Purpose | str) -> bool:
    """`Purpose(purpose).covers_ndc`; `ValueError` for a value outside Table 16(b)."""
    return Purpose(purpose).covers_ndc


def covers_oimp(purpose: Purpose | str) -> bool:
    """`Purpose(purpose).covers_oimp`; `ValueError` for a value outside Table 16(b)."""
    return Purpose(purpose).covers_oimp


class FirstTransferDefinition(StrEnum):
    """What counts as first transfer (nomenclature Table 49(b); 2/CMA.3 annex para 2(b)).

    `First international transfer` applies to NDC authorizations; the other three are the Party's choice
    for OIMP and are the values of AEF Table 2 `First transfer definition for OIMP` (Table 22(b)).
    """

    FIRST_INTERNATIONAL_TRANSFER = "First international transfer"
    AUTHORISATION = "Authorisation"
    ISSUANCE = "Issuance"
    USE_OR_CANCELLATION = "Use or Cancellation"


#: The definitions an OIMP authorization may name (Table 22(b)).
OIMP_FIRST_TRANSFER_DEFINITIONS: frozenset[FirstTransferDefinition] = frozenset(
    {
        FirstTransferDefinition.AUTHORISATION,
        FirstTransferDefinition.ISSUANCE,
        FirstTransferDefinition.USE_OR_CANCELLATION,
    }
)


class Metric(StrEnum):
    """AEF `Metric` (nomenclature Table 12(b)); `non-GHG` goes with an `Applicable non-GHG metric` text."""

    GHG = "GHG"
    NON_GHG = "non-GHG"


class MitigationType(StrEnum):
    """AEF `Mitigation type` (nomenclature Table 36(b))."""

    EMISSION_REDUCTIONS = "Emission reductions"
    REMOVALS = "Removals"
    EMISSION_REDUCTIONS_AND_REMOVALS = "Emission reductions and removals"


class TransactionType(StrEnum):
    """`type` of `POST /v1/transactions`."""

    TRANSFER = "transfer"
    USE_NDC = "use_ndc"
    USE_OIMP = "use_oimp"
    CANCELLATION = "cancellation"
    VOLUNTARY_CANCELLATION = "voluntary_cancellation"
    OMGE_CANCELLATION = "omge_cancellation"


class TransactionStatus(StrEnum):
    """DESIGN §4: proposed → awaiting_approval → checked → (external: sent → accepted|rejected) → completed.

    Side exits: rejected (failed check or refused by the receiver), cancelled (by the initiator before
    approval), terminated (time-out). Only `completed` moves units.
    """

    PROPOSED = "proposed"
    AWAITING_APPROVAL = "awaiting_approval"
    CHECKED = "checked"
    SENT = "sent"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"

    @property
    def terminal(self) -> bool:
        """True for a final status, which never changes again."""
        return self in TERMINAL_STATUSES


#: Final statuses. `accepted` is not final: the IR still has to complete the transfer.
TERMINAL_STATUSES: frozenset[TransactionStatus] = frozenset(
    {
        TransactionStatus.COMPLETED,
        TransactionStatus.REJECTED,
        TransactionStatus.CANCELLED,
        TransactionStatus.TERMINATED,
    }
)


class BlockState(StrEnum):
    """State of an ITMO block in the IR (DESIGN §4, INTERREGISTRY §1)."""

    HELD = "held"
    RESERVED = "reserved"
    USED_NDC = "used_ndc"
    USED_OIMP = "used_oimp"
    CANCELLED = "cancelled"
    TRANSFERRED_OUT = "transferred_out"
    PENDING_IN = "pending_in"

    @property
    def terminal(self) -> bool:
        """True when the units never move again (ledger invariant I3)."""
        return self in TERMINAL_BLOCK_STATES


#: Units in these states never move again. `transferred_out` is not among them: the units may come back
#: from the connected registry they went to.
TERMINAL_BLOCK_STATES: frozenset[BlockState] = frozenset(
    {BlockState.USED_NDC, BlockState.USED_OIMP, BlockState.CANCELLED}
)

#: The only state from which a transaction may take units.
SPENDABLE_BLOCK_STATES: frozenset[BlockState] = frozenset({BlockState.HELD})


class MOState(StrEnum):
    """State of a mitigation outcome block in the ARS, before it becomes an ITMO (domain §2.3)."""

    PENDING_AUTHORIZATION = "pending_authorization"
    AUTHORIZED = "authorized"
    #: Held by a first transfer in progress (the ARS side of the saga, DESIGN §5); ends first_transferred,
    #: or authorized again when the IR refuses.
    RESERVED = "reserved"
    FIRST_TRANSFERRED = "first_transferred"
    CANCELLED = "cancelled"
