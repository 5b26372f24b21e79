"""kit.outbox on both backends: publish in the change's transaction, positions in commit order, the feed.

The key property (DESIGN §5): a reader that only ever asks for `position > last seen` never skips an
event, even when the transactions that wrote the events commit in another order than they inserted.
"""

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import func, select

from contracts.events import FeedEvent
from contracts.roles import Role
from kit.db import Database
from kit.outbox import Outbox
from services.transactions.app import create_app
from services.transactions.config import Settings
from services.transactions.models import metadata
from services.transactions.models import outbox as outbox_table
from tests.support.apps import client_for
from tests.support.tokens import TokenFactory

PRODUCER = "transactions"


@pytest.fixture
def url(make_database: Callable[[str], str]) -> str:
    return make_database("services.transactions")


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    # Enough connections for every concurrent writer of the race test to hold its own transaction.
    database = Database(url, pool_size=56, max_overflow=8)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def db(url: str) -> AsyncIterator[Database]:
    async with _database(url) as database:
        yield database


@pytest.fixture
def outbox(db: Database) -> Outbox:
    return Outbox(db, PRODUCER, metadata)


@pytest.fixture
async def pg_outbox(pg_database: Callable[[str], str]) -> AsyncIterator[Outbox]:
    """PostgreSQL only: where two write transactions can really overlap."""
    async with _database(pg_database("services.transactions")) as database:
        yield Outbox(database, PRODUCER, metadata)


async def _publish(outbox: Outbox, type: str = "test.happened", **data: object) -> uuid.UUID:
    async with outbox.db.transaction() as session:
        event = await outbox.publish(session, type, dict(data))
    return event.id


async def _drain(outbox: Outbox, after: int = 0) -> list[FeedEvent]:
    events: list[FeedEvent] = []
    while True:
        page = await outbox.read(after, limit=1000)
        if not page.items:
            return events
        events.extend(page.items)
        after = page.last_position


async def _row_id(db: Database, event_id: uuid.UUID) -> int:
    async with db.read() as session:
        return (
            await session.execute(select(outbox_table.c.id).where(outbox_table.c.event_id == str(event_id)))
        ).scalar_one()


async def test_event_reaches_the_feed_only_after_commit_and_relay(outbox: Outbox, backend: str) -> None:
    async with outbox.db.transaction() as session:
        event = await outbox.publish(session, "test.happened", {"n": 1}, party="GHA")
        assert (await outbox.read(0)).items == []  # not committed: a reader cannot see it
        if backend == "postgres":  # (on SQLite a relay would wait for this transaction's write lock)
            assert await outbox.relay() == 0  # the relay only ever sees committed events
    assert (await outbox.read(0)).items == []  # committed but not yet relayed: no position yet
    assert await outbox.relay() == 1
    page = await outbox.read(0)
    assert [e.id for e in page.items] == [event.id]
    served = page.items[0]
    assert served.position == 1
    assert page.last_position == 1
    assert (served.type, served.party, served.data, served.producer) == (
        "test.happened",
        "GHA",
        {"n": 1},
        PRODUCER,
    )
    assert served.time == event.time
    assert served.time.tzinfo is not None


async def test_rolled_back_event_never_appears(outbox: Outbox) -> None:
    with pytest.raises(RuntimeError):
        async with outbox.db.transaction() as session:
            await outbox.publish(session, "test.rolled_back", {})
            raise RuntimeError("the change failed")
    kept = await _publish(outbox, "test.kept")
    assert await outbox.relay() == 1
    assert [e.id for e in await _drain(outbox)] == [kept]
    async with outbox.db.read() as session:
        assert (await session.execute(select(func.count()).select_from(outbox_table))).scalar_one() == 1


async def test_relay_assigns_consecutive_positions(outbox: Outbox) -> None:
    ids = [await _publish(outbox, n=n) for n in range(5)]
    async with outbox.db.transaction() as session:  # several events in one transaction
        ids += [(await outbox.publish(session, "test.happened", {"n": n})).id for n in range(5, 8)]
    assert await outbox.relay() == 8
    assert await outbox.relay() == 0  # nothing twice
    events = await _drain(outbox)
    assert [e.id for e in events] == ids  # committed one after the other: insert order
    assert [e.position for e in events] == list(range(1, 9))

    more = [await _publish(outbox, n=n) for n in range(8, 11)]
    assert await outbox.relay() == 3
    later = await _drain(outbox, after=8)
    assert [e.id for e in later] == more
    assert [e.position for e in later] == [9, 10, 11]
    async with outbox.db.read() as session:
        unpositioned = select(func.count()).select_from(outbox_table).where(outbox_table.c.position.is_(None))
        assert (await session.execute(unpositioned)).scalar_one() == 0


async def test_relay_handles_more_than_one_batch(outbox: Outbox) -> None:
    async with outbox.db.transaction() as session:
        for n in range(1003):  # the relay works in batches of 1000
            await outbox.publish(session, "test.bulk", {"n": n})
    assert await outbox.relay() == 1003
    events = await _drain(outbox)
    assert [e.position for e in events] == list(range(1, 1004))
    assert [e.data["n"] for e in events] == list(range(1003))


async def test_concurrent_relays_never_give_a_position_twice(outbox: Outbox) -> None:
    ids = {await _publish(outbox, n=n) for n in range(40)}
    assigned = await asyncio.gather(*(outbox.relay() for _ in range(6)))
    assert sum(assigned) == 40
    events = await _drain(outbox)
    assert {e.id for e in events} == ids
    assert [e.position for e in events] == list(range(1, 41))


async def test_read_pages_and_type_filter(outbox: Outbox) -> None:
    kinds = ["a.created", "b.changed", "a.created", "c.gone", "b.changed", "a.created", "c.gone"]
    ids = [await _publish(outbox, kind, i=i) for i, kind in enumerate(kinds)]
    await outbox.relay()

    first = await outbox.read(0, limit=3)
    assert [e.position for e in first.items] == [1, 2, 3]
    assert first.last_position == 3
    second = await outbox.read(first.last_position, limit=3)
    assert [e.position for e in second.items] == [4, 5, 6]
    third = await outbox.read(second.last_position, limit=3)
    assert [e.position for e in third.items] == [7]
    assert [e.id for e in first.items + second.items + third.items] == ids
    end = await outbox.read(7, limit=3)
    assert end.items == [] and end.last_position == 7  # nothing new: the cursor stays

    only_a = await outbox.read(0, types=["a.created"])
    assert [e.position for e in only_a.items] == [1, 3, 6]
    assert only_a.last_position == 6
    a_or_c = await outbox.read(1, limit=2, types=["a.created", "c.gone"])
    assert [(e.position, e.type) for e in a_or_c.items] == [(3, "a.created"), (4, "c.gone")]
    assert (await outbox.read(0, types=["nothing.like.this"])).items == []


async def test_feed_endpoint(url: str, tokens: TokenFactory) -> None:
    app = create_app(Settings(database_url=url), token_verifier=tokens.verifier())
    async with client_for(app) as client:
        outbox: Outbox = app.state.outbox
        ids = []
        for n, kind in enumerate(["x.one", "x.two", "x.one", "x.two", "x.one"]):
            async with app.state.db.transaction() as session:
                ids.append(str((await outbox.publish(session, kind, {"n": n}, party="CHE")).id))

        assert (await client.get("/internal/v1/events")).status_code == 401
        party_token = tokens.headers(party="CHE", roles=[Role.PARTY_ADMIN])
        assert (await client.get("/internal/v1/events", headers=party_token)).status_code == 403
        client.headers.update(tokens.headers(party=None, roles=[Role.SECRETARIAT_ADMIN]))

        response = await client.get("/internal/v1/events")  # the endpoint relays before it reads
        assert response.status_code == 200
        body = response.json()
        assert [e["id"] for e in body["items"]] == ids
        assert [e["position"] for e in body["items"]] == [1, 2, 3, 4, 5]
        assert body["last_position"] == 5
        first = body["items"][0]
        assert first["producer"] == PRODUCER
        assert first["party"] == "CHE"
        assert first["data"] == {"n": 0}
        assert first["type"] == "x.one"

        response = await client.get("/internal/v1/events", params={"after": 2, "limit": 2})
        assert [e["position"] for e in response.json()["items"]] == [3, 4]
        assert response.json()["last_position"] == 4

        response = await client.get("/internal/v1/events", params={"after": 0, "type": "x.two"})
        assert [e["position"] for e in response.json()["items"]] == [2, 4]
        response = await client.get("/internal/v1/events", params=[("type", "x.two"), ("type", "x.one")])
        assert len(response.json()["items"]) == 5

        response = await client.get("/internal/v1/events", params={"after": 5})
        assert response.json() == {"items": [], "last_position": 5}

        for bad in ({"after": -1}, {"limit": 0}, {"limit": 1001}, {"after": "x"}):
            response = await client.get("/internal/v1/events", params=bad)
            assert response.status_code == 422, bad
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_background_relay_publishes_without_an_explicit_relay(url: str, tokens: TokenFactory) -> None:
    app = create_app(Settings(database_url=url), token_verifier=tokens.verifier())
    async with client_for(app):
        outbox: Outbox = app.state.outbox
        quiet = await _publish(outbox, "test.unannounced")  # nobody calls notify(): the timer must do it
        loud = await _publish(outbox, "test.announced")
        outbox.notify()

        async def both_served() -> list[FeedEvent]:
            while True:
                events = await _drain(outbox)  # read() never relays by itself
                if len(events) >= 2:
                    return events
                await asyncio.sleep(0.02)

        events = await asyncio.wait_for(both_served(), timeout=5)
        assert [e.id for e in events] == [quiet, loud]
        assert [e.position for e in events] == [1, 2]
    assert outbox._task is None  # the lifespan stopped the relay


@pytest.mark.postgres  # SQLite writers serialize (BEGIN IMMEDIATE): two write transactions cannot overlap
async def test_late_commit_gets_a_later_position(pg_outbox: Outbox) -> None:
    """Why positions come from the relay: the event inserted first but committed last is not skipped."""
    outbox = pg_outbox
    db = outbox.db
    async with db.transaction() as first:
        early = await outbox.publish(first, "test.inserted_first", {})
        async with db.transaction() as second:
            late = await outbox.publish(second, "test.inserted_second", {})
        # `second` committed, `first` is still open.
        assert await outbox.relay() == 1
        page = await outbox.read(0)
        assert [e.id for e in page.items] == [late.id]
        cursor = page.last_position
    # `first` commits now, after a reader moved its cursor past the event committed before it.
    assert await outbox.relay() == 1
    page = await outbox.read(cursor)
    assert [e.id for e in page.items] == [early.id]
    assert page.items[0].position == cursor + 1
    # The insert-time order is the other way round: a feed keyed on it would have skipped `early`.
    assert await _row_id(db, early.id) < await _row_id(db, late.id)


async def _warm_pool(db: Database, connections: int) -> None:
    if db.is_sqlite:
        return
    held = asyncio.Event()

    async def hold() -> None:
        async with db.engine.connect():
            await held.wait()

    holders = [asyncio.create_task(hold()) for _ in range(connections)]
    for _ in range(2000):  # all connected at once, so the pool keeps them all afterwards
        if db.engine.pool.checkedout() >= connections:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.005)
    held.set()
    await asyncio.gather(*holders)


@pytest.mark.parametrize("writers", [48])
async def test_concurrent_writers_never_make_a_reader_skip(
    outbox: Outbox, backend: str, writers: int
) -> None:
    """Writers commit out of insert order while a reader relays and reads; it sees each event once."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    published: dict[uuid.UUID, int] = {}
    inserted_order: list[uuid.UUID] = []

    async def writer(n: int) -> None:
        await asyncio.sleep(rng.uniform(0, 0.25))  # stagger the starts
        async with outbox.db.transaction() as session:
            event = await outbox.publish(session, "test.concurrent", {"n": n})
            inserted_order.append(event.id)
            await asyncio.sleep(rng.uniform(0, 0.02))  # commit after a random delay
        published[event.id] = n

    await _warm_pool(outbox.db, writers + 2)  # connecting must not dominate the timing
    tasks = [asyncio.create_task(writer(n)) for n in range(writers)]
    seen: list[FeedEvent] = []
    read_while_writing = 0
    cursor = 0
    while True:
        writers_done = all(task.done() for task in tasks)  # before the relay: it must then catch all
        await outbox.relay()
        page = await outbox.read(after=cursor, limit=10)
        if page.items:
            assert page.items[0].position > cursor
            seen.extend(page.items)
            cursor = page.items[-1].position
            if not writers_done:
                read_while_writing += len(page.items)
        elif writers_done:
            break
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)  # surface a writer's exception

    assert len(published) == writers
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)), f"an event was served twice (seed {seed})"
    assert set(ids) == set(published), (
        f"the reader skipped {len(set(published) - set(ids))} events (seed {seed})"
    )
    positions = [e.position for e in seen]
    assert positions == list(range(1, writers + 1))  # strictly increasing, no gap
    assert all(e.data == {"n": published[e.id]} for e in seen)
    assert read_while_writing > 0, "the reader never overlapped the writers: the test proved nothing"
    if backend == "postgres":
        # The transactions really did commit out of insert order (else this test proves little).
        by_position = [e.id for e in seen]
        assert by_position != inserted_order
