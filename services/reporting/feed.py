"""The per-Party event feed (INTERREGISTRY §9, docs/events.md): `GET /v1/events?after=N`.

The consumer turns each upstream event it applies into one item per Party concerned, in that Party's view
(`derive`), and appends them with `append` in the transaction that applies the event and moves the
producer's cursor. Other writers of the service append the same way in their own transaction (a webhook
disabled by the delivery worker). Each item is stored as the JSON bytes served, with its consecutive
per-Party position inside them, so a replay from `after=0` answers the same bytes forever.

A Party's view never carries another Party's confidential fields: a transfer GHA → CHE appears in both
feeds, each with its own AEF side and account, the shared facts (blocks, quantity) without the keys the
*other* Party designated confidential (`sections.confidential_fields`, as party_sections last published
them when the item was appended; a later designation does not rewrite items already served).
"""

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import FeedEvent
from contracts.roles import Role
from kit.auth import CurrentPrincipal, Principal
from kit.db import Database
from kit.errors import BadRequest, Forbidden
from services.reporting.aef import iso_instant
from services.reporting.models import party_events, party_feed_heads, sections, submissions
from services.reporting.public import designations

__all__ = [
    "DOORBELL",
    "EVENT_TYPES",
    "FeedItem",
    "announce_submissions",
    "append",
    "derive",
    "events_router",
    "feed_party",
    "item_id",
    "matches",
    "render",
]

#: The item types of §9 this service serves (patterns `prefix.*` select a family).
EVENT_TYPES: tuple[str, ...] = (
    "transaction.completed",
    "transaction.rejected",
    "transaction.cancelled",
    "transaction.terminated",
    "transaction.awaiting_approval",
    "interregistry.transfer.sent",
    "interregistry.transfer.awaiting_approval",
    "interregistry.transfer.completed",
    "interregistry.transfer.rejected",
    "interregistry.transfer.terminated",
    "interregistry.transfer.cancelled",
    "interregistry.inbox.available",
    "reconciliation.completed",
    "reconciliation.inconsistent",
    "reconciliation.resolved",
    "authorization.created",
    "authorization.versioned",
    "authorization.revoked",
    "first_transfer.completed",
    "account.opened",
    "account.blocked",
    "account.unblocked",
    "account.closed",
    "section.status_changed",
    "aef.submission.created",
    "webhook.disabled",
)

#: The inbox doorbell (INTERREGISTRY §4, §9): a connected registry's inbox has messages up to `position`.
#: The transactions service publishes it when its inbox relay numbers a batch; the webhook message is
#: `{"registry_id", "position"}`, so the registry reads its inbox at once instead of at its next poll.
DOORBELL = "interregistry.inbox.available"

#: Item ids are derived, not random, so deriving the same upstream event again (a rebuilt read model)
#: gives the same id and `append` skips it instead of publishing it twice.
_NAMESPACE = uuid.UUID("6f0c54c2-8f3e-4d4a-9c55-8e2f1b6b9a21")


def item_id(source_event_id: str, party: str) -> str:
    """The id of the item a source event gives in one Party's feed (distinct per Party, stable)."""
    return str(uuid.uuid5(_NAMESPACE, f"{source_event_id}/{party}"))


@dataclass(frozen=True)
class FeedItem:
    """An item before its position is given."""

    party: str
    type: str
    event_id: str
    occurred_at: datetime
    source: str
    data: dict[str, Any]


def render(item: FeedItem, position: int) -> str:
    """The item's JSON as served: fixed key order, no spaces; stored once, served as is."""
    body = {
        "position": position,
        "event_id": item.event_id,
        "type": item.type,
        "version": 1,
        "occurred_at": iso_instant(item.occurred_at),
        "party": item.party,
        "source": item.source,
        "data": item.data,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)


# ---- appending ---------------------------------------------------------------------------------------------


async def _lock_head(session: AsyncSession, party: str) -> int:
    """The Party's last position, its head row locked until the transaction ends."""
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(insert_(party_feed_heads).values(party=party, position=0).on_conflict_do_nothing())
    query = select(party_feed_heads.c.position).where(party_feed_heads.c.party == party)
    if dialect == "postgresql":
        query = query.with_for_update()
    return int((await session.execute(query)).scalar_one())


async def append(session: AsyncSession, items: Iterable[FeedItem]) -> list[tuple[str, int]]:
    """Give each new item the next position of its Party's feed and store it; answers (party, position).

    Positions must follow commit order (DESIGN §5): a reader who has seen position N must never later find
    a committed N−1. A sequence or `max(position) + 1` read at insert time does not give that, since two
    writers can take N−1 and N and commit N first. Here the step is serialized: the Party's head row is
    locked (`FOR UPDATE` on PostgreSQL; on SQLite `BEGIN IMMEDIATE` already serializes every writer) and
    held until this transaction commits, so the next appender of that Party reads the head only after
    these positions are committed — and the consumer calls this inside its single writer transaction
    that also holds the producer's cursor lock, so the item commits with the read-model change and the
    cursor move, or not at all. Heads are locked in Party order so two writers never wait on each other
    in a cycle. An item whose id the Party's feed already holds is skipped (a re-derived event).
    """
    pending = list(items)
    if not pending:
        return []
    heads = {party: await _lock_head(session, party) for party in sorted({i.party for i in pending})}
    known = {
        (party, event_id)
        for party, event_id in (
            await session.execute(
                select(party_events.c.party, party_events.c.event_id).where(
                    party_events.c.party.in_(heads),
                    party_events.c.event_id.in_({i.event_id for i in pending}),
                )
            )
        ).all()
    }
    given: list[tuple[str, int]] = []
    rows: list[dict[str, Any]] = []
    for item in pending:
        if (item.party, item.event_id) in known:
            continue
        known.add((item.party, item.event_id))
        heads[item.party] += 1
        position = heads[item.party]
        rows.append(
            {
                "party": item.party,
                "position": position,
                "event_id": item.event_id,
                "type": item.type,
                "occurred_at": item.occurred_at,
                "body": render(item, position),
            }
        )
        given.append((item.party, position))
    if rows:
        await session.execute(party_events.insert(), rows)
        for party in {party for party, _ in given}:
            await session.execute(
                update(party_feed_heads)
                .where(party_feed_heads.c.party == party)
                .values(position=heads[party])
            )
    return given


# ---- deriving each Party's view of an upstream event -------------------------------------------------------

#: Block keys a Party sees of a moved range (`account_id` only for its own accounts).
_BLOCK_KEYS = (
    "unique_id_first",
    "unique_id_last",
    "ca_id",
    "origin_registry_id",
    "first_transferring_party",
    "first",
    "last",
    "quantity",
    "vintage",
    "state",
    "authorization_id",
    "authorization_version",
    "metric",
    "mitigation_type",
    "applicable_gwp_values",
    "applicable_non_ghg_metric",
    "conversion_factor",
    "underlying",
    "party",
)

#: The AEF side a Party sees of its own action (domain §5.4 names).
_SIDE_KEYS = (
    "registry_id",
    "action_type",
    "action_subtype",
    "transferring_party_id",
    "acquiring_party_id",
    "using_cancelling_party_id",
    "using_cancelling_entity_id",
    "purpose_oimp",
    "ndc_use_year",
)

#: A designated AEF column (`actions.*` or `holdings.*`, domain §6) → the view keys that carry it. The
#: unique ids spell CA, registry, first transferring Party, serial and vintage, so they go with any of them.
_CARRIERS: dict[str, tuple[str, ...]] = {
    "cooperative_approach_id": ("ca_id", "unique_id_first", "unique_id_last"),
    "first_transferring_party_id": ("first_transferring_party", "unique_id_first", "unique_id_last"),
    "authorization_id": ("authorization_id", "authorization_version"),
    "first_id": ("first", "unique_id_first", "unique_id_last"),
    "last_id": ("last", "unique_id_first", "unique_id_last"),
    "vintage": ("vintage", "unique_id_first", "unique_id_last"),
    "underlying_unit_registry_id": ("underlying",),
    "first_unit_id": ("underlying",),
    "last_unit_id": ("underlying",),
    "metric": ("metric",),
    "applicable_gwp_values": ("applicable_gwp_values",),
    "applicable_non_ghg_metric": ("applicable_non_ghg_metric", "conversion_factor"),
    "quantity_tco2e": ("quantity",),
    "quantity_non_ghg_metric": ("quantity",),
    "mitigation_type": ("mitigation_type",),
    "purpose_oimp": ("purpose",),
    "using_cancelling_entity_id": ("using_entity_id",),
    "ndc_use_year": ("ndc_use_year",),
}


async def _designated(session: AsyncSession, parties: Iterable[str]) -> dict[str, set[str]]:
    """Per Party concerned, the view keys its AEF `actions`/`holdings` designations hide from the others
    (one statement for every Party of the event)."""
    wanted = sorted(set(parties))
    if len(wanted) < 2:
        return {}  # a Party's own items hide nothing from it
    rows = await session.execute(
        select(sections.c.party, sections.c.confidential_fields).where(sections.c.party.in_(wanted))
    )
    carried: dict[str, set[str]] = {}
    for party, fields in rows:
        designated = designations(fields or [])
        carried[party] = {
            carrier
            for key in designated.get("actions", set()) | designated.get("holdings", set())
            for carrier in _CARRIERS.get(key, ())
        }
    return carried


def _hidden_from(designated: dict[str, set[str]], party: str) -> set[str]:
    """The view keys `party` must not see because another Party concerned designated them."""
    hidden: set[str] = set()
    for other, keys in designated.items():
        if other != party:
            hidden |= keys
    return hidden


def _without(values: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key not in hidden}


async def _transaction(session: AsyncSession, event: FeedEvent, kind: str) -> list[FeedItem]:
    data = event.data
    sides = [side for side in data.get("actions") or [] if side.get("party")]
    parties = {p for p in data.get("parties") or [] if p} | {side["party"] for side in sides}
    if not parties and event.party:
        parties = {event.party}
    items = []
    designated = await _designated(session, parties)
    for party in sorted(parties):
        hidden = _hidden_from(designated, party)
        mine = party == data.get("from_party")
        view: dict[str, Any] = {
            "transaction_id": data.get("transaction_id"),
            "transaction_type": data.get("type"),
            "completed_at": data.get("completed_at"),
            "from_party": data.get("from_party"),
            "to_party": data.get("to_party"),
            "from_registry_id": data.get("from_registry_id"),
            "to_registry_id": data.get("to_registry_id"),
            # Accounts are the holder Party's: a Party sees its own account ids only.
            "from_account": data.get("from_account") if mine else None,
            "to_account": data.get("to_account") if party == data.get("to_party") else None,
            "quantity": data.get("quantity"),
            "actions": [
                {key: side.get(key) for key in _SIDE_KEYS} for side in sides if side["party"] == party
            ],
            "blocks": [
                _without(
                    {key: block.get(key) for key in _BLOCK_KEYS}
                    | ({"account_id": block.get("account_id")} if block.get("party") == party else {}),
                    hidden,
                )
                for block in data.get("blocks") or []
            ],
        }
        if mine:  # a use or cancellation is the source Party's act
            view |= {
                "purpose": data.get("purpose"),
                "using_entity_id": data.get("using_entity_id"),
                "ndc_use_year": data.get("ndc_use_year"),
            }
        if data.get("corrects"):
            view["corrects"] = data["corrects"]
        items.append(_item(event, party, kind, _without(view, hidden)))
    return items


def _item(event: FeedEvent, party: str, kind: str, data: dict[str, Any]) -> FeedItem:
    return FeedItem(
        party=party,
        type=kind,
        event_id=item_id(str(event.id), party),
        occurred_at=event.time,
        source=event.producer,
        data=data,
    )


def _own_party(event: FeedEvent) -> str | None:
    party = event.data.get("party") or event.party
    return party if isinstance(party, str) else None


_SECTION_KEYS = ("party", "registry_id", "status", "previous_status", "reason", "version")
_ACCOUNT_KEYS = ("account_id", "party", "type", "type_code", "name", "status", "holder_entity_id")
_FIRST_TRANSFER_KEYS = (
    "operation_id",
    "transaction_id",
    "party",
    "first_transfer_definition",
    "quantity",
    "to_account",
    "use",
    "completed_at",
)
_AWAITING_KEYS = (
    "transaction_id",
    "from_party",
    "to_party",
    "from_registry_id",
    "to_registry_id",
    "quantity",
    "initiated_by",
    "expires_at",
)
_ACCOUNT_MOVES = {"blocked": "account.blocked", "closed": "account.closed", "open": "account.unblocked"}


async def derive(session: AsyncSession, event: FeedEvent) -> list[FeedItem]:
    """The feed items an upstream event gives: one per Party concerned, in that Party's view."""
    kind, data, party = event.type, event.data, _own_party(event)
    if kind in (
        "transaction.completed",
        "transaction.rejected",
        "transaction.cancelled",
        "transaction.terminated",
    ):
        return await _transaction(session, event, kind)
    if party is None:
        return []
    if kind == "transaction.awaiting_approval":
        # Only the deciding Party hears of it, and sees its own accounts only.
        view = {key: data.get(key) for key in _AWAITING_KEYS} | {
            "transaction_type": data.get("type"),
            "from_account": data.get("from_account") if party == data.get("from_party") else None,
            "to_account": data.get("to_account") if party == data.get("to_party") else None,
        }
        return [_item(event, party, kind, view)]
    if kind.startswith("party_section.") and kind != "party_section.settings_changed":
        view = {key: data.get(key) for key in _SECTION_KEYS}
        return [_item(event, party, "section.status_changed", view | {"party": party})]
    if kind == "account.opened":
        return [_item(event, party, kind, {key: data.get(key) for key in _ACCOUNT_KEYS})]
    if kind == "account.status_changed":
        moved = _ACCOUNT_MOVES.get(str(data.get("status")))
        if moved is None:
            return []
        view = {key: data.get(key) for key in _ACCOUNT_KEYS} | {
            "previous_status": data.get("previous_status"),
            "reason": data.get("reason"),
        }
        return [_item(event, party, moved, view)]
    if kind in ("authorization.created", "authorization.versioned", "authorization.revoked"):
        return [_item(event, party, kind, dict(data))]  # the authorizing Party's own record
    if kind == "first_transfer.completed":
        view = {key: data.get(key) for key in _FIRST_TRANSFER_KEYS}
        view["authorization_id"] = (data.get("authorization") or {}).get("authorization_id")
        return [_item(event, party, kind, view)]
    if kind == DOORBELL:
        view = {"registry_id": data.get("registry_id"), "position": data.get("position")}
        return [_item(event, party, kind, view)]
    if kind.startswith(("interregistry.transfer.", "reconciliation.")) and kind in EVENT_TYPES:
        # The IR Party's own side of a transfer or reconciliation, as the transactions service tells it.
        return [_item(event, party, kind, dict(data))]
    return []


async def announce_submissions(db: Database, now: datetime) -> int:
    """Append `aef.submission.created` for every frozen version not yet announced; answers how many.

    Not in the submission's own transaction: that one runs for as long as the tables take to freeze, and
    holding the Party's feed head that long would stall the consumer for the Party (and, at REPEATABLE
    READ, any item appended meanwhile would fail the submission). Run right after the submission commits
    and on every consumer round, so a crash between the two only delays the item.
    """
    # A read first: this runs on every consumer round and must not take SQLite's write lock for nothing.
    async with db.read() as session:
        waiting = (
            await session.execute(
                select(submissions.c.party).where(submissions.c.announced_at.is_(None)).limit(1)
            )
        ).first()
    if waiting is None:
        return 0
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(
                    submissions.c.party,
                    submissions.c.year,
                    submissions.c.major,
                    submissions.c.minor,
                    submissions.c.submitted_at,
                    submissions.c.size,
                    submissions.c.sha256,
                )
                .where(submissions.c.announced_at.is_(None))
                .order_by(submissions.c.submitted_at)
                .limit(100)
            )
        ).all()
        if not rows:
            return 0
        items = []
        for party, year, major, minor, at, size, sha256 in rows:
            version = f"{major}.{minor}"
            at = at if at.tzinfo else at.replace(tzinfo=now.tzinfo)
            items.append(
                FeedItem(
                    party=party,
                    type="aef.submission.created",
                    event_id=item_id(f"aef.submission/{party}/{year}/{version}", party),
                    occurred_at=at,
                    source="reporting",
                    data={
                        "party": party,
                        "year": year,
                        "version": version,
                        "submitted_at": iso_instant(at),
                        "size": size,
                        "sha256": sha256,
                        "url": f"/v1/reports/aef/{party}/{year}/submissions/{version}",
                    },
                )
            )
            await session.execute(
                update(submissions)
                .where(
                    submissions.c.party == party,
                    submissions.c.year == year,
                    submissions.c.major == major,
                    submissions.c.minor == minor,
                )
                .values(announced_at=now)
            )
        await append(session, items)
    return len(rows)


# ---- reading ---------------------------------------------------------------------------------------------

_PARTY_READERS = frozenset(
    {
        Role.PARTY_ADMIN,
        Role.AUTHORIZING_OFFICIAL,
        Role.INITIATOR,
        Role.APPROVER,
        Role.VIEWER,
        Role.AUDITOR,
        Role.REGISTRY,
    }
)
_SECRETARIAT_READERS = frozenset({Role.SECRETARIAT_ADMIN, Role.AUDITOR})


def feed_party(principal: Principal, party: str | None) -> str:
    """Whose feed the principal reads: a Party principal its own only; the Secretariat names one."""
    if principal.party is None:
        if not principal.roles & _SECRETARIAT_READERS:
            raise Forbidden("The event feed is for the Parties, the Secretariat and auditors.")
        if party is None:
            raise BadRequest("Name the Party whose feed to read: ?party=GHA.", slug="party-required")
        return party
    if not principal.roles & _PARTY_READERS:
        raise Forbidden("The event feed is for the Parties' principals.")
    if party is not None and party != principal.party:
        raise Forbidden(f"A principal of {principal.party} reads {principal.party}'s feed only.")
    return principal.party


def matches(kind: str, patterns: Iterable[str]) -> bool:
    """Whether a type is selected by `patterns` (exact types or `prefix.*`)."""
    return any(kind == p or (p.endswith(".*") and kind.startswith(p[:-1])) for p in patterns)


def _type_filter(values: list[str]) -> list[str]:
    patterns = [p.strip() for value in values for p in value.split(",") if p.strip()]
    for pattern in patterns:
        if len(pattern) > 100 or not (pattern in EVENT_TYPES or pattern.endswith(".*")):
            raise BadRequest(f"Unknown event type {pattern[:100]!r}.", slug="unknown-event-type")
    return patterns


events_router = APIRouter(prefix="/v1/events", tags=["events"])


@events_router.get("")
async def events(
    request: Request,
    principal: CurrentPrincipal,
    after: Annotated[
        int | None, Query(ge=0, description="The last position read (0: from the start)")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=20, description="`next_cursor` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    type: Annotated[list[str], Query(description="Types or `prefix.*`, comma separated")] = [],  # noqa: B006
    types: Annotated[list[str], Query(description="Same as `type` (INTERREGISTRY §9 spelling)")] = [],  # noqa: B006
    party: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$", description="Secretariat and auditors")] = None,
) -> Response:
    """A Party's feed after a position, in position order: consecutive positions 1, 2, 3 … per Party
    (with a type filter, the selected ones). The same bytes on every replay."""
    whose = feed_party(principal, party)
    start = after or 0
    if cursor is not None:
        if not cursor.isdigit():
            raise BadRequest("The cursor is not one this feed issued.", slug="invalid-cursor")
        start = max(start, int(cursor))
    patterns = _type_filter(type + types)
    query = (
        select(party_events.c.position, party_events.c.body)
        .where(party_events.c.party == whose, party_events.c.position > start)
        .order_by(party_events.c.position)
        .limit(limit + 1)
    )
    if patterns:
        query = query.where(
            or_(
                *(
                    party_events.c.type.startswith(p[:-1]) if p.endswith(".*") else party_events.c.type == p
                    for p in patterns
                )
            )
        )
    async with request.app.state.db.read() as session:
        rows = (await session.execute(query)).all()
    page = rows[:limit]
    # Assembled from the stored bytes: re-encoding could reorder or reformat an item.
    next_cursor = json.dumps(str(page[-1][0])) if len(rows) > limit else "null"
    body = '{"items":[' + ",".join(row[1] for row in page) + '],"next_cursor":' + next_cursor + "}"
    return Response(body.encode(), media_type="application/json")
