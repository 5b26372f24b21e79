"""HTTP routes of the party_sections service (thin: parse, authorize, call the service, answer).

`router` is the public API of API.md "Reference data and Party sections" (the gateway forwards it);
`internal_router` is `/internal/v1/...` for the other services, which the gateway never routes.
Authorization: Party-scoped paths check `{party}` in a dependency (before the body is read); the use cases
check what only the data tells (an account's Party, the Party in a body, the scope of a list).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Response

from contracts.accounts import Account, AccountCreate, AccountId, AccountType
from contracts.pagination import DEFAULT_LIMIT, Page
from contracts.parties import CooperativeApproachId, Party
from contracts.party_sections import (
    AccountLookup,
    AuthorizedEntity,
    AuthorizedEntityCreate,
    CooperativeApproach,
    CooperativeApproachCreate,
    EntityId,
    NdcPeriod,
    PartySection,
    PartySectionCreate,
    SectionEvent,
    SectionLookup,
    SectionMove,
    SectionSettings,
    SectionSettingsPatch,
    SectionStatus,
)
from contracts.problems import Problem
from kit.auth import CurrentPrincipal, Principal
from kit.pagination import CursorQuery, LimitQuery, decode_cursor
from services.party_sections import service as use_cases
from services.party_sections.dependencies import (
    PartyPath,
    Service,
    able_to,
    allowed_for_party,
    allowed_globally,
)
from services.party_sections.permissions import Action

__all__ = ["MAX_NDC_PERIODS", "internal_router", "problems", "router"]

#: More NDC periods than a Party will ever have (one per five or ten years); a bound on the body.
MAX_NDC_PERIODS = 50

router = APIRouter()
internal_router = APIRouter(
    prefix="/internal/v1",
    tags=["internal"],
    dependencies=[allowed_globally(Action.INTERNAL_READ)],
)

_DESCRIPTIONS = {
    400: "Malformed request (e.g. a cursor this API did not issue)",
    401: "No valid access token",
    403: "The caller's roles or Party do not allow this",
    404: "No such resource",
    409: "Conflicts with the current state (the problem says which status and what is allowed)",
    412: "If-Match does not match the current ETag",
    422: "Invalid input; nothing was written",
    428: "If-Match is required",
    503: "A peer service could not confirm what this needs (e.g. a balance); nothing was written",
}


def problems(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for problem documents (`d404="..."` overrides a description)."""
    return {
        code: {"model": Problem, "description": descriptions.get(f"d{code}", _DESCRIPTIONS[code])}
        for code in codes
    }


def _etag(response: Response, version: int) -> None:
    response.headers["ETag"] = use_cases.etag(version)


ReadSection = Annotated[Principal, allowed_for_party(Action.SECTION_READ)]
MoveSection = Annotated[Principal, allowed_for_party(Action.SECTION_MOVE)]
MoveBody = Annotated[SectionMove | None, Body(description="Why (kept in the audit trail)")]
EntityPath = Annotated[EntityId, Path(description="The Party's id of the entity")]
AccountPath = Annotated[AccountId, Path(description="Account id, e.g. GHA01-100-1")]

# ---- reference data --------------------------------------------------------------------------------------


@router.get("/v1/parties", response_model=Page[Party], responses=problems(400, 401), tags=["reference data"])
async def list_parties(
    _principal: CurrentPrincipal, limit: LimitQuery = 500, cursor: CursorQuery = None
) -> Page[Party]:
    """Parties that may hold a section: ISO 3166-1 alpha-3 codes and reserved codes such as EUE."""
    key = decode_cursor(cursor, fields=("code",))
    return use_cases.list_parties(limit=limit, after=key["code"] if key else None)


@router.post(
    "/v1/cooperative-approaches",
    status_code=201,
    response_model=CooperativeApproach,
    responses=problems(401, 403, 409, 422, d409="The ca_id is already registered"),
    tags=["reference data"],
)
async def register_cooperative_approach(
    body: CooperativeApproachCreate,
    principal: Annotated[Principal, allowed_globally(Action.CA_CREATE)],
    service: Service,
    response: Response,
) -> CooperativeApproach:
    """Register a cooperative approach with its participating Parties (Secretariat)."""
    approach = await service.register_cooperative_approach(principal, body)
    response.headers["Location"] = f"/v1/cooperative-approaches/{approach.ca_id}"
    return approach


@router.get(
    "/v1/cooperative-approaches",
    response_model=Page[CooperativeApproach],
    responses=problems(400, 401, 403),
    tags=["reference data"],
)
async def list_cooperative_approaches(
    _principal: Annotated[Principal, allowed_globally(Action.CA_READ)],
    service: Service,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[CooperativeApproach]:
    """Registered cooperative approaches in id order."""
    key = decode_cursor(cursor, fields=("ca_id",))
    return await service.cooperative_approaches(limit=limit, after=key["ca_id"] if key else None)


@router.get(
    "/v1/cooperative-approaches/{ca_id}",
    response_model=CooperativeApproach,
    responses=problems(401, 403, 404, 422),
    tags=["reference data"],
)
async def get_cooperative_approach(
    ca_id: Annotated[CooperativeApproachId, Path(description="CA and four digits")],
    _principal: Annotated[Principal, allowed_globally(Action.CA_READ)],
    service: Service,
) -> CooperativeApproach:
    """One cooperative approach and its participants."""
    return await service.cooperative_approach(ca_id)


# ---- sections --------------------------------------------------------------------------------------------


@router.post(
    "/v1/party-sections",
    status_code=201,
    response_model=PartySection,
    responses=problems(401, 403, 409, 422, d409="The Party already has a section"),
    tags=["party sections"],
)
async def request_section(
    body: PartySectionCreate,
    principal: Annotated[Principal, able_to(Action.SECTION_CREATE)],
    service: Service,
    response: Response,
) -> PartySection:
    """Request a Party section (status `requested`): the Secretariat, or the Party's own party_admin."""
    section = await service.request_section(principal, body)
    response.headers["Location"] = f"/v1/party-sections/{section.party}"
    _etag(response, section.version)
    return section


@router.get(
    "/v1/party-sections",
    response_model=Page[PartySection],
    responses=problems(400, 401, 403, 422),
    tags=["party sections"],
)
async def list_sections(
    principal: Annotated[Principal, able_to(Action.SECTION_READ)],
    service: Service,
    status: Annotated[SectionStatus | None, Query(description="Only sections in this status")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[PartySection]:
    """The sections the caller may read: all for the Secretariat and global auditors, else its own."""
    key = decode_cursor(cursor, fields=("party",))
    return await service.sections(principal, status=status, limit=limit, after=key["party"] if key else None)


@router.get(
    "/v1/party-sections/{party}",
    response_model=PartySection,
    responses=problems(401, 403, 404, 422),
    tags=["party sections"],
)
async def get_section(
    party: PartyPath, _principal: ReadSection, service: Service, response: Response
) -> PartySection:
    """The Party's section; its `ETag` is the version to send back as `If-Match`."""
    section = await service.section(party)
    _etag(response, section.version)
    return section


async def _move(
    service: use_cases.PartySectionsService,
    principal: Principal,
    party: str,
    action: str,
    body: SectionMove | None,
    response: Response,
) -> PartySection:
    section = await service.move_section(principal, party, action, body.reason if body else None)
    _etag(response, section.version)
    return section


_MOVE_PROBLEMS = problems(401, 403, 404, 409, 422, d409="Not allowed from the section's status")


@router.post(
    "/v1/party-sections/{party}/open",
    response_model=PartySection,
    responses=_MOVE_PROBLEMS,
    tags=["party sections"],
)
async def open_section(
    party: PartyPath, principal: MoveSection, service: Service, response: Response, body: MoveBody = None
) -> PartySection:
    """Open a requested section and its default accounts, one of each IR type (Secretariat)."""
    return await _move(service, principal, party, "open", body, response)


@router.post(
    "/v1/party-sections/{party}/suspend",
    response_model=PartySection,
    responses=_MOVE_PROBLEMS,
    tags=["party sections"],
)
async def suspend_section(
    party: PartyPath, principal: MoveSection, service: Service, response: Response, body: MoveBody = None
) -> PartySection:
    """Suspend an open section: reads only, no unit leaves it (Secretariat)."""
    return await _move(service, principal, party, "suspend", body, response)


@router.post(
    "/v1/party-sections/{party}/reactivate",
    response_model=PartySection,
    responses=_MOVE_PROBLEMS,
    tags=["party sections"],
)
async def reactivate_section(
    party: PartyPath, principal: MoveSection, service: Service, response: Response, body: MoveBody = None
) -> PartySection:
    """Reopen a suspended section (Secretariat)."""
    return await _move(service, principal, party, "reactivate", body, response)


@router.post(
    "/v1/party-sections/{party}/close",
    response_model=PartySection,
    responses=_MOVE_PROBLEMS
    | problems(
        409,
        503,
        d409="Not allowed from the section's status, or units remain (closing → closed needs a zero balance)",
    ),
    tags=["party sections"],
)
async def close_section(
    party: PartyPath, principal: MoveSection, service: Service, response: Response, body: MoveBody = None
) -> PartySection:
    """Close a section: open or suspended → closing; closing → closed once its balance is zero (Secretariat)."""
    return await _move(service, principal, party, "close", body, response)


@router.get(
    "/v1/party-sections/{party}/history",
    response_model=Page[SectionEvent],
    responses=problems(400, 401, 403, 404, 422),
    tags=["party sections"],
)
async def section_history(
    party: PartyPath,
    _principal: ReadSection,
    service: Service,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[SectionEvent]:
    """The section's audited status changes (who, when, why), oldest first."""
    key = decode_cursor(cursor, fields=("id",))
    return await service.history(party, limit=limit, after=key["id"] if key else None)


@router.get(
    "/v1/party-sections/{party}/settings",
    response_model=SectionSettings,
    responses=problems(401, 403, 404, 422),
    tags=["party sections"],
)
async def get_settings(
    party: PartyPath, _principal: ReadSection, service: Service, response: Response
) -> SectionSettings:
    """The section's settings; the `ETag` is the section's version, for `If-Match` on PATCH."""
    section = await service.section(party)
    _etag(response, section.version)
    return section.settings


@router.patch(
    "/v1/party-sections/{party}/settings",
    response_model=PartySection,
    responses=problems(401, 403, 404, 409, 412, 422, 428, d409="The section's status does not allow changes"),
    tags=["party sections"],
)
async def update_settings(
    party: PartyPath,
    body: SectionSettingsPatch,
    principal: Annotated[Principal, allowed_for_party(Action.SETTINGS_UPDATE)],
    service: Service,
    response: Response,
    if_match: Annotated[str | None, Header(max_length=200, description="The section's current ETag")] = None,
) -> PartySection:
    """Change four-eyes, confidentiality designations and incoming acceptance (party_admin; `If-Match`)."""
    section = await service.update_settings(principal, party, if_match, body)
    _etag(response, section.version)
    return section


# ---- accounts --------------------------------------------------------------------------------------------


@router.get(
    "/v1/party-sections/{party}/accounts",
    response_model=Page[Account],
    responses=problems(400, 401, 403, 404, 422),
    tags=["accounts"],
)
async def list_accounts(
    party: PartyPath,
    _principal: Annotated[Principal, allowed_for_party(Action.ACCOUNT_READ)],
    service: Service,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[Account]:
    """The section's accounts by type code, then number."""
    key = decode_cursor(cursor, fields=("type_code", "n"))
    after = (int(key["type_code"]), int(key["n"])) if key else None
    return await service.accounts(party, limit=limit, after=after)


@router.post(
    "/v1/party-sections/{party}/accounts",
    status_code=201,
    response_model=Account,
    responses=problems(401, 403, 404, 409, 422, d409="The section is not open"),
    tags=["accounts"],
)
async def open_account(
    party: PartyPath,
    body: AccountCreate,
    principal: Annotated[Principal, allowed_for_party(Action.ACCOUNT_CREATE)],
    service: Service,
    response: Response,
) -> Account:
    """Open another account in an open section (party_admin), e.g. an authorized entity's holding account."""
    account = await service.open_account(principal, party, body)
    response.headers["Location"] = f"/v1/party-sections/{party}/accounts/{account.account_id}"
    return account


@router.get(
    "/v1/party-sections/{party}/accounts/{account_id}",
    response_model=Account,
    responses=problems(401, 403, 404, 422),
    tags=["accounts"],
)
async def get_account(
    party: PartyPath,
    account_id: AccountPath,
    _principal: Annotated[Principal, allowed_for_party(Action.ACCOUNT_READ)],
    service: Service,
) -> Account:
    """One account of the section."""
    return await service.account_of(party, account_id)


_ACCOUNT_MOVE_PROBLEMS = problems(
    401,
    403,
    404,
    409,
    422,
    d404="No such account, or another Party's (not revealed)",
    d409="Not allowed from the account's or the section's status",
)


@router.post(
    "/v1/accounts/{account_id}/block",
    response_model=Account,
    responses=_ACCOUNT_MOVE_PROBLEMS,
    tags=["accounts"],
)
async def block_account(
    account_id: AccountPath, principal: CurrentPrincipal, service: Service, body: MoveBody = None
) -> Account:
    """Block an account: no outgoing movement until unblocked (party_admin, Secretariat)."""
    return await service.change_account(principal, account_id, "block", body.reason if body else None)


@router.post(
    "/v1/accounts/{account_id}/unblock",
    response_model=Account,
    responses=_ACCOUNT_MOVE_PROBLEMS,
    tags=["accounts"],
)
async def unblock_account(
    account_id: AccountPath, principal: CurrentPrincipal, service: Service, body: MoveBody = None
) -> Account:
    """Unblock a blocked account (party_admin, Secretariat)."""
    return await service.change_account(principal, account_id, "unblock", body.reason if body else None)


@router.post(
    "/v1/accounts/{account_id}/close",
    response_model=Account,
    responses=_ACCOUNT_MOVE_PROBLEMS
    | problems(
        409,
        503,
        d409="Not allowed from the account's or the section's status, a default terminal account, or units remain",
    ),
    tags=["accounts"],
)
async def close_account(
    account_id: AccountPath, principal: CurrentPrincipal, service: Service, body: MoveBody = None
) -> Account:
    """Close an account for good; it must hold no units (party_admin, Secretariat)."""
    return await service.change_account(principal, account_id, "close", body.reason if body else None)


# ---- authorized entities ---------------------------------------------------------------------------------


@router.post(
    "/v1/party-sections/{party}/entities",
    status_code=201,
    response_model=AuthorizedEntity,
    responses=problems(
        401,
        403,
        404,
        409,
        422,
        d409="The entity id exists, or the section's status does not allow changes",
        d422="Invalid body, an unregistered cooperative approach, or one the Party is not in",
    ),
    tags=["authorized entities"],
)
async def authorize_entity(
    party: PartyPath,
    body: AuthorizedEntityCreate,
    principal: Annotated[Principal, allowed_for_party(Action.ENTITY_CREATE)],
    service: Service,
    response: Response,
) -> AuthorizedEntity:
    """Record an entity the Party authorized (AEF Table 5; party_admin)."""
    entity = await service.authorize_entity(principal, party, body)
    response.headers["Location"] = f"/v1/party-sections/{party}/entities/{entity.entity_id}"
    return entity


@router.get(
    "/v1/party-sections/{party}/entities",
    response_model=Page[AuthorizedEntity],
    responses=problems(400, 401, 403, 404, 422),
    tags=["authorized entities"],
)
async def list_entities(
    party: PartyPath,
    _principal: Annotated[Principal, allowed_for_party(Action.ENTITY_READ)],
    service: Service,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[AuthorizedEntity]:
    """The Party's authorized entities in id order."""
    key = decode_cursor(cursor, fields=("entity_id",))
    return await service.entities(party, limit=limit, after=key["entity_id"] if key else None)


@router.get(
    "/v1/party-sections/{party}/entities/{entity_id}",
    response_model=AuthorizedEntity,
    responses=problems(401, 403, 404, 422),
    tags=["authorized entities"],
)
async def get_entity(
    party: PartyPath,
    entity_id: EntityPath,
    _principal: Annotated[Principal, allowed_for_party(Action.ENTITY_READ)],
    service: Service,
) -> AuthorizedEntity:
    """One authorized entity of the Party."""
    return await service.entity(party, entity_id)


# ---- NDC periods -----------------------------------------------------------------------------------------


@router.put(
    "/v1/party-sections/{party}/ndc-periods",
    response_model=list[NdcPeriod],
    responses=problems(
        401,
        403,
        404,
        409,
        422,
        d409="The section's status does not allow changes",
        d422="Invalid or overlapping periods",
    ),
    tags=["party sections"],
)
async def set_ndc_periods(
    party: PartyPath,
    body: Annotated[list[NdcPeriod], Body(max_length=MAX_NDC_PERIODS)],
    principal: Annotated[Principal, allowed_for_party(Action.NDC_WRITE)],
    service: Service,
) -> list[NdcPeriod]:
    """Replace the Party's NDC implementation periods; they must not overlap (party_admin)."""
    return await service.set_ndc_periods(principal, party, body)


@router.get(
    "/v1/party-sections/{party}/ndc-periods",
    response_model=list[NdcPeriod],
    responses=problems(401, 403, 404, 422),
    tags=["party sections"],
)
async def get_ndc_periods(
    party: PartyPath,
    _principal: Annotated[Principal, allowed_for_party(Action.NDC_READ)],
    service: Service,
) -> list[NdcPeriod]:
    """The Party's NDC implementation periods, in order."""
    return await service.ndc_periods(party)


# ---- internal API ----------------------------------------------------------------------------------------

_INTERNAL_PROBLEMS = problems(401, 403, 404, 422, d403="Needs the service role or secretariat_admin")


@internal_router.get("/accounts/{account_id}", response_model=AccountLookup, responses=_INTERNAL_PROBLEMS)
async def lookup_account(account_id: AccountPath, service: Service) -> AccountLookup:
    """An account with its section's status and four-eyes setting (what a ledger checks before moving units)."""
    return await service.account_lookup(account_id)


@internal_router.get("/party-sections/{party}", response_model=SectionLookup, responses=_INTERNAL_PROBLEMS)
async def lookup_section(party: PartyPath, service: Service) -> SectionLookup:
    """A section's status, settings and NDC periods in one read."""
    return await service.section_lookup(party)


@internal_router.get(
    "/party-sections/{party}/accounts", response_model=list[AccountLookup], responses=_INTERNAL_PROBLEMS
)
async def lookup_section_accounts(
    party: PartyPath,
    service: Service,
    type: Annotated[AccountType | None, Query(description="Only accounts of this type")] = None,
) -> list[AccountLookup]:
    """Every account of a section (optionally of one type), with the section's state."""
    return await service.section_accounts(party, type)


@internal_router.get(
    "/party-sections/{party}/entities/{entity_id}",
    response_model=AuthorizedEntity,
    responses=_INTERNAL_PROBLEMS,
)
async def lookup_entity(party: PartyPath, entity_id: EntityPath, service: Service) -> AuthorizedEntity:
    """An entity the Party authorized (AEF Table 5): the ARS checks the entities it is given exist."""
    return await service.entity(party, entity_id)


@internal_router.get(
    "/cooperative-approaches/{ca_id}", response_model=CooperativeApproach, responses=_INTERNAL_PROBLEMS
)
async def lookup_cooperative_approach(
    ca_id: Annotated[CooperativeApproachId, Path(description="CA and four digits")], service: Service
) -> CooperativeApproach:
    """A cooperative approach and its participants."""
    return await service.cooperative_approach(ca_id)
