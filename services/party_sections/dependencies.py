"""FastAPI dependencies of the party_sections routes: the service instance and the authorization checks.

The checks run as dependencies so a caller who may not act gets its 403 before its body is validated:
the answer to "may I?" never depends on what was sent. Each one calls `permissions.authorize`, the only
place access is decided.
"""

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from contracts.parties import PartyCode
from kit.auth import CurrentPrincipal, Principal
from kit.errors import Forbidden
from services.party_sections.permissions import Action, authorize, reach
from services.party_sections.service import PartySectionsService

__all__ = [
    "PartyPath",
    "Service",
    "able_to",
    "allowed_for_party",
    "allowed_globally",
    "get_service",
]

PartyPath = Annotated[PartyCode, Path(description="The Party's alpha-3 code (ISO 3166-1, or EUE)")]


def get_service(request: Request) -> PartySectionsService:
    service: PartySectionsService = request.app.state.party_sections
    return service


Service = Annotated[PartySectionsService, Depends(get_service)]


def allowed_for_party(action: Action) -> Any:
    """The caller, if it may do `action` on the data of the path's `{party}` (403 problem otherwise)."""

    async def check(principal: CurrentPrincipal, party: PartyPath) -> Principal:
        authorize(principal, action, party)
        return principal

    return Depends(check)


def allowed_globally(action: Action) -> Any:
    """The caller, if it may do `action` on data of no one Party (reference data, internal reads)."""

    async def check(principal: CurrentPrincipal) -> Principal:
        authorize(principal, action)
        return principal

    return Depends(check)


def able_to(action: Action) -> Any:
    """The caller, if it may do `action` for at least one Party; the use case checks which one."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if reach(principal, action) == frozenset():
            raise Forbidden(f"This client may not do {action.value}.", action=action.value)
        return principal

    return Depends(check)
