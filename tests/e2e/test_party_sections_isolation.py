"""The isolation matrix of issue 3: every endpoint of API.md's "Reference data and Party sections" × every
role × the caller's own Party (A) or another Party (B), through the gateway.

The expectations below are written by hand from API.md, DESIGN §3 and domain §3.4; they are deliberately NOT
derived from the implementation's permission table, so that the two can disagree. Each cell is two letters,
own Party then other Party:

    Y  allowed: the endpoint's success status (or, where this file says so, a 409 for the state it is in)
    N  refused: 403 problem
    H  refused, hidden: 404 problem (another Party's account under /v1/accounts/{id}/...)
    R  refused: 403 or 404 problem (a registry client on another Party's account: both rules apply)
    E  the contract does not decide: allowed or a 403 problem, never anything else

A Secretariat auditor (party null) reads every Party's section, accounts, entities and NDC periods: API.md
names the auditor on the section read, DESIGN §3 lets it "read confidential data of the Parties it is
granted" and domain §3.4 gives it holdings, transactions and the AEF, which need the accounts and entities.

For Secretariat principals (no Party) "own" is Party A and "other" is Party B. A refused write must change
nothing: the target's section, accounts, NDC periods or entity are read back, and party_sections' event feed
(every write publishes an event) must not have moved.

The world (two open sections, one client per role, a cooperative approach, entities, NDC periods) is built
once per backend; every cell leaves it as it found it. The Secretariat's allowed `open` and `close` cells act
on a fresh section of a spare Party, since a section cannot go back to `requested` nor leave `closing`.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio

from tests.support.party_api import Actor, PartyApi, assert_problem, module_suite

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("party-sections-isolation")]

A, B, THIRD = "GHA", "CHE", "KEN"

ROLES = (
    "secretariat_admin",  # party null
    "secretariat_auditor",  # auditor, party null
    "party_admin",  # the rest: Party A
    "authorizing_official",
    "initiator",
    "approver",
    "viewer",
    "party_auditor",  # auditor of Party A
    "registry",  # a connected registry of Party A (registry_id GHA01)
)

# fmt: off
EXPECTED: dict[str, tuple[str, ...]] = {
    #                                SA    SAUD  PA    AO    INI   APP   VIEW  PAUD  REG
    "GET /v1/parties":              ("YY", "YY", "YY", "YY", "YY", "YY", "YY", "YY", "YY"),
    "POST /v1/cooperative-approaches":
                                    ("YY", "NN", "NN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "GET /v1/cooperative-approaches":
                                    ("YY", "YY", "YY", "YY", "YY", "YY", "YY", "YY", "YY"),
    "GET /v1/cooperative-approaches/{ca_id}":
                                    ("YY", "YY", "YY", "YY", "YY", "YY", "YY", "YY", "YY"),
    # allowed callers get 409: both Parties already have a section
    "POST /v1/party-sections":      ("YY", "NN", "YN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "POST /v1/party-sections/{party}/open":
                                    ("YY", "NN", "NN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "POST /v1/party-sections/{party}/suspend":
                                    ("YY", "NN", "NN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "POST /v1/party-sections/{party}/reactivate":
                                    ("YY", "NN", "NN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "POST /v1/party-sections/{party}/close":
                                    ("YY", "NN", "NN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "GET /v1/party-sections/{party}":
                                    ("YY", "YY", "YN", "YN", "YN", "YN", "YN", "YN", "NN"),
    "PATCH /v1/party-sections/{party}/settings":
                                    ("NN", "NN", "YN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "GET /v1/party-sections/{party}/accounts":
                                    ("YY", "YY", "YN", "YN", "YN", "YN", "YN", "YN", "NN"),
    "POST /v1/party-sections/{party}/accounts":
                                    ("NN", "NN", "YN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "POST /v1/accounts/{account_id}/block":
                                    ("YY", "NN", "YH", "NH", "NH", "NH", "NH", "NH", "NR"),
    "POST /v1/accounts/{account_id}/unblock":
                                    ("YY", "NN", "YH", "NH", "NH", "NH", "NH", "NH", "NR"),
    "POST /v1/accounts/{account_id}/close":
                                    ("YY", "NN", "YH", "NH", "NH", "NH", "NH", "NH", "NR"),
    "POST /v1/party-sections/{party}/entities":
                                    ("NN", "NN", "YN", "NN", "NN", "NN", "NN", "NN", "NN"),
    "PUT /v1/party-sections/{party}/ndc-periods":
                                    ("NN", "NN", "YN", "NN", "NN", "NN", "NN", "NN", "NN"),
    # Beyond API.md's table: reads the team added "in the same style", tested when the gateway's OpenAPI
    # document has them. Expectations follow the nearest API.md row ("Entities/NDC reads similar").
    # The list has no target: a Party principal may be refused or see its own section only (checked).
    "GET /v1/party-sections":       ("YY", "YY", "EE", "EE", "EE", "EE", "EE", "EE", "NN"),
    "GET /v1/party-sections/{party}/settings":
                                    ("YY", "YY", "YN", "YN", "YN", "YN", "YN", "YN", "NN"),
    "GET /v1/party-sections/{party}/history":
                                    ("YY", "YY", "YN", "YN", "YN", "YN", "YN", "YN", "NN"),
    "GET /v1/party-sections/{party}/accounts/{account_id}":
                                    ("YY", "YY", "YN", "YN", "YN", "YN", "YN", "YN", "NN"),
    "GET /v1/party-sections/{party}/entities":
                                    ("YY", "YY", "YN", "YN", "YN", "YN", "YN", "YN", "NN"),
    "GET /v1/party-sections/{party}/entities/{entity_id}":
                                    ("YY", "YY", "YN", "YN", "YN", "YN", "YN", "YN", "NN"),
    "GET /v1/party-sections/{party}/ndc-periods":
                                    ("YY", "YY", "YN", "YN", "YN", "YN", "YN", "YN", "NN"),
}
# fmt: on
#: Reads the team added beyond API.md; they are part of the contract now and must stay published.
OPTIONAL = {
    "GET /v1/party-sections",
    "GET /v1/party-sections/{party}/settings",
    "GET /v1/party-sections/{party}/history",
    "GET /v1/party-sections/{party}/accounts/{account_id}",
    "GET /v1/party-sections/{party}/entities",
    "GET /v1/party-sections/{party}/entities/{entity_id}",
    "GET /v1/party-sections/{party}/ndc-periods",
}

#: What an allowed cell answers.
SUCCESS: dict[str, set[int]] = {endpoint: {200} for endpoint in EXPECTED} | {
    "POST /v1/cooperative-approaches": {201},
    "POST /v1/party-sections": {409},
    "POST /v1/party-sections/{party}/accounts": {201},
    "POST /v1/party-sections/{party}/entities": {201},
}

NDC_1 = [{"first_year": 2021, "last_year": 2030}]
NDC_2 = [{"first_year": 2021, "last_year": 2025}, {"first_year": 2026, "last_year": 2030}]


@dataclass
class World:
    api: PartyApi
    actors: dict[str, Actor | None]
    setup_admins: dict[str, Actor]
    ca_of: dict[str, str]
    shared_ca: str
    entity_of: dict[str, str]
    public_paths: set[str]
    skipped: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _normalise(path: str) -> str:
    """`/v1/party-sections/{party_code}/x` → `/v1/party-sections/{}/x`."""
    return "/".join("{}" if part.startswith("{") else part for part in path.split("/"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(module_backend, database_factory, tmp_path_factory):
    async with module_suite(module_backend, database_factory, tmp_path_factory.mktemp("suite")) as suite:
        api = await PartyApi.start(suite)
        await api.add_admins(4)
        api.reserve(A, B, THIRD)
        for party in (A, B):
            await api.section_in("open", party)
        actors: dict[str, Actor | None] = {
            "secretariat_admin": await api.actor("matrix secretariat_admin", None, ["secretariat_admin"]),
            "secretariat_auditor": await api.actor("matrix secretariat auditor", None, ["auditor"]),
        }
        for role in ("party_admin", "authorizing_official", "initiator", "approver", "viewer"):
            actors[role] = await api.actor(f"matrix {A} {role}", A, [role])
        actors["party_auditor"] = await api.actor(f"matrix {A} auditor", A, ["auditor"])
        skipped: dict[str, str] = {}
        registry = await api.post(
            api.admin,
            "/v1/clients",
            json={
                "name": f"matrix {A}01 registry",
                "party": A,
                "roles": ["registry"],
                "registry_id": f"{A}01",
            },
        )
        if registry.status_code == 201:
            token = await suite.token(registry.json()["client_id"], registry.json()["client_secret"])
            actors["registry"] = Actor(
                "registry",
                A,
                ("registry",),
                registry.json()["client_id"],
                {"Authorization": f"Bearer {token}"},
            )
        else:
            # Once the gateway insists on a registered connected registry (issue 7), register one above:
            # the registry rows of the matrix must keep running.
            actors["registry"] = None
            skipped["registry"] = (
                f"the gateway refused a registry client: {registry.status_code} {registry.text}"
            )
        setup_admins = {
            A: await api.actor(f"setup {A} admin", A, ["party_admin"]),
            B: await api.actor(f"setup {B} admin", B, ["party_admin"]),
        }
        shared_ca = await api.register_ca([A, B], "GHA-CHE matrix approach")
        ca_of = {A: shared_ca, B: await api.register_ca([B, THIRD], "CHE-KEN matrix approach")}
        entity_of: dict[str, str] = {}
        for party in (A, B):
            entity = api.entity_body(shared_ca, country_of_incorporation=party)
            entity_of[party] = entity["entity_id"]
            response = await api.post(
                setup_admins[party], f"/v1/party-sections/{party}/entities", json=entity
            )
            assert response.status_code == 201, response.text
            response = await api.call(
                setup_admins[party], "PUT", f"/v1/party-sections/{party}/ndc-periods", json=NDC_1
            )
            assert response.status_code == 200, response.text
        document = (await suite.client.get("/openapi.json")).json()
        public_paths = {
            f"{method.upper()} {_normalise(path)}"
            for path, operations in document["paths"].items()
            for method in operations
        }
        yield World(api, actors, setup_admins, ca_of, shared_ca, entity_of, public_paths, skipped)


# --- judging one answer ------------------------------------------------------------------------------------------


def judge(endpoint: str, expect: str, response: httpx.Response) -> bool:
    """Assert `response` matches the cell; True when the cell (as answered) is an allowed one."""
    where = f"{endpoint} expected {expect!r}"
    if expect == "Y":
        assert response.status_code in SUCCESS[endpoint], (
            f"{where} → {SUCCESS[endpoint]}, got {response.status_code}: {response.text[:400]}"
        )
        if response.status_code >= 400:
            assert_problem(response)
        return True
    if expect == "E" and response.status_code in SUCCESS[endpoint]:
        return True
    allowed = {"N": (403,), "H": (404,), "R": (403, 404), "E": (403,)}[expect]
    assert response.status_code in allowed, (
        f"{where} → {allowed}, got {response.status_code}: {response.text[:400]}"
    )
    assert_problem(response, *allowed)
    return False


Snapshot = Callable[[], Awaitable[object]]


async def exercise(
    w: World,
    endpoint: str,
    expect: str,
    send: Callable[[], Awaitable[httpx.Response]],
    snapshot: Snapshot | None = None,
    verify_allowed: Callable[[httpx.Response], Awaitable[None]] | None = None,
) -> None:
    """Send the request, judge it; a refused write must leave `snapshot()` and the event feed unchanged."""
    before = await snapshot() if snapshot else None
    head = await w.api.feed_head()
    response = await send()
    allowed = judge(endpoint, expect, response)
    if allowed:
        if verify_allowed is not None:
            await verify_allowed(response)
        return
    if snapshot is not None:
        assert await snapshot() == before, f"refused {endpoint} changed the data"
    assert await w.api.feed_head() == head, f"refused {endpoint} published an event"


# --- one runner per endpoint --------------------------------------------------------------------------------------


async def run_cell(w: World, endpoint: str, actor: Actor, target: str, expect: str) -> None:
    api = w.api
    method, template = endpoint.split(" ", 1)
    path = template.replace("{party}", target)

    async def call(p: str = path, **kwargs) -> httpx.Response:
        return await api.call(actor, method, p, **kwargs)

    def section_and_accounts(party: str) -> Snapshot:
        async def snap() -> object:
            return await api.section_state(party), await api.account_statuses(party)

        return snap

    match endpoint:
        case "GET /v1/parties" | "GET /v1/cooperative-approaches":
            await exercise(w, endpoint, expect, call)

        case "GET /v1/cooperative-approaches/{ca_id}":
            ca_id = w.ca_of[target]

            async def is_the_ca(response: httpx.Response) -> None:
                assert response.json()["ca_id"] == ca_id

            await exercise(w, endpoint, expect, lambda: call(path.replace("{ca_id}", ca_id)), None, is_the_ca)

        case "POST /v1/cooperative-approaches":
            ca_id = api.new_ca_id()
            body = {"ca_id": ca_id, "name": "Matrix approach", "participants": [target, THIRD]}

            async def ca_status() -> object:
                return (await api.get(api.admin, f"/v1/cooperative-approaches/{ca_id}")).status_code

            async def registered(response: httpx.Response) -> None:
                assert await ca_status() == 200

            await exercise(w, endpoint, expect, lambda: call(json=body), ca_status, registered)

        case "POST /v1/party-sections":
            body = {"party": target, "registry_id": f"{target}02", "ars": True}
            await exercise(w, endpoint, expect, lambda: call(json=body), section_and_accounts(target))

        case "GET /v1/party-sections/{party}":

            async def is_the_section(response: httpx.Response) -> None:
                assert response.json()["party"] == target

            await exercise(w, endpoint, expect, call, None, is_the_section)

        case "GET /v1/party-sections":

            async def visible_sections(response: httpx.Response) -> None:
                parties = {item["party"] for item in response.json()["items"]}
                if actor.party is None:
                    assert {A, B} <= parties, parties
                else:
                    assert parties == {actor.party}, f"{actor.label} sees the sections of {parties}"

            await exercise(w, endpoint, expect, call, None, visible_sections)

        case "GET /v1/party-sections/{party}/settings" | "GET /v1/party-sections/{party}/history":
            await exercise(w, endpoint, expect, call)

        case "GET /v1/party-sections/{party}/accounts/{account_id}":
            account_id = f"{target}01-100-1"

            async def is_the_account(response: httpx.Response) -> None:
                assert response.json()["account_id"] == account_id and response.json()["party"] == target

            await exercise(
                w,
                endpoint,
                expect,
                lambda: call(path.replace("{account_id}", account_id)),
                None,
                is_the_account,
            )

        case "GET /v1/party-sections/{party}/entities/{entity_id}":
            entity_id = w.entity_of[target]

            async def is_the_entity(response: httpx.Response) -> None:
                assert response.json()["entity_id"] == entity_id and response.json()["party"] == target

            await exercise(
                w, endpoint, expect, lambda: call(path.replace("{entity_id}", entity_id)), None, is_the_entity
            )

        case (
            "GET /v1/party-sections/{party}/accounts"
            | "GET /v1/party-sections/{party}/entities"
            | "GET /v1/party-sections/{party}/ndc-periods"
        ):

            async def only_the_targets(response: httpx.Response) -> None:
                body = response.json()
                items = body["items"] if isinstance(body, dict) and "items" in body else body
                assert items, f"{endpoint} of {target} is empty"
                for item in items:
                    if isinstance(item, dict) and "party" in item:
                        assert item["party"] == target, item

            await exercise(w, endpoint, expect, call, None, only_the_targets)

        case "POST /v1/party-sections/{party}/open" | "POST /v1/party-sections/{party}/close":
            move = template.rsplit("/", 1)[1]
            if expect == "Y":
                # A fresh section in the state the move needs: Party A/B cannot go back to requested.
                fresh = await api.section_in("requested" if move == "open" else "open")
                leads_to = {"open": "open", "close": "closing"}[move]

                async def moved(response: httpx.Response) -> None:
                    assert (await api.section(fresh))["status"] == leads_to

                await exercise(
                    w,
                    endpoint,
                    expect,
                    lambda: call(template.replace("{party}", fresh), json={}),
                    None,
                    moved,
                )
            else:
                await exercise(w, endpoint, expect, lambda: call(json={}), section_and_accounts(target))

        case "POST /v1/party-sections/{party}/suspend":

            async def suspended(response: httpx.Response) -> None:
                assert (await api.section(target))["status"] == "suspended"

            try:
                await exercise(
                    w, endpoint, expect, lambda: call(json={}), section_and_accounts(target), suspended
                )
            finally:
                if (await api.section(target))["status"] == "suspended":
                    assert (await api.move(target, "reactivate")).status_code == 200

        case "POST /v1/party-sections/{party}/reactivate":
            # Refused callers try it where it would be legal.
            assert (await api.move(target, "suspend")).status_code == 200

            async def reopened(response: httpx.Response) -> None:
                assert (await api.section(target))["status"] == "open"

            try:
                await exercise(
                    w, endpoint, expect, lambda: call(json={}), section_and_accounts(target), reopened
                )
            finally:
                if (await api.section(target))["status"] == "suspended":
                    assert (await api.move(target, "reactivate")).status_code == 200

        case "PATCH /v1/party-sections/{party}/settings":
            read = await api.get(api.admin, f"/v1/party-sections/{target}")
            current = read.json()["settings"]["four_eyes"]

            async def flipped(response: httpx.Response) -> None:
                assert (await api.section(target))["settings"]["four_eyes"] is (not current)

            await exercise(
                w,
                endpoint,
                expect,
                lambda: call(json={"four_eyes": not current}, headers={"If-Match": read.headers["etag"]}),
                section_and_accounts(target),
                flipped,
            )

        case "POST /v1/party-sections/{party}/accounts":

            async def listed(response: httpx.Response) -> None:
                assert response.json()["party"] == target
                assert response.json()["account_id"] in await api.account_statuses(target)

            body = {"type": "holding", "name": "Matrix account"}
            await exercise(w, endpoint, expect, lambda: call(json=body), section_and_accounts(target), listed)

        case (
            "POST /v1/accounts/{account_id}/block"
            | "POST /v1/accounts/{account_id}/unblock"
            | "POST /v1/accounts/{account_id}/close"
        ):
            action = template.rsplit("/", 1)[1]
            account_id = await api.new_account(w.setup_admins[target], target, blocked=action == "unblock")
            leads_to = {"block": "blocked", "unblock": "open", "close": "closed"}[action]

            async def status_changed(response: httpx.Response) -> None:
                assert await api.account_status(target, account_id) == leads_to

            await exercise(
                w,
                endpoint,
                expect,
                lambda: call(template.replace("{account_id}", account_id), json={}),
                section_and_accounts(target),
                status_changed,
            )

        case "POST /v1/party-sections/{party}/entities":
            body = api.entity_body(w.shared_ca, country_of_incorporation=target)
            await exercise(w, endpoint, expect, lambda: call(json=body), section_and_accounts(target))
            if expect != "Y":
                assert await api.entity_absent(w.setup_admins[target], target, body), (
                    "a refused entity was recorded"
                )

        case "PUT /v1/party-sections/{party}/ndc-periods":
            current = (await api.section_lookup(target))["ndc_periods"]
            body = NDC_2 if current == NDC_1 else NDC_1

            async def ndc() -> object:
                return (await api.section_lookup(target))["ndc_periods"]

            async def replaced(response: httpx.Response) -> None:
                assert await ndc() == body

            await exercise(w, endpoint, expect, lambda: call(json=body), ndc, replaced)

        case _:
            raise AssertionError(f"no runner for {endpoint}")


# --- the matrix ---------------------------------------------------------------------------------------------------


def _cells() -> list:
    cells = []
    for endpoint, row in EXPECTED.items():
        assert len(row) == len(ROLES), endpoint
        for role, pair in zip(ROLES, row, strict=True):
            for target, expect in zip(("own", "other"), pair, strict=True):
                cells.append(
                    pytest.param(endpoint, role, target, expect, id=f"{endpoint} | {role} | {target}")
                )
    return cells


@pytest.mark.parametrize(("endpoint", "role", "target", "expect"), _cells())
async def test_isolation_matrix(world: World, endpoint: str, role: str, target: str, expect: str) -> None:
    if endpoint in OPTIONAL:
        assert _normalise(endpoint) in world.public_paths, f"{endpoint} left the gateway's OpenAPI document"
    actor = world.actors[role]
    assert actor is not None, world.skipped[role]
    await run_cell(world, endpoint, actor, A if target == "own" else B, expect)


async def test_the_table_covers_every_endpoint_of_api_md() -> None:
    # API.md "Reference data and Party sections", one entry per method and path.
    api_md = {
        "GET /v1/parties",
        "POST /v1/cooperative-approaches",
        "GET /v1/cooperative-approaches",
        "GET /v1/cooperative-approaches/{ca_id}",
        "POST /v1/party-sections",
        "POST /v1/party-sections/{party}/open",
        "POST /v1/party-sections/{party}/suspend",
        "POST /v1/party-sections/{party}/reactivate",
        "POST /v1/party-sections/{party}/close",
        "GET /v1/party-sections/{party}",
        "PATCH /v1/party-sections/{party}/settings",
        "GET /v1/party-sections/{party}/accounts",
        "POST /v1/party-sections/{party}/accounts",
        "POST /v1/accounts/{account_id}/block",
        "POST /v1/accounts/{account_id}/unblock",
        "POST /v1/accounts/{account_id}/close",
        "POST /v1/party-sections/{party}/entities",
        "PUT /v1/party-sections/{party}/ndc-periods",
    }
    assert api_md <= set(EXPECTED)
    assert set(EXPECTED) - api_md == OPTIONAL


async def test_every_public_party_sections_operation_is_in_the_table(world: World) -> None:
    # A new public route of party_sections must get a row here before it ships.
    prefixes = ("/v1/parties", "/v1/cooperative-approaches", "/v1/party-sections", "/v1/accounts/")
    other_services = {"GET /v1/accounts/{}/holdings"}  # transactions
    ours = {
        operation
        for operation in world.public_paths - other_services
        if operation.split(" ", 1)[0] in {"GET", "POST", "PUT", "PATCH", "DELETE"}
        and operation.split(" ", 1)[1].startswith(prefixes)
    }
    tabled = {_normalise(endpoint) for endpoint in EXPECTED}
    assert ours - tabled == set(), "public party_sections operations missing from the isolation table"


async def test_refusals_do_not_reveal_what_exists(world: World) -> None:
    # Party A's principals get the same answer for B's section as for a Party without one, and the same
    # 404 for B's real account as for an account that does not exist anywhere.
    api, no_section = world.api, THIRD
    for role in ("party_admin", "viewer", "party_auditor"):
        actor = world.actors[role]
        assert actor is not None
        for suffix, method, kwargs in (
            ("", "GET", {}),
            ("/accounts", "GET", {}),
            ("/accounts", "POST", {"json": {"type": "holding", "name": "Probe"}}),
            ("/ndc-periods", "PUT", {"json": NDC_1}),
        ):
            answers = [
                await api.call(actor, method, f"/v1/party-sections/{party}{suffix}", **kwargs)
                for party in (B, no_section)
            ]
            kinds = {(r.status_code, assert_problem(r, 403)["type"]) for r in answers}
            assert len(kinds) == 1, f"{role} {method} {suffix}: {kinds}"
        answers = [
            await api.post(actor, f"/v1/accounts/{account_id}/block", json={})
            for account_id in (f"{B}01-100-1", f"{B}01-100-9999", f"{no_section}01-100-1")
        ]
        problems = [assert_problem(r, 404) for r in answers]
        assert len({p["type"] for p in problems}) == 1, problems
        assert len({p["title"] for p in problems}) == 1, problems
    assert_problem(await api.get(api.admin, f"/v1/party-sections/{no_section}"), 404)


async def test_identity_headers_sent_by_a_client_change_nothing(world: World) -> None:
    # Only the token says who calls (DESIGN §3): headers naming another Party or role are ignored.
    viewer = world.actors["viewer"]
    assert viewer is not None
    spoof = {
        "X-Registry-Party": B,
        "X-Party": B,
        "X-Roles": "secretariat_admin",
        "X-Client-Id": "secretariat-bootstrap",
    }
    response = await world.api.get(viewer, f"/v1/party-sections/{B}", headers=spoof)
    assert_problem(response, 403)
    response = await world.api.post(viewer, f"/v1/accounts/{B}01-100-1/block", headers=spoof, json={})
    assert_problem(response, 404)
