"""The simulator's side of reconciliation (INTERREGISTRY §8): answering `reconciliation.requested` from its own
SQLite ledger, computed independently of the IR's code (it is the reference a real registry copies).

The pair ledger at the cut-off (P, S) is classified exactly as §8 says: a transfer is **final** iff its F
message was processed at an inbox position ≤ P (`transfer.final_position`); **open** iff not final and its
proposal stood at a position ≤ P (the IR's proposal, from `inbox_log`) or carried a seq ≤ S (our proposal or
cancel, from `outbox`); anything else is after the cut-off. The request sits after P in the inbox and items
are processed in order, so everything up to P is applied when it is answered. Blocks are the transfer's as
proposed (`transfer.proposal`).

- totals: per (direction, CA, vintage, metric) the quantity and count of completed transfers, the counts of
  the other final statuses, the open ids;
- blocks: every transfer (final or open) with a block of a requested key;
- audit trail: `kit.jws.audit_digest` over the inbox ≤ P (`inbox_log`) and over our messages ≤ S the IR
  recorded (outbox rows `answered`), and per requested transfer the messages of both directions.

Items processed before `inbox_log` existed are not in it (an older simulator file): their proposals count
as after the cut-off and their messages are missing from the audit trail, which the IR reports as a
difference — a real registry keeps this log from its first message.
"""

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from conformance.simulator.store import inbox_log, outbox, transfer
from contracts.interregistry import IrxMessageType, ReconciliationRequested, ReconciliationStage
from kit.jws import audit_digest, body_sha256

__all__ = ["STAGE_ANSWERS", "answer_body", "pair_ledger"]

_FINAL = frozenset({"completed", "rejected", "terminated", "cancelled"})
#: The envelope type and the path suffix of each stage's answer.
STAGE_ANSWERS: dict[ReconciliationStage, tuple[IrxMessageType, str]] = {
    ReconciliationStage.TOTALS: (IrxMessageType.RECONCILIATION_TOTALS, "totals"),
    ReconciliationStage.BLOCKS: (IrxMessageType.RECONCILIATION_BLOCKS, "blocks"),
    ReconciliationStage.AUDIT_TRAIL: (IrxMessageType.RECONCILIATION_AUDIT_TRAIL, "audit-trail"),
}
_OWN_OPENING = (IrxMessageType.TRANSFER_PROPOSAL.value, IrxMessageType.TRANSFER_CANCEL.value)


async def pair_ledger(
    connection: AsyncConnection, cutoff_position: int, cutoff_seq: int
) -> list[dict[str, Any]]:
    """Our transfers with the IR that are final or open at (P, S), each with its status ("open" or F)."""
    proposed_at: dict[str, int] = {}
    for transfer_id, position in await connection.execute(
        select(inbox_log.c.transfer_id, inbox_log.c.position).where(
            inbox_log.c.type == IrxMessageType.TRANSFER_PROPOSAL.value
        )
    ):
        if transfer_id is not None:
            proposed_at[transfer_id] = min(position, proposed_at.get(transfer_id, position))
    sent_at_seq: dict[str, int] = {}
    for transfer_id, seq in await connection.execute(
        select(outbox.c.transfer_id, outbox.c.seq).where(
            outbox.c.type.in_(_OWN_OPENING), outbox.c.status == "answered"
        )
    ):
        if transfer_id is not None:
            sent_at_seq[transfer_id] = min(seq, sent_at_seq.get(transfer_id, seq))
    made: list[dict[str, Any]] = []
    for row in (await connection.execute(select(transfer).order_by(transfer.c.transfer_id))).mappings():
        final_position = row["final_position"]
        if row["status"] in _FINAL and final_position is not None and final_position <= cutoff_position:
            status = row["status"]
        else:
            if row["direction"] == "ir_to_registry":
                opened = proposed_at.get(row["transfer_id"])
                if opened is None or opened > cutoff_position:
                    continue
            else:
                opened = sent_at_seq.get(row["transfer_id"])
                if opened is None or opened > cutoff_seq:
                    continue
            status, final_position = "open", None
        made.append(
            {
                "transfer_id": row["transfer_id"],
                "direction": row["direction"],
                "status": status,
                "final_position": final_position,
                "blocks": list((row["proposal"] or {}).get("blocks") or []),
            }
        )
    return made


def _key(direction: str, block: dict[str, Any]) -> tuple[str, str, int, str]:
    return (direction, block["ca_id"], int(block["vintage"]), block["metric"])


def _totals(ledger: Iterable[dict[str, Any]]) -> dict[str, Any]:
    quantity: dict[tuple[str, str, int, str], int] = defaultdict(int)
    count: dict[tuple[str, str, int, str], int] = defaultdict(int)
    finals = {"rejected": 0, "terminated": 0, "cancelled": 0}
    open_ids: list[str] = []
    for item in ledger:
        if item["status"] == "open":
            open_ids.append(item["transfer_id"])
        elif item["status"] != "completed":
            finals[item["status"]] += 1
        else:
            for block in item["blocks"]:
                quantity[_key(item["direction"], block)] += int(block["quantity"])
            for key in {_key(item["direction"], block) for block in item["blocks"]}:
                count[key] += 1
    return {
        "totals": [
            {
                "direction": key[0],
                "ca_id": key[1],
                "vintage": key[2],
                "metric": key[3],
                "completed_quantity": quantity[key],
                "completed_transfers": count[key],
            }
            for key in sorted(quantity)
        ],
        "final_counts": finals,
        "open_transfers": sorted(open_ids),
    }


async def _audit_trail(
    connection: AsyncConnection, request: ReconciliationRequested, transfer_ids: list[str]
) -> dict[str, Any]:
    inbox = (
        (
            await connection.execute(
                select(inbox_log)
                .where(inbox_log.c.position <= request.cutoff_position)
                .order_by(inbox_log.c.position)
            )
        )
        .mappings()
        .all()
    )
    # What the IR recorded of ours: answered messages (a refusal the IR did not record is `refused`).
    sent = (
        (
            await connection.execute(
                select(outbox)
                .where(outbox.c.status == "answered", outbox.c.seq <= request.cutoff_seq)
                .order_by(outbox.c.seq)
            )
        )
        .mappings()
        .all()
    )
    trails: dict[str, list[dict[str, Any]]] = {transfer_id: [] for transfer_id in transfer_ids}
    for row in inbox:
        if row["transfer_id"] in trails:
            trails[row["transfer_id"]].append(
                {
                    "message_id": row["message_id"],
                    "type": row["type"],
                    "direction": "ir_to_registry",
                    "position": row["position"],
                    "at": row["sent_at"],
                    "body_sha256": row["body_sha256"],
                }
            )
    for row in sent:
        if row["transfer_id"] in trails:
            trails[row["transfer_id"]].append(
                {
                    "message_id": row["message_id"],
                    "type": row["type"],
                    "direction": "registry_to_ir",
                    "seq": row["seq"],
                    "at": row["envelope"]["sent_at"],
                    "body_sha256": body_sha256(row["envelope"]["body"]),
                }
            )
    return {
        "digest_inbox": audit_digest(
            (row["position"], row["message_id"], row["body_sha256"]) for row in inbox
        ),
        "digest_sent": audit_digest(
            (row["seq"], row["message_id"], body_sha256(row["envelope"]["body"])) for row in sent
        ),
        "transfers": [{"transfer_id": key, "messages": value} for key, value in trails.items()],
    }


async def answer_body(connection: AsyncConnection, request: ReconciliationRequested) -> dict[str, Any]:
    """The body of our answer to one `reconciliation.requested`, computed in the caller's transaction."""
    ledger = await pair_ledger(connection, request.cutoff_position, request.cutoff_seq)
    body: dict[str, Any] = {"reconciliation_id": request.reconciliation_id}
    if request.stage is ReconciliationStage.TOTALS:
        body.update(cutoff_position=request.cutoff_position, cutoff_seq=request.cutoff_seq, **_totals(ledger))
    elif request.stage is ReconciliationStage.BLOCKS:
        wanted = {(k.direction.value, k.ca_id, k.vintage, k.metric) for k in request.keys or []}
        body["transfers"] = [
            {
                "transfer_id": item["transfer_id"],
                "direction": item["direction"],
                # An open transfer is reported as `sent`: the IR compares open against open, not sub-states.
                "status": item["status"] if item["status"] != "open" else "sent",
                "final_position": item["final_position"],
                "blocks": [
                    {
                        "unique_id_first": block["unique_id_first"],
                        "unique_id_last": block["unique_id_last"],
                        "quantity": int(block["quantity"]),
                    }
                    for block in item["blocks"]
                ],
            }
            for item in ledger
            if {_key(item["direction"], block) for block in item["blocks"]} & wanted
        ]
    else:
        body.update(await _audit_trail(connection, request, list(request.transfer_ids or [])))
    return body
