"""kit.db on both backends: rollback on error, serialized SQLite writers, readers that never wait, ping."""

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, func, insert, select, text, update

from kit.db import Database
from kit.errors import install_problem_handlers
from tests.support.databases import DatabaseFactory

_scratch = MetaData()
counter = Table(
    "test_counter",
    _scratch,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)


async def _open(url: str) -> Database:
    database = Database(url, pool_size=5, max_overflow=20)
    async with database.engine.begin() as connection:
        await connection.run_sync(_scratch.create_all)
    async with database.transaction() as session:
        await session.execute(insert(counter).values(id=1, value=0))
    return database


@pytest.fixture
async def db(make_database: Callable[[str], str]) -> AsyncIterator[Database]:
    """Both backends."""
    database = await _open(make_database("services.transactions"))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def sqlite_db(database_factory: DatabaseFactory, tmp_path: Path) -> AsyncIterator[Database]:
    """SQLite only, for the guarantees that come from SQLite's single writer and WAL."""
    database = await _open(database_factory.sqlite("services.transactions", tmp_path))
    try:
        yield database
    finally:
        await database.dispose()


async def _value(db: Database) -> int:
    async with db.read() as session:
        return (await session.execute(select(counter.c.value).where(counter.c.id == 1))).scalar_one()


async def _rows(db: Database) -> int:
    async with db.read() as session:
        return (await session.execute(select(func.count()).select_from(counter))).scalar_one()


async def test_transaction_commits_on_success(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(insert(counter).values(id=2, value=7))
    assert await _rows(db) == 2


async def test_transaction_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as session:
            await session.execute(insert(counter).values(id=2, value=7))
            await session.execute(update(counter).where(counter.c.id == 1).values(value=99))
            raise RuntimeError("boom")
    assert await _rows(db) == 1
    assert await _value(db) == 0


async def test_connect_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with db.connect() as connection:
            await connection.execute(insert(counter).values(id=3, value=1))
            raise RuntimeError("boom")
    assert await _rows(db) == 1


async def test_ping(db: Database) -> None:
    await db.ping()


async def test_dialect_matches_backend(db: Database, backend: str) -> None:
    assert db.dialect == ("sqlite" if backend == "sqlite" else "postgresql")
    assert db.is_sqlite is (backend == "sqlite")


async def test_sqlite_concurrent_read_modify_write_loses_nothing(sqlite_db: Database) -> None:
    """BEGIN IMMEDIATE: writers queue on the lock, none fails with "database is locked", none is lost.

    (On PostgreSQL a plain read-modify-write needs FOR UPDATE; that is the caller's business.)
    """
    db = sqlite_db

    async def bump() -> None:
        async with db.transaction() as session:
            current = (await session.execute(select(counter.c.value).where(counter.c.id == 1))).scalar_one()
            await asyncio.sleep(random.uniform(0, 0.003))  # let the others try to get in between
            await session.execute(update(counter).where(counter.c.id == 1).values(value=current + 1))

    results = await asyncio.gather(*(bump() for _ in range(20)), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert await _value(db) == 20


async def test_sqlite_uses_wal(sqlite_db: Database) -> None:
    async with sqlite_db.read() as session:
        assert (await session.execute(text("PRAGMA journal_mode"))).scalar_one().lower() == "wal"


async def test_read_and_ping_do_not_wait_for_an_open_write(db: Database) -> None:
    """A reader sees the last committed state at once while a writer holds the (SQLite) write lock."""
    async with db.transaction() as writer:
        await writer.execute(update(counter).where(counter.c.id == 1).values(value=41))
        await writer.execute(insert(counter).values(id=2, value=1))
        # On SQLite a read that took the write lock would wait busy_timeout (30 s) here.
        assert await asyncio.wait_for(_value(db), timeout=3) == 0
        assert await asyncio.wait_for(_rows(db), timeout=3) == 1
        # /readyz must not hang (nor turn 503) because a write is in progress.
        await asyncio.wait_for(db.ping(), timeout=3)
    assert await _value(db) == 41


@pytest.mark.postgres
async def test_a_connection_killed_under_a_request_is_answered_503_and_the_next_request_succeeds(
    pg_database: Callable[[str], str],
) -> None:
    """No pre-ping: a dead pooled connection costs one 503 (Retry-After), never a 500 or a lost write."""
    url = pg_database("services.transactions")
    database = Database(url, pool_size=1, max_overflow=0)
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/now")
    async def now(request: Request) -> dict[str, int]:
        async with database.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        return {"pid": pid}

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            first = (await client.get("/now")).json()["pid"]
            admin = Database(url)
            try:
                async with admin.connect() as connection:
                    await connection.execute(text(f"SELECT pg_terminate_backend({first})"))
            finally:
                await admin.dispose()
            lost = await client.get("/now")
            assert lost.status_code == 503, lost.text
            assert lost.headers["retry-after"] == "1"
            assert lost.json()["type"].endswith("/database-unavailable")
            again = await client.get("/now")
            assert again.status_code == 200 and again.json()["pid"] != first
    finally:
        await database.dispose()


async def test_a_lost_race_for_a_key_is_a_retryable_409_and_other_integrity_errors_stay_500(
    db: Database,
) -> None:
    """A unique violation the code did not foresee (two writers took one key) rolls back and answers 409 with
    Retry-After; a NOT NULL violation is a bug and stays an opaque 500."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/duplicate")
    async def duplicate() -> None:
        async with db.transaction() as session:
            await session.execute(update(counter).where(counter.c.id == 1).values(value=99))
            await session.execute(insert(counter).values(id=1, value=1))  # id 1 exists

    @app.post("/null")
    async def null() -> None:
        async with db.transaction() as session:
            await session.execute(insert(counter).values(id=2, value=None))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        raced = await client.post("/duplicate")
        assert raced.status_code == 409, raced.text
        assert raced.json()["type"].endswith("/concurrent-change") and raced.headers["retry-after"] == "1"
        broken = await client.post("/null")
        assert broken.status_code == 500
    assert await _value(db) == 0 and await _rows(db) == 1  # both rolled back
