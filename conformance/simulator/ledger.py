"""The simulator's serial-block ledger: splitting ranges, the receiver's mirror checks (§5 "R's
obligations", §6 step 6 seen from the registry), reserving, and applying a final status.

Functions take an open write connection (the caller's single transaction). Blocks are addressed by
(CA, origin registry) and serial range; `_split` cuts rows so that a range's ends fall on row boundaries,
shifting `underlying_first` by the offset (underlying units map 1:1 and split by offset).
"""

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from conformance.simulator.store import account, block
from contracts.interregistry import IrxCode, TransferBlock, TransferCode

__all__ = [
    "INVARIANT_EXCLUDED",
    "LedgerError",
    "account_codes",
    "block_row_values",
    "blocks_for",
    "history_codes",
    "insert_blocks",
    "reserve",
    "rows_in_range",
    "to_transfer_block",
]

#: TransferBlock members that are the range itself (stored as columns), not invariants.
INVARIANT_EXCLUDED = frozenset(
    {"unique_id_first", "unique_id_last", "first", "last", "quantity", "underlying"}
)
_LIVE_STATES = ("held", "reserved", "pending_in")


class LedgerError(ValueError):
    """The simulator cannot do what was asked (e.g. not enough held units); `code` is the IRX code."""

    def __init__(self, code: IrxCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invariants_of(transfer_block: TransferBlock) -> dict[str, Any]:
    data = transfer_block.model_dump(mode="json")
    return {name: value for name, value in data.items() if name not in INVARIANT_EXCLUDED}


def block_row_values(
    transfer_block: TransferBlock, *, account_id: str, state: str, transfer_id: str | None
) -> dict[str, Any]:
    underlying = transfer_block.underlying
    return {
        "account_id": account_id,
        "ca_id": transfer_block.ca_id,
        "origin_registry_id": transfer_block.origin_registry_id,
        "first_transferring_party": transfer_block.first_transferring_party,
        "vintage": transfer_block.vintage,
        "first": transfer_block.first,
        "last": transfer_block.last,
        "state": state,
        "transfer_id": transfer_id,
        "to_registry": None,
        "invariants": invariants_of(transfer_block),
        "underlying_registry": underlying.registry_id if underlying else None,
        "underlying_first": underlying.first_unit_id if underlying else None,
    }


def _unique_id(row: RowMapping | dict[str, Any], serial: int) -> str:
    # Plain formatting, not contracts.identifiers.format_unique_id: the simulator must be able to echo
    # whatever it holds, even a malformed fixture a conformance case planted on purpose.
    return f"{row['ca_id']}-{row['origin_registry_id']}-{row['first_transferring_party']}-{serial}-{row['vintage']}"


def to_transfer_block(row: RowMapping | dict[str, Any]) -> TransferBlock:
    """A block row as the TransferBlock a proposal carries (every invariant, the range, the underlying)."""
    data = dict(row["invariants"])
    data.update(
        unique_id_first=_unique_id(row, row["first"]),
        unique_id_last=_unique_id(row, row["last"]),
        first=row["first"],
        last=row["last"],
        quantity=row["last"] - row["first"] + 1,
    )
    if row["underlying_registry"] is not None:
        data["underlying"] = {
            "registry_id": row["underlying_registry"],
            "first_unit_id": row["underlying_first"],
            "last_unit_id": row["underlying_first"] + row["last"] - row["first"],
        }
    return TransferBlock.model_validate(data)


def _overlapping(ca_id: str, origin: str, first: int, last: int) -> Any:
    return and_(
        block.c.ca_id == ca_id,
        block.c.origin_registry_id == origin,
        block.c.first <= last,
        block.c.last >= first,
    )


async def _split(connection: AsyncConnection, ca_id: str, origin: str, at: int) -> None:
    """Cut every row of (CA, origin) that holds both `at - 1` and `at` into two rows at `at`."""
    rows = (
        (
            await connection.execute(
                select(block).where(
                    block.c.ca_id == ca_id,
                    block.c.origin_registry_id == origin,
                    block.c.first < at,
                    block.c.last >= at,
                )
            )
        )
        .mappings()
        .all()
    )
    for row in rows:
        await connection.execute(update(block).where(block.c.id == row["id"]).values(last=at - 1))
        tail = {name: value for name, value in row.items() if name != "id"}
        tail["first"] = at
        if row["underlying_first"] is not None:
            tail["underlying_first"] = row["underlying_first"] + (at - row["first"])
        await connection.execute(insert(block).values(**tail))


async def rows_in_range(
    connection: AsyncConnection,
    ca_id: str,
    origin: str,
    first: int,
    last: int,
    *,
    states: Sequence[str] | None = None,
    transfer_id: str | None = None,
) -> list[RowMapping]:
    """The rows inside [first, last] after cutting at both ends (so they lie wholly inside)."""
    await _split(connection, ca_id, origin, first)
    await _split(connection, ca_id, origin, last + 1)
    query = select(block).where(_overlapping(ca_id, origin, first, last))
    if states is not None:
        query = query.where(block.c.state.in_(states))
    if transfer_id is not None:
        query = query.where(block.c.transfer_id == transfer_id)
    return list((await connection.execute(query.order_by(block.c.first))).mappings().all())


async def overlapping(
    connection: AsyncConnection, ca_id: str, origin: str, first: int, last: int
) -> list[RowMapping]:
    query = select(block).where(_overlapping(ca_id, origin, first, last)).order_by(block.c.first)
    return list((await connection.execute(query)).mappings().all())


async def account_codes(connection: AsyncConnection, account_id: str) -> list[TransferCode]:
    """The acquiring-account checks (DES 5902/5903/5904/5906) for an incoming proposal."""
    row = (
        (await connection.execute(select(account).where(account.c.account_id == account_id)))
        .mappings()
        .first()
    )
    if row is None:
        return [TransferCode(code=int(IrxCode.ACCOUNT_DOES_NOT_EXIST), message=f"no account {account_id}")]
    if row["status"] == "closed":
        return [TransferCode(code=int(IrxCode.ACCOUNT_CLOSED), message=f"account {account_id} is closed")]
    if row["status"] == "blocked" or row["kind"] != "holding":
        return [
            TransferCode(
                code=int(IrxCode.ACCOUNT_NOT_ELIGIBLE), message=f"account {account_id} is not eligible"
            )
        ]
    if row["refuses_incoming"]:
        return [
            TransferCode(
                code=int(IrxCode.PARTY_POLICY), message=f"the Party's policy refuses units into {account_id}"
            )
        ]
    return []


async def history_codes(
    connection: AsyncConnection, blocks: Iterable[TransferBlock], *, ignore_transfer: str | None = None
) -> list[TransferCode]:
    """The receiver's serial-history mirror check: every serial never seen here, or a return of a range
    that went to the IR with the same invariants. Held/reserved/pending here → 4002; a returning range
    whose invariants differ → 4005."""
    codes: list[TransferCode] = []
    for incoming in blocks:
        rows = await overlapping(
            connection, incoming.ca_id, incoming.origin_registry_id, incoming.first, incoming.last
        )
        live = [
            row
            for row in rows
            if row["state"] in _LIVE_STATES
            and (ignore_transfer is None or row["transfer_id"] != ignore_transfer)
        ]
        if live:
            codes.append(
                TransferCode(
                    code=int(IrxCode.UNITS_ALREADY_IN_RECEIVER),
                    message=f"serials of {incoming.unique_id_first} are already held, reserved or pending here",
                    unique_id_first=incoming.unique_id_first,
                )
            )
            continue
        wanted = invariants_of(incoming)
        for row in rows:
            if row["state"] != "transferred_out":
                continue
            differs = row["invariants"] != wanted
            if row["underlying_registry"] is not None and incoming.underlying is not None:
                offset = incoming.first - row["first"]
                differs = differs or (
                    row["underlying_registry"] != incoming.underlying.registry_id
                    or row["underlying_first"] + offset != incoming.underlying.first_unit_id
                )
            if differs:
                codes.append(
                    TransferCode(
                        code=int(IrxCode.INVARIANTS_DIFFER),
                        message=f"{incoming.unique_id_first}: invariants differ from the range that left",
                        unique_id_first=incoming.unique_id_first,
                    )
                )
                break
    return codes


async def insert_blocks(
    connection: AsyncConnection,
    blocks: Iterable[TransferBlock],
    *,
    account_id: str,
    state: str,
    transfer_id: str | None,
) -> None:
    for item in blocks:
        await connection.execute(
            insert(block).values(
                **block_row_values(item, account_id=account_id, state=state, transfer_id=transfer_id)
            )
        )


async def forget_history(connection: AsyncConnection, blocks: Iterable[TransferBlock]) -> None:
    """Drop the `transferred_out` record of ranges that are now back here (a completed return)."""
    for item in blocks:
        rows = await rows_in_range(
            connection, item.ca_id, item.origin_registry_id, item.first, item.last, states=["transferred_out"]
        )
        if rows:
            await connection.execute(delete(block).where(block.c.id.in_([row["id"] for row in rows])))


async def reserve(
    connection: AsyncConnection,
    *,
    account_id: str,
    transfer_id: str,
    ranges: Sequence[tuple[str, str, int, int]] | None = None,
    ca_id: str | None = None,
    vintage: int | None = None,
    quantity: int | None = None,
) -> list[RowMapping]:
    """Reserve held units of `account_id` for an outgoing transfer (S4: committed before the proposal).

    Either named `ranges` (CA, origin, first, last), each wholly held in the account, or `quantity` units of
    (`ca_id`, `vintage`) taken from the lowest serials. `LedgerError` 4001 when the units are not there.
    """
    chosen: list[tuple[str, str, int, int]] = []
    if ranges is not None:
        for ca, origin, first, last in ranges:
            rows = await overlapping(connection, ca, origin, first, last)
            held = sum(
                min(row["last"], last) - max(row["first"], first) + 1
                for row in rows
                if row["state"] == "held" and row["account_id"] == account_id
            )
            if held != last - first + 1:
                raise LedgerError(
                    IrxCode.UNITS_NOT_AVAILABLE,
                    f"{ca}-{origin} {first}–{last} is not wholly held in {account_id}",
                )
            chosen.append((ca, origin, first, last))
    else:
        assert ca_id is not None and vintage is not None and quantity is not None
        candidates = (
            (
                await connection.execute(
                    select(block)
                    .where(
                        block.c.account_id == account_id,
                        block.c.state == "held",
                        block.c.ca_id == ca_id,
                        block.c.vintage == vintage,
                    )
                    .order_by(block.c.origin_registry_id, block.c.first)
                )
            )
            .mappings()
            .all()
        )
        remaining = quantity
        for row in candidates:
            if remaining <= 0:
                break
            take = min(remaining, row["last"] - row["first"] + 1)
            chosen.append((row["ca_id"], row["origin_registry_id"], row["first"], row["first"] + take - 1))
            remaining -= take
        if remaining > 0 or quantity <= 0:
            raise LedgerError(
                IrxCode.UNITS_NOT_AVAILABLE,
                f"{account_id} holds fewer than {quantity} units of {ca_id} vintage {vintage}",
            )
    reserved: list[RowMapping] = []
    for ca, origin, first, last in chosen:
        rows = await rows_in_range(connection, ca, origin, first, last, states=["held"])
        ids = [row["id"] for row in rows if row["account_id"] == account_id]
        await connection.execute(
            update(block).where(block.c.id.in_(ids)).values(state="reserved", transfer_id=transfer_id)
        )
        reserved.extend(
            (await connection.execute(select(block).where(block.c.id.in_(ids)).order_by(block.c.first)))
            .mappings()
            .all()
        )
    return reserved


async def blocks_for(connection: AsyncConnection, transfer_id: str, state: str) -> list[RowMapping]:
    query = (
        select(block)
        .where(block.c.transfer_id == transfer_id, block.c.state == state)
        .order_by(block.c.ca_id, block.c.origin_registry_id, block.c.first)
    )
    return list((await connection.execute(query)).mappings().all())
