"""IR-side fault points of the §13 crash matrix: the transactions process SIGKILLs itself at a named point.

`REGISTRY_IRX_CRASH_AT` names one point; the first time the process reaches it, it sends itself SIGKILL (no
`finally`, no lifespan shutdown, no flush: what a power cut or the OOM killer does). The points are where
INTERREGISTRY §10 F9 says a crash must be harmless:

- `after_decision_commit_before_response`: a transfer's decision (an incoming proposal judged, or R's
  response to an outgoing one) is committed with its inbox F message, the HTTP answer not sent. R retries the
  same message; the restarted IR answers it from its message log (S5, S6).
- `before_relay_position`: the relay has locked a registry's inbox cursor and read committed rows to number,
  and has not given them positions. The rows stay unnumbered; the restarted relay numbers them (S5).

A test instrument, so never armed in production: the variable is ignored (and logged) when the IR runs the
production IRX environment, decided exactly as the sandbox endpoints decide it (`Settings.irx_env`).
The variable is read at each point, not at start, so an unset variable costs one dictionary lookup.
"""

import os
import signal
from typing import Literal, get_args

import structlog

from contracts.interregistry import IrxEnvironment

__all__ = ["CRASH_AT_VARIABLE", "POINTS", "CrashPoint", "armed", "reach"]

log = structlog.get_logger(__name__)

CRASH_AT_VARIABLE = "REGISTRY_IRX_CRASH_AT"
CrashPoint = Literal["after_decision_commit_before_response", "before_relay_position"]
POINTS: frozenset[str] = frozenset(get_args(CrashPoint))


def armed(point: CrashPoint) -> bool:
    """Whether reaching `point` kills this process: it is the one named, and this IR is not production."""
    if os.environ.get(CRASH_AT_VARIABLE) != point:
        return False
    # Imported here: the common case (nothing armed) never builds settings.
    from services.transactions.config import Settings

    if Settings().irx_env is IrxEnvironment.PRODUCTION:
        log.error("irx_crash_point_ignored", point=point, reason="production IRX environment")
        return False
    return True


def reach(point: CrashPoint) -> None:
    """The process dies here if `point` is armed (SIGKILL to itself); otherwise nothing happens."""
    if armed(point):
        log.warning("irx_crash_point_reached", point=point, pid=os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
