"""The hash-chained journal (DESIGN §4): append in the moving transaction, seal after commit.

Every completed change appends entries `{transaction_id, entry_type, block_before, block_after, at,
actor}` in the transaction that moves the units, with `seq` and the hashes still NULL. `JournalSealer.seal()`
then gives them `seq`, `prev_hash` and `hash = sha256(prev_hash || canonical JSON of the entry with its seq)`
in a transaction of its own that serialises on the single `journal_head` row, exactly as kit/outbox.py
gives feed positions: only committed entries are visible to it, so the chain follows commit order, and no
unit-moving transaction ever waits on a global lock (docs/ledger.md explains the choice).
"""

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kit.db import Database
from services.transactions.domain import BlockRow, Change
from services.transactions.models import journal, journal_head

__all__ = [
    "GENESIS",
    "ChainVerifier",
    "JournalSealer",
    "append",
    "canonical",
    "entry_hash",
    "sealed_entries",
    "verify_chain",
]

log = structlog.get_logger(__name__)
GENESIS = "0" * 64
_BATCH = 1000


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 text (integers stay integers)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, seq: int, payload: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical({"seq": seq, **payload})).encode()).hexdigest()


def _snapshot(row: BlockRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    values = row.columns()
    values["id"] = row.id
    return values


async def append(
    connection: AsyncConnection,
    transaction_id: str,
    entry_type: str,
    changes: Iterable[Change],
    *,
    actor: str,
    at: datetime,
) -> int:
    """Write the unsealed entries of `changes` (inserted rows already carrying their new ids)."""
    rows = []
    for change in changes:
        before, after = _snapshot(change.before), _snapshot(change.after)
        block = change.after or change.before
        assert block is not None
        first = min(r.first_serial for r in (change.before, change.after) if r is not None)
        last = max(r.last_serial for r in (change.before, change.after) if r is not None)
        rows.append(
            {
                "transaction_id": transaction_id,
                "entry_type": entry_type,
                "ca_id": block.ca_id,
                "origin_registry_id": block.origin_registry_id,
                "first_serial": first,
                "last_serial": last,
                "payload": {
                    "transaction_id": transaction_id,
                    "entry_type": entry_type,
                    "kind": change.kind,
                    "block_before": before,
                    "block_after": after,
                    "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
                    "actor": actor,
                },
            }
        )
    if rows:
        await connection.execute(insert(journal), rows)
    return len(rows)


class JournalSealer:
    """Seals committed entries in commit order; runs in the background and on demand."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self._wake.set()

    async def seal(self) -> int:
        """Give every committed unsealed entry its seq and hashes; returns how many."""
        sealed = 0
        while True:
            async with self.db.read() as session:
                waiting = (
                    await session.execute(select(journal.c.id).where(journal.c.seq.is_(None)).limit(1))
                ).first()
            if waiting is None:
                return sealed
            async with self.db.connect() as connection:
                head = (
                    await connection.execute(
                        select(journal_head.c.last_seq, journal_head.c.last_hash)
                        .where(journal_head.c.id == 1)
                        .with_for_update()
                    )
                ).one_or_none()
                if head is None:
                    await connection.execute(insert(journal_head).values(id=1, last_seq=0, last_hash=GENESIS))
                    last_seq, last_hash = 0, GENESIS
                else:
                    last_seq, last_hash = head
                pending = (
                    await connection.execute(
                        select(journal.c.id, journal.c.payload)
                        .where(journal.c.seq.is_(None))
                        .order_by(journal.c.id)
                        .limit(_BATCH)
                    )
                ).all()
                if not pending:
                    return sealed
                values = []
                for row_id, payload in pending:
                    last_seq += 1
                    digest = entry_hash(last_hash, last_seq, payload)
                    values.append(
                        {"row_id": row_id, "new_seq": last_seq, "new_prev": last_hash, "new_hash": digest}
                    )
                    last_hash = digest
                await connection.execute(
                    update(journal)
                    .where(journal.c.id == bindparam("row_id"))
                    .values(
                        seq=bindparam("new_seq"), prev_hash=bindparam("new_prev"), hash=bindparam("new_hash")
                    ),
                    values,
                )
                await connection.execute(
                    update(journal_head)
                    .where(journal_head.c.id == 1)
                    .values(last_seq=last_seq, last_hash=last_hash)
                )
            sealed += len(pending)
            if len(pending) < _BATCH:
                return sealed

    async def _run(self, interval: float) -> None:
        while True:
            # asyncio.timeout, not wait_for: see kit/outbox.py (a cancellation lost on 3.11 hangs shutdown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.seal()
            except Exception:  # outlive a transient DB failure; the next pass retries
                log.exception("journal_seal_failed")
                await asyncio.sleep(interval)

    def start(self, interval: float = 0.5) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(interval), name="journal-sealer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class ChainVerifier:
    """Checks the sealed chain entry by entry, fed in seq order (one streaming pass, any batch size)."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.count = 0
        self._prev = GENESIS

    def feed(self, seq: int, payload: Any, prev_hash: str | None, digest: str | None) -> None:
        self.count += 1
        if seq != self.count:
            self.problems.append(f"seq {seq} follows {self.count - 1}: entries missing")
            self.count = seq
        if prev_hash != self._prev:
            self.problems.append(f"entry {seq}: prev_hash does not match the previous entry's hash")
        if entry_hash(prev_hash or "", seq, payload) != digest:
            self.problems.append(f"entry {seq}: hash does not match its content")
        self._prev = digest or ""

    async def finish(self, connection: Any) -> tuple[int, list[str]]:
        """Compare with `journal_head`; (entries checked, problems found)."""
        head = (await connection.execute(select(journal_head.c.last_seq, journal_head.c.last_hash))).first()
        if head is not None and (head[0] != self.count or (self.count and head[1] != self._prev)):
            self.problems.append(f"journal head says {head[0]} but the chain ends at {self.count}")
        return self.count, self.problems


async def sealed_entries(connection: Any, *columns: Any) -> AsyncIterator[list[Any]]:
    """Batches of sealed entries `(seq, payload, prev_hash, hash, *columns)` in seq order."""
    after = 0
    while True:
        rows = (
            await connection.execute(
                select(journal.c.seq, journal.c.payload, journal.c.prev_hash, journal.c.hash, *columns)
                .where(journal.c.seq > after)
                .order_by(journal.c.seq)
                .limit(_BATCH)
            )
        ).all()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


async def verify_chain(connection: Any) -> tuple[int, list[str]]:
    """Walk the sealed chain in seq order; (entries checked, problems found). Streams in batches."""
    verifier = ChainVerifier()
    async for rows in sealed_entries(connection):
        for seq, payload, prev_hash, digest in rows:
            verifier.feed(seq, payload, prev_hash, digest)
            if len(verifier.problems) > 100:
                return verifier.count, verifier.problems
    return await verifier.finish(connection)
