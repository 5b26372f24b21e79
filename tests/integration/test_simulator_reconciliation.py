"""Reconciliation (INTERREGISTRY §8) between the in-process IR and the reference simulator, on both IR
databases: after a round of transfers both ways (and a rejection and a tombstone) the simulator answers from
its own SQLite ledger and the run completes at stage 1 (case 300); a transfer open at the cut-off is excluded
on both sides (case 303); a row deleted from the simulator's ledger leads through totals_inconsistent and
blocks_inconsistent (the range frozen, 4006 on use) to the audit trail, which the simulator answers with
digests equal to the IR's, and a manual resolution lifts the freeze (case 302); with the F message lost too,
the IR re-announces it and round 2 comes clean."""

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from conformance.simulator import Simulator, SimulatorConfig
from conformance.simulator.config import Policy
from conformance.simulator.engine import load_key
from conformance.simulator.onboard import load_or_onboard
from conformance.simulator.store import inbox_log, transfer
from tests.integration._interregistry_world import TransferWorld, transfer_world
from tests.support.suite import BOOTSTRAP_ID, BOOTSTRAP_SECRET

pytestmark = pytest.mark.xdist_group("interregistry")

BASE = "/v1/interregistry/reconciliations"


@pytest.fixture
async def tw(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TransferWorld]:
    async with transfer_world(make_database, tmp_path, monkeypatch) as world:
        await world.ghana_holds_units(["GHA", "CHE"])
        yield world


@pytest.fixture
async def sim(tw: TransferWorld, tmp_path: Path) -> AsyncIterator[Simulator]:
    transport = httpx.ASGITransport(app=tw.irx.suite.gateway)
    config = SimulatorConfig(
        registry_id="CHE01",
        ir_url="http://gateway",
        client_id="",
        client_secret="",
        db_path=tmp_path / "sim" / "che01.sqlite",
        retry_seconds=2.0,
        retry_initial=0.01,
        retry_max=0.05,
    )
    credentials = await load_or_onboard(
        "http://gateway",
        admin_id=BOOTSTRAP_ID,
        admin_secret=BOOTSTRAP_SECRET,
        registry_id="CHE01",
        jwks={"keys": [load_key(config).public_jwk]},
        transport=transport,
    )
    made = Simulator(
        replace(config, client_id=credentials["client_id"], client_secret=credentials["client_secret"]),
        transport=httpx.ASGITransport(app=tw.irx.suite.gateway),
    )
    await made.open()
    await made.hello()
    yield made
    await made.close()


async def _start(tw: TransferWorld) -> dict[str, Any]:
    answer = await tw.gateway.post(BASE, json={"registry_id": "CHE01"}, headers=tw.irx.admin)
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


async def _view(tw: TransferWorld, reconciliation_id: str) -> dict[str, Any]:
    answer = await tw.gateway.get(f"{BASE}/{reconciliation_id}", headers=tw.irx.admin)
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


async def _round_of_transfers(tw: TransferWorld, sim: Simulator) -> tuple[str, dict[str, str]]:
    """GHA → CHE01 40 (accepted), 10 of them back, 5 into the blocked account (rejected 5903), never-seen
    units of CHE01's origin into GHA, and a tombstone. Returns the return's id and its range."""
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 40, to_account="CH-100-1")
    assert sent.status_code == 201, sent.text
    [crossed] = sent.json()["blocks"]
    await sim.poll_once()
    first = crossed["unique_id_first"]
    back_range = {"unique_id_first": first, "unique_id_last": first.replace("-1-", "-10-")}
    back = await sim.propose(to_registry="GHA01", to_account=gha.holding, blocks=[back_range])
    assert (await tw.send("GHA", "CHE01", 5, to_account="CH-100-90")).status_code == 201
    await sim.poll_once()
    await sim.issue(ca_id="CA0012", vintage=2024, quantity=7)
    await sim.propose(to_registry="GHA01", to_account=gha.holding, ca_id="CA0012", vintage=2024, quantity=7)
    await sim.cancel("CHE01-T999999")
    await sim.poll_once()
    return back, back_range


async def test_reconciliation_with_the_simulator_completes_clean(tw: TransferWorld, sim: Simulator) -> None:
    await _round_of_transfers(tw, sim)
    made = await _start(tw)
    await sim.poll_once()  # reads reconciliation.requested, answers totals from its ledger
    view = await _view(tw, made["reconciliation_id"])
    assert view["status"] == "completed", view
    directions = {(t["ir"] or {}).get("direction") for t in view["totals"] if t["note"] is None}
    assert directions == {"ir_to_registry", "registry_to_ir"}
    [counts] = [t for t in view["totals"] if t["note"]]
    assert counts["ir"]["final_counts"] == {"rejected": 1, "terminated": 0, "cancelled": 1}
    await sim.poll_once()  # the result: recorded and acknowledged
    snapshot = await sim.snapshot()
    assert [p["outcome"] for p in snapshot["processed"] if p["type"].startswith("reconciliation.")] == [
        f"answered totals of {made['reconciliation_id']}",
        "recorded reconciliation.result",
    ]
    assert snapshot["acked_position"] == snapshot["inbox_cursor"]
    await tw.invariants_ok()


async def test_open_transfer_at_the_cutoff_is_excluded_on_both_sides(
    tw: TransferWorld, sim: Simulator
) -> None:
    await sim.set_policy(Policy.parse("silent"))
    sent = await tw.send("GHA", "CHE01", 40, to_account="CH-100-1")
    transfer_id = sent.json()["interregistry"]["transfer_id"]
    await sim.poll_once()  # pending_in, no answer: the transfer is open
    made = await _start(tw)
    await sim.set_policy(Policy.parse("accept"))  # decided after the cut-off
    await sim.poll_once()
    view = await _view(tw, made["reconciliation_id"])
    assert view["status"] == "completed", view
    [counts] = [t for t in view["totals"] if t["note"]]
    assert counts["ir"]["open_transfers"] == counts["registry"]["open_transfers"] == [transfer_id]
    await tw.invariants_ok()


async def test_a_row_lost_by_the_registry_freezes_the_range_until_resolved(
    tw: TransferWorld, sim: Simulator
) -> None:
    back, back_range = await _round_of_transfers(tw, sim)
    assert (await _start(tw))["status"] == "initiated"
    await sim.poll_once()
    clean = (await tw.gateway.get(BASE, headers=tw.irx.admin)).json()["items"][0]
    assert clean["status"] == "completed"
    # The registry loses its record of the return (a restore that lost a row).
    async with sim.store.write() as connection:
        await connection.execute(delete(transfer).where(transfer.c.transfer_id == back))
    made = await _start(tw)
    rec = made["reconciliation_id"]
    await sim.poll_once()  # totals: the registry_to_ir key differs
    view = await _view(tw, rec)
    assert view["status"] == "totals_inconsistent" and [c["code"] for c in view["codes"]] == [7001]
    await sim.poll_once()  # blocks: the return is missing at the registry → frozen
    view = await _view(tw, rec)
    assert view["status"] == "blocks_inconsistent"
    assert view["inconsistent_ranges"] == [{"transfer_id": back, **back_range, "kind": "missing_at_registry"}]
    one = [
        {"unique_id_first": back_range["unique_id_first"], "unique_id_last": back_range["unique_id_first"]}
    ]
    refused = await tw.send("GHA", "CHE01", blocks=one, to_account="CH-100-1")
    assert refused.status_code == 422 and [c["code"] for c in refused.json()["checks"]] == ["4006"]
    await sim.poll_once()  # audit trail: same messages and digests on both sides; the records conflict
    view = await _view(tw, rec)
    assert view["status"] == "blocks_inconsistent" and view["stage"] is None
    assert [(d["transfer_id"], d["diagnosis"]) for d in view["diagnoses"]] == [(back, "conflicting_record")]
    [digests] = [item for item in view["items"] if item["note"] == "digests"]
    assert digests["consistent"] and digests["ir"] == digests["registry"]

    resolved = await tw.gateway.post(
        f"{BASE}/{rec}/resolve",
        json={"note": "CHE01 re-applied the return from its inbox", "compensating_transaction_ids": []},
        headers=tw.irx.admin,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "completed_with_manual_intervention"
    passed = await tw.send("GHA", "CHE01", blocks=one, to_account="CH-100-1")
    assert passed.status_code == 201, passed.text
    await sim.poll_once()
    assert (await sim.units(one[0]["unique_id_first"]))["state"] == "held"
    await tw.invariants_ok()


async def test_an_unapplied_final_status_is_re_announced_and_round_two_comes_clean(
    tw: TransferWorld, sim: Simulator
) -> None:
    """The simulator lost both its record of the return and the F message that announced it (a restore):
    stage 3 diagnoses `final_status_not_applied`, the IR re-announces F, the simulator applies the copy
    (self-contained, S5) and round 2 comes clean — no manual step, the freeze lifted."""
    back, back_range = await _round_of_transfers(tw, sim)
    async with sim.store.write() as connection:
        await connection.execute(delete(transfer).where(transfer.c.transfer_id == back))
        await connection.execute(
            delete(inbox_log).where(inbox_log.c.transfer_id == back, inbox_log.c.type == "transfer.completed")
        )
    made = await _start(tw)
    rec = made["reconciliation_id"]
    for _ in range(3):  # totals, blocks, audit trail
        await sim.poll_once()
    view = await _view(tw, rec)
    assert [(d["transfer_id"], d["diagnosis"]) for d in view["diagnoses"]] == [
        (back, "final_status_not_applied")
    ]
    assert (view["round"], view["stage"]) == (2, "totals")
    one = [
        {"unique_id_first": back_range["unique_id_first"], "unique_id_last": back_range["unique_id_first"]}
    ]
    refused = await tw.send("GHA", "CHE01", blocks=one, to_account="CH-100-1")
    assert [c["code"] for c in refused.json()["checks"]] == ["4006"]
    await sim.poll_once()  # the re-announced transfer.completed, then round 2's totals
    view = await _view(tw, rec)
    assert view["status"] == "completed" and view["round"] == 2, view
    assert {t["transfer_id"]: t["status"] for t in (await sim.snapshot())["transfers"]}[back] == "completed"
    passed = await tw.send("GHA", "CHE01", blocks=one, to_account="CH-100-1")
    assert passed.status_code == 201, passed.text
    await tw.invariants_ok()
