"""The ledger end to end through the gateway, on both backends: first transfers, transfers, uses,
cancellations, checks, idempotency, reads, Party isolation, journal and invariants."""

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.integration._ledger_world import World, ledger_world


@pytest.fixture
async def world(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[World]:
    async with ledger_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await built.add_party("SWE")
        await built.add_ca("CA0012", ["GHA", "CHE"])
        yield built


async def _sealed(world: World) -> None:
    await world.suite.services["transactions"].state.sealer.seal()


async def test_first_transfer_transfer_use_and_cancellation(world: World) -> None:
    gha, che = world.parties["GHA"], world.parties["CHE"]
    first = await world.first_transfer("GHA", "CA0012", 1000, to_account=che.holding, purposes="NDC and OIMP")
    assert first["status"] == "completed" and first["quantity"] == 1000
    assert first["blocks"][0]["unique_id_first"] == "CA0012-GHA01-GHA-1-2024"
    sides = {(a["party"], a["action_type"], a["action_subtype"]) for a in first["actions"]}
    assert sides == {
        ("GHA", "First transfer", "First transfer to another Party"),
        ("CHE", "Acquisition", None),
    }
    assert await world.holdings_total(che, che.holding) == 1000

    # A transfer back to Ghana: Transfer for CHE, Acquisition for GHA; the low end moves.
    answer = await world.transact(
        che, {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 300}
    )
    assert answer.status_code == 201, answer.text
    moved = answer.json()
    assert moved["status"] == "completed"
    assert [(b["first"], b["last"]) for b in moved["blocks"]] == [(1, 300)]
    assert {(a["party"], a["action_type"]) for a in moved["actions"]} == {
        ("CHE", "Transfer"),
        ("GHA", "Acquisition"),
    }

    # Use towards the NDC with a year inside the period; the units end in CHE's NDC use account.
    answer = await world.transact(
        che, {"type": "use_ndc", "from_account": che.holding, "quantity": 200, "ndc_use_year": 2025}
    )
    assert answer.status_code == 201, answer.text
    used = answer.json()
    assert used["to_account"] == che.accounts["ndc_use"]
    assert used["actions"][0]["action_type"] == "Use" and used["actions"][0]["ndc_use_year"] == 2025
    assert [(b["first"], b["last"], b["state"]) for b in used["blocks"]] == [(301, 500, "used_ndc")]

    # OMGE cancellation and voluntary cancellation.
    answer = await world.transact(
        che, {"type": "omge_cancellation", "from_account": che.holding, "quantity": 10}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["actions"][0]["action_subtype"] == "Voluntary cancellation to deliver OMGE"
    answer = await world.transact(
        che, {"type": "voluntary_cancellation", "from_account": che.holding, "quantity": 5}
    )
    assert answer.status_code == 201, answer.text
    assert await world.holdings_total(che, che.holding) == 1000 - 300 - 200 - 15

    # The named used serial cannot move again (T03), nor more than is held (T01).
    answer = await world.transact(
        che,
        {
            "type": "transfer",
            "from_account": che.holding,
            "to_account": gha.holding,
            "blocks": [
                {
                    "unique_id_first": "CA0012-GHA01-GHA-301-2024",
                    "unique_id_last": "CA0012-GHA01-GHA-310-2024",
                }
            ],
        },
    )
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"].endswith("/check-failed") and problem["transaction_id"].startswith("tx_")
    assert {c["code"] for c in problem["checks"]} >= {"T03", "T01"}

    answer = await world.transact(
        che, {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 10**6}
    )
    assert answer.status_code == 422
    assert [c["code"] for c in answer.json()["checks"]] == ["T01"]

    report = await world.invariants()
    assert report["ok"], report["violations"]
    assert report["journal_entries"] > 0


async def test_checks_refuse_and_move_nothing(world: World) -> None:
    gha, che, swe = world.parties["GHA"], world.parties["CHE"], world.parties["SWE"]
    await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding, purposes="NDC")

    cases = [
        # SWE does not participate in CA0012 (T07).
        (
            {"type": "transfer", "from_account": che.holding, "to_account": swe.holding, "quantity": 10},
            {"T07"},
        ),
        # NDC-only units cannot be used for OIMP or cancelled for OP (T05).
        ({"type": "use_oimp", "from_account": che.holding, "quantity": 10, "purpose": "CORSIA"}, {"T05"}),
        ({"type": "cancellation", "from_account": che.holding, "quantity": 10}, {"T05"}),
        # NDC use year outside the period (N01), or missing (Q05).
        ({"type": "use_ndc", "from_account": che.holding, "quantity": 10, "ndc_use_year": 2035}, {"N01"}),
        ({"type": "use_ndc", "from_account": che.holding, "quantity": 10}, {"Q05"}),
        # Neither quantity nor ranges (Q01); to the same account (Q04); to a use account (A06).
        ({"type": "transfer", "from_account": che.holding, "to_account": gha.holding}, {"Q01"}),
        (
            {"type": "transfer", "from_account": che.holding, "to_account": che.holding, "quantity": 1},
            {"Q04"},
        ),
        (
            {
                "type": "transfer",
                "from_account": che.holding,
                "to_account": gha.accounts["ndc_use"],
                "quantity": 1,
            },
            {"A06"},
        ),
        # Another Party's account as the source: nothing said about it (A01).
        (
            {"type": "transfer", "from_account": gha.holding, "to_account": che.holding, "quantity": 1},
            {"A01"},
        ),
        # A terminal account as the source (A03).
        (
            {
                "type": "transfer",
                "from_account": che.accounts["ndc_use"],
                "to_account": gha.holding,
                "quantity": 1,
            },
            {"A03", "T01"},
        ),
    ]
    for body, codes in cases:
        validation = await world.gateway.post("/v1/transactions/validate", json=body, headers=che.initiator)
        assert validation.status_code == 200, validation.text
        assert {c["code"] for c in validation.json()["checks"]} == codes, (body, validation.json())
        answer = await world.transact(che, body)
        assert answer.status_code == 422, (body, answer.text)
        assert {c["code"] for c in answer.json()["checks"]} == codes, (body, answer.json())
    assert await world.holdings_total(che, che.holding) == 100
    ok = await world.gateway.post(
        "/v1/transactions/validate",
        json={"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 40},
        headers=che.initiator,
    )
    assert ok.json()["valid"] is True and ok.json()["quantity"] == 40
    assert await world.holdings_total(che, che.holding) == 100

    catalogue = await world.gateway.get("/v1/checks")
    assert catalogue.status_code == 200
    codes = {c["code"] for c in catalogue.json()["items"]}
    assert {f"T{n:02d}" for n in range(1, 12)} - {"T12"} <= codes
    report = await world.invariants()
    assert report["ok"], report["violations"]


async def test_idempotency_and_isolation(world: World) -> None:
    gha, che = world.parties["GHA"], world.parties["CHE"]
    await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding)
    body = {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 10}
    first = await world.transact(che, body, key="k-1")
    again = await world.transact(che, body, key="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers.get("idempotent-replayed") == "true"
    other = await world.transact(che, {**body, "quantity": 11}, key="k-1")
    assert other.status_code == 422 and other.json()["type"].endswith("idempotency-key-reused")
    missing = await world.gateway.post("/v1/transactions", json=body, headers=che.initiator)
    assert missing.status_code == 400
    assert await world.holdings_total(che, che.holding) == 90

    # A refusal is replayed too.
    refused = await world.transact(che, {**body, "quantity": 10**9}, key="k-2")
    assert refused.status_code == 422
    assert (await world.transact(che, {**body, "quantity": 10**9}, key="k-2")).json() == refused.json()

    # Ghana reads neither CHE's holdings, nor its units, nor its internal transfers; CHE's viewer can't move.
    tx_id = first.json()["transaction_id"]
    assert (
        await world.gateway.get(f"/v1/accounts/{che.holding}/holdings", headers=gha.viewer)
    ).status_code == 404
    assert (
        await world.gateway.get("/v1/units/CA0012-GHA01-GHA-50-2024", headers=gha.viewer)
    ).status_code == 404
    unit = await world.gateway.get("/v1/units/CA0012-GHA01-GHA-50-2024", headers=che.viewer)
    assert unit.status_code == 200, unit.text
    assert unit.json()["block"]["account_id"] == che.holding
    assert next(h["entry_type"] for h in unit.json()["history"]) == "first_transfer"
    # Both sides of a cross-Party transfer see it; a third Party does not.
    assert (await world.gateway.get(f"/v1/transactions/{tx_id}", headers=gha.viewer)).status_code == 200
    swe = world.parties["SWE"]
    assert (await world.gateway.get(f"/v1/transactions/{tx_id}", headers=swe.viewer)).status_code == 404
    listed = await world.gateway.get("/v1/transactions", params={"account": che.holding}, headers=swe.viewer)
    assert listed.json()["items"] == []
    listed = await world.gateway.get("/v1/transactions", params={"status": "completed"}, headers=che.viewer)
    assert tx_id in {t["transaction_id"] for t in listed.json()["items"]}
    assert (await world.transact(world.parties["CHE"], body, direct=False)).status_code == 201
    viewer_move = await world.gateway.post(
        "/v1/transactions", json=body, headers={**che.viewer, "Idempotency-Key": "v-1"}
    )
    assert viewer_move.status_code == 403


async def test_first_transfer_is_idempotent_and_once(world: World) -> None:
    che = world.parties["CHE"]
    made = await world.first_transfer("GHA", "CA0012", 50, to_account=che.holding)
    body = {
        "operation_id": "op-fixed",
        "first_transferring_party": "GHA",
        "authorization_id": "GHA-AUTH-1",
        "authorization_version": 1,
        "purposes": "NDC",
        "first_transfer_definition": "First international transfer",
        "to_account": che.holding,
        "blocks": [
            {
                "ca_id": "CA0012",
                "origin_registry_id": "GHA01",
                "first": 1000,
                "last": 1099,
                "vintage": 2024,
                "mitigation_type": "Emission reductions",
            }
        ],
    }
    one = await world.ledger.post("/internal/v1/first-transfers", json=body, headers=world.ars)
    two = await world.ledger.post("/internal/v1/first-transfers", json=body, headers=world.ars)
    assert one.status_code == two.status_code == 201, one.text
    assert one.json() == two.json()
    # The same serials under another operation: refused (T02), nothing created.
    again = await world.ledger.post(
        "/internal/v1/first-transfers", json={**body, "operation_id": "op-other"}, headers=world.ars
    )
    assert again.status_code == 422 and {c["code"] for c in again.json()["checks"]} == {"T02"}
    # Only the first transferring Party, from its own registry (T04); OIMP at issuance goes to its own account (F01).
    wrong = {**body, "operation_id": "op-wrong", "first_transferring_party": "CHE"}
    wrong["blocks"] = [{**body["blocks"][0], "first": 5000, "last": 5001}]
    answer = await world.ledger.post("/internal/v1/first-transfers", json=wrong, headers=world.ars)
    assert answer.status_code == 422 and "T04" in {c["code"] for c in answer.json()["checks"]}
    assert await world.holdings_total(che, che.holding) == 150
    assert made["quantity"] == 50
    # A Party principal cannot call the internal endpoint.
    assert (
        await world.ledger.post("/internal/v1/first-transfers", json=body, headers=che.admin)
    ).status_code == 403
    report = await world.invariants()
    assert report["ok"], report["violations"]


async def test_oimp_first_transfer_at_use(world: World) -> None:
    gha = world.parties["GHA"]
    used = await world.first_transfer(
        "GHA",
        "CA0012",
        25,
        purposes="OIMP",
        definition="Use or Cancellation",
        use={"type": "use_oimp", "purpose": "CORSIA"},
    )
    assert used["actions"] == [
        {
            "party": "GHA",
            "registry_id": "GHA01",
            "action_type": "First transfer",
            "action_subtype": "Use or cancellation",
            "transferring_party_id": None,
            "acquiring_party_id": None,
            "using_cancelling_party_id": "GHA",
            "using_cancelling_entity_id": None,
            "purpose_oimp": "CORSIA",
            "ndc_use_year": None,
        }
    ]
    assert (
        used["blocks"][0]["state"] == "used_oimp"
        and used["blocks"][0]["account_id"] == gha.accounts["oimp_use"]
    )
    # OIMP at issuance lands in the Party's own holding account; NDC purposes cannot go there (F01).
    own = await world.first_transfer(
        "GHA", "CA0012", 10, to_account=gha.holding, purposes="OIMP", definition="Issuance"
    )
    assert own["actions"][0]["action_subtype"] == "Issuance"
    await world.first_transfer("GHA", "CA0012", 10, to_account=gha.holding, expect=422)
    report = await world.invariants()
    assert report["ok"], report["violations"]


async def test_events_carry_what_the_aef_needs(world: World) -> None:
    gha, che = world.parties["GHA"], world.parties["CHE"]
    await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding)
    answer = await world.transact(
        che, {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 30}
    )
    assert answer.status_code == 201
    feed = await world.ledger.get("/internal/v1/events", headers=world.admin)
    assert feed.status_code == 200, feed.text
    events = [e for e in feed.json()["items"] if e["type"] == "transaction.completed"]
    assert len(events) == 2
    transfer = events[-1]["data"]
    assert transfer["parties"] == ["CHE", "GHA"] and transfer["from_registry_id"] == "CHE01"
    block = transfer["blocks"][0]
    for key in (
        "ca_id",
        "authorization_id",
        "first_transferring_party",
        "vintage",
        "metric",
        "mitigation_type",
        "purposes",
    ):
        assert block[key] is not None, key
    assert transfer["completed_at"]


async def test_concurrent_transfers_only_feasible_ones_win(world: World) -> None:
    gha, che = world.parties["GHA"], world.parties["CHE"]
    await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding)
    body = {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 7}
    answers = await asyncio.gather(*(world.transact(che, body, direct=True) for _ in range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(201) == 14 and statuses.count(422) == 6, statuses
    for answer in answers:
        if answer.status_code == 422:
            assert [c["code"] for c in answer.json()["checks"]] == ["T01"]
    assert await world.holdings_total(che, che.holding) == 2
    assert await world.holdings_total(gha, gha.holding) == 98
    moved = sorted(
        (b["first"], b["last"]) for a in answers if a.status_code == 201 for b in a.json()["blocks"]
    )
    assert sum(last - first + 1 for first, last in moved) == 98
    assert all(b[0] > a[1] for a, b in itertools.pairwise(moved))  # no serial moved twice
    # Coalescing: Ghana received 14 adjacent pieces and holds one block.
    holdings = await world.gateway.get(f"/v1/accounts/{gha.holding}/holdings", headers=gha.viewer)
    assert [(b["first"], b["last"]) for b in holdings.json()["items"]] == [(1, 98)]
    report = await world.invariants()
    assert report["ok"], report["violations"]


async def test_four_eyes_reserve_approve_cancel_and_time_out(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    gha, che = world.parties["GHA"], world.parties["CHE"]
    await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding)
    await world.set_four_eyes(che, True)
    body = {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 30}

    proposed = await world.transact(che, body)
    assert proposed.status_code == 201, proposed.text
    pending = proposed.json()
    assert pending["status"] == "awaiting_approval" and pending["actions"] == []
    tx_id = pending["transaction_id"]
    # Reserved at proposal: nothing else can take them.
    other = await world.transact(che, {**body, "quantity": 71})
    assert other.status_code == 422 and [c["code"] for c in other.json()["checks"]] == ["T01"]
    balance = await world.ledger.get(f"/internal/v1/accounts/{che.holding}/balance", headers=world.admin)
    assert balance.json()["reserved"] == 30 and balance.json()["held"] == 70

    # The initiator has no approver role; a client with both roles may not approve its own (T11).
    path = f"/v1/transactions/{tx_id}/approve"
    assert (
        await world.gateway.post(path, headers={**che.initiator, "Idempotency-Key": "a-0"})
    ).status_code == 403
    both = await world.suite.new_client(name="CHE both", party="CHE", roles=["initiator", "approver"])
    both_headers = {
        "Authorization": f"Bearer {await world.suite.token(both['client_id'], both['client_secret'])}"
    }
    own = await world.gateway.post(
        "/v1/transactions", json={**body, "quantity": 5}, headers={**both_headers, "Idempotency-Key": "b-1"}
    )
    assert own.status_code == 201
    refused = await world.gateway.post(
        f"/v1/transactions/{own.json()['transaction_id']}/approve",
        headers={**both_headers, "Idempotency-Key": "b-2"},
    )
    assert refused.status_code == 422 and refused.json()["checks"][0]["code"] == "T11"
    # Another Party's approver does not even see it.
    assert (
        await world.gateway.post(path, headers={**gha.approver, "Idempotency-Key": "a-1"})
    ).status_code == 404

    approved = await world.gateway.post(path, headers={**che.approver, "Idempotency-Key": "a-2"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "completed" and approved.json()["approved_by"]
    assert {a["action_type"] for a in approved.json()["actions"]} == {"Transfer", "Acquisition"}
    again = await world.gateway.post(path, headers={**che.approver, "Idempotency-Key": "a-3"})
    assert again.status_code == 409
    assert await world.holdings_total(gha, gha.holding) == 30

    # Cancel releases the reservation (and the pieces coalesce back).
    cancelled = await world.gateway.post(
        f"/v1/transactions/{own.json()['transaction_id']}/cancel", headers=che.initiator
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    holdings = (await world.gateway.get(f"/v1/accounts/{che.holding}/holdings", headers=che.viewer)).json()
    assert [(b["first"], b["last"], b["state"]) for b in holdings["items"]] == [(31, 100, "held")]

    # A pending transaction times out: terminated, units released.
    late = await world.transact(che, {**body, "quantity": 20})
    ledgers = world.suite.services["transactions"].state.ledgers
    assert await ledgers.expire_pending(datetime.now(UTC) + timedelta(days=30)) == 1
    status = await world.gateway.get(f"/v1/transactions/{late.json()['transaction_id']}", headers=che.viewer)
    assert status.json()["status"] == "terminated"
    balance = await world.ledger.get(f"/internal/v1/accounts/{che.holding}/balance", headers=world.admin)
    assert balance.json() == {
        "account_id": che.holding,
        "held": 70,
        "reserved": 0,
        "pending_in": 0,
        "total": 70,
    }
    report = await world.invariants()
    assert report["ok"], report["violations"]


async def test_named_ranges_split_blocks_and_coalesce_on_return(world: World) -> None:
    gha, che = world.parties["GHA"], world.parties["CHE"]
    await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding)
    ranges = [
        {"unique_id_first": "CA0012-GHA01-GHA-40-2024", "unique_id_last": "CA0012-GHA01-GHA-49-2024"},
        {"unique_id_first": "CA0012-GHA01-GHA-60-2024", "unique_id_last": "CA0012-GHA01-GHA-60-2024"},
    ]
    answer = await world.transact(
        che, {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "blocks": ranges}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["quantity"] == 11
    held = (await world.gateway.get(f"/v1/accounts/{che.holding}/holdings", headers=che.viewer)).json()
    assert [(b["first"], b["last"]) for b in held["items"]] == [(1, 39), (50, 59), (61, 100)]
    assert held["total"] == 89
    # Back again: the gaps close and CHE holds one block.
    back = await world.transact(
        gha, {"type": "transfer", "from_account": gha.holding, "to_account": che.holding, "quantity": 11}
    )
    assert back.status_code == 201, back.text
    held = (await world.gateway.get(f"/v1/accounts/{che.holding}/holdings", headers=che.viewer)).json()
    assert [(b["first"], b["last"]) for b in held["items"]] == [(1, 100)]
    # Paging holdings.
    await world.transact(
        che, {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "blocks": ranges}
    )
    first = (
        await world.gateway.get(f"/v1/accounts/{che.holding}/holdings?limit=2", headers=che.viewer)
    ).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await world.gateway.get(
        f"/v1/accounts/{che.holding}/holdings",
        params={"limit": 2, "cursor": first["next_cursor"]},
        headers=che.viewer,
    )
    assert [(b["first"], b["last"]) for b in rest.json()["items"]] == [(61, 100)]
    report = await world.invariants()
    assert report["ok"], report["violations"]
