"""Use cases of the transactions service: every IR action, first transfers, approvals, reads, invariants.

Order inside a unit-moving use case (DESIGN §4, kit/service_client.py, kit/idempotency.py):
1. claim the Idempotency-Key (a replay returns the stored answer);
2. read what the peers know (accounts, section, cooperative approaches) *before* any write transaction,
   so no database lock is held across an HTTP call;
3. one write transaction: lock the units, run the checks, then either move the units, journal them,
   publish the event and store the 201 answer, or record the refusal and store the 422 answer. Nothing
   moves on a refusal, and the answer commits with the effect (a crash leaves both or neither);
4. after commit, wake the journal sealer and the outbox relay.
Unexpected errors release the claim so a retry may run again.
"""

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi.encoders import jsonable_encoder
from sqlalchemy import BigInteger, and_, func, insert, literal, or_, select, update

from contracts.actions import (
    ActionSubtype,
    ActionType,
    FirstTransferDefinition,
    TransactionStatus,
    TransactionType,
)
from contracts.identifiers import InvalidUniqueId, parse_unique_id
from contracts.party_sections import AccountLookup, SectionLookup
from contracts.problems import CheckResult, problem_type
from contracts.roles import Role
from contracts.transactions import (
    AefAction,
    CorrectionCreate,
    FirstTransferCreate,
    Holdings,
    Transaction,
    TransactionAwaitingApproval,
    TransactionCompleted,
    TransactionCreate,
    TransactionValidation,
)
from kit.auth import Principal
from kit.db import Database
from kit.errors import Conflict, DomainError, Forbidden, NotFound
from kit.idempotency import Claim, IdempotencyStore, StoredAnswer, request_fingerprint
from kit.outbox import Outbox
from kit.pagination import decode_cursor, encode_cursor
from kit.service_client import Peers
from services.transactions import checks as catalogue
from services.transactions import journal as journal_mod
from services.transactions.directory import Directory, account_party
from services.transactions.domain import (
    BlockRow,
    InsufficientUnits,
    RangesNotHeld,
    SerialRange,
    Take,
    move,
    take_quantity,
    take_ranges,
)
from services.transactions.journal import JournalSealer
from services.transactions.ledger import Ledger, to_block
from services.transactions.models import blocks, issued_ranges, transactions
from services.transactions.repository import transaction_row

__all__ = ["Answer", "Ledgers", "new_transaction_id"]

log = structlog.get_logger(__name__)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TERMINAL_STATE = {
    TransactionType.USE_NDC: "used_ndc",
    TransactionType.USE_OIMP: "used_oimp",
    TransactionType.CANCELLATION: "cancelled",
    TransactionType.VOLUNTARY_CANCELLATION: "cancelled",
    TransactionType.OMGE_CANCELLATION: "cancelled",
}


def new_transaction_id() -> str:
    """`tx_` + a ULID (48-bit milliseconds + 80 random bits, Crockford base32): sortable by creation."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "tx_" + "".join(reversed(chars))


@dataclass(frozen=True)
class Answer:
    """What a unit-moving use case answers: status and JSON body (a problem for 4xx), and whether replayed."""

    status: int
    body: Any
    replayed: bool = False


class CheckFailed(DomainError):
    status, slug, title = 422, "check-failed", "The transaction failed checks; nothing moved"


def _check_failed_problem(
    transaction_id: str, failed: Sequence[CheckResult], instance: str
) -> dict[str, Any]:
    return {
        "type": problem_type("check-failed"),
        "title": CheckFailed.title,
        "status": 422,
        "detail": "; ".join(f"{c.code}: {c.message}" for c in failed),
        "instance": instance,
        "transaction_id": transaction_id,
        "checks": [c.model_dump() for c in failed],
    }


def _ranges(body: TransactionCreate) -> tuple[list[SerialRange], bool]:
    if not body.blocks:
        return [], True
    ranges = []
    for item in body.blocks:
        try:
            first, last = parse_unique_id(item.unique_id_first), parse_unique_id(item.unique_id_last)
        except InvalidUniqueId:
            return [], False
        if (first.ca_id, first.registry_id, first.first_transferring_party, first.vintage) != (
            last.ca_id,
            last.registry_id,
            last.first_transferring_party,
            last.vintage,
        ) or last.serial < first.serial:
            return [], False
        ranges.append(SerialRange(first.ca_id, first.registry_id, first.serial, last.serial))
    return ranges, True


def aef_actions(
    kind: str,
    *,
    from_party: str | None,
    to_party: str | None,
    from_registry: str | None,
    to_registry: str | None,
    purpose: str | None = None,
    using_entity_id: str | None = None,
    ndc_use_year: int | None = None,
    first_transfer_subtype: ActionSubtype | None = None,
) -> list[AefAction]:
    """AEF type/subtype per Party side (domain §2.2, §5.4); empty for an internal transfer."""
    assert from_party is not None and from_registry is not None
    user = {"using_cancelling_party_id": from_party, "using_cancelling_entity_id": using_entity_id}
    if kind == "first_transfer":
        assert first_transfer_subtype is not None
        if first_transfer_subtype is ActionSubtype.USE_OR_CANCELLATION:
            return [
                AefAction(
                    party=from_party,
                    registry_id=from_registry,
                    action_type=ActionType.FIRST_TRANSFER,
                    action_subtype=first_transfer_subtype,
                    purpose_oimp=purpose,
                    **user,
                )
            ]
        sides = [
            AefAction(
                party=from_party,
                registry_id=from_registry,
                action_type=ActionType.FIRST_TRANSFER,
                action_subtype=first_transfer_subtype,
                acquiring_party_id=to_party if to_party != from_party else None,
            )
        ]
        if to_party and to_party != from_party and to_registry:
            sides.append(
                AefAction(
                    party=to_party,
                    registry_id=to_registry,
                    action_type=ActionType.ACQUISITION,
                    transferring_party_id=from_party,
                )
            )
        return sides
    if kind == TransactionType.TRANSFER:
        if to_party is None or to_party == from_party or to_registry is None:
            return []  # internal transfer (A7): not an AEF action
        return [
            AefAction(
                party=from_party,
                registry_id=from_registry,
                action_type=ActionType.TRANSFER,
                acquiring_party_id=to_party,
            ),
            AefAction(
                party=to_party,
                registry_id=to_registry,
                action_type=ActionType.ACQUISITION,
                transferring_party_id=from_party,
            ),
        ]
    side: dict[str, Any] = {"party": from_party, "registry_id": from_registry}
    if kind == TransactionType.USE_NDC:
        return [AefAction(**side, action_type=ActionType.USE, ndc_use_year=ndc_use_year)]
    if kind == TransactionType.USE_OIMP:
        return [AefAction(**side, action_type=ActionType.USE, purpose_oimp=purpose, **user)]
    if kind == TransactionType.CANCELLATION:
        return [
            AefAction(
                **side,
                action_type=ActionType.CANCELLATION,
                action_subtype=ActionSubtype.OTHER_CANCELLATIONS,
                purpose_oimp=purpose,
                **user,
            )
        ]
    if kind == TransactionType.VOLUNTARY_CANCELLATION:
        return [
            AefAction(
                **side,
                action_type=ActionType.VOLUNTARY_CANCELLATION,
                action_subtype=ActionSubtype.OTHER_CANCELLATIONS,
                **user,
            )
        ]
    if kind == TransactionType.OMGE_CANCELLATION:
        return [
            AefAction(
                **side,
                action_type=ActionType.VOLUNTARY_CANCELLATION,
                action_subtype=ActionSubtype.VOLUNTARY_CANCELLATION_OMGE,
                **user,
            )
        ]
    raise ValueError(f"unknown transaction kind {kind}")


_FIRST_TRANSFER_SUBTYPE = {
    FirstTransferDefinition.FIRST_INTERNATIONAL_TRANSFER: ActionSubtype.FIRST_TRANSFER_TO_ANOTHER_PARTY,
    FirstTransferDefinition.AUTHORISATION: ActionSubtype.AUTHORIZATION,
    FirstTransferDefinition.ISSUANCE: ActionSubtype.ISSUANCE,
    FirstTransferDefinition.USE_OR_CANCELLATION: ActionSubtype.USE_OR_CANCELLATION,
}


def first_transfer_rows(body: FirstTransferCreate, **place: Any) -> list[BlockRow]:
    """The ITMO blocks a first transfer creates, every invariant from the ARS's request (`place`: state,
    party, account...)."""
    authorized = ",".join(sorted(set(body.authorized_parties))) if body.authorized_parties else None
    return [
        BlockRow(
            ca_id=b.ca_id,
            origin_registry_id=b.origin_registry_id,
            first_transferring_party=body.first_transferring_party,
            first_serial=b.first,
            last_serial=b.last,
            vintage=b.vintage,
            metric=b.metric.value,
            mitigation_type=b.mitigation_type.value,
            authorization_id=body.authorization_id,
            authorization_version=body.authorization_version,
            purposes=body.purposes.value,
            applicable_gwp_values=b.applicable_gwp_values,
            applicable_non_ghg_metric=b.applicable_non_ghg_metric,
            conversion_factor=b.conversion_factor,
            sector=b.sector,
            activity_type=b.activity_type,
            authorized_parties=authorized,
            first_transfer_definition=body.first_transfer_definition.value,
            underlying_registry_id=b.underlying.registry_id if b.underlying else None,
            underlying_first=b.underlying.first_unit_id if b.underlying else None,
            **place,
        )
        for b in body.blocks
    ]


async def first_transferred_under(connection: Any, body: FirstTransferCreate) -> int:
    """Units first transferred under the request's authorization so far (T06); 0 when it sets no cap."""
    if body.authorized_quantity is None:
        return 0
    return int(
        (
            await connection.execute(
                select(
                    func.coalesce(
                        func.sum(issued_ranges.c.last_serial - issued_ranges.c.first_serial + 1),
                        0,
                    )
                ).where(
                    issued_ranges.c.first_transferring_party == body.first_transferring_party,
                    issued_ranges.c.authorization_id == body.authorization_id,
                    # Acquisitions from connected registries are not first transfers here.
                    issued_ranges.c.acquired_from_registry.is_(None),
                )
            )
        ).scalar_one()
    )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _wire(value: Any) -> Any:
    """JSON-ready form of a model or a list of models (pydantic's own dump: several times faster than
    fastapi's jsonable_encoder on the hot path, same output for these alias-free contracts)."""
    if isinstance(value, list):
        return [item.model_dump(mode="json") for item in value]
    return value.model_dump(mode="json")


def _incoming(row: Any) -> bool:
    """A transaction a connected registry proposed into an IR account (INTERREGISTRY §6)."""
    link = row["interregistry"]
    return link is not None and link.get("direction") == "registry_to_ir"


def transaction_from_row(row: Any) -> Transaction:
    return Transaction(
        transaction_id=row["transaction_id"],
        type=row["type"],
        status=row["status"],
        from_account=row["from_account"],
        to_account=row["to_account"],
        from_party=row["from_party"],
        to_party=row["to_party"],
        quantity=row["quantity"],
        blocks=row["blocks"],
        ndc_use_year=row["ndc_use_year"],
        purpose=row["purpose"],
        using_entity_id=row["using_entity_id"],
        note=row["note"],
        actions=row["actions"],
        initiated_by=row["initiated_by"],
        approved_by=row["approved_by"],
        created_at=_utc(row["created_at"]),
        completed_at=_utc(row["completed_at"]),
        checks=row["checks"],
        corrects=row.get("corrects"),
        interregistry=row.get("interregistry"),
    )


@dataclass
class _Prepared:
    """A transfer, use or cancellation after the peer reads: everything but the units."""

    body: TransactionCreate
    kind: TransactionType
    party: str
    ranges: list[SerialRange]
    ranges_valid: bool
    source: AccountLookup | None
    destination: AccountLookup | None
    section: SectionLookup | None
    participants: dict[str, frozenset[str]]

    @property
    def cross_party(self) -> bool:
        return (
            self.kind is TransactionType.TRANSFER
            and self.destination is not None
            and self.destination.party != self.party
        )

    def context(self) -> catalogue.CheckContext:
        return catalogue.CheckContext(
            type=self.kind,
            party=self.party,
            from_account_id=self.body.from_account,
            to_account_id=self.body.to_account,
            from_account=self.source,
            to_account=self.destination,
            section=self.section,
            quantity=self.body.quantity,
            ranges=self.ranges,
            ranges_valid=self.ranges_valid,
            ndc_use_year=self.body.ndc_use_year,
            ca_participants=self.participants,
        )


class Ledgers:
    """The service's use cases over its database, peers, outbox and journal sealer."""

    def __init__(
        self,
        db: Database,
        peers: Peers,
        outbox: Outbox,
        idempotency: IdempotencyStore,
        sealer: JournalSealer,
        *,
        approval_timeout: timedelta,
        directory: Directory | None = None,
    ) -> None:
        self.db = db
        self.directory = directory or Directory(peers, cache=False)
        self.outbox = outbox
        self.idempotency = idempotency
        self.sealer = sealer
        self.approval_timeout = approval_timeout
        #: Transfers to and from connected registries (interregistry/transfers.py sets itself here).
        self.interregistry: Any = None

    # ---- helpers ------------------------------------------------------------------------------------------

    def _after_commit(self) -> None:
        self.sealer.notify()
        self.outbox.notify()

    async def _claim(
        self, principal: Principal, key: str | None, path: str, body: Any
    ) -> Claim | StoredAnswer:
        fingerprint = request_fingerprint("POST", path, jsonable_encoder(body))
        return await self.idempotency.claim(principal.client_id, key, fingerprint)

    async def _run_claimed(self, claim: Claim | StoredAnswer, work: Any) -> Answer:
        if isinstance(claim, StoredAnswer):
            return Answer(claim.status, claim.body, replayed=True)
        try:
            answer: Answer = await work(claim)
        except BaseException:
            await claim.release()
            raise
        self._after_commit()
        return answer

    async def _record_rejection(
        self,
        connection: Any,
        transaction_id: str,
        row: dict[str, Any],
        failed: list[CheckResult],
        claim: Claim | None,
        instance: str,
    ) -> Answer:
        await connection.execute(
            insert(transactions).values(
                **row,
                transaction_id=transaction_id,
                status=TransactionStatus.REJECTED.value,
                checks=[c.model_dump() for c in failed],
                actions=[],
                blocks=[],
            )
        )
        problem = _check_failed_problem(transaction_id, failed, instance)
        if claim is not None:
            await claim.complete(connection, 422, problem)
        return Answer(422, problem)

    # ---- transfers, uses, cancellations ---------------------------------------------------------------------

    async def _prepare(self, principal: Principal, body: TransactionCreate) -> _Prepared:
        party = principal.party
        assert party is not None
        kind = body.type
        ranges, ranges_valid = _ranges(body)
        source = destination = section = None
        # Party isolation: nothing about another Party's account is looked up or said. The lookups run
        # side by side; what they found beside a source that is not the caller's is dropped unread.
        if account_party(body.from_account) == party:

            async def nothing() -> None:
                return None

            if kind is TransactionType.TRANSFER:
                wanted = body.to_account
                arrival = (
                    self.directory.account(wanted)
                    if wanted and wanted != body.from_account and account_party(wanted)
                    else nothing()
                )
            elif body.to_account is None:
                arrival = self.directory.account_of_type(party, catalogue.DESTINATION_ACCOUNT_TYPE[kind])
            else:
                arrival = nothing()
            section_read = self.directory.section(party) if kind is TransactionType.USE_NDC else nothing()
            source, destination, section = await asyncio.gather(
                self.directory.account(body.from_account), arrival, section_read
            )
            if source is None or source.party != party:
                source = destination = section = None
        participants: dict[str, frozenset[str]] = {}
        prepared = _Prepared(
            body, kind, party, ranges, ranges_valid, source, destination, section, participants
        )
        if prepared.cross_party:
            if ranges:
                prepared.participants.update(await self.directory.participants({r.ca_id for r in ranges}))
            else:
                # Which CAs a quantity takes is known only once the units are locked: start from the CAs
                # the cache knows; one it does not makes the write transaction roll back, read it and retry.
                prepared.participants.update(self.directory.cached_participants())
        return prepared

    async def _select(
        self, ledger: Ledger, prepared: _Prepared
    ) -> tuple[list[Take] | None, str | None, bool]:
        """The takes (None when the units are not there), a shortfall message, whether a used unit was named."""
        body = prepared.body
        if prepared.source is None or (not prepared.ranges and body.quantity is None):
            return None, None, False
        if prepared.ranges:
            candidates, terminal = await ledger.range_candidates(body.from_account, prepared.ranges)
            try:
                return take_ranges(candidates, prepared.ranges), None, terminal
            except RangesNotHeld as missing:
                shown = ", ".join(
                    f"{r.ca_id}-{r.origin_registry_id} {r.first}-{r.last}" for r in missing.missing[:5]
                )
                return None, f"not held in {body.from_account}: {shown}", terminal
        assert body.quantity is not None
        candidates = await ledger.take_candidates(body.from_account, body.quantity)
        try:
            return take_quantity(candidates, body.quantity), None, False
        except InsufficientUnits as short:
            return None, f"{short.wanted} units asked, {short.available} held in {body.from_account}", False

    async def validate(self, principal: Principal, body: TransactionCreate) -> TransactionValidation:
        if body.to_registry is not None:
            validation: TransactionValidation = await self.interregistry.validate(principal, body)
            return validation
        self._require_initiator(principal)
        prepared = await self._prepare(principal, body)
        async with self.db.read() as session:
            connection = await session.connection()
            ledger = Ledger(connection, now=datetime.now(UTC), lock=False)
            takes, shortfall, terminal = await self._select(ledger, prepared)
        ctx = prepared.context()
        ctx.shortfall, ctx.terminal_hit = shortfall, terminal
        ctx.taken = (
            [t.block.piece(t.first, t.last, id=t.block.id) for t in takes] if takes is not None else None
        )
        missing = self._missing_cas(prepared, ctx.taken)
        if missing:
            prepared.participants.update(await self.directory.participants(missing))
        failed = catalogue.evaluate(ctx)
        return TransactionValidation(
            valid=not failed,
            checks=failed,
            quantity=sum(t.quantity for t in takes) if takes else 0,
            blocks=[to_block(piece) for piece in ctx.taken or []],
            four_eyes=bool(prepared.source and prepared.source.four_eyes),
        )

    @staticmethod
    def _missing_cas(prepared: _Prepared, taken: Sequence[BlockRow] | None) -> set[str]:
        if not prepared.cross_party or not taken:
            return set()
        return {b.ca_id for b in taken} - set(prepared.participants)

    @staticmethod
    def _require_initiator(principal: Principal) -> None:
        if principal.party is None or not principal.has(Role.INITIATOR):
            raise Forbidden("Moving units needs the initiator role of the source account's Party.")

    async def submit(self, principal: Principal, body: TransactionCreate, key: str | None) -> Answer:
        """`POST /v1/transactions`.

        The hot path: the Idempotency-Key is claimed inside the write transaction
        (`IdempotencyStore.claim_within`), so a transfer costs one database transaction and one commit.
        """
        if body.to_registry is not None:
            # A transfer to a connected registry (INTERREGISTRY §5) is a use case of its own.
            external: Answer = await self.interregistry.propose(principal, body, key)
            return external
        self._require_initiator(principal)
        key = self.idempotency.require_key(key)
        fingerprint = request_fingerprint("POST", "/v1/transactions", body.model_dump(mode="json"))
        prepared = await self._prepare(principal, body)
        for _attempt in range(3):
            answer = await self._submit_once(principal, prepared, key, fingerprint)
            if answer is not None:
                if not answer.replayed:
                    self._after_commit()
                return answer
        raise Conflict("The cooperative approaches changed while checking; retry.", slug="retry")

    async def _submit_once(
        self, principal: Principal, prepared: _Prepared, key: str, fingerprint: str
    ) -> Answer | None:
        body = prepared.body
        now = datetime.now(UTC)
        transaction_id = new_transaction_id()
        source, destination = prepared.source, prepared.destination
        base_row: dict[str, Any] = {
            "type": body.type.value,
            "party": prepared.party,
            "from_account": body.from_account,
            "to_account": destination.account_id if destination is not None else body.to_account,
            "from_party": prepared.party,
            "to_party": destination.party if destination is not None else None,
            "from_registry_id": source.registry_id if source else None,
            "to_registry_id": destination.registry_id if destination else None,
            "quantity": body.quantity or sum(r.quantity for r in prepared.ranges),
            "ndc_use_year": body.ndc_use_year,
            "purpose": body.purpose,
            "using_entity_id": body.using_entity_id,
            "note": body.note,
            "initiated_by": principal.client_id,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.connect() as connection:
            claim = await self.idempotency.claim_within(connection, principal.client_id, key, fingerprint)
            if isinstance(claim, StoredAnswer):
                return Answer(claim.status, claim.body, replayed=True)
            ledger = Ledger(connection, now=now)
            takes, shortfall, terminal = await self._select(ledger, prepared)
            ctx = prepared.context()
            ctx.shortfall, ctx.terminal_hit = shortfall, terminal
            ctx.taken = (
                [t.block.piece(t.first, t.last, id=t.block.id) for t in takes] if takes is not None else None
            )
            missing = self._missing_cas(prepared, ctx.taken)
            if missing:
                await connection.rollback()
                prepared.participants.update(await self.directory.participants(missing))
                return None
            failed = catalogue.evaluate(ctx)
            if failed:
                return await self._record_rejection(
                    connection, transaction_id, base_row, failed, claim, "/v1/transactions"
                )
            assert takes is not None and source is not None and destination is not None
            four_eyes = source.four_eyes
            if four_eyes:
                changes_to = {"state": "reserved", "reserved_by": transaction_id}
            else:
                changes_to = self._arrival(body.type, destination)
            rest, moved = move(takes, **changes_to)
            originals = _unique_blocks(takes)
            changes = await ledger.replace(originals, rest + moved, transaction_id=transaction_id)
            entry_type = "reserve" if four_eyes else body.type.value
            await journal_mod.append(
                connection, transaction_id, entry_type, changes, actor=principal.client_id, at=now
            )
            moved_blocks = [to_block(piece) for piece in moved]
            row = {
                **base_row,
                "transaction_id": transaction_id,
                "quantity": sum(p.quantity for p in moved),
                "checks": [],
                "blocks": _wire(moved_blocks),
            }
            if four_eyes:
                row |= {
                    "status": TransactionStatus.AWAITING_APPROVAL.value,
                    "actions": [],
                    "expires_at": now + self.approval_timeout,
                }
            else:
                actions = self._actions(row)
                row |= {
                    "status": TransactionStatus.COMPLETED.value,
                    "actions": _wire(actions),
                    "completed_at": now,
                }
            await connection.execute(insert(transactions), row)
            transaction = transaction_from_row(
                row | {"approved_by": None, "completed_at": row.get("completed_at")}
            )
            if four_eyes:
                await self._publish_awaiting(connection, row)
            else:
                await self._publish(connection, transaction, row)
            answer = _wire(transaction)
            await claim.complete(connection, 201, answer)
        return Answer(201, answer)

    @staticmethod
    def _arrival(kind: TransactionType, destination: AccountLookup) -> dict[str, Any]:
        state = "held" if kind is TransactionType.TRANSFER else _TERMINAL_STATE[kind]
        return {
            "state": state,
            "account_id": destination.account_id,
            "party": destination.party,
            "reserved_by": None,
        }

    @staticmethod
    def _actions(row: dict[str, Any]) -> list[AefAction]:
        return aef_actions(
            row["type"],
            from_party=row["from_party"],
            to_party=row["to_party"],
            from_registry=row["from_registry_id"],
            to_registry=row["to_registry_id"],
            purpose=row["purpose"],
            using_entity_id=row["using_entity_id"],
            ndc_use_year=row["ndc_use_year"],
        )

    async def _publish(
        self, connection: Any, transaction: Transaction, row: dict[str, Any], *, party: str | None = None
    ) -> None:
        parties = sorted({p for p in (row["from_party"], row["to_party"]) if p})
        event = TransactionCompleted(
            transaction_id=transaction.transaction_id,
            type=transaction.type,
            completed_at=transaction.completed_at or datetime.now(UTC),
            from_party=row["from_party"],
            to_party=row["to_party"],
            from_registry_id=row["from_registry_id"],
            to_registry_id=row["to_registry_id"],
            from_account=row["from_account"],
            to_account=row["to_account"],
            quantity=transaction.quantity,
            parties=parties,
            actions=transaction.actions,
            ndc_use_year=row["ndc_use_year"],
            purpose=row["purpose"],
            using_entity_id=row["using_entity_id"],
            blocks=transaction.blocks,
            corrects=row.get("corrects"),
        )
        await self.outbox.publish(
            connection, "transaction.completed", _wire(event), party=party or row["from_party"]
        )

    async def _publish_awaiting(self, connection: Any, row: dict[str, Any]) -> None:
        """`transaction.awaiting_approval` for the source Party, whose approver decides (four-eyes)."""
        event = TransactionAwaitingApproval(
            transaction_id=row["transaction_id"],
            type=row["type"],
            party=row["from_party"],
            from_party=row["from_party"],
            to_party=row["to_party"],
            from_registry_id=row["from_registry_id"],
            to_registry_id=row["to_registry_id"],
            from_account=row["from_account"],
            to_account=row["to_account"],
            quantity=row["quantity"],
            initiated_by=row["initiated_by"],
            expires_at=row["expires_at"],
        )
        await self.outbox.publish(
            connection, "transaction.awaiting_approval", _wire(event), party=row["from_party"]
        )

    # ---- four-eyes --------------------------------------------------------------------------------------------

    async def _pending(self, connection: Any, transaction_id: str, party: str | None) -> dict[str, Any]:
        query = select(transactions).where(transactions.c.transaction_id == transaction_id)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await connection.execute(query)).mappings().one_or_none()
        if row is None or (party is not None and row["from_party"] != party):
            raise NotFound(f"No transaction {transaction_id} of your Party.")
        if party is not None and row["type"] == catalogue.CORRECTION:
            raise Forbidden("A correction is approved or withdrawn by Secretariat administrators only.")
        return dict(row)

    async def approve(self, principal: Principal, transaction_id: str, key: str | None) -> Answer:
        if principal.party is None or not principal.has(Role.APPROVER):
            raise Forbidden("Approving needs the approver role of the source account's Party.")
        claim = await self._claim(principal, key, f"/v1/transactions/{transaction_id}/approve", {})

        async def work(claim: Claim) -> Answer:
            row = await self._transaction_row(transaction_id)
            if row is not None and _incoming(row) and self.interregistry is not None:
                # Manual acceptance (INTERREGISTRY §6): the acquiring Party's approver decides.
                decided: Answer = await self.interregistry.decide_incoming(
                    principal, row, claim, accept=True, reason=None
                )
                return decided
            if row is None or row["from_party"] != principal.party:
                raise NotFound(f"No transaction {transaction_id} of your Party.")
            if row["type"] == catalogue.CORRECTION:
                raise Forbidden("A correction is approved by a second Secretariat administrator.")
            if row["interregistry"] is not None:
                approved: Answer = await self.interregistry.approve(principal, row, claim)
                return approved
            destination = await self._destination_of(row)
            source = await self.directory.account(row["from_account"])
            now = datetime.now(UTC)
            async with self.db.connect() as connection:
                current = await self._pending(connection, transaction_id, principal.party)
                self._require_awaiting(current, now)
                if current["initiated_by"] == principal.client_id:
                    failed = [
                        CheckResult(code="T11", message="the initiator cannot approve its own transaction")
                    ]
                    problem = _check_failed_problem(
                        transaction_id, failed, f"/v1/transactions/{transaction_id}/approve"
                    )
                    await claim.complete(connection, 422, problem)
                    return Answer(422, problem)
                ledger = Ledger(connection, now=now)
                reserved = await ledger.reserved_by(transaction_id)
                ctx = catalogue.CheckContext(
                    type=TransactionType(current["type"]),
                    party=current["from_party"],
                    from_account_id=current["from_account"],
                    to_account_id=current["to_account"] if current["type"] == "transfer" else None,
                    from_account=source,
                    to_account=destination,
                    section=await self._section_if_ndc(current),
                    quantity=current["quantity"],
                    ndc_use_year=current["ndc_use_year"],
                    taken=reserved,
                    ca_participants=await self._participants_for(current, destination, reserved),
                )
                failed = catalogue.evaluate(ctx)
                if failed:
                    problem = _check_failed_problem(
                        transaction_id, failed, f"/v1/transactions/{transaction_id}/approve"
                    )
                    await claim.complete(connection, 422, problem)
                    return Answer(422, problem)
                assert destination is not None
                arrived = [
                    replace(b, **self._arrival(TransactionType(current["type"]), destination))
                    for b in reserved
                ]
                changes = await ledger.replace(reserved, arrived, transaction_id=transaction_id)
                await journal_mod.append(
                    connection, transaction_id, current["type"], changes, actor=principal.client_id, at=now
                )
                moved = [replace(b, id=None) for b in arrived]
                updated = current | {
                    "status": TransactionStatus.COMPLETED.value,
                    "approved_by": principal.client_id,
                    "completed_at": now,
                    "updated_at": now,
                    "to_account": destination.account_id,
                    "to_party": destination.party if current["type"] == "transfer" else None,
                    "to_registry_id": destination.registry_id,
                    "blocks": _wire([to_block(b) for b in moved]),
                }
                updated["actions"] = _wire(self._actions(updated))
                await connection.execute(
                    update(transactions)
                    .where(transactions.c.transaction_id == transaction_id)
                    .values(**{k: v for k, v in updated.items() if k != "transaction_id"})
                )
                transaction = transaction_from_row(updated)
                await self._publish(connection, transaction, updated)
                answer = _wire(transaction)
                await claim.complete(connection, 200, answer)
            return Answer(200, answer)

        return await self._run_claimed(claim, work)

    async def reject(
        self, principal: Principal, transaction_id: str, reason: str | None, key: str | None
    ) -> Answer:
        """An approver of the acquiring Party declines an incoming transfer awaiting approval (§6). Only
        those are rejected here: a four-eyes transaction of the Party itself is withdrawn with `/cancel`."""
        if principal.party is None or not principal.has(Role.APPROVER):
            raise Forbidden("Rejecting needs the approver role of the acquiring Party.")
        path = f"/v1/transactions/{transaction_id}/reject"
        claim = await self._claim(principal, key, path, {"reason": reason})

        async def work(claim: Claim) -> Answer:
            row = await self._transaction_row(transaction_id)
            if row is None or principal.party not in (row["from_party"], row["to_party"]):
                raise NotFound(f"No transaction {transaction_id} of your Party.")
            if not _incoming(row) or self.interregistry is None:
                raise Conflict(
                    "Only an incoming transfer awaiting its acquiring Party's decision is rejected; "
                    "withdraw a transaction awaiting four-eyes approval with /cancel.",
                    slug="transaction-not-rejectable",
                    transaction_status=row["status"],
                )
            decided: Answer = await self.interregistry.decide_incoming(
                principal, row, claim, accept=False, reason=reason
            )
            return decided

        return await self._run_claimed(claim, work)

    async def _section_if_ndc(self, row: dict[str, Any]) -> SectionLookup | None:
        return await self.directory.section(row["from_party"]) if row["type"] == "use_ndc" else None

    async def _participants_for(
        self, row: dict[str, Any], destination: AccountLookup | None, reserved: Sequence[BlockRow]
    ) -> dict[str, frozenset[str]]:
        if row["type"] != "transfer" or destination is None or destination.party == row["from_party"]:
            return {}
        return await self.directory.participants({b.ca_id for b in reserved})

    async def _destination_of(self, row: Any) -> AccountLookup | None:
        if row["type"] == "transfer":
            return await self.directory.account(row["to_account"]) if row["to_account"] else None
        return await self.directory.account_of_type(
            row["from_party"], catalogue.DESTINATION_ACCOUNT_TYPE[TransactionType(row["type"])]
        )

    def _require_awaiting(self, row: dict[str, Any], now: datetime) -> None:
        if row["status"] != TransactionStatus.AWAITING_APPROVAL.value:
            raise Conflict(
                f"The transaction is {row['status']}.",
                slug="transaction-not-pending",
                transaction_status=row["status"],
            )
        expires = _utc(row["expires_at"])
        if expires is not None and expires <= now:
            raise Conflict(
                "The approval period has ended.",
                slug="transaction-expired",
                transaction_status="awaiting_approval",
            )

    async def cancel(self, principal: Principal, transaction_id: str) -> Transaction:
        """The initiator (or another initiator of the Party) withdraws a pending transaction."""
        if principal.party is None or not principal.has(Role.INITIATOR, Role.APPROVER):
            raise Forbidden("Cancelling needs the initiator role of the source account's Party.")
        if self.interregistry is not None:
            sent = await self.interregistry.cancel_sent(principal, transaction_id)
            if sent is not None:
                return sent  # type: ignore[no-any-return]
        transaction = await self._release(
            transaction_id, TransactionStatus.CANCELLED, principal.party, principal.client_id
        )
        self._after_commit()
        return transaction

    async def _release(
        self,
        transaction_id: str,
        status: TransactionStatus,
        party: str | None,
        actor: str,
        *,
        expired_only: bool = False,
        now: datetime | None = None,
    ) -> Transaction:
        now = now or datetime.now(UTC)
        async with self.db.connect() as connection:
            row = await self._pending(connection, transaction_id, party)
            if row["status"] != TransactionStatus.AWAITING_APPROVAL.value:
                raise Conflict(
                    f"The transaction is {row['status']}.",
                    slug="transaction-not-pending",
                    transaction_status=row["status"],
                )
            if expired_only and not (_utc(row["expires_at"]) and _utc(row["expires_at"]) <= now):  # type: ignore[operator]
                raise Conflict("Not expired.", slug="transaction-not-expired")
            ledger = Ledger(connection, now=now)
            reserved = await ledger.reserved_by(transaction_id)
            released = [replace(b, state="held", reserved_by=None) for b in reserved]
            changes = await ledger.replace(reserved, released, transaction_id=transaction_id)
            await journal_mod.append(connection, transaction_id, "release", changes, actor=actor, at=now)
            updated = row | {"status": status.value, "updated_at": now}
            await connection.execute(
                update(transactions)
                .where(transactions.c.transaction_id == transaction_id)
                .values(status=status.value, updated_at=now)
            )
            if row.get("interregistry") is not None and self.interregistry is not None:
                await self.interregistry.settle_unsent(connection, row, status, now)
        return transaction_from_row(updated)

    async def expire_pending(self, now: datetime | None = None) -> int:
        """Terminate every awaiting_approval transaction past its deadline (the sweeper's work)."""
        now = now or datetime.now(UTC)
        async with self.db.read() as session:
            ids = (
                (
                    await session.execute(
                        select(transactions.c.transaction_id).where(
                            transactions.c.status == TransactionStatus.AWAITING_APPROVAL.value,
                            transactions.c.expires_at <= now,
                        )
                    )
                )
                .scalars()
                .all()
            )
        done = 0
        for transaction_id in ids:
            try:
                await self._release(
                    transaction_id,
                    TransactionStatus.TERMINATED,
                    None,
                    "system:timeout",
                    expired_only=True,
                    now=now,
                )
                done += 1
            except Conflict:
                continue  # approved, cancelled or terminated meanwhile
        if done:
            self._after_commit()
        return done

    # ---- first transfers (ARS → IR) ----------------------------------------------------------------------------

    async def first_transfer(self, principal: Principal, body: FirstTransferCreate) -> Answer:
        if not principal.has(Role.SERVICE):
            raise Forbidden("First transfers come from the ARS service.")
        claim = await self._claim(
            principal,
            f"first-transfer:{body.operation_id}",
            "/internal/v1/first-transfers",
            body.model_dump(mode="json"),
        )
        if body.to_registry is not None:
            # INTERREGISTRY §5.3: proposed to a connected registry; a repeat learns what it decided since.
            if isinstance(claim, StoredAnswer) and claim.status == 202:
                return await self.interregistry.first_transfer_state(claim.body)

            async def propose(claim: Claim) -> Answer:
                return await self.interregistry.propose_first_transfer(principal, body, claim)

            return await self._run_claimed(claim, propose)

        async def work(claim: Claim) -> Answer:
            return await self._first_transfer(principal, body, claim)

        return await self._run_claimed(claim, work)

    async def _first_transfer(self, principal: Principal, body: FirstTransferCreate, claim: Claim) -> Answer:
        party = body.first_transferring_party
        use_type = body.use.type if body.use else None
        section = await self.directory.section(party)
        if use_type is not None:
            destination = await self.directory.account_of_type(
                party, catalogue.DESTINATION_ACCOUNT_TYPE[use_type]
            )
        else:
            assert body.to_account is not None
            destination = (
                await self.directory.account(body.to_account) if account_party(body.to_account) else None
            )
        participants: dict[str, frozenset[str]] = {}
        if destination is not None and destination.party != party:
            participants = await self.directory.participants({b.ca_id for b in body.blocks})
        now = datetime.now(UTC)
        transaction_id = new_transaction_id()
        international = body.first_transfer_definition is FirstTransferDefinition.FIRST_INTERNATIONAL_TRANSFER
        arrival = {"state": _TERMINAL_STATE[use_type]} if use_type is not None else {"state": "held"}
        rows = first_transfer_rows(
            body,
            party=destination.party if destination else party,
            account_id=destination.account_id if destination else None,
            **arrival,
        )
        quantity = sum(r.quantity for r in rows)
        subtype = _FIRST_TRANSFER_SUBTYPE[body.first_transfer_definition]
        to_party = destination.party if destination else None
        base_row: dict[str, Any] = {
            "type": catalogue.FIRST_TRANSFER,
            "party": party,
            "from_account": None,
            "to_account": destination.account_id if destination else body.to_account,
            "from_party": party,
            "to_party": to_party if use_type is None else None,
            "from_registry_id": section.registry_id if section else None,
            "to_registry_id": destination.registry_id if destination else None,
            "quantity": quantity,
            "ndc_use_year": None,
            "purpose": body.use.purpose if body.use else None,
            "using_entity_id": body.use.using_entity_id if body.use else None,
            "note": body.note,
            "operation_id": body.operation_id,
            "initiated_by": body.initiated_by or principal.client_id,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.connect() as connection:
            seen = await self._seen_before(connection, rows)
            already = await first_transferred_under(connection, body)
            failed = catalogue.evaluate_first_transfer(
                party=party,
                blocks=rows,
                destination=destination,
                destination_id=body.to_account,
                use_type=use_type,
                section=section,
                ca_participants=participants,
                international=international,
                seen_before=seen,
                current_year=now.year,
                authorized_quantity=body.authorized_quantity,
                already_first_transferred=already,
            )
            if failed:
                return await self._record_rejection(
                    connection, transaction_id, base_row, failed, claim, "/internal/v1/first-transfers"
                )
            await connection.execute(
                insert(issued_ranges),
                [
                    {
                        "ca_id": r.ca_id,
                        "origin_registry_id": r.origin_registry_id,
                        "first_serial": r.first_serial,
                        "last_serial": r.last_serial,
                        "first_transferring_party": party,
                        "authorization_id": body.authorization_id,
                        "transaction_id": transaction_id,
                        "created_at": now,
                    }
                    for r in rows
                ],
            )
            changes = await Ledger(connection, now=now).insert_new(rows, transaction_id=transaction_id)
            await journal_mod.append(
                connection, transaction_id, "first_transfer", changes, actor=base_row["initiated_by"], at=now
            )
            row = base_row | {
                "transaction_id": transaction_id,
                "status": TransactionStatus.COMPLETED.value,
                "checks": [],
                "blocks": _wire([to_block(r) for r in rows]),
                "completed_at": now,
            }
            row["actions"] = _wire(
                aef_actions(
                    "first_transfer",
                    from_party=party,
                    to_party=to_party,
                    from_registry=row["from_registry_id"] or f"{party}01",
                    to_registry=row["to_registry_id"],
                    purpose=row["purpose"],
                    using_entity_id=row["using_entity_id"],
                    first_transfer_subtype=subtype,
                )
            )
            await connection.execute(insert(transactions), row)
            transaction = transaction_from_row(row | {"approved_by": None})
            await self._publish(connection, transaction, row)
            answer = _wire(transaction)
            await claim.complete(connection, 201, answer)
        return Answer(201, answer)

    @staticmethod
    async def _seen_before(connection: Any, rows: Sequence[BlockRow]) -> list[SerialRange]:
        seen: list[SerialRange] = []
        for start in range(0, len(rows), 200):
            chunk = rows[start : start + 200]
            conditions = [
                and_(
                    issued_ranges.c.ca_id == r.ca_id,
                    issued_ranges.c.origin_registry_id == r.origin_registry_id,
                    issued_ranges.c.first_serial <= r.last_serial,
                    issued_ranges.c.last_serial >= r.first_serial,
                )
                for r in chunk
            ]
            found = await connection.execute(
                select(
                    issued_ranges.c.ca_id,
                    issued_ranges.c.origin_registry_id,
                    issued_ranges.c.first_serial,
                    issued_ranges.c.last_serial,
                ).where(or_(*conditions))
            )
            seen.extend(SerialRange(*r) for r in found)
        return seen

    # ---- corrections (domain A16) ---------------------------------------------------------------------------

    @staticmethod
    def _require_secretariat(principal: Principal) -> None:
        if principal.party is not None or not principal.has(Role.SECRETARIAT_ADMIN):
            raise Forbidden("Corrections are proposed and approved by Secretariat administrators.")

    async def _transaction_row(self, transaction_id: str) -> dict[str, Any] | None:
        async with self.db.read() as session:
            return await transaction_row(session, transaction_id)

    async def propose_correction(
        self, principal: Principal, body: CorrectionCreate, key: str | None
    ) -> Answer:
        """`POST /v1/admin/corrections`: reserve the units a completed transfer moved, where they still are,
        in a `correction` awaiting a second Secretariat administrator (dual control)."""
        self._require_secretariat(principal)
        path = "/v1/admin/corrections"
        claim = await self._claim(principal, key, path, body.model_dump(mode="json"))

        async def work(claim: Claim) -> Answer:
            original = await self._transaction_row(body.transaction_id)
            if original is None:
                raise NotFound(f"No transaction {body.transaction_id}.")
            is_transfer = original["type"] == TransactionType.TRANSFER.value
            back_to = None
            if is_transfer and original["from_account"]:
                back_to = await self.directory.account(original["from_account"])
            now = datetime.now(UTC)
            correction_id = new_transaction_id()
            base_row: dict[str, Any] = {
                "type": catalogue.CORRECTION,
                "party": None,
                "from_account": original["to_account"],
                "to_account": original["from_account"],
                "from_party": original["to_party"],
                "to_party": original["from_party"],
                "from_registry_id": original["to_registry_id"],
                "to_registry_id": original["from_registry_id"],
                "quantity": original["quantity"],
                "ndc_use_year": None,
                "purpose": None,
                "using_entity_id": None,
                "note": body.reason,
                "corrects": original["transaction_id"],
                "initiated_by": principal.client_id,
                "created_at": now,
                "updated_at": now,
            }
            async with self.db.connect() as connection:
                # Corrections of one transaction queue on its row (SQLite serialises writers anyway).
                lock = select(transactions.c.status).where(
                    transactions.c.transaction_id == original["transaction_id"]
                )
                if connection.dialect.name == "postgresql":
                    lock = lock.with_for_update()
                await connection.execute(lock)
                other = (
                    await connection.execute(
                        select(transactions.c.transaction_id)
                        .where(
                            transactions.c.corrects == original["transaction_id"],
                            transactions.c.status.in_(
                                [TransactionStatus.AWAITING_APPROVAL.value, TransactionStatus.COMPLETED.value]
                            ),
                        )
                        .limit(1)
                    )
                ).scalar_one_or_none()
                ledger = Ledger(connection, now=now)
                takes: list[Take] | None = None
                shortfall = None
                if is_transfer and original["status"] == TransactionStatus.COMPLETED.value:
                    ranges = [
                        SerialRange(b["ca_id"], b["origin_registry_id"], b["first"], b["last"])
                        for b in original["blocks"]
                    ]
                    candidates, _ = await ledger.range_candidates(original["to_account"], ranges)
                    try:
                        takes = take_ranges(candidates, ranges)
                    except RangesNotHeld as missing:
                        shown = ", ".join(
                            f"{r.ca_id}-{r.origin_registry_id} {r.first}-{r.last}"
                            for r in missing.missing[:5]
                        )
                        shortfall = f"no longer held in {original['to_account']}: {shown}"
                failed = catalogue.evaluate_correction(
                    original_type=original["type"],
                    original_status=original["status"],
                    other_correction=other,
                    taken=[t.block.piece(t.first, t.last) for t in takes] if takes is not None else None,
                    shortfall=shortfall,
                    back_to=back_to,
                    back_to_id=original["from_account"],
                )
                if failed:
                    return await self._record_rejection(
                        connection, correction_id, base_row, failed, claim, path
                    )
                assert takes is not None
                rest, moved = move(takes, state="reserved", reserved_by=correction_id)
                changes = await ledger.replace(
                    _unique_blocks(takes), rest + moved, transaction_id=correction_id
                )
                await journal_mod.append(
                    connection, correction_id, "reserve", changes, actor=principal.client_id, at=now
                )
                row = base_row | {
                    "transaction_id": correction_id,
                    "status": TransactionStatus.AWAITING_APPROVAL.value,
                    "checks": [],
                    "actions": [],
                    "blocks": _wire([to_block(piece) for piece in moved]),
                    "expires_at": now + self.approval_timeout,
                }
                await connection.execute(insert(transactions), row)
                answer = _wire(transaction_from_row(row | {"approved_by": None, "completed_at": None}))
                await claim.complete(connection, 201, answer)
            return Answer(201, answer)

        return await self._run_claimed(claim, work)

    async def approve_correction(self, principal: Principal, correction_id: str, key: str | None) -> Answer:
        """Dual control: another Secretariat administrator completes the correction; the units go back."""
        self._require_secretariat(principal)
        path = f"/v1/admin/corrections/{correction_id}/approve"
        claim = await self._claim(principal, key, path, {})

        async def work(claim: Claim) -> Answer:
            row = await self._transaction_row(correction_id)
            if row is None or row["type"] != catalogue.CORRECTION:
                raise NotFound(f"No correction {correction_id}.")
            original = await self._transaction_row(row["corrects"])
            assert original is not None
            back_to = await self.directory.account(row["to_account"])
            now = datetime.now(UTC)
            async with self.db.connect() as connection:
                current = await self._pending(connection, correction_id, None)
                self._require_awaiting(current, now)
                ledger = Ledger(connection, now=now)
                reserved = await ledger.reserved_by(correction_id)
                failed = catalogue.evaluate_correction(
                    original_type=original["type"],
                    original_status=original["status"],
                    other_correction=None,
                    taken=reserved,
                    shortfall=None,
                    back_to=back_to,
                    back_to_id=row["to_account"],
                    proposer_approves=current["initiated_by"] == principal.client_id,
                )
                if failed:
                    problem = _check_failed_problem(correction_id, failed, path)
                    await claim.complete(connection, 422, problem)
                    return Answer(422, problem)
                assert back_to is not None
                arrival = {
                    "state": "held",
                    "reserved_by": None,
                    "account_id": back_to.account_id,
                    "party": back_to.party,
                }
                returned = [replace(b, **arrival) for b in reserved]
                changes = await ledger.replace(reserved, returned, transaction_id=correction_id)
                await journal_mod.append(
                    connection,
                    correction_id,
                    catalogue.CORRECTION,
                    changes,
                    actor=principal.client_id,
                    at=now,
                )
                updated = current | {
                    "status": TransactionStatus.COMPLETED.value,
                    "approved_by": principal.client_id,
                    "completed_at": now,
                    "updated_at": now,
                    "blocks": _wire([to_block(replace(b, id=None)) for b in returned]),
                }
                await connection.execute(
                    update(transactions)
                    .where(transactions.c.transaction_id == correction_id)
                    .values(**{k: v for k, v in updated.items() if k != "transaction_id"})
                )
                transaction = transaction_from_row(updated)
                await self._publish(connection, transaction, updated)
                answer = _wire(transaction)
                await claim.complete(connection, 200, answer)
            return Answer(200, answer)

        return await self._run_claimed(claim, work)

    async def cancel_correction(self, principal: Principal, correction_id: str) -> Transaction:
        """A Secretariat administrator withdraws a pending correction; the units are released in place."""
        self._require_secretariat(principal)
        row = await self._transaction_row(correction_id)
        if row is None or row["type"] != catalogue.CORRECTION:
            raise NotFound(f"No correction {correction_id}.")
        transaction = await self._release(
            correction_id, TransactionStatus.CANCELLED, None, principal.client_id
        )
        self._after_commit()
        return transaction

    # ---- reads ----------------------------------------------------------------------------------------------

    @staticmethod
    def _may_read_all(principal: Principal) -> bool:
        return principal.party is None and principal.has(Role.SECRETARIAT_ADMIN, Role.AUDITOR)

    async def get(self, principal: Principal, transaction_id: str) -> Transaction:
        row = await self._transaction_row(transaction_id)
        if row is None or not (
            self._may_read_all(principal) or principal.party in (row["from_party"], row["to_party"])
        ):
            raise NotFound(f"No transaction {transaction_id} visible to you.")
        return transaction_from_row(row)

    async def list(
        self,
        principal: Principal,
        *,
        account: str | None,
        status: TransactionStatus | None,
        limit: int,
        cursor: str | None,
        kind: str | None = None,
    ) -> tuple[list[Transaction], str | None]:
        after = decode_cursor(cursor, fields=("id",))
        query = select(transactions).order_by(transactions.c.transaction_id).limit(limit + 1)
        if not self._may_read_all(principal):
            if principal.party is None:
                raise Forbidden("Only Parties and the Secretariat read transactions.")
            query = query.where(
                or_(transactions.c.from_party == principal.party, transactions.c.to_party == principal.party)
            )
        if account is not None:
            query = query.where(
                or_(transactions.c.from_account == account, transactions.c.to_account == account)
            )
        if status is not None:
            query = query.where(transactions.c.status == status.value)
        if kind is not None:
            query = query.where(transactions.c.type == kind)
        if after is not None:
            query = query.where(transactions.c.transaction_id > str(after["id"]))
        async with self.db.read() as session:
            rows = (await session.execute(query)).mappings().all()
        items = [transaction_from_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor({"id": items[-1].transaction_id}) if len(rows) > limit and items else None
        return items, next_cursor

    async def holdings(
        self, principal: Principal, account_id: str, *, limit: int, cursor: str | None
    ) -> Holdings:
        if not (self._may_read_all(principal) or account_party(account_id) == principal.party):
            raise NotFound(f"No account {account_id} of your Party.")
        after = decode_cursor(cursor, fields=("v", "ca", "reg", "first"))
        order = (blocks.c.vintage, blocks.c.ca_id, blocks.c.origin_registry_id, blocks.c.first_serial)
        from sqlalchemy import tuple_

        query = select(blocks).where(blocks.c.account_id == account_id).order_by(*order).limit(limit + 1)
        if after is not None:
            query = query.where(
                tuple_(*order)
                > tuple_(int(after["v"]), str(after["ca"]), str(after["reg"]), int(after["first"]))
            )
        async with self.db.read() as session:
            rows = [BlockRow.from_row(r) for r in (await session.execute(query)).mappings()]
            total = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(blocks.c.last_serial - blocks.c.first_serial + 1), 0)
                    ).where(blocks.c.account_id == account_id)
                )
            ).scalar_one()
        items = rows[:limit]
        next_cursor = None
        if len(rows) > limit and items:
            last = items[-1]
            next_cursor = encode_cursor(
                {
                    "v": last.vintage,
                    "ca": last.ca_id,
                    "reg": last.origin_registry_id,
                    "first": last.first_serial,
                }
            )
        return Holdings(
            account_id=account_id,
            total=int(total),
            items=[to_block(r) for r in items],
            next_cursor=next_cursor,
        )

    async def unit(self, principal: Principal, unique_id: str) -> dict[str, Any]:
        try:
            uid = parse_unique_id(unique_id)
        except InvalidUniqueId as exc:
            raise NotFound(f"{unique_id!r} is not a unit identifier: {exc}") from exc
        from services.transactions.models import journal, journal_range

        async with self.db.read() as session:
            row = (
                (
                    await session.execute(
                        select(blocks)
                        .where(
                            blocks.c.ca_id == uid.ca_id,
                            blocks.c.origin_registry_id == uid.registry_id,
                            blocks.c.first_serial <= uid.serial,
                        )
                        .order_by(blocks.c.first_serial.desc())
                        .limit(1)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is not None and row["last_serial"] < uid.serial:
                row = None
            block = BlockRow.from_row(row) if row is not None else None
            if (
                block is None
                or block.first_transferring_party != uid.first_transferring_party
                or block.vintage != uid.vintage
                or not (self._may_read_all(principal) or principal.party == block.party)
            ):
                raise NotFound(f"No unit {unique_id} visible to you.")
            series = (journal.c.ca_id == uid.ca_id, journal.c.origin_registry_id == uid.registry_id)
            if not self.db.is_sqlite:
                # The GiST index on (CA, registry, range) of migration 0004: only the entries covering it.
                covers = journal_range().op("@>")(literal(uid.serial, BigInteger))
            else:
                covers = and_(journal.c.first_serial <= uid.serial, journal.c.last_serial >= uid.serial)
            entries = (
                (await session.execute(select(journal).where(*series, covers).order_by(journal.c.id)))
                .mappings()
                .all()
            )
        history = []
        for entry in entries:
            payload = entry["payload"]
            covers = any(
                snapshot is not None and snapshot["first_serial"] <= uid.serial <= snapshot["last_serial"]
                for snapshot in (payload["block_before"], payload["block_after"])
            )
            if covers:
                history.append(
                    {
                        "seq": entry["seq"],
                        "transaction_id": entry["transaction_id"],
                        "entry_type": entry["entry_type"],
                        "block_before": payload["block_before"],
                        "block_after": payload["block_after"],
                        "at": payload["at"],
                        "actor": payload["actor"],
                        "prev_hash": entry["prev_hash"],
                        "hash": entry["hash"],
                    }
                )
        return {"unique_id": str(uid), "block": to_block(block), "history": history}


def _unique_blocks(takes: Sequence[Take]) -> list[BlockRow]:
    seen: dict[int, BlockRow] = {}
    for take in takes:
        assert take.block.id is not None
        seen.setdefault(take.block.id, take.block)
    return list(seen.values())
