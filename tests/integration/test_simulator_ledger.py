"""The reference simulator's own state machine (conformance/simulator), against a scripted IR.

The IR's transfer endpoints are built elsewhere, so transfer messages here come from `FakeIR`: an
`httpx.MockTransport` that issues tokens, publishes a test IR key, serves inbox items signed with it, and
answers the simulator's signed POSTs the way INTERREGISTRY §3/§5/§6 says (stored answers for a repeated
message id, 1007 for a stale seq, 200 completed for an accept, 201 for a proposal). What is checked is
the simulator's side: pending_in/held/reserved/transferred_out, the receiver's codes, exactly-once
processing, outbox retries and renumbering, the crash points (restart over the same SQLite file) and each
`--bug` mode's misbehaviour next to the correct behaviour.
"""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conformance.simulator import Policy, SimulatedCrash, Simulator, SimulatorConfig
from conformance.simulator.app import create_app
from conformance.simulator.engine import InboxItemRefused, fixture_accounts
from conformance.simulator.store import block, outbox, processed
from kit.jws import sign, verify
from kit.jwt import KeySet, SigningKey

RID = "CHE01"
HOLDING = fixture_accounts(RID)[0]["account_id"]
#: Fixed, so the IR repeating a proposal (duplicate_inbox) repeats the same body.
RESPOND_BY = (
    (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
)


def _wire(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tblock(
    first: int, last: int, *, ca: str = "CA0012", origin: str = "GHA01", **changes: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "unique_id_first": f"{ca}-{origin}-GHA-{first}-2024",
        "unique_id_last": f"{ca}-{origin}-GHA-{last}-2024",
        "ca_id": ca,
        "origin_registry_id": origin,
        "first_transferring_party": "GHA",
        "first": first,
        "last": last,
        "quantity": last - first + 1,
        "vintage": 2024,
        "metric": "GHG",
        "applicable_gwp_values": "AR5",
        "applicable_non_ghg_metric": None,
        "conversion_factor": None,
        "mitigation_type": "Emission reductions",
        "sector": "Energy generation",
        "activity_type": "Solar",
        "authorization_id": "GH-AUTH-7",
        "authorization_version": 1,
        "purposes": "NDC and OIMP",
        "authorized_parties": None,
        "first_transfer_definition": "First international transfer",
        "first_transferred": True,
        "underlying": {
            "registry_id": "GS",
            "first_unit_id": 9_000_000 + first,
            "last_unit_id": 9_000_000 + last,
        },
    }
    data.update(changes)
    return data


def proposal(transfer_id: str, blocks: list[dict[str, Any]], *, to_account: str = HOLDING) -> dict[str, Any]:
    return {
        "transfer_id": transfer_id,
        "sender_action": "transfer",
        "transferring_party": "GHA",
        "from_registry": "GHA01",
        "from_account": "acc_7Q2",
        "acquiring_party": "CHE",
        "to_registry": RID,
        "to_account": to_account,
        "quantity": sum(b["quantity"] for b in blocks),
        "respond_by": RESPOND_BY,
        "note": None,
        "blocks": blocks,
    }


def final(
    status: str, transfer_id: str, blocks: list[dict[str, Any]], *, direction: str = "ir_to_registry"
) -> dict[str, Any]:
    return {
        "transfer_id": transfer_id,
        "direction": direction,
        "status": status,
        "decided_at": _wire(datetime.now(UTC)),
        "codes": [],
        "from_registry": "GHA01",
        "from_account": "acc_7Q2",
        "to_registry": RID,
        "to_account": HOLDING,
        "quantity": sum(b["quantity"] for b in blocks),
        "blocks": blocks,
    }


@dataclass
class FakeIR:
    """A scripted IR: what the simulator sees of the real one, for the message types not built there yet."""

    sim_keys: KeySet
    key: SigningKey = field(default_factory=lambda: SigningKey.generate().with_kid("ir-test-1"))
    items: list[dict[str, Any]] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    last_seq: int = 0
    #: message type → answer (status, body) or a callable(document) → (status, body); overrides the defaults.
    script: dict[str, Any] = field(default_factory=dict)
    #: transient failures to give before answering, per message type.
    failures: dict[str, int] = field(default_factory=dict)

    def add(
        self, message_type: str, body: dict[str, Any], *, message_id: str | None = None
    ) -> dict[str, Any]:
        position = len(self.items) + 1
        envelope = {
            "protocol": "irx",
            "version": "1.0",
            "env": "sandbox",
            "message_id": message_id or str(uuid.uuid4()),
            "type": message_type,
            "from": "IR",
            "to": RID,
            "seq": position,
            "sent_at": _wire(datetime.now(UTC)),
            "body": body,
        }
        item = {"position": position, "message": envelope, "signature": sign(envelope, self.key)}
        self.items.append(item)
        return item

    def of_type(self, message_type: str) -> list[dict[str, Any]]:
        return [post for post in self.posts if post["type"] == message_type]

    def _default(self, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = document["body"]
        kind = document["type"]
        if kind == "inbox.ack":
            return 200, {"acked_position": body["up_to"]}
        if kind == "transfer.response":
            status = "completed" if body["decision"] == "accept" else "rejected"
            return 200, {
                "transfer_id": body["transfer_id"],
                "status": status,
                "decided_at": _wire(datetime.now(UTC)),
                "codes": body.get("codes", []),
            }
        if kind == "transfer.proposal":
            return 201, {
                "transfer_id": body["transfer_id"],
                "status": "completed",
                "decided_at": _wire(datetime.now(UTC)),
                "codes": [],
            }
        if kind == "transfer.cancel":
            return 200, {
                "transfer_id": body["transfer_id"],
                "status": "cancelled",
                "decided_at": _wire(datetime.now(UTC)),
                "codes": [],
            }
        raise AssertionError(kind)

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/oauth2/token":
            return httpx.Response(
                200, json={"access_token": "token", "token_type": "Bearer", "expires_in": 900}
            )
        if path == "/v1/interregistry/jwks.json":
            return httpx.Response(200, json={"keys": [self.key.public_jwk]})
        if path == "/v1/interregistry/inbox":
            after = int(request.url.params.get("after", "0"))
            return httpx.Response(200, json={"items": self.items[after:], "next_cursor": None})
        document = json.loads(request.content)
        verify(
            document, request.headers["IRX-Signature"], self.sim_keys
        )  # every POST is signed by the simulator
        assert request.headers["Idempotency-Key"] == document["message_id"]
        kind = document["type"]
        if self.failures.get(kind):
            self.failures[kind] -= 1
            self.posts.append(document)
            return httpx.Response(503, json={"title": "unavailable"})
        if document["message_id"] in self.stored:  # S6: a retry gets the stored answer, no second effect
            status, body = self.stored[document["message_id"]]
            return httpx.Response(status, json=body, headers={"Idempotent-Replayed": "true"})
        if kind == "hello":
            return httpx.Response(
                200,
                json={
                    "version": "1.0",
                    "ir_time": _wire(datetime.now(UTC)),
                    "skew_ms": 0,
                    "registry_status": "active",
                    "last_seq_received": self.last_seq,
                    "inbox": {"last_position": len(self.items), "acked_position": 0},
                },
            )
        if document["seq"] <= self.last_seq:
            return httpx.Response(409, json={"code": 1007, "last_seq": self.last_seq, "status": 409})
        self.posts.append(document)
        answer = self.script.get(kind)
        status, body = answer(document) if callable(answer) else (answer or self._default(document))
        self.last_seq = document["seq"]
        self.stored[document["message_id"]] = (status, body)
        return httpx.Response(status, json=body)


@dataclass
class Harness:
    tmp: Path
    ir: FakeIR
    sims: list[Simulator] = field(default_factory=list)

    def config(self, **changes: Any) -> SimulatorConfig:
        values: dict[str, Any] = {
            "registry_id": RID,
            "ir_url": "http://ir.test",
            "client_id": "che01",
            "client_secret": "secret",
            "db_path": self.tmp / "che01.sqlite",
            "retry_seconds": 2.0,
            "retry_initial": 0.01,
            "retry_max": 0.05,
        }
        values.update(changes)
        return SimulatorConfig(**values)

    async def start(self, **changes: Any) -> Simulator:
        """A simulator over the harness's SQLite file (a second call is a restart)."""

        def crash(code: int) -> None:
            raise SimulatedCrash(code)

        sim = Simulator(self.config(**changes), transport=httpx.MockTransport(self.ir.handler), exit=crash)
        await sim.open()
        self.ir.sim_keys.replace(sim.public_jwks())
        self.sims.append(sim)
        return sim

    async def restart(self, sim: Simulator, **changes: Any) -> Simulator:
        await sim.close()
        self.sims.remove(sim)
        return await self.start(**changes)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = Harness(tmp=tmp_path, ir=FakeIR(sim_keys=KeySet()))
    yield made
    for sim in made.sims:
        await sim.close()


async def _blocks(sim: Simulator) -> list[tuple[int, int, str, str | None]]:
    async with sim.store.read() as connection:
        rows = (
            (await connection.execute(select(block).order_by(block.c.first, block.c.state))).mappings().all()
        )
    return [(row["first"], row["last"], row["state"], row["transfer_id"]) for row in rows]


async def _units(sim: Simulator, first: int, last: int, *, origin: str = "GHA01") -> dict[str, Any]:
    return await sim.units(f"CA0012-{origin}-GHA-{first}-2024", f"CA0012-{origin}-GHA-{last}-2024")


async def _feed(sim: Simulator, item: dict[str, Any]) -> str:
    """Feed one item to the processing function directly (verified first, as poll does)."""
    envelope = await sim._verified(item)
    async with sim.store.write() as connection:
        return await sim.process_item(connection, item["position"], envelope)


# ---- incoming (IR → registry) -----------------------------------------------------------------------------


async def test_proposal_commits_pending_in_before_the_accept_then_completed_makes_units_held(
    harness: Harness,
) -> None:
    sim = await harness.start()
    item = harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 400)]))
    assert await _feed(sim, item) == "accept"
    # S4: pending_in is committed with the answer queued, nothing sent yet; the units are not spendable (S3).
    assert await _blocks(sim) == [(1, 400, "pending_in", "GHA01-tx_1")]
    assert await _units(sim, 1, 400) == {"state": "pending_in", "quantity_held_in_range": 0}
    async with sim.store.read() as connection:
        queued = (await connection.execute(select(outbox))).mappings().all()
    assert [(row["type"], row["status"], row["seq"]) for row in queued] == [
        ("transfer.response", "pending", 1)
    ]
    # The IR's own final status makes them held; the transfer.completed item after it is a no-op.
    await sim.flush()
    assert harness.ir.of_type("transfer.response")[0]["body"] == {
        "transfer_id": "GHA01-tx_1",
        "decision": "accept",
    }
    assert await _units(sim, 1, 400) == {"state": "held", "quantity_held_in_range": 400}
    harness.ir.add("transfer.completed", final("completed", "GHA01-tx_1", [tblock(1, 400)]))
    assert await sim.poll_once() == 1  # position 1 was fed directly: only the completion is new
    assert await _blocks(sim) == [(1, 400, "held", "GHA01-tx_1")]
    snapshot = await sim.snapshot()
    assert snapshot["inbox_cursor"] == 2 and snapshot["acked_position"] == 2
    assert [t["final_position"] for t in snapshot["transfers"]] == [2]
    assert harness.ir.of_type("inbox.ack")[-1]["body"] == {"up_to": 2}


async def test_receiver_checks_answer_with_the_catalogue_codes(harness: Harness) -> None:
    sim = await harness.start()
    harness.ir.script["transfer.response"] = lambda doc: (
        200,
        {
            "transfer_id": doc["body"]["transfer_id"],
            "status": "rejected",
            "decided_at": _wire(datetime.now(UTC)),
            "codes": doc["body"].get("codes", []),
        },
    )
    cases = {
        "GHA01-nope": (proposal("GHA01-nope", [tblock(1, 10)], to_account="CH-100-77"), 5902),
        "GHA01-blocked": (proposal("GHA01-blocked", [tblock(11, 20)], to_account="CH-100-90"), 5903),
        "GHA01-closed": (proposal("GHA01-closed", [tblock(21, 30)], to_account="CH-100-91"), 5906),
        "GHA01-policy": (proposal("GHA01-policy", [tblock(31, 40)], to_account="CH-100-92"), 5904),
        "GHA01-qty": ({**proposal("GHA01-qty", [tblock(41, 50)]), "quantity": 11}, 2003),
    }
    for body, _code in cases.values():
        harness.ir.add("transfer.proposal", body)
    assert await sim.poll_once() == len(cases)
    answers = {post["body"]["transfer_id"]: post["body"] for post in harness.ir.of_type("transfer.response")}
    for transfer_id, (_body, code) in cases.items():
        assert answers[transfer_id]["decision"] == "reject"
        assert [c["code"] for c in answers[transfer_id]["codes"]] == [code], transfer_id
    assert await _blocks(sim) == []  # a rejected proposal leaves no units behind


async def test_units_already_here_are_refused_4002_and_a_return_is_accepted(harness: Harness) -> None:
    sim = await harness.start()
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 100)]))
    await sim.poll_once()
    # Serials 50–150 overlap the held 1–100: a forged proposal is refused 4002 (conformance 158).
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_2", [tblock(50, 150)]))
    await sim.poll_once()
    second = harness.ir.of_type("transfer.response")[-1]["body"]
    assert second["decision"] == "reject" and second["codes"][0]["code"] == 4002
    # 1–40 go to the IR, then come back: a return is accepted; with other invariants it is 4005.
    transfer_id = await sim.propose(
        to_registry="GHA01",
        to_account="acc_9KD",
        blocks=[
            {
                "unique_id_first": tblock(1, 40)["unique_id_first"],
                "unique_id_last": tblock(1, 40)["unique_id_last"],
            }
        ],
    )
    assert await _units(sim, 1, 40) == {"state": "transferred_out", "quantity_held_in_range": 0}
    sent = harness.ir.of_type("transfer.proposal")[0]["body"]
    assert sent["transfer_id"] == transfer_id and sent["blocks"] == [tblock(1, 40)]  # every invariant carried
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_3", [tblock(1, 20, sector="Transport")]))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_4", [tblock(1, 40)]))
    await sim.poll_once()
    answers = {p["body"]["transfer_id"]: p["body"] for p in harness.ir.of_type("transfer.response")}
    assert answers["GHA01-tx_3"]["codes"][0]["code"] == 4005
    assert answers["GHA01-tx_4"]["decision"] == "accept"
    assert await _units(sim, 1, 100) == {"state": "held", "quantity_held_in_range": 100}
    assert all(state != "transferred_out" for *_r, state, _t in await _blocks(sim))


async def test_each_item_is_processed_once_and_a_repeated_proposal_gets_one_answer(harness: Harness) -> None:
    sim = await harness.start()
    item = harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    assert await _feed(sim, item) == "accept"
    assert await _feed(sim, item) == "duplicate message"
    # The same proposal at a new position (fault duplicate_inbox, conformance 155): no second effect.
    again = harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    assert await _feed(sim, again) == "duplicate transfer"
    await sim.flush()
    assert len(harness.ir.of_type("transfer.response")) == 1
    assert await _units(sim, 1, 10) == {"state": "held", "quantity_held_in_range": 10}
    async with sim.store.read() as connection:
        assert len((await connection.execute(select(processed))).all()) == 2


async def test_terminated_drops_pending_in_and_a_lost_pending_in_is_rebuilt_from_completed(
    harness: Harness,
) -> None:
    sim = await harness.start()
    await sim.set_policy(Policy.parse("silent"))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_2", [tblock(11, 20)]))
    await sim.poll_once()
    assert harness.ir.of_type("transfer.response") == []  # silent: no answer, but pending_in is kept
    assert await _units(sim, 1, 20) == {"state": "pending_in", "quantity_held_in_range": 0}
    harness.ir.add("transfer.terminated", final("terminated", "GHA01-tx_1", [tblock(1, 10)]))
    # F7: the registry lost tx_2's pending_in (restored backup); transfer.completed is self-contained.
    async with sim.store.write() as connection:
        await connection.execute(block.delete().where(block.c.transfer_id == "GHA01-tx_2"))
    harness.ir.add("transfer.completed", final("completed", "GHA01-tx_2", [tblock(11, 20)]))
    await sim.poll_once()
    assert await _units(sim, 1, 10) == {"state": "absent", "quantity_held_in_range": 0}
    assert await _units(sim, 11, 20) == {"state": "held", "quantity_held_in_range": 10}
    # Leaving silent answers the proposals held back; tx_1 is final already, so only tx_2 could be — and it is final too.
    assert await sim.set_policy(Policy.parse("accept")) == 0


async def test_policy_change_answers_held_back_proposals(harness: Harness) -> None:
    sim = await harness.start(policy=Policy.parse("silent"))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_2", [tblock(11, 20)]))
    await sim.poll_once()
    assert await sim.set_policy(Policy.parse("reject:5904")) == 2
    answers = [p["body"] for p in harness.ir.of_type("transfer.response")]
    assert [a["decision"] for a in answers] == ["reject", "reject"]
    assert [a["codes"][0]["code"] for a in answers] == [5904, 5904]
    assert await _blocks(sim) == []


# ---- outgoing (registry → IR) -----------------------------------------------------------------------------


async def test_outgoing_reserve_then_completed_rejected_and_cancelled(harness: Harness) -> None:
    sim = await harness.start()
    made = await sim.issue(ca_id="CA0012", vintage=2024, quantity=100)
    assert made.origin_registry_id == RID and made.unique_id_first == "CA0012-CHE01-CHE-1-2024"
    completed = await sim.propose(
        to_registry="GHA01", to_account="acc_9KD", ca_id="CA0012", vintage=2024, quantity=30
    )
    assert (await sim.units("CA0012-CHE01-CHE-1-2024", "CA0012-CHE01-CHE-30-2024"))[
        "state"
    ] == "transferred_out"
    harness.ir.script["transfer.proposal"] = lambda doc: (
        422,
        {
            "type": "x/transfer-rejected",
            "status": 422,
            "transfer_id": doc["body"]["transfer_id"],
            "codes": [{"code": 5902, "message": "no account"}],
        },
    )
    rejected = await sim.propose(
        to_registry="GHA01", to_account="acc_nope", ca_id="CA0012", vintage=2024, quantity=30
    )
    states = {t["transfer_id"]: t["status"] for t in (await sim.snapshot())["transfers"]}
    assert states == {completed: "completed", rejected: "rejected"}
    # 422 with status rejected is a recorded rejection: the reservation is released (S2).
    assert (await sim.units("CA0012-CHE01-CHE-31-2024", "CA0012-CHE01-CHE-100-2024"))[
        "quantity_held_in_range"
    ] == 70
    # No answer at all: the units stay reserved (never released on our own clock), then cancel → released.
    harness.ir.script.pop("transfer.proposal")
    harness.ir.failures["transfer.proposal"] = 1000
    waiting = await sim.propose(
        to_registry="GHA01", to_account="acc_9KD", ca_id="CA0012", vintage=2024, quantity=10
    )
    assert (await sim.units("CA0012-CHE01-CHE-31-2024"))["state"] == "reserved"
    harness.ir.failures["transfer.proposal"] = 0
    harness.ir.script["transfer.proposal"] = lambda doc: (
        409,
        {"code": 6003, "status": "cancelled", "transfer_id": doc["body"]["transfer_id"]},
    )
    await sim.cancel(waiting)
    assert (await sim.units("CA0012-CHE01-CHE-31-2024"))["state"] == "held"
    assert {t["transfer_id"]: t["status"] for t in (await sim.snapshot())["transfers"]}[
        waiting
    ] == "cancelled"


async def test_transient_failures_retry_the_same_message_and_1007_renumbers(harness: Harness) -> None:
    sim = await harness.start()
    await sim.issue(ca_id="CA0012", vintage=2024, quantity=10)
    harness.ir.failures["transfer.proposal"] = 2
    transfer_id = await sim.propose(
        to_registry="GHA01", to_account="acc_9KD", ca_id="CA0012", vintage=2024, quantity=10
    )
    tries = harness.ir.of_type("transfer.proposal")
    assert len(tries) == 3 and len({t["message_id"] for t in tries}) == 1  # one message, three tries
    assert (await sim.units("CA0012-CHE01-CHE-1-2024"))["state"] == "transferred_out"
    # A restore drill: our seq goes back to 0; the IR refuses 1007; hello; resend above last_seq_received.
    await sim.restore_drill()
    harness.ir.add("notice", {"notice_id": "n1", "title": "t", "text": "x"})
    await sim.poll_once()
    ack = harness.ir.of_type("inbox.ack")[-1]
    assert ack["seq"] == 2 and ack["body"] == {"up_to": 1}
    async with sim.store.read() as connection:
        rows = (await connection.execute(select(outbox).order_by(outbox.c.id))).mappings().all()
    assert [(r["type"], r["seq"], r["status"]) for r in rows] == [
        ("transfer.proposal", 1, "answered"),
        ("inbox.ack", 2, "answered"),
    ]
    assert transfer_id == f"{RID}-T000001"


# ---- crash points (§13): the same paths, with a crash raised in-process, then a restart --------------------


async def test_crash_after_pending_in_commit_resends_the_accept_on_restart(harness: Harness) -> None:
    sim = await harness.start(crash_at="after_pending_in_commit")
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    with pytest.raises(SimulatedCrash):
        await sim.poll_once()
    assert harness.ir.posts == []
    sim = await harness.restart(sim)
    assert await _units(sim, 1, 10) == {"state": "pending_in", "quantity_held_in_range": 0}
    await sim.flush()  # F6: the outbox re-sends the accept
    await sim.poll_once()  # the proposal is not processed again; the ack follows
    assert len(harness.ir.of_type("transfer.response")) == 1
    assert await _units(sim, 1, 10) == {"state": "held", "quantity_held_in_range": 10}
    assert harness.ir.of_type("inbox.ack")[-1]["body"] == {"up_to": 1}


@pytest.mark.parametrize("point", ["after_accept_sent", "after_completed_received_before_apply"])
async def test_crash_around_the_completion_applies_it_once_after_restart(
    harness: Harness, point: str
) -> None:
    sim = await harness.start(crash_at=point)
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    harness.ir.add("transfer.completed", final("completed", "GHA01-tx_1", [tblock(1, 10)]))
    if point == "after_accept_sent":
        # The IR has the accept (and completed); our record of its answer is lost.
        with pytest.raises(SimulatedCrash):
            await sim.poll_once()
    else:
        await _feed(sim, harness.ir.items[0])
        with pytest.raises(SimulatedCrash):
            await sim.poll_once()
    sim = await harness.restart(sim)
    await sim.flush()
    await sim.poll_once()
    assert await _units(sim, 1, 10) == {"state": "held", "quantity_held_in_range": 10}
    responses = harness.ir.of_type("transfer.response")
    assert len({r["message_id"] for r in responses}) == 1  # a retry of the same message, not a second vote
    assert (await sim.snapshot())["acked_position"] == 2


@pytest.mark.parametrize("point", ["after_reserve_before_propose", "after_propose_before_response"])
async def test_crash_around_an_outgoing_proposal_converges_after_restart(
    harness: Harness, point: str
) -> None:
    sim = await harness.start(crash_at=point)
    await sim.issue(ca_id="CA0012", vintage=2024, quantity=10)
    with pytest.raises(SimulatedCrash):
        await sim.propose(
            to_registry="GHA01", to_account="acc_9KD", ca_id="CA0012", vintage=2024, quantity=10
        )
    sim = await harness.restart(sim)
    assert (await sim.units("CA0012-CHE01-CHE-1-2024"))["state"] == "reserved"  # kept, never released by us
    await sim.flush()
    assert (await sim.units("CA0012-CHE01-CHE-1-2024", "CA0012-CHE01-CHE-10-2024")) == {
        "state": "transferred_out",
        "quantity_held_in_range": 0,
    }
    proposals = harness.ir.of_type("transfer.proposal")
    assert len({p["message_id"] for p in proposals}) == 1  # the same message: one acquisition at the IR


# ---- bug modes (§11 mutation runs): each misbehaves where the correct simulator does not -------------------


async def test_bug_spend_before_complete_makes_units_spendable_before_the_decision(harness: Harness) -> None:
    sim = await harness.start(policy=Policy.parse("silent"), bugs=frozenset({"spend-before-complete"}))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    harness.ir.add("transfer.terminated", final("terminated", "GHA01-tx_1", [tblock(1, 10)]))
    await sim.poll_once()
    assert await _units(sim, 1, 10) == {"state": "held", "quantity_held_in_range": 10}  # correct: absent


async def test_bug_release_on_own_timeout_releases_without_a_final_status(harness: Harness) -> None:
    sim = await harness.start(bugs=frozenset({"release-on-own-timeout"}))
    await sim.issue(ca_id="CA0012", vintage=2024, quantity=10)
    harness.ir.failures["transfer.proposal"] = 1
    await sim.propose(to_registry="GHA01", to_account="acc_9KD", ca_id="CA0012", vintage=2024, quantity=10)
    assert (await sim.units("CA0012-CHE01-CHE-1-2024"))[
        "state"
    ] == "held"  # correct: reserved, then transferred_out
    assert [row["status"] for row in (await sim.snapshot())["outbox"]] == ["abandoned"]


async def test_bug_ignore_seq_drops_the_message_after_1007(harness: Harness) -> None:
    sim = await harness.start(bugs=frozenset({"ignore-seq"}))
    harness.ir.last_seq = 5  # the IR saw seq 5 before our (restored) database was taken
    harness.ir.add("notice", {"notice_id": "n1", "title": "t", "text": "x"})
    await sim.hello()
    await sim.poll_once()
    assert harness.ir.of_type("inbox.ack") == []  # correct: resent above 5 (see the test above)
    assert [row["status"] for row in (await sim.snapshot())["outbox"]] == ["refused"]


async def test_bug_double_apply_holds_a_repeated_proposal_twice(harness: Harness) -> None:
    sim = await harness.start(bugs=frozenset({"double-apply"}))
    harness.ir.script["transfer.response"] = lambda doc: (
        200,
        {"transfer_id": doc["body"]["transfer_id"], "status": "accepted", "codes": []},
    )
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    harness.ir.add("transfer.completed", final("completed", "GHA01-tx_1", [tblock(1, 10)]))
    await sim.poll_once()
    assert len(harness.ir.of_type("transfer.response")) == 2  # correct: one answer
    assert await _units(sim, 1, 10) == {"state": "held", "quantity_held_in_range": 20}  # correct: 10


async def test_bug_no_return_check_accepts_units_it_already_holds(harness: Harness) -> None:
    sim = await harness.start(bugs=frozenset({"no-return-check"}))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    harness.ir.add("transfer.proposal", proposal("GHA01-tx_2", [tblock(1, 10)]))
    await sim.poll_once()
    assert [r["body"]["decision"] for r in harness.ir.of_type("transfer.response")] == ["accept", "accept"]


# ---- verification and the driver API ----------------------------------------------------------------------


async def test_an_item_not_signed_by_the_ir_is_refused_and_nothing_moves(harness: Harness) -> None:
    sim = await harness.start()
    good = harness.ir.add("notice", {"notice_id": "n1", "title": "t", "text": "x"})
    forged = harness.ir.add("transfer.proposal", proposal("GHA01-tx_1", [tblock(1, 10)]))
    forged["signature"] = sign(forged["message"], SigningKey.generate().with_kid("ir-test-1"))
    with pytest.raises(InboxItemRefused) as refused:
        await sim.poll_once()
    assert refused.value.position == 2 and good["position"] == 1
    snapshot = await sim.snapshot()
    assert snapshot["inbox_cursor"] == 1 and snapshot["blocks"] == []
    assert harness.ir.of_type("inbox.ack")[-1]["body"] == {"up_to": 1}  # what came before is acknowledged


async def test_driver_api(harness: Harness) -> None:
    sim = await harness.start()
    app = create_app(sim, run_loops=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as driver:
        assert (await driver.get("/.well-known/jwks.json")).json() == sim.public_jwks()
        assert (
            await driver.post("/conformance/v1/policy", json={"policy": "reject:1234"})
        ).status_code == 422
        assert (await driver.post("/conformance/v1/policy", json={"policy": "silent"})).json()[
            "policy"
        ] == "silent"
        issued = await driver.post(
            "/conformance/v1/issue", json={"ca_id": "CA0012", "vintage": 2024, "quantity": 50}
        )
        assert issued.status_code == 201
        too_many = await driver.post(
            "/conformance/v1/propose",
            json={
                "to_registry": "GHA01",
                "to_account": "acc_9KD",
                "ca_id": "CA0012",
                "vintage": 2024,
                "quantity": 51,
            },
        )
        assert too_many.status_code == 422 and too_many.json()["code"] == 4001
        sent = await driver.post(
            "/conformance/v1/propose",
            json={
                "to_registry": "GHA01",
                "to_account": "acc_9KD",
                "ca_id": "CA0012",
                "vintage": 2024,
                "quantity": 20,
            },
        )
        assert sent.status_code == 201 and sent.json()["status"] == "completed"
        units = await driver.get(
            "/conformance/v1/units",
            params={"unique_id": "CA0012-CHE01-CHE-15-2024", "unique_id_last": "CA0012-CHE01-CHE-30-2024"},
        )
        assert units.json() == {"state": "transferred_out", "quantity_held_in_range": 10}
        state = (await driver.get("/conformance/v1/state")).json()
        assert state["policy"] == "silent" and state["registry_id"] == RID
        assert {a["account_id"]: a["quantities"] for a in state["accounts"]}[HOLDING] == {
            "transferred_out": 20,
            "held": 30,
        }
        harness.ir.add("notice", {"notice_id": "n1", "title": "t", "text": "x"})
        assert (await driver.post("/conformance/v1/poll")).json() == {"processed": 1}
