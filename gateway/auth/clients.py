"""The OAuth2 client store, the revocation list every authenticated request consults, and `/v1/clients`.

Secrets are 32 random bytes (urlsafe base64), shown once at creation and stored only as
HMAC-SHA256 under `REGISTRY_CLIENT_SECRET_KEY`; checks use `hmac.compare_digest`, and an unknown client
id still costs one HMAC so response times do not reveal which ids exist.

Who may manage clients (API.md "Auth"): a Secretariat admin any client; a party_admin only clients of its
own Party, never with `secretariat_admin` or `auditor` and never without a Party. Another Party's client is
answered 404 so its existence is not revealed. The allowed combinations of Party, roles and `registry_id`
are checked by `contracts.auth.check_client_roles` (through `ClientCreate`): a `registry` client stands
alone and carries a `registry_id` of its own Party. Whether that registry exists in the registry records
is owned by the transactions service (INTERREGISTRY §2.1), which checks on every protocol call that the
token's `registry_id` is a registered registry listing the client; the gateway checks only the format.

Bootstrap: on start the gateway makes sure the client `REGISTRY_BOOTSTRAP_CLIENT_ID` exists with
`secretariat_admin` and the secret `REGISTRY_BOOTSTRAP_CLIENT_SECRET`. If it exists with another secret,
its stored hash is replaced: operators rotate the bootstrap secret by changing the environment and
restarting. Rotation does not lift a revocation; to recover from a revoked bootstrap client, configure a
new bootstrap client id.

Revocation takes effect at once: the revoking process adds the id to its in-memory set right after the
commit, and every replica re-reads the revoked ids every `revocation_refresh_seconds` (default 1 s), so
all replicas refuse the client's tokens within about a second. Revocation is final, so the set only grows.
"""

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from contracts.auth import Client, ClientCreate, ClientCreated, check_client_roles
from contracts.pagination import DEFAULT_LIMIT, Page
from contracts.roles import Role
from gateway.auth.ratelimit import RateLimitedPrincipal
from gateway.models import oauth_clients
from kit.auth import Principal
from kit.db import Database
from kit.errors import Conflict, Forbidden, NotFound, Unprocessable
from kit.pagination import CursorQuery, LimitQuery, decode_cursor, page_of

__all__ = [
    "BOOTSTRAP_CLIENT_NAME",
    "ClientRecord",
    "ClientStore",
    "RevocationList",
    "router",
]

log = structlog.get_logger(__name__)

BOOTSTRAP_CLIENT_NAME = "Secretariat bootstrap client"
_HASH_PREFIX = "hmac-sha256:"
_PARTY_ADMIN_FORBIDDEN_ROLES = frozenset({Role.SECRETARIAT_ADMIN, Role.AUDITOR})


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; every stored time is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ClientRecord:
    """A stored client, without its secret hash."""

    client_id: str
    name: str
    party: str | None
    roles: tuple[Role, ...]
    registry_id: str | None
    created_at: datetime
    revoked_at: datetime | None

    def to_client(self) -> Client:
        return Client(
            client_id=self.client_id,
            name=self.name,
            party=self.party,
            roles=list(self.roles),
            registry_id=self.registry_id,
            created_at=self.created_at,
            revoked_at=self.revoked_at,
        )


def _record(row: Row[Any]) -> ClientRecord:
    created_at = _utc(row.created_at)
    assert created_at is not None
    return ClientRecord(
        client_id=row.client_id,
        name=row.name,
        party=row.party,
        roles=tuple(Role(role) for role in row.roles if role in Role._value2member_map_),
        registry_id=row.registry_id,
        created_at=created_at,
        revoked_at=_utc(row.revoked_at),
    )


class RevocationList:
    """Ids of revoked clients, answered from memory; refreshed from the database in the background."""

    def __init__(self) -> None:
        self._ids: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, *client_ids: str) -> None:
        self._ids = self._ids.union(client_ids)

    def merge(self, client_ids: Iterable[str]) -> None:
        # A union, never a replacement: a read that started before this process's own revocation committed
        # must not drop that id again.
        fresh = frozenset(client_ids)
        if not fresh <= self._ids:
            self._ids = self._ids | fresh

    async def refresh(self, store: "ClientStore") -> None:
        self.merge(await store.revoked_ids())

    def start(self, store: "ClientStore", interval: float) -> None:
        """Re-read the revoked ids every `interval` seconds until `stop()`."""

        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.refresh(store)
                except Exception as exc:  # keep the last known set; the next round retries
                    log.warning("revocation_refresh_failed", error=type(exc).__name__)

        self._task = asyncio.create_task(run(), name="gateway-revocation-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _managed_party(principal: Principal) -> str | None:
    """None when the caller manages every client (Secretariat), else the one Party it manages; 403 otherwise."""
    if principal.is_secretariat:
        return None
    if principal.party is not None and Role.PARTY_ADMIN in principal.roles:
        return principal.party
    raise Forbidden("Managing clients needs secretariat_admin, or party_admin for the Party's own clients.")


class ClientStore:
    """Use cases on OAuth2 clients; each opens its own database transaction."""

    def __init__(self, db: Database, secret_key: bytes, revocations: RevocationList) -> None:
        self.db = db
        self._key = secret_key
        self.revocations = revocations
        # Compared against when the client id is unknown, so that path costs the same HMAC work.
        self._decoy_hash = self.hash_secret(secrets.token_urlsafe(32))

    def hash_secret(self, secret: str) -> str:
        digest = hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()
        return _HASH_PREFIX + digest

    def _matches(self, stored_hash: str, secret: str) -> bool:
        return hmac.compare_digest(stored_hash.encode(), self.hash_secret(secret).encode())

    async def authenticate(self, client_id: str, secret: str) -> ClientRecord | None:
        """The active client whose id and secret these are, else None (unknown, wrong secret or revoked)."""
        row = None
        if 0 < len(client_id) <= 64:
            async with self.db.read() as session:
                row = (
                    await session.execute(select(oauth_clients).where(oauth_clients.c.client_id == client_id))
                ).first()
        matches = self._matches(row.secret_hash if row is not None else self._decoy_hash, secret)
        if row is None or not matches or row.revoked_at is not None:
            return None
        return _record(row)

    async def create(self, principal: Principal, body: ClientCreate) -> ClientCreated:
        party = _managed_party(principal)
        if party is not None:
            if body.party != party:
                raise Forbidden(f"A party_admin of {party} may create clients only for {party}.")
            refused = sorted(role.value for role in _PARTY_ADMIN_FORBIDDEN_ROLES.intersection(body.roles))
            if refused:
                raise Forbidden(f"A party_admin may not create clients with the roles {refused}.")
        # ClientCreate already ran this; run it again so no other path into the store can skip it.
        try:
            check_client_roles(body.party, body.roles, body.registry_id)
        except ValueError as exc:
            raise Unprocessable(str(exc), slug="invalid-client-roles") from None
        client_id = f"c_{secrets.token_hex(8)}"
        secret = secrets.token_urlsafe(32)
        created_at = datetime.now(UTC)
        async with self.db.transaction() as session:
            await session.execute(
                insert(oauth_clients).values(
                    client_id=client_id,
                    name=body.name,
                    party=body.party,
                    roles=[role.value for role in body.roles],
                    registry_id=body.registry_id,
                    secret_hash=self.hash_secret(secret),
                    created_at=created_at,
                    created_by=principal.client_id,
                )
            )
        log.info("client_created", new_client_id=client_id, new_client_party=body.party)
        return ClientCreated(
            client_id=client_id,
            client_secret=secret,
            name=body.name,
            party=body.party,
            roles=list(body.roles),
            registry_id=body.registry_id,
            created_at=created_at,
        )

    async def list_visible(self, principal: Principal, *, limit: int, after: str | None) -> Page[Client]:
        party = _managed_party(principal)
        statement = select(oauth_clients).order_by(oauth_clients.c.client_id).limit(limit + 1)
        if party is not None:
            statement = statement.where(oauth_clients.c.party == party)
        if after is not None:
            statement = statement.where(oauth_clients.c.client_id > after)
        async with self.db.read() as session:
            rows = (await session.execute(statement)).all()
        clients = [_record(row).to_client() for row in rows]
        return page_of(clients, limit=limit, key=lambda client: {"client_id": client.client_id})

    async def revoke(self, principal: Principal, client_id: str) -> Client:
        party = _managed_party(principal)
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(oauth_clients).where(oauth_clients.c.client_id == client_id).with_for_update()
                )
            ).first()
            if row is None or (party is not None and row.party != party):
                raise NotFound(f"No client {client_id!r} you can manage.", slug="client-not-found")
            if row.revoked_at is not None:
                raise Conflict(f"Client {client_id!r} is already revoked.", slug="client-already-revoked")
            await session.execute(
                update(oauth_clients)
                .where(oauth_clients.c.client_id == client_id)
                .values(revoked_at=now, revoked_by=principal.client_id)
            )
        self.revocations.add(client_id)
        log.info("client_revoked", revoked_client_id=client_id)
        return replace(_record(row), revoked_at=now).to_client()

    async def revoked_ids(self) -> set[str]:
        statement = select(oauth_clients.c.client_id).where(oauth_clients.c.revoked_at.is_not(None))
        async with self.db.read() as session:
            return set((await session.execute(statement)).scalars())

    async def ensure_bootstrap(
        self,
        client_id: str,
        secret: str,
        *,
        roles: tuple[Role, ...] = (Role.SECRETARIAT_ADMIN,),
        name: str = BOOTSTRAP_CLIENT_NAME,
    ) -> str:
        """Create a configured client (the Secretariat bootstrap client, a service's own client), or align its
        secret; "created", "updated" or "unchanged"."""
        for attempt in range(2):
            try:
                return await self._ensure_bootstrap_once(client_id, secret, roles, name)
            except IntegrityError:
                # Another replica inserted it at the same moment; the second round sees its row.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ensure_bootstrap_once(
        self, client_id: str, secret: str, roles: tuple[Role, ...], name: str
    ) -> str:
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(oauth_clients).where(oauth_clients.c.client_id == client_id).with_for_update()
                )
            ).first()
            if row is None:
                await session.execute(
                    insert(oauth_clients).values(
                        client_id=client_id,
                        name=name,
                        party=None,
                        roles=[role.value for role in roles],
                        registry_id=None,
                        secret_hash=self.hash_secret(secret),
                        created_at=datetime.now(UTC),
                        created_by=None,
                    )
                )
                return "created"
            if row.revoked_at is not None:
                log.warning("bootstrap_client_is_revoked", client_id=client_id)
            if self._matches(row.secret_hash, secret):
                return "unchanged"
            await session.execute(
                update(oauth_clients)
                .where(oauth_clients.c.client_id == client_id)
                .values(secret_hash=self.hash_secret(secret))
            )
            return "updated"


# ---- HTTP ------------------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1/clients", tags=["clients"])

_SECURED: dict[str, Any] = {"security": [{"oauth2": []}]}
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token"},
    403: {"description": "The caller may not manage clients (of this Party)"},
    429: {"description": "Rate limit reached; see Retry-After"},
}


def _store(request: Request) -> ClientStore:
    return request.app.state.client_store


Store = Annotated[ClientStore, Depends(_store)]
ClientIdPath = Annotated[str, Path(min_length=1, max_length=64, description="The client's id")]


@router.post(
    "",
    status_code=201,
    response_model=ClientCreated,
    responses=_PROBLEMS | {422: {"description": "Invalid body, or a Party/roles/registry_id combination"}},
    openapi_extra=_SECURED,
)
async def create_client(
    body: ClientCreate, principal: RateLimitedPrincipal, store: Store, response: Response
) -> ClientCreated:
    """Create a client; its secret is in this answer only (store it now)."""
    response.headers["Cache-Control"] = "no-store"
    return await store.create(principal, body)


@router.get("", response_model=Page[Client], responses=_PROBLEMS, openapi_extra=_SECURED)
async def list_clients(
    principal: RateLimitedPrincipal,
    store: Store,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[Client]:
    """The clients the caller may manage (all for the Secretariat, the Party's own for a party_admin)."""
    key = decode_cursor(cursor, fields=("client_id",))
    return await store.list_visible(principal, limit=limit, after=key["client_id"] if key else None)


@router.post(
    "/{client_id}/revoke",
    response_model=Client,
    responses=_PROBLEMS
    | {404: {"description": "No such client the caller may manage"}, 409: {"description": "Already revoked"}},
    openapi_extra=_SECURED,
)
async def revoke_client(client_id: ClientIdPath, principal: RateLimitedPrincipal, store: Store) -> Client:
    """Revoke a client: its tokens stop working at once, on every gateway replica within about a second."""
    return await store.revoke(principal, client_id)
