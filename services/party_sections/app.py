"""The party_sections app: `create_app(settings)`."""

from typing import Any

from fastapi import FastAPI

from contracts.problems import PROBLEM_MEDIA_TYPE
from kit.app import create_app as create_service_app
from services.party_sections.config import Settings
from services.party_sections.models import metadata
from services.party_sections.router import internal_router, router
from services.party_sections.service import PartySectionsService

__all__ = ["create_app"]

_TAGS = [
    {"name": "reference data", "description": "Parties and cooperative approaches"},
    {"name": "party sections", "description": "Section lifecycle (Secretariat), settings, NDC periods"},
    {"name": "accounts", "description": "IR accounts of a section and their status"},
    {"name": "authorized entities", "description": "Entities authorized by a Party (AEF Table 5)"},
    {"name": "internal", "description": "For the other registry services; never routed by the gateway"},
]


def _problems_as_problem_json(app: FastAPI) -> None:
    """Declare error answers as `application/problem+json`, the media type they are sent with.

    FastAPI files a response `model` under `application/json` (and a validation error under its own
    schema); every error here is an RFC 9457 problem, so the document says so.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        for item in document.get("paths", {}).values():
            for operation in item.values():
                if not isinstance(operation, dict):
                    continue
                for code, answer in operation.get("responses", {}).items():
                    content = answer.get("content")
                    if code[:1] in "45" and content and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = {"schema": {"$ref": "#/components/schemas/Problem"}}
                        del content["application/json"]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The service; `overrides` (database, token_verifier, peer_transports) are for tests."""
    app = create_service_app(
        settings or Settings(),
        title="Article 6.2 registry: Party sections",
        description="Parties, Party sections, accounts, cooperative approaches, authorized entities, NDC periods.",
        routers=[router, internal_router],
        outbox_metadata=metadata,
        openapi_tags=_TAGS,
        **overrides,
    )
    app.state.party_sections = PartySectionsService(app.state.db, app.state.outbox, app.state.peers)
    _problems_as_problem_json(app)
    return app
