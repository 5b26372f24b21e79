"""Registry clients end to end (INTERREGISTRY §2.2): the gateway issues a `registry_id` claim and a service's
token verifier, keyed from the gateway's published JWKS, turns it into `Principal.registry_id`.

Whether the registry record exists is the transactions service's check on every protocol call (1004); the
gateway checks the Party, role and format only, which these tests pin down.
"""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from contracts.roles import Role
from gateway.app import create_app
from gateway.config import Settings
from kit.auth import TokenVerifier
from kit.jwt import KeySet
from tests.support.apps import client_for
from tests.support.databases import DatabaseFactory

BOOTSTRAP_ID = "secretariat-bootstrap"
BOOTSTRAP_SECRET = "registry-clients-bootstrap-secret-71d0aa"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gateway_url(
    request: pytest.FixtureRequest,
    database_factory: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    if request.param == "postgres":
        url = database_factory.postgres("gateway")
    else:
        url = database_factory.sqlite("gateway", tmp_path_factory.mktemp("gateway-db"))
    yield url
    database_factory.drop(url)


@pytest.fixture
def settings(gateway_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",  # type: ignore[arg-type]
        data_dir=tmp_path,
        database_url=gateway_url,
        bootstrap_client_id=BOOTSTRAP_ID,
        bootstrap_client_secret=BOOTSTRAP_SECRET,  # type: ignore[arg-type]
    )


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings)) as client:
        yield client


async def access_token(gateway: httpx.AsyncClient, client_id: str, secret: str) -> str:
    response = await gateway.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def secretariat(gateway: httpx.AsyncClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {await access_token(gateway, BOOTSTRAP_ID, BOOTSTRAP_SECRET)}"}


async def new_client(gateway: httpx.AsyncClient, headers: dict[str, str], **body: object) -> httpx.Response:
    return await gateway.post("/v1/clients", json={"name": "test client"} | body, headers=headers)


async def service_verifier(gateway: httpx.AsyncClient, settings: Settings) -> TokenVerifier:
    """What a service builds: a verifier over the gateway's published keys."""
    jwks = (await gateway.get("/.well-known/jwks.json")).json()
    return TokenVerifier(issuer=settings.token_issuer, audience=settings.token_audience, keys=KeySet(jwks))


async def test_a_registry_principal_carries_its_registry_id(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    created = await new_client(
        gateway, await secretariat(gateway), party="NZL", roles=["registry"], registry_id="NZL01"
    )
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["registry_id"] == "NZL01" and record["roles"] == ["registry"]

    token = await access_token(gateway, record["client_id"], record["client_secret"])
    principal = await (await service_verifier(gateway, settings)).verify(token)
    assert principal.registry_id == "NZL01"
    assert principal.party == "NZL" and principal.roles == frozenset({Role.REGISTRY})
    assert principal.client_id == record["client_id"]

    listed = await gateway.get("/v1/clients", params={"limit": 500}, headers=await secretariat(gateway))
    assert {c["client_id"]: c["registry_id"] for c in listed.json()["items"]}[record["client_id"]] == "NZL01"


async def test_other_principals_have_no_registry_id(gateway: httpx.AsyncClient, settings: Settings) -> None:
    created = (await new_client(gateway, await secretariat(gateway), party="NZL", roles=["initiator"])).json()
    token = await access_token(gateway, created["client_id"], created["client_secret"])
    assert (await (await service_verifier(gateway, settings)).verify(token)).registry_id is None
    bootstrap = await access_token(gateway, BOOTSTRAP_ID, BOOTSTRAP_SECRET)
    assert (await (await service_verifier(gateway, settings)).verify(bootstrap)).registry_id is None


@pytest.mark.parametrize(
    "body",
    [
        {"party": "URY", "roles": ["registry"]},
        {"party": "URY", "roles": ["registry"], "registry_id": None},
        {"party": "URY", "roles": ["viewer"], "registry_id": "URY01"},
        {"party": "URY", "roles": ["party_admin"], "registry_id": "URY01"},
        {"party": "URY", "roles": ["registry", "viewer"], "registry_id": "URY01"},
        {"party": "URY", "roles": ["registry"], "registry_id": "URY001"},
        {"party": "URY", "roles": ["registry"], "registry_id": "UR01"},
        {"party": "URY", "roles": ["registry"], "registry_id": "URYAB"},
        {"party": "URY", "roles": ["registry"], "registry_id": "ZZZ01"},  # not a Party code
        {"party": "URY", "roles": ["registry"], "registry_id": "PRY01"},  # another Party's registry
        {"party": None, "roles": ["auditor"], "registry_id": "URY01"},
    ],
)
async def test_refused_registry_id_combinations(gateway: httpx.AsyncClient, body: dict[str, object]) -> None:
    response = await new_client(gateway, await secretariat(gateway), **body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_party_admin_creates_registry_clients_of_its_own_party_only(
    gateway: httpx.AsyncClient,
) -> None:
    admin_record = (
        await new_client(gateway, await secretariat(gateway), party="ISL", roles=["party_admin"])
    ).json()
    admin = {
        "Authorization": f"Bearer {await access_token(gateway, admin_record['client_id'], admin_record['client_secret'])}"
    }
    own = await new_client(gateway, admin, party="ISL", roles=["registry"], registry_id="ISL02")
    assert own.status_code == 201 and own.json()["registry_id"] == "ISL02"
    foreign = await new_client(gateway, admin, party="NOR", roles=["registry"], registry_id="NOR01")
    assert foreign.status_code == 403


async def test_a_revoked_registry_client_gets_no_token(gateway: httpx.AsyncClient) -> None:
    headers = await secretariat(gateway)
    record = (await new_client(gateway, headers, party="FJI", roles=["registry"], registry_id="FJI01")).json()
    await access_token(gateway, record["client_id"], record["client_secret"])
    assert (
        await gateway.post(f"/v1/clients/{record['client_id']}/revoke", headers=headers)
    ).status_code == 200
    refused = await gateway.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(record["client_id"], record["client_secret"]),
    )
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
