"""The internal API of party_sections (what the other services read) and the zero-balance rules against
the real transactions service, in the in-process suite (gateway + the four services).
"""

from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import insert

from contracts.roles import Role
from tests.integration._party_sections import Harness, assert_problem, module_harness
from tests.support.suite import InProcessSuite, inprocess_suite

# One worker runs the whole module, so its app and database are made once per backend, not once per worker.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("party-sections-internal")]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ps(module_backend, database_factory, tmp_path_factory, tokens):
    async with module_harness(
        module_backend, database_factory, tmp_path_factory.mktemp("ps"), tokens
    ) as harness:
        yield harness


def _service(ps: Harness) -> dict[str, str]:
    return ps.headers(None, Role.SERVICE, client_id="svc-transactions")


async def test_account_lookup_follows_account_and_section(ps: Harness) -> None:
    party = await ps.section_in("open")
    account = f"{party}01-100-1"
    path = f"/internal/v1/accounts/{account}"
    lookup = await ps.client.get(path, headers=_service(ps))
    assert lookup.status_code == 200, lookup.text
    assert lookup.json() == {
        "account_id": account,
        "party": party,
        "registry_id": f"{party}01",
        "type": "holding",
        "type_code": 100,
        "status": "open",
        "holder_entity_id": None,
        "section_status": "open",
        "four_eyes": False,
    }
    assert (await ps.client.post(f"/v1/accounts/{account}/block", headers=ps.secretariat)).status_code == 200
    assert (await ps.move(party, "suspend")).status_code == 200
    read = await ps.client.patch(
        f"/v1/party-sections/{party}/settings",
        json={"four_eyes": True},
        headers={**ps.party_admin(party), "If-Match": "*"},
    )
    assert_problem(read, 409)  # suspended: no settings change
    after = (await ps.client.get(path, headers=_service(ps))).json()
    assert (after["status"], after["section_status"]) == ("blocked", "suspended")


async def test_section_lookup_and_its_accounts(ps: Harness) -> None:
    party = await ps.section_in("open")
    periods = [{"first_year": 2021, "last_year": 2030}]
    assert (
        await ps.client.put(
            f"/v1/party-sections/{party}/ndc-periods", json=periods, headers=ps.party_admin(party)
        )
    ).status_code == 200
    assert (
        await ps.client.patch(
            f"/v1/party-sections/{party}/settings",
            json={"four_eyes": True},
            headers={**ps.party_admin(party), "If-Match": '"2"'},
        )
    ).status_code == 200
    lookup = await ps.client.get(f"/internal/v1/party-sections/{party}", headers=_service(ps))
    assert lookup.json() == {
        "party": party,
        "registry_id": f"{party}01",
        "status": "open",
        "ars": False,
        "four_eyes": True,
        "incoming_acceptance": "automatic",
        "ndc_periods": periods,
        "version": 3,
    }
    every = await ps.client.get(f"/internal/v1/party-sections/{party}/accounts", headers=_service(ps))
    assert [a["type_code"] for a in every.json()] == [100, 200, 210, 300, 310, 320, 330]
    assert all(a["four_eyes"] is True and a["section_status"] == "open" for a in every.json())
    holding = await ps.client.get(
        f"/internal/v1/party-sections/{party}/accounts", params={"type": "ndc_use"}, headers=_service(ps)
    )
    assert [a["account_id"] for a in holding.json()] == [f"{party}01-200-1"]
    assert_problem(
        await ps.client.get(
            f"/internal/v1/party-sections/{party}/accounts", params={"type": "x"}, headers=_service(ps)
        ),
        422,
    )


async def test_internal_lookups_of_what_does_not_exist(ps: Harness) -> None:
    never = ps.spare_party()
    for path in (
        f"/internal/v1/accounts/{never}01-100-1",
        f"/internal/v1/party-sections/{never}",
        f"/internal/v1/party-sections/{never}/accounts",
        "/internal/v1/cooperative-approaches/CA9999",
    ):
        assert_problem(await ps.client.get(path, headers=_service(ps)), 404)
    for path in (
        "/internal/v1/accounts/nope",
        "/internal/v1/party-sections/XXX",
        "/internal/v1/cooperative-approaches/C1",
    ):
        assert_problem(await ps.client.get(path, headers=_service(ps)), 422)


async def test_cooperative_approach_lookup(ps: Harness) -> None:
    body = {"ca_id": "CA0042", "name": "Internal CA", "participants": ["GHA", "CHE", "SEN"]}
    created = await ps.client.post("/v1/cooperative-approaches", json=body, headers=ps.secretariat)
    lookup = await ps.client.get("/internal/v1/cooperative-approaches/CA0042", headers=_service(ps))
    assert lookup.json() == created.json() and lookup.json()["participants"] == ["CHE", "GHA", "SEN"]


@pytest.mark.parametrize(
    ("party", "roles", "status"),
    [
        (None, [Role.SERVICE], 200),
        (None, [Role.SECRETARIAT_ADMIN], 200),
        (None, [Role.AUDITOR], 403),
        ("GHA", [Role.PARTY_ADMIN, Role.VIEWER], 403),
        ("GHA", [Role.REGISTRY], 403),
    ],
)
async def test_who_may_use_the_internal_api(ps: Harness, party, roles, status: int) -> None:
    target = await ps.section_in("open")
    headers = ps.headers(party, *roles)
    for path in (
        f"/internal/v1/accounts/{target}01-100-1",
        f"/internal/v1/party-sections/{target}",
        f"/internal/v1/party-sections/{target}/accounts",
        "/internal/v1/events",
    ):
        response = await ps.client.get(path, headers=headers)
        assert response.status_code == status, (path, response.text)
    assert_problem(await ps.client.get(f"/internal/v1/party-sections/{target}"), 401)


async def test_service_tokens_get_nothing_on_the_public_api(ps: Harness) -> None:
    party = await ps.section_in("open")
    headers = _service(ps)
    for method, path, body in (
        ("GET", f"/v1/party-sections/{party}", None),
        ("GET", f"/v1/party-sections/{party}/accounts", None),
        ("GET", f"/v1/party-sections/{party}/entities", None),
        ("GET", f"/v1/party-sections/{party}/ndc-periods", None),
        ("POST", "/v1/party-sections", {"party": "SEN", "registry_id": "SEN01"}),
        ("POST", f"/v1/party-sections/{party}/suspend", {}),
    ):
        assert_problem(await ps.client.request(method, path, json=body, headers=headers), 403)
    assert_problem(await ps.client.post(f"/v1/accounts/{party}01-100-1/block", headers=headers), 404)


async def test_every_route_declares_its_problems_as_problem_json(ps: Harness) -> None:
    document = (await ps.client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary") and operation.get("description"), (method, path)  # the docstring
            errors = {code: answer for code, answer in operation["responses"].items() if code[0] in "45"}
            if path.startswith("/v1/") or path.startswith("/internal/v1/party") or "/accounts/" in path:
                assert "401" in errors, (method, path)
            for code, answer in errors.items():
                assert list(answer["content"]) == ["application/problem+json"], (method, path, code)


# ---- against the real transactions service ---------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(module_backend, database_factory, tmp_path_factory):
    made: list[str] = []
    data_dir = tmp_path_factory.mktemp("suite")

    def make(package: str) -> str:
        url = (
            database_factory.postgres(package)
            if module_backend == "postgres"
            else database_factory.sqlite(package, data_dir)
        )
        made.append(url)
        return url

    try:
        async with inprocess_suite(make, data_dir) as running:
            yield running
    finally:
        for url in made:
            database_factory.drop(url)


async def _seed_units(suite: InProcessSuite, party: str, account_id: str, quantity: int) -> None:
    """Units in an account, written into the transactions service's own ledger (as a first transfer would)."""
    from services.transactions.models import blocks

    async with suite.services["transactions"].state.db.transaction() as session:
        await session.execute(
            insert(blocks).values(
                ca_id="CA0012",
                origin_registry_id=f"{party}01",
                first_transferring_party=party,
                first_serial=1,
                last_serial=quantity,
                vintage=2024,
                metric="GHG",
                mitigation_type="Emission reductions",
                authorization_id=f"{party}-AUTH-1",
                authorization_version=1,
                purposes="NDC",
                state="held",
                account_id=account_id,
                party=party,
                updated_at=datetime.now(UTC),
            )
        )


async def test_closing_asks_the_real_transactions_service(suite: InProcessSuite) -> None:
    headers = await suite.auth()
    client = suite.client

    async def post(path: str, body: object = None) -> httpx.Response:
        return await client.post(path, json=body, headers=headers)

    party = "KEN"
    assert (await post("/v1/party-sections", {"party": party, "registry_id": "KEN01"})).status_code == 201
    for move in ("open", "close"):
        assert (await post(f"/v1/party-sections/{party}/{move}", {})).status_code == 200
    await _seed_units(suite, party, "KEN01-100-1", 40)

    refused = await post("/v1/party-sections/KEN/close", {})
    assert refused.status_code == 409 and refused.json()["type"].endswith("/balance-not-zero"), refused.text
    assert refused.json()["total"] == 40
    refused = await post("/v1/accounts/KEN01-100-1/close", {})
    assert refused.status_code == 409 and refused.json()["total"] == 40, refused.text
    section = await client.get("/v1/party-sections/KEN", headers=headers)
    assert section.json()["status"] == "closing"

    # An empty account of the same section closes; a section without units closes for good.
    assert (await post("/v1/accounts/KEN01-100-1/block", {})).status_code == 200
    other = "PER"
    assert (await post("/v1/party-sections", {"party": other, "registry_id": "PER01"})).status_code == 201
    for move in ("open", "close", "close"):
        response = await post(f"/v1/party-sections/{other}/{move}", {})
        assert response.status_code == 200, response.text
    assert response.json()["status"] == "closed"


async def test_the_gateway_never_routes_the_internal_api(suite: InProcessSuite) -> None:
    headers = await suite.auth()
    for path in (
        "/internal/v1/party-sections/GHA",
        "/internal/v1/accounts/GHA01-100-1",
        "/internal/v1/events",
    ):
        response = await suite.client.get(path, headers=headers)
        assert response.status_code == 404, response.text
    # ... while another service reaches it with its own token.
    peers = suite.services["transactions"].state.peers
    assert (
        await peers.request("party_sections", "GET", "/internal/v1/party-sections/GHA")
    ).status_code == 404
