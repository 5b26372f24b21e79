"""Party section lifecycle on the party_sections service (domain §3.3; SECTION_MOVES): every legal and
illegal move, who may move, the audit trail and the events, the zero-balance rule of the final close.

One app per backend for the module; each test takes Parties no other test touched.
"""

import pytest
import pytest_asyncio

from contracts.roles import Role
from tests.integration._party_sections import Harness, assert_problem, module_harness

# One worker runs the whole module, so its app and database are made once per backend, not once per worker.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("party-sections-lifecycle")]

STATUSES = ["requested", "open", "suspended", "closing", "closed"]
MOVES = ["open", "suspend", "reactivate", "close"]
#: (status, move) → the status it leads to; every other pair is illegal.
LEGAL = {
    ("requested", "open"): "open",
    ("open", "suspend"): "suspended",
    ("suspended", "reactivate"): "open",
    ("open", "close"): "closing",
    ("suspended", "close"): "closing",
    ("closing", "close"): "closed",
}
ALLOWED_FROM = {
    "requested": ["open"],
    "open": ["close", "suspend"],
    "suspended": ["close", "reactivate"],
    "closing": ["close"],
    "closed": [],
}
EVENT_OF = {
    "open": "party_section.opened",
    "suspend": "party_section.suspended",
    "reactivate": "party_section.reactivated",
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


async def test_the_whole_life_of_a_section_is_audited_and_published(ps: Harness) -> None:
    party = ps.spare_party()
    await ps.new_events()
    created = await ps.client.post(
        "/v1/party-sections",
        json={"party": party, "registry_id": f"{party}01", "ars": True},
        headers=ps.secretariat,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["party"], body["registry_id"], body["status"], body["ars"]) == (
        party,
        f"{party}01",
        "requested",
        True,
    )
    assert body["settings"] == {
        "four_eyes": False,
        "confidential_fields": [],
        "incoming_acceptance": "automatic",
    }
    assert body["version"] == 1 and created.headers["etag"] == '"1"'

    steps = [
        ("open", "open", "party_section.opened"),
        ("suspend", "suspended", "party_section.suspended"),
        ("reactivate", "open", "party_section.reactivated"),
        ("close", "closing", "party_section.closing"),
        ("close", "closed", "party_section.closed"),
    ]
    for n, (move, status, _) in enumerate(steps, start=2):
        response = await ps.move(party, move, json={"reason": f"step {n}"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status and response.json()["version"] == n
        assert response.headers["etag"] == f'"{n}"'
        read = await ps.client.get(f"/v1/party-sections/{party}", headers=ps.secretariat)
        assert read.json()["status"] == status and read.headers["etag"] == f'"{n}"'

    moves = [row for row in await ps.audit(party) if row["subject"] == "section"]
    assert [(row["action"], row["from_status"], row["to_status"]) for row in moves] == [
        ("section.request", None, "requested"),
        ("section.open", "requested", "open"),
        ("section.suspend", "open", "suspended"),
        ("section.reactivate", "suspended", "open"),
        ("section.close", "open", "closing"),
        ("section.finalize_close", "closing", "closed"),
    ]
    assert {row["actor"] for row in moves} == {"secretariat-1"}
    assert [row["reason"] for row in moves] == [None, "step 2", "step 3", "step 4", "step 5", "step 6"]
    assert all(row["at"] is not None for row in moves)

    events = [event for event in await ps.new_events() if event["type"].startswith("party_section.")]
    assert [event["type"] for event in events] == ["party_section.requested"] + [event for *_, event in steps]
    assert all(event["party"] == party and event["producer"] == "party_sections" for event in events)
    closed = events[-1]["data"]
    assert (
        closed["status"] == "closed"
        and closed["previous_status"] == "closing"
        and closed["reason"] == "step 6"
    )
    assert closed["version"] == 6 and closed["registry_id"] == f"{party}01"


@pytest.mark.parametrize("move", MOVES)
@pytest.mark.parametrize("status", STATUSES)
async def test_every_move_from_every_status(ps: Harness, status: str, move: str) -> None:
    party = await ps.section_in(status)
    before = await ps.section(party)
    await ps.new_events()
    audit_before = await ps.audit(party)
    response = await ps.move(party, move, json={"reason": "matrix"})
    target = LEGAL.get((status, move))
    if target is None:
        problem = assert_problem(response, 409, "illegal-section-move")
        assert problem["current_status"] == status
        assert problem["allowed_moves"] == ALLOWED_FROM[status]
        assert status in problem["detail"]
        assert await ps.section(party) == before
        assert await ps.audit(party) == audit_before
        assert await ps.new_events() == []
    else:
        assert response.status_code == 200, response.text
        after = await ps.section(party)
        assert after["status"] == target and after["version"] == before["version"] + 1
        audit = (await ps.audit(party))[len(audit_before) :]
        section_rows = [row for row in audit if row["subject"] == "section"]
        assert [(r["from_status"], r["to_status"], r["reason"]) for r in section_rows] == [
            (status, target, "matrix")
        ]
        types = [event["type"] for event in await ps.new_events()]
        expected = EVENT_OF.get(move) or (
            "party_section.closing" if target == "closing" else "party_section.closed"
        )
        assert types[0] == expected


async def test_opening_makes_the_seven_default_accounts_once(ps: Harness) -> None:
    party = await ps.section_in("requested")
    await ps.new_events()
    assert (await ps.move(party, "open")).status_code == 200
    accounts = await ps.accounts(party)
    assert [(a["account_id"], a["type"], a["type_code"], a["status"]) for a in accounts] == [
        (f"{party}01-100-1", "holding", 100, "open"),
        (f"{party}01-200-1", "ndc_use", 200, "open"),
        (f"{party}01-210-1", "oimp_use", 210, "open"),
        (f"{party}01-300-1", "cancellation", 300, "open"),
        (f"{party}01-310-1", "omge_cancellation", 310, "open"),
        (f"{party}01-320-1", "mandatory_omge_cancellation", 320, "open"),
        (f"{party}01-330-1", "adaptation_fund", 330, "open"),
    ]
    assert all(a["party"] == party and a["holder_entity_id"] is None and a["name"] for a in accounts)
    events = await ps.new_events()
    assert [e["type"] for e in events] == ["party_section.opened"] + ["account.opened"] * 7
    assert [e["data"]["account_id"] for e in events[1:]] == [a["account_id"] for a in accounts]
    assert (await ps.move(party, "suspend")).status_code == 200
    assert (await ps.move(party, "reactivate")).status_code == 200
    assert await ps.accounts(party) == accounts


async def test_the_final_close_needs_a_zero_balance_and_closes_the_accounts(ps: Harness) -> None:
    party = await ps.section_in("closing")
    before = await ps.section(party)
    await ps.new_events()

    ps.balances.parties[party] = 25
    problem = assert_problem(await ps.move(party, "close"), 409, "balance-not-zero")
    assert problem["total"] == 25
    ps.balances.parties[party] = 0
    ps.balances.down = True
    try:
        assert_problem(await ps.move(party, "close"), 503)
    finally:
        ps.balances.down = False
    assert await ps.section(party) == before
    assert await ps.new_events() == []
    assert f"/internal/v1/party-sections/{party}/balance" in ps.balances.calls

    response = await ps.move(party, "close")
    assert response.status_code == 200 and response.json()["status"] == "closed"
    # The holding account closes with the section; default terminal accounts are never closed.
    statuses = {a["type_code"]: a["status"] for a in await ps.accounts(party)}
    assert statuses == {
        100: "closed",
        200: "open",
        210: "open",
        300: "open",
        310: "open",
        320: "open",
        330: "open",
    }
    events = await ps.new_events()
    assert [e["type"] for e in events] == ["party_section.closed", "account.status_changed"]
    assert events[1]["data"]["account_id"] == f"{party}01-100-1"
    assert (events[1]["data"]["previous_status"], events[1]["data"]["status"]) == ("open", "closed")
    lookup = await ps.client.get(f"/internal/v1/accounts/{party}01-200-1", headers=ps.secretariat)
    assert (lookup.json()["status"], lookup.json()["section_status"]) == ("open", "closed")


async def test_the_first_close_does_not_ask_for_the_balance(ps: Harness) -> None:
    party = await ps.section_in("open")
    ps.balances.parties[party] = 10
    ps.balances.calls.clear()
    response = await ps.move(party, "close")
    assert response.status_code == 200 and response.json()["status"] == "closing"
    assert ps.balances.calls == []


@pytest.mark.parametrize(
    ("party_of_caller", "roles"),
    [
        ("own", [Role.PARTY_ADMIN]),
        ("own", [Role.VIEWER, Role.INITIATOR, Role.APPROVER, Role.AUTHORIZING_OFFICIAL]),
        ("own", [Role.AUDITOR]),
        ("own", [Role.REGISTRY]),
        (None, [Role.AUDITOR]),
        (None, [Role.SERVICE]),
    ],
)
@pytest.mark.parametrize("move", MOVES)
async def test_only_the_secretariat_moves_a_section(ps: Harness, party_of_caller, roles, move: str) -> None:
    party = await ps.section_in(
        "requested" if move == "open" else "suspended" if move == "reactivate" else "open"
    )
    before = await ps.section(party)
    headers = ps.headers(party if party_of_caller == "own" else None, *roles)
    assert_problem(await ps.client.post(f"/v1/party-sections/{party}/{move}", json={}, headers=headers), 403)
    assert await ps.section(party) == before


async def test_a_move_without_a_body_is_fine_and_a_bad_body_moves_nothing(ps: Harness) -> None:
    party = await ps.section_in("open")
    for body in (
        {"reason": "x" * 4001},
        {"reason": 5},
        {"reason": "ok", "status": "open"},
        [],
        {"reason": "  "},
    ):
        assert_problem(await ps.move(party, "suspend", json=body), 422)
    assert (await ps.section(party))["status"] == "open"
    response = await ps.move(party, "suspend")
    assert response.status_code == 200 and response.json()["status"] == "suspended"


async def test_moves_of_a_missing_section_are_404_and_of_a_bad_party_422(ps: Harness) -> None:
    party = ps.spare_party()
    for move in MOVES:
        assert_problem(await ps.move(party, move), 404, "section-not-found")
    for bad in ("XXX", "gha", "GHA01"):
        assert_problem(await ps.move(bad, "open"), 422, "validation-error")


async def test_a_party_admin_requests_its_own_section_only(ps: Harness) -> None:
    party, other = ps.spare_party(), ps.spare_party()
    admin = ps.party_admin(party)
    assert_problem(
        await ps.client.post(
            "/v1/party-sections", json={"party": other, "registry_id": f"{other}01"}, headers=admin
        ),
        403,
    )
    response = await ps.client.post(
        "/v1/party-sections", json={"party": party, "registry_id": f"{party}02"}, headers=admin
    )
    assert response.status_code == 201 and response.json()["status"] == "requested"
    assert [row["actor"] for row in await ps.audit(party)] == [f"{party.lower()}-admin"]
    again = await ps.client.post(
        "/v1/party-sections", json={"party": party, "registry_id": f"{party}03"}, headers=admin
    )
    assert_problem(again, 409, "section-exists")
    for roles in ([Role.VIEWER], [Role.AUDITOR], [Role.REGISTRY], [Role.AUTHORIZING_OFFICIAL]):
        refused = await ps.client.post(
            "/v1/party-sections",
            json={"party": other, "registry_id": f"{other}01"},
            headers=ps.headers(other, *roles),
        )
        assert_problem(refused, 403)
    assert_problem(await ps.client.get(f"/v1/party-sections/{other}", headers=ps.secretariat), 404)


async def test_the_history_shows_who_moved_the_section_when_and_why(ps: Harness) -> None:
    party = await ps.section_in("requested")
    for move in ("open", "suspend", "reactivate"):
        assert (await ps.move(party, move, json={"reason": f"because {move}"})).status_code == 200
    path = f"/v1/party-sections/{party}/history"
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await ps.client.get(path, params=params, headers=ps.headers(party, Role.VIEWER))
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        if not (cursor := page.json()["next_cursor"]):
            break
    assert [(e["from_status"], e["to_status"], e["actor"], e["reason"]) for e in seen] == [
        (None, "requested", "secretariat-1", None),
        ("requested", "open", "secretariat-1", "because open"),
        ("open", "suspended", "secretariat-1", "because suspend"),
        ("suspended", "open", "secretariat-1", "because reactivate"),
    ]
    assert all(e["party"] == party and e["at"] for e in seen)
    assert_problem(await ps.client.get(path, headers=ps.headers("CHE", Role.VIEWER)), 403)
    assert_problem(
        await ps.client.get(f"/v1/party-sections/{ps.spare_party()}/history", headers=ps.secretariat), 404
    )


async def test_the_list_of_sections_shows_what_the_caller_may_read(ps: Harness) -> None:
    one, two = await ps.section_in("requested"), await ps.section_in("open")

    async def listed(headers: dict[str, str], **params: str) -> list[str]:
        parties, cursor = [], None
        while True:
            query = {"limit": 50, **params} | ({"cursor": cursor} if cursor else {})
            page = await ps.client.get("/v1/party-sections", params=query, headers=headers)
            assert page.status_code == 200, page.text
            parties += [item["party"] for item in page.json()["items"]]
            if not (cursor := page.json()["next_cursor"]):
                return parties

    everything = await listed(ps.secretariat)
    assert {one, two} <= set(everything) and everything == sorted(everything)
    assert one in await listed(ps.secretariat, status="requested")
    assert two not in await listed(ps.secretariat, status="requested")
    assert set(await listed(ps.headers(None, Role.AUDITOR))) == set(everything)
    assert await listed(ps.headers(one, Role.VIEWER)) == [one]
    assert await listed(ps.headers(ps.spare_party(), Role.PARTY_ADMIN)) == []
    for headers in (ps.headers(one, Role.REGISTRY), ps.headers(None, Role.SERVICE)):
        assert_problem(await ps.client.get("/v1/party-sections", headers=headers), 403)
    assert_problem(
        await ps.client.get("/v1/party-sections", params={"status": "gone"}, headers=ps.secretariat), 422
    )
