"""The ars app: `create_app(settings)`."""

from typing import Any

from fastapi import FastAPI

from kit.app import create_app as create_service_app
from services.ars.config import Settings
from services.ars.models import metadata
from services.ars.router import router

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier) are for tests."""
    return create_service_app(
        settings or Settings(),
        title="Article 6.2 registry: Additional registry services",
        description="Mitigation outcomes, authorizations, first transfers into the International Registry.",
        routers=[router],
        outbox_metadata=metadata,
        **overrides,
    )
