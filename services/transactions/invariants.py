"""DESIGN §4 invariants I1–I6 over the whole ledger (`GET /v1/admin/invariants`, and every test).

I1 no two current blocks of one (CA, originating registry) overlap; I2 conservation: the serials issued
(first transfers) are exactly the serials of the current blocks; I3 a unit in a terminal state never
moves again (read from the journal); I4 first transfer once per serial and only by the first transferring
Party; I5 a transaction completes whole or changes nothing (completed ones journal exactly their
quantity, refused ones nothing, and no reservation outlives its pending transaction); I6 the journal's
hash chain verifies (entries are sealed first).
"""

import itertools
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from contracts.transactions import InvariantReport, InvariantViolation
from services.transactions.journal import JournalSealer, verify_chain
from services.transactions.models import blocks, issued_ranges, journal, transactions

__all__ = ["check_invariants"]

_TERMINAL = frozenset({"used_ndc", "used_oimp", "cancelled"})
_MAX_REPORTED = 50


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _overlaps(ranges: list[tuple[int, int, Any]]) -> list[tuple[Any, Any]]:
    found = []
    ordered = sorted(ranges, key=lambda r: (r[0], r[1]))
    for a, b in itertools.pairwise(ordered):
        if b[0] <= a[1]:
            found.append((a, b))
    return found


async def check_invariants(db: Any, sealer: JournalSealer) -> InvariantReport:
    await sealer.seal()
    violations: list[InvariantViolation] = []

    def add(invariant: str, message: str, **details: Any) -> None:
        if sum(1 for v in violations if v.invariant == invariant) < _MAX_REPORTED:
            violations.append(InvariantViolation(invariant=invariant, message=message, details=details))

    async with db.read() as session:
        block_rows = (
            await session.execute(
                select(
                    blocks.c.id,
                    blocks.c.ca_id,
                    blocks.c.origin_registry_id,
                    blocks.c.first_transferring_party,
                    blocks.c.first_serial,
                    blocks.c.last_serial,
                    blocks.c.state,
                    blocks.c.reserved_by,
                )
            )
        ).all()
        issued = (
            await session.execute(
                select(
                    issued_ranges.c.ca_id,
                    issued_ranges.c.origin_registry_id,
                    issued_ranges.c.first_serial,
                    issued_ranges.c.last_serial,
                    issued_ranges.c.first_transferring_party,
                    issued_ranges.c.transaction_id,
                )
            )
        ).all()
        tx_rows = (
            await session.execute(
                select(
                    transactions.c.transaction_id,
                    transactions.c.status,
                    transactions.c.quantity,
                    transactions.c.type,
                    transactions.c.from_party,
                )
            )
        ).all()
        entries = (
            await session.execute(
                select(journal.c.transaction_id, journal.c.entry_type, journal.c.payload).order_by(
                    journal.c.seq
                )
            )
        ).all()
        count, chain_problems = await verify_chain(await session.connection())

    # I1
    series: dict[tuple[str, str], list[tuple[int, int, Any]]] = defaultdict(list)
    for row in block_rows:
        series[(row.ca_id, row.origin_registry_id)].append((row.first_serial, row.last_serial, row.id))
    for (ca_id, registry), ranges in series.items():
        for a, b in _overlaps(ranges):
            add("I1", f"blocks {a[2]} and {b[2]} of {ca_id}-{registry} overlap", first=a, second=b)

    # I2 and I4
    issued_series: dict[tuple[str, str], list[tuple[int, int, Any]]] = defaultdict(list)
    for row in issued:
        issued_series[(row.ca_id, row.origin_registry_id)].append(
            (row.first_serial, row.last_serial, row.transaction_id)
        )
    for key in sorted(set(series) | set(issued_series)):
        have = _merge([(f, last) for f, last, _ in series.get(key, [])])
        made = _merge([(f, last) for f, last, _ in issued_series.get(key, [])])
        current_total = sum(last - f + 1 for f, last, _ in series.get(key, []))
        issued_total = sum(last - f + 1 for f, last, _ in issued_series.get(key, []))
        if have != made or current_total != issued_total:
            add(
                "I2",
                f"{key[0]}-{key[1]}: {issued_total} serials issued, {current_total} found in current blocks",
                issued=[list(r) for r in made[:20]],
                current=[list(r) for r in have[:20]],
            )
        for a, b in _overlaps(issued_series.get(key, [])):
            add("I4", f"{key[0]}-{key[1]}: serials first transferred twice ({a[2]} and {b[2]})")
    for row in issued:
        if row.origin_registry_id[:3] != row.first_transferring_party:
            add(
                "I4",
                f"{row.transaction_id}: first transfer by {row.first_transferring_party} from {row.origin_registry_id}",
            )
    for row in block_rows:
        party_of = {(r.ca_id, r.origin_registry_id): r.first_transferring_party for r in issued}
        expected = party_of.get((row.ca_id, row.origin_registry_id))
        if expected is not None and expected != row.first_transferring_party:
            add(
                "I4",
                f"block {row.id} names first transferring Party {row.first_transferring_party}, issued by {expected}",
            )
            break

    # I3: an entry never takes a terminal unit anywhere else
    for transaction_id, entry_type, payload in entries:
        before, after = payload.get("block_before"), payload.get("block_after")
        if before is None or before.get("state") not in _TERMINAL:
            continue
        if after is None:
            continue  # merged into a neighbour of the same terminal state (its entry shows the growth)
        moved = any(before.get(k) != after.get(k) for k in ("state", "account_id", "party"))
        if moved:
            add("I3", f"{transaction_id} ({entry_type}) moved terminal units of block {before.get('id')}")

    # I5
    # Net units per place (state, account) each transaction changed: what arrived is the positive part.
    deltas: dict[str, dict[tuple[Any, Any], int]] = defaultdict(lambda: defaultdict(int))
    journaled: set[str] = set()
    for transaction_id, entry_type, payload in entries:
        journaled.add(transaction_id)
        if entry_type in ("reserve", "release"):
            continue
        for snapshot, sign in ((payload.get("block_before"), -1), (payload.get("block_after"), 1)):
            if snapshot is not None:
                place = (snapshot["state"], snapshot["account_id"])
                deltas[transaction_id][place] += sign * (
                    snapshot["last_serial"] - snapshot["first_serial"] + 1
                )
    moved_by_tx = {tx: sum(d for d in places.values() if d > 0) for tx, places in deltas.items()}
    pending: set[str] = set()
    for tx in tx_rows:
        if tx.status == "completed" and tx.transaction_id in journaled and tx.type != "correction":
            arrived = moved_by_tx.get(tx.transaction_id, 0)
            if arrived != tx.quantity:
                add("I5", f"{tx.transaction_id}: completed for {tx.quantity} but {arrived} units arrived")
        elif tx.status == "completed":
            add("I5", f"{tx.transaction_id}: completed without journal entries")
        elif tx.status == "rejected" and tx.transaction_id in journaled:
            add("I5", f"{tx.transaction_id}: rejected but journaled changes")
        if tx.status == "awaiting_approval":
            pending.add(tx.transaction_id)
    for row in block_rows:
        if row.reserved_by is not None and row.reserved_by not in pending:
            add("I5", f"block {row.id} reserved by {row.reserved_by}, which is not pending")
        if (row.state == "reserved") != (row.reserved_by is not None):
            add("I5", f"block {row.id} is {row.state} with reservation {row.reserved_by}")

    # I6
    for problem in chain_problems:
        add("I6", problem)

    return InvariantReport(
        ok=not violations,
        checked=["I1", "I2", "I3", "I4", "I5", "I6"],
        violations=violations,
        journal_entries=count,
        blocks=len(block_rows),
    )
