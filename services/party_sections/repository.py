"""Queries of the party_sections service (SQLAlchemy Core on the tables of `models`).

Functions take the caller's session: the use cases in `service` own the transaction. Rows come back as
read-only mappings; turning them into wire models is the service's job. Lists are keyset queries that
fetch `limit + 1` rows so `kit.pagination.page_of` can tell whether another page exists.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.party_sections.models import (
    accounts,
    audit_log,
    ca_participants,
    cooperative_approaches,
    entities,
    ndc_periods,
    sections,
)

__all__ = [
    "account",
    "accounts_page",
    "add_audit",
    "ca_participants_of",
    "cooperative_approach",
    "cooperative_approaches_page",
    "entities_page",
    "entity",
    "insert_accounts",
    "insert_cooperative_approach",
    "insert_entity",
    "insert_section",
    "last_account_number",
    "ndc_periods_of",
    "open_accounts_of",
    "replace_ndc_periods",
    "section",
    "section_accounts",
    "section_history_page",
    "sections_page",
    "update_account",
    "update_section",
]

# ---- sections --------------------------------------------------------------------------------------------


async def section(session: AsyncSession, party: str, *, for_update: bool = False) -> RowMapping | None:
    """The section of `party`; `for_update` locks it (PostgreSQL) so writes to one section queue."""
    query = select(sections).where(sections.c.party == party)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).mappings().first()


async def insert_section(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(sections).values(**values))


async def update_section(session: AsyncSession, party: str, values: dict[str, Any]) -> None:
    await session.execute(update(sections).where(sections.c.party == party).values(**values))


async def sections_page(
    session: AsyncSession,
    *,
    parties: frozenset[str] | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> Sequence[RowMapping]:
    """Sections in Party order; `parties` None means every Party."""
    query = select(sections).order_by(sections.c.party).limit(limit + 1)
    if parties is not None:
        query = query.where(sections.c.party.in_(sorted(parties)))
    if status is not None:
        query = query.where(sections.c.status == status)
    if after is not None:
        query = query.where(sections.c.party > after)
    return (await session.execute(query)).mappings().all()


# ---- audit -----------------------------------------------------------------------------------------------


async def add_audit(
    session: AsyncSession,
    *,
    party: str | None,
    subject: str,
    action: str,
    actor: str,
    at: datetime,
    reason: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(audit_log).values(
            party=party,
            subject=subject,
            action=action,
            actor=actor,
            at=at,
            reason=reason,
            from_status=from_status,
            to_status=to_status,
            details=details,
        )
    )


async def section_history_page(
    session: AsyncSession, party: str, *, after: int | None, limit: int
) -> Sequence[RowMapping]:
    """The section's status changes (its request and every move), oldest first."""
    query = (
        select(audit_log)
        .where(
            audit_log.c.party == party,
            audit_log.c.subject == "section",
            audit_log.c.to_status.is_not(None),
        )
        .order_by(audit_log.c.id)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(audit_log.c.id > after)
    return (await session.execute(query)).mappings().all()


# ---- accounts --------------------------------------------------------------------------------------------


async def account(session: AsyncSession, account_id: str, *, for_update: bool = False) -> RowMapping | None:
    query = select(accounts).where(accounts.c.account_id == account_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).mappings().first()


async def insert_accounts(session: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    await session.execute(insert(accounts), list(rows))


async def update_account(session: AsyncSession, account_id: str, values: dict[str, Any]) -> None:
    await session.execute(update(accounts).where(accounts.c.account_id == account_id).values(**values))


async def last_account_number(session: AsyncSession, party: str, type_code: int) -> int:
    """The highest `n` used for this Party and type (0 when none)."""
    query = select(func.max(accounts.c.n)).where(accounts.c.party == party, accounts.c.type_code == type_code)
    return int((await session.execute(query)).scalar_one_or_none() or 0)


async def accounts_page(
    session: AsyncSession, party: str, *, after: tuple[int, int] | None, limit: int
) -> Sequence[RowMapping]:
    """The Party's accounts by type code, then number."""
    query = (
        select(accounts)
        .where(accounts.c.party == party)
        .order_by(accounts.c.type_code, accounts.c.n)
        .limit(limit + 1)
    )
    if after is not None:
        type_code, n = after
        query = query.where(
            or_(accounts.c.type_code > type_code, and_(accounts.c.type_code == type_code, accounts.c.n > n))
        )
    return (await session.execute(query)).mappings().all()


async def section_accounts(session: AsyncSession, party: str, *, type: str | None) -> Sequence[RowMapping]:
    query = select(accounts).where(accounts.c.party == party).order_by(accounts.c.type_code, accounts.c.n)
    if type is not None:
        query = query.where(accounts.c.type == type)
    return (await session.execute(query)).mappings().all()


async def open_accounts_of(session: AsyncSession, party: str) -> Sequence[RowMapping]:
    """The Party's accounts that are not closed yet."""
    query = (
        select(accounts)
        .where(accounts.c.party == party, accounts.c.status != "closed")
        .order_by(accounts.c.type_code, accounts.c.n)
    )
    return (await session.execute(query)).mappings().all()


# ---- cooperative approaches ------------------------------------------------------------------------------


async def cooperative_approach(session: AsyncSession, ca_id: str) -> RowMapping | None:
    query = select(cooperative_approaches).where(cooperative_approaches.c.ca_id == ca_id)
    return (await session.execute(query)).mappings().first()


async def insert_cooperative_approach(
    session: AsyncSession, values: dict[str, Any], participants: Iterable[str]
) -> None:
    await session.execute(insert(cooperative_approaches).values(**values))
    await session.execute(
        insert(ca_participants), [{"ca_id": values["ca_id"], "party": party} for party in participants]
    )


async def ca_participants_of(session: AsyncSession, ca_ids: Iterable[str]) -> dict[str, list[str]]:
    """Participants of each cooperative approach, sorted."""
    ids = sorted(set(ca_ids))
    found: dict[str, list[str]] = {ca_id: [] for ca_id in ids}
    if not ids:
        return found
    query = (
        select(ca_participants.c.ca_id, ca_participants.c.party)
        .where(ca_participants.c.ca_id.in_(ids))
        .order_by(ca_participants.c.ca_id, ca_participants.c.party)
    )
    for ca_id, party in (await session.execute(query)).all():
        found[ca_id].append(party)
    return found


async def cooperative_approaches_page(
    session: AsyncSession, *, after: str | None, limit: int
) -> Sequence[RowMapping]:
    query = select(cooperative_approaches).order_by(cooperative_approaches.c.ca_id).limit(limit + 1)
    if after is not None:
        query = query.where(cooperative_approaches.c.ca_id > after)
    return (await session.execute(query)).mappings().all()


# ---- authorized entities ---------------------------------------------------------------------------------


async def entity(session: AsyncSession, party: str, entity_id: str) -> RowMapping | None:
    query = select(entities).where(entities.c.party == party, entities.c.entity_id == entity_id)
    return (await session.execute(query)).mappings().first()


async def insert_entity(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(entities).values(**values))


async def entities_page(
    session: AsyncSession, party: str, *, after: str | None, limit: int
) -> Sequence[RowMapping]:
    query = select(entities).where(entities.c.party == party).order_by(entities.c.entity_id).limit(limit + 1)
    if after is not None:
        query = query.where(entities.c.entity_id > after)
    return (await session.execute(query)).mappings().all()


# ---- NDC periods -----------------------------------------------------------------------------------------


async def ndc_periods_of(session: AsyncSession, party: str) -> list[tuple[int, int]]:
    query = (
        select(ndc_periods.c.first_year, ndc_periods.c.last_year)
        .where(ndc_periods.c.party == party)
        .order_by(ndc_periods.c.first_year)
    )
    return [(first, last) for first, last in (await session.execute(query)).all()]


async def replace_ndc_periods(session: AsyncSession, party: str, periods: Iterable[tuple[int, int]]) -> None:
    await session.execute(delete(ndc_periods).where(ndc_periods.c.party == party))
    rows = [{"party": party, "first_year": first, "last_year": last} for first, last in periods]
    if rows:
        await session.execute(insert(ndc_periods), rows)
