"""A world for ARS tests: the in-process suite with Party sections opened *with the ARS*, cooperative
approaches, NDC periods and clients (including an authorizing official), built through the public API.

Reuses the ledger world (`_ledger_world.World`) for the suite, the Secretariat token and the ledger
helpers; only the Party set-up differs (`ars: true`, one more role).
"""

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration._ledger_world import NDC_PERIOD, PartyActors, World, ledger_world

__all__ = ["ArsParty", "ArsWorld", "ars_world", "authorization_body"]


@dataclass
class ArsParty:
    actors: PartyActors
    official: dict[str, str]
    auditor: dict[str, str] = field(default_factory=dict)

    @property
    def party(self) -> str:
        return self.actors.party

    @property
    def holding(self) -> str:
        return self.actors.holding


def authorization_body(authorization_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid NDC-and-OIMP Table 2 record (Use or Cancellation), overridable field by field."""
    body: dict[str, Any] = {
        "authorization_id": authorization_id,
        "date": "2024-06-01",
        "ca_id": "CA0012",
        "purposes": "NDC and OIMP",
        "metric": "GHG",
        "sectors": ["Energy generation"],
        "activity_types": ["Solar"],
        "oimp": "CORSIA",
        "first_transfer_definition": "Use or Cancellation",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@dataclass
class ArsWorld:
    world: World
    parties: dict[str, ArsParty] = field(default_factory=dict)

    @property
    def gateway(self) -> httpx.AsyncClient:
        return self.world.gateway

    @property
    def admin(self) -> dict[str, str]:
        return self.world.admin

    async def add_party(self, party: str, *, ars: bool = True) -> ArsParty:
        gw, admin, suite = self.gateway, self.admin, self.world.suite
        registry_id = f"{party}01"
        answer = await gw.post(
            "/v1/party-sections", json={"party": party, "registry_id": registry_id, "ars": ars}, headers=admin
        )
        assert answer.status_code == 201, answer.text
        answer = await gw.post(f"/v1/party-sections/{party}/open", json={}, headers=admin)
        assert answer.status_code == 200, answer.text
        clients: dict[str, tuple[dict[str, str], str]] = {}
        for label, roles in (
            ("initiator", ["initiator"]),
            ("approver", ["approver"]),
            ("admin", ["party_admin"]),
            ("viewer", ["viewer"]),
            ("official", ["authorizing_official"]),
        ):
            made = await suite.new_client(name=f"{party} {label}", party=party, roles=roles)
            token = await suite.token(made["client_id"], made["client_secret"])
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
        self.world.parties[party] = actors
        made = self.parties[party] = ArsParty(actors=actors, official=clients["official"][0])
        return made

    async def issue(self, party: str, quantity: int, *, expect: int = 201, **fields: Any) -> dict[str, Any]:
        body = {
            "ca_id": "CA0012",
            "vintage": 2024,
            "quantity": quantity,
            "metric": "GHG",
            "mitigation_type": "Emission reductions",
            "sector": "Energy generation",
            "activity_type": "Solar",
            **fields,
        }
        answer = await self.gateway.post(
            f"/v1/ars/{party}/issuances", json=body, headers=self.parties[party].actors.initiator
        )
        assert answer.status_code == expect, answer.text
        return answer.json()

    async def authorize(self, party: str, authorization_id: str, *, expect: int = 201, **fields: Any) -> dict:
        answer = await self.gateway.post(
            f"/v1/ars/{party}/authorizations",
            json=authorization_body(authorization_id, **fields),
            headers=self.parties[party].official,
        )
        assert answer.status_code == expect, answer.text
        return answer.json()

    async def apply(
        self, party: str, authorization_id: str, quantity: int, *, vintage: int = 2024, expect: int = 201
    ) -> dict:
        answer = await self.gateway.post(
            f"/v1/ars/{party}/authorizations/{authorization_id}/apply",
            json={"ca_id": "CA0012", "vintage": vintage, "quantity": quantity},
            headers=self.parties[party].official,
        )
        assert answer.status_code == expect, answer.text
        return answer.json()

    async def first_transfer(
        self, party: str, body: dict[str, Any], *, key: str | None = None, expect: int | None = 201
    ) -> httpx.Response:
        headers = {**self.parties[party].actors.initiator, "Idempotency-Key": key or uuid.uuid4().hex}
        answer = await self.gateway.post(f"/v1/ars/{party}/first-transfers", json=body, headers=headers)
        if expect is not None:
            assert answer.status_code == expect, answer.text
        return answer

    async def blocks(self, party: str, **params: Any) -> list[dict[str, Any]]:
        answer = await self.gateway.get(
            f"/v1/ars/{party}/blocks",
            params={"limit": 500, **params},
            headers=self.parties[party].actors.viewer,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    async def holdings(self, party: str, account: str) -> list[dict[str, Any]]:
        answer = await self.gateway.get(
            f"/v1/accounts/{account}/holdings",
            params={"limit": 500},
            headers=self.parties[party].actors.viewer,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    async def events(self, after: int = 0) -> list[dict[str, Any]]:
        outbox = self.world.suite.services["ars"].state.outbox
        await outbox.relay()
        page = await outbox.read(after, limit=1000)
        return [item.model_dump(mode="json") for item in page.items]


@asynccontextmanager
async def ars_world(make_database: Callable[[str], str], data_dir: Path) -> AsyncIterator[ArsWorld]:
    async with ledger_world(make_database, data_dir) as world:
        yield ArsWorld(world)
