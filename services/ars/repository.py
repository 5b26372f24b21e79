"""Queries of the ars service (SQLAlchemy Core on a connection the service's transaction owns).

MO blocks are taken from the low end in the order vintage, CA, originating registry, serial (DESIGN §4),
locked `FOR UPDATE` in that order (rendered only on PostgreSQL; SQLite serialises writers with BEGIN
IMMEDIATE); a partly taken block gives its lowest serials to a new row and keeps its own row for the rest.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.actions import MOState
from contracts.aef import AEF_COLUMNS
from contracts.ars import Authorization, MOBlock
from contracts.identifiers import MAX_SERIAL
from contracts.transactions import Underlying
from services.ars.models import authorization_heads, authorizations, mo_blocks, serial_counters

__all__ = [
    "BLOCK_ORDER",
    "NotEnough",
    "allocate_serials",
    "authorization_from_row",
    "block_from_row",
    "coalesce",
    "merge_ranges",
    "quantity_under",
    "table2_row",
    "take",
]

BLOCK_ORDER = (
    mo_blocks.c.vintage,
    mo_blocks.c.ca_id,
    mo_blocks.c.origin_registry_id,
    mo_blocks.c.first_serial,
)
_BATCH = 200
#: Columns two adjacent blocks must share to be one block again.
_SAME = (
    "party",
    "ca_id",
    "origin_registry_id",
    "vintage",
    "metric",
    "mitigation_type",
    "sector",
    "activity_type",
    "applicable_gwp_values",
    "applicable_non_ghg_metric",
    "conversion_factor",
    "underlying_registry_id",
    "state",
    "authorization_id",
    "authorization_version",
    "operation_id",
    "transaction_id",
    "cancellation_id",
    "issuance_id",
)


class NotEnough(Exception):
    """Fewer units matched than asked; the caller's transaction must roll back."""

    def __init__(self, found: int) -> None:
        super().__init__(f"only {found} matching units")
        self.found = found


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def allocate_serials(connection: AsyncConnection, ca_id: str, registry_id: str, quantity: int) -> int:
    """The first of `quantity` new serials of (CA, registry), continuing the sequence without gaps.

    The counter row is created if missing, then bumped with one `UPDATE ... RETURNING`: on PostgreSQL the
    row lock serialises concurrent issuances until commit, and a rolled-back issuance gives its serials back.
    """
    values = {"ca_id": ca_id, "registry_id": registry_id, "last_serial": 0}
    dialect = connection.dialect.name
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    await connection.execute(make(serial_counters).values(**values).on_conflict_do_nothing())
    last = (
        await connection.execute(
            update(serial_counters)
            .where(serial_counters.c.ca_id == ca_id, serial_counters.c.registry_id == registry_id)
            .values(last_serial=serial_counters.c.last_serial + quantity)
            .returning(serial_counters.c.last_serial)
        )
    ).scalar_one()
    if last > MAX_SERIAL:
        from services.ars.errors import SerialsExhausted

        raise SerialsExhausted(f"{ca_id}-{registry_id} has fewer than {quantity} serials left.")
    return int(last) - quantity + 1


async def take(
    connection: AsyncConnection,
    where: Sequence[Any],
    quantity: int,
    values: dict[str, Any],
    now: datetime,
) -> list[dict[str, Any]]:
    """Give `values` to `quantity` units of the blocks matching `where`, from the low end; the rows changed.

    `NotEnough` when fewer units match (nothing is undone here: roll the transaction back).
    """
    taken: list[dict[str, Any]] = []
    remaining = quantity
    while remaining > 0:
        rows = (
            (
                await connection.execute(
                    select(mo_blocks).where(*where).order_by(*BLOCK_ORDER).limit(_BATCH).with_for_update()
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            raise NotEnough(quantity - remaining)
        for row in rows:
            size = row["last_serial"] - row["first_serial"] + 1
            if size <= remaining:
                await connection.execute(
                    update(mo_blocks).where(mo_blocks.c.id == row["id"]).values(**values, updated_at=now)
                )
                taken.append({**row, **values, "updated_at": now})
                remaining -= size
            else:
                piece = await _split_low(connection, row, remaining, values, now)
                taken.append(piece)
                remaining = 0
            if remaining == 0:
                break
    return taken


async def _split_low(
    connection: AsyncConnection, row: Any, count: int, values: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Cut the lowest `count` serials of `row` into a new row carrying `values`; the row keeps the rest."""
    rest_first = row["first_serial"] + count
    rest_underlying = row["underlying_first"] + count if row["underlying_first"] is not None else None
    await connection.execute(
        update(mo_blocks)
        .where(mo_blocks.c.id == row["id"])
        .values(first_serial=rest_first, underlying_first=rest_underlying, updated_at=now)
    )
    piece = {k: v for k, v in row.items() if k != "id"}
    piece.update(values, last_serial=row["first_serial"] + count - 1, updated_at=now)
    new_id = (
        await connection.execute(insert(mo_blocks).values(**piece).returning(mo_blocks.c.id))
    ).scalar_one()
    return {**piece, "id": new_id}


async def split_at(
    connection: AsyncConnection, ca_id: str, registry_id: str, serial: int, now: datetime
) -> None:
    """Make a block boundary start at `serial` (if a block spans it), the lower part keeping its row."""
    row = (
        (
            await connection.execute(
                select(mo_blocks)
                .where(
                    mo_blocks.c.ca_id == ca_id,
                    mo_blocks.c.origin_registry_id == registry_id,
                    mo_blocks.c.first_serial < serial,
                    mo_blocks.c.last_serial >= serial,
                )
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return
    shift = serial - row["first_serial"]
    await connection.execute(
        update(mo_blocks).where(mo_blocks.c.id == row["id"]).values(last_serial=serial - 1, updated_at=now)
    )
    upper = {k: v for k, v in row.items() if k != "id"}
    upper.update(
        first_serial=serial,
        underlying_first=row["underlying_first"] + shift if row["underlying_first"] is not None else None,
        updated_at=now,
    )
    await connection.execute(insert(mo_blocks).values(**upper))


async def coalesce(connection: AsyncConnection, rows: Iterable[dict[str, Any]], now: datetime) -> None:
    """Merge each of `rows` with adjacent blocks of identical attributes (a released reservation, e.g.)."""
    for start in rows:
        found = (
            (await connection.execute(select(mo_blocks).where(mo_blocks.c.id == start["id"])))
            .mappings()
            .first()
        )
        if found is None:
            continue
        current: dict[str, Any] = dict(found)
        for side in ("low", "high"):
            if side == "low":
                condition = mo_blocks.c.last_serial == current["first_serial"] - 1
            else:
                condition = mo_blocks.c.first_serial == current["last_serial"] + 1
            neighbour = (
                (
                    await connection.execute(
                        select(mo_blocks).where(
                            mo_blocks.c.ca_id == current["ca_id"],
                            mo_blocks.c.origin_registry_id == current["origin_registry_id"],
                            condition,
                        )
                    )
                )
                .mappings()
                .first()
            )
            if neighbour is None or any(neighbour[c] != current[c] for c in _SAME):
                continue
            low, high = (neighbour, current) if side == "low" else (current, neighbour)
            if low["underlying_first"] is not None and (
                high["underlying_first"]
                != low["underlying_first"] + (low["last_serial"] - low["first_serial"] + 1)
            ):
                continue
            # Delete the high one, then widen the low one (no moment where two rows overlap).
            await connection.execute(mo_blocks.delete().where(mo_blocks.c.id == high["id"]))
            await connection.execute(
                update(mo_blocks)
                .where(mo_blocks.c.id == low["id"])
                .values(last_serial=high["last_serial"], updated_at=now)
            )
            current = {**low, "last_serial": high["last_serial"]}


async def quantity_under(
    connection: AsyncConnection, party: str, authorization_id: str, states: Sequence[str]
) -> int:
    """Units of the Party's blocks under an authorization in these states."""
    total = (
        await connection.execute(
            select(func.coalesce(func.sum(mo_blocks.c.last_serial - mo_blocks.c.first_serial + 1), 0)).where(
                mo_blocks.c.party == party,
                mo_blocks.c.authorization_id == authorization_id,
                mo_blocks.c.state.in_(list(states)),
            )
        )
    ).scalar_one()
    return int(total)


def block_from_row(row: Any) -> MOBlock:
    first, last = int(row["first_serial"]), int(row["last_serial"])
    stem = f"{row['ca_id']}-{row['origin_registry_id']}-{row['party']}"
    underlying = None
    if row["underlying_registry_id"] is not None:
        underlying = Underlying(
            registry_id=row["underlying_registry_id"],
            first_unit_id=int(row["underlying_first"]),
            last_unit_id=int(row["underlying_first"]) + last - first,
        )
    return MOBlock(
        ca_id=row["ca_id"],
        origin_registry_id=row["origin_registry_id"],
        first=first,
        last=last,
        quantity=last - first + 1,
        vintage=row["vintage"],
        # The reservation is internal to the saga; API.md's four states stay the public vocabulary.
        state=MOState.AUTHORIZED if row["state"] == MOState.RESERVED else MOState(row["state"]),
        reserved=row["state"] == MOState.RESERVED,
        authorization_id=row["authorization_id"],
        authorization_version=row["authorization_version"],
        party=row["party"],
        unique_id_first=f"{stem}-{first}-{row['vintage']}",
        unique_id_last=f"{stem}-{last}-{row['vintage']}",
        metric=row["metric"],
        mitigation_type=row["mitigation_type"],
        sector=row["sector"],
        activity_type=row["activity_type"],
        applicable_gwp_values=row["applicable_gwp_values"],
        applicable_non_ghg_metric=row["applicable_non_ghg_metric"],
        conversion_factor=row["conversion_factor"],
        underlying=underlying,
        issuance_id=row["issuance_id"],
        operation_id=row["operation_id"],
        transaction_id=row["transaction_id"],
    )


def merge_ranges(rows: Iterable[Any]) -> list[dict[str, int | str]]:
    """Maximal contiguous runs of (CA, registry, serials) among `rows`, in order."""
    runs: list[dict[str, Any]] = []
    ordered = sorted(rows, key=lambda r: (r["ca_id"], r["origin_registry_id"], r["first_serial"]))
    for row in ordered:
        last = runs[-1] if runs else None
        if (
            last is not None
            and last["ca_id"] == row["ca_id"]
            and last["origin_registry_id"] == row["origin_registry_id"]
            and last["last"] + 1 == row["first_serial"]
        ):
            last["last"] = int(row["last_serial"])
        else:
            runs.append(
                {
                    "ca_id": row["ca_id"],
                    "origin_registry_id": row["origin_registry_id"],
                    "first": int(row["first_serial"]),
                    "last": int(row["last_serial"]),
                }
            )
    return runs


def _joined(values: list[str] | None) -> str | None:
    return ", ".join(values) if values else None


def table2_row(row: Any) -> dict[str, Any]:
    """The AEF Table 2 row of an authorization version, under the AEF keys (API.md "Reports")."""
    moment: date = row["date"]
    values = {
        "authorization_id": row["authorization_id"],
        "date_of_authorization": moment.isoformat(),
        "cooperative_approach_id": row["ca_id"],
        "version_of_the_authorization": row["version"],
        "authorized_quantity": row["authorized_quantity"],
        "metric": row["metric"],
        "applicable_gwp_values": row["applicable_gwp_values"],
        "applicable_non_ghg_metric": row["applicable_non_ghg_metric"],
        "sectors": _joined(row["sectors"]),
        "activity_types": _joined(row["activity_types"]),
        "purposes_for_authorization": row["purposes"],
        "authorized_party_ids": _joined(row["authorized_parties"]),
        "authorized_entity_ids": _joined(row["authorized_entities"]),
        "oimp_authorized_by_the_party": row["oimp"],
        "authorized_timeframe": row["timeframe"],
        "authorization_terms_and_conditions": row["terms"],
        "authorization_documentation": None,  # CARP fills it (domain §5.3)
        "first_transfer_definition_for_oimp": row["first_transfer_definition"],
        "additional_explanatory_information": row["additional_explanatory_information"],
    }
    assert tuple(values) == AEF_COLUMNS["authorizations"]
    return values


def authorization_from_row(row: Any) -> Authorization:
    data = dict(row)
    if isinstance(data["date"], datetime):
        data["date"] = data["date"].date()
    return Authorization(
        **{k: v for k, v in data.items() if k in Authorization.model_fields and k != "table2"}
        | {"revoked_at": _utc(data["revoked_at"]), "created_at": _utc(data["created_at"])},
        table2=table2_row(data),
    )


async def current_authorization(
    connection: AsyncConnection, party: str, authorization_id: str, *, lock: bool = False
) -> Any | None:
    """The head and current version of an authorization as one mapping (None if unknown)."""
    head_query = select(authorization_heads).where(
        authorization_heads.c.party == party, authorization_heads.c.authorization_id == authorization_id
    )
    if lock:
        head_query = head_query.with_for_update()
    head = (await connection.execute(head_query)).mappings().first()
    if head is None:
        return None
    version = (
        (
            await connection.execute(
                select(authorizations).where(
                    and_(
                        authorizations.c.party == party,
                        authorizations.c.authorization_id == authorization_id,
                        authorizations.c.version == head["current_version"],
                    )
                )
            )
        )
        .mappings()
        .one()
    )
    return version


def rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount
