"""Incoming transfers connected registry → IR (INTERREGISTRY §6) through the gateway, on both backends:
never-seen units become blocks (and AEF `Acquisition` rows), returns move `transferred_out` blocks back
(split and merge), every rejection code with nothing moved, replays and transfer-id reuse, cancel
tombstones; the ledger invariants after each scenario."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from services.transactions.models import blocks
from tests.integration._interregistry_world import (
    Registry,
    TransferWorld,
    proposal,
    transfer_block,
    transfer_world,
)

pytestmark = pytest.mark.xdist_group("interregistry")

YEAR = datetime.now(UTC).year


@pytest.fixture
async def tw(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TransferWorld]:
    async with transfer_world(make_database, tmp_path, monkeypatch) as world:
        await world.ghana_holds_units(["GHA", "CHE", "SWE", "DNK"], "CHE01", "DNK01")
        await world.ledger.add_ca("CA0013", ["GHA", "SWE"])
        yield world


@pytest.fixture
def che(tw: TransferWorld) -> Registry:
    return tw.irx.registries["CHE01"]


def _codes(answer: httpx.Response) -> list[int]:
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["type"].endswith("/transfer-rejected") and body["transfer_status"] == "rejected", body
    return sorted({c["code"] for c in body["codes"]})


async def _holdings(tw: TransferWorld, account: str) -> list[tuple[str, int, int, str]]:
    answer = await tw.gateway.get(f"/v1/accounts/{account}/holdings", headers=tw.ledger.admin)
    assert answer.status_code == 200, answer.text
    return [(b["origin_registry_id"], b["first"], b["last"], b["state"]) for b in answer.json()["items"]]


async def test_never_seen_units_are_acquired_once(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    body = proposal(che, "T1", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 1, 150)], note="hello")
    document = che.envelope("transfer.proposal", body)
    first = await che.post("transfers", document)
    assert first.status_code == 201, first.text
    decision = first.json()
    assert (
        decision["status"] == "completed"
        and decision["transfer_id"] == "CHE01-T1"
        and decision["codes"] == []
    )
    transaction_id = decision["ir_transaction_id"]
    assert ("CHE01", 1, 150, "held") in await _holdings(tw, gha.holding)
    # The same message again, and the same content under a new message id and seq: one acquisition.
    replay = await che.post("transfers", document)
    assert replay.status_code == 201 and replay.json() == decision
    assert replay.headers.get("idempotent-replayed") == "true"
    resent = await tw.propose(che, body)
    assert resent.status_code == 201 and resent.json() == decision
    other = await tw.propose(che, {**body, "note": "changed"})
    assert _codes(other) == [4007]
    assert [h for h in await _holdings(tw, gha.holding) if h[0] == "CHE01"] == [("CHE01", 1, 150, "held")]

    transaction = await tw.gateway.get(f"/v1/transactions/{transaction_id}", headers=gha.viewer)
    assert transaction.status_code == 200, transaction.text
    tx = transaction.json()
    assert (tx["type"], tx["status"], tx["from_party"], tx["to_party"], tx["quantity"]) == (
        "transfer",
        "completed",
        "CHE",
        "GHA",
        150,
    )
    assert (
        tx["interregistry"]["direction"] == "registry_to_ir"
        and tx["interregistry"]["transfer_id"] == "CHE01-T1"
    )
    assert [
        (a["party"], a["action_type"], a["transferring_party_id"], a["registry_id"]) for a in tx["actions"]
    ] == [("GHA", "Acquisition", "CHE", "GHA01")]
    inbox = [m for m in await tw.inbox_items(che) if m["type"].startswith("transfer.")]
    assert [m["type"] for m in inbox] == ["transfer.completed"]
    assert inbox[0]["body"]["direction"] == "registry_to_ir" and inbox[0]["body"]["quantity"] == 150
    record = await tw.gateway.get("/v1/interregistry/transfers/CHE01-T1", headers=che.headers)
    assert record.json()["status"] == "completed" and record.json()["transaction_id"] == transaction_id
    seen = await tw.gateway.get("/v1/interregistry/transfers/CHE01-T1", headers=gha.viewer)
    assert seen.status_code == 200 and seen.json()["direction"] == "registry_to_ir"  # the receiving IR Party
    outbox = tw.irx.suite.services["transactions"].state.outbox
    await outbox.relay()
    page = await outbox.read(0, 1000, ["interregistry.transfer.completed", "interregistry.transfer.rejected"])
    assert [(e.type, e.party, e.data["transfer_id"]) for e in page.items] == [
        ("interregistry.transfer.completed", "GHA", "CHE01-T1")
    ]  # the 4007 refusal of other content is not recorded, so not announced either
    await tw.invariants_ok()

    # Units acquired here are spendable like any: send part on to another IR Party.
    swe = await tw.ledger.add_party("SWE")
    ranges = [{"unique_id_first": "CA0012-CHE01-CHE-1-2024", "unique_id_last": "CA0012-CHE01-CHE-10-2024"}]
    moved = await tw.ledger.transact(
        gha, {"type": "transfer", "from_account": gha.holding, "to_account": swe.holding, "blocks": ranges}
    )
    assert moved.status_code == 201, moved.text
    await tw.invariants_ok()

    # The receiving IR Party's AEF: T3 `Acquisition` from CHE, T4 holds what is left.
    await tw.irx.suite.services["reporting"].state.consumer.catch_up()
    aef = await tw.gateway.get(f"/v1/reports/aef/GHA/{YEAR}", headers=gha.viewer)
    assert aef.status_code == 200, aef.text
    tables = aef.json()["tables"]
    acquisitions = [a for a in tables["actions"] if a["action_type"] == "Acquisition"]
    assert [
        (
            a["first_id"],
            a["last_id"],
            a["transferring_party_id"],
            a["party_itmo_registry_id"],
            a["authorization_id"],
        )
        for a in acquisitions
    ] == [(1, 150, "CHE", "GHA01", "CHE-AUTH-1")]
    che_units = [h for h in tables["holdings"] if h["first_transferring_party_id"] == "CHE"]
    assert sum(h["quantity_tco2e"] for h in che_units) == 140


async def test_returns_split_and_merge(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    sent = await tw.send("GHA", "CHE01", 40)
    assert (await tw.respond(che, sent.json()["interregistry"]["transfer_id"])).json()[
        "status"
    ] == "completed"
    assert await _holdings(tw, gha.holding) == [("GHA01", 41, 100, "held")]
    # Part of the range comes back: the transferred_out block splits.
    back = await tw.propose(
        che,
        proposal(
            che,
            "R1",
            "GHA",
            gha.holding,
            [
                transfer_block(
                    "CA0012",
                    "GHA01",
                    1,
                    10,
                    purposes="NDC and OIMP",
                    first_transfer_definition="Authorisation",
                )
            ],
        ),
    )
    assert back.status_code == 201, back.text
    assert await _holdings(tw, gha.holding) == [("GHA01", 1, 10, "held"), ("GHA01", 41, 100, "held")]
    unit = await tw.gateway.get("/v1/units/CA0012-GHA01-GHA-20-2024", headers=tw.ledger.admin)
    assert unit.json()["block"]["state"] == "transferred_out" and unit.json()["block"]["first"] == 11
    returned = await tw.gateway.get("/v1/units/CA0012-GHA01-GHA-5-2024", headers=tw.ledger.admin)
    assert returned.json()["history"][-1]["entry_type"] == "return_in"
    await tw.invariants_ok()
    # The rest comes back: the account coalesces into one block again.
    rest = await tw.propose(
        che,
        proposal(
            che,
            "R2",
            "GHA",
            gha.holding,
            [
                transfer_block(
                    "CA0012",
                    "GHA01",
                    11,
                    40,
                    purposes="NDC and OIMP",
                    first_transfer_definition="Authorisation",
                )
            ],
        ),
    )
    assert rest.status_code == 201, rest.text
    assert await _holdings(tw, gha.holding) == [("GHA01", 1, 100, "held")]
    tx = await tw.gateway.get(f"/v1/transactions/{rest.json()['ir_transaction_id']}", headers=gha.viewer)
    assert tx.json()["actions"][0]["action_type"] == "Acquisition" and tx.json()["quantity"] == 30
    await tw.invariants_ok()


async def test_serial_history_rejections(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    dnk = tw.irx.registries["DNK01"]
    own = {"purposes": "NDC and OIMP", "first_transfer_definition": "Authorisation"}
    sent = await tw.send("GHA", "CHE01", 40)
    await tw.respond(che, sent.json()["interregistry"]["transfer_id"])
    cancelled = await tw.ledger.transact(
        gha, {"type": "voluntary_cancellation", "from_account": gha.holding, "quantity": 5}
    )
    assert cancelled.status_code == 201, cancelled.text  # serials 41–45 are cancelled
    before = await _holdings(tw, gha.holding)

    async def refused(registry: Registry, name: str, block: dict[str, Any]) -> list[int]:
        return _codes(await tw.propose(registry, proposal(registry, name, "GHA", gha.holding, [block])))

    assert await refused(che, "H1", transfer_block("CA0012", "GHA01", 60, 70, **own)) == [4002]
    assert await refused(che, "H2", transfer_block("CA0012", "GHA01", 41, 45, **own)) == [4003]
    assert await refused(dnk, "H3", transfer_block("CA0012", "GHA01", 1, 10, **own)) == [4004]
    assert await refused(
        che, "H4", transfer_block("CA0012", "GHA01", 1, 10, **own, authorization_version=2)
    ) == [4005]
    assert await refused(che, "H5", transfer_block("CA0012", "GHA01", 500, 510, **own)) == [4008]
    # Partly a return, partly serials the IR holds: refused as a whole.
    assert await refused(che, "H6", transfer_block("CA0012", "GHA01", 35, 50, **own)) == [4002, 4003]
    db = tw.irx.suite.services["transactions"].state.db
    async with db.connect() as connection:
        await connection.execute(update(blocks).where(blocks.c.first_serial == 1).values(frozen_by="rec-1"))
    assert await refused(che, "H7", transfer_block("CA0012", "GHA01", 1, 10, **own)) == [4006]
    async with db.connect() as connection:
        await connection.execute(update(blocks).values(frozen_by=None))
    # Nothing moved; every rejection is recorded and announced.
    assert await _holdings(tw, gha.holding) == before
    rejected = [m for m in await tw.inbox_items(dnk) if m["type"] == "transfer.rejected"]
    assert [m["body"]["transfer_id"] for m in rejected] == ["DNK01-H3"]
    record = await tw.gateway.get("/v1/interregistry/transfers/CHE01-H5", headers=che.headers)
    assert record.json()["status"] == "rejected" and record.json()["codes"][0]["code"] == 4008
    retry = await tw.propose(
        che, proposal(che, "H5", "GHA", gha.holding, [transfer_block("CA0012", "GHA01", 500, 510, **own)])
    )
    assert _codes(retry) == [4008]  # the stored decision, not a second judgement
    await tw.invariants_ok()


async def test_structure_ca_and_destination_rejections(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    admin = tw.ledger.admin
    extra = {}
    for label, action in (("blocked", "block"), ("closed", "close")):
        made = await tw.gateway.post(
            "/v1/party-sections/GHA/accounts", json={"type": "holding", "name": label}, headers=gha.admin
        )
        assert made.status_code == 201, made.text
        extra[label] = made.json()["account_id"]
        moved = await tw.gateway.post(f"/v1/accounts/{extra[label]}/{action}", json={}, headers=admin)
        assert moved.status_code == 200, moved.text
    serials = iter(range(1, 10_000, 10))

    def block(**changes: Any) -> dict[str, Any]:
        first = next(serials)
        return transfer_block("CA0012", "CHE01", first, first + 4, **changes)

    async def refused(body: dict[str, Any]) -> list[int]:
        return _codes(await tw.propose(che, body))

    def to(account: str, *blocks_: dict[str, Any], name: str | None = None, **changes: Any) -> dict[str, Any]:
        return proposal(che, name or f"S{next(serials)}", "GHA", account, list(blocks_), **changes)

    bad_id = block()
    bad_id["unique_id_last"] = bad_id["unique_id_first"]
    assert await refused(to(gha.holding, bad_id)) == [2001]
    wrong_range = block()
    wrong_range.update(first=wrong_range["last"], last=wrong_range["first"])
    assert 2002 in await refused(to(gha.holding, wrong_range))
    assert await refused(to(gha.holding, block(), quantity=99)) == [2003]
    twice = block()
    assert await refused(to(gha.holding, twice, dict(twice))) == [2004]
    old = next(serials)
    assert await refused(to(gha.holding, transfer_block("CA0012", "CHE01", old, old, vintage=YEAR + 1))) == [
        2005
    ]
    assert await refused(to(gha.holding, block(metric="Carbon"))) == [2006]
    assert await refused(
        to(gha.holding, block(underlying={"registry_id": "GS", "first_unit_id": 1, "last_unit_id": 2}))
    ) == [2008]
    assert await refused(to(gha.holding, block(authorization_id="bad/id!"))) == [2010]
    unknown = next(serials)
    assert await refused(to(gha.holding, transfer_block("CA0099", "CHE01", unknown, unknown))) == [2007]
    other_ca = next(serials)
    assert await refused(to(gha.holding, transfer_block("CA0013", "CHE01", other_ca, other_ca))) == [5905]
    assert await refused(to(gha.holding, block(), to_registry="GHA02")) == [3003]
    assert await refused(to("GHA01-100-999", block())) == [5902]
    assert await refused(to(extra["closed"], block())) == [5906]
    assert await refused(to(extra["blocked"], block())) == [5903]
    assert await refused(to(gha.accounts["cancellation"], block())) == [5903]
    assert await refused(to(gha.holding, block(authorized_parties=["SWE"]))) == [5907]
    assert await refused(to(gha.holding, block(first_transferred=False))) == [5904]
    # A first transfer straight from the registry brings units not yet first transferred: accepted.
    accepted = await tw.propose(
        che, to(gha.holding, block(first_transferred=False), sender_action="first_transfer")
    )
    assert accepted.status_code == 201, accepted.text
    # Sender checks refuse without recording (1004): another registry's id or Party.
    foreign = await tw.propose(che, to(gha.holding, block(), name="X1", transfer_id="DNK01-X1"))
    assert foreign.status_code == 403 and foreign.json()["code"] == 1004
    await tw.invariants_ok()


async def test_cancel_tombstones_and_final_transfers(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    gone = await tw.cancel(che, "CHE01-GONE")
    assert gone.status_code == 200, gone.text
    assert gone.json()["status"] == "cancelled" and gone.json()["codes"][0]["code"] == 6002
    late = await tw.propose(
        che, proposal(che, "GONE", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 1, 5)])
    )
    assert late.status_code == 409, late.text
    assert late.json()["code"] == 6002 and late.json()["transfer_status"] == "cancelled"
    again = await tw.cancel(che, "CHE01-GONE")
    assert again.status_code == 409 and again.json()["code"] == 6003
    done = await tw.propose(
        che, proposal(che, "DONE", "GHA", gha.holding, [transfer_block("CA0012", "CHE01", 1, 5)])
    )
    assert done.status_code == 201
    final = await tw.cancel(che, "CHE01-DONE")
    assert final.status_code == 409 and final.json()["transfer_status"] == "completed"
    assert final.json()["code"] == 6003
    refused = await tw.propose(
        che, proposal(che, "NOPE", "GHA", "GHA01-100-999", [transfer_block("CA0012", "CHE01", 6, 9)])
    )
    assert _codes(refused) == [5902]
    assert (await tw.cancel(che, "CHE01-NOPE")).json()["transfer_status"] == "rejected"
    # Another registry's transfer ids are not its to cancel.
    foreign = await tw.cancel(tw.irx.registries["DNK01"], "CHE01-GONE")
    assert foreign.status_code == 403 and foreign.json()["code"] == 1004
    types = [m["type"] for m in await tw.inbox_items(che) if m["type"].startswith("transfer.")]
    assert types == ["transfer.cancelled", "transfer.completed", "transfer.rejected"]
    assert ("CHE01", 1, 5, "held") in await _holdings(tw, gha.holding)
    await tw.invariants_ok()


async def test_same_party_registry_has_no_aef_action(tw: TransferWorld) -> None:
    gha = tw.ledger.parties["GHA"]
    national = await tw.irx.connect("GHA02")
    answer = await tw.propose(
        national, proposal(national, "N1", "GHA", gha.holding, [transfer_block("CA0012", "GHA02", 1, 5)])
    )
    assert answer.status_code == 201, answer.text
    tx = await tw.gateway.get(f"/v1/transactions/{answer.json()['ir_transaction_id']}", headers=gha.viewer)
    assert tx.json()["actions"] == []
    await tw.invariants_ok()
