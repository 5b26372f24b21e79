"""HTTP routes of the transactions service (thin: parse, authorize, call the use case, answer)."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse

from contracts.actions import TransactionStatus
from contracts.interregistry import IncomingDecisionNote
from contracts.pagination import Page
from contracts.parties import PartyCode
from contracts.problems import PROBLEM_MEDIA_TYPE, Problem
from contracts.roles import Role
from contracts.transactions import (
    AccountBalance,
    CheckDefinition,
    CorrectionCreate,
    DirectoryInvalidation,
    FirstTransferCreate,
    Holdings,
    InvariantReport,
    PartyBalance,
    Transaction,
    TransactionCreate,
    TransactionValidation,
    UnitHistory,
)
from kit.auth import CurrentPrincipal, require_roles
from kit.db import Database
from kit.idempotency import REPLAY_HEADER, IdempotencyKeyHeader
from kit.pagination import CursorQuery, LimitQuery
from services.transactions import checks, repository
from services.transactions.checks import CORRECTION
from services.transactions.invariants import check_invariants
from services.transactions.service import Answer, Ledgers

__all__ = ["internal_router", "router"]

router = APIRouter()

#: `/internal/v1/...`: other services (role `service`) and the Secretariat; the gateway never routes it.
internal_router = APIRouter(
    prefix="/internal/v1",
    tags=["internal"],
    dependencies=[require_roles(Role.SERVICE, Role.SECRETARIAT_ADMIN)],
)

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Malformed request (e.g. no Idempotency-Key)"},
    401: {"model": Problem, "description": "No valid access token"},
    403: {"model": Problem, "description": "The caller's roles or Party do not allow this"},
    404: {"model": Problem, "description": "No such resource visible to the caller"},
    409: {
        "model": Problem,
        "description": "In flight with this Idempotency-Key, or not in a state allowing this",
    },
    422: {
        "model": Problem,
        "description": "Invalid input, or a failed check (`/check-failed`, `checks`); nothing moved",
    },
    503: {"model": Problem, "description": "A peer service could not be asked; nothing moved"},
}


def _db(request: Request) -> Database:
    return request.app.state.db


def _ledgers(request: Request) -> Ledgers:
    return request.app.state.ledgers


def _answer(answer: Answer) -> JSONResponse:
    headers = {REPLAY_HEADER: "true"} if answer.replayed else None
    media_type = PROBLEM_MEDIA_TYPE if answer.status >= 400 else "application/json"
    return JSONResponse(answer.body, status_code=answer.status, headers=headers, media_type=media_type)


@router.post(
    "/v1/transactions",
    response_model=Transaction,
    status_code=201,
    responses=_PROBLEMS,
    tags=["transactions"],
)
async def submit_transaction(
    request: Request,
    body: TransactionCreate,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Transfer, use or cancel units of one of the caller's Party's accounts (`completed`, or
    `awaiting_approval` when the section asks for four-eyes). A failed check answers 422 and moves nothing."""
    return _answer(await _ledgers(request).submit(principal, body, idempotency_key))


@router.post(
    "/v1/transactions/validate",
    response_model=TransactionValidation,
    responses=_PROBLEMS,
    tags=["transactions"],
)
async def validate_transaction(
    request: Request, body: TransactionCreate, principal: CurrentPrincipal
) -> TransactionValidation:
    """Run every check of the transaction without recording or reserving anything."""
    return await _ledgers(request).validate(principal, body)


@router.post(
    "/v1/transactions/{transaction_id}/approve",
    response_model=Transaction,
    responses=_PROBLEMS,
    tags=["transactions"],
)
async def approve_transaction(
    request: Request,
    transaction_id: str,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Four-eyes: an approver of the Party other than the initiator completes the transaction. An incoming
    transfer from a connected registry awaiting approval (`incoming_acceptance: manual`) is accepted by an
    approver of the acquiring Party."""
    return _answer(await _ledgers(request).approve(principal, transaction_id, idempotency_key))


@router.post(
    "/v1/transactions/{transaction_id}/reject",
    response_model=Transaction,
    responses=_PROBLEMS,
    tags=["transactions"],
)
async def reject_transaction(
    request: Request,
    transaction_id: str,
    principal: CurrentPrincipal,
    body: Annotated[IncomingDecisionNote | None, Body()] = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """An approver of the acquiring Party declines an incoming transfer awaiting approval: `rejected`
    (5904, `reason` as its message), the pending units dropped, the registry told through its inbox."""
    reason = body.reason if body is not None else None
    return _answer(await _ledgers(request).reject(principal, transaction_id, reason, idempotency_key))


@router.post(
    "/v1/transactions/{transaction_id}/cancel",
    response_model=Transaction,
    responses=_PROBLEMS,
    tags=["transactions"],
)
async def cancel_transaction(
    request: Request, transaction_id: str, principal: CurrentPrincipal
) -> Transaction:
    """Withdraw a transaction awaiting approval; its reserved units are released."""
    return await _ledgers(request).cancel(principal, transaction_id)


@router.get(
    "/v1/transactions/{transaction_id}",
    response_model=Transaction,
    responses=_PROBLEMS,
    tags=["transactions"],
)
async def get_transaction(request: Request, transaction_id: str, principal: CurrentPrincipal) -> Transaction:
    """A transaction of the caller's Party (either side), or any for the Secretariat."""
    return await _ledgers(request).get(principal, transaction_id)


@router.get("/v1/transactions", response_model=Page[Transaction], responses=_PROBLEMS, tags=["transactions"])
async def list_transactions(
    request: Request,
    principal: CurrentPrincipal,
    account: Annotated[str | None, Query(max_length=64, description="Either side's account")] = None,
    status: TransactionStatus | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[Transaction]:
    """Transactions the caller's Party took part in, oldest first."""
    items, next_cursor = await _ledgers(request).list(
        principal, account=account, status=status, limit=limit, cursor=cursor
    )
    return Page[Transaction](items=items, next_cursor=next_cursor)


@router.get(
    "/v1/accounts/{account_id}/holdings", response_model=Holdings, responses=_PROBLEMS, tags=["holdings"]
)
async def holdings(
    request: Request,
    account_id: str,
    principal: CurrentPrincipal,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Holdings:
    """The account's current blocks in the DESIGN order, and their total."""
    return await _ledgers(request).holdings(principal, account_id, limit=limit, cursor=cursor)


@router.get("/v1/units/{unique_id}", response_model=UnitHistory, responses=_PROBLEMS, tags=["holdings"])
async def unit(request: Request, unique_id: str, principal: CurrentPrincipal) -> Any:
    """The block holding the unit now and every journal entry about it (the holding Party, Secretariat)."""
    return await _ledgers(request).unit(principal, unique_id)


@router.get("/v1/checks", response_model=Page[CheckDefinition], tags=["transactions"])
async def check_catalogue() -> Page[CheckDefinition]:
    """The published check catalogue: codes are stable and never reused."""
    return Page[CheckDefinition](items=[*checks.CATALOGUE, *checks.IRX_CATALOGUE], next_cursor=None)


@router.get(
    "/v1/admin/invariants",
    response_model=InvariantReport,
    responses=_PROBLEMS,
    tags=["operations"],
    dependencies=[require_roles(Role.SECRETARIAT_ADMIN)],
)
async def invariants(request: Request) -> InvariantReport:
    """DESIGN §4 I1–I6 over the whole ledger, with every violation found."""
    return await check_invariants(_db(request), request.app.state.sealer)


# ---- corrections (domain A16): compensating transactions under dual control -----------------------------


@router.post(
    "/v1/admin/corrections",
    response_model=Transaction,
    status_code=201,
    responses=_PROBLEMS,
    tags=["operations"],
)
async def propose_correction(
    request: Request,
    body: CorrectionCreate,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """A Secretariat administrator proposes to reverse a completed transfer whose units are still held
    where it put them: a `correction` transaction, `awaiting_approval`, reserving those units. The transfer
    itself is never edited. A failed check (C01–C04, F02) answers 422 and reserves nothing."""
    return _answer(await _ledgers(request).propose_correction(principal, body, idempotency_key))


@router.post(
    "/v1/admin/corrections/{transaction_id}/approve",
    response_model=Transaction,
    responses=_PROBLEMS,
    tags=["operations"],
)
async def approve_correction(
    request: Request,
    transaction_id: str,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Dual control: another Secretariat administrator than the proposer completes the correction; the
    units go back to the account they came from (journal, `transaction.completed` event with `corrects`)."""
    return _answer(await _ledgers(request).approve_correction(principal, transaction_id, idempotency_key))


@router.post(
    "/v1/admin/corrections/{transaction_id}/cancel",
    response_model=Transaction,
    responses=_PROBLEMS,
    tags=["operations"],
)
async def cancel_correction(
    request: Request, transaction_id: str, principal: CurrentPrincipal
) -> Transaction:
    """Withdraw a pending correction: its units are released where they are."""
    return await _ledgers(request).cancel_correction(principal, transaction_id)


@router.get(
    "/v1/admin/corrections",
    response_model=Page[Transaction],
    responses=_PROBLEMS,
    tags=["operations"],
    dependencies=[require_roles(Role.SECRETARIAT_ADMIN)],
)
async def list_corrections(
    request: Request,
    principal: CurrentPrincipal,
    status: TransactionStatus | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[Transaction]:
    """Corrections, oldest first (e.g. `?status=awaiting_approval`: those waiting for a second administrator)."""
    items, next_cursor = await _ledgers(request).list(
        principal, account=None, status=status, limit=limit, cursor=cursor, kind=CORRECTION
    )
    return Page[Transaction](items=items, next_cursor=next_cursor)


# ---- internal -----------------------------------------------------------------------------------------------


@internal_router.get("/accounts/{account_id}/balance", response_model=AccountBalance)
async def account_balance(request: Request, account_id: str) -> AccountBalance:
    """Units still in the account, by state; zeros for an account the ledger has never seen."""
    async with _db(request).read() as session:
        return await repository.account_balance(session, account_id)


@internal_router.get("/party-sections/{party}/balance", response_model=PartyBalance)
async def party_balance(request: Request, party: PartyCode) -> PartyBalance:
    """What a Party section still holds (held, reserved, arriving), with the non-zero accounts."""
    async with _db(request).read() as session:
        return await repository.party_balance(session, party)


@internal_router.post("/directory/invalidations", status_code=204)
async def invalidate_directory(request: Request, body: DirectoryInvalidation) -> None:
    """party_sections committed a change: forget the cached lookups it may have made wrong, before it answers."""
    request.app.state.directory.evict(body.party, account_id=body.account_id)


@internal_router.post("/first-transfers", response_model=Transaction, status_code=201, responses=_PROBLEMS)
async def first_transfer(
    request: Request, body: FirstTransferCreate, principal: CurrentPrincipal
) -> JSONResponse:
    """The ARS makes MO blocks ITMOs in the IR; idempotent by `operation_id` (same body: same answer)."""
    return _answer(await _ledgers(request).first_transfer(principal, body))
