"""HTTP routes of the party_sections service (thin: parse, authorize, call the service, answer)."""

from fastapi import APIRouter

from contracts.pagination import Page
from contracts.parties import Party
from kit.auth import CurrentPrincipal
from kit.pagination import CursorQuery, LimitQuery, decode_cursor
from services.party_sections import service

__all__ = ["router"]

router = APIRouter(tags=["reference data"])

_AUTH_PROBLEMS = {401: {"description": "No valid access token"}}


@router.get("/v1/parties", response_model=Page[Party], responses=_AUTH_PROBLEMS)
async def list_parties(
    _principal: CurrentPrincipal, limit: LimitQuery = 500, cursor: CursorQuery = None
) -> Page[Party]:
    """Parties that may hold a section: ISO 3166-1 alpha-3 codes and reserved codes such as EUE."""
    key = decode_cursor(cursor, fields=("code",))
    return service.list_parties(limit=limit, after=key["code"] if key else None)
