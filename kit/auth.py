"""Bearer-token verification as a FastAPI dependency giving a `Principal`.

Every service verifies the gateway's tokens itself (defence in depth): the keys come from the gateway's
JWKS (fetched, cached, refetched at most every `refresh_interval` on an unknown `kid`) or are given inline.
Client revocation is enforced by the gateway on every request; services only ever see traffic that went
through it (deploy/ NetworkPolicy).
"""

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import structlog
from fastapi import Depends, Request

from contracts.roles import Role
from kit.errors import Forbidden, Unauthorized
from kit.jwt import KeySet, TokenInvalid, verify_token

__all__ = [
    "CurrentPrincipal",
    "Principal",
    "TokenVerifier",
    "bearer_token",
    "get_principal",
    "require_roles",
]

log = structlog.get_logger(__name__)

_VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: an OAuth2 client of one Party (or of the Secretariat when `party` is None)."""

    client_id: str
    party: str | None
    roles: frozenset[Role]
    registry_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    token_id: str | None = None
    expires_at: float = 0.0

    @property
    def is_secretariat(self) -> bool:
        return self.party is None and Role.SECRETARIAT_ADMIN in self.roles

    def has(self, *roles: Role) -> bool:
        return any(role in self.roles for role in roles)

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> "Principal":
        roles = frozenset(Role(role) for role in claims.get("roles", []) if role in Role._value2member_map_)
        scope = claims.get("scope") or ""
        return cls(
            client_id=str(claims.get("client_id") or claims["sub"]),
            party=claims.get("party"),
            roles=roles,
            registry_id=claims.get("registry_id"),
            scopes=frozenset(scope.split()),
            token_id=claims.get("jti"),
            expires_at=float(claims.get("exp", 0)),
        )


class TokenVerifier:
    """Verifies access tokens against the gateway's published keys."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: KeySet | None = None,
        jwks_url: str | None = None,
        refresh_interval: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys = keys or KeySet()
        self.jwks_url = jwks_url
        self.refresh_interval = refresh_interval
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()
        self._verified: dict[str, tuple[Principal, float, object]] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> "TokenVerifier":
        keys = KeySet(json.loads(settings.jwks_json)) if settings.jwks_json else None
        return cls(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            keys=keys,
            jwks_url=settings.jwks_url,
        )

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch the JWKS again (at most once per `refresh_interval` unless forced); True if keys changed."""
        if not self.jwks_url:
            return False
        async with self._lock:
            if not force and time.monotonic() - self._last_fetch < self.refresh_interval:
                return False
            self._last_fetch = time.monotonic()
            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(self.jwks_url)
                    response.raise_for_status()
                    document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("jwks_fetch_failed", url=self.jwks_url, error=type(exc).__name__)
                # Retry within a second rather than a whole interval: the gateway may still be starting.
                self._last_fetch = time.monotonic() - self.refresh_interval + 1.0
                return False
            before = set(k["kid"] for k in self.keys.document["keys"])
            try:
                self.keys.replace(document)
            except ValueError as exc:  # not a usable JWKS: keep the keys we have
                log.warning("jwks_rejected", url=self.jwks_url, error=str(exc))
                return False
            return before != set(k["kid"] for k in self.keys.document["keys"])

    async def verify(self, token: str) -> Principal:
        # A token is verified once per process: the signature check is most of an authenticated request's
        # cost, and clients reuse a token for its whole life. Expiry is still checked on every use, and the
        # cache is emptied whenever the key set changes, so a withdrawn key stops its tokens at once.
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and cached[1] > now and cached[2] is self.keys.document:
            return cached[0]
        principal = await self._verify_uncached(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (principal, principal.expires_at, self.keys.document)
        return principal

    async def _verify_uncached(self, token: str) -> Principal:
        try:
            claims = verify_token(token, self.keys, issuer=self.issuer, audience=self.audience)
        except TokenInvalid as exc:
            if str(exc) != "unknown key id" or not self.jwks_url:
                raise Unauthorized(str(exc), slug="invalid-token", title="Invalid token") from exc
            # Verify again even when this call did not fetch: a concurrent request may just have
            # fetched the key (refresh() is throttled, and waiters on its lock get False).
            await self.refresh()
            try:
                claims = verify_token(token, self.keys, issuer=self.issuer, audience=self.audience)
            except TokenInvalid as again:
                raise Unauthorized(str(again), slug="invalid-token", title="Invalid token") from again
        return Principal.from_claims(claims)


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an access token from POST /oauth2/token as `Authorization: Bearer <token>`.")
    return token.strip()


async def get_principal(request: Request) -> Principal:
    """The verified caller; 401 problem without a valid token."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = await verifier.verify(bearer_token(request))
    request.state.principal = principal
    structlog.contextvars.bind_contextvars(client_id=principal.client_id, party=principal.party)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_roles(*roles: Role) -> Any:
    """A dependency: the caller must hold one of `roles` (403 problem otherwise)."""

    async def _check(principal: CurrentPrincipal) -> Principal:
        if not principal.has(*roles):
            raise Forbidden(f"This needs one of the roles: {', '.join(sorted(r.value for r in roles))}.")
        return principal

    return Depends(_check)
