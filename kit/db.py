"""Async database access for PostgreSQL (asyncpg) and SQLite (aiosqlite), one `Database` per service.

Writes go through `Database.transaction()`; on SQLite that issues `BEGIN IMMEDIATE`, so concurrent
writers queue on the database lock instead of failing mid-transaction with "database is locked".
Reads go through `Database.read()`, which on SQLite begins a deferred transaction so readers never wait
for one another.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

__all__ = ["Database", "is_sqlite"]

_BEGIN_OPTION = "sqlite_begin"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so the "begin" hook decides the mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An engine and session factory for one service database."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        echo: bool = False,
        pre_ping: bool = False,
    ) -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        if self.is_sqlite:
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(
                url, echo=echo, poolclass=NullPool if database == ":memory:" else None
            )
            _install_sqlite_hooks(self.engine)
        else:
            # No pool_pre_ping: it costs a round trip on every checkout (~12% of a transfer's CPU). A
            # connection found dead by its first statement invalidates the whole pool (SQLAlchemy
            # invalidates every connection older than the error), and the request is answered 503 with
            # Retry-After (kit/errors.py) having acknowledged nothing; a retry with the same
            # Idempotency-Key then runs on a fresh connection.
            self.engine = create_async_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=pre_ping
            )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one write transaction: committed on success, rolled back on any error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; on SQLite it does not take the write lock."""
        async with self.sessions() as session:
            if self.is_sqlite:
                await session.connection(execution_options={_BEGIN_OPTION: "DEFERRED"})
            yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in one write transaction, for hot paths that skip the ORM."""
        async with self.engine.begin() as connection:
            yield connection

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with self.engine.connect() as connection:
            if self.is_sqlite:  # a probe must not queue behind (or block) writers on the write lock
                await connection.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
