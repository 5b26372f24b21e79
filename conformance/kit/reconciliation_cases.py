"""The reconciliation cases of INTERREGISTRY §11 (300–304), each with its pass rule, against the IR's §8
reconciliation and the registry's own answers.

The registry answers every stage by itself, from its own ledger, as it reads its inbox; the kit only starts
runs, reads them (`GET /v1/interregistry/reconciliations/{id}`, the registry's own), and plays the IR's and the
Secretariat's part through the sandbox levers (`/v1/interregistry/sandbox/reconciliations`: start as the IR,
expire the awaited stage, resolve by hand). What the registry must do on request — stay silent on a
transfer (303) or on reconciliation (301, 304), lose a record (302) — goes through its test driver, or the
operator at the terminal.

Case 302 wants a transfer the IR completed and the registry does not know. With the simulator's `forget`
(the registry loses its record of a completed return, as a restore that lost a row) the range is held at the
IR, so the freeze is also tried by a use (4006), and the record is put back after the resolution so later
reconciliations come clean. Otherwise the IR's fault `phantom_transfer` makes one (its units are
`transferred_out` at the IR, so no use can be tried there).

Every reconciliation a case starts is left closed: one still open when the case ends (the registry never
answered) is expired or resolved through the sandbox, so the next case can start one (7004 otherwise).
"""

import re
from typing import Any

from conformance.kit.driver import Sandbox, wait_for
from conformance.kit.runner import CaseContext, CaseSkipped, case
from conformance.kit.session import KitFailure
from conformance.kit.transfer_cases import (
    _account,
    _acked,
    _as_registry,
    _final,
    _own_units,
    _range,
    _send_out,
    _units,
)

__all__: list[str] = []  # the cases register themselves in runner.CASES

_REC = "/v1/interregistry/reconciliations"
_OPEN = frozenset({"initiated", "totals_inconsistent", "blocks_inconsistent"})
_FROZEN = re.compile(r"(\d+) block rows frozen")
_NO_REGISTRY_SIDE = (
    "needs the registry's test driver (--driver-url) or its operator at the terminal (--interactive, §11): "
    "the registry must be running and answer, or stay silent when told"
)


def _levers(context: CaseContext, *, section: bool = False) -> tuple[Any, Sandbox]:
    config = context.config
    if context.state.driver is None:
        raise CaseSkipped(_NO_REGISTRY_SIDE)
    if section and (not config.ir_account or not config.ca_id or config.vintage is None):
        raise CaseSkipped(
            "needs the IR test section's holding account and a cooperative approach both Parties take part in "
            "(--ir-account, --ca-id, --vintage), from the Secretariat"
        )
    return context.state.driver, Sandbox(context.session)


async def _view(context: CaseContext, reconciliation_id: str) -> dict[str, Any]:
    answer = await context.session.get(f"{_REC}/{reconciliation_id}")
    if answer.status_code != 200:
        raise KitFailure(f"reconciliation {reconciliation_id}: {answer.status_code} {answer.text[:300]}")
    document: dict[str, Any] = answer.json()
    return document


async def _until(
    context: CaseContext, reconciliation_id: str, *, closed: bool, seconds: float = 60.0
) -> dict:
    """The run once it is closed (`closed`), or once nothing is awaited of the registry; or as it is then."""

    async def probe() -> dict[str, Any] | None:
        view = await _view(context, reconciliation_id)
        if view["status"] not in _OPEN:
            return view
        return view if not closed and view.get("stage") is None else None

    done, view = await wait_for(probe, seconds=seconds, interval=0.3)
    return view if done else await _view(context, reconciliation_id)


def _codes(view: dict[str, Any]) -> list[int]:
    return [int(code["code"]) for code in view.get("codes") or []]


async def _leave_closed(context: CaseContext, sandbox: Sandbox, reconciliation_id: str | None) -> None:
    """Close a run the case leaves open (the registry did not answer): the next case must be able to start."""
    if reconciliation_id is None:
        return
    view = await _view(context, reconciliation_id)
    if view["status"] not in _OPEN:
        return
    if view.get("stage") is not None:
        view = await sandbox.expire_reconciliation(reconciliation_id)
    if view["status"] in _OPEN or view["status"] == "failed":
        await sandbox.resolve_reconciliation(
            reconciliation_id, "closed by the conformance kit after a failed case"
        )


@case(300, "IR-initiated reconciliation after 150–164", mandatory=True, rule="completed, totals equal")
async def ir_initiated(context: CaseContext) -> None:
    _driver, sandbox = _levers(context)
    started = await sandbox.start_reconciliation()
    reconciliation_id = started["reconciliation_id"]
    try:
        view = await _until(context, reconciliation_id, closed=True)
        context.expect(
            "the registry answered: completed",
            view["status"] == "completed",
            f"{reconciliation_id}: {view['status']} {_codes(view)}",
        )
        totals = view.get("totals") or []
        context.expect(
            "totals equal, key by key, and the final counts and open sets",
            bool(totals) and all(item["consistent"] for item in totals),
            f"{[(item.get('ir'), item.get('registry')) for item in totals if not item['consistent']][:5]}",
        )
    finally:
        await _leave_closed(context, sandbox, reconciliation_id)


@case(301, "registry starts a reconciliation; a second while open", mandatory=True, rule="201; 7004")
async def registry_initiated(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    registry_id = context.config.registry_id
    # Held open (the registry told to stay silent) so the second start meets it whatever the registry's speed.
    held = await driver.reconciliation_policy(False)
    reconciliation_id: str | None = None
    try:
        first, _ = await _as_registry(
            context, "reconciliations", "reconciliation.start", {"registry_id": registry_id}
        )
        body = first.json() if first.content else {}
        if context.expect(
            "the registry's start → 201", first.status_code == 201, f"{first.status_code} {body}"
        ):
            reconciliation_id = str(body["reconciliation_id"])
            context.session.note("reconciliations", reconciliation_id)
        second, _ = await _as_registry(
            context, "reconciliations", "reconciliation.start", {"registry_id": registry_id}
        )
        code = (second.json() if second.content else {}).get("code")
        context.expect(
            "a second start while one is open → 409 7004",
            second.status_code == 409 and code == 7004,
            f"{second.status_code} code {code}",
        )
    finally:
        if held:
            await driver.reconciliation_policy(True)
    if reconciliation_id is None:
        return
    try:
        view = await _until(context, reconciliation_id, closed=True)
        context.expect(
            "the registry answered its own reconciliation: completed",
            view["status"] == "completed",
            f"{view['status']} {_codes(view)}",
        )
    finally:
        await _leave_closed(context, sandbox, reconciliation_id)


async def _forgotten_return(context: CaseContext, driver: Any) -> tuple[str, str, str] | None:
    """A completed return into the IR account whose record the registry then loses (simulator `forget`):
    (transfer id, first, last); None when the driver cannot."""
    if driver.interactive:
        return None
    own = await _own_units(context, driver, 6)
    if own is None:
        return None
    first, last = own
    made = await driver.propose(
        to_registry=context.config.ir_account_registry,
        to_account=context.config.ir_account,
        blocks=[{"unique_id_first": first, "unique_id_last": last}],
    )
    record = await _final(context, made["transfer_id"])
    if record["status"] != "completed":
        raise KitFailure(f"the setup transfer {made['transfer_id']} ended {record['status']}")
    # Forgotten only once the registry applied the IR's final status: a later read of it would rebuild the row.
    await _units(driver, first, last, "transferred_out", 0)
    await _acked(context, record.get("final_position"))
    if await driver.optional("forget", transfer_id=made["transfer_id"]) is None:
        return None
    return str(made["transfer_id"]), first, last


@case(
    302,
    "phantom transfer found by reconciliation",
    mandatory=True,
    rule="totals_inconsistent → blocks_inconsistent, ranges frozen (4006 on use), audit trail answered, "
    "manual resolve → completed_with_manual_intervention",
)
async def phantom_found(context: CaseContext) -> None:
    driver, sandbox = _levers(context, section=True)
    config = context.config
    forgotten = await _forgotten_return(context, driver)
    if forgotten is not None:
        subject = forgotten[0]
    else:
        phantoms = await sandbox.phantom(
            from_account=config.ir_account,
            to_account=_account(context, "valid"),
            quantity=5,
            mint={"ca_id": config.ca_id, "vintage": config.vintage},
        )
        if not phantoms:
            raise KitFailure("the sandbox made no phantom transfer")
        subject = phantoms[0]
    reconciliation_id: str | None = None
    try:
        reconciliation_id = (await sandbox.start_reconciliation())["reconciliation_id"]
        view = await _until(context, reconciliation_id, closed=False)
        codes = _codes(view)
        if forgotten is None and view["status"] == "completed" and not codes:
            # Both sides agreed without the phantom: the IR's own pair ledger left it out (it has no inbox
            # position), which says nothing about the registry. Not a pass, not the registry's fail.
            raise CaseSkipped(
                f"the IR's reconciliation did not see its own phantom transfer {subject} (a phantom has no "
                "inbox position, so §8's cut-off excludes it at the IR): needs the IR fixed, or a driver with "
                "`forget`"
            )
        context.expect("totals_inconsistent (7001)", 7001 in codes, f"{view['status']} {codes}")
        ranges = [
            item for item in view.get("inconsistent_ranges") or [] if item.get("transfer_id") == subject
        ]
        context.expect(
            "blocks_inconsistent (7002) naming the transfer's range",
            view["status"] == "blocks_inconsistent" and 7002 in codes and bool(ranges),
            f"{view['status']} {codes} ranges {view.get('inconsistent_ranges')}",
        )
        frozen = sum(
            int(found.group(1))
            for item in view.get("items") or []
            if item.get("kind") == "range" and (found := _FROZEN.search(str(item.get("note") or "")))
        )
        context.expect("the range is frozen at the IR", frozen > 0, f"{frozen} block rows frozen")
        if forgotten is not None:
            _, first, last = forgotten
            used = await sandbox.outgoing_answer(
                from_account=config.ir_account,
                to_account=_account(context, "valid"),
                blocks=[{"unique_id_first": first, "unique_id_last": last}],
            )
            checks = [str(c.get("code")) for c in (used.json().get("checks") or [])] if used.content else []
            context.expect(
                "a use of the frozen range → 4006",
                used.status_code == 422 and "4006" in checks,
                f"{used.status_code} {checks}",
            )
        else:
            context.skip(
                "a use of the frozen range → 4006",
                "the phantom's units are transferred_out at the IR: nothing there can use them",
            )
        answered = [
            entry
            for entry in await context.session.message_log(after=context.log_cursor_at_start)
            if entry["type"] == "reconciliation.audit_trail"
            and (entry["envelope"].get("body") or {}).get("reconciliation_id") == reconciliation_id
        ]
        context.expect(
            "the registry answered the audit trail",
            [entry.get("response_status") for entry in answered][-1:] == [200],
            f"{[entry.get('response_status') for entry in answered]}",
        )
        resolved = await sandbox.resolve_reconciliation(
            reconciliation_id, "conformance 302: the registry re-applies the transfer from its inbox"
        )
        context.expect(
            "manual resolve → completed_with_manual_intervention",
            resolved["status"] == "completed_with_manual_intervention",
            resolved["status"],
        )
    finally:
        if forgotten is not None:
            await driver.optional("remember", transfer_id=forgotten[0])
        if reconciliation_id is not None:
            await _leave_closed(context, sandbox, reconciliation_id)


@case(
    303,
    "reconciliation while a transfer is open",
    mandatory=True,
    rule="open transfer excluded on both sides; completed",
)
async def open_at_cutoff(context: CaseContext) -> None:
    driver, sandbox = _levers(context, section=True)
    reconciliation_id: str | None = None
    await driver.policy("silent")
    try:
        sent = await _send_out(context, sandbox, _account(context, "valid"), 3)
        transfer_id = sent["transfer_id"]
        first, last, _ = _range(sent)
        # Open on both sides at the cut-off: the registry has read the proposal (pending_in), not answered.
        await _units(driver, first, last, "pending_in")
        reconciliation_id = (await sandbox.start_reconciliation())["reconciliation_id"]
        view = await _until(context, reconciliation_id, closed=True)
        context.expect("completed", view["status"] == "completed", f"{view['status']} {_codes(view)}")
        counts = [item for item in view.get("totals") or [] if item.get("note")]
        sides = [(item.get("ir") or {}, item.get("registry") or {}) for item in counts]
        context.expect(
            "the open transfer is in the open set on both sides, not in the totals",
            any(transfer_id in ir.get("open_transfers", []) and transfer_id in theirs.get("open_transfers", [])
                for ir, theirs in sides),
            f"{sides}",
        )  # fmt: skip
    finally:
        await driver.policy("accept")
        await _leave_closed(context, sandbox, reconciliation_id)
    record = await _final(context, transfer_id)
    context.expect(
        "decided after the cut-off: completed", record["status"] == "completed", f"{record['status']}"
    )


@case(304, "registry silent during a stage", mandatory=False, rule="failed (7006)")
async def silent_stage(context: CaseContext) -> None:
    driver, sandbox = _levers(context)
    if not await driver.reconciliation_policy(False):
        raise CaseSkipped(
            "the driver cannot keep the registry from answering reconciliation requests "
            "(no /conformance/v1/reconciliation-policy) and no operator was asked"
        )
    reconciliation_id: str | None = None
    try:
        reconciliation_id = (await sandbox.start_reconciliation())["reconciliation_id"]
        # The stage's deadline (1 h) passes at once through the sandbox; the registry has said nothing.
        view = await sandbox.expire_reconciliation(reconciliation_id)
        context.expect(
            "failed (7006)",
            view["status"] == "failed" and 7006 in _codes(view),
            f"{view['status']} {_codes(view)}",
        )
    finally:
        await driver.reconciliation_policy(True)
        await _leave_closed(context, sandbox, reconciliation_id)
