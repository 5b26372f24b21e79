"""Calls from one registry service to another's `/internal/*` API, with the caller's own service token.

Each service has an OAuth client at the gateway (`svc-<service>`, role `service`); `ServiceTokens` gets
its token with client credentials and keeps it until shortly before it expires. `Peers` holds one pooled
`httpx.AsyncClient` per peer service. A peer that cannot be reached, or answers 5xx, becomes a 503 problem
for our own caller (`ServiceUnavailable`), never a 500 and never a partial write: callers make their peer
reads before opening their own write transaction. Idempotent reads are retried briefly (tenacity).

Transports are looked up by name at first use from the mapping given to `Peers`, so an in-process test
can build every app first and fill the mapping after.
"""

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx
import structlog
from httpx_aiohttp import AiohttpTransport
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from kit.config import ServiceSettings
from kit.errors import ServiceUnavailable

__all__ = ["GATEWAY", "Peers", "ServiceTokens"]

log = structlog.get_logger(__name__)

#: Name under which the gateway's transport is looked up (for the token endpoint).
GATEWAY = "gateway"
_REFRESH_MARGIN_SECONDS = 60.0


class _Retryable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServiceTokens:
    """An access token for this service's own client, fetched once and renewed before expiry."""

    def __init__(self, settings: ServiceSettings, transports: Mapping[str, httpx.AsyncBaseTransport]) -> None:
        self.settings = settings
        self.transports = transports
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token and time.monotonic() < self._expires_at - _REFRESH_MARGIN_SECONDS:
            return self._token
        async with self._lock:
            if self._token and time.monotonic() < self._expires_at - _REFRESH_MARGIN_SECONDS:
                return self._token
            secret = self.settings.service_client_secret
            if secret is None:
                raise ServiceUnavailable(
                    "This service has no client secret to call other services (REGISTRY_SERVICE_CLIENT_SECRET).",
                    slug="service-credentials-missing",
                )
            try:
                async with httpx.AsyncClient(
                    base_url=self.settings.gateway_url, transport=self.transports.get(GATEWAY), timeout=5.0
                ) as client:
                    response = await client.post(
                        "/oauth2/token",
                        data={"grant_type": "client_credentials"},
                        auth=(self.settings.service_client_id, secret.get_secret_value()),
                    )
            except httpx.HTTPError as exc:
                raise ServiceUnavailable(
                    f"The gateway did not answer the token request ({type(exc).__name__}).",
                    slug="upstream-unavailable",
                ) from exc
            if response.status_code != 200:
                log.error(
                    "service_token_refused",
                    status=response.status_code,
                    client_id=self.settings.service_client_id,
                )
                raise ServiceUnavailable(
                    "The gateway refused this service's credentials.", slug="service-credentials-refused"
                )
            body = response.json()
            self._token = body["access_token"]
            self._expires_at = time.monotonic() + float(body.get("expires_in", 300))
            return self._token

    def forget(self) -> None:
        """Drop the cached token (after a peer answered 401, e.g. the key rotated)."""
        self._token = None


class Peers:
    """Pooled clients to the other services, authenticated as this service."""

    def __init__(
        self, settings: ServiceSettings, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
    ) -> None:
        self.settings = settings
        self.transports: Mapping[str, httpx.AsyncBaseTransport] = transports if transports is not None else {}
        self.tokens = ServiceTokens(settings, self.transports)
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, service: str) -> httpx.AsyncClient:
        client = self._clients.get(service)
        if client is None:
            limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
            # Over the network, the aiohttp transport as the gateway uses (DESIGN §6): httpx's own pool cost
            # the ledger's transfers a third of their CPU in peer lookups under concurrency.
            transport = self.transports.get(service) or AiohttpTransport(limits=limits, trust_env=False)
            client = httpx.AsyncClient(
                base_url=self.settings.service_url(service),
                transport=transport,
                timeout=httpx.Timeout(10.0, connect=2.0),
                limits=limits,
                trust_env=False,
            )
            self._clients[service] = client
        return client

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """The peer's answer (any 2xx/4xx); ServiceUnavailable when it is down or answers 5xx."""
        retry_reads = method.upper() in ("GET", "HEAD")
        attempts = 3 if retry_reads else 1
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        ):
            with attempt:
                try:
                    return await self._send(service, method, path, json=json, params=params)
                except _Retryable as failure:
                    if attempt.retry_state.attempt_number >= attempts:
                        raise ServiceUnavailable(
                            f"The {service} service is unavailable ({failure.reason}).",
                            slug="upstream-unavailable",
                        ) from failure
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, service: str, method: str, path: str, *, json: Any, params: Mapping[str, Any] | None
    ) -> httpx.Response:
        client = self._client(service)
        for renewal in (False, True):
            headers = {"Authorization": f"Bearer {await self.tokens.token()}"}
            try:
                response = await client.request(method, path, json=json, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise _Retryable(type(exc).__name__) from exc
            if response.status_code == 401 and not renewal:
                self.tokens.forget()
                continue
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}")
            return response
        return response

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
