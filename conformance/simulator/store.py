"""The simulator's own SQLite database (SQLAlchemy Core over aiosqlite), created at start.

Everything the simulator knows is here, so a SIGKILL at any point loses nothing committed (restart safety,
INTERREGISTRY F6/F7): the ledger (`account`, `block`), the transfers it took part in (`transfer`), the inbox
cursor and the message ids it processed (`processed`, `state`), and its own outgoing messages with their
seq, message id and answer (`outbox`).

A block row is a serial range of one (CA, origin registry) in one state. `pending_in` rows of an incoming
transfer may overlap `transferred_out` rows (the history of a range that left for the IR and is now coming
back); every other state never overlaps anything (the checks of the engine keep it so).

One process writes: `Store.write()` serialises writers with an asyncio lock, so SQLite never answers
"database is locked" and each write is one transaction.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = [
    "BLOCK_STATES",
    "Store",
    "account",
    "block",
    "inbox_log",
    "metadata",
    "outbox",
    "processed",
    "state",
    "transfer",
]

BLOCK_STATES = ("held", "reserved", "pending_in", "transferred_out")

metadata = MetaData()

#: One row (id 1): counters and settings that must survive a restart.
state = Table(
    "state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("last_seq", Integer, nullable=False),  # the last seq given to an outgoing message
    Column("inbox_cursor", Integer, nullable=False),  # the last inbox position processed
    Column("ack_queued", Integer, nullable=False),  # the highest up_to put in the outbox
    Column("acked_position", Integer, nullable=False),  # what the IR last confirmed
    Column("transfer_counter", Integer, nullable=False),
    Column("policy", String(40), nullable=False),
    Column("registry_status", String(20)),
)

account = Table(
    "account",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("kind", String(20), nullable=False),  # holding
    Column("status", String(20), nullable=False),  # open | blocked | closed
    Column("refuses_incoming", Boolean, nullable=False),  # the Party's policy refuses incoming units (5904)
    Column("description", Text, nullable=False),
)

block = Table(
    "block",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(64), nullable=False),
    Column("ca_id", String(200), nullable=False),
    Column("origin_registry_id", String(200), nullable=False),
    Column("first_transferring_party", String(200), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("first", Integer, nullable=False),
    Column("last", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column(
        "transfer_id", String(64)
    ),  # reserved / pending_in: the transfer in flight; transferred_out: the last
    Column("to_registry", String(20)),  # transferred_out: where the range went
    Column("invariants", JSON, nullable=False),  # TransferBlock fields other than the range and underlying
    Column("underlying_registry", String(200)),
    Column("underlying_first", Integer),  # the underlying unit of `first` (splits shift it by offset)
)

transfer = Table(
    "transfer",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("direction", String(20), nullable=False),  # ir_to_registry (incoming here) | registry_to_ir
    Column("status", String(20), nullable=False),  # open | completed | rejected | terminated | cancelled
    Column("vote", String(20)),  # incoming: accept | reject | silent (our answer); outgoing: null
    Column("codes", JSON),
    Column("content_sha256", String(64), nullable=False),
    Column("proposal", JSON, nullable=False),
    Column("account_id", String(64)),
    Column("final_position", Integer),
    Column("local_note", Text),  # e.g. "released on own timeout" (a bug mode), for the state view
)

processed = Table(
    "processed",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("outcome", Text),
)

#: Every inbox item processed (reconciliation, INTERREGISTRY §8): its position, id, type, transfer and body
#: hash, so stage 1 knows where each proposal stood and stage 3 can list and digest the inbox up to the
#: cut-off. A new table (not a column of `processed`), so `create_all` adds it to an existing file.
inbox_log = Table(
    "inbox_log",
    metadata,
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("message_id", String(36), nullable=False),
    Column("type", String(40), nullable=False),
    Column("transfer_id", String(64)),
    Column("body_sha256", String(64), nullable=False),
    Column("sent_at", String(40), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False, unique=True),
    Column("seq", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("path", String(200), nullable=False),
    Column("envelope", JSON, nullable=False),
    Column("transfer_id", String(64)),
    Column("status", String(20), nullable=False),  # pending | answered | refused | abandoned
    Column("attempts", Integer, nullable=False),
    Column("response_status", Integer),
    Column("response_body", JSON),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + full sync: a commit is on disk before the simulator speaks (S4), and readers never block.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


class Store:
    """The simulator's database. `open()` creates the schema and the single state row."""

    def __init__(self, path: Path, *, policy: str = "accept") -> None:
        self.path = path
        self.engine: AsyncEngine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        sync_engine: Engine = self.engine.sync_engine
        event.listen(sync_engine, "connect", _sqlite_pragmas)
        self._initial_policy = policy
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        async with self.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            if (await connection.execute(select(state.c.id))).first() is None:
                await connection.execute(
                    insert(state).values(
                        id=1,
                        last_seq=0,
                        inbox_cursor=0,
                        ack_queued=0,
                        acked_position=0,
                        transfer_counter=0,
                        policy=self._initial_policy,
                    )
                )

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed when the block ends without an exception."""
        async with self._lock, self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            yield connection

    @staticmethod
    async def state(connection: AsyncConnection) -> dict[str, Any]:
        row = (await connection.execute(select(state).where(state.c.id == 1))).mappings().one()
        return dict(row)

    @staticmethod
    async def set_state(connection: AsyncConnection, **values: Any) -> None:
        await connection.execute(update(state).where(state.c.id == 1).values(**values))
