"""The whole path in one process: token from the gateway, then GET /v1/parties through it (API.md)."""

import pytest

from tests.support.suite import InProcessSuite, inprocess_suite


@pytest.fixture
async def suite(make_database, tmp_path):
    async with inprocess_suite(make_database, tmp_path) as running:
        yield running


async def test_token_then_parties_through_the_gateway(suite: InProcessSuite) -> None:
    token = await suite.token()
    response = await suite.client.get("/v1/parties", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "next_cursor"}
    names = {party["code"]: party["name"] for party in body["items"]}
    assert names["GHA"] == "Ghana" and names["EUE"] == "European Union"


async def test_no_token_is_a_401_problem_at_the_gateway(suite: InProcessSuite) -> None:
    response = await suite.client.get("/v1/parties")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 401


async def test_a_party_client_made_by_the_secretariat_reads_parties(suite: InProcessSuite) -> None:
    created = await suite.new_client(name="Ghana viewer", party="GHA", roles=["viewer"])
    headers = await suite.auth(created["client_id"], created["client_secret"])
    response = await suite.client.get("/v1/parties", params={"limit": 5}, headers=headers)
    assert response.status_code == 200
    assert len(response.json()["items"]) == 5 and response.json()["next_cursor"]


async def test_a_revoked_client_is_refused_through_the_whole_path(suite: InProcessSuite) -> None:
    created = await suite.new_client(name="short-lived", party="CHE", roles=["viewer"])
    headers = await suite.auth(created["client_id"], created["client_secret"])
    assert (await suite.client.get("/v1/parties", headers=headers)).status_code == 200
    revoke = await suite.client.post(f"/v1/clients/{created['client_id']}/revoke", headers=await suite.auth())
    assert revoke.status_code == 200
    assert (await suite.client.get("/v1/parties", headers=headers)).status_code == 401


async def test_services_refuse_tokens_the_gateway_did_not_sign(suite: InProcessSuite, tokens) -> None:
    # Defence in depth: a service reached without the gateway still verifies the signature itself.
    import httpx

    forged = tokens.headers(party=None, roles=["secretariat_admin"])
    transport = httpx.ASGITransport(app=suite.services["party_sections"])
    async with httpx.AsyncClient(transport=transport, base_url="http://party-sections") as direct:
        assert (await direct.get("/v1/parties", headers=forged)).status_code == 401
        genuine = {"Authorization": f"Bearer {await suite.token()}"}
        assert (await direct.get("/v1/parties", headers=genuine)).status_code == 200


async def test_the_gateway_openapi_is_the_public_contract(suite: InProcessSuite) -> None:
    document = (await suite.client.get("/openapi.json")).json()
    assert "/oauth2/token" in document["paths"]
    assert "/v1/clients" in document["paths"]
    assert "/v1/parties" in document["paths"]  # merged from party_sections
    assert not any(path.startswith("/internal") for path in document["paths"])


async def test_services_call_each_other_with_their_own_service_token(suite: InProcessSuite) -> None:
    # transactions reads party_sections' feed the way the read models will: as svc-transactions.
    peers = suite.services["transactions"].state.peers
    response = await peers.request("party_sections", "GET", "/internal/v1/events", params={"after": 0})
    assert response.status_code == 200
    assert response.json()["last_position"] >= 0
    # A Party's token is refused there: the feed carries every Party's data.
    viewer = await suite.new_client(name="GHA viewer", party="GHA", roles=["viewer"])
    party_token = await suite.auth(viewer["client_id"], viewer["client_secret"])
    transport = suite.services["party_sections"]
    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport), base_url="http://ps"
    ) as direct:
        assert (await direct.get("/internal/v1/events", headers=party_token)).status_code == 403


async def test_service_clients_cannot_be_made_through_the_api(suite: InProcessSuite) -> None:
    response = await suite.client.post(
        "/v1/clients",
        json={"name": "sneaky", "party": None, "roles": ["service"]},
        headers=await suite.auth(),
    )
    assert response.status_code == 422
