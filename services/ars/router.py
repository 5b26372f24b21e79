"""HTTP routes of the ars service (thin: parse, authorize, call the service, answer)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from contracts.actions import MOState
from contracts.ars import (
    Authorization,
    AuthorizationApplied,
    AuthorizationApply,
    AuthorizationCreate,
    AuthorizationRevoke,
    AuthorizationVersionCreate,
    FirstTransferStatus,
    Issuance,
    IssuanceCreate,
    MOBlock,
    MOCancellation,
    MOCancellationCreate,
    MOFirstTransfer,
    MOFirstTransferCreate,
)
from contracts.pagination import Page
from contracts.parties import CooperativeApproachId
from contracts.problems import PROBLEM_MEDIA_TYPE, Problem
from contracts.roles import Role
from contracts.transactions import CheckDefinition
from kit.auth import CurrentPrincipal, Principal
from kit.idempotency import REPLAY_HEADER, IdempotencyKeyHeader
from kit.pagination import CursorQuery, LimitQuery
from services.ars import checks
from services.ars.dependencies import (
    AUTHORIZE,
    FIRST_TRANSFER,
    ISSUE,
    READ,
    IfMatch,
    PartyPath,
    Service,
    allowed,
    parse_if_match,
)
from services.ars.service import Answer

__all__ = ["router"]

router = APIRouter(prefix="/v1/ars", tags=["ars"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Malformed request (e.g. no Idempotency-Key)"},
    401: {"model": Problem, "description": "No valid access token"},
    403: {"model": Problem, "description": "Not a principal of this Party with the needed role"},
    404: {"model": Problem, "description": "No such resource in this Party's ARS"},
    409: {
        "model": Problem,
        "description": "Section not usable, authorization revoked or taken, key in flight",
    },
    412: {"model": Problem, "description": "If-Match does not match the authorization's current version"},
    422: {"model": Problem, "description": "Invalid input, or failed checks (`/check-failed`, `checks`)"},
    503: {"model": Problem, "description": "A peer service could not be asked; nothing changed"},
}

AuthorizationPath = Annotated[str, "authorization id"]
Issuer = Annotated[Principal, allowed(ISSUE)]
Official = Annotated[Principal, allowed(AUTHORIZE)]
Initiator = Annotated[Principal, allowed(FIRST_TRANSFER)]
Reader = Annotated[Principal, allowed(READ, reads=True)]
Approver = Annotated[Principal, allowed(frozenset({Role.APPROVER}))]
Withdrawer = Annotated[Principal, allowed(frozenset({Role.INITIATOR, Role.APPROVER}))]


def _answer(answer: Answer) -> JSONResponse:
    headers = {REPLAY_HEADER: "true"} if answer.replayed else None
    media_type = PROBLEM_MEDIA_TYPE if answer.status >= 400 else "application/json"
    return JSONResponse(answer.body, status_code=answer.status, headers=headers, media_type=media_type)


def _tagged(response: Response, authorization: Authorization) -> Authorization:
    response.headers["ETag"] = f'"{authorization.version}"'
    return authorization


@router.get("/checks", response_model=Page[CheckDefinition])
async def check_catalogue(principal: CurrentPrincipal) -> Page[CheckDefinition]:
    """The ARS's check codes (first transfers, apply, issuance under an authorization)."""
    return Page[CheckDefinition](items=list(checks.CATALOGUE), next_cursor=None)


@router.post("/{party}/issuances", response_model=Issuance, status_code=201, responses=_PROBLEMS)
async def issue(
    party: PartyPath,
    body: IssuanceCreate,
    principal: Issuer,
    service: Service,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Issue MOs (A1): serials continue the (CA, Party registry) sequence. With `authorization_id`, they are
    authorized at once, and first transferred when that OIMP authorization's definition is `Issuance`."""
    return _answer(await service.issue(principal, party, body, idempotency_key))


@router.get("/{party}/issuances/{issuance_id}", response_model=Issuance, responses=_PROBLEMS)
async def get_issuance(party: PartyPath, issuance_id: str, principal: Reader, service: Service) -> Issuance:
    """An issuance and the current state of its MO blocks."""
    return await service.issuance(party, issuance_id)


@router.get("/{party}/blocks", response_model=Page[MOBlock], responses=_PROBLEMS)
async def blocks(
    party: PartyPath,
    principal: Reader,
    service: Service,
    state: MOState | None = None,
    ca_id: CooperativeApproachId | None = None,
    vintage: Annotated[int | None, Query(ge=2021, le=9999)] = None,
    authorization_id: Annotated[str | None, Query(max_length=100)] = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Page[MOBlock]:
    """The Party's MO blocks in serial order per (CA, registry)."""
    return await service.blocks(
        party,
        state=state,
        ca_id=ca_id,
        vintage=vintage,
        authorization_id=authorization_id,
        limit=limit,
        cursor=cursor,
    )


@router.post("/{party}/authorizations", response_model=Authorization, status_code=201, responses=_PROBLEMS)
async def create_authorization(
    party: PartyPath, body: AuthorizationCreate, principal: Official, service: Service, response: Response
) -> Authorization:
    """Record an authorization (A2): AEF Table 2, version 1."""
    authorization = await service.create_authorization(principal, party, body)
    response.headers["Location"] = f"/v1/ars/{party}/authorizations/{authorization.authorization_id}"
    return _tagged(response, authorization)


@router.get("/{party}/authorizations", response_model=Page[Authorization], responses=_PROBLEMS)
async def list_authorizations(
    party: PartyPath, principal: Reader, service: Service, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[Authorization]:
    """The Party's authorizations (current versions) in id order."""
    return await service.authorizations(party, limit=limit, cursor=cursor)


@router.get("/{party}/authorizations/{authorization_id}", response_model=Authorization, responses=_PROBLEMS)
async def get_authorization(
    party: PartyPath, authorization_id: str, principal: Reader, service: Service, response: Response
) -> Authorization:
    """The current version; its `ETag` may go back as `If-Match` on versions and revoke."""
    return _tagged(response, await service.authorization(party, authorization_id))


@router.get(
    "/{party}/authorizations/{authorization_id}/versions",
    response_model=list[Authorization],
    responses=_PROBLEMS,
)
async def list_versions(
    party: PartyPath, authorization_id: str, principal: Reader, service: Service
) -> list[Authorization]:
    """Every version, oldest first (one AEF Table 2 row each)."""
    return await service.versions(party, authorization_id)


@router.get(
    "/{party}/authorizations/{authorization_id}/versions/{version}",
    response_model=Authorization,
    responses=_PROBLEMS,
)
async def get_version(
    party: PartyPath,
    authorization_id: str,
    version: Annotated[int, "version"],
    principal: Reader,
    service: Service,
) -> Authorization:
    """One version of an authorization."""
    return await service.authorization(party, authorization_id, version)


@router.post(
    "/{party}/authorizations/{authorization_id}/versions",
    response_model=Authorization,
    status_code=201,
    responses=_PROBLEMS,
)
async def add_version(
    party: PartyPath,
    authorization_id: str,
    body: AuthorizationVersionCreate,
    principal: Official,
    service: Service,
    response: Response,
    if_match: IfMatch = None,
) -> Authorization:
    """A new version (A3): the whole Table 2 record; same cooperative approach."""
    authorization = await service.add_version(
        principal, party, authorization_id, body, parse_if_match(if_match)
    )
    return _tagged(response, authorization)


@router.post(
    "/{party}/authorizations/{authorization_id}/revoke", response_model=Authorization, responses=_PROBLEMS
)
async def revoke(
    party: PartyPath,
    authorization_id: str,
    principal: Official,
    service: Service,
    response: Response,
    body: AuthorizationRevoke | None = None,
    if_match: IfMatch = None,
) -> Authorization:
    """Revoke (A3): a last version with status revoked. No new first transfer under it; units already first
    transferred are untouched; its authorized MOs go back to pending authorization."""
    authorization = await service.revoke(
        principal, party, authorization_id, body or AuthorizationRevoke(), parse_if_match(if_match)
    )
    return _tagged(response, authorization)


@router.post(
    "/{party}/authorizations/{authorization_id}/apply",
    response_model=AuthorizationApplied,
    status_code=201,
    responses=_PROBLEMS,
)
async def apply(
    party: PartyPath,
    authorization_id: str,
    body: AuthorizationApply,
    principal: Official,
    service: Service,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Pending MOs become authorized under the authorization, up to its authorized quantity; for an OIMP
    authorization whose first transfer definition is `Authorisation`, they are first transferred into the
    Party's own IR holding account."""
    return _answer(await service.apply(principal, party, authorization_id, body, idempotency_key))


@router.post(
    "/{party}/first-transfers",
    response_model=MOFirstTransfer,
    status_code=201,
    responses={
        **_PROBLEMS,
        202: {"model": MOFirstTransfer, "description": "Reserved; the IR has not answered yet"},
    },
)
async def first_transfer(
    party: PartyPath,
    body: MOFirstTransferCreate,
    principal: Initiator,
    service: Service,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """First transfer (A4/A15): MOs become ITMOs in the IR. 201 completed; 202 pending (the IR could not be
    reached: the ARS keeps trying; poll the operation); 422 refused or released, with check codes."""
    return _answer(await service.first_transfer(principal, party, body, idempotency_key))


@router.post(
    "/{party}/first-transfers/{operation_id}/approve",
    response_model=MOFirstTransfer,
    status_code=201,
    responses={
        **_PROBLEMS,
        202: {"model": MOFirstTransfer, "description": "Approved; the IR has not answered yet"},
    },
)
async def approve_first_transfer(
    party: PartyPath,
    operation_id: str,
    principal: Approver,
    service: Service,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Four-eyes: another principal with the approver role sends a first transfer awaiting approval to the
    IR. Answers like the first transfer itself (201 completed, 202 pending, 422 released); 409 when it is not
    awaiting approval; 403 for the principal that asked for it."""
    return _answer(await service.approve_first_transfer(principal, party, operation_id, idempotency_key))


@router.post(
    "/{party}/first-transfers/{operation_id}/cancel", response_model=MOFirstTransfer, responses=_PROBLEMS
)
async def cancel_first_transfer(
    party: PartyPath, operation_id: str, principal: Withdrawer, service: Service
) -> MOFirstTransfer:
    """Withdraw a first transfer awaiting approval (`cancelled`): its MOs are authorized again."""
    return await service.cancel_first_transfer(principal, party, operation_id)


@router.get("/{party}/first-transfers", response_model=Page[MOFirstTransfer], responses=_PROBLEMS)
async def list_first_transfers(
    party: PartyPath,
    principal: Reader,
    service: Service,
    status: FirstTransferStatus | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[MOFirstTransfer]:
    """The Party's first transfers, oldest first."""
    return await service.first_transfers(party, status=status, limit=limit, cursor=cursor)


@router.get("/{party}/first-transfers/{operation_id}", response_model=MOFirstTransfer, responses=_PROBLEMS)
async def get_first_transfer(
    party: PartyPath, operation_id: str, principal: Reader, service: Service
) -> MOFirstTransfer:
    """A first transfer and where its saga stands."""
    return await service.first_transfer_of(party, operation_id)


@router.post("/{party}/cancellations", response_model=MOCancellation, status_code=201, responses=_PROBLEMS)
async def cancel(
    party: PartyPath,
    body: MOCancellationCreate,
    principal: Issuer,
    service: Service,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Domestic cancellation of MOs that will never be ITMOs (not an AEF action)."""
    return _answer(await service.cancel(principal, party, body, idempotency_key))
