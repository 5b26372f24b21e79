"""The app factory every service and the gateway build on: lifespan, problems, request context, health, metrics."""

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, FastAPI
from sqlalchemy import MetaData
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.problems import problem_type
from kit.auth import TokenVerifier
from kit.config import ServiceSettings
from kit.db import Database
from kit.errors import install_problem_handlers, internal_error_problem, problem_response
from kit.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS, metrics_endpoint
from kit.outbox import Outbox, feed_router
from kit.service_client import Peers

__all__ = ["REQUEST_ID_HEADER", "Hook", "RequestContextMiddleware", "create_app"]

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
Hook = Callable[[FastAPI], Awaitable[None]]
log = structlog.get_logger("kit.access")


class RequestContextMiddleware:
    """Request id (kept from the gateway when well formed, else new), access log and HTTP metrics.

    Plain ASGI rather than BaseHTTPMiddleware: it sits on every request of the hot path.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.fullmatch(candidate) else None  # `$` allows a final \n
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                if status_holder["started"]:
                    raise
                # Answer the 500 here rather than in Starlette's outer ServerErrorMiddleware, so the log
                # line still carries the request id and the response its X-Request-ID header.
                log.exception("unhandled_error", path=scope["path"])
                await problem_response(internal_error_problem(scope["path"]))(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            status = status_holder["status"]
            HTTP_REQUESTS.labels(self.service, method, route_path, str(status)).inc()
            HTTP_REQUEST_SECONDS.labels(self.service, method, route_path).observe(elapsed)
            if route_path not in ("/livez", "/readyz", "/metrics"):
                log.info(
                    "request",
                    method=method,
                    path=scope["path"],
                    route=route_path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.clear_contextvars()


def create_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    database: Database | None = None,
    token_verifier: TokenVerifier | None = None,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    openapi_tags: list[dict[str, Any]] | None = None,
    outbox_metadata: MetaData | None = None,
    peer_transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """A FastAPI app with the registry's conventions; `database` defaults to the settings' URL.

    With `outbox_metadata` (a metadata holding `kit.outbox.outbox_tables`), the app publishes events:
    `app.state.outbox`, its relay running for the app's lifetime, and the feed at `/internal/v1/events`.
    `app.state.peers` calls the other services as this one (`kit.service_client`); `peer_transports`
    (by service name, and `gateway` for tokens) is for in-process tests.
    """
    db = database or Database(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        echo=settings.db_echo,
    )
    verifier = token_verifier or TokenVerifier.from_settings(settings)
    outbox = Outbox(db, settings.service_name, outbox_metadata) if outbox_metadata is not None else None
    peers = Peers(settings, peer_transports)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if verifier.jwks_url and not len(verifier.keys):
            await verifier.refresh(force=True)
        if outbox is not None:
            outbox.start()
        for hook in on_startup:
            await hook(app)
        try:
            yield
        finally:
            for hook in reversed(on_shutdown):
                await hook(app)
            if outbox is not None:
                await outbox.stop()
            await peers.aclose()
            await db.dispose()

    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=openapi_tags,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.token_verifier = verifier
    app.state.outbox = outbox
    app.state.peers = peers
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware, service=settings.service_name)

    @app.get("/livez", tags=["operations"], include_in_schema=False)
    async def livez() -> dict[str, str]:
        """The process is alive (no dependencies checked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """The process can serve: its database answers."""
        try:
            await request.app.state.db.ping()
        except Exception as exc:  # any failure to reach the DB means "not ready", never a 500
            return problem_response(
                {
                    "type": problem_type("not-ready"),
                    "title": "Not ready",
                    "status": 503,
                    "detail": f"database unreachable: {type(exc).__name__}",
                }
            )
        return JSONResponse({"status": "ready"})

    # An API route (not add_route) so the request scope names its route: counted and kept out of the log.
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    for router in routers:
        app.include_router(router)
    if outbox is not None:
        app.include_router(feed_router())
    return app
