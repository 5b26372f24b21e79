"""Transactional outbox and the ordered pull feed of DESIGN §5.

A producer writes its events with `publish()` inside the same DB transaction as the change. Feed
positions are assigned later, by `relay()`, in a transaction of its own that serialises on the single
`outbox_relay` row: only committed events are visible to it, so positions follow commit order. An event
whose transaction commits late gets a later position than everything already served, and a reader that
only ever asks for `position > last seen` never skips one (a sequence read at insert time would).
"""

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from contracts.events import EventEnvelope, EventPage, FeedEvent
from contracts.roles import Role
from kit.auth import require_roles
from kit.db import Database
from kit.metrics import EVENTS_PUBLISHED, FEED_LAST_POSITION

__all__ = ["Outbox", "feed_router", "outbox_tables"]

log = structlog.get_logger(__name__)
_RELAY_BATCH = 1000


def outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The `outbox` and `outbox_relay` tables, added to a service's metadata (and its migrations)."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("type", String(100), nullable=False),
        Column("schema_version", Integer, nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("party", String(16), nullable=True),
        Column("payload", JSON, nullable=False),
        Column("position", BigInteger, nullable=True, unique=True),
        Index(
            "ix_outbox_unpositioned",
            "id",
            postgresql_where="position IS NULL",
            sqlite_where="position IS NULL",
        ),
    )
    relay = Table(
        "outbox_relay",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("last_position", BigInteger, nullable=False),
    )
    return outbox, relay


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Outbox:
    """Publishing, relaying and reading the events of one producer."""

    def __init__(
        self,
        db: Database,
        producer: str,
        metadata: MetaData | None = None,
        *,
        outbox: Table | None = None,
        relay: Table | None = None,
    ) -> None:
        if outbox is None or relay is None:
            assert metadata is not None, "give the service metadata or both tables"
            outbox, relay = metadata.tables["outbox"], metadata.tables["outbox_relay"]
        self.db = db
        self.producer = producer
        self.outbox = outbox
        self.relay_table = relay
        self._insert = insert(outbox)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def publish(
        self,
        session: AsyncSession | AsyncConnection,
        type: str,
        data: dict[str, Any],
        *,
        party: str | None = None,
        schema_version: int = 1,
    ) -> EventEnvelope:
        """Record an event in the caller's transaction; it reaches the feed once that commits."""
        event = EventEnvelope(
            id=uuid.uuid4(),
            type=type,
            schema_version=schema_version,
            time=datetime.now(UTC),
            producer=self.producer,
            party=party,
            data=data,
        )
        await session.execute(
            self._insert,
            {
                "event_id": str(event.id),
                "type": event.type,
                "schema_version": event.schema_version,
                "occurred_at": event.time,
                "party": event.party,
                "payload": event.data,
            },
        )
        return event

    def notify(self) -> None:
        """Tell the relay loop that something committed (call after the publishing transaction)."""
        self._wake.set()

    async def relay(self) -> int:
        """Give feed positions to committed events, in commit order; returns how many got one."""
        assigned = 0
        while True:
            # A cheap look first (the partial index), so an idle feed never takes the write lock.
            async with self.db.read() as session:
                waiting = (
                    await session.execute(
                        select(self.outbox.c.id).where(self.outbox.c.position.is_(None)).limit(1)
                    )
                ).first()
            if waiting is None:
                return assigned
            async with self.db.connect() as connection:
                # The FOR UPDATE row lock (BEGIN IMMEDIATE on SQLite) makes relays run one at a time.
                state = (
                    await connection.execute(
                        select(self.relay_table.c.last_position)
                        .where(self.relay_table.c.id == 1)
                        .with_for_update()
                    )
                ).scalar_one_or_none()
                if state is None:
                    await connection.execute(insert(self.relay_table).values(id=1, last_position=0))
                    state = 0
                pending = (
                    (
                        await connection.execute(
                            select(self.outbox.c.id)
                            .where(self.outbox.c.position.is_(None))
                            .order_by(self.outbox.c.id)
                            .limit(_RELAY_BATCH)
                        )
                    )
                    .scalars()
                    .all()
                )
                if not pending:
                    return assigned
                await connection.execute(
                    update(self.outbox)
                    .where(self.outbox.c.id == bindparam("row_id"))
                    .values(position=bindparam("new_position")),
                    [
                        {"row_id": row_id, "new_position": state + offset}
                        for offset, row_id in enumerate(pending, 1)
                    ],
                )
                last = state + len(pending)
                await connection.execute(
                    update(self.relay_table).where(self.relay_table.c.id == 1).values(last_position=last)
                )
            assigned += len(pending)
            EVENTS_PUBLISHED.labels(self.producer).inc(len(pending))
            FEED_LAST_POSITION.labels(self.producer).set(last)
            if len(pending) < _RELAY_BATCH:
                return assigned

    async def read(self, after: int, limit: int = 100, types: list[str] | None = None) -> EventPage:
        """Events with `position > after`, in position order."""
        query = (
            select(self.outbox)
            .where(self.outbox.c.position > after)
            .order_by(self.outbox.c.position)
            .limit(limit)
        )
        if types:
            query = query.where(self.outbox.c.type.in_(types))
        async with self.db.read() as session:
            rows = (await session.execute(query)).mappings().all()
        items = [
            FeedEvent(
                id=uuid.UUID(row["event_id"]),
                type=row["type"],
                schema_version=row["schema_version"],
                time=_as_utc(row["occurred_at"]),
                producer=self.producer,
                party=row["party"],
                data=row["payload"],
                position=row["position"],
            )
            for row in rows
        ]
        return EventPage(items=items, last_position=items[-1].position if items else after)

    async def _run(self, interval: float) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that lands in the same
            # loop turn as notify(), and stop() then waits for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.relay()
            except Exception:  # the loop must outlive a transient DB failure; the next pass retries
                log.exception("outbox_relay_failed", producer=self.producer)
                await asyncio.sleep(interval)

    def start(self, interval: float = 0.5) -> None:
        """Run the relay in the background (app startup)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(interval), name=f"outbox-relay-{self.producer}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def feed_router(outbox_of: str = "outbox") -> APIRouter:
    """`GET /internal/v1/events?after=N`: the producer's feed, never routed by the gateway.

    Events carry every Party's data, confidential fields included, so the network policy is not the only
    guard: the caller needs a service token (another service consuming the feed) or `secretariat_admin`.
    """
    router = APIRouter(
        prefix="/internal/v1",
        tags=["internal"],
        dependencies=[require_roles(Role.SERVICE, Role.SECRETARIAT_ADMIN)],
    )

    @router.get("/events", response_model=EventPage)
    async def read_feed(
        request: Request,
        after: Annotated[int, Query(ge=0, description="Last position the consumer applied")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        type: Annotated[list[str] | None, Query(description="Only these event types")] = None,
    ) -> EventPage:
        """Events after a position, in commit order."""
        outbox: Outbox = getattr(request.app.state, outbox_of)
        await outbox.relay()
        return await outbox.read(after, limit, type)

    return router
