"""Cross-Party consistency checks (domain §7.3 C6–C10) and the corresponding-adjustments view (§7.1).

Both read the read model only. Findings name the rows behind them (Party, action, serial range) so a
Party can find what to correct; codes are stable (`C6` … `C10`, with a `reason` slug per finding).
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.actions import Purpose
from contracts.ars import parse_timeframe
from services.reporting.aef import iso_instant, quantities, year_bounds, year_end
from services.reporting.models import aef_actions, authorizations, movements, ndc_periods

__all__ = ["CHECKS", "consistency", "corresponding_adjustments"]

CHECKS: dict[str, str] = {
    "C6": "No serial range first transferred twice (unique identifiers globally unique)",
    "C7": "Every First transfer/Transfer by A to B matched by an Acquisition by B from A with the same serials",
    "C8": "No ITMO used or cancelled more than once across all Parties",
    "C9": "Holdings roll forward: H(Y-1) + in - out - used - cancelled = H(Y), per Party",
    "C10": "Authorization conformity: first-transferred quantity within the authorized quantity, vintage "
    "within the authorized timeframe, use or cancellation within the authorized purposes, use year within "
    "the user's NDC period",
}

_CONSUMING = ("Use", "Cancellation", "Voluntary Cancellation")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_consumption(row: Any) -> bool:
    return row["action_type"] in _CONSUMING or (
        row["action_type"] == "First transfer" and row["action_subtype"] == "Use or cancellation"
    )


def _block(row: Any) -> dict[str, Any]:
    tco2e, non_ghg = quantities(row)
    return {
        "party": row["party"],
        "transaction_id": row["transaction_id"],
        "action_date": iso_instant(row["action_at"]),
        "action_type": row["action_type"],
        "action_subtype": row["action_subtype"],
        "cooperative_approach_id": row["ca_id"],
        "party_itmo_registry_id": row["registry_id"],
        "origin_registry_id": row["origin_registry_id"],
        "first_id": row["first_serial"],
        "last_id": row["last_serial"],
        "vintage": row["vintage"],
        "metric": row["metric"],
        "applicable_non_ghg_metric": row["applicable_non_ghg_metric"] if non_ghg is not None else None,
        "quantity_tco2e": tco2e,
        "quantity_non_ghg_metric": non_ghg,
    }


def _overlaps(rows: list[Any]) -> list[tuple[Any, Any]]:
    """Pairs of rows of one series whose serial ranges overlap."""
    by_series: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        by_series[(row["ca_id"], row["origin_registry_id"])].append(row)
    pairs = []
    for series in by_series.values():
        series.sort(key=lambda r: (r["first_serial"], r["last_serial"]))
        reach: Any = None
        for row in series:
            if reach is not None and row["first_serial"] <= reach["last_serial"]:
                pairs.append((reach, row))
            if reach is None or row["last_serial"] > reach["last_serial"]:
                reach = row
    return pairs


def _check(code: str, findings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "code": code,
        "title": CHECKS[code],
        "result": "fail" if findings else "pass",
        "findings": findings,
    }


async def consistency(session: AsyncSession, year: int) -> dict[str, Any]:
    """C6–C9 over every Party the read model knows, for the reported year `year`."""
    start, end = year_bounds(year)
    until_end = (
        (
            await session.execute(
                select(aef_actions).where(aef_actions.c.action_at < end).order_by(aef_actions.c.id)
            )
        )
        .mappings()
        .all()
    )
    in_year = [row for row in until_end if _aware(row["action_at"]) >= start]

    # C6: first transfers, all years up to the end of this one.
    firsts = [row for row in until_end if row["action_type"] == "First transfer"]
    c6 = [{"reason": "first-transferred-twice", "rows": [_block(a), _block(b)]} for a, b in _overlaps(firsts)]

    # C7: sender rows ↔ receiver rows of the year.
    def key(row: Any, sender: str, receiver: str) -> tuple:
        return (
            row["ca_id"],
            row["origin_registry_id"],
            row["first_serial"],
            row["last_serial"],
            row["vintage"],
            sender,
            receiver,
        )

    acquisitions: dict[tuple, int] = defaultdict(int)
    for row in in_year:
        if row["action_type"] == "Acquisition" and row["transferring_party_id"]:
            acquisitions[key(row, row["transferring_party_id"], row["party"])] += 1
    c7 = []
    for row in in_year:
        if row["action_type"] in ("First transfer", "Transfer") and row["acquiring_party_id"]:
            k = key(row, row["party"], row["acquiring_party_id"])
            if acquisitions.get(k):
                acquisitions[k] -= 1
            else:
                c7.append({"reason": "no-matching-acquisition", "rows": [_block(row)]})
    for row in in_year:
        if row["action_type"] == "Acquisition" and row["transferring_party_id"]:
            k = key(row, row["transferring_party_id"], row["party"])
            if acquisitions.get(k, 0) > 0:
                acquisitions[k] -= 1
                c7.append({"reason": "no-matching-transfer", "rows": [_block(row)]})

    # C8: uses and cancellations, all years up to the end of this one.
    consumed = [row for row in until_end if _is_consumption(row)]
    c8 = [{"reason": "consumed-twice", "rows": [_block(a), _block(b)]} for a, b in _overlaps(consumed)]

    # C9: per Party, the year's flows against the change of its holdings.
    parties = sorted(
        set(
            (
                await session.execute(select(movements.c.party).where(movements.c.moved_at < end).distinct())
            ).scalars()
        )
        | {row["party"] for row in in_year}
    )
    c9 = []
    for party in parties:
        before = sum(h["quantity_tco2e"] for h in await year_end(session, party, year - 1))
        after = sum(h["quantity_tco2e"] for h in await year_end(session, party, year))
        flows = {"in": 0, "out": 0, "used": 0, "cancelled": 0}
        for row in in_year:
            if row["party"] != party:
                continue
            quantity = row["last_serial"] - row["first_serial"] + 1
            kind, subtype = row["action_type"], row["action_subtype"]
            if kind == "Acquisition" or (
                kind == "First transfer" and subtype in ("Authorization", "Issuance")
            ):
                flows["in"] += quantity
            elif kind == "Transfer":
                flows["out"] += quantity
            elif kind == "Use":
                flows["used"] += quantity
            elif kind in ("Cancellation", "Voluntary Cancellation"):
                flows["cancelled"] += quantity
        expected = before + flows["in"] - flows["out"] - flows["used"] - flows["cancelled"]
        if expected != after:
            c9.append(
                {
                    "reason": "roll-forward-mismatch",
                    "party": party,
                    "holdings_start": before,
                    "holdings_end": after,
                    **flows,
                    "expected_end": expected,
                }
            )
    c10 = await _authorization_conformity(session, year, until_end, in_year)
    return {
        "year": year,
        "parties": parties,
        "checks": [
            _check("C6", c6),
            _check("C7", c7),
            _check("C8", c8),
            _check("C9", c9),
            _check("C10", c10),
        ],
    }


def _purpose(value: Any) -> Purpose | None:
    try:
        return Purpose(value)
    except ValueError:
        return None


def _timeframe(value: Any) -> tuple[int, int] | None:
    try:
        return parse_timeframe(value) if isinstance(value, str) else None
    except ValueError:
        return None


async def _authorization_conformity(
    session: AsyncSession, year: int, until_end: Sequence[Any], in_year: Sequence[Any]
) -> list[dict[str, Any]]:
    """C10 against each authorization's latest version dated in or before `year` (the terms the Party
    had set by then). Rows naming an authorization the read model does not hold (another registry's) are
    C2's concern and skipped here, as are terms a version leaves blank."""
    terms: dict[tuple[str, str], dict[str, Any]] = {}
    for party, authorization_id, table2 in (
        await session.execute(
            select(authorizations.c.party, authorizations.c.authorization_id, authorizations.c.table2)
            .where(authorizations.c.authorized_on <= date(year, 12, 31))
            .order_by(authorizations.c.authorized_on, authorizations.c.version)
        )
    ).all():
        terms[(party, authorization_id)] = table2  # later versions overwrite earlier ones
    periods: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for party, first, last in (
        await session.execute(select(ndc_periods.c.party, ndc_periods.c.first_year, ndc_periods.c.last_year))
    ).all():
        periods[party].append((first, last))

    findings: list[dict[str, Any]] = []
    # Quantity: everything the authorizing Party first transferred under it, up to the end of the year.
    transferred: dict[tuple[str, str], int] = defaultdict(int)
    for row in until_end:
        if row["action_type"] == "First transfer":
            transferred[(row["party"], row["authorization_id"])] += (
                row["last_serial"] - row["first_serial"] + 1
            )
    for key, units in sorted(transferred.items()):
        authorized = (terms.get(key) or {}).get("authorized_quantity")
        if isinstance(authorized, int | float) and units > authorized:
            findings.append(
                {
                    "reason": "over-authorized-quantity",
                    "party": key[0],
                    "authorization_id": key[1],
                    "authorized_quantity": authorized,
                    "first_transferred": units,
                }
            )
    for row in in_year:
        table2 = terms.get((row["first_transferring_party"], row["authorization_id"]))
        kind = row["action_type"]
        if table2 is not None:
            timeframe = _timeframe(table2.get("authorized_timeframe"))
            if kind == "First transfer" and timeframe and not timeframe[0] <= row["vintage"] <= timeframe[1]:
                findings.append(
                    {
                        "reason": "vintage-outside-timeframe",
                        "authorized_timeframe": table2["authorized_timeframe"],
                        "rows": [_block(row)],
                    }
                )
            purpose = _purpose(table2.get("purposes_for_authorization"))
            towards_ndc = kind == "Use" and row["ndc_use_year"] is not None
            for_oimp = row["purpose_oimp"] is not None and (
                kind in ("Use", "Cancellation")
                or (kind == "First transfer" and row["action_subtype"] == "Use or cancellation")
            )
            if purpose is not None and (
                (towards_ndc and not purpose.covers_ndc) or (for_oimp and not purpose.covers_oimp)
            ):
                findings.append(
                    {
                        "reason": "purpose-not-authorized",
                        "purposes_for_authorization": purpose.value,
                        "rows": [_block(row)],
                    }
                )
        user_periods = periods.get(row["party"], [])
        if (
            kind == "Use"
            and row["ndc_use_year"] is not None
            and user_periods
            and not any(first <= row["ndc_use_year"] <= last for first, last in user_periods)
        ):
            findings.append(
                {
                    "reason": "use-year-outside-ndc-period",
                    "ndc_use_year": row["ndc_use_year"],
                    "rows": [_block(row)],
                }
            )
    return findings


async def corresponding_adjustments(session: AsyncSession, party: str, year: int) -> dict[str, Any]:
    """Domain §7.1 para 8: additions = ITMOs first transferred by the Party whose mitigation outcomes
    occurred in `year` (vintage), subtractions = ITMOs the Party used towards its NDC for `year`."""
    rows = (
        (
            await session.execute(
                select(aef_actions)
                .where(
                    aef_actions.c.party == party,
                    or_(
                        (aef_actions.c.action_type == "First transfer") & (aef_actions.c.vintage == year),
                        (aef_actions.c.action_type == "Use") & (aef_actions.c.ndc_use_year == year),
                    ),
                )
                .order_by(aef_actions.c.action_at, aef_actions.c.id)
            )
        )
        .mappings()
        .all()
    )
    additions = [_block(row) for row in rows if row["action_type"] == "First transfer"]
    subtractions = [_block(row) | {"ndc_use_year": year} for row in rows if row["action_type"] == "Use"]
    return {
        "party": party,
        "year": year,
        "as_of": iso_instant(datetime.now(UTC)),
        "additions": _adjustment(additions),
        "subtractions": _adjustment(subtractions),
    }


def _adjustment(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """A side of the adjustment: its total in t CO2 eq, and per metric in that metric's own unit (para 9:
    a non-GHG NDC adjusts on the ITMOs of its metric, counted in the metric, not converted)."""
    by_metric: dict[tuple[str, str | None], int | float] = defaultdict(int)
    for block in blocks:
        if block["quantity_non_ghg_metric"] is None:
            by_metric["GHG", None] += block["quantity_tco2e"]
        else:
            by_metric["non-GHG", block["applicable_non_ghg_metric"]] += block["quantity_non_ghg_metric"]
    return {
        "quantity_tco2e": sum(block["quantity_tco2e"] for block in blocks),
        "by_metric": [
            {"metric": metric, "applicable_non_ghg_metric": unit, "quantity": quantity}
            for (metric, unit), quantity in sorted(
                by_metric.items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
        ],
        "blocks": blocks,
    }
