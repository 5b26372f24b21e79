"""The whole suite in one process: the gateway in front of the four services, each on its own database.

The gateway reaches each service through `httpx.ASGITransport`, so a request takes the real path
(gateway token check, routing, header allow-list, the service's own token check) without sockets.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import httpx
from fastapi import FastAPI

from gateway.app import create_app as create_gateway
from gateway.config import Settings as GatewaySettings
from kit.auth import TokenVerifier
from kit.jwt import KeySet, SigningKey
from scripts.processes import SERVICES
from tests.support.apps import lifespan

BOOTSTRAP_ID = "secretariat-bootstrap"
BOOTSTRAP_SECRET = "in-process-suite-bootstrap-secret-0123456789"
SERVICE_SECRET = "in-process-suite-service-secret-9876543210"


@dataclass
class InProcessSuite:
    gateway: FastAPI
    services: dict[str, FastAPI]
    client: httpx.AsyncClient
    _tokens: dict[str, str] = field(default_factory=dict)

    async def token(self, client_id: str = BOOTSTRAP_ID, secret: str = BOOTSTRAP_SECRET) -> str:
        response = await self.client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    async def auth(self, client_id: str = BOOTSTRAP_ID, secret: str = BOOTSTRAP_SECRET) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(client_id, secret)}"}

    async def new_client(self, *, name: str, party: str | None, roles: list[str]) -> dict:
        """A client created by the bootstrap Secretariat admin (its secret is in the answer)."""
        response = await self.client.post(
            "/v1/clients", json={"name": name, "party": party, "roles": roles}, headers=await self.auth()
        )
        assert response.status_code == 201, response.text
        return response.json()


@asynccontextmanager
async def inprocess_suite(
    make_database: Callable[[str], str], data_dir: Path
) -> AsyncIterator[InProcessSuite]:
    signing_key = SigningKey.generate()
    gateway_settings = GatewaySettings(
        database_url=make_database("gateway"),
        data_dir=data_dir,
        bootstrap_client_id=BOOTSTRAP_ID,
        bootstrap_client_secret=BOOTSTRAP_SECRET,
        signing_key=signing_key.private_pem.decode(),
        service_client_secret=SERVICE_SECRET,
    )
    services: dict[str, FastAPI] = {}
    transports: dict[str, httpx.AsyncBaseTransport] = {}
    jwks = {"keys": [signing_key.public_jwk]}
    for process in SERVICES:
        settings = import_module(f"{process.package}.config").Settings(
            database_url=make_database(process.package), service_client_secret=SERVICE_SECRET
        )
        verifier = TokenVerifier(
            issuer=settings.token_issuer, audience=settings.token_audience, keys=KeySet(jwks)
        )
        # Every app gets the same mapping: peers and the gateway's token endpoint, all in-process.
        services[process.name] = import_module(f"{process.package}.app").create_app(
            settings, token_verifier=verifier, peer_transports=transports
        )
        transports[process.name] = httpx.ASGITransport(app=services[process.name])
    gateway = create_gateway(gateway_settings, upstream_transports=dict(transports))
    transports["gateway"] = httpx.ASGITransport(app=gateway)
    async with AsyncExitStack() as stack:
        for app in services.values():
            await stack.enter_async_context(lifespan(app))
        await stack.enter_async_context(lifespan(gateway))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway")
        )
        yield InProcessSuite(gateway=gateway, services=services, client=client)
