"""FastAPI dependencies of the ars routes: the service instance and who may do what for which Party.

Party isolation (DESIGN §3): every route names its `{party}`; a principal of another Party gets 403 before
anything is read or its body validated, whatever the ids in it.

- issuance and domestic cancellation: `party_admin` or `initiator` of the Party;
- authorizations (create, versions, revoke, apply): `authorizing_official` of the Party;
- first transfers: `initiator` of the Party;
- reads: the Party's own principals (any role), `secretariat_admin` and `auditor` without a Party, an
  `auditor` of that Party.
"""

from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request

from contracts.parties import PartyCode
from contracts.roles import Role
from kit.auth import CurrentPrincipal, Principal
from kit.errors import BadRequest, Forbidden
from services.ars.service import ArsService

__all__ = [
    "AUTHORIZE",
    "FIRST_TRANSFER",
    "ISSUE",
    "READ",
    "IfMatch",
    "PartyPath",
    "Service",
    "allowed",
    "parse_if_match",
]

PartyPath = Annotated[PartyCode, Path(description="The Party's alpha-3 code (ISO 3166-1, or EUE)")]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=200, description="The version read (optional; 412 if stale)"),
]

ISSUE = frozenset({Role.PARTY_ADMIN, Role.INITIATOR})
AUTHORIZE = frozenset({Role.AUTHORIZING_OFFICIAL})
FIRST_TRANSFER = frozenset({Role.INITIATOR})
READ = frozenset(
    {
        Role.PARTY_ADMIN,
        Role.AUTHORIZING_OFFICIAL,
        Role.INITIATOR,
        Role.APPROVER,
        Role.VIEWER,
        Role.AUDITOR,
    }
)
_GLOBAL_READERS = frozenset({Role.SECRETARIAT_ADMIN, Role.AUDITOR})


def get_service(request: Request) -> ArsService:
    service: ArsService = request.app.state.ars
    return service


Service = Annotated[ArsService, Depends(get_service)]


def allowed(roles: frozenset[Role], *, reads: bool = False) -> Any:
    """The caller, if it holds one of `roles` for the path's Party (403 problem otherwise)."""

    async def check(principal: CurrentPrincipal, party: PartyPath) -> Principal:
        if principal.party == party and principal.has(*roles):
            return principal
        if reads and principal.party is None and principal.has(*_GLOBAL_READERS):
            return principal
        raise Forbidden(
            f"This needs one of the roles {', '.join(sorted(r.value for r in roles))} of {party}.",
            party=party,
        )

    return Depends(check)


def parse_if_match(value: str | None) -> int | None:
    """The version in an If-Match header (`"3"`, `3` or `W/"3"`), None when absent."""
    if value is None:
        return None
    tag = value.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if not tag.isdigit():
        raise BadRequest('If-Match must be an authorization\'s ETag, e.g. "2".', slug="invalid-if-match")
    return int(tag)
