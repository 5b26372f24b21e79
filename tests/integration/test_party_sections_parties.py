"""GET /v1/parties on the party_sections service itself (the gateway path is in tests/e2e)."""

import pytest

from contracts.roles import Role
from services.party_sections.app import create_app
from services.party_sections.config import Settings
from tests.support.apps import client_for
from tests.support.tokens import TokenFactory


@pytest.fixture
async def party_sections(make_database, tokens: TokenFactory):
    app = create_app(
        Settings(database_url=make_database("services.party_sections")), token_verifier=tokens.verifier()
    )
    async with client_for(app) as client:
        yield client


async def test_parties_need_a_token(party_sections) -> None:
    response = await party_sections.get("/v1/parties")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_any_role_of_any_party_reads_every_party(party_sections, tokens: TokenFactory) -> None:
    headers = tokens.headers(party="CHE", roles=[Role.VIEWER])
    response = await party_sections.get("/v1/parties", headers=headers)
    assert response.status_code == 200
    page = response.json()
    codes = [party["code"] for party in page["items"]]
    assert codes == sorted(codes) and len(codes) == len(set(codes))
    names = {party["code"]: party["name"] for party in page["items"]}
    assert names["GHA"] == "Ghana" and names["CHE"] == "Switzerland" and names["EUE"] == "European Union"
    assert page["next_cursor"] is None


async def test_parties_page_with_a_cursor_until_the_end(party_sections, tokens: TokenFactory) -> None:
    headers = tokens.headers(party=None, roles=[Role.SECRETARIAT_ADMIN])
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params = {"limit": 40} | ({"cursor": cursor} if cursor else {})
        page = (await party_sections.get("/v1/parties", params=params, headers=headers)).json()
        assert len(page["items"]) <= 40
        seen += [party["code"] for party in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = (await party_sections.get("/v1/parties", headers=headers)).json()["items"]
    assert seen == [party["code"] for party in everything]


@pytest.mark.parametrize(
    ("params", "slug"),
    [
        ({"limit": 0}, "validation-error"),
        ({"limit": 501}, "validation-error"),
        ({"cursor": "%%%"}, "invalid-cursor"),
    ],
)
async def test_bad_paging_input_is_a_4xx_problem(party_sections, tokens: TokenFactory, params, slug) -> None:
    headers = tokens.headers(party="GHA", roles=[Role.VIEWER])
    response = await party_sections.get("/v1/parties", params=params, headers=headers)
    assert 400 <= response.status_code < 500
    assert response.json()["type"].endswith(slug)
