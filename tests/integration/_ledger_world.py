"""A world for ledger tests: the in-process suite (gateway, party_sections, transactions, ...) with open
Party sections, cooperative approaches, NDC periods and clients, built through the public API.

First transfers go to the transactions service's internal endpoint as `svc-ars` would (the gateway never
routes `/internal`); heavy tests may also call the transactions service directly with gateway-issued
tokens (the service verifies them itself), to keep gateway rate limits out of the way.
"""

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.suite import SERVICE_SECRET, InProcessSuite, inprocess_suite

NDC_PERIOD = {"first_year": 2021, "last_year": 2030}


@dataclass
class PartyActors:
    party: str
    registry_id: str
    initiator: dict[str, str]
    approver: dict[str, str]
    admin: dict[str, str]
    viewer: dict[str, str]
    initiator_id: str
    accounts: dict[str, str] = field(default_factory=dict)

    @property
    def holding(self) -> str:
        return self.accounts["holding"]


@dataclass
class World:
    suite: InProcessSuite
    admin: dict[str, str]
    ars: dict[str, str]
    ledger: httpx.AsyncClient
    parties: dict[str, PartyActors] = field(default_factory=dict)
    _serials: dict[tuple[str, str], itertools.count] = field(default_factory=dict)

    @property
    def gateway(self) -> httpx.AsyncClient:
        return self.suite.client

    async def add_party(self, party: str, *, four_eyes: bool = False) -> PartyActors:
        gw, admin = self.gateway, self.admin
        registry_id = f"{party}01"
        answer = await gw.post(
            "/v1/party-sections", json={"party": party, "registry_id": registry_id}, headers=admin
        )
        assert answer.status_code == 201, answer.text
        answer = await gw.post(f"/v1/party-sections/{party}/open", json={}, headers=admin)
        assert answer.status_code == 200, answer.text
        clients = {}
        for label, roles in (
            ("initiator", ["initiator"]),
            ("approver", ["approver"]),
            ("admin", ["party_admin"]),
            ("viewer", ["viewer"]),
        ):
            made = await self.suite.new_client(name=f"{party} {label}", party=party, roles=roles)
            token = await self.suite.token(made["client_id"], made["client_secret"])
            clients[label] = ({"Authorization": f"Bearer {token}"}, made["client_id"])
        actors = PartyActors(
            party=party,
            registry_id=registry_id,
            initiator=clients["initiator"][0],
            approver=clients["approver"][0],
            admin=clients["admin"][0],
            viewer=clients["viewer"][0],
            initiator_id=clients["initiator"][1],
        )
        answer = await gw.put(
            f"/v1/party-sections/{party}/ndc-periods", json=[NDC_PERIOD], headers=actors.admin
        )
        assert answer.status_code in (200, 204), answer.text
        answer = await gw.get(f"/v1/party-sections/{party}/accounts", headers=actors.admin)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        for account in body["items"] if isinstance(body, dict) else body:
            actors.accounts.setdefault(account["type"], account["account_id"])
        if four_eyes:
            await self.set_four_eyes(actors, True)
        self.parties[party] = actors
        return actors

    async def set_four_eyes(self, actors: PartyActors, on: bool) -> None:
        section = await self.gateway.get(f"/v1/party-sections/{actors.party}", headers=actors.admin)
        assert section.status_code == 200, section.text
        answer = await self.gateway.patch(
            f"/v1/party-sections/{actors.party}/settings",
            json={"four_eyes": on},
            headers={**actors.admin, "If-Match": section.headers["etag"]},
        )
        assert answer.status_code == 200, answer.text

    async def add_ca(self, ca_id: str, participants: list[str]) -> None:
        answer = await self.gateway.post(
            "/v1/cooperative-approaches",
            json={"ca_id": ca_id, "name": f"Approach {ca_id}", "participants": participants},
            headers=self.admin,
        )
        assert answer.status_code == 201, answer.text

    def serials(self, ca_id: str, registry_id: str, quantity: int) -> tuple[int, int]:
        counter = self._serials.setdefault((ca_id, registry_id), itertools.count(1))
        first = next(counter)
        for _ in range(quantity - 1):
            next(counter)
        return first, first + quantity - 1

    async def first_transfer(
        self,
        party: str,
        ca_id: str,
        quantity: int,
        *,
        to_account: str | None = None,
        purposes: str = "NDC",
        definition: str = "First international transfer",
        vintage: int = 2024,
        use: dict | None = None,
        authorized_parties: list[str] | None = None,
        expect: int = 201,
        **extra: Any,
    ) -> dict:
        registry_id = f"{party}01"
        first, last = self.serials(ca_id, registry_id, quantity)
        body = {
            "operation_id": f"op-{uuid.uuid4().hex}",
            "first_transferring_party": party,
            "authorization_id": f"{party}-AUTH-1",
            "authorization_version": 1,
            "purposes": purposes,
            "first_transfer_definition": definition,
            "authorized_parties": authorized_parties,
            "blocks": [
                {
                    "ca_id": ca_id,
                    "origin_registry_id": registry_id,
                    "first": first,
                    "last": last,
                    "vintage": vintage,
                    "mitigation_type": "Emission reductions",
                    "sector": "Energy",
                    "activity_type": "Solar",
                }
            ],
            **extra,
        }
        if use is not None:
            body["use"] = use
        else:
            body["to_account"] = to_account
        answer = await self.ledger.post("/internal/v1/first-transfers", json=body, headers=self.ars)
        assert answer.status_code == expect, answer.text
        return answer.json()

    async def transact(
        self, actors: PartyActors, body: dict, *, key: str | None = None, direct: bool = False
    ) -> httpx.Response:
        client = self.ledger if direct else self.gateway
        headers = {**actors.initiator, "Idempotency-Key": key or uuid.uuid4().hex}
        return await client.post("/v1/transactions", json=body, headers=headers)

    async def invariants(self) -> dict:
        answer = await self.gateway.get("/v1/admin/invariants", headers=self.admin)
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def holdings_total(self, actors: PartyActors, account: str) -> int:
        answer = await self.gateway.get(f"/v1/accounts/{account}/holdings", headers=actors.viewer)
        assert answer.status_code == 200, answer.text
        return answer.json()["total"]


@asynccontextmanager
async def ledger_world(make_database: Callable[[str], str], data_dir: Path) -> AsyncIterator[World]:
    async with inprocess_suite(make_database, data_dir) as suite:
        admin = await suite.auth()
        ars = await suite.auth("svc-ars", SERVICE_SECRET)
        transport = httpx.ASGITransport(app=suite.services["transactions"])
        async with httpx.AsyncClient(transport=transport, base_url="http://transactions") as ledger:
            yield World(suite=suite, admin=admin, ars=ars, ledger=ledger)
