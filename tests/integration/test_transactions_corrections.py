"""Secretariat corrections (domain A16) through the gateway, on both backends: a compensating `correction`
transaction under dual control reverses a completed transfer; the transfer itself is never edited."""

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.integration._ledger_world import World, ledger_world


@pytest.fixture
async def world(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[World]:
    async with ledger_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await built.add_ca("CA0012", ["GHA", "CHE"])
        yield built


def _codes(answer) -> list[str]:  # type: ignore[no-untyped-def]
    assert answer.status_code == 422, answer.text
    assert answer.json()["type"].endswith("/check-failed")
    return [c["code"] for c in answer.json()["checks"]]


async def test_a_correction_reverses_a_transfer_under_dual_control(world: World) -> None:
    gha, che = world.parties["GHA"], world.parties["CHE"]
    gw = world.gateway
    first = await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding)
    sent = await world.transact(
        che, {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 30}
    )
    assert sent.status_code == 201, sent.text
    original = sent.json()
    second_admin = await world.suite.new_client(name="Second admin", party=None, roles=["secretariat_admin"])
    other_admin = await world.suite.auth(second_admin["client_id"], second_admin["client_secret"])

    async def propose(transaction_id: str, key: str | None = None, headers: dict | None = None):  # type: ignore[no-untyped-def]
        return await gw.post(
            "/v1/admin/corrections",
            json={"transaction_id": transaction_id, "reason": "Party request GHA-2025-17: wrong account"},
            headers={**(headers or world.admin), "Idempotency-Key": key or uuid.uuid4().hex},
        )

    # Only a Secretariat administrator proposes, with an Idempotency-Key.
    assert (await propose(original["transaction_id"], headers=che.initiator)).status_code == 403
    missing_key = await gw.post(
        "/v1/admin/corrections",
        json={"transaction_id": original["transaction_id"], "reason": "x"},
        headers=world.admin,
    )
    assert missing_key.status_code == 400
    assert (await propose("tx_NOSUCHTRANSACTION")).status_code == 404

    proposed = await propose(original["transaction_id"], key="corr-1")
    assert proposed.status_code == 201, proposed.text
    correction = proposed.json()
    assert (correction["type"], correction["status"]) == ("correction", "awaiting_approval")
    assert correction["corrects"] == original["transaction_id"]
    assert (correction["from_account"], correction["to_account"]) == (gha.holding, che.holding)
    assert correction["quantity"] == 30 and correction["actions"] == []
    assert [(b["first"], b["last"], b["state"]) for b in correction["blocks"]] == [(1, 30, "reserved")]
    replay = await propose(original["transaction_id"], key="corr-1")
    assert replay.json()["transaction_id"] == correction["transaction_id"]
    cid = correction["transaction_id"]

    # The reserved units cannot be spent by Ghana meanwhile, and no Party can approve or withdraw it.
    spend = await world.transact(
        gha, {"type": "transfer", "from_account": gha.holding, "to_account": che.holding, "quantity": 1}
    )
    assert _codes(spend) == ["T01"]
    approve_as_party = await gw.post(
        f"/v1/transactions/{cid}/approve", headers={**gha.approver, "Idempotency-Key": "p-1"}
    )
    assert approve_as_party.status_code == 403
    assert (await gw.post(f"/v1/transactions/{cid}/cancel", headers=gha.initiator)).status_code == 403
    # Both Parties see it; the Secretariat lists it among corrections awaiting approval.
    for actors in (gha, che):
        seen = await gw.get(f"/v1/transactions/{cid}", headers=actors.viewer)
        assert seen.status_code == 200 and seen.json()["corrects"] == original["transaction_id"]
    pending = await gw.get(
        "/v1/admin/corrections", params={"status": "awaiting_approval"}, headers=world.admin
    )
    assert [t["transaction_id"] for t in pending.json()["items"]] == [cid]
    assert (await gw.get("/v1/admin/corrections", headers=gha.viewer)).status_code == 403

    # A second correction of the same transfer is refused while this one is pending (C02; its units are
    # reserved by the first, C03).
    assert _codes(await propose(original["transaction_id"])) == ["C02", "C03"]
    # Dual control: the proposer cannot approve (C05); nothing moves.
    own = await gw.post(
        f"/v1/admin/corrections/{cid}/approve", headers={**world.admin, "Idempotency-Key": "a-0"}
    )
    assert _codes(own) == ["C05"]
    assert await world.holdings_total(che, che.holding) == 70

    approved = await gw.post(
        f"/v1/admin/corrections/{cid}/approve", headers={**other_admin, "Idempotency-Key": "a-1"}
    )
    assert approved.status_code == 200, approved.text
    done = approved.json()
    assert done["status"] == "completed" and done["approved_by"] == second_admin["client_id"]
    assert [(b["first"], b["last"], b["state"], b["account_id"]) for b in done["blocks"]] == [
        (1, 30, "held", che.holding)
    ]
    again = await gw.post(
        f"/v1/admin/corrections/{cid}/approve", headers={**other_admin, "Idempotency-Key": "a-1"}
    )
    assert again.json() == done and again.headers.get("idempotent-replayed") == "true"
    assert await world.holdings_total(che, che.holding) == 100
    assert await world.holdings_total(gha, gha.holding) == 0

    # The transfer is untouched; the unit's history shows the transfer and the correction.
    unchanged = await gw.get(f"/v1/transactions/{original['transaction_id']}", headers=world.admin)
    assert unchanged.json() == original
    unit = await gw.get("/v1/units/CA0012-GHA01-GHA-5-2024", headers=world.admin)
    kinds = [(e["transaction_id"], e["entry_type"]) for e in unit.json()["history"]]
    assert (original["transaction_id"], "transfer") in kinds
    assert (cid, "reserve") in kinds and (cid, "correction") in kinds
    assert unit.json()["block"]["account_id"] == che.holding

    # Corrected once only (C02); a correction, a first transfer, are not transfers to reverse (C01).
    assert _codes(await propose(original["transaction_id"])) == ["C02", "C03"]
    assert _codes(await propose(cid)) == ["C01"]
    assert _codes(await propose(first["transaction_id"])) == ["C01"]

    # The event says what the AEF needs to know: no action of its own, and what it corrects.
    feed = await world.ledger.get("/internal/v1/events", headers=world.admin)
    events = [e["data"] for e in feed.json()["items"] if e["type"] == "transaction.completed"]
    assert events[-1]["type"] == "correction" and events[-1]["corrects"] == original["transaction_id"]
    assert events[-1]["actions"] == [] and events[-1]["parties"] == ["CHE", "GHA"]

    report = await world.invariants()
    assert report["ok"], report["violations"]


async def test_corrections_refused_when_units_moved_on_and_withdrawn(world: World) -> None:
    gha, che = world.parties["GHA"], world.parties["CHE"]
    gw = world.gateway
    await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding)
    out = await world.transact(
        che, {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 20}
    )
    assert out.status_code == 201
    onward = await world.transact(
        gha, {"type": "transfer", "from_account": gha.holding, "to_account": che.holding, "quantity": 5}
    )
    assert onward.status_code == 201

    async def propose(transaction_id: str):  # type: ignore[no-untyped-def]
        return await gw.post(
            "/v1/admin/corrections",
            json={"transaction_id": transaction_id, "reason": "Party request"},
            headers={**world.admin, "Idempotency-Key": uuid.uuid4().hex},
        )

    # Ghana sent 5 of the 20 on: the transfer cannot be reversed whole (C03), nothing is reserved.
    refused = await propose(out.json()["transaction_id"])
    assert _codes(refused) == ["C03"]
    recorded = await gw.get(f"/v1/transactions/{refused.json()['transaction_id']}", headers=world.admin)
    assert recorded.json()["status"] == "rejected" and recorded.json()["type"] == "correction"
    held = await gw.get(f"/v1/accounts/{gha.holding}/holdings", headers=gha.viewer)
    assert {b["state"] for b in held.json()["items"]} == {"held"}

    # The onward transfer can be reversed; withdrawn, its units are released where they are.
    proposed = await propose(onward.json()["transaction_id"])
    assert proposed.status_code == 201, proposed.text
    cid = proposed.json()["transaction_id"]
    withdrawn = await gw.post(f"/v1/admin/corrections/{cid}/cancel", headers=world.admin)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "cancelled"
    late = await gw.post(
        f"/v1/admin/corrections/{cid}/approve", headers={**world.admin, "Idempotency-Key": "z"}
    )
    assert late.status_code == 409
    holdings = await gw.get(f"/v1/accounts/{che.holding}/holdings", headers=che.viewer)
    assert {b["state"] for b in holdings.json()["items"]} == {"held"}
    assert await world.holdings_total(che, che.holding) == 85
    # Withdrawn, it no longer blocks a new proposal.
    assert (await propose(onward.json()["transaction_id"])).status_code == 201

    report = await world.invariants()
    assert report["ok"], report["violations"]
