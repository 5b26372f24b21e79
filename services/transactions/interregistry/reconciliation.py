"""Reconciliation of the pair ledger between the IR and one connected registry (INTERREGISTRY §8).

The object is the pair ledger: every transfer between the IR and registry R (`irx_transfer`), its final
status and its blocks as they crossed. A reconciliation fixes a cut-off without pausing transfers — R's inbox
position P (`irx_inbox_cursor.last_position`, after the relay numbered what had committed) and R's last
accepted seq S (`registry.last_seq_in`), both read under the registry row lock, which serialises the start
with every message of R. Both sides then classify each transfer identically:

- **final** iff its F message is in the inbox at a position ≤ P;
- **open** iff not final and its proposal is at a position ≤ P (outgoing) or a seq ≤ S (incoming; a cancel
  tombstone counts by its cancel's seq) — open transfers are compared as a set of ids, never by content;
- anything else happened after the cut-off and is excluded on both sides.

Stages, each requested by an inbox `reconciliation.requested` and answered by R with the stage's envelope
through the message pipeline (`Interregistry.receive`, so answers are signed, sequenced and logged):

1. totals per (direction, CA, vintage, metric) of completed transfers, the counts of the other final statuses
   and the open ids → equal: `completed`; else `totals_inconsistent` (7001) and stage 2 for the keys;
2. unit blocks of every transfer touching those keys → serial ranges `missing_at_registry`, `missing_at_ir`,
   `status_differs`; none: `completed` (the totals differed in arithmetic only, no serial is in dispute);
   some: `blocks_inconsistent` (7002), the IR's current blocks overlapping each range get `frozen_by` = the
   reconciliation id (every transfer of them is refused 4006 by the ledger's existing checks) and stage 3 is
   requested for the transfers concerned;
3. audit trail: the digests (`kit.jws.audit_digest`) of the inbox ≤ P and of R's messages ≤ S, then per
   transfer the first diverging message → diagnoses `final_status_not_applied` (the IR re-announces its F
   message), `unknown_at_ir`, `conflicting_record` (7003 when anything differs). When every diagnosis is
   `final_status_not_applied` and fewer than 3 rounds ran, a new round starts (`next_rounds`: new cut-off
   after the copies are numbered, totals again; clean → `completed`, freezes lifted). Otherwise the run waits,
   still `blocks_inconsistent` with its freezes, for the Secretariat's `resolve`.

A stage R does not answer by `respond_by` (`stage_timeout`, 1 h) makes the reconciliation `failed` (7006,
`fail_due`, run by the schedule loop and callable with any `now`). `resolve` (secretariat_admin) lifts the
freezes of an open or failed reconciliation and sets `completed_with_manual_intervention`. Every status change
is published as the inbox `reconciliation.result` (for R) and the outbox event
`interregistry.reconciliation.<status>` (party: R's Party), in the transaction that makes it.

Decisions where §8 is silent (docs/interregistry.md, "Reconciliation"): freezes cover the current block rows
overlapping a disputed range (no split, so a freeze may be wider than the range; the ledger's hot path is not
touched); the daily start is `REGISTRY_IRX_RECONCILE_AT` (HH:MM UTC, default 02:00; `off` disables it; off by
default when `REGISTRY_ENVIRONMENT=test`).
"""

import asyncio
import contextlib
import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.identifiers import InvalidUniqueId, parse_unique_id
from contracts.interregistry import (
    IrxCode,
    IrxMessageType,
    ReconciliationAuditTrail,
    ReconciliationBlocks,
    ReconciliationDiagnosis,
    ReconciliationDiagnosisKind,
    ReconciliationKey,
    ReconciliationRange,
    ReconciliationRangeKind,
    ReconciliationRequested,
    ReconciliationResolve,
    ReconciliationResult,
    ReconciliationStage,
    ReconciliationStart,
    ReconciliationStatus,
    ReconciliationTotals,
    RegistryStatus,
    TransferCode,
    TransferDirection,
)
from contracts.roles import Role
from kit.auth import Principal
from kit.errors import Conflict, Forbidden, NotFound
from kit.jws import audit_digest
from services.transactions.interregistry import repository
from services.transactions.interregistry.models import (
    DIRECTION_IN,
    DIRECTION_OUT,
    irx_message,
    irx_transfer,
)
from services.transactions.interregistry.models import registry as registry_table
from services.transactions.interregistry.reconciliation_models import reconciliation, reconciliation_item
from services.transactions.interregistry.service import Answer, Interregistry, IrxRefused, Received
from services.transactions.models import blocks

__all__ = [
    "DEFAULT_STAGE_TIMEOUT",
    "PairTransfer",
    "Reconciliations",
    "daily_time",
    "pair_frozen",
    "reconciliation",
    "reconciliation_item",
]

log = structlog.get_logger(__name__)

#: §8: a stage answer missing after this long fails the reconciliation (7006).
DEFAULT_STAGE_TIMEOUT = timedelta(hours=1)
#: §8: automatic re-runs after R aligned, at most this many rounds in all.
MAX_ROUNDS = 3
#: `reconciliation.stage` of a run whose next round starts once the re-announcements are numbered.
_NEXT_ROUND = "next_round"
_FINAL = frozenset({"completed", "rejected", "terminated", "cancelled"})


async def pair_frozen(
    connection: AsyncConnection, registry_id: str, keys: Iterable[tuple[str, int]]
) -> list[tuple[str, int, str]]:
    """3004 (§7, §8): the (CA, vintage) of `keys` for which the pair IR–`registry_id` is frozen, with the
    reconciliation freezing it — a run of that registry in `totals_inconsistent` whose differing keys name
    that CA and vintage. Either direction is refused (§7 names the pair, CA and vintage, not a direction: a
    transfer back could move the very units in dispute). Once the run moves on, 4006 on the ranges it named
    takes over (or nothing, if none was in dispute)."""
    wanted = set(keys)
    if not wanted:
        return []
    rows = await connection.execute(
        select(reconciliation.c.reconciliation_id, reconciliation.c.inconsistent_keys).where(
            reconciliation.c.registry_id == registry_id,
            reconciliation.c.status == ReconciliationStatus.TOTALS_INCONSISTENT.value,
        )
    )
    frozen: set[tuple[str, int, str]] = set()
    for reconciliation_id, differing in rows:
        for key in differing or []:
            pair = (str(key["ca_id"]), int(key["vintage"]))
            if pair in wanted:
                frozen.add((*pair, reconciliation_id))
    return sorted(frozen)


def daily_time(value: str | None) -> time | None:
    """`REGISTRY_IRX_RECONCILE_AT` as a UTC time of day; None (no schedule) for `off` or an empty value."""
    if value is None or value.strip().lower() in ("", "off", "none"):
        return None
    hours, minutes = value.strip().split(":")
    return time(int(hours), int(minutes), tzinfo=UTC)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class PairTransfer:
    """One transfer of the pair ledger as classified at the cut-off."""

    transfer_id: str
    direction: str
    status: str  # a final status, or "open"
    final_position: int | None
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def key_set(self) -> set[tuple[str, str, int, str]]:
        return {(self.direction, b["ca_id"], int(b["vintage"]), b["metric"]) for b in self.blocks}

    def ranges(self) -> set[tuple[str, str]]:
        return {(b["unique_id_first"], b["unique_id_last"]) for b in self.blocks}


def totals_of(transfers: Iterable[PairTransfer]) -> dict[str, Any]:
    """Stage 1 figures of a pair ledger: per key the completed quantity and transfer count, the counts of
    the other final statuses and the open ids (the IR's side; the simulator computes R's the same way)."""
    quantity: dict[tuple[str, str, int, str], int] = defaultdict(int)
    count: dict[tuple[str, str, int, str], int] = defaultdict(int)
    finals = {"rejected": 0, "terminated": 0, "cancelled": 0}
    open_ids: list[str] = []
    for item in transfers:
        if item.status == "open":
            open_ids.append(item.transfer_id)
            continue
        if item.status != "completed":
            finals[item.status] += 1
            continue
        for block in item.blocks:
            quantity[(item.direction, block["ca_id"], int(block["vintage"]), block["metric"])] += int(
                block["quantity"]
            )
        for key in item.key_set():
            count[key] += 1
    totals = {key: (quantity[key], count[key]) for key in quantity}
    return {"totals": totals, "final_counts": finals, "open": sorted(open_ids)}


def _key(key: tuple[str, str, int, str]) -> ReconciliationKey:
    return ReconciliationKey(direction=TransferDirection(key[0]), ca_id=key[1], vintage=key[2], metric=key[3])


def _key_tuple(key: ReconciliationKey) -> tuple[str, str, int, str]:
    return (key.direction.value, key.ca_id, key.vintage, key.metric)


class Reconciliations:
    """The §8 use cases of one transactions process (`app.state.reconciliations`)."""

    def __init__(
        self,
        interregistry: Interregistry,
        *,
        clock: Callable[[], datetime] | None = None,
        stage_timeout: timedelta = DEFAULT_STAGE_TIMEOUT,
        daily_at: time | None = None,
    ) -> None:
        self.irx = interregistry
        self.db = interregistry.db
        self.clock = clock or interregistry.clock
        self.stage_timeout = stage_timeout
        self.daily_at = daily_at
        self._task: asyncio.Task[None] | None = None
        self._last_daily: datetime | None = None

    # ---- the pair ledger at a cut-off ----------------------------------------------------------------------

    async def pair_ledger(
        self, connection: AsyncConnection, registry_id: str, cutoff_position: int, cutoff_seq: int
    ) -> list[PairTransfer]:
        """Every transfer between the IR and `registry_id` that is final or open at (P, S)."""
        rows = (
            (await connection.execute(select(irx_transfer).where(irx_transfer.c.registry_id == registry_id)))
            .mappings()
            .all()
        )
        numbers: dict[tuple[str, str], tuple[int | None, int | None]] = {}
        messages = await connection.execute(
            select(
                irx_message.c.direction, irx_message.c.message_id, irx_message.c.position, irx_message.c.seq
            ).where(irx_message.c.registry_id == registry_id)
        )
        for direction, message_id, position, seq in messages:
            numbers[(direction, message_id)] = (position, seq)
        made: list[PairTransfer] = []
        for row in rows:
            final_position = numbers.get((DIRECTION_OUT, row["final_message_id"] or ""), (None, None))[0]
            if row["status"] in _FINAL and final_position is not None and final_position <= cutoff_position:
                status = row["status"]
            elif row["direction"] == DIRECTION_OUT:
                proposed_at = numbers.get((DIRECTION_OUT, row["proposal_message_id"] or ""), (None, None))[0]
                if proposed_at is None or proposed_at > cutoff_position:
                    continue
                status, final_position = "open", None
            else:
                first_message = row["proposal_message_id"] or row["decision_message_id"] or ""
                seq = numbers.get((DIRECTION_IN, first_message), (None, None))[1]
                if seq is None or seq > cutoff_seq:
                    continue
                status, final_position = "open", None
            made.append(
                PairTransfer(
                    transfer_id=row["transfer_id"],
                    direction=row["direction"],
                    status=status,
                    final_position=final_position,
                    blocks=list(row["blocks"] or []),
                )
            )
        return sorted(made, key=lambda item: item.transfer_id)

    # ---- start ---------------------------------------------------------------------------------------------

    async def start_by_secretariat(self, principal: Principal, body: ReconciliationStart) -> dict[str, Any]:
        if not principal.is_secretariat:
            raise Forbidden("A reconciliation is started by the Secretariat or by the registry itself.")
        await self.irx.relay.relay(body.registry_id)
        async with self.db.connect() as connection:
            row = await repository.get_registry(connection, body.registry_id, lock=True)
            if row is None:
                raise NotFound(f"No connected registry {body.registry_id}.")
            if row["status"] == RegistryStatus.DISCONNECTED.value:
                # Nobody would answer: the run could only fail (a registry that may still speak is fine).
                raise Conflict(
                    f"{body.registry_id} is disconnected.",
                    slug="registry-disconnected",
                    registry_status=row["status"],
                )
            started = await self._start(connection, row, f"client:{principal.client_id}", None)
        self._notify()
        return started

    async def start_by_registry(
        self, principal: Principal, raw: bytes, *, idempotency_key: str | None, signature: str | None
    ) -> Answer:
        if principal.registry_id:
            # Number what committed before the cut-off is read, so P covers every decision already made.
            await self.irx.relay.relay(principal.registry_id)

        async def process(connection: AsyncConnection, received: Received) -> Answer:
            start = received.body
            assert isinstance(start, ReconciliationStart)
            if start.registry_id != received.registry["registry_id"]:
                raise IrxRefused(
                    IrxCode.SENDER_MISMATCH, "A registry starts a reconciliation of its own pair."
                )
            made = await self._start(
                connection, received.registry, f"registry:{start.registry_id}", received.envelope.seq
            )
            return Answer(status=201, body=made)

        answer = await self.irx.receive(
            principal,
            raw,
            idempotency_key=idempotency_key,
            signature=signature,
            accepts=frozenset({IrxMessageType.RECONCILIATION_START}),
            process=process,
        )
        self._notify()
        return answer

    async def _start(
        self,
        connection: AsyncConnection,
        registry_row: Mapping[Any, Any],
        initiated_by: str,
        own_seq: int | None,
    ) -> dict[str, Any]:
        """In the caller's transaction, with the registry row locked: 7004 or a new `initiated` row."""
        registry_id = registry_row["registry_id"]
        open_one = (
            await connection.execute(
                select(reconciliation.c.reconciliation_id).where(
                    reconciliation.c.registry_id == registry_id,
                    reconciliation.c.status.in_([s.value for s in ReconciliationStatus if s.open]),
                )
            )
        ).scalar()
        if open_one is not None:
            raise IrxRefused(
                IrxCode.RECONCILIATION_OPEN,
                f"Reconciliation {open_one} is open for {registry_id}.",
                reconciliation_id=open_one,
            )
        now = self.clock()
        reconciliation_id = f"REC-{registry_id}-{uuid.uuid4().hex[:12]}"
        cutoff_position = await repository.cursor_position(connection, registry_id)
        # S: the last seq accepted before this start (a registry's own start message is after its cut-off).
        cutoff_seq = registry_row["last_seq_in"] if own_seq is None else own_seq - 1
        respond_by = now + self.stage_timeout
        await connection.execute(
            insert(reconciliation).values(
                reconciliation_id=reconciliation_id,
                registry_id=registry_id,
                status=ReconciliationStatus.INITIATED.value,
                round=1,
                stage=ReconciliationStage.TOTALS.value,
                cutoff_position=cutoff_position,
                cutoff_seq=cutoff_seq,
                respond_by=respond_by,
                initiated_by=initiated_by,
                codes=[],
                inconsistent_keys=[],
                inconsistent_ranges=[],
                diagnoses=[],
                created_at=now,
                updated_at=now,
            )
        )
        await self.irx.enqueue(
            connection,
            registry_row,
            IrxMessageType.RECONCILIATION_REQUESTED,
            ReconciliationRequested(
                reconciliation_id=reconciliation_id,
                stage=ReconciliationStage.TOTALS,
                cutoff_position=cutoff_position,
                cutoff_seq=cutoff_seq,
                respond_by=respond_by,
            ),
        )
        log.info(
            "irx_reconciliation_started",
            reconciliation_id=reconciliation_id,
            registry_id=registry_id,
            cutoff_position=cutoff_position,
            cutoff_seq=cutoff_seq,
        )
        return {
            "reconciliation_id": reconciliation_id,
            "status": ReconciliationStatus.INITIATED.value,
            "cutoff_position": cutoff_position,
            "cutoff_seq": cutoff_seq,
            "respond_by": respond_by.isoformat(),
        }

    def _notify(self) -> None:
        self.irx.relay.notify()
        self.irx.outbox.notify()

    # ---- stage answers -------------------------------------------------------------------------------------

    async def answer(
        self,
        principal: Principal,
        reconciliation_id: str,
        stage: ReconciliationStage,
        raw: bytes,
        *,
        idempotency_key: str | None,
        signature: str | None,
    ) -> Answer:
        message_type = {
            ReconciliationStage.TOTALS: IrxMessageType.RECONCILIATION_TOTALS,
            ReconciliationStage.BLOCKS: IrxMessageType.RECONCILIATION_BLOCKS,
            ReconciliationStage.AUDIT_TRAIL: IrxMessageType.RECONCILIATION_AUDIT_TRAIL,
        }[stage]

        async def process(connection: AsyncConnection, received: Received) -> Answer:
            row = await self._awaiting(connection, received, reconciliation_id, stage)
            if stage is ReconciliationStage.TOTALS:
                result = await self._compare_totals(connection, received, row)
            elif stage is ReconciliationStage.BLOCKS:
                result = await self._compare_blocks(connection, received, row)
            else:
                result = await self._compare_audit_trail(connection, received, row)
            return Answer(status=200, body=result.model_dump(mode="json"))

        answer = await self.irx.receive(
            principal,
            raw,
            idempotency_key=idempotency_key,
            signature=signature,
            accepts=frozenset({message_type}),
            process=process,
        )
        self._notify()
        if stage is ReconciliationStage.AUDIT_TRAIL and not answer.replayed:
            await self.next_rounds(reconciliation_id)
        return answer

    async def _awaiting(
        self,
        connection: AsyncConnection,
        received: Received,
        reconciliation_id: str,
        stage: ReconciliationStage,
    ) -> dict[str, Any]:
        """The reconciliation, locked, when it awaits this stage from this registry; else 7005 (not recorded)."""
        query = select(reconciliation).where(reconciliation.c.reconciliation_id == reconciliation_id)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await connection.execute(query)).mappings().first()
        registry_id = received.registry["registry_id"]
        if row is None or row["registry_id"] != registry_id:
            raise IrxRefused(
                IrxCode.RECONCILIATION_ANSWER_MISMATCH,
                f"{registry_id} has no reconciliation {reconciliation_id}.",
            )
        body_id = getattr(received.body, "reconciliation_id", None)
        if body_id != reconciliation_id:
            raise IrxRefused(
                IrxCode.RECONCILIATION_ANSWER_MISMATCH, "reconciliation_id of the body is not the path's."
            )
        if row["stage"] != stage.value or not ReconciliationStatus(row["status"]).open:
            raise IrxRefused(
                IrxCode.RECONCILIATION_ANSWER_MISMATCH,
                f"{reconciliation_id} is {row['status']} and awaits {row['stage'] or 'no answer'},"
                f" not {stage.value}.",
                reconciliation_status=row["status"],
            )
        return dict(row)

    async def _items(
        self,
        connection: AsyncConnection,
        row: Mapping[Any, Any],
        stage: str,
        entries: Sequence[dict[str, Any]],
    ) -> None:
        if not entries:
            return
        now = self.clock()
        await connection.execute(
            insert(reconciliation_item),
            [
                {
                    "reconciliation_id": row["reconciliation_id"],
                    "round": row["round"],
                    "stage": stage,
                    "transfer_id": None,
                    "ir_value": None,
                    "registry_value": None,
                    "note": None,
                    "created_at": now,
                    **entry,
                }
                for entry in entries
            ],
        )

    async def _compare_totals(
        self, connection: AsyncConnection, received: Received, row: dict[str, Any]
    ) -> ReconciliationResult:
        theirs = received.body
        assert isinstance(theirs, ReconciliationTotals)
        if (theirs.cutoff_position, theirs.cutoff_seq) != (row["cutoff_position"], row["cutoff_seq"]):
            raise IrxRefused(
                IrxCode.RECONCILIATION_ANSWER_MISMATCH,
                f"The cut-off is ({row['cutoff_position']}, {row['cutoff_seq']}), not"
                f" ({theirs.cutoff_position}, {theirs.cutoff_seq}).",
            )
        ledger = await self.pair_ledger(
            connection, row["registry_id"], row["cutoff_position"], row["cutoff_seq"]
        )
        ours = totals_of(ledger)
        their_totals: dict[tuple[str, str, int, str], tuple[int, int]] = {}
        for total in theirs.totals:
            key = (total.direction.value, total.ca_id, total.vintage, total.metric)
            quantity, count = their_totals.get(key, (0, 0))
            their_totals[key] = (quantity + total.completed_quantity, count + total.completed_transfers)
        differing = sorted(
            key
            for key in set(ours["totals"]) | set(their_totals)
            if ours["totals"].get(key) != their_totals.get(key)
        )
        finals_equal = ours["final_counts"] == theirs.final_counts.model_dump()
        open_equal = set(ours["open"]) == set(theirs.open_transfers)
        await self._items(
            connection,
            row,
            "totals",
            [
                {
                    "kind": "totals",
                    "consistent": int(key not in differing),
                    "ir_value": _totals_value(key, ours["totals"].get(key)),
                    "registry_value": _totals_value(key, their_totals.get(key)),
                }
                for key in sorted(set(ours["totals"]) | set(their_totals))
            ]
            + [
                {
                    "kind": "totals",
                    "consistent": int(finals_equal and open_equal),
                    "note": "final_counts and open_transfers",
                    "ir_value": {"final_counts": ours["final_counts"], "open_transfers": ours["open"]},
                    "registry_value": {
                        "final_counts": theirs.final_counts.model_dump(),
                        "open_transfers": sorted(theirs.open_transfers),
                    },
                }
            ],
        )
        if not differing and finals_equal and open_equal:
            return await self._close(connection, row, ReconciliationStatus.COMPLETED)
        keys = differing
        if not keys:
            # Only the counts of other statuses or the open sets differ: stage 2 looks at every key.
            keys = sorted(set().union(*(item.key_set() for item in ledger)) | set(their_totals))
        row["codes"] = [
            *row["codes"],
            _code(IrxCode.RECONCILIATION_TOTALS_INCONSISTENT, f"{len(differing)} keys differ"),
        ]
        row["inconsistent_keys"] = [_key(key).model_dump(mode="json") for key in keys]
        return await self._advance(
            connection,
            row,
            ReconciliationStatus.TOTALS_INCONSISTENT,
            ReconciliationStage.BLOCKS,
            keys=[_key(key) for key in keys],
        )

    async def _compare_blocks(
        self, connection: AsyncConnection, received: Received, row: dict[str, Any]
    ) -> ReconciliationResult:
        theirs = received.body
        assert isinstance(theirs, ReconciliationBlocks)
        wanted = {_key_tuple(ReconciliationKey.model_validate(key)) for key in row["inconsistent_keys"]}
        ledger = await self.pair_ledger(
            connection, row["registry_id"], row["cutoff_position"], row["cutoff_seq"]
        )
        ours = {item.transfer_id: item for item in ledger if item.key_set() & wanted}
        their = {
            item.transfer_id: PairTransfer(
                transfer_id=item.transfer_id,
                direction=item.direction.value,
                status=item.status.value if item.status.value in _FINAL else "open",
                final_position=item.final_position,
                blocks=[block.model_dump() for block in item.blocks],
            )
            for item in theirs.transfers
            if item.transfer_id in ours or _touches(item.direction.value, item.blocks, wanted)
        }
        ranges: list[ReconciliationRange] = []
        for transfer_id in sorted(set(ours) | set(their)):
            mine, other = ours.get(transfer_id), their.get(transfer_id)
            if other is None:
                assert mine is not None
                ranges += _ranges(transfer_id, mine.ranges(), ReconciliationRangeKind.MISSING_AT_REGISTRY)
            elif mine is None:
                ranges += _ranges(transfer_id, other.ranges(), ReconciliationRangeKind.MISSING_AT_IR)
            elif mine.status != other.status:
                ranges += _ranges(
                    transfer_id, mine.ranges() | other.ranges(), ReconciliationRangeKind.STATUS_DIFFERS
                )
            else:
                ranges += _ranges(
                    transfer_id, mine.ranges() - other.ranges(), ReconciliationRangeKind.MISSING_AT_REGISTRY
                )
                ranges += _ranges(
                    transfer_id, other.ranges() - mine.ranges(), ReconciliationRangeKind.MISSING_AT_IR
                )
        await self._items(
            connection,
            row,
            "blocks",
            [
                {
                    "kind": "transfer",
                    "transfer_id": transfer_id,
                    "consistent": int(all(r.transfer_id != transfer_id for r in ranges)),
                    "ir_value": _transfer_value(ours.get(transfer_id)),
                    "registry_value": _transfer_value(their.get(transfer_id)),
                }
                for transfer_id in sorted(set(ours) | set(their))
            ],
        )
        if not ranges:
            return await self._close(connection, row, ReconciliationStatus.COMPLETED)
        frozen = await self._freeze(connection, row["reconciliation_id"], ranges)
        await self._items(
            connection,
            row,
            "blocks",
            [
                {
                    "kind": "range",
                    "transfer_id": item.transfer_id,
                    "consistent": 0,
                    "ir_value": item.model_dump(mode="json"),
                    "note": f"{frozen} block rows frozen",
                }
                for item in ranges
            ],
        )
        row["codes"] = [
            *row["codes"],
            _code(IrxCode.RECONCILIATION_BLOCKS_INCONSISTENT, f"{len(ranges)} ranges differ"),
        ]
        row["inconsistent_ranges"] = [item.model_dump(mode="json") for item in ranges]
        return await self._advance(
            connection,
            row,
            ReconciliationStatus.BLOCKS_INCONSISTENT,
            ReconciliationStage.AUDIT_TRAIL,
            transfer_ids=sorted({item.transfer_id for item in ranges}),
        )

    async def _freeze(
        self, connection: AsyncConnection, reconciliation_id: str, ranges: Sequence[ReconciliationRange]
    ) -> int:
        """`frozen_by` on every current block row overlapping a disputed range (S9; 4006 on any use)."""
        frozen = 0
        for item in ranges:
            try:
                first, last = parse_unique_id(item.unique_id_first), parse_unique_id(item.unique_id_last)
            except InvalidUniqueId:
                continue  # a range R made up cannot name IR blocks; the diagnosis still reports it
            result = await connection.execute(
                update(blocks)
                .where(
                    blocks.c.ca_id == first.ca_id,
                    blocks.c.origin_registry_id == first.registry_id,
                    blocks.c.first_serial <= last.serial,
                    blocks.c.last_serial >= first.serial,
                    blocks.c.frozen_by.is_(None),
                )
                .values(frozen_by=reconciliation_id)
            )
            frozen += result.rowcount or 0
        log.warning(
            "irx_reconciliation_frozen", reconciliation_id=reconciliation_id, ranges=len(ranges), rows=frozen
        )
        return frozen

    async def _compare_audit_trail(
        self, connection: AsyncConnection, received: Received, row: dict[str, Any]
    ) -> ReconciliationResult:
        theirs = received.body
        assert isinstance(theirs, ReconciliationAuditTrail)
        registry_id = row["registry_id"]
        messages = (
            (
                await connection.execute(
                    select(irx_message)
                    .where(
                        irx_message.c.registry_id == registry_id,
                        or_(
                            and_(
                                irx_message.c.direction == DIRECTION_OUT,
                                irx_message.c.position <= row["cutoff_position"],
                            ),
                            and_(
                                irx_message.c.direction == DIRECTION_IN,
                                irx_message.c.seq <= row["cutoff_seq"],
                            ),
                        ),
                    )
                    .order_by(irx_message.c.id)
                )
            )
            .mappings()
            .all()
        )
        inbox = sorted(
            (m["position"], m["message_id"], m["body_sha256"])
            for m in messages
            if m["direction"] == DIRECTION_OUT
        )
        sent = sorted(
            (m["seq"], m["message_id"], m["body_sha256"]) for m in messages if m["direction"] == DIRECTION_IN
        )
        digests_equal = (audit_digest(inbox), audit_digest(sent)) == (theirs.digest_inbox, theirs.digest_sent)
        their_trails = {item.transfer_id: item.messages for item in theirs.transfers}
        requested = sorted({item["transfer_id"] for item in row["inconsistent_ranges"]})
        transfers = {
            r["transfer_id"]: r
            for r in (
                await connection.execute(
                    select(irx_transfer).where(irx_transfer.c.transfer_id.in_(requested))
                )
            ).mappings()
        }
        diagnoses: list[ReconciliationDiagnosis] = []
        reannounce: list[Any] = []
        for transfer_id in requested:
            record = transfers.get(transfer_id)
            their_messages = {str(m.message_id): m for m in their_trails.get(transfer_id, [])}
            if record is None or record["registry_id"] != registry_id:
                diagnoses.append(
                    ReconciliationDiagnosis(
                        transfer_id=transfer_id, diagnosis=ReconciliationDiagnosisKind.UNKNOWN_AT_IR
                    )
                )
                continue
            ours = [m for m in messages if m["transfer_id"] == transfer_id]
            final = next((m for m in ours if m["message_id"] == record["final_message_id"]), None)
            if final is not None and final["message_id"] not in their_messages:
                diagnoses.append(
                    ReconciliationDiagnosis(
                        transfer_id=transfer_id,
                        diagnosis=ReconciliationDiagnosisKind.FINAL_STATUS_NOT_APPLIED,
                        position=final["position"],
                        message_id=uuid.UUID(final["message_id"]),
                    )
                )
                reannounce.append(final)
                continue
            diverging = next(
                (
                    m["message_id"]
                    for m in ours
                    if m["message_id"] not in their_messages
                    or their_messages[m["message_id"]].body_sha256 != m["body_sha256"]
                ),
                None,
            )
            if diverging is None:
                known = {m["message_id"] for m in ours}
                diverging = next((mid for mid in their_messages if mid not in known), None)
            if diverging is not None and diverging not in {m["message_id"] for m in ours}:
                diagnoses.append(
                    ReconciliationDiagnosis(
                        transfer_id=transfer_id,
                        diagnosis=ReconciliationDiagnosisKind.UNKNOWN_AT_IR,
                        message_id=uuid.UUID(diverging) if diverging else None,
                    )
                )
                continue
            # Both hold the same messages (or messages that differ) yet disagree on the units: manual.
            diagnoses.append(
                ReconciliationDiagnosis(
                    transfer_id=transfer_id,
                    diagnosis=ReconciliationDiagnosisKind.CONFLICTING_RECORD,
                    message_id=uuid.UUID(diverging) if diverging else None,
                )
            )
        registry_row = received.registry
        for final in reannounce:
            # §8: R must process the F message; it is written again so R meets it at a new position.
            envelope = final["envelope"]
            await self.irx.enqueue(
                connection,
                registry_row,
                IrxMessageType(envelope["type"]),
                envelope["body"],
                transfer_id=final["transfer_id"],
            )
        await self._items(
            connection,
            row,
            "audit_trail",
            [
                {
                    "kind": "diagnosis",
                    "transfer_id": item.transfer_id,
                    "consistent": 0,
                    "ir_value": item.model_dump(mode="json"),
                }
                for item in diagnoses
            ]
            + [
                {
                    "kind": "diagnosis",
                    "consistent": int(digests_equal),
                    "note": "digests",
                    "ir_value": {"digest_inbox": audit_digest(inbox), "digest_sent": audit_digest(sent)},
                    "registry_value": {
                        "digest_inbox": theirs.digest_inbox,
                        "digest_sent": theirs.digest_sent,
                    },
                }
            ],
        )
        if not digests_equal or diagnoses:
            row["codes"] = [
                *row["codes"],
                _code(
                    IrxCode.RECONCILIATION_AUDIT_TRAILS_DIFFER,
                    "digests differ" if not digests_equal else f"{len(diagnoses)} transfers diagnosed",
                ),
            ]
        row["diagnoses"] = [item.model_dump(mode="json") for item in diagnoses]
        realign = bool(diagnoses) and all(
            item.diagnosis is ReconciliationDiagnosisKind.FINAL_STATUS_NOT_APPLIED for item in diagnoses
        )
        if realign and row["round"] < MAX_ROUNDS:
            # R only has to apply F messages it is now sent again: a new round at a new cut-off (after those
            # copies are numbered, so R's position of each F is within it) may come clean. Started by
            # `next_rounds` once this commits; the freezes stand meanwhile.
            result = await self._advance(connection, row, ReconciliationStatus.BLOCKS_INCONSISTENT, None)
            await connection.execute(
                update(reconciliation)
                .where(reconciliation.c.reconciliation_id == row["reconciliation_id"])
                .values(stage=_NEXT_ROUND, respond_by=self.clock() + self.stage_timeout)
            )
            return result
        # Nothing more is asked of R: the freezes stand until the Secretariat resolves (§8, manual).
        return await self._advance(connection, row, ReconciliationStatus.BLOCKS_INCONSISTENT, None)

    async def next_rounds(self, reconciliation_id: str | None = None) -> int:
        """Start the next round of every run (or of one) waiting for it: new cut-off, totals requested."""
        query = select(reconciliation.c.reconciliation_id, reconciliation.c.registry_id).where(
            reconciliation.c.stage == _NEXT_ROUND
        )
        if reconciliation_id is not None:
            query = query.where(reconciliation.c.reconciliation_id == reconciliation_id)
        async with self.db.read() as session:
            waiting = (await session.execute(query)).all()
        started = 0
        for rec_id, registry_id in waiting:
            # Number the re-announced F messages first: the new cut-off must cover them.
            await self.irx.relay.relay(registry_id)
            async with self.db.connect() as connection:
                registry_row = await repository.get_registry(connection, registry_id, lock=True)
                query = select(reconciliation).where(reconciliation.c.reconciliation_id == rec_id)
                if connection.dialect.name == "postgresql":
                    query = query.with_for_update()
                row = (await connection.execute(query)).mappings().first()
                if registry_row is None or row is None or row["stage"] != _NEXT_ROUND:
                    continue  # resolved or started by another pass meanwhile
                now = self.clock()
                current = dict(row)
                current.update(
                    round=row["round"] + 1,
                    cutoff_position=await repository.cursor_position(connection, registry_id),
                    cutoff_seq=registry_row["last_seq_in"],
                )
                await connection.execute(
                    update(reconciliation)
                    .where(reconciliation.c.reconciliation_id == rec_id)
                    .values(
                        round=current["round"],
                        cutoff_position=current["cutoff_position"],
                        cutoff_seq=current["cutoff_seq"],
                        updated_at=now,
                    )
                )
                await self._advance(
                    connection,
                    current,
                    ReconciliationStatus(row["status"]),
                    ReconciliationStage.TOTALS,
                    publish=False,
                )
            started += 1
            log.info("irx_reconciliation_round", reconciliation_id=rec_id, round=current["round"])
        if started:
            self._notify()
        return started

    # ---- status changes ------------------------------------------------------------------------------------

    async def _advance(
        self,
        connection: AsyncConnection,
        row: dict[str, Any],
        status: ReconciliationStatus,
        stage: ReconciliationStage | None,
        *,
        keys: list[ReconciliationKey] | None = None,
        transfer_ids: list[str] | None = None,
        publish: bool = True,
    ) -> ReconciliationResult:
        now = self.clock()
        respond_by = now + self.stage_timeout if stage is not None else None
        row.update(
            status=status.value, stage=stage.value if stage else None, respond_by=respond_by, updated_at=now
        )
        await self._save(connection, row)
        registry_row = await repository.get_registry(connection, row["registry_id"])
        assert registry_row is not None
        if stage is not None:
            await self.irx.enqueue(
                connection,
                registry_row,
                IrxMessageType.RECONCILIATION_REQUESTED,
                ReconciliationRequested(
                    reconciliation_id=row["reconciliation_id"],
                    round=row["round"],
                    stage=stage,
                    cutoff_position=row["cutoff_position"],
                    cutoff_seq=row["cutoff_seq"],
                    respond_by=now + self.stage_timeout,
                    keys=keys,
                    transfer_ids=transfer_ids,
                ),
            )
        if not publish:
            return _result(row)
        return await self._publish(connection, registry_row, row)

    async def _close(
        self, connection: AsyncConnection, row: dict[str, Any], status: ReconciliationStatus, **changes: Any
    ) -> ReconciliationResult:
        now = self.clock()
        row.update(status=status.value, stage=None, respond_by=None, updated_at=now, closed_at=now, **changes)
        await self._save(connection, row)
        # Freezes are lifted whenever a reconciliation closes other than `failed` (the Secretariat resolves
        # those; a failed one keeps its freezes until then).
        if status is not ReconciliationStatus.FAILED:
            await connection.execute(
                update(blocks).where(blocks.c.frozen_by == row["reconciliation_id"]).values(frozen_by=None)
            )
        registry_row = await repository.get_registry(connection, row["registry_id"])
        assert registry_row is not None
        return await self._publish(connection, registry_row, row)

    async def _save(self, connection: AsyncConnection, row: Mapping[Any, Any]) -> None:
        names = (
            "status",
            "stage",
            "respond_by",
            "codes",
            "inconsistent_keys",
            "inconsistent_ranges",
            "diagnoses",
            "resolution",
            "updated_at",
            "closed_at",
        )
        await connection.execute(
            update(reconciliation)
            .where(reconciliation.c.reconciliation_id == row["reconciliation_id"])
            .values({name: row.get(name) for name in names})
        )

    async def _publish(
        self, connection: AsyncConnection, registry_row: Mapping[Any, Any], row: Mapping[Any, Any]
    ) -> ReconciliationResult:
        """The inbox `reconciliation.result` for R and the outbox event, in the changing transaction."""
        result = _result(row)
        await self.irx.enqueue(connection, registry_row, IrxMessageType.RECONCILIATION_RESULT, result)
        await self.irx.outbox.publish(
            connection,
            f"interregistry.reconciliation.{row['status']}",
            {"party": registry_row["party"], **result.model_dump(mode="json")},
            party=registry_row["party"],
        )
        log.info(
            "irx_reconciliation_status",
            reconciliation_id=row["reconciliation_id"],
            registry_id=row["registry_id"],
            status=row["status"],
        )
        return result

    async def fail_due(self, now: datetime | None = None) -> int:
        """Every open reconciliation whose awaited stage is past `respond_by` becomes `failed` (7006, F12)."""
        now = now or self.clock()
        async with self.db.read() as session:
            due = (
                (
                    await session.execute(
                        select(reconciliation.c.reconciliation_id).where(
                            reconciliation.c.status.in_([s.value for s in ReconciliationStatus if s.open]),
                            reconciliation.c.respond_by.is_not(None),
                            reconciliation.c.respond_by < now,
                        )
                    )
                )
                .scalars()
                .all()
            )
        failed = 0
        for reconciliation_id in due:
            async with self.db.connect() as connection:
                query = select(reconciliation).where(reconciliation.c.reconciliation_id == reconciliation_id)
                if connection.dialect.name == "postgresql":
                    query = query.with_for_update()
                row = (await connection.execute(query)).mappings().first()
                deadline = _utc(row["respond_by"]) if row is not None else None
                if (
                    row is None
                    or not ReconciliationStatus(row["status"]).open
                    or deadline is None
                    or deadline >= now
                ):
                    continue  # answered (or resolved) since the scan
                current = dict(row)
                current["codes"] = [
                    *current["codes"],
                    _code(
                        IrxCode.RECONCILIATION_NO_ANSWER,
                        f"no {row['stage']} answer by {deadline.isoformat()}",
                    ),
                ]
                await self._close(connection, current, ReconciliationStatus.FAILED)
                failed += 1
        if failed:
            self._notify()
        return failed

    # ---- manual resolution ---------------------------------------------------------------------------------

    async def resolve(
        self, principal: Principal, reconciliation_id: str, body: ReconciliationResolve
    ) -> ReconciliationResult:
        if not principal.is_secretariat:
            raise Forbidden("Only the Secretariat resolves a reconciliation.")
        async with self.db.connect() as connection:
            query = select(reconciliation).where(reconciliation.c.reconciliation_id == reconciliation_id)
            if connection.dialect.name == "postgresql":
                query = query.with_for_update()
            row = (await connection.execute(query)).mappings().first()
            if row is None:
                raise NotFound(f"No reconciliation {reconciliation_id}.")
            status = ReconciliationStatus(row["status"])
            if not status.open and status is not ReconciliationStatus.FAILED:
                raise Conflict(
                    f"{reconciliation_id} is {status.value}: nothing to resolve.",
                    slug="reconciliation-closed",
                    reconciliation_status=status.value,
                )
            resolution = {
                "note": body.note,
                "compensating_transaction_ids": body.compensating_transaction_ids,
                "resolved_by": principal.client_id,
                "resolved_at": self.clock().isoformat(),
            }
            result = await self._close(
                connection,
                dict(row),
                ReconciliationStatus.COMPLETED_WITH_MANUAL_INTERVENTION,
                resolution=resolution,
            )
        self._notify()
        return result

    # ---- reads ---------------------------------------------------------------------------------------------

    def _may_read(self, principal: Principal, registry_id: str) -> bool:
        if principal.is_secretariat or principal.has(Role.AUDITOR):
            return True
        return principal.has(Role.REGISTRY) and principal.registry_id == registry_id

    async def get(self, principal: Principal, reconciliation_id: str) -> dict[str, Any]:
        async with self.db.read() as session:
            connection = await session.connection()
            row = (
                (
                    await connection.execute(
                        select(reconciliation).where(reconciliation.c.reconciliation_id == reconciliation_id)
                    )
                )
                .mappings()
                .first()
            )
            if row is None or not self._may_read(principal, row["registry_id"]):
                raise NotFound(f"No reconciliation {reconciliation_id}.")
            items = (
                (
                    await connection.execute(
                        select(reconciliation_item)
                        .where(reconciliation_item.c.reconciliation_id == reconciliation_id)
                        .order_by(reconciliation_item.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return _view(row, items)

    async def list_reconciliations(
        self, principal: Principal, *, registry_id: str | None, status: str | None, limit: int
    ) -> dict[str, Any]:
        if principal.is_secretariat or principal.has(Role.AUDITOR):
            pass
        elif principal.has(Role.REGISTRY) and principal.registry_id:
            if registry_id is not None and registry_id != principal.registry_id:
                raise Forbidden("A registry reads only its own reconciliations.")
            registry_id = principal.registry_id
        else:
            raise Forbidden("Reconciliations are for the Secretariat, auditors and each registry (its own).")
        query = select(reconciliation).order_by(reconciliation.c.created_at.desc()).limit(limit)
        if registry_id is not None:
            query = query.where(reconciliation.c.registry_id == registry_id)
        if status is not None:
            query = query.where(reconciliation.c.status == status)
        async with self.db.read() as session:
            rows = (await session.execute(query)).mappings().all()
        return {"items": [_view(row, ()) for row in rows], "next_cursor": None}

    # ---- the daily schedule --------------------------------------------------------------------------------

    async def run_daily(self) -> list[str]:
        """Start one reconciliation for every active registry without an open one (the daily job)."""
        async with self.db.read() as session:
            ids = (
                (
                    await session.execute(
                        select(registry_table.c.registry_id).where(
                            registry_table.c.status == RegistryStatus.ACTIVE.value
                        )
                    )
                )
                .scalars()
                .all()
            )
        started: list[str] = []
        for registry_id in ids:
            await self.irx.relay.relay(registry_id)
            try:
                async with self.db.connect() as connection:
                    row = await repository.get_registry(connection, registry_id, lock=True)
                    assert row is not None
                    made = await self._start(connection, row, "schedule:daily", None)
                started.append(made["reconciliation_id"])
            except IrxRefused:
                log.info("irx_reconciliation_daily_skipped", registry_id=registry_id, reason="one is open")
        if started:
            self._notify()
        return started

    def due_daily(self, now: datetime) -> bool:
        """True once per UTC day, at or after `daily_at`."""
        if self.daily_at is None:
            return False
        today = datetime.combine(now.date(), self.daily_at)
        if now < today or (self._last_daily is not None and self._last_daily >= today):
            return False
        self._last_daily = now
        return True

    async def tick(self, now: datetime | None = None) -> None:
        """One pass of the loop: deadlines, then the daily start when due."""
        now = now or self.clock()
        await self.next_rounds()  # a round left unstarted by a crash between its two transactions
        await self.fail_due(now)
        if self.due_daily(now):
            await self.run_daily()

    async def _loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # the schedule must outlive a transient failure; the next tick retries
                log.exception("irx_reconciliation_tick_failed")

    @property
    def running(self) -> bool:
        """Whether the schedule loop runs (started with the app's lifespan)."""
        return self._task is not None and not self._task.done()

    def start(self, interval: float = 60.0) -> None:
        if self._task is None:
            # The first daily run is today's only if the process starts before its time (no catch-up burst).
            now = self.clock()
            if self.daily_at is not None and now >= datetime.combine(now.date(), self.daily_at):
                self._last_daily = now
            self._task = asyncio.create_task(self._loop(interval))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def schedule_from_environment(environment: str) -> time | None:
    """The daily time: `REGISTRY_IRX_RECONCILE_AT`, default 02:00 UTC, except in tests (off unless set)."""
    value = os.environ.get("REGISTRY_IRX_RECONCILE_AT")
    if value is None:
        return None if environment == "test" else time(2, 0, tzinfo=UTC)
    return daily_time(value)


def _code(code: IrxCode, message: str) -> dict[str, Any]:
    return TransferCode(code=int(code), message=message).model_dump(mode="json", exclude_none=True)


def _touches(direction: str, answered: Iterable[Any], wanted: set[tuple[str, str, int, str]]) -> bool:
    """Whether a transfer R reported (ranges only) falls under a requested key: by the CA and vintage its
    unique ids name (the metric is not in a unique id). R may report more than asked; those are ignored."""
    named = {(key[0], key[1], key[2]) for key in wanted}
    for block in answered:
        try:
            unit = parse_unique_id(block.unique_id_first)
        except InvalidUniqueId:
            return True  # a malformed range is R's claim all the same: compare it
        if (direction, unit.ca_id, unit.vintage) in named:
            return True
    return False


def _ranges(
    transfer_id: str, ranges: Iterable[tuple[str, str]], kind: ReconciliationRangeKind
) -> list[ReconciliationRange]:
    return [
        ReconciliationRange(transfer_id=transfer_id, unique_id_first=first, unique_id_last=last, kind=kind)
        for first, last in sorted(ranges)
    ]


def _totals_value(key: tuple[str, str, int, str], value: tuple[int, int] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {
        **_key(key).model_dump(mode="json"),
        "completed_quantity": value[0],
        "completed_transfers": value[1],
    }


def _transfer_value(item: PairTransfer | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {
        "status": item.status,
        "final_position": item.final_position,
        "blocks": sorted([list(pair) for pair in item.ranges()]),
    }


def _result(row: Mapping[Any, Any]) -> ReconciliationResult:
    return ReconciliationResult(
        reconciliation_id=row["reconciliation_id"],
        registry_id=row["registry_id"],
        status=ReconciliationStatus(row["status"]),
        round=row["round"],
        cutoff_position=row["cutoff_position"],
        cutoff_seq=row["cutoff_seq"],
        respond_by=_utc(row["respond_by"]),
        codes=[TransferCode.model_validate(code) for code in row["codes"]],
        inconsistent_keys=[ReconciliationKey.model_validate(key) for key in row["inconsistent_keys"]],
        inconsistent_ranges=[ReconciliationRange.model_validate(item) for item in row["inconsistent_ranges"]],
        diagnoses=[ReconciliationDiagnosis.model_validate(item) for item in row["diagnoses"]],
    )


def _view(row: Mapping[Any, Any], items: Iterable[Mapping[Any, Any]]) -> dict[str, Any]:
    """`ReconciliationResult` plus what the Secretariat reads: stage, who started it, per-key totals both
    sides, the items of each stage, the resolution."""
    status = ReconciliationStatus(row["status"])
    view = _result(row).model_dump(mode="json")
    view.update(
        itl_code=status.itl_code,
        stage=row["stage"],
        initiated_by=row["initiated_by"],
        resolution=row["resolution"],
        created_at=_utc(row["created_at"]).isoformat() if row["created_at"] else None,  # type: ignore[union-attr]
        closed_at=_utc(row["closed_at"]).isoformat() if row["closed_at"] else None,  # type: ignore[union-attr]
    )
    listed = [
        {
            "stage": item["stage"],
            "kind": item["kind"],
            "transfer_id": item["transfer_id"],
            "consistent": bool(item["consistent"]),
            "ir": item["ir_value"],
            "registry": item["registry_value"],
            "note": item["note"],
        }
        for item in items
    ]
    if listed:
        view["totals"] = [item for item in listed if item["kind"] == "totals"]
        view["items"] = [item for item in listed if item["kind"] != "totals"]
    return view
