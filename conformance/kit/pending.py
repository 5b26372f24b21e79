"""The §11 cases that need what the IR does not serve yet: registered with their numbers, titles, `M` flags
and pass rules so that the report lists them as `not-implemented` — a run can never look complete without
them. Each moves out when its prerequisite lands (reconciliation; webhooks); the transfer cases 150–172 are
in `transfer_cases.py`.
"""

from conformance.kit.runner import pending

__all__: list[str] = []

_RECONCILIATION = "reconciliation (§8)"
_WEBHOOKS = "webhooks registered by the registry's Party (§9)"

for number, title, mandatory, rule, needs in (
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
