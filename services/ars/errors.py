"""Domain errors of the ars service, each a stable problem `type` (kit.errors renders them)."""

from collections.abc import Sequence
from typing import Any

from contracts.problems import CheckResult
from kit.errors import Conflict, NotFound, Unprocessable

__all__ = [
    "AuthorizationExists",
    "AuthorizationNotFound",
    "AuthorizationRevoked",
    "ChecksFailed",
    "CooperativeApproachChanged",
    "FirstTransferNotAwaiting",
    "FirstTransferNotFound",
    "IssuanceNotFound",
    "MOsNotCancellable",
    "NotAParticipant",
    "SectionNotUsable",
    "SerialsExhausted",
    "UnknownCooperativeApproach",
    "UnknownEntities",
]


class SectionNotUsable(Conflict):
    slug, title = "section-not-usable", "The Party section is not open with the ARS"

    def __init__(self, party: str, why: str) -> None:
        super().__init__(f"The ARS of {party} cannot be changed: {why}.", party=party)


class UnknownCooperativeApproach(Unprocessable):
    slug, title = "unknown-cooperative-approach", "The cooperative approach is not registered"


class NotAParticipant(Unprocessable):
    slug, title = "not-a-participant", "The Party does not participate in the cooperative approach"


class FirstTransferNotAwaiting(Conflict):
    slug, title = "not-awaiting-approval", "The first transfer is not awaiting approval"

    def __init__(self, operation_id: str, status: str) -> None:
        super().__init__(
            f"First transfer {operation_id} is {status}, not awaiting approval.", current_status=status
        )


class UnknownEntities(Unprocessable):
    slug, title = "unknown-entity", "An entity named is not one the Party authorized"


class SerialsExhausted(Unprocessable):
    slug, title = "serials-exhausted", "No serials left for this cooperative approach and registry"


class AuthorizationNotFound(NotFound):
    slug, title = "authorization-not-found", "No such authorization"

    def __init__(self, party: str, authorization_id: str) -> None:
        super().__init__(f"{party} has no authorization {authorization_id!r}.")


class AuthorizationExists(Conflict):
    slug, title = "authorization-exists", "The authorization id is taken; add a version instead"


class AuthorizationRevoked(Conflict):
    slug, title = "authorization-revoked", "The authorization is revoked"


class CooperativeApproachChanged(Unprocessable):
    slug, title = (
        "cooperative-approach-changed",
        "A new version keeps the authorization's cooperative approach",
    )


class IssuanceNotFound(NotFound):
    slug, title = "issuance-not-found", "No such issuance"


class FirstTransferNotFound(NotFound):
    slug, title = "first-transfer-not-found", "No such first transfer"


class MOsNotCancellable(Unprocessable):
    slug, title = "mos-not-cancellable", "Not every named MO may be cancelled"


class ChecksFailed(Unprocessable):
    """A refusal with check codes (docs/ars.md); nothing changed."""

    slug, title = "check-failed", "The request failed checks; nothing changed"

    def __init__(self, failed: Sequence[CheckResult], **extensions: Any) -> None:
        super().__init__(
            "; ".join(f"{c.code}: {c.message}" for c in failed),
            checks=[c.model_dump() for c in failed],
            **extensions,
        )
        self.failed = list(failed)
