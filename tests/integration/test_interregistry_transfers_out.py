"""Outgoing transfers IR → connected registry (INTERREGISTRY §5) through the gateway, on both backends: the
happy path to `completed` with `transferred_out` blocks and the AEF `Transfer` row, each rejection code of
the proposal, the registry's reject, termination on an injected clock, the initiator's cancel while
`sent`, four-eyes, and accept racing the terminator (exactly one final status, units conserved)."""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from contracts.interregistry import TransferFinal, TransferProposal
from services.transactions.interregistry.models import irx_message
from services.transactions.models import blocks
from tests.integration._interregistry_world import Registry, TransferWorld, transfer_world

pytestmark = pytest.mark.xdist_group("interregistry")

YEAR = datetime.now(UTC).year


@pytest.fixture
async def tw(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TransferWorld]:
    async with transfer_world(make_database, tmp_path, monkeypatch) as world:
        await world.ghana_holds_units(["GHA", "CHE", "SWE"], "CHE01")
        yield world


@pytest.fixture
def che(tw: TransferWorld) -> Registry:
    return tw.irx.registries["CHE01"]


def _types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages if m["type"].startswith("transfer.")]


async def _held(tw: TransferWorld, account: str) -> int:
    answer = await tw.ledger.ledger.get(f"/internal/v1/accounts/{account}/balance", headers=tw.ledger.ars)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["held"])


async def _transaction(tw: TransferWorld, transaction_id: str) -> dict[str, Any]:
    answer = await tw.gateway.get(
        f"/v1/transactions/{transaction_id}", headers=tw.ledger.parties["GHA"].viewer
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_outgoing_transfer_completes_on_accept(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 40, note="to Switzerland")
    assert sent.status_code == 201, sent.text
    transaction = sent.json()
    assert transaction["status"] == "sent" and transaction["to_account"] == "CH-100-77"
    link = transaction["interregistry"]
    transfer_id = link["transfer_id"]
    assert transfer_id == f"GHA01-{transaction['transaction_id']}"
    assert link["direction"] == "ir_to_registry" and link["registry_id"] == "CHE01"
    respond_by = datetime.fromisoformat(link["respond_by"])
    assert timedelta(seconds=290) < respond_by - datetime.now(UTC) <= timedelta(seconds=300)
    assert await _held(tw, gha.holding) == 60  # the 40 are reserved, not spendable
    assert {b["state"] for b in transaction["blocks"]} == {"reserved"}

    [proposal_message] = [m for m in await tw.inbox_items(che) if m["type"] == "transfer.proposal"]
    proposal = TransferProposal.model_validate(proposal_message["body"])
    assert (proposal.transfer_id, proposal.quantity, proposal.acquiring_party) == (transfer_id, 40, "CHE")
    assert (proposal.from_registry, proposal.to_registry, proposal.to_account) == (
        "GHA01",
        "CHE01",
        "CH-100-77",
    )
    [block] = proposal.blocks
    assert (block.first, block.last, block.authorization_id, block.first_transferred) == (
        1,
        40,
        "GHA-AUTH-1",
        True,
    )
    assert block.unique_id_first == "CA0012-GHA01-GHA-1-2024" and block.sector == "Energy"

    accepted = await tw.respond(che, transfer_id)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "completed" and accepted.json()["codes"] == []

    done = await _transaction(tw, transaction["transaction_id"])
    assert done["status"] == "completed" and done["completed_at"] is not None
    assert done["actions"] == [
        {
            "party": "GHA",
            "registry_id": "GHA01",
            "action_type": "Transfer",
            "action_subtype": None,
            "transferring_party_id": None,
            "acquiring_party_id": "CHE",
            "using_cancelling_party_id": None,
            "using_cancelling_entity_id": None,
            "purpose_oimp": None,
            "ndc_use_year": None,
        }
    ]
    assert [(b["state"], b["to_registry_id"], b["transfer_id"]) for b in done["blocks"]] == [
        ("transferred_out", "CHE01", transfer_id)
    ]
    assert await _held(tw, gha.holding) == 60
    assert await tw.ledger.holdings_total(gha, gha.holding) == 60  # transferred_out left the account
    unit = await tw.gateway.get("/v1/units/CA0012-GHA01-GHA-5-2024", headers=tw.ledger.admin)
    assert unit.json()["block"]["state"] == "transferred_out"
    assert [e["entry_type"] for e in unit.json()["history"]][-2:] == ["reserve", "transfer_out"]

    messages = await tw.inbox_items(che)
    assert _types(messages) == ["transfer.proposal", "transfer.completed"]
    final = TransferFinal.model_validate(messages[-1]["body"])
    assert final.status == "completed" and final.blocks == proposal.blocks and final.quantity == 40

    record = await tw.gateway.get(f"/v1/interregistry/transfers/{transfer_id}", headers=che.headers)
    assert record.status_code == 200, record.text
    assert record.json()["status"] == "completed" and record.json()["final_position"] == len(messages)
    assert record.json()["transaction_id"] == transaction["transaction_id"]
    # F never changes: a late vote (a new message) learns it; the same message replays its answer.
    again = await tw.respond(che, transfer_id, "reject", [{"code": 5902, "message": "no account"}])
    assert again.status_code == 409, again.text
    assert again.json()["type"].endswith("/transfer-final") and again.json()["code"] == 6003
    assert again.json()["transfer_status"] == "completed"
    mine = await tw.gateway.get(f"/v1/interregistry/transfers/{transfer_id}", headers=gha.viewer)
    assert mine.status_code == 200 and mine.json() == record.json()  # the IR Party whose account sent it
    swe = await tw.ledger.add_party("SWE")
    assert (
        await tw.gateway.get(f"/v1/interregistry/transfers/{transfer_id}", headers=swe.viewer)
    ).status_code == 404
    dnk = await tw.irx.connect("DNK01")
    assert (
        await tw.gateway.get(f"/v1/interregistry/transfers/{transfer_id}", headers=dnk.headers)
    ).status_code == 404
    listed = await tw.gateway.get(
        "/v1/interregistry/transfers",
        params={"direction": "ir_to_registry", "status": "completed"},
        headers=che.headers,
    )
    assert [t["transfer_id"] for t in listed.json()["items"]] == [transfer_id]
    assert (await tw.gateway.get("/v1/interregistry/transfers", headers=dnk.headers)).json()["items"] == []
    assert (await tw.gateway.get("/v1/interregistry/transfers", headers=swe.viewer)).json()["items"] == []
    await tw.invariants_ok()

    # The IR Party's own feed hears of the transfer: `interregistry.transfer.sent`, then `.completed`.
    outbox = tw.irx.suite.services["transactions"].state.outbox
    await outbox.relay()
    page = await outbox.read(0, 1000, ["interregistry.transfer.sent", "interregistry.transfer.completed"])
    assert [(e.type, e.party, e.data["transfer_id"]) for e in page.items] == [
        ("interregistry.transfer.sent", "GHA", transfer_id),
        ("interregistry.transfer.completed", "GHA", transfer_id),
    ]

    # The IR Party's AEF: T3 `Transfer` to CHE; T4 no longer holds serials 1–40.
    reporting = tw.irx.suite.services["reporting"].state.consumer
    await reporting.catch_up()
    aef = await tw.gateway.get(f"/v1/reports/aef/GHA/{YEAR}", headers=gha.viewer)
    assert aef.status_code == 200, aef.text
    tables = aef.json()["tables"]
    transfers = [a for a in tables["actions"] if a["action_type"] == "Transfer"]
    assert [
        (a["first_id"], a["last_id"], a["acquiring_party_id"], a["party_itmo_registry_id"]) for a in transfers
    ] == [(1, 40, "CHE", "GHA01")]
    assert sum(h["quantity_tco2e"] for h in tables["holdings"]) == 60


async def test_registry_reject_releases_and_stores_codes(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 30, key="out-1")
    replayed = await tw.send("GHA", "CHE01", 30, key="out-1")  # Idempotency-Key: the stored answer
    assert replayed.json() == sent.json() and replayed.headers.get("idempotent-replayed") == "true"
    transfer_id = sent.json()["interregistry"]["transfer_id"]
    refused = await tw.respond(
        che,
        transfer_id,
        "reject",
        [{"code": 5902, "message": "no account CH-100-77"}, {"code": 1234, "message": "odd"}],
    )
    assert refused.status_code == 200, refused.text
    assert refused.json()["status"] == "rejected"
    assert [c["code"] for c in refused.json()["codes"]] == [5902, 5999]
    assert refused.json()["codes"][1]["message"] == "[1234] odd"
    assert await _held(tw, gha.holding) == 100
    done = await _transaction(tw, sent.json()["transaction_id"])
    assert done["status"] == "rejected" and [c["code"] for c in done["checks"]] == ["5902", "5999"]
    assert _types(await tw.inbox_items(che)) == ["transfer.proposal", "transfer.rejected"]
    await tw.invariants_ok()


async def test_each_proposal_check_refuses_with_its_code(tw: TransferWorld) -> None:
    gha = tw.ledger.parties["GHA"]
    await tw.irx.connect("SWE01", status="suspended")
    await tw.irx.connect("NOR01")  # NOR is no participant of CA0012
    admin = tw.ledger.admin
    await tw.ledger.first_transfer(
        "GHA",
        "CA0012",
        10,
        to_account=gha.holding,
        purposes="NDC and OIMP",
        definition="Authorisation",
        authorized_parties=["SWE"],
    )

    async def codes(answer: Any) -> list[str]:
        assert answer.status_code == 422, answer.text
        assert answer.json()["type"].endswith("/check-failed")
        return [c["code"] for c in answer.json()["checks"]]

    valid = await tw.gateway.post(
        "/v1/transactions/validate",
        json={
            "type": "transfer",
            "from_account": gha.holding,
            "to_registry": "NOR01",
            "to_account": "N-1",
            "quantity": 5,
        },
        headers=gha.initiator,
    )
    assert valid.status_code == 200, valid.text
    assert valid.json()["valid"] is False and [c["code"] for c in valid.json()["checks"]] == ["5905"]
    assert await codes(await tw.send("GHA", "SWE01", 5)) == ["3002"]  # suspended
    assert await codes(await tw.send("GHA", "KEN01", 5)) == ["3002"]  # no such registry
    assert await codes(await tw.send("GHA", "NOR01", 5)) == ["5905"]
    ranges = [{"unique_id_first": "CA0012-GHA01-GHA-101-2024", "unique_id_last": "CA0012-GHA01-GHA-101-2024"}]
    assert await codes(await tw.send("GHA", "CHE01", blocks=ranges)) == ["5907"]
    assert await codes(await tw.send("GHA", "CHE01", 1000)) == ["T01"]
    # 4006: a frozen range (reconciliation sets frozen_by) refuses the transfer.
    db = tw.irx.suite.services["transactions"].state.db
    async with db.connect() as connection:
        await connection.execute(update(blocks).where(blocks.c.first_serial == 1).values(frozen_by="rec-1"))
    assert await codes(await tw.send("GHA", "CHE01", 5)) == ["4006"]
    async with db.connect() as connection:
        await connection.execute(update(blocks).values(frozen_by=None))
    # 3002 for an unresponsive registry: an inbox message unacknowledged for more than 24 h.
    async with db.connect() as connection:
        await connection.execute(
            update(irx_message)
            .where(irx_message.c.registry_id == "CHE01", irx_message.c.position == 1)
            .values(positioned_at=datetime.now(UTC) - timedelta(hours=25))
        )
    assert await codes(await tw.send("GHA", "CHE01", 5)) == ["3002"]
    assert (await tw.irx.registries["CHE01"].ack(2)).status_code == 200
    assert (await tw.send("GHA", "CHE01", 5)).status_code == 201
    # Refused proposals are recorded (rejected, no units moved), sent nothing.
    listed = await tw.gateway.get("/v1/transactions", params={"status": "rejected"}, headers=gha.viewer)
    assert len(listed.json()["items"]) == 7
    assert _types(await tw.inbox_items(tw.irx.registries["SWE01"])) == []
    assert admin
    await tw.invariants_ok()


async def test_terminator_on_an_injected_clock(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 25)
    transfer_id = sent.json()["interregistry"]["transfer_id"]
    respond_by = datetime.fromisoformat(sent.json()["interregistry"]["respond_by"])
    assert await tw.transfers.terminate_due(respond_by - timedelta(seconds=1)) == 0
    assert await tw.transfers.terminate_due(respond_by + timedelta(seconds=1)) == 1
    assert await tw.transfers.terminate_due(respond_by + timedelta(seconds=2)) == 0
    assert await _held(tw, gha.holding) == 100
    assert (await _transaction(tw, sent.json()["transaction_id"]))["status"] == "terminated"
    late = await tw.respond(che, transfer_id)
    assert late.status_code == 409 and late.json()["transfer_status"] == "terminated"
    messages = await tw.inbox_items(che)
    assert _types(messages) == ["transfer.proposal", "transfer.terminated"]
    assert [c["code"] for c in messages[-1]["body"]["codes"]] == [6001]
    record = await tw.gateway.get(f"/v1/interregistry/transfers/{transfer_id}", headers=tw.ledger.admin)
    assert record.json()["status"] == "terminated"
    await tw.invariants_ok()


async def test_initiator_cancels_while_sent(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 15)
    transaction_id = sent.json()["transaction_id"]
    cancelled = await tw.gateway.post(f"/v1/transactions/{transaction_id}/cancel", headers=gha.initiator)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert await _held(tw, gha.holding) == 100
    late = await tw.respond(che, sent.json()["interregistry"]["transfer_id"])
    assert late.status_code == 409 and late.json()["transfer_status"] == "cancelled"
    messages = await tw.inbox_items(che)
    assert _types(messages) == ["transfer.proposal", "transfer.cancelled"]
    assert [c["code"] for c in messages[-1]["body"]["codes"]] == [6002]
    again = await tw.gateway.post(f"/v1/transactions/{transaction_id}/cancel", headers=gha.initiator)
    assert again.status_code == 409
    await tw.invariants_ok()


async def test_section_suspended_cancels_sent_transfers(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 12)
    assert await tw.transfers.cancel_for_sections() == 0  # the section is open
    suspended = await tw.gateway.post("/v1/party-sections/GHA/suspend", json={}, headers=tw.ledger.admin)
    assert suspended.status_code == 200, suspended.text
    assert await tw.transfers.cancel_for_sections() == 1
    assert await _held(tw, gha.holding) == 100
    messages = await tw.inbox_items(che)
    assert _types(messages) == ["transfer.proposal", "transfer.cancelled"]
    assert [c["code"] for c in messages[-1]["body"]["codes"]] == [3003]
    late = await tw.respond(che, sent.json()["interregistry"]["transfer_id"])
    assert late.status_code == 409 and late.json()["transfer_status"] == "cancelled"
    await tw.invariants_ok()


async def test_four_eyes_sends_on_approval(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    await tw.ledger.set_four_eyes(gha, True)
    waiting = await tw.send("GHA", "CHE01", 10)
    assert waiting.status_code == 201 and waiting.json()["status"] == "awaiting_approval"
    assert waiting.json()["interregistry"]["respond_by"] is None
    assert _types(await tw.inbox_items(che)) == []  # nothing proposed before approval
    transaction_id = waiting.json()["transaction_id"]
    outbox = tw.irx.suite.services["transactions"].state.outbox
    await outbox.relay()
    told = (await outbox.read(0, 1000, ["transaction.awaiting_approval"])).items
    assert [(e.party, e.data["transaction_id"], e.data["to_registry_id"]) for e in told] == [
        ("GHA", transaction_id, "CHE01")
    ]  # GHA's approvers are told
    approved = await tw.gateway.post(
        f"/v1/transactions/{transaction_id}/approve", headers={**gha.approver, "Idempotency-Key": "a-1"}
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "sent" and approved.json()["interregistry"]["respond_by"]
    assert _types(await tw.inbox_items(che)) == ["transfer.proposal"]
    accepted = await tw.respond(che, approved.json()["interregistry"]["transfer_id"])
    assert accepted.json()["status"] == "completed"
    # Withdrawn before approval: the transfer row takes the status too; nothing reaches the registry.
    second = await tw.send("GHA", "CHE01", 5)
    cancelled = await tw.gateway.post(
        f"/v1/transactions/{second.json()['transaction_id']}/cancel", headers=gha.initiator
    )
    assert cancelled.json()["status"] == "cancelled"
    record = await tw.gateway.get(
        f"/v1/interregistry/transfers/{second.json()['interregistry']['transfer_id']}",
        headers=tw.ledger.admin,
    )
    assert record.json()["status"] == "cancelled"
    # Never approved: the approval sweeper terminates it, and the transfer row with it.
    third = await tw.send("GHA", "CHE01", 5)
    ledgers = tw.irx.suite.services["transactions"].state.ledgers
    assert await ledgers.expire_pending(datetime.now(UTC) + timedelta(hours=73)) == 1
    record = await tw.gateway.get(
        f"/v1/interregistry/transfers/{third.json()['interregistry']['transfer_id']}", headers=tw.ledger.admin
    )
    assert record.json()["status"] == "terminated" and record.json()["codes"][0]["code"] == 6001
    assert await _held(tw, gha.holding) == 90
    assert _types(await tw.inbox_items(che)) == ["transfer.proposal", "transfer.completed"]
    await tw.invariants_ok()


async def test_accept_racing_the_terminator_decides_once(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    trials = 50
    outcomes: dict[str, int] = {}

    async def terminate_after(delay: float, now: datetime) -> int:
        await asyncio.sleep(delay)  # jitter, so either side gets to its compare-and-set first
        count: int = await tw.transfers.terminate_due(now)
        return count

    for trial in range(trials):
        sent = await tw.send("GHA", "CHE01", 1)
        assert sent.status_code == 201, sent.text
        transfer_id = sent.json()["interregistry"]["transfer_id"]
        respond_by = datetime.fromisoformat(sent.json()["interregistry"]["respond_by"])
        vote, terminated = await asyncio.gather(
            tw.respond(che, transfer_id),
            terminate_after((trial % 5) * 0.004, respond_by + timedelta(seconds=1)),
        )
        record = await tw.gateway.get(f"/v1/interregistry/transfers/{transfer_id}", headers=che.headers)
        status = record.json()["status"]
        outcomes[status] = outcomes.get(status, 0) + 1
        if status == "completed":
            assert vote.status_code == 200 and terminated == 0
        else:
            assert status == "terminated" and terminated == 1
            assert vote.status_code == 409 and vote.json()["transfer_status"] == "terminated"
    assert sum(outcomes.values()) == trials
    completed = outcomes.get("completed", 0)
    assert await _held(tw, gha.holding) == 100 - completed
    finals = [
        m for m in await tw.inbox_items(che) if m["type"] in ("transfer.completed", "transfer.terminated")
    ]
    assert len(finals) == trials  # exactly one F message per transfer
    await tw.invariants_ok()
    print("accept vs terminator:", outcomes)  # shown with -s: how the races went
