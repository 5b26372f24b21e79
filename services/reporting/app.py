"""The reporting app: `create_app(settings)`."""

from typing import Any

from fastapi import FastAPI

from kit.app import create_app as create_service_app
from services.reporting.config import Settings
from services.reporting.consumer import Consumer
from services.reporting.feed import events_router
from services.reporting.public import public_router
from services.reporting.router import router
from services.reporting.webhooks import WebhookDispatcher, is_production, webhooks_router
from services.reporting.webhooks_secrets import secret_box

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier, peer_transports) are for tests.

    `app.state.consumer` is the read model's consumer: started with the app, polling the producers' feeds;
    `await app.state.consumer.catch_up()` drains them now. `app.state.webhooks` is the webhook delivery
    worker, started with the app too and woken whenever the consumer appends to the event feed.
    """
    settings = settings or Settings()

    async def start_consumer(app: FastAPI) -> None:
        if settings.consumer_enabled:
            app.state.consumer.start()
        if settings.webhooks_enabled:
            app.state.webhooks.start()

    async def stop_consumer(app: FastAPI) -> None:
        await app.state.webhooks.stop()
        await app.state.consumer.stop()

    app = create_service_app(
        settings,
        title="Article 6.2 registry: Reporting",
        description="AEF tables from the registry's records, submissions, exports, consistency checks, public register.",
        routers=[router, public_router, events_router, webhooks_router],
        outbox_metadata=None,
        on_startup=[start_consumer],
        on_shutdown=[stop_consumer],
        **overrides,
    )
    app.state.webhooks = WebhookDispatcher(
        app.state.db,
        production=is_production(settings.environment),
        interval=settings.webhook_interval,
        timeout=settings.webhook_timeout,
        secret_box=secret_box(
            settings.resolved_webhook_secret_keys(),
            production=is_production(settings.environment),
            data_dir=settings.data_dir,
        ),
    )
    app.state.consumer = Consumer(
        app.state.db,
        app.state.peers,
        interval=settings.consumer_interval,
        on_feed=app.state.webhooks.wake,
    )
    return app
