"""Manual acceptance of incoming transfers (INTERREGISTRY §6) and the pair freeze of an open reconciliation
(3004, §8), on both backends. The Party's section setting `incoming_acceptance: manual` is set through
party_sections' `PATCH /v1/party-sections/{party}/settings` and reaches the ledger's cached directory at
once: the next proposal is answered 202, its units wait `pending_in` (not spendable, refused 4002 to anyone
else) until an approver of the acquiring Party accepts with `POST /v1/transactions/{id}/approve` (`held`,
AEF `Acquisition`, inbox `transfer.completed`) or declines with `/reject` (a return goes back to
`transferred_out`), the sender cancels (case 165: `cancelled`, a repeat gets 6002) or `respond_by` passes
(`terminated`); the ledger invariants hold after each. While a reconciliation is `totals_inconsistent`,
transfers of its CA and vintage with that registry are refused 3004 both ways, until it is resolved."""

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration._interregistry_world import (
    Registry,
    TransferWorld,
    proposal,
    transfer_block,
    transfer_world,
)

pytestmark = pytest.mark.xdist_group("interregistry")


@pytest.fixture
async def tw(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TransferWorld]:
    async with transfer_world(make_database, tmp_path, monkeypatch) as world:
        await world.ghana_holds_units(["GHA", "CHE", "DNK"], "CHE01")
        yield world


@pytest.fixture
def che(tw: TransferWorld) -> Registry:
    return tw.irx.registries["CHE01"]


async def _manual(tw: TransferWorld) -> None:
    """GHA's party_admin switches its section to manual acceptance (party_sections, `If-Match`)."""
    gha = tw.ledger.parties["GHA"]
    section = await tw.gateway.get("/v1/party-sections/GHA", headers=gha.admin)
    answer = await tw.gateway.patch(
        "/v1/party-sections/GHA/settings",
        json={"incoming_acceptance": "manual"},
        headers={**gha.admin, "If-Match": section.headers["etag"]},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["settings"]["incoming_acceptance"] == "manual"


async def _decide(
    tw: TransferWorld, transaction_id: str, verb: str, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    return await tw.gateway.post(
        f"/v1/transactions/{transaction_id}/{verb}",
        json=body or None,
        headers={
            **(headers or tw.ledger.parties["GHA"].approver),
            "Idempotency-Key": f"{verb}-{transaction_id}",
        },
    )


async def _states(tw: TransferWorld) -> list[tuple[str, int, int, str]]:
    answer = await tw.gateway.get(
        f"/v1/accounts/{tw.ledger.parties['GHA'].holding}/holdings", headers=tw.ledger.admin
    )
    assert answer.status_code == 200, answer.text
    return sorted(
        (b["origin_registry_id"], b["first"], b["last"], b["state"]) for b in answer.json()["items"]
    )


async def _finals(tw: TransferWorld, che: Registry) -> dict[str, str]:
    return {
        m["body"]["transfer_id"]: m["type"]
        for m in await tw.inbox_items(che)
        if m["type"].startswith("transfer.") and m["type"] != "transfer.proposal"
    }


async def test_manual_acceptance_waits_for_the_partys_approver(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    dnk = await tw.irx.connect("DNK01")
    directory = tw.irx.suite.services["transactions"].state.directory
    directory.max_lag = 3600.0  # a loaded test machine must not make the follower look behind
    await directory.catch_up()
    auto = proposal(che, "A1", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 101, 110)])
    assert (await tw.propose(che, auto)).status_code == 201  # automatic by default
    await directory.catch_up()
    assert directory._live()  # GHA's section is cached: only party_sections' invalidation can change it

    await _manual(tw)
    body = proposal(che, "M1", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 1, 50)])
    held = await tw.propose(che, body)
    assert held.status_code == 202, held.text
    assert held.json()["status"] == "awaiting_approval" and held.json()["respond_by"]
    transaction_id = held.json()["ir_transaction_id"]
    assert ("CHE01", 1, 50, "pending_in") in await _states(tw)
    assert "CHE01-M1" not in await _finals(tw, che)
    # The acquiring Party's feed and webhooks are told to decide, and by when.
    outbox = tw.irx.suite.services["transactions"].state.outbox
    await outbox.relay()
    told = (await outbox.read(0, 1000, ["interregistry.transfer.awaiting_approval"])).items
    assert [(e.party, e.data["transfer_id"], e.data["transaction_id"]) for e in told] == [
        ("GHA", "CHE01-M1", transaction_id)
    ]
    assert told[0].data["respond_by"] == held.json()["respond_by"].replace("Z", "+00:00")
    waiting = await tw.gateway.get(
        "/v1/transactions", params={"status": "awaiting_approval"}, headers=gha.approver
    )
    assert [t["transaction_id"] for t in waiting.json()["items"]] == [transaction_id]
    # Not spendable, and nobody else can bring the same serials in meanwhile.
    other = proposal(dnk, "X", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 40, 60)])
    assert {c["code"] for c in (await tw.propose(dnk, other)).json()["codes"]} == {4002}
    assert (await tw.propose(che, body)).status_code == 202  # a repeat while pending: the same answer
    # Only an approver of the acquiring Party decides, and not into a blocked account (it stays pending).
    assert (await _decide(tw, transaction_id, "approve", gha.initiator)).status_code == 403
    assert (await _decide(tw, transaction_id, "approve", tw.ledger.admin)).status_code == 403
    assert (await tw.gateway.post(f"/v1/accounts/{gha.holding}/block", headers=gha.admin)).status_code == 200
    blocked = await tw.gateway.post(
        f"/v1/transactions/{transaction_id}/approve", headers={**gha.approver, "Idempotency-Key": "b"}
    )
    assert blocked.status_code == 422 and [c["code"] for c in blocked.json()["checks"]] == ["5903"]
    assert (
        await tw.gateway.post(f"/v1/accounts/{gha.holding}/unblock", headers=gha.admin)
    ).status_code == 200

    accepted = await _decide(tw, transaction_id, "approve")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "completed" and accepted.json()["approved_by"]
    assert [a["action_type"] for a in accepted.json()["actions"]] == ["Acquisition"]
    assert ("CHE01", 1, 50, "held") in await _states(tw)
    assert (await _finals(tw, che))["CHE01-M1"] == "transfer.completed"
    assert (await _decide(tw, transaction_id, "approve")).headers.get("idempotent-replayed") == "true"
    repeat = await tw.propose(che, body)  # the proposal again under a new message id: what was decided
    assert repeat.status_code == 201 and repeat.json()["status"] == "completed"
    await tw.invariants_ok()


async def test_reject_cancel_and_timeout_leave_nothing_behind(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 30)
    transfer_id = sent.json()["interregistry"]["transfer_id"]
    assert (await tw.respond(che, transfer_id)).status_code == 200
    [out] = [m["body"] for m in await tw.inbox_items(che) if m["type"] == "transfer.proposal"]
    before = await _states(tw)
    await _manual(tw)

    # A return rejected by the Party: the units are `transferred_out` to CHE01 again, as before.
    back = await tw.propose(che, proposal(che, "R1", "GHA", gha.holding, out["blocks"]))
    assert back.status_code == 202, back.text
    assert len(await _states(tw)) == len(before) + 1
    rejected = await _decide(tw, back.json()["ir_transaction_id"], "reject", reason="not expected")
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected", rejected.text
    assert rejected.json()["checks"] == [{"code": "5904", "message": "not expected"}]
    assert await _states(tw) == before
    again = await tw.send("GHA", "CHE01", 5)  # nothing of the return is spendable: the rest is as it was
    assert again.status_code == 201, again.text
    # `/reject` decides incoming transfers only; the Party's own transactions are withdrawn with `/cancel`.
    own = await _decide(tw, again.json()["transaction_id"], "reject")
    assert own.status_code == 409 and own.json()["type"].endswith("/transaction-not-rejectable"), own.text

    # Case 165: the sender cancels before the decision; the id stays used (6002 on a repeat).
    fresh = proposal(che, "C1", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 1, 10)])
    pending = await tw.propose(che, fresh)
    assert pending.status_code == 202
    cancelled = await tw.cancel(che, "CHE01-C1")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    repeat = await tw.propose(che, fresh)
    assert repeat.status_code == 409 and repeat.json()["code"] == 6002
    late_approval = await _decide(tw, pending.json()["ir_transaction_id"], "approve")
    assert late_approval.status_code == 409 and late_approval.json()["transaction_status"] == "cancelled"

    # Nobody decides: terminated at respond_by on the IR's clock.
    late = proposal(che, "T1", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 20, 29)])
    waiting = await tw.propose(che, late)
    assert waiting.status_code == 202
    assert await tw.transfers.terminate_incoming_due() == 0
    now = tw.transfers.clock() + timedelta(seconds=301)  # the world's registries have 300 s to answer
    assert await tw.transfers.terminate_incoming_due(now) == 1
    terminated = await tw.gateway.get(
        f"/v1/transactions/{waiting.json()['ir_transaction_id']}", headers=gha.approver
    )
    assert terminated.json()["status"] == "terminated"
    finals = await _finals(tw, che)
    assert (finals["CHE01-R1"], finals["CHE01-C1"], finals["CHE01-T1"]) == (
        "transfer.rejected",
        "transfer.cancelled",
        "transfer.terminated",
    )
    assert not [s for s in await _states(tw) if s[3] == "pending_in"]
    await tw.invariants_ok()


async def test_totals_inconsistent_freezes_the_pair_for_its_ca_and_vintage(
    tw: TransferWorld, che: Registry
) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 20)
    assert (await tw.respond(che, sent.json()["interregistry"]["transfer_id"])).status_code == 200
    started = await tw.gateway.post(
        "/v1/interregistry/reconciliations", json={"registry_id": "CHE01"}, headers=tw.irx.admin
    )
    rec = started.json()["reconciliation_id"]
    wrong = {  # the registry lost the transfer: the (ir_to_registry, CA0012, 2024, GHG) totals differ
        "reconciliation_id": rec,
        "cutoff_position": started.json()["cutoff_position"],
        "cutoff_seq": started.json()["cutoff_seq"],
        "totals": [],
        "final_counts": {"rejected": 0, "terminated": 0, "cancelled": 0},
        "open_transfers": [],
    }
    answered = await che.post(f"reconciliations/{rec}/totals", che.envelope("reconciliation.totals", wrong))
    assert answered.status_code == 200 and answered.json()["status"] == "totals_inconsistent", answered.text

    out = await tw.send("GHA", "CHE01", 5)
    assert out.status_code == 422 and [c["code"] for c in out.json()["checks"]] == ["3004"], out.text
    incoming = proposal(che, "F1", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 1, 5)])
    refused = await tw.propose(che, incoming)
    assert refused.status_code == 422 and [c["code"] for c in refused.json()["codes"]] == [3004]
    other_vintage = proposal(
        che, "F2", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 1, 5, vintage=2023)]
    )
    assert (await tw.propose(che, other_vintage)).status_code == 201

    resolved = await tw.gateway.post(
        f"/v1/interregistry/reconciliations/{rec}/resolve",
        json={"note": "CHE01 restored the transfer", "compensating_transaction_ids": []},
        headers=tw.irx.admin,
    )
    assert resolved.status_code == 200, resolved.text
    assert (await tw.send("GHA", "CHE01", 5)).status_code == 201
    await tw.invariants_ok()
