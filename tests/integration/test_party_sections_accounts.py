"""Accounts on the party_sections service (API.md; domain §3.1–3.2): ids, listing, opening more accounts
in open sections only, block/unblock/close and their rules, and who may do it (another Party's account is
answered 404, as if it did not exist).
"""

import pytest
import pytest_asyncio

from contracts.roles import Role
from tests.integration._party_sections import Harness, assert_problem, module_harness

# One worker runs the whole module, so its app and database are made once per backend, not once per worker.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("party-sections-accounts")]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ps(module_backend, database_factory, tmp_path_factory, tokens):
    async with module_harness(
        module_backend, database_factory, tmp_path_factory.mktemp("ps"), tokens
    ) as harness:
        yield harness


async def _open_account(ps: Harness, party: str, account_type: str = "holding", **extra) -> dict:
    response = await ps.client.post(
        f"/v1/party-sections/{party}/accounts",
        json={"type": account_type, "name": f"Extra {account_type}", **extra},
        headers=ps.party_admin(party),
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_accounts_are_numbered_per_type_and_listed_in_pages(ps: Harness) -> None:
    party = await ps.section_in("open")
    await ps.new_events()
    made = [await _open_account(ps, party, t) for t in ("holding", "holding", "ndc_use", "adaptation_fund")]
    assert [a["account_id"] for a in made] == [
        f"{party}01-100-2",
        f"{party}01-100-3",
        f"{party}01-200-2",
        f"{party}01-330-2",
    ]
    assert all(a["status"] == "open" and a["party"] == party for a in made)
    events = await ps.new_events()
    assert [e["type"] for e in events] == ["account.opened"] * 4
    assert [e["data"] for e in events] == made

    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await ps.client.get(
            f"/v1/party-sections/{party}/accounts", params=params, headers=ps.party_admin(party)
        )
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 3
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [a["account_id"] for a in seen] == [
        f"{party}01-100-1",
        f"{party}01-100-2",
        f"{party}01-100-3",
        f"{party}01-200-1",
        f"{party}01-200-2",
        f"{party}01-210-1",
        f"{party}01-300-1",
        f"{party}01-310-1",
        f"{party}01-320-1",
        f"{party}01-330-1",
        f"{party}01-330-2",
    ]
    opened = [row for row in await ps.audit(party) if row["action"] == "account.open"]
    assert len(opened) == 11 and {row["actor"] for row in opened[7:]} == {f"{party.lower()}-admin"}


async def test_an_account_for_an_authorized_entity(ps: Harness) -> None:
    party = await ps.section_in("open")
    ca_id = "CA3001"
    await ps.client.post(
        "/v1/cooperative-approaches",
        json={"ca_id": ca_id, "name": "Accounts CA", "participants": [party, "CHE"]},
        headers=ps.secretariat,
    )
    entity = {
        "entity_id": "ACC-ENT-1",
        "name": "Holder Ltd",
        "country_of_incorporation": party,
        "identification_number": "123",
        "ca_id": ca_id,
        "date_of_authorization": "2024-01-31",
    }
    response = await ps.client.post(
        f"/v1/party-sections/{party}/entities", json=entity, headers=ps.party_admin(party)
    )
    assert response.status_code == 201, response.text
    account = await _open_account(ps, party, holder_entity_id="ACC-ENT-1")
    assert account["holder_entity_id"] == "ACC-ENT-1"
    counts = await ps.row_counts()
    missing = await ps.client.post(
        f"/v1/party-sections/{party}/accounts",
        json={"type": "holding", "name": "x", "holder_entity_id": "NOBODY"},
        headers=ps.party_admin(party),
    )
    assert_problem(missing, 422, "unknown-holder-entity")
    assert await ps.row_counts() == counts


@pytest.mark.parametrize("status", ["requested", "suspended", "closing", "closed"])
async def test_accounts_open_only_in_an_open_section(ps: Harness, status: str) -> None:
    party = await ps.section_in(status)
    counts = await ps.row_counts()
    response = await ps.client.post(
        f"/v1/party-sections/{party}/accounts",
        json={"type": "holding", "name": "Late"},
        headers=ps.party_admin(party),
    )
    problem = assert_problem(response, 409, "section-not-writable")
    assert problem["current_status"] == status
    assert await ps.row_counts() == counts


@pytest.mark.parametrize(
    ("caller", "roles"),
    [
        ("secretariat", [Role.SECRETARIAT_ADMIN]),
        ("own", [Role.VIEWER]),
        ("own", [Role.INITIATOR, Role.APPROVER]),
        ("own", [Role.AUDITOR]),
        ("own", [Role.REGISTRY]),
        ("other", [Role.PARTY_ADMIN]),
        ("secretariat", [Role.SERVICE]),
    ],
)
async def test_only_the_partys_admin_opens_accounts(ps: Harness, caller: str, roles: list[Role]) -> None:
    party = await ps.section_in("open")
    token_party = {"secretariat": None, "own": party, "other": "CHE"}[caller]
    counts = await ps.row_counts()
    response = await ps.client.post(
        f"/v1/party-sections/{party}/accounts",
        json={"type": "holding", "name": "Nope"},
        headers=ps.headers(token_party, *roles),
    )
    assert_problem(response, 403)
    assert await ps.row_counts() == counts


async def test_block_unblock_close_and_their_events(ps: Harness) -> None:
    party = await ps.section_in("open")
    account = (await _open_account(ps, party))["account_id"]
    await ps.new_events()
    admin = ps.party_admin(party)
    for action, status, reason in (
        ("block", "blocked", "suspected compromise"),
        ("unblock", "open", None),
        ("block", "blocked", None),
        ("close", "closed", "no longer needed"),
    ):
        body = {"reason": reason} if reason else None
        response = await ps.client.post(f"/v1/accounts/{account}/{action}", json=body, headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
    events = await ps.new_events()
    assert [(e["type"], e["data"]["previous_status"], e["data"]["status"]) for e in events] == [
        ("account.status_changed", "open", "blocked"),
        ("account.status_changed", "blocked", "open"),
        ("account.status_changed", "open", "blocked"),
        ("account.status_changed", "blocked", "closed"),
    ]
    assert events[0]["data"]["reason"] == "suspected compromise" and events[0]["party"] == party
    rows = [row for row in await ps.audit(party) if row["subject"] == f"account:{account}"]
    assert [(r["action"], r["from_status"], r["to_status"]) for r in rows] == [
        ("account.open", None, "open"),
        ("account.block", "open", "blocked"),
        ("account.unblock", "blocked", "open"),
        ("account.block", "open", "blocked"),
        ("account.close", "blocked", "closed"),
    ]
    for action in ("block", "unblock", "close"):
        problem = assert_problem(await ps.client.post(f"/v1/accounts/{account}/{action}", headers=admin), 409)
        assert problem["current_status"] == "closed" and problem["allowed_moves"] == []
    assert await ps.new_events() == []
    # Each committed move told the ledger to drop its cached lookup of the account, before answering.
    told = [i for i in ps.balances.invalidations if i["account_id"] == account]
    assert told == [{"party": party, "account_id": account}] * 4


async def test_illegal_account_moves_name_the_status(ps: Harness) -> None:
    party = await ps.section_in("open")
    account = f"{party}01-100-1"
    problem = assert_problem(
        await ps.client.post(f"/v1/accounts/{account}/unblock", headers=ps.secretariat), 409
    )
    assert problem["current_status"] == "open" and problem["allowed_moves"] == ["block", "close"]
    assert (await ps.client.post(f"/v1/accounts/{account}/block", headers=ps.secretariat)).status_code == 200
    problem = assert_problem(
        await ps.client.post(f"/v1/accounts/{account}/block", headers=ps.secretariat), 409
    )
    assert problem["current_status"] == "blocked" and problem["allowed_moves"] == ["close", "unblock"]


async def test_closing_needs_a_zero_balance(ps: Harness) -> None:
    party = await ps.section_in("open")
    account = (await _open_account(ps, party))["account_id"]
    ps.balances.accounts[account] = 7
    counts, size = await ps.row_counts(), await ps.outbox_size()
    problem = assert_problem(
        await ps.client.post(f"/v1/accounts/{account}/close", headers=ps.party_admin(party)),
        409,
        "balance-not-zero",
    )
    assert problem["total"] == 7
    ps.balances.accounts[account] = 0
    ps.balances.down = True
    try:
        assert_problem(
            await ps.client.post(f"/v1/accounts/{account}/close", headers=ps.party_admin(party)), 503
        )
    finally:
        ps.balances.down = False
    assert await ps.row_counts() == counts and await ps.outbox_size() == size
    response = await ps.client.post(f"/v1/accounts/{account}/close", headers=ps.party_admin(party))
    assert response.status_code == 200 and response.json()["status"] == "closed"
    assert f"/internal/v1/accounts/{account}/balance" in ps.balances.calls


@pytest.mark.parametrize("code", [200, 210, 300, 310, 320, 330])
async def test_default_terminal_accounts_are_never_closed(ps: Harness, code: int) -> None:
    party = await ps.section_in("open")
    ps.balances.calls.clear()
    response = await ps.client.post(f"/v1/accounts/{party}01-{code}-1/close", headers=ps.secretariat)
    assert_problem(response, 409, "illegal-account-move")
    assert ps.balances.calls == []  # refused before asking anyone
    # ... but an extra account of the same type, empty, may close; and the default holding account too.
    extra = await _open_account(ps, party, {200: "ndc_use", 210: "oimp_use"}.get(code, "cancellation"))
    assert (
        await ps.client.post(f"/v1/accounts/{extra['account_id']}/close", headers=ps.secretariat)
    ).status_code == 200
    assert (
        await ps.client.post(f"/v1/accounts/{party}01-100-1/close", headers=ps.secretariat)
    ).status_code == 200


@pytest.mark.parametrize(("status", "allowed"), [("suspended", False), ("closing", True), ("closed", False)])
async def test_account_changes_follow_the_section_status(ps: Harness, status: str, allowed: bool) -> None:
    party = await ps.section_in("open")
    account = (await _open_account(ps, party))["account_id"]
    for move in {"suspended": ["suspend"], "closing": ["close"], "closed": ["close", "close"]}[status]:
        assert (await ps.move(party, move)).status_code == 200
    for headers in (ps.party_admin(party), ps.secretariat):
        response = await ps.client.post(f"/v1/accounts/{account}/block", headers=headers)
        if allowed:
            assert response.status_code == 200, response.text
            assert (
                await ps.client.post(f"/v1/accounts/{account}/unblock", headers=headers)
            ).status_code == 200
        else:
            assert_problem(response, 409, "section-not-writable" if status != "closed" else None)


@pytest.mark.parametrize(
    ("caller", "roles", "status"),
    [
        ("own", [Role.PARTY_ADMIN], 200),
        ("secretariat", [Role.SECRETARIAT_ADMIN], 200),
        ("own", [Role.VIEWER], 403),
        ("own", [Role.INITIATOR, Role.APPROVER, Role.AUTHORIZING_OFFICIAL], 403),
        ("own", [Role.AUDITOR], 403),
        ("own", [Role.REGISTRY], 403),
        ("secretariat", [Role.AUDITOR], 403),
        # Another Party's account is not revealed: 404, whatever the roles.
        ("other", [Role.PARTY_ADMIN], 404),
        ("other", [Role.VIEWER], 404),
        ("other", [Role.AUDITOR], 404),
        ("other", [Role.REGISTRY], 404),
        ("secretariat", [Role.SERVICE], 404),
    ],
)
async def test_who_may_block_an_account(ps: Harness, caller: str, roles: list[Role], status: int) -> None:
    party = await ps.section_in("open")
    account = f"{party}01-100-1"
    headers = ps.headers({"own": party, "other": "CHE", "secretariat": None}[caller], *roles)
    response = await ps.client.post(f"/v1/accounts/{account}/block", headers=headers)
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        problem = assert_problem(response, status)
        if status == 404:
            # Exactly the answer for an account that does not exist.
            missing = await ps.client.post(f"/v1/accounts/{party}01-100-99/block", headers=headers)
            assert missing.json()["type"] == problem["type"] and missing.status_code == 404
        assert (await ps.accounts(party))[0]["status"] == "open"


@pytest.mark.parametrize(
    ("caller", "roles", "status"),
    [
        ("own", [Role.VIEWER], 200),
        ("own", [Role.AUTHORIZING_OFFICIAL], 200),
        ("own", [Role.AUDITOR], 200),
        ("secretariat", [Role.AUDITOR], 200),
        ("secretariat", [Role.SECRETARIAT_ADMIN], 200),
        ("own", [Role.REGISTRY], 403),
        ("other", [Role.PARTY_ADMIN], 403),
        ("other", [Role.AUDITOR], 403),
        ("secretariat", [Role.SERVICE], 403),
    ],
)
async def test_who_may_list_accounts(ps: Harness, caller: str, roles: list[Role], status: int) -> None:
    party = await ps.section_in("open")
    headers = ps.headers({"own": party, "other": "CHE", "secretariat": None}[caller], *roles)
    response = await ps.client.get(f"/v1/party-sections/{party}/accounts", headers=headers)
    if status == 200:
        assert response.status_code == 200 and len(response.json()["items"]) == 7
    else:
        assert_problem(response, status)


async def test_account_ids_in_paths(ps: Harness) -> None:
    party = await ps.section_in("open")
    for bad in (
        f"{party}01-100",
        f"{party}01-999-1",
        f"{party.lower()}01-100-1",
        f"{party}01-100-0",
        "XXX01-100-1",
    ):
        assert_problem(await ps.client.post(f"/v1/accounts/{bad}/block", headers=ps.secretariat), 422)
    assert_problem(
        await ps.client.post(f"/v1/accounts/{party}01-100-99/block", headers=ps.secretariat),
        404,
        "account-not-found",
    )
    never = ps.spare_party()
    assert_problem(await ps.client.post(f"/v1/accounts/{never}01-100-1/block", headers=ps.secretariat), 404)
    assert_problem(await ps.client.get(f"/v1/party-sections/{never}/accounts", headers=ps.secretariat), 404)


async def test_a_requested_section_lists_no_accounts(ps: Harness) -> None:
    party = await ps.section_in("requested")
    response = await ps.client.get(f"/v1/party-sections/{party}/accounts", headers=ps.party_admin(party))
    assert response.status_code == 200 and response.json() == {"items": [], "next_cursor": None}


async def test_one_account_of_a_section(ps: Harness) -> None:
    party = await ps.section_in("open")
    path = f"/v1/party-sections/{party}/accounts/{party}01-310-1"
    response = await ps.client.get(path, headers=ps.headers(party, Role.INITIATOR))
    assert response.status_code == 200 and response.json()["type"] == "omge_cancellation"
    assert_problem(await ps.client.get(path, headers=ps.headers("CHE", Role.PARTY_ADMIN)), 403)
    # An account id of another section under this section's path is not found here.
    other = await ps.section_in("open")
    assert_problem(
        await ps.client.get(f"/v1/party-sections/{party}/accounts/{other}01-100-1", headers=ps.secretariat),
        404,
    )
    assert_problem(
        await ps.client.get(f"/v1/party-sections/{party}/accounts/{party}01-100-5", headers=ps.secretariat),
        404,
    )
