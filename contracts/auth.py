"""OAuth2 and client-management wire models of the gateway (API.md "Auth"; DESIGN §3; INTERREGISTRY §2.2).

Who a client may be is decided here, once, by `check_client_roles`, so the gateway's create endpoint, its
bootstrap and any import path refuse the same combinations:

- a client without a Party is a Secretariat client and holds only Secretariat roles (`SECRETARIAT_ROLES`);
- a Party client has a Party code and never holds `secretariat_admin`;
- `registry` is a role of its own: never combined with another, always with a `registry_id` of the client's
  Party, and `registry_id` is refused for every other client.
"""

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from contracts.parties import PartyCode, RegistryId, registry_party
from contracts.roles import Role

__all__ = [
    "SECRETARIAT_ROLES",
    "AccessTokenClaims",
    "Client",
    "ClientCreate",
    "ClientCreated",
    "OAuthError",
    "OAuthErrorCode",
    "TokenResponse",
    "check_client_roles",
]

#: Roles a client without a Party (the Secretariat's) may hold.
SECRETARIAT_ROLES: frozenset[Role] = frozenset({Role.SECRETARIAT_ADMIN, Role.AUDITOR})


class TokenResponse(BaseModel):
    """200 answer of `POST /oauth2/token` (RFC 6749 §5.1)."""

    access_token: str = Field(min_length=1, description="A JWT signed ES256 by the gateway (RFC 9068)")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the RFC 6750 scheme name, not a secret
    expires_in: int = Field(ge=1, description="Lifetime of the token in seconds", examples=[900])
    scope: str = Field(description="Granted scopes, space-separated (may be empty)", examples=[""])


class OAuthErrorCode(StrEnum):
    """`error` codes of RFC 6749 §5.2."""

    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_GRANT = "invalid_grant"
    UNAUTHORIZED_CLIENT = "unauthorized_client"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    INVALID_SCOPE = "invalid_scope"


class OAuthError(BaseModel):
    """Error answer of `POST /oauth2/token` (RFC 6749 §5.2); not a problem document."""

    error: OAuthErrorCode
    error_description: str | None = Field(default=None, examples=["client authentication failed"])
    error_uri: str | None = None


def check_client_roles(party: str | None, roles: Iterable[Role], registry_id: str | None) -> None:
    """Refuse a combination of Party, roles and registry id no client may have; `ValueError` with reasons."""
    role_list = list(roles)
    role_set = set(role_list)
    problems: list[str] = []
    if not role_list:
        problems.append("a client needs at least one role")
    if len(role_set) != len(role_list):
        problems.append("roles must not repeat")
    if party is None:
        others = sorted(r.value for r in role_set - SECRETARIAT_ROLES)
        if others:
            problems.append(
                f"a client without a Party is a Secretariat client and may hold only "
                f"{sorted(r.value for r in SECRETARIAT_ROLES)}; give a Party for {others}"
            )
    elif Role.SECRETARIAT_ADMIN in role_set:
        problems.append("a Party client cannot hold secretariat_admin")
    if Role.SERVICE in role_set:
        problems.append("service clients are configured in the gateway, not created through the API")
    if Role.REGISTRY in role_set:
        if len(role_set) > 1:
            problems.append("the registry role cannot be combined with other roles")
        if registry_id is None:
            problems.append("registry_id is required for the registry role")
        elif party is not None and registry_party(registry_id) != party:
            problems.append(f"registry {registry_id} does not belong to Party {party}")
    elif registry_id is not None:
        problems.append("registry_id is only allowed for a client with the registry role")
    if problems:
        raise ValueError("; ".join(problems))


class ClientCreate(BaseModel):
    """Body of `POST /v1/clients`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        examples=["Ghana registry officer"]
    )
    party: PartyCode | None = Field(default=None, description="null for a Secretariat client")
    roles: list[Role] = Field(
        min_length=1, max_length=len(Role), examples=[["initiator"]], json_schema_extra={"uniqueItems": True}
    )
    registry_id: RegistryId | None = Field(
        default=None, description="Required with, and only with, the registry role"
    )

    @field_validator("roles")
    @classmethod
    def _unique(cls, roles: list[Role]) -> list[Role]:
        if len(set(roles)) != len(roles):
            raise ValueError("roles must not repeat")
        return roles

    @model_validator(mode="after")
    def _coherent(self) -> "ClientCreate":
        check_client_roles(self.party, self.roles, self.registry_id)
        return self


class _ClientView(BaseModel):
    client_id: str = Field(min_length=1, examples=["c_3f9a1b2c"])
    name: str
    party: PartyCode | None = Field(description="null for a Secretariat client")
    roles: list[Role]
    registry_id: RegistryId | None = None
    created_at: datetime


class ClientCreated(_ClientView):
    """201 answer of `POST /v1/clients`: the only time `client_secret` is shown."""

    client_secret: str = Field(min_length=1, description="Shown once; store it now")


class Client(_ClientView):
    """A client as listed by `GET /v1/clients` (never with its secret)."""

    revoked_at: datetime | None = Field(default=None, description="Set once revoked; its tokens stop at once")


class AccessTokenClaims(BaseModel):
    """Claims of a gateway access token: RFC 9068 plus `party`, `roles` and, for registries, `registry_id`.

    The JOSE header carries `typ: at+jwt`, `alg: ES256` and the `kid` of a key in `/.well-known/jwks.json`.
    """

    iss: str = Field(description="The gateway's issuer URL")
    sub: str = Field(description="The client id (client credentials grant: the client is the subject)")
    aud: str | list[str] = Field(description="The registry API audience")
    exp: int = Field(description="Expiry, seconds since the epoch")
    iat: int = Field(description="Issue time, seconds since the epoch")
    jti: str = Field(description="Unique token id")
    client_id: str
    scope: str = Field(default="", description="Granted scopes, space-separated")
    party: PartyCode | None = Field(description="The client's Party; null for the Secretariat")
    roles: list[Role]
    registry_id: RegistryId | None = Field(default=None, description="Only for registry clients")
