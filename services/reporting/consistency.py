"""Cross-Party consistency checks (domain §7.3 C6–C9) and the corresponding-adjustments view (§7.1).

Both read the read model only. Findings name the rows behind them (Party, action, serial range) so a
Party can find what to correct; codes are stable (`C6` … `C9`, with a `reason` slug per finding).
"""

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.reporting.aef import holdings_at, iso_instant, quantities, year_bounds
from services.reporting.models import aef_actions, movements

__all__ = ["CHECKS", "consistency", "corresponding_adjustments"]

CHECKS: dict[str, str] = {
    "C6": "No serial range first transferred twice (unique identifiers globally unique)",
    "C7": "Every First transfer/Transfer by A to B matched by an Acquisition by B from A with the same serials",
    "C8": "No ITMO used or cancelled more than once across all Parties",
    "C9": "Holdings roll forward: H(Y-1) + in - out - used - cancelled = H(Y), per Party",
}

_CONSUMING = ("Use", "Cancellation", "Voluntary Cancellation")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_consumption(row: Any) -> bool:
    return row["action_type"] in _CONSUMING or (
        row["action_type"] == "First transfer" and row["action_subtype"] == "Use or cancellation"
    )


def _block(row: Any) -> dict[str, Any]:
    tco2e, _ = quantities(row)
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
        "quantity_tco2e": tco2e,
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
        before = sum(h["quantity_tco2e"] for h in await holdings_at(session, party, start))
        after = sum(h["quantity_tco2e"] for h in await holdings_at(session, party, end))
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
    return {
        "year": year,
        "parties": parties,
        "checks": [_check("C6", c6), _check("C7", c7), _check("C8", c8), _check("C9", c9)],
    }


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
        "additions": {"quantity_tco2e": sum(b["quantity_tco2e"] for b in additions), "blocks": additions},
        "subtractions": {
            "quantity_tco2e": sum(b["quantity_tco2e"] for b in subtractions),
            "blocks": subtractions,
        },
    }
