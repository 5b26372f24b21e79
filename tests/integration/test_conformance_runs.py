"""Conformance runs stored and judged by the IR, and the kit's reconciliation cases (INTERREGISTRY §11, §8;
issue 8), on both IR databases.

- Against the in-process IR and the simulator (poll loop running, driver over ASGI): cases 300–304 pass, the
  kit posts the report, and the IR corroborates each reconciliation case from its own records while its
  verdict stays `fail` (the report holds only those cases).
- Without a driver, the operator at the terminal plays the registry side: a scripted `ask` that does what
  each question says on the simulator passes case 153; 302 then takes the IR's `phantom_transfer`, which the
  IR's reconciliation cannot see today, and is reported `skipped` with that reason.
- Forged and foreign reports: a report claiming every mandatory case with subjects the IR never saw is stored
  `fail` with findings and `activate` refuses it; another registry's client, a malformed report and a
  repeated id are refused; reads are the Secretariat's and the registry's own; the stored verdict comes with
  the sandbox IR's attestation, which verifies with its `/jwks.json`.
- The production IR imports a sandbox verdict (Secretariat): a `pass` one lets `activate` of the production
  record take its id; a `fail` one, another registry's, a tampered report or a foreign signature do not.
"""

import asyncio
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conformance.kit import CASES, Status, run_kit
from conformance.kit.driver import terminal_operator
from conformance.simulator.config import Policy
from kit.jws import verify
from kit.jwt import KeySet, SigningKey
from services.transactions.interregistry.conformance_runs import (
    MANDATORY_CASES,
    SANDBOX_JWKS_ENV,
    Evidence,
    attest,
    judge,
)
from tests.integration._interregistry_world import interregistry_world
from tests.integration._kit_rig import Rig, kit_rig

pytestmark = pytest.mark.xdist_group("interregistry")

RUNS = "/v1/interregistry/conformance-runs"


@pytest.fixture
async def rig(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with kit_rig(make_database, tmp_path, monkeypatch) as built:
        yield built


async def test_reconciliation_cases_and_an_operator_against_the_simulator(rig: Rig) -> None:
    async with rig.gateway() as http:
        report = await run_kit(
            rig.config(), http=http, cases=(300, 301, 302, 303, 304), driver_http=rig.driver
        )
        failing = {r.number: (r.reason, r.hygiene) for r in report.cases if r.status is not Status.PASSED}
        assert not failing, failing
        # 302 took the simulator's `forget` path: the range frozen at the IR was refused 4006 on use.
        checks = {c.name: c.outcome for c in report.case(302).checks}
        assert checks["a use of the frozen range → 4006"] == "pass"
        assert report.case(301).subjects["reconciliations"] and report.case(301).subjects["messages"]
        stored = report.stored
        assert stored is not None and stored["stored"], stored
        assert (
            stored["conformance_run_id"] == report.conformance_run_id
            and stored["claimed_result"] == "incomplete"
        )
        # The IR's own verdict: the five cases corroborated; the mandatory ones not in the report fail it.
        assert stored["result"] == "fail"
        assert {n: stored["cases"][str(n)] for n in (300, 301, 302, 303)} == dict.fromkeys(
            (300, 301, 302, 303), "corroborated"
        )
        assert stored["cases"]["150"] == "not in the report"
        read = await http.get(f"{RUNS}/{report.conformance_run_id}", headers=rig.world.irx.admin)
        assert read.status_code == 200 and read.json()["report"]["cases"][0]["case"] == 300
    await rig.world.invariants_ok()
    await _without_a_driver_the_operator_answers(rig)


async def _without_a_driver_the_operator_answers(rig: Rig) -> None:
    """Case 153 with no driver: a scripted operator does what each question says on the simulator; one who
    never answers leaves the case `skipped` after `operator_timeout`."""
    asked: list[str] = []

    async def operator(question: str) -> str:
        """Does what the question says on the simulator, as the registry's operator would."""
        asked.append(question)
        policy = re.search(r"to `([a-z:0-9]+)`", question)
        if policy:
            await rig.simulator.set_policy(Policy.parse(policy.group(1)))
            return ""
        units = re.search(r"units (\S+) … (\S+)\?", question)
        assert units, question
        await asyncio.sleep(0.5)  # a person looks after the registry had a moment
        seen = await rig.simulator.units(units.group(1), units.group(2))
        return f"{seen['state']} {seen['quantity_held_in_range']}"

    async with rig.gateway() as http:
        report = await run_kit(rig.config(driver_url=None, operator=operator), http=http, cases=(153,))
    result = report.case(153)
    assert result.status is Status.PASSED, (result.reason, [c.as_json() for c in result.checks])
    # Told to stay silent once (153 leaves it so for 154), then asked what it holds: pending_in, then absent.
    assert sum("`silent`" in q for q in asked) == 1 and sum("STATE HELD" in q for q in asked) == 2
    assert any(e["method"] == "ASK" for e in result.evidence)

    async def mute(question: str) -> str:
        await asyncio.sleep(60)
        return ""

    async with rig.gateway() as http:
        silent = await run_kit(
            rig.config(driver_url=None, operator=mute, operator_timeout=0.2, store=False),
            http=http,
            cases=(153,),
        )
    assert (
        silent.case(153).status is Status.SKIPPED and "no answer from the operator" in silent.case(153).reason
    )
    # Without the simulator's `forget`, 302 takes the IR's phantom_transfer, which today's IR reconciliation
    # cannot see (no inbox position): reported skipped with that reason, never as the registry's fail.
    async with rig.gateway() as http:
        phantom = await run_kit(
            rig.config(driver_url=None, operator=operator, store=False), http=http, cases=(302,)
        )
    assert phantom.case(302).status is Status.SKIPPED, phantom.case(302).reason
    assert "did not see its own phantom transfer" in phantom.case(302).reason


def _forged(registry_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "conformance_run_id": str(uuid.uuid4()),
        "registry_id": registry_id,
        "mode": "registry",
        "result": "pass",
        "started_at": (now - timedelta(minutes=5)).isoformat(),
        "finished_at": now.isoformat(),
        "cases": [
            {
                "case": number,
                "status": "pass",
                "subjects": {
                    "messages": [str(uuid.uuid4())],
                    "transfers": [f"{registry_id}-T{number}"],
                    "reconciliations": [],
                },
            }
            for number in MANDATORY_CASES
        ],
    }


async def test_forged_and_foreign_reports(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with interregistry_world(make_database, tmp_path, monkeypatch) as world:
        await _forged_and_foreign(world)


async def _forged_and_foreign(world: Any) -> None:
    """A claim of every mandatory case with subjects the IR never saw; foreign clients; the attestation."""
    nor = (await world.connect("NOR01", status="testing")).headers
    che = (await world.connect("CHE01")).headers
    http = world.gateway
    forged = _forged("NOR01")
    stored = await http.post(RUNS, json=forged, headers=nor)
    assert stored.status_code == 201, stored.text
    verdict = stored.json()
    assert verdict["result"] == "fail" and verdict["claimed_result"] == "pass"
    assert "message" in verdict["cases"]["101"] and "transfer" in verdict["cases"]["150"]
    # The IR's verdict, not the claim, decides activation.
    refused = await world.lifecycle("NOR01", "activate", {"conformance_run_id": forged["conformance_run_id"]})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/conformance-run-required")
    assert (await http.post(RUNS, json=forged, headers=nor)).status_code == 409
    # Another registry's client cannot post or read it; a malformed report is refused, nothing stored.
    assert (await http.post(RUNS, json=_forged("NOR01"), headers=che)).status_code == 403
    assert (await http.get(f"{RUNS}/{forged['conformance_run_id']}", headers=che)).status_code == 404
    bad = dict(_forged("NOR01"), finished_at="yesterday")
    assert (await http.post(RUNS, json=bad, headers=nor)).status_code == 422
    mine = (await http.get(RUNS, headers=nor)).json()["items"]
    assert [(i["conformance_run_id"], i["result"]) for i in mine] == [(forged["conformance_run_id"], "fail")]
    assert (await http.get(RUNS, params={"registry": "NOR01"}, headers=che)).status_code == 403
    everything = (await http.get(RUNS, headers=world.admin)).json()["items"]
    assert forged["conformance_run_id"] in {i["conformance_run_id"] for i in everything}
    # The verdict travels to the production IR as the sandbox IR's signed statement.
    attestation = (await http.get(f"{RUNS}/{forged['conformance_run_id']}", headers=world.admin)).json()[
        "attestation"
    ]
    assert attestation["document"]["result"] == "fail" and attestation["document"]["env"] == "sandbox"
    keys = KeySet((await http.get("/v1/interregistry/jwks.json")).json())
    verify(attestation["document"], attestation["signature"], keys)


async def test_the_production_ir_imports_a_sandbox_verdict(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_key = SigningKey.generate()
    monkeypatch.setenv("REGISTRY_IRX_ENVIRONMENT", "production")
    monkeypatch.setenv(SANDBOX_JWKS_ENV, json.dumps({"keys": [sandbox_key.public_jwk]}))
    async with interregistry_world(make_database, tmp_path, monkeypatch) as world:
        for registry_id in ("CHE01", "NOR01"):
            await world.create_registry(
                registry_id,
                environment="production",
                jwks_url=f"https://{registry_id.lower()}.example/jwks.json",
                response_timeout_s=86400,
            )
            assert (await world.lifecycle(registry_id, "test")).status_code == 200

        def sandbox_verdict(registry_id: str, result: str) -> dict[str, Any]:
            report = dict(_forged(registry_id), result="pass")
            at = datetime.now(UTC)
            signed = attest(report["conformance_run_id"], registry_id, result, report, at, sandbox_key)
            return {"attestation": signed, "report": report}

        def imported(body: dict[str, Any]) -> Any:
            return world.gateway.post(f"{RUNS}/import", json=body, headers=world.admin)

        failed, other, passed = (
            sandbox_verdict("CHE01", "fail"),
            sandbox_verdict("NOR01", "pass"),
            sandbox_verdict("CHE01", "pass"),
        )
        tampered = json.loads(json.dumps(passed))
        tampered["report"]["cases"][0]["status"] = "pass (edited)"
        foreign = sandbox_verdict("CHE01", "pass")
        foreign["attestation"] = attest(
            foreign["report"]["conformance_run_id"], "CHE01", "pass", foreign["report"], datetime.now(UTC),
            SigningKey.generate(),
        )  # fmt: skip
        for body in (tampered, foreign):
            refused = await imported(body)
            assert refused.status_code == 422 and refused.json()["type"].endswith("/attestation-invalid"), (
                refused.text
            )
        registry_client = await world.token_headers(await world.new_registry_client("CHE01"))
        assert (
            await world.gateway.post(f"{RUNS}/import", json=passed, headers=registry_client)
        ).status_code == 403
        for body in (failed, other, passed):
            stored = await imported(body)
            assert stored.status_code == 201, stored.text
        assert (await imported(passed)).status_code == 409
        # A registry cannot post a run to the production IR: runs are judged where they ran.
        assert (
            await world.gateway.post(RUNS, json=passed["report"], headers=registry_client)
        ).status_code == 422
        for run in (failed, other):
            body = {"conformance_run_id": run["report"]["conformance_run_id"]}
            refused = await world.lifecycle("CHE01", "activate", body)
            assert refused.status_code == 422 and refused.json()["type"].endswith("/conformance-run-required")
        body = {"conformance_run_id": passed["report"]["conformance_run_id"]}
        activated = await world.lifecycle("CHE01", "activate", body)
        assert activated.status_code == 200 and activated.json()["status"] == "active", activated.text


def test_the_verdict_passes_only_what_the_ir_can_corroborate() -> None:
    """`judge` alone: every mandatory case with a subject the IR holds in the window and the expected
    outcome passes; one subject outside the window, an unverified message, or a missing case fails it."""
    # The IR's list of mandatory cases is the kit's.
    assert set(MANDATORY_CASES) == {n for n, made in CASES.items() if made.mandatory}
    now = datetime.now(UTC)
    window = (now - timedelta(minutes=10), now)
    evidence = Evidence(messages={"m": ("inbox.ack", "verified", now)})
    cases = []
    for number in MANDATORY_CASES:
        subjects: dict[str, list[str]] = {"messages": ["m"], "transfers": [], "reconciliations": []}
        if number in (150, 151, 152, 153, 155, 156, 157, 158, 160, 161, 164, 170, 171, 172):
            subjects["transfers"] = [f"T{number}"]
            status = {151: "rejected", 152: "rejected", 153: "terminated", 158: "rejected"}.get(
                number, "completed"
            )
            evidence.transfers[f"T{number}"] = (status, now)
        if number >= 300:
            subjects["reconciliations"] = [f"R{number}"]
            status = "completed_with_manual_intervention" if number == 302 else "completed"
            evidence.reconciliations[f"R{number}"] = (status, "registry:CHE01" if number == 301 else "x", now)
        cases.append({"case": number, "status": "pass", "subjects": subjects})
    assert judge({"cases": cases}, evidence, window).result == "pass"
    late = Evidence(evidence.messages, dict(evidence.transfers, T150=("completed", now + timedelta(hours=1))),
                    evidence.reconciliations)  # fmt: skip
    assert judge({"cases": cases}, late, window).findings == [
        "case 150: transfer T150 is not one the IR had with the registry during the run",
        "case 150: no named transfer is completed at the IR (found [])",
    ]
    unsigned = Evidence({"m": ("inbox.ack", "unsigned", now)}, evidence.transfers, evidence.reconciliations)
    assert judge({"cases": cases}, unsigned, window).findings == [
        "hygiene: message m (inbox.ack) was stored 'unsigned'"
    ]
    assert judge({"cases": cases[1:]}, evidence, window).findings == ["case 100: not in the report"]


async def test_the_terminal_operator_prints_the_question_and_reads_one_line() -> None:
    answers, shown = io.StringIO("held 3\npending_in 0\n"), io.StringIO()
    ask = terminal_operator(answers, shown)
    assert await ask("What does your registry hold?") == "held 3"
    assert await ask("And now?") == "pending_in 0"
    assert shown.getvalue().splitlines() == [
        "",
        "[conformance] What does your registry hold?",
        "",
        "[conformance] And now?",
    ]
