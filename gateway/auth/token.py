"""The token endpoint (RFC 6749 §4.4 client credentials, RFC 9068 JWT access tokens) and the key ring.

`POST /oauth2/token` takes `grant_type=client_credentials` and an optional `scope` as
`application/x-www-form-urlencoded`, the client authenticated by HTTP Basic or by the form fields
`client_id`/`client_secret` (one method per request). Errors are RFC 6749 §5.2 JSON, not problems:
`invalid_request`, `unsupported_grant_type` and `invalid_scope` are 400, `invalid_client` is 401 with a
`WWW-Authenticate: Basic` challenge (HTTP requires one on every 401). Every answer is `no-store`.
The scope is a space-separated subset of the client's roles (all of them when absent); the token's
`roles` claim holds exactly the granted ones.

The key ring is the active ES256 signing key plus retired public keys (`REGISTRY_RETIRED_KEYS_FILE`, a
JWKS), all published at `/.well-known/jwks.json` and all accepted by the gateway's own verifier, so a key
rotation is: publish the new key as active and the old one as retired, wait for the longest token
lifetime and the services' JWKS cache, then drop the retired key. The gateway verifies tokens in-process
against the ring and refuses revoked clients (`GatewayTokenVerifier`).
"""

import base64
import binascii
import json
import time
import uuid
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from contracts.auth import OAuthError, OAuthErrorCode, TokenResponse
from contracts.problems import Problem
from contracts.roles import Role
from gateway.auth.clients import ClientRecord, ClientStore
from gateway.auth.ratelimit import RateLimiter
from gateway.config import Settings, signing_key
from kit.auth import Principal, TokenVerifier
from kit.errors import Unauthorized
from kit.jwt import KeySet, SigningKey, sign_token

__all__ = [
    "BASIC_REALM",
    "GatewayTokenVerifier",
    "KeyRing",
    "OAuthFailure",
    "TokenService",
    "router",
]

log = structlog.get_logger(__name__)

BASIC_REALM = "a62-registry"
GRANT_TYPE = "client_credentials"
_PUBLIC_JWK_MEMBERS = ("kty", "crv", "x", "y", "kid", "use", "alg")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

TOKENS_ISSUED = Counter("registry_gateway_tokens_issued_total", "Access tokens issued by the gateway")
TOKEN_ERRORS = Counter(
    "registry_gateway_token_errors_total", "Token requests refused, by OAuth error", ["error"]
)


# ---- key ring --------------------------------------------------------------------------------------------


def _load_retired(path: Path | None, active_kid: str) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read the retired keys file {path} as a JWKS: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise RuntimeError(f"the retired keys file {path} is not a JWKS ({{'keys': [...]}})")
    retired = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "EC" or entry.get("crv") != "P-256":
            raise RuntimeError(f"the retired keys file {path} may hold only EC P-256 public keys")
        if not all(isinstance(entry.get(name), str) for name in ("kid", "x", "y")):
            raise RuntimeError(f"every key in {path} needs kid, x and y")
        if "d" in entry:
            # Only the public half is ever published; the private member is dropped, not served.
            log.warning("retired_key_private_member_ignored", kid=entry["kid"])
        if entry["kid"] == active_kid:
            continue
        public = {name: entry[name] for name in _PUBLIC_JWK_MEMBERS if name in entry}
        retired.append({"use": "sig", "alg": "ES256"} | public)
    # Publish only what verifies: a key the key set would skip must not be served to the services either.
    broken = []
    for entry in retired:
        try:
            KeySet({"keys": [entry]})
        except ValueError:
            broken.append(entry["kid"])
    if broken:
        raise RuntimeError(f"the retired keys file {path} holds unusable ES256 public keys: {broken}")
    return retired


class KeyRing:
    """The active signing key and the retired public keys still published and accepted."""

    def __init__(self, active: SigningKey, retired: Sequence[dict[str, Any]] = ()) -> None:
        self.active = active
        self.retired = [dict(entry) for entry in retired]
        self.keys = KeySet(self.jwks())

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        active = signing_key(settings)
        return cls(active, _load_retired(settings.retired_keys_file, active.kid))

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (public keys only), active key first."""
        return {"keys": [dict(self.active.public_jwk), *(dict(entry) for entry in self.retired)]}


class GatewayTokenVerifier(TokenVerifier):
    """Verifies tokens against the key ring in-process (no JWKS fetch) and refuses revoked clients."""

    def __init__(self, *, issuer: str, audience: str, key_ring: KeyRing, revoked: Container[str]) -> None:
        super().__init__(issuer=issuer, audience=audience, keys=key_ring.keys)
        self.revoked = revoked

    async def verify(self, token: str) -> Principal:
        principal = await super().verify(token)
        if principal.client_id in self.revoked:
            raise Unauthorized(
                "The client of this token has been revoked.", slug="invalid-token", title="Invalid token"
            )
        return principal


# ---- token issuance --------------------------------------------------------------------------------------


class OAuthFailure(Exception):
    """A refused token request, answered as RFC 6749 §5.2 JSON."""

    def __init__(self, error: OAuthErrorCode, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    @property
    def status(self) -> int:
        return 401 if self.error is OAuthErrorCode.INVALID_CLIENT else 400

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = f'Basic realm="{BASIC_REALM}"'
        body = OAuthError(error=self.error, error_description=self.description)
        return JSONResponse(
            body.model_dump(mode="json", exclude_none=True), status_code=self.status, headers=headers
        )


@dataclass(frozen=True)
class TokenRequest:
    grant_type: str
    scope: str | None
    client_id: str | None
    client_secret: str | None


def _invalid_request(description: str) -> OAuthFailure:
    return OAuthFailure(OAuthErrorCode.INVALID_REQUEST, description)


def _invalid_client(description: str = "client authentication failed") -> OAuthFailure:
    return OAuthFailure(OAuthErrorCode.INVALID_CLIENT, description)


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("authenticate with HTTP Basic or the client_id/client_secret form fields")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid_client("malformed HTTP Basic credentials") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _invalid_client("malformed HTTP Basic credentials")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before the Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


async def _read_token_request(request: Request) -> TokenRequest:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise _invalid_request("send the parameters as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise _invalid_request("the form is not valid UTF-8 form encoding") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _invalid_request(f"parameter {name!r} is repeated")
        form[name] = value
    grant_type = form.get("grant_type")
    if not grant_type:
        raise _invalid_request("grant_type is required")
    if grant_type != GRANT_TYPE:
        raise OAuthFailure(OAuthErrorCode.UNSUPPORTED_GRANT_TYPE, "only client_credentials is supported")
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    authorization = request.headers.get("authorization")
    if authorization is not None:
        if client_secret is not None:
            raise _invalid_request("use one client authentication method: HTTP Basic or the form, not both")
        basic_id, client_secret = _basic_credentials(authorization)
        if client_id is not None and client_id != basic_id:
            raise _invalid_request("client_id in the form differs from the HTTP Basic client")
        client_id = basic_id
    return TokenRequest(grant_type, form.get("scope") or None, client_id or None, client_secret)


def _granted_roles(client: ClientRecord, scope: str | None) -> list[Role]:
    if scope is None:
        return list(client.roles)
    requested = scope.split(" ")
    if any(not part for part in requested):
        raise OAuthFailure(OAuthErrorCode.INVALID_SCOPE, "scope must be roles separated by single spaces")
    held = {role.value for role in client.roles}
    unknown = sorted(set(requested) - held)
    if unknown:
        raise OAuthFailure(OAuthErrorCode.INVALID_SCOPE, f"the client does not hold {unknown}")
    return [role for role in client.roles if role.value in requested]


class TokenService:
    """Authenticates clients and issues their access tokens."""

    def __init__(
        self, *, settings: Settings, store: ClientStore, key_ring: KeyRing, limiter: RateLimiter
    ) -> None:
        self.settings = settings
        self.store = store
        self.key_ring = key_ring
        self.limiter = limiter

    async def handle(self, request: Request) -> TokenResponse:
        token_request = await _read_token_request(request)
        remote = request.client.host if request.client else "unknown"
        client_id, secret = token_request.client_id, token_request.client_secret
        # Keyed before authentication: this bucket is what slows down guessing a client's secret. An id no
        # client can have (over 64 characters) counts against the address, so keys stay small.
        self.limiter.check(f"client:{client_id}" if client_id and len(client_id) <= 64 else f"addr:{remote}")
        if client_id is None or secret is None:
            raise _invalid_client("client authentication is required")
        client = await self.store.authenticate(client_id, secret)
        if client is None:
            raise _invalid_client()
        roles = _granted_roles(client, token_request.scope)
        return self.issue(client, roles)

    def issue(self, client: ClientRecord, roles: Sequence[Role]) -> TokenResponse:
        now = int(time.time())
        lifetime = self.settings.token_lifetime_seconds
        scope = " ".join(role.value for role in roles)
        claims: dict[str, Any] = {
            "iss": self.settings.token_issuer,
            "sub": client.client_id,
            "aud": self.settings.token_audience,
            "exp": now + lifetime,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "client_id": client.client_id,
            "scope": scope,
            "party": client.party,
            "roles": [role.value for role in roles],
        }
        if client.registry_id is not None:
            claims["registry_id"] = client.registry_id
        token = sign_token(self.key_ring.active, claims)
        TOKENS_ISSUED.inc()
        log.info("token_issued", client_id=client.client_id, scope=scope)
        return TokenResponse(access_token=token, expires_in=lifetime, scope=scope)


# ---- HTTP ------------------------------------------------------------------------------------------------

router = APIRouter(tags=["auth"])

_TOKEN_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": [GRANT_TYPE]},
                        "scope": {
                            "type": "string",
                            "description": "Space-separated roles to include; default: all the client's roles",
                        },
                        "client_id": {"type": "string", "description": "Instead of HTTP Basic"},
                        "client_secret": {"type": "string", "description": "Instead of HTTP Basic"},
                    },
                }
            }
        },
    },
    "security": [{"clientBasic": []}, {}],
}


@router.post(
    "/oauth2/token",
    response_model=TokenResponse,
    responses={
        400: {"model": OAuthError, "description": "invalid_request, unsupported_grant_type or invalid_scope"},
        401: {"model": OAuthError, "description": "invalid_client"},
        429: {"model": Problem, "description": "Too many token requests for this client; see Retry-After"},
    },
    openapi_extra=_TOKEN_FORM,
)
async def token(request: Request) -> JSONResponse:
    """Issue an access token to a client (OAuth2 client credentials grant)."""
    service: TokenService = request.app.state.token_service
    try:
        issued = await service.handle(request)
    except OAuthFailure as failure:
        TOKEN_ERRORS.labels(failure.error.value).inc()
        log.info("token_refused", error=failure.error.value)
        return failure.response()
    return JSONResponse(issued.model_dump(mode="json"), headers=_NO_STORE)


@router.get("/.well-known/jwks.json", responses={200: {"description": "A JWKS (RFC 7517)"}})
async def jwks(request: Request) -> JSONResponse:
    """The public keys that sign access tokens (active and retired during a rotation)."""
    key_ring: KeyRing = request.app.state.key_ring
    return JSONResponse(key_ring.jwks(), headers={"Cache-Control": "public, max-age=300"})
