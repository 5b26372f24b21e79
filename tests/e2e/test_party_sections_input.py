"""Bad input to every POST/PUT/PATCH of API.md's "Reference data and Party sections", through the gateway:
each gets a 4xx problem (never a 5xx, never a success) and writes nothing, which is checked by reading back
and by party_sections' event feed not moving (issue 3: unknown Party, malformed ids, wrong types, extra
fields, oversized strings).

Callers are always the ones allowed to make the request, so a 401/403 would mean the input was not what
got refused; the only exception is a Party admin naming an unknown Party in the path, where 403 is as right
as 404 or 422.
"""

from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.support.party_api import Actor, PartyApi, assert_problem, module_suite

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("party-sections-input")]

P, OTHER = "GHA", "CHE"
MISSING = object()
LONG_201 = "x" * 201
LONG_4001 = "y" * 4001


def changed(base: dict, **changes: Any) -> dict:
    """`base` with fields replaced (or removed, for `MISSING`)."""
    body = dict(base)
    for key, value in changes.items():
        if value is MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return body


class World:
    def __init__(self, api: PartyApi, admin: Actor, ca_id: str, entity_id: str) -> None:
        self.api, self.admin, self.ca_id, self.entity_id = api, admin, ca_id, entity_id


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(module_backend, database_factory, tmp_path_factory):
    async with module_suite(module_backend, database_factory, tmp_path_factory.mktemp("suite")) as suite:
        api = await PartyApi.start(suite)
        await api.add_admins(2)
        api.reserve(P, OTHER)
        await api.section_in("open", P)
        admin = await api.actor(f"{P} admin", P, ["party_admin"])
        ca_id = await api.register_ca([P, OTHER])
        entity = api.entity_body(ca_id)
        response = await api.post(admin, f"/v1/party-sections/{P}/entities", json=entity)
        assert response.status_code == 201, response.text
        response = await api.call(
            admin,
            "PUT",
            f"/v1/party-sections/{P}/ndc-periods",
            json=[{"first_year": 2021, "last_year": 2030}],
        )
        assert response.status_code == 200, response.text
        yield World(api, admin, ca_id, entity["entity_id"])


def refused_as_input(response: httpx.Response, *, also: tuple[int, ...] = ()) -> None:
    """A 4xx problem that is about the input: not an authentication or authorization refusal."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert_problem(response)
    assert response.status_code not in {401, 403} - set(also), (
        f"{response.status_code}: {response.text[:300]}"
    )


async def send(api: PartyApi, actor: Actor, method: str, path: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return await api.call(actor, method, path, content=body, headers={"Content-Type": "application/json"})
    return await api.call(actor, method, path, json=body)


NOT_AN_OBJECT = [
    pytest.param([], id="array"),
    pytest.param("text", id="string"),
    pytest.param(None, id="null"),
    pytest.param(b"{not json", id="broken-json"),
]

# --- cooperative approaches ---------------------------------------------------------------------------------

CA_BASE = {"ca_id": "CA7777", "name": "Valid approach", "participants": [P, OTHER]}
CA_CASES = [
    *(
        pytest.param(changed(CA_BASE, ca_id=v), id=f"ca_id={v!r}")
        for v in ["CA12", "CA00123", "ca7777", "CB7777", "CA-777", "CA777a", "", 7777, None]
    ),
    *(
        pytest.param(changed(CA_BASE, name=v), id=f"name={str(v)[:12]!r}")
        for v in [LONG_201, "", "   ", 12, None, ["x"]]
    ),
    *(
        pytest.param(changed(CA_BASE, participants=v), id=f"participants={v!r}")
        for v in [[P], [P, P], [P, "XXX"], ["gha", OTHER], [P, "CHE1"], P, [], [1, 2], None]
    ),
    pytest.param(changed(CA_BASE, owner="me"), id="extra-field"),
    *(pytest.param(changed(CA_BASE, **{k: MISSING}), id=f"missing-{k}") for k in CA_BASE),
    *NOT_AN_OBJECT,
]


@pytest.mark.parametrize("body", CA_CASES)
async def test_bad_cooperative_approach(world: World, body: Any) -> None:
    api = world.api
    before = await api.list_all(api.admin, "/v1/cooperative-approaches")
    head = await api.feed_head()
    refused_as_input(await send(api, api.admin, "POST", "/v1/cooperative-approaches", body))
    assert await api.list_all(api.admin, "/v1/cooperative-approaches") == before
    assert_problem(await api.get(api.admin, "/v1/cooperative-approaches/CA7777"), 404)
    assert await api.feed_head() == head


@pytest.mark.parametrize("ca_id", ["ca0001", "CA1", "CA00001", "XX", "CA%200001"])
async def test_malformed_ca_id_in_the_path(world: World, ca_id: str) -> None:
    refused_as_input(await world.api.get(world.api.admin, f"/v1/cooperative-approaches/{ca_id}"))


async def test_a_duplicate_cooperative_approach(world: World) -> None:
    api = world.api
    before = await api.get(api.admin, f"/v1/cooperative-approaches/{world.ca_id}")
    head = await api.feed_head()
    body = {"ca_id": world.ca_id, "name": "Hijack", "participants": ["KEN", "PER"]}
    assert_problem(await api.post(api.admin, "/v1/cooperative-approaches", json=body), 409)
    assert (await api.get(api.admin, f"/v1/cooperative-approaches/{world.ca_id}")).json() == before.json()
    assert await api.feed_head() == head


# --- party sections -----------------------------------------------------------------------------------------

SECTION_PARTY = "SEN"  # never created by this module: every attempt below must leave it without a section
SECTION_BASE = {"party": SECTION_PARTY, "registry_id": f"{SECTION_PARTY}01", "ars": False}
SECTION_CASES = [
    *(
        pytest.param(changed(SECTION_BASE, party=v, registry_id=f"{v}01"), id=f"party={v!r}")
        for v in ["XXX", "sen", "SE", "SENE", "S1N"]
    ),
    *(pytest.param(changed(SECTION_BASE, party=v), id=f"party={v!r}-type") for v in [123, None, "", ["SEN"]]),
    *(
        pytest.param(changed(SECTION_BASE, registry_id=v), id=f"registry_id={v!r}")
        for v in ["SEN1", "SEN001", "sen01", "SENAB", "SEN-01", "SEN 1", "CHE01", "XXX01", "", 1, None]
    ),
    *(pytest.param(changed(SECTION_BASE, ars=v), id=f"ars={v!r}") for v in ["maybe", [], {"x": 1}, 2]),
    pytest.param(changed(SECTION_BASE, status="open"), id="extra-status"),
    pytest.param(changed(SECTION_BASE, version=7), id="extra-version"),
    pytest.param(changed(SECTION_BASE, settings={"four_eyes": True}), id="extra-settings"),
    *(
        pytest.param(changed(SECTION_BASE, **{k: MISSING}), id=f"missing-{k}")
        for k in ("party", "registry_id")
    ),
    *NOT_AN_OBJECT,
]


@pytest.mark.parametrize("body", SECTION_CASES)
async def test_bad_party_section_request(world: World, body: Any) -> None:
    api = world.api
    head = await api.feed_head()
    refused_as_input(await send(api, api.admin, "POST", "/v1/party-sections", body))
    assert_problem(await api.get(api.admin, f"/v1/party-sections/{SECTION_PARTY}"), 404)
    assert_problem(await api.get(api.admin, "/v1/party-sections/CHE"), 404)
    assert await api.feed_head() == head


@pytest.mark.parametrize("party", ["XXX", "gha", "GHANA", "GH", "GHA01", "123"])
@pytest.mark.parametrize("move", ["open", "suspend", "reactivate", "close"])
async def test_a_move_of_an_unknown_or_malformed_party(world: World, party: str, move: str) -> None:
    api = world.api
    before = await api.section_state(P)
    head = await api.feed_head()
    refused_as_input(await api.post(api.admin, f"/v1/party-sections/{party}/{move}", json={}))
    assert await api.section_state(P) == before
    assert await api.feed_head() == head


@pytest.mark.parametrize("party", ["XXX", "gha", "GHANA", "GH"])
async def test_reading_an_unknown_or_malformed_party(world: World, party: str) -> None:
    refused_as_input(await world.api.get(world.api.admin, f"/v1/party-sections/{party}"))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"reason": 5}, id="reason-int"),
        pytest.param({"reason": LONG_4001}, id="reason-too-long"),
        pytest.param({"reason": "   "}, id="reason-blank"),
        pytest.param({"reason": "ok", "status": "open"}, id="extra-field"),
        pytest.param([], id="array"),
        pytest.param(b"{not json", id="broken-json"),
    ],
)
async def test_a_bad_move_body_moves_nothing(world: World, body: Any) -> None:
    api = world.api
    before = await api.section_state(P)
    head = await api.feed_head()
    refused_as_input(await send(api, api.admin, "POST", f"/v1/party-sections/{P}/suspend", body))
    assert await api.section_state(P) == before
    assert await api.feed_head() == head


# --- settings -----------------------------------------------------------------------------------------------

DESIGNATION = {"field": "authorizations.authorized_quantity", "basis": "Commercially sensitive"}
SETTINGS_CASES = [
    *(pytest.param({"four_eyes": v}, id=f"four_eyes={v!r}") for v in ["maybe", 2, [], {"on": True}]),
    pytest.param({"confidential_fields": [{"field": "nope.field", "basis": "x"}]}, id="unknown-aef-field"),
    pytest.param(
        {"confidential_fields": [{"field": "authorized_quantity", "basis": "x"}]}, id="field-no-table"
    ),
    pytest.param({"confidential_fields": [{"field": DESIGNATION["field"]}]}, id="missing-basis"),
    pytest.param({"confidential_fields": [{**DESIGNATION, "basis": ""}]}, id="blank-basis"),
    pytest.param({"confidential_fields": [{**DESIGNATION, "basis": LONG_4001}]}, id="basis-too-long"),
    pytest.param({"confidential_fields": [DESIGNATION, DESIGNATION]}, id="duplicate-designation"),
    pytest.param({"confidential_fields": [{**DESIGNATION, "level": "secret"}]}, id="extra-designation-field"),
    pytest.param({"confidential_fields": "authorizations.metric"}, id="designations-not-a-list"),
    pytest.param({"four_eyes": True, "status": "closed"}, id="extra-status"),
    pytest.param({"four_eyes": True, "version": 99}, id="extra-version"),
    *NOT_AN_OBJECT,
]


@pytest.mark.parametrize("body", SETTINGS_CASES)
async def test_bad_settings_patch(world: World, body: Any) -> None:
    api = world.api
    read = await api.get(world.admin, f"/v1/party-sections/{P}")
    before = await api.section_state(P)
    head = await api.feed_head()
    path = f"/v1/party-sections/{P}/settings"
    if isinstance(body, bytes):
        headers = {"If-Match": read.headers["etag"], "Content-Type": "application/json"}
        response = await api.call(world.admin, "PATCH", path, content=body, headers=headers)
    else:
        response = await api.call(
            world.admin, "PATCH", path, json=body, headers={"If-Match": read.headers["etag"]}
        )
    refused_as_input(response)
    assert await api.section_state(P) == before
    assert await api.feed_head() == head


@pytest.mark.parametrize("if_match", ["abc", '"abc"', "", "*1", "-1", 'W/"x"'])
async def test_a_malformed_if_match_changes_nothing(world: World, if_match: str) -> None:
    api = world.api
    before = await api.section_state(P)
    response = await api.call(
        world.admin,
        "PATCH",
        f"/v1/party-sections/{P}/settings",
        json={"four_eyes": True},
        headers={"If-Match": if_match},
    )
    refused_as_input(response)
    assert await api.section_state(P) == before


# --- accounts -----------------------------------------------------------------------------------------------

ACCOUNT_BASE = {"type": "holding", "name": "Entity holding account"}
ACCOUNT_CASES = [
    *(
        pytest.param(changed(ACCOUNT_BASE, type=v), id=f"type={v!r}")
        for v in ["savings", 100, "100", "HOLDING", "", None, ["holding"]]
    ),
    *(
        pytest.param(changed(ACCOUNT_BASE, name=v), id=f"name={str(v)[:12]!r}")
        for v in [LONG_201, "", "   ", 5, None]
    ),
    *(
        pytest.param(changed(ACCOUNT_BASE, holder_entity_id=v), id=f"holder={str(v)[:12]!r}")
        for v in ["e" * 101, 7, ["x"], "NO-SUCH-ENTITY"]
    ),
    pytest.param(changed(ACCOUNT_BASE, status="blocked"), id="extra-status"),
    pytest.param(changed(ACCOUNT_BASE, account_id=f"{P}01-100-99"), id="extra-account_id"),
    pytest.param(changed(ACCOUNT_BASE, party=OTHER), id="extra-party"),
    pytest.param(changed(ACCOUNT_BASE, type_code=100), id="extra-type_code"),
    *(pytest.param(changed(ACCOUNT_BASE, **{k: MISSING}), id=f"missing-{k}") for k in ACCOUNT_BASE),
    *NOT_AN_OBJECT,
]


@pytest.mark.parametrize("body", ACCOUNT_CASES)
async def test_bad_account_request(world: World, body: Any) -> None:
    api = world.api
    before = await api.account_statuses(P)
    head = await api.feed_head()
    refused_as_input(await send(api, world.admin, "POST", f"/v1/party-sections/{P}/accounts", body))
    assert await api.account_statuses(P) == before
    assert await api.feed_head() == head


@pytest.mark.parametrize("party", ["XXX", "gha", "GHANA"])
async def test_an_account_in_an_unknown_or_malformed_party(world: World, party: str) -> None:
    api = world.api
    before = await api.account_statuses(P)
    head = await api.feed_head()
    response = await api.post(world.admin, f"/v1/party-sections/{party}/accounts", json=ACCOUNT_BASE)
    refused_as_input(response, also=(403,))
    assert await api.account_statuses(P) == before
    assert await api.feed_head() == head


@pytest.mark.parametrize(
    "account_id",
    [
        f"{P}01-100",
        f"{P}01-999-1",
        f"{P.lower()}01-100-1",
        f"{P}01-100-0",
        f"{P}01-100-01",
        "XXX01-100-1",
        f"{P}01-100-1-2",
        f"{P}01-100-x",
        f"{P}-100-1",
        f"{P}01-100-{'9' * 30}",
        f"{P}01-100-999",  # well-formed, no such account
    ],
)
@pytest.mark.parametrize("action", ["block", "unblock", "close"])
async def test_a_malformed_or_unknown_account_id(world: World, account_id: str, action: str) -> None:
    api = world.api
    before = await api.account_statuses(P)
    head = await api.feed_head()
    for actor in (world.admin, api.admin):
        response = await api.post(actor, f"/v1/accounts/{account_id}/{action}", json={})
        refused_as_input(response)
        if account_id == f"{P}01-100-999":
            assert_problem(response, 404)
    assert await api.account_statuses(P) == before
    assert await api.feed_head() == head


# --- authorized entities ------------------------------------------------------------------------------------


def _entity_cases() -> list:
    base_keys = (
        "entity_id",
        "name",
        "country_of_incorporation",
        "identification_number",
        "ca_id",
        "date_of_authorization",
    )
    bad: list[tuple[str, Any]] = [
        *(("entity_id", v) for v in ["has space", "", "e" * 65, "-leading", "ENT/1", "ÉNT-1", 5, None]),
        *(("name", v) for v in [LONG_201, "", "   ", 5, None]),
        *(("country_of_incorporation", v) for v in ["XXX", "gha", "Ghana", "GH", 1, None]),
        *(("identification_number", v) for v in ["n" * 101, "", 5, None]),
        *(("ca_id", v) for v in ["CA12", "ca0100", "CA-0100", 100, None, "CA9998"]),  # CA9998: not registered
        *(
            ("date_of_authorization", v)
            for v in ["15/03/2024", "2024-13-01", "2024-02-30", "yesterday", 20240315, "", None]
        ),
        *(("conditions", v) for v in [LONG_4001, 5, ""]),
        *(("change_and_revocation_conditions", v) for v in [LONG_4001, ["x"]]),
        *(("additional_explanatory_information", v) for v in [LONG_4001]),
        ("party", OTHER),
        ("created_at", "2024-01-01T00:00:00Z"),
        ("status", "revoked"),
    ]
    cases = [pytest.param(key, value, id=f"{key}={str(value)[:14]!r}") for key, value in bad]
    cases += [pytest.param(key, MISSING, id=f"missing-{key}") for key in base_keys]
    return cases


@pytest.mark.parametrize(("key", "value"), _entity_cases())
async def test_bad_entity(world: World, key: str, value: Any) -> None:
    api = world.api
    good = api.entity_body(world.ca_id)
    body = changed(good, **{key: value})
    head = await api.feed_head()
    refused_as_input(await api.post(world.admin, f"/v1/party-sections/{P}/entities", json=body))
    assert await api.feed_head() == head
    # Nothing was recorded under the id: the same id with good data is accepted now.
    assert await api.entity_absent(world.admin, P, good), "a refused entity was recorded"


@pytest.mark.parametrize("body", NOT_AN_OBJECT)
async def test_an_entity_that_is_not_an_object(world: World, body: Any) -> None:
    api = world.api
    head = await api.feed_head()
    refused_as_input(await send(api, world.admin, "POST", f"/v1/party-sections/{P}/entities", body))
    assert await api.feed_head() == head


async def test_a_duplicate_entity_id_changes_nothing(world: World) -> None:
    api = world.api
    head = await api.feed_head()
    body = api.entity_body(world.ca_id, entity_id=world.entity_id, name="Someone else")
    assert_problem(await api.post(world.admin, f"/v1/party-sections/{P}/entities", json=body), 409)
    assert await api.feed_head() == head


# --- NDC periods --------------------------------------------------------------------------------------------

NDC_CASES = [
    pytest.param([{"first_year": 2030, "last_year": 2021}], id="reversed"),
    pytest.param([{"first_year": 2020, "last_year": 2030}], id="before-2021"),
    pytest.param([{"first_year": 2021, "last_year": 2101}], id="after-2100"),
    pytest.param([{"first_year": "twenty", "last_year": 2030}], id="first-not-a-number"),
    pytest.param([{"first_year": 2021.5, "last_year": 2030}], id="first-fractional"),
    pytest.param([{"first_year": [2021], "last_year": 2030}], id="first-a-list"),
    pytest.param([{"first_year": None, "last_year": 2030}], id="first-null"),
    pytest.param([{"first_year": 2021}], id="missing-last"),
    pytest.param([{"last_year": 2030}], id="missing-first"),
    pytest.param([{"first_year": 2021, "last_year": 2030, "target": "net zero"}], id="extra-field"),
    pytest.param({"first_year": 2021, "last_year": 2030}, id="object-not-list"),
    pytest.param("2021-2030", id="string"),
    pytest.param([2021, 2030], id="list-of-ints"),
    pytest.param(None, id="null"),
    pytest.param(b"[{not json", id="broken-json"),
    # A year belongs to one NDC implementation period (domain §5.2: first/last year of *the* period).
    pytest.param(
        [{"first_year": 2021, "last_year": 2030}, {"first_year": 2025, "last_year": 2035}], id="overlapping"
    ),
    pytest.param(
        [{"first_year": 2021, "last_year": 2030}, {"first_year": 2021, "last_year": 2030}], id="duplicated"
    ),
]


@pytest.mark.parametrize("body", NDC_CASES)
async def test_bad_ndc_periods(world: World, body: Any) -> None:
    api = world.api
    before = (await api.section_lookup(P))["ndc_periods"]
    head = await api.feed_head()
    refused_as_input(await send(api, world.admin, "PUT", f"/v1/party-sections/{P}/ndc-periods", body))
    assert (await api.section_lookup(P))["ndc_periods"] == before
    assert await api.feed_head() == head
