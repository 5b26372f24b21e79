"""Use cases of the ars service: MO issuance, authorizations and their versions, apply, first transfers,
domestic cancellation, reads.

Order inside a writing use case (as in the transactions service): claim the Idempotency-Key when there is
one; read what party_sections knows *before* any write transaction; then one write transaction that checks,
changes, publishes its events and stores the answer. A first transfer then runs its saga (`saga.py`) after
that commit: the reservation and the operation commit together, the IR call comes after.
"""

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi.encoders import jsonable_encoder
from sqlalchemy import and_, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from contracts.accounts import AccountStatus, AccountType
from contracts.actions import (
    OIMP_FIRST_TRANSFER_DEFINITIONS,
    FirstTransferDefinition,
    MOState,
    Purpose,
    TransactionType,
)
from contracts.ars import (
    ArsEventType,
    Authorization,
    AuthorizationApplied,
    AuthorizationApply,
    AuthorizationCreate,
    AuthorizationRevoke,
    AuthorizationStatus,
    AuthorizationVersionCreate,
    FirstTransferStatus,
    Issuance,
    IssuanceCreate,
    MOBlock,
    MOCancellation,
    MOCancellationCreate,
    MOFirstTransfer,
    MOFirstTransferCreate,
    parse_timeframe,
)
from contracts.interregistry import RegistryPublic, RegistryStatus
from contracts.pagination import Page
from contracts.parties import registry_party
from contracts.party_sections import SectionLookup, SectionStatus
from contracts.problems import CheckResult, problem_type
from contracts.transactions import Block
from kit.auth import Principal
from kit.db import Database
from kit.errors import Forbidden, PreconditionFailed
from kit.idempotency import Claim, IdempotencyStore, StoredAnswer, request_fingerprint
from kit.outbox import Outbox
from kit.pagination import decode_cursor, encode_cursor
from services.ars import repository
from services.ars.checks import Failures
from services.ars.directory import Directory
from services.ars.errors import (
    AuthorizationExists,
    AuthorizationNotFound,
    AuthorizationRevoked,
    ChecksFailed,
    CooperativeApproachChanged,
    FirstTransferNotAwaiting,
    FirstTransferNotFound,
    IssuanceNotFound,
    MOsNotCancellable,
    NotAParticipant,
    SectionNotUsable,
    UnknownCooperativeApproach,
    UnknownEntities,
)
from services.ars.models import (
    authorization_heads,
    authorizations,
    first_transfers,
    issuances,
    mo_blocks,
    mo_cancellations,
)
from services.ars.saga import FirstTransferSaga

__all__ = ["Answer", "ArsService"]

log = structlog.get_logger(__name__)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_HOLDING_STATES = (MOState.AUTHORIZED.value, MOState.RESERVED.value, MOState.FIRST_TRANSFERRED.value)
_CAP_STATES = _HOLDING_STATES
_FIRST_TRANSFERRED_OR_HELD = (MOState.RESERVED.value, MOState.FIRST_TRANSFERRED.value)
#: Registry statuses the ARS lets a first transfer be proposed to; the IR decides 3002 exactly (a sandbox
#: registry may receive before going live, a production one only when active).
_RECEIVING_REGISTRY = frozenset({RegistryStatus.ACTIVE, RegistryStatus.ONBOARDING, RegistryStatus.TESTING})


def new_id(prefix: str) -> str:
    """`prefix_` + a ULID (48-bit milliseconds + 80 random bits, Crockford base32): sortable by creation."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_" + "".join(reversed(chars))


@dataclass(frozen=True)
class Answer:
    """Status and JSON body of a writing use case, and whether it replays an earlier answer."""

    status: int
    body: Any
    replayed: bool = False


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_failed(failed: Sequence[CheckResult], instance: str, **extensions: Any) -> dict[str, Any]:
    return {
        "type": problem_type("check-failed"),
        "title": ChecksFailed.title,
        "status": 422,
        "detail": "; ".join(f"{c.code}: {c.message}" for c in failed),
        "instance": instance,
        "checks": [c.model_dump() for c in failed],
        **extensions,
    }


class ArsService:
    def __init__(
        self,
        db: Database,
        directory: Directory,
        outbox: Outbox,
        idempotency: IdempotencyStore,
        saga: FirstTransferSaga,
    ) -> None:
        self.db = db
        self.directory = directory
        self.outbox = outbox
        self.idempotency = idempotency
        self.saga = saga

    # ---- shared -------------------------------------------------------------------------------------------

    async def _usable_section(self, party: str) -> SectionLookup:
        section = await self.directory.section(party)
        if section is None:
            raise SectionNotUsable(party, "it has no Party section")
        if not section.ars:
            raise SectionNotUsable(party, "its section does not use the Additional Registry Services")
        if section.status is not SectionStatus.OPEN:
            raise SectionNotUsable(party, f"its section is {section.status.value}")
        return section

    async def _participating(self, party: str, ca_id: str) -> frozenset[str]:
        ca = await self.directory.cooperative_approach(ca_id)
        if ca is None:
            raise UnknownCooperativeApproach(f"{ca_id} is not a registered cooperative approach.")
        if party not in ca.participants:
            raise NotAParticipant(f"{party} does not participate in {ca_id}.")
        return frozenset(ca.participants)

    async def _known_entities(self, party: str, entity_ids: Sequence[str] | None) -> None:
        """Every entity an authorization names must be one the Party authorized in party_sections."""
        missing = [e for e in entity_ids or () if await self.directory.entity(party, e) is None]
        if missing:
            raise UnknownEntities(
                f"{party} has not authorized {', '.join(missing)} (register them as authorized entities first).",
                entity_ids=missing,
            )

    async def _claim(
        self, principal: Principal, key: str | None, path: str, body: Any
    ) -> Claim | StoredAnswer:
        fingerprint = request_fingerprint("POST", path, jsonable_encoder(body))
        return await self.idempotency.claim(principal.client_id, key, fingerprint)

    async def _read_version(self, party: str, authorization_id: str) -> Any:
        async with self.db.read() as session:
            connection = await session.connection()
            return await repository.current_authorization(connection, party, authorization_id)

    def _after_commit(self) -> None:
        self.outbox.notify()

    # ---- issuance (A1) ----------------------------------------------------------------------------------------

    async def issue(self, principal: Principal, party: str, body: IssuanceCreate, key: str | None) -> Answer:
        section = await self._usable_section(party)
        await self._participating(party, body.ca_id)
        claim = await self._claim(principal, key, f"/v1/ars/{party}/issuances", body) if key else None
        if isinstance(claim, StoredAnswer):
            return await self._replay_issuance(party, claim)
        version = None
        holding = None
        if body.authorization_id is not None:
            version = await self._read_version(party, body.authorization_id)
            if version is not None and self._first_transfer_at(version) is FirstTransferDefinition.ISSUANCE:
                holding = await self.directory.holding_account(party)
        try:
            answer, operation_id = await self._issue(principal, party, section, body, version, holding, claim)
        except ChecksFailed as refused:
            if claim is not None:
                await claim.fail(422, refused.to_problem(f"/v1/ars/{party}/issuances"))
            raise
        except BaseException:
            if claim is not None:
                await claim.release()
            raise
        self._after_commit()
        if operation_id is not None:
            self.saga.hit("after_reserve")
            await self.saga.drive(operation_id)
            return Answer(201, jsonable_encoder(await self.issuance(party, answer["issuance_id"])))
        return Answer(201, answer)

    @staticmethod
    def _first_transfer_at(version: Any) -> FirstTransferDefinition | None:
        """The OIMP definition that makes the first transfer happen inside the ARS, if the authorization has one."""
        if version is None or not Purpose(version["purposes"]).covers_oimp:
            return None
        definition = FirstTransferDefinition(version["first_transfer_definition"])
        return definition if definition in OIMP_FIRST_TRANSFER_DEFINITIONS else None

    def _covers(
        self, version: Any, failed: Failures, *, ca_id: str, metric: str, sector: str, activity: str
    ) -> None:
        if version["ca_id"] != ca_id:
            failed.add(
                "M07", f"authorization {version['authorization_id']} is of {version['ca_id']}, not {ca_id}"
            )
        if version["metric"] != metric:
            failed.add(
                "M07", f"authorization {version['authorization_id']} is for metric {version['metric']}"
            )
        if sector not in version["sectors"]:
            failed.add("M07", f"sector {sector} is not among the authorization's sectors")
        if activity not in version["activity_types"]:
            failed.add("M07", f"activity type {activity} is not among the authorization's activity types")

    @staticmethod
    def _in_timeframe(version: Any, vintage: int, failed: Failures) -> None:
        if version["timeframe"]:
            first, last = parse_timeframe(version["timeframe"])
            if not first <= vintage <= last:
                failed.add(
                    "M04", f"vintage {vintage} is outside the authorized timeframe {version['timeframe']}"
                )

    async def _issue(
        self,
        principal: Principal,
        party: str,
        section: SectionLookup,
        body: IssuanceCreate,
        version: Any,
        holding: Any,
        claim: Claim | None,
    ) -> tuple[dict[str, Any], str | None]:
        now = datetime.now(UTC)
        registry_id = section.registry_id
        issuance_id = new_id("iss")
        state = MOState.PENDING_AUTHORIZATION.value
        operation_id = None
        async with self.db.connect() as connection:
            if body.authorization_id is not None:
                version = await repository.current_authorization(
                    connection, party, body.authorization_id, lock=True
                )
                failed = Failures()
                if version is None:
                    failed.add("M01", f"{party} has no authorization {body.authorization_id!r}")
                    raise ChecksFailed(failed.results())
                if version["status"] == AuthorizationStatus.REVOKED.value:
                    failed.add("M02", f"authorization {body.authorization_id} is revoked")
                self._covers(
                    version,
                    failed,
                    ca_id=body.ca_id,
                    metric=body.metric.value,
                    sector=body.sector.value,
                    activity=body.activity_type.value,
                )
                self._in_timeframe(version, body.vintage, failed)
                cap = version["authorized_quantity"]
                if cap is not None:
                    used = await repository.quantity_under(
                        connection, party, body.authorization_id, _CAP_STATES
                    )
                    if used + body.quantity > cap:
                        failed.add(
                            "T06", f"{used + body.quantity} authorized would exceed the authorized {cap}"
                        )
                if failed:
                    raise ChecksFailed(failed.results())
                state = MOState.AUTHORIZED.value
                if self._first_transfer_at(version) is FirstTransferDefinition.ISSUANCE:
                    state = MOState.RESERVED.value
                    operation_id = new_id("ftr")
            first = await repository.allocate_serials(connection, body.ca_id, registry_id, body.quantity)
            last = first + body.quantity - 1
            invariants = {
                "party": party,
                "ca_id": body.ca_id,
                "origin_registry_id": registry_id,
                "vintage": body.vintage,
                "metric": body.metric.value,
                "mitigation_type": body.mitigation_type.value,
                "sector": body.sector.value,
                "activity_type": body.activity_type.value,
                "applicable_gwp_values": body.applicable_gwp_values,
                "applicable_non_ghg_metric": body.applicable_non_ghg_metric,
                "conversion_factor": body.conversion_factor,
                "underlying_registry_id": body.underlying.registry_id if body.underlying else None,
            }
            await connection.execute(
                insert(issuances).values(
                    **invariants,
                    issuance_id=issuance_id,
                    quantity=body.quantity,
                    first_serial=first,
                    last_serial=last,
                    underlying_first=body.underlying.first_unit_id if body.underlying else None,
                    underlying_last=body.underlying.last_unit_id if body.underlying else None,
                    authorization_id=body.authorization_id,
                    note=body.note,
                    created_by=principal.client_id,
                    created_at=now,
                )
            )
            row = {
                **invariants,
                "first_serial": first,
                "last_serial": last,
                "underlying_first": body.underlying.first_unit_id if body.underlying else None,
                "state": state,
                "authorization_id": body.authorization_id,
                "authorization_version": version["version"] if body.authorization_id else None,
                "operation_id": operation_id,
                "transaction_id": None,
                "cancellation_id": None,
                "issuance_id": issuance_id,
                "updated_at": now,
            }
            await connection.execute(insert(mo_blocks).values(**row))
            block = repository.block_from_row(row)
            issuance = Issuance(
                issuance_id=issuance_id,
                party=party,
                ca_id=body.ca_id,
                origin_registry_id=registry_id,
                vintage=body.vintage,
                quantity=body.quantity,
                first=first,
                last=last,
                blocks=[block],
                created_at=now,
                created_by=principal.client_id,
            )
            data = jsonable_encoder(issuance)
            await self.outbox.publish(connection, ArsEventType.MOS_ISSUED.value, data, party=party)
            if version is not None:
                await self._publish_authorized(connection, party, version, body.quantity, [block])
            if operation_id is not None:
                await self._record_operation(
                    connection,
                    operation_id=operation_id,
                    party=party,
                    version=version,
                    definition=FirstTransferDefinition.ISSUANCE,
                    rows=[row],
                    to_account=holding.account_id if holding else f"{registry_id}-100-1",
                    use=None,
                    origin="issuance",
                    initiated_by=principal.client_id,
                    note=None,
                    now=now,
                )
            if claim is not None:
                await claim.complete(connection, 201, data)
        return data, operation_id

    async def _publish_authorized(
        self, connection: Any, party: str, version: Any, quantity: int, blocks: list[MOBlock]
    ) -> None:
        await self.outbox.publish(
            connection,
            ArsEventType.MOS_AUTHORIZED.value,
            {
                "party": party,
                "authorization": repository.authorization_from_row(version).model_dump(mode="json"),
                "quantity": quantity,
                "blocks": jsonable_encoder(blocks),
            },
            party=party,
        )

    async def _replay_issuance(self, party: str, stored: StoredAnswer) -> Answer:
        if stored.status == 201 and isinstance(stored.body, dict) and "issuance_id" in stored.body:
            return Answer(201, jsonable_encoder(await self.issuance(party, stored.body["issuance_id"])), True)
        return Answer(stored.status, stored.body, True)

    async def issuance(self, party: str, issuance_id: str) -> Issuance:
        async with self.db.read() as session:
            row = (
                (
                    await session.execute(
                        select(issuances).where(
                            issuances.c.party == party, issuances.c.issuance_id == issuance_id
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise IssuanceNotFound(f"{party} has no issuance {issuance_id}.")
            rows = (
                (
                    await session.execute(
                        select(mo_blocks)
                        .where(mo_blocks.c.issuance_id == issuance_id)
                        .order_by(mo_blocks.c.first_serial)
                    )
                )
                .mappings()
                .all()
            )
        operations = sorted({r["operation_id"] for r in rows if r["operation_id"]})
        first_transfer = None
        if row["authorization_id"] and operations:
            first_transfer = await self.first_transfer_of(party, operations[0])
        return Issuance(
            issuance_id=issuance_id,
            party=party,
            ca_id=row["ca_id"],
            origin_registry_id=row["origin_registry_id"],
            vintage=row["vintage"],
            quantity=row["quantity"],
            first=row["first_serial"],
            last=row["last_serial"],
            blocks=[repository.block_from_row(r) for r in rows],
            first_transfer=first_transfer,
            created_at=_utc(row["created_at"]),
            created_by=row["created_by"],
        )

    # ---- authorizations (A2, A3) ------------------------------------------------------------------------------

    def _version_values(self, body: AuthorizationCreate | AuthorizationVersionCreate) -> dict[str, Any]:
        return {
            "date": body.date,
            "ca_id": body.ca_id,
            "purposes": body.purposes.value,
            "authorized_quantity": body.authorized_quantity,
            "metric": body.metric.value,
            "applicable_gwp_values": body.applicable_gwp_values,
            "applicable_non_ghg_metric": body.applicable_non_ghg_metric,
            "sectors": [s.value for s in body.sectors],
            "activity_types": [a.value for a in body.activity_types],
            "authorized_parties": list(body.authorized_parties) if body.authorized_parties else None,
            "authorized_entities": list(body.authorized_entities) if body.authorized_entities else None,
            "oimp": body.oimp,
            "timeframe": body.timeframe,
            "terms": body.terms,
            "first_transfer_definition": body.first_transfer_definition.value
            if body.first_transfer_definition
            else None,
            "additional_explanatory_information": body.additional_explanatory_information,
        }

    async def create_authorization(
        self, principal: Principal, party: str, body: AuthorizationCreate
    ) -> Authorization:
        await self._usable_section(party)
        await self._participating(party, body.ca_id)
        await self._known_entities(party, body.authorized_entities)
        now = datetime.now(UTC)
        row = {
            "party": party,
            "authorization_id": body.authorization_id,
            "version": 1,
            **self._version_values(body),
            "status": AuthorizationStatus.ACTIVE.value,
            "revoked_at": None,
            "revocation_reason": None,
            "created_by": principal.client_id,
            "created_at": now,
        }
        try:
            async with self.db.connect() as connection:
                await connection.execute(
                    insert(authorization_heads).values(
                        party=party,
                        authorization_id=body.authorization_id,
                        ca_id=body.ca_id,
                        current_version=1,
                        status=AuthorizationStatus.ACTIVE.value,
                        updated_at=now,
                    )
                )
                await connection.execute(insert(authorizations).values(**row))
                authorization = repository.authorization_from_row(row)
                await self.outbox.publish(
                    connection,
                    ArsEventType.AUTHORIZATION_CREATED.value,
                    authorization.model_dump(mode="json"),
                    party=party,
                )
        except IntegrityError as exc:
            raise AuthorizationExists(
                f"{party} already has an authorization {body.authorization_id!r}; "
                "POST a new version to .../versions instead."
            ) from exc
        self._after_commit()
        return authorization

    async def add_version(
        self,
        principal: Principal,
        party: str,
        authorization_id: str,
        body: AuthorizationVersionCreate,
        if_match: int | None,
    ) -> Authorization:
        await self._usable_section(party)
        await self._known_entities(party, body.authorized_entities)
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            current = await self._locked_head(connection, party, authorization_id, if_match)
            if body.ca_id != current["ca_id"]:
                raise CooperativeApproachChanged(
                    f"Authorization {authorization_id} is of {current['ca_id']}; a version cannot move it to {body.ca_id}."
                )
            version = current["version"] + 1
            row = {
                "party": party,
                "authorization_id": authorization_id,
                "version": version,
                **self._version_values(body),
                "status": AuthorizationStatus.ACTIVE.value,
                "revoked_at": None,
                "revocation_reason": None,
                "created_by": principal.client_id,
                "created_at": now,
            }
            await connection.execute(insert(authorizations).values(**row))
            await self._bump_head(
                connection, party, authorization_id, version, AuthorizationStatus.ACTIVE, now
            )
            authorization = repository.authorization_from_row(row)
            await self.outbox.publish(
                connection,
                ArsEventType.AUTHORIZATION_VERSIONED.value,
                authorization.model_dump(mode="json"),
                party=party,
            )
        self._after_commit()
        return authorization

    async def _locked_head(
        self, connection: Any, party: str, authorization_id: str, if_match: int | None
    ) -> Any:
        current = await repository.current_authorization(connection, party, authorization_id, lock=True)
        if current is None:
            raise AuthorizationNotFound(party, authorization_id)
        if if_match is not None and if_match != current["version"]:
            raise PreconditionFailed(
                f"Authorization {authorization_id} is at version {current['version']}, not {if_match}.",
                current_version=current["version"],
            )
        if current["status"] == AuthorizationStatus.REVOKED.value:
            raise AuthorizationRevoked(
                f"Authorization {authorization_id} was revoked; it has no further versions."
            )
        return current

    @staticmethod
    async def _bump_head(
        connection: Any,
        party: str,
        authorization_id: str,
        version: int,
        status: AuthorizationStatus,
        now: datetime,
    ) -> None:
        await connection.execute(
            update(authorization_heads)
            .where(
                authorization_heads.c.party == party,
                authorization_heads.c.authorization_id == authorization_id,
            )
            .values(current_version=version, status=status.value, updated_at=now)
        )

    async def revoke(
        self,
        principal: Principal,
        party: str,
        authorization_id: str,
        body: AuthorizationRevoke,
        if_match: int | None,
    ) -> Authorization:
        section = await self.directory.section(party)
        if section is None or section.status not in (SectionStatus.OPEN, SectionStatus.SUSPENDED):
            raise SectionNotUsable(party, "its section is not open")
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            current = await self._locked_head(connection, party, authorization_id, if_match)
            version = current["version"] + 1
            row = {
                **dict(current),
                "version": version,
                "date": body.date or now.date(),
                "status": AuthorizationStatus.REVOKED.value,
                "revoked_at": now,
                "revocation_reason": body.reason,
                "created_by": principal.client_id,
                "created_at": now,
            }
            await connection.execute(insert(authorizations).values(**row))
            await self._bump_head(
                connection, party, authorization_id, version, AuthorizationStatus.REVOKED, now
            )
            # Authorized MOs not yet first transferred are no longer authorized (reserved ones follow their
            # saga; if the IR refuses them they come back pending). First-transferred units are untouched.
            returned = (
                (
                    await connection.execute(
                        select(mo_blocks).where(
                            mo_blocks.c.party == party,
                            mo_blocks.c.authorization_id == authorization_id,
                            mo_blocks.c.state == MOState.AUTHORIZED.value,
                        )
                    )
                )
                .mappings()
                .all()
            )
            await connection.execute(
                update(mo_blocks)
                .where(
                    mo_blocks.c.party == party,
                    mo_blocks.c.authorization_id == authorization_id,
                    mo_blocks.c.state == MOState.AUTHORIZED.value,
                )
                .values(
                    state=MOState.PENDING_AUTHORIZATION.value,
                    authorization_id=None,
                    authorization_version=None,
                    updated_at=now,
                )
            )
            await repository.coalesce(connection, [dict(r) for r in returned], now)
            authorization = repository.authorization_from_row(row)
            await self.outbox.publish(
                connection,
                ArsEventType.AUTHORIZATION_REVOKED.value,
                authorization.model_dump(mode="json")
                | {"returned_to_pending": repository.merge_ranges(returned)},
                party=party,
            )
        self._after_commit()
        return authorization

    async def authorization(
        self, party: str, authorization_id: str, version: int | None = None
    ) -> Authorization:
        async with self.db.read() as session:
            connection = await session.connection()
            if version is None:
                row = await repository.current_authorization(connection, party, authorization_id)
            else:
                row = (
                    (
                        await connection.execute(
                            select(authorizations).where(
                                authorizations.c.party == party,
                                authorizations.c.authorization_id == authorization_id,
                                authorizations.c.version == version,
                            )
                        )
                    )
                    .mappings()
                    .first()
                )
        if row is None:
            raise AuthorizationNotFound(party, authorization_id)
        return repository.authorization_from_row(row)

    async def versions(self, party: str, authorization_id: str) -> list[Authorization]:
        async with self.db.read() as session:
            rows = (
                (
                    await session.execute(
                        select(authorizations)
                        .where(
                            authorizations.c.party == party,
                            authorizations.c.authorization_id == authorization_id,
                        )
                        .order_by(authorizations.c.version)
                    )
                )
                .mappings()
                .all()
            )
        if not rows:
            raise AuthorizationNotFound(party, authorization_id)
        return [repository.authorization_from_row(r) for r in rows]

    async def authorizations(self, party: str, *, limit: int, cursor: str | None) -> Page[Authorization]:
        key = decode_cursor(cursor, fields=("authorization_id",))
        query = (
            select(authorizations)
            .join(
                authorization_heads,
                and_(
                    authorization_heads.c.party == authorizations.c.party,
                    authorization_heads.c.authorization_id == authorizations.c.authorization_id,
                    authorization_heads.c.current_version == authorizations.c.version,
                ),
            )
            .where(authorizations.c.party == party)
            .order_by(authorizations.c.authorization_id)
            .limit(limit + 1)
        )
        if key:
            query = query.where(authorizations.c.authorization_id > key["authorization_id"])
        async with self.db.read() as session:
            rows = (await session.execute(query)).mappings().all()
        items = [repository.authorization_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page[Authorization](
            items=items,
            next_cursor=encode_cursor({"authorization_id": items[-1].authorization_id})
            if more and items
            else None,
        )

    # ---- apply ------------------------------------------------------------------------------------------------

    async def apply(
        self,
        principal: Principal,
        party: str,
        authorization_id: str,
        body: AuthorizationApply,
        key: str | None,
    ) -> Answer:
        section = await self._usable_section(party)
        version = await self._read_version(party, authorization_id)
        if version is None:
            raise AuthorizationNotFound(party, authorization_id)
        holding = None
        if self._first_transfer_at(version) is FirstTransferDefinition.AUTHORISATION:
            holding = await self.directory.holding_account(party)
        path = f"/v1/ars/{party}/authorizations/{authorization_id}/apply"
        claim = await self._claim(principal, key, path, body) if key else None
        if isinstance(claim, StoredAnswer):
            return await self._replay_with_operation(party, claim)
        try:
            answer, operation_id = await self._apply(
                principal, party, section, authorization_id, body, holding, claim
            )
        except ChecksFailed as refused:
            if claim is not None:
                await claim.fail(422, refused.to_problem(path))
            raise
        except BaseException:
            if claim is not None:
                await claim.release()
            raise
        self._after_commit()
        if operation_id is not None:
            self.saga.hit("after_reserve")
            await self.saga.drive(operation_id)
            answer["first_transfer"] = jsonable_encoder(await self.first_transfer_of(party, operation_id))
        return Answer(201, answer)

    async def _replay_with_operation(self, party: str, stored: StoredAnswer) -> Answer:
        body = stored.body
        if isinstance(body, dict) and isinstance(body.get("first_transfer"), dict):
            operation_id = body["first_transfer"].get("operation_id")
            if operation_id:
                body = {
                    **body,
                    "first_transfer": jsonable_encoder(await self.first_transfer_of(party, operation_id)),
                }
        return Answer(stored.status, body, True)

    async def _apply(
        self,
        principal: Principal,
        party: str,
        section: SectionLookup,
        authorization_id: str,
        body: AuthorizationApply,
        holding: Any,
        claim: Claim | None,
    ) -> tuple[dict[str, Any], str | None]:
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            # The head's row lock serialises applies of one authorization: the cap check holds.
            version = await repository.current_authorization(connection, party, authorization_id, lock=True)
            if version is None:
                raise AuthorizationNotFound(party, authorization_id)
            failed = Failures()
            if version["status"] == AuthorizationStatus.REVOKED.value:
                failed.add("M02", f"authorization {authorization_id} is revoked")
            if version["ca_id"] != body.ca_id:
                failed.add(
                    "M07", f"authorization {authorization_id} is of {version['ca_id']}, not {body.ca_id}"
                )
            self._in_timeframe(version, body.vintage, failed)
            cap = version["authorized_quantity"]
            if cap is not None:
                used = await repository.quantity_under(connection, party, authorization_id, _CAP_STATES)
                if used + body.quantity > cap:
                    failed.add("T06", f"{used + body.quantity} authorized would exceed the authorized {cap}")
            if failed:
                raise ChecksFailed(failed.results())
            definition = self._first_transfer_at(version)
            operation_id = new_id("ftr") if definition is FirstTransferDefinition.AUTHORISATION else None
            values = {
                "state": MOState.RESERVED.value if operation_id else MOState.AUTHORIZED.value,
                "authorization_id": authorization_id,
                "authorization_version": version["version"],
                "operation_id": operation_id,
            }
            where = [
                mo_blocks.c.party == party,
                mo_blocks.c.state == MOState.PENDING_AUTHORIZATION.value,
                mo_blocks.c.vintage == body.vintage,
                mo_blocks.c.ca_id == body.ca_id,
                mo_blocks.c.origin_registry_id == section.registry_id,
                mo_blocks.c.metric == version["metric"],
                mo_blocks.c.sector.in_(version["sectors"]),
                mo_blocks.c.activity_type.in_(version["activity_types"]),
            ]
            try:
                rows = await repository.take(connection, where, body.quantity, values, now)
            except repository.NotEnough as short:
                failed.add(
                    "M03",
                    f"{short.found} pending MOs of {body.ca_id} vintage {body.vintage} match the authorization's "
                    f"metric, sectors and activity types; {body.quantity} asked",
                )
                raise ChecksFailed(failed.results()) from None
            blocks = [repository.block_from_row(r) for r in rows]
            await self._publish_authorized(connection, party, version, body.quantity, blocks)
            first_transfer = None
            if operation_id is not None:
                await self._record_operation(
                    connection,
                    operation_id=operation_id,
                    party=party,
                    version=version,
                    definition=FirstTransferDefinition.AUTHORISATION,
                    rows=rows,
                    to_account=holding.account_id if holding else f"{section.registry_id}-100-1",
                    use=None,
                    origin="apply",
                    initiated_by=principal.client_id,
                    note=None,
                    now=now,
                )
                first_transfer = {"operation_id": operation_id, "status": FirstTransferStatus.PENDING.value}
            answer = jsonable_encoder(
                AuthorizationApplied(
                    authorization_id=authorization_id,
                    authorization_version=version["version"],
                    quantity=body.quantity,
                    blocks=blocks,
                )
            )
            answer["first_transfer"] = first_transfer
            if claim is not None:
                await claim.complete(connection, 201, answer)
        return answer, operation_id

    # ---- first transfer (A4, A15) -------------------------------------------------------------------------

    async def _record_operation(
        self,
        connection: Any,
        *,
        operation_id: str,
        party: str,
        version: Any,
        definition: FirstTransferDefinition,
        rows: Sequence[Any],
        to_account: str | None,
        use: dict[str, Any] | None,
        origin: str,
        to_registry: str | None = None,
        initiated_by: str,
        note: str | None,
        now: datetime,
        awaiting_approval: bool = False,
    ) -> dict[str, Any]:
        """The saga's outbox row: the exact body the IR will get, written with the reservation."""
        request: dict[str, Any] = {
            "operation_id": operation_id,
            "first_transferring_party": party,
            "authorization_id": version["authorization_id"],
            "authorization_version": version["version"],
            "purposes": version["purposes"],
            "authorized_parties": version["authorized_parties"],
            "first_transfer_definition": definition.value,
            "authorized_quantity": version["authorized_quantity"],
            "blocks": [
                {
                    "ca_id": r["ca_id"],
                    "origin_registry_id": r["origin_registry_id"],
                    "first": int(r["first_serial"]),
                    "last": int(r["last_serial"]),
                    "vintage": r["vintage"],
                    "metric": r["metric"],
                    "applicable_gwp_values": r["applicable_gwp_values"],
                    "applicable_non_ghg_metric": r["applicable_non_ghg_metric"],
                    "conversion_factor": r["conversion_factor"],
                    "mitigation_type": r["mitigation_type"],
                    "sector": r["sector"],
                    "activity_type": r["activity_type"],
                    "underlying": (
                        {
                            "registry_id": r["underlying_registry_id"],
                            "first_unit_id": int(r["underlying_first"]),
                            "last_unit_id": int(r["underlying_first"])
                            + int(r["last_serial"])
                            - int(r["first_serial"]),
                        }
                        if r["underlying_registry_id"] is not None
                        else None
                    ),
                }
                for r in sorted(rows, key=lambda r: (r["ca_id"], r["origin_registry_id"], r["first_serial"]))
            ],
            "initiated_by": initiated_by,
        }
        if use is not None:
            request["use"] = use
        else:
            request["to_account"] = to_account
        if to_registry is not None:
            request["to_registry"] = to_registry
        if note is not None:
            request["note"] = note
        quantity = sum(int(r["last_serial"]) - int(r["first_serial"]) + 1 for r in rows)
        await connection.execute(
            insert(first_transfers).values(
                operation_id=operation_id,
                party=party,
                authorization_id=version["authorization_id"],
                authorization_version=version["version"],
                first_transfer_definition=definition.value,
                quantity=quantity,
                to_account=None if use is not None else to_account,
                use=use,
                request=request,
                mo_ranges=repository.merge_ranges(rows),
                status=(
                    FirstTransferStatus.AWAITING_APPROVAL
                    if awaiting_approval
                    else FirstTransferStatus.PENDING
                ).value,
                origin=origin,
                attempts=0,
                # The driver that reserved owns the first attempt; the resumer waits a lease.
                next_attempt_at=now + timedelta(seconds=self.saga.settings.saga_lease_seconds),
                initiated_by=initiated_by,
                created_at=now,
                updated_at=now,
            )
        )
        return request

    async def first_transfer(
        self, principal: Principal, party: str, body: MOFirstTransferCreate, key: str | None
    ) -> Answer:
        path = f"/v1/ars/{party}/first-transfers"
        claim = await self._claim(principal, key, path, body)
        if isinstance(claim, StoredAnswer):
            return await self._replay_first_transfer(party, claim)
        try:
            operation_id, refusal = await self._reserve_first_transfer(principal, party, body, claim, path)
        except BaseException:
            await claim.release()
            raise
        self._after_commit()
        if refusal is not None:
            return Answer(422, refusal)
        assert operation_id is not None
        operation = await self.first_transfer_of(party, operation_id)
        if operation.status is FirstTransferStatus.AWAITING_APPROVAL:
            return self._render_answer(operation, path)
        self.saga.hit("after_reserve")
        await self.saga.drive(operation_id)
        return self._render_answer(await self.first_transfer_of(party, operation_id), path)

    async def approve_first_transfer(
        self, principal: Principal, party: str, operation_id: str, key: str | None
    ) -> Answer:
        """Four-eyes (domain A4, "the Party approves"): another approver of the Party releases the operation
        to the IR. Idempotent by key; a second approval (any key) answers 409 with the status."""
        path = f"/v1/ars/{party}/first-transfers/{operation_id}/approve"
        claim = await self._claim(principal, key, path, {})
        if isinstance(claim, StoredAnswer):
            return await self._replay_first_transfer(party, claim)
        try:
            operation = await self.first_transfer_of(party, operation_id)
            if operation.initiated_by == principal.client_id:
                raise Forbidden("Four-eyes: the principal that asked for a first transfer cannot approve it.")
            now = datetime.now(UTC)
            async with self.db.connect() as connection:
                moved = await connection.execute(
                    update(first_transfers)
                    .where(
                        first_transfers.c.operation_id == operation_id,
                        first_transfers.c.status == FirstTransferStatus.AWAITING_APPROVAL.value,
                    )
                    .values(
                        status=FirstTransferStatus.PENDING.value,
                        approved_by=principal.client_id,
                        # The driver below owns the first attempt; the resumer waits a lease.
                        next_attempt_at=now + timedelta(seconds=self.saga.settings.saga_lease_seconds),
                        updated_at=now,
                    )
                )
                if repository.rowcount(moved) != 1:
                    raise FirstTransferNotAwaiting(operation_id, operation.status.value)
                await claim.complete(connection, 202, {"operation_id": operation_id})
        except BaseException:
            await claim.release()
            raise
        await self.saga.drive(operation_id)
        return self._render_answer(await self.first_transfer_of(party, operation_id), path)

    async def cancel_first_transfer(
        self, principal: Principal, party: str, operation_id: str
    ) -> MOFirstTransfer:
        """Withdraw a first transfer still awaiting approval: its MOs are authorized again."""
        operation = await self.first_transfer_of(party, operation_id)
        if not await self.saga.cancel_awaiting(operation_id, reason=f"withdrawn by {principal.client_id}"):
            raise FirstTransferNotAwaiting(operation_id, operation.status.value)
        return await self.first_transfer_of(party, operation_id)

    def _render_answer(self, operation: MOFirstTransfer, instance: str, replayed: bool = False) -> Answer:
        if operation.status in (FirstTransferStatus.RELEASED, FirstTransferStatus.REFUSED):
            return Answer(
                422,
                _check_failed(
                    operation.checks,
                    instance,
                    operation_id=operation.operation_id,
                    transaction_id=operation.transaction_id,
                    status=operation.status.value,
                )
                | {"status": 422, "first_transfer_status": operation.status.value},
                replayed,
            )
        status = 201 if operation.status is FirstTransferStatus.COMPLETED else 202
        return Answer(status, jsonable_encoder(operation), replayed)

    async def _replay_first_transfer(self, party: str, stored: StoredAnswer) -> Answer:
        body = stored.body
        operation_id = body.get("operation_id") if isinstance(body, dict) else None
        if operation_id:
            return self._render_answer(
                await self.first_transfer_of(party, operation_id), f"/v1/ars/{party}/first-transfers", True
            )
        return Answer(stored.status, body, True)

    async def _reserve_first_transfer(
        self, principal: Principal, party: str, body: MOFirstTransferCreate, claim: Claim, path: str
    ) -> tuple[str | None, dict[str, Any] | None]:
        failed = Failures()
        section = await self.directory.section(party)
        if section is None or not section.ars or section.status is not SectionStatus.OPEN:
            shown = (
                "no section" if section is None else ("no ARS" if not section.ars else section.status.value)
            )
            failed.add("A04", f"the Party section of {party} is not open with the ARS ({shown})")
        version = await self._read_version(party, body.authorization_id)
        destination = None
        registry: RegistryPublic | None = None
        participants: frozenset[str] = frozenset()
        if body.to_registry is not None:
            registry = await self.directory.registry(body.to_registry)
        elif body.to_account is not None:
            destination = await self.directory.account(body.to_account)
        to_party = registry_party(body.to_registry) if body.to_registry else destination and destination.party
        definition = FirstTransferDefinition.FIRST_INTERNATIONAL_TRANSFER
        use: dict[str, Any] | None = None
        if version is None:
            failed.add("M01", f"{party} has no authorization {body.authorization_id!r}")
        else:
            if to_party is not None and to_party != party:
                ca = await self.directory.cooperative_approach(version["ca_id"])
                participants = frozenset(ca.participants) if ca else frozenset()
            definition, use = self._first_transfer_checks(
                party, version, body, destination, participants, failed, registry
            )
            act = body.use or body.cancellation
            entity = act.using_entity_id if act is not None else None
            if entity is not None and await self.directory.entity(party, entity) is None:
                failed.add("M08", f"{party} has not authorized an entity {entity!r}")
        operation_id = new_id("ftr")
        now = datetime.now(UTC)
        async with self.db.connect() as connection:
            rows: list[dict[str, Any]] = []
            if not failed:
                assert version is not None
                # Re-read under the head's lock: a revocation or a new version commits before or after us.
                version = await repository.current_authorization(
                    connection, party, body.authorization_id, lock=True
                )
                assert version is not None
                if version["status"] == AuthorizationStatus.REVOKED.value:
                    failed.add("M02", f"authorization {body.authorization_id} is revoked")
                cap = version["authorized_quantity"]
                if cap is not None and not failed:
                    done = await repository.quantity_under(
                        connection, party, body.authorization_id, _FIRST_TRANSFERRED_OR_HELD
                    )
                    if done + body.quantity > cap:
                        failed.add(
                            "T06",
                            f"{done + body.quantity} first transferred would exceed the authorized {cap}",
                        )
            if not failed:
                assert version is not None
                where = [
                    mo_blocks.c.party == party,
                    mo_blocks.c.authorization_id == body.authorization_id,
                    mo_blocks.c.state == MOState.AUTHORIZED.value,
                ]
                if body.vintage is not None:
                    where.append(mo_blocks.c.vintage == body.vintage)
                try:
                    async with connection.begin_nested():
                        try:
                            rows = await repository.take(
                                connection,
                                where,
                                body.quantity,
                                {"state": MOState.RESERVED.value, "operation_id": operation_id},
                                now,
                            )
                        except repository.NotEnough as short:
                            shown = f" of vintage {body.vintage}" if body.vintage else ""
                            failed.add(
                                "M03",
                                f"{short.found} authorized MOs{shown} are available under {body.authorization_id}; "
                                f"{body.quantity} asked",
                            )
                            raise _Undo() from None
                        for row in rows:
                            self._in_timeframe(version, row["vintage"], failed)
                            if row["vintage"] > now.year:
                                failed.add("T08", f"vintage {row['vintage']} is in the future")
                        if failed:
                            raise _Undo()
                except _Undo:
                    rows = []
            if failed:
                checks = failed.results()
                await self._record_refusal(
                    connection, operation_id, party, body, version, definition, principal, checks, now
                )
                problem = _check_failed(
                    checks,
                    path,
                    operation_id=operation_id,
                    transaction_id=None,
                    first_transfer_status=FirstTransferStatus.REFUSED.value,
                )
                await claim.complete(connection, 422, problem)
                return None, problem
            assert version is not None
            await self._record_operation(
                connection,
                operation_id=operation_id,
                party=party,
                version=version,
                definition=definition,
                rows=rows,
                to_account=body.to_account,
                to_registry=body.to_registry,
                use=use,
                origin="request",
                initiated_by=principal.client_id,
                note=body.note,
                now=now,
                awaiting_approval=bool(section and section.four_eyes),
            )
            await claim.complete(connection, 202, {"operation_id": operation_id})
        return operation_id, None

    def _first_transfer_checks(
        self,
        party: str,
        version: Any,
        body: MOFirstTransferCreate,
        destination: Any,
        participants: frozenset[str],
        failed: Failures,
        registry: RegistryPublic | None = None,
    ) -> tuple[FirstTransferDefinition, dict[str, Any] | None]:
        purposes = Purpose(version["purposes"])
        oimp_definition = (
            FirstTransferDefinition(version["first_transfer_definition"])
            if version["first_transfer_definition"]
            else None
        )
        if version["status"] == AuthorizationStatus.REVOKED.value:
            failed.add("M02", f"authorization {body.authorization_id} is revoked")
        if body.to_account is not None:
            if body.to_registry is not None:
                # INTERREGISTRY §5.3: the account is the registry's own (opaque to the IR); the registry's
                # Party acquires. The IR checks again (3002, 5905, 5907) when it proposes the transfer.
                to_party = registry_party(body.to_registry)
                if registry is None or registry.status not in _RECEIVING_REGISTRY:
                    shown = "unknown" if registry is None else registry.status.value
                    failed.add("3002", f"{body.to_registry} cannot receive transfers ({shown})")
                own = "national registry"
            else:
                if destination is None or destination.status is not AccountStatus.OPEN:
                    failed.add("A05", f"{body.to_account} does not exist or is not open")
                    return FirstTransferDefinition.FIRST_INTERNATIONAL_TRANSFER, None
                if destination.type is not AccountType.HOLDING:
                    failed.add("A06")
                if destination.section_status is not SectionStatus.OPEN:
                    failed.add("T10", f"the destination Party section is {destination.section_status.value}")
                to_party, own = destination.party, "account"
            if to_party == party:
                if oimp_definition in (
                    FirstTransferDefinition.AUTHORISATION,
                    FirstTransferDefinition.ISSUANCE,
                ):
                    return oimp_definition, None
                failed.add(
                    "M06",
                    f"a first transfer into the Party's own {own} is the OIMP first transfer of an authorization "
                    "whose definition is Authorisation or Issuance",
                )
                return FirstTransferDefinition.FIRST_INTERNATIONAL_TRANSFER, None
            if not purposes.covers_ndc:
                failed.add(
                    "T05", f"authorization {body.authorization_id} ({purposes.value}) does not cover NDC use"
                )
            allowed = version["authorized_parties"]
            if allowed and to_party not in allowed:
                failed.add("T05A", f"authorization {body.authorization_id} does not name {to_party}")
            missing = sorted({party, to_party} - participants)
            if missing:
                failed.add("T07", f"{', '.join(missing)} not participating in {version['ca_id']}")
            return FirstTransferDefinition.FIRST_INTERNATIONAL_TRANSFER, None
        # Use or cancellation: the first transfer is the use (IMP) or the cancellation (OP).
        is_use = body.use is not None
        act = body.use if is_use else body.cancellation
        assert act is not None
        if oimp_definition is not FirstTransferDefinition.USE_OR_CANCELLATION:
            failed.add(
                "M06",
                f"authorization {body.authorization_id} does not define the first transfer as Use or Cancellation",
            )
        covered = purposes.covers_imp if is_use else purposes.covers_op
        if not covered:
            failed.add(
                "T05",
                f"authorization {body.authorization_id} ({purposes.value}) does not cover "
                + ("use for IMP" if is_use else "cancellation for OP"),
            )
        entities = version["authorized_entities"]
        if act.using_entity_id is not None and entities and act.using_entity_id not in entities:
            failed.add("M05", f"{act.using_entity_id} is not among the authorization's entities")
        use = {
            "type": (TransactionType.USE_OIMP if is_use else TransactionType.CANCELLATION).value,
            "purpose": act.purpose,
            "using_entity_id": act.using_entity_id,
        }
        return FirstTransferDefinition.USE_OR_CANCELLATION, use

    async def _record_refusal(
        self,
        connection: Any,
        operation_id: str,
        party: str,
        body: MOFirstTransferCreate,
        version: Any,
        definition: FirstTransferDefinition,
        principal: Principal,
        checks: list[CheckResult],
        now: datetime,
    ) -> None:
        await connection.execute(
            insert(first_transfers).values(
                operation_id=operation_id,
                party=party,
                authorization_id=body.authorization_id,
                authorization_version=version["version"] if version is not None else 0,
                first_transfer_definition=definition.value,
                quantity=body.quantity,
                to_account=body.to_account,
                use=None,
                request=jsonable_encoder(body),
                mo_ranges=[],
                status=FirstTransferStatus.REFUSED.value,
                checks=[c.model_dump() for c in checks],
                origin="request",
                attempts=0,
                next_attempt_at=now,
                initiated_by=principal.client_id,
                created_at=now,
                updated_at=now,
                completed_at=now,
            )
        )

    async def first_transfer_of(self, party: str, operation_id: str) -> MOFirstTransfer:
        async with self.db.read() as session:
            row = (
                (
                    await session.execute(
                        select(first_transfers).where(
                            first_transfers.c.party == party, first_transfers.c.operation_id == operation_id
                        )
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise FirstTransferNotFound(f"{party} has no first transfer {operation_id}.")
        return self._operation_model(row)

    @staticmethod
    def _operation_model(row: Any) -> MOFirstTransfer:
        return MOFirstTransfer(
            operation_id=row["operation_id"],
            transaction_id=row["transaction_id"],
            status=FirstTransferStatus(row["status"]),
            transaction_status=row["transaction_status"],
            party=row["party"],
            authorization_id=row["authorization_id"],
            authorization_version=row["authorization_version"],
            first_transfer_definition=FirstTransferDefinition(row["first_transfer_definition"]),
            quantity=row["quantity"],
            to_account=row["to_account"],
            to_registry=(row["request"] or {}).get("to_registry"),
            use=row["use"],
            blocks=[Block.model_validate(b) for b in row["result_blocks"] or []],
            mo_blocks=row["mo_ranges"] or [],
            checks=[CheckResult.model_validate(c) for c in row["checks"] or []],
            initiated_by=row["initiated_by"],
            approved_by=row["approved_by"],
            created_at=_utc(row["created_at"]),
            completed_at=_utc(row["completed_at"]) if row["completed_at"] is not None else None,
        )

    async def first_transfers(
        self, party: str, *, status: FirstTransferStatus | None, limit: int, cursor: str | None
    ) -> Page[MOFirstTransfer]:
        key = decode_cursor(cursor, fields=("operation_id",))
        query = (
            select(first_transfers)
            .where(first_transfers.c.party == party)
            .order_by(first_transfers.c.operation_id)
            .limit(limit + 1)
        )
        if status is not None:
            query = query.where(first_transfers.c.status == status.value)
        if key:
            query = query.where(first_transfers.c.operation_id > key["operation_id"])
        async with self.db.read() as session:
            rows = (await session.execute(query)).mappings().all()
        items = [self._operation_model(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page[MOFirstTransfer](
            items=items,
            next_cursor=encode_cursor({"operation_id": items[-1].operation_id}) if more and items else None,
        )

    # ---- domestic cancellation ----------------------------------------------------------------------------

    async def cancel(
        self, principal: Principal, party: str, body: MOCancellationCreate, key: str | None
    ) -> Answer:
        section = await self._usable_section(party)
        path = f"/v1/ars/{party}/cancellations"
        claim = await self._claim(principal, key, path, body) if key else None
        if isinstance(claim, StoredAnswer):
            return Answer(claim.status, claim.body, True)
        try:
            answer = await self._cancel(principal, party, section, body, claim)
        except BaseException:
            if claim is not None:
                await claim.release()
            raise
        self._after_commit()
        return Answer(201, answer)

    async def _cancel(
        self,
        principal: Principal,
        party: str,
        section: SectionLookup,
        body: MOCancellationCreate,
        claim: Claim | None,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        cancellation_id = new_id("can")
        registry_id = section.registry_id
        values = {"state": MOState.CANCELLED.value, "cancellation_id": cancellation_id}
        cancellable = (MOState.PENDING_AUTHORIZATION.value, MOState.AUTHORIZED.value)
        async with self.db.connect() as connection:
            if body.first is not None and body.last is not None:
                await repository.split_at(connection, body.ca_id, registry_id, body.first, now)
                await repository.split_at(connection, body.ca_id, registry_id, body.last + 1, now)
                inside = (
                    (
                        await connection.execute(
                            select(mo_blocks)
                            .where(
                                mo_blocks.c.ca_id == body.ca_id,
                                mo_blocks.c.origin_registry_id == registry_id,
                                mo_blocks.c.first_serial >= body.first,
                                mo_blocks.c.first_serial <= body.last,
                            )
                            .order_by(mo_blocks.c.first_serial)
                            .with_for_update()
                        )
                    )
                    .mappings()
                    .all()
                )
                covered = sum(int(r["last_serial"]) - int(r["first_serial"]) + 1 for r in inside)
                if covered != body.last - body.first + 1 or any(
                    r["party"] != party or r["state"] not in cancellable for r in inside
                ):
                    raise MOsNotCancellable(
                        f"Serials {body.first}-{body.last} of {body.ca_id}-{registry_id} are not all MOs of {party} "
                        "pending authorization or authorized (reserved and first-transferred units stay)."
                    )
                await connection.execute(
                    update(mo_blocks)
                    .where(mo_blocks.c.id.in_([r["id"] for r in inside]))
                    .values(**values, updated_at=now)
                )
                rows = [{**r, **values} for r in inside]
                quantity = covered
            else:
                assert body.quantity is not None
                where = [
                    mo_blocks.c.party == party,
                    mo_blocks.c.ca_id == body.ca_id,
                    mo_blocks.c.origin_registry_id == registry_id,
                ]
                if body.authorization_id is not None:
                    where += [
                        mo_blocks.c.state == MOState.AUTHORIZED.value,
                        mo_blocks.c.authorization_id == body.authorization_id,
                    ]
                else:
                    where.append(mo_blocks.c.state == MOState.PENDING_AUTHORIZATION.value)
                if body.vintage is not None:
                    where.append(mo_blocks.c.vintage == body.vintage)
                try:
                    rows = await repository.take(connection, where, body.quantity, values, now)
                except repository.NotEnough as short:
                    raise MOsNotCancellable(
                        f"Only {short.found} matching MOs may be cancelled; {body.quantity} asked."
                    ) from None
                quantity = body.quantity
            await connection.execute(
                insert(mo_cancellations).values(
                    cancellation_id=cancellation_id,
                    party=party,
                    quantity=quantity,
                    reason=body.reason,
                    created_by=principal.client_id,
                    created_at=now,
                )
            )
            result = MOCancellation(
                cancellation_id=cancellation_id,
                party=party,
                quantity=quantity,
                reason=body.reason,
                blocks=[repository.block_from_row(r) for r in rows],
                created_at=now,
                created_by=principal.client_id,
            )
            answer = jsonable_encoder(result)
            await self.outbox.publish(connection, ArsEventType.MOS_CANCELLED.value, answer, party=party)
            if claim is not None:
                await claim.complete(connection, 201, answer)
        return answer

    # ---- blocks ---------------------------------------------------------------------------------------------

    async def blocks(
        self,
        party: str,
        *,
        state: MOState | None,
        ca_id: str | None,
        vintage: int | None,
        authorization_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[MOBlock]:
        key = decode_cursor(cursor, fields=("ca_id", "origin_registry_id", "first"))
        query = select(mo_blocks).where(mo_blocks.c.party == party)
        if state is not None:
            query = query.where(mo_blocks.c.state == state.value)
        if ca_id is not None:
            query = query.where(mo_blocks.c.ca_id == ca_id)
        if vintage is not None:
            query = query.where(mo_blocks.c.vintage == vintage)
        if authorization_id is not None:
            query = query.where(mo_blocks.c.authorization_id == authorization_id)
        if key:
            query = query.where(
                tuple_(mo_blocks.c.ca_id, mo_blocks.c.origin_registry_id, mo_blocks.c.first_serial)
                > tuple_(key["ca_id"], key["origin_registry_id"], key["first"])
            )
        query = query.order_by(
            mo_blocks.c.ca_id, mo_blocks.c.origin_registry_id, mo_blocks.c.first_serial
        ).limit(limit + 1)
        async with self.db.read() as session:
            rows = (await session.execute(query)).mappings().all()
        items = [repository.block_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = None
        if more and items:
            last = items[-1]
            next_cursor = encode_cursor(
                {"ca_id": last.ca_id, "origin_registry_id": last.origin_registry_id, "first": last.first}
            )
        return Page[MOBlock](items=items, next_cursor=next_cursor)


class _Undo(Exception):
    """Rolls the savepoint of a reservation back; the refusal is recorded in the outer transaction."""
