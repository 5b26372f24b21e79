"""Cooperative approaches, authorized entities (AEF Table 5) and NDC periods on the party_sections service:
what is recorded, what is published, who may write and read, and the rules between them (an entity's
cooperative approach must exist and include the Party; NDC periods do not overlap).
"""

import pytest
import pytest_asyncio

from contracts.roles import Role
from tests.integration._party_sections import Harness, assert_problem, module_harness

# One worker runs the whole module, so its app and database are made once per backend, not once per worker.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("party-sections-reference")]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ps(module_backend, database_factory, tmp_path_factory, tokens):
    async with module_harness(
        module_backend, database_factory, tmp_path_factory.mktemp("ps"), tokens
    ) as harness:
        yield harness


_CA_NUMBERS = iter(range(100, 10_000))


async def _register_ca(ps: Harness, *participants: str) -> str:
    ca_id = f"CA{next(_CA_NUMBERS):04d}"
    response = await ps.client.post(
        "/v1/cooperative-approaches",
        json={"ca_id": ca_id, "name": f"Approach {ca_id}", "participants": list(participants)},
        headers=ps.secretariat,
    )
    assert response.status_code == 201, response.text
    return ca_id


def _entity(ca_id: str, entity_id: str = "GH-ENT-001", **overrides: object) -> dict:
    return {
        "entity_id": entity_id,
        "name": "Volta Carbon Ltd",
        "country_of_incorporation": "GHA",
        "identification_number": "CS-123456789",
        "ca_id": ca_id,
        "date_of_authorization": "2024-03-15",
        "conditions": "Clean cookstoves only",
        "change_and_revocation_conditions": "Revocable on 30 days' notice",
        **overrides,
    }


# ---- cooperative approaches ------------------------------------------------------------------------------


async def test_a_cooperative_approach_is_registered_once_and_read_by_any_token(ps: Harness) -> None:
    await ps.new_events()
    body = {"ca_id": "CA0012", "name": "Ghana–Switzerland cookstoves", "participants": ["GHA", "CHE"]}
    created = await ps.client.post("/v1/cooperative-approaches", json=body, headers=ps.secretariat)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/cooperative-approaches/CA0012"
    assert created.json()["participants"] == ["CHE", "GHA"]
    events = await ps.new_events()
    assert [(e["type"], e["party"], e["data"]) for e in events] == [
        ("cooperative_approach.registered", None, created.json())
    ]
    assert (await ps.audit())[-1]["action"] == "cooperative_approach.register"
    counts = await ps.row_counts()
    duplicate = await ps.client.post(
        "/v1/cooperative-approaches", json={**body, "name": "Again"}, headers=ps.secretariat
    )
    assert_problem(duplicate, 409, "cooperative-approach-exists")
    assert await ps.row_counts() == counts

    for roles, party in (
        ([Role.VIEWER], "KEN"),
        ([Role.REGISTRY], "GHA"),
        ([Role.AUDITOR], None),
        ([Role.SERVICE], None),
        ([Role.PARTY_ADMIN], "PER"),
    ):
        headers = ps.headers(party, *roles)
        one = await ps.client.get("/v1/cooperative-approaches/CA0012", headers=headers)
        assert one.status_code == 200 and one.json() == created.json()
        listed = await ps.client.get("/v1/cooperative-approaches", headers=headers)
        assert created.json() in listed.json()["items"]
    assert_problem(await ps.client.get("/v1/cooperative-approaches/CA9999", headers=ps.secretariat), 404)
    assert_problem(await ps.client.get("/v1/cooperative-approaches/ca0012", headers=ps.secretariat), 422)
    assert_problem(await ps.client.get("/v1/cooperative-approaches"), 401)


@pytest.mark.parametrize(
    ("party", "roles"),
    [("GHA", [Role.PARTY_ADMIN]), (None, [Role.AUDITOR]), ("GHA", [Role.REGISTRY]), (None, [Role.SERVICE])],
)
async def test_only_the_secretariat_registers_cooperative_approaches(ps: Harness, party, roles) -> None:
    counts = await ps.row_counts()
    body = {"ca_id": "CA0999", "name": "Nope", "participants": ["GHA", "CHE"]}
    assert_problem(
        await ps.client.post("/v1/cooperative-approaches", json=body, headers=ps.headers(party, *roles)), 403
    )
    assert await ps.row_counts() == counts


async def test_cooperative_approaches_page_in_id_order(ps: Harness) -> None:
    for _ in range(5):
        await _register_ca(ps, "GHA", "CHE")
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (
            await ps.client.get("/v1/cooperative-approaches", params=params, headers=ps.secretariat)
        ).json()
        seen += [ca["ca_id"] for ca in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) >= 5


# ---- authorized entities ---------------------------------------------------------------------------------


async def test_an_entity_is_authorized_once(ps: Harness) -> None:
    party = await ps.section_in("open")
    ca_id = await _register_ca(ps, party, "CHE")
    await ps.new_events()
    body = _entity(ca_id, additional_explanatory_information="First")
    response = await ps.client.post(
        f"/v1/party-sections/{party}/entities", json=body, headers=ps.party_admin(party)
    )
    assert response.status_code == 201, response.text
    entity = response.json()
    assert {k: entity[k] for k in body} == body and entity["party"] == party
    events = await ps.new_events()
    assert [(e["type"], e["party"], e["data"]) for e in events] == [("entity.authorized", party, entity)]
    counts = await ps.row_counts()
    duplicate = await ps.client.post(
        f"/v1/party-sections/{party}/entities", json={**body, "name": "Other"}, headers=ps.party_admin(party)
    )
    assert_problem(duplicate, 409, "entity-exists")
    assert await ps.row_counts() == counts and await ps.new_events() == []

    for headers in (ps.headers(party, Role.VIEWER), ps.secretariat, ps.headers(None, Role.AUDITOR)):
        listed = await ps.client.get(f"/v1/party-sections/{party}/entities", headers=headers)
        assert listed.status_code == 200 and listed.json() == {"items": [entity], "next_cursor": None}
    one = await ps.client.get(
        f"/v1/party-sections/{party}/entities/GH-ENT-001", headers=ps.headers(party, Role.VIEWER)
    )
    assert one.status_code == 200 and one.json() == entity
    assert_problem(
        await ps.client.get(f"/v1/party-sections/{party}/entities/NOBODY", headers=ps.secretariat),
        404,
        "entity-not-found",
    )
    for headers in (ps.headers("CHE", Role.PARTY_ADMIN), ps.headers(party, Role.REGISTRY)):
        assert_problem(await ps.client.get(f"/v1/party-sections/{party}/entities", headers=headers), 403)
        assert_problem(
            await ps.client.get(f"/v1/party-sections/{party}/entities/GH-ENT-001", headers=headers), 403
        )


async def test_the_same_entity_id_in_two_parties(ps: Harness) -> None:
    one, two = await ps.section_in("open"), await ps.section_in("open")
    ca_id = await _register_ca(ps, one, two)
    for party in (one, two):
        response = await ps.client.post(
            f"/v1/party-sections/{party}/entities",
            json=_entity(ca_id, "SHARED-1"),
            headers=ps.party_admin(party),
        )
        assert response.status_code == 201, response.text


async def test_an_entity_needs_a_registered_approach_the_party_is_in(ps: Harness) -> None:
    party = await ps.section_in("open")
    elsewhere = await _register_ca(ps, "CHE", "KEN")
    counts = await ps.row_counts()
    for ca_id, slug in (("CA9998", "unknown-cooperative-approach"), (elsewhere, "not-a-participant")):
        response = await ps.client.post(
            f"/v1/party-sections/{party}/entities", json=_entity(ca_id), headers=ps.party_admin(party)
        )
        assert assert_problem(response, 422, slug)["field"] == "ca_id"
    assert await ps.row_counts() == counts


@pytest.mark.parametrize(
    ("status", "allowed"), [("requested", True), ("suspended", False), ("closing", False), ("closed", False)]
)
async def test_entities_are_recorded_while_requested_or_open(ps: Harness, status: str, allowed: bool) -> None:
    party = await ps.section_in(status)
    ca_id = await _register_ca(ps, party, "CHE")
    response = await ps.client.post(
        f"/v1/party-sections/{party}/entities", json=_entity(ca_id), headers=ps.party_admin(party)
    )
    if allowed:
        assert response.status_code == 201
    else:
        assert_problem(response, 409, "section-not-writable")


@pytest.mark.parametrize(
    ("caller", "roles"),
    [
        ("secretariat", [Role.SECRETARIAT_ADMIN]),
        ("own", [Role.AUTHORIZING_OFFICIAL]),
        ("own", [Role.VIEWER]),
        ("own", [Role.AUDITOR]),
        ("other", [Role.PARTY_ADMIN]),
    ],
)
async def test_only_the_partys_admin_records_entities(ps: Harness, caller: str, roles: list[Role]) -> None:
    party = await ps.section_in("open")
    ca_id = await _register_ca(ps, party, "CHE")
    counts = await ps.row_counts()
    headers = ps.headers({"own": party, "other": "CHE", "secretariat": None}[caller], *roles)
    assert_problem(
        await ps.client.post(f"/v1/party-sections/{party}/entities", json=_entity(ca_id), headers=headers),
        403,
    )
    assert await ps.row_counts() == counts


# ---- NDC periods -----------------------------------------------------------------------------------------


async def test_ndc_periods_are_replaced_whole(ps: Harness) -> None:
    party = await ps.section_in("open")
    path = f"/v1/party-sections/{party}/ndc-periods"
    await ps.new_events()
    assert (await ps.client.get(path, headers=ps.party_admin(party))).json() == []
    second, first = {"first_year": 2031, "last_year": 2035}, {"first_year": 2021, "last_year": 2030}
    response = await ps.client.put(path, json=[second, first], headers=ps.party_admin(party))
    assert response.status_code == 200 and response.json() == [first, second]  # sorted
    assert (await ps.client.get(path, headers=ps.headers(party, Role.VIEWER))).json() == [first, second]
    response = await ps.client.put(
        path, json=[{"first_year": 2026, "last_year": 2030}], headers=ps.party_admin(party)
    )
    assert response.json() == [{"first_year": 2026, "last_year": 2030}]
    assert (await ps.client.put(path, json=[], headers=ps.party_admin(party))).json() == []
    events = await ps.new_events()
    assert [e["type"] for e in events] == ["ndc_periods.set"] * 3
    assert (
        events[0]["data"] == {"party": party, "ndc_periods": [first, second]} and events[0]["party"] == party
    )
    rows = [row for row in await ps.audit(party) if row["action"] == "ndc_periods.set"]
    assert rows[1]["details"]["before"] == [[2021, 2030], [2031, 2035]]


@pytest.mark.parametrize(
    "body",
    [
        [{"first_year": 2021, "last_year": 2030}, {"first_year": 2030, "last_year": 2035}],
        [{"first_year": 2021, "last_year": 2030}, {"first_year": 2021, "last_year": 2030}],
        [{"first_year": 2025, "last_year": 2026}, {"first_year": 2021, "last_year": 2030}],
    ],
)
async def test_overlapping_ndc_periods_are_refused(ps: Harness, body: list) -> None:
    party = await ps.section_in("open")
    counts = await ps.row_counts()
    response = await ps.client.put(
        f"/v1/party-sections/{party}/ndc-periods", json=body, headers=ps.party_admin(party)
    )
    assert_problem(response, 422, "overlapping-ndc-periods")
    assert await ps.row_counts() == counts


@pytest.mark.parametrize(
    ("status", "allowed"), [("requested", True), ("suspended", False), ("closed", False)]
)
async def test_ndc_periods_are_set_while_requested_or_open(ps: Harness, status: str, allowed: bool) -> None:
    party = await ps.section_in(status)
    response = await ps.client.put(
        f"/v1/party-sections/{party}/ndc-periods",
        json=[{"first_year": 2021, "last_year": 2030}],
        headers=ps.party_admin(party),
    )
    if allowed:
        assert response.status_code == 200
    else:
        assert_problem(response, 409, "section-not-writable")


@pytest.mark.parametrize(
    ("caller", "roles"),
    [("secretariat", [Role.SECRETARIAT_ADMIN]), ("own", [Role.VIEWER]), ("other", [Role.PARTY_ADMIN])],
)
async def test_only_the_partys_admin_sets_ndc_periods(ps: Harness, caller: str, roles: list[Role]) -> None:
    party = await ps.section_in("open")
    headers = ps.headers({"own": party, "other": "CHE", "secretariat": None}[caller], *roles)
    response = await ps.client.put(
        f"/v1/party-sections/{party}/ndc-periods",
        json=[{"first_year": 2021, "last_year": 2030}],
        headers=headers,
    )
    assert_problem(response, 403)
    assert (
        await ps.client.get(f"/v1/party-sections/{party}/ndc-periods", headers=ps.secretariat)
    ).json() == []
