"""Conformance runs stored at the IR (INTERREGISTRY §11, §2.1), and the sandbox's reconciliation levers the
kit's cases 300–304 need.

`POST /v1/interregistry/conformance-runs` takes the kit's JSON report from **the registry itself** (its
`registry` client, for its own registry id, on a sandbox IR): the kit posts it at the end of a run. The IR
never takes the report's word for the outcome. It records its own verdict in `conformance_run.result`
(`pass` | `fail`), and `report` keeps both what was submitted and that verdict:

- every mandatory case of §11 (`MANDATORY_CASES`) must be in the report with status `pass`;
- each case claimed `pass` names the subjects it worked on (`subjects`: messages the registry sent, transfers,
  reconciliations). Each must be in the IR's own records of that registry, made during the run's window
  (`started_at`…`finished_at`, widened by `CLOCK_TOLERANCE` for the operator's clock). Every case but 100 (a
  token exchange, which only the gateway sees) must name at least one. Where the IR can judge the outcome from
  its own record it does (`EXPECTED_TRANSFER`, `EXPECTED_RECONCILIATION`: e.g. case 153 must name a
  transfer the IR terminated, case 302 a reconciliation resolved by hand);
- the §11 hygiene rule, on the IR's side: every message of the registry stored during the window, `hello`
  aside, was signature-verified.

What the IR cannot re-judge (what the registry's driver reported about its own units) stays in the stored
report as evidence for the Secretariat. A failed verdict is stored too, with its findings, so that a
registry's posted claims can always be audited. Only a `pass` row lets `activate` take the run id
(`Interregistry.transition`, `repository.passing_run`).

Reads: `GET …/conformance-runs/{run_id}` (the run with its report and verdict) and
`GET …/conformance-runs?registry=` (newest first, without reports) for the Secretariat, auditors and the
registry itself (another registry's run answers 404).

Sandbox and production are separate IRs (one environment each), so the verdict travels: every stored run is
answered with an `attestation`, the sandbox IR's detached JWS (its IRX message key, `kit.jws`) over
`{"type": "conformance.run", "env": "sandbox", "conformance_run_id", "registry_id", "result",
"report_sha256", "judged_at"}`. On the production IR the Secretariat imports it,
`POST …/conformance-runs/import` `{"attestation", "report"}`: the signature must verify against the sandbox
IR's keys the operator configured (`REGISTRY_IRX_SANDBOX_JWKS`, the JSON of the sandbox's
`/v1/interregistry/jwks.json`; `Settings.irx_sandbox_jwks`, checked to be a JWKS at start), the report
must be the one attested (its hash), and a production record of that registry must exist. The row keeps
the sandbox's verdict; the production IR does not judge again (it holds none of the run's records).

Sandbox levers (`/v1/interregistry/sandbox/reconciliations/…`, 404 in production, the Secretariat or the
registry under test for itself, like `sandbox.py`): `POST` starts a reconciliation **as the IR** (case 300,
302–304), `POST …/{id}/expire` makes the awaited stage's deadline pass now and runs the deadline check
(7006, case 304), and `POST …/{id}/resolve` resolves it as the Secretariat would (case 302). In the sandbox the
kit plays the Secretariat's part; everything goes through `Reconciliations`' own use cases.
"""

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from contracts.interregistry import IrxEnvironment, ReconciliationResolve, ReconciliationStart
from contracts.roles import Role
from kit.auth import CurrentPrincipal, Principal
from kit.errors import Conflict, Forbidden, NotFound, Unprocessable
from kit.jws import JwsError, body_sha256, sign, verify
from kit.jwt import KeySet, SigningKey
from services.transactions.interregistry import repository
from services.transactions.interregistry.reconciliation import Reconciliations
from services.transactions.interregistry.reconciliation_models import reconciliation
from services.transactions.interregistry.sandbox import SINK_NAME
from services.transactions.interregistry.service import Interregistry

__all__ = [
    "CLOCK_TOLERANCE",
    "EXPECTED_RECONCILIATION",
    "EXPECTED_TRANSFER",
    "MANDATORY_CASES",
    "SANDBOX_JWKS_ENV",
    "ConformanceRuns",
    "Verdict",
    "attest",
    "install",
    "judge",
]

log = structlog.get_logger(__name__)

#: The mandatory (M) cases of §11: a run passes only with each of them passed and corroborated.
MANDATORY_CASES: tuple[int, ...] = (
    100, 101, 102, 103, 104, 116, 117,
    150, 151, 152, 153, 154, 155, 156, 157, 158, 160, 161, 162, 163, 164, 170, 171, 172,
    300, 301, 302, 303,
)  # fmt: skip
#: A transfer status the IR must hold for at least one transfer a passed case names.
EXPECTED_TRANSFER: dict[int, str] = {
    150: "completed", 151: "rejected", 152: "rejected", 153: "terminated", 155: "completed",
    156: "completed", 157: "completed", 158: "rejected", 160: "completed", 161: "completed",
    164: "completed", 170: "completed", 171: "completed", 172: "completed",
}  # fmt: skip
#: A reconciliation status the IR must hold for at least one reconciliation a passed case names.
EXPECTED_RECONCILIATION: dict[int, str] = {
    300: "completed",
    301: "registry",  # one the registry itself started (`initiated_by` registry:…), any status
    302: "completed_with_manual_intervention",
    303: "completed",
}
#: The run's window is the operator's clock: widened by the skew §3 tolerates (1009).
CLOCK_TOLERANCE = timedelta(seconds=300)
#: A run longer than this is not one run (the kit waits at most 10 min per operator question).
MAX_RUN = timedelta(hours=24)
#: Reports are a few hundred kB; anything far larger is not one.
MAX_REPORT_BYTES = 8_000_000
_SUBJECT_KINDS = ("messages", "transfers", "reconciliations")
#: The sandbox IR's public IRX keys (JWKS JSON), which the production IR trusts for imported verdicts.
SANDBOX_JWKS_ENV = "REGISTRY_IRX_SANDBOX_JWKS"
_ATTESTATION_TYPE = "conformance.run"

runs_router = APIRouter(prefix="/v1/interregistry/conformance-runs", tags=["interregistry"])
sandbox_router = APIRouter(prefix="/v1/interregistry/sandbox/reconciliations", tags=["interregistry sandbox"])

RunIdPath = Annotated[str, Path(max_length=200)]
ReconciliationIdPath = Annotated[str, Path(max_length=40)]


# ---- the verdict -----------------------------------------------------------------------------------------


@dataclass
class Evidence:
    """What the IR itself holds of one registry for a run's window."""

    #: message id → (type, verification, stored at) of the registry's messages stored in the window.
    messages: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    #: transfer id → (status, created at) of the transfers the report names, with this registry.
    transfers: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    #: reconciliation id → (status, initiated by, created at) of the reconciliations the report names.
    reconciliations: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)


@dataclass
class Verdict:
    result: str  # "pass" | "fail"
    findings: list[str]
    #: Per mandatory case: "corroborated", or why not.
    cases: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"result": self.result, "findings": self.findings, "cases": self.cases}


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _instant(value: Any, name: str) -> datetime:
    try:
        return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        raise Unprocessable(
            f"The report's {name} is not an ISO 8601 instant.", slug="invalid-report"
        ) from None


def subjects_of(report: dict[str, Any]) -> dict[str, set[str]]:
    """Every subject id the report's cases name, by kind."""
    found: dict[str, set[str]] = {kind: set() for kind in _SUBJECT_KINDS}
    for made in report.get("cases") or []:
        subjects = made.get("subjects") if isinstance(made, dict) else None
        for kind in _SUBJECT_KINDS:
            for item in (subjects or {}).get(kind) or []:
                found[kind].add(str(item))
    return found


def judge(report: dict[str, Any], evidence: Evidence, window: tuple[datetime, datetime]) -> Verdict:
    """The IR's verdict on a report (see the module docstring): pure, so every rule is testable alone."""
    start, end = window
    findings: list[str] = []
    verdicts: dict[str, str] = {}
    cases = {int(c["case"]): c for c in report.get("cases") or [] if isinstance(c, dict) and "case" in c}

    def within(at: datetime) -> bool:
        return start <= _utc(at) <= end

    for number in MANDATORY_CASES:
        made = cases.get(number)
        problems: list[str] = []
        if made is None:
            problems.append("not in the report")
        elif made.get("status") != "pass":
            problems.append(f"reported {made.get('status')!r}")
        else:
            subjects = made.get("subjects") or {}
            messages = [str(i) for i in subjects.get("messages") or []]
            transfers = [str(i) for i in subjects.get("transfers") or []]
            reconciliations = [str(i) for i in subjects.get("reconciliations") or []]
            if number != 100 and not (messages or transfers or reconciliations):
                problems.append("names nothing the IR can corroborate")
            for message_id in messages:
                if message_id not in evidence.messages:
                    problems.append(
                        f"message {message_id} is not in the IR's log of the registry during the run"
                    )
            statuses: list[str] = []
            for transfer_id in transfers:
                record = evidence.transfers.get(transfer_id)
                if record is None or not within(record[1]):
                    problems.append(
                        f"transfer {transfer_id} is not one the IR had with the registry during the run"
                    )
                else:
                    statuses.append(record[0])
            if number in EXPECTED_TRANSFER and EXPECTED_TRANSFER[number] not in statuses:
                problems.append(
                    f"no named transfer is {EXPECTED_TRANSFER[number]} at the IR (found {statuses})"
                )
            outcomes: list[str] = []
            for reconciliation_id in reconciliations:
                rec = evidence.reconciliations.get(reconciliation_id)
                if rec is None or not within(rec[2]):
                    problems.append(f"reconciliation {reconciliation_id} is not the registry's from the run")
                else:
                    outcomes.append(rec[0])
                    if rec[1].startswith("registry:"):
                        outcomes.append("registry")
            if number in EXPECTED_RECONCILIATION and EXPECTED_RECONCILIATION[number] not in outcomes:
                problems.append(
                    f"no named reconciliation is {EXPECTED_RECONCILIATION[number]} at the IR (found {outcomes})"
                )
        verdicts[str(number)] = "; ".join(problems) or "corroborated"
        findings.extend(f"case {number}: {problem}" for problem in problems)
    for message_id, (kind, verification, _at) in evidence.messages.items():
        if kind != "hello" and verification != "verified":
            findings.append(f"hygiene: message {message_id} ({kind}) was stored {verification!r}")
    return Verdict("fail" if findings else "pass", findings, verdicts)


def attest(run_id: str, registry_id: str, result: str, report: dict[str, Any], judged_at: datetime,
           key: SigningKey) -> dict[str, Any]:  # fmt: skip
    """The sandbox IR's signed statement of its verdict on a run (what the production IR imports)."""
    document = {
        "protocol": "irx",
        "type": _ATTESTATION_TYPE,
        "env": IrxEnvironment.SANDBOX.value,
        "conformance_run_id": run_id,
        "registry_id": registry_id,
        "result": result,
        "report_sha256": body_sha256(report),
        "judged_at": judged_at.isoformat(),
    }
    return {"document": document, "signature": sign(document, key)}


# ---- use cases -------------------------------------------------------------------------------------------


class ConformanceRuns:
    """Store, judge and read conformance runs; `app.state.conformance_runs`."""

    def __init__(self, irx: Interregistry) -> None:
        self.irx = irx
        self.db = irx.db

    def _may_read(self, principal: Principal, registry_id: str) -> bool:
        if principal.is_secretariat or principal.has(Role.AUDITOR):
            return True
        return principal.has(Role.REGISTRY) and principal.registry_id == registry_id

    async def submit(self, principal: Principal, raw: bytes) -> dict[str, Any]:
        if self.irx.env is IrxEnvironment.PRODUCTION:
            raise Unprocessable(
                "Conformance runs are judged by the sandbox IR, against its own record of the run.",
                slug="not-sandbox",
            )
        if len(raw) > MAX_REPORT_BYTES:
            raise Unprocessable(f"A report is at most {MAX_REPORT_BYTES} bytes.", slug="invalid-report")
        try:
            report = json.loads(raw or b"null")
        except ValueError:
            raise Unprocessable("The body must be the kit's JSON report.", slug="invalid-report") from None
        if not isinstance(report, dict) or not isinstance(report.get("cases"), list):
            raise Unprocessable(
                "The body must be the kit's JSON report (with `cases`).", slug="invalid-report"
            )
        registry_id = str(report.get("registry_id") or "")
        if not (
            principal.has(Role.REGISTRY) and principal.registry_id and principal.registry_id == registry_id
        ):
            # Only the registry reports its own run: its sandbox client is the one the run used.
            raise Forbidden("A conformance run is submitted by the registry it tested, with its own client.")
        try:
            run_id = str(uuid.UUID(str(report.get("conformance_run_id"))))
        except ValueError:
            raise Unprocessable("conformance_run_id must be a UUID.", slug="invalid-report") from None
        started = _instant(report.get("started_at"), "started_at")
        finished = _instant(report.get("finished_at"), "finished_at")
        now = self.irx.clock()
        if not started <= finished <= now + CLOCK_TOLERANCE or finished - started > MAX_RUN:
            raise Unprocessable(
                "The run's window must be started_at ≤ finished_at ≤ now, at most 24 h long.",
                slug="invalid-report",
            )
        window = (started - CLOCK_TOLERANCE, finished + CLOCK_TOLERANCE)
        claimed = subjects_of(report)
        async with self.db.connect() as connection:
            record = await repository.get_registry(connection, registry_id)
            if record is None or record["environment"] != IrxEnvironment.SANDBOX.value:
                raise Unprocessable(f"{registry_id} has no sandbox registry record here.", slug="not-sandbox")
            if record["name"] == SINK_NAME:
                # The sandbox's own test double (case 162's 4004) is never a registry going live.
                raise Unprocessable(f"{registry_id} is the sandbox's sink registry.", slug="sandbox-sink")
            evidence = Evidence()
            for row in await repository.messages_received_between(connection, registry_id, *window):
                evidence.messages[row["message_id"]] = (
                    row["type"],
                    row["verification"],
                    _utc(row["created_at"]),
                )
            for row in await repository.transfers_of(connection, registry_id, sorted(claimed["transfers"])):
                evidence.transfers[row["transfer_id"]] = (row["status"], _utc(row["created_at"]))
            if claimed["reconciliations"]:
                rows = await connection.execute(
                    select(
                        reconciliation.c.reconciliation_id, reconciliation.c.status,
                        reconciliation.c.initiated_by, reconciliation.c.created_at,
                    ).where(
                        reconciliation.c.registry_id == registry_id,
                        reconciliation.c.reconciliation_id.in_(sorted(claimed["reconciliations"])),
                    )
                )  # fmt: skip
                for rec_id, status, initiated_by, created_at in rows:
                    evidence.reconciliations[rec_id] = (status, initiated_by, _utc(created_at))
            verdict = judge(report, evidence, window)
            try:
                await repository.insert_conformance_run(
                    connection,
                    {
                        "run_id": run_id,
                        "registry_id": registry_id,
                        "result": verdict.result,
                        "report": {"submitted": report, "verdict": verdict.as_json()},
                        "created_at": now,
                    },
                )
            except IntegrityError:
                raise Conflict(
                    f"Conformance run {run_id} is already stored.", slug="conformance-run-exists"
                ) from None
        log.info(
            "irx_conformance_run_stored",
            run_id=run_id,
            registry_id=registry_id,
            result=verdict.result,
            claimed=report.get("result"),
            findings=len(verdict.findings),
        )
        summary = _summary(run_id, registry_id, verdict.result, now, report, verdict.as_json())
        return summary | {"attestation": self._attest(summary, report)}

    def _attest(self, summary: dict[str, Any], report: dict[str, Any]) -> dict[str, Any] | None:
        if self.irx.env is IrxEnvironment.PRODUCTION:
            return None  # an imported verdict is the sandbox's; the production IR does not vouch for it
        return attest(
            summary["conformance_run_id"], summary["registry_id"], summary["result"], report,
            datetime.fromisoformat(summary["created_at"]), self.irx.relay.signer.key,
        )  # fmt: skip

    async def import_verdict(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """The production IR takes a verdict the sandbox IR signed (Secretariat only; see the docstring)."""
        if not principal.is_secretariat:
            raise Forbidden("A sandbox verdict is imported by the Secretariat.")
        if self.irx.env is not IrxEnvironment.PRODUCTION:
            raise Unprocessable(
                "A sandbox IR judges runs itself; import is for the production IR.", slug="not-production"
            )
        configured = self.irx.settings.irx_sandbox_jwks
        if not configured:
            raise Unprocessable(f"{SANDBOX_JWKS_ENV} is not configured: no sandbox verdict can be trusted.",
                                slug="sandbox-keys-not-configured")  # fmt: skip
        attestation, report = body.get("attestation"), body.get("report")
        if not isinstance(attestation, dict) or not isinstance(report, dict):
            raise Unprocessable(
                "Body must be {'attestation': {'document', 'signature'}, 'report'}.", slug="invalid-import"
            )
        document, signature = attestation.get("document"), attestation.get("signature")
        try:
            if not isinstance(document, dict) or not isinstance(signature, str):
                raise ValueError("no document or signature")
            verify(document, signature, KeySet(json.loads(configured)))
        except (JwsError, ValueError) as exc:
            raise Unprocessable(f"The attestation does not verify with the sandbox IR's keys: {exc}",
                                slug="attestation-invalid") from None  # fmt: skip
        registry_id = str(document.get("registry_id") or "")
        run_id = str(document.get("conformance_run_id") or "")
        consistent = (
            document.get("type") == _ATTESTATION_TYPE
            and document.get("env") == IrxEnvironment.SANDBOX.value
            and document.get("result") in ("pass", "fail")
            and document.get("report_sha256") == body_sha256(report)
            and report.get("conformance_run_id") == run_id
            and report.get("registry_id") == registry_id
        )
        if not consistent:
            raise Unprocessable(
                "The attestation is not of this report, or not a sandbox verdict.", slug="attestation-invalid"
            )
        now = self.irx.clock()
        verdict = {"result": document["result"], "imported_from": "sandbox", "attestation": attestation}
        async with self.db.connect() as connection:
            record = await repository.get_registry(connection, registry_id)
            if record is None:
                raise NotFound(f"No registry {registry_id} here.", slug="registry-not-found")
            try:
                await repository.insert_conformance_run(
                    connection,
                    {"run_id": run_id, "registry_id": registry_id, "result": document["result"],
                     "report": {"submitted": report, "verdict": verdict}, "created_at": now},
                )  # fmt: skip
            except IntegrityError:
                raise Conflict(
                    f"Conformance run {run_id} is already stored.", slug="conformance-run-exists"
                ) from None
        log.info(
            "irx_conformance_run_imported", run_id=run_id, registry_id=registry_id, result=document["result"]
        )
        return _summary(run_id, registry_id, str(document["result"]), now, report, verdict)

    async def get(self, principal: Principal, run_id: str) -> dict[str, Any]:
        async with self.db.read() as session:
            row = await repository.get_conformance_run(await session.connection(), run_id)
        if row is None or not self._may_read(principal, row["registry_id"]):
            raise NotFound(f"No conformance run {run_id}.", slug="conformance-run-not-found")
        stored = row["report"] or {}
        submitted, verdict = stored.get("submitted") or {}, stored.get("verdict") or {}
        summary = _summary(
            row["run_id"], row["registry_id"], row["result"], _utc(row["created_at"]), submitted, verdict
        )
        return summary | {"report": submitted, "attestation": self._attest(summary, submitted)}

    async def list_runs(self, principal: Principal, *, registry_id: str | None, limit: int) -> dict[str, Any]:
        if not (principal.is_secretariat or principal.has(Role.AUDITOR)):
            if not (principal.has(Role.REGISTRY) and principal.registry_id):
                raise Forbidden("Conformance runs are read by the Secretariat, auditors and each registry.")
            if registry_id is not None and registry_id != principal.registry_id:
                raise Forbidden("A registry reads only its own conformance runs.")
            registry_id = principal.registry_id
        async with self.db.read() as session:
            rows = await repository.list_conformance_runs(
                await session.connection(), registry_id=registry_id, limit=limit
            )
        return {
            "items": [
                {
                    "conformance_run_id": row["run_id"],
                    "registry_id": row["registry_id"],
                    "result": row["result"],
                    "created_at": _utc(row["created_at"]).isoformat(),
                }
                for row in rows
            ],
            "next_cursor": None,
        }


def _summary(
    run_id: str, registry_id: str, result: str, at: datetime, report: dict[str, Any], verdict: dict[str, Any]
) -> dict[str, Any]:
    return {
        "conformance_run_id": run_id,
        "registry_id": registry_id,
        "result": result,
        "claimed_result": report.get("result"),
        "started_at": report.get("started_at"),
        "finished_at": report.get("finished_at"),
        "created_at": at.isoformat(),
        "findings": verdict.get("findings", []),
        "cases": verdict.get("cases", {}),
    }


# ---- HTTP ------------------------------------------------------------------------------------------------


def _runs(request: Request) -> ConformanceRuns:
    service: ConformanceRuns = request.app.state.conformance_runs
    return service


@runs_router.post("", status_code=201)
async def submit_run(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """The kit's report, from the registry it tested → 201 with the IR's own verdict (`result`, `findings`)."""
    stored = await _runs(request).submit(principal, await request.body())
    location = f"/v1/interregistry/conformance-runs/{stored['conformance_run_id']}"
    return JSONResponse(stored, status_code=201, headers={"Location": location})


@runs_router.post("/import", status_code=201)
async def import_run(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """Production IR: a verdict the sandbox IR signed, with its report (secretariat_admin) → 201."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise Unprocessable("Body must be JSON.", slug="invalid-import") from None
    if not isinstance(body, dict):
        raise Unprocessable("Body must be {'attestation', 'report'}.", slug="invalid-import")
    stored = await _runs(request).import_verdict(principal, body)
    location = f"/v1/interregistry/conformance-runs/{stored['conformance_run_id']}"
    return JSONResponse(stored, status_code=201, headers={"Location": location})


@runs_router.get("")
async def list_runs(
    request: Request,
    principal: CurrentPrincipal,
    registry: Annotated[str | None, Query(pattern=r"^[A-Z]{3}[0-9]{2}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Newest first, without reports (secretariat_admin, auditor; a registry its own)."""
    return await _runs(request).list_runs(principal, registry_id=registry, limit=limit)


@runs_router.get("/{run_id}")
async def get_run(request: Request, principal: CurrentPrincipal, run_id: RunIdPath) -> dict[str, Any]:
    """The run: the IR's verdict, its findings per mandatory case, and the submitted report."""
    return await _runs(request).get(principal, run_id)


class SandboxReconciliationStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry_id: str = Field(pattern=r"^[A-Z]{3}[0-9]{2}$")


class SandboxResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="resolved in the sandbox by the conformance kit", max_length=2000)


#: Who the sandbox acts as when it starts or resolves a reconciliation (the journal and `initiated_by` say so).
_AS_IR = Principal(client_id="sandbox:ir", party=None, roles=frozenset({Role.SECRETARIAT_ADMIN}))


def _reconciliations(request: Request) -> Reconciliations:
    service: Reconciliations = request.app.state.reconciliations
    return service


async def _sandbox_guard(request: Request, principal: Principal, registry_id: str) -> None:
    """404 in production; the Secretariat or the registry under test for itself; a sandbox record."""
    irx: Interregistry = request.app.state.interregistry
    if irx.env is IrxEnvironment.PRODUCTION:
        raise NotFound("Not found.")
    if not principal.is_secretariat and not (
        principal.has(Role.REGISTRY) and principal.registry_id == registry_id
    ):
        raise Forbidden("Sandbox test endpoints: the Secretariat, or the registry under test for itself.")
    async with irx.db.read() as session:
        row = await repository.get_registry(await session.connection(), registry_id)
    if row is None or row["environment"] != IrxEnvironment.SANDBOX.value:
        raise NotFound(f"No sandbox registry {registry_id}.")


async def _registry_of(request: Request, reconciliation_id: str) -> str:
    irx: Interregistry = request.app.state.interregistry
    async with irx.db.read() as session:
        found = (
            await session.execute(
                select(reconciliation.c.registry_id).where(
                    reconciliation.c.reconciliation_id == reconciliation_id
                )
            )
        ).scalar()
    if found is None:
        raise NotFound(f"No reconciliation {reconciliation_id}.")
    return str(found)


@sandbox_router.post("", status_code=201)
async def sandbox_start(
    request: Request, principal: CurrentPrincipal, body: SandboxReconciliationStart
) -> dict[str, Any]:
    """A reconciliation started by the IR (as its daily schedule would), now."""
    await _sandbox_guard(request, principal, body.registry_id)
    return await _reconciliations(request).start_by_secretariat(
        _AS_IR, ReconciliationStart(registry_id=body.registry_id)
    )


@sandbox_router.post("/{reconciliation_id}/expire")
async def sandbox_expire(
    request: Request, principal: CurrentPrincipal, reconciliation_id: ReconciliationIdPath
) -> dict[str, Any]:
    """The awaited stage's `respond_by` becomes now and the deadline check runs (its 7006 decides)."""
    await _sandbox_guard(request, principal, await _registry_of(request, reconciliation_id))
    service = _reconciliations(request)
    now = service.clock()
    async with service.db.connect() as connection:
        await connection.execute(
            update(reconciliation)
            .where(
                reconciliation.c.reconciliation_id == reconciliation_id,
                reconciliation.c.respond_by.is_not(None),
            )
            .values(respond_by=now - timedelta(milliseconds=1))
        )
    await service.fail_due(now)
    return await service.get(_AS_IR, reconciliation_id)


@sandbox_router.post("/{reconciliation_id}/resolve")
async def sandbox_resolve(
    request: Request,
    principal: CurrentPrincipal,
    reconciliation_id: ReconciliationIdPath,
    body: SandboxResolve,
) -> dict[str, Any]:
    """The Secretariat's manual resolution, in the sandbox (case 302)."""
    await _sandbox_guard(request, principal, await _registry_of(request, reconciliation_id))
    resolved = await _reconciliations(request).resolve(
        _AS_IR, reconciliation_id, ReconciliationResolve(note=body.note, compensating_transaction_ids=[])
    )
    return resolved.model_dump(mode="json")


def install(app: FastAPI) -> None:
    """`app.state.conformance_runs` and the runs' routes; the sandbox levers unless the IR is production.
    Called by `create_app` after `reconciliation_router.install` (it needs `app.state.reconciliations`)."""
    irx: Interregistry = app.state.interregistry
    app.state.conformance_runs = ConformanceRuns(irx)
    app.include_router(runs_router)
    if irx.env is not IrxEnvironment.PRODUCTION:
        app.include_router(sandbox_router)
