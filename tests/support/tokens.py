"""Mint access tokens the way the gateway does, for service-level tests."""

import time
import uuid
from collections.abc import Iterable

from contracts.roles import Role
from kit.auth import TokenVerifier
from kit.jwt import KeySet, SigningKey, sign_token

ISSUER = "a62-registry"
AUDIENCE = "a62-registry-api"


class TokenFactory:
    """Signs tokens with one key; `verifier()` gives a service the matching keys."""

    def __init__(self, key: SigningKey | None = None) -> None:
        self.key = key or SigningKey.generate()

    def jwks(self) -> dict:
        return {"keys": [self.key.public_jwk]}

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=KeySet(self.jwks()))

    def token(
        self,
        *,
        party: str | None,
        roles: Iterable[Role | str],
        client_id: str | None = None,
        registry_id: str | None = None,
        lifetime: int = 300,
        **overrides: object,
    ) -> str:
        now = int(time.time())
        client = client_id or f"test-{uuid.uuid4().hex[:8]}"
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": client,
            "client_id": client,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "scope": "",
            "party": party,
            "roles": [Role(r).value for r in roles],
        }
        if registry_id:
            claims["registry_id"] = registry_id
        claims.update(overrides)
        return sign_token(self.key, claims)

    def headers(self, **kwargs: object) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}  # type: ignore[arg-type]
