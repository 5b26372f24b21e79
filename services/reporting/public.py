"""The public register (`/v1/public/...`, no token): cooperative approaches, authorizations, per-Party
totals and submitted AEF versions, without the fields a Party designated confidential (domain §6).

Designations are the Party's current ones (`sections.confidential_fields`, from party_sections' events),
applied to everything shown, earlier submissions included: designating a field hides it everywhere at
once. A designated field is removed (its key absent), never blanked, so no value and no shape leaks.
Totals that sum a designated quantity column are left out too.
"""

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kit.errors import NotFound
from services.reporting.aef import holdings_at, iso_instant, quantities
from services.reporting.models import (
    aef_actions,
    authorizations,
    cooperative_approaches,
    sections,
    submissions,
)
from services.reporting.service import parse_version

__all__ = ["confidential_fields", "public_router", "strip"]

public_router = APIRouter(prefix="/v1/public", tags=["public register"])

PartyPath = Annotated[str, Path(pattern=r"^[A-Z]{3}$")]
YearPath = Annotated[int, Path(ge=2021, le=2100)]


async def confidential_fields(session: AsyncSession, party: str) -> dict[str, set[str]]:
    """The Party's designations as {table: {key, ...}}."""
    fields = (
        await session.execute(select(sections.c.confidential_fields).where(sections.c.party == party))
    ).scalar_one_or_none() or []
    out: dict[str, set[str]] = defaultdict(set)
    for name in fields:
        table, _, key = str(name).partition(".")
        out[table].add(key)
    return out


def _without(row: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in hidden}


def strip(tables: dict[str, Any], hidden: dict[str, set[str]]) -> dict[str, Any]:
    """The AEF tables without the designated fields."""
    out: dict[str, Any] = {}
    for table, rows in tables.items():
        keys = hidden.get(table, set())
        out[table] = _without(rows, keys) if isinstance(rows, dict) else [_without(r, keys) for r in rows]
    return out


@public_router.get("/cooperative-approaches")
async def public_cooperative_approaches(request: Request) -> JSONResponse:
    """Every cooperative approach the registry knows: id, name, participating Parties."""
    async with request.app.state.db.read() as session:
        rows = (
            await session.execute(
                select(cooperative_approaches.c.data).order_by(cooperative_approaches.c.ca_id)
            )
        ).scalars()
        items = [
            {"ca_id": d["ca_id"], "name": d.get("name"), "participants": d.get("participants", [])}
            for d in rows
        ]
    return JSONResponse({"items": items, "next_cursor": None})


@public_router.get("/authorizations")
async def public_authorizations(
    request: Request, party: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None
) -> JSONResponse:
    """Every authorization version (AEF Table 2 rows) without the Party's confidential fields."""
    async with request.app.state.db.read() as session:
        query = select(authorizations.c.party, authorizations.c.status, authorizations.c.table2).order_by(
            authorizations.c.party, authorizations.c.authorization_id, authorizations.c.version
        )
        if party is not None:
            query = query.where(authorizations.c.party == party)
        rows = (await session.execute(query)).all()
        hidden = {p: (await confidential_fields(session, p))["authorizations"] for p in {r[0] for r in rows}}
    items = [{"party": p, "status": status, **_without(table2, hidden[p])} for p, status, table2 in rows]
    return JSONResponse({"items": items, "next_cursor": None})


@public_router.get("/parties/{party}/totals")
async def public_totals(request: Request, party: PartyPath) -> JSONResponse:
    """Per-Party totals (t CO2 eq): holdings now, and every AEF action type reported so far."""
    async with request.app.state.db.read() as session:
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
async def public_submissions(request: Request, party: PartyPath, year: YearPath) -> JSONResponse:
    """The submitted versions of a Party-year."""
    async with request.app.state.db.read() as session:
        rows = (
            await session.execute(
                select(submissions.c.major, submissions.c.minor, submissions.c.submitted_at)
                .where(submissions.c.party == party, submissions.c.year == year)
                .order_by(submissions.c.major, submissions.c.minor)
            )
        ).all()
    items = [
        {"party": party, "year": year, "version": f"{major}.{minor}", "submitted_at": iso_instant(at)}
        for major, minor, at in rows
    ]
    return JSONResponse({"items": items, "next_cursor": None})


@public_router.get("/aef/{party}/{year}/submissions/{version}")
async def public_submission(
    request: Request, party: PartyPath, year: YearPath, version: Annotated[str, Path(max_length=20)]
) -> JSONResponse:
    """A submitted version without the Party's confidential fields."""
    major, minor = parse_version(version)
    async with request.app.state.db.read() as session:
        body = (
            await session.execute(
                select(submissions.c.body).where(
                    submissions.c.party == party,
                    submissions.c.year == year,
                    submissions.c.major == major,
                    submissions.c.minor == minor,
                )
            )
        ).scalar_one_or_none()
        if body is None:
            raise NotFound(
                f"{party} has no AEF submission {version} for {year}.", slug="submission-not-found"
            )
        hidden = await confidential_fields(session, party)
    document = json.loads(bytes(body))
    document["tables"] = strip(document["tables"], hidden)
    return JSONResponse(document)
