"""Seed a running suite over HTTP for ledger work: Party sections, clients, accounts, CAs, first transfers.

Used by the crash-safety test (tests/e2e/test_transactions_crash.py) and `python -m bench.ledger`. Everything
public goes through the gateway as a Secretariat admin and each Party's own clients would send it; first
transfers go to the transactions service's `/internal/v1/first-transfers` as `svc-ars` (the gateway never
routes `/internal`), with the service client's secret from the suite's environment.
"""

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["RemoteParty", "RemoteWorld", "token"]

NDC_PERIOD = {"first_year": 2021, "last_year": 2030}


async def token(client: httpx.AsyncClient, client_id: str, secret: str) -> dict[str, str]:
    """Bearer headers of a client-credentials token from the gateway at `client`'s base URL."""
    answer = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _created(answer: httpx.Response, *statuses: int) -> Any:
    if answer.status_code not in (statuses or (200, 201)):
        raise AssertionError(
            f"{answer.request.method} {answer.request.url.path}: {answer.status_code} {answer.text}"
        )
    return answer.json() if answer.content else None


@dataclass
class RemoteParty:
    party: str
    registry_id: str
    admin: dict[str, str]
    initiator: dict[str, str]
    viewer: dict[str, str]
    initiator_id: str
    #: Every holding account, the default one first.
    holdings: list[str] = field(default_factory=list)
    accounts: dict[str, str] = field(default_factory=dict)

    @property
    def holding(self) -> str:
        return self.holdings[0]


@dataclass
class RemoteWorld:
    """`gateway` and `transactions` are clients on the suite's base URLs; `env` is the suite's environment."""

    gateway: httpx.AsyncClient
    transactions: httpx.AsyncClient
    env: dict[str, str]
    admin: dict[str, str] = field(default_factory=dict)
    ars: dict[str, str] = field(default_factory=dict)
    parties: dict[str, RemoteParty] = field(default_factory=dict)
    _serials: dict[tuple[str, str], itertools.count] = field(default_factory=dict)

    async def login(self) -> None:
        self.admin = await token(
            self.gateway,
            self.env["REGISTRY_BOOTSTRAP_CLIENT_ID"],
            self.env["REGISTRY_BOOTSTRAP_CLIENT_SECRET"],
        )
        self.ars = await token(self.gateway, "svc-ars", self.env["REGISTRY_SERVICE_CLIENT_SECRET"])

    async def client(self, name: str, party: str | None, roles: list[str]) -> tuple[dict[str, str], str]:
        made = _created(
            await self.gateway.post(
                "/v1/clients", json={"name": name, "party": party, "roles": roles}, headers=self.admin
            )
        )
        return await token(self.gateway, made["client_id"], made["client_secret"]), made["client_id"]

    async def add_party(self, party: str, *, extra_holdings: int = 0, concurrency: int = 8) -> RemoteParty:
        """An open section with its default accounts, NDC period, three clients and `extra_holdings` more
        holding accounts (created `concurrency` at a time)."""
        registry_id = f"{party}01"
        _created(
            await self.gateway.post(
                "/v1/party-sections", json={"party": party, "registry_id": registry_id}, headers=self.admin
            )
        )
        _created(await self.gateway.post(f"/v1/party-sections/{party}/open", json={}, headers=self.admin))
        admin, _ = await self.client(f"{party} admin", party, ["party_admin"])
        initiator, initiator_id = await self.client(f"{party} initiator", party, ["initiator"])
        viewer, _ = await self.client(f"{party} viewer", party, ["viewer"])
        actors = RemoteParty(party, registry_id, admin, initiator, viewer, initiator_id)
        _created(
            await self.gateway.put(
                f"/v1/party-sections/{party}/ndc-periods", json=[NDC_PERIOD], headers=admin
            ),
            200,
            204,
        )
        listed = _created(await self.gateway.get(f"/v1/party-sections/{party}/accounts", headers=admin))
        for account in listed["items"] if isinstance(listed, dict) else listed:
            actors.accounts.setdefault(account["type"], account["account_id"])
        actors.holdings.append(actors.accounts["holding"])
        gate = asyncio.Semaphore(concurrency)

        async def open_one(index: int) -> str:
            async with gate:
                made = _created(
                    await self.gateway.post(
                        f"/v1/party-sections/{party}/accounts",
                        json={"type": "holding", "name": f"Holding {index}"},
                        headers=admin,
                    )
                )
                return str(made["account_id"])

        actors.holdings += await asyncio.gather(*(open_one(i) for i in range(extra_holdings)))
        self.parties[party] = actors
        return actors

    async def add_ca(self, ca_id: str, participants: list[str]) -> None:
        _created(
            await self.gateway.post(
                "/v1/cooperative-approaches",
                json={"ca_id": ca_id, "name": f"Approach {ca_id}", "participants": participants},
                headers=self.admin,
            )
        )

    def serials(self, ca_id: str, registry_id: str, quantity: int) -> tuple[int, int]:
        counter = self._serials.setdefault((ca_id, registry_id), itertools.count(1))
        first = next(counter)
        for _ in range(quantity - 1):
            next(counter)
        return first, first + quantity - 1

    async def first_transfer(
        self, party: str, ca_id: str, quantity: int, to_account: str, *, purposes: str = "NDC"
    ) -> dict[str, Any]:
        """An NDC first international transfer of `quantity` new serials to another Party's account."""
        registry_id = f"{party}01"
        first, last = self.serials(ca_id, registry_id, quantity)
        body = {
            "operation_id": f"op-{uuid.uuid4().hex}",
            "first_transferring_party": party,
            "authorization_id": f"{party}-AUTH-1",
            "authorization_version": 1,
            "purposes": purposes,
            "first_transfer_definition": "First international transfer",
            "to_account": to_account,
            "blocks": [
                {
                    "ca_id": ca_id,
                    "origin_registry_id": registry_id,
                    "first": first,
                    "last": last,
                    "vintage": 2024,
                    "mitigation_type": "Emission reductions",
                    "sector": "Energy",
                    "activity_type": "Solar",
                }
            ],
        }
        answer = await self.transactions.post("/internal/v1/first-transfers", json=body, headers=self.ars)
        return dict(_created(answer, 201))

    async def invariants(self) -> dict[str, Any]:
        return dict(_created(await self.gateway.get("/v1/admin/invariants", headers=self.admin), 200))
