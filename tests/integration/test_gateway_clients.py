"""/v1/clients: create, list and revoke per role and Party scope, registry clients, secrets shown once."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from gateway.app import create_app
from gateway.config import Settings
from gateway.models import oauth_clients
from tests.support.apps import client_for
from tests.support.databases import DatabaseFactory

BOOTSTRAP_ID = "secretariat-bootstrap"
BOOTSTRAP_SECRET = "clients-test-bootstrap-secret-8c1e5d"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gateway_url(
    request: pytest.FixtureRequest,
    database_factory: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """One migrated gateway database per backend for the module; tests use Parties no other test uses."""
    if request.param == "postgres":
        url = database_factory.postgres("gateway")
    else:
        url = database_factory.sqlite("gateway", tmp_path_factory.mktemp("gateway-db"))
    yield url
    database_factory.drop(url)


@pytest.fixture
async def app(gateway_url: str, tmp_path: Path) -> AsyncIterator[object]:
    settings = Settings(
        environment="test",  # type: ignore[arg-type]
        data_dir=tmp_path,
        database_url=gateway_url,
        bootstrap_client_id=BOOTSTRAP_ID,
        bootstrap_client_secret=BOOTSTRAP_SECRET,  # type: ignore[arg-type]
    )
    gateway_app = create_app(settings)
    async with client_for(gateway_app) as client:
        gateway_app.state.test_client = client
        yield gateway_app


@pytest.fixture
def gateway(app: object) -> httpx.AsyncClient:
    return app.state.test_client  # type: ignore[attr-defined]


async def token(client: httpx.AsyncClient, client_id: str, secret: str) -> dict[str, str]:
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def secretariat(client: httpx.AsyncClient) -> dict[str, str]:
    return await token(client, BOOTSTRAP_ID, BOOTSTRAP_SECRET)


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> httpx.Response:
    return await client.post("/v1/clients", json=body, headers=headers)


async def created_headers(client: httpx.AsyncClient, **body: object) -> tuple[dict, dict[str, str]]:
    """Create a client as the Secretariat; its record and a token of it."""
    response = await create(client, await secretariat(client), **body)
    assert response.status_code == 201, response.text
    record = response.json()
    return record, await token(client, record["client_id"], record["client_secret"])


async def all_clients(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict]:
    items: list[dict] = []
    cursor = None
    for _ in range(100):
        params: dict[str, object] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/clients", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never ended")


async def test_secretariat_creates_a_client_and_sees_its_secret_once(gateway: httpx.AsyncClient, app) -> None:
    headers = await secretariat(gateway)
    response = await create(gateway, headers, name="Ghana administrator", party="GHA", roles=["party_admin"])
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    assert set(created) == {
        "client_id",
        "client_secret",
        "name",
        "party",
        "roles",
        "registry_id",
        "created_at",
    }
    assert (
        created["party"] == "GHA" and created["roles"] == ["party_admin"] and created["registry_id"] is None
    )
    assert len(created["client_secret"]) >= 43  # 32 random bytes, urlsafe base64

    listed = {item["client_id"]: item for item in await all_clients(gateway, headers)}
    assert created["client_id"] in listed and BOOTSTRAP_ID in listed
    assert "client_secret" not in listed[created["client_id"]]
    assert listed[created["client_id"]]["revoked_at"] is None
    listing = await gateway.get("/v1/clients", params={"limit": 500}, headers=headers)
    assert created["client_secret"] not in listing.text

    # Stored only as a keyed hash.
    async with app.state.db.read() as session:
        row = (
            await session.execute(
                select(oauth_clients).where(oauth_clients.c.client_id == created["client_id"])
            )
        ).one()
    assert row.secret_hash.startswith("hmac-sha256:") and created["client_secret"] not in row.secret_hash
    assert row.created_by == BOOTSTRAP_ID

    # The secret works, and a second client gets another one.
    await token(gateway, created["client_id"], created["client_secret"])
    other = (await create(gateway, headers, name="Ghana viewer", party="GHA", roles=["viewer"])).json()
    assert other["client_secret"] != created["client_secret"] and other["client_id"] != created["client_id"]


async def test_secretariat_may_create_secretariat_and_auditor_clients(gateway: httpx.AsyncClient) -> None:
    headers = await secretariat(gateway)
    for roles in (["secretariat_admin"], ["auditor"]):
        response = await create(gateway, headers, name="Secretariat", party=None, roles=roles)
        assert response.status_code == 201, response.text
        assert response.json()["party"] is None


async def test_party_admin_creates_clients_of_its_own_party_only(gateway: httpx.AsyncClient) -> None:
    _, admin = await created_headers(gateway, name="Kenya admin", party="KEN", roles=["party_admin"])
    response = await create(
        gateway, admin, name="Kenya initiator", party="KEN", roles=["initiator", "approver"]
    )
    assert response.status_code == 201, response.text

    refused = [
        {"name": "Uganda", "party": "UGA", "roles": ["initiator"]},
        {"name": "No Party", "party": None, "roles": ["auditor"]},
        {"name": "No Party", "party": None, "roles": ["secretariat_admin"]},
        {"name": "Auditor", "party": "KEN", "roles": ["auditor"]},
    ]
    for body in refused:
        response = await create(gateway, admin, **body)
        assert response.status_code == 403, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # A Party client can never hold secretariat_admin, whoever asks.
    response = await create(gateway, admin, name="x", party="KEN", roles=["secretariat_admin"])
    assert response.status_code == 422


@pytest.mark.parametrize("roles", [["viewer"], ["initiator"], ["authorizing_official"], ["approver"]])
async def test_other_roles_may_not_manage_clients(gateway: httpx.AsyncClient, roles: list[str]) -> None:
    record, headers = await created_headers(gateway, name="Peru user", party="PER", roles=roles)
    assert (await create(gateway, headers, name="x", party="PER", roles=["viewer"])).status_code == 403
    assert (await gateway.get("/v1/clients", headers=headers)).status_code == 403
    revoke = await gateway.post(f"/v1/clients/{record['client_id']}/revoke", headers=headers)
    assert revoke.status_code == 403


async def test_auditor_and_registry_may_not_manage_clients(gateway: httpx.AsyncClient) -> None:
    _, auditor = await created_headers(gateway, name="Expert", party=None, roles=["auditor"])
    assert (await gateway.get("/v1/clients", headers=auditor)).status_code == 403
    _, registry = await created_headers(
        gateway, name="Chile registry", party="CHL", roles=["registry"], registry_id="CHL01"
    )
    assert (await gateway.get("/v1/clients", headers=registry)).status_code == 403


async def test_no_token_is_a_401_problem(gateway: httpx.AsyncClient) -> None:
    for response in (
        await gateway.get("/v1/clients"),
        await gateway.post("/v1/clients", json={"name": "x", "party": "GHA", "roles": ["viewer"]}),
        await gateway.post("/v1/clients/anything/revoke"),
    ):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_party_admin_lists_only_its_party(gateway: httpx.AsyncClient) -> None:
    _, admin = await created_headers(gateway, name="Norway admin", party="NOR", roles=["party_admin"])
    await created_headers(gateway, name="Norway viewer", party="NOR", roles=["viewer"])
    await created_headers(gateway, name="Sweden viewer", party="SWE", roles=["viewer"])
    seen = await all_clients(gateway, admin)
    assert {item["party"] for item in seen} == {"NOR"}
    assert sorted(item["name"] for item in seen) == ["Norway admin", "Norway viewer"]
    everything = await all_clients(gateway, await secretariat(gateway))
    assert {"NOR", "SWE", None} <= {item["party"] for item in everything}
    ids = [item["client_id"] for item in everything]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


async def test_a_bad_cursor_is_a_400_problem(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/v1/clients", params={"cursor": "%%%"}, headers=await secretariat(gateway))
    assert response.status_code == 400 and response.json()["type"].endswith("/invalid-cursor")


async def test_revocation_scope_and_states(gateway: httpx.AsyncClient) -> None:
    _, admin = await created_headers(gateway, name="Chad admin", party="TCD", roles=["party_admin"])
    own, _ = await created_headers(gateway, name="Chad viewer", party="TCD", roles=["viewer"])
    foreign, _ = await created_headers(gateway, name="Niger viewer", party="NER", roles=["viewer"])

    response = await gateway.post(f"/v1/clients/{own['client_id']}/revoke", headers=admin)
    assert response.status_code == 200
    revoked = response.json()
    assert revoked["client_id"] == own["client_id"] and revoked["revoked_at"] is not None
    assert "client_secret" not in revoked

    again = await gateway.post(f"/v1/clients/{own['client_id']}/revoke", headers=admin)
    assert again.status_code == 409
    assert again.json()["type"].endswith("/client-already-revoked")

    # Another Party's client, a Secretariat client and an unknown id look the same: 404.
    for client_id in (foreign["client_id"], BOOTSTRAP_ID, "c_0000000000000000"):
        response = await gateway.post(f"/v1/clients/{client_id}/revoke", headers=admin)
        assert response.status_code == 404, client_id
        assert response.json()["type"].endswith("/client-not-found")

    response = await gateway.post(
        f"/v1/clients/{foreign['client_id']}/revoke", headers=await secretariat(gateway)
    )
    assert response.status_code == 200
    listed = {item["client_id"]: item for item in await all_clients(gateway, await secretariat(gateway))}
    assert listed[foreign["client_id"]]["revoked_at"] is not None


async def test_registry_clients(gateway: httpx.AsyncClient) -> None:
    headers = await secretariat(gateway)
    response = await create(
        gateway, headers, name="Swiss registry", party="CHE", roles=["registry"], registry_id="CHE01"
    )
    assert response.status_code == 201, response.text
    assert response.json()["registry_id"] == "CHE01"

    refused = [
        {"party": "CHE", "roles": ["registry"]},  # registry_id required
        {"party": "CHE", "roles": ["initiator"], "registry_id": "CHE01"},  # only with the registry role
        {"party": "CHE", "roles": ["registry", "initiator"], "registry_id": "CHE01"},  # registry stands alone
        {"party": "CHE", "roles": ["registry"], "registry_id": "GHA01"},  # another Party's registry
        {"party": "CHE", "roles": ["registry"], "registry_id": "CHE1"},  # not AAA##
        {"party": "CHE", "roles": ["registry"], "registry_id": "che01"},
        {"party": None, "roles": ["registry"], "registry_id": "CHE01"},  # a registry belongs to a Party
    ]
    for body in refused:
        response = await create(gateway, headers, name="bad", **body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"


async def test_party_admin_may_create_its_party_registry_client(gateway: httpx.AsyncClient) -> None:
    _, admin = await created_headers(gateway, name="Japan admin", party="JPN", roles=["party_admin"])
    response = await create(
        gateway, admin, name="Japan registry", party="JPN", roles=["registry"], registry_id="JPN01"
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "party": "GHA", "roles": ["viewer"]},
        {"name": "x", "party": "XXX", "roles": ["viewer"]},
        {"name": "x", "party": "GHA", "roles": []},
        {"name": "x", "party": "GHA", "roles": ["viewer", "viewer"]},
        {"name": "x", "party": "GHA", "roles": ["superuser"]},
        {"name": "x", "party": "GHA", "roles": ["viewer"], "client_secret": "chosen"},
    ],
)
async def test_invalid_bodies_are_422_problems(gateway: httpx.AsyncClient, body: dict) -> None:
    response = await create(gateway, await secretariat(gateway), **body)
    assert response.status_code == 422
    assert response.json()["type"].endswith("/validation-error")
