"""Identity at the gateway: OAuth2 clients, tokens and their keys, and the rate limits of callers.

- `gateway.auth.token`: `POST /oauth2/token`, `GET /.well-known/jwks.json`, the `KeyRing` and the
  in-process `GatewayTokenVerifier` (which also refuses revoked clients).
- `gateway.auth.clients`: the client store, bootstrap, the revocation list and `/v1/clients`.
- `gateway.auth.ratelimit`: per-client token buckets and the `RateLimitedPrincipal` dependency.
"""

from gateway.auth.clients import ClientStore, RevocationList
from gateway.auth.ratelimit import RateLimitedPrincipal, RateLimiter
from gateway.auth.token import GatewayTokenVerifier, KeyRing, TokenService

__all__ = [
    "ClientStore",
    "GatewayTokenVerifier",
    "KeyRing",
    "RateLimitedPrincipal",
    "RateLimiter",
    "RevocationList",
    "TokenService",
]
