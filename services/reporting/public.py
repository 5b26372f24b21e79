"""The public register (`/v1/public/...`, no token): cooperative approaches, authorizations, per-Party
totals and submitted AEF versions, without the fields a Party designated confidential (domain §6).

Designations are the Party's current ones (`sections.confidential_fields`, from party_sections' events),
applied to everything shown, earlier submissions included: designating a field hides it everywhere at
once. A designated field is removed (its key absent), never blanked, so no value and no shape leaks.
Totals that sum a designated quantity column are left out too. Lists are keyset-paginated like the rest
of the API (`?limit=&cursor=` → `next_cursor`); a submitted version streams from its stored chunks.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.pagination import DEFAULT_LIMIT
from kit.pagination import CursorQuery, LimitQuery, encode_cursor
from services.reporting.aef import holdings_at, iso_instant, quantities
from services.reporting.exports import Pieces, export_response
from services.reporting.frozen import document_chunks, frozen_chunks, frozen_pieces
from services.reporting.models import (
    aef_actions,
    authorizations,
    cooperative_approaches,
    sections,
    submissions,
)
from services.reporting.service import ReportingService, snapshot, typed_cursor

__all__ = ["confidential_fields", "designations", "public_router"]

public_router = APIRouter(prefix="/v1/public", tags=["public register"])

PartyPath = Annotated[str, Path(pattern=r"^[A-Z]{3}$")]
YearPath = Annotated[int, Path(ge=2021, le=2100)]


def designations(fields: Iterable[Any]) -> dict[str, set[str]]:
    """Stored designations (`table.key` names) as {table: {key, ...}}."""
    out: dict[str, set[str]] = defaultdict(set)
    for name in fields:
        table, _, key = str(name).partition(".")
        out[table].add(key)
    return out


async def confidential_fields(session: AsyncSession, party: str) -> dict[str, set[str]]:
    """The Party's designations as {table: {key, ...}}."""
    fields = (
        await session.execute(select(sections.c.confidential_fields).where(sections.c.party == party))
    ).scalar_one_or_none() or []
    return designations(fields)


def _without(row: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in hidden}


def _next_cursor(rows: Sequence[Any], limit: int, fields: Iterable[str]) -> str | None:
    """The cursor after the page's last row, when the `limit + 1`th row says another page exists."""
    if len(rows) <= limit:
        return None
    return encode_cursor({name: rows[limit - 1][index] for index, name in enumerate(fields)})


@public_router.get("/cooperative-approaches")
async def public_cooperative_approaches(
    request: Request, limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None
) -> JSONResponse:
    """Every cooperative approach the registry knows: id, name, participating Parties (by id)."""
    after = typed_cursor(cursor, {"ca_id": str})
    query = (
        select(cooperative_approaches.c.ca_id, cooperative_approaches.c.data)
        .order_by(cooperative_approaches.c.ca_id)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(cooperative_approaches.c.ca_id > after["ca_id"])
    async with request.app.state.db.read() as session:
        rows = (await session.execute(query)).all()
    items = [
        {"ca_id": d["ca_id"], "name": d.get("name"), "participants": d.get("participants", [])}
        for _, d in rows[:limit]
    ]
    return JSONResponse({"items": items, "next_cursor": _next_cursor(rows, limit, ("ca_id",))})


_AUTHORIZATION_KEY = {"party": str, "authorization_id": str, "version": int}


@public_router.get("/authorizations")
async def public_authorizations(
    request: Request,
    party: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> JSONResponse:
    """Every authorization version (AEF Table 2 rows) without the Party's confidential fields, by Party,
    authorization and version."""
    after = typed_cursor(cursor, _AUTHORIZATION_KEY)
    key = tuple_(*(authorizations.c[name] for name in _AUTHORIZATION_KEY))
    query = (
        select(*key.clauses, authorizations.c.status, authorizations.c.table2)
        .order_by(*key.clauses)
        .limit(limit + 1)
    )
    if party is not None:
        query = query.where(authorizations.c.party == party)
    if after is not None:
        query = query.where(key > tuple(after[name] for name in _AUTHORIZATION_KEY))
    async with request.app.state.db.read() as session:
        rows = (await session.execute(query)).all()
        hidden = {
            p: (await confidential_fields(session, p))["authorizations"] for p in {r[0] for r in rows[:limit]}
        }
    items = [
        {"party": p, "status": status, **_without(table2, hidden[p])}
        for p, _, _, status, table2 in rows[:limit]
    ]
    return JSONResponse({"items": items, "next_cursor": _next_cursor(rows, limit, _AUTHORIZATION_KEY)})


@public_router.get("/parties/{party}/totals")
async def public_totals(request: Request, party: PartyPath) -> JSONResponse:
    """Per-Party totals (t CO2 eq): holdings now, and every AEF action type reported so far."""
    async with snapshot(request.app.state.db) as session:  # the totals and the holdings agree
        hidden = await confidential_fields(session, party)
        by_type: dict[str, int | float] = defaultdict(int)
        count = func.sum(aef_actions.c.last_serial - aef_actions.c.first_serial + 1)
        result = await session.execute(
            select(aef_actions.c.action_type, aef_actions.c.metric, aef_actions.c.conversion_factor, count)
            .where(aef_actions.c.party == party)
            .group_by(aef_actions.c.action_type, aef_actions.c.metric, aef_actions.c.conversion_factor)
        )
        for kind, metric, factor, units in result.all():
            # quantities() of one run of `units` serials: t CO2 eq (converted for non-GHG).
            run = {
                "first_serial": 1,
                "last_serial": int(units),
                "metric": metric,
                "conversion_factor": factor,
            }
            by_type[kind] += quantities(run)[0]
        held = sum(h["quantity_tco2e"] for h in await holdings_at(session, party, datetime.now(UTC)))
    body: dict[str, Any] = {"party": party, "as_of": iso_instant(datetime.now(UTC))}
    if "quantity_tco2e" not in hidden["holdings"]:
        body["holdings_tco2e"] = held
    if "quantity_tco2e" not in hidden["actions"]:
        body["actions_tco2e"] = dict(sorted(by_type.items()))
    return JSONResponse(body)


@public_router.get("/aef/{party}/{year}/submissions")
async def public_submissions(
    request: Request,
    party: PartyPath,
    year: YearPath,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> JSONResponse:
    """The submitted versions of a Party-year, oldest first."""
    after = typed_cursor(cursor, {"major": int, "minor": int})
    query = (
        select(submissions.c.major, submissions.c.minor, submissions.c.submitted_at)
        .where(submissions.c.party == party, submissions.c.year == year)
        .order_by(submissions.c.major, submissions.c.minor)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(
            tuple_(submissions.c.major, submissions.c.minor) > (after["major"], after["minor"])
        )
    async with request.app.state.db.read() as session:
        rows = (await session.execute(query)).all()
    items = [
        {"party": party, "year": year, "version": f"{major}.{minor}", "submitted_at": iso_instant(at)}
        for major, minor, at in rows[:limit]
    ]
    return JSONResponse({"items": items, "next_cursor": _next_cursor(rows, limit, ("major", "minor"))})


async def _stripped(pieces: Pieces, hidden: dict[str, set[str]]) -> Pieces:
    async for table, rows in pieces:
        keys = hidden.get(table, set())
        yield table, [_without(row, keys) for row in rows]


@public_router.get("/aef/{party}/{year}/submissions/{version}")
async def public_submission(
    request: Request,
    party: PartyPath,
    year: YearPath,
    version: Annotated[str, Path(max_length=20)],
    format: Annotated[
        Literal["json", "xlsx", "csv"], Query(description="json (default), xlsx or csv (zip)")
    ] = "json",
) -> StreamingResponse:
    """A submitted version without the Party's confidential fields, streamed as its chunks are read; as
    a file, the designated columns are left out whole (heading and cells), as the keys are in JSON."""
    db = request.app.state.db
    frozen = await ReportingService.frozen(db, party, year, version)
    async with db.read() as session:
        hidden = await confidential_fields(session, party)
    head, pieces = await frozen_pieces(frozen_chunks(db, frozen.key))
    if format != "json":
        name = f"AEF_{party}_{year}_v{frozen.version}_public"
        return await export_response(_stripped(pieces, hidden), format, name, hidden)
    return StreamingResponse(document_chunks(head, _stripped(pieces, hidden)), media_type="application/json")
