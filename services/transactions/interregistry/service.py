"""Use cases of the inter-registry protocol (INTERREGISTRY §2–§4): registry records and their lifecycle, the
acceptance pipeline every registry→IR message goes through, `hello`, the inbox and its acknowledgement, and
the message log.

The pipeline (`Interregistry.receive`) is the §3 acceptance order, first failure wins:

1. the token is a `registry` client whose `registry_id` is the envelope's `from` and names a registered
   registry that lists the client (§2.2, 1004); the registry's status allows the message type (3001);
2. the envelope parses at its version (1001/1002/1003), `Idempotency-Key` = `message_id` and the type is the
   endpoint's (1003), `to` is the IR and `env` the IR's (1011);
3. the `IRX-Signature` verifies against the registry's keys: inline `jwks` (sandbox) or its `jwks_url`
   through a per-registry `JwksCache` that refetches once on an unknown kid (1005 missing, 1006 invalid);
   `signing: optional` (sandbox only) and `hello` may go unsigned, but a signature sent is always checked;
4. a stored `message_id` with the same body hash returns the stored status and body (no effect, whatever the
   seq); with another body 1008;
5. `sent_at` at most 300 s ahead of the IR's clock (1009) and at most 24 h old (1010);
6. `seq` above the registry's `last_seq_in` (1007 with `last_seq`);
7. in one DB transaction: `last_seq_in = seq` by compare-and-set, the message type's processor, the key
   seen, and the message with its answer. A lost compare-and-set rolls back and answers 1007 (or the stored
   answer, when the winner was the same message).

Refusals of steps 1–6, and a processor's `DomainError`, store nothing and consume no seq: they are logged
(`irx_message_refused`) and counted (`irx_refusals_total{code}`), which is where an operator or the
conformance kit's hygiene check looks for them. Later message types (transfers, reconciliation) reuse
`receive` with a processor of their own; a processor returns the `Answer` to store (a recorded rejection is
an answer too) or raises to refuse without recording.
"""

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.interregistry import (
    CURRENT_VERSION,
    IR_ADDRESS,
    PROTOCOL,
    REGISTRY_TRANSITIONS,
    SUPPORTED_VERSIONS,
    UNSIGNED_MESSAGE_TYPES,
    EnvelopeRefused,
    HelloRequest,
    HelloResponse,
    InboxAck,
    InboxAcked,
    InboxState,
    IrxCode,
    IrxEnvelope,
    IrxEnvironment,
    IrxMessageType,
    KeyRevocation,
    RegistryCreate,
    RegistryKey,
    RegistryKeyPage,
    RegistryPatch,
    RegistryPublic,
    RegistryRecord,
    RegistryStatus,
    RegistryStatusChanged,
    SigningPolicy,
    allowed_message_types,
    code_definition,
    negotiate_version,
    parse_envelope,
    problem_slug,
)
from contracts.pagination import Page
from contracts.roles import Role
from kit.auth import Principal
from kit.db import Database
from kit.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    ServiceUnavailable,
    Unprocessable,
)
from kit.jws import (
    CanonicalizationError,
    JwksCache,
    JwksUnavailable,
    SignatureInvalid,
    VerifiedSignature,
    body_sha256,
    loads,
    verify,
)
from kit.jwt import KeySet
from kit.outbox import Outbox
from kit.pagination import decode_cursor, encode_cursor
from kit.service_client import Peers
from services.transactions.config import Settings
from services.transactions.interregistry import repository
from services.transactions.interregistry.models import DIRECTION_IN, DIRECTION_OUT
from services.transactions.interregistry.relay import InboxRelay
from services.transactions.interregistry.views import MessageLogEntry, MessageLogPage

__all__ = [
    "IRX_REFUSALS",
    "MAX_SENT_AT_AGE",
    "MAX_SENT_AT_LEAD",
    "Answer",
    "Interregistry",
    "IrxRefused",
    "Processor",
    "Received",
    "etag",
]

log = structlog.get_logger(__name__)

IRX_REFUSALS = Counter(
    "irx_refusals_total",
    "Registry messages refused and not recorded (§3): by IRX code, or problem slug when a processor refused",
    ["code"],
)
IRX_CLOCK_SKEW = Gauge(
    "irx_clock_skew_ms", "Clock skew a registry reported in its last hello", ["registry_id"]
)

#: §3 step 5: how far ahead of the IR's clock, and how old, a new message's `sent_at` may be.
MAX_SENT_AT_LEAD = timedelta(seconds=300)
MAX_SENT_AT_AGE = timedelta(hours=24)

Row = Mapping[Any, Any]  # a registry row (SQLAlchemy RowMapping), or a dict holding at least its id


class IrxRefused(DomainError):
    """A message refused with a catalogue code (RFC 9457, `type` …/message-refused, extension `code`)."""

    def __init__(self, code: IrxCode, detail: str, **extensions: Any) -> None:
        definition = code_definition(code)
        self.status = definition.http_status or 400
        super().__init__(
            detail, slug=problem_slug(code), title=definition.title, code=int(code), **extensions
        )
        self.code = code


@dataclass(frozen=True)
class Answer:
    """What the IR answers a message with; stored with the message and returned again on a replay."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True)
class Received:
    """A message that passed steps 1–6, handed to its processor inside the accepting transaction."""

    registry: Row  # the registry row as locked by the transaction (last_seq_in already moved)
    envelope: IrxEnvelope
    body: BaseModel
    document: dict[str, Any]  # the envelope exactly as received (what the signature covers)
    received_at: datetime


Processor = Callable[[AsyncConnection, Received], Awaitable[Answer]]


class _LostSequenceRace(Exception):
    """The compare-and-set of `last_seq_in` lost to a concurrent message of the same registry."""


def etag(version: int) -> str:
    """The strong ETag of a registry record version."""
    return f'"{version}"'


def _if_match_holds(header: str, version: int) -> bool:
    # Lenient on syntax as party_sections is (a bare `3`, or W/"3" from a proxy): our tags are versions.
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == str(version):
            return True
    return False


def _utc(moment: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were stored in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _record(row: Row) -> RegistryRecord:
    return RegistryRecord(
        registry_id=row["registry_id"],
        party=row["party"],
        name=row["name"],
        status=RegistryStatus(row["status"]),
        environment=IrxEnvironment(row["environment"]),
        jwks_url=row["jwks_url"],
        jwks=row["jwks"],
        signing=SigningPolicy(row["signing"]),
        response_timeout_s=row["response_timeout_s"],
        contacts=row["contacts"] or [],
        webhook_url=row["webhook_url"],
        version=row["version"],
        last_seq_received=row["last_seq_in"],
        clock_skew_ms=row["clock_skew_ms"],
        clients=list(row["clients"] or []),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
    )


def _public(row: Row) -> RegistryPublic:
    return RegistryPublic(
        registry_id=row["registry_id"],
        party=row["party"],
        name=row["name"],
        status=RegistryStatus(row["status"]),
    )


def _require_listed(row: Row, principal: Principal) -> None:
    """§2.2: only a client listed on the registry record speaks for it (1004), whatever its token claims."""
    if principal.client_id not in (row["clients"] or []):
        raise IrxRefused(
            IrxCode.SENDER_MISMATCH,
            f"Client {principal.client_id} is not listed on the record of {row['registry_id']}.",
        )


def _key(row: Row) -> RegistryKey:
    return RegistryKey(
        registry_id=row["registry_id"],
        kid=row["kid"],
        thumbprint=row["thumbprint"],
        jwk=row["jwk"],
        first_seen=_utc(row["first_seen"]) if row["first_seen"] else None,
        last_seen=_utc(row["last_seen"]) if row["last_seen"] else None,
        revoked_at=_utc(row["revoked_at"]) if row["revoked_at"] else None,
        revoked_by=row["revoked_by"],
        revocation_note=row["revocation_note"],
    )


def _message_type(document: object) -> IrxMessageType | None:
    if not isinstance(document, dict):
        return None
    try:
        return IrxMessageType(str(document.get("type")))
    except ValueError:
        return None


class Interregistry:
    """The inter-registry use cases of one transactions process (`app.state.interregistry`)."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        peers: Peers,
        relay: InboxRelay,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jwks_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.peers = peers
        self.relay = relay
        self.settings = settings
        self.env = settings.irx_env
        self.clock = clock
        self.jwks_transport = jwks_transport
        # §2.3: an unknown kid refetches a registry's JWKS at most once a minute (tests shorten it).
        self.jwks_refetch_seconds = settings.irx_jwks_refetch_seconds
        self._jwks: dict[str, JwksCache] = {}

    # ---- visibility ----------------------------------------------------------------------------------------

    @staticmethod
    def _is_registry(principal: Principal, registry_id: str | None = None) -> bool:
        if not principal.has(Role.REGISTRY) or not principal.registry_id:
            return False
        return registry_id is None or principal.registry_id == registry_id

    def _sees_all(self, principal: Principal, registry_id: str) -> bool:
        return principal.is_secretariat or self._is_registry(principal, registry_id)

    # ---- registry records (§2.1) ---------------------------------------------------------------------------

    async def _check_section_clash(self, party: str, registry_id: str) -> None:
        """409 when an IR Party section already uses the id (asked of party_sections; DESIGN §1)."""
        response = await self.peers.request("party_sections", "GET", f"/internal/v1/party-sections/{party}")
        if response.status_code == 404:
            return
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"party_sections answered {response.status_code} when asked about section {party}.",
                slug="upstream-unavailable",
            )
        if response.json().get("registry_id") == registry_id:
            raise Conflict(
                f"{registry_id} is the registry id of the IR Party section of {party}.",
                slug="registry-id-in-use",
                registry_id=registry_id,
            )

    async def create_registry(self, body: RegistryCreate) -> RegistryRecord:
        if body.environment is not self.env:
            raise Unprocessable(
                f"This IR runs the {self.env.value} environment; a {body.environment.value} registry"
                " cannot connect to it.",
                slug="wrong-environment",
            )
        await self._check_section_clash(body.party, body.registry_id)
        now = self.clock()
        values = {
            "registry_id": body.registry_id,
            "party": body.party,
            "name": body.name,
            "environment": body.environment.value,
            "status": RegistryStatus.ONBOARDING.value,
            "jwks_url": str(body.jwks_url) if body.jwks_url else None,
            "jwks": body.jwks,
            "signing": body.signing.value,
            "response_timeout_s": body.response_timeout_s,
            "contacts": [contact.model_dump(mode="json") for contact in body.contacts],
            "webhook_url": str(body.webhook_url) if body.webhook_url else None,
            "clients": sorted(set(body.clients)),
            "version": 1,
            "last_seq_in": 0,
            "acked_position": 0,
            "clock_skew_ms": None,
            "skew_flagged": False,
            "created_at": now,
            "updated_at": now,
            "status_changed_at": now,
        }
        conflict = Conflict(
            f"Registry {body.registry_id} already exists.",
            slug="registry-id-in-use",
            registry_id=body.registry_id,
        )
        try:
            async with self.db.connect() as connection:
                if await repository.get_registry(connection, body.registry_id) is not None:
                    raise conflict
                await repository.insert_registry(connection, values)
                row = await repository.get_registry(connection, body.registry_id)
        except IntegrityError:  # a concurrent create of the same id committed first
            raise conflict from None
        assert row is not None
        log.info("irx_registry_created", registry_id=body.registry_id, environment=body.environment.value)
        return _record(row)

    async def _row(self, registry_id: str) -> Row:
        async with self.db.read() as session:
            row = await repository.get_registry(await session.connection(), registry_id)
        if row is None:
            raise NotFound(f"No registry {registry_id}.", slug="registry-not-found")
        return row

    async def get_registry(self, principal: Principal, registry_id: str) -> RegistryRecord | RegistryPublic:
        row = await self._row(registry_id)
        return _record(row) if self._sees_all(principal, registry_id) else _public(row)

    async def list_registries(
        self, principal: Principal, *, limit: int, cursor: str | None
    ) -> Page[RegistryRecord | RegistryPublic]:
        key = decode_cursor(cursor, fields=["registry_id"])
        async with self.db.read() as session:
            rows = await repository.list_registries(
                await session.connection(), after=key["registry_id"] if key else None, limit=limit + 1
            )
        items: list[RegistryRecord | RegistryPublic] = [
            _record(row) if self._sees_all(principal, row["registry_id"]) else _public(row)
            for row in rows[:limit]
        ]
        next_cursor = (
            encode_cursor({"registry_id": rows[limit - 1]["registry_id"]}) if len(rows) > limit else None
        )
        return Page[RegistryRecord | RegistryPublic](items=items, next_cursor=next_cursor)

    async def patch_registry(
        self, principal: Principal, registry_id: str, if_match: str | None, body: RegistryPatch
    ) -> RegistryRecord:
        changes = body.model_dump(mode="json", exclude_unset=True)
        if not principal.is_secretariat:
            if not self._is_registry(principal, registry_id):
                raise Forbidden("Only the Secretariat or the registry itself changes a registry record.")
            refused = sorted(set(changes) - RegistryPatch.REGISTRY_EDITABLE)
            if refused:
                raise Forbidden(
                    f"A registry may change only jwks_url and webhook_url of its record, not {', '.join(refused)}."
                )
        if if_match is None or not if_match.strip():
            raise PreconditionRequired(
                "Send If-Match with the registry's ETag (GET /v1/interregistry/registries/{id}) to change it."
            )
        for name in ("name", "signing", "response_timeout_s", "contacts"):
            if name in changes and changes[name] is None:
                raise Unprocessable(f"{name} cannot be removed.", slug="invalid-registry-change")
        async with self.db.connect() as connection:
            row = await repository.get_registry(connection, registry_id, lock=True)
            if row is None:
                raise NotFound(f"No registry {registry_id}.", slug="registry-not-found")
            if not _if_match_holds(if_match, row["version"]):
                raise PreconditionFailed(
                    f"The registry record changed since you read it: its ETag is now {etag(row['version'])}.",
                    headers={"ETag": etag(row["version"])},
                    current_etag=etag(row["version"]),
                )
            try:
                body.check_against(IrxEnvironment(row["environment"]))
            except ValueError as exc:
                raise Unprocessable(str(exc), slug="invalid-registry-change") from None
            changes.update(version=row["version"] + 1, updated_at=self.clock())
            await repository.update_registry(connection, registry_id, changes, version=row["version"])
            updated = await repository.get_registry(connection, registry_id)
        assert updated is not None
        if "jwks_url" in changes:
            self._jwks.pop(registry_id, None)  # keys of the old URL must not verify for the new one
        return _record(updated)

    async def transition(
        self,
        registry_id: str,
        action: str,
        *,
        note: str | None = None,
        conformance_run_id: str | None = None,
    ) -> RegistryRecord:
        """`/test`, `/activate`, `/suspend`, `/reactivate`, `/disconnect` (secretariat_admin)."""
        sources, target = REGISTRY_TRANSITIONS[action]
        now = self.clock()
        async with self.db.connect() as connection:
            row = await repository.get_registry(connection, registry_id, lock=True)
            if row is None:
                raise NotFound(f"No registry {registry_id}.", slug="registry-not-found")
            current = RegistryStatus(row["status"])
            if current not in sources:
                raise Conflict(
                    f"A registry that is {current.value} cannot {action}"
                    f" (from {', '.join(sorted(s.value for s in sources))} only).",
                    slug="registry-transition-refused",
                    registry_status=current.value,
                )
            values: dict[str, Any] = {
                "status": target.value,
                "version": row["version"] + 1,
                "updated_at": now,
                "status_changed_at": now,
            }
            if action == "activate":
                if conformance_run_id is not None:
                    if not await repository.passing_run(connection, conformance_run_id, registry_id):
                        raise Unprocessable(
                            f"No passing conformance run {conformance_run_id} of {registry_id}.",
                            slug="conformance-run-required",
                        )
                    values["conformance_run_id"] = conformance_run_id
                elif row["environment"] == IrxEnvironment.PRODUCTION.value:
                    raise Unprocessable(
                        "A production registry is activated only with a passing conformance run"
                        " (conformance_run_id).",
                        slug="conformance-run-required",
                    )
            await repository.update_registry(connection, registry_id, values, version=row["version"])
            change = RegistryStatusChanged(
                registry_id=registry_id, status=target, previous_status=current, note=note
            )
            await self.outbox.publish(
                connection,
                "registry.status_changed",
                {**change.model_dump(mode="json"), "party": row["party"], "changed_at": now.isoformat()},
                party=row["party"],
            )
            await self.enqueue(connection, {**row, **values}, IrxMessageType.REGISTRY_STATUS_CHANGED, change)
            updated = await repository.get_registry(connection, registry_id)
        assert updated is not None
        self.outbox.notify()
        self.relay.notify()
        log.info(
            "irx_registry_status_changed",
            registry_id=registry_id,
            status=target.value,
            previous=current.value,
        )
        return _record(updated)

    # ---- the registry's clients (§2.2) and keys (§2.3) -------------------------------------------------------

    async def set_client(
        self, principal: Principal, registry_id: str, client_id: str, *, listed: bool
    ) -> RegistryRecord:
        """List (or unlist) an OAuth2 client on the record (secretariat_admin); idempotent. The gateway
        issues the client and its `registry_id` claim; this list is what lets its messages in (1004)."""
        now = self.clock()
        async with self.db.connect() as connection:
            row = await repository.get_registry(connection, registry_id, lock=True)
            if row is None:
                raise NotFound(f"No registry {registry_id}.", slug="registry-not-found")
            current = set(row["clients"] or [])
            wanted = current | {client_id} if listed else current - {client_id}
            if wanted != current:
                # Not a new version: the ETag guards what PATCH edits, and the list has its own idempotent
                # PUT/DELETE, so an administrator's PATCH can never overwrite it.
                await repository.update_registry(
                    connection, registry_id, {"clients": sorted(wanted), "updated_at": now}
                )
                await self.outbox.publish(
                    connection,
                    "registry.client_listed" if listed else "registry.client_unlisted",
                    {
                        "registry_id": registry_id,
                        "party": row["party"],
                        "client_id": client_id,
                        "by": principal.client_id,
                        "at": now.isoformat(),
                    },
                    party=row["party"],
                )
            updated = await repository.get_registry(connection, registry_id)
        assert updated is not None
        if wanted != current:
            self.outbox.notify()
            log.info(
                "irx_registry_client_listed" if listed else "irx_registry_client_unlisted",
                registry_id=registry_id,
                listed_client=client_id,
                by=principal.client_id,
            )
        return _record(updated)

    async def keys(self, principal: Principal, registry_id: str) -> RegistryKeyPage:
        """The registry's keys as the IR knows them (secretariat_admin, auditor; the registry its own)."""
        if not (
            principal.is_secretariat
            or principal.has(Role.AUDITOR)
            or self._is_registry(principal, registry_id)
        ):
            raise Forbidden(
                "A registry's keys are read by the Secretariat, auditors and the registry itself."
            )
        await self._row(registry_id)
        async with self.db.read() as session:
            rows = await repository.registry_keys(await session.connection(), registry_id)
        return RegistryKeyPage(items=[_key(row) for row in rows])

    async def revoke_key(
        self, principal: Principal, registry_id: str, kid: str, body: KeyRevocation
    ) -> RegistryKeyPage:
        """§2.3 compromise: messages signed with `kid` are refused (1006) from `revoked_at` (default now) on.
        Audited: who and why on the key rows, the outbox event `registry.key_revoked` and a log line."""
        now = self.clock()
        at = body.revoked_at or now
        async with self.db.connect() as connection:
            row = await repository.get_registry(connection, registry_id, lock=True)
            if row is None:
                raise NotFound(f"No registry {registry_id}.", slug="registry-not-found")
            await repository.revoke_key(
                connection, registry_id, kid, at, by=principal.client_id, note=body.note
            )
            await self.outbox.publish(
                connection,
                "registry.key_revoked",
                {
                    "registry_id": registry_id,
                    "party": row["party"],
                    "kid": kid,
                    "revoked_at": at.isoformat(),
                    "by": principal.client_id,
                    "note": body.note,
                },
                party=row["party"],
            )
            rows = await repository.registry_keys(connection, registry_id)
        self.outbox.notify()
        log.warning("irx_registry_key_revoked", registry_id=registry_id, kid=kid, revoked_at=at.isoformat())
        return RegistryKeyPage(items=[_key(r) for r in rows if r["kid"] == kid])

    # ---- the inbox (§4) ------------------------------------------------------------------------------------

    async def enqueue(
        self,
        connection: AsyncConnection,
        registry_row: Row,
        message_type: IrxMessageType,
        body: BaseModel | Mapping[str, Any],
        *,
        transfer_id: str | None = None,
    ) -> str:
        """Write an inbox message in the caller's transaction (with the change it announces); the relay
        numbers and signs it once that commits. Returns its `message_id`. Call `relay.notify()` after."""
        payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else dict(body)
        message_id = str(uuid.uuid4())
        draft = {
            "protocol": PROTOCOL,
            # At the version the registry's last hello negotiated: never a field it does not know (§3).
            "version": registry_row.get("irx_version") or CURRENT_VERSION,
            "env": self.env.value,
            "message_id": message_id,
            "type": message_type.value,
            "from": IR_ADDRESS,
            "to": registry_row["registry_id"],
            "body": payload,
        }
        await repository.insert_message(
            connection,
            {
                "registry_id": registry_row["registry_id"],
                "direction": DIRECTION_OUT,
                "message_id": message_id,
                "type": message_type.value,
                "seq": None,
                "position": None,
                "transfer_id": transfer_id,
                "envelope": draft,
                "signature": None,
                "verification": "ir_signed",
                "body_sha256": body_sha256(payload),
                "created_at": self.clock(),
            },
        )
        return message_id

    def _own_registry(self, principal: Principal) -> str:
        if not self._is_registry(principal):
            raise Forbidden("Only a connected registry's client reads and acknowledges an inbox.")
        assert principal.registry_id is not None
        return principal.registry_id

    async def read_inbox(self, principal: Principal, *, after: int, limit: int) -> dict[str, Any]:
        """The registry's own inbox after a position, as stored (the exact envelope the IR signed)."""
        registry_id = self._own_registry(principal)
        _require_listed(await self._row(registry_id), principal)
        await self.relay.relay(registry_id)
        async with self.db.read() as session:
            rows = await repository.read_inbox(
                await session.connection(), registry_id, after=after, limit=limit + 1
            )
        items = [
            {"position": row["position"], "message": row["envelope"], "signature": row["signature"]}
            for row in rows[:limit]
        ]
        more = len(rows) > limit
        return {"items": items, "next_cursor": str(items[-1]["position"]) if more else None}

    # ---- the message log -----------------------------------------------------------------------------------

    async def messages(
        self,
        principal: Principal,
        *,
        registry_id: str | None,
        direction: str | None,
        after: int,
        limit: int,
    ) -> MessageLogPage:
        if principal.is_secretariat or principal.has(Role.AUDITOR):
            pass
        elif self._is_registry(principal):
            if registry_id is not None and registry_id != principal.registry_id:
                raise Forbidden("A registry reads only its own messages.")
            registry_id = principal.registry_id
        else:
            raise Forbidden("The message log is for the Secretariat, auditors and each registry (its own).")
        await self.relay.relay(registry_id)
        async with self.db.read() as session:
            rows = await repository.list_messages(
                await session.connection(),
                registry_id=registry_id,
                direction=direction,
                after=after,
                limit=limit + 1,
            )
        items = [
            MessageLogEntry(
                log_id=row["id"],
                registry_id=row["registry_id"],
                direction=row["direction"],
                message_id=row["message_id"],
                type=row["type"],
                seq=row["seq"],
                position=row["position"],
                envelope=row["envelope"],
                signature=row["signature"],
                kid=row["kid"],
                key_thumbprint=row["key_thumbprint"],
                verification=row["verification"],
                body_sha256=row["body_sha256"],
                response_status=row["response_status"],
                response_body=row["response_body"],
                created_at=_utc(row["created_at"]),
            )
            for row in rows[:limit]
        ]
        more = len(rows) > limit
        return MessageLogPage(items=items, next_cursor=str(items[-1].log_id) if more else None)

    # ---- the acceptance pipeline (§3) ----------------------------------------------------------------------

    async def receive(
        self,
        principal: Principal,
        raw: bytes,
        *,
        idempotency_key: str | None,
        signature: str | None,
        accepts: frozenset[IrxMessageType],
        process: Processor,
    ) -> Answer:
        """Accept one registry→IR message through steps 1–7, or refuse it recording nothing."""
        try:
            return await self._receive(
                principal,
                raw,
                idempotency_key=idempotency_key,
                signature=signature,
                accepts=accepts,
                process=process,
            )
        except DomainError as refusal:
            # Nothing was stored: the log line and the counter are the only trace (see the module docstring).
            code = int(refusal.code) if isinstance(refusal, IrxRefused) else None
            IRX_REFUSALS.labels(str(code) if code is not None else refusal.slug).inc()
            log.info(
                "irx_message_refused",
                code=code,
                problem=refusal.slug,
                registry_id=principal.registry_id,
                client_id=principal.client_id,
                detail=refusal.detail,
            )
            raise

    async def _receive(
        self,
        principal: Principal,
        raw: bytes,
        *,
        idempotency_key: str | None,
        signature: str | None,
        accepts: frozenset[IrxMessageType],
        process: Processor,
    ) -> Answer:
        now = self.clock()
        # (1) who sends, and may it send this now.
        if not self._is_registry(principal):
            raise IrxRefused(
                IrxCode.SENDER_MISMATCH, "Only a connected registry's client sends IRX messages."
            )
        registry_id = principal.registry_id
        assert registry_id is not None
        try:
            document: Any = loads(raw)
        except CanonicalizationError:
            document = None
        sender = document.get("from") if isinstance(document, dict) else None
        if sender is not None and sender != registry_id:
            raise IrxRefused(
                IrxCode.SENDER_MISMATCH, f"from is {sender!r} but the token is registry {registry_id}."
            )
        async with self.db.read() as session:
            connection = await session.connection()
            row = await repository.get_registry(connection, registry_id)
            revoked = await repository.revoked_kids(connection, registry_id, now)
        if row is None:
            raise IrxRefused(IrxCode.SENDER_MISMATCH, f"{registry_id} is not a registered registry.")
        _require_listed(row, principal)
        status = RegistryStatus(row["status"])
        environment = IrxEnvironment(row["environment"])
        declared = _message_type(document)
        if declared is not None and declared not in allowed_message_types(status, environment):
            raise IrxRefused(
                IrxCode.SENDING_REGISTRY_NOT_ACTIVE,
                f"A {status.value} {environment.value} registry cannot send {declared.value}.",
                registry_status=status.value,
            )
        # (2) the envelope.
        if not isinstance(document, dict):
            raise IrxRefused(IrxCode.MALFORMED_MESSAGE, "An IRX message is a JSON object (strict JSON).")
        try:
            envelope = parse_envelope(document)
        except EnvelopeRefused as exc:
            raise IrxRefused(exc.code, str(exc)) from None
        if envelope.sender != registry_id:
            raise IrxRefused(IrxCode.SENDER_MISMATCH, f"from is not the token's registry {registry_id}.")
        if envelope.type not in accepts:
            raise IrxRefused(
                IrxCode.MALFORMED_MESSAGE,
                f"This endpoint takes {', '.join(sorted(t.value for t in accepts))}, not {envelope.type.value}.",
            )
        if not idempotency_key or idempotency_key.strip().lower() != str(envelope.message_id):
            raise IrxRefused(IrxCode.MALFORMED_MESSAGE, "The Idempotency-Key header must equal message_id.")
        if envelope.to != IR_ADDRESS:
            raise IrxRefused(IrxCode.WRONG_ADDRESSEE_OR_ENVIRONMENT, f"to must be {IR_ADDRESS!r}.")
        if envelope.env is not self.env or envelope.env is not environment:
            raise IrxRefused(
                IrxCode.WRONG_ADDRESSEE_OR_ENVIRONMENT,
                f"env is {envelope.env.value}; this IR and registry run {self.env.value}/{environment.value}.",
            )
        # (3) the signature.
        verified = await self._verify(row, envelope, document, signature, revoked)
        # (4) a message seen before.
        digest = body_sha256(document["body"])
        stored = await self._stored(registry_id, str(envelope.message_id))
        if stored is not None:
            return self._replay(stored, digest)
        # (5) clocks.
        if envelope.sent_at > now + MAX_SENT_AT_LEAD:
            raise IrxRefused(IrxCode.SENT_AT_IN_FUTURE, "sent_at is more than 300 s ahead of the IR's clock.")
        if envelope.sent_at < now - MAX_SENT_AT_AGE:
            raise IrxRefused(IrxCode.SENT_AT_TOO_OLD, "sent_at is more than 24 h old for a new message.")
        # (6) sequence.
        if envelope.seq is not None and envelope.seq <= row["last_seq_in"]:
            raise IrxRefused(
                IrxCode.STALE_SEQUENCE,
                f"seq {envelope.seq} is not above the last accepted {row['last_seq_in']}.",
                last_seq=row["last_seq_in"],
            )
        # (7) process and store, in one transaction.
        try:
            async with self.db.connect() as connection:
                if envelope.seq is not None and not await repository.advance_seq(
                    connection, registry_id, envelope.seq, now
                ):
                    raise _LostSequenceRace
                current = await repository.get_registry(connection, registry_id, lock=True)
                assert current is not None
                received = Received(
                    registry=current,
                    envelope=envelope,
                    body=envelope.parsed_body(),
                    document=document,
                    received_at=now,
                )
                answer = await process(connection, received)
                if verified is not None:
                    await repository.record_key(
                        connection, registry_id, verified.kid, verified.jwk, verified.thumbprint, now
                    )
                body = document["body"]
                await repository.insert_message(
                    connection,
                    {
                        "registry_id": registry_id,
                        "direction": DIRECTION_IN,
                        "message_id": str(envelope.message_id),
                        "type": envelope.type.value,
                        "seq": envelope.seq,
                        "position": None,
                        "transfer_id": body.get("transfer_id")
                        if isinstance(body.get("transfer_id"), str)
                        else None,
                        "envelope": document,
                        "signature": signature if verified is not None else None,
                        "kid": verified.kid if verified else None,
                        "key_thumbprint": verified.thumbprint if verified else None,
                        "verification": "verified" if verified else "unsigned",
                        "body_sha256": digest,
                        "response_status": answer.status,
                        "response_body": answer.body,
                        "created_at": now,
                    },
                )
        except (_LostSequenceRace, IntegrityError) as race:
            # A concurrent message of this registry committed first: the same message (answer it as stored:
            # the unique message id, or the seq it took) or another with a seq at least as high (stale).
            stored = await self._stored(registry_id, str(envelope.message_id))
            if stored is not None:
                return self._replay(stored, digest)
            if isinstance(race, IntegrityError):
                raise  # not a race on this message: a processor's bug, answered 500 and logged
            last = (await self._row(registry_id))["last_seq_in"]
            raise IrxRefused(
                IrxCode.STALE_SEQUENCE,
                f"seq {envelope.seq} lost to a concurrent message; the last accepted is {last}.",
                last_seq=last,
            ) from None
        self.relay.notify()
        self.outbox.notify()
        return answer

    async def _stored(self, registry_id: str, message_id: str) -> Row | None:
        async with self.db.read() as session:
            return await repository.find_message(
                await session.connection(), registry_id, DIRECTION_IN, message_id
            )

    @staticmethod
    def _replay(stored: Row, digest: str) -> Answer:
        if stored["body_sha256"] != digest:
            raise IrxRefused(IrxCode.MESSAGE_ID_REUSED, "This message_id was used with another body.")
        return Answer(status=stored["response_status"], body=stored["response_body"], replayed=True)

    def _jwks_cache(self, registry_id: str, url: str, production: bool) -> JwksCache:
        cache = self._jwks.get(registry_id)
        if cache is None or cache.url != url:
            cache = JwksCache(
                url,
                transport=self.jwks_transport,
                require_https=production,
                min_refetch_interval=self.jwks_refetch_seconds,
            )
            self._jwks[registry_id] = cache
        return cache

    async def _verify(
        self,
        row: Row,
        envelope: IrxEnvelope,
        document: dict[str, Any],
        signature: str | None,
        revoked: set[str],
    ) -> VerifiedSignature | None:
        sandbox_optional = (
            row["signing"] == SigningPolicy.OPTIONAL.value
            and row["environment"] == IrxEnvironment.SANDBOX.value
        )
        required = envelope.type not in UNSIGNED_MESSAGE_TYPES and not sandbox_optional
        if not signature:
            if required:
                raise IrxRefused(IrxCode.SIGNATURE_MISSING, "This message needs an IRX-Signature header.")
            return None
        # A signature sent is checked even where none is required: a bad one is never stored as evidence.
        try:
            if row["jwks"]:
                try:
                    keys = KeySet(row["jwks"])
                except ValueError:
                    raise IrxRefused(
                        IrxCode.SIGNATURE_INVALID, "The registry's registered keys are unusable."
                    ) from None
                return verify(document, signature, keys, revoked=revoked)
            if row["jwks_url"]:
                cache = self._jwks_cache(
                    row["registry_id"], row["jwks_url"], row["environment"] == IrxEnvironment.PRODUCTION.value
                )
                return await cache.verify(document, signature, revoked=revoked)
        except SignatureInvalid as exc:
            raise IrxRefused(IrxCode.SIGNATURE_INVALID, str(exc)) from None
        except JwksUnavailable as exc:
            raise IrxRefused(
                IrxCode.SIGNATURE_INVALID, f"The registry's keys cannot be fetched: {exc}"
            ) from None
        except CanonicalizationError as exc:
            raise IrxRefused(IrxCode.MALFORMED_MESSAGE, str(exc)) from None
        raise IrxRefused(IrxCode.SIGNATURE_INVALID, "The registry has no keys registered (jwks or jwks_url).")

    # ---- hello and ack -------------------------------------------------------------------------------------

    async def hello(
        self, principal: Principal, raw: bytes, *, idempotency_key: str | None, signature: str | None
    ) -> Answer:
        if self._is_registry(principal):
            await self._relay_quietly(principal.registry_id)
        return await self.receive(
            principal,
            raw,
            idempotency_key=idempotency_key,
            signature=signature,
            accepts=frozenset({IrxMessageType.HELLO}),
            process=self._process_hello,
        )

    async def _process_hello(self, connection: AsyncConnection, received: Received) -> Answer:
        hello = received.body
        assert isinstance(hello, HelloRequest)
        version = negotiate_version(hello.supported_versions)
        if version is None:
            raise IrxRefused(
                IrxCode.MAJOR_VERSION_UNSUPPORTED,
                f"No version in common: the IR reads {', '.join(SUPPORTED_VERSIONS)}.",
            )
        row = received.registry
        now = received.received_at
        skew_ms = round((hello.registry_time - now).total_seconds() * 1000)
        flagged = abs(skew_ms) > self.settings.irx_max_clock_skew_seconds * 1000
        await repository.update_registry(
            connection,
            row["registry_id"],
            {"clock_skew_ms": skew_ms, "skew_flagged": flagged, "hello_at": now, "irx_version": version},
        )
        IRX_CLOCK_SKEW.labels(row["registry_id"]).set(skew_ms)
        if flagged:
            log.warning("irx_clock_skew", registry_id=row["registry_id"], skew_ms=skew_ms)
        response = HelloResponse(
            version=version,
            ir_time=now,
            skew_ms=skew_ms,
            registry_status=RegistryStatus(row["status"]),
            last_seq_received=row["last_seq_in"],
            inbox=InboxState(
                last_position=await repository.cursor_position(connection, row["registry_id"]),
                acked_position=row["acked_position"],
            ),
        )
        return Answer(status=200, body=response.model_dump(mode="json"))

    async def ack(
        self, principal: Principal, raw: bytes, *, idempotency_key: str | None, signature: str | None
    ) -> Answer:
        if self._is_registry(principal):
            await self._relay_quietly(principal.registry_id)
        return await self.receive(
            principal,
            raw,
            idempotency_key=idempotency_key,
            signature=signature,
            accepts=frozenset({IrxMessageType.INBOX_ACK}),
            process=self._process_ack,
        )

    async def _process_ack(self, connection: AsyncConnection, received: Received) -> Answer:
        ack = received.body
        assert isinstance(ack, InboxAck)
        row = received.registry
        last = await repository.cursor_position(connection, row["registry_id"])
        if ack.up_to > last:
            # Not recorded (the transaction rolls back, the seq is not consumed): nothing was acknowledged.
            raise Unprocessable(
                f"up_to {ack.up_to} is beyond the last inbox position {last}.",
                slug="ack-beyond-inbox",
                last_position=last,
            )
        acked = max(ack.up_to, row["acked_position"])  # monotonic: a lower ack never moves it back
        if acked != row["acked_position"]:
            await repository.update_registry(connection, row["registry_id"], {"acked_position": acked})
        return Answer(status=200, body=InboxAcked(acked_position=acked).model_dump(mode="json"))

    async def _relay_quietly(self, registry_id: str | None) -> None:
        """Number what committed before answering from the inbox cursor (a failure here is the relay's)."""
        if registry_id is None:
            return
        try:
            await self.relay.relay(registry_id)
        except Exception:  # the background relay retries; the answer then shows the last numbered position
            log.exception("irx_inbox_relay_failed", registry_id=registry_id)
