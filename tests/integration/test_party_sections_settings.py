"""Section settings on the party_sections service: four-eyes and confidentiality designations behind
ETag / If-Match (200 with a new ETag, 412 stale, 428 missing), who may change them, and when.
"""

import pytest
import pytest_asyncio

from contracts.roles import Role
from tests.integration._party_sections import Harness, assert_problem, module_harness

# One worker runs the whole module, so its app and database are made once per backend, not once per worker.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("party-sections-settings")]

DESIGNATION = {
    "field": "authorizations.authorized_quantity",
    "basis": "Commercially sensitive (2/CMA.3 para 24)",
}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ps(module_backend, database_factory, tmp_path_factory, tokens):
    async with module_harness(
        module_backend, database_factory, tmp_path_factory.mktemp("ps"), tokens
    ) as harness:
        yield harness


async def _patch(ps: Harness, party: str, body: object, if_match: str | None, headers: dict | None = None):
    extra = {"If-Match": if_match} if if_match is not None else {}
    return await ps.client.patch(
        f"/v1/party-sections/{party}/settings",
        json=body,
        headers={**(headers or ps.party_admin(party)), **extra},
    )


async def test_etags_guard_the_settings(ps: Harness) -> None:
    party = await ps.section_in("open")
    read = await ps.client.get(f"/v1/party-sections/{party}", headers=ps.party_admin(party))
    etag = read.headers["etag"]
    assert etag == f'"{read.json()["version"]}"'
    await ps.new_events()
    counts = await ps.row_counts()

    assert_problem(await _patch(ps, party, {"four_eyes": True}, None), 428)
    stale = assert_problem(await _patch(ps, party, {"four_eyes": True}, '"1"'), 412)
    assert stale["current_etag"] == etag
    assert await ps.row_counts() == counts and await ps.new_events() == []

    ok = await _patch(ps, party, {"four_eyes": True}, etag)
    assert ok.status_code == 200, ok.text
    assert ok.json()["settings"]["four_eyes"] is True
    assert ok.headers["etag"] == f'"{ok.json()["version"]}"' != etag
    assert ok.json()["version"] == read.json()["version"] + 1
    again = await _patch(ps, party, {"four_eyes": False}, etag)
    assert assert_problem(again, 412)["current_etag"] == ok.headers["etag"]
    assert again.headers["etag"] == ok.headers["etag"]

    events = await ps.new_events()
    assert [e["type"] for e in events] == ["party_section.settings_changed"]
    assert events[0]["data"]["settings"]["four_eyes"] is True and events[0]["party"] == party
    change = (await ps.audit(party))[-1]
    assert change["action"] == "section.settings" and change["actor"] == f"{party.lower()}-admin"
    assert change["details"] == {"before": {"four_eyes": False}, "after": {"four_eyes": True}}


async def test_the_settings_resource_carries_the_section_etag(ps: Harness) -> None:
    party = await ps.section_in("open")
    read = await ps.client.get(f"/v1/party-sections/{party}/settings", headers=ps.headers(party, Role.VIEWER))
    assert read.status_code == 200 and read.json() == {
        "four_eyes": False,
        "confidential_fields": [],
        "incoming_acceptance": "automatic",
    }
    assert read.headers["etag"] == '"2"'
    assert (await _patch(ps, party, {"four_eyes": True}, read.headers["etag"])).status_code == 200
    again = await ps.client.get(f"/v1/party-sections/{party}/settings", headers=ps.party_admin(party))
    assert again.json()["four_eyes"] is True and again.headers["etag"] == '"3"'
    assert_problem(
        await ps.client.get(
            f"/v1/party-sections/{party}/settings", headers=ps.headers("CHE", Role.PARTY_ADMIN)
        ),
        403,
    )


async def test_only_the_fields_sent_change(ps: Harness) -> None:
    party = await ps.section_in("open")
    first = await _patch(ps, party, {"confidential_fields": [DESIGNATION]}, '"2"')
    assert first.status_code == 200, first.text
    assert first.json()["settings"] == {
        "four_eyes": False,
        "confidential_fields": [DESIGNATION],
        "incoming_acceptance": "automatic",
    }
    second = await _patch(ps, party, {"four_eyes": True}, first.headers["etag"])
    assert second.json()["settings"] == {
        "four_eyes": True,
        "confidential_fields": [DESIGNATION],
        "incoming_acceptance": "automatic",
    }
    cleared = await _patch(ps, party, {"confidential_fields": []}, second.headers["etag"])
    assert cleared.json()["settings"] == {
        "four_eyes": True,
        "confidential_fields": [],
        "incoming_acceptance": "automatic",
    }


async def test_a_patch_that_changes_nothing_keeps_the_version(ps: Harness) -> None:
    party = await ps.section_in("open")
    await ps.new_events()
    for body in ({}, {"four_eyes": False}, {"confidential_fields": []}):
        response = await _patch(ps, party, body, '"2"')
        assert response.status_code == 200 and response.json()["version"] == 2
        assert response.headers["etag"] == '"2"'
    assert await ps.new_events() == []


@pytest.mark.parametrize("spelling", ['"2"', "2", 'W/"2"', '"7", "2"', "*"])
async def test_if_match_spellings_that_match(ps: Harness, spelling: str) -> None:
    party = await ps.section_in("open")
    assert (await _patch(ps, party, {"four_eyes": True}, spelling)).status_code == 200


@pytest.mark.parametrize("spelling", ['"3"', "abc", '"abc"', "*1", "-1", 'W/"x"'])
async def test_if_match_spellings_that_do_not(ps: Harness, spelling: str) -> None:
    party = await ps.section_in("open")
    assert_problem(await _patch(ps, party, {"four_eyes": True}, spelling), 412)
    assert (await ps.section(party))["version"] == 2


async def test_a_blank_if_match_is_a_missing_one(ps: Harness) -> None:
    party = await ps.section_in("open")
    assert_problem(await _patch(ps, party, {"four_eyes": True}, " "), 428)


@pytest.mark.parametrize(
    ("status", "allowed"), [("requested", True), ("suspended", False), ("closing", False), ("closed", False)]
)
async def test_settings_change_while_requested_or_open_only(ps: Harness, status: str, allowed: bool) -> None:
    party = await ps.section_in(status)
    before = await ps.section(party)
    response = await _patch(ps, party, {"four_eyes": True}, f'"{before["version"]}"')
    if allowed:
        assert response.status_code == 200
    else:
        assert assert_problem(response, 409, "section-not-writable")["current_status"] == status
        assert await ps.section(party) == before
    # A stale tag is the first answer whatever the status: the client must re-read before anything else.
    assert_problem(await _patch(ps, party, {"four_eyes": False}, '"999"'), 412)


@pytest.mark.parametrize(
    ("caller", "roles"),
    [
        ("secretariat", [Role.SECRETARIAT_ADMIN]),
        ("secretariat", [Role.AUDITOR]),
        ("own", [Role.VIEWER]),
        ("own", [Role.AUTHORIZING_OFFICIAL, Role.INITIATOR, Role.APPROVER]),
        ("own", [Role.AUDITOR]),
        ("own", [Role.REGISTRY]),
        ("other", [Role.PARTY_ADMIN]),
    ],
)
async def test_only_the_partys_admin_changes_settings(ps: Harness, caller: str, roles: list[Role]) -> None:
    party = await ps.section_in("open")
    headers = ps.headers({"own": party, "other": "CHE", "secretariat": None}[caller], *roles)
    # Refused before the body or the tag is looked at: a bad body still gets the 403.
    assert_problem(await _patch(ps, party, {"four_eyes": True}, '"2"', headers), 403)
    assert_problem(await _patch(ps, party, {"four_eyes": "maybe"}, None, headers), 403)
    assert (await ps.section(party))["settings"]["four_eyes"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"four_eyes": "maybe"},
        {"four_eyes": 2},
        {"confidential_fields": [{"field": "nope.field", "basis": "x"}]},
        {"confidential_fields": [{"field": DESIGNATION["field"]}]},
        {"confidential_fields": [{**DESIGNATION, "basis": "b" * 4001}]},
        {"confidential_fields": [DESIGNATION, DESIGNATION]},
        {"confidential_fields": [{**DESIGNATION, "level": "secret"}]},
        {"four_eyes": True, "version": 9},
        [],
    ],
)
async def test_bad_settings_write_nothing(ps: Harness, body: object) -> None:
    party = await ps.section_in("open")
    counts = await ps.row_counts()
    assert_problem(await _patch(ps, party, body, '"2"'), 422)
    assert await ps.row_counts() == counts
    assert (await ps.section(party))["version"] == 2


async def test_readers_of_a_section(ps: Harness) -> None:
    party = await ps.section_in("open")
    for headers in (
        ps.secretariat,
        ps.headers(None, Role.AUDITOR),
        ps.headers(party, Role.AUDITOR),
        ps.headers(party, Role.VIEWER),
        ps.party_admin(party),
    ):
        response = await ps.client.get(f"/v1/party-sections/{party}", headers=headers)
        assert response.status_code == 200 and response.headers["etag"] == '"2"'
    for headers in (
        ps.headers("CHE", Role.VIEWER),
        ps.headers("CHE", Role.AUDITOR),
        ps.headers(party, Role.REGISTRY),
        ps.headers(None, Role.SERVICE),
    ):
        assert_problem(await ps.client.get(f"/v1/party-sections/{party}", headers=headers), 403)
    assert_problem(await ps.client.get(f"/v1/party-sections/{party}"), 401)
