"""The transactions app: `create_app(settings)`."""

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI

from kit.app import create_app as create_service_app
from kit.idempotency import IdempotencyStore
from services.transactions.config import Settings
from services.transactions.directory import Directory
from services.transactions.interregistry import conformance_runs, reconciliation_router, sandbox
from services.transactions.interregistry.relay import InboxRelay
from services.transactions.interregistry.router import router as interregistry_router
from services.transactions.interregistry.service import Interregistry
from services.transactions.interregistry.signing import IrSigner
from services.transactions.interregistry.transfers import Transfers
from services.transactions.journal import JournalSealer
from services.transactions.models import idempotency_keys, metadata
from services.transactions.router import internal_router, router
from services.transactions.service import Ledgers

__all__ = ["create_app"]

log = structlog.get_logger(__name__)


async def _sweep(ledgers: Ledgers, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await ledgers.expire_pending()
        except Exception:  # the sweeper must outlive a transient failure
            log.exception("approval_sweep_failed")


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier, peer_transports) are for tests."""
    settings = settings or Settings()

    async def start(app: FastAPI) -> None:
        app.state.sealer.start()
        app.state.directory.start(settings.directory_follow_seconds)
        app.state.inbox_relay.start(settings.irx_relay_seconds)
        app.state.transfers.start(settings.irx_terminator_seconds)
        app.state.sweeper = asyncio.create_task(_sweep(app.state.ledgers, settings.approval_sweep_seconds))

    async def stop(app: FastAPI) -> None:
        await app.state.transfers.stop()
        await app.state.inbox_relay.stop()
        app.state.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app.state.sweeper
        await app.state.directory.stop()
        await app.state.sealer.stop()

    app = create_service_app(
        settings,
        title="Article 6.2 registry: Transactions",
        description="The ITMO ledger: blocks, transactions, checks, approvals, journal, holdings.",
        routers=[router, internal_router],
        outbox_metadata=metadata,
        on_startup=[start],
        on_shutdown=[stop],
        **overrides,
    )
    db = app.state.db
    app.state.sealer = JournalSealer(db)
    app.state.directory = Directory(
        app.state.peers,
        cache=settings.directory_cache,
        ttl=settings.directory_ttl_seconds,
        max_lag=settings.directory_max_lag_seconds,
    )
    app.state.ledgers = Ledgers(
        db,
        app.state.peers,
        app.state.outbox,
        IdempotencyStore(db, idempotency_keys, lease_seconds=settings.idempotency_lease_seconds),
        app.state.sealer,
        approval_timeout=timedelta(seconds=settings.approval_timeout_seconds),
        directory=app.state.directory,
    )
    app.include_router(interregistry_router)
    app.state.inbox_relay = InboxRelay(db, IrSigner(settings), app.state.outbox)
    app.state.interregistry = Interregistry(
        db, app.state.outbox, app.state.peers, app.state.inbox_relay, settings
    )
    app.state.transfers = Transfers(app.state.ledgers, app.state.interregistry)
    sandbox.install(app)  # §11 sandbox-only endpoints and faults (404 in production)
    # §8 reconciliation: routes, app.state.reconciliations and its schedule (deadlines, daily start).
    reconciliation_router.install(app, settings)
    conformance_runs.install(app)  # §11 conformance runs and the sandbox's reconciliation levers
    return app
