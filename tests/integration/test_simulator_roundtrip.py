"""A round trip between the IR's transfer endpoints (§5, §6) and the reference simulator, in process on both
IR databases: GHA's section sends 40 ITMOs to the simulator's CHE01 (it accepts, the IR completes, they are
held there), the simulator sends them back (a return: 201 completed, held again at the IR), a transfer
into the simulator's blocked account is rejected 5903 and released, never-seen units of the simulator's own
origin are acquired, and `cancel` gets the final status (6003) or a tombstone. After each step no serial is
held on both sides (X1), both sides agree where each serial went (X2) and the ledger's invariants hold (X3).
"""

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.simulator import Simulator, SimulatorConfig
from conformance.simulator.engine import load_key
from conformance.simulator.onboard import load_or_onboard
from tests.integration._interregistry_world import TransferWorld, transfer_world
from tests.support.suite import BOOTSTRAP_ID, BOOTSTRAP_SECRET

pytestmark = pytest.mark.xdist_group("interregistry")


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


async def _ir_held(tw: TransferWorld, account: str) -> int:
    answer = await tw.ledger.ledger.get(f"/internal/v1/accounts/{account}/balance", headers=tw.ledger.ars)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["held"])


async def _ir_transfer(tw: TransferWorld, transfer_id: str) -> dict[str, Any]:
    answer = await tw.gateway.get(f"/v1/interregistry/transfers/{transfer_id}", headers=tw.irx.admin)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _check_x1_x2(tw: TransferWorld, sim: Simulator, first_id: str, last_id: str, *, at_ir: int) -> None:
    """X1 for the crossed range (40 serials): held at the IR (GHA's account holds 60 others) or at CHE01,
    never both; X2: every transfer the simulator knows has the IR's final status there too; X3."""
    ir_range = await _ir_held(tw, tw.ledger.parties["GHA"].holding) - 60
    here = (await sim.units(first_id, last_id))["quantity_held_in_range"]
    assert (ir_range, here) == (at_ir, 40 - at_ir)
    for known in (await sim.snapshot())["transfers"]:
        assert (await _ir_transfer(tw, known["transfer_id"]))["status"] == known["status"], known
    await tw.invariants_ok()


async def test_round_trip_ir_to_simulator_and_back(tw: TransferWorld, sim: Simulator) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 40, to_account="CH-100-1")
    assert sent.status_code == 201, sent.text
    transfer_id = sent.json()["interregistry"]["transfer_id"]
    [crossed] = sent.json()["blocks"]
    first_id, last_id = crossed["unique_id_first"], crossed["unique_id_last"]
    assert await _ir_held(tw, gha.holding) == 60

    await sim.poll_once()  # status changes, then the proposal: checks, pending_in, accept → IR completes
    assert (await _ir_transfer(tw, transfer_id))["status"] == "completed"
    assert await sim.units(first_id, last_id) == {"state": "held", "quantity_held_in_range": 40}
    assert await _ir_held(tw, gha.holding) == 60
    await _check_x1_x2(tw, sim, first_id, last_id, at_ir=0)
    await sim.poll_once()  # transfer.completed: already applied, only acknowledged
    snapshot = await sim.snapshot()
    assert snapshot["acked_position"] == snapshot["inbox_cursor"] > 3
    [incoming] = [t for t in snapshot["transfers"] if t["transfer_id"] == transfer_id]
    assert incoming["status"] == "completed" and incoming["final_position"] is not None

    back = await sim.propose(
        to_registry="GHA01",
        to_account=gha.holding,
        blocks=[{"unique_id_first": first_id, "unique_id_last": last_id}],
    )
    assert (await _ir_transfer(tw, back))["status"] == "completed"
    assert await sim.units(first_id, last_id) == {"state": "transferred_out", "quantity_held_in_range": 0}
    assert await _ir_held(tw, gha.holding) == 100
    await _check_x1_x2(tw, sim, first_id, last_id, at_ir=40)
    await sim.poll_once()
    assert {t["transfer_id"]: t["status"] for t in (await sim.snapshot())["transfers"]}[back] == "completed"


async def test_transfer_into_a_blocked_account_is_rejected_and_released(
    tw: TransferWorld, sim: Simulator
) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 25, to_account="CH-100-90")
    assert sent.status_code == 201, sent.text
    transfer_id = sent.json()["interregistry"]["transfer_id"]
    await sim.poll_once()
    record = await _ir_transfer(tw, transfer_id)
    assert record["status"] == "rejected" and [c["code"] for c in record["codes"]] == [5903]
    assert await _ir_held(tw, gha.holding) == 100
    [crossed] = sent.json()["blocks"]
    assert (await sim.units(crossed["unique_id_first"], crossed["unique_id_last"]))["state"] == "absent"
    await tw.invariants_ok()


async def test_cancel_after_a_decision_gets_the_final_status_and_an_unknown_id_a_tombstone(
    tw: TransferWorld, sim: Simulator
) -> None:
    await sim.issue(ca_id="CA0012", vintage=2024, quantity=10)
    gha = tw.ledger.parties["GHA"]
    # Never-seen units of CHE01's own origin into GHA's holding account: decided at once (auto acceptance).
    sent = await sim.propose(
        to_registry="GHA01", to_account=gha.holding, ca_id="CA0012", vintage=2024, quantity=10
    )
    assert (await _ir_transfer(tw, sent))["status"] == "completed"
    await sim.cancel(sent)  # 409 6003 with transfer_status completed: nothing changes here
    await sim.cancel("CHE01-T999999")  # S8: a tombstone, refused later as a proposal (6002)
    snapshot = await sim.snapshot()
    assert {t["transfer_id"]: t["status"] for t in snapshot["transfers"]} == {
        sent: "completed",
        "CHE01-T999999": "cancelled",
    }
    assert [(m["type"], m["status"], m["response_status"]) for m in snapshot["outbox"][-2:]] == [
        ("transfer.cancel", "answered", 409),
        ("transfer.cancel", "answered", 200),
    ]
    assert (await sim.units("CA0012-CHE01-CHE-1-2024", "CA0012-CHE01-CHE-10-2024"))[
        "state"
    ] == "transferred_out"
    assert await _ir_held(tw, gha.holding) == 110
    await tw.invariants_ok()
