"""What party_sections knows (accounts, sections, cooperative approaches), as the ledger reads it: cached.

Every transfer needs its source and destination accounts' status, section status and four-eyes setting
(and a transfer from a connected registry its section's `incoming_acceptance`, from `section(party)`).
Reading them over party_sections' internal API cost two HTTP calls per transfer, more CPU than the ledger's
own SQL (docs/ledger.md "Throughput"), so the answers are cached here and kept true in three ways:

1. **Follow the feed.** A background task reads party_sections' event feed every `follow_interval` seconds
   and evicts what an event touches: `account.*` the account, `party_section.*` and `ndc_periods.set` the
   Party's section and every cached account of the Party, `cooperative_approach.*` the CA.
2. **Invalidate on write.** party_sections calls `POST /internal/v1/directory/invalidations` after it
   commits a change to an account, a section, its settings or NDC periods and before it answers its
   caller, so whoever blocked an account or switched four-eyes or manual acceptance on sees the ledger
   honour it at once.
3. **Trust only a live follower.** A cached answer is used only while the follower has read the feed to its
   end within `max_lag` seconds and the entry is younger than `ttl`; otherwise the lookup goes to
   party_sections (which, if it is down, makes the transaction refuse: nothing moves on an unknown account).

An answer fetched while an eviction happened is used once but not stored (the epoch check), so a lookup that
raced a change can never pin the old state in the cache.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from prometheus_client import Counter

from contracts.accounts import AccountType
from contracts.events import EventPage
from contracts.party_sections import AccountLookup, CooperativeApproach, SectionLookup
from kit.errors import DomainError
from kit.service_client import Peers

__all__ = ["Directory", "account_party"]

log = structlog.get_logger(__name__)

#: Why a lookup went to party_sections or not: `hit`, `absent` (never cached or evicted), `lagging` (the
#: follower has not reached the feed's end within max_lag), `expired` (older than ttl).
DIRECTORY_LOOKUPS = Counter(
    "registry_directory_lookups_total", "Account/section lookups of the ledger's directory cache", ["result"]
)
# Bound once: a transfer makes two lookups, and `labels()` per call is a dict lookup under a lock.
_HIT, _ABSENT, _LAGGING, _EXPIRED = (
    DIRECTORY_LOOKUPS.labels(r) for r in ("hit", "absent", "lagging", "expired")
)

_FEED_PAGE = 1000


def account_party(account_id: str) -> str | None:
    """The Party an IR account id belongs to (`GHA01-100-1` → `GHA`), None if not an IR account id."""
    head = account_id.split("-", 1)[0]
    return (
        head[:3]
        if len(head) == 5 and head[:3].isalpha() and head[:3].isupper() and head[3:].isdigit()
        else None
    )


class Directory:
    """Lookups of party_sections' internal API with a cache kept by its feed (see the module docstring)."""

    def __init__(
        self,
        peers: Peers,
        *,
        cache: bool = True,
        ttl: float = 60.0,
        max_lag: float = 2.0,
        ca_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peers = peers
        self.cache = cache
        self.ttl = ttl
        self.max_lag = max_lag
        self.ca_ttl = ca_ttl
        self.clock = clock
        self._accounts: dict[str, tuple[float, AccountLookup]] = {}
        self._of_type: dict[tuple[str, str], tuple[float, AccountLookup]] = {}
        self._sections: dict[str, tuple[float, SectionLookup]] = {}
        self._cas: dict[str, tuple[float, frozenset[str]]] = {}
        self._epoch = 0
        self._position = 0
        self._synced_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        # One reader of the feed at a time: two catch-ups from the same position would apply a page twice,
        # the late one evicting entries cached after the events it replays.
        self._reading = asyncio.Lock()
        self.hits = 0
        self.misses = 0

    # ---- lookups --------------------------------------------------------------------------------------------

    async def _get(self, path: str, **params: Any) -> httpx.Response | None:
        response = await self.peers.request("party_sections", "GET", path, params=params or None)
        if response.status_code == 200:
            return response
        if response.status_code in (401, 403):
            log.error("party_sections_refused", path=path, status=response.status_code)
            raise DomainError("party_sections refused this service's token", slug="upstream-refused")
        return None

    def _live(self) -> bool:
        return self.cache and self._synced_at is not None and self.clock() - self._synced_at <= self.max_lag

    def _fresh(self, entry: tuple[float, Any] | None) -> Any:
        if entry is None:
            self.misses += 1
            _ABSENT.inc()
            return None
        if not self._live():
            self.misses += 1
            _LAGGING.inc()
            return None
        if self.clock() - entry[0] > self.ttl:
            self.misses += 1
            _EXPIRED.inc()
            return None
        self.hits += 1
        _HIT.inc()
        return entry[1]

    async def account(self, account_id: str) -> AccountLookup | None:
        cached = self._fresh(self._accounts.get(account_id))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        epoch, at = self._epoch, self.clock()
        response = await self._get(f"/internal/v1/accounts/{account_id}")
        if response is None:
            return None  # not cached: an account opened a moment later must be found
        found = AccountLookup.model_validate(response.json())
        if self.cache and epoch == self._epoch:
            self._accounts[account_id] = (at, found)
        return found

    async def section(self, party: str) -> SectionLookup | None:
        cached = self._fresh(self._sections.get(party))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        epoch, at = self._epoch, self.clock()
        response = await self._get(f"/internal/v1/party-sections/{party}")
        if response is None:
            return None
        found = SectionLookup.model_validate(response.json())
        if self.cache and epoch == self._epoch:
            self._sections[party] = (at, found)
        return found

    async def account_of_type(self, party: str, account_type: AccountType) -> AccountLookup | None:
        """The Party's first open account of the type (by id), None if it has none."""
        key = (party, account_type.value)
        cached = self._fresh(self._of_type.get(key))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        epoch, at = self._epoch, self.clock()
        response = await self._get(f"/internal/v1/party-sections/{party}/accounts", type=account_type.value)
        if response is None:
            return None
        accounts = [AccountLookup.model_validate(item) for item in response.json()]
        open_ones = sorted((a for a in accounts if a.status.value == "open"), key=lambda a: a.account_id)
        if not open_ones:
            return None
        if self.cache and epoch == self._epoch:
            self._of_type[key] = (at, open_ones[0])
        return open_ones[0]

    def cached_participants(self) -> dict[str, frozenset[str]]:
        """Every CA's participants the cache holds and still trusts (no I/O)."""
        now = self.clock()
        return {ca: parts for ca, (at, parts) in self._cas.items() if now - at < self.ca_ttl}

    async def participants(self, ca_ids: set[str]) -> dict[str, frozenset[str]]:
        """Participants per CA (cached for `ca_ttl` seconds and evicted by CA events; unknown CA: none)."""
        result: dict[str, frozenset[str]] = {}
        for ca_id in sorted(ca_ids):
            now = self.clock()
            cached = self._cas.get(ca_id)
            if cached and now - cached[0] < self.ca_ttl:
                result[ca_id] = cached[1]
                continue
            response = await self._get(f"/internal/v1/cooperative-approaches/{ca_id}")
            parts = (
                frozenset(CooperativeApproach.model_validate(response.json()).participants)
                if response
                else frozenset()
            )
            self._cas[ca_id] = (now, parts)
            result[ca_id] = parts
        return result

    # ---- invalidation ---------------------------------------------------------------------------------------

    def evict(
        self, party: str | None = None, account_id: str | None = None, ca_id: str | None = None
    ) -> None:
        """Forget what a change may have made wrong: one account, or a Party's section and all its accounts."""
        self._epoch += 1
        if account_id is not None:
            self._accounts.pop(account_id, None)
            party = party or account_party(account_id)
            # A status change may change which account is the Party's first open one of a type.
            for key in [k for k in self._of_type if k[0] == party]:
                del self._of_type[key]
        elif party is not None:
            self._sections.pop(party, None)
            for account in [a for a, (_, found) in self._accounts.items() if found.party == party]:
                del self._accounts[account]
            for key in [k for k in self._of_type if k[0] == party]:
                del self._of_type[key]
        if ca_id is not None:
            self._cas.pop(ca_id, None)

    def apply(self, event_type: str, party: str | None, data: dict[str, Any]) -> None:
        """Evict what one party_sections event may have changed."""
        if event_type.startswith("account."):
            # `account.opened` too: a new open account may become the Party's first one of its type.
            self.evict(party, account_id=data.get("account_id"))
        elif event_type.startswith("party_section.") or event_type == "ndc_periods.set":
            self.evict(party or data.get("party"))
        elif event_type.startswith("cooperative_approach."):
            self.evict(ca_id=data.get("ca_id"))

    # ---- the feed follower ----------------------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Read party_sections' feed to its end, evicting as it goes; how many events were read."""
        async with self._reading:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        started = self.clock()
        read = 0
        while True:
            response = await self.peers.request(
                "party_sections",
                "GET",
                "/internal/v1/events",
                params={"after": self._position, "limit": _FEED_PAGE},
            )
            if response.status_code != 200:
                raise DomainError(f"party_sections' feed answered HTTP {response.status_code}")
            page = EventPage.model_validate(response.json())
            for event in page.items:
                self.apply(event.type, event.party, event.data)
            self._position = max(self._position, page.last_position)
            read += len(page.items)
            if len(page.items) < _FEED_PAGE:
                break
        # Everything committed before `started` has been seen: the cache is as true as of then.
        self._synced_at = started
        return read

    async def _follow(self, interval: float) -> None:
        while True:
            await asyncio.sleep(
                interval
            )  # first: at start-up the gateway and party_sections may still be coming up
            try:
                await self.catch_up()
            except Exception as exc:  # the follower must outlive party_sections restarts
                log.warning("directory_feed_unreadable", error=str(exc))

    def start(self, interval: float) -> None:
        if self.cache and self._task is None:
            self._task = asyncio.create_task(self._follow(interval))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
