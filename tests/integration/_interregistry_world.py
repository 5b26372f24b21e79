"""A world for inter-registry tests: the in-process suite with connected registries, each with its own
`registry` client (token through the gateway) and signing key, and helpers that build, sign and POST IRX
envelopes the way a national registry does; `transfer_world` adds the ledger world's IR Parties and
accounts for transfers both ways (§5, §6).
"""

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import func, select

from kit.jws import sign
from kit.jwt import SigningKey
from services.transactions.interregistry.models import irx_message, registry
from tests.support.suite import InProcessSuite, inprocess_suite


def wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hello_body(versions: list[str] | None = None, registry_time: datetime | None = None) -> dict[str, Any]:
    return {
        "supported_versions": versions or ["1.0"],
        "software": {"name": "test-registry", "version": "0.1"},
        "registry_time": wire_time(registry_time or datetime.now(UTC)),
    }


@dataclass
class Registry:
    """A connected national registry as the tests drive it."""

    world: "World"
    registry_id: str
    party: str
    key: SigningKey
    headers: dict[str, str]
    client_id: str
    env: str = "sandbox"
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def next_seq(self) -> int:
        return next(self._seq)

    def envelope(
        self, message_type: str, body: dict[str, Any], *, seq: int | None = None, **changes: Any
    ) -> dict:
        document: dict[str, Any] = {
            "protocol": "irx",
            "version": "1.0",
            "env": self.env,
            "message_id": str(uuid.uuid4()),
            "type": message_type,
            "from": self.registry_id,
            "to": "IR",
            "sent_at": wire_time(datetime.now(UTC)),
            "body": body,
        }
        if message_type != "hello":
            document["seq"] = seq if seq is not None else self.next_seq()
        document.update(changes)
        return document

    async def post(
        self,
        path: str,
        document: dict[str, Any],
        *,
        signed: bool = True,
        key: SigningKey | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        sent = {**self.headers, "Idempotency-Key": idempotency_key or str(document.get("message_id"))}
        if signature is not None:
            sent["IRX-Signature"] = signature
        elif signed:
            sent["IRX-Signature"] = sign(document, key or self.key)
        if headers is not None:
            sent.update(headers)
        return await self.world.gateway.post(f"/v1/interregistry/{path}", json=document, headers=sent)

    async def hello(self, **kwargs: Any) -> httpx.Response:
        return await self.post("hello", self.envelope("hello", hello_body()), **kwargs)

    async def ack(self, up_to: int, **kwargs: Any) -> httpx.Response:
        return await self.post("inbox/ack", self.envelope("inbox.ack", {"up_to": up_to}), **kwargs)

    async def inbox(self, after: int = 0, limit: int = 100) -> httpx.Response:
        return await self.world.gateway.get(
            "/v1/interregistry/inbox", params={"after": after, "limit": limit}, headers=self.headers
        )


@dataclass
class World:
    suite: InProcessSuite
    admin: dict[str, str]
    registries: dict[str, Registry] = field(default_factory=dict)

    @property
    def gateway(self) -> httpx.AsyncClient:
        return self.suite.client

    @property
    def service(self) -> Any:
        return self.suite.services["transactions"].state.interregistry

    async def token_headers(self, client: dict[str, Any]) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {await self.suite.token(client['client_id'], client['client_secret'])}"
        }

    async def create_registry(self, registry_id: str, *, expect: int = 201, **changes: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "registry_id": registry_id,
            "party": registry_id[:3],
            "name": f"National registry {registry_id}",
            "environment": "sandbox",
            "signing": "required",
            "response_timeout_s": 300,
            "contacts": [{"name": "Ops", "email": "ops@example.org"}],
        }
        body.update(changes)
        answer = await self.gateway.post("/v1/interregistry/registries", json=body, headers=self.admin)
        assert answer.status_code == expect, answer.text
        return answer

    async def lifecycle(self, registry_id: str, action: str, body: dict | None = None) -> httpx.Response:
        return await self.gateway.post(
            f"/v1/interregistry/registries/{registry_id}/{action}", json=body or {}, headers=self.admin
        )

    async def connect(self, registry_id: str, *, status: str = "active", **changes: Any) -> Registry:
        """A registry record (sandbox, inline key), moved to `status`, with a `registry` client."""
        key = SigningKey.generate().with_kid(f"{registry_id.lower()}-2026-01")
        changes.setdefault("jwks", {"keys": [key.public_jwk]})
        await self.create_registry(registry_id, **changes)
        path = {"onboarding": [], "testing": ["test"], "active": ["test", "activate"]}.get(status)
        if path is None:
            path = {"suspended": ["test", "activate", "suspend"], "disconnected": ["disconnect"]}[status]
        for action in path:
            answer = await self.lifecycle(registry_id, action)
            assert answer.status_code == 200, answer.text
        client = await self.new_registry_client(registry_id)
        made = Registry(
            world=self,
            registry_id=registry_id,
            party=registry_id[:3],
            key=key,
            headers=await self.token_headers(client),
            client_id=client["client_id"],
        )
        self.registries[registry_id] = made
        return made

    async def new_registry_client(self, registry_id: str, *, listed: bool = True) -> dict[str, Any]:
        """A `registry` client, listed on the registry's record when that exists (§2.2: else 1004)."""
        answer = await self.gateway.post(
            "/v1/clients",
            json={
                "name": f"{registry_id} registry",
                "party": registry_id[:3],
                "roles": ["registry"],
                "registry_id": registry_id,
            },
            headers=self.admin,
        )
        assert answer.status_code == 201, answer.text
        if listed:
            path = f"/v1/interregistry/registries/{registry_id}/clients/{answer.json()['client_id']}"
            put = await self.gateway.put(path, headers=self.admin)
            assert put.status_code in (200, 404), put.text
        return answer.json()

    async def client_headers(self, *, party: str | None, roles: list[str]) -> dict[str, str]:
        made = await self.suite.new_client(name=f"{party} {'+'.join(roles)}", party=party, roles=roles)
        return await self.token_headers(made)

    async def counts(self, registry_id: str) -> tuple[int, int]:
        """(messages stored for the registry, its last_seq_in): what a refusal must leave unchanged."""
        db = self.suite.services["transactions"].state.db
        async with db.read() as session:
            messages = (
                await session.execute(
                    select(func.count())
                    .select_from(irx_message)
                    .where(irx_message.c.registry_id == registry_id)
                )
            ).scalar_one()
            last_seq = (
                await session.execute(
                    select(registry.c.last_seq_in).where(registry.c.registry_id == registry_id)
                )
            ).scalar_one()
        return int(messages), int(last_seq)


@asynccontextmanager
async def interregistry_world(
    make_database: Callable[[str], str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    # The IR's development signing key is generated under the data directory: keep it in the test's.
    monkeypatch.setenv("REGISTRY_DATA_DIR", str(data_dir))
    async with inprocess_suite(make_database, data_dir) as suite:
        yield World(suite=suite, admin=await suite.auth())


def past(seconds: float) -> str:
    return wire_time(datetime.now(UTC) - timedelta(seconds=seconds))


def future(seconds: float) -> str:
    return wire_time(datetime.now(UTC) + timedelta(seconds=seconds))


# ---- transfers (§5, §6): the ledger world and the registries in one suite ----------------------------------


@dataclass
class TransferWorld:
    """IR Parties with accounts (the ledger world) and connected registries (the IRX world), one suite."""

    ledger: "LedgerWorld"
    irx: World

    @property
    def gateway(self) -> httpx.AsyncClient:
        return self.irx.gateway

    @property
    def transfers(self) -> Any:
        return self.irx.suite.services["transactions"].state.transfers

    async def ghana_holds_units(self, participants: list[str], *connect: str) -> None:
        """The usual start: GHA's section, CA0012 with `participants`, 100 units GHA first transferred into
        its own holding account (NDC and OIMP, at Authorisation), and the registries `connect` connected."""
        gha = await self.ledger.add_party("GHA")
        await self.ledger.add_ca("CA0012", participants)
        await self.ledger.first_transfer(
            "GHA", "CA0012", 100, to_account=gha.holding, purposes="NDC and OIMP", definition="Authorisation"
        )
        for registry_id in connect:
            await self.irx.connect(registry_id)

    async def send(
        self,
        party: str,
        registry_id: str,
        quantity: int | None = None,
        *,
        to_account: str = "CH-100-77",
        key: str | None = None,
        **body: Any,
    ) -> httpx.Response:
        """`POST /v1/transactions` with `to_registry` from the Party's holding account."""
        actors = self.ledger.parties[party]
        document: dict[str, Any] = {
            "type": "transfer",
            "from_account": actors.holding,
            "to_registry": registry_id,
            "to_account": to_account,
            **body,
        }
        if quantity is not None:
            document["quantity"] = quantity
        return await self.ledger.transact(actors, document, key=key)

    async def inbox_items(self, registry: Registry, after: int = 0) -> list[dict[str, Any]]:
        answer = await registry.inbox(after=after, limit=1000)
        assert answer.status_code == 200, answer.text
        return [item["message"] for item in answer.json()["items"]]

    async def respond(
        self, registry: Registry, transfer_id: str, decision: str = "accept", codes: list[dict] | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"transfer_id": transfer_id, "decision": decision}
        if codes is not None:
            body["codes"] = codes
        return await registry.post(
            f"transfers/{transfer_id}/response", registry.envelope("transfer.response", body)
        )

    async def propose(self, registry: Registry, body: dict[str, Any]) -> httpx.Response:
        return await registry.post("transfers", registry.envelope("transfer.proposal", body))

    async def cancel(self, registry: Registry, transfer_id: str) -> httpx.Response:
        return await registry.post(
            f"transfers/{transfer_id}/cancel",
            registry.envelope("transfer.cancel", {"transfer_id": transfer_id}),
        )

    async def invariants_ok(self) -> None:
        report = await self.ledger.invariants()
        assert report["ok"], report["violations"]


def transfer_block(
    ca_id: str,
    origin: str,
    first: int,
    last: int,
    *,
    party: str | None = None,
    vintage: int = 2024,
    **changes: Any,
) -> dict[str, Any]:
    """A TransferBlock document (§5) for serials `first..last` of (CA, origin registry)."""
    from contracts.identifiers import format_unique_id

    party = party or origin[:3]
    block: dict[str, Any] = {
        "unique_id_first": format_unique_id(ca_id, origin, party, first, vintage),
        "unique_id_last": format_unique_id(ca_id, origin, party, last, vintage),
        "ca_id": ca_id,
        "origin_registry_id": origin,
        "first_transferring_party": party,
        "first": first,
        "last": last,
        "quantity": last - first + 1,
        "vintage": vintage,
        "metric": "GHG",
        "applicable_gwp_values": None,
        "applicable_non_ghg_metric": None,
        "conversion_factor": None,
        "mitigation_type": "Emission reductions",
        "sector": "Energy",
        "activity_type": "Solar",
        "authorization_id": f"{party}-AUTH-1",
        "authorization_version": 1,
        "purposes": "NDC",
        "authorized_parties": None,
        "first_transfer_definition": "First international transfer",
        "first_transferred": True,
        "underlying": None,
    }
    block.update(changes)
    return block


def proposal(
    registry: Registry,
    name: str,
    to_party: str,
    to_account: str,
    blocks: list[dict[str, Any]],
    **changes: Any,
) -> dict[str, Any]:
    """A `transfer.proposal` body from `registry` into an IR account; its transfer id is `<registry>-<name>`."""
    body: dict[str, Any] = {
        "transfer_id": f"{registry.registry_id}-{name}",
        "sender_action": "transfer",
        "transferring_party": registry.party,
        "from_registry": registry.registry_id,
        "from_account": "CH-100-77",
        "acquiring_party": to_party,
        "to_registry": f"{to_party}01",
        "to_account": to_account,
        "quantity": sum(b["quantity"] for b in blocks),
        "blocks": blocks,
    }
    body.update(changes)
    return body


@asynccontextmanager
async def transfer_world(
    make_database: Callable[[str], str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TransferWorld]:
    from tests.integration._ledger_world import World as LedgerWorldType
    from tests.support.suite import SERVICE_SECRET

    monkeypatch.setenv("REGISTRY_DATA_DIR", str(data_dir))
    async with inprocess_suite(make_database, data_dir) as suite:
        admin = await suite.auth()
        ars = await suite.auth("svc-ars", SERVICE_SECRET)
        transport = httpx.ASGITransport(app=suite.services["transactions"])
        async with httpx.AsyncClient(transport=transport, base_url="http://transactions") as client:
            ledger = LedgerWorldType(suite=suite, admin=admin, ars=ars, ledger=client)
            yield TransferWorld(ledger=ledger, irx=World(suite=suite, admin=admin))


if TYPE_CHECKING:
    from tests.integration._ledger_world import World as LedgerWorld
