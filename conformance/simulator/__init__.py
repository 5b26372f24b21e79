"""The reference national registry (INTERREGISTRY §11, issue 7): a second process that connects to the IR as
a national registry does — OAuth2 client, signed envelopes with a persisted `seq`, the signed inbox read and
acknowledged exactly once, a small serial-block ledger in SQLite, answer policies, a test driver, crash
points and deliberate bugs for the conformance kit's mutation runs.

Run it with `python -m conformance.simulator --help` (or `make simulator` beside `make run`); see
docs/simulator.md.
"""

from conformance.simulator.config import BUG_MODES, CRASH_POINTS, Policy, SimulatorConfig
from conformance.simulator.engine import InboxItemRefused, SimulatedCrash, Simulator

__all__ = [
    "BUG_MODES",
    "CRASH_POINTS",
    "InboxItemRefused",
    "Policy",
    "SimulatedCrash",
    "Simulator",
    "SimulatorConfig",
]
