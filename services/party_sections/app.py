"""The party_sections app: `create_app(settings)`."""

from typing import Any

from fastapi import FastAPI

from kit.app import create_app as create_service_app
from services.party_sections.config import Settings
from services.party_sections.models import metadata
from services.party_sections.router import router

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier) are for tests."""
    return create_service_app(
        settings or Settings(),
        title="Article 6.2 registry: Party sections",
        description="Parties, Party sections, accounts, cooperative approaches, authorized entities, NDC periods.",
        routers=[router],
        outbox_metadata=metadata,
        **overrides,
    )
