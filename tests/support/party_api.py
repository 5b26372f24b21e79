"""Black-box helpers for the party_sections tests at the gateway (API.md "Reference data and Party sections").

Everything here goes through `suite.client` (the gateway) except `feed_head` and `section_lookup`, which read
party_sections' internal API the way another service does (as `svc-transactions`) to check that a refused
or invalid request wrote nothing. Expectations are written from API.md, not imported from the implementation:
the account types and codes below are API.md's list, copied on purpose.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.databases import DatabaseFactory
from tests.support.suite import BOOTSTRAP_ID, BOOTSTRAP_SECRET, InProcessSuite, inprocess_suite

__all__ = [
    "ACCOUNT_TYPES",
    "Actor",
    "PartyApi",
    "assert_problem",
    "etag_version",
    "module_suite",
]

#: API.md: account `type` → `type_code`, one of each created when a section opens.
ACCOUNT_TYPES: dict[str, int] = {
    "holding": 100,
    "ndc_use": 200,
    "oimp_use": 210,
    "cancellation": 300,
    "omge_cancellation": 310,
    "mandatory_omge_cancellation": 320,
    "adaptation_fund": 330,
}

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, *statuses: int) -> dict:
    """`response` is an RFC 9457 problem with one of `statuses` (any 4xx when none given)."""
    if statuses:
        assert response.status_code in statuses, (
            f"expected {statuses}, got {response.status_code}: {response.text[:500]}"
        )
    else:
        assert 400 <= response.status_code < 500, (
            f"expected a 4xx, got {response.status_code}: {response.text[:500]}"
        )
    assert response.headers.get("content-type", "").startswith(PROBLEM), (
        f"not a problem document ({response.headers.get('content-type')}): {response.text[:300]}"
    )
    body = response.json()
    assert body.get("status") == response.status_code, body
    assert isinstance(body.get("title"), str) and body["title"], body
    return body


def etag_version(response: httpx.Response) -> int:
    """The version an `ETag` header carries, quoted (`"3"`, `W/"3"`) or not (`3`)."""
    raw = response.headers.get("etag")
    assert raw is not None, f"no ETag header on {response.request.method} {response.request.url.path}"
    digits = raw.strip().removeprefix("W/").strip('"')
    assert digits.isdigit(), f"ETag {raw!r} does not carry a version number"
    return int(digits)


#: Parties tests use by name as the other side of a cooperative approach or transfer.
_COUNTERPARTS = frozenset({"CHE", "GHA"})


@dataclass
class Actor:
    """An OAuth client of the suite and the headers of one token for it."""

    label: str
    party: str | None
    roles: tuple[str, ...]
    client_id: str
    headers: dict[str, str]


@dataclass
class PartyApi:
    """Calls through the gateway as named actors; retries a 429 so rate limits never decide an assertion."""

    suite: InProcessSuite
    admins: list[Actor]
    _parties: list[str] = field(default_factory=list)
    _used_parties: set[str] = field(default_factory=set)
    _ca_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(100))
    _entity_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _feed_position: int = 0

    @classmethod
    async def start(cls, suite: InProcessSuite) -> "PartyApi":
        token = await suite.token(BOOTSTRAP_ID, BOOTSTRAP_SECRET)
        admin = Actor(
            "bootstrap secretariat_admin",
            None,
            ("secretariat_admin",),
            BOOTSTRAP_ID,
            {"Authorization": f"Bearer {token}"},
        )
        return cls(suite=suite, admins=[admin])

    @property
    def admin(self) -> Actor:
        """A Secretariat admin for set-up and checks; several take turns so no rate limit is reached."""
        self.admins.append(self.admins.pop(0))
        return self.admins[-1]

    async def add_admins(self, count: int) -> None:
        for n in range(count):
            self.admins.append(await self.actor(f"secretariat checker {n}", None, ["secretariat_admin"]))

    # --- raw calls -------------------------------------------------------------------------------------------

    async def call(self, actor: Actor, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**actor.headers, **kwargs.pop("headers", {})}
        for _ in range(20):
            response = await self.suite.client.request(method, path, headers=headers, **kwargs)
            if response.status_code != 429:
                return response
            await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))
        return response

    async def get(self, actor: Actor, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call(actor, "GET", path, **kwargs)

    async def post(self, actor: Actor, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call(actor, "POST", path, **kwargs)

    async def list_all(self, actor: Actor, path: str) -> list[dict]:
        """Every item of a paginated list (`{"items", "next_cursor"}`)."""
        items: list[dict] = []
        params: dict[str, Any] = {"limit": 100}
        for _ in range(100):
            response = await self.get(actor, path, params=params)
            assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:300]}"
            page = response.json()
            assert set(page) >= {"items", "next_cursor"}, page
            items += page["items"]
            if not page["next_cursor"]:
                return items
            params = {"limit": 100, "cursor": page["next_cursor"]}
        raise AssertionError(f"GET {path} never ended")

    # --- actors ----------------------------------------------------------------------------------------------

    async def actor(
        self, label: str, party: str | None, roles: list[str], registry_id: str | None = None
    ) -> Actor:
        """A new client (made by the bootstrap admin) and a token for it."""
        body: dict[str, Any] = {"name": label, "party": party, "roles": roles}
        if registry_id is not None:
            body["registry_id"] = registry_id
        created = await self.post(self.admin, "/v1/clients", json=body)
        assert created.status_code == 201, created.text
        secret = created.json()["client_secret"]
        client_id = created.json()["client_id"]
        token = await self.suite.token(client_id, secret)
        return Actor(label, party, tuple(roles), client_id, {"Authorization": f"Bearer {token}"})

    # --- reference data and ids ------------------------------------------------------------------------------

    async def spare_party(self) -> str:
        """A Party code no test of this suite has used yet (from GET /v1/parties)."""
        if not self._parties:
            self._parties = [p["code"] for p in await self.list_all(self.admin, "/v1/parties")]
            assert len(self._parties) > 200
        for code in self._parties:
            # Never a counterpart the tests name literally (a CA of [party, "CHE"] needs two distinct Parties).
            if code not in self._used_parties and code not in _COUNTERPARTS and len(code) == 3:
                self._used_parties.add(code)
                return code
        raise AssertionError("ran out of Party codes")

    def reserve(self, *codes: str) -> None:
        self._used_parties.update(codes)

    def new_ca_id(self) -> str:
        return f"CA{next(self._ca_numbers):04d}"

    def new_entity_id(self) -> str:
        return f"ENT-{next(self._entity_numbers):05d}"

    async def register_ca(self, participants: list[str], name: str = "Cooperative approach") -> str:
        ca_id = self.new_ca_id()
        response = await self.post(
            self.admin,
            "/v1/cooperative-approaches",
            json={"ca_id": ca_id, "name": name, "participants": participants},
        )
        assert response.status_code == 201, response.text
        return ca_id

    # --- sections --------------------------------------------------------------------------------------------

    async def create_section(self, party: str, *, ars: bool = False, number: str = "01") -> dict:
        response = await self.post(
            self.admin,
            "/v1/party-sections",
            json={"party": party, "registry_id": f"{party}{number}", "ars": ars},
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def move(self, party: str, move: str, actor: Actor | None = None) -> httpx.Response:
        return await self.post(actor or self.admin, f"/v1/party-sections/{party}/{move}", json={})

    async def section_in(self, status: str, party: str | None = None) -> str:
        """A new section of a spare (or the given) Party brought to `status` by the Secretariat."""
        party = party or await self.spare_party()
        await self.create_section(party)
        path = {
            "requested": [],
            "open": ["open"],
            "suspended": ["open", "suspend"],
            "closing": ["open", "close"],
            "closed": ["open", "close", "close"],
        }[status]
        for move in path:
            response = await self.move(party, move)
            assert response.status_code == 200, f"{move}: {response.status_code} {response.text}"
        section = await self.section(party)
        assert section["status"] == status, section
        return party

    async def section(self, party: str) -> dict:
        response = await self.get(self.admin, f"/v1/party-sections/{party}")
        assert response.status_code == 200, response.text
        return response.json()

    async def section_state(self, party: str) -> tuple:
        """What a refused or invalid request must not change: status, version, registry id, ars, settings."""
        section = await self.section(party)
        return (
            section["status"],
            section["version"],
            section["registry_id"],
            section["ars"],
            section["settings"],
        )

    async def accounts(self, party: str) -> list[dict]:
        return await self.list_all(self.admin, f"/v1/party-sections/{party}/accounts")

    async def account_statuses(self, party: str) -> dict[str, tuple]:
        return {
            a["account_id"]: (a["status"], a["type"], a["name"], a["holder_entity_id"])
            for a in await self.accounts(party)
        }

    async def new_account(self, party_admin: Actor, party: str, *, blocked: bool = False) -> str:
        response = await self.post(
            party_admin,
            f"/v1/party-sections/{party}/accounts",
            json={"type": "holding", "name": "Matrix holding account"},
        )
        assert response.status_code == 201, response.text
        account_id = response.json()["account_id"]
        if blocked:
            block = await self.post(self.admin, f"/v1/accounts/{account_id}/block", json={})
            assert block.status_code == 200, block.text
        return account_id

    async def account_status(self, party: str, account_id: str) -> str:
        accounts = {a["account_id"]: a for a in await self.accounts(party)}
        return accounts[account_id]["status"]

    def entity_body(self, ca_id: str, entity_id: str | None = None, **overrides: Any) -> dict:
        body = {
            "entity_id": entity_id or self.new_entity_id(),
            "name": "Volta Carbon Ltd",
            "country_of_incorporation": "GHA",
            "identification_number": "CS-123456789",
            "ca_id": ca_id,
            "date_of_authorization": "2024-03-15",
            "conditions": "Mitigation outcomes from clean cookstoves only",
            "change_and_revocation_conditions": "Revocable on 30 days' notice",
        }
        body.update(overrides)
        return body

    async def entity_absent(self, party_admin: Actor, party: str, body: dict) -> bool:
        """True when no entity with `body`'s id exists: the Party's admin can create it now (it then does)."""
        response = await self.post(party_admin, f"/v1/party-sections/{party}/entities", json=body)
        assert response.status_code in (201, 409), response.text
        return response.status_code == 201

    # --- internal reads (what another service sees) ----------------------------------------------------------

    async def section_lookup(self, party: str) -> dict:
        peers = self.suite.services["transactions"].state.peers
        response = await peers.request("party_sections", "GET", f"/internal/v1/party-sections/{party}")
        assert response.status_code == 200, response.text
        return response.json()

    async def feed_head(self) -> int:
        """The last position of party_sections' event feed (every write publishes an event)."""
        peers = self.suite.services["transactions"].state.peers
        while True:
            response = await peers.request(
                "party_sections",
                "GET",
                "/internal/v1/events",
                params={"after": self._feed_position, "limit": 1000},
            )
            assert response.status_code == 200, response.text
            page = response.json()
            if not page["items"]:
                return self._feed_position
            self._feed_position = page["last_position"]


@asynccontextmanager
async def module_suite(
    backend: str, database_factory: DatabaseFactory, data_dir: Path
) -> AsyncIterator[InProcessSuite]:
    """The in-process suite for a whole module (the conftest's `make_database` is per test)."""
    made: list[str] = []

    def make(package: str) -> str:
        url = (
            database_factory.postgres(package)
            if backend == "postgres"
            else database_factory.sqlite(package, data_dir)
        )
        made.append(url)
        return url

    try:
        async with inprocess_suite(make, data_dir) as suite:
            yield suite
    finally:
        for url in made:
            database_factory.drop(url)
