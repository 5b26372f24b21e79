"""Webhooks (INTERREGISTRY §9, Standard Webhooks 1.0.0; docs/events.md): a Party's endpoints, told of
new items of its feed by thin signed messages, and the delivery worker.

A message never carries feed data: `{"type", "timestamp", "data": {"party", "position", "event_id"}}`; the
receiver reads the item from the feed with its token, so confidential data never travels on an
HMAC-only channel. The inbox doorbell (`interregistry.inbox.available`, §4) says
`{"registry_id", "position"}` (the inbox position to read up to) and keeps one message waiting per
endpoint. Headers `webhook-id` (the item's id, stable across retries), `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>` (with the previous secret's
signature beside it for 24 h after a rotation).

The worker (`WebhookDispatcher`, run in the app's lifespan, woken by the consumer) fans each active
endpoint's new feed items out into `webhook_deliveries`, then sends what is due: 10 s timeout, no
redirects; 2xx succeeds; 410 disables the endpoint; otherwise the next attempt follows the schedule of §9
(with jitter; never earlier than a 429/502/503/504's `Retry-After`), and an endpoint failing everything
for 72 h is disabled, which publishes `webhook.disabled` in the Party's feed; `POST …/enable` resumes it
where it stopped. Its clock, resolver, transport and jitter are injectable (tests run the schedule on a
fake clock). Secrets are stored sealed (webhooks_secrets.py); the worker re-seals, at start and hourly,
any row not under the newest key.

SSRF: in production a URL must be HTTPS and every address its host resolves to must be global (no
loopback, private, link-local, metadata, CGNAT, multicast or reserved address), checked at registration
and again before every attempt, since DNS can change; the attempt then connects to the address checked
(the host kept in `Host` and TLS SNI), so a second lookup cannot swap it. Elsewhere (development, test,
the sandbox) loopback and plain HTTP are allowed, for local receivers.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

import httpx
import structlog
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.pagination import DEFAULT_LIMIT
from contracts.roles import Role
from kit.auth import CurrentPrincipal, Principal
from kit.config import Environment
from kit.db import Database
from kit.errors import Conflict, Forbidden, NotFound, Unprocessable
from kit.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from services.reporting import feed
from services.reporting.aef import iso_instant
from services.reporting.models import party_events, party_feed_heads, webhook_deliveries, webhooks
from services.reporting.webhooks_secrets import SecretBox

__all__ = [
    "DISABLE_AFTER",
    "PREVIOUS_SECRET_SIGNS_FOR",
    "SCHEDULE",
    "UnsafeUrl",
    "WebhookDispatcher",
    "address_allowed",
    "check_url",
    "new_secret",
    "sign",
    "webhooks_router",
]

log = structlog.get_logger(__name__)

#: Delays before attempts 2…10 after a failure (the Standard Webhooks example schedule, §9).
SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
#: An endpoint whose every attempt failed for this long is disabled.
DISABLE_AFTER = timedelta(hours=72)
#: After a rotation the old secret still signs (beside the new one) for this long.
PREVIOUS_SECRET_SIGNS_FOR = timedelta(hours=24)
#: Answers whose `Retry-After` the next attempt honours.
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
#: A `Retry-After` longer than this is read as this (a day: the schedule's longest step).
_RETRY_AFTER_CAP = timedelta(hours=24)
#: A claimed delivery is invisible to other workers this long (longer than one attempt can take).
_LEASE = timedelta(seconds=60)
_BATCH = 50
#: Seconds between two sealing passes (`seal_secrets`): rows another process sealed under an older key
#: during a key rotation are re-sealed within this time.
_SEAL_EVERY = 3600.0
_MAX_PER_PARTY = 20
_TIMEOUT = 10.0

Clock = Callable[[], datetime]
Resolver = Callable[[str, int], Awaitable[list[str]]]


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---- signing ---------------------------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`, the key being the secret's decoded bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# ---- SSRF ------------------------------------------------------------------------------------------------


class UnsafeUrl(ValueError):
    """A URL the registry will not call."""


def address_allowed(address: str, *, production: bool) -> bool:
    """Global unicast only in production; elsewhere loopback too (local test receivers)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_multicast or ip.is_unspecified:
        return False
    # `is_global` is false for private, loopback, link-local (169.254.169.254, the cloud metadata
    # address, and fe80::/10), unique-local (fc00::/7), CGNAT (100.64/10) and reserved ranges.
    return ip.is_global or (not production and ip.is_loopback)


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_url(url: str, *, production: bool, resolver: Resolver | None = None) -> list[str]:
    """The addresses to call for `url`, every one allowed; `UnsafeUrl` otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeUrl("not a URL") from exc
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise UnsafeUrl("an absolute http(s) URL is needed")
    if production and parsed.scheme != "https":
        raise UnsafeUrl("production endpoints must use HTTPS")
    if parsed.userinfo:
        raise UnsafeUrl("credentials in the URL are not accepted")
    if parsed.fragment:
        raise UnsafeUrl("a fragment is not accepted")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(parsed.host))]
    except ValueError:
        try:
            addresses = await (resolver or _resolve)(parsed.host, port)
        except OSError as exc:
            raise UnsafeUrl(f"the host {parsed.host} does not resolve") from exc
    if not addresses:
        raise UnsafeUrl(f"the host {parsed.host} does not resolve")
    refused = [a for a in addresses if not address_allowed(a, production=production)]
    if refused:
        raise UnsafeUrl(f"the host resolves to an address the registry does not call ({refused[0]})")
    return addresses


# ---- the delivery worker ---------------------------------------------------------------------------------


def _retry_after(response: httpx.Response, now: datetime) -> timedelta | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        delay = timedelta(seconds=int(value))
    else:
        try:
            delay = parsedate_to_datetime(value) - now
        except (TypeError, ValueError):
            return None
    return max(timedelta(0), min(delay, _RETRY_AFTER_CAP))


def _payload(
    party: str, position: int, event_id: str, kind: str, occurred_at: datetime, item: str | None = None
) -> str:
    """The thin message of §9, fixed at fan-out so every attempt sends the same bytes. The inbox doorbell
    says which registry's inbox has news up to which inbox position (§9: `{"registry_id", "position"}`)."""
    data: dict[str, Any] = {"party": party, "position": position, "event_id": event_id}
    if kind == feed.DOORBELL and item is not None:
        data = json.loads(item)["data"]
    body = {"type": kind, "timestamp": iso_instant(occurred_at), "data": data}
    return json.dumps(body, separators=(",", ":"))


class WebhookDispatcher:
    """Fans feed items out to the Parties' endpoints and delivers them; `run_once()` does one round."""

    def __init__(
        self,
        db: Database,
        *,
        production: bool,
        interval: float = 1.0,
        timeout: float = _TIMEOUT,
        clock: Clock = _now,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        jitter: Callable[[], float] | None = None,
        secret_box: SecretBox | None = None,
    ) -> None:
        self.db = db
        #: Seals the signing secrets at rest (webhooks_secrets.py); a throwaway key when none is given.
        self.secret_box = secret_box or SecretBox([secrets.token_bytes(32)])
        self.production = production
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.resolver = resolver
        self.transport = transport
        #: A fraction of the scheduled delay added to it, so endpoints recovering together are not
        #: retried in one burst (0 to 10%).
        self.jitter = jitter or (lambda: random.uniform(0.0, 0.1))
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def check(self, url: str) -> list[str]:
        return await check_url(url, production=self.production, resolver=self.resolver)

    # ---- fan-out --------------------------------------------------------------------------------------

    async def fan_out(self) -> int:
        """Turn each active endpoint's new feed items (of its types) into deliveries due now."""
        # A read first: the worker must not take SQLite's write lock every round when nothing is new.
        async with self.db.read() as session:
            ids = list(
                (
                    await session.execute(
                        select(webhooks.c.webhook_id)
                        .join(party_feed_heads, party_feed_heads.c.party == webhooks.c.party)
                        .where(webhooks.c.status == "active", party_feed_heads.c.position > webhooks.c.cursor)
                        .order_by(webhooks.c.webhook_id)
                    )
                ).scalars()
            )
        created = 0
        for webhook_id in ids:
            while True:
                made, more = await self._fan_out_one(webhook_id)
                created += made
                if not more:
                    break
        return created

    async def _fan_out_one(self, webhook_id: str) -> tuple[int, bool]:
        async with self.db.transaction() as session:
            hook = await _locked(session, webhook_id)
            if hook is None or hook["status"] != "active":
                return 0, False
            items = (
                await session.execute(
                    select(
                        party_events.c.position,
                        party_events.c.event_id,
                        party_events.c.type,
                        party_events.c.occurred_at,
                        # The doorbell's message carries the inbox position: only its (small) body is read.
                        case((party_events.c.type == feed.DOORBELL, party_events.c.body), else_=None),
                    )
                    .where(party_events.c.party == hook["party"], party_events.c.position > hook["cursor"])
                    .order_by(party_events.c.position)
                    .limit(500)
                )
            ).all()
            if not items:
                return 0, False
            now = self.clock()
            rows = [
                {
                    "webhook_id": webhook_id,
                    "party": hook["party"],
                    "position": position,
                    "event_id": event_id,
                    "type": kind,
                    "payload": _payload(hook["party"], position, event_id, kind, _utc(at) or now, body),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "log": [],
                    "created_at": now,
                }
                for position, event_id, kind, at, body in items
                if feed.matches(kind, hook["event_types"])
            ]
            if rows:
                await session.execute(webhook_deliveries.insert(), rows)
                if any(row["type"] == feed.DOORBELL for row in rows):
                    await _supersede_doorbells(session, webhook_id, now)
            await session.execute(
                update(webhooks).where(webhooks.c.webhook_id == webhook_id).values(cursor=items[-1][0])
            )
        return len(rows), len(items) == 500

    # ---- delivery -------------------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """Send every delivery due now (a batch at a time); answers the number of attempts made."""
        attempted = 0
        while True:
            now = self.clock()
            async with self.db.read() as session:  # as in `fan_out`: no write transaction for nothing
                due = (
                    await session.execute(
                        select(webhook_deliveries.c.id)
                        .where(
                            webhook_deliveries.c.status == "pending",
                            webhook_deliveries.c.next_attempt_at <= now,
                        )
                        .limit(1)
                    )
                ).first()
            if due is None:
                return attempted
            async with self.db.transaction() as session:
                query = (
                    select(webhook_deliveries.c.id)
                    .where(
                        webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= now
                    )
                    .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
                    .limit(_BATCH)
                )
                if self.db.dialect == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                ids = list((await session.execute(query)).scalars())
                if ids:
                    # A lease, not a lock held over the HTTP call: a worker that dies mid-attempt leaves
                    # the delivery due again after the lease (at least once; `webhook-id` dedups).
                    await session.execute(
                        update(webhook_deliveries)
                        .where(webhook_deliveries.c.id.in_(ids))
                        .values(next_attempt_at=now + _LEASE)
                    )
            if not ids:
                return attempted
            for delivery_id in ids:
                attempted += await self._attempt(delivery_id)
            if len(ids) < _BATCH:
                return attempted

    async def run_once(self) -> int:
        await self.fan_out()
        return await self.deliver_due()

    async def _attempt(self, delivery_id: int) -> bool:
        """One attempt (or none, if the endpoint went away meanwhile); answers whether one was made."""
        async with self.db.read() as session:
            row = (
                (
                    await session.execute(
                        select(webhook_deliveries, webhooks.c.url, webhooks.c.status.label("webhook_status"))
                        .join(webhooks, webhooks.c.webhook_id == webhook_deliveries.c.webhook_id)
                        .where(webhook_deliveries.c.id == delivery_id)
                    )
                )
                .mappings()
                .one_or_none()
            )
            hook = None if row is None else await _hook(session, row["webhook_id"])
        if row is None or hook is None:
            return False
        if hook["status"] != "active":
            async with self.db.transaction() as session:
                await session.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.status == "pending")
                    .values(status="abandoned", next_attempt_at=None)
                )
            return False
        now = self.clock()
        status: int | None = None
        retry_after: timedelta | None = None
        error: str | None = None
        try:
            addresses = await self.check(hook["url"])
        except UnsafeUrl as exc:
            error = f"refused: {exc}"
        else:
            try:
                response = await self._send(hook, dict(row), addresses, now)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            except LookupError as exc:  # sealed under a key no longer configured: the operator's to fix
                error = f"secret: {exc}"[:500]
            else:
                status = response.status_code
                if status in RETRY_AFTER_STATUSES:
                    retry_after = _retry_after(response, now)
        await self._record(delivery_id, now, status, retry_after, error)
        return True

    async def _send(
        self, hook: dict[str, Any], row: dict[str, Any], addresses: Sequence[str], now: datetime
    ) -> httpx.Response:
        target = httpx.URL(hook["url"])
        timestamp = int(now.timestamp())
        box, webhook_id = self.secret_box, hook["webhook_id"]
        signatures = [sign(box.open(hook["secret"], webhook_id), row["event_id"], timestamp, row["payload"])]
        until = _utc(hook["previous_secret_until"])
        if hook["previous_secret"] and until is not None and now < until:
            previous = box.open(hook["previous_secret"], webhook_id)
            signatures.append(sign(previous, row["event_id"], timestamp, row["payload"]))
        headers = {
            "content-type": "application/json",
            "user-agent": "a62-registry-webhooks/1",
            "webhook-id": row["event_id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
            # Connect to the address just checked; the host name travels in Host (and SNI below).
            "host": target.netloc.decode("ascii"),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        async with httpx.AsyncClient(
            transport=self.transport, timeout=self.timeout, follow_redirects=False, trust_env=False
        ) as client:
            return await client.post(
                target.copy_with(host=addresses[0]),
                content=row["payload"].encode(),
                headers=headers,
                extensions=extensions,
            )

    async def _record(
        self,
        delivery_id: int,
        now: datetime,
        status: int | None,
        retry_after: timedelta | None,
        error: str | None,
    ) -> None:
        disabled = False
        async with self.db.transaction() as session:
            row = (
                (
                    await session.execute(
                        select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:  # the endpoint was deleted meanwhile
                return
            hook = await _locked(session, row["webhook_id"])
            if hook is None:
                return
            attempts = row["attempts"] + 1
            entry = {"attempt": attempts, "at": iso_instant(now), "status_code": status, "error": error}
            values: dict[str, Any] = {
                "attempts": attempts,
                "last_attempt_at": now,
                "last_status_code": status,
                "last_error": error,
                "log": [*row["log"], entry],
            }
            if status is not None and 200 <= status < 300:
                values |= {"status": "succeeded", "next_attempt_at": None}
                await _set(session, hook["webhook_id"], failing_since=None)
            elif status == 410:
                values |= {"status": "failed", "next_attempt_at": None}
                disabled = await self._disable(session, hook, now, "gone")
            else:
                failing_since = _utc(hook["failing_since"]) or now
                if now - failing_since >= DISABLE_AFTER:
                    values |= {"status": "failed", "next_attempt_at": None}
                    disabled = await self._disable(session, hook, now, "failing_72h")
                else:
                    await _set(session, hook["webhook_id"], failing_since=failing_since)
                    if attempts > len(SCHEDULE):
                        values |= {"status": "failed", "next_attempt_at": None}
                    else:
                        delay = SCHEDULE[attempts - 1] * (1 + self.jitter())
                        if retry_after is not None:
                            delay = max(delay, retry_after)
                        values |= {"status": "pending", "next_attempt_at": now + delay}
            await session.execute(
                update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values)
            )
        if disabled:
            self.wake()

    async def _disable(self, session: AsyncSession, hook: dict[str, Any], now: datetime, reason: str) -> bool:
        """Disable the endpoint, drop its pending deliveries and publish `webhook.disabled` in the Party's
        feed, all in the caller's transaction."""
        await _set(session, hook["webhook_id"], status="disabled", disabled_at=now, disabled_reason=reason)
        await session.execute(
            update(webhook_deliveries)
            .where(
                webhook_deliveries.c.webhook_id == hook["webhook_id"],
                webhook_deliveries.c.status == "pending",
            )
            .values(status="abandoned", next_attempt_at=None)
        )
        failing_since = _utc(hook["failing_since"])
        data = {
            "webhook_id": hook["webhook_id"],
            "url": hook["url"],
            "reason": reason,
            "failing_since": iso_instant(failing_since) if failing_since else None,
            "disabled_at": iso_instant(now),
        }
        source = f"webhook.disabled/{hook['webhook_id']}/{iso_instant(now)}"
        item = feed.FeedItem(
            party=hook["party"],
            type="webhook.disabled",
            event_id=feed.item_id(source, hook["party"]),
            occurred_at=now,
            source="reporting",
            data=data,
        )
        await feed.append(session, [item])
        log.info("webhook_disabled", webhook_id=hook["webhook_id"], party=hook["party"], reason=reason)
        return True

    # ---- secrets at rest ------------------------------------------------------------------------------

    async def seal_secrets(self) -> int:
        """Seal under the newest key every secret that is not (plain ones from before encryption, ones under
        an older key); answers how many endpoints changed. Run at start and hourly (`_run`)."""
        box = self.secret_box
        stale = or_(
            ~webhooks.c.secret.startswith(box.prefix, autoescape=True),
            and_(
                webhooks.c.previous_secret.is_not(None),
                ~webhooks.c.previous_secret.startswith(box.prefix, autoescape=True),
            ),
        )
        async with self.db.read() as session:
            ids = list(
                (
                    await session.execute(
                        select(webhooks.c.webhook_id).where(stale).order_by(webhooks.c.webhook_id)
                    )
                ).scalars()
            )
        sealed = 0
        for start in range(0, len(ids), _BATCH):
            async with self.db.transaction() as session:
                for webhook_id in ids[start : start + _BATCH]:
                    hook = await _locked(session, webhook_id)
                    if hook is None:
                        continue
                    try:
                        values = {
                            column: box.seal(box.open(hook[column], webhook_id), webhook_id)
                            for column in ("secret", "previous_secret")
                            if not box.current(hook[column])
                        }
                    except LookupError as exc:  # its key was dropped too early: leave it, say so
                        log.warning("webhook_secret_unreadable", webhook_id=webhook_id, error=str(exc))
                        continue
                    if values:
                        await _set(session, webhook_id, **values)
                        sealed += 1
        if sealed:
            log.info("webhook_secrets_sealed", count=sealed, kid=box.kid)
        return sealed

    # ---- background -----------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        sealed_at: float | None = None
        while True:
            try:
                if sealed_at is None or time.monotonic() - sealed_at >= _SEAL_EVERY:
                    await self.seal_secrets()
                    sealed_at = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._wake.wait()
                self._wake.clear()
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a transient DB failure: the next round retries
                log.info("webhook_worker_retry", error=type(exc).__name__)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reporting-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def _hook(session: AsyncSession, webhook_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(webhooks).where(webhooks.c.webhook_id == webhook_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


async def _locked(session: AsyncSession, webhook_id: str) -> dict[str, Any] | None:
    query = select(webhooks).where(webhooks.c.webhook_id == webhook_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return dict(row) if row is not None else None


async def _set(session: AsyncSession, webhook_id: str, **values: Any) -> None:
    await session.execute(update(webhooks).where(webhooks.c.webhook_id == webhook_id).values(**values))


async def _supersede_doorbells(session: AsyncSession, webhook_id: str, now: datetime) -> None:
    """Keep one doorbell waiting per endpoint, so a registry whose endpoint was down is rung once when it is
    back, not once per inbox batch it missed. A newer doorbell replaces a waiting one never sent (it names a
    later position); one already sent, or claimed by a worker now sending it, is retried with its own
    bytes, as Standard Webhooks wants, and the newer news rides on it: a rung registry reads its whole
    inbox, the position being only the least it will find."""
    pending = (webhook_deliveries.c.webhook_id == webhook_id) & (webhook_deliveries.c.type == feed.DOORBELL)
    pending &= webhook_deliveries.c.status == "pending"
    waiting = (
        await session.execute(
            select(
                webhook_deliveries.c.id, webhook_deliveries.c.attempts, webhook_deliveries.c.next_attempt_at
            )
            .where(pending)
            .order_by(webhook_deliveries.c.position)
        )
    ).all()
    if len(waiting) < 2:
        return
    # A claim moves `next_attempt_at` past now (the lease) before the attempt counts.
    sent = [row for row in waiting if row.attempts > 0 or (_utc(row.next_attempt_at) or now) > now]
    keep = (sent or waiting)[-1].id
    await session.execute(
        update(webhook_deliveries)
        .where(pending, webhook_deliveries.c.id != keep)
        .values(status="superseded", next_attempt_at=None)
    )


# ---- HTTP ------------------------------------------------------------------------------------------------


class WebhookCreate(BaseModel):
    """`POST /v1/webhooks`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, examples=["https://registry.example.org/hooks/ir"])
    event_types: list[str] = Field(
        min_length=1, max_length=50, description="Feed item types, or `prefix.*` (e.g. `transaction.*`)"
    )
    description: str | None = Field(default=None, max_length=500)


webhooks_router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookPath = Annotated[str, Path(max_length=40)]


def _owner(principal: Principal) -> str:
    """The Party whose endpoints the principal manages: its party_admin or its registry client."""
    if principal.party is None or not principal.has(Role.PARTY_ADMIN, Role.REGISTRY):
        raise Forbidden("Webhooks are managed by a Party's party_admin or its registry client.")
    return principal.party


def _dispatcher(request: Request) -> WebhookDispatcher:
    dispatcher: WebhookDispatcher = request.app.state.webhooks
    return dispatcher


def _public(row: Any) -> dict[str, Any]:
    at = _utc(row["disabled_at"])
    failing = _utc(row["failing_since"])
    return {
        "webhook_id": row["webhook_id"],
        "party": row["party"],
        "url": row["url"],
        "event_types": row["event_types"],
        "description": row["description"],
        "status": row["status"],
        "created_at": iso_instant(_utc(row["created_at"]) or _now()),
        "failing_since": iso_instant(failing) if failing else None,
        "disabled_at": iso_instant(at) if at else None,
        "disabled_reason": row["disabled_reason"],
    }


def _valid_types(types: list[str]) -> list[str]:
    for kind in types:
        known = kind in feed.EVENT_TYPES or (
            kind.endswith(".*") and any(t.startswith(kind[:-1]) for t in feed.EVENT_TYPES)
        )
        if not known:
            raise Unprocessable(f"Unknown event type {kind[:100]!r}.", slug="unknown-event-type")
    return list(dict.fromkeys(types))


async def _own(session: AsyncSession, party: str, webhook_id: str) -> dict[str, Any]:
    hook = await _hook(session, webhook_id)
    # Another Party's endpoint answers exactly like one that does not exist.
    if hook is None or hook["party"] != party:
        raise NotFound(f"No webhook {webhook_id} of your Party.", slug="webhook-not-found")
    return hook


@webhooks_router.post("", status_code=201)
async def create_webhook(request: Request, principal: CurrentPrincipal, body: WebhookCreate) -> JSONResponse:
    """Register an endpoint; the answer holds its signing secret, shown this once."""
    party = _owner(principal)
    types = _valid_types(body.event_types)
    dispatcher = _dispatcher(request)
    try:
        await dispatcher.check(body.url)
    except UnsafeUrl as exc:
        raise Unprocessable(f"The webhook URL is refused: {exc}.", slug="webhook-url-refused") from exc
    now = dispatcher.clock()
    secret = new_secret()
    webhook_id = "wh_" + secrets.token_hex(12)
    sealed = dispatcher.secret_box.seal(secret, webhook_id)
    async with request.app.state.db.transaction() as session:
        count = (
            await session.execute(select(func.count()).select_from(webhooks).where(webhooks.c.party == party))
        ).scalar_one()
        if count >= _MAX_PER_PARTY:
            raise Conflict(
                f"{party} has {count} webhooks, the most a Party may keep.", slug="too-many-webhooks"
            )
        # New endpoints hear of items appended from now on, not the Party's whole history (that is the
        # feed's job: read it from after=0).
        head = (
            await session.execute(
                select(func.max(party_events.c.position)).where(party_events.c.party == party)
            )
        ).scalar_one_or_none()
        row = {
            "webhook_id": webhook_id,
            "party": party,
            "url": body.url,
            "event_types": types,
            "description": body.description,
            "status": "active",
            "secret": sealed,
            "previous_secret": None,
            "previous_secret_until": None,
            "cursor": int(head or 0),
            "failing_since": None,
            "disabled_at": None,
            "disabled_reason": None,
            "created_at": now,
            "created_by": principal.client_id,
        }
        await session.execute(webhooks.insert().values(**row))
    return JSONResponse(
        _public(row) | {"secret": secret},
        status_code=201,
        headers={"Location": f"/v1/webhooks/{webhook_id}"},
    )


@webhooks_router.get("")
async def list_webhooks(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """The Party's endpoints (never their secrets)."""
    party = _owner(principal)
    async with request.app.state.db.read() as session:
        rows = (
            (
                await session.execute(
                    select(webhooks).where(webhooks.c.party == party).order_by(webhooks.c.created_at)
                )
            )
            .mappings()
            .all()
        )
    return JSONResponse({"items": [_public(row) for row in rows], "next_cursor": None})


@webhooks_router.get("/{webhook_id}")
async def get_webhook(request: Request, principal: CurrentPrincipal, webhook_id: WebhookPath) -> JSONResponse:
    party = _owner(principal)
    async with request.app.state.db.read() as session:
        return JSONResponse(_public(await _own(session, party, webhook_id)))


@webhooks_router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(request: Request, principal: CurrentPrincipal, webhook_id: WebhookPath) -> Response:
    """Remove an endpoint and its delivery log; nothing more is sent to it."""
    party = _owner(principal)
    async with request.app.state.db.transaction() as session:
        await _own(session, party, webhook_id)
        await session.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
        await session.execute(delete(webhooks).where(webhooks.c.webhook_id == webhook_id))
    return Response(status_code=204)


@webhooks_router.post("/{webhook_id}/rotate-secret")
async def rotate_secret(
    request: Request, principal: CurrentPrincipal, webhook_id: WebhookPath
) -> JSONResponse:
    """A new secret (shown once); the previous one also signs for 24 h, so receivers can switch over."""
    party = _owner(principal)
    dispatcher = _dispatcher(request)
    box = dispatcher.secret_box
    now = dispatcher.clock()
    secret = new_secret()
    until = now + PREVIOUS_SECRET_SIGNS_FOR
    async with request.app.state.db.transaction() as session:
        hook = await _own(session, party, webhook_id)
        try:
            previous: str | None = box.seal(box.open(hook["secret"], webhook_id), webhook_id)
        except LookupError:  # sealed under a key since dropped: it could not sign anyway
            previous = None
        await _set(
            session,
            webhook_id,
            secret=box.seal(secret, webhook_id),
            previous_secret=previous,
            previous_secret_until=until,
        )
    return JSONResponse(
        {"webhook_id": webhook_id, "secret": secret, "previous_secret_expires_at": iso_instant(until)}
    )


@webhooks_router.post("/{webhook_id}/enable")
async def enable_webhook(
    request: Request, principal: CurrentPrincipal, webhook_id: WebhookPath
) -> JSONResponse:
    """Re-activate a disabled endpoint (after a 410 or 72 h of failures); delivery resumes where it stopped.

    The message whose failure disabled it, the ones that failed in the same failure streak and the ones
    abandoned with it are due again now, each with a fresh retry schedule (their log kept); then every item
    of its types appended while it was disabled, oldest first, since its feed cursor did not move. Nothing is
    skipped, and a receiver that would rather not wait reads the feed from its own last position: messages
    are thin pointers into it. Enabling an active endpoint changes nothing.
    """
    party = _owner(principal)
    dispatcher = _dispatcher(request)
    now = dispatcher.clock()
    async with request.app.state.db.transaction() as session:
        hook = await _locked(session, webhook_id)
        if hook is None or hook["party"] != party:
            raise NotFound(f"No webhook {webhook_id} of your Party.", slug="webhook-not-found")
        if hook["status"] == "disabled":
            stopped = _utc(hook["failing_since"]) or _utc(hook["disabled_at"]) or now
            await _set(
                session,
                webhook_id,
                status="active",
                failing_since=None,
                disabled_at=None,
                disabled_reason=None,
            )
            await session.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.webhook_id == webhook_id,
                    or_(
                        webhook_deliveries.c.status == "abandoned",
                        and_(
                            webhook_deliveries.c.status == "failed",
                            webhook_deliveries.c.last_attempt_at >= stopped,
                        ),
                    ),
                )
                .values(status="pending", attempts=0, next_attempt_at=now)
            )
            await _supersede_doorbells(session, webhook_id, now)
            log.info("webhook_enabled", webhook_id=webhook_id, party=party, client=principal.client_id)
        row = await _hook(session, webhook_id)
    dispatcher.wake()
    return JSONResponse(_public(row))


@webhooks_router.get("/{webhook_id}/deliveries")
async def deliveries(
    request: Request,
    principal: CurrentPrincipal,
    webhook_id: WebhookPath,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> JSONResponse:
    """The endpoint's messages, newest first, each with its state and the log of its attempts."""
    party = _owner(principal)
    after = decode_cursor(cursor, fields=("id",))
    query = (
        select(webhook_deliveries)
        .where(webhook_deliveries.c.webhook_id == webhook_id)
        .order_by(webhook_deliveries.c.id.desc())
        .limit(limit + 1)
    )
    if after is not None:
        if type(after["id"]) is not int:
            raise Unprocessable("The cursor is not one this list issued.", slug="invalid-cursor")
        query = query.where(webhook_deliveries.c.id < after["id"])
    async with request.app.state.db.read() as session:
        await _own(session, party, webhook_id)
        rows = (await session.execute(query)).mappings().all()

    def shown(row: Any) -> dict[str, Any]:
        due, last = _utc(row["next_attempt_at"]), _utc(row["last_attempt_at"])
        return {
            "delivery_id": row["id"],
            "event_id": row["event_id"],
            "type": row["type"],
            "position": row["position"],
            "status": row["status"],
            "attempts": row["attempts"],
            "next_attempt_at": iso_instant(due) if due and row["status"] == "pending" else None,
            "last_attempt_at": iso_instant(last) if last else None,
            "last_status_code": row["last_status_code"],
            "last_error": row["last_error"],
            "log": row["log"],
        }

    page = rows[:limit]
    next_cursor = encode_cursor({"id": page[-1]["id"]}) if len(rows) > limit else None
    return JSONResponse({"items": [shown(row) for row in page], "next_cursor": next_cursor})


def is_production(environment: Environment | str) -> bool:
    return str(environment) == Environment.PRODUCTION.value
