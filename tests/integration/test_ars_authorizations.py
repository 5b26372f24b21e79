"""ARS issuance, authorizations and their versions, revocation, domestic cancellation and Party isolation,
through the gateway on both backends; concurrent issuances never share a serial."""

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from tests.integration._ars_world import ArsWorld, ars_world, authorization_body


@pytest.fixture
async def ars(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[ArsWorld]:
    async with ars_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await built.world.add_ca("CA0012", ["GHA", "CHE"])
        yield built


async def test_twenty_concurrent_issuances_get_contiguous_disjoint_serials(ars: ArsWorld) -> None:
    # Straight to the ARS (it verifies the gateway's tokens itself): no gateway rate limit in the way.
    app = ars.world.suite.services["ars"]
    headers = ars.parties["GHA"].actors.initiator
    quantities = [1 + (i * 37) % 50 for i in range(20)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ars") as client:

        async def issue(quantity: int) -> httpx.Response:
            body = {
                "ca_id": "CA0012",
                "vintage": 2023,
                "quantity": quantity,
                "mitigation_type": "Removals",
                "sector": "Forestry and land use",
                "activity_type": "Afforestation",
            }
            return await client.post("/v1/ars/GHA/issuances", json=body, headers=headers)

        answers = await asyncio.gather(*(issue(q) for q in quantities))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers if a.status_code != 201]
    ranges = sorted((a.json()["first"], a.json()["last"]) for a in answers)
    assert sorted(last - first + 1 for first, last in ranges) == sorted(quantities)
    assert ranges[0][0] == 1
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first == last + 1  # contiguous and disjoint
    assert ranges[-1][1] == sum(quantities)
    # The next issuance continues the sequence.
    after = await ars.issue("GHA", 5)
    assert (after["first"], after["last"]) == (sum(quantities) + 1, sum(quantities) + 5)


async def test_versions_and_revocation(ars: ArsWorld) -> None:
    gha, che = ars.parties["GHA"], ars.parties["CHE"]
    await ars.issue("GHA", 100)
    created = await ars.authorize("GHA", "GH-AUTH-9", authorized_quantity=80, timeframe="2021 - 2030")
    assert created["table2"]["authorized_quantity"] == 80
    assert created["table2"]["authorized_timeframe"] == "2021 - 2030"
    await ars.apply("GHA", "GH-AUTH-9", 60)
    answer = await ars.first_transfer(
        "GHA", {"authorization_id": "GH-AUTH-9", "quantity": 20, "to_account": che.holding}
    )
    assert answer.json()["authorization_version"] == 1

    path = "/v1/ars/GHA/authorizations/GH-AUTH-9"
    terms = {k: v for k, v in authorization_body("x").items() if k != "authorization_id"}
    # A stale If-Match is refused; the cooperative approach cannot change.
    stale = await ars.gateway.post(
        f"{path}/versions", json=terms, headers={**gha.official, "If-Match": '"7"'}
    )
    assert stale.status_code == 412, stale.text
    moved = await ars.gateway.post(
        f"{path}/versions", json={**terms, "ca_id": "CA0013"}, headers=gha.official
    )
    assert moved.status_code == 422 and moved.json()["type"].endswith("/cooperative-approach-changed")
    version = await ars.gateway.post(
        f"{path}/versions",
        json={**terms, "authorized_quantity": 90},
        headers={**gha.official, "If-Match": '"1"'},
    )
    assert version.status_code == 201, version.text
    assert version.json()["version"] == 2 and version.headers["etag"] == '"2"'
    answer = await ars.first_transfer(
        "GHA", {"authorization_id": "GH-AUTH-9", "quantity": 10, "to_account": che.holding}
    )
    assert answer.json()["authorization_version"] == 2  # the terms in force at first transfer

    revoked = await ars.gateway.post(
        f"{path}/revoke", json={"reason": "project withdrawn"}, headers=gha.official
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["version"] == 3 and revoked.json()["status"] == "revoked"
    versions = await ars.gateway.get(f"{path}/versions", headers=gha.actors.viewer)
    assert [(v["version"], v["status"]) for v in versions.json()] == [
        (1, "active"),
        (2, "active"),
        (3, "revoked"),
    ]

    # Revocation stops new first transfers and applies, and no new version follows it ...
    refused = await ars.first_transfer(
        "GHA", {"authorization_id": "GH-AUTH-9", "quantity": 1, "to_account": che.holding}, expect=422
    )
    assert [c["code"] for c in refused.json()["checks"]] == ["M02"]
    assert (await ars.apply("GHA", "GH-AUTH-9", 1, expect=422))["checks"][0]["code"] == "M02"
    again = await ars.gateway.post(f"{path}/versions", json=terms, headers=gha.official)
    assert again.status_code == 409
    # ... never touches the 30 ITMOs already first transferred; the 30 authorized MOs are pending again.
    assert sum(b["quantity"] for b in await ars.holdings("CHE", che.holding)) == 30
    assert [(b["first"], b["last"], b["state"]) for b in await ars.blocks("GHA")] == [
        (1, 20, "first_transferred"),
        (21, 30, "first_transferred"),
        (31, 100, "pending_authorization"),
    ]
    events = await ars.events()
    kinds = [e["type"] for e in events if e["type"].startswith("authorization.")]
    assert kinds == ["authorization.created", "authorization.versioned", "authorization.revoked"]
    revoked_event = next(e for e in events if e["type"] == "authorization.revoked")
    assert revoked_event["data"]["table2"]["version_of_the_authorization"] == 3
    assert revoked_event["data"]["returned_to_pending"] == [
        {"ca_id": "CA0012", "origin_registry_id": "GHA01", "first": 31, "last": 60}
    ]


async def test_domestic_cancellation(ars: ArsWorld) -> None:
    gha, che = ars.parties["GHA"], ars.parties["CHE"]
    await ars.issue("GHA", 100, underlying={"registry_id": "GS", "first_unit_id": 5001, "last_unit_id": 5100})
    await ars.authorize("GHA", "GH-AUTH-1")
    await ars.apply("GHA", "GH-AUTH-1", 20)
    await ars.first_transfer(
        "GHA", {"authorization_id": "GH-AUTH-1", "quantity": 5, "to_account": che.holding}
    )
    url = "/v1/ars/GHA/cancellations"
    answer = await ars.gateway.post(
        url,
        json={"ca_id": "CA0012", "first": 50, "last": 59, "reason": "host NDC use"},
        headers=gha.actors.admin,
    )
    assert answer.status_code == 201, answer.text
    [block] = answer.json()["blocks"]
    assert (block["first"], block["last"], block["state"]) == (50, 59, "cancelled")
    assert block["underlying"] == {"registry_id": "GS", "first_unit_id": 5050, "last_unit_id": 5059}
    answer = await ars.gateway.post(
        url,
        json={"ca_id": "CA0012", "quantity": 3, "authorization_id": "GH-AUTH-1"},
        headers=gha.actors.admin,
    )
    assert answer.status_code == 201, answer.text
    assert [(b["first"], b["last"]) for b in answer.json()["blocks"]] == [(6, 8)]
    # First-transferred units are ITMOs: never cancelled here.
    answer = await ars.gateway.post(
        url, json={"ca_id": "CA0012", "first": 1, "last": 10}, headers=gha.actors.admin
    )
    assert answer.status_code == 422 and answer.json()["type"].endswith("/mos-not-cancellable")
    states = [(b["first"], b["last"], b["state"]) for b in await ars.blocks("GHA")]
    assert states == [
        (1, 5, "first_transferred"),
        (6, 8, "cancelled"),
        (9, 20, "authorized"),
        (21, 49, "pending_authorization"),
        (50, 59, "cancelled"),
        (60, 100, "pending_authorization"),
    ]


async def test_party_isolation(ars: ArsWorld) -> None:
    gha, che = ars.parties["GHA"], ars.parties["CHE"]
    await ars.issue("GHA", 10)
    await ars.authorize("GHA", "GH-AUTH-1")
    auditor = await ars.world.suite.new_client(name="TER", party=None, roles=["auditor"])
    auditor_headers = await ars.world.suite.auth(auditor["client_id"], auditor["client_secret"])
    gw = ars.gateway
    # Switzerland's principals, whatever their role, neither read nor change Ghana's ARS.
    for headers in (che.actors.initiator, che.actors.admin, che.official, che.actors.viewer):
        assert (await gw.get("/v1/ars/GHA/blocks", headers=headers)).status_code == 403
        assert (await gw.get("/v1/ars/GHA/authorizations/GH-AUTH-1", headers=headers)).status_code == 403
        answer = await gw.post(
            "/v1/ars/GHA/first-transfers",
            json={"authorization_id": "GH-AUTH-1", "quantity": 1, "to_account": che.holding},
            headers={**headers, "Idempotency-Key": "k"},
        )
        assert answer.status_code == 403
    # Within Ghana, roles decide: a viewer reads but neither issues nor authorizes; an initiator does not
    # authorize; an authorizing official does not first transfer.
    assert (await gw.get("/v1/ars/GHA/blocks", headers=gha.actors.viewer)).status_code == 200
    issue = {
        "ca_id": "CA0012",
        "vintage": 2024,
        "quantity": 1,
        "mitigation_type": "Removals",
        "sector": "Energy generation",
        "activity_type": "Solar",
    }
    assert (await gw.post("/v1/ars/GHA/issuances", json=issue, headers=gha.actors.viewer)).status_code == 403
    body = authorization_body("GH-AUTH-2")
    assert (
        await gw.post("/v1/ars/GHA/authorizations", json=body, headers=gha.actors.initiator)
    ).status_code == 403
    answer = await gw.post(
        "/v1/ars/GHA/first-transfers",
        json={"authorization_id": "GH-AUTH-1", "quantity": 1, "to_account": che.holding},
        headers={**gha.official, "Idempotency-Key": "k2"},
    )
    assert answer.status_code == 403
    # The Secretariat and a Secretariat auditor read every Party's ARS.
    for headers in (ars.admin, auditor_headers):
        answer = await gw.get("/v1/ars/GHA/authorizations", headers=headers)
        assert answer.status_code == 200 and [a["authorization_id"] for a in answer.json()["items"]] == [
            "GH-AUTH-1"
        ]
    # Switzerland's own ARS is empty and separate.
    assert (await gw.get("/v1/ars/CHE/blocks", headers=che.actors.viewer)).json()["items"] == []
