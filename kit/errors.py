"""Domain errors and their one rendering as RFC 9457 problems (validation, HTTP and unexpected errors too).

Services raise `DomainError` subclasses from their use cases; `install_problem_handlers` turns every
error an app can raise into `application/problem+json`, so a client never sees an HTML page or a bare
500 with a trace.
"""

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.problems import PROBLEM_MEDIA_TYPE, problem_type

__all__ = [
    "BadRequest",
    "Conflict",
    "DomainError",
    "Forbidden",
    "GatewayTimeout",
    "NotFound",
    "PreconditionFailed",
    "PreconditionRequired",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "install_problem_handlers",
    "internal_error_problem",
    "problem_response",
]

log = structlog.get_logger(__name__)


class DomainError(Exception):
    """An expected failure a client can act on. Subclasses fix `status` and a default `slug`."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title or self.title)
        self.detail = detail
        if slug:
            self.slug = slug
        if title:
            self.title = title
        self.headers = headers or {}
        self.extensions = extensions

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": problem_type(self.slug), "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class BadRequest(DomainError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(DomainError):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="a62-registry"'})
        super().__init__(detail, **kwargs)


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class PreconditionFailed(DomainError):
    status, slug, title = 412, "precondition-failed", "The resource changed since you read it"


class Unprocessable(DomainError):
    status, slug, title = 422, "unprocessable", "The request cannot be carried out"


class PreconditionRequired(DomainError):
    status, slug, title = 428, "precondition-required", "If-Match is required"


class TooManyRequests(DomainError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class ServiceUnavailable(DomainError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


class GatewayTimeout(DomainError):
    status, slug, title = 504, "upstream-timeout", "The service did not answer in time"


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Request too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        errors.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))})
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of `app` as a problem."""

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return problem_response(exc.to_problem(request.url.path), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = {
            "type": problem_type("validation-error"),
            "title": "The request is not valid",
            "status": 422,
            "detail": "One or more fields are missing or invalid; see `errors`.",
            "instance": request.url.path,
            "errors": _field_errors(exc),
        }
        return problem_response(body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        body: dict[str, Any] = {"type": problem_type(slug), "title": title, "status": exc.status_code}
        if exc.detail and exc.detail != title:
            body["detail"] = str(exc.detail)
        body["instance"] = request.url.path
        return problem_response(body, dict(exc.headers or {}))

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if _lost_a_race(exc):  # a concurrent writer took the same key or range first; we rolled back
            log.warning("concurrent_write_conflict", path=request.url.path, error=str(exc.orig))
            raced = Conflict(
                "A concurrent change took the same record first; nothing of this request was kept. Retry "
                "(same Idempotency-Key): the retry sees the other change.",
                slug="concurrent-change",
                headers={"Retry-After": "1"},
            )
            return problem_response(raced.to_problem(request.url.path), raced.headers)
        if exc.connection_invalidated:  # the connection died under the request: nothing was committed
            log.warning("database_connection_lost", path=request.url.path, error=str(exc.orig))
            lost = ServiceUnavailable(
                "The database connection was lost; nothing was acknowledged. Retry (same Idempotency-Key).",
                slug="database-unavailable",
                headers={"Retry-After": "1"},
            )
            return problem_response(lost.to_problem(request.url.path), lost.headers)
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(internal_error_problem(request.url.path))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(internal_error_problem(request.url.path))


#: PostgreSQL unique (23505) and exclusion (23P01) violations: two writers raced for one key or range.
_RACE_STATES = frozenset({"23505", "23P01"})


def _lost_a_race(exc: DBAPIError) -> bool:
    """A unique or exclusion violation the code did not expect: the loser of a race, safe to retry.

    Other integrity errors (foreign key, not null, check) are bugs and stay 500s.
    """
    if not isinstance(exc, IntegrityError):
        return False
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if state is not None:
        return str(state) in _RACE_STATES
    return "UNIQUE constraint failed" in str(exc.orig)  # SQLite says it only in words


def internal_error_problem(instance: str) -> dict[str, Any]:
    """The body of a 500: says nothing of the error itself (that goes to the log)."""
    return {
        "type": problem_type("internal-error"),
        "title": "Internal error",
        "status": 500,
        "detail": "The error was logged; nothing you sent was acknowledged.",
        "instance": instance,
    }
