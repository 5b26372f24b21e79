"""The transfer cases of INTERREGISTRY §11 (150–165, 170–172), each with its pass rule.

The kit drives the IR side through the sandbox-only endpoints (`/v1/interregistry/sandbox/…`, with the
registry's own token) and the registry side through the registry's test driver (`--driver-url`); it judges
from the IR's record (`GET /v1/interregistry/transfers/{id}`, the message log) and the driver's view of the
units. Without a driver, the operator at the terminal plays it (§11: the kit prints each instruction or
question and waits up to 10 min, `OperatorDriver`); with neither, or without the IR test section's account
and CA (`--ir-account`, `--ca-id`, `--vintage`), a case is `skipped` with the reason.

Cases 162, 163 and 165 also send proposals and cancels *as the registry* (its key, its seq): each is one the
IR must refuse or that only leaves a tombstone, so no unit moves; their transfer ids start
`<registry>-CONF-`, so an operator can tell them from the registry's own.

Cases share what earlier ones left (the range held at the registry after 150, …) through `RunState.notes`;
each falls back to making its own units when run alone.
"""

import asyncio
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from conformance.kit.driver import Driver, Sandbox, wait_for
from conformance.kit.runner import CaseContext, CaseSkipped, case
from conformance.kit.session import KitFailure

__all__: list[str] = []  # the cases register themselves in runner.CASES

_IRX = "/v1/interregistry"
_OPEN = ("sent", "awaiting_approval")
_NO_DRIVER = (
    "needs the registry's test driver (--driver-url) or its operator at the terminal (--interactive, §11)"
)


def _levers(context: CaseContext) -> tuple[Driver, Sandbox]:
    config = context.config
    if context.state.driver is None:
        raise CaseSkipped(_NO_DRIVER)
    if not config.ir_account or not config.ca_id or config.vintage is None:
        raise CaseSkipped(
            "needs the IR test section's holding account and a cooperative approach both Parties take part in "
            "(--ir-account, --ca-id, --vintage), from the Secretariat"
        )
    return context.state.driver, Sandbox(context.session)


def _range(document: dict[str, Any]) -> tuple[str, str, int]:
    blocks = document.get("blocks") or []
    if not blocks:
        raise KitFailure(f"no blocks in {str(document)[:300]}")
    return (
        str(blocks[0]["unique_id_first"]),
        str(blocks[-1]["unique_id_last"]),
        sum(int(b["quantity"]) for b in blocks),
    )


async def _transfer(context: CaseContext, transfer_id: str) -> dict[str, Any]:
    answer = await context.session.get(f"{_IRX}/transfers/{transfer_id}")
    if answer.status_code != 200:
        raise KitFailure(f"transfer {transfer_id}: {answer.status_code} {answer.text[:300]}")
    document: dict[str, Any] = answer.json()
    return document


async def _final(context: CaseContext, transfer_id: str, seconds: float = 60.0) -> dict[str, Any]:
    """The IR's record once it is final (or as it is after `seconds`)."""

    async def probe() -> dict[str, Any] | None:
        record = await _transfer(context, transfer_id)
        return record if record["status"] not in _OPEN else None

    done, record = await wait_for(probe, seconds=seconds)
    return record if done else await _transfer(context, transfer_id)


def _codes(record: dict[str, Any]) -> list[int]:
    return [int(c["code"]) for c in record.get("codes") or []]


async def _log(
    context: CaseContext, *, transfer_id: str | None = None, kind: str | None = None
) -> list[dict]:
    """Registry → IR messages stored since the case began, optionally of one transfer and type."""
    entries = await context.session.message_log(after=context.log_cursor_at_start)
    return [
        entry
        for entry in entries
        if (kind is None or entry["type"] == kind)
        and (transfer_id is None or (entry["envelope"].get("body") or {}).get("transfer_id") == transfer_id)
    ]


async def _acked(context: CaseContext, position: int | None, seconds: float = 30.0) -> bool:
    """Whether the registry acknowledged its inbox through `position` (an `inbox.ack` in the log)."""
    if position is None:
        return False

    async def probe() -> bool:
        for entry in await context.session.message_log(after=0):
            body = entry["envelope"].get("body") or {}
            ok = entry["type"] == "inbox.ack" and entry.get("response_status") == 200
            if ok and int(body.get("up_to", 0)) >= position:
                return True
        return False

    done, _ = await wait_for(probe, seconds=seconds, interval=0.3)
    return done


async def _units(driver: Driver, first: str, last: str, state: str, held: int | None = None,
                 seconds: float = 15.0) -> dict[str, Any]:  # fmt: skip
    """The driver's view once it shows `state` (and `held` serials), or as it is after `seconds`."""
    if driver.interactive:
        return await driver.units(first, last)  # a person is asked once, when the state should show

    async def probe() -> dict[str, Any] | None:
        seen = await driver.units(first, last)
        ok = seen["state"] == state and (held is None or seen["quantity_held_in_range"] == held)
        return seen if ok else None

    done, seen = await wait_for(probe, seconds=seconds)
    return seen if done else await driver.units(first, last)


def _account(context: CaseContext, role: str) -> str:
    return context.config.registry_accounts[role]


async def _send_out(context: CaseContext, sandbox: Sandbox, to_account: str, quantity: int,
                    **extra: Any) -> dict[str, Any]:  # fmt: skip
    config = context.config
    return await sandbox.outgoing(
        from_account=config.ir_account,
        to_account=to_account,
        quantity=quantity,
        mint={"ca_id": config.ca_id, "vintage": config.vintage},
        **extra,
    )


async def _held_at_registry(
    context: CaseContext, driver: Driver, sandbox: Sandbox
) -> tuple[str, str, int, str]:
    """A range the registry holds that came from the IR (left by 150/157, else sent now): first, last,
    quantity, the transfer id that brought it."""
    noted = context.state.notes.get("held_at_registry")
    if noted is not None:
        first, last, quantity, transfer_id = noted
        seen = await driver.units(first, last)
        if seen["state"] == "held" and seen["quantity_held_in_range"] == quantity:
            return first, last, quantity, transfer_id
    sent = await _send_out(context, sandbox, _account(context, "valid"), 10)
    record = await _final(context, sent["transfer_id"])
    if record["status"] != "completed":
        raise KitFailure(f"setup transfer {sent['transfer_id']} ended {record['status']} {_codes(record)}")
    first, last, quantity = _range(sent)
    await _units(driver, first, last, "held", quantity)
    context.state.notes["held_at_registry"] = (first, last, quantity, sent["transfer_id"])
    return first, last, quantity, sent["transfer_id"]


async def _proposal_blocks(context: CaseContext, transfer_id: str) -> list[dict[str, Any]]:
    """The full blocks of the IR's proposal of `transfer_id`, read from the registry's inbox."""
    for item in await context.session.inbox_pages(after=0, page_size=500):
        message = item["message"]
        if message.get("type") == "transfer.proposal" and message["body"].get("transfer_id") == transfer_id:
            return list(message["body"]["blocks"])
    raise KitFailure(f"no proposal of {transfer_id} in the inbox")


async def _simple_outgoing(context: CaseContext, to_role: str, expect_status: str, expect_code: int | None,
                           label: str) -> dict[str, Any]:  # fmt: skip
    driver, sandbox = _levers(context)
    sent = await _send_out(context, sandbox, _account(context, to_role), 5)
    record = await _final(context, sent["transfer_id"])
    ok = record["status"] == expect_status and (expect_code is None or expect_code in _codes(record))
    context.expect(
        label,
        ok,
        f"{sent['transfer_id']}: {record['status']} codes {_codes(record)}",
        transfer=sent["transfer_id"],
    )
    return {"sent": sent, "record": record, "driver": driver, "sandbox": sandbox}


# ---- IR → registry ---------------------------------------------------------------------------------------------


@case(
    150,
    "outgoing transfer to a valid account",
    mandatory=True,
    rule="registry answers accept within 60 s; IR completed; registry acks transfer.completed",
)
async def outgoing_valid(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    sent = await _send_out(context, sandbox, _account(context, "valid"), 10)
    transfer_id = sent["transfer_id"]
    record = await _final(context, transfer_id, seconds=60.0)
    context.expect(
        "IR completed within 60 s",
        record["status"] == "completed",
        f"{transfer_id}: {record['status']} {_codes(record)}",
    )
    accepts = await _log(context, transfer_id=transfer_id, kind="transfer.response")
    context.expect(
        "the registry's answer is a signed accept",
        [e["envelope"]["body"].get("decision") for e in accepts] == ["accept"],
        f"{[e['envelope']['body'].get('decision') for e in accepts]}",
    )
    context.expect(
        "registry acks transfer.completed",
        await _acked(context, record.get("final_position")),
        f"final_position {record.get('final_position')}",
    )
    first, last, quantity = _range(sent)
    seen = await _units(driver, first, last, "held", quantity)
    context.expect(
        "driver: the units are held once",
        seen == {"state": "held", "quantity_held_in_range": quantity},
        str(seen),
    )
    if record["status"] == "completed":
        context.state.notes["held_at_registry"] = (first, last, quantity, transfer_id)


@case(
    151,
    "outgoing transfer to a non-existent account",
    mandatory=True,
    rule="reject 5902; IR rejected; units back in the IR account",
)
async def outgoing_unknown(context: CaseContext) -> None:
    made = await _simple_outgoing(context, "unknown", "rejected", 5902, "reject 5902 → IR rejected")
    first, last, quantity = _range(made["sent"])
    ir = await made["sandbox"].units(first, last)
    context.expect(
        "units back in the IR account",
        ir["held"] == {context.config.ir_account: quantity},
        str(ir["held"]),
    )
    seen = await made["driver"].units(first, last)
    context.expect("driver: units absent", seen["state"] == "absent", str(seen))
    context.state.notes["held_at_ir"] = made["sent"]["transfer_id"]


@case(152, "outgoing to blocked, closed, policy-refusing accounts", mandatory=True, rule="5903, 5906, 5904")
async def outgoing_refused(context: CaseContext) -> None:
    for role, code in (("blocked", 5903), ("closed", 5906), ("policy", 5904)):
        await _simple_outgoing(context, role, "rejected", code, f"{role} account → {code}")


async def _silent_then_expire(context: CaseContext, driver: Driver, sandbox: Sandbox) -> tuple[dict, dict]:
    await driver.policy("silent")
    sent = await _send_out(context, sandbox, _account(context, "valid"), 5)
    first, last, _ = _range(sent)
    # The registry has read the proposal once its units are pending there (S4); then the deadline passes.
    await _units(driver, first, last, "pending_in")
    record = await sandbox.expire(sent["transfer_id"])
    return sent, record


@case(
    153,
    "registry silent; the kit expires the deadline",
    mandatory=True,
    rule="IR terminated; registry acks transfer.terminated; driver: units absent",
)
async def silent_terminated(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    try:
        sent, record = await _silent_then_expire(context, driver, sandbox)
        context.expect(
            "IR terminated (6001)",
            record["status"] == "terminated" and 6001 in _codes(record),
            f"{record['status']} {_codes(record)}",
        )
        context.expect(
            "registry acks transfer.terminated",
            await _acked(context, record.get("final_position")),
            f"final_position {record.get('final_position')}",
        )
        first, last, _ = _range(sent)
        seen = await _units(driver, first, last, "absent")
        context.expect("driver: units absent", seen["state"] == "absent", str(seen))
        context.state.notes["silent_terminated"] = sent
    finally:
        if "silent_terminated" not in context.state.notes:
            await driver.policy("accept")


async def _late_accept(context: CaseContext, transfer_id: str) -> list[tuple[int, Any]]:
    """The registry's answer to a proposal already final at the IR: (HTTP status, code) of what it sent
    after the policy changed; if it sent nothing (it had already applied F, rightly), the accept a registry
    that missed F would send, sent by the kit (a no-op if the IR is right, as it must be)."""

    async def answered() -> list[dict[str, Any]]:
        return await _log(context, transfer_id=transfer_id, kind="transfer.response")

    done, late = await wait_for(answered, seconds=3)
    if done:
        return [(e["response_status"], (e.get("response_body") or {}).get("code")) for e in late]
    answer, _ = await _as_registry(
        context,
        f"transfers/{transfer_id}/response",
        "transfer.response",
        {"transfer_id": transfer_id, "decision": "accept"},
    )
    body = answer.json() if answer.content else {}
    return [(answer.status_code, body.get("code"))]


@case(154, "registry accepts after termination", mandatory=True, rule="409 6003; driver: units absent")
async def accept_after_termination(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    sent = context.state.notes.pop("silent_terminated", None)
    try:
        if sent is None:
            sent, record = await _silent_then_expire(context, driver, sandbox)
            if record["status"] != "terminated":
                raise KitFailure(f"the setup transfer ended {record['status']}")
        # The held-back proposal is answered now: a late accept, which the IR must refuse with 6003.
        await driver.policy("accept")
        transfer_id = sent["transfer_id"]

        outcome = await _late_accept(context, transfer_id)
        context.expect("the late accept gets 409 6003", outcome == [(409, 6003)], f"{outcome}")
        first, last, _ = _range(sent)
        seen = await _units(driver, first, last, "absent", 0, seconds=5)
        context.expect(
            "driver: units absent", seen == {"state": "absent", "quantity_held_in_range": 0}, str(seen)
        )
    finally:
        await driver.policy("accept")


async def _fault_hits(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list((await sandbox.faults())["hits"])


@case(
    155,
    "duplicate inbox delivery of a proposal",
    mandatory=True,
    rule="one response; driver: range held once",
)
async def duplicate_inbox(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    await sandbox.fault("duplicate_inbox")
    sent = await _send_out(context, sandbox, _account(context, "valid"), 7)
    transfer_id = sent["transfer_id"]
    context.expect(
        "the proposal is in the inbox twice",
        bool(sent.get("duplicated_message_id")),
        str(sent.get("duplicated_message_id")),
    )
    record = await _final(context, transfer_id)
    context.expect("IR completed", record["status"] == "completed", f"{record['status']} {_codes(record)}")
    # Both copies read: the registry acknowledged past the later one (the completion comes after both).
    context.expect(
        "registry read and acknowledged both copies",
        await _acked(context, record.get("final_position")),
        f"final_position {record.get('final_position')}",
    )
    responses = await _log(context, transfer_id=transfer_id, kind="transfer.response")
    context.expect("one response", len(responses) == 1, f"{len(responses)} responses")
    first, last, quantity = _range(sent)
    seen = await _units(driver, first, last, "held", quantity)
    context.expect(
        "driver: range held once", seen == {"state": "held", "quantity_held_in_range": quantity}, str(seen)
    )


async def _retried_completion(context: CaseContext, fault: str, count: int, label: str) -> None:
    driver, sandbox = _levers(context)
    before = {hit["message_id"] for hit in await _fault_hits(sandbox)}
    await sandbox.fault(fault, count, message_type="transfer.response")
    sent = await _send_out(context, sandbox, _account(context, "valid"), 6)
    transfer_id = sent["transfer_id"]
    record = await _final(context, transfer_id)
    context.expect("IR completed", record["status"] == "completed", f"{record['status']} {_codes(record)}")
    first, last, quantity = _range(sent)
    seen = await _units(driver, first, last, "held", quantity, seconds=30)
    context.expect(
        "driver: units held once (one completion)",
        seen == {"state": "held", "quantity_held_in_range": quantity},
        str(seen),
    )

    async def hits() -> list[dict[str, Any]] | None:
        new = [hit for hit in await _fault_hits(sandbox) if hit["message_id"] not in before]
        return new if new and all(hit["posted_again"] >= 1 for hit in new) else None

    done, new = await wait_for(hits, seconds=30)
    faults = await sandbox.faults()
    remaining = sum(item["remaining"] for item in faults["armed"] if item["fault"] == fault)
    context.expect(
        label,
        done and remaining == 0,
        f"fault hits {new}; {remaining} left armed",
    )
    responses = await _log(context, transfer_id=transfer_id, kind="transfer.response")
    # A dropped answer means the IR stored the hit message: the retry must be it. A 503 stored nothing, and a
    # registry may rightly renumber the message after a 1007 (the kit shares its seq), so one stored is enough.
    same = fault != "drop_response" or all(
        hit["message_id"] == responses[0]["message_id"] for hit in new or []
    )
    context.expect(
        "no duplicate effect: one stored response"
        + (", the hit message itself" if fault == "drop_response" else ""),
        len(responses) == 1 and same,
        f"{len(responses)} stored responses",
    )


@case(
    156,
    "dropped response to the registry's accept",
    mandatory=True,
    rule="registry retries the same message; one completion",
)
async def dropped_accept_answer(context: CaseContext) -> None:
    await _retried_completion(context, "drop_response", 1, "the registry retried the same accept")


@case(
    157, "outgoing of units that came from the registry earlier", mandatory=True, rule="accepted as a return"
)
async def outgoing_return(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    first, last, quantity, _ = await _held_at_registry(context, driver, sandbox)
    # The registry sends them to the IR (they came from it), then the IR sends the same serials back.
    back = await driver.propose(
        to_registry=context.config.ir_account_registry,
        to_account=context.config.ir_account,
        blocks=[{"unique_id_first": first, "unique_id_last": last}],
    )
    inbound = await _final(context, back["transfer_id"])
    if inbound["status"] != "completed":
        raise KitFailure(f"the registry's transfer {back['transfer_id']} to the IR ended {inbound['status']}")
    await _units(driver, first, last, "transferred_out", 0)
    context.state.notes.pop("held_at_registry", None)
    sent = await sandbox.outgoing(
        from_account=context.config.ir_account,
        to_account=_account(context, "valid"),
        blocks=[{"unique_id_first": first, "unique_id_last": last}],
    )
    record = await _final(context, sent["transfer_id"])
    context.expect(
        "accepted as a return: IR completed",
        record["status"] == "completed",
        f"{record['status']} {_codes(record)}",
    )
    seen = await _units(driver, first, last, "held", quantity)
    context.expect(
        "driver: held once again", seen == {"state": "held", "quantity_held_in_range": quantity}, str(seen)
    )
    if record["status"] == "completed":
        context.state.notes["held_at_registry"] = (first, last, quantity, sent["transfer_id"])


@case(158, "outgoing of serials the registry currently holds", mandatory=True, rule="reject 4002")
async def outgoing_already_held(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    first, last, quantity, brought_by = await _held_at_registry(context, driver, sandbox)
    forged = await _proposal_blocks(context, brought_by)
    sent = await _send_out(context, sandbox, _account(context, "valid"), quantity, forge_blocks=forged)
    record = await _final(context, sent["transfer_id"])
    context.expect(
        "reject 4002",
        record["status"] == "rejected" and 4002 in _codes(record),
        f"{record['status']} {_codes(record)}",
    )
    seen = await driver.units(first, last)
    context.expect(
        "driver: the range is still held once",
        seen == {"state": "held", "quantity_held_in_range": quantity},
        str(seen),
    )


@case(
    159,
    "IR initiator cancels while sent",
    mandatory=False,
    rule="registry drops pending_in; late accept → 6003",
)
async def cancelled_while_sent(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    await driver.policy("silent")
    try:
        sent = await _send_out(context, sandbox, _account(context, "valid"), 4)
        first, last, _ = _range(sent)
        await _units(driver, first, last, "pending_in")
        answer = await sandbox.cancel(sent["transfer_id"])
        if answer.status_code != 200:
            raise KitFailure(f"sandbox cancel: {answer.status_code} {answer.text[:300]}")
        record = answer.json()
        context.expect(
            "IR cancelled (6002)", record["status"] == "cancelled", f"{record['status']} {_codes(record)}"
        )
        context.expect(
            "registry acks transfer.cancelled", await _acked(context, record.get("final_position")), ""
        )
        seen = await _units(driver, first, last, "absent")
        context.expect("registry dropped pending_in", seen["state"] == "absent", str(seen))
        await driver.policy("accept")

        outcome = await _late_accept(context, sent["transfer_id"])
        context.expect("late accept → 409 6003", outcome == [(409, 6003)], f"{outcome}")
    finally:
        await driver.policy("accept")


# ---- registry → IR ---------------------------------------------------------------------------------------------


async def _own_units(context: CaseContext, driver: Driver, quantity: int) -> tuple[str, str] | None:
    """Units of the registry's own origin, never seen by the IR (the simulator's `issue`); None if the
    driver cannot make them."""
    made = await driver.optional(
        "issue", ca_id=context.config.ca_id, vintage=context.config.vintage, quantity=quantity
    )
    if made is None:
        return None
    return str(made["unique_id_first"]), str(made["unique_id_last"])


async def _needed_own_units(context: CaseContext, driver: Driver, quantity: int) -> tuple[str, str]:
    """`_own_units` for a case that cannot run without them: skipped when the driver cannot make them."""
    own = await _own_units(context, driver, quantity)
    if own is None:
        raise CaseSkipped(
            "the driver cannot make units of the registry's own origin (no /conformance/v1/issue)"
        )
    return own


@case(
    160,
    "registry proposes never-seen units into an IR holding account",
    mandatory=True,
    rule="201 completed; IR T3 Acquisition event in the feed",
)
async def incoming_never_seen(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    first, last = await _needed_own_units(context, driver, 8)
    made = await driver.propose(
        to_registry=context.config.ir_account_registry,
        to_account=context.config.ir_account,
        blocks=[{"unique_id_first": first, "unique_id_last": last}],
    )
    record = await _final(context, made["transfer_id"])
    context.expect("201 completed", record["status"] == "completed", f"{record['status']} {_codes(record)}")
    proposals = await _log(context, transfer_id=made["transfer_id"], kind="transfer.proposal")
    context.expect(
        "the IR answered 201",
        [e["response_status"] for e in proposals] == [201],
        f"{[e['response_status'] for e in proposals]}",
    )
    actions = await sandbox.actions(made["transfer_id"])
    rows = [
        (a.get("party"), a.get("action_type"), a.get("transferring_party_id")) for a in actions["actions"]
    ]
    acquiring = context.config.ir_account_registry[:3]
    context.expect(
        "IR T3 Acquisition for the receiving Party, from the registry's Party",
        (acquiring, "Acquisition", context.config.party) in rows,
        f"{rows}",
    )
    ir = await sandbox.units(first, last)
    context.expect("held in the IR account", ir["held"] == {context.config.ir_account: 8}, str(ir["held"]))


@case(161, "registry sends back units received in 150", mandatory=True, rule="201; IR block back to held")
async def incoming_return(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    first, last, quantity, _ = await _held_at_registry(context, driver, sandbox)
    made = await driver.propose(
        to_registry=context.config.ir_account_registry,
        to_account=context.config.ir_account,
        blocks=[{"unique_id_first": first, "unique_id_last": last}],
    )
    record = await _final(context, made["transfer_id"])
    context.expect("201 completed", record["status"] == "completed", f"{record['status']} {_codes(record)}")
    context.state.notes.pop("held_at_registry", None)
    ir = await sandbox.units(first, last)
    context.expect(
        "IR block back to held", ir["held"] == {context.config.ir_account: quantity}, str(ir["blocks"])[:300]
    )
    seen = await _units(driver, first, last, "transferred_out", 0)
    context.expect("driver: transferred_out", seen["state"] == "transferred_out", str(seen))


def _own_block(context: CaseContext, first: int, quantity: int, **changes: Any) -> dict[str, Any]:
    """A block of the registry's own origin (never seen by the IR), as §5 spells a block."""
    config = context.config
    vintage = config.vintage or datetime.now(UTC).year
    ca_id = changes.get("ca_id", config.ca_id)  # another CA (5905) keeps the unique ids well formed
    ident = f"{ca_id}-{config.registry_id}-{config.party}"
    block: dict[str, Any] = {
        "unique_id_first": f"{ident}-{first}-{vintage}",
        "unique_id_last": f"{ident}-{first + quantity - 1}-{vintage}",
        "ca_id": ca_id,
        "origin_registry_id": config.registry_id,
        "first_transferring_party": config.party,
        "first": first,
        "last": first + quantity - 1,
        "quantity": quantity,
        "vintage": vintage,
        "metric": "GHG",
        "applicable_gwp_values": "AR5",
        "mitigation_type": "Emission reductions",
        "sector": "Energy generation",
        "activity_type": "Solar",
        "authorization_id": f"{config.party}-AUTH-1",
        "authorization_version": 1,
        "purposes": "NDC and OIMP",
        "authorized_parties": None,
        "first_transfer_definition": "First international transfer",
        "first_transferred": True,
        "underlying": None,
    }
    block.update(changes)
    return block


def _proposal(context: CaseContext, blocks: list[dict[str, Any]], *, to_account: str | None = None,
              transfer_id: str | None = None, quantity: int | None = None,
              to_registry: str | None = None) -> dict[str, Any]:  # fmt: skip
    config = context.config
    to_registry = to_registry or config.ir_account_registry
    return {
        "transfer_id": transfer_id or f"{config.registry_id}-CONF-{uuid.uuid4().hex[:16]}",
        "sender_action": "transfer",
        "transferring_party": config.party,
        "from_registry": config.registry_id,
        "from_account": _account(context, "valid"),
        "acquiring_party": to_registry[:3],
        "to_registry": to_registry,
        "to_account": to_account or config.ir_account,
        "quantity": quantity if quantity is not None else sum(int(b["quantity"]) for b in blocks),
        "blocks": blocks,
    }


async def _as_registry(context: CaseContext, path: str, message_type: str, body: dict[str, Any],
                       document: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Send one message as the registry; a 1007 (the registry process sent meanwhile) is resumed once."""
    session = context.session
    await session.sync()
    document = document or session.envelope(message_type, body)
    answer = await session.post(path, document)
    if answer.status_code == 409 and (answer.json() or {}).get("code") == 1007:
        context.provoked.add(1007)
        await session.sync()
        document = session.envelope(message_type, body)
        answer = await session.post(path, document)
    return answer, document


def _rejected_with(answer: Any) -> list[int]:
    try:
        return [int(c["code"]) for c in answer.json().get("codes") or []]
    except (ValueError, AttributeError, KeyError, TypeError):
        return []


@case(
    162,
    "incoming proposals that must be rejected",
    mandatory=True,
    rule="5902, 5903, 5906, 5905, 2001, 2003, 2004, 4002, 4004, 4005",
)
async def incoming_rejections(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    config = context.config
    base = 900_000_000 + secrets.randbelow(10_000_000) * 10
    tries: list[tuple[str, int, dict[str, Any]]] = [
        ("unknown IR account", 5902, _proposal(context, [_own_block(context, base, 3)], to_account=f"{config.ir_account}X")),
        ("malformed unique id", 2001, _proposal(context, [_own_block(context, base, 3, unique_id_first="XX-" + config.registry_id)])),
        ("quantity mismatch", 2003, _proposal(context, [_own_block(context, base, 3)], quantity=4)),
        ("overlap", 2004, _proposal(context, [_own_block(context, base, 3), _own_block(context, base + 1, 3)])),
    ]  # fmt: skip
    for role, code in (("ir_blocked", 5903), ("ir_closed", 5906)):
        account = config.ir_accounts.get(role)
        if account:
            tries.append(
                (
                    f"{role} account",
                    code,
                    _proposal(context, [_own_block(context, base, 3)], to_account=account),
                )
            )
        else:
            context.skip(
                f"{role} account → {code}",
                f"give --ir-account-{role.removeprefix('ir_')} (an IR account of that kind)",
            )
    if config.ca_non_participant:
        tries.append(("CA the Parties do not take part in", 5905,
                      _proposal(context, [_own_block(context, base, 3, ca_id=config.ca_non_participant)])))  # fmt: skip
    else:
        context.skip(
            "CA non-participant → 5905", "give --ca-non-participant (a CA one Party does not take part in)"
        )
    held_at_ir = context.state.notes.get("held_at_ir")
    if held_at_ir:
        tries.append(
            ("units already in the IR", 4002, _proposal(context, await _proposal_blocks(context, held_at_ir)))
        )
    else:
        context.skip("units already in the IR → 4002", "needs the units case 151 left in the IR account")
    sunk = await sandbox.sink(from_account=config.ir_account, quantity=3,
                              mint={"ca_id": config.ca_id, "vintage": config.vintage})  # fmt: skip
    if sunk is None:
        context.skip(
            "units last sent elsewhere → 4004",
            "the IR's sandbox has no sink registry (POST …/sandbox/sink) to send units elsewhere first",
        )
    else:
        tries.append(("units last sent elsewhere", 4004, _proposal(context, list(sunk["blocks"]))))
    try:
        _first, _last, _q, brought_by = await _held_at_registry(context, driver, sandbox)
        changed = [dict(b, sector="Changed sector") for b in await _proposal_blocks(context, brought_by)]
        tries.append(("invariants changed", 4005, _proposal(context, changed)))
    except KitFailure as exc:
        context.skip("invariants changed → 4005", str(exc))
    for label, code, body in tries:
        answer, _ = await _as_registry(context, "transfers", "transfer.proposal", body)
        got = _rejected_with(answer)
        context.expect(
            f"{label} → {code}", answer.status_code == 422 and code in got, f"{answer.status_code} {got}"
        )


@case(
    163, "same proposal twice; same transfer_id, other content", mandatory=True, rule="identical answer; 4007"
)
async def incoming_replays(context: CaseContext) -> None:
    _levers(context)
    config = context.config
    base = 910_000_000 + secrets.randbelow(10_000_000) * 10
    body = _proposal(context, [_own_block(context, base, 2)], to_account=f"{config.ir_account}X")
    first, _ = await _as_registry(context, "transfers", "transfer.proposal", body)
    again, _ = await _as_registry(context, "transfers", "transfer.proposal", body)
    context.expect(
        "the same proposal (new message) gets the identical answer",
        first.status_code == again.status_code and first.json() == again.json(),
        f"{first.status_code} / {again.status_code}",
    )
    other = dict(body, blocks=[_own_block(context, base, 3)], quantity=3)
    answer, _ = await _as_registry(context, "transfers", "transfer.proposal", other)
    context.expect("same transfer_id, other content → 4007", 4007 in _rejected_with(answer) or
                   (answer.json() or {}).get("code") == 4007, f"{answer.status_code} {answer.text[:200]}")  # fmt: skip


@case(
    164,
    "dropped response to a proposal",
    mandatory=True,
    rule="retry → same 201; one acquisition; driver: units transferred_out",
)
async def dropped_proposal_answer(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    first, last = await _needed_own_units(context, driver, 9)
    before = {hit["message_id"] for hit in await _fault_hits(sandbox)}
    await sandbox.fault("drop_response", 1, message_type="transfer.proposal")
    made = await driver.propose(
        to_registry=context.config.ir_account_registry,
        to_account=context.config.ir_account,
        blocks=[{"unique_id_first": first, "unique_id_last": last}],
    )
    record = await _final(context, made["transfer_id"])
    context.expect("IR completed", record["status"] == "completed", f"{record['status']} {_codes(record)}")
    proposals = await _log(context, transfer_id=made["transfer_id"], kind="transfer.proposal")
    context.expect(
        "one acquisition (one stored proposal, 201)",
        [e["response_status"] for e in proposals] == [201],
        f"{[e['response_status'] for e in proposals]}",
    )

    async def retried() -> list[dict[str, Any]] | None:
        new = [hit for hit in await _fault_hits(sandbox) if hit["message_id"] not in before]
        return new if new and all(hit["posted_again"] >= 1 for hit in new) else None

    done, new = await wait_for(retried, seconds=30)
    context.expect("retry of the same message → the same 201", done, f"fault hits {new}")
    seen = await _units(driver, first, last, "transferred_out", 0)
    context.expect(
        "driver: units transferred_out",
        seen == {"state": "transferred_out", "quantity_held_in_range": 0},
        str(seen),
    )


@case(
    165,
    "cancel before decision; cancel of an unknown id then propose it",
    mandatory=False,
    rule="cancelled; tombstone; 6002",
)
async def incoming_cancel(context: CaseContext) -> None:
    _levers(context)
    manual = context.config.ir_accounts.get("ir_manual")
    if manual is None:
        context.skip(
            "cancel before decision",
            "needs an IR account whose section accepts incoming transfers manually: give --ir-account-manual",
        )
    else:
        await _cancel_before_decision(context, manual)
    transfer_id = f"{context.config.registry_id}-CONF-{uuid.uuid4().hex[:16]}"
    answer, _ = await _as_registry(
        context, f"transfers/{transfer_id}/cancel", "transfer.cancel", {"transfer_id": transfer_id}
    )
    context.expect(
        "cancel of an unknown id → cancelled tombstone",
        answer.status_code == 200 and answer.json().get("status") == "cancelled",
        f"{answer.status_code} {answer.text[:200]}",
    )
    base = 920_000_000 + secrets.randbelow(10_000_000) * 10
    body = _proposal(context, [_own_block(context, base, 2)], transfer_id=transfer_id)
    answer, _ = await _as_registry(context, "transfers", "transfer.proposal", body)
    context.expect(
        "the tombstoned id proposed → 6002",
        6002 in _rejected_with(answer) or (answer.json() or {}).get("code") in (6002, 6003),
        f"{answer.status_code} {answer.text[:200]}",
    )


async def _cancel_before_decision(context: CaseContext, account: str) -> None:
    """The registry proposes to a manual-acceptance section (202 `awaiting_approval`, nobody decides), then
    cancels: the IR answers `cancelled`, its record says so, and the cancel again is after the decision
    (§6: 409 6003 with F = `cancelled`)."""
    transfer_id = f"{context.config.registry_id}-CONF-{uuid.uuid4().hex[:16]}"
    base = 930_000_000 + secrets.randbelow(10_000_000) * 10
    body = _proposal(
        context, [_own_block(context, base, 2)], to_account=account, transfer_id=transfer_id,
        to_registry=account.split("-", 1)[0],
    )  # fmt: skip
    answer, _ = await _as_registry(context, "transfers", "transfer.proposal", body)
    waiting = answer.status_code == 202 and (answer.json() or {}).get("status") == "awaiting_approval"
    context.expect(
        "proposal to a manual-acceptance section → 202 awaiting_approval",
        waiting,
        f"{answer.status_code} {answer.text[:200]}",
    )
    if not waiting:
        return
    cancel = {"transfer_id": transfer_id}
    answer, _ = await _as_registry(context, f"transfers/{transfer_id}/cancel", "transfer.cancel", cancel)
    context.expect(
        "cancel before the decision → cancelled",
        answer.status_code == 200 and (answer.json() or {}).get("status") == "cancelled",
        f"{answer.status_code} {answer.text[:200]}",
    )
    record = await _transfer(context, transfer_id)
    context.expect("the IR's record: cancelled", record.get("status") == "cancelled", str(record)[:300])
    again, _ = await _as_registry(context, f"transfers/{transfer_id}/cancel", "transfer.cancel", cancel)
    final = again.json() or {}
    context.expect(
        "the cancel again → 409 6003 with F = cancelled",
        again.status_code == 409
        and final.get("code") == 6003
        and final.get("transfer_status") == "cancelled",
        f"{again.status_code} {again.text[:200]}",
    )


# ---- resilience ------------------------------------------------------------------------------------------------


@case(
    170,
    "IR answers 503 five times",
    mandatory=True,
    rule="registry backs off and retries; no duplicate effect",
)
async def http_503(context: CaseContext) -> None:
    await _retried_completion(context, "http_503", 5, "the registry retried through five 503s")


@case(
    171,
    "registry restarted between its accept and the completion",
    mandatory=True,
    rule="registry applies transfer.completed after restart",
)
async def restart(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    command = context.config.restart_command
    if not command and not driver.interactive:
        raise CaseSkipped(
            "needs the operator to restart the registry between its accept and the IR's completion: give "
            "--restart-command, or run with --interactive (the driver has no restart action)"
        )
    # Every answer to the registry's accept is lost until the restart: the IR completes, the registry cannot
    # have learned it from the answer, so it must apply `transfer.completed` after it comes back.
    await sandbox.fault("drop_response", 1000, message_type="transfer.response")
    try:
        sent = await _send_out(context, sandbox, _account(context, "valid"), 4)
        record = await _final(context, sent["transfer_id"])
        if record["status"] != "completed":
            raise KitFailure(
                f"{sent['transfer_id']} ended {record['status']} {_codes(record)} before the restart"
            )
        if not command:
            await context.state.driver.restart()  # the operator restarts it (OperatorDriver)
        else:
            process = await asyncio.create_subprocess_shell(
                command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
            if process.returncode != 0:
                raise KitFailure(f"the restart command exited {process.returncode}: {output.decode()[-300:]}")
    finally:
        await sandbox.fault("drop_response", 0)
    first, last, quantity = _range(sent)
    seen = await _units(driver, first, last, "held", quantity, seconds=30)
    context.expect(
        "after the restart the registry applied transfer.completed",
        seen == {"state": "held", "quantity_held_in_range": quantity},
        str(seen),
    )
    context.expect(
        "and acknowledged it",
        await _acked(context, record.get("final_position")),
        f"{record.get('final_position')}",
    )


@case(
    172,
    "registry resets its seq (restore drill)",
    mandatory=True,
    rule="1007, then hello, then continues above last_seq_received",
)
async def restore_drill(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    before = int((await context.session.sync())["last_seq_received"])
    if await driver.optional("restore-drill") is None:
        raise CaseSkipped("the driver has no restore drill (/conformance/v1/restore-drill)")
    # The registry's next message (its accept) carries a seq from its restored state: the IR says 1007; a
    # conforming registry says hello and sends it again above last_seq_received.
    sent = await _send_out(context, sandbox, _account(context, "valid"), 3)
    record = await _final(context, sent["transfer_id"], seconds=30)
    context.expect(
        "the registry continued: IR completed",
        record["status"] == "completed",
        f"{record['status']} {_codes(record)}",
    )
    responses = await _log(context, transfer_id=sent["transfer_id"], kind="transfer.response")
    seqs = [int(e["seq"]) for e in responses]
    context.expect(
        "its accept was stored with a seq above the last one before the drill",
        len(seqs) == 1 and seqs[0] > before,
        f"seq {seqs}, last_seq_received before {before}",
    )
    hellos = [
        e
        for e in await _log(context, kind="hello")
        if e["envelope"]["body"]["software"]["name"] != "a62-conformance-kit"
    ]
    context.expect(
        "the registry said hello after the refusal", bool(hellos), f"{len(hellos)} hellos of the registry"
    )
    if record["status"] in _OPEN:
        await sandbox.expire(sent["transfer_id"])  # leave nothing open for the next case
