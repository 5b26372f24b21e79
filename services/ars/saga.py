"""The first-transfer saga between the ARS and the IR (DESIGN §5; docs/ars.md "Saga").

1. The use case reserves the MO blocks (state `reserved`, `operation_id`) and writes the operation
   (`first_transfers`, status `pending`, with the exact body the IR will get) in one transaction.
2. `drive()` posts that body to the transactions service's `POST /internal/v1/first-transfers`, which is
   idempotent by `operation_id` (a repeat gets the first answer and never new units).
3. A 201 marks the MOs `first_transferred` and the operation `completed`; a 422 with check codes is a
   definite refusal: the MOs are authorized again and the operation `released`. Anything else (timeout,
   connection refused, 5xx, 409 in flight, an unexpected 4xx) leaves it `pending` with a growing backoff.
4. The resumer (`start()`, also run once at startup) drives every pending operation whose time has come,
   so a crash of either side at any point ends, after restart, in `completed` or `released`.
5. A first transfer to a connected registry (INTERREGISTRY §5.3, `to_registry`) is answered 202: the IR has
   proposed it and the registry decides. The operation stays `pending` with the IR transaction id and is asked
   again every `saga_registry_poll_seconds`; the IR answers the same request with the transfer's state, 201
   once the registry accepted, 422 (with the codes) once it was rejected, terminated or cancelled.

Finishing is a compare-and-set on `status = 'pending'`: two drivers racing (a request and the resumer, or two
replicas) both get the IR's same answer, and only one applies it.
"""

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update

from contracts.actions import MOState
from contracts.ars import ArsEventType, FirstTransferStatus
from kit.db import Database
from kit.outbox import Outbox
from kit.service_client import Peers
from services.ars import repository
from services.ars.config import Settings
from services.ars.models import authorization_heads, authorizations, first_transfers, mo_blocks

__all__ = ["FirstTransferSaga", "SimulatedCrash"]

log = structlog.get_logger(__name__)
_PATH = "/internal/v1/first-transfers"
_RESUME_BATCH = 50


class SimulatedCrash(Exception):
    """Raised by an in-process failpoint (tests only): nothing after that step runs, as in a crash."""


def _kill_self(point: str) -> None:
    log.warning("failpoint_kill", point=point)
    os.kill(os.getpid(), signal.SIGKILL)


class FirstTransferSaga:
    def __init__(self, db: Database, peers: Peers, outbox: Outbox, settings: Settings) -> None:
        self.db = db
        self.peers = peers
        self.outbox = outbox
        self.settings = settings
        self.failpoint: Callable[[str], None] | None = None
        if settings.ars_failpoint is not None:
            wanted = settings.ars_failpoint
            self.failpoint = lambda point: _kill_self(point) if point == wanted else None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: Set once the startup pass (every pending operation, whatever its backoff) has run.
        self.first_pass = asyncio.Event()

    def hit(self, point: str) -> None:
        """A step boundary where a crash test may stop the process."""
        if self.failpoint is not None:
            self.failpoint(point)

    # ---- one attempt --------------------------------------------------------------------------------------

    async def drive(self, operation_id: str) -> str:
        """Ask the IR once; returns the operation's status afterwards."""
        async with self.db.read() as session:
            row = (
                (
                    await session.execute(
                        select(first_transfers).where(first_transfers.c.operation_id == operation_id)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return "missing"
        if row["status"] != FirstTransferStatus.PENDING.value:
            return str(row["status"])
        try:
            response = await self.peers.request("transactions", "POST", _PATH, json=row["request"])
        except Exception as exc:  # unreachable, timed out, 5xx, no token: indefinite, try again later
            await self._postpone(operation_id, f"{type(exc).__name__}: {exc}")
            return FirstTransferStatus.PENDING.value
        self.hit("after_call")
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code in (200, 201):
            return await self._complete(operation_id, body)
        if response.status_code == 202 and isinstance(body, dict) and body.get("interregistry"):
            return await self._await_registry(operation_id, body)
        if response.status_code == 422 and isinstance(body, dict) and body.get("checks"):
            return await self._release(operation_id, body)
        title = body.get("title") if isinstance(body, dict) else None
        log.warning(
            "first_transfer_not_decided", operation_id=operation_id, status=response.status_code, title=title
        )
        await self._postpone(operation_id, f"HTTP {response.status_code}: {title or 'no problem body'}")
        return FirstTransferStatus.PENDING.value

    async def _postpone(self, operation_id: str, error: str) -> None:
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            attempts = (
                await connection.execute(
                    select(first_transfers.c.attempts).where(first_transfers.c.operation_id == operation_id)
                )
            ).scalar_one()
            delay = min(
                self.settings.saga_retry_max_seconds, self.settings.saga_retry_base_seconds * 2**attempts
            )
            await connection.execute(
                update(first_transfers)
                .where(
                    first_transfers.c.operation_id == operation_id,
                    first_transfers.c.status == FirstTransferStatus.PENDING.value,
                )
                .values(
                    attempts=attempts + 1,
                    last_error=error[:2000],
                    next_attempt_at=now + timedelta(seconds=delay),
                    updated_at=now,
                )
            )

    async def _await_registry(self, operation_id: str, transaction: dict[str, Any]) -> str:
        """The IR proposed the first transfer to a connected registry: ask again later (not an error, so no
        backoff), showing the IR transaction meanwhile."""
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            await connection.execute(
                update(first_transfers)
                .where(
                    first_transfers.c.operation_id == operation_id,
                    first_transfers.c.status == FirstTransferStatus.PENDING.value,
                )
                .values(
                    transaction_id=transaction.get("transaction_id"),
                    transaction_status=transaction.get("status"),
                    last_error=None,
                    next_attempt_at=now + timedelta(seconds=self.settings.saga_registry_poll_seconds),
                    updated_at=now,
                )
            )
        return FirstTransferStatus.PENDING.value

    async def _complete(self, operation_id: str, transaction: dict[str, Any]) -> str:
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            changed = await connection.execute(
                update(first_transfers)
                .where(
                    first_transfers.c.operation_id == operation_id,
                    first_transfers.c.status == FirstTransferStatus.PENDING.value,
                )
                .values(
                    status=FirstTransferStatus.COMPLETED.value,
                    transaction_id=transaction.get("transaction_id"),
                    transaction_status=transaction.get("status"),
                    result_blocks=transaction.get("blocks", []),
                    completed_at=now,
                    updated_at=now,
                    last_error=None,
                )
            )
            if repository.rowcount(changed) != 1:
                return await self._status(connection, operation_id)
            await connection.execute(
                update(mo_blocks)
                .where(mo_blocks.c.operation_id == operation_id, mo_blocks.c.state == MOState.RESERVED.value)
                .values(
                    state=MOState.FIRST_TRANSFERRED.value,
                    transaction_id=transaction.get("transaction_id"),
                    updated_at=now,
                )
            )
            operation = await self._operation(connection, operation_id)
            authorization = await self._authorization(connection, operation)
            await self.outbox.publish(
                connection,
                ArsEventType.FIRST_TRANSFER_COMPLETED.value,
                {
                    "operation_id": operation_id,
                    "transaction_id": transaction.get("transaction_id"),
                    "party": operation["party"],
                    "first_transfer_definition": operation["first_transfer_definition"],
                    "quantity": operation["quantity"],
                    "to_account": operation["to_account"],
                    "to_registry": (operation["request"] or {}).get("to_registry"),
                    "use": operation["use"],
                    "mo_ranges": operation["mo_ranges"],
                    "blocks": transaction.get("blocks", []),
                    "actions": transaction.get("actions", []),
                    "completed_at": now.isoformat(),
                    "authorization": authorization,
                },
                party=operation["party"],
            )
        self.outbox.notify()
        log.info(
            "first_transfer_completed",
            operation_id=operation_id,
            transaction_id=transaction.get("transaction_id"),
        )
        return FirstTransferStatus.COMPLETED.value

    async def _release(self, operation_id: str, problem: dict[str, Any]) -> str:
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            changed = await connection.execute(
                update(first_transfers)
                .where(
                    first_transfers.c.operation_id == operation_id,
                    first_transfers.c.status == FirstTransferStatus.PENDING.value,
                )
                .values(
                    status=FirstTransferStatus.RELEASED.value,
                    transaction_id=problem.get("transaction_id"),
                    transaction_status=problem.get("transaction_status") or "rejected",
                    checks=problem.get("checks", []),
                    completed_at=now,
                    updated_at=now,
                )
            )
            if repository.rowcount(changed) != 1:
                return await self._status(connection, operation_id)
            operation = await self._operation(connection, operation_id)
            await self.release_blocks(connection, operation, now)
            await self._publish_released(
                connection, operation, problem.get("transaction_id"), problem.get("checks", [])
            )
        self.outbox.notify()
        log.info("first_transfer_released", operation_id=operation_id, checks=problem.get("checks"))
        return FirstTransferStatus.RELEASED.value

    async def _publish_released(
        self,
        connection: Any,
        operation: Any,
        transaction_id: str | None,
        checks: list[Any],
        *,
        reason: str | None = None,
    ) -> None:
        """`first_transfer.released`: the IR refused it for good, or it was withdrawn / timed out unapproved."""
        data = {
            "operation_id": operation["operation_id"],
            "transaction_id": transaction_id,
            "party": operation["party"],
            "authorization_id": operation["authorization_id"],
            "quantity": operation["quantity"],
            "mo_ranges": operation["mo_ranges"],
            "checks": checks,
        }
        if reason is not None:
            data["reason"] = reason
        await self.outbox.publish(
            connection, ArsEventType.FIRST_TRANSFER_RELEASED.value, data, party=operation["party"]
        )

    @staticmethod
    async def release_blocks(connection: Any, operation: Any, now: datetime) -> None:
        """The operation's reserved MOs go back to `authorized` (to `pending_authorization` if the
        authorization was revoked meanwhile), merged with their neighbours again."""
        head = (
            (
                await connection.execute(
                    select(authorization_heads.c.status).where(
                        authorization_heads.c.party == operation["party"],
                        authorization_heads.c.authorization_id == operation["authorization_id"],
                    )
                )
            )
            .scalars()
            .first()
        )
        back: dict[str, Any] = {"state": MOState.AUTHORIZED.value, "operation_id": None}
        if head == "revoked":
            back = {
                "state": MOState.PENDING_AUTHORIZATION.value,
                "operation_id": None,
                "authorization_id": None,
                "authorization_version": None,
            }
        rows = (
            (
                await connection.execute(
                    select(mo_blocks.c.id).where(
                        mo_blocks.c.operation_id == operation["operation_id"],
                        mo_blocks.c.state == MOState.RESERVED.value,
                    )
                )
            )
            .mappings()
            .all()
        )
        await connection.execute(
            update(mo_blocks)
            .where(
                mo_blocks.c.operation_id == operation["operation_id"],
                mo_blocks.c.state == MOState.RESERVED.value,
            )
            .values(**back, updated_at=now)
        )
        await repository.coalesce(connection, [dict(r) for r in rows], now)

    @staticmethod
    async def _operation(connection: Any, operation_id: str) -> Any:
        return (
            (
                await connection.execute(
                    select(first_transfers).where(first_transfers.c.operation_id == operation_id)
                )
            )
            .mappings()
            .one()
        )

    @staticmethod
    async def _status(connection: Any, operation_id: str) -> str:
        return str(
            (
                await connection.execute(
                    select(first_transfers.c.status).where(first_transfers.c.operation_id == operation_id)
                )
            ).scalar_one()
        )

    @staticmethod
    async def _authorization(connection: Any, operation: Any) -> dict[str, Any]:
        row = (
            (
                await connection.execute(
                    select(authorizations).where(
                        authorizations.c.party == operation["party"],
                        authorizations.c.authorization_id == operation["authorization_id"],
                        authorizations.c.version == operation["authorization_version"],
                    )
                )
            )
            .mappings()
            .one()
        )
        return repository.authorization_from_row(row).model_dump(mode="json")

    # ---- the resumer ----------------------------------------------------------------------------------------

    async def cancel_awaiting(self, operation_id: str, *, reason: str) -> bool:
        """Compare-and-set `awaiting_approval` → `cancelled`, the MOs authorized again; False if not awaiting."""
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            changed = await connection.execute(
                update(first_transfers)
                .where(
                    first_transfers.c.operation_id == operation_id,
                    first_transfers.c.status == FirstTransferStatus.AWAITING_APPROVAL.value,
                )
                .values(
                    status=FirstTransferStatus.CANCELLED.value,
                    last_error=reason,
                    completed_at=now,
                    updated_at=now,
                )
            )
            if repository.rowcount(changed) != 1:
                return False
            operation = await self._operation(connection, operation_id)
            await self.release_blocks(connection, operation, now)
            await self._publish_released(connection, operation, None, [], reason=reason)
        self.outbox.notify()
        log.info("first_transfer_cancelled", operation_id=operation_id, reason=reason)
        return True

    async def expire_awaiting(self, now: datetime | None = None) -> int:
        """Cancel the first transfers that waited for approval longer than the approval timeout."""
        now = now or datetime.now(UTC)
        limit = now - timedelta(seconds=self.settings.first_transfer_approval_seconds)
        async with self.db.read() as session:
            stale = (
                (
                    await session.execute(
                        select(first_transfers.c.operation_id).where(
                            first_transfers.c.status == FirstTransferStatus.AWAITING_APPROVAL.value,
                            first_transfers.c.created_at < limit,
                        )
                    )
                )
                .scalars()
                .all()
            )
        expired = 0
        for operation_id in stale:
            expired += await self.cancel_awaiting(operation_id, reason="approval timed out")
        return expired

    async def resume(self, *, everything: bool = False) -> int:
        """Drive the pending operations that are due (all of them with `everything`); how many were tried."""
        now = datetime.now(UTC)
        query = select(first_transfers.c.operation_id, first_transfers.c.next_attempt_at).where(
            first_transfers.c.status == FirstTransferStatus.PENDING.value
        )
        if not everything:
            query = query.where(first_transfers.c.next_attempt_at <= now)
        async with self.db.read() as session:
            due = (
                await session.execute(query.order_by(first_transfers.c.created_at).limit(_RESUME_BATCH))
            ).all()
        tried = 0
        for operation_id, seen_at in due:
            # Take a lease (compare-and-set on the time we saw), so another driver does not try at once.
            async with self.db.connect() as connection:
                leased = await connection.execute(
                    update(first_transfers)
                    .where(
                        first_transfers.c.operation_id == operation_id,
                        first_transfers.c.status == FirstTransferStatus.PENDING.value,
                        first_transfers.c.next_attempt_at == seen_at,
                    )
                    .values(next_attempt_at=now + timedelta(seconds=self.settings.saga_lease_seconds))
                )
            if repository.rowcount(leased) != 1:
                continue
            tried += 1
            try:
                await self.drive(operation_id)
            except Exception:  # one bad operation must not stop the others
                log.exception("first_transfer_resume_failed", operation_id=operation_id)
        return tried

    async def _run(self) -> None:
        try:
            await self.resume(everything=True)
        except Exception:  # e.g. the database is not up yet: the loop below keeps trying
            log.exception("first_transfer_startup_pass_failed")
        self.first_pass.set()
        while True:
            # asyncio.timeout, not wait_for: see kit/outbox.py (a cancellation lost on 3.11 hangs shutdown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.saga_resume_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.resume()
                await self.expire_awaiting()
            except Exception:  # the loop outlives a transient failure; the next pass retries
                log.exception("first_transfer_resumer_failed")

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ars-first-transfer-resumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
