"""The gateway app: `create_app(settings, *, database=None, upstream_transports=None)`.

`app.state` exposes what tests and the in-process suite need: `key_ring` (`.active` signing key,
`.jwks()` for a service's `TokenVerifier`), `client_store`, `revocations`, `upstreams`,
`api_rate_limiter` and `token_rate_limiter`. Start-up order: bootstrap client, revoked ids, the
revocation refresher, then the upstream clients; shutdown reverses it.
"""

from collections.abc import Mapping

import httpx
import structlog
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.routing import Route as StarletteRoute

from contracts.roles import Role
from gateway.auth.clients import ClientStore, RevocationList
from gateway.auth.clients import router as clients_router
from gateway.auth.ratelimit import RateLimiter
from gateway.auth.token import GatewayTokenVerifier, KeyRing, TokenService
from gateway.auth.token import router as token_router
from gateway.config import Settings, client_secret_key
from gateway.routes import BodyLimitMiddleware, DropClientRequestIdMiddleware, openapi_endpoint, proxy_app
from gateway.upstream import UPSTREAM_NAMES, Upstreams
from kit.app import create_app as create_service_app
from kit.db import Database

__all__ = ["create_app"]

log = structlog.get_logger(__name__)

_DESCRIPTION = """\
The public API of the Article 6.2 International Registry and its Additional Registry Services.

Get a token with `POST /oauth2/token` (OAuth2 client credentials) and send it as
`Authorization: Bearer <token>`. Errors are RFC 9457 problems, except the token endpoint's RFC 6749 errors.
"""


async def _startup(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    store: ClientStore = app.state.client_store
    if settings.bootstrap_client_secret is not None:
        outcome = await store.ensure_bootstrap(
            settings.bootstrap_client_id, settings.bootstrap_client_secret.get_secret_value()
        )
        log.info("bootstrap_client", client_id=settings.bootstrap_client_id, outcome=outcome)
    else:
        log.warning("bootstrap_client_not_configured", hint="set REGISTRY_BOOTSTRAP_CLIENT_SECRET")
    if settings.service_client_secret is not None:
        # One client per service (`svc-<service>`, role service) for their calls to each other's /internal API.
        for service in UPSTREAM_NAMES:
            client_id = f"svc-{service}"
            outcome = await store.ensure_bootstrap(
                client_id,
                settings.service_client_secret.get_secret_value(),
                roles=(Role.SERVICE,),
                name=f"{service} service",
            )
            log.info("service_client", client_id=client_id, outcome=outcome)
    revocations: RevocationList = app.state.revocations
    await revocations.refresh(store)
    revocations.start(store, settings.revocation_refresh_seconds)
    await app.state.upstreams.start()


async def _shutdown(app: FastAPI) -> None:
    await app.state.upstreams.aclose()
    await app.state.revocations.stop()


def _serve_merged_openapi(app: FastAPI) -> None:
    # FastAPI registered its own /openapi.json; swap the endpoint in place so /docs keeps pointing at it.
    for index, route in enumerate(app.router.routes):
        if isinstance(route, StarletteRoute) and route.path == app.openapi_url:
            app.router.routes[index] = StarletteRoute(
                route.path, openapi_endpoint, methods=["GET", "HEAD"], include_in_schema=False
            )
            return
    raise RuntimeError("the FastAPI OpenAPI route was not found")


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    upstream_transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """The gateway; `database` and `upstream_transports` (per service name) are for tests."""
    settings = settings or Settings()
    key_ring = KeyRing.from_settings(settings)
    revocations = RevocationList()
    verifier = GatewayTokenVerifier(
        issuer=settings.token_issuer, audience=settings.token_audience, key_ring=key_ring, revoked=revocations
    )
    app = create_service_app(
        settings,
        title="Article 6.2 International Registry",
        description=_DESCRIPTION,
        routers=[token_router, clients_router],
        database=database,
        token_verifier=verifier,
        on_startup=[_startup],
        on_shutdown=[_shutdown],
        openapi_tags=[
            {"name": "auth", "description": "Tokens and their signing keys"},
            {"name": "clients", "description": "OAuth2 clients of the Secretariat and the Parties"},
        ],
    )
    store = ClientStore(app.state.db, client_secret_key(settings), revocations)
    api_limiter = RateLimiter("api", rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
    token_limiter = RateLimiter(
        "token", rate=settings.token_rate_limit_per_second, burst=settings.token_rate_limit_burst
    )
    app.state.key_ring = key_ring
    app.state.revocations = revocations
    app.state.client_store = store
    app.state.api_rate_limiter = api_limiter
    app.state.token_rate_limiter = token_limiter
    app.state.token_service = TokenService(
        settings=settings, store=store, key_ring=key_ring, limiter=token_limiter
    )
    app.state.upstreams = Upstreams(settings, upstream_transports)
    _serve_merged_openapi(app)
    # Only paths no gateway route knows are proxied, so GET /oauth2/token stays a 405 and /docs is never proxied.
    app.router.default = proxy_app
    # Innermost of the user middleware, so the request middleware still logs and counts its 413s.
    app.user_middleware.append(Middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes))
    # Outermost, so the request middleware never sees a client's X-Request-Id.
    app.add_middleware(DropClientRequestIdMiddleware)
    return app
