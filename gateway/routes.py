"""The public route table, the proxy endpoint, the request-size limit and the merged OpenAPI document.

Only what the table lists reaches a service (API.md's path tables); anything else, `/internal/...` in
particular, is a 404 problem at the gateway. Paths with empty, `.` or `..` segments are refused before
matching (they are decoded first, so `%2e%2e` and `%2f` tricks are caught), because the HTTP client would
otherwise resolve dot segments and reach a path the table never allowed.

Every route needs a valid access token at the gateway except the public ones (`/v1/checks`,
`/v1/public/...`, `/v1/interregistry/version|jwks.json|codes`); a token sent to a public route is
verified all the same, so a revoked or forged token never reaches a service. The caller is checked
against the revocation list and its rate limit before the body is read.

Only allow-listed headers cross the gateway in either direction. Identity-looking headers a client
might send (`X-Registry-Party`, `X-Client-Id`, `X-Forwarded-For`, `X-Principal`, cookies, ...) are dropped:
services learn who calls only from the verified token. `X-Request-Id` is always the gateway's own (a
client's is discarded at the edge), so ids in every log were made by the registry.
"""

import copy
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from contracts.problems import problem_type
from gateway.upstream import BadGateway, Upstreams
from kit.auth import get_principal
from kit.errors import NotFound, problem_response
from kit.metrics import UPSTREAM_ERRORS

__all__ = [
    "FORWARDED_REQUEST_HEADERS",
    "FORWARDED_RESPONSE_HEADERS",
    "PUBLIC_METHODS",
    "ROUTES",
    "BodyLimitMiddleware",
    "DropClientRequestIdMiddleware",
    "Route",
    "RouteTable",
    "merged_openapi",
    "openapi_endpoint",
    "proxy",
    "proxy_app",
]

_BUFFERED_BODY_BYTES = 64 * 1024
READ = frozenset({"GET", "HEAD"})
ALL = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
POST = frozenset({"POST"})
PUBLIC_METHODS = READ

FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "accept",
        "if-match",
        "if-none-match",
        "idempotency-key",
        "irx-signature",
    }
)
# x-request-id is not copied: the gateway's request middleware sets its own on every answer.
# content-length is framing: it lets a download show progress and a truncated stream be detected.
FORWARDED_RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-disposition",
        "content-length",
        "etag",
        "repr-digest",
        "location",
        "retry-after",
        "idempotent-replayed",
        "cache-control",
        "link",
        "www-authenticate",
    }
)
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Route:
    """Public paths of one service: a pattern where `*` is one segment and a final `**` any number (0+)."""

    upstream: str
    path: str
    methods: frozenset[str]
    public: bool = False

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))

    def matches(self, segments: tuple[str, ...]) -> bool:
        """Whether a path (split into segments) is under this route; `{name}` template segments match `*`."""
        pattern = self.segments
        if pattern[-1] == "**":
            pattern = pattern[:-1]
            if len(segments) < len(pattern):
                return False
        elif len(segments) != len(pattern):
            return False
        for expected, actual in zip(pattern, segments, strict=False):
            if expected == "*":
                continue
            if expected != actual:
                return False
        return True


# The public surface of API.md and INTERREGISTRY.md, most specific first within a prefix.
ROUTES: tuple[Route, ...] = (
    # party_sections
    Route("party_sections", "/v1/parties/**", READ),
    Route("party_sections", "/v1/cooperative-approaches/**", ALL),
    Route("party_sections", "/v1/party-sections/**", ALL),
    Route("party_sections", "/v1/accounts/*/block", POST),
    Route("party_sections", "/v1/accounts/*/unblock", POST),
    Route("party_sections", "/v1/accounts/*/close", POST),
    # transactions
    Route("transactions", "/v1/transactions/**", ALL),
    Route("transactions", "/v1/accounts/*/holdings", READ),
    Route("transactions", "/v1/units/*", READ),
    Route("transactions", "/v1/checks/**", READ, public=True),
    Route("transactions", "/v1/admin/invariants", READ),
    Route("transactions", "/v1/admin/corrections/**", READ | POST),
    Route("transactions", "/v1/interregistry/version", READ, public=True),
    Route("transactions", "/v1/interregistry/jwks.json", READ, public=True),
    Route("transactions", "/v1/interregistry/codes", READ, public=True),
    Route("transactions", "/v1/interregistry/**", ALL),
    # ars
    Route("ars", "/v1/ars/**", ALL),
    # reporting
    Route("reporting", "/v1/reports/**", ALL),
    Route("reporting", "/v1/public/**", READ, public=True),
    Route("reporting", "/v1/events/**", READ),
    Route("reporting", "/v1/webhooks/**", ALL),
)


def _segments(path: str) -> tuple[str, ...] | None:
    """The segments of a decoded absolute path, or None when it has empty or dot segments."""
    if not path.startswith("/"):
        return None
    segments = tuple(path[1:].split("/"))
    if any(segment in ("", ".", "..") for segment in segments):
        return None
    return segments


class RouteTable:
    """Resolves (method, path) to the route of one service."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        # Index by the first two segments ("v1", resource) so a lookup scans a handful of routes.
        self._by_prefix: dict[tuple[str, ...], list[Route]] = {}
        for route in self.routes:
            self._by_prefix.setdefault(route.segments[:2], []).append(route)

    def resolve(self, method: str, path: str) -> Route:
        """The route for this request; 404 problem when none, 405 when the path exists for other methods."""
        segments = _segments(path)
        allowed: set[str] = set()
        if segments is not None:
            for route in self._by_prefix.get(segments[:2], ()):
                if route.matches(segments):
                    if method in route.methods:
                        return route
                    allowed |= route.methods
        if allowed:
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        raise NotFound(f"No public route {path}.", slug="no-route")

    def find(self, method: str, template: str) -> Route | None:
        """The route serving an OpenAPI path template (`{name}` segments), or None."""
        try:
            return self.resolve(method, template)
        except (NotFound, HTTPException):
            return None


ROUTE_TABLE = RouteTable(ROUTES)


# ---- proxy -----------------------------------------------------------------------------------------------


def _forwarded_headers(request: Request) -> list[tuple[str, str]]:
    headers = [(name, value) for name, value in request.headers.items() if name in FORWARDED_REQUEST_HEADERS]
    headers.append(("x-request-id", request.state.request_id))
    # The body is relayed byte for byte: ask for it uncompressed so no Content-Encoding has to be relayed.
    headers.append(("accept-encoding", "identity"))
    return headers


def _raw_target(scope: Scope) -> bytes:
    raw_path = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
    query = scope.get("query_string") or b""
    return raw_path + (b"?" + query if query else b"")


async def _relay(upstream_name: str, response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError:
        # The head is already sent: all we can do is cut the connection so the client sees a short body.
        UPSTREAM_ERRORS.labels(upstream_name, "stream").inc()
        raise
    finally:
        await response.aclose()


async def proxy(request: Request) -> Response:
    """Relay a request on the route table to its service and stream the answer back."""
    route = ROUTE_TABLE.resolve(request.method, request.scope["path"])
    request.scope["route"] = route  # labels the HTTP metrics by route pattern, not by raw path
    if not route.public or "authorization" in request.headers:
        principal = await get_principal(request)
        request.app.state.api_rate_limiter.check(principal.client_id)
    body = await request.body()
    upstreams: Upstreams = request.app.state.upstreams
    upstream_response = await upstreams.send(
        route.upstream, request.method, _raw_target(request.scope), _forwarded_headers(request), body
    )
    response: Response
    length = upstream_response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) <= _BUFFERED_BODY_BYTES:
        # Most answers are small JSON: relaying them whole skips the streaming machinery (a task group per
        # response), which costs more than the copy. Large ones (exports) still stream.
        try:
            content = await upstream_response.aread()
        except httpx.HTTPError as exc:
            UPSTREAM_ERRORS.labels(route.upstream, "stream").inc()
            raise BadGateway(f"The {route.upstream} service broke off its answer.") from exc
        finally:
            await upstream_response.aclose()
        response = Response(content, status_code=upstream_response.status_code)
    else:
        response = StreamingResponse(
            _relay(route.upstream, upstream_response),
            status_code=upstream_response.status_code,
            background=BackgroundTask(upstream_response.aclose),
        )
    response.raw_headers = [
        (name.lower(), value)
        for name, value in upstream_response.headers.raw
        if name.lower().decode("latin-1") in FORWARDED_RESPONSE_HEADERS
    ]
    return response


async def proxy_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app router's default: whatever no gateway route matched (so those keep their 405s) is proxied.

    Errors raised here still reach the app's problem handlers, which wrap the router.
    """
    if scope["type"] != "http":
        await WebSocketClose()(scope, receive, send)
        return
    response = await proxy(Request(scope, receive))
    await response(scope, receive, send)


# ---- request size and request id ------------------------------------------------------------------------


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"The request body is larger than {limit} bytes.")


class BodyLimitMiddleware:
    """413 problem for a body over `max_bytes`: at once from Content-Length, else while it is read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)  # rendered as a 413 problem by the app's handlers
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = {
            "type": problem_type("payload-too-large"),
            "title": "Request too large",
            "status": 413,
            "detail": f"The request body is larger than {self.max_bytes} bytes.",
            "instance": scope["path"],
        }
        # Connection: close, since the unread body would otherwise be taken for the next request.
        await problem_response(body, {"Connection": "close"})(scope, receive, send)


class DropClientRequestIdMiddleware:
    """Removes a client's X-Request-Id so the request middleware always makes the gateway's own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name == b"x-request-id" for name, _ in scope["headers"]):
            scope = dict(scope)
            scope["headers"] = [(name, value) for name, value in scope["headers"] if name != b"x-request-id"]
        await self.app(scope, receive, send)


# ---- OpenAPI ---------------------------------------------------------------------------------------------

_SECURITY_SCHEMES = {
    "oauth2": {
        "type": "oauth2",
        "description": "Client credentials; the token's roles decide what each call may do.",
        "flows": {"clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": {}}},
    },
    "clientBasic": {"type": "http", "scheme": "basic", "description": "client_id and client_secret"},
}


def _merge_upstream(document: dict[str, Any], name: str, upstream: dict[str, Any]) -> None:
    paths = document.setdefault("paths", {})
    for template, item in (upstream.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        kept: dict[str, Any] = {}
        for method, operation in item.items():
            if method not in _HTTP_METHODS or not isinstance(operation, dict):
                continue
            route = ROUTE_TABLE.find(method.upper(), template)
            if route is None or route.upstream != name:
                continue
            operation = copy.deepcopy(operation)
            if not route.public:
                operation.setdefault("security", [{"oauth2": []}])
            kept[method] = operation
        if kept:
            if "parameters" in item:
                kept["parameters"] = copy.deepcopy(item["parameters"])
            paths.setdefault(template, {}).update(kept)
    components = document.setdefault("components", {})
    for section, entries in (upstream.get("components") or {}).items():
        if isinstance(entries, dict):
            merged = components.setdefault(section, {})
            for key, value in entries.items():
                merged.setdefault(key, copy.deepcopy(value))  # the same contracts model under one name
    known_tags = {tag.get("name") for tag in document.get("tags", [])}
    for tag in upstream.get("tags") or []:
        if isinstance(tag, dict) and tag.get("name") not in known_tags:
            document.setdefault("tags", []).append(copy.deepcopy(tag))
            known_tags.add(tag.get("name"))


async def merged_openapi(app: FastAPI) -> dict[str, Any]:
    """The gateway's own operations plus every service operation the route table exposes."""
    document = copy.deepcopy(app.openapi())
    upstreams: Upstreams = app.state.upstreams
    for name, upstream in (await upstreams.openapi_documents()).items():
        _merge_upstream(document, name, upstream)
    document.setdefault("components", {}).setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
    return document


async def openapi_endpoint(request: Request) -> JSONResponse:
    """`GET /openapi.json`: the public contract, assembled from the gateway and the services."""
    return JSONResponse(await merged_openapi(request.app))
