"""First transfer straight from the ARS to a connected registry (INTERREGISTRY §5.3), through the gateway, on
both backends: accepted → the ITMOs created already `transferred_out` (journal `first_transfer` +
`transfer_out`), the MOs first transferred and the Party's AEF T3 `First transfer` row; rejected or
terminated → the MOs authorized again and nothing in the IR; the ledger invariants after each."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.interregistry import TransferProposal
from tests.integration._ars_world import ArsWorld
from tests.integration._interregistry_world import Registry, TransferWorld, transfer_world
from tests.integration._interregistry_world import proposal as return_proposal

pytestmark = pytest.mark.xdist_group("interregistry")

YEAR = datetime.now(UTC).year


@pytest.fixture
async def world(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[TransferWorld, ArsWorld]]:
    async with transfer_world(make_database, tmp_path, monkeypatch) as tw:
        ars = ArsWorld(tw.ledger)
        await ars.add_party("GHA")
        await tw.ledger.add_ca("CA0012", ["GHA", "CHE"])
        await ars.issue("GHA", 100)
        await ars.authorize("GHA", "GH-AUTH-7", purposes="NDC", oimp=None, first_transfer_definition=None)
        await ars.apply("GHA", "GH-AUTH-7", 100)
        await tw.irx.connect("CHE01")
        yield tw, ars


async def _propose(
    tw: TransferWorld, ars: ArsWorld, che: Registry, key: str = "ftr-1"
) -> tuple[dict[str, Any], TransferProposal]:
    """40 MOs first transferred to CHE01's account CH-100-77: 202, pending until the registry decides."""
    body = {
        "authorization_id": "GH-AUTH-7",
        "quantity": 40,
        "to_registry": "CHE01",
        "to_account": "CH-100-77",
    }
    answer = await ars.first_transfer("GHA", body, key=key, expect=202)
    operation = answer.json()
    assert operation["status"] == "pending" and operation["transaction_status"] == "sent"
    assert operation["to_registry"] == "CHE01" and operation["to_account"] == "CH-100-77"
    again = await ars.first_transfer("GHA", body, key=key, expect=202)  # the key replays the operation
    assert again.json()["operation_id"] == operation["operation_id"]
    message = [m for m in await tw.inbox_items(che) if m["type"] == "transfer.proposal"][-1]
    proposal = TransferProposal.model_validate(message["body"])
    assert (proposal.sender_action, proposal.transferring_party, proposal.acquiring_party) == (
        "first_transfer",
        "GHA",
        "CHE",
    )
    assert [(b.unique_id_first, b.unique_id_last, b.authorization_id) for b in proposal.blocks] == [
        ("CA0012-GHA01-GHA-1-2024", "CA0012-GHA01-GHA-40-2024", "GH-AUTH-7")
    ]
    assert proposal.transfer_id == f"GHA01-{operation['transaction_id']}"
    # No ITMO exists in the IR before the registry accepts.
    unit = await tw.gateway.get("/v1/units/CA0012-GHA01-GHA-1-2024", headers=tw.ledger.admin)
    assert unit.status_code == 404, unit.text
    return operation, proposal


async def _settle(tw: TransferWorld, operation: dict[str, Any]) -> dict[str, Any]:
    """The ARS asks the IR again (as its resumer does) and shows where the operation stands."""
    saga = tw.irx.suite.services["ars"].state.saga
    await saga.drive(operation["operation_id"])
    answer = await tw.gateway.get(
        f"/v1/ars/GHA/first-transfers/{operation['operation_id']}",
        headers=tw.ledger.parties["GHA"].viewer,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _mo_ranges(blocks: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    return sorted((b["first"], b["last"], b["state"]) for b in blocks)


async def test_accepted_first_transfer_creates_transferred_out_itmos(
    world: tuple[TransferWorld, ArsWorld],
) -> None:
    tw, ars = world
    che = tw.irx.registries["CHE01"]
    operation, proposal = await _propose(tw, ars, che)
    still = await _settle(tw, operation)  # the registry has not answered: nothing changes
    assert still["status"] == "pending" and still["blocks"] == []

    accepted = await tw.respond(che, proposal.transfer_id)
    assert accepted.status_code == 200 and accepted.json()["status"] == "completed", accepted.text
    done = await _settle(tw, operation)
    assert done["status"] == "completed" and done["transaction_status"] == "completed"
    assert [(b["first"], b["last"], b["state"], b["to_registry_id"]) for b in done["blocks"]] == [
        (1, 40, "transferred_out", "CHE01")
    ]
    assert _mo_ranges(await ars.blocks("GHA")) == [(1, 40, "first_transferred"), (41, 100, "authorized")]

    unit = await tw.gateway.get("/v1/units/CA0012-GHA01-GHA-7-2024", headers=tw.ledger.admin)
    assert unit.status_code == 200, unit.text
    assert unit.json()["block"]["state"] == "transferred_out"
    assert unit.json()["block"]["transfer_id"] == proposal.transfer_id
    assert [e["entry_type"] for e in unit.json()["history"]] == ["first_transfer", "transfer_out"]

    # The Party's AEF: T3 `First transfer` to CHE (its corresponding adjustment); T4 never held them.
    await tw.irx.suite.services["reporting"].state.consumer.catch_up()
    aef = await tw.gateway.get(f"/v1/reports/aef/GHA/{YEAR}", headers=tw.ledger.parties["GHA"].viewer)
    assert aef.status_code == 200, aef.text
    tables = aef.json()["tables"]
    assert [
        (a["action_type"], a["action_subtype"], a["first_id"], a["last_id"], a["acquiring_party_id"])
        for a in tables["actions"]
    ] == [("First transfer", "First transfer to another Party", 1, 40, "CHE")]
    assert sum(h["quantity_tco2e"] for h in tables["holdings"]) == 0
    await tw.invariants_ok()

    # They are ITMOs at CHE01 now: sent back, they are a return (same invariants), held in GHA's account.
    gha = ars.parties["GHA"]
    blocks = [b.model_dump(mode="json") for b in proposal.blocks]
    back = await tw.propose(che, return_proposal(che, "T1", "GHA", gha.holding, blocks))
    assert back.status_code == 201 and back.json()["status"] == "completed", back.text
    assert await tw.ledger.holdings_total(gha.actors, gha.holding) == 40
    await tw.invariants_ok()


async def test_first_transfer_rejected_or_terminated_releases_the_mos(
    world: tuple[TransferWorld, ArsWorld],
) -> None:
    tw, ars = world
    che = tw.irx.registries["CHE01"]
    for final, code in (("rejected", "5902"), ("terminated", "6001")):
        operation, proposal = await _propose(tw, ars, che, key=f"ftr-{final}")
        if final == "rejected":
            codes = [{"code": 5902, "message": "no account"}]
            answer = await tw.respond(che, proposal.transfer_id, "reject", codes)
            assert answer.status_code == 200 and answer.json()["status"] == "rejected", answer.text
        else:
            assert await tw.transfers.terminate_due(datetime.now(UTC) + timedelta(hours=1)) == 1
        released = await _settle(tw, operation)
        assert released["status"] == "released" and released["transaction_status"] == final
        assert [c["code"] for c in released["checks"]] == [code]
        assert _mo_ranges(await ars.blocks("GHA")) == [(1, 100, "authorized")]
        unit = await tw.gateway.get("/v1/units/CA0012-GHA01-GHA-1-2024", headers=tw.ledger.admin)
        assert unit.status_code == 404, unit.text
        await tw.invariants_ok()
    # An unknown registry is refused by the ARS itself: nothing reserved, nothing proposed.
    refused = await ars.first_transfer(
        "GHA",
        {"authorization_id": "GH-AUTH-7", "quantity": 40, "to_registry": "CHE02", "to_account": "CH-1"},
        expect=422,
    )
    assert [c["code"] for c in refused.json()["checks"]] == ["3002"]
