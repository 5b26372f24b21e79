"""Shared harness of the party_sections service-level tests (tests/integration/test_party_sections_*.py).

One app per test module and backend (`module_harness`): every test works on Parties no other test of the
module touched (`spare_party`), so the tests do not interfere and share one database.

The transactions service's balance answers are played by `Balances`, an `httpx.MockTransport` at the
boundary (the wire models of contracts/transactions.py): these tests are about party_sections' own rules
(zero balance required, peer down → 503 and nothing written). The real peer is exercised through the
in-process suite in test_party_sections_internal.py.
"""

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from contracts.parties import all_parties
from contracts.roles import Role
from services.party_sections.app import create_app
from services.party_sections.config import Settings
from services.party_sections.models import audit_log, metadata, outbox
from tests.support.apps import client_for
from tests.support.databases import DatabaseFactory
from tests.support.tokens import TokenFactory

__all__ = ["PROBLEM", "Balances", "Harness", "assert_problem", "module_harness"]

PROBLEM = "application/problem+json"
_SERVICE_SECRET = "party-sections-tests-service-secret-0123456789"


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with `status` (and the problem type ending in `slug`)."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers["content-type"]
    body = response.json()
    assert body["status"] == status and body["title"], body
    if slug is not None:
        assert body["type"].endswith("/" + slug), body
    return body


@dataclass
class Balances:
    """The transactions service's internal balance endpoints as party_sections sees them."""

    parties: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)
    down: bool = False
    calls: list[str] = field(default_factory=list)
    invalidations: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/internal/v1/directory/invalidations" and request.method == "POST":
            # party_sections telling the ledger to drop cached lookups (services/transactions/directory.py)
            self.invalidations.append(json.loads(request.content))
            return httpx.Response(204)
        self.calls.append(path)
        if self.down:
            return httpx.Response(503, json={"status": 503, "title": "down"})
        parts = path.strip("/").split("/")
        if parts[:3] == ["internal", "v1", "party-sections"] and parts[-1] == "balance":
            total = self.parties.get(parts[3], 0)
            return httpx.Response(200, json={"party": parts[3], "total": total, "accounts": {}})
        if parts[:3] == ["internal", "v1", "accounts"] and parts[-1] == "balance":
            total = self.accounts.get(parts[3], 0)
            return httpx.Response(
                200,
                json={"account_id": parts[3], "held": total, "reserved": 0, "pending_in": 0, "total": total},
            )
        return httpx.Response(404, json={"status": 404, "title": "Not found"})


def _token_endpoint(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"access_token": "svc-token", "token_type": "Bearer", "expires_in": 900})


@dataclass
class Harness:
    """The party_sections app on one database, a client to it and token helpers."""

    app: Any
    client: httpx.AsyncClient
    tokens: TokenFactory
    balances: Balances
    _spare: Iterator[str] = field(
        default_factory=lambda: iter(p.code for p in all_parties() if p.code != "EUE")
    )
    _feed_position: int = 0

    def headers(self, party: str | None, *roles: Role | str, client_id: str | None = None) -> dict[str, str]:
        return self.tokens.headers(party=party, roles=list(roles), client_id=client_id)

    @property
    def secretariat(self) -> dict[str, str]:
        return self.headers(None, Role.SECRETARIAT_ADMIN, client_id="secretariat-1")

    def party_admin(self, party: str) -> dict[str, str]:
        return self.headers(party, Role.PARTY_ADMIN, client_id=f"{party.lower()}-admin")

    def spare_party(self) -> str:
        """A Party code no other test of this module has used."""
        return next(self._spare)

    async def create_section(self, party: str, *, ars: bool = False) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/party-sections",
            json={"party": party, "registry_id": f"{party}01", "ars": ars},
            headers=self.secretariat,
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def move(self, party: str, move: str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(
            f"/v1/party-sections/{party}/{move}", headers=self.secretariat, **kwargs
        )

    async def section_in(self, status: str, party: str | None = None) -> str:
        """A new section brought to `status` by the Secretariat's moves."""
        party = party or self.spare_party()
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
            assert response.status_code == 200, response.text
        return party

    async def section(self, party: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/party-sections/{party}", headers=self.secretariat)
        assert response.status_code == 200, response.text
        return response.json()

    async def accounts(self, party: str) -> list[dict[str, Any]]:
        response = await self.client.get(
            f"/v1/party-sections/{party}/accounts", params={"limit": 500}, headers=self.secretariat
        )
        assert response.status_code == 200, response.text
        return response.json()["items"]

    async def new_events(self) -> list[dict[str, Any]]:
        """Events published since the last call (the feed, read as the Secretariat)."""
        items: list[dict[str, Any]] = []
        while True:
            response = await self.client.get(
                "/internal/v1/events",
                params={"after": self._feed_position, "limit": 1000},
                headers=self.secretariat,
            )
            assert response.status_code == 200, response.text
            page = response.json()
            items += page["items"]
            self._feed_position = page["last_position"]
            if not page["items"]:
                return items

    async def audit(self, party: str | None = None) -> list[dict[str, Any]]:
        query = select(audit_log).order_by(audit_log.c.id)
        if party is not None:
            query = query.where(audit_log.c.party == party)
        async with self.app.state.db.read() as session:
            return [dict(row) for row in (await session.execute(query)).mappings().all()]

    async def row_counts(self) -> dict[str, int]:
        """Rows per table: what a refused request must leave as it found."""
        counts = {}
        async with self.app.state.db.read() as session:
            for name, table in metadata.tables.items():
                if name == "outbox_relay":
                    continue
                counts[name] = (await session.execute(select(func.count()).select_from(table))).scalar_one()
        return counts

    async def outbox_size(self) -> int:
        async with self.app.state.db.read() as session:
            return (await session.execute(select(func.count()).select_from(outbox))).scalar_one()


@asynccontextmanager
async def module_harness(
    backend: str, database_factory: DatabaseFactory, data_dir: Path, tokens: TokenFactory
) -> AsyncIterator[Harness]:
    """The service on a fresh database of `backend`, for a whole module."""
    package = "services.party_sections"
    url = (
        database_factory.postgres(package)
        if backend == "postgres"
        else database_factory.sqlite(package, data_dir)
    )
    balances = Balances()
    transports = {
        "gateway": httpx.MockTransport(_token_endpoint),
        "transactions": httpx.MockTransport(balances.handle),
    }
    app = create_app(
        Settings(database_url=url, service_client_secret=_SERVICE_SECRET),
        token_verifier=tokens.verifier(),
        peer_transports=transports,
    )
    try:
        async with client_for(app) as client:
            yield Harness(app=app, client=client, tokens=tokens, balances=balances)
    finally:
        database_factory.drop(url)
