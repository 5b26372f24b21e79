"""The ledger's unit of work: one write transaction over the `blocks` table, in SQLAlchemy Core.

Concurrency (docs/ledger.md): on PostgreSQL every transaction locks the source blocks it takes with
`SELECT ... FOR UPDATE`, in one global order (the DESIGN selection order: vintage, CA, originating
registry, serial; all within one account), so two transactions competing for the same units queue on
the first contested row and the second re-reads it after the first commits (READ COMMITTED re-checks
a locked row). Neighbours for coalescing are locked with `SKIP LOCKED`, so a transaction never waits
on a row it only wants to merge with: no lock cycle is possible and nobody waits on a global lock.
On SQLite, writes are serialised by `BEGIN IMMEDIATE` and `FOR UPDATE` is not rendered.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.identifiers import format_unique_id
from contracts.transactions import Block, Underlying
from services.transactions.domain import BlockRow, Change, SerialRange, coalesce, diff, order_key
from services.transactions.models import blocks

__all__ = ["Ledger", "to_block"]

_ORDER = (blocks.c.vintage, blocks.c.ca_id, blocks.c.origin_registry_id, blocks.c.first_serial)
_FIRST_BATCH = 16
_MAX_BATCH = 1000
_NEIGHBOUR_CHUNK = 200
#: Every column a block write sets. One prebuilt UPDATE (bound parameters `v_<column>`) serves every change:
#: building `update().values(**columns)` per row cost more CPU than PostgreSQL spent running it.
_WRITTEN = tuple(c.name for c in blocks.columns if c.name != "id")
_UPDATE_BLOCK = (
    update(blocks)
    .where(blocks.c.id == bindparam("v_row_id"))
    .values({name: bindparam(f"v_{name}") for name in _WRITTEN})
)


def to_block(row: BlockRow) -> Block:
    """The wire `Block` of a row."""
    underlying = None
    if row.underlying_registry_id is not None and row.underlying_first is not None:
        underlying = Underlying(
            registry_id=row.underlying_registry_id,
            first_unit_id=row.underlying_first,
            last_unit_id=row.underlying_last or row.underlying_first,
        )
    ids = (row.ca_id, row.origin_registry_id, row.first_transferring_party)
    return Block(
        unique_id_first=format_unique_id(*ids, row.first_serial, row.vintage),
        unique_id_last=format_unique_id(*ids, row.last_serial, row.vintage),
        ca_id=row.ca_id,
        origin_registry_id=row.origin_registry_id,
        first_transferring_party=row.first_transferring_party,
        first=row.first_serial,
        last=row.last_serial,
        quantity=row.quantity,
        vintage=row.vintage,
        state=row.state,  # type: ignore[arg-type]
        account_id=row.account_id,
        authorization_id=row.authorization_id,
        authorization_version=row.authorization_version,
        metric=row.metric,
        mitigation_type=row.mitigation_type,
        applicable_gwp_values=row.applicable_gwp_values,
        applicable_non_ghg_metric=row.applicable_non_ghg_metric,
        conversion_factor=row.conversion_factor,
        sector=row.sector,
        activity_type=row.activity_type,
        purposes=row.purposes,
        authorized_parties=row.authorized_parties.split(",") if row.authorized_parties else None,
        first_transfer_definition=row.first_transfer_definition,
        underlying=underlying,
        party=row.party,
        reserved_by=row.reserved_by,
        to_registry_id=row.to_registry_id,
        transfer_id=row.transfer_id,
        frozen=row.frozen_by is not None,
    )


class Ledger:
    """Reads and locks blocks, then writes a new state of them as the smallest set of row changes."""

    def __init__(self, connection: AsyncConnection, *, now: datetime, lock: bool = True) -> None:
        self.connection = connection
        self.now = now
        self.postgres = connection.dialect.name == "postgresql"
        self.lock = lock and self.postgres

    def _locked(self, query: Any, *, skip_locked: bool = False) -> Any:
        if not self.lock:
            return query
        return query.with_for_update(skip_locked=skip_locked)

    async def _rows(self, query: Any) -> list[BlockRow]:
        return [BlockRow.from_row(row) for row in (await self.connection.execute(query)).mappings()]

    async def take_candidates(self, account_id: str, quantity: int) -> list[BlockRow]:
        """Held blocks of the account from the low end, locked, until they hold `quantity` (or all)."""
        found: dict[int, BlockRow] = {}
        total = 0
        after: tuple[Any, ...] | None = None
        batch = min(
            _FIRST_BATCH, quantity
        )  # every block holds at least one unit: never lock more than needed
        while total < quantity:
            query = (
                select(blocks)
                .where(blocks.c.account_id == account_id, blocks.c.state == "held")
                .order_by(*_ORDER)
                .limit(batch)
            )
            if after is not None:
                query = query.where(tuple_(*_ORDER) > tuple_(*after))
            rows = await self._rows(self._locked(query))
            if not rows:
                break
            for row in rows:
                assert row.id is not None
                if row.id not in found and row.account_id == account_id and row.state == "held":
                    found[row.id] = row
                    total += row.quantity
            after = order_key(rows[-1])
            batch = min(batch * 4, _MAX_BATCH)
        return sorted(found.values(), key=order_key)

    async def range_candidates(
        self, account_id: str, ranges: Sequence[SerialRange]
    ) -> tuple[list[BlockRow], bool]:
        """Held blocks of the account overlapping `ranges`, locked; and whether any named serial is used up."""
        found: dict[int, BlockRow] = {}
        for r in ranges:
            series = (blocks.c.ca_id == r.ca_id, blocks.c.origin_registry_id == r.origin_registry_id)
            # Index ranges on (CA, registry, first_serial) only: the block holding r.first (the last one
            # starting at or below it), then every block starting inside the range.
            below = select(blocks).where(*series, blocks.c.first_serial <= r.first)
            below = below.order_by(blocks.c.first_serial.desc()).limit(1)
            inside = select(blocks).where(
                *series, blocks.c.first_serial > r.first, blocks.c.first_serial <= r.last
            )
            for row in await self._rows(below) + await self._rows(inside):
                if row.last_serial >= r.first and row.id is not None:
                    found[row.id] = row
        rows = sorted(found.values(), key=order_key)
        terminal = any(row.state in ("used_ndc", "used_oimp", "cancelled") for row in rows)
        wanted = [row for row in rows if row.account_id == account_id and row.state == "held"]
        if self.lock and wanted:
            ids = sorted(wanted, key=order_key)
            locked = await self._rows(
                select(blocks).where(blocks.c.id.in_([r.id for r in ids])).order_by(*_ORDER).with_for_update()
            )
            wanted = [row for row in locked if row.account_id == account_id and row.state == "held"]
        return sorted(wanted, key=order_key), terminal

    async def overlapping(self, ranges: Sequence[SerialRange]) -> list[BlockRow]:
        """Every current block overlapping `ranges`, whatever its state or place, locked (incoming
        transfers judge serial history on them and move the returning ones)."""
        found: dict[int, BlockRow] = {}
        for r in ranges:
            series = (blocks.c.ca_id == r.ca_id, blocks.c.origin_registry_id == r.origin_registry_id)
            below = select(blocks).where(*series, blocks.c.first_serial <= r.first)
            below = below.order_by(blocks.c.first_serial.desc()).limit(1)
            inside = select(blocks).where(
                *series, blocks.c.first_serial > r.first, blocks.c.first_serial <= r.last
            )
            for row in await self._rows(below) + await self._rows(inside):
                if row.last_serial >= r.first and row.id is not None:
                    found[row.id] = row
        if self.lock and found:
            # Locked in the one global order, re-read: a concurrent change committed meanwhile is seen.
            locked = await self._rows(
                select(blocks).where(blocks.c.id.in_(sorted(found))).order_by(*_ORDER).with_for_update()
            )
            return sorted(locked, key=order_key)
        return sorted(found.values(), key=order_key)

    async def reserved_by(self, transaction_id: str) -> list[BlockRow]:
        query = select(blocks).where(blocks.c.reserved_by == transaction_id).order_by(*_ORDER)
        return await self._rows(self._locked(query))

    async def neighbours(self, rows: Iterable[BlockRow], exclude: set[int]) -> list[BlockRow]:
        """Rows adjacent to `rows` that might merge with them (other transactions' rows are skipped)."""
        conditions = []
        for row in rows:
            place = (
                blocks.c.ca_id == row.ca_id,
                blocks.c.origin_registry_id == row.origin_registry_id,
                blocks.c.state == row.state,
                blocks.c.account_id == row.account_id if row.account_id else blocks.c.account_id.is_(None),
            )
            # Two OR terms, each fully indexable (SQLite does not split an inner OR over two indexes).
            conditions.append(and_(*place, blocks.c.last_serial == row.first_serial - 1))
            conditions.append(and_(*place, blocks.c.first_serial == row.last_serial + 1))
        found: dict[int, BlockRow] = {}
        for start in range(0, len(conditions), _NEIGHBOUR_CHUNK):
            query = select(blocks).where(or_(*conditions[start : start + _NEIGHBOUR_CHUNK]))
            for row in await self._rows(self._locked(query, skip_locked=True)):
                assert row.id is not None
                if row.id not in exclude:
                    found[row.id] = row
        return list(found.values())

    async def replace(
        self,
        originals: Sequence[BlockRow],
        final: Sequence[BlockRow],
        *,
        transaction_id: str,
        merge: bool = True,
    ) -> list[Change]:
        """Turn `originals` (locked rows) into `final`, coalescing with neighbours; the changes made.

        `final` may hold rows without ids (new pieces). Changed rows of `final` are coalesced with their
        neighbours in the same account and state; the returned changes carry the new rows' ids.
        """
        originals = list(originals)
        final = list(final)
        if merge:
            changed = [row for row in final if row.id is None or row not in originals]
            if changed:
                known = {row.id for row in originals if row.id is not None}
                extra = await self.neighbours(changed, known)
                originals += extra
                final = coalesce(final + extra)
        changes = diff(originals, final)
        return await self._write(changes, transaction_id)

    async def insert_new(self, rows: Sequence[BlockRow], *, transaction_id: str) -> list[Change]:
        """New blocks (first transfer), merged with adjacent current blocks where identical."""
        return await self.replace([], rows, transaction_id=transaction_id)

    async def _write(self, changes: list[Change], transaction_id: str) -> list[Change]:
        stamp = {"updated_at": self.now, "last_transaction_id": transaction_id}
        deletes = [c.before.id for c in changes if c.kind == "delete" and c.before is not None]
        if deletes:
            await self.connection.execute(sql_delete(blocks).where(blocks.c.id.in_(deletes)))
        result: list[Change] = []
        inserts: list[Change] = []
        updates: list[dict[str, Any]] = []
        for change in changes:
            if change.kind == "delete":
                result.append(change)
            elif change.kind == "update":
                assert change.after is not None and change.after.id is not None
                values = {**change.after.columns(), **stamp}
                updates.append({"v_row_id": change.after.id} | {f"v_{n}": values[n] for n in _WRITTEN})
                result.append(change)
            else:
                inserts.append(change)
        if updates:
            await self.connection.execute(_UPDATE_BLOCK, updates)
        if inserts:
            values = [{**c.after.columns(), **stamp} for c in inserts if c.after is not None]
            ids = (
                (
                    await self.connection.execute(
                        insert(blocks).returning(blocks.c.id, sort_by_parameter_order=True), values
                    )
                )
                .scalars()
                .all()
            )
            for change, new_id in zip(inserts, ids, strict=True):
                assert change.after is not None
                result.append(Change(None, _with_id(change.after, new_id)))
        return result


def _with_id(row: BlockRow, new_id: int) -> BlockRow:
    from dataclasses import replace

    return replace(row, id=new_id)
