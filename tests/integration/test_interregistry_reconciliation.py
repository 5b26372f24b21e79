"""Reconciliation of the pair ledger (INTERREGISTRY §8) against a scripted registry, on both backends: a
consistent run completes at stage 1; wrong totals lead through blocks (ranges frozen, 4006 on use) and the
audit trail (a diagnosis, the F message re-announced) to a manual resolution that lifts the freeze, or to a
second round at a new cut-off that comes clean; a second
start while one is open is 7004 (from the Secretariat and from the registry); a silent registry fails the
run at the stage deadline on an injected clock (7006); a transfer open at the cut-off is excluded on both
sides (case 303); a transfer R claims but the IR never accepted is `missing_at_ir`, frozen and diagnosed
`unknown_at_ir`; answers out of stage or cut-off are 7005 and not recorded; reads are scoped; the daily
schedule starts runs on an injected clock."""

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from kit.jws import audit_digest
from services.transactions.interregistry.reconciliation import Reconciliations, daily_time
from services.transactions.models import blocks, outbox
from tests.integration._interregistry_world import Registry, TransferWorld, proposal, transfer_world

pytestmark = pytest.mark.xdist_group("interregistry")

BASE = "/v1/interregistry/reconciliations"


@pytest.fixture
async def tw(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TransferWorld]:
    async with transfer_world(make_database, tmp_path, monkeypatch) as world:
        await world.ghana_holds_units(["GHA", "CHE"], "CHE01")
        yield world


@pytest.fixture
def che(tw: TransferWorld) -> Registry:
    return tw.irx.registries["CHE01"]


def _recs(tw: TransferWorld) -> Reconciliations:
    service: Reconciliations = tw.irx.suite.services["transactions"].state.reconciliations
    return service


async def _start(tw: TransferWorld, registry_id: str = "CHE01") -> httpx.Response:
    return await tw.gateway.post(BASE, json={"registry_id": registry_id}, headers=tw.irx.admin)


async def _get(tw: TransferWorld, reconciliation_id: str) -> dict[str, Any]:
    answer = await tw.gateway.get(f"{BASE}/{reconciliation_id}", headers=tw.irx.admin)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _requests(tw: TransferWorld, che: Registry) -> list[dict[str, Any]]:
    return [m["body"] for m in await tw.inbox_items(che) if m["type"] == "reconciliation.requested"]


async def _answer(che: Registry, reconciliation_id: str, stage: str, body: dict[str, Any]) -> httpx.Response:
    message_type = {"totals": "totals", "blocks": "blocks", "audit-trail": "audit_trail"}[stage]
    return await che.post(
        f"reconciliations/{reconciliation_id}/{stage}",
        che.envelope(f"reconciliation.{message_type}", {"reconciliation_id": reconciliation_id, **body}),
    )


def _totals(completed: list[dict[str, Any]], direction: str, **counts: Any) -> dict[str, Any]:
    """A totals body as a correct registry computes it from the proposals it saw complete."""
    per: dict[tuple[str, int, str], list[int]] = {}
    for body in completed:
        keys = set()
        for block in body["blocks"]:
            key = (block["ca_id"], block["vintage"], block["metric"])
            per.setdefault(key, [0, 0])[0] += block["quantity"]
            keys.add(key)
        for key in keys:
            per[key][1] += 1
    return {
        "totals": [
            {
                "direction": direction,
                "ca_id": ca,
                "vintage": vintage,
                "metric": metric,
                "completed_quantity": q,
                "completed_transfers": n,
            }
            for (ca, vintage, metric), (q, n) in sorted(per.items())
        ],
        "final_counts": {"rejected": 0, "terminated": 0, "cancelled": 0, **counts},
        "open_transfers": [],
    }


async def _codes(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 422, answer.text
    return [c["code"] for c in answer.json()["checks"]]


async def _send_out(
    tw: TransferWorld, che: Registry, quantity: int, decision: str = "accept"
) -> dict[str, Any]:
    """GHA → CHE01 decided by the registry; returns the proposal body the registry saw."""
    sent = await tw.send("GHA", "CHE01", quantity)
    assert sent.status_code == 201, sent.text
    transfer_id = sent.json()["interregistry"]["transfer_id"]
    codes = [{"code": 5903, "message": "blocked"}] if decision == "reject" else None
    decided = await tw.respond(che, transfer_id, decision, codes)
    assert decided.status_code == 200, decided.text
    [body] = [
        m["body"]
        for m in await tw.inbox_items(che)
        if m["type"] == "transfer.proposal" and m["body"]["transfer_id"] == transfer_id
    ]
    return body


async def test_consistent_pair_ledger_completes_at_stage_one(tw: TransferWorld, che: Registry) -> None:
    completed = await _send_out(tw, che, 40)
    await _send_out(tw, che, 5, "reject")
    started = await _start(tw)
    assert started.status_code == 201, started.text
    made = started.json()
    assert made["status"] == "initiated" and made["cutoff_seq"] == 2
    # Both decisions' F messages were numbered before the cut-off: proposal, F, proposal, F (+ status).
    assert made["cutoff_position"] == len(await tw.inbox_items(che)) - 1
    [request] = await _requests(tw, che)
    assert request["stage"] == "totals" and request["reconciliation_id"] == made["reconciliation_id"]
    assert (request["cutoff_position"], request["cutoff_seq"]) == (made["cutoff_position"], 2)

    body = {
        "cutoff_position": made["cutoff_position"],
        "cutoff_seq": 2,
        **_totals([completed], "ir_to_registry"),
    }
    body["final_counts"]["rejected"] = 1
    answer = await _answer(che, made["reconciliation_id"], "totals", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed" and answer.json()["codes"] == []
    view = await _get(tw, made["reconciliation_id"])
    assert view["status"] == "completed" and view["itl_code"] == 5 and view["stage"] is None
    assert all(item["consistent"] for item in view["totals"])
    [result] = [m for m in await tw.inbox_items(che) if m["type"] == "reconciliation.result"]
    assert result["body"]["status"] == "completed"
    db = tw.irx.suite.services["transactions"].state.db
    async with db.read() as session:
        events = (
            await session.execute(
                select(outbox.c.party).where(outbox.c.type == "interregistry.reconciliation.completed")
            )
        ).all()
    assert [row[0] for row in events] == ["CHE"]  # the registry's Party's feed (§9)
    # A stage answer once closed: 7005, not recorded (a retry with a new message id is judged afresh).
    late = await _answer(che, made["reconciliation_id"], "totals", body)
    assert late.status_code == 422 and late.json()["code"] == 7005
    # A new run may start once the last one closed.
    assert (await _start(tw)).status_code == 201


async def test_inconsistent_totals_freeze_ranges_until_resolved(tw: TransferWorld, che: Registry) -> None:
    gha = tw.ledger.parties["GHA"]
    out = await _send_out(tw, che, 40)
    # CHE01 sends 10 of them back (a return, decided at once), then "forgets" it in its answers.
    back_blocks = [
        {**out["blocks"][0], "unique_id_last": out["blocks"][0]["unique_id_first"].replace("-1-", "-10-")}
    ]
    back_blocks[0].update(last=back_blocks[0]["first"] + 9, quantity=10)
    back = await tw.propose(che, proposal(che, "R1", "GHA", gha.holding, back_blocks))
    assert back.status_code == 201, back.text
    made = (await _start(tw)).json()
    rec = made["reconciliation_id"]
    wrong = {"cutoff_position": made["cutoff_position"], "cutoff_seq": made["cutoff_seq"]}
    wrong |= _totals([out], "ir_to_registry")
    first = await _answer(che, rec, "totals", wrong)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "totals_inconsistent"
    assert [c["code"] for c in first.json()["codes"]] == [7001]
    assert [(k["direction"], k["ca_id"]) for k in first.json()["inconsistent_keys"]] == [
        ("registry_to_ir", "CA0012")
    ]
    request = (await _requests(tw, che))[-1]
    assert request["stage"] == "blocks" and request["keys"] == first.json()["inconsistent_keys"]

    # R may report more than asked (the outgoing transfer, another key): ignored, not "missing at the IR".
    extra = {
        "transfer_id": out["transfer_id"],
        "direction": "ir_to_registry",
        "status": "completed",
        "blocks": [
            {k: b[k] for k in ("unique_id_first", "unique_id_last", "quantity")} for b in out["blocks"]
        ],
    }
    second = await _answer(che, rec, "blocks", {"transfers": [extra]})
    assert second.status_code == 200, second.text
    assert second.json()["status"] == "blocks_inconsistent"
    [disputed] = second.json()["inconsistent_ranges"]
    assert disputed == {
        "transfer_id": "CHE01-R1",
        "unique_id_first": back_blocks[0]["unique_id_first"],
        "unique_id_last": back_blocks[0]["unique_id_last"],
        "kind": "missing_at_registry",
    }
    db = tw.irx.suite.services["transactions"].state.db
    async with db.read() as session:
        frozen = (await session.execute(select(blocks.c.first_serial).where(blocks.c.frozen_by == rec))).all()
    assert [row[0] for row in frozen] == [1]
    ranges = [{"unique_id_first": disputed["unique_id_first"], "unique_id_last": disputed["unique_id_first"]}]
    assert await _codes(await tw.send("GHA", "CHE01", blocks=ranges)) == ["4006"]
    request = (await _requests(tw, che))[-1]
    assert request["stage"] == "audit_trail" and request["transfer_ids"] == ["CHE01-R1"]

    trail = {"digest_inbox": audit_digest([]), "digest_sent": audit_digest([]), "transfers": []}
    third = await _answer(che, rec, "audit-trail", trail)
    assert third.status_code == 200, third.text
    assert third.json()["status"] == "blocks_inconsistent"
    assert [c["code"] for c in third.json()["codes"]] == [7001, 7002, 7003]
    [diagnosis] = third.json()["diagnoses"]
    assert diagnosis["diagnosis"] == "final_status_not_applied" and diagnosis["transfer_id"] == "CHE01-R1"
    completed = [m for m in await tw.inbox_items(che) if m["type"] == "transfer.completed"]
    assert [m["body"]["transfer_id"] for m in completed][-2:] == ["CHE01-R1", "CHE01-R1"]  # re-announced
    assert (await _start(tw)).json()["code"] == 7004  # still open: waiting for the Secretariat

    party = await tw.irx.client_headers(party="GHA", roles=["initiator"])
    refused = await tw.gateway.post(f"{BASE}/{rec}/resolve", json={"note": "x"}, headers=party)
    assert refused.status_code == 403
    resolved = await tw.gateway.post(
        f"{BASE}/{rec}/resolve", json={"note": "CHE01 restored R1 from its log"}, headers=tw.irx.admin
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "completed_with_manual_intervention"
    view = await _get(tw, rec)
    assert view["itl_code"] == 6 and view["resolution"]["note"] == "CHE01 restored R1 from its log"
    assert {item["kind"] for item in view["items"]} == {"transfer", "range", "diagnosis"}
    again = await tw.gateway.post(f"{BASE}/{rec}/resolve", json={"note": "twice"}, headers=tw.irx.admin)
    assert again.status_code == 409
    passed = await tw.send("GHA", "CHE01", blocks=ranges)
    assert passed.status_code == 201, passed.text
    await tw.invariants_ok()


async def test_second_start_while_open_is_7004(tw: TransferWorld, che: Registry) -> None:
    own = await che.post("reconciliations", che.envelope("reconciliation.start", {"registry_id": "CHE01"}))
    assert own.status_code == 201, own.text
    assert own.json()["status"] == "initiated" and own.json()["cutoff_seq"] == 0
    replay = await che.post("reconciliations", che.envelope("reconciliation.start", {"registry_id": "CHE01"}))
    assert replay.status_code == 409 and replay.json()["code"] == 7004
    assert replay.json()["type"].endswith("/reconciliation-refused")
    by_secretariat = await _start(tw)
    assert by_secretariat.status_code == 409 and by_secretariat.json()["code"] == 7004
    other = await che.post("reconciliations", che.envelope("reconciliation.start", {"registry_id": "GHA01"}))
    assert other.status_code == 403 and other.json()["code"] == 1004
    await tw.irx.connect("SWE01", status="disconnected")
    gone = await tw.gateway.post(BASE, json={"registry_id": "SWE01"}, headers=tw.irx.admin)
    assert gone.status_code == 409 and gone.json()["type"].endswith("/registry-disconnected")
    assert (
        await tw.gateway.post(BASE, json={"registry_id": "KEN01"}, headers=tw.irx.admin)
    ).status_code == 404
    view = await _get(tw, own.json()["reconciliation_id"])
    assert view["initiated_by"] == "registry:CHE01"
    assert len((await tw.gateway.get(BASE, headers=tw.irx.admin)).json()["items"]) == 1


async def test_silent_registry_fails_at_the_stage_deadline(tw: TransferWorld, che: Registry) -> None:
    made = (await _start(tw)).json()
    respond_by = datetime.fromisoformat(made["respond_by"])
    recs = _recs(tw)
    assert await recs.fail_due(respond_by - timedelta(seconds=1)) == 0
    assert await recs.fail_due(respond_by + timedelta(seconds=1)) == 1
    assert await recs.fail_due(respond_by + timedelta(seconds=2)) == 0
    view = await _get(tw, made["reconciliation_id"])
    assert view["status"] == "failed" and [c["code"] for c in view["codes"]] == [7006]
    late = await _answer(
        che,
        made["reconciliation_id"],
        "totals",
        {"cutoff_position": made["cutoff_position"], "cutoff_seq": 0, **_totals([], "ir_to_registry")},
    )
    assert late.status_code == 422 and late.json()["code"] == 7005
    assert (await _start(tw)).status_code == 201  # failed is closed: a new run may start


async def test_transfer_open_at_the_cutoff_is_excluded(tw: TransferWorld, che: Registry) -> None:
    sent = await tw.send("GHA", "CHE01", 40)
    transfer_id = sent.json()["interregistry"]["transfer_id"]
    made = (await _start(tw)).json()
    rec = made["reconciliation_id"]
    # Decided after the cut-off: still open as of the cut-off, on both sides.
    assert (await tw.respond(che, transfer_id)).json()["status"] == "completed"
    cutoff = {"cutoff_position": made["cutoff_position"], "cutoff_seq": made["cutoff_seq"]}
    counted = {**cutoff, **_totals([], "ir_to_registry"), "open_transfers": []}
    mismatch = await _answer(che, rec, "totals", {**counted, "cutoff_seq": made["cutoff_seq"] + 1})
    assert mismatch.status_code == 422 and mismatch.json()["code"] == 7005
    answer = await _answer(che, rec, "totals", {**counted, "open_transfers": [transfer_id]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed"


async def test_reads_are_scoped(tw: TransferWorld, che: Registry) -> None:
    other = await tw.irx.connect("SWE01")
    made = (await _start(tw)).json()
    rec = made["reconciliation_id"]
    assert (await tw.gateway.get(f"{BASE}/{rec}", headers=che.headers)).status_code == 200
    assert (await tw.gateway.get(f"{BASE}/{rec}", headers=other.headers)).status_code == 404
    mine = await tw.gateway.get(BASE, headers=che.headers)
    assert [item["reconciliation_id"] for item in mine.json()["items"]] == [rec]
    assert (await tw.gateway.get(BASE, headers=other.headers)).json()["items"] == []
    assert (
        await tw.gateway.get(BASE, params={"registry": "CHE01"}, headers=other.headers)
    ).status_code == 403
    auditor = await tw.irx.client_headers(party=None, roles=["auditor"])
    assert (await tw.gateway.get(f"{BASE}/{rec}", headers=auditor)).status_code == 200
    party = await tw.irx.client_headers(party="GHA", roles=["viewer"])
    assert (await tw.gateway.get(BASE, headers=party)).status_code == 403
    assert (await tw.gateway.post(BASE, json={"registry_id": "CHE01"}, headers=party)).status_code == 403


async def test_daily_schedule_on_an_injected_clock(tw: TransferWorld, che: Registry) -> None:
    recs = _recs(tw)
    assert recs.running  # the loop runs for the app's lifetime (deadlines every minute)
    assert recs.daily_at is None  # the daily start is off in tests unless REGISTRY_IRX_RECONCILE_AT is set
    recs.daily_at = daily_time("02:00")
    try:
        day = datetime.fromisoformat("2026-11-26T01:59:00+00:00")
        await recs.tick(day)
        assert (await tw.gateway.get(BASE, headers=tw.irx.admin)).json()["items"] == []
        await recs.tick(day + timedelta(minutes=2))
        [started] = (await tw.gateway.get(BASE, headers=tw.irx.admin)).json()["items"]
        assert started["registry_id"] == "CHE01" and started["initiated_by"] == "schedule:daily"
        await recs.tick(day + timedelta(minutes=3))  # once a day
        assert len((await tw.gateway.get(BASE, headers=tw.irx.admin)).json()["items"]) == 1
    finally:
        recs.daily_at = None


async def test_a_transfer_unknown_at_the_ir_is_missing_at_ir_and_diagnosed(
    tw: TransferWorld, che: Registry
) -> None:
    """R claims a transfer into GHA the IR never accepted: its range is frozen at the IR (the serials the
    claim names, held in GHA's account) and stage 3 says `unknown_at_ir` (the IR's record stands)."""
    made = (await _start(tw)).json()
    rec = made["reconciliation_id"]
    ghost = "CA0012-GHA01-GHA-90-2024"
    claim = {
        "direction": "registry_to_ir",
        "ca_id": "CA0012",
        "vintage": 2024,
        "metric": "GHG",
        "completed_quantity": 5,
        "completed_transfers": 1,
    }
    totals = {"cutoff_position": made["cutoff_position"], "cutoff_seq": made["cutoff_seq"]}
    totals |= _totals([], "registry_to_ir") | {"totals": [claim]}
    assert (await _answer(che, rec, "totals", totals)).json()["status"] == "totals_inconsistent"
    reported = {
        "transfer_id": "CHE01-GHOST",
        "direction": "registry_to_ir",
        "status": "completed",
        "final_position": 1,
        "blocks": [
            {"unique_id_first": ghost, "unique_id_last": ghost.replace("-90-", "-94-"), "quantity": 5}
        ],
    }
    second = await _answer(che, rec, "blocks", {"transfers": [reported]})
    assert [(r["transfer_id"], r["kind"]) for r in second.json()["inconsistent_ranges"]] == [
        ("CHE01-GHOST", "missing_at_ir")
    ]
    ranges = [{"unique_id_first": ghost, "unique_id_last": ghost}]
    assert await _codes(await tw.send("GHA", "CHE01", blocks=ranges)) == ["4006"]
    never_seen = "7f1d2a4e-0000-4000-8000-000000000001"
    message = {
        "message_id": never_seen,
        "type": "transfer.proposal",
        "direction": "registry_to_ir",
        "seq": 1,
        "at": "2026-11-26T00:00:00.000Z",
        "body_sha256": "0" * 64,
    }
    trail = {
        "digest_inbox": audit_digest([]),
        "digest_sent": audit_digest([(1, never_seen, "0" * 64)]),
        "transfers": [{"transfer_id": "CHE01-GHOST", "messages": [message]}],
    }
    third = await _answer(che, rec, "audit-trail", trail)
    assert third.status_code == 200, third.text
    assert [(d["transfer_id"], d["diagnosis"]) for d in third.json()["diagnoses"]] == [
        ("CHE01-GHOST", "unknown_at_ir")
    ]
    assert [c["code"] for c in third.json()["codes"]] == [7001, 7002, 7003]
    resolved = await tw.gateway.post(
        f"{BASE}/{rec}/resolve", json={"note": "CHE01 withdrew"}, headers=tw.irx.admin
    )
    assert resolved.status_code == 200, resolved.text
    assert (await tw.send("GHA", "CHE01", blocks=ranges)).status_code == 201
    await tw.invariants_ok()


async def test_a_new_round_comes_clean_once_the_registry_applied_the_final_status(
    tw: TransferWorld, che: Registry
) -> None:
    """§8 rounds: stage 3 finds only `final_status_not_applied`; the IR re-announces F, starts round 2 at a
    new cut-off covering the copy, and R's corrected totals complete the run and lift the freeze."""
    gha = tw.ledger.parties["GHA"]
    out = await _send_out(tw, che, 40)
    back_blocks = [
        {**out["blocks"][0], "unique_id_last": out["blocks"][0]["unique_id_first"].replace("-1-", "-10-")}
    ]
    back_blocks[0].update(last=back_blocks[0]["first"] + 9, quantity=10)
    assert (await tw.propose(che, proposal(che, "R1", "GHA", gha.holding, back_blocks))).status_code == 201
    made = (await _start(tw)).json()
    rec = made["reconciliation_id"]
    cutoff = {"cutoff_position": made["cutoff_position"], "cutoff_seq": made["cutoff_seq"]}
    await _answer(che, rec, "totals", cutoff | _totals([out], "ir_to_registry"))
    await _answer(che, rec, "blocks", {"transfers": []})
    trail = {"digest_inbox": audit_digest([]), "digest_sent": audit_digest([]), "transfers": []}
    third = await _answer(che, rec, "audit-trail", trail)
    assert [d["diagnosis"] for d in third.json()["diagnoses"]] == ["final_status_not_applied"]
    inbox = await tw.inbox_items(che)
    copy = [i for i, m in enumerate(inbox) if m["type"] == "transfer.completed"][-1] + 1
    request = [m["body"] for m in inbox if m["type"] == "reconciliation.requested"][-1]
    assert (request["round"], request["stage"]) == (2, "totals")
    assert request["cutoff_position"] >= copy > made["cutoff_position"]  # the re-announced F is inside
    view = await _get(tw, rec)
    assert (view["round"], view["stage"], view["status"]) == (2, "totals", "blocks_inconsistent")
    stale = await _answer(che, rec, "totals", cutoff | _totals([out], "ir_to_registry"))
    assert stale.status_code == 422 and stale.json()["code"] == 7005  # round 1's cut-off

    both = _totals([out], "ir_to_registry")
    both["totals"] += _totals([{"blocks": back_blocks}], "registry_to_ir")["totals"]
    new_cutoff = {"cutoff_position": request["cutoff_position"], "cutoff_seq": request["cutoff_seq"]}
    clean = await _answer(che, rec, "totals", new_cutoff | both)
    assert clean.status_code == 200, clean.text
    assert clean.json()["status"] == "completed" and clean.json()["round"] == 2
    assert [c["code"] for c in clean.json()["codes"]] == [7001, 7002, 7003]
    ranges = [
        {
            "unique_id_first": back_blocks[0]["unique_id_first"],
            "unique_id_last": back_blocks[0]["unique_id_first"],
        }
    ]
    assert (await tw.send("GHA", "CHE01", blocks=ranges)).status_code == 201  # freeze lifted
    await tw.invariants_ok()
