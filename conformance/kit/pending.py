"""The §11 cases that need what the IR does not serve yet: registered with their numbers, titles, `M` flags
and pass rules so that the report lists them as `not-implemented` — a run can never look complete without
them. Each moves to `cases.py` when its prerequisite lands (transfers through the sandbox-only endpoints and
the registry's test driver; reconciliation; webhooks).
"""

from conformance.kit.runner import pending

__all__: list[str] = []

_TRANSFERS = "transfers driven through the sandbox-only endpoints (/v1/interregistry/sandbox/…) and the registry's test driver"
_FAULTS = "transfers plus the sandbox fault endpoint (/v1/interregistry/sandbox/faults)"
_RECONCILIATION = "reconciliation (§8)"
_WEBHOOKS = "webhooks registered by the registry's Party (§9)"

for number, title, mandatory, rule, needs in (
    (150, "outgoing transfer to a valid account", True,
     "registry answers accept within 60 s; IR completed; registry acks transfer.completed", _TRANSFERS),
    (151, "outgoing transfer to a non-existent account", True,
     "reject 5902; IR rejected; units back in the IR account", _TRANSFERS),
    (152, "outgoing to blocked, closed, policy-refusing accounts", True, "5903, 5906, 5904", _TRANSFERS),
    (153, "registry silent; the kit expires the deadline", True,
     "IR terminated; registry acks transfer.terminated; driver: units absent", _TRANSFERS),
    (154, "registry accepts after termination", True, "409 6003; driver: units absent", _TRANSFERS),
    (155, "duplicate inbox delivery of a proposal", True, "one response; driver: range held once", _FAULTS),
    (156, "dropped response to the registry's accept", True, "registry retries the same message; one completion", _FAULTS),
    (157, "outgoing of units that came from the registry earlier", True, "accepted as a return", _TRANSFERS),
    (158, "outgoing of serials the registry currently holds", True, "reject 4002", _TRANSFERS),
    (159, "IR initiator cancels while sent", False, "registry drops pending_in; late accept → 6003", _TRANSFERS),
    (160, "registry proposes never-seen units into an IR holding account", True,
     "201 completed; IR T3 Acquisition event in the feed", _TRANSFERS),
    (161, "registry sends back units received in 150", True, "201; IR block back to held", _TRANSFERS),
    (162, "incoming proposals that must be rejected", True,
     "5902, 5903, 5906, 5905, 2001, 2003, 2004, 4002, 4004, 4005", _TRANSFERS),
    (163, "same proposal twice; same transfer_id, other content", True, "identical answer; 4007", _TRANSFERS),
    (164, "dropped response to a proposal", True,
     "retry → same 201; one acquisition; driver: units transferred_out", _FAULTS),
    (165, "cancel before decision; cancel of an unknown id then propose it", False,
     "cancelled; tombstone; 6002", _TRANSFERS),
    (170, "IR answers 503 five times", True, "registry backs off and retries; no duplicate effect", _FAULTS),
    (171, "registry restarted between its accept and the completion", True,
     "registry applies transfer.completed after restart", _TRANSFERS),
    (172, "registry resets its seq (restore drill)", True,
     "1007, then hello, then continues above last_seq_received", _TRANSFERS),
    (300, "IR-initiated reconciliation after 150–164", True, "completed, totals equal", _RECONCILIATION),
    (301, "registry starts a reconciliation; a second while open", True, "201; 7004", _RECONCILIATION),
    (302, "phantom transfer found by reconciliation", True,
     "totals_inconsistent → blocks_inconsistent, ranges frozen (4006), manual resolve", _RECONCILIATION),
    (303, "reconciliation while a transfer is open", True, "open transfer excluded on both sides; completed",
     _RECONCILIATION),
    (304, "registry silent during a stage", False, "failed (7006)", _RECONCILIATION),
    (400, "webhook delivery after a 500", False,
     "signature verifies with standardwebhooks; retried; doorbell arrives", _WEBHOOKS),
):  # fmt: skip
    pending(number, title, mandatory=mandatory, rule=rule, needs=needs)
