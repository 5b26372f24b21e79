"""The one module that builds the gateway's HTTP clients to the services, and sends proxied requests.

One pooled `httpx.AsyncClient` per service, on the `httpx_aiohttp.AiohttpTransport`: under concurrency
httpx's own pool was about ten times slower than aiohttp for one proxy hop (DESIGN §6; httpx issue #3215).
Clients are created when the app starts and closed when it stops. Tests (and the in-process suite) pass
their own transport per service, e.g. `httpx.ASGITransport(app=service_app)`.

Failures map to problems and are counted in `registry_gateway_upstream_errors_total`:
the service cannot be reached (connection refused or connect timeout) → 503 `upstream-unavailable`;
no response head within `upstream_timeout_seconds` → 504 `upstream-timeout`; anything else broken on
the wire → 502 `upstream-error`. The aiohttp transport reports a refused connection as
`httpx.ConnectTimeout`, which is one more reason both connect failures mean "unavailable" here.
The time-to-response-head limit is enforced here with `asyncio.timeout` as well as by the transport, so it
holds for any transport (ASGI transports ignore httpx timeouts); a response body then streams for as long
as the service keeps sending within the read timeout.
"""

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import structlog
from httpx_aiohttp import AiohttpTransport

from gateway.config import Settings
from kit.errors import DomainError, GatewayTimeout, ServiceUnavailable
from kit.metrics import UPSTREAM_ERRORS

__all__ = ["UPSTREAM_NAMES", "BadGateway", "Upstreams"]

log = structlog.get_logger(__name__)

UPSTREAM_NAMES: tuple[str, ...] = ("party_sections", "transactions", "ars", "reporting")
_OPENAPI_TIMEOUT_SECONDS = 5.0


class BadGateway(DomainError):
    status, slug, title = 502, "upstream-error", "The service answered with a broken response"


def _base_urls(settings: Settings) -> dict[str, str]:
    return {name: settings.service_url(name) for name in UPSTREAM_NAMES}


class Upstreams:
    """The services behind the gateway: one client each, alive between `start()` and `aclose()`."""

    def __init__(
        self, settings: Settings, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
    ) -> None:
        unknown = set(transports or {}) - set(UPSTREAM_NAMES)
        if unknown:
            raise ValueError(f"unknown upstreams {sorted(unknown)}; known: {list(UPSTREAM_NAMES)}")
        self.settings = settings
        self.base_urls = _base_urls(settings)
        self._transports = dict(transports or {})
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._openapi: dict[str, dict[str, Any]] = {}
        self.timeout = httpx.Timeout(
            settings.upstream_timeout_seconds,
            connect=settings.upstream_connect_timeout_seconds,
            # Waiting for a pooled connection is load, not an unreachable service: allow the full timeout.
            pool=settings.upstream_timeout_seconds,
        )

    def _transport(self, name: str) -> httpx.AsyncBaseTransport:
        if name in self._transports:
            return self._transports[name]
        limits = httpx.Limits(
            max_connections=self.settings.upstream_max_connections,
            max_keepalive_connections=self.settings.upstream_max_connections,
        )
        return AiohttpTransport(limits=limits, trust_env=False)

    async def start(self) -> None:
        for name in UPSTREAM_NAMES:
            self._clients[name] = httpx.AsyncClient(
                transport=self._transport(name),
                base_url=self.base_urls[name],
                timeout=self.timeout,
                trust_env=False,
                follow_redirects=False,
            )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    def client(self, name: str) -> httpx.AsyncClient:
        try:
            return self._clients[name]
        except KeyError:
            raise ServiceUnavailable(
                f"The gateway is not connected to {name}.", slug="upstream-unavailable"
            ) from None

    async def send(
        self,
        name: str,
        method: str,
        raw_target: bytes,
        headers: Iterable[tuple[str, str]],
        content: bytes,
    ) -> httpx.Response:
        """Send one request to service `name`; the response is streamed (the caller must `aclose()` it).

        `raw_target` is the path and query exactly as the client sent them (already checked by the route
        table), so percent-encoding reaches the service unchanged.
        """
        client = self.client(name)
        base = httpx.URL(self.base_urls[name])
        url = base.copy_with(raw_path=base.raw_path.rstrip(b"/") + raw_target)
        # Built directly rather than with client.build_request: that would add httpx's default headers.
        request = httpx.Request(
            method,
            url,
            headers=list(headers),
            content=content,
            extensions={"timeout": self.timeout.as_dict()},
        )
        try:
            async with asyncio.timeout(self.settings.upstream_timeout_seconds):
                return await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            UPSTREAM_ERRORS.labels(name, "unavailable").inc()
            log.warning("upstream_unavailable", upstream=name, error=type(exc).__name__)
            raise ServiceUnavailable(
                f"The {name} service is unavailable; try again shortly.",
                slug="upstream-unavailable",
                title="Service unavailable",
                upstream=name,
            ) from None
        except (TimeoutError, httpx.TimeoutException) as exc:
            UPSTREAM_ERRORS.labels(name, "timeout").inc()
            log.warning("upstream_timeout", upstream=name, error=type(exc).__name__)
            raise GatewayTimeout(
                f"The {name} service did not answer within {self.settings.upstream_timeout_seconds:g} s.",
                upstream=name,
            ) from None
        except httpx.HTTPError as exc:
            UPSTREAM_ERRORS.labels(name, "error").inc()
            log.warning("upstream_error", upstream=name, error=type(exc).__name__)
            raise BadGateway(f"The {name} service answered with a broken response.", upstream=name) from None

    async def openapi_documents(self) -> dict[str, dict[str, Any]]:
        """Each service's OpenAPI document, fetched once it answers and cached; silent services are left out."""
        missing = [name for name in UPSTREAM_NAMES if name not in self._openapi and name in self._clients]
        if missing:
            fetched = await asyncio.gather(*(self._fetch_openapi(name) for name in missing))
            for name, document in zip(missing, fetched, strict=True):
                if document is not None:
                    self._openapi[name] = document
        return {name: self._openapi[name] for name in UPSTREAM_NAMES if name in self._openapi}

    async def _fetch_openapi(self, name: str) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(_OPENAPI_TIMEOUT_SECONDS):
                response = await self._clients[name].get(
                    "/openapi.json", headers={"accept": "application/json"}
                )
            if response.status_code != 200:
                return None
            document = response.json()
        except (TimeoutError, httpx.HTTPError, ValueError) as exc:
            log.info("upstream_openapi_unavailable", upstream=name, error=type(exc).__name__)
            return None
        return document if isinstance(document, dict) else None
