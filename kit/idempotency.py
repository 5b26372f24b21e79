"""Idempotent unit-moving writes (DESIGN §4): `Idempotency-Key` replays, 422 on reuse, 409 while in flight.

A key is claimed in a short transaction of its own (state `in_flight`, with an owner token and a lease),
so a concurrent retry can be told 409 at once. Hot paths claim inside their own write transaction instead
(`IdempotencyStore.claim_within`): one transaction and one commit fewer per request; on PostgreSQL a
transaction-scoped advisory lock on the key tells a concurrent retry 409 without waiting, and on SQLite
write transactions never overlap, so the retry simply finds the stored answer. The answer is stored by `Claim.complete()` inside the
caller's write transaction, so the effect and its stored answer commit together: a crash before that
commit leaves no effect and an expiring lease (a retry after it re-executes); a crash after it leaves
both (a retry replays). Completion is a compare-and-set on the owner token, so if a slow original outlives
its lease and a retry took the key over, only one of them can commit.
"""

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

from fastapi import Header
from sqlalchemy import (
    JSON,
    Column,
    CursorResult,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kit.db import Database
from kit.errors import BadRequest, Conflict, Unprocessable

__all__ = [
    "REPLAY_HEADER",
    "Claim",
    "IdempotencyKeyHeader",
    "IdempotencyStore",
    "StoredAnswer",
    "idempotency_table",
    "request_fingerprint",
]

REPLAY_HEADER = "Idempotent-Replayed"
_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required on unit-moving POSTs: a retry with the same key and body returns the first answer",
    ),
]


def idempotency_table(metadata: MetaData) -> Table:
    """The `idempotency_keys` table, added to a service's metadata (and its migrations)."""
    return Table(
        "idempotency_keys",
        metadata,
        Column("client_id", String(200), primary_key=True),
        Column("key", String(255), primary_key=True),
        Column("request_hash", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("owner", String(36), nullable=False),
        Column("locked_until", DateTime(timezone=True), nullable=False),
        Column("response_status", Integer, nullable=True),
        Column("response_body", JSON, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("completed_at", DateTime(timezone=True), nullable=True),
    )


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """Hash of what the client asked: same key with another fingerprint is a reuse (422)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: Any


@dataclass(frozen=True)
class Claim:
    """The right to execute one keyed request; complete it in the effect's transaction."""

    store: "IdempotencyStore"
    client_id: str
    key: str
    owner: str
    #: Claimed inside the caller's write transaction: a rollback forgets it, nothing to release.
    within: bool = False

    async def complete(self, session: AsyncSession | AsyncConnection, status: int, body: Any) -> None:
        """Store the answer in the caller's transaction; Conflict if another attempt took the key over."""
        result = await session.execute(
            self.store.complete_statement,
            {
                "c_client": self.client_id,
                "c_key": self.key,
                "c_owner": self.owner,
                "c_status": status,
                "c_body": body,
                "c_at": datetime.now(UTC),
            },
        )
        if cast(CursorResult[Any], result).rowcount != 1:
            raise Conflict(
                "Another attempt with this Idempotency-Key took over; retry to get its answer.",
                slug="idempotency-key-in-flight",
            )

    async def fail(self, status: int, body: Any) -> None:
        """Store a refusal that changed nothing (e.g. a failed check), so a retry gets the same answer."""
        async with self.store.db.transaction() as session:
            await self.complete(session, status, body)

    async def release(self) -> None:
        """Forget the claim after an unexpected error, so a retry may run again at once."""
        if self.within:
            return
        table = self.store.table
        async with self.store.db.transaction() as session:
            await session.execute(
                delete(table).where(
                    table.c.client_id == self.client_id,
                    table.c.key == self.key,
                    table.c.owner == self.owner,
                    table.c.state == "in_flight",
                )
            )


class IdempotencyStore:
    """Claims and stored answers of one service."""

    def __init__(self, db: Database, table: Table, *, lease_seconds: float = 30.0) -> None:
        self.db = db
        self.table = table
        self.lease = timedelta(seconds=lease_seconds)
        # Built once: composing these per request cost more CPU than the database spent running them.
        self.complete_statement = (
            update(table)
            .where(
                table.c.client_id == bindparam("c_client"),
                table.c.key == bindparam("c_key"),
                table.c.owner == bindparam("c_owner"),
                table.c.state == "in_flight",
            )
            .values(
                state="done",
                response_status=bindparam("c_status"),
                response_body=bindparam("c_body"),
                completed_at=bindparam("c_at"),
            )
        )
        postgres = db.dialect == "postgresql"
        self._claim_within_statement = (pg_insert if postgres else sqlite_insert)(
            table
        ).on_conflict_do_nothing()

    @staticmethod
    def require_key(key: str | None) -> str:
        import re

        if key is None:
            raise BadRequest(
                "This request moves units: send an Idempotency-Key header.", slug="idempotency-key-missing"
            )
        if not re.fullmatch(_KEY_PATTERN, key):  # not re.match: its `$` also matches before a final "\n"
            raise BadRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters.", slug="idempotency-key-invalid"
            )
        return key

    async def claim_within(
        self, connection: AsyncConnection, client_id: str, key: str | None, fingerprint: str
    ) -> Claim | StoredAnswer:
        """Claim in the caller's write transaction (first statement): a `Claim`, or the answer to replay.

        The claim commits or rolls back with the effect and its stored answer, so there is no lease and
        nothing to release. Raises 409 while another attempt holds the key, 422 for another request.
        """
        key = self.require_key(key)
        table = self.table
        now = datetime.now(UTC)
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            lock = int.from_bytes(
                hashlib.sha256(f"{client_id}\n{key}".encode()).digest()[:8], "big", signed=True
            )
            if not (await connection.execute(select(func.pg_try_advisory_xact_lock(lock)))).scalar_one():
                raise self._in_flight()
        owner = str(uuid.uuid4())
        values = {
            "client_id": client_id,
            "key": key,
            "request_hash": fingerprint,
            "state": "in_flight",
            "owner": owner,
            "locked_until": now + self.lease,
            "created_at": now,
        }
        result = await connection.execute(self._claim_within_statement, values)
        if cast(CursorResult[Any], result).rowcount == 1:
            return Claim(self, client_id, key, owner, within=True)
        row = (
            (
                await connection.execute(
                    select(table).where(table.c.client_id == client_id, table.c.key == key)
                )
            )
            .mappings()
            .one()
        )
        if row["request_hash"] != fingerprint:
            raise self._reused()
        if row["state"] == "done":
            return StoredAnswer(row["response_status"], row["response_body"])
        locked_until = row["locked_until"]
        if locked_until.tzinfo is None:
            locked_until = locked_until.replace(tzinfo=UTC)
        if locked_until > now:  # claimed by `claim()` in a transaction of its own, still running
            raise self._in_flight()
        await connection.execute(
            update(table)
            .where(table.c.client_id == client_id, table.c.key == key)
            .values(owner=owner, locked_until=now + self.lease)
        )
        return Claim(self, client_id, key, owner, within=True)

    @staticmethod
    def _in_flight() -> Conflict:
        return Conflict(
            "The first request with this Idempotency-Key is still being processed; retry shortly.",
            slug="idempotency-key-in-flight",
            headers={"Retry-After": "1"},
        )

    @staticmethod
    def _reused() -> Unprocessable:
        return Unprocessable(
            "This Idempotency-Key was used with a different request.", slug="idempotency-key-reused"
        )

    async def claim(self, client_id: str, key: str | None, fingerprint: str) -> Claim | StoredAnswer:
        """A `Claim` to execute the request, or the `StoredAnswer` of the first attempt to replay."""
        key = self.require_key(key)
        table = self.table
        now = datetime.now(UTC)
        owner = str(uuid.uuid4())
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    insert(table).values(
                        client_id=client_id,
                        key=key,
                        request_hash=fingerprint,
                        state="in_flight",
                        owner=owner,
                        locked_until=now + self.lease,
                        created_at=now,
                    )
                )
            return Claim(self, client_id, key, owner)
        except IntegrityError:
            pass
        async with self.db.transaction() as session:
            row = (
                (
                    await session.execute(
                        select(table)
                        .where(table.c.client_id == client_id, table.c.key == key)
                        .with_for_update()
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:  # released between our insert and this read: claim it afresh
                await session.execute(
                    insert(table).values(
                        client_id=client_id,
                        key=key,
                        request_hash=fingerprint,
                        state="in_flight",
                        owner=owner,
                        locked_until=now + self.lease,
                        created_at=now,
                    )
                )
                return Claim(self, client_id, key, owner)
            if row["request_hash"] != fingerprint:
                raise Unprocessable(
                    "This Idempotency-Key was used with a different request.", slug="idempotency-key-reused"
                )
            if row["state"] == "done":
                return StoredAnswer(row["response_status"], row["response_body"])
            locked_until = row["locked_until"]
            if locked_until.tzinfo is None:
                locked_until = locked_until.replace(tzinfo=UTC)
            if locked_until > now:
                raise Conflict(
                    "The first request with this Idempotency-Key is still being processed; retry shortly.",
                    slug="idempotency-key-in-flight",
                    headers={"Retry-After": "1"},
                )
            # The first attempt died before committing anything: take the key over.
            await session.execute(
                update(table)
                .where(table.c.client_id == client_id, table.c.key == key)
                .values(owner=owner, locked_until=now + self.lease)
            )
            return Claim(self, client_id, key, owner)
