"""HTTP surface of the inter-registry protocol (INTERREGISTRY §2.1, §3–§6): `/v1/interregistry/...`.

Registry→IR messages are POSTed as the envelope itself (the raw JSON document is what the signature
covers, so the body is read as bytes and judged by the service's acceptance pipeline, never by FastAPI's
own validation), with `Idempotency-Key` = `message_id` and the detached JWS in `IRX-Signature`.
`version`, `codes` and `jwks.json` are public (the gateway lets them through without a token).
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from contracts.interregistry import (
    CODE_CATALOGUE,
    TRANSFER_ID_PATTERN,
    CodeDefinition,
    HelloResponse,
    InboxAcked,
    InboxPage,
    IrxVersionInfo,
    KeyRevocation,
    RegistryActivate,
    RegistryCreate,
    RegistryKeyPage,
    RegistryLifecycleNote,
    RegistryPatch,
    RegistryPublic,
    RegistryRecord,
    TransferDecision,
)
from contracts.pagination import Page
from contracts.problems import PROBLEM_MEDIA_TYPE
from contracts.roles import Role
from kit.auth import CurrentPrincipal, require_roles
from kit.pagination import CursorQuery, LimitQuery
from services.transactions.interregistry.service import Answer, Interregistry, etag
from services.transactions.interregistry.transfers import Transfers
from services.transactions.interregistry.views import MessageLogPage

__all__ = ["router"]

router = APIRouter(prefix="/v1/interregistry", tags=["interregistry"])

TransferIdPath = Annotated[
    str, Path(pattern=TRANSFER_ID_PATTERN, description="Transfer id (registry-own id)")
]
RegistryIdPath = Annotated[str, Path(pattern=r"^[A-Z]{3}[0-9]{2}$", description="Registry id (AAA##)")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
IrxSignature = Annotated[
    str | None, Header(alias="IRX-Signature", max_length=4096, description="Detached JWS over the envelope")
]
_ENVELOPE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "An IRX envelope (contracts.interregistry.IrxEnvelope)",
                }
            }
        },
    }
}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"description": "Problem (RFC 9457)", "content": {PROBLEM_MEDIA_TYPE: {}}} for code in codes
    }


def _service(request: Request) -> Interregistry:
    service: Interregistry = request.app.state.interregistry
    return service


def _transfers(request: Request) -> Transfers:
    transfers: Transfers = request.app.state.transfers
    return transfers


def _answer(answer: Answer) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    media = PROBLEM_MEDIA_TYPE if answer.status >= 400 else "application/json"
    return JSONResponse(answer.body, status_code=answer.status, headers=headers, media_type=media)


# ---- public --------------------------------------------------------------------------------------------------


@router.get("/version", response_model=IrxVersionInfo)
async def version() -> IrxVersionInfo:
    """The IRX versions this IR reads and writes (public)."""
    return IrxVersionInfo()


@router.get("/codes", response_model=Page[CodeDefinition])
async def codes() -> Page[CodeDefinition]:
    """The numbered response-code catalogue (§7, public); codes are never renumbered."""
    return Page[CodeDefinition](items=list(CODE_CATALOGUE), next_cursor=None)


@router.get("/jwks.json")
async def jwks(request: Request) -> JSONResponse:
    """The IR's message-signing public keys (public; separate from the token keys)."""
    document = _service(request).relay.signer.jwks()
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})


# ---- registry records (§2.1) ---------------------------------------------------------------------------------


@router.post(
    "/registries",
    response_model=RegistryRecord,
    status_code=201,
    dependencies=[require_roles(Role.SECRETARIAT_ADMIN)],
    responses=_problems(403, 409, 422),
)
async def create_registry(request: Request, response: Response, body: RegistryCreate) -> RegistryRecord:
    """Register a connected national registry (status `onboarding`). 409 if an IR section or another
    registry uses the id."""
    record = await _service(request).create_registry(body)
    response.headers["ETag"] = etag(record.version)
    response.headers["Location"] = f"/v1/interregistry/registries/{record.registry_id}"
    return record


@router.get("/registries", response_model=Page[RegistryRecord | RegistryPublic])
async def list_registries(
    request: Request, principal: CurrentPrincipal, limit: LimitQuery = 100, cursor: CursorQuery = None
) -> Page[RegistryRecord | RegistryPublic]:
    """Every registry: public fields for any token; everything for the Secretariat and the registry itself."""
    return await _service(request).list_registries(principal, limit=limit, cursor=cursor)


@router.get(
    "/registries/{registry_id}", response_model=RegistryRecord | RegistryPublic, responses=_problems(404)
)
async def get_registry(
    request: Request, response: Response, principal: CurrentPrincipal, registry_id: RegistryIdPath
) -> RegistryRecord | RegistryPublic:
    """One registry; the full record (with its `ETag`) for the Secretariat and the registry itself."""
    record = await _service(request).get_registry(principal, registry_id)
    if isinstance(record, RegistryRecord):
        response.headers["ETag"] = etag(record.version)
    return record


@router.patch(
    "/registries/{registry_id}",
    response_model=RegistryRecord,
    responses=_problems(403, 404, 412, 422, 428),
)
async def patch_registry(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    registry_id: RegistryIdPath,
    body: RegistryPatch,
    if_match: Annotated[str | None, Header(max_length=200, description="The record's current ETag")] = None,
) -> RegistryRecord:
    """Change a record (secretariat_admin; the registry itself only `jwks_url`, `webhook_url`); `If-Match`."""
    record = await _service(request).patch_registry(principal, registry_id, if_match, body)
    response.headers["ETag"] = etag(record.version)
    return record


_SECRETARIAT = [require_roles(Role.SECRETARIAT_ADMIN)]
_LIFECYCLE_PROBLEMS = _problems(403, 404, 409, 422)


async def _transition(
    request: Request,
    response: Response,
    registry_id: str,
    action: str,
    note: str | None,
    run: str | None = None,
) -> RegistryRecord:
    record = await _service(request).transition(registry_id, action, note=note, conformance_run_id=run)
    response.headers["ETag"] = etag(record.version)
    return record


@router.post(
    "/registries/{registry_id}/test",
    response_model=RegistryRecord,
    dependencies=_SECRETARIAT,
    responses=_LIFECYCLE_PROBLEMS,
)
async def test_registry(
    request: Request,
    response: Response,
    registry_id: RegistryIdPath,
    body: Annotated[RegistryLifecycleNote | None, Body()] = None,
) -> RegistryRecord:
    """onboarding → testing (conformance in the sandbox)."""
    return await _transition(request, response, registry_id, "test", body.note if body else None)


@router.post(
    "/registries/{registry_id}/activate",
    response_model=RegistryRecord,
    dependencies=_SECRETARIAT,
    responses=_LIFECYCLE_PROBLEMS,
)
async def activate_registry(
    request: Request,
    response: Response,
    registry_id: RegistryIdPath,
    body: Annotated[RegistryActivate | None, Body()] = None,
) -> RegistryRecord:
    """testing → active; a production registry needs a passing `conformance_run_id`."""
    body = body or RegistryActivate()
    return await _transition(request, response, registry_id, "activate", body.note, body.conformance_run_id)


@router.post(
    "/registries/{registry_id}/suspend",
    response_model=RegistryRecord,
    dependencies=_SECRETARIAT,
    responses=_LIFECYCLE_PROBLEMS,
)
async def suspend_registry(
    request: Request,
    response: Response,
    registry_id: RegistryIdPath,
    body: Annotated[RegistryLifecycleNote | None, Body()] = None,
) -> RegistryRecord:
    """active → suspended: no new transfers; final statuses, reconciliation and reads go on."""
    return await _transition(request, response, registry_id, "suspend", body.note if body else None)


@router.post(
    "/registries/{registry_id}/reactivate",
    response_model=RegistryRecord,
    dependencies=_SECRETARIAT,
    responses=_LIFECYCLE_PROBLEMS,
)
async def reactivate_registry(
    request: Request,
    response: Response,
    registry_id: RegistryIdPath,
    body: Annotated[RegistryLifecycleNote | None, Body()] = None,
) -> RegistryRecord:
    """suspended → active."""
    return await _transition(request, response, registry_id, "reactivate", body.note if body else None)


@router.post(
    "/registries/{registry_id}/disconnect",
    response_model=RegistryRecord,
    dependencies=_SECRETARIAT,
    responses=_LIFECYCLE_PROBLEMS,
)
async def disconnect_registry(
    request: Request,
    response: Response,
    registry_id: RegistryIdPath,
    body: Annotated[RegistryLifecycleNote | None, Body()] = None,
) -> RegistryRecord:
    """Any non-terminal status → disconnected (terminal)."""
    return await _transition(request, response, registry_id, "disconnect", body.note if body else None)


ClientIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._~-]{1,64}$", description="OAuth2 client id")]
KidPath = Annotated[str, Path(min_length=1, max_length=200, description="Key id (`kid`) of the registry")]


@router.put(
    "/registries/{registry_id}/clients/{client_id}",
    response_model=RegistryRecord,
    dependencies=_SECRETARIAT,
    responses=_problems(403, 404),
)
async def list_registry_client(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    registry_id: RegistryIdPath,
    client_id: ClientIdPath,
) -> RegistryRecord:
    """List an OAuth2 client on the record: only listed clients speak for the registry (§2.2, else 1004)."""
    record = await _service(request).set_client(principal, registry_id, client_id, listed=True)
    response.headers["ETag"] = etag(record.version)
    return record


@router.delete(
    "/registries/{registry_id}/clients/{client_id}",
    response_model=RegistryRecord,
    dependencies=_SECRETARIAT,
    responses=_problems(403, 404),
)
async def unlist_registry_client(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    registry_id: RegistryIdPath,
    client_id: ClientIdPath,
) -> RegistryRecord:
    """Take a client off the record: its messages are refused (1004) from now on (tokens may still exist)."""
    record = await _service(request).set_client(principal, registry_id, client_id, listed=False)
    response.headers["ETag"] = etag(record.version)
    return record


@router.get("/registries/{registry_id}/keys", response_model=RegistryKeyPage, responses=_problems(403, 404))
async def registry_keys(
    request: Request, principal: CurrentPrincipal, registry_id: RegistryIdPath
) -> RegistryKeyPage:
    """The keys the IR verified the registry's messages with, and revoked kids (Secretariat, auditors, the
    registry itself)."""
    return await _service(request).keys(principal, registry_id)


@router.post(
    "/registries/{registry_id}/keys/{kid}/revoke",
    response_model=RegistryKeyPage,
    dependencies=_SECRETARIAT,
    responses=_problems(403, 404, 422),
)
async def revoke_registry_key(
    request: Request,
    principal: CurrentPrincipal,
    registry_id: RegistryIdPath,
    kid: KidPath,
    body: KeyRevocation,
) -> RegistryKeyPage:
    """Revoke a signing key (§2.3): messages signed with the kid are refused 1006 from `revoked_at` on.
    An earlier revocation stands; a kid never used yet is refused when it first appears."""
    return await _service(request).revoke_key(principal, registry_id, kid, body)


# ---- protocol (§3, §4) ---------------------------------------------------------------------------------------


@router.post(
    "/hello",
    response_model=HelloResponse,
    openapi_extra=_ENVELOPE_BODY,
    responses=_problems(400, 401, 403, 409, 422),
)
async def hello(
    request: Request,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """`hello` envelope (registry): version negotiation, clocks, and where to resume (seq, inbox)."""
    answer = await _service(request).hello(
        principal, await request.body(), idempotency_key=idempotency_key, signature=signature
    )
    return _answer(answer)


@router.get("/inbox", response_model=InboxPage, responses=_problems(403, 404))
async def read_inbox(
    request: Request,
    principal: CurrentPrincipal,
    after: Annotated[int, Query(ge=0, description="Last position read; any earlier one replays")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """The registry's own inbox after a position: IR-signed envelopes at consecutive positions from 1."""
    page = await _service(request).read_inbox(principal, after=after, limit=limit)
    return JSONResponse(page)


@router.post(
    "/inbox/ack",
    response_model=InboxAcked,
    openapi_extra=_ENVELOPE_BODY,
    responses=_problems(400, 401, 403, 409, 422),
)
async def ack_inbox(
    request: Request,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """`inbox.ack` envelope `{"up_to"}` (registry): monotonic; beyond the last position → 422."""
    answer = await _service(request).ack(
        principal, await request.body(), idempotency_key=idempotency_key, signature=signature
    )
    return _answer(answer)


@router.get("/messages", response_model=MessageLogPage, responses=_problems(403))
async def messages(
    request: Request,
    principal: CurrentPrincipal,
    registry: Annotated[str | None, Query(pattern=r"^[A-Z]{3}[0-9]{2}$")] = None,
    direction: Literal["registry_to_ir", "ir_to_registry"] | None = None,
    after: Annotated[int, Query(ge=0, description="`next_cursor` of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MessageLogPage:
    """The message log both ways (secretariat_admin, auditor; a registry its own)."""
    return await _service(request).messages(
        principal, registry_id=registry, direction=direction, after=after, limit=limit
    )


# ---- transfers (§5, §6) --------------------------------------------------------------------------------------


@router.post(
    "/transfers",
    response_model=TransferDecision,
    status_code=201,
    openapi_extra=_ENVELOPE_BODY,
    responses=_problems(400, 401, 403, 409, 422),
)
async def propose_transfer(
    request: Request,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """`transfer.proposal` envelope (registry): units into an IR holding account. 201 `completed`, 202
    `awaiting_approval` (the section accepts manually: units `pending_in` until its approver decides), or 422
    `…/transfer-rejected` with the codes (recorded; the same message or content gets the same answer)."""
    answer = await _transfers(request).incoming(
        principal, await request.body(), idempotency_key=idempotency_key, signature=signature
    )
    return _answer(answer)


@router.post(
    "/transfers/{transfer_id}/response",
    response_model=TransferDecision,
    openapi_extra=_ENVELOPE_BODY,
    responses=_problems(400, 401, 403, 404, 409, 422),
)
async def respond_to_transfer(
    request: Request,
    principal: CurrentPrincipal,
    transfer_id: TransferIdPath,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """`transfer.response` envelope (registry): accept or reject an IR proposal. 200 with the final status;
    409 `…/transfer-final` (6003, `transfer_status`) when the deadline or a cancel decided first."""
    answer = await _transfers(request).respond(
        principal, transfer_id, await request.body(), idempotency_key=idempotency_key, signature=signature
    )
    return _answer(answer)


@router.post(
    "/transfers/{transfer_id}/cancel",
    response_model=TransferDecision,
    openapi_extra=_ENVELOPE_BODY,
    responses=_problems(400, 401, 403, 409, 422),
)
async def cancel_transfer(
    request: Request,
    principal: CurrentPrincipal,
    transfer_id: TransferIdPath,
    idempotency_key: IdempotencyKey = None,
    signature: IrxSignature = None,
) -> JSONResponse:
    """`transfer.cancel` envelope (sender registry): an id the IR never saw becomes a `cancelled` tombstone
    (a later proposal with it gets 6002); a decided transfer answers 409 6003 with its status."""
    answer = await _transfers(request).cancel_incoming(
        principal, transfer_id, await request.body(), idempotency_key=idempotency_key, signature=signature
    )
    return _answer(answer)


@router.get("/transfers", responses=_problems(403))
async def list_transfers(
    request: Request,
    principal: CurrentPrincipal,
    registry: Annotated[str | None, Query(pattern=r"^[A-Z]{3}[0-9]{2}$")] = None,
    direction: Literal["registry_to_ir", "ir_to_registry"] | None = None,
    status: Annotated[str | None, Query(max_length=24)] = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """Transfers in id order: a registry its own, IR Parties their accounts', the Secretariat and auditors all."""
    return await _transfers(request).list(
        principal, registry_id=registry, direction=direction, status=status, limit=limit, cursor=cursor
    )


@router.get("/transfers/{transfer_id}", responses=_problems(404))
async def get_transfer(
    request: Request, principal: CurrentPrincipal, transfer_id: TransferIdPath
) -> dict[str, Any]:
    """One transfer as the IR records it (the registry its own; the Secretariat and auditors any)."""
    return await _transfers(request).get(principal, transfer_id)
