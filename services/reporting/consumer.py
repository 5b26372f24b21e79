"""The read model's consumer: pulls each producer's feed and applies its events (DESIGN §5).

Per page of a feed, one write transaction: it locks the feed's cursor row, skips every event at or below
the cursor and every event id already in the inbox, applies the others, records their ids in the inbox
and moves the cursor to the page's last position. A crash before commit changes nothing; a replay (the
same page again, a cursor reset, two consumers at once) finds the ids in the inbox and applies nothing
twice. Each applied event also gives its items of the per-Party event feed (`feed.derive`), appended in
that same transaction (`feed.append`), so the feed follows the read model exactly. The background loop
polls every `interval` seconds; `catch_up()` drains every feed now (tests).
Report endpoints do not catch up first: a producer that is down never makes the AEF unavailable.
"""

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import EventPage, FeedEvent
from kit.db import Database
from kit.errors import ServiceUnavailable
from kit.service_client import Peers
from services.reporting.models import (
    aef_actions,
    authorizations,
    cooperative_approaches,
    entities,
    feed_cursors,
    inbox,
    movements,
    ndc_periods,
    sections,
)

__all__ = ["FEEDS", "Consumer", "merge_runs", "same_run"]

log = structlog.get_logger(__name__)

#: The producers whose feeds the read model follows.
FEEDS: tuple[str, ...] = ("party_sections", "ars", "transactions")
_PAGE = 500

_BLOCK_KEYS = (
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
)


def _utc(value: str | datetime) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def block_values(block: dict[str, Any]) -> dict[str, Any]:
    """The `_block_columns` of a block as the ledger serves it (contracts.transactions.Block)."""
    underlying = block.get("underlying") or {}
    return {
        **{key: block.get(key) for key in _BLOCK_KEYS},
        "first_serial": int(block["first"]),
        "last_serial": int(block["last"]),
        "underlying_registry_id": underlying.get("registry_id"),
        "underlying_first": underlying.get("first_unit_id"),
        "underlying_last": underlying.get("last_unit_id"),
    }


def same_run(before: dict[str, Any], after: dict[str, Any], keys: Iterable[str]) -> bool:
    if any(before[key] != after[key] for key in keys):
        return False
    if before["last_serial"] + 1 != after["first_serial"]:
        return False
    if before["underlying_registry_id"] != after["underlying_registry_id"]:
        return False
    if before["underlying_first"] is None and after["underlying_first"] is None:
        return True
    return (
        before["underlying_last"] is not None
        and after["underlying_first"] is not None
        and before["underlying_last"] + 1 == after["underlying_first"]
    )


def merge_runs(rows: Iterable[dict[str, Any]], keys: Iterable[str]) -> list[dict[str, Any]]:
    """Maximal contiguous serial runs (domain §5.4): rows sorted by series and serial, then adjacent rows
    with equal `keys` and contiguous serials (and underlying ranges) merged."""
    keys = tuple(keys)
    ordered = sorted(rows, key=lambda r: (r["ca_id"], r["origin_registry_id"], r["first_serial"]))
    merged: list[dict[str, Any]] = []
    for row in ordered:
        if merged and same_run(merged[-1], row, keys):
            merged[-1]["last_serial"] = row["last_serial"]
            if row["underlying_last"] is not None:
                merged[-1]["underlying_last"] = row["underlying_last"]
            continue
        merged.append(dict(row))
    return merged


_SIDE_KEYS = (
    "transferring_party_id",
    "acquiring_party_id",
    "purpose_oimp",
    "using_cancelling_party_id",
    "using_cancelling_entity_id",
    "ndc_use_year",
)


class Consumer:
    """Applies the producers' feeds to the read model; `start()`/`stop()` run it in the background."""

    def __init__(
        self,
        db: Database,
        peers: Peers,
        *,
        interval: float = 0.3,
        feeds: tuple[str, ...] = FEEDS,
        on_feed: Callable[[], None] | None = None,
    ):
        self.db = db
        self.peers = peers
        self.interval = interval
        self.feeds = feeds
        #: Called after a page that appended feed items commits (wakes the webhook worker).
        self.on_feed = on_feed
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # ---- pulling --------------------------------------------------------------------------------------

    async def cursor(self, producer: str) -> int:
        async with self.db.read() as session:
            value = (
                await session.execute(
                    select(feed_cursors.c.position).where(feed_cursors.c.producer == producer)
                )
            ).scalar_one_or_none()
        return int(value or 0)

    async def fetch(self, producer: str, after: int, limit: int = _PAGE) -> EventPage:
        response = await self.peers.request(
            producer, "GET", "/internal/v1/events", params={"after": after, "limit": limit}
        )
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"The {producer} feed answered {response.status_code}.", slug="upstream-unavailable"
            )
        return EventPage.model_validate(response.json())

    async def catch_up(self) -> int:
        """Drain every feed to its end; returns how many events were applied."""
        applied = 0
        async with self._lock:
            for producer in self.feeds:
                while True:
                    page = await self.fetch(producer, await self.cursor(producer))
                    if not page.items:
                        break
                    applied += await self.apply_page(producer, page)
                    if len(page.items) < _PAGE:
                        break
            # A submission whose `aef.submission.created` was not appended (a crash right after it
            # committed) gets it now.
            from services.reporting.feed import announce_submissions

            if await announce_submissions(self.db, datetime.now(UTC)) and self.on_feed is not None:
                self.on_feed()
        return applied

    # ---- applying -------------------------------------------------------------------------------------

    async def apply_page(self, producer: str, page: EventPage) -> int:
        """Apply a page in one transaction with the cursor move; events seen before are skipped."""
        if not page.items:
            return 0
        # Imported here: the feed builds on aef.py and public.py, which import this module's run helpers.
        from services.reporting import feed

        applied = 0
        appended: list[tuple[str, int]] = []
        async with self.db.transaction() as session:
            query = select(feed_cursors.c.position).where(feed_cursors.c.producer == producer)
            if self.db.dialect == "postgresql":
                query = query.with_for_update()
            cursor = (await session.execute(query)).scalar_one_or_none()
            if cursor is None:
                await session.execute(insert(feed_cursors).values(producer=producer, position=0))
                cursor = 0
            fresh = [event for event in page.items if event.position > cursor]
            if not fresh:
                return 0
            seen = set(
                (
                    await session.execute(
                        select(inbox.c.event_id).where(inbox.c.event_id.in_([str(e.id) for e in fresh]))
                    )
                ).scalars()
            )
            now = datetime.now(UTC)
            items: list[Any] = []
            applied_rows: list[dict[str, Any]] = []
            for event in fresh:
                if str(event.id) in seen:
                    continue
                seen.add(str(event.id))
                await self._apply(session, event)
                # After `_apply`: a section event's new designations already hold for its own items.
                items.extend(await feed.derive(session, event))
                applied_rows.append(
                    {
                        "event_id": str(event.id),
                        "producer": producer,
                        "position": event.position,
                        "type": event.type,
                        "applied_at": now,
                    }
                )
            if applied_rows:  # one statement for the page's inbox rows, in the same transaction
                await session.execute(insert(inbox), applied_rows)
            applied = len(applied_rows)
            # In this transaction, which holds the producer's cursor lock: see `feed.append`.
            appended = await feed.append(session, items)
            await session.execute(
                update(feed_cursors)
                .where(feed_cursors.c.producer == producer)
                .values(position=max(cursor, fresh[-1].position))
            )
        if appended and self.on_feed is not None:
            self.on_feed()
        return applied

    async def _apply(self, session: AsyncSession, event: FeedEvent) -> None:
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            await handler(session, event)

    # ---- background -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                # Sleep first: at start-up the gateway (our token) may not be serving yet.
                await asyncio.sleep(self.interval)
                await self.catch_up()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a peer down or a transient DB failure: retry with a backoff
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.info("reporting_consumer_retry", error=type(exc).__name__, failures=failures)
                await asyncio.sleep(min(5.0, self.interval * 2 ** min(failures, 5)))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reporting-consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# ---- handlers: one per event type that changes the read model -------------------------------------------


async def _transaction_completed(session: AsyncSession, event: FeedEvent) -> None:
    data = event.data
    at = _utc(data["completed_at"])
    blocks = [block_values(block) for block in data.get("blocks") or []]
    registry_of = {
        data.get("from_party"): data.get("from_registry_id"),
        data.get("to_party"): data.get("to_registry_id"),
    }
    if blocks:
        await session.execute(
            insert(movements),
            [
                {
                    **values,
                    "transaction_id": data["transaction_id"],
                    "moved_at": at,
                    "party": block["party"],
                    "registry_id": registry_of.get(block["party"]),
                    "state": block["state"],
                }
                for block, values in zip(data["blocks"], blocks, strict=True)
            ],
        )
    rows: list[dict[str, Any]] = []
    for side in data.get("actions") or []:
        common = {
            "transaction_id": data["transaction_id"],
            "party": side["party"],
            "registry_id": side["registry_id"],
            "action_at": at,
            "action_type": side["action_type"],
            "action_subtype": side.get("action_subtype"),
            **{key: side.get(key) for key in _SIDE_KEYS},
        }
        rows.extend(common | run for run in merge_runs(blocks, _BLOCK_KEYS))
    if rows:
        await session.execute(insert(aef_actions), rows)


async def _authorization(session: AsyncSession, event: FeedEvent) -> None:
    data = event.data
    key = {
        "party": data["party"],
        "authorization_id": data["authorization_id"],
        "version": int(data["version"]),
    }
    await session.execute(
        delete(authorizations).where(
            *(getattr(authorizations.c, column) == value for column, value in key.items())
        )
    )
    await session.execute(
        insert(authorizations).values(
            **key,
            authorized_on=date.fromisoformat(str(data["date"])[:10]),
            status=data.get("status") or "active",
            table2=data["table2"],
        )
    )


async def _entity_authorized(session: AsyncSession, event: FeedEvent) -> None:
    data = event.data
    party = data.get("party") or event.party
    await session.execute(
        delete(entities).where(entities.c.party == party, entities.c.entity_id == data["entity_id"])
    )
    await session.execute(
        insert(entities).values(party=party, entity_id=data["entity_id"], recorded_at=event.time, data=data)
    )


async def _ndc_periods_set(session: AsyncSession, event: FeedEvent) -> None:
    party = event.data.get("party") or event.party
    await session.execute(delete(ndc_periods).where(ndc_periods.c.party == party))
    periods = event.data.get("ndc_periods") or []
    if periods:
        await session.execute(
            insert(ndc_periods),
            [{"party": party, "first_year": p["first_year"], "last_year": p["last_year"]} for p in periods],
        )


async def _section(session: AsyncSession, event: FeedEvent) -> None:
    data = event.data
    party = data.get("party") or event.party
    fields = [d["field"] for d in (data.get("settings") or {}).get("confidential_fields") or []]
    await session.execute(delete(sections).where(sections.c.party == party))
    await session.execute(
        insert(sections).values(
            party=party, registry_id=data["registry_id"], status=data["status"], confidential_fields=fields
        )
    )


async def _cooperative_approach(session: AsyncSession, event: FeedEvent) -> None:
    data = event.data
    await session.execute(
        delete(cooperative_approaches).where(cooperative_approaches.c.ca_id == data["ca_id"])
    )
    await session.execute(insert(cooperative_approaches).values(ca_id=data["ca_id"], data=data))


_SECTION_EVENTS = (
    "party_section.requested",
    "party_section.opened",
    "party_section.suspended",
    "party_section.reactivated",
    "party_section.closing",
    "party_section.closed",
    "party_section.settings_changed",
)

_HANDLERS = {
    **dict.fromkeys(_SECTION_EVENTS, _section),
    "cooperative_approach.registered": _cooperative_approach,
    "transaction.completed": _transaction_completed,
    "authorization.created": _authorization,
    "authorization.versioned": _authorization,
    "authorization.revoked": _authorization,
    "entity.authorized": _entity_authorized,
    "ndc_periods.set": _ndc_periods_set,
}
