"""Domain errors of the party_sections service, each a stable problem `type` (kit.errors renders them)."""

from collections.abc import Iterable

from kit.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable

__all__ = [
    "AccountNotFound",
    "BalanceNotZero",
    "BalanceUnknown",
    "CooperativeApproachExists",
    "CooperativeApproachNotFound",
    "EntityExists",
    "EntityNotFound",
    "IllegalAccountMove",
    "IllegalSectionMove",
    "NotAParticipant",
    "OverlappingNdcPeriods",
    "SectionExists",
    "SectionNotFound",
    "SectionNotWritable",
    "UnknownCooperativeApproach",
    "UnknownHolderEntity",
]


class SectionNotFound(NotFound):
    slug, title = "section-not-found", "No such Party section"

    def __init__(self, party: str) -> None:
        super().__init__(f"Party {party} has no section in the International Registry.", party=party)


class SectionExists(Conflict):
    slug, title = "section-exists", "The Party section already exists"


class IllegalSectionMove(Conflict):
    slug, title = "illegal-section-move", "This move is not allowed from the section's status"

    def __init__(self, party: str, move: str, status: str, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        moves = ", ".join(allowed) if allowed else "none (closed is final)"
        super().__init__(
            f"Cannot {move} the section of {party}: it is {status}; allowed moves: {moves}.",
            current_status=status,
            allowed_moves=allowed,
        )


class SectionNotWritable(Conflict):
    slug, title = "section-not-writable", "The section's status does not allow this change"

    def __init__(self, party: str, status: str, what: str, allowed_statuses: Iterable[str]) -> None:
        allowed = sorted(allowed_statuses)
        super().__init__(
            f"Cannot {what}: the section of {party} is {status} (allowed only when {' or '.join(allowed)}).",
            current_status=status,
            allowed_statuses=allowed,
        )


class BalanceNotZero(Conflict):
    slug, title = "balance-not-zero", "Units remain"

    def __init__(self, what: str, total: int) -> None:
        super().__init__(
            f"{what} still holds {total} units; it may close only at a zero balance.", total=total
        )


class BalanceUnknown(ServiceUnavailable):
    slug, title = "balance-unknown", "The balance could not be confirmed"


class AccountNotFound(NotFound):
    slug, title = "account-not-found", "No such account"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"No account {account_id} that this client may see.")


class IllegalAccountMove(Conflict):
    slug, title = "illegal-account-move", "This change is not allowed from the account's status"


class CooperativeApproachExists(Conflict):
    slug, title = "cooperative-approach-exists", "The cooperative approach is already registered"


class CooperativeApproachNotFound(NotFound):
    slug, title = "cooperative-approach-not-found", "No such cooperative approach"


class UnknownCooperativeApproach(Unprocessable):
    slug, title = "unknown-cooperative-approach", "The cooperative approach is not registered"


class NotAParticipant(Unprocessable):
    slug, title = "not-a-participant", "The Party does not participate in the cooperative approach"


class EntityExists(Conflict):
    slug, title = "entity-exists", "The authorized entity already exists"


class EntityNotFound(NotFound):
    slug, title = "entity-not-found", "No such authorized entity"


class UnknownHolderEntity(Unprocessable):
    slug, title = "unknown-holder-entity", "The holder is not an authorized entity of the Party"


class OverlappingNdcPeriods(Unprocessable):
    slug, title = "overlapping-ndc-periods", "NDC periods overlap"
