"""HTTP of reconciliation (INTERREGISTRY §8) and its wiring into the transactions app (`install`).

`POST /v1/interregistry/reconciliations` takes either a plain `{"registry_id"}` from the Secretariat or a
`reconciliation.start` envelope from the registry itself (the message pipeline, so it is signed, sequenced
and logged); stage answers are envelopes POSTed to `…/{id}/totals|blocks|audit-trail`.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from contracts.interregistry import (
    ReconciliationResolve,
    ReconciliationResult,
    ReconciliationStage,
    ReconciliationStart,
    ReconciliationStatus,
)
from contracts.problems import PROBLEM_MEDIA_TYPE
from contracts.roles import Role
from kit.auth import CurrentPrincipal, require_roles
from kit.errors import Unprocessable
from services.transactions.config import Settings
from services.transactions.interregistry.reconciliation import Reconciliations, schedule_from_environment
from services.transactions.interregistry.service import Answer

__all__ = ["install", "router"]

router = APIRouter(prefix="/v1/interregistry/reconciliations", tags=["interregistry"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
IrxSignature = Annotated[
    str | None, Header(alias="IRX-Signature", max_length=4096, description="Detached JWS over the envelope")
]
ReconciliationIdPath = Annotated[str, Path(max_length=40, description="Reconciliation id")]
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"description": "Problem (RFC 9457)", "content": {PROBLEM_MEDIA_TYPE: {}}}
    for code in (400, 401, 403, 404, 409, 422)
}


def _reconciliations(request: Request) -> Reconciliations:
    service: Reconciliations = request.app.state.reconciliations
    return service


def _answer(answer: Answer) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    media = PROBLEM_MEDIA_TYPE if answer.status >= 400 else "application/json"
    return JSONResponse(answer.body, status_code=answer.status, headers=headers, media_type=media)


@router.post("", status_code=201, responses=_PROBLEMS)
async def start(
    request: Request,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """Start a reconciliation: `{"registry_id"}` (secretariat_admin) or a `reconciliation.start` envelope
    (the registry itself) → 201 `{"reconciliation_id", "status", "cutoff_position", "cutoff_seq",
    "respond_by"}`; one already open → 409 7004."""
    service = _reconciliations(request)
    raw = await request.body()
    if principal.has(Role.REGISTRY) and principal.registry_id:
        answer = await service.start_by_registry(
            principal, raw, idempotency_key=idempotency_key, signature=signature
        )
        return _answer(answer)
    try:
        body = ReconciliationStart.model_validate(json.loads(raw or b"null"))
    except (ValueError, ValidationError) as exc:
        raise Unprocessable(f"Body must be {{'registry_id': ...}}: {exc}", slug="invalid-body") from None
    return JSONResponse(await service.start_by_secretariat(principal, body), status_code=201)


@router.get("", responses=_PROBLEMS)
async def list_reconciliations(
    request: Request,
    principal: CurrentPrincipal,
    registry: Annotated[str | None, Query(pattern=r"^[A-Z]{3}[0-9]{2}$")] = None,
    status: ReconciliationStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Newest first (secretariat_admin, auditor; a registry its own)."""
    page = await _reconciliations(request).list_reconciliations(
        principal, registry_id=registry, status=status.value if status else None, limit=limit
    )
    return JSONResponse(page)


@router.get("/{reconciliation_id}", responses=_PROBLEMS)
async def get_reconciliation(
    request: Request, principal: CurrentPrincipal, reconciliation_id: ReconciliationIdPath
) -> JSONResponse:
    """Status, cut-off, per-key totals both sides, inconsistent ranges, diagnoses, resolution."""
    return JSONResponse(await _reconciliations(request).get(principal, reconciliation_id))


async def _stage(
    request: Request,
    principal: CurrentPrincipal,
    reconciliation_id: str,
    stage: ReconciliationStage,
    idempotency_key: str | None,
    signature: str | None,
) -> JSONResponse:
    answer = await _reconciliations(request).answer(
        principal,
        reconciliation_id,
        stage,
        await request.body(),
        idempotency_key=idempotency_key,
        signature=signature,
    )
    return _answer(answer)


@router.post("/{reconciliation_id}/totals", response_model=ReconciliationResult, responses=_PROBLEMS)
async def answer_totals(
    request: Request,
    principal: CurrentPrincipal,
    reconciliation_id: ReconciliationIdPath,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """`reconciliation.totals` envelope (registry): stage 1; 422 7005 when not awaited."""
    return await _stage(
        request, principal, reconciliation_id, ReconciliationStage.TOTALS, idempotency_key, signature
    )


@router.post("/{reconciliation_id}/blocks", response_model=ReconciliationResult, responses=_PROBLEMS)
async def answer_blocks(
    request: Request,
    principal: CurrentPrincipal,
    reconciliation_id: ReconciliationIdPath,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """`reconciliation.blocks` envelope (registry): stage 2."""
    return await _stage(
        request, principal, reconciliation_id, ReconciliationStage.BLOCKS, idempotency_key, signature
    )


@router.post("/{reconciliation_id}/audit-trail", response_model=ReconciliationResult, responses=_PROBLEMS)
async def answer_audit_trail(
    request: Request,
    principal: CurrentPrincipal,
    reconciliation_id: ReconciliationIdPath,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """`reconciliation.audit_trail` envelope (registry): stage 3."""
    return await _stage(
        request, principal, reconciliation_id, ReconciliationStage.AUDIT_TRAIL, idempotency_key, signature
    )


@router.post(
    "/{reconciliation_id}/resolve",
    response_model=ReconciliationResult,
    dependencies=[require_roles(Role.SECRETARIAT_ADMIN)],
    responses=_PROBLEMS,
)
async def resolve(
    request: Request,
    principal: CurrentPrincipal,
    reconciliation_id: ReconciliationIdPath,
    body: ReconciliationResolve,
) -> ReconciliationResult:
    """Manual resolution (secretariat_admin): freezes lifted, `completed_with_manual_intervention`."""
    return await _reconciliations(request).resolve(principal, reconciliation_id, body)


def install(app: FastAPI, settings: Settings) -> None:
    """Wire reconciliation into the transactions app: `app.state.reconciliations`, the routes, and the
    schedule loop (deadlines every minute, the daily start) for the app's lifetime."""
    app.state.reconciliations = Reconciliations(
        app.state.interregistry, daily_at=schedule_from_environment(settings.environment.value)
    )
    app.include_router(router)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        # Wrapping the app's lifespan keeps app.py's hooks as they are (one include line there).
        async with inner(application) as state:
            application.state.reconciliations.start()
            try:
                yield state
            finally:
                await application.state.reconciliations.stop()

    app.router.lifespan_context = lifespan
