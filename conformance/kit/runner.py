"""The runner of the conformance kit (INTERREGISTRY §11): cases registered with their number, title, `M` flag
and pass rule; a structured result per case; the message-log hygiene check after every case; the report.

A case is an async function of a `CaseContext`. It records named checks (`expect`, `refused`, `skip`); its
status follows from them, never from the absence of an exception:

- `pass`: every check passed and the hygiene check is clean;
- `fail`: a check failed, the IR answered something that stops the case (`KitFailure`), or hygiene failed;
- `partial`: nothing failed but a check was skipped (a precondition the operator can supply is missing);
- `skipped`: the case as a whole could not run here, with the reason;
- `not-implemented`: the case is numbered in §11 but needs what the IR does not serve yet (none today:
  `pending` registers such a case);
- `error`: the kit itself broke (a bug to report), or the case checked nothing.

Only `pass` counts as passing. Hygiene (§11), after each case, on what the IR's message log
(`GET /v1/interregistry/messages?registry=`) gained since the case began and on the case's own exchanges:
each registry message verified and signed with a kid of the registry's JWKS (the stored signature is
re-verified), seqs strictly increasing, no 1xxx answer the case did not declare it provoked, and no refused
message stored. The IR keeps refusals out of the log by design (docs/interregistry.md), so refusals of
messages the registry process itself sent during the run are not visible to the kit; its own are.
"""

import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from conformance.kit.session import KitFailure, RegistrySession
from kit.jws import JwsError, verify
from kit.jwt import KeySet

__all__ = [
    "CASES",
    "Case",
    "CaseContext",
    "CaseResult",
    "CaseSkipped",
    "Check",
    "RunState",
    "Status",
    "case",
    "hygiene",
    "pending",
    "run_case",
]


class Status(StrEnum):
    """A case's outcome; only `pass` counts as passing."""

    PASSED = "pass"
    FAIL = "fail"
    PARTIAL = "partial"
    SKIPPED = "skipped"
    NOT_IMPLEMENTED = "not-implemented"
    ERROR = "error"


#: What makes a mandatory case block go-live (the report's `result` is `fail`).
FAILING = frozenset({Status.FAIL, Status.ERROR})

CaseFunction = Callable[["CaseContext"], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    number: int
    title: str
    mandatory: bool
    pass_rule: str
    run: CaseFunction | None = None
    #: For a case not implemented yet: what the IR must serve first.
    needs: str | None = None


#: Every numbered case of §11, implemented or not, by number.
CASES: dict[int, Case] = {}


def _register(made: Case) -> None:
    if made.number in CASES:
        raise ValueError(f"case {made.number} is registered twice")
    CASES[made.number] = made


def case(number: int, title: str, *, mandatory: bool, rule: str) -> Callable[[CaseFunction], CaseFunction]:
    """Register an implemented case."""

    def register(function: CaseFunction) -> CaseFunction:
        _register(Case(number, title, mandatory, rule, run=function))
        return function

    return register


def pending(number: int, title: str, *, mandatory: bool, rule: str, needs: str) -> None:
    """Register a numbered case the kit cannot run yet: it is reported `not-implemented`, never `pass`."""
    _register(Case(number, title, mandatory, rule, needs=needs))


@dataclass
class Check:
    name: str
    outcome: str  # "pass" | "fail" | "skipped"
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "outcome": self.outcome, "detail": self.detail}
        if self.evidence:
            document["evidence"] = self.evidence
        return document


class CaseSkipped(Exception):
    """The whole case cannot run here; the message is the reason."""


@dataclass
class RunState:
    """What the run knows across cases: the record, the keys, and where the message log was."""

    record: dict[str, Any] | None = None
    #: The registry's public keys the hygiene check accepts (configured, inline on the record, published).
    registry_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    log_cursor: int = 0
    last_logged_seq: int = 0
    #: Why the message log could not be read at the start (then every hygiene check says so).
    log_problem: str | None = None
    #: The registry's test driver, when the run has one (transfer cases).
    driver: Any = None
    #: What a case leaves for later ones (e.g. the range the registry holds after case 150).
    notes: dict[str, Any] = field(default_factory=dict)


class CaseContext:
    """What a case works with: the session (the registry's credentials and key), the run state, its checks."""

    def __init__(self, session: RegistrySession, state: RunState) -> None:
        self.session = session
        self.config = session.config
        self.state = state
        self.checks: list[Check] = []
        #: 1xxx codes the case set out to provoke (hygiene flags any other).
        self.provoked: set[int] = set()
        #: Message ids the case sent unsigned on purpose (accepted unsigned under `signing: optional`).
        self.unsigned_on_purpose: set[str] = set()
        self.log_cursor_at_start = state.log_cursor

    @property
    def record(self) -> dict[str, Any]:
        if self.state.record is None:
            raise KitFailure("the registry record could not be read at the start of the run")
        return self.state.record

    def expect(self, name: str, ok: bool, detail: str = "", **evidence: Any) -> bool:
        self.checks.append(Check(name, "pass" if ok else "fail", detail, evidence))
        return ok

    def skip(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, "skipped", reason))

    def trust(self, public_jwk: dict[str, Any]) -> None:
        """A key the case published for the registry (rotation): hygiene accepts messages signed with it."""
        self.state.registry_keys[str(public_jwk["kid"])] = public_jwk

    async def refused(
        self,
        name: str,
        send: Awaitable[httpx.Response],
        *,
        code: int,
        status: int,
        problem: str | None = None,
    ) -> httpx.Response:
        """Send something the IR must refuse with `code` (HTTP `status`), declared as provoked for hygiene."""
        if 1000 <= code < 2000:
            self.provoked.add(code)
        response = await send
        body: dict[str, Any] = {}
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            body = response.json()
        got = body.get("code")
        ok = response.status_code == status and got == code
        if problem is not None:
            ok = ok and str(body.get("type", "")).endswith(f"/{problem}")
        self.expect(
            name,
            ok,
            f"expected {status} with code {code}, got {response.status_code} code {got}"
            + (f" type {body.get('type')}" if problem else ""),
            status=response.status_code,
            code=got,
        )
        return response

    async def message_ids_logged(self) -> set[str]:
        """Ids of the registry messages the IR stored since the case began."""
        entries = await self.session.message_log(after=self.log_cursor_at_start, direction="registry_to_ir")
        return {str(entry["message_id"]) for entry in entries}


@dataclass
class CaseResult:
    number: int
    title: str
    mandatory: bool
    pass_rule: str
    status: Status
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    hygiene: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    #: What the IR holds of the case: messages it stored (2xx), transfers and reconciliations it made.
    subjects: dict[str, list[str]] = field(default_factory=dict)
    duration_ms: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.number,
            "title": self.title,
            "mandatory": self.mandatory,
            "pass_rule": self.pass_rule,
            "status": str(self.status),
            "reason": self.reason,
            "checks": [check.as_json() for check in self.checks],
            "hygiene": {"ok": not self.hygiene, "violations": self.hygiene},
            "evidence": self.evidence,
            "subjects": self.subjects,
            "duration_ms": self.duration_ms,
        }


def _status(checks: list[Check], hygiene_violations: list[str]) -> tuple[Status, str]:
    failed = [
        f"{check.name} ({check.detail})" if check.detail else check.name
        for check in checks
        if check.outcome == "fail"
    ]
    skipped = [check for check in checks if check.outcome == "skipped"]
    if failed:
        return Status.FAIL, "failed: " + "; ".join(failed)
    if hygiene_violations:
        return Status.FAIL, "hygiene: " + "; ".join(hygiene_violations)
    if not checks:
        return Status.ERROR, "the case checked nothing"
    if len(skipped) == len(checks):
        return Status.SKIPPED, "; ".join(check.detail for check in skipped)
    if skipped:
        return Status.PARTIAL, "skipped: " + "; ".join(f"{check.name} ({check.detail})" for check in skipped)
    return Status.PASSED, ""


async def hygiene(context: CaseContext, exchanges_from: int) -> list[str]:
    """The §11 checks after a case (see the module docstring); violations as sentences."""
    violations: list[str] = []
    state = context.state
    own = context.session.exchanges[exchanges_from:]
    refused: set[tuple[str, str | None]] = set()
    for exchange in own:
        if exchange.code is not None and 1000 <= exchange.code < 2000:
            if exchange.message_id is not None:
                refused.add((exchange.message_id, exchange.body_sha256))
            if exchange.code not in context.provoked:
                violations.append(
                    f"unprovoked {exchange.code} on {exchange.method} {exchange.path}"
                    + (f" (message {exchange.message_id})" if exchange.message_id else "")
                )
    if state.log_problem is not None:
        violations.append(f"message log unreadable: {state.log_problem}")
        return violations
    try:
        entries = await context.session.message_log(after=state.log_cursor)
    except KitFailure as exc:
        violations.append(f"message log unreadable: {exc}")
        return violations
    keys = KeySet({"keys": list(state.registry_keys.values())}) if state.registry_keys else KeySet()
    for entry in entries:
        message_id = str(entry["message_id"])
        label = f"log {entry['log_id']} ({entry['type']}, message {message_id})"
        if (message_id, entry.get("body_sha256")) in refused:
            violations.append(f"{label}: stored although it was refused with a 1xxx code")
        if entry.get("verification") == "unsigned" and message_id in context.unsigned_on_purpose:
            pass
        elif entry.get("verification") != "verified" or not entry.get("signature"):
            violations.append(f"{label}: not signed (verification {entry.get('verification')!r})")
        elif entry.get("kid") not in state.registry_keys:
            violations.append(f"{label}: signed with kid {entry.get('kid')!r}, not in the registry's JWKS")
        else:
            try:
                verify(entry["envelope"], entry["signature"], keys)
            except JwsError as exc:
                violations.append(f"{label}: stored signature does not verify ({type(exc).__name__})")
        seq = entry.get("seq")
        if seq is not None:
            if seq <= state.last_logged_seq:
                violations.append(f"{label}: seq {seq} not above the previous {state.last_logged_seq}")
            state.last_logged_seq = max(state.last_logged_seq, int(seq))
        state.log_cursor = max(state.log_cursor, int(entry["log_id"]))
    return violations


def _subjects(session: RegistrySession, first_exchange: int, first_subject: int) -> dict[str, list[str]]:
    """The case's subjects for the IR's cross-check: the messages it sent that the IR accepted (so stored),
    and the transfers and reconciliations it noted; each once, in order."""
    found: dict[str, list[str]] = {"messages": [], "transfers": [], "reconciliations": []}
    for exchange in session.exchanges[first_exchange:]:
        if exchange.message_id is not None and 200 <= exchange.status < 300:
            found["messages"].append(exchange.message_id)
    for kind, subject_id in session.subjects[first_subject:]:
        found.setdefault(kind, []).append(subject_id)
    return {kind: list(dict.fromkeys(ids)) for kind, ids in found.items()}


async def run_case(made: Case, session: RegistrySession, state: RunState) -> CaseResult:
    """Run one case with its hygiene check; never raises."""
    result = CaseResult(made.number, made.title, made.mandatory, made.pass_rule, Status.NOT_IMPLEMENTED)
    if made.run is None:
        result.reason = f"needs {made.needs}, which the IR does not serve yet"
        return result
    context = CaseContext(session, state)
    started = time.monotonic()
    first_exchange = len(session.exchanges)
    first_subject = len(session.subjects)
    broke: str | None = None
    skipped: str | None = None
    try:
        await made.run(context)
    except CaseSkipped as exc:
        skipped = str(exc)
    except KitFailure as exc:
        context.expect("the IR answered", False, str(exc))
    except Exception as exc:
        # A bug of the kit (or an answer it could not read): reported as `error`, never as a pass.
        where = traceback.extract_tb(exc.__traceback__)[-1]
        broke = f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
    if skipped is not None:
        context.skip("the case", skipped)
    evidence = [exchange.as_json() for exchange in session.exchanges[first_exchange:]]
    violations = await hygiene(context, first_exchange)
    result.checks = context.checks
    result.hygiene = violations
    result.evidence = evidence
    result.subjects = _subjects(session, first_exchange, first_subject)
    if broke is not None:
        result.status, result.reason = Status.ERROR, broke
    else:
        result.status, result.reason = _status(context.checks, violations)
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result
