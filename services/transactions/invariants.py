"""DESIGN §4 invariants I1–I6 over the whole ledger (`GET /v1/admin/invariants`, and every test).

I1 no two current blocks of one (CA, originating registry) overlap; I2 conservation: the serials issued
(first transfers) are exactly the serials of the current blocks; I3 a unit in a terminal state never
moves again (read from the journal); I4 first transfer once per serial and only by the first transferring
Party; I5 a transaction completes whole or changes nothing (completed ones journal exactly their
quantity, refused ones nothing, and no reservation outlives its pending transaction); I6 the journal's
hash chain verifies (entries are sealed first).

Transfers to and from connected registries (INTERREGISTRY §5.1, §6): `transferred_out` blocks stay current
blocks, so I1 and I2 count them where they left; serials acquired never-seen from a registry are
`issued_ranges` rows (with `acquired_from_registry`), origins beside first transfers, so I2 holds with
them. A `sent` outgoing transfer is pending like one awaiting approval (its units are reserved), and a
refused one (`rejected` by the registry) journaled a reservation and its release, nothing else: I5 allows
a rejected transaction `reserve`/`release` entries only.
"""

import itertools
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from contracts.transactions import InvariantReport, InvariantViolation
from services.transactions.journal import ChainVerifier, JournalSealer, sealed_entries
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


class _JournalPass:
    """I3 and I5 over journal entries fed one at a time (the journal is streamed, never loaded whole)."""

    def __init__(self, add: Any) -> None:
        self.add = add
        # Net units per place (state, account) each transaction changed: what arrived is the positive part.
        self.deltas: dict[str, dict[tuple[Any, Any], int]] = defaultdict(lambda: defaultdict(int))
        self.journaled: set[str] = set()
        # Transactions whose entries moved units somewhere other than a reservation or its release.
        self.moved: set[str] = set()

    def feed(self, transaction_id: str, entry_type: str, payload: Any) -> None:
        self.journaled.add(transaction_id)
        before, after = payload.get("block_before"), payload.get("block_after")
        # I3: an entry never takes a terminal unit anywhere else (a terminal block deleted by a merge into a
        # neighbour of the same terminal state is fine: the neighbour's entry shows the growth).
        terminal = before is not None and before.get("state") in _TERMINAL and after is not None
        if terminal and any(before.get(k) != after.get(k) for k in ("state", "account_id", "party")):
            self.add(
                "I3", f"{transaction_id} ({entry_type}) moved terminal units of block {before.get('id')}"
            )
        if entry_type in ("reserve", "release"):
            return
        self.moved.add(transaction_id)
        for snapshot, sign in ((before, -1), (after, 1)):
            if snapshot is not None:
                place = (snapshot["state"], snapshot["account_id"])
                self.deltas[transaction_id][place] += sign * (
                    snapshot["last_serial"] - snapshot["first_serial"] + 1
                )

    def arrived(self, transaction_id: str) -> int:
        return sum(d for d in self.deltas.get(transaction_id, {}).values() if d > 0)


async def check_invariants(db: Any, sealer: JournalSealer) -> InvariantReport:
    """Seal the journal, then check I1–I6 on one snapshot of the ledger (REPEATABLE READ on PostgreSQL;
    SQLite's read transaction is a snapshot already), so traffic meanwhile cannot look like a violation."""
    await sealer.seal()
    violations: list[InvariantViolation] = []

    def add(invariant: str, message: str, **details: Any) -> None:
        if sum(1 for v in violations if v.invariant == invariant) < _MAX_REPORTED:
            violations.append(InvariantViolation(invariant=invariant, message=message, details=details))

    entries = _JournalPass(add)
    async with db.read() as session:
        connection = await session.connection()
        if connection.dialect.name == "postgresql":
            await connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        block_rows = (
            await connection.execute(
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
            await connection.execute(
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
            await connection.execute(
                select(
                    transactions.c.transaction_id,
                    transactions.c.status,
                    transactions.c.quantity,
                    transactions.c.type,
                    transactions.c.from_party,
                )
            )
        ).all()
        # One streaming pass over the sealed journal for I6, I3 and I5; then the entries committed since
        # the seal (still unsealed in this snapshot) for I3 and I5.
        chain = ChainVerifier()
        async for rows in sealed_entries(connection, journal.c.transaction_id, journal.c.entry_type):
            for seq, payload, prev_hash, digest, transaction_id, entry_type in rows:
                chain.feed(seq, payload, prev_hash, digest)
                entries.feed(transaction_id, entry_type, payload)
        unsealed = await connection.execute(
            select(journal.c.transaction_id, journal.c.entry_type, journal.c.payload)
            .where(journal.c.seq.is_(None))
            .order_by(journal.c.id)
        )
        for transaction_id, entry_type, payload in unsealed:
            entries.feed(transaction_id, entry_type, payload)
        count, chain_problems = await chain.finish(connection)

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
    party_of: dict[tuple[str, str], str] = {}
    for row in issued:
        if row.origin_registry_id[:3] != row.first_transferring_party:
            add(
                "I4",
                f"{row.transaction_id}: first transfer by {row.first_transferring_party} from {row.origin_registry_id}",
            )
        party_of.setdefault((row.ca_id, row.origin_registry_id), row.first_transferring_party)
    for row in block_rows:
        expected = party_of.get((row.ca_id, row.origin_registry_id))
        if expected is not None and expected != row.first_transferring_party:
            add(
                "I4",
                f"block {row.id} names first transferring Party {row.first_transferring_party}, issued by {expected}",
            )

    # I5
    pending: set[str] = set()
    for tx in tx_rows:
        if tx.status == "completed" and tx.transaction_id in entries.journaled:
            arrived = entries.arrived(tx.transaction_id)
            if arrived != tx.quantity:
                add("I5", f"{tx.transaction_id}: completed for {tx.quantity} but {arrived} units arrived")
        elif tx.status == "completed":
            add("I5", f"{tx.transaction_id}: completed without journal entries")
        elif tx.status == "rejected" and tx.transaction_id in entries.moved:
            add("I5", f"{tx.transaction_id}: rejected but journaled changes")
        if tx.status in ("awaiting_approval", "sent"):
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
