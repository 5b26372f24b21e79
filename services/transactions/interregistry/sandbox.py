"""Sandbox-only endpoints of the IR for the conformance kit (INTERREGISTRY §11): `/v1/interregistry/sandbox/…`.

They answer 404 when the IR runs in production (`settings.irx_env`), whatever the caller: a production app
does not mount them, and each handler checks again. The caller is the
Secretariat or the registry under test itself (its own registry id only): the kit runs with the registry's
sandbox client, so it must be able to drive the IR side of a case without a Secretariat token.

- `POST …/sandbox/outgoing`: a test transfer from an IR Party section account to the registry, through the
  ledger's normal paths. With `mint`, `quantity` new units are first made ITMOs in `from_account` by the
  ledger's own first-transfer use case (`Ledgers.first_transfer`, as the ARS calls it: journal, issued
  ranges, events — nothing is written behind the ledger's back); then the transfer is proposed by the
  ordinary outgoing use case (`Transfers.propose`, as `POST /v1/transactions` with `to_registry` does) in the
  name of a synthetic initiator of the section's Party. `blocks` names exact serials instead (a return,
  case 157). `forge_blocks` (case 158) replaces the blocks *announced in the proposal* by the given ones while
  the reservation stays real, so the IR's ledger balances whatever the registry answers.
- `POST …/sandbox/transfers/{id}/expire`: `respond_by` of an open outgoing transfer becomes now and the
  terminator runs at once (its usual compare-and-set decides: `terminated`, 6001).
- `POST …/sandbox/faults`: arm faults in the IR's answers to one registry, for its next `count` matching POSTs
  (optionally of one message type): `http_503` refuses before processing, `drop_response` processes and
  commits, then answers 503 instead; `duplicate_inbox` puts the next sandbox proposal in the inbox twice (a new
  message at a new position, same content); `phantom_transfer` records, at once, `count` completed outgoing transfers the registry never
  saw (proposal and decision through the ledger's use cases, the inbox silenced for that call; case 302).
- Reads and one more lever for the kit's pass rules: `GET …/faults` (what is armed, each hit message and how
  often it was POSTed again), `POST …/transfers/{id}/cancel` (the IR initiator's cancel, case 159),
  `GET …/units` (the IR's blocks over a serial range), `GET …/transfers/{id}/actions` (AEF actions, case 160).
- `POST …/sandbox/sink`: units of a test section that left the IR, completed, to the section Party's sink
  registry `<Party>99` (a sandbox record made on first use, no keys, no client), so the registry under test
  can propose units last sent elsewhere (case 162, 4004). `GET …/sandbox/settings`: the IR settings the kit
  must follow (the JWKS refetch interval that case 102's key rotation waits out).

Faults live in this process's memory (one transactions process per sandbox): they are test instruments.
"""

import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update

from contracts.accounts import AccountType
from contracts.identifiers import InvalidUniqueId, parse_unique_id
from contracts.interregistry import (
    TRANSFER_ID_PATTERN,
    IrxEnvironment,
    IrxMessageType,
    RegistryCreate,
    TransferBlock,
    TransferProposal,
    TransferStatus,
)
from contracts.problems import PROBLEM_MEDIA_TYPE
from contracts.roles import Role
from contracts.transactions import BlockRange, FirstTransferCreate, TransactionCreate
from kit.auth import CurrentPrincipal, Principal
from kit.errors import Conflict, Forbidden, NotFound, Unprocessable
from services.transactions.interregistry import repository
from services.transactions.interregistry.models import DIRECTION_OUT, irx_message, irx_transfer
from services.transactions.interregistry.transfers import Transfers
from services.transactions.models import blocks, issued_ranges, transactions
from services.transactions.repository import transaction_row

__all__ = ["FaultInjector", "install", "router"]

log = structlog.get_logger(__name__)

PREFIX = "/v1/interregistry/sandbox"
router = APIRouter(prefix=PREFIX, tags=["interregistry sandbox"])

FaultKind = Literal["drop_response", "http_503", "duplicate_inbox", "phantom_transfer"]
#: Blocks a sandbox proposal announces instead of the reserved ones (case 158), for the current call only.
_FORGED: ContextVar[list[TransferBlock] | None] = ContextVar("irx_sandbox_forged_blocks", default=None)
#: While set, nothing is written to any registry's inbox (fault phantom_transfer), for the current call only.
_SILENT: ContextVar[bool] = ContextVar("irx_sandbox_silent_inbox", default=False)


class Mint(BaseModel):
    """New units for the test: `quantity` serials of this CA and vintage, origin the section's registry."""

    model_config = ConfigDict(extra="forbid")
    ca_id: str = Field(pattern=r"^[A-Z0-9]{6}$")
    vintage: int = Field(ge=2021, le=2100)
    purposes: Literal["NDC", "OIMP", "NDC and OIMP"] = "NDC and OIMP"


class SandboxOutgoing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    registry_id: str = Field(pattern=r"^[A-Z]{3}[0-9]{2}$")
    from_account: str = Field(
        min_length=1, max_length=64, description="an IR holding account of a test section"
    )
    to_account: str = Field(min_length=1, max_length=64, description="the registry's own account id")
    quantity: int | None = Field(default=None, ge=1, le=1_000_000)
    blocks: list[BlockRange] | None = Field(default=None, min_length=1, max_length=100)
    mint: Mint | None = None
    forge_blocks: list[TransferBlock] | None = Field(default=None, min_length=1, max_length=100)
    note: str | None = Field(default=None, max_length=500)


class SandboxFault(BaseModel):
    model_config = ConfigDict(extra="forbid")
    registry_id: str = Field(pattern=r"^[A-Z]{3}[0-9]{2}$")
    fault: FaultKind
    count: int = Field(default=1, ge=0, le=1000, description="0 disarms what is left of this fault")
    message_type: str | None = Field(
        default=None, max_length=64, description="only POSTs of this envelope type (e.g. transfer.response)"
    )
    #: phantom_transfer: what the phantom transfers take (each `quantity` units, new with `mint`).
    from_account: str | None = Field(default=None, max_length=64)
    to_account: str | None = Field(default=None, max_length=64)
    quantity: int = Field(default=1, ge=1, le=1_000_000)
    mint: Mint | None = None


@dataclass
class _Armed:
    fault: str
    remaining: int
    message_type: str | None
    hits: list[str] = field(default_factory=list)


class FaultInjector:
    """Armed faults per registry; `take` consumes one matching fault."""

    def __init__(self) -> None:
        self.armed: dict[str, list[_Armed]] = {}
        #: Per registry, the messages a fault hit and how often each was POSTed again afterwards.
        self.hits: dict[str, dict[str, dict[str, Any]]] = {}

    def arm(self, registry_id: str, fault: str, count: int, message_type: str | None) -> None:
        self.armed.setdefault(registry_id, []).append(_Armed(fault, count, message_type))

    def disarm(self, registry_id: str, fault: str) -> None:
        for item in self.armed.get(registry_id, []):
            if item.fault == fault:
                item.remaining = 0

    def any_armed(self) -> bool:
        return any(item.remaining > 0 for items in self.armed.values() for item in items)

    def take(self, registry_id: str, fault: str, message_type: str | None) -> bool:
        for item in self.armed.get(registry_id, []):
            if item.fault != fault or item.remaining <= 0:
                continue
            if item.message_type is not None and item.message_type != message_type:
                continue
            item.remaining -= 1
            return True
        return False

    def hit(self, registry_id: str, fault: str, message_id: str | None) -> None:
        if message_id:
            self.hits.setdefault(registry_id, {})[message_id] = {"fault": fault, "posted_again": 0}

    def watching(self) -> bool:
        return bool(self.hits)

    def seen(self, registry_id: str, message_id: str | None) -> bool:
        """Count a POST of a message a fault hit before; True when it is one."""
        entry = self.hits.get(registry_id, {}).get(message_id or "")
        if entry is None:
            return False
        entry["posted_again"] += 1
        return True

    def hits_of(self, registry_id: str) -> list[dict[str, Any]]:
        return [{"message_id": key, **value} for key, value in self.hits.get(registry_id, {}).items()]

    def status(self, registry_id: str) -> list[dict[str, Any]]:
        return [
            {"fault": item.fault, "remaining": item.remaining, "message_type": item.message_type}
            for item in self.armed.get(registry_id, [])
        ]


def _transfers(request: Request) -> Transfers:
    transfers: Transfers = request.app.state.transfers
    return transfers


def _faults(request: Request) -> FaultInjector:
    injector: FaultInjector = request.app.state.irx_faults
    return injector


def _guard(request: Request, principal: Principal, registry_id: str) -> None:
    """404 in production (the endpoints do not exist there); the Secretariat or the registry itself."""
    if _transfers(request).irx.env is IrxEnvironment.PRODUCTION:
        raise NotFound("Not found.")
    if principal.is_secretariat:
        return
    if principal.has(Role.REGISTRY) and principal.registry_id == registry_id:
        return
    raise Forbidden("Sandbox test endpoints: the Secretariat, or the registry under test for itself.")


async def _sandbox_registry(transfers: Transfers, registry_id: str) -> Any:
    async with transfers.db.read() as session:
        row = await repository.get_registry(await session.connection(), registry_id)
    if row is None:
        raise NotFound(f"No registry {registry_id}.")
    if row["environment"] != IrxEnvironment.SANDBOX.value:
        raise Unprocessable(f"Registry {registry_id} is not a sandbox record.", slug="not-sandbox")
    return row


def _party_principal(party: str, role: Role, name: str) -> Principal:
    # A synthetic caller for the ledger's own use cases: the sandbox acts for the test section, as its
    # initiator (propose) or as the ARS (first transfer) would, and the journal names it.
    return Principal(client_id=f"sandbox:{name}", party=party if role is not Role.SERVICE else None,
                     roles=frozenset({role}))  # fmt: skip


async def _mint(transfers: Transfers, section_registry: str, party: str, account: str, mint: Mint, quantity: int,
                caller: str) -> list[BlockRange]:  # fmt: skip
    """`quantity` new ITMOs in `account` through the ledger's first-transfer use case."""
    async with transfers.db.read() as session:
        top = (
            await session.execute(
                select(func.max(issued_ranges.c.last_serial)).where(
                    issued_ranges.c.ca_id == mint.ca_id,
                    issued_ranges.c.origin_registry_id == section_registry,
                )
            )
        ).scalar()
    first = int(top or 0) + 1
    last = first + quantity - 1
    body = FirstTransferCreate.model_validate(
        {
            "operation_id": f"sandbox-{uuid.uuid4().hex}",
            "first_transferring_party": party,
            "authorization_id": f"{party}-AUTH-SANDBOX",
            "authorization_version": 1,
            "purposes": mint.purposes,
            "first_transfer_definition": "Authorisation",
            "to_account": account,
            "initiated_by": caller,
            "note": "conformance sandbox test units",
            "blocks": [
                {
                    "ca_id": mint.ca_id,
                    "origin_registry_id": section_registry,
                    "first": first,
                    "last": last,
                    "vintage": mint.vintage,
                    "mitigation_type": "Emission reductions",
                    "sector": "Energy",
                    "activity_type": "Solar",
                }
            ],
        }
    )
    answer = await transfers.ledgers.first_transfer(_party_principal(party, Role.SERVICE, "ars"), body)
    if answer.status != 201:
        raise Unprocessable(
            f"The test units could not be made: {json.dumps(answer.body)[:500]}", slug="sandbox-mint-failed"
        )
    ident = f"{mint.ca_id}-{section_registry}-{party}"
    return [
        BlockRange(
            unique_id_first=f"{ident}-{first}-{mint.vintage}", unique_id_last=f"{ident}-{last}-{mint.vintage}"
        )
    ]


async def _duplicate_proposal(transfers: Transfers, registry_row: Any, transfer_id: str) -> str | None:
    """The proposal again at a new inbox position (a new message id, the same content): fault duplicate_inbox."""
    async with transfers.db.connect() as connection:
        stored = (
            (
                await connection.execute(
                    select(irx_message.c.envelope).where(
                        irx_message.c.transfer_id == transfer_id,
                        irx_message.c.direction == DIRECTION_OUT,
                        irx_message.c.type == IrxMessageType.TRANSFER_PROPOSAL.value,
                    )
                )
            )
            .scalars()
            .first()
        )
        if stored is None:
            return None
        proposal = TransferProposal.model_validate(stored["body"])
        message_id = await transfers.irx.enqueue(
            connection, registry_row, IrxMessageType.TRANSFER_PROPOSAL, proposal, transfer_id=transfer_id
        )
    transfers.irx.relay.notify()
    return message_id


@router.post("/outgoing", status_code=201)
async def sandbox_outgoing(
    request: Request, principal: CurrentPrincipal, body: SandboxOutgoing
) -> JSONResponse:
    """A test transfer from a test section's account to the registry (see the module docstring)."""
    return await _outgoing_answer(request, principal, body)


async def _outgoing_answer(request: Request, principal: Principal, body: SandboxOutgoing) -> JSONResponse:
    _guard(request, principal, body.registry_id)
    return await _propose_to(request, principal, body)


async def _propose_to(request: Request, principal: Principal, body: SandboxOutgoing) -> JSONResponse:
    """The proposal of `_outgoing_answer` to `body.registry_id`, whose caller the handler already guarded."""
    transfers = _transfers(request)
    registry_row = await _sandbox_registry(transfers, body.registry_id)
    account = await transfers.directory.account(body.from_account)
    if account is None or account.type is not AccountType.HOLDING:
        raise Unprocessable(f"{body.from_account} is not an IR holding account.", slug="sandbox-account")
    if (body.blocks is None) == (body.quantity is None and body.mint is None):
        raise Unprocessable("Give blocks, or quantity (with mint for new units).", slug="sandbox-body")
    blocks = body.blocks
    if body.mint is not None:
        if body.quantity is None:
            raise Unprocessable("mint needs quantity.", slug="sandbox-body")
        blocks = await _mint(transfers, account.registry_id, account.party, body.from_account, body.mint,
                             body.quantity, principal.client_id)  # fmt: skip
    create = TransactionCreate.model_validate(
        {
            "type": "transfer",
            "from_account": body.from_account,
            "to_registry": body.registry_id,
            "to_account": body.to_account,
            **({"blocks": [b.model_dump() for b in blocks]} if blocks else {"quantity": body.quantity}),
            **({"note": body.note} if body.note else {}),
        }
    )
    token = _FORGED.set(list(body.forge_blocks) if body.forge_blocks else None)
    try:
        answer = await transfers.propose(
            _party_principal(account.party, Role.INITIATOR, "initiator"), create, uuid.uuid4().hex
        )
    finally:
        _FORGED.reset(token)
    document = dict(answer.body)
    if answer.status == 201:
        transfer_id = document["interregistry"]["transfer_id"]
        if _faults(request).take(body.registry_id, "duplicate_inbox", IrxMessageType.TRANSFER_PROPOSAL.value):
            document["duplicated_message_id"] = await _duplicate_proposal(
                transfers, registry_row, transfer_id
            )
        document["transfer_id"] = transfer_id
        log.info("irx_sandbox_outgoing", transfer_id=transfer_id, registry_id=body.registry_id)
    media = PROBLEM_MEDIA_TYPE if answer.status >= 400 else "application/json"
    return JSONResponse(document, status_code=answer.status, media_type=media)


@router.post("/transfers/{transfer_id}/expire")
async def sandbox_expire(
    request: Request,
    principal: CurrentPrincipal,
    transfer_id: Annotated[str, Path(pattern=TRANSFER_ID_PATTERN)],
) -> dict[str, Any]:
    """`respond_by` of an open outgoing transfer becomes now; the terminator runs (its CAS decides)."""
    transfers = _transfers(request)
    await _outgoing(transfers, request, principal, transfer_id)
    now = transfers.clock()
    async with transfers.db.connect() as connection:
        await connection.execute(
            update(irx_transfer)
            .where(
                irx_transfer.c.transfer_id == transfer_id, irx_transfer.c.status == TransferStatus.SENT.value
            )
            .values(respond_by=now, updated_at=now)
        )
    await transfers.terminate_due(now)
    return await transfers.get(principal, transfer_id)


async def _phantom(request: Request, principal: Principal, body: SandboxFault) -> str:
    """A completed outgoing transfer the registry never saw (case 302): the ordinary proposal and the final
    decision (`Transfers.propose`, then `_finish_outgoing` as an accept would), with the inbox silenced for
    this call, so neither `transfer.proposal` nor `transfer.completed` reaches the registry. The IR's ledger
    stays balanced (the units are `transferred_out` to the registry); only the pair ledger disagrees."""
    if not body.from_account or not body.to_account:
        raise Unprocessable("phantom_transfer needs from_account and to_account.", slug="sandbox-body")
    outgoing = SandboxOutgoing(
        registry_id=body.registry_id,
        from_account=body.from_account,
        to_account=body.to_account,
        quantity=body.quantity,
        mint=body.mint,
        note="sandbox phantom transfer",
    )
    transfers = _transfers(request)
    token = _SILENT.set(True)
    try:
        answer = await _outgoing_answer(request, principal, outgoing)
        if answer.status_code != 201:
            raise Unprocessable(
                f"The phantom transfer was refused: {answer.body[:500]!r}", slug="sandbox-phantom"
            )
        transfer_id = json.loads(bytes(answer.body))["transfer_id"]
        await _complete_now(transfers, transfer_id, actor="sandbox:phantom")
    finally:
        _SILENT.reset(token)
    transfers._notify()
    log.info("irx_sandbox_phantom_transfer", transfer_id=transfer_id, registry_id=body.registry_id)
    return str(transfer_id)


async def _complete_now(transfers: Any, transfer_id: str, *, actor: str, registry_row: Any = None) -> Any:
    """Decide F = completed for a `sent` outgoing transfer at once, as if its registry had accepted (the
    phantom and the sink); its record as it then stands."""
    async with transfers.db.connect() as connection:
        transfer = await transfers._lock_transfer(connection, transfer_id)
        assert transfer is not None
        await transfers._finish_outgoing(
            connection,
            transfer,
            TransferStatus.COMPLETED,
            [],
            actor=actor,
            now=transfers.clock(),
            registry_row=registry_row,
        )
        final = await transfers._lock_transfer(connection, transfer_id)
    assert final is not None
    return final


@router.post("/faults")
async def sandbox_faults(request: Request, principal: CurrentPrincipal, body: SandboxFault) -> dict[str, Any]:
    """Arm a fault in the IR's answers to the registry (see the module docstring)."""
    _guard(request, principal, body.registry_id)
    await _sandbox_registry(_transfers(request), body.registry_id)
    if body.fault == "phantom_transfer":
        made = [await _phantom(request, principal, body) for _ in range(body.count)]
        return {"registry_id": body.registry_id, "phantom_transfers": made}
    injector = _faults(request)
    if body.count == 0:
        injector.disarm(body.registry_id, body.fault)
    else:
        injector.arm(body.registry_id, body.fault, body.count, body.message_type)
    return {"registry_id": body.registry_id, "armed": injector.status(body.registry_id)}


@router.get("/faults")
async def sandbox_fault_status(
    request: Request,
    principal: CurrentPrincipal,
    registry_id: Annotated[str, Query(pattern=r"^[A-Z]{3}[0-9]{2}$")],
) -> dict[str, Any]:
    """What is armed for the registry, and every message a fault hit with how often it was POSTed again
    afterwards (how the kit sees a registry retry the same message, cases 156, 164, 170)."""
    _guard(request, principal, registry_id)
    injector = _faults(request)
    return {
        "registry_id": registry_id,
        "armed": injector.status(registry_id),
        "hits": injector.hits_of(registry_id),
    }


@router.post("/transfers/{transfer_id}/cancel")
async def sandbox_cancel(
    request: Request,
    principal: CurrentPrincipal,
    transfer_id: Annotated[str, Path(pattern=TRANSFER_ID_PATTERN)],
) -> dict[str, Any]:
    """The IR initiator's cancel of a `sent` outgoing transfer (case 159), through the ledger's own use case
    (`Transfers.cancel_sent`) in the name of a synthetic initiator of the sending section's Party."""
    transfers = _transfers(request)
    row = await _outgoing(transfers, request, principal, transfer_id)
    async with transfers.db.read() as session:
        party = (
            await session.execute(
                select(transactions.c.from_party).where(
                    transactions.c.transaction_id == row["transaction_id"]
                )
            )
        ).scalar_one()
    if (
        await transfers.cancel_sent(
            _party_principal(party, Role.INITIATOR, "initiator"), row["transaction_id"]
        )
        is None
    ):
        raise Conflict(f"Transfer {transfer_id} is {row['status']}.", slug="transfer-final")
    return await transfers.get(principal, transfer_id)


@router.get("/units")
async def sandbox_units(
    request: Request,
    principal: CurrentPrincipal,
    registry_id: Annotated[str, Query(pattern=r"^[A-Z]{3}[0-9]{2}$")],
    unique_id: Annotated[str, Query(max_length=200)],
    unique_id_last: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """The IR's current blocks overlapping a serial range: state, account, where they went (cases 151, 161)."""
    _guard(request, principal, registry_id)
    try:
        first = parse_unique_id(unique_id)
        last = parse_unique_id(unique_id_last) if unique_id_last else first
    except InvalidUniqueId as exc:
        raise Unprocessable(str(exc), slug="sandbox-unique-id") from None
    async with _transfers(request).db.read() as session:
        rows = (
            await session.execute(
                select(
                    blocks.c.first_serial, blocks.c.last_serial, blocks.c.state, blocks.c.account_id,
                    blocks.c.to_registry_id, blocks.c.transfer_id,
                ).where(
                    blocks.c.ca_id == first.ca_id,
                    blocks.c.origin_registry_id == first.registry_id,
                    blocks.c.first_serial <= last.serial,
                    blocks.c.last_serial >= first.serial,
                ).order_by(blocks.c.first_serial)
            )
        ).mappings().all()  # fmt: skip
    found = [
        {
            **dict(row),
            "quantity": min(row["last_serial"], last.serial) - max(row["first_serial"], first.serial) + 1,
        }
        for row in rows
    ]
    return {
        "blocks": found,
        "held": {
            account: sum(b["quantity"] for b in found if b["state"] == "held" and b["account_id"] == account)
            for account in sorted({b["account_id"] for b in found if b["state"] == "held"})
        },
    }


@router.get("/transfers/{transfer_id}/actions")
async def sandbox_actions(
    request: Request,
    principal: CurrentPrincipal,
    transfer_id: Annotated[str, Path(pattern=TRANSFER_ID_PATTERN)],
) -> dict[str, Any]:
    """The AEF actions of the IR transaction of a transfer with the registry (case 160: T3 `Acquisition`)."""
    transfers = _transfers(request)
    async with transfers.db.read() as session:
        row = (
            (await session.execute(select(irx_transfer).where(irx_transfer.c.transfer_id == transfer_id)))
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise NotFound(f"No transfer {transfer_id}.")
        _guard(request, principal, row["registry_id"])
        tx = await transaction_row(session, row["transaction_id"])
    return {
        "transfer_id": transfer_id,
        "transaction_id": row["transaction_id"],
        "status": tx["status"] if tx else None,
        "actions": list(tx["actions"] or []) if tx else [],
    }


async def _outgoing(transfers: Transfers, request: Request, principal: Principal, transfer_id: str) -> Any:
    async with transfers.db.read() as session:
        row = (
            (await session.execute(select(irx_transfer).where(irx_transfer.c.transfer_id == transfer_id)))
            .mappings()
            .one_or_none()
        )
    if row is None or row["direction"] != DIRECTION_OUT:
        _guard(request, principal, principal.registry_id or "")
        raise NotFound(f"No outgoing transfer {transfer_id}.")
    _guard(request, principal, row["registry_id"])
    await _sandbox_registry(transfers, row["registry_id"])
    return row


# ---- the sink registry (case 162's 4004) and the settings the kit must follow ------------------------------------

#: A sink's record says what it is, so no one mistakes it for a Party's registry (and `_sink_row` finds it).
SINK_NAME = "IR sandbox sink (conformance 4004 test double; never a real registry)"
#: The sink of a test section's Party P is registry `P99` (§2.1 ids: Party code plus two digits).
SINK_SUFFIX = "99"


class SandboxSink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    registry_id: str = Field(pattern=r"^[A-Z]{3}[0-9]{2}$", description="the registry under test")
    from_account: str = Field(
        min_length=1, max_length=64, description="an IR holding account of a test section"
    )
    quantity: int | None = Field(default=None, ge=1, le=10_000)
    blocks: list[BlockRange] | None = Field(default=None, min_length=1, max_length=100)
    mint: Mint | None = None


async def _sink_row(request: Request, party: str, under_test: str) -> Any:
    """The sink record of `party`'s test section, made on first use: a sandbox record in `onboarding` (a
    sandbox registry may receive transfers there, §11) with no keys and no client, so nothing can speak for
    it and it has no conformance run to activate a production record with."""
    transfers = _transfers(request)
    sink_id = f"{party}{SINK_SUFFIX}"
    if sink_id == under_test:
        raise Unprocessable(f"{sink_id} is the sink id of {party}'s test section.", slug="sandbox-sink")
    async with transfers.db.read() as session:
        row = await repository.get_registry(await session.connection(), sink_id)
    if row is None:
        body = RegistryCreate(
            registry_id=sink_id,
            party=party,
            name=SINK_NAME,
            environment=IrxEnvironment.SANDBOX,
            response_timeout_s=3600,
            contacts=[],
        )
        with contextlib.suppress(Conflict):  # another kit made it at the same moment
            await transfers.irx.create_registry(body)
        async with transfers.db.read() as session:
            row = await repository.get_registry(await session.connection(), sink_id)
    if row is None or row["name"] != SINK_NAME or row["environment"] != IrxEnvironment.SANDBOX.value:
        raise Conflict(f"{sink_id} is a registry, not the sandbox sink.", slug="sandbox-sink")
    return row


@router.post("/sink", status_code=201)
async def sandbox_sink(request: Request, principal: CurrentPrincipal, body: SandboxSink) -> JSONResponse:
    """Units of a test section that left the IR to another registry, the sink `<Party>99`, completed
    (case 162's 4004: the registry under test then proposes them as its own). The ordinary outgoing path
    proposes them (`Transfers.propose`, units `reserved`, the proposal in the sink's inbox); the sink's
    accept is applied by the sandbox itself, through the same final step an accept takes
    (`_finish_outgoing`: `transferred_out` to the sink, journal, transaction, `transfer.completed` in the
    sink's inbox). The sink is the IR's own test double: it signs nothing and no message of it is stored;
    its inbox is acknowledged up to what the relay numbered, as a registry reading it would."""
    _guard(request, principal, body.registry_id)
    transfers = _transfers(request)
    await _sandbox_registry(transfers, body.registry_id)
    account = await transfers.directory.account(body.from_account)
    if account is None or account.type is not AccountType.HOLDING:
        raise Unprocessable(f"{body.from_account} is not an IR holding account.", slug="sandbox-account")
    sink = await _sink_row(request, account.party, body.registry_id)
    async with transfers.db.connect() as connection:
        top = (
            await connection.execute(
                select(func.max(irx_message.c.position)).where(
                    irx_message.c.registry_id == sink["registry_id"], irx_message.c.direction == DIRECTION_OUT
                )
            )
        ).scalar()
        if top and top > sink["acked_position"]:
            # Else, after 24 h, the IR would call the sink unresponsive and refuse to send it more (3002).
            await repository.update_registry(connection, sink["registry_id"], {"acked_position": top})
    outgoing = SandboxOutgoing(
        registry_id=sink["registry_id"],
        from_account=body.from_account,
        to_account=f"{sink['registry_id']}-SINK",
        quantity=body.quantity,
        blocks=body.blocks,
        mint=body.mint,
        note=f"sandbox sink for {body.registry_id} (conformance 4004)",
    )
    answer = await _propose_to(request, principal, outgoing)
    if answer.status_code != 201:
        return answer
    transfer_id = str(json.loads(bytes(answer.body))["transfer_id"])
    final = await _complete_now(
        transfers, transfer_id, actor=f"sandbox:sink:{sink['registry_id']}", registry_row=sink
    )
    transfers._notify()
    log.info(
        "irx_sandbox_sink", transfer_id=transfer_id, sink=sink["registry_id"], for_registry=body.registry_id
    )
    return JSONResponse(
        {
            "registry_id": body.registry_id,
            "sink_registry_id": sink["registry_id"],
            "transfer_id": transfer_id,
            "status": final["status"],
            "blocks": list(final["blocks"]),
        },
        status_code=201,
    )


@router.get("/settings")
async def sandbox_settings(
    request: Request,
    principal: CurrentPrincipal,
    registry_id: Annotated[str, Query(pattern=r"^[A-Z]{3}[0-9]{2}$")],
) -> dict[str, Any]:
    """What the kit must follow of this IR's settings: how often an unknown kid may refetch a registry's
    `jwks_url` (§2.3, `REGISTRY_IRX_JWKS_REFETCH_SECONDS`), i.e. how long case 102 waits after publishing a key."""
    _guard(request, principal, registry_id)
    return {
        "registry_id": registry_id,
        "jwks_refetch_seconds": _transfers(request).irx.jwks_refetch_seconds,
    }


# ---- the fault middleware and installation ---------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REFUSED = json.dumps(
    {"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": "sandbox fault injected"}
).encode()


class FaultMiddleware:
    """Applies `http_503` and `drop_response` to registry POSTs under `/v1/interregistry/` (not the sandbox's
    own); a pass-through while nothing is armed."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not path.startswith("/v1/interregistry/")
            or path.startswith(PREFIX)
            or not (self.injector.any_armed() or self.injector.watching())
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        sender = str(document.get("from")) if isinstance(document, dict) else ""
        kind = str(document.get("type")) if isinstance(document, dict) else None
        message_id = str(document.get("message_id")) if isinstance(document, dict) else None
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}

        # A message a fault hit before and POSTed again is the registry retrying it (counted, then judged).
        already = self.injector.seen(sender, message_id)
        if self.injector.take(sender, "http_503", kind):
            if not already:
                self.injector.hit(sender, "http_503", message_id)
            log.info("irx_sandbox_fault", fault="http_503", registry_id=sender, type=kind)
            await self._refuse(send)
            return
        if self.injector.take(sender, "drop_response", kind):
            if not already:
                self.injector.hit(sender, "drop_response", message_id)
            log.info("irx_sandbox_fault", fault="drop_response", registry_id=sender, type=kind)

            async def swallow(_message: Message) -> None:
                return None

            await self.app(scope, replay, swallow)  # processed and committed; the answer is lost
            await self._refuse(send)
            return
        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"retry-after", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": _REFUSED})


def install(app: FastAPI) -> None:
    """Include the sandbox router and the fault middleware, and let sandbox proposals carry forged blocks.
    Called once by `services.transactions.app.create_app` after `app.state.transfers` exists. A production IR
    gets none of it (every path answers 404 whatever the body); the handlers check again at each call."""
    injector = FaultInjector()
    app.state.irx_faults = injector
    transfers: Transfers = app.state.transfers
    if transfers.irx.env is IrxEnvironment.PRODUCTION:
        return
    app.include_router(router)
    app.add_middleware(FaultMiddleware, injector=injector)  # type: ignore[arg-type]
    original = transfers._send_proposal

    async def send_proposal(connection: Any, registry_row: Any, row: Any, blocks: list[TransferBlock],
                            respond_by: datetime | None) -> str:  # fmt: skip
        # Only while a sandbox call set forged blocks (case 158): every other proposal is untouched.
        forged = _FORGED.get()
        return await original(connection, registry_row, row, forged or blocks, respond_by)

    transfers._send_proposal = send_proposal  # type: ignore[method-assign]
    enqueue = transfers.irx.enqueue

    async def silenced_enqueue(connection: Any, registry_row: Any, message_type: IrxMessageType, body: Any,
                               *, transfer_id: str | None = None) -> str:  # fmt: skip
        # Only inside a phantom_transfer fault: the registry must never see that transfer.
        if _SILENT.get():
            return str(uuid.uuid4())
        return await enqueue(connection, registry_row, message_type, body, transfer_id=transfer_id)

    transfers.irx.enqueue = silenced_enqueue  # type: ignore[method-assign]
