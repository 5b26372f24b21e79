"""The AEF's five tables for one Party and year, derived from the read model (domain §5.2–5.6).

Everything here reads, except `freeze_year_end` (a closed year's Table 4, frozen in the caller's write
transaction). Rows are dicts keyed exactly by `contracts.aef.AEF_COLUMNS`, in
order, with AEF vocabulary values and `None` where a cell is not applicable (files print `NA`).
"""

from array import array
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from heapq import heappop, heappush
from itertools import pairwise
from typing import Any

from sqlalchemy import and_, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.aef import AEF_COLUMNS
from services.reporting.consumer import same_run
from services.reporting.models import (
    aef_actions,
    authorizations,
    entities,
    movements,
    ndc_periods,
    year_end_holding_rows,
    year_end_holdings,
)

__all__ = [
    "HOLDING_STATES",
    "LATE_COMMIT_MARGIN",
    "action_row",
    "build_tables",
    "freeze_year_end",
    "holdings_at",
    "iso_instant",
    "iter_actions",
    "paint",
    "paint_ranges",
    "quantities",
    "year_bounds",
    "year_end",
    "year_end_frozen",
]

#: Block states that count as holdings (domain §5.5: non-terminal, in an account of the Party).
HOLDING_STATES = frozenset({"held", "reserved"})

_HOLDING_KEYS = (
    "ca_id",
    "origin_registry_id",
    "first_transferring_party",
    "vintage",
    "authorization_id",
    "metric",
    "mitigation_type",
    "applicable_gwp_values",
    "applicable_non_ghg_metric",
    "conversion_factor",
    "registry_id",
)

# Conditional columns of Table 3 (domain §5.4): which action types take them.
_TAKES: dict[str, frozenset[str]] = {
    "transferring_party_id": frozenset({"Acquisition"}),
    "acquiring_party_id": frozenset({"First transfer", "Transfer"}),
    "purpose_oimp": frozenset({"Use", "First transfer", "Cancellation"}),
    "using_cancelling_party_id": frozenset(
        {"Use", "First transfer", "Cancellation", "Voluntary Cancellation"}
    ),
    "using_cancelling_entity_id": frozenset(
        {"Use", "First transfer", "Cancellation", "Voluntary Cancellation"}
    ),
    "ndc_use_year": frozenset({"Use"}),
}


def year_bounds(year: int) -> tuple[datetime, datetime]:
    """[1 Jan Y 00:00, 1 Jan Y+1 00:00) UTC: actions in the year, holdings at 31 Dec 23:59:59.999."""
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def quantities(row: dict[str, Any]) -> tuple[int | float, int | None]:
    """(Quantity (t CO2 eq), Quantity (in non-GHG metric)) of a run (domain §5.4)."""
    count = row["last_serial"] - row["first_serial"] + 1
    if row["metric"] != "non-GHG":
        return count, None
    factor = Decimal(row["conversion_factor"] or "1")
    return _number(factor * count), count


def iso_instant(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    # isoformat is C; "+00:00" becomes "Z" (strftime was a fifth of the time spent shaping a Table 3 row).
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def _unit_columns(row: dict[str, Any], registry_id: str | None) -> dict[str, Any]:
    """The columns Tables 3 and 4 share, `cooperative_approach_id` to `vintage`."""
    tco2e, non_ghg = quantities(row)
    non_ghg_metric = row["applicable_non_ghg_metric"] if row["metric"] == "non-GHG" else None
    return {
        "cooperative_approach_id": row["ca_id"],
        "authorization_id": row["authorization_id"],
        "first_transferring_party_id": row["first_transferring_party"],
        "party_itmo_registry_id": registry_id,
        "first_id": row["first_serial"],
        "last_id": row["last_serial"],
        "underlying_unit_registry_id": row["underlying_registry_id"],
        "first_unit_id": row["underlying_first"],
        "last_unit_id": row["underlying_last"],
        "metric": row["metric"],
        "applicable_gwp_values": row["applicable_gwp_values"],
        "applicable_non_ghg_metric": non_ghg_metric,
        "quantity_tco2e": tco2e,
        "quantity_non_ghg_metric": non_ghg,
        "mitigation_type": row["mitigation_type"],
        "vintage": row["vintage"],
    }


#: Conditional columns a use towards the NDC leaves empty: it names a year, not a purpose or user (those
#: are for IMP uses).
_IMP_ONLY = frozenset({"purpose_oimp", "using_cancelling_party_id", "using_cancelling_entity_id"})

#: The read model's columns a Table 3 row is shaped from, in the order `_shape_action` unpacks them.
_ACTION_SOURCE = (
    "action_at",
    "action_type",
    "action_subtype",
    "ca_id",
    "authorization_id",
    "first_transferring_party",
    "registry_id",
    "first_serial",
    "last_serial",
    "underlying_registry_id",
    "underlying_first",
    "underlying_last",
    "metric",
    "applicable_gwp_values",
    "applicable_non_ghg_metric",
    "conversion_factor",
    "mitigation_type",
    "vintage",
    *_TAKES,
)
_ACTION_KEYS = AEF_COLUMNS["actions"]


@cache
def _takes(kind: str, names_ndc_year: bool) -> tuple[bool, ...]:
    """Which conditional columns (in `_TAKES` order) an action of `kind` fills; only a `Use` naming an
    NDC year is a use towards the NDC."""
    towards_ndc = kind == "Use" and names_ndc_year
    return tuple(kind in takes and not (towards_ndc and key in _IMP_ONLY) for key, takes in _TAKES.items())


_AT, _KIND, _NON_GHG_METRIC, _FACTOR, _MITIGATION, _VINTAGE = (
    _ACTION_SOURCE.index(column)
    for column in (
        "action_at",
        "action_type",
        "applicable_non_ghg_metric",
        "conversion_factor",
        "mitigation_type",
        "vintage",
    )
)
_FIRST, _LAST, _METRIC = (
    _ACTION_SOURCE.index(column) for column in ("first_serial", "last_serial", "metric")
)
_CONDITIONAL = _VINTAGE + 1


def _shape_action(source: Sequence[Any]) -> dict[str, Any]:
    """A Table 3 row from the `_ACTION_SOURCE` values of one read-model row: one tuple zipped with the AEF
    keys (a million-row Table 3 is shaped here, so no intermediate mapping per row). `action_type` to
    `applicable_gwp_values` are reported as read; the quantities and the conditional columns are derived."""
    count = source[_LAST] - source[_FIRST] + 1
    if source[_METRIC] == "non-GHG":
        non_ghg_metric = source[_NON_GHG_METRIC]
        tco2e: int | float = _number(Decimal(source[_FACTOR] or "1") * count)
        non_ghg: int | None = count
    else:
        non_ghg_metric, tco2e, non_ghg = None, count, None
    conditional = source[_CONDITIONAL:]
    takes = _takes(source[_KIND], conditional[-1] is not None)  # the last one is the NDC use year
    return dict(
        zip(
            _ACTION_KEYS,
            (
                iso_instant(source[_AT]),
                *source[_KIND:_NON_GHG_METRIC],
                non_ghg_metric,
                tco2e,
                non_ghg,
                source[_MITIGATION],
                source[_VINTAGE],
                *[value if filled else None for value, filled in zip(conditional, takes, strict=True)],
                None,  # consistency_check_result: CARP fills it (domain §5.1)
                None,  # additional_explanatory_information
            ),
            strict=True,
        )
    )


def action_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Table 3 row, its keys in `AEF_COLUMNS["actions"]` order (a unit test holds the order)."""
    return _shape_action([row[column] for column in _ACTION_SOURCE])


def _actions_query(party: str, start: datetime, end: datetime) -> Any:
    return (
        select(*(aef_actions.c[column] for column in _ACTION_SOURCE))
        .where(aef_actions.c.party == party, aef_actions.c.action_at >= start, aef_actions.c.action_at < end)
        .order_by(aef_actions.c.action_at, aef_actions.c.id)
    )


async def _actions(session: AsyncSession, party: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    result = await session.execute(_actions_query(party, start, end))
    return [_shape_action(row) for row in result.all()]


async def iter_actions(
    session: AsyncSession, party: str, year: int, batch: int = 5000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Table 3 in batches from a server-side cursor: a large Party-year never sits in memory whole."""
    start, end = year_bounds(year)
    result = await session.stream(_actions_query(party, start, end).execution_options(yield_per=batch))
    async for rows in result.partitions(batch):
        yield [_shape_action(row) for row in rows]


def paint_ranges(firsts: Sequence[int], lasts: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """Which range wins each serial, the later (higher index) covering it winning: `(index, first, last)`
    pieces in serial order, adjacent pieces of one index merged.

    A sweep over the serial axis with a heap of the ranges covering the current point (lazy deletion):
    O(n log n), however the ranges nest or repeat; pieces are yielded as they close.
    """
    if not firsts:
        return
    points = sorted(set(firsts).union(last + 1 for last in lasts))
    order = sorted(range(len(firsts)), key=firsts.__getitem__)
    heap: list[int] = []
    current: list[int] | None = None
    taken = 0
    for here, following in pairwise(points):
        while taken < len(order) and firsts[order[taken]] <= here:
            heappush(heap, -order[taken])
            taken += 1
        while heap and lasts[-heap[0]] < here:
            heappop(heap)
        if not heap:
            continue
        winner = -heap[0]
        if current is not None and current[0] == winner and current[2] + 1 == here:
            current[2] = following - 1
            continue
        if current is not None:
            yield current[0], current[1], current[2]
        current = [winner, here, following - 1]
    if current is not None:
        yield current[0], current[1], current[2]


def _piece(row: dict[str, Any], first: int, last: int) -> dict[str, Any]:
    piece = dict(row)
    piece["first_serial"], piece["last_serial"] = first, last
    if row["underlying_first"] is not None:
        piece["underlying_first"] = row["underlying_first"] + (first - row["first_serial"])
        piece["underlying_last"] = row["underlying_first"] + (last - row["first_serial"])
    return piece


def paint(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where every serial of the given movements (one series, in application order) ended up: the
    movements cut to the serials no later movement covers (underlying ranges sliced alike)."""
    firsts = [row["first_serial"] for row in rows]
    lasts = [row["last_serial"] for row in rows]
    return [_piece(rows[index], first, last) for index, first, last in paint_ranges(firsts, lasts)]


def _holding_row(run: dict[str, Any]) -> dict[str, Any]:
    columns = AEF_COLUMNS["holdings"]
    return {key: value for key, value in _unit_columns(run, run["registry_id"]).items() if key in columns}


async def holdings_at(session: AsyncSession, party: str, end: datetime) -> list[dict[str, Any]]:
    """Table 4 rows of `party`: what it held just before `end` (domain §5.5).

    Per (CA, originating registry) series the Party ever held, every movement is repainted from a compact
    stream of (id, range, "left with the Party in a holding state"); the full rows are then read only for
    the winning pieces the Party holds, 1,000 at a time in serial order, and merged into maximal runs as
    they come. Memory grows with the series' movements as three integer arrays, and with Table 4 itself.
    """
    series = (
        await session.execute(
            select(movements.c.ca_id, movements.c.origin_registry_id)
            .where(movements.c.party == party, movements.c.moved_at < end)
            .distinct()
            .order_by(movements.c.ca_id, movements.c.origin_registry_id)
        )
    ).all()
    out: list[dict[str, Any]] = []
    for ca_id, registry_id in series:
        ids, firsts, lasts, mine = array("q"), array("q"), array("q"), bytearray()
        held = and_(movements.c.party == party, movements.c.state.in_(sorted(HOLDING_STATES)))
        result = await session.stream(
            select(movements.c.id, movements.c.first_serial, movements.c.last_serial, held)
            .where(
                movements.c.ca_id == ca_id,
                movements.c.origin_registry_id == registry_id,
                movements.c.moved_at < end,
            )
            .order_by(movements.c.id)
            .execution_options(yield_per=20_000)
        )
        async for partition in result.partitions(20_000):
            for movement, first, last, is_mine in partition:
                ids.append(movement)
                firsts.append(first)
                lasts.append(last)
                mine.append(1 if is_mine else 0)
        winners = [
            (ids[index], first, last) for index, first, last in paint_ranges(firsts, lasts) if mine[index]
        ]
        del ids, firsts, lasts, mine
        run: dict[str, Any] | None = None
        for chunk in range(0, len(winners), 1000):
            batch = winners[chunk : chunk + 1000]
            rows = await session.execute(select(movements).where(movements.c.id.in_({w[0] for w in batch})))
            full = {row["id"]: dict(row) for row in rows.mappings()}
            for movement, first, last in batch:
                piece = _piece(full[movement], first, last)
                if run is not None and same_run(run, piece, _HOLDING_KEYS):
                    run["last_serial"] = piece["last_serial"]
                    if piece["underlying_last"] is not None:
                        run["underlying_last"] = piece["underlying_last"]
                    continue
                if run is not None:
                    out.append(_holding_row(run))
                run = piece
        if run is not None:
            out.append(_holding_row(run))
    return out


#: How long after its completion instant a ledger transaction may still commit (and so reach the feed):
#: far above any request's life (the ledger completes and commits in one request). A movement applied
#: with a time past year end + this margin means every movement dated in the year has been applied.
LATE_COMMIT_MARGIN = timedelta(hours=1)


async def year_end_frozen(session: AsyncSession, party: str, year: int) -> bool:
    """Whether Table 4 of `party` for `year` has been frozen (one primary-key lookup)."""
    taken = await session.execute(
        select(year_end_holdings.c.holding_count).where(
            year_end_holdings.c.party == party, year_end_holdings.c.year == year
        )
    )
    return taken.scalar_one_or_none() is not None


async def _frozen_year_end(session: AsyncSession, party: str, year: int) -> list[dict[str, Any]] | None:
    if not await year_end_frozen(session, party, year):
        return None
    result = await session.execute(
        select(year_end_holding_rows.c.holding)
        .where(year_end_holding_rows.c.party == party, year_end_holding_rows.c.year == year)
        .order_by(year_end_holding_rows.c.seq)
    )
    return list(result.scalars())


async def year_end(session: AsyncSession, party: str, year: int) -> list[dict[str, Any]]:
    """Table 4 of `party` for `year`: the frozen snapshot if one was taken, else repainted now."""
    frozen = await _frozen_year_end(session, party, year)
    return frozen if frozen is not None else await holdings_at(session, party, year_bounds(year)[1])


async def freeze_year_end(session: AsyncSession, party: str, year: int, now: datetime) -> bool:
    """Freeze Table 4 of `party` for `year` (in the caller's write transaction) if it is not frozen yet
    and can no longer change: the read model holds a movement dated past year end + `LATE_COMMIT_MARGIN`.
    Positions in the ledger's feed follow commit order, and a transaction's time is taken before it
    commits, so a movement dated in the year can still arrive after one dated just past it; not after one
    dated past the margin. Corrections and later actions are dated when they happen, never back in a year."""
    _, end = year_bounds(year)
    if await year_end_frozen(session, party, year):
        return False
    latest = (await session.execute(select(func.max(movements.c.moved_at)))).scalar_one_or_none()
    if latest is None or (latest if latest.tzinfo else latest.replace(tzinfo=UTC)) < end + LATE_COMMIT_MARGIN:
        return False
    rows = await holdings_at(session, party, end)
    await session.execute(
        insert(year_end_holdings).values(party=party, year=year, taken_at=now, holding_count=len(rows))
    )
    for start in range(0, len(rows), 1000):
        await session.execute(
            insert(year_end_holding_rows),
            [
                {"party": party, "year": year, "seq": seq, "holding": row}
                for seq, row in enumerate(rows[start : start + 1000], start=start)
            ],
        )
    return True


async def _authorizations(session: AsyncSession, party: str, year: int) -> list[dict[str, Any]]:
    result = await session.execute(
        select(authorizations.c.table2)
        .where(
            authorizations.c.party == party,
            and_(
                authorizations.c.authorized_on >= date(year, 1, 1),
                authorizations.c.authorized_on <= date(year, 12, 31),
            ),
        )
        .order_by(authorizations.c.authorized_on, authorizations.c.authorization_id, authorizations.c.version)
    )
    return [{key: row.get(key) for key in AEF_COLUMNS["authorizations"]} for row in result.scalars()]


async def _entities(session: AsyncSession, party: str, year: int) -> list[dict[str, Any]]:
    """Table 5 as at 31 Dec: every entity the Party authorized on or before that day (domain §5.6)."""
    result = await session.execute(
        select(entities.c.data).where(entities.c.party == party).order_by(entities.c.entity_id)
    )
    rows = []
    for data in result.scalars():
        authorized = str(data.get("date_of_authorization") or "")
        if authorized and date.fromisoformat(authorized[:10]) > date(year, 12, 31):
            continue
        values = {
            "date_of_the_authorization": authorized or None,
            "name": data.get("name"),
            "country_of_incorporation": data.get("country_of_incorporation"),
            "identification_number": data.get("identification_number"),
            "cooperative_approach_id": data.get("ca_id"),
            "conditions": data.get("conditions"),
            "change_and_revocation_conditions": data.get("change_and_revocation_conditions"),
            "additional_explanatory_information": data.get("additional_explanatory_information"),
        }
        rows.append(values)
    return rows


async def _submission(session: AsyncSession, party: str, year: int) -> dict[str, Any]:
    period = (
        await session.execute(
            select(ndc_periods.c.first_year, ndc_periods.c.last_year).where(
                ndc_periods.c.party == party,
                ndc_periods.c.first_year <= year,
                ndc_periods.c.last_year >= year,
            )
        )
    ).first()
    return {
        "party": party,
        "version": None,
        "reported_year": year,
        "date_of_submission": None,
        "review_status_of_the_initial_report": None,  # CARP
        "consistency_check_result": None,  # CARP
        "first_year_of_the_ndc_implementation_period": period[0] if period else None,
        "last_year_of_the_ndc_implementation_period": period[1] if period else None,
        "reference_to_the_ter_report": None,  # CARP
    }


async def build_tables(
    session: AsyncSession, party: str, year: int, *, actions: bool = True
) -> dict[str, Any]:
    """The five tables of `party`'s AEF for `year`, from one read snapshot (`actions=False`: Table 3 left
    empty, for the callers that stream it with `iter_actions`)."""
    start, end = year_bounds(year)
    return {
        "submission": await _submission(session, party, year),
        "authorizations": await _authorizations(session, party, year),
        "actions": await _actions(session, party, start, end) if actions else [],
        "holdings": await year_end(session, party, year),
        "authorized_entities": await _entities(session, party, year),
    }
