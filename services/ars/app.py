"""The ars app: `create_app(settings)`; the first-transfer resumer runs for the app's lifetime."""

from typing import Any

from fastapi import FastAPI

from kit.app import create_app as create_service_app
from kit.idempotency import IdempotencyStore
from services.ars.config import Settings
from services.ars.directory import Directory
from services.ars.models import idempotency_keys, metadata
from services.ars.router import router
from services.ars.saga import FirstTransferSaga
from services.ars.service import ArsService

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier, peer_transports) are for tests."""
    settings = settings or Settings()

    async def start(app: FastAPI) -> None:
        app.state.saga.start()

    async def stop(app: FastAPI) -> None:
        await app.state.saga.stop()

    app = create_service_app(
        settings,
        title="Article 6.2 registry: Additional registry services",
        description="Mitigation outcomes, authorizations, first transfers into the International Registry.",
        routers=[router],
        outbox_metadata=metadata,
        on_startup=[start],
        on_shutdown=[stop],
        **overrides,
    )
    db = app.state.db
    app.state.saga = FirstTransferSaga(db, app.state.peers, app.state.outbox, settings)
    app.state.ars = ArsService(
        db,
        Directory(app.state.peers),
        app.state.outbox,
        IdempotencyStore(db, idempotency_keys),
        app.state.saga,
    )
    return app
