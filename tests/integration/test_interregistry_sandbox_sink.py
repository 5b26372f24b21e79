"""The sandbox sink (INTERREGISTRY §11, case 162's 4004) and the sandbox settings, on both backends: units of a
test section leave the IR to the sink registry `GHA99` through the ordinary outgoing path and are completed
there; the registry under test then proposing them back is refused 4004; the ledger invariants hold and the
sink's inbox holds the proposal and its completion; the sink record has no key or client, and cannot store a
conformance run; another registry's client is refused and a production IR answers 404.
"""

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.interregistry import IrxEnvironment
from tests.integration._interregistry_world import (
    Registry,
    TransferWorld,
    proposal,
    transfer_world,
    wire_time,
)

pytestmark = pytest.mark.xdist_group("interregistry")

_SANDBOX = "/v1/interregistry/sandbox"


@pytest.fixture
async def tw(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TransferWorld]:
    async with transfer_world(make_database, tmp_path, monkeypatch) as world:
        await world.ledger.add_party("GHA")
        await world.ledger.add_ca("CA0012", ["GHA", "CHE"])
        await world.irx.connect("CHE01")
        yield world


def _sink_body(tw: TransferWorld, quantity: int = 4) -> dict[str, Any]:
    return {
        "registry_id": "CHE01",
        "from_account": tw.ledger.parties["GHA"].holding,
        "quantity": quantity,
        "mint": {"ca_id": "CA0012", "vintage": 2024},
    }


async def test_units_sent_to_the_sink_come_back_refused_4004_and_the_levers_are_guarded(
    tw: TransferWorld,
) -> None:
    che: Registry = tw.irx.registries["CHE01"]
    made = await tw.gateway.post(f"{_SANDBOX}/sink", json=_sink_body(tw), headers=che.headers)
    assert made.status_code == 201, made.text
    sunk = made.json()
    assert sunk["sink_registry_id"] == "GHA99" and sunk["status"] == "completed"
    assert sum(b["quantity"] for b in sunk["blocks"]) == 4
    first, last = sunk["blocks"][0]["unique_id_first"], sunk["blocks"][-1]["unique_id_last"]
    units = await tw.gateway.get(
        f"{_SANDBOX}/units",
        params={"registry_id": "CHE01", "unique_id": first, "unique_id_last": last},
        headers=che.headers,
    )
    assert [(b["state"], b["to_registry_id"]) for b in units.json()["blocks"]] == [
        ("transferred_out", "GHA99")
    ]

    answer = await tw.propose(
        che, proposal(che, "SINK1", "GHA", tw.ledger.parties["GHA"].holding, sunk["blocks"])
    )
    assert answer.status_code == 422, answer.text
    assert [c["code"] for c in answer.json()["codes"]] == [4004]

    # A second use reuses the record; its inbox was acknowledged up to what the relay had numbered.
    again = await tw.gateway.post(f"{_SANDBOX}/sink", json=_sink_body(tw, 2), headers=tw.irx.admin)
    assert again.status_code == 201 and again.json()["sink_registry_id"] == "GHA99", again.text
    record = await tw.gateway.get("/v1/interregistry/registries/GHA99", headers=tw.irx.admin)
    assert record.json()["status"] == "onboarding" and not record.json()["jwks"]
    assert not record.json()["jwks_url"] and record.json()["clients"] == []
    # Even given a client by the Secretariat, the sink cannot store a conformance run (nothing to activate with).
    sink_client = await tw.irx.token_headers(await tw.irx.new_registry_client("GHA99"))
    now = datetime.now(UTC)
    report = {"conformance_run_id": str(uuid.uuid4()), "registry_id": "GHA99", "cases": [],
              "started_at": wire_time(now - timedelta(minutes=1)), "finished_at": wire_time(now)}  # fmt: skip
    stored = await tw.gateway.post("/v1/interregistry/conformance-runs", json=report, headers=sink_client)
    assert stored.status_code == 422 and stored.json()["type"].endswith("/sandbox-sink"), stored.text
    for transfer_id in (sunk["transfer_id"], again.json()["transfer_id"]):
        seen = await tw.gateway.get(f"/v1/interregistry/transfers/{transfer_id}", headers=tw.irx.admin)
        assert seen.json()["status"] == "completed", seen.text
    log = await tw.gateway.get(
        "/v1/interregistry/messages", params={"registry": "GHA99"}, headers=tw.irx.admin
    )
    assert sorted(
        m["type"] for m in log.json()["items"] if m["envelope"]["body"]["transfer_id"] == sunk["transfer_id"]
    ) == ["transfer.completed", "transfer.proposal"]
    assert {m["direction"] for m in log.json()["items"]} == {"ir_to_registry"}
    await tw.invariants_ok()

    # The registry under test itself or the Secretariat only; absent in production.
    other = await tw.irx.connect("CHE02")
    refused = await tw.gateway.post(f"{_SANDBOX}/sink", json=_sink_body(tw), headers=other.headers)
    assert refused.status_code == 403, refused.text
    tw.irx.service.jwks_refetch_seconds = 2.5
    settings = await tw.gateway.get(
        f"{_SANDBOX}/settings", params={"registry_id": "CHE01"}, headers=tw.irx.registries["CHE01"].headers
    )
    assert settings.json() == {"registry_id": "CHE01", "jwks_refetch_seconds": 2.5}, settings.text
    before = await tw.irx.counts("GHA99")
    tw.irx.service.env = IrxEnvironment.PRODUCTION
    try:
        made = await tw.gateway.post(f"{_SANDBOX}/sink", json=_sink_body(tw), headers=tw.irx.admin)
        assert made.status_code == 404, made.text
        read = await tw.gateway.get(
            f"{_SANDBOX}/settings", params={"registry_id": "CHE01"}, headers=tw.irx.admin
        )
        assert read.status_code == 404, read.text
    finally:
        tw.irx.service.env = IrxEnvironment.SANDBOX
    assert await tw.irx.counts("GHA99") == before  # nothing more sent to the sink
