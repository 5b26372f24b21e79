"""The reporting app: `create_app(settings)`."""

from typing import Any

from fastapi import FastAPI

from kit.app import create_app as create_service_app
from services.reporting.config import Settings
from services.reporting.router import router

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier) are for tests."""
    return create_service_app(
        settings or Settings(),
        title="Article 6.2 registry: Reporting",
        description="AEF tables from the registry's records, submissions, exports, consistency checks, public register.",
        routers=[router],
        outbox_metadata=None,
        **overrides,
    )
