"""The ARS end to end through the gateway, on both backends: the worked example of domain §5.8, every
first-transfer definition of domain §2.3, every refusal of issue 5, idempotency, and the events."""

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration._ars_world import ArsWorld, ars_world


@pytest.fixture
async def ars(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[ArsWorld]:
    async with ars_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await built.add_party("SWE")
        await built.world.add_ca("CA0012", ["GHA", "CHE"])
        yield built


def _ranges(blocks: list[dict]) -> list[tuple[int, int, str]]:
    return [(b["first"], b["last"], b["state"]) for b in blocks]


async def test_worked_example_of_domain_5_8(ars: ArsWorld) -> None:
    """Ghana issues 1 000 MOs, authorizes them (GH-AUTH-7, NDC and OIMP, Use or Cancellation), first
    transfers 1–400 to Switzerland and an authorized airline uses 401–500 for CORSIA; 501–1000 stay MOs."""
    gha, che = ars.parties["GHA"], ars.parties["CHE"]
    entity = {
        "entity_id": "GH-AIRLINE-1",
        "name": "Ghana Airways",
        "country_of_incorporation": "GHA",
        "identification_number": "GH-123",
        "ca_id": "CA0012",
        "date_of_authorization": "2024-05-01",
    }
    answer = await ars.gateway.post("/v1/party-sections/GHA/entities", json=entity, headers=gha.actors.admin)
    assert answer.status_code == 201, answer.text

    issued = await ars.issue("GHA", 1000)
    assert issued["issuance_id"].startswith("iss_")
    assert _ranges(issued["blocks"]) == [(1, 1000, "pending_authorization")]
    block = issued["blocks"][0]
    assert block["ca_id"] == "CA0012" and block["origin_registry_id"] == "GHA01"
    assert block["unique_id_first"] == "CA0012-GHA01-GHA-1-2024"

    authorization = await ars.authorize("GHA", "GH-AUTH-7", authorized_entities=["GH-AIRLINE-1"])
    assert authorization["version"] == 1 and authorization["status"] == "active"
    assert authorization["table2"]["purposes_for_authorization"] == "NDC and OIMP"
    assert authorization["table2"]["first_transfer_definition_for_oimp"] == "Use or Cancellation"
    applied = await ars.apply("GHA", "GH-AUTH-7", 1000)
    assert _ranges(applied["blocks"]) == [(1, 1000, "authorized")]
    assert applied["first_transfer"] is None

    # 3 Mar 2025: 400 first transferred to Switzerland (NDC).
    answer = await ars.first_transfer(
        "GHA", {"authorization_id": "GH-AUTH-7", "quantity": 400, "to_account": che.holding}
    )
    moved = answer.json()
    assert moved["status"] == "completed" and moved["transaction_id"].startswith("tx_")
    assert moved["first_transfer_definition"] == "First international transfer"
    assert [(b["unique_id_first"], b["unique_id_last"]) for b in moved["blocks"]] == [
        ("CA0012-GHA01-GHA-1-2024", "CA0012-GHA01-GHA-400-2024")
    ]
    held = await ars.holdings("CHE", che.holding)
    assert [(b["unique_id_first"], b["unique_id_last"], b["quantity"]) for b in held] == [
        ("CA0012-GHA01-GHA-1-2024", "CA0012-GHA01-GHA-400-2024", 400)
    ]
    assert held[0]["authorization_id"] == "GH-AUTH-7" and held[0]["first_transferring_party"] == "GHA"

    # 9 Sep 2025: the airline uses 100 for CORSIA; the use is the first transfer (OIMP).
    answer = await ars.first_transfer(
        "GHA",
        {
            "authorization_id": "GH-AUTH-7",
            "quantity": 100,
            "use": {"purpose": "CORSIA", "using_entity_id": "GH-AIRLINE-1"},
        },
    )
    used = answer.json()
    assert used["status"] == "completed" and used["first_transfer_definition"] == "Use or Cancellation"
    assert [(b["first"], b["last"], b["state"]) for b in used["blocks"]] == [(401, 500, "used_oimp")]
    used_account = gha.actors.accounts["oimp_use"]
    assert [(b["unique_id_first"], b["state"]) for b in await ars.holdings("GHA", used_account)] == [
        ("CA0012-GHA01-GHA-401-2024", "used_oimp")
    ]

    # The ledger's AEF sides: First transfer / First transfer to another Party (acquiring CHE), and
    # First transfer / Use or cancellation (CORSIA, the entity).
    transaction = await ars.gateway.get(
        f"/v1/transactions/{moved['transaction_id']}", headers=gha.actors.viewer
    )
    sides = {(a["party"], a["action_type"], a["action_subtype"]) for a in transaction.json()["actions"]}
    assert ("GHA", "First transfer", "First transfer to another Party") in sides
    assert ("CHE", "Acquisition", None) in sides
    transaction = await ars.gateway.get(
        f"/v1/transactions/{used['transaction_id']}", headers=gha.actors.viewer
    )
    [side] = transaction.json()["actions"]
    assert (side["action_type"], side["action_subtype"]) == ("First transfer", "Use or cancellation")
    assert side["purpose_oimp"] == "CORSIA" and side["using_cancelling_entity_id"] == "GH-AIRLINE-1"

    # 501–1000 are still MOs in the ARS (no AEF Table 4 row).
    assert _ranges(await ars.blocks("GHA")) == [
        (1, 400, "first_transferred"),
        (401, 500, "first_transferred"),
        (501, 1000, "authorized"),
    ]
    types = [e["type"] for e in await ars.events()]
    assert types.count("first_transfer.completed") == 2
    assert {"mos.issued", "authorization.created", "mos.authorized"} <= set(types)
    report = await ars.world.invariants()
    assert report["ok"], report["violations"]


async def test_idempotent_first_transfer(ars: ArsWorld) -> None:
    che = ars.parties["CHE"]
    await ars.issue("GHA", 50)
    await ars.authorize("GHA", "GH-AUTH-1")
    await ars.apply("GHA", "GH-AUTH-1", 50)
    key = uuid.uuid4().hex
    body = {"authorization_id": "GH-AUTH-1", "quantity": 20, "to_account": che.holding}
    first = (await ars.first_transfer("GHA", body, key=key)).json()
    again = await ars.first_transfer("GHA", body, key=key)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["transaction_id"] == first["transaction_id"]
    other = await ars.first_transfer("GHA", {**body, "quantity": 21}, key=key, expect=422)
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert sum(b["quantity"] for b in await ars.holdings("CHE", che.holding)) == 20


async def test_oimp_first_transfer_at_authorization_and_at_issuance(ars: ArsWorld) -> None:
    gha = ars.parties["GHA"]
    # Authorisation: the MOs become ITMOs in Ghana's own holding account when the authorization is applied.
    await ars.issue("GHA", 100)
    await ars.authorize("GHA", "GH-OIMP-A", purposes="OIMP", first_transfer_definition="Authorisation")
    applied = await ars.apply("GHA", "GH-OIMP-A", 60)
    first_transfer = applied["first_transfer"]
    assert first_transfer["status"] == "completed"
    assert first_transfer["first_transfer_definition"] == "Authorisation"
    assert first_transfer["to_account"] == gha.holding
    assert [(b["first"], b["last"], b["state"]) for b in first_transfer["blocks"]] == [(1, 60, "held")]

    # Issuance: issued under the OIMP authorization, they are first transferred at once.
    await ars.authorize("GHA", "GH-OIMP-I", purposes="OIMP", first_transfer_definition="Issuance")
    issued = await ars.issue("GHA", 30, authorization_id="GH-OIMP-I")
    assert issued["first_transfer"]["status"] == "completed"
    assert issued["first_transfer"]["first_transfer_definition"] == "Issuance"
    assert _ranges(issued["blocks"]) == [(101, 130, "first_transferred")]

    held = await ars.holdings("GHA", gha.holding)
    assert [(b["first"], b["last"], b["authorization_id"]) for b in held] == [
        (1, 60, "GH-OIMP-A"),
        (101, 130, "GH-OIMP-I"),
    ]
    transaction = await ars.gateway.get(
        f"/v1/transactions/{issued['first_transfer']['transaction_id']}", headers=gha.actors.viewer
    )
    assert transaction.json()["actions"][0]["action_subtype"] == "Issuance"
    assert _ranges(await ars.blocks("GHA")) == [
        (1, 60, "first_transferred"),
        (61, 100, "pending_authorization"),
        (101, 130, "first_transferred"),
    ]


async def test_use_or_cancellation_cancellation_for_op(ars: ArsWorld) -> None:
    gha = ars.parties["GHA"]
    await ars.issue("GHA", 10)
    await ars.authorize("GHA", "GH-OP-1", purposes="OP", oimp="Voluntary claims")
    await ars.apply("GHA", "GH-OP-1", 10)
    answer = await ars.first_transfer(
        "GHA", {"authorization_id": "GH-OP-1", "quantity": 4, "cancellation": {"purpose": "Voluntary claims"}}
    )
    cancelled = answer.json()
    assert [(b["first"], b["last"], b["state"]) for b in cancelled["blocks"]] == [(1, 4, "cancelled")]
    assert cancelled["use"]["type"] == "cancellation"
    assert [b["quantity"] for b in await ars.holdings("GHA", gha.actors.accounts["cancellation"])] == [4]


async def test_refusals_reserve_nothing(ars: ArsWorld) -> None:
    gha, che, swe = ars.parties["GHA"], ars.parties["CHE"], ars.parties["SWE"]
    await ars.issue("GHA", 100)
    await ars.authorize(
        "GHA",
        "GH-NDC",
        purposes="NDC",
        oimp=None,
        first_transfer_definition=None,
        authorized_quantity=50,
        authorized_parties=["CHE"],
    )
    await ars.authorize("GHA", "GH-OIMP", purposes="OIMP", first_transfer_definition="Use or Cancellation")
    await ars.apply("GHA", "GH-NDC", 50)
    await ars.apply("GHA", "GH-OIMP", 10)
    # Beyond the authorized quantity at apply (T06) and more than is pending (M03).
    refused = await ars.apply("GHA", "GH-NDC", 1, expect=422)
    assert [c["code"] for c in refused["checks"]] == ["T06"]
    refused = await ars.apply("GHA", "GH-OIMP", 100, expect=422)
    assert [c["code"] for c in refused["checks"]] == ["M03"]

    che_account, swe_account = che.holding, swe.holding
    cases = [
        # Units not authorized: more than the authorization holds (M03); unknown authorization (M01).
        ({"authorization_id": "GH-OIMP", "quantity": 11, "use": {"purpose": "CORSIA"}}, {"M03"}),
        # Cap exceeded (T06).
        ({"authorization_id": "GH-NDC", "quantity": 51, "to_account": che_account}, {"T06"}),
        ({"authorization_id": "GH-NOPE", "quantity": 1, "to_account": che_account}, {"M01"}),
        # Purpose not covered: OIMP units to another Party (T05); NDC units used for CORSIA (T05, M06).
        ({"authorization_id": "GH-OIMP", "quantity": 1, "to_account": che_account}, {"T05"}),
        ({"authorization_id": "GH-NDC", "quantity": 1, "use": {"purpose": "CORSIA"}}, {"T05", "M06"}),
        # Acquiring Party not authorized and not a CA participant (T05A, T07).
        ({"authorization_id": "GH-NDC", "quantity": 1, "to_account": swe_account}, {"T05A", "T07"}),
        # An NDC first transfer into Ghana's own account (M06); a missing account (A05).
        ({"authorization_id": "GH-NDC", "quantity": 1, "to_account": gha.holding}, {"M06"}),
        ({"authorization_id": "GH-NDC", "quantity": 1, "to_account": "CHE01-100-99"}, {"A05"}),
    ]
    for body, codes in cases:
        answer = await ars.first_transfer("GHA", body, expect=422)
        problem = answer.json()
        assert problem["type"].endswith("/check-failed"), problem
        assert {c["code"] for c in problem["checks"]} == codes, (body, problem["checks"])
        assert problem["first_transfer_status"] == "refused"

    # A new version lowering the cap: the cap is enforced at first transfer (T06).
    version = await ars.gateway.post(
        "/v1/ars/GHA/authorizations/GH-NDC/versions",
        json={k: v for k, v in (await _current(ars, "GH-NDC")).items() if k in _TERMS}
        | {"authorized_quantity": 10},
        headers=gha.official,
    )
    assert version.status_code == 201, version.text
    answer = await ars.first_transfer(
        "GHA", {"authorization_id": "GH-NDC", "quantity": 11, "to_account": che_account}, expect=422
    )
    assert [c["code"] for c in answer.json()["checks"]] == ["T06"]

    # Section suspended: nothing may leave (A04).
    answer = await ars.gateway.post("/v1/party-sections/GHA/suspend", json={}, headers=ars.admin)
    assert answer.status_code == 200, answer.text
    answer = await ars.first_transfer(
        "GHA", {"authorization_id": "GH-NDC", "quantity": 1, "to_account": che_account}, expect=422
    )
    assert [c["code"] for c in answer.json()["checks"]] == ["A04"]
    answer = await ars.gateway.post(
        "/v1/ars/GHA/issuances",
        json={
            "ca_id": "CA0012",
            "vintage": 2024,
            "quantity": 1,
            "mitigation_type": "Removals",
            "sector": "Energy generation",
            "activity_type": "Solar",
        },
        headers=gha.actors.initiator,
    )
    assert answer.status_code == 409 and answer.json()["type"].endswith("/section-not-usable")

    # Nothing was reserved or first transferred by any refusal.
    states = {(b["authorization_id"], b["state"]): b["quantity"] for b in await ars.blocks("GHA")}
    assert states == {
        ("GH-NDC", "authorized"): 50,
        ("GH-OIMP", "authorized"): 10,
        (None, "pending_authorization"): 40,
    }
    assert await ars.holdings("CHE", che_account) == []


_TERMS = (
    "date",
    "ca_id",
    "purposes",
    "authorized_quantity",
    "metric",
    "sectors",
    "activity_types",
    "authorized_parties",
    "authorized_entities",
    "oimp",
    "timeframe",
    "terms",
    "first_transfer_definition",
)


async def _current(ars: ArsWorld, authorization_id: str) -> dict:
    answer = await ars.gateway.get(
        f"/v1/ars/GHA/authorizations/{authorization_id}", headers=ars.parties["GHA"].actors.viewer
    )
    assert answer.status_code == 200, answer.text
    return {k: v for k, v in answer.json().items() if v is not None}


async def test_entities_must_be_ones_the_party_authorized(ars: ArsWorld) -> None:
    """An authorization may name, and a use be made by, only an entity registered in party_sections (Table 5)."""
    gha = ars.parties["GHA"]
    refused = await ars.authorize("GHA", "GH-AUTH-E", expect=422, authorized_entities=["GH-GHOST-1"])
    assert refused["type"].endswith("/unknown-entity") and refused["entity_ids"] == ["GH-GHOST-1"]
    missing = await ars.gateway.get("/v1/ars/GHA/authorizations/GH-AUTH-E", headers=gha.actors.viewer)
    assert missing.status_code == 404  # nothing was created

    entity = {
        "entity_id": "GH-AIRLINE-2",
        "name": "Ghana Air Cargo",
        "country_of_incorporation": "GHA",
        "identification_number": "GH-456",
        "ca_id": "CA0012",
        "date_of_authorization": "2024-05-01",
    }
    answer = await ars.gateway.post("/v1/party-sections/GHA/entities", json=entity, headers=gha.actors.admin)
    assert answer.status_code == 201, answer.text
    await ars.authorize("GHA", "GH-AUTH-E", authorized_entities=["GH-AIRLINE-2"])

    # An authorization naming no entities: the user must still be an entity the Party authorized (M08).
    await ars.issue("GHA", 100)
    await ars.authorize("GHA", "GH-AUTH-F")
    await ars.apply("GHA", "GH-AUTH-F", 100)
    use = {"authorization_id": "GH-AUTH-F", "quantity": 10, "use": {"purpose": "CORSIA"}}
    unknown = await ars.first_transfer(
        "GHA", {**use, "use": {"purpose": "CORSIA", "using_entity_id": "GH-GHOST-1"}}, expect=422
    )
    assert "M08" in {check["code"] for check in unknown.json()["checks"]}
    known = await ars.first_transfer(
        "GHA", {**use, "use": {"purpose": "CORSIA", "using_entity_id": "GH-AIRLINE-2"}}
    )
    assert known.json()["status"] == "completed"


async def test_four_eyes_first_transfers_wait_for_another_approver(ars: ArsWorld) -> None:
    """With four-eyes on, a first transfer reserves its MOs and waits; another principal with the approver
    role sends it to the IR; it can be withdrawn, and it is cancelled when nobody approves it in time."""
    gha, che = ars.parties["GHA"], ars.parties["CHE"]
    await ars.issue("GHA", 300)
    await ars.authorize("GHA", "GH-AUTH-4E")
    await ars.apply("GHA", "GH-AUTH-4E", 300)
    await ars.world.set_four_eyes(gha.actors, True)
    suite = ars.world.suite
    both = await suite.new_client(name="GHA both", party="GHA", roles=["initiator", "approver"])
    both_headers = {"Authorization": f"Bearer {await suite.token(both['client_id'], both['client_secret'])}"}
    body = {"authorization_id": "GH-AUTH-4E", "quantity": 40, "to_account": che.holding}

    asked = await ars.gateway.post(
        "/v1/ars/GHA/first-transfers", json=body, headers={**both_headers, "Idempotency-Key": "4e-1"}
    )
    assert asked.status_code == 202, asked.text
    waiting = asked.json()
    assert waiting["status"] == "awaiting_approval" and waiting["transaction_id"] is None
    operation = waiting["operation_id"]
    assert sum(b["quantity"] for b in await ars.blocks("GHA") if b["reserved"]) == 40
    assert await ars.holdings("CHE", che.holding) == []  # nothing in the IR before approval

    path = f"/v1/ars/GHA/first-transfers/{operation}"
    same = await ars.gateway.post(f"{path}/approve", headers={**both_headers, "Idempotency-Key": "a-0"})
    assert same.status_code == 403, same.text  # the asker cannot approve its own request
    not_approver = await ars.gateway.post(
        f"{path}/approve", headers={**gha.actors.initiator, "Idempotency-Key": "a-1"}
    )
    assert not_approver.status_code == 403
    approved = await ars.gateway.post(
        f"{path}/approve", headers={**gha.actors.approver, "Idempotency-Key": "a-2"}
    )
    assert approved.status_code == 201, approved.text
    assert approved.json()["status"] == "completed" and approved.json()["approved_by"]
    assert sum(b["quantity"] for b in await ars.holdings("CHE", che.holding)) == 40
    again = await ars.gateway.post(
        f"{path}/approve", headers={**gha.actors.approver, "Idempotency-Key": "a-3"}
    )
    assert again.status_code == 409 and again.json()["current_status"] == "completed"

    # Withdrawn: the MOs are authorized again, nothing reaches the IR.
    second = await ars.first_transfer("GHA", {**body, "quantity": 60}, expect=202)
    withdrawn = await ars.gateway.post(
        f"/v1/ars/GHA/first-transfers/{second.json()['operation_id']}/cancel", headers=gha.actors.initiator
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "cancelled"
    assert not [b for b in await ars.blocks("GHA") if b["reserved"]]

    # Nobody approves in time: cancelled by the resumer's sweep.
    third = await ars.first_transfer("GHA", {**body, "quantity": 70}, expect=202)
    saga = suite.services["ars"].state.saga
    assert await saga.expire_awaiting() == 0  # not yet
    later = datetime.now(UTC) + timedelta(seconds=saga.settings.first_transfer_approval_seconds + 1)
    assert await saga.expire_awaiting(later) == 1
    timed_out = await ars.gateway.get(
        f"/v1/ars/GHA/first-transfers/{third.json()['operation_id']}", headers=gha.actors.viewer
    )
    assert timed_out.json()["status"] == "cancelled"
    authorized = sum(
        b["quantity"] for b in await ars.blocks("GHA") if b["state"] == "authorized" and not b["reserved"]
    )
    assert authorized == 260 and sum(b["quantity"] for b in await ars.holdings("CHE", che.holding)) == 40
