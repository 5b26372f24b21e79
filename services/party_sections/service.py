"""Use cases of the party_sections service: each checks, writes, audits and publishes in one transaction.

Every change follows the same order: validate everything that needs no lock (bodies arrive validated by
the contracts models), ask peers what must be asked (balances) before opening our own transaction, then
in one transaction lock the section row (so writes to one section queue, PostgreSQL `FOR UPDATE`, SQLite
`BEGIN IMMEDIATE`), check again under the lock, write, add the audit row and publish the event to the
outbox. Any failure raises a domain error and rolls the whole transaction back, so nothing is half-written.
`outbox.notify()` runs after the commit.

Who may call what is decided by `permissions`: the router checks Party-scoped paths before the body is
read; the use cases here check what only the data tells (an account's Party, a body's Party, list scope).
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.accounts import (
    Account,
    AccountCreate,
    AccountStatus,
    AccountType,
    format_account_id,
    parse_account_id,
)
from contracts.pagination import Page
from contracts.parties import Party, all_parties, party_name
from contracts.party_sections import (
    SECTION_MOVES,
    AccountLookup,
    AuthorizedEntity,
    AuthorizedEntityCreate,
    ConfidentialDesignation,
    CooperativeApproach,
    CooperativeApproachCreate,
    IncomingAcceptance,
    NdcPeriod,
    PartySection,
    PartySectionCreate,
    SectionEvent,
    SectionLookup,
    SectionSettings,
    SectionSettingsPatch,
    SectionStatus,
)
from contracts.transactions import AccountBalance, PartyBalance
from kit.auth import Principal
from kit.db import Database
from kit.errors import Forbidden, PreconditionFailed, PreconditionRequired, ServiceUnavailable
from kit.outbox import Outbox
from kit.pagination import page_of
from kit.service_client import Peers
from services.party_sections import repository as repo
from services.party_sections.errors import (
    AccountNotFound,
    BalanceNotZero,
    BalanceUnknown,
    CooperativeApproachExists,
    CooperativeApproachNotFound,
    EntityExists,
    EntityNotFound,
    IllegalAccountMove,
    IllegalSectionMove,
    NotAParticipant,
    OverlappingNdcPeriods,
    SectionExists,
    SectionNotFound,
    SectionNotWritable,
    UnknownCooperativeApproach,
    UnknownHolderEntity,
)
from services.party_sections.permissions import Action, authorize, permits, reach

__all__ = [
    "ACCOUNT_MOVES",
    "DEFAULT_ACCOUNT_NAMES",
    "WRITABLE_IN",
    "PartySectionsService",
    "etag",
    "list_parties",
]

ModelT = TypeVar("ModelT", bound=BaseModel)

#: Event type of each section move (API.md path action → `party_section.<what happened>`).
_MOVE_EVENTS = {
    "open": "party_section.opened",
    "suspend": "party_section.suspended",
    "reactivate": "party_section.reactivated",
    "close": "party_section.closing",
    "finalize_close": "party_section.closed",
}

#: Section statuses in which a Party may change each kind of its own data. A suspended section takes no
#: change but the Secretariat's moves and a closed one none at all (domain §3.3); a closing one only lets
#: its accounts be blocked and closed as they are emptied.
WRITABLE_IN: dict[str, frozenset[SectionStatus]] = {
    "settings": frozenset({SectionStatus.REQUESTED, SectionStatus.OPEN}),
    "entities": frozenset({SectionStatus.REQUESTED, SectionStatus.OPEN}),
    "ndc_periods": frozenset({SectionStatus.REQUESTED, SectionStatus.OPEN}),
    "accounts": frozenset({SectionStatus.OPEN}),
    "account_status": frozenset({SectionStatus.OPEN, SectionStatus.CLOSING}),
}

#: Account status changes: path action → (statuses it applies to, status it leads to) (domain §3.2).
ACCOUNT_MOVES: dict[str, tuple[frozenset[AccountStatus], AccountStatus]] = {
    "block": (frozenset({AccountStatus.OPEN}), AccountStatus.BLOCKED),
    "unblock": (frozenset({AccountStatus.BLOCKED}), AccountStatus.OPEN),
    "close": (frozenset({AccountStatus.OPEN, AccountStatus.BLOCKED}), AccountStatus.CLOSED),
}

#: Names of the default accounts, after the Party's name (domain §3.1 meanings of the type codes).
DEFAULT_ACCOUNT_NAMES: dict[AccountType, str] = {
    AccountType.HOLDING: "holding account",
    AccountType.NDC_USE: "use towards NDC",
    AccountType.OIMP_USE: "use towards other international mitigation purposes",
    AccountType.CANCELLATION: "cancellation (other cancellations)",
    AccountType.OMGE_CANCELLATION: "voluntary cancellation for OMGE",
    AccountType.MANDATORY_OMGE_CANCELLATION: "mandatory cancellation for OMGE",
    AccountType.ADAPTATION_FUND: "Adaptation Fund",
}

log = structlog.get_logger(__name__)


def list_parties(*, limit: int, after: str | None) -> Page[Party]:
    """Parties in code order, after the code `after` (the reference list is in memory)."""
    parties = [party for party in all_parties() if after is None or party.code > after]
    return page_of(parties[: limit + 1], limit=limit, key=lambda party: {"code": party.code})


def etag(version: int) -> str:
    """The strong ETag of a section version."""
    return f'"{version}"'


def _if_match_holds(header: str, version: int) -> bool:
    # Lenient on syntax (a bare `3`, or W/"3" from a proxy that weakened it): our tags are exact versions.
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == str(version):
            return True
    return False


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _section(row: Mapping[Any, Any]) -> PartySection:
    return PartySection(
        party=row["party"],
        registry_id=row["registry_id"],
        status=SectionStatus(row["status"]),
        ars=row["ars"],
        settings=SectionSettings(
            four_eyes=row["four_eyes"],
            confidential_fields=[
                ConfidentialDesignation.model_validate(d) for d in row["confidential_fields"]
            ],
            incoming_acceptance=IncomingAcceptance(row["incoming_acceptance"]),
        ),
        version=row["version"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
    )


def _account(row: Mapping[Any, Any]) -> Account:
    return Account(
        account_id=row["account_id"],
        party=row["party"],
        type=AccountType(row["type"]),
        type_code=row["type_code"],
        name=row["name"],
        status=AccountStatus(row["status"]),
        holder_entity_id=row["holder_entity_id"],
    )


def _lookup(account: Mapping[Any, Any], section: Mapping[Any, Any]) -> AccountLookup:
    return AccountLookup(
        account_id=account["account_id"],
        party=account["party"],
        registry_id=account["registry_id"],
        type=AccountType(account["type"]),
        type_code=account["type_code"],
        status=AccountStatus(account["status"]),
        holder_entity_id=account["holder_entity_id"],
        section_status=SectionStatus(section["status"]),
        four_eyes=section["four_eyes"],
    )


def _entity(row: Mapping[Any, Any]) -> AuthorizedEntity:
    return AuthorizedEntity.model_validate({**row, "created_at": _utc(row["created_at"])})


def _ca(row: Mapping[Any, Any], participants: list[str]) -> CooperativeApproach:
    return CooperativeApproach(
        ca_id=row["ca_id"], name=row["name"], participants=participants, created_at=_utc(row["created_at"])
    )


def _json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _allowed_section_moves(status: SectionStatus) -> list[str]:
    """Path actions allowed from `status` (`finalize_close` is reached through `/close`)."""
    names = {
        "close" if name == "finalize_close" else name
        for name, (src, _) in SECTION_MOVES.items()
        if status in src
    }
    return sorted(names)


def _resolve_move(party: str, action: str, status: SectionStatus) -> tuple[str, SectionStatus]:
    """The SECTION_MOVES entry a path action takes from `status`; 409 problem when none."""
    for name in ("finalize_close", "close") if action == "close" else (action,):
        sources, target = SECTION_MOVES[name]
        if status in sources:
            return name, target
    raise IllegalSectionMove(party, action, status.value, _allowed_section_moves(status))


def _require_writable(section: Mapping[Any, Any], kind: str, what: str) -> None:
    status = SectionStatus(section["status"])
    allowed = WRITABLE_IN[kind]
    if status not in allowed:
        raise SectionNotWritable(section["party"], status.value, what, (s.value for s in allowed))


def _check_account_move(section: Mapping[Any, Any], account: Mapping[Any, Any], move: str) -> AccountStatus:
    """The account's next status for `move`, or a 409 problem saying why not."""
    _require_writable(section, "account_status", f"{move} account {account['account_id']}")
    sources, target = ACCOUNT_MOVES[move]
    status = AccountStatus(account["status"])
    if status not in sources:
        allowed = sorted(name for name, (src, _) in ACCOUNT_MOVES.items() if status in src)
        raise IllegalAccountMove(
            f"Cannot {move} account {account['account_id']}: it is {status.value}; "
            f"allowed: {', '.join(allowed) if allowed else 'none (closed is final)'}.",
            current_status=status.value,
            allowed_moves=allowed,
        )
    if move == "close" and account["is_default"] and AccountType(account["type"]).terminal:
        raise IllegalAccountMove(
            f"Account {account['account_id']} is a default {account['type']} account: terminal accounts "
            "keep the history of units used or cancelled and are never closed.",
            current_status=status.value,
            allowed_moves=["block"] if status is AccountStatus.OPEN else ["unblock"],
        )
    return target


def _check_ndc_periods(periods: list[NdcPeriod]) -> list[NdcPeriod]:
    ordered = sorted(periods, key=lambda period: period.first_year)
    for before, after in pairwise(ordered):
        if after.first_year <= before.last_year:
            raise OverlappingNdcPeriods(
                f"{before.first_year}–{before.last_year} and {after.first_year}–{after.last_year} overlap.",
            )
    return ordered


def _peer_answer(response: Any, model: type[ModelT], what: str) -> ModelT:
    if response.status_code != 200:
        raise BalanceUnknown(
            f"The transactions service did not give the balance of {what} (HTTP {response.status_code})."
        )
    try:
        return model.model_validate(response.json())
    except (ValidationError, ValueError) as exc:
        raise BalanceUnknown(f"The transactions service answered an unreadable balance of {what}.") from exc


class PartySectionsService:
    """The use cases, over the service's database, outbox and peers (one instance per app)."""

    def __init__(self, db: Database, outbox: Outbox, peers: Peers) -> None:
        self.db = db
        self.outbox = outbox
        self.peers = peers

    # ---- helpers ---------------------------------------------------------------------------------------

    async def _tell_ledger(self, party: str, account_id: str | None = None) -> None:
        """Make the ledger drop its cached lookups of what just committed, before the caller hears of it.

        Best effort: if the transactions service cannot be told, its feed follower evicts the same entries
        within a fraction of a second, and it stops trusting its cache when it cannot read this feed.
        """
        try:
            response = await self.peers.request(
                "transactions",
                "POST",
                "/internal/v1/directory/invalidations",
                json={"party": party, "account_id": account_id},
            )
        except ServiceUnavailable as exc:
            log.warning("ledger_not_told", party=party, account_id=account_id, error=str(exc))
            return
        if response.status_code != 204:
            log.warning("ledger_not_told", party=party, account_id=account_id, status=response.status_code)

    async def _locked_section(self, session: AsyncSession, party: str) -> RowMapping:
        row = await repo.section(session, party, for_update=True)
        if row is None:
            raise SectionNotFound(party)
        return row

    async def _read_section(self, session: AsyncSession, party: str) -> RowMapping:
        row = await repo.section(session, party)
        if row is None:
            raise SectionNotFound(party)
        return row

    # ---- cooperative approaches ------------------------------------------------------------------------

    async def register_cooperative_approach(
        self, principal: Principal, body: CooperativeApproachCreate
    ) -> CooperativeApproach:
        authorize(principal, Action.CA_CREATE)
        now = _now()
        approach = CooperativeApproach(
            ca_id=body.ca_id, name=body.name, participants=sorted(body.participants), created_at=now
        )
        try:
            async with self.db.transaction() as session:
                if await repo.cooperative_approach(session, body.ca_id) is not None:
                    raise CooperativeApproachExists(f"{body.ca_id} is already registered.")
                await repo.insert_cooperative_approach(
                    session,
                    {"ca_id": body.ca_id, "name": body.name, "created_at": now},
                    approach.participants,
                )
                await repo.add_audit(
                    session,
                    party=None,
                    subject=f"cooperative_approach:{body.ca_id}",
                    action="cooperative_approach.register",
                    actor=principal.client_id,
                    at=now,
                    details=_json(approach),
                )
                await self.outbox.publish(session, "cooperative_approach.registered", _json(approach))
        except IntegrityError as exc:  # a concurrent registration of the same id won the race
            raise CooperativeApproachExists(f"{body.ca_id} is already registered.") from exc
        self.outbox.notify()
        return approach

    async def cooperative_approach(self, ca_id: str) -> CooperativeApproach:
        async with self.db.read() as session:
            row = await repo.cooperative_approach(session, ca_id)
            if row is None:
                raise CooperativeApproachNotFound(f"No cooperative approach {ca_id} is registered.")
            participants = await repo.ca_participants_of(session, [ca_id])
        return _ca(row, participants[ca_id])

    async def cooperative_approaches(self, *, limit: int, after: str | None) -> Page[CooperativeApproach]:
        async with self.db.read() as session:
            rows = await repo.cooperative_approaches_page(session, after=after, limit=limit)
            participants = await repo.ca_participants_of(session, [row["ca_id"] for row in rows])
        items = [_ca(row, participants[row["ca_id"]]) for row in rows]
        return page_of(items, limit=limit, key=lambda ca: {"ca_id": ca.ca_id})

    # ---- sections --------------------------------------------------------------------------------------

    async def request_section(self, principal: Principal, body: PartySectionCreate) -> PartySection:
        """A new section in status `requested` (the Party's request, or the Secretariat's on its behalf)."""
        authorize(principal, Action.SECTION_CREATE, body.party)
        now = _now()
        values: dict[str, Any] = {
            "party": body.party,
            "registry_id": body.registry_id,
            "status": SectionStatus.REQUESTED.value,
            "ars": body.ars,
            "four_eyes": False,
            "confidential_fields": [],
            "incoming_acceptance": IncomingAcceptance.AUTOMATIC.value,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        section = _section(values)
        exists = SectionExists(f"Party {body.party} already has a section (registry ids are unique too).")
        try:
            async with self.db.transaction() as session:
                if await repo.section(session, body.party) is not None:
                    raise exists
                await repo.insert_section(session, values)
                await repo.add_audit(
                    session,
                    party=body.party,
                    subject="section",
                    action="section.request",
                    actor=principal.client_id,
                    at=now,
                    to_status=SectionStatus.REQUESTED.value,
                    details={"registry_id": body.registry_id, "ars": body.ars},
                )
                await self.outbox.publish(
                    session,
                    "party_section.requested",
                    _json(section) | {"previous_status": None, "reason": None},
                    party=body.party,
                )
        except IntegrityError as exc:  # the same Party or registry id, inserted concurrently
            raise exists from exc
        self.outbox.notify()
        return section

    async def sections(
        self, principal: Principal, *, status: SectionStatus | None, limit: int, after: str | None
    ) -> Page[PartySection]:
        """The sections the caller may read: every one for the Secretariat and global auditors, else its own."""
        parties = reach(principal, Action.SECTION_READ)
        if parties is not None and not parties:
            raise Forbidden("This client may not read Party sections.", action=Action.SECTION_READ.value)
        async with self.db.read() as session:
            rows = await repo.sections_page(
                session, parties=parties, status=status.value if status else None, after=after, limit=limit
            )
        return page_of([_section(row) for row in rows], limit=limit, key=lambda s: {"party": s.party})

    async def history(self, party: str, *, limit: int, after: int | None) -> Page[SectionEvent]:
        """The section's audited status changes, oldest first."""
        async with self.db.read() as session:
            await self._read_section(session, party)
            rows = await repo.section_history_page(session, party, after=after, limit=limit)
        page = page_of(list(rows), limit=limit, key=lambda row: {"id": row["id"]})
        events = [
            SectionEvent(
                party=party,
                from_status=SectionStatus(row["from_status"]) if row["from_status"] else None,
                to_status=SectionStatus(row["to_status"]),
                actor=row["actor"],
                reason=row["reason"],
                at=_utc(row["at"]),
            )
            for row in page.items
        ]
        return Page[SectionEvent](items=events, next_cursor=page.next_cursor)

    async def section(self, party: str) -> PartySection:
        async with self.db.read() as session:
            return _section(await self._read_section(session, party))

    async def move_section(
        self, principal: Principal, party: str, action: str, reason: str | None
    ) -> PartySection:
        """open, suspend, reactivate or close (twice: to closing, then to closed at a zero balance)."""
        authorize(principal, Action.SECTION_MOVE, party)
        async with self.db.read() as session:
            current = await self._read_section(session, party)
        name, target = _resolve_move(party, action, SectionStatus(current["status"]))
        if name == "finalize_close":
            response = await self.peers.request(
                "transactions", "GET", f"/internal/v1/party-sections/{party}/balance"
            )
            balance = _peer_answer(response, PartyBalance, f"the section of {party}")
            if balance.total:
                raise BalanceNotZero(f"The section of {party}", balance.total)
        now = _now()
        async with self.db.transaction() as session:
            row = await self._locked_section(session, party)
            status = SectionStatus(row["status"])
            if status not in SECTION_MOVES[name][0]:  # moved by someone else since we looked
                raise IllegalSectionMove(party, action, status.value, _allowed_section_moves(status))
            values = {"status": target.value, "version": row["version"] + 1, "updated_at": now}
            await repo.update_section(session, party, values)
            section = _section({**row, **values})
            await repo.add_audit(
                session,
                party=party,
                subject="section",
                action=f"section.{name}",
                actor=principal.client_id,
                at=now,
                reason=reason,
                from_status=status.value,
                to_status=target.value,
            )
            # The section's event first, so a consumer knows the section before its accounts' events.
            await self.outbox.publish(
                session,
                _MOVE_EVENTS[name],
                _json(section) | {"previous_status": status.value, "reason": reason},
                party=party,
            )
            if name == "open":
                await self._open_default_accounts(session, principal, row, now)
            elif name == "finalize_close":
                await self._close_remaining_accounts(session, principal, party, now)
        self.outbox.notify()
        await self._tell_ledger(party)
        return section

    async def _open_default_accounts(
        self, session: AsyncSession, principal: Principal, section: Mapping[Any, Any], now: datetime
    ) -> None:
        """One account of each IR type, numbered 1 (domain §3.3 step 2)."""
        party = section["party"]
        rows = [
            {
                "account_id": format_account_id(section["registry_id"], account_type, 1),
                "party": party,
                "registry_id": section["registry_id"],
                "type": account_type.value,
                "type_code": account_type.code,
                "n": 1,
                "name": f"{party_name(party)} {DEFAULT_ACCOUNT_NAMES[account_type]}",
                "status": AccountStatus.OPEN.value,
                "holder_entity_id": None,
                "is_default": True,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            for account_type in AccountType
        ]
        await repo.insert_accounts(session, rows)
        for row in rows:
            account = _account(row)
            await repo.add_audit(
                session,
                party=party,
                subject=f"account:{account.account_id}",
                action="account.open",
                actor=principal.client_id,
                at=now,
                to_status=account.status.value,
                details={"default": True},
            )
            await self.outbox.publish(session, "account.opened", _json(account), party=party)

    async def _close_remaining_accounts(
        self, session: AsyncSession, principal: Principal, party: str, now: datetime
    ) -> None:
        """A closed section's accounts close with it (its balance was 0), each with its own event.

        Default accounts of terminal types are the exception, as everywhere: they keep the history of what
        was used or cancelled and stay as they are, read-only through the section's status.
        """
        for row in await repo.open_accounts_of(session, party):
            if row["is_default"] and AccountType(row["type"]).terminal:
                continue
            values = {"status": AccountStatus.CLOSED.value, "version": row["version"] + 1, "updated_at": now}
            await repo.update_account(session, row["account_id"], values)
            await self._account_changed(session, principal, row, values, "close", "section closed", now)

    async def _account_changed(
        self,
        session: AsyncSession,
        principal: Principal,
        before: Mapping[Any, Any],
        values: Mapping[Any, Any],
        move: str,
        reason: str | None,
        now: datetime,
    ) -> Account:
        account = _account({**before, **values})
        await repo.add_audit(
            session,
            party=account.party,
            subject=f"account:{account.account_id}",
            action=f"account.{move}",
            actor=principal.client_id,
            at=now,
            reason=reason,
            from_status=before["status"],
            to_status=account.status.value,
        )
        await self.outbox.publish(
            session,
            "account.status_changed",
            _json(account) | {"previous_status": before["status"], "reason": reason},
            party=account.party,
        )
        return account

    # ---- settings --------------------------------------------------------------------------------------

    async def update_settings(
        self, principal: Principal, party: str, if_match: str | None, patch: SectionSettingsPatch
    ) -> PartySection:
        """Apply the fields sent, if the caller read the current version (`If-Match`)."""
        authorize(principal, Action.SETTINGS_UPDATE, party)
        if if_match is None or not if_match.strip():
            raise PreconditionRequired(
                "Send If-Match with the section's ETag (GET /v1/party-sections/{party}) to change settings."
            )
        now = _now()
        async with self.db.transaction() as session:
            row = await self._locked_section(session, party)
            if not _if_match_holds(if_match, row["version"]):
                raise PreconditionFailed(
                    f"The section changed since you read it: its ETag is now {etag(row['version'])}.",
                    headers={"ETag": etag(row["version"])},
                    current_etag=etag(row["version"]),
                )
            _require_writable(row, "settings", "change the settings")
            values: dict[str, Any] = {}
            if patch.four_eyes is not None and patch.four_eyes != row["four_eyes"]:
                values["four_eyes"] = patch.four_eyes
            if patch.confidential_fields is not None:
                designations = [_json(d) for d in patch.confidential_fields]
                if designations != row["confidential_fields"]:
                    values["confidential_fields"] = designations
            if (
                patch.incoming_acceptance is not None
                and patch.incoming_acceptance.value != row["incoming_acceptance"]
            ):
                values["incoming_acceptance"] = patch.incoming_acceptance.value
            if not values:  # nothing changes: no new version, no audit row, no event
                return _section(row)
            before = {key: row[key] for key in values}
            values |= {"version": row["version"] + 1, "updated_at": now}
            await repo.update_section(session, party, values)
            section = _section({**row, **values})
            await repo.add_audit(
                session,
                party=party,
                subject="section",
                action="section.settings",
                actor=principal.client_id,
                at=now,
                details={"before": before, "after": {key: values[key] for key in before}},
            )
            await self.outbox.publish(session, "party_section.settings_changed", _json(section), party=party)
        self.outbox.notify()
        await self._tell_ledger(party)
        return section

    # ---- accounts --------------------------------------------------------------------------------------

    async def accounts(self, party: str, *, limit: int, after: tuple[int, int] | None) -> Page[Account]:
        async with self.db.read() as session:
            await self._read_section(session, party)
            rows = await repo.accounts_page(session, party, after=after, limit=limit)
        return page_of(
            [_account(row) for row in rows],
            limit=limit,
            key=lambda a: {"type_code": a.type_code, "n": parse_account_id(a.account_id).n},
        )

    async def account_of(self, party: str, account_id: str) -> Account:
        async with self.db.read() as session:
            await self._read_section(session, party)
            row = await repo.account(session, account_id)
        if row is None or row["party"] != party:
            raise AccountNotFound(account_id)
        return _account(row)

    async def open_account(self, principal: Principal, party: str, body: AccountCreate) -> Account:
        """Another account in an open section (e.g. a holding account of an authorized entity)."""
        authorize(principal, Action.ACCOUNT_CREATE, party)
        now = _now()
        async with self.db.transaction() as session:
            section = await self._locked_section(session, party)
            _require_writable(section, "accounts", "open an account")
            holder = body.holder_entity_id
            if holder is not None and await repo.entity(session, party, holder) is None:
                raise UnknownHolderEntity(
                    f"{holder!r} is not an authorized entity of {party} "
                    f"(POST /v1/party-sections/{party}/entities first).",
                    field="holder_entity_id",
                )
            n = await repo.last_account_number(session, party, body.type.code) + 1
            row = {
                "account_id": format_account_id(section["registry_id"], body.type, n),
                "party": party,
                "registry_id": section["registry_id"],
                "type": body.type.value,
                "type_code": body.type.code,
                "n": n,
                "name": body.name,
                "status": AccountStatus.OPEN.value,
                "holder_entity_id": body.holder_entity_id,
                "is_default": False,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            await repo.insert_accounts(session, [row])
            account = _account(row)
            await repo.add_audit(
                session,
                party=party,
                subject=f"account:{account.account_id}",
                action="account.open",
                actor=principal.client_id,
                at=now,
                to_status=account.status.value,
                details={"default": False, "name": body.name, "holder_entity_id": body.holder_entity_id},
            )
            await self.outbox.publish(session, "account.opened", _json(account), party=party)
        self.outbox.notify()
        return account

    async def change_account(
        self, principal: Principal, account_id: str, move: str, reason: str | None
    ) -> Account:
        """block, unblock or close (at a zero balance) an account.

        Another Party's account is answered 404, exactly like a missing one, so its existence is not
        revealed; a caller who may read the account but not change it gets 403.
        """
        async with self.db.read() as session:
            account = await repo.account(session, account_id)
            section = await repo.section(session, account["party"]) if account is not None else None
        if account is None or section is None:
            raise AccountNotFound(account_id)
        party = account["party"]
        if principal.party != party and not permits(principal, Action.ACCOUNT_READ, party):
            raise AccountNotFound(account_id)
        authorize(principal, Action.ACCOUNT_BLOCK, party)
        _check_account_move(section, account, move)  # fail fast, before asking for the balance
        if move == "close":
            response = await self.peers.request(
                "transactions", "GET", f"/internal/v1/accounts/{account_id}/balance"
            )
            balance = _peer_answer(response, AccountBalance, f"account {account_id}")
            if balance.total:
                raise BalanceNotZero(f"Account {account_id}", balance.total)
        now = _now()
        async with self.db.transaction() as session:
            section = await self._locked_section(session, party)
            locked = await repo.account(session, account_id, for_update=True)
            assert locked is not None  # accounts are never deleted
            target = _check_account_move(section, locked, move)
            values = {"status": target.value, "version": locked["version"] + 1, "updated_at": now}
            await repo.update_account(session, account_id, values)
            changed = await self._account_changed(session, principal, locked, values, move, reason, now)
        self.outbox.notify()
        await self._tell_ledger(party, account_id)
        return changed

    # ---- authorized entities ---------------------------------------------------------------------------

    async def authorize_entity(
        self, principal: Principal, party: str, body: AuthorizedEntityCreate
    ) -> AuthorizedEntity:
        """Record an entity the Party authorized under one of its cooperative approaches (AEF Table 5)."""
        authorize(principal, Action.ENTITY_CREATE, party)
        now = _now()
        values = body.model_dump() | {"party": party, "created_at": now}
        entity = AuthorizedEntity.model_validate(values)
        exists = EntityExists(f"{party} already has an authorized entity {body.entity_id!r}.")
        try:
            async with self.db.transaction() as session:
                section = await self._locked_section(session, party)
                _require_writable(section, "entities", "authorize an entity")
                if await repo.cooperative_approach(session, body.ca_id) is None:
                    raise UnknownCooperativeApproach(
                        f"No cooperative approach {body.ca_id} is registered.", field="ca_id"
                    )
                if party not in (await repo.ca_participants_of(session, [body.ca_id]))[body.ca_id]:
                    raise NotAParticipant(f"{party} does not participate in {body.ca_id}.", field="ca_id")
                if await repo.entity(session, party, body.entity_id) is not None:
                    raise exists
                await repo.insert_entity(session, values)
                await repo.add_audit(
                    session,
                    party=party,
                    subject=f"entity:{body.entity_id}",
                    action="entity.authorize",
                    actor=principal.client_id,
                    at=now,
                    details=_json(entity),
                )
                await self.outbox.publish(session, "entity.authorized", _json(entity), party=party)
        except IntegrityError as exc:  # the same entity id, inserted concurrently
            raise exists from exc
        self.outbox.notify()
        return entity

    async def entities(self, party: str, *, limit: int, after: str | None) -> Page[AuthorizedEntity]:
        async with self.db.read() as session:
            await self._read_section(session, party)
            rows = await repo.entities_page(session, party, after=after, limit=limit)
        return page_of([_entity(row) for row in rows], limit=limit, key=lambda e: {"entity_id": e.entity_id})

    async def entity(self, party: str, entity_id: str) -> AuthorizedEntity:
        async with self.db.read() as session:
            await self._read_section(session, party)
            row = await repo.entity(session, party, entity_id)
        if row is None:
            raise EntityNotFound(f"{party} has no authorized entity {entity_id!r}.")
        return _entity(row)

    # ---- NDC periods -----------------------------------------------------------------------------------

    async def set_ndc_periods(
        self, principal: Principal, party: str, periods: list[NdcPeriod]
    ) -> list[NdcPeriod]:
        """Replace the Party's NDC implementation periods (non-overlapping)."""
        authorize(principal, Action.NDC_WRITE, party)
        ordered = _check_ndc_periods(periods)
        now = _now()
        async with self.db.transaction() as session:
            section = await self._locked_section(session, party)
            _require_writable(section, "ndc_periods", "set the NDC periods")
            before = await repo.ndc_periods_of(session, party)
            await repo.replace_ndc_periods(session, party, ((p.first_year, p.last_year) for p in ordered))
            data = {"party": party, "ndc_periods": [_json(p) for p in ordered]}
            await repo.add_audit(
                session,
                party=party,
                subject="ndc_periods",
                action="ndc_periods.set",
                actor=principal.client_id,
                at=now,
                details={"before": [list(p) for p in before], "after": data["ndc_periods"]},
            )
            await self.outbox.publish(session, "ndc_periods.set", data, party=party)
        self.outbox.notify()
        await self._tell_ledger(party)
        return ordered

    async def ndc_periods(self, party: str) -> list[NdcPeriod]:
        async with self.db.read() as session:
            await self._read_section(session, party)
            periods = await repo.ndc_periods_of(session, party)
        return [NdcPeriod(first_year=first, last_year=last) for first, last in periods]

    # ---- internal lookups ------------------------------------------------------------------------------

    async def account_lookup(self, account_id: str) -> AccountLookup:
        async with self.db.read() as session:
            account = await repo.account(session, account_id)
            section = await repo.section(session, account["party"]) if account is not None else None
        if account is None or section is None:
            raise AccountNotFound(account_id)
        return _lookup(account, section)

    async def section_lookup(self, party: str) -> SectionLookup:
        async with self.db.read() as session:
            section = await self._read_section(session, party)
            periods = await repo.ndc_periods_of(session, party)
        return SectionLookup(
            party=party,
            registry_id=section["registry_id"],
            status=SectionStatus(section["status"]),
            ars=section["ars"],
            four_eyes=section["four_eyes"],
            incoming_acceptance=IncomingAcceptance(section["incoming_acceptance"]),
            ndc_periods=[NdcPeriod(first_year=first, last_year=last) for first, last in periods],
            version=section["version"],
        )

    async def section_accounts(self, party: str, type: AccountType | None) -> list[AccountLookup]:
        async with self.db.read() as session:
            section = await self._read_section(session, party)
            rows = await repo.section_accounts(session, party, type=type.value if type else None)
        return [_lookup(row, section) for row in rows]
