"""Transfers between the IR and connected registries (INTERREGISTRY §5 outgoing, §6 incoming), on the ledger.

Outgoing (IR Party section → registry R): `POST /v1/transactions` with `to_registry` reserves the units
(`reserved`, `reserved_by` the transaction), records the transaction `sent` (or `awaiting_approval` under
four-eyes, `sent` once approved), the `irx_transfer` row and the inbox `transfer.proposal`, all in one DB
transaction. One final status F is then written by whoever wins the compare-and-set
`UPDATE irx_transfer … WHERE status = 'sent'` (S1): R's `transfer.response` (accept → `completed`, units
`transferred_out`; reject → `rejected`, released), the terminator at `respond_by` (`terminated`, 6001) or
the initiator's cancel (`cancelled`, 6002). The winner moves the units, journals, publishes and writes the
inbox F message in its transaction; a loser answers 409 `transfer-final` (6003) with the real status.

Incoming (R → an IR holding account): a `transfer.proposal` through the message pipeline, judged in the
§6 order (structure, CA, destination, serial history, transfer id), then decided at once (auto
acceptance): never-seen ranges become new `held` blocks (and `issued_ranges` rows, so I2 counts them as
origins), returning ranges turn from `transferred_out` back to `held`. A rejection is recorded with its
codes and answered 422; the answer is stored on the transfer row, so a repeat under a new message id gets
it again (S6), and other content under the same id gets 4007. `transfer.cancel` of an id the IR never saw
leaves a `cancelled` tombstone (S8). A section with `incoming_acceptance: manual` answers 202 instead: the
units wait `pending_in` until its approver accepts or rejects, the sender cancels or `respond_by` passes.
While a reconciliation is `totals_inconsistent`, its CA/vintage keys are refused 3004 both ways.

Peer lookups (accounts, sections, cooperative approaches) happen before the write transaction, as
everywhere in the ledger: no database lock is held across an HTTP call.
"""

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy import and_, delete, false, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.accounts import AccountStatus, AccountType
from contracts.actions import ActionType, FirstTransferDefinition, TransactionStatus, TransactionType
from contracts.interregistry import (
    IrxCode,
    IrxEnvironment,
    IrxMessageType,
    RegistryStatus,
    TransferBlock,
    TransferCancel,
    TransferCode,
    TransferDecision,
    TransferDirection,
    TransferFinal,
    TransferProposal,
    TransferResponse,
    TransferStatus,
    code_definition,
    normalise_rejection_codes,
    structure_codes,
)
from contracts.parties import is_party
from contracts.party_sections import (
    AccountLookup,
    CooperativeApproach,
    IncomingAcceptance,
    SectionLookup,
    SectionStatus,
)
from contracts.problems import CheckResult, problem_type
from contracts.roles import Role
from contracts.transactions import (
    AefAction,
    FirstTransferCreate,
    Transaction,
    TransactionCreate,
    TransactionValidation,
)
from kit.auth import Principal
from kit.errors import Conflict, NotFound, ServiceUnavailable
from kit.idempotency import Claim, StoredAnswer, request_fingerprint
from kit.jws import CanonicalizationError, body_sha256, loads
from kit.pagination import decode_cursor, encode_cursor
from services.transactions import checks as catalogue
from services.transactions import journal as journal_mod
from services.transactions.directory import account_party
from services.transactions.domain import (
    BlockRow,
    SerialRange,
    _decimal_text,
    move,
    serial_history,
    take_ranges,
)
from services.transactions.interregistry import crashpoints, repository
from services.transactions.interregistry.models import DIRECTION_IN, DIRECTION_OUT, irx_message, irx_transfer
from services.transactions.interregistry.reconciliation import pair_frozen
from services.transactions.interregistry.service import Answer, Interregistry, IrxRefused, Received
from services.transactions.ledger import Ledger, to_block
from services.transactions.models import issued_ranges, transactions
from services.transactions.repository import transaction_row
from services.transactions.service import (
    _FIRST_TRANSFER_SUBTYPE,
    Ledgers,
    _check_failed_problem,
    _Prepared,
    _ranges,
    _unique_blocks,
    _wire,
    aef_actions,
    first_transfer_rows,
    first_transferred_under,
    new_transaction_id,
    transaction_from_row,
)
from services.transactions.service import Answer as LedgerAnswer

__all__ = ["Transfers"]

Row = Mapping[Any, Any]  # a table row (SQLAlchemy RowMapping) or a dict of its columns

log = structlog.get_logger(__name__)

#: §3002: a registry that left inbox messages unacknowledged this long gets no new outgoing proposals.
UNRESPONSIVE_AFTER = timedelta(hours=24)
#: What the `conversion_factor` column (NUMERIC(30, 10)) can store; anything else is refused 2006.
_CONVERSION_FACTOR = re.compile(r"[0-9]{1,20}(\.[0-9]{1,10})?")
_OPEN_STATUSES = (TransferStatus.SENT.value,)
#: `from_account` of a first transfer's proposal (§5.3): the units leave the Party's ARS, which has no IR account.
_ARS_ACCOUNT = "ARS"


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _code(code: IrxCode, message: str, unique_id_first: str | None = None) -> TransferCode:
    return TransferCode(code=int(code), message=message[:1000], unique_id_first=unique_id_first)


def _codes_json(codes: Sequence[BaseModel]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in codes]


def final_problem(transfer_id: str, status: str, decided_at: datetime | None, codes: Any) -> dict[str, Any]:
    """409 `…/transfer-final` (6003): F was decided already; the body carries it.

    RFC 9457 reserves `status` for the HTTP status, so the transfer's status is the extension
    `transfer_status` (as the ARS names `first_transfer_status`)."""
    return {
        "type": problem_type("transfer-final"),
        "title": code_definition(IrxCode.TRANSFER_FINAL).title,
        "status": 409,
        "detail": f"Transfer {transfer_id} is already {status}.",
        "code": int(IrxCode.TRANSFER_FINAL),
        "transfer_id": transfer_id,
        "transfer_status": status,
        "decided_at": decided_at.isoformat() if decided_at else None,
        "codes": list(codes or []),
    }


def rejected_problem(transfer_id: str, codes: Sequence[TransferCode], *, status: int = 422) -> dict[str, Any]:
    """422 `…/transfer-rejected` with the codes (§6); `transfer_status` is `rejected`."""
    return {
        "type": problem_type("transfer-rejected"),
        "title": "The transfer was rejected",
        "status": status,
        "detail": "; ".join(f"{c.code}: {c.message}" for c in codes[:20]),
        "transfer_id": transfer_id,
        "transfer_status": TransferStatus.REJECTED.value,
        "codes": _codes_json(codes),
    }


def can_receive(registry_row: Row) -> bool:
    """Whether a registry may be sent new transfers (3002 otherwise): `active`, or, in the sandbox, still
    `onboarding`/`testing` (conformance needs transfers before go-live, §11). Suspended and disconnected
    registries receive none."""
    status = RegistryStatus(registry_row["status"])
    if status is RegistryStatus.ACTIVE:
        return True
    return registry_row["environment"] == IrxEnvironment.SANDBOX.value and status in (
        RegistryStatus.ONBOARDING,
        RegistryStatus.TESTING,
    )


def block_row(block: TransferBlock, **place: Any) -> BlockRow:
    """The ledger row of a transfer block as the IR would store it (`place`: state, party, account...)."""
    authorized = ",".join(sorted(set(block.authorized_parties))) if block.authorized_parties else None
    return BlockRow(
        ca_id=block.ca_id,
        origin_registry_id=block.origin_registry_id,
        first_transferring_party=block.first_transferring_party,
        first_serial=block.first,
        last_serial=block.last,
        vintage=block.vintage,
        metric=block.metric,
        mitigation_type=block.mitigation_type,
        authorization_id=block.authorization_id,
        authorization_version=block.authorization_version,
        purposes=block.purposes,
        applicable_gwp_values=block.applicable_gwp_values,
        applicable_non_ghg_metric=block.applicable_non_ghg_metric,
        conversion_factor=_decimal_text(block.conversion_factor) if block.conversion_factor else None,
        sector=block.sector,
        activity_type=block.activity_type,
        authorized_parties=authorized,
        first_transfer_definition=block.first_transfer_definition,
        underlying_registry_id=block.underlying.registry_id if block.underlying else None,
        underlying_first=block.underlying.first_unit_id if block.underlying else None,
        **place,
    )


def transfer_blocks(rows: Sequence[BlockRow]) -> list[TransferBlock]:
    return [TransferBlock.from_block(to_block(row)) for row in rows]


@dataclass
class _Lookups:
    """What party_sections says about an incoming proposal, read before the write transaction."""

    account: AccountLookup | None
    section: SectionLookup | None
    participants: dict[str, frozenset[str] | None]  # CA → participants; None: the CA is unknown


class Transfers:
    """The §5/§6 use cases (`app.state.transfers`); `Ledgers.interregistry` points here."""

    def __init__(
        self, ledgers: Ledgers, interregistry: Interregistry, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.ledgers = ledgers
        self.irx = interregistry
        self.db = ledgers.db
        self.directory = ledgers.directory
        self.clock = clock or interregistry.clock
        self._task: asyncio.Task[None] | None = None
        ledgers.interregistry = self

    async def _announce(
        self,
        connection: AsyncConnection,
        party: str | None,
        *,
        transfer_id: str,
        direction: str,
        registry_id: str,
        status: str,
        transaction_id: str | None,
        quantity: int | None,
        respond_by: datetime | None = None,
        decided_at: datetime | None = None,
        codes: Sequence[TransferCode] = (),
    ) -> None:
        """The outbox event `interregistry.transfer.<status>` for the IR Party's own feed (§9), in the
        deciding transaction; nothing when no IR Party is concerned (a tombstone, an unknown destination)."""
        if party is None:
            return
        data = {
            "party": party,
            "transfer_id": transfer_id,
            "direction": direction,
            "registry_id": registry_id,
            "status": status,
            "transaction_id": transaction_id,
            "quantity": quantity,
            "respond_by": respond_by.isoformat() if respond_by else None,
            "decided_at": decided_at.isoformat() if decided_at else None,
            "codes": _codes_json(codes),
        }
        await self.ledgers.outbox.publish(connection, f"interregistry.transfer.{status}", data, party=party)

    def _notify(self) -> None:
        self.ledgers._after_commit()
        self.irx.relay.notify()

    # ---- outgoing: proposal (§5) ---------------------------------------------------------------------------

    async def propose(self, principal: Principal, body: TransactionCreate, key: str | None) -> LedgerAnswer:
        """`POST /v1/transactions` with `to_registry`: checks, reservation, `sent` and the inbox proposal."""
        ledgers = self.ledgers
        ledgers._require_initiator(principal)
        key = ledgers.idempotency.require_key(key)
        fingerprint = request_fingerprint("POST", "/v1/transactions", body.model_dump(mode="json"))
        party = principal.party
        assert party is not None
        ranges, ranges_valid = _ranges(body)
        source = None
        if account_party(body.from_account) == party:
            source = await self.directory.account(body.from_account)
            if source is None or source.party != party:
                source = None
        participants = (
            await self.directory.participants({r.ca_id for r in ranges})
            if ranges
            else self.directory.cached_participants()
        )
        prepared = _Prepared(
            body,
            TransactionType.TRANSFER,
            party,
            ranges,
            ranges_valid,
            source,
            None,
            None,
            dict(participants),
        )
        for _attempt in range(3):
            answer = await self._propose_once(principal, prepared, key, fingerprint)
            if answer is not None:
                if not answer.replayed:
                    self._notify()
                return answer
        raise Conflict("The cooperative approaches changed while checking; retry.", slug="retry")

    async def validate(self, principal: Principal, body: TransactionCreate) -> TransactionValidation:
        """`POST /v1/transactions/validate` with `to_registry`: the proposal's checks, nothing locked or kept."""
        ledgers = self.ledgers
        ledgers._require_initiator(principal)
        party = principal.party
        assert party is not None and body.to_registry is not None
        ranges, ranges_valid = _ranges(body)
        source = None
        if account_party(body.from_account) == party:
            source = await self.directory.account(body.from_account)
            if source is None or source.party != party:
                source = None
        prepared = _Prepared(
            body, TransactionType.TRANSFER, party, ranges, ranges_valid, source, None, None, {}
        )
        now = self.clock()
        async with self.db.read() as session:
            connection = await session.connection()
            registry_row = await repository.get_registry(connection, body.to_registry)
            takes, shortfall, terminal = await ledgers._select(
                Ledger(connection, now=now, lock=False), prepared
            )
            unresponsive = registry_row is not None and await self._unresponsive(
                connection, registry_row, now
            )
            frozen = await self._frozen_pair(connection, body.to_registry, [t.block for t in takes or []])
        ctx = prepared.context()
        ctx.external = True
        ctx.shortfall, ctx.terminal_hit = shortfall, terminal
        ctx.taken = (
            [t.block.piece(t.first, t.last, id=t.block.id) for t in takes] if takes is not None else None
        )
        if ctx.taken:
            prepared.participants.update(await self.directory.participants({b.ca_id for b in ctx.taken}))
        failed = catalogue.evaluate_outgoing(
            ctx,
            registry_id=body.to_registry,
            registry_party=registry_row["party"] if registry_row is not None else None,
            registry_sendable=registry_row is not None and can_receive(registry_row),
            registry_unresponsive=unresponsive,
            block_count=len(takes or []),
        )
        failed += frozen
        return TransactionValidation(
            valid=not failed,
            checks=failed,
            quantity=sum(t.quantity for t in takes) if takes else 0,
            blocks=[to_block(piece) for piece in ctx.taken or []],
            four_eyes=bool(source and source.four_eyes),
        )

    @staticmethod
    async def _frozen_pair(
        connection: AsyncConnection, registry_id: str, taken: Sequence[BlockRow]
    ) -> list[CheckResult]:
        """3004 for the blocks' CA/vintage while a reconciliation with the registry is `totals_inconsistent`."""
        frozen = await pair_frozen(connection, registry_id, {(b.ca_id, b.vintage) for b in taken})
        return [
            CheckResult(
                code=str(int(IrxCode.PAIR_FROZEN)),
                message=f"{ca_id} vintage {vintage} with {registry_id} is frozen by reconciliation {rec}",
            )
            for ca_id, vintage, rec in frozen
        ]

    async def _unresponsive(self, connection: AsyncConnection, registry_row: Row, now: datetime) -> bool:
        found = await connection.execute(
            select(irx_message.c.id)
            .where(
                irx_message.c.registry_id == registry_row["registry_id"],
                irx_message.c.direction == DIRECTION_OUT,
                irx_message.c.position > registry_row["acked_position"],
                irx_message.c.positioned_at < now - UNRESPONSIVE_AFTER,
            )
            .limit(1)
        )
        return found.first() is not None

    async def _propose_once(
        self, principal: Principal, prepared: _Prepared, key: str, fingerprint: str
    ) -> LedgerAnswer | None:
        ledgers = self.ledgers
        body = prepared.body
        assert body.to_registry is not None
        now = self.clock()
        transaction_id = new_transaction_id()
        source = prepared.source
        async with self.db.connect() as connection:
            claim = await ledgers.idempotency.claim_within(connection, principal.client_id, key, fingerprint)
            if isinstance(claim, StoredAnswer):
                return LedgerAnswer(claim.status, claim.body, replayed=True)
            registry_row = await repository.get_registry(connection, body.to_registry)
            registry_party = registry_row["party"] if registry_row is not None else None
            ledger = Ledger(connection, now=now)
            takes, shortfall, terminal = await ledgers._select(ledger, prepared)
            ctx = prepared.context()
            ctx.external = True
            ctx.shortfall, ctx.terminal_hit = shortfall, terminal
            ctx.taken = (
                [t.block.piece(t.first, t.last, id=t.block.id) for t in takes] if takes is not None else None
            )
            if ctx.taken and registry_party is not None:
                missing = {b.ca_id for b in ctx.taken} - set(prepared.participants)
                if missing:
                    await connection.rollback()
                    prepared.participants.update(await self.directory.participants(missing))
                    return None
            failed = catalogue.evaluate_outgoing(
                ctx,
                registry_id=body.to_registry,
                registry_party=registry_party,
                registry_sendable=registry_row is not None and can_receive(registry_row),
                registry_unresponsive=registry_row is not None
                and await self._unresponsive(connection, registry_row, now),
                block_count=len(takes or []),
            )
            failed += await self._frozen_pair(connection, body.to_registry, ctx.taken or [])
            if body.type is not TransactionType.TRANSFER:
                failed.insert(0, CheckResult(code="Q04", message="to_registry applies to transfers only"))
            base_row: dict[str, Any] = {
                "type": TransactionType.TRANSFER.value,
                "party": prepared.party,
                "from_account": body.from_account,
                "to_account": body.to_account,
                "from_party": prepared.party,
                "to_party": registry_party,
                "from_registry_id": source.registry_id if source else None,
                "to_registry_id": body.to_registry,
                "quantity": body.quantity or sum(r.quantity for r in prepared.ranges),
                "ndc_use_year": None,
                "purpose": None,
                "using_entity_id": None,
                "note": body.note,
                "initiated_by": principal.client_id,
                "created_at": now,
                "updated_at": now,
            }
            if failed:
                return await ledgers._record_rejection(
                    connection, transaction_id, base_row, failed, claim, "/v1/transactions"
                )
            assert takes is not None and source is not None and registry_row is not None
            rest, moved = move(takes, state="reserved", reserved_by=transaction_id)
            changes = await ledger.replace(_unique_blocks(takes), rest + moved, transaction_id=transaction_id)
            await journal_mod.append(
                connection, transaction_id, "reserve", changes, actor=principal.client_id, at=now
            )
            four_eyes = source.four_eyes
            transfer_id = f"{source.registry_id}-{transaction_id}"
            respond_by = None if four_eyes else now + timedelta(seconds=registry_row["response_timeout_s"])
            status = TransactionStatus.AWAITING_APPROVAL if four_eyes else TransactionStatus.SENT
            row = base_row | {
                "transaction_id": transaction_id,
                "quantity": sum(p.quantity for p in moved),
                "status": status.value,
                "checks": [],
                "actions": [],
                "blocks": _wire([to_block(piece) for piece in moved]),
                "expires_at": now + ledgers.approval_timeout if four_eyes else None,
                "interregistry": self._link(transfer_id, DIRECTION_OUT, body.to_registry, respond_by),
            }
            await connection.execute(insert(transactions), row)
            blocks = transfer_blocks(moved)
            proposal_id = None
            if four_eyes:
                await ledgers._publish_awaiting(connection, row)
            else:
                proposal_id = await self._send_proposal(connection, registry_row, row, blocks, respond_by)
                await self._announce(
                    connection,
                    prepared.party,
                    transfer_id=transfer_id,
                    direction=DIRECTION_OUT,
                    registry_id=body.to_registry,
                    status=TransferStatus.SENT.value,
                    transaction_id=transaction_id,
                    quantity=row["quantity"],
                    respond_by=respond_by,
                )
            await connection.execute(
                insert(irx_transfer).values(
                    transfer_id=transfer_id,
                    direction=DIRECTION_OUT,
                    registry_id=body.to_registry,
                    transaction_id=transaction_id,
                    status=status.value,
                    respond_by=respond_by,
                    quantity=row["quantity"],
                    blocks=_codes_json(blocks),
                    codes=[],
                    proposal_message_id=proposal_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            answer = _wire(transaction_from_row(row | {"approved_by": None, "completed_at": None}))
            await claim.complete(connection, 201, answer)
        log.info(
            "irx_transfer_proposed",
            transfer_id=transfer_id,
            registry_id=body.to_registry,
            status=status.value,
        )
        return LedgerAnswer(201, answer)

    @staticmethod
    def _link(
        transfer_id: str, direction: str, registry_id: str, respond_by: datetime | None
    ) -> dict[str, Any]:
        return {
            "transfer_id": transfer_id,
            "direction": direction,
            "registry_id": registry_id,
            "respond_by": respond_by.isoformat() if respond_by else None,
        }

    async def _send_proposal(
        self,
        connection: AsyncConnection,
        registry_row: Row,
        row: Row,
        blocks: list[TransferBlock],
        respond_by: datetime | None,
    ) -> str:
        proposal = TransferProposal(
            transfer_id=row["interregistry"]["transfer_id"],
            sender_action="first_transfer" if row["type"] == catalogue.FIRST_TRANSFER else "transfer",
            transferring_party=row["from_party"],
            from_registry=row["from_registry_id"],
            from_account=row["from_account"] or _ARS_ACCOUNT,
            acquiring_party=registry_row["party"],
            to_registry=registry_row["registry_id"],
            to_account=row["to_account"],
            quantity=row["quantity"],
            respond_by=respond_by,
            note=row["note"],
            blocks=blocks,
        )
        return await self.irx.enqueue(
            connection,
            registry_row,
            IrxMessageType.TRANSFER_PROPOSAL,
            proposal,
            transfer_id=proposal.transfer_id,
        )

    async def approve(self, principal: Principal, row: Row, claim: Claim) -> LedgerAnswer:
        """Four-eyes approval of an outgoing transfer: the checks again on the reserved units, then `sent`
        with its `respond_by` and the inbox proposal (the units stay reserved)."""
        ledgers = self.ledgers
        transaction_id = row["transaction_id"]
        path = f"/v1/transactions/{transaction_id}/approve"
        registry_id = row["interregistry"]["registry_id"]
        source = await self.directory.account(row["from_account"])
        participants = await self.directory.participants({b["ca_id"] for b in row["blocks"]})
        now = self.clock()
        registry_row = None
        async with self.db.connect() as connection:
            current = await ledgers._pending(connection, transaction_id, principal.party)
            ledgers._require_awaiting(current, now)
            if current["initiated_by"] == principal.client_id:
                failed = [CheckResult(code="T11", message="the initiator cannot approve its own transaction")]
            else:
                registry_row = await repository.get_registry(connection, registry_id)
                reserved = await Ledger(connection, now=now).reserved_by(transaction_id)
                ctx = catalogue.CheckContext(
                    type=TransactionType.TRANSFER,
                    party=current["from_party"],
                    from_account_id=current["from_account"],
                    to_account_id=current["to_account"],
                    from_account=source,
                    to_account=None,
                    section=None,
                    quantity=current["quantity"],
                    taken=reserved,
                    ca_participants=participants,
                    external=True,
                )
                failed = catalogue.evaluate_outgoing(
                    ctx,
                    registry_id=registry_id,
                    registry_party=registry_row["party"] if registry_row is not None else None,
                    registry_sendable=registry_row is not None and can_receive(registry_row),
                    registry_unresponsive=registry_row is not None
                    and await self._unresponsive(connection, registry_row, now),
                    block_count=len(reserved),
                )
                failed += await self._frozen_pair(connection, registry_id, reserved)
            if failed:
                problem = _check_failed_problem(transaction_id, failed, path)
                await claim.complete(connection, 422, problem)
                return LedgerAnswer(422, problem)
            assert registry_row is not None
            respond_by = now + timedelta(seconds=registry_row["response_timeout_s"])
            link = {**current["interregistry"], "respond_by": respond_by.isoformat()}
            updated = current | {
                "status": TransactionStatus.SENT.value,
                "approved_by": principal.client_id,
                "updated_at": now,
                "expires_at": None,
                "interregistry": link,
            }
            await connection.execute(
                update(transactions)
                .where(transactions.c.transaction_id == transaction_id)
                .values(
                    status=updated["status"],
                    approved_by=updated["approved_by"],
                    updated_at=now,
                    expires_at=None,
                    interregistry=link,
                )
            )
            proposal_id = await self._send_proposal(
                connection,
                registry_row,
                updated,
                [TransferBlock.model_validate(b) for b in _current_blocks(current)],
                respond_by,
            )
            await connection.execute(
                update(irx_transfer)
                .where(irx_transfer.c.transfer_id == link["transfer_id"])
                .values(
                    status=TransferStatus.SENT.value,
                    respond_by=respond_by,
                    proposal_message_id=proposal_id,
                    updated_at=now,
                )
            )
            await self._announce(
                connection,
                current["from_party"],
                transfer_id=link["transfer_id"],
                direction=DIRECTION_OUT,
                registry_id=registry_id,
                status=TransferStatus.SENT.value,
                transaction_id=transaction_id,
                quantity=current["quantity"],
                respond_by=respond_by,
            )
            answer = _wire(transaction_from_row(updated))
            await claim.complete(connection, 200, answer)
        self.irx.relay.notify()
        return LedgerAnswer(200, answer)

    async def settle_unsent(
        self, connection: AsyncConnection, row: Row, status: TransactionStatus, now: datetime
    ) -> None:
        """An outgoing transfer withdrawn or timed out before approval: its row takes the same final status.
        Nothing was proposed to the registry, so no inbox message announces it."""
        code = IrxCode.CANCELLED if status is TransactionStatus.CANCELLED else IrxCode.TERMINATED
        codes = [_code(code, f"{status.value} before approval")]
        link = row["interregistry"]
        await self._announce(
            connection,
            row["from_party"],
            transfer_id=link["transfer_id"],
            direction=DIRECTION_OUT,
            registry_id=link["registry_id"],
            status=status.value,
            transaction_id=row["transaction_id"],
            quantity=row["quantity"],
            decided_at=now,
            codes=codes,
        )
        await connection.execute(
            update(irx_transfer)
            .where(
                irx_transfer.c.transfer_id == row["interregistry"]["transfer_id"],
                irx_transfer.c.status == TransferStatus.AWAITING_APPROVAL.value,
            )
            .values(
                status=status.value,
                decided_at=now,
                updated_at=now,
                codes=_codes_json(codes),
            )
        )

    # ---- outgoing: a first transfer straight to a registry (§5.3) ----------------------------------------------

    async def propose_first_transfer(
        self, principal: Principal, body: FirstTransferCreate, claim: Claim
    ) -> LedgerAnswer:
        """The ARS's first transfer with `to_registry` (`POST /internal/v1/first-transfers`): the checks, then
        the transaction `sent` and the inbox proposal with `sender_action: first_transfer`, in one DB
        transaction. No IR block exists until the registry accepts: `_finish_outgoing` then creates the ITMOs
        already `transferred_out`. Answered 202 (the ARS asks again until F), or 422 `check-failed`."""
        ledgers = self.ledgers
        party = body.first_transferring_party
        assert body.to_registry is not None and body.to_account is not None
        section = await self.directory.section(party)
        participants = await self.directory.participants({b.ca_id for b in body.blocks})
        now = self.clock()
        transaction_id = new_transaction_id()
        # The rows as they will be once accepted; their `transfer_id` is set below, once it is known.
        rows = first_transfer_rows(
            body, party=party, account_id=None, state="transferred_out", to_registry_id=body.to_registry
        )
        international = body.first_transfer_definition is FirstTransferDefinition.FIRST_INTERNATIONAL_TRANSFER
        path = "/internal/v1/first-transfers"
        async with self.db.connect() as connection:
            registry_row = await repository.get_registry(connection, body.to_registry)
            registry_party = registry_row["party"] if registry_row is not None else None
            # The ledger's first-transfer checks on the serials, the section and the cap; the destination is a
            # registry, not an IR account (A05 does not apply), and is judged below.
            failed = [
                check
                for check in catalogue.evaluate_first_transfer(
                    party=party,
                    blocks=rows,
                    destination=None,
                    destination_id=None,
                    use_type=None,
                    section=section,
                    ca_participants=dict(participants),
                    international=international,
                    seen_before=await Ledgers._seen_before(connection, rows),
                    current_year=now.year,
                    authorized_quantity=body.authorized_quantity,
                    already_first_transferred=await first_transferred_under(connection, body),
                )
                if check.code != "A05"
            ]
            failed += self._first_transfer_destination_checks(
                body, registry_row, registry_party, dict(participants), international
            )
            if registry_row is not None and await self._unresponsive(connection, registry_row, now):
                failed.append(
                    CheckResult(
                        code=str(int(IrxCode.RECEIVING_REGISTRY_NOT_ACTIVE)),
                        message=f"{body.to_registry} has left inbox messages unacknowledged for more than 24 h",
                    )
                )
            failed += await self._frozen_pair(connection, body.to_registry, rows)
            base_row: dict[str, Any] = {
                "type": catalogue.FIRST_TRANSFER,
                "party": party,
                "from_account": None,
                "to_account": body.to_account,
                "from_party": party,
                "to_party": registry_party,
                "from_registry_id": section.registry_id if section else None,
                "to_registry_id": body.to_registry,
                "quantity": sum(r.quantity for r in rows),
                "ndc_use_year": None,
                "purpose": None,
                "using_entity_id": None,
                "note": body.note,
                "operation_id": body.operation_id,
                "initiated_by": body.initiated_by or principal.client_id,
                "created_at": now,
                "updated_at": now,
            }
            if failed:
                return await ledgers._record_rejection(
                    connection, transaction_id, base_row, failed, claim, path
                )
            assert section is not None and registry_row is not None
            transfer_id = f"{section.registry_id}-{transaction_id}"
            respond_by = now + timedelta(seconds=registry_row["response_timeout_s"])
            row = base_row | {
                "transaction_id": transaction_id,
                "status": TransactionStatus.SENT.value,
                "checks": [],
                "actions": [],
                "blocks": [],  # no IR block until the registry accepts; the proposal holds the ranges
                "expires_at": None,
                "interregistry": self._link(transfer_id, DIRECTION_OUT, body.to_registry, respond_by),
            }
            await connection.execute(insert(transactions), row)
            blocks = transfer_blocks([replace(r, transfer_id=transfer_id) for r in rows])
            proposal_id = await self._send_proposal(connection, registry_row, row, blocks, respond_by)
            await self._announce(
                connection,
                party,
                transfer_id=transfer_id,
                direction=DIRECTION_OUT,
                registry_id=body.to_registry,
                status=TransferStatus.SENT.value,
                transaction_id=transaction_id,
                quantity=row["quantity"],
                respond_by=respond_by,
            )
            await connection.execute(
                insert(irx_transfer).values(
                    transfer_id=transfer_id,
                    direction=DIRECTION_OUT,
                    registry_id=body.to_registry,
                    transaction_id=transaction_id,
                    status=TransferStatus.SENT.value,
                    respond_by=respond_by,
                    quantity=row["quantity"],
                    blocks=_codes_json(blocks),
                    codes=[],
                    proposal_message_id=proposal_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            answer = _wire(transaction_from_row(row | {"approved_by": None, "completed_at": None}))
            await claim.complete(connection, 202, answer)
        self.irx.relay.notify()
        log.info("irx_first_transfer_proposed", transfer_id=transfer_id, registry_id=body.to_registry)
        return LedgerAnswer(202, answer)

    @staticmethod
    def _first_transfer_destination_checks(
        body: FirstTransferCreate,
        registry_row: Row | None,
        registry_party: str | None,
        participants: dict[str, frozenset[str]],
        international: bool,
    ) -> list[CheckResult]:
        """§5.3 destination checks: the registry may receive (3002); an NDC first transfer goes to another
        Party, an OIMP one at authorization or issuance to the Party's own registry (F01); NDC covered (T05);
        across Parties, the authorized Parties (5907) and the CA's participants (5905), as §5."""
        party = body.first_transferring_party
        failed: list[CheckResult] = []
        if registry_row is None or registry_party is None or not can_receive(registry_row):
            failed.append(
                CheckResult(
                    code=str(int(IrxCode.RECEIVING_REGISTRY_NOT_ACTIVE)),
                    message=f"{body.to_registry} cannot receive transfers",
                )
            )
            return failed
        if international != (registry_party != party):
            failed.append(
                CheckResult(
                    code="F01",
                    message="an NDC first transfer goes to another Party's registry"
                    if international
                    else "an OIMP first transfer at authorization or issuance goes to the Party's own registry",
                )
            )
        if international and not body.purposes.covers_ndc:
            failed.append(CheckResult(code="T05", message=f"{body.purposes.value} does not cover NDC use"))
        if registry_party != party:
            if body.authorized_parties and registry_party not in body.authorized_parties:
                failed.append(
                    CheckResult(
                        code=str(int(IrxCode.NOT_AUTHORIZED_FOR_PARTY)),
                        message=f"authorization {body.authorization_id} does not name {registry_party}",
                    )
                )
            for ca_id in sorted({b.ca_id for b in body.blocks}):
                missing = sorted({party, registry_party} - participants.get(ca_id, frozenset()))
                if missing:
                    failed.append(
                        CheckResult(
                            code=str(int(IrxCode.PARTY_NOT_PARTICIPATING)),
                            message=f"{', '.join(missing)} not participating in {ca_id}",
                        )
                    )
        return failed

    async def first_transfer_state(self, stored: Any) -> LedgerAnswer:
        """The ARS asks again (same request): the transaction's state now — 202 while the registry has not
        decided, 201 once it accepted, 422 `check-failed` with F's codes after any other F."""
        transaction_id = stored["transaction_id"]
        async with self.db.read() as session:
            row = await transaction_row(session, transaction_id)
            assert row is not None
        status = row["status"]
        if status == TransactionStatus.COMPLETED.value:
            return LedgerAnswer(201, _wire(transaction_from_row(row)))
        if status in (TransactionStatus.SENT.value, TransactionStatus.AWAITING_APPROVAL.value):
            return LedgerAnswer(202, _wire(transaction_from_row(row)))
        checks = [CheckResult.model_validate(c) for c in row["checks"] or []]
        problem = _check_failed_problem(transaction_id, checks, "/internal/v1/first-transfers")
        return LedgerAnswer(422, problem | {"transaction_status": status})

    async def _create_first_transferred(
        self,
        connection: AsyncConnection,
        ledger: Ledger,
        transfer: Row,
        tx: Row,
        *,
        actor: str,
        now: datetime,
    ) -> None:
        """§5.3 accepted: the ITMOs come into being (`issued_ranges`, journal `first_transfer`), reserved by the
        transaction, so the common path below turns them `transferred_out` (journal `transfer_out`)."""
        transaction_id = tx["transaction_id"]
        rows = [
            block_row(
                TransferBlock.model_validate(b),
                state="reserved",
                party=tx["from_party"],
                account_id=None,
                reserved_by=transaction_id,
            )
            for b in transfer["blocks"]
        ]
        await connection.execute(
            insert(issued_ranges),
            [
                {
                    "ca_id": r.ca_id,
                    "origin_registry_id": r.origin_registry_id,
                    "first_serial": r.first_serial,
                    "last_serial": r.last_serial,
                    "first_transferring_party": r.first_transferring_party,
                    "authorization_id": r.authorization_id,
                    "transaction_id": transaction_id,
                    "created_at": now,
                }
                for r in rows
            ],
        )
        changes = await ledger.insert_new(rows, transaction_id=transaction_id)
        await journal_mod.append(connection, transaction_id, "first_transfer", changes, actor=actor, at=now)

    # ---- outgoing: the final status (S1) -----------------------------------------------------------------

    async def _lock_transfer(self, connection: AsyncConnection, transfer_id: str) -> Row | None:
        query = select(irx_transfer).where(irx_transfer.c.transfer_id == transfer_id)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        return (await connection.execute(query)).mappings().one_or_none()

    async def _claim_final(
        self,
        connection: AsyncConnection,
        transfer: Row,
        status: TransferStatus,
        codes: Sequence[TransferCode],
        now: datetime,
        decision_message_id: str | None,
        *open_: Any,
    ) -> dict[str, Any] | None:
        """S1: write F on the transfer row if it is still open (`open_`: the conditions saying so); the
        linked transaction's row when this call decided, None when F was decided already."""
        decided = await connection.execute(
            update(irx_transfer)
            .where(irx_transfer.c.transfer_id == transfer["transfer_id"], *open_)
            .values(
                status=status.value,
                decided_at=now,
                updated_at=now,
                codes=_codes_json(codes),
                decision_message_id=decision_message_id,
            )
        )
        if not decided.rowcount:
            return None
        return await transaction_row(connection, transfer["transaction_id"])

    async def _finish_outgoing(
        self,
        connection: AsyncConnection,
        transfer: Row,
        status: TransferStatus,
        codes: Sequence[TransferCode],
        *,
        actor: str,
        now: datetime,
        registry_row: Row | None = None,
        decision_message_id: str | None = None,
    ) -> bool:
        """Decide F of a `sent` outgoing transfer: compare-and-set, unit moves, journal, transaction,
        event and the inbox F message, all in the caller's transaction. False when F was decided already."""
        transfer_id = transfer["transfer_id"]
        tx = await self._claim_final(
            connection,
            transfer,
            status,
            codes,
            now,
            decision_message_id,
            irx_transfer.c.status.in_(_OPEN_STATUSES),
        )
        if tx is None:
            return False
        transaction_id = transfer["transaction_id"]
        registry_row = registry_row or await repository.get_registry(connection, transfer["registry_id"])
        assert registry_row is not None
        ledger = Ledger(connection, now=now)
        first = tx["type"] == catalogue.FIRST_TRANSFER
        if first and status is TransferStatus.COMPLETED:
            await self._create_first_transferred(connection, ledger, transfer, tx, actor=actor, now=now)
        reserved = await ledger.reserved_by(transaction_id)
        if status is TransferStatus.COMPLETED:
            gone = [
                replace(
                    b,
                    state="transferred_out",
                    account_id=None,
                    reserved_by=None,
                    to_registry_id=transfer["registry_id"],
                    transfer_id=transfer_id,
                )
                for b in reserved
            ]
            changes = await ledger.replace(reserved, gone, transaction_id=transaction_id)
            await journal_mod.append(connection, transaction_id, "transfer_out", changes, actor=actor, at=now)
            final_rows = [replace(b, id=None) for b in gone]
            tx |= {
                "status": TransactionStatus.COMPLETED.value,
                "completed_at": now,
                "updated_at": now,
                "blocks": _wire([to_block(b) for b in final_rows]),
                "actions": _wire(
                    first_transfer_actions(tx, registry_row["party"], transfer["blocks"])
                    if first
                    else outgoing_actions(tx, registry_row["party"])
                ),
            }
            await connection.execute(
                update(transactions)
                .where(transactions.c.transaction_id == transaction_id)
                .values(
                    status=tx["status"],
                    completed_at=now,
                    updated_at=now,
                    blocks=tx["blocks"],
                    actions=tx["actions"],
                )
            )
            await self.ledgers._publish(connection, transaction_from_row(tx), tx)
        else:
            released = [replace(b, state="held", reserved_by=None) for b in reserved]
            changes = await ledger.replace(reserved, released, transaction_id=transaction_id)
            await journal_mod.append(connection, transaction_id, "release", changes, actor=actor, at=now)
            final_rows = [replace(b, id=None) for b in reserved]
            await connection.execute(
                update(transactions)
                .where(transactions.c.transaction_id == transaction_id)
                .values(
                    status=status.value,
                    updated_at=now,
                    checks=[{"code": str(c.code), "message": c.message} for c in codes],
                )
            )
        final = TransferFinal(
            transfer_id=transfer_id,
            direction=TransferDirection.IR_TO_REGISTRY,
            status=status,
            decided_at=now,
            codes=list(codes),
            from_registry=tx["from_registry_id"],
            from_account=tx["from_account"],
            to_registry=transfer["registry_id"],
            to_account=tx["to_account"],
            quantity=tx["quantity"],
            blocks=[TransferBlock.model_validate(b) for b in transfer["blocks"]],
        )
        await self._send_final(
            connection, registry_row, transfer, final, DIRECTION_OUT, tx["from_party"], transaction_id
        )
        return True

    async def _send_final(
        self,
        connection: AsyncConnection,
        registry_row: Row,
        transfer: Row,
        final: TransferFinal,
        direction: str,
        party: str | None,
        transaction_id: str | None,
    ) -> None:
        """The F message of a recorded transfer: queued for the registry's inbox, linked to the transfer row,
        and announced to the IR Party, in the caller's transaction."""
        message_id = await self.irx.enqueue(
            connection, registry_row, final.message_type, final, transfer_id=final.transfer_id
        )
        await connection.execute(
            update(irx_transfer)
            .where(irx_transfer.c.transfer_id == final.transfer_id)
            .values(final_message_id=message_id)
        )
        await self._announce(
            connection,
            party,
            transfer_id=final.transfer_id,
            direction=direction,
            registry_id=transfer["registry_id"],
            status=final.status.value,
            transaction_id=transaction_id,
            quantity=final.quantity,
            respond_by=_utc(transfer["respond_by"]),
            decided_at=final.decided_at,
            codes=final.codes,
        )
        log.info(
            "irx_transfer_final",
            transfer_id=final.transfer_id,
            status=final.status.value,
            direction=direction,
        )

    async def respond(
        self,
        principal: Principal,
        transfer_id: str,
        raw: bytes,
        *,
        idempotency_key: str | None,
        signature: str | None,
    ) -> Answer:
        """`POST /v1/interregistry/transfers/{transfer_id}/response` (registry): R's vote on a proposal."""

        async def process(connection: AsyncConnection, received: Received) -> Answer:
            response = received.body
            assert isinstance(response, TransferResponse)
            if response.transfer_id != transfer_id:
                raise IrxRefused(IrxCode.MALFORMED_MESSAGE, "body transfer_id differs from the path.")
            registry_id = received.registry["registry_id"]
            transfer = await self._lock_transfer(connection, transfer_id)
            if (
                transfer is None
                or transfer["direction"] != DIRECTION_OUT
                or transfer["registry_id"] != registry_id
                or transfer["status"] == TransferStatus.AWAITING_APPROVAL.value
            ):
                raise IrxRefused(
                    IrxCode.TRANSFER_UNKNOWN, f"No transfer {transfer_id} was proposed to {registry_id}."
                )
            if transfer["status"] != TransferStatus.SENT.value:
                return Answer(
                    409,
                    final_problem(
                        transfer_id, transfer["status"], _utc(transfer["decided_at"]), transfer["codes"]
                    ),
                )
            now = received.received_at
            if response.decision == "accept":
                status, codes = TransferStatus.COMPLETED, []
            else:
                status, codes = TransferStatus.REJECTED, normalise_rejection_codes(response.codes)
            done = await self._finish_outgoing(
                connection,
                transfer,
                status,
                codes,
                actor=f"registry:{registry_id}",
                now=now,
                registry_row=received.registry,
                decision_message_id=str(received.envelope.message_id),
            )
            if not done:  # cannot happen under the row lock; kept as the rule S1 states it
                again = await self._lock_transfer(connection, transfer_id)
                assert again is not None
                return Answer(
                    409,
                    final_problem(transfer_id, again["status"], _utc(again["decided_at"]), again["codes"]),
                )
            decision = TransferDecision(transfer_id=transfer_id, status=status, decided_at=now, codes=codes)
            return Answer(200, decision.model_dump(mode="json"))

        answer = await self.irx.receive(
            principal,
            raw,
            idempotency_key=idempotency_key,
            signature=signature,
            accepts=frozenset({IrxMessageType.TRANSFER_RESPONSE}),
            process=process,
        )
        if not answer.replayed:
            crashpoints.reach("after_decision_commit_before_response")
            self._notify()
        return answer

    async def terminate_due(self, now: datetime | None = None) -> int:
        """The terminator (S7): every `sent` outgoing transfer past `respond_by` becomes `terminated` (6001),
        its units released and `transfer.terminated` in the registry's inbox. Returns how many."""
        now = now or self.clock()
        async with self.db.read() as session:
            due = (
                (
                    await session.execute(
                        select(irx_transfer.c.transfer_id).where(
                            irx_transfer.c.status == TransferStatus.SENT.value,
                            irx_transfer.c.respond_by <= now,
                        )
                    )
                )
                .scalars()
                .all()
            )
        done = 0
        for transfer_id in due:
            async with self.db.connect() as connection:
                transfer = await self._lock_transfer(connection, transfer_id)
                if transfer is None or transfer["status"] != TransferStatus.SENT.value:
                    continue  # decided meanwhile (an accept, a cancel): that F stands
                respond_by = _utc(transfer["respond_by"])
                if respond_by is None or respond_by > now:
                    continue
                if await self._finish_outgoing(
                    connection,
                    transfer,
                    TransferStatus.TERMINATED,
                    [_code(IrxCode.TERMINATED, f"no answer by {respond_by.isoformat()}")],
                    actor="system:irx-terminator",
                    now=now,
                ):
                    done += 1
        if done:
            self._notify()
        return done

    async def cancel_for_sections(self, now: datetime | None = None) -> int:
        """`sent` outgoing transfers of an IR Party section that is no longer open (suspended, closing,
        closed) are cancelled with 3003 (§5 status machine); run with the terminator. Returns how many."""
        now = now or self.clock()
        async with self.db.read() as session:
            open_ones = (
                await session.execute(
                    select(irx_transfer.c.transfer_id, transactions.c.from_party)
                    .join(transactions, transactions.c.transaction_id == irx_transfer.c.transaction_id)
                    .where(
                        irx_transfer.c.status == TransferStatus.SENT.value,
                        irx_transfer.c.direction == DIRECTION_OUT,
                    )
                )
            ).all()
        closed: dict[str, str] = {}
        for party in sorted({party for _, party in open_ones}):
            section = await self.directory.section(party)  # before any write transaction, as always
            if section is None or section.status is not SectionStatus.OPEN:
                closed[party] = section.status.value if section else "unknown"
        done = 0
        for transfer_id, party in open_ones:
            if party not in closed:
                continue
            async with self.db.connect() as connection:
                transfer = await self._lock_transfer(connection, transfer_id)
                if transfer is None or transfer["status"] != TransferStatus.SENT.value:
                    continue
                if await self._finish_outgoing(
                    connection,
                    transfer,
                    TransferStatus.CANCELLED,
                    [_code(IrxCode.SECTION_NOT_OPEN, f"the IR Party section of {party} is {closed[party]}")],
                    actor="system:irx-terminator",
                    now=now,
                ):
                    done += 1
        if done:
            self._notify()
        return done

    async def cancel_sent(self, principal: Principal, transaction_id: str) -> Transaction | None:
        """The IR initiator withdraws a `sent` outgoing transfer (6002); None when the transaction is not one
        (the ledger's own cancel then answers)."""
        async with self.db.read() as session:
            row = await transaction_row(session, transaction_id)
        if (
            row is None
            or row["interregistry"] is None
            or row["from_party"] != principal.party
            or row["status"] != TransactionStatus.SENT.value
        ):
            return None
        now = self.clock()
        transfer_id = row["interregistry"]["transfer_id"]
        async with self.db.connect() as connection:
            transfer = await self._lock_transfer(connection, transfer_id)
            assert transfer is not None
            done = transfer["status"] == TransferStatus.SENT.value and await self._finish_outgoing(
                connection,
                transfer,
                TransferStatus.CANCELLED,
                [_code(IrxCode.CANCELLED, "cancelled by the transferring side before a decision")],
                actor=principal.client_id,
                now=now,
            )
            if not done:
                raise Conflict(
                    f"The transfer is {transfer['status']}.",
                    slug="transaction-not-pending",
                    transaction_status=transfer["status"],
                )
            current = await transaction_row(connection, transaction_id)
            assert current is not None
        self._notify()
        return transaction_from_row(current)

    async def _terminator(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.terminate_due()
                await self.terminate_incoming_due()
                await self.cancel_for_sections()
            except Exception:  # the terminator must outlive a transient failure
                log.exception("irx_terminator_failed")

    def start(self, interval: float) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._terminator(interval))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ---- incoming (§6) ---------------------------------------------------------------------------------

    async def _lookups(self, principal: Principal, raw: bytes) -> _Lookups | None:
        """party_sections' view of a proposal, read before the write transaction (best effort: a body that
        does not parse is refused by the pipeline anyway)."""
        if not principal.has(Role.REGISTRY):
            return None
        try:
            document = loads(raw)
            proposal = TransferProposal.model_validate(document["body"])
        except (CanonicalizationError, ValueError, KeyError, TypeError):
            return None
        account = None
        if account_party(proposal.to_account) == proposal.acquiring_party:
            account = await self.directory.account(proposal.to_account)
        section = (
            await self.directory.section(proposal.acquiring_party)
            if is_party(proposal.acquiring_party)
            else None
        )
        participants: dict[str, frozenset[str] | None] = {}
        for ca_id in sorted({b.ca_id for b in proposal.blocks})[:100]:
            found = await self.irx.peers.request(
                "party_sections", "GET", f"/internal/v1/cooperative-approaches/{ca_id}"
            )
            if found.status_code == 404:
                participants[ca_id] = None
            elif found.status_code == 200:
                participants[ca_id] = frozenset(CooperativeApproach.model_validate(found.json()).participants)
            else:
                raise ServiceUnavailable(
                    f"party_sections answered {found.status_code} about {ca_id}.", slug="upstream-unavailable"
                )
        return _Lookups(account, section, participants)

    async def incoming(
        self, principal: Principal, raw: bytes, *, idempotency_key: str | None, signature: str | None
    ) -> Answer:
        """`POST /v1/interregistry/transfers` (registry): a proposal into an IR account, decided at once."""
        lookups = await self._lookups(principal, raw)

        async def process(connection: AsyncConnection, received: Received) -> Answer:
            return await self._decide_incoming(connection, received, lookups)

        answer = await self.irx.receive(
            principal,
            raw,
            idempotency_key=idempotency_key,
            signature=signature,
            accepts=frozenset({IrxMessageType.TRANSFER_PROPOSAL}),
            process=process,
        )
        if not answer.replayed:
            crashpoints.reach("after_decision_commit_before_response")
            self._notify()
        return answer

    @staticmethod
    def _check_sender(proposal_or_cancel: Any, registry_row: Row) -> None:
        registry_id = registry_row["registry_id"]
        if not proposal_or_cancel.transfer_id.startswith(f"{registry_id}-"):
            raise IrxRefused(
                IrxCode.SENDER_MISMATCH, f"A transfer id of {registry_id} starts with {registry_id}-."
            )
        if isinstance(proposal_or_cancel, TransferProposal) and (
            proposal_or_cancel.from_registry != registry_id
            or proposal_or_cancel.transferring_party != registry_row["party"]
        ):
            raise IrxRefused(
                IrxCode.SENDER_MISMATCH,
                f"from_registry and transferring_party must be {registry_id} and {registry_row['party']}.",
            )

    def _judge(
        self, proposal: TransferProposal, lookups: _Lookups | None, now: datetime
    ) -> list[TransferCode]:
        """Check groups 3–5 of §6 (the first failing group decides; each group's codes are all collected)."""
        codes = structure_codes(proposal, current_year=now.year)
        for block in proposal.blocks:
            if block.origin_registry_id[:3] != block.first_transferring_party:
                codes.append(
                    _code(
                        IrxCode.UNIQUE_ID_INCONSISTENT,
                        f"{block.origin_registry_id} is not a registry of {block.first_transferring_party}",
                        block.unique_id_first,
                    )
                )
            if block.conversion_factor is not None and not _decimal(block.conversion_factor):
                codes.append(
                    _code(IrxCode.VOCABULARY, "conversion_factor is not a decimal", block.unique_id_first)
                )
        if codes:
            return codes
        assert lookups is not None
        for ca_id in sorted({b.ca_id for b in proposal.blocks}):
            participants = lookups.participants.get(ca_id)
            if participants is None:
                codes.append(_code(IrxCode.COOPERATIVE_APPROACH_UNKNOWN, f"no cooperative approach {ca_id}"))
                continue
            parties = {proposal.transferring_party, proposal.acquiring_party}
            parties |= {b.first_transferring_party for b in proposal.blocks if b.ca_id == ca_id}
            missing = sorted(parties - participants)
            if missing:
                codes.append(
                    _code(
                        IrxCode.PARTY_NOT_PARTICIPATING, f"{', '.join(missing)} not participating in {ca_id}"
                    )
                )
        if codes:
            return codes
        section, account = lookups.section, lookups.account
        if (
            section is None
            or section.registry_id != proposal.to_registry
            or section.status is not SectionStatus.OPEN
        ):
            return [
                _code(IrxCode.SECTION_NOT_OPEN, f"{proposal.to_registry} is not an open IR Party section")
            ]
        if (
            account is None
            or account.party != proposal.acquiring_party
            or account.registry_id != proposal.to_registry
        ):
            return [_code(IrxCode.ACCOUNT_DOES_NOT_EXIST, f"no account {proposal.to_account}")]
        if account.status is AccountStatus.CLOSED:
            codes.append(_code(IrxCode.ACCOUNT_CLOSED, f"{proposal.to_account} is closed"))
        elif account.status is not AccountStatus.OPEN:
            codes.append(
                _code(IrxCode.ACCOUNT_NOT_ELIGIBLE, f"{proposal.to_account} is {account.status.value}")
            )
        if account.type is not AccountType.HOLDING:
            codes.append(
                _code(IrxCode.ACCOUNT_NOT_ELIGIBLE, f"{proposal.to_account} is not a holding account")
            )
        for block in proposal.blocks:
            if block.authorized_parties and proposal.acquiring_party not in block.authorized_parties:
                codes.append(
                    _code(
                        IrxCode.NOT_AUTHORIZED_FOR_PARTY,
                        f"authorization {block.authorization_id} does not name {proposal.acquiring_party}",
                        block.unique_id_first,
                    )
                )
            if not block.first_transferred and proposal.sender_action != "first_transfer":
                codes.append(
                    _code(
                        IrxCode.PARTY_POLICY,
                        "the units are not ITMOs (never first transferred)",
                        block.unique_id_first,
                    )
                )
        return codes

    async def _decide_incoming(
        self, connection: AsyncConnection, received: Received, lookups: _Lookups | None
    ) -> Answer:
        proposal = received.body
        assert isinstance(proposal, TransferProposal)
        registry_row = received.registry
        self._check_sender(proposal, registry_row)
        now = received.received_at
        transfer_id = proposal.transfer_id
        digest = body_sha256(received.document["body"])
        existing = await self._lock_transfer(connection, transfer_id)
        if existing is not None:
            if existing["direction"] == DIRECTION_IN and existing["proposal_sha256"] == digest:
                return _repeat_answer(existing)  # S6: the same decision
            if existing["direction"] == DIRECTION_IN and existing["proposal_sha256"] is None:
                # A tombstone (S8): the sender gave this id up before the IR saw it.
                problem = final_problem(
                    transfer_id, existing["status"], _utc(existing["decided_at"]), existing["codes"]
                )
                problem["code"] = int(IrxCode.CANCELLED)
                return Answer(409, problem)
            reused = [_code(IrxCode.TRANSFER_ID_REUSED, f"{transfer_id} was used with other content")]
            return Answer(422, rejected_problem(transfer_id, reused))  # not recorded: the first one stands
        codes = self._judge(proposal, lookups, now)
        ledger = Ledger(connection, now=now)
        verdicts = []
        current: list[BlockRow] = []
        if not codes:
            assert lookups is not None and lookups.account is not None and lookups.section is not None
            current = await ledger.overlapping(
                [SerialRange(b.ca_id, b.origin_registry_id, b.first, b.last) for b in proposal.blocks]
            )
            ir_origins = {lookups.section.registry_id}
            for block in proposal.blocks:
                incoming = block_row(block, state="held", party=proposal.acquiring_party)
                verdict = serial_history(
                    incoming,
                    current,
                    registry_id=registry_row["registry_id"],
                    ir_origin=await self._is_ir_section(block.origin_registry_id, ir_origins),
                )
                for code, message in verdict.codes:
                    codes.append(
                        TransferCode(code=code, message=message, unique_id_first=block.unique_id_first)
                    )
                verdicts.append((block, incoming, verdict))
            frozen = await pair_frozen(
                connection, registry_row["registry_id"], {(b.ca_id, b.vintage) for b in proposal.blocks}
            )
            for ca_id, vintage, reconciliation_id in frozen:
                codes.append(
                    _code(
                        IrxCode.PAIR_FROZEN,
                        f"{ca_id} vintage {vintage} is frozen by reconciliation {reconciliation_id}",
                    )
                )
        if codes:
            # The IR Party hears of a refused proposal only when it names that Party's open section.
            section = lookups.section if lookups is not None else None
            party = (
                section.party
                if section is not None
                and section.registry_id == proposal.to_registry
                and section.party == proposal.acquiring_party
                else None
            )
            return await self._reject_incoming(connection, received, proposal, digest, codes, party)
        assert lookups is not None and lookups.account is not None
        assert lookups.section is not None  # the destination group (3003) refuses a proposal without one
        if lookups.section.incoming_acceptance is IncomingAcceptance.MANUAL:
            return await self._hold_incoming(
                connection, received, proposal, digest, ledger, current, verdicts, lookups.account
            )
        return await self._accept_incoming(
            connection, received, proposal, digest, ledger, current, verdicts, lookups.account
        )

    async def _is_ir_section(self, registry_id: str, known: set[str]) -> bool:
        """Whether an origin registry id is an IR Party section's (4008 for serials it never issued)."""
        if registry_id in known:
            return True
        if not is_party(registry_id[:3]):
            return False
        section = await self.directory.section(registry_id[:3])
        return section is not None and section.registry_id == registry_id

    def _final(
        self, proposal: TransferProposal, status: TransferStatus, now: datetime, codes: Sequence[TransferCode]
    ) -> TransferFinal:
        return TransferFinal(
            transfer_id=proposal.transfer_id,
            direction=TransferDirection.REGISTRY_TO_IR,
            status=status,
            decided_at=now,
            codes=list(codes),
            from_registry=proposal.from_registry,
            from_account=proposal.from_account,
            to_registry=proposal.to_registry,
            to_account=proposal.to_account,
            quantity=proposal.quantity,
            blocks=proposal.blocks,
        )

    async def _record_incoming(
        self,
        connection: AsyncConnection,
        received: Received,
        proposal: TransferProposal,
        digest: str,
        *,
        status: TransferStatus,
        codes: Sequence[TransferCode],
        transaction_id: str | None,
        answer: Answer,
        party: str | None,
    ) -> Answer:
        now = received.received_at
        final = self._final(proposal, status, now, codes)
        await self._announce(
            connection,
            party,
            transfer_id=proposal.transfer_id,
            direction=DIRECTION_IN,
            registry_id=received.registry["registry_id"],
            status=status.value,
            transaction_id=transaction_id,
            quantity=proposal.quantity,
            decided_at=now,
            codes=codes,
        )
        message_id = await self.irx.enqueue(
            connection, received.registry, final.message_type, final, transfer_id=proposal.transfer_id
        )
        await connection.execute(
            insert(irx_transfer).values(
                transfer_id=proposal.transfer_id,
                direction=DIRECTION_IN,
                registry_id=received.registry["registry_id"],
                transaction_id=transaction_id,
                status=status.value,
                respond_by=None,
                quantity=proposal.quantity,
                blocks=_codes_json(proposal.blocks),
                codes=_codes_json(codes),
                proposal_sha256=digest,
                proposal_message_id=str(received.envelope.message_id),
                decision_message_id=str(received.envelope.message_id),
                final_message_id=message_id,
                response_status=answer.status,
                response_body=answer.body,
                created_at=now,
                updated_at=now,
                decided_at=now,
            )
        )
        log.info("irx_transfer_final", transfer_id=proposal.transfer_id, status=status.value, direction="in")
        return answer

    async def _reject_incoming(
        self,
        connection: AsyncConnection,
        received: Received,
        proposal: TransferProposal,
        digest: str,
        codes: Sequence[TransferCode],
        party: str | None,
    ) -> Answer:
        answer = Answer(422, rejected_problem(proposal.transfer_id, codes))
        return await self._record_incoming(
            connection,
            received,
            proposal,
            digest,
            status=TransferStatus.REJECTED,
            codes=codes,
            transaction_id=None,
            answer=answer,
            party=party,
        )

    async def _accept_incoming(
        self,
        connection: AsyncConnection,
        received: Received,
        proposal: TransferProposal,
        digest: str,
        ledger: Ledger,
        current: list[BlockRow],
        verdicts: list[tuple[TransferBlock, BlockRow, Any]],
        account: AccountLookup,
    ) -> Answer:
        now = received.received_at
        registry_row = received.registry
        transaction_id = new_transaction_id()
        actor = f"registry:{registry_row['registry_id']}"
        place: dict[str, Any] = {
            "state": "held",
            "account_id": account.account_id,
            "party": account.party,
            "reserved_by": None,
            "to_registry_id": None,
            "transfer_id": None,
        }
        arrived: list[BlockRow] = []
        returning = [r for _, _, verdict in verdicts for r in verdict.returning]
        if returning:
            # A return: the ranges leave `transferred_out` (split where only part comes back) and coalesce
            # with what they left beside in the account, when identical.
            out = [b for b in current if b.state == "transferred_out"]
            takes = take_ranges(out, returning)
            rest, moved = move(takes, **place)
            changes = await ledger.replace(_unique_blocks(takes), rest + moved, transaction_id=transaction_id)
            await journal_mod.append(connection, transaction_id, "return_in", changes, actor=actor, at=now)
            arrived += moved
        fresh_rows = [
            incoming.piece(r.first, r.last, **place)
            for _, incoming, verdict in verdicts
            for r in verdict.fresh
        ]
        if fresh_rows:
            changes = await ledger.insert_new(fresh_rows, transaction_id=transaction_id)
            await journal_mod.append(connection, transaction_id, "transfer_in", changes, actor=actor, at=now)
            await connection.execute(
                insert(issued_ranges),
                [
                    {
                        "ca_id": r.ca_id,
                        "origin_registry_id": r.origin_registry_id,
                        "first_serial": r.first_serial,
                        "last_serial": r.last_serial,
                        "first_transferring_party": r.first_transferring_party,
                        "authorization_id": r.authorization_id,
                        "transaction_id": transaction_id,
                        "created_at": now,
                        "acquired_from_registry": registry_row["registry_id"],
                    }
                    for r in fresh_rows
                ],
            )
            arrived += fresh_rows
        arrived.sort(key=lambda b: (b.ca_id, b.origin_registry_id, b.first_serial))
        row: dict[str, Any] = {
            "transaction_id": transaction_id,
            "type": TransactionType.TRANSFER.value,
            "status": TransactionStatus.COMPLETED.value,
            "party": None,
            "from_account": proposal.from_account,
            "to_account": account.account_id,
            "from_party": registry_row["party"],
            "to_party": account.party,
            "from_registry_id": registry_row["registry_id"],
            "to_registry_id": account.registry_id,
            "quantity": sum(b.quantity for b in arrived),
            "ndc_use_year": None,
            "purpose": None,
            "using_entity_id": None,
            "note": proposal.note,
            "initiated_by": actor,
            "approved_by": None,
            "checks": [],
            "actions": _wire(incoming_actions(registry_row["party"], account.party, account.registry_id)),
            "blocks": _wire([to_block(replace(b, id=None)) for b in arrived]),
            "created_at": now,
            "updated_at": now,
            "completed_at": now,
            "interregistry": self._link(
                proposal.transfer_id, DIRECTION_IN, registry_row["registry_id"], None
            ),
        }
        await connection.execute(insert(transactions), row)
        await self.ledgers._publish(connection, transaction_from_row(row), row, party=account.party)
        decision = TransferDecision(
            transfer_id=proposal.transfer_id,
            status=TransferStatus.COMPLETED,
            decided_at=now,
            codes=[],
            ir_transaction_id=transaction_id,
        )
        answer = Answer(201, decision.model_dump(mode="json"))
        return await self._record_incoming(
            connection,
            received,
            proposal,
            digest,
            status=TransferStatus.COMPLETED,
            codes=[],
            transaction_id=transaction_id,
            answer=answer,
            party=account.party,
        )

    # ---- incoming under manual acceptance (§6) -----------------------------------------------------------

    async def _hold_incoming(
        self,
        connection: AsyncConnection,
        received: Received,
        proposal: TransferProposal,
        digest: str,
        ledger: Ledger,
        current: list[BlockRow],
        verdicts: list[tuple[TransferBlock, BlockRow, Any]],
        account: AccountLookup,
    ) -> Answer:
        """A proposal that passed every check, into a section that accepts manually: the units arrive
        `pending_in` (not spendable; a later proposal of them gets 4002), the transaction and the transfer
        wait `awaiting_approval` until the Party's approver, the sender's cancel or `respond_by` decides.
        `pending` keeps what each range was before, so a refusal restores it exactly."""
        now = received.received_at
        registry_row = received.registry
        registry_id = registry_row["registry_id"]
        transaction_id = new_transaction_id()
        actor = f"registry:{registry_id}"
        respond_by = now + timedelta(seconds=registry_row["response_timeout_s"])
        place: dict[str, Any] = {
            "state": "pending_in",
            "account_id": account.account_id,
            "party": account.party,
            "reserved_by": None,
            "to_registry_id": None,
            "transfer_id": proposal.transfer_id,
        }
        pending: list[dict[str, Any]] = []
        arrived: list[BlockRow] = []
        returning = [r for _, _, verdict in verdicts for r in verdict.returning]
        if returning:
            takes = take_ranges([b for b in current if b.state == "transferred_out"], returning)
            pending += [
                {
                    **_range_json(t.block.ca_id, t.block.origin_registry_id, t.first, t.last),
                    "kind": "return",
                    "party": t.block.party,
                    "to_registry_id": t.block.to_registry_id,
                    "transfer_id": t.block.transfer_id,
                }
                for t in takes
            ]
            rest, moved = move(takes, **place)
            changes = await ledger.replace(_unique_blocks(takes), rest + moved, transaction_id=transaction_id)
            # Journaled as a reservation: nothing is acquired until the decision (I5 counts that entry).
            await journal_mod.append(connection, transaction_id, "reserve", changes, actor=actor, at=now)
            arrived += moved
        fresh_rows = [
            incoming.piece(r.first, r.last, **place)
            for _, incoming, verdict in verdicts
            for r in verdict.fresh
        ]
        if fresh_rows:
            changes = await ledger.insert_new(fresh_rows, transaction_id=transaction_id)
            await journal_mod.append(connection, transaction_id, "reserve", changes, actor=actor, at=now)
            # Origins for I2 while the rows exist; deleted with them if the transfer is refused.
            await connection.execute(
                insert(issued_ranges), _issued(fresh_rows, transaction_id, registry_id, now)
            )
            pending += [
                {
                    **_range_json(r.ca_id, r.origin_registry_id, r.first_serial, r.last_serial),
                    "kind": "fresh",
                }
                for r in fresh_rows
            ]
            arrived += fresh_rows
        arrived.sort(key=lambda b: (b.ca_id, b.origin_registry_id, b.first_serial))
        link = self._link(proposal.transfer_id, DIRECTION_IN, registry_id, respond_by)
        # `from_party` stays NULL until the decision: the ledger's own approve and cancel (which find pending
        # transactions by `from_party`) must not see this one; the decision is the acquiring Party's.
        row: dict[str, Any] = {
            "transaction_id": transaction_id,
            "type": TransactionType.TRANSFER.value,
            "status": TransactionStatus.AWAITING_APPROVAL.value,
            "party": None,
            "from_account": proposal.from_account,
            "to_account": account.account_id,
            "from_party": None,
            "to_party": account.party,
            "from_registry_id": registry_id,
            "to_registry_id": account.registry_id,
            "quantity": sum(b.quantity for b in arrived),
            "ndc_use_year": None,
            "purpose": None,
            "using_entity_id": None,
            "note": proposal.note,
            "initiated_by": actor,
            "approved_by": None,
            "checks": [],
            "actions": [],
            "blocks": _wire([to_block(replace(b, id=None)) for b in arrived]),
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
            "expires_at": None,
            "interregistry": link,
        }
        await connection.execute(insert(transactions), row)
        decision = TransferDecision(
            transfer_id=proposal.transfer_id,
            status=TransferStatus.AWAITING_APPROVAL,
            decided_at=None,
            codes=[],
            ir_transaction_id=transaction_id,
            respond_by=respond_by,
        )
        answer = Answer(202, decision.model_dump(mode="json"))
        await connection.execute(
            insert(irx_transfer).values(
                transfer_id=proposal.transfer_id,
                direction=DIRECTION_IN,
                registry_id=registry_id,
                transaction_id=transaction_id,
                status=TransferStatus.AWAITING_APPROVAL.value,
                respond_by=respond_by,
                quantity=proposal.quantity,
                blocks=_codes_json(proposal.blocks),
                codes=[],
                proposal_sha256=digest,
                proposal_message_id=str(received.envelope.message_id),
                response_status=answer.status,
                response_body=answer.body,
                pending=pending,
                created_at=now,
                updated_at=now,
            )
        )
        # The acquiring Party's approver decides before `respond_by`: its feed and webhooks say so.
        await self._announce(
            connection,
            account.party,
            transfer_id=proposal.transfer_id,
            direction=DIRECTION_IN,
            registry_id=registry_id,
            status=TransferStatus.AWAITING_APPROVAL.value,
            transaction_id=transaction_id,
            quantity=row["quantity"],
            respond_by=respond_by,
        )
        log.info("irx_transfer_awaiting_approval", transfer_id=proposal.transfer_id, respond_by=respond_by)
        return answer

    async def _finish_incoming(
        self,
        connection: AsyncConnection,
        transfer: Row,
        status: TransferStatus,
        codes: Sequence[TransferCode],
        *,
        actor: str,
        now: datetime,
        decision_message_id: str | None = None,
    ) -> bool:
        """Decide F of an incoming transfer awaiting approval (S1: compare-and-set from `awaiting_approval`):
        `completed` makes the pending units `held`; any other F drops them (never-seen ranges deleted with
        their `issued_ranges`, returns back to `transferred_out` as they were). The transaction, the event
        and the inbox F message go in the caller's transaction. False when F was decided already."""
        transfer_id = transfer["transfer_id"]
        tx = await self._claim_final(
            connection,
            transfer,
            status,
            codes,
            now,
            decision_message_id,
            irx_transfer.c.direction == DIRECTION_IN,
            irx_transfer.c.status == TransferStatus.AWAITING_APPROVAL.value,
        )
        if tx is None:
            return False
        transaction_id = transfer["transaction_id"]
        registry_row = await repository.get_registry(connection, transfer["registry_id"])
        assert registry_row is not None
        pending = list(transfer["pending"] or [])
        ranges = [SerialRange(p["ca_id"], p["origin_registry_id"], p["first"], p["last"]) for p in pending]
        ledger = Ledger(connection, now=now)
        rows = [
            b
            for b in await ledger.overlapping(ranges)
            if b.state == "pending_in" and b.transfer_id == transfer_id
        ]
        takes = take_ranges(rows, ranges)
        completed = status is TransferStatus.COMPLETED
        final_rows: list[BlockRow] = []
        for take in takes:
            entry = next(
                p
                for p in pending
                if (p["ca_id"], p["origin_registry_id"]) == (take.block.ca_id, take.block.origin_registry_id)
                and p["first"] <= take.first <= p["last"]
            )
            if completed:
                final_rows.append(take.block.piece(take.first, take.last, state="held", transfer_id=None))
            elif entry["kind"] == "return":
                final_rows.append(
                    take.block.piece(
                        take.first,
                        take.last,
                        state="transferred_out",
                        account_id=None,
                        party=entry["party"],
                        to_registry_id=entry["to_registry_id"],
                        transfer_id=entry["transfer_id"],
                    )
                )
        changes = await ledger.replace(_unique_blocks(takes), final_rows, transaction_id=transaction_id)
        if completed:
            entry_type = "transfer_in" if any(p["kind"] == "fresh" for p in pending) else "return_in"
        else:
            entry_type = "release"
            await connection.execute(
                delete(issued_ranges).where(issued_ranges.c.transaction_id == transaction_id)
            )
        await journal_mod.append(connection, transaction_id, entry_type, changes, actor=actor, at=now)
        values: dict[str, Any] = {
            "status": status.value,
            "from_party": registry_row["party"],
            "updated_at": now,
        }
        if completed:
            arrived = sorted(
                (replace(b, id=None) for b in final_rows),
                key=lambda b: (b.ca_id, b.origin_registry_id, b.first_serial),
            )
            values |= {
                "approved_by": actor,
                "completed_at": now,
                "blocks": _wire([to_block(b) for b in arrived]),
                "actions": _wire(
                    incoming_actions(registry_row["party"], tx["to_party"], tx["to_registry_id"])
                ),
            }
        else:
            values["checks"] = [{"code": str(c.code), "message": c.message} for c in codes]
        await connection.execute(
            update(transactions).where(transactions.c.transaction_id == transaction_id).values(**values)
        )
        tx |= values
        if completed:
            await self.ledgers._publish(connection, transaction_from_row(tx), tx, party=tx["to_party"])
        final = TransferFinal(
            transfer_id=transfer_id,
            direction=TransferDirection.REGISTRY_TO_IR,
            status=status,
            decided_at=now,
            codes=list(codes),
            from_registry=transfer["registry_id"],
            from_account=tx["from_account"],
            to_registry=tx["to_registry_id"],
            to_account=tx["to_account"],
            quantity=transfer["quantity"],
            blocks=[TransferBlock.model_validate(b) for b in transfer["blocks"]],
        )
        await self._send_final(
            connection, registry_row, transfer, final, DIRECTION_IN, tx["to_party"], transaction_id
        )
        return True

    async def decide_incoming(
        self, principal: Principal, row: Row, claim: Claim, *, accept: bool, reason: str | None
    ) -> LedgerAnswer:
        """`POST /v1/transactions/{id}/approve|reject` of an incoming transfer (`Ledgers` hands over a
        transaction whose `interregistry.direction` is `registry_to_ir`): an approver of the acquiring Party
        decides it while it awaits approval. One approver suffices: a registry proposed it, so there is no
        initiator of this Party to be the first pair of eyes. Accepting re-reads the destination account and
        section (3003, 5903: 422 `check-failed`, the transfer stays pending). Answers the transaction, as the
        ledger's own approve does; 409 `transaction-not-pending` (code 6003) once F was decided."""
        transaction_id = row["transaction_id"]
        if row["to_party"] != principal.party:
            raise NotFound(f"No transaction {transaction_id} of your Party.")
        path = f"/v1/transactions/{transaction_id}/{'approve' if accept else 'reject'}"
        transfer_id = row["interregistry"]["transfer_id"]
        failed: list[CheckResult] = []
        if accept:
            account = await self.directory.account(row["to_account"])
            section = await self.directory.section(row["to_party"])
            if section is None or section.status is not SectionStatus.OPEN:
                failed.append(
                    CheckResult(
                        code=str(int(IrxCode.SECTION_NOT_OPEN)),
                        message=f"the section of {principal.party} is not open",
                    )
                )
            if account is None or account.status is not AccountStatus.OPEN:
                state = account.status.value if account else "unknown"
                closed = account is not None and account.status is AccountStatus.CLOSED
                code = IrxCode.ACCOUNT_CLOSED if closed else IrxCode.ACCOUNT_NOT_ELIGIBLE
                failed.append(CheckResult(code=str(int(code)), message=f"{row['to_account']} is {state}"))
        now = self.clock()
        async with self.db.connect() as connection:
            transfer = await self._lock_transfer(connection, transfer_id)
            assert transfer is not None
            if transfer["status"] != TransferStatus.AWAITING_APPROVAL.value:
                # The sender's cancel or the deadline came first: that F stands (S1).
                final = final_problem(
                    transfer_id, transfer["status"], _utc(transfer["decided_at"]), transfer["codes"]
                )
                body = {
                    **final,
                    "type": problem_type("transaction-not-pending"),
                    "title": Conflict.title,
                    "instance": path,
                    "transaction_id": transaction_id,
                    "transaction_status": transfer["status"],
                }
                await claim.complete(connection, 409, body)
                return LedgerAnswer(409, body)
            if failed:
                problem = _check_failed_problem(transaction_id, failed, path)
                await claim.complete(connection, 422, problem)
                return LedgerAnswer(422, problem)
            if accept:
                status, codes = TransferStatus.COMPLETED, []
            else:
                status = TransferStatus.REJECTED
                codes = [_code(IrxCode.PARTY_POLICY, reason or f"declined by {principal.party}")]
            await self._finish_incoming(
                connection, transfer, status, codes, actor=principal.client_id, now=now
            )
            current = await transaction_row(connection, transaction_id)
            assert current is not None
            answer = _wire(transaction_from_row(current))
            await claim.complete(connection, 200, answer)
        self.irx.relay.notify()
        return LedgerAnswer(200, answer)

    async def terminate_incoming_due(self, now: datetime | None = None) -> int:
        """Incoming transfers still awaiting approval at `respond_by` become `terminated` (6001), their
        pending units dropped and `transfer.terminated` in the sender's inbox (S7). Returns how many."""
        now = now or self.clock()
        async with self.db.read() as session:
            due = (
                (
                    await session.execute(
                        select(irx_transfer.c.transfer_id).where(
                            irx_transfer.c.status == TransferStatus.AWAITING_APPROVAL.value,
                            irx_transfer.c.direction == DIRECTION_IN,
                            irx_transfer.c.respond_by <= now,
                        )
                    )
                )
                .scalars()
                .all()
            )
        done = 0
        for transfer_id in due:
            async with self.db.connect() as connection:
                transfer = await self._lock_transfer(connection, transfer_id)
                if transfer is None or transfer["status"] != TransferStatus.AWAITING_APPROVAL.value:
                    continue  # decided meanwhile: that F stands
                respond_by = _utc(transfer["respond_by"])
                if respond_by is None or respond_by > now:
                    continue
                if await self._finish_incoming(
                    connection,
                    transfer,
                    TransferStatus.TERMINATED,
                    [_code(IrxCode.TERMINATED, f"not decided by {respond_by.isoformat()}")],
                    actor="system:irx-terminator",
                    now=now,
                ):
                    done += 1
        if done:
            self._notify()
        return done

    async def cancel_incoming(
        self,
        principal: Principal,
        transfer_id: str,
        raw: bytes,
        *,
        idempotency_key: str | None,
        signature: str | None,
    ) -> Answer:
        """`POST /v1/interregistry/transfers/{transfer_id}/cancel` (sender registry): before a decision →
        `cancelled`; unknown id → a `cancelled` tombstone (S8); after F → 409 6003 with F."""

        async def process(connection: AsyncConnection, received: Received) -> Answer:
            cancel = received.body
            assert isinstance(cancel, TransferCancel)
            if cancel.transfer_id != transfer_id:
                raise IrxRefused(IrxCode.MALFORMED_MESSAGE, "body transfer_id differs from the path.")
            self._check_sender(cancel, received.registry)
            now = received.received_at
            existing = await self._lock_transfer(connection, transfer_id)
            if existing is not None:
                if (
                    existing["registry_id"] != received.registry["registry_id"]
                    or existing["direction"] != DIRECTION_IN
                ):
                    raise IrxRefused(IrxCode.SENDER_MISMATCH, f"{transfer_id} is not a transfer you sent.")
                if existing["status"] == TransferStatus.AWAITING_APPROVAL.value:
                    # Before the IR Party decided (manual acceptance): the sender withdraws it (6002).
                    codes = [
                        _code(IrxCode.CANCELLED, cancel.reason or "cancelled by the sender before a decision")
                    ]
                    await self._finish_incoming(
                        connection,
                        existing,
                        TransferStatus.CANCELLED,
                        codes,
                        actor=f"registry:{received.registry['registry_id']}",
                        now=now,
                        decision_message_id=str(received.envelope.message_id),
                    )
                    decision = TransferDecision(
                        transfer_id=transfer_id,
                        status=TransferStatus.CANCELLED,
                        decided_at=now,
                        codes=codes,
                        ir_transaction_id=existing["transaction_id"],
                    )
                    return Answer(200, decision.model_dump(mode="json"))
                return Answer(
                    409,
                    final_problem(
                        transfer_id, existing["status"], _utc(existing["decided_at"]), existing["codes"]
                    ),
                )
            codes = [
                _code(IrxCode.CANCELLED, cancel.reason or "cancelled by the sender before the IR saw it")
            ]
            final = TransferFinal(
                transfer_id=transfer_id,
                direction=TransferDirection.REGISTRY_TO_IR,
                status=TransferStatus.CANCELLED,
                decided_at=now,
                codes=codes,
                from_registry=received.registry["registry_id"],
            )
            message_id = await self.irx.enqueue(
                connection, received.registry, final.message_type, final, transfer_id=transfer_id
            )
            decision = TransferDecision(
                transfer_id=transfer_id, status=TransferStatus.CANCELLED, decided_at=now, codes=codes
            )
            await connection.execute(
                insert(irx_transfer).values(
                    transfer_id=transfer_id,
                    direction=DIRECTION_IN,
                    registry_id=received.registry["registry_id"],
                    transaction_id=None,
                    status=TransferStatus.CANCELLED.value,
                    blocks=[],
                    codes=_codes_json(codes),
                    decision_message_id=str(received.envelope.message_id),
                    final_message_id=message_id,
                    created_at=now,
                    updated_at=now,
                    decided_at=now,
                )
            )
            return Answer(200, decision.model_dump(mode="json"))

        answer = await self.irx.receive(
            principal,
            raw,
            idempotency_key=idempotency_key,
            signature=signature,
            accepts=frozenset({IrxMessageType.TRANSFER_CANCEL}),
            process=process,
        )
        if not answer.replayed:
            self._notify()
        return answer

    # ---- reads ---------------------------------------------------------------------------------------------

    def _visible(self, principal: Principal) -> Any:
        """The transfers a principal may read, as a condition (None: all of them)."""
        if principal.is_secretariat or principal.has(Role.AUDITOR):
            return None
        if principal.has(Role.REGISTRY) and principal.registry_id:
            return irx_transfer.c.registry_id == principal.registry_id
        if principal.party is not None:
            # IR Parties: the transfers of their accounts (outgoing from them, incoming to them).
            sent = select(transactions.c.transaction_id).where(transactions.c.from_party == principal.party)
            received = select(transactions.c.transaction_id).where(transactions.c.to_party == principal.party)
            return or_(
                and_(irx_transfer.c.direction == DIRECTION_OUT, irx_transfer.c.transaction_id.in_(sent)),
                and_(irx_transfer.c.direction == DIRECTION_IN, irx_transfer.c.transaction_id.in_(received)),
            )
        return false()

    async def _views(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        for registry_id in sorted({row["registry_id"] for row in rows}):
            await self.irx._relay_quietly(registry_id)  # so a final message just written has its position
        wanted = [row["final_message_id"] for row in rows if row["final_message_id"] is not None]
        positions: dict[tuple[str, str], int | None] = {}
        if wanted:
            async with self.db.read() as session:
                found = await session.execute(
                    select(irx_message.c.registry_id, irx_message.c.message_id, irx_message.c.position).where(
                        irx_message.c.direction == DIRECTION_OUT, irx_message.c.message_id.in_(wanted)
                    )
                )
                positions = {(r, m): p for r, m, p in found}
        views = []
        for row in rows:
            respond_by, decided_at = _utc(row["respond_by"]), _utc(row["decided_at"])
            views.append(
                {
                    "transfer_id": row["transfer_id"],
                    "direction": row["direction"],
                    "registry_id": row["registry_id"],
                    "status": row["status"],
                    "respond_by": respond_by.isoformat() if respond_by else None,
                    "decided_at": decided_at.isoformat() if decided_at else None,
                    "codes": row["codes"],
                    "transaction_id": row["transaction_id"],
                    "quantity": row["quantity"],
                    "blocks": row["blocks"],
                    "final_position": positions.get((row["registry_id"], row["final_message_id"])),
                }
            )
        return views

    async def get(self, principal: Principal, transfer_id: str) -> dict[str, Any]:
        """`GET /v1/interregistry/transfers/{transfer_id}`: the registry (its own), IR Parties (their
        accounts'), the Secretariat and auditors."""
        query = select(irx_transfer).where(irx_transfer.c.transfer_id == transfer_id)
        visible = self._visible(principal)
        if visible is not None:
            query = query.where(visible)
        async with self.db.read() as session:
            row = (await session.execute(query)).mappings().one_or_none()
        if row is None:
            raise NotFound(f"No transfer {transfer_id} visible to you.", slug="transfer-not-found")
        [view] = await self._views([row])
        return view

    async def list(
        self,
        principal: Principal,
        *,
        registry_id: str | None,
        direction: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        """`GET /v1/interregistry/transfers?registry=&direction=&status=&cursor=`, in transfer id order."""
        after = decode_cursor(cursor, fields=("id",))
        query = select(irx_transfer).order_by(irx_transfer.c.transfer_id).limit(limit + 1)
        visible = self._visible(principal)
        if visible is not None:
            query = query.where(visible)
        for column, value in (
            (irx_transfer.c.registry_id, registry_id),
            (irx_transfer.c.direction, direction),
            (irx_transfer.c.status, status),
        ):
            if value is not None:
                query = query.where(column == value)
        if after is not None:
            query = query.where(irx_transfer.c.transfer_id > str(after["id"]))
        async with self.db.read() as session:
            rows = (await session.execute(query)).mappings().all()
        items = await self._views(rows[:limit])
        next_cursor = encode_cursor({"id": items[-1]["transfer_id"]}) if len(rows) > limit and items else None
        return {"items": items, "next_cursor": next_cursor}


def _range_json(ca_id: str, origin_registry_id: str, first: int, last: int) -> dict[str, Any]:
    return {"ca_id": ca_id, "origin_registry_id": origin_registry_id, "first": first, "last": last}


def _issued(
    rows: Sequence[BlockRow], transaction_id: str, registry_id: str, now: datetime
) -> list[dict[str, Any]]:
    """`issued_ranges` rows of never-seen ranges acquired from a registry (origins for I2; T06 skips them)."""
    return [
        {
            "ca_id": r.ca_id,
            "origin_registry_id": r.origin_registry_id,
            "first_serial": r.first_serial,
            "last_serial": r.last_serial,
            "first_transferring_party": r.first_transferring_party,
            "authorization_id": r.authorization_id,
            "transaction_id": transaction_id,
            "created_at": now,
            "acquired_from_registry": registry_id,
        }
        for r in rows
    ]


def _repeat_answer(transfer: Row) -> Answer:
    """The answer to a proposal repeated under a new message id (S6): the stored one, unless it was the 202 of
    a manual acceptance decided since — then what was decided (6002 for the sender's own cancel, as S8)."""
    status = transfer["status"]
    if transfer["response_status"] != 202 or status == TransferStatus.AWAITING_APPROVAL.value:
        return Answer(transfer["response_status"], transfer["response_body"])
    decided_at = _utc(transfer["decided_at"])
    codes = [TransferCode.model_validate(c) for c in transfer["codes"] or []]
    if status == TransferStatus.COMPLETED.value:
        decision = TransferDecision(
            transfer_id=transfer["transfer_id"],
            status=TransferStatus.COMPLETED,
            decided_at=decided_at,
            codes=[],
            ir_transaction_id=transfer["transaction_id"],
        )
        return Answer(201, decision.model_dump(mode="json"))
    if status == TransferStatus.REJECTED.value:
        return Answer(422, rejected_problem(transfer["transfer_id"], codes))
    problem = final_problem(transfer["transfer_id"], status, decided_at, transfer["codes"])
    if status == TransferStatus.CANCELLED.value:
        problem["code"] = int(IrxCode.CANCELLED)
    return Answer(409, problem)


def _decimal(text: str) -> bool:
    return _CONVERSION_FACTOR.fullmatch(text) is not None


def _current_blocks(row: Row) -> list[dict[str, Any]]:
    """The transfer blocks of a pending transaction's reserved-units snapshot."""
    return [TransferBlock.from_block(b).model_dump(mode="json") for b in row["blocks"]]


def outgoing_actions(tx: Row, registry_party: str) -> list[AefAction]:
    """§5.2: the IR Party's T3 `Transfer` with the registry's Party acquiring; none within one Party."""
    if registry_party == tx["from_party"]:
        return []
    return [
        AefAction(
            party=tx["from_party"],
            registry_id=tx["from_registry_id"],
            action_type=ActionType.TRANSFER,
            acquiring_party_id=registry_party,
        )
    ]


def first_transfer_actions(tx: Row, registry_party: str, blocks: Sequence[Row]) -> list[AefAction]:
    """§5.2: a first transfer to a registry is the first transferring Party's T3 `First transfer` (subtype by
    its definition; `First transfer to another Party` with the registry's Party acquiring), which triggers its
    corresponding adjustment; the registry's Party reports its own acquisition."""
    definition = FirstTransferDefinition(blocks[0]["first_transfer_definition"])
    return aef_actions(
        "first_transfer",
        from_party=tx["from_party"],
        to_party=registry_party,
        from_registry=tx["from_registry_id"],
        to_registry=None,  # no IR side acquires: the registry's Party is not reported here
        first_transfer_subtype=_FIRST_TRANSFER_SUBTYPE[definition],
    )


def incoming_actions(registry_party: str, party: str, registry_id: str) -> list[AefAction]:
    """§6: the receiving IR Party's T3 `Acquisition` from the registry's Party; none within one Party."""
    if registry_party == party:
        return []
    return [
        AefAction(
            party=party,
            registry_id=registry_id,
            action_type=ActionType.ACQUISITION,
            transferring_party_id=registry_party,
        )
    ]
