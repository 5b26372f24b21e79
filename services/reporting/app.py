"""The reporting app: `create_app(settings)`."""

from typing import Any

from fastapi import FastAPI

from kit.app import create_app as create_service_app
from services.reporting.config import Settings
from services.reporting.consumer import Consumer
from services.reporting.public import public_router
from services.reporting.router import router

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier, peer_transports) are for tests.

    `app.state.consumer` is the read model's consumer: started with the app, polling the producers' feeds;
    `await app.state.consumer.catch_up()` drains them now.
    """
    settings = settings or Settings()

    async def start_consumer(app: FastAPI) -> None:
        if settings.consumer_enabled:
            app.state.consumer.start()

    async def stop_consumer(app: FastAPI) -> None:
        await app.state.consumer.stop()

    app = create_service_app(
        settings,
        title="Article 6.2 registry: Reporting",
        description="AEF tables from the registry's records, submissions, exports, consistency checks, public register.",
        routers=[router, public_router],
        outbox_metadata=None,
        on_startup=[start_consumer],
        on_shutdown=[stop_consumer],
        **overrides,
    )
    app.state.consumer = Consumer(app.state.db, app.state.peers, interval=settings.consumer_interval)
    return app
