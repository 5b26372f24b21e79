"""The transactions app: `create_app(settings)`."""

from typing import Any

from fastapi import FastAPI

from kit.app import create_app as create_service_app
from services.transactions.config import Settings
from services.transactions.models import metadata
from services.transactions.router import router

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier) are for tests."""
    return create_service_app(
        settings or Settings(),
        title="Article 6.2 registry: Transactions",
        description="The ITMO ledger: blocks, transactions, checks, approvals, journal, holdings.",
        routers=[router],
        outbox_metadata=metadata,
        **overrides,
    )
