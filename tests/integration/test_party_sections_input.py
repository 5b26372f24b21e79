"""Bad input to every write of the party_sections service gets a 4xx problem and writes nothing: no row in
any table, no event in the outbox (unknown Parties, malformed ids, wrong types, oversized strings, extra
fields, bodies that are not what the route takes).

The caller is always one allowed to make the request, so the refusal is about the input.
"""

from typing import Any

import pytest
import pytest_asyncio

from tests.integration._party_sections import PROBLEM, Harness, module_harness

# One worker runs the whole module, so its app and database are made once per backend, not once per worker.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("party-sections-input")]

P = "GHA"
LONG_201 = "x" * 201
LONG_4001 = "y" * 4001
BROKEN = b"{not json"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ps(module_backend, database_factory, tmp_path_factory, tokens):
    async with module_harness(
        module_backend, database_factory, tmp_path_factory.mktemp("ps"), tokens
    ) as harness:
        await harness.section_in("open", P)
        response = await harness.client.post(
            "/v1/cooperative-approaches",
            json={"ca_id": "CA0100", "name": "Input CA", "participants": [P, "CHE"]},
            headers=harness.secretariat,
        )
        assert response.status_code == 201
        yield harness


async def _refused_and_nothing_written(ps: Harness, method: str, path: str, body: Any, headers: dict) -> None:
    counts, events = await ps.row_counts(), await ps.outbox_size()
    if isinstance(body, bytes):
        response = await ps.client.request(
            method, path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
    else:
        response = await ps.client.request(method, path, json=body, headers=headers)
    assert 400 <= response.status_code < 500 and response.status_code not in (401, 403), response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await ps.row_counts() == counts
    assert await ps.outbox_size() == events


def _with(base: dict, **changes: Any) -> dict:
    body = {**base, **changes}
    return {key: value for key, value in body.items() if value is not _DROP}


_DROP = object()
NOT_AN_OBJECT = [[], "text", None, BROKEN, 5]

CA = {"ca_id": "CA7777", "name": "Valid", "participants": [P, "CHE"]}
CA_BODIES = [
    *(_with(CA, ca_id=v) for v in ["CA12", "CA00123", "ca7777", "CB7777", "", 7777, None]),
    *(_with(CA, name=v) for v in [LONG_201, "", "   ", 12, None]),
    *(
        _with(CA, participants=v)
        for v in [[P], [P, P], [P, "XXX"], ["gha", "CHE"], P, [], [1, 2], ["EUR", P]]
    ),
    _with(CA, owner="me"),
    *(_with(CA, **{key: _DROP}) for key in CA),
    *NOT_AN_OBJECT,
]

SECTION = {"party": "SEN", "registry_id": "SEN01", "ars": False}
SECTION_BODIES = [
    *(_with(SECTION, party=v, registry_id=f"{v}01") for v in ["XXX", "sen", "SE", "SENE", "S1N"]),
    *(_with(SECTION, party=v) for v in [123, None, ""]),
    *(_with(SECTION, registry_id=v) for v in ["SEN1", "SEN001", "sen01", "SENAB", "CHE01", "XXX01", 1, None]),
    *(_with(SECTION, ars=v) for v in ["maybe", [], 2]),
    _with(SECTION, status="open"),
    _with(SECTION, version=3),
    *(_with(SECTION, **{key: _DROP}) for key in ("party", "registry_id")),
    *NOT_AN_OBJECT,
]

ACCOUNT = {"type": "holding", "name": "Holding"}
ACCOUNT_BODIES = [
    *(_with(ACCOUNT, type=v) for v in ["savings", 100, "100", "HOLDING", "", None]),
    *(_with(ACCOUNT, name=v) for v in [LONG_201, "", "  ", 5, None]),
    *(_with(ACCOUNT, holder_entity_id=v) for v in ["e" * 101, 7, ["x"], "NO-SUCH-ENTITY"]),
    _with(ACCOUNT, status="blocked"),
    _with(ACCOUNT, account_id="GHA01-100-9"),
    *(_with(ACCOUNT, **{key: _DROP}) for key in ACCOUNT),
    *NOT_AN_OBJECT,
]

ENTITY = {
    "entity_id": "IN-ENT-1",
    "name": "Volta Carbon Ltd",
    "country_of_incorporation": "GHA",
    "identification_number": "CS-1",
    "ca_id": "CA0100",
    "date_of_authorization": "2024-03-15",
}
ENTITY_BODIES = [
    *(_with(ENTITY, entity_id=v) for v in ["has space", "", "e" * 65, "-lead", "ENT/1", "ÉNT-1", 5, None]),
    *(_with(ENTITY, name=v) for v in [LONG_201, "", 5]),
    *(_with(ENTITY, country_of_incorporation=v) for v in ["XXX", "gha", "GH", 1]),
    *(_with(ENTITY, identification_number=v) for v in ["n" * 101, "", 5]),
    *(_with(ENTITY, ca_id=v) for v in ["CA12", "ca0100", 100, "CA9998"]),
    *(
        _with(ENTITY, date_of_authorization=v)
        for v in ["15/03/2024", "2024-13-01", "2024-02-30", 20240315, ""]
    ),
    *(_with(ENTITY, conditions=v) for v in [LONG_4001, 5, ""]),
    _with(ENTITY, change_and_revocation_conditions=LONG_4001),
    _with(ENTITY, additional_explanatory_information=LONG_4001),
    _with(ENTITY, party="CHE"),
    _with(ENTITY, created_at="2024-01-01T00:00:00Z"),
    *(_with(ENTITY, **{key: _DROP}) for key in ENTITY),
    *NOT_AN_OBJECT,
]

NDC_BODIES = [
    [{"first_year": 2030, "last_year": 2021}],
    [{"first_year": 2020, "last_year": 2030}],
    [{"first_year": 2021, "last_year": 2101}],
    [{"first_year": "twenty", "last_year": 2030}],
    [{"first_year": 2021.5, "last_year": 2030}],
    [{"first_year": None, "last_year": 2030}],
    [{"first_year": 2021}],
    [{"first_year": 2021, "last_year": 2030, "target": "net zero"}],
    [{"first_year": 2021, "last_year": 2030}, {"first_year": 2025, "last_year": 2035}],
    [{"first_year": 2021 + n, "last_year": 2021 + n} for n in range(51)],  # more than any Party has
    {"first_year": 2021, "last_year": 2030},
    "2021-2030",
    [2021, 2030],
    None,
    BROKEN,
]


def _ids(bodies: list) -> list:
    return [pytest.param(body, id=f"{n}:{str(body)[:40]}") for n, body in enumerate(bodies)]


@pytest.mark.parametrize("body", _ids(CA_BODIES))
async def test_bad_cooperative_approach(ps: Harness, body: Any) -> None:
    await _refused_and_nothing_written(ps, "POST", "/v1/cooperative-approaches", body, ps.secretariat)


@pytest.mark.parametrize("body", _ids(SECTION_BODIES))
async def test_bad_section_request(ps: Harness, body: Any) -> None:
    await _refused_and_nothing_written(ps, "POST", "/v1/party-sections", body, ps.secretariat)


@pytest.mark.parametrize("body", _ids(ACCOUNT_BODIES))
async def test_bad_account(ps: Harness, body: Any) -> None:
    await _refused_and_nothing_written(
        ps, "POST", f"/v1/party-sections/{P}/accounts", body, ps.party_admin(P)
    )


@pytest.mark.parametrize("body", _ids(ENTITY_BODIES))
async def test_bad_entity(ps: Harness, body: Any) -> None:
    await _refused_and_nothing_written(
        ps, "POST", f"/v1/party-sections/{P}/entities", body, ps.party_admin(P)
    )


@pytest.mark.parametrize("body", _ids(NDC_BODIES))
async def test_bad_ndc_periods(ps: Harness, body: Any) -> None:
    await _refused_and_nothing_written(
        ps, "PUT", f"/v1/party-sections/{P}/ndc-periods", body, ps.party_admin(P)
    )


@pytest.mark.parametrize(
    "body", _ids([{"reason": 5}, {"reason": LONG_4001}, {"reason": " "}, {"why": "x"}, [], BROKEN])
)
@pytest.mark.parametrize("move", ["suspend", "close"])
async def test_bad_move_body(ps: Harness, body: Any, move: str) -> None:
    await _refused_and_nothing_written(ps, "POST", f"/v1/party-sections/{P}/{move}", body, ps.secretariat)


@pytest.mark.parametrize("body", _ids([{"reason": 5}, {"reason": LONG_4001}, {"status": "open"}, BROKEN]))
@pytest.mark.parametrize("action", ["block", "close"])
async def test_bad_account_move_body(ps: Harness, body: Any, action: str) -> None:
    await _refused_and_nothing_written(ps, "POST", f"/v1/accounts/{P}01-100-1/{action}", body, ps.secretariat)


@pytest.mark.parametrize("party", ["XXX", "gha", "GHANA", "GH", "GHA01", "123"])
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "/open", {}),
        ("POST", "/close", {}),
        ("POST", "/accounts", ACCOUNT),
        ("POST", "/entities", ENTITY),
        ("PUT", "/ndc-periods", [{"first_year": 2021, "last_year": 2030}]),
        ("PATCH", "/settings", {"four_eyes": True}),
        ("GET", "", None),
    ],
)
async def test_unknown_or_malformed_party_in_the_path(
    ps: Harness, party: str, method: str, suffix: str, body: Any
) -> None:
    headers = {**ps.secretariat, "If-Match": "*"}
    await _refused_and_nothing_written(ps, method, f"/v1/party-sections/{party}{suffix}", body, headers)


@pytest.mark.parametrize(
    "account_id",
    [
        "GHA01-100",
        "GHA01-999-1",
        "gha01-100-1",
        "GHA01-100-0",
        "GHA01-100-01",
        "XXX01-100-1",
        "GHA01-100-x",
        "GHA01-100-" + "9" * 30,
    ],
)
async def test_malformed_account_ids(ps: Harness, account_id: str) -> None:
    for action in ("block", "unblock", "close"):
        await _refused_and_nothing_written(
            ps, "POST", f"/v1/accounts/{account_id}/{action}", None, ps.secretariat
        )
