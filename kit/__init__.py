"""Shared runtime of every registry process.

Public surface (import from the submodules; this list is the map):

- `kit.app.create_app(settings, ...)`: FastAPI app with lifespan, problem rendering, request ids,
  `/livez`, `/readyz`, `/metrics`, and optionally the outbox feed.
- `kit.config.ServiceSettings`: `REGISTRY_*` settings, per-service database URL and port.
- `kit.db.Database`: async engine and sessions for PostgreSQL (asyncpg) and SQLite (aiosqlite,
  `BEGIN IMMEDIATE` for writes).
- `kit.errors`: the error hierarchy. `DomainError` is the base of every expected failure; its subclasses
  fix the HTTP status (`BadRequest` 400, `Unauthorized` 401, `Forbidden` 403, `NotFound` 404,
  `Conflict` 409, `PreconditionFailed` 412, `Unprocessable` 422, `PreconditionRequired` 428,
  `TooManyRequests` 429, `ServiceUnavailable` 503, `GatewayTimeout` 504) and carry a stable `slug`
  that ends the RFC 9457 `type`. Anything else raised is rendered as a 500 problem without details.
- `kit.jwt`: the one python-jose adapter (ES256 keys, JWKS, hardened verification); `kit.auth`: the
  `Principal` dependency built on it.
- `kit.idempotency`, `kit.outbox`, `kit.pagination`: the ledger-facing conventions of DESIGN §4–§6.
- `kit.logging`, `kit.metrics`, `kit.migrations`, `kit.serve`: operations.
"""

from kit.auth import CurrentPrincipal, Principal, TokenVerifier, require_roles
from kit.config import Environment, ServiceSettings
from kit.db import Database
from kit.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    GatewayTimeout,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)

__all__ = [
    "BadRequest",
    "Conflict",
    "CurrentPrincipal",
    "Database",
    "DomainError",
    "Environment",
    "Forbidden",
    "GatewayTimeout",
    "NotFound",
    "PreconditionFailed",
    "PreconditionRequired",
    "Principal",
    "ServiceSettings",
    "ServiceUnavailable",
    "TokenVerifier",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "require_roles",
]
