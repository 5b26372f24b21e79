"""The inbox relay (INTERREGISTRY §4, DESIGN §5): numbers and signs committed inbox messages.

An inbox message is inserted with the state change it announces and no position. The relay, in a
transaction of its own per registry, locks that registry's `irx_inbox_cursor` row (`FOR UPDATE`; SQLite's
`BEGIN IMMEDIATE` serialises anyway), takes the committed unnumbered rows in insert order and gives them the
next consecutive positions. Only committed rows are visible to it, so positions follow commit order and a
registry reading `after=N` never skips a message that committed late (the same reasoning as kit/outbox.py).
Because the envelope's `seq` is the position, the envelope is completed (`seq`, `sent_at`) and signed here,
not by the writer. One registry's relay never waits on another's: each has its own cursor row.
"""

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from prometheus_client import Gauge
from sqlalchemy import bindparam, select, update

from contracts.interregistry import IrxEnvelope
from kit.db import Database
from kit.jws import sign, thumbprint
from kit.outbox import Outbox
from services.transactions.interregistry import crashpoints, repository
from services.transactions.interregistry.models import DIRECTION_OUT, irx_inbox_cursor, irx_message
from services.transactions.interregistry.signing import IrSigner

__all__ = ["INBOX_LAST_POSITION", "InboxRelay"]

log = structlog.get_logger(__name__)

INBOX_LAST_POSITION = Gauge(
    "irx_inbox_last_position", "Last inbox position the relay gave a registry", ["registry_id"]
)
_BATCH = 500


class InboxRelay:
    """Numbers, completes and signs inbox messages; `relay()` on demand, or the background loop."""

    def __init__(
        self,
        db: Database,
        signer: IrSigner,
        outbox: Outbox,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.signer = signer
        self.clock = clock
        #: The service's outbox. The doorbell (§4): each numbered batch publishes
        #: `interregistry.inbox.available`, on which the reporting service rings the registry's webhook.
        self.outbox = outbox
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Something committed inbox messages: relay soon (call after the writing transaction)."""
        self._wake.set()

    async def relay(self, registry_id: str | None = None) -> int:
        """Number every committed unnumbered inbox message (of one registry, or all); how many got one."""
        if registry_id is not None:
            return await self._relay_registry(registry_id)
        async with self.db.read() as session:
            connection = await session.connection()
            registries = await repository.unpositioned_registries(connection)
        assigned = 0
        for waiting in registries:
            assigned += await self._relay_registry(waiting)
        return assigned

    async def _relay_registry(self, registry_id: str) -> int:
        assigned = 0
        while True:
            # A cheap look first (the partial index), so an idle inbox never takes the write lock.
            async with self.db.read() as session:
                waiting = (
                    await session.execute(
                        select(irx_message.c.id)
                        .where(
                            irx_message.c.registry_id == registry_id,
                            irx_message.c.direction == DIRECTION_OUT,
                            irx_message.c.position.is_(None),
                        )
                        .limit(1)
                    )
                ).first()
            if waiting is None:
                return assigned
            count = await self._number_batch(registry_id)
            if count:
                self.outbox.notify()  # the batch's doorbell event is committed: to the feed without a poll
            assigned += count
            if count < _BATCH:
                return assigned

    async def _number_batch(self, registry_id: str) -> int:
        key = self.signer.key
        key_thumbprint = thumbprint(key.public_jwk)
        async with self.db.connect() as connection:
            last = await repository.lock_cursor(connection, registry_id)
            if last is None:  # pragma: no cover - the cursor row is created with the registry
                raise RuntimeError(f"no inbox cursor for registry {registry_id}")
            pending = (
                (
                    await connection.execute(
                        select(irx_message.c.id, irx_message.c.envelope)
                        .where(
                            irx_message.c.registry_id == registry_id,
                            irx_message.c.direction == DIRECTION_OUT,
                            irx_message.c.position.is_(None),
                        )
                        .order_by(irx_message.c.id)
                        .limit(_BATCH)
                    )
                )
                .mappings()
                .all()
            )
            if not pending:
                return 0
            crashpoints.reach("before_relay_position")
            now = self.clock()
            rows = []
            for offset, row in enumerate(pending, 1):
                position = last + offset
                draft = {**row["envelope"], "seq": position, "sent_at": now}
                # Validated before signing: a malformed inbox message is a bug here, never a registry's problem.
                wire = IrxEnvelope.model_validate(draft).to_wire()
                rows.append(
                    {
                        "row_id": row["id"],
                        "new_position": position,
                        "new_envelope": wire,
                        "new_signature": sign(wire, key),
                        "new_kid": key.kid,
                        "new_thumbprint": key_thumbprint,
                        "new_at": now,
                    }
                )
            await connection.execute(
                update(irx_message)
                .where(irx_message.c.id == bindparam("row_id"))
                .values(
                    position=bindparam("new_position"),
                    envelope=bindparam("new_envelope"),
                    signature=bindparam("new_signature"),
                    kid=bindparam("new_kid"),
                    key_thumbprint=bindparam("new_thumbprint"),
                    positioned_at=bindparam("new_at"),
                ),
                rows,
            )
            last += len(pending)
            await connection.execute(
                update(irx_inbox_cursor)
                .where(irx_inbox_cursor.c.registry_id == registry_id)
                .values(last_position=last)
            )
            # In the numbering transaction, so each numbered batch is announced exactly once.
            party = registry_id[:3]
            doorbell = {"registry_id": registry_id, "party": party, "position": last}
            await self.outbox.publish(connection, "interregistry.inbox.available", doorbell, party=party)
        INBOX_LAST_POSITION.labels(registry_id).set(last)
        return len(pending)

    async def _run(self, interval: float) -> None:
        while True:
            # asyncio.timeout, not wait_for (kit/outbox.py says why: a cancellation must never be swallowed).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.relay()
            except Exception:  # the loop must outlive a transient DB failure; the next pass retries
                log.exception("irx_inbox_relay_failed")
                await asyncio.sleep(interval)

    def start(self, interval: float = 0.5) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(interval), name="irx-inbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
