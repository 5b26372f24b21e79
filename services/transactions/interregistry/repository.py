"""Queries of the inter-registry tables: SQLAlchemy Core on a connection the caller's transaction owns."""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.transactions.interregistry.models import (
    DIRECTION_IN,
    DIRECTION_OUT,
    conformance_run,
    irx_inbox_cursor,
    irx_message,
    irx_transfer,
    registry,
    registry_key,
)

__all__ = [
    "advance_seq",
    "cursor_position",
    "find_message",
    "get_conformance_run",
    "get_registry",
    "insert_conformance_run",
    "insert_message",
    "insert_registry",
    "list_conformance_runs",
    "list_messages",
    "list_registries",
    "lock_cursor",
    "messages_received_between",
    "passing_run",
    "read_inbox",
    "record_key",
    "registry_keys",
    "revoke_key",
    "revoked_kids",
    "transfers_of",
    "unpositioned_registries",
    "update_registry",
]

Row = RowMapping


async def get_registry(connection: AsyncConnection, registry_id: str, *, lock: bool = False) -> Row | None:
    query = select(registry).where(registry.c.registry_id == registry_id)
    if lock:
        query = query.with_for_update()
    return (await connection.execute(query)).mappings().first()


async def list_registries(connection: AsyncConnection, *, after: str | None, limit: int) -> Sequence[Row]:
    query = select(registry).order_by(registry.c.registry_id).limit(limit)
    if after is not None:
        query = query.where(registry.c.registry_id > after)
    return (await connection.execute(query)).mappings().all()


async def insert_registry(connection: AsyncConnection, values: Mapping[str, Any]) -> None:
    await connection.execute(insert(registry).values(**values))
    # The relay's cursor row exists from the start, so relays only ever lock it (never race to insert it).
    await connection.execute(
        insert(irx_inbox_cursor).values(registry_id=values["registry_id"], last_position=0)
    )


async def update_registry(
    connection: AsyncConnection, registry_id: str, values: Mapping[str, Any], *, version: int | None = None
) -> bool:
    """Apply `values`; with `version`, only if the row still has it (compare-and-set). True if applied."""
    statement = update(registry).where(registry.c.registry_id == registry_id).values(**values)
    if version is not None:
        statement = statement.where(registry.c.version == version)
    return bool((await connection.execute(statement)).rowcount)


async def advance_seq(connection: AsyncConnection, registry_id: str, seq: int, at: datetime) -> bool:
    """`last_seq_in = seq` if it is still lower (§3 step 7); False when a concurrent higher seq won."""
    result = await connection.execute(
        update(registry)
        .where(registry.c.registry_id == registry_id, registry.c.last_seq_in < seq)
        .values(last_seq_in=seq, updated_at=at)
    )
    return bool(result.rowcount)


async def passing_run(connection: AsyncConnection, run_id: str, registry_id: str) -> bool:
    found = (
        await connection.execute(
            select(conformance_run.c.run_id).where(
                conformance_run.c.run_id == run_id,
                conformance_run.c.registry_id == registry_id,
                conformance_run.c.result == "pass",
            )
        )
    ).first()
    return found is not None


async def insert_conformance_run(connection: AsyncConnection, values: Mapping[str, Any]) -> None:
    await connection.execute(insert(conformance_run).values(**values))


async def get_conformance_run(connection: AsyncConnection, run_id: str) -> Row | None:
    query = select(conformance_run).where(conformance_run.c.run_id == run_id)
    return (await connection.execute(query)).mappings().first()


async def list_conformance_runs(
    connection: AsyncConnection, *, registry_id: str | None, limit: int
) -> Sequence[Row]:
    """Newest first, without the report (a list is read to choose a run, not to audit one)."""
    query = (
        select(conformance_run.c.run_id, conformance_run.c.registry_id, conformance_run.c.result,
               conformance_run.c.created_at)
        .order_by(conformance_run.c.created_at.desc(), conformance_run.c.run_id)
        .limit(limit)
    )  # fmt: skip
    if registry_id is not None:
        query = query.where(conformance_run.c.registry_id == registry_id)
    return (await connection.execute(query)).mappings().all()


async def messages_received_between(
    connection: AsyncConnection, registry_id: str, start: datetime, end: datetime
) -> Sequence[Row]:
    """The registry's messages the IR stored in [start, end] (the log entries a conformance run made)."""
    query = (
        select(irx_message.c.message_id, irx_message.c.type, irx_message.c.verification,
               irx_message.c.created_at)
        .where(irx_message.c.registry_id == registry_id, irx_message.c.direction == DIRECTION_IN,
               irx_message.c.created_at >= start, irx_message.c.created_at <= end)
        .order_by(irx_message.c.id)
    )  # fmt: skip
    return (await connection.execute(query)).mappings().all()


async def transfers_of(
    connection: AsyncConnection, registry_id: str, transfer_ids: Sequence[str]
) -> Sequence[Row]:
    if not transfer_ids:
        return []
    query = select(irx_transfer.c.transfer_id, irx_transfer.c.status, irx_transfer.c.created_at).where(
        irx_transfer.c.registry_id == registry_id, irx_transfer.c.transfer_id.in_(list(transfer_ids))
    )
    return (await connection.execute(query)).mappings().all()


async def revoked_kids(connection: AsyncConnection, registry_id: str, at: datetime) -> set[str]:
    rows = await connection.execute(
        select(registry_key.c.kid).where(
            registry_key.c.registry_id == registry_id,
            registry_key.c.revoked_at.is_not(None),
            registry_key.c.revoked_at <= at,
        )
    )
    return set(rows.scalars().all())


async def record_key(
    connection: AsyncConnection,
    registry_id: str,
    kid: str,
    jwk: Mapping[str, Any],
    thumbprint: str,
    at: datetime,
) -> None:
    """Remember a key a message was verified with (first/last seen)."""
    updated = await connection.execute(
        update(registry_key)
        .where(
            registry_key.c.registry_id == registry_id,
            registry_key.c.kid == kid,
            registry_key.c.thumbprint == thumbprint,
        )
        .values(last_seen=at)
    )
    if not updated.rowcount:
        await connection.execute(
            insert(registry_key).values(
                registry_id=registry_id,
                kid=kid,
                jwk=dict(jwk),
                thumbprint=thumbprint,
                first_seen=at,
                last_seen=at,
            )
        )


async def find_message(
    connection: AsyncConnection, registry_id: str, direction: str, message_id: str
) -> Row | None:
    return (
        (
            await connection.execute(
                select(irx_message).where(
                    irx_message.c.registry_id == registry_id,
                    irx_message.c.direction == direction,
                    irx_message.c.message_id == message_id,
                )
            )
        )
        .mappings()
        .first()
    )


async def insert_message(connection: AsyncConnection, values: Mapping[str, Any]) -> None:
    await connection.execute(insert(irx_message).values(**values))


async def cursor_position(connection: AsyncConnection, registry_id: str) -> int:
    value = (
        await connection.execute(
            select(irx_inbox_cursor.c.last_position).where(irx_inbox_cursor.c.registry_id == registry_id)
        )
    ).scalar_one_or_none()
    return int(value or 0)


async def lock_cursor(connection: AsyncConnection, registry_id: str) -> int | None:
    """The relay's per-registry lock (`FOR UPDATE`; SQLite's write lock already serialises)."""
    value = (
        await connection.execute(
            select(irx_inbox_cursor.c.last_position)
            .where(irx_inbox_cursor.c.registry_id == registry_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    return None if value is None else int(value)


async def unpositioned_registries(connection: AsyncConnection) -> list[str]:
    rows = await connection.execute(
        select(irx_message.c.registry_id)
        .where(irx_message.c.position.is_(None), irx_message.c.direction == DIRECTION_OUT)
        .group_by(irx_message.c.registry_id)
        .order_by(func.min(irx_message.c.id))
    )
    return list(rows.scalars().all())


async def read_inbox(
    connection: AsyncConnection, registry_id: str, *, after: int, limit: int
) -> Sequence[Row]:
    return (
        (
            await connection.execute(
                select(irx_message)
                .where(
                    irx_message.c.registry_id == registry_id,
                    irx_message.c.direction == DIRECTION_OUT,
                    irx_message.c.position > after,
                )
                .order_by(irx_message.c.position)
                .limit(limit)
            )
        )
        .mappings()
        .all()
    )


async def list_messages(
    connection: AsyncConnection,
    *,
    registry_id: str | None,
    direction: str | None,
    after: int,
    limit: int,
) -> Sequence[Row]:
    """The message log in log order (`id`); inbox messages only once the relay numbered and signed them."""
    query = (
        select(irx_message)
        .where(irx_message.c.id > after)
        .where((irx_message.c.direction == DIRECTION_IN) | irx_message.c.position.is_not(None))
        .order_by(irx_message.c.id)
        .limit(limit)
    )
    if registry_id is not None:
        query = query.where(irx_message.c.registry_id == registry_id)
    if direction is not None:
        query = query.where(irx_message.c.direction == direction)
    return (await connection.execute(query)).mappings().all()


async def registry_keys(connection: AsyncConnection, registry_id: str) -> Sequence[Row]:
    return (
        (
            await connection.execute(
                select(registry_key)
                .where(registry_key.c.registry_id == registry_id)
                .order_by(registry_key.c.kid, registry_key.c.id)
            )
        )
        .mappings()
        .all()
    )


async def revoke_key(
    connection: AsyncConnection, registry_id: str, kid: str, at: datetime, *, by: str, note: str
) -> None:
    """Revoke `kid` of a registry from `at` on; an earlier revocation stands (never lifted nor postponed).
    A kid no message used yet gets a row of its own, so it is refused when it first appears."""
    rows = (
        (
            await connection.execute(
                select(registry_key.c.id, registry_key.c.revoked_at)
                .where(registry_key.c.registry_id == registry_id, registry_key.c.kid == kid)
                .with_for_update()
            )
        )
        .mappings()
        .all()
    )
    if not rows:
        await connection.execute(
            insert(registry_key).values(
                registry_id=registry_id, kid=kid, revoked_at=at, revoked_by=by, revocation_note=note
            )
        )
        return
    for row in rows:
        previous = row["revoked_at"]
        if previous is not None and _aware(previous) <= at:
            continue
        await connection.execute(
            update(registry_key)
            .where(registry_key.c.id == row["id"])
            .values(revoked_at=at, revoked_by=by, revocation_note=note)
        )


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were stored in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
