"""The first-transfer saga with real processes on PostgreSQL (DESIGN §5): each side is SIGKILLed between
steps and restarted, and afterwards no ITMO exists twice, no MO is lost, and every first transfer ended
completed (none is left pending or reserved).

1. transactions is killed before the ARS calls it: the first transfer answers 202 (pending); transactions
   comes back and the ARS's resumer completes it.
2. ars kills itself right after committing the reservation (`REGISTRY_ARS_FAILPOINT=after_reserve`): the
   client's request dies; the restarted ars resumes it at startup.
3. ars kills itself right after the IR created the ITMOs, before marking its MOs (`after_call`): the
   restarted ars asks again with the same operation id and the IR replays its answer.
"""

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.processes import PROCESSES
from scripts.run import Suite, running_suite
from tests.support.databases import DatabaseFactory

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("processes")]

DEADLINE_SECONDS = 30
_FAST_SAGA = {
    "REGISTRY_SAGA_RESUME_SECONDS": "0.3",
    "REGISTRY_SAGA_RETRY_BASE_SECONDS": "0.1",
    "REGISTRY_SAGA_RETRY_MAX_SECONDS": "0.5",
}


def _token(gw: httpx.Client, client_id: str, secret: str) -> dict[str, str]:
    answer = gw.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _ok(answer: httpx.Response, *codes: int) -> Any:
    assert answer.status_code in (codes or (200, 201)), answer.text
    return answer.json()


def _client(gw: httpx.Client, admin: dict[str, str], party: str, role: str) -> dict[str, str]:
    made = _ok(
        gw.post(
            "/v1/clients", json={"name": f"{party} {role}", "party": party, "roles": [role]}, headers=admin
        )
    )
    return _token(gw, made["client_id"], made["client_secret"])


def _restart(suite: Suite, name: str, **env: str | None) -> None:
    if suite.children[name].poll() is None:
        suite.kill(name)
    for key, value in env.items():
        if value is None:
            suite.env.pop(key, None)
        else:
            suite.env[key] = value
    suite.restart(name)


def _until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"not within {DEADLINE_SECONDS}s: {what}")


def test_first_transfers_survive_sigkill_of_either_side(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    urls = {process.name: database_factory.empty_postgres(process.name) for process in PROCESSES}
    with (
        running_suite(tmp_path, urls, extra=_FAST_SAGA) as suite,
        httpx.Client(base_url=suite.gateway_url, timeout=15) as gw,
    ):
        env = suite.env
        admin = _token(gw, env["REGISTRY_BOOTSTRAP_CLIENT_ID"], env["REGISTRY_BOOTSTRAP_CLIENT_SECRET"])
        for party, ars in (("GHA", True), ("CHE", False)):
            _ok(
                gw.post(
                    "/v1/party-sections",
                    json={"party": party, "registry_id": f"{party}01", "ars": ars},
                    headers=admin,
                )
            )
            _ok(gw.post(f"/v1/party-sections/{party}/open", json={}, headers=admin))
        _ok(
            gw.post(
                "/v1/cooperative-approaches",
                json={"ca_id": "CA0012", "name": "A", "participants": ["GHA", "CHE"]},
                headers=admin,
            )
        )
        initiator = _client(gw, admin, "GHA", "initiator")
        official = _client(gw, admin, "GHA", "authorizing_official")
        che_viewer = _client(gw, admin, "CHE", "viewer")
        che_holding = next(
            a["account_id"]
            for a in _ok(
                gw.get("/v1/party-sections/CHE/accounts", headers=_client(gw, admin, "CHE", "party_admin"))
            )["items"]
            if a["type"] == "holding"
        )
        issue = {
            "ca_id": "CA0012",
            "vintage": 2024,
            "quantity": 300,
            "mitigation_type": "Emission reductions",
            "sector": "Energy generation",
            "activity_type": "Solar",
        }
        _ok(gw.post("/v1/ars/GHA/issuances", json=issue, headers=initiator))
        authorization = {
            "authorization_id": "GH-AUTH-7",
            "date": "2024-06-01",
            "ca_id": "CA0012",
            "purposes": "NDC",
            "sectors": ["Energy generation"],
            "activity_types": ["Solar"],
        }
        _ok(gw.post("/v1/ars/GHA/authorizations", json=authorization, headers=official))
        _ok(
            gw.post(
                "/v1/ars/GHA/authorizations/GH-AUTH-7/apply",
                json={"ca_id": "CA0012", "vintage": 2024, "quantity": 300},
                headers=official,
            )
        )
        body = {"authorization_id": "GH-AUTH-7", "quantity": 100, "to_account": che_holding}

        def send() -> httpx.Response:
            headers = {**initiator, "Idempotency-Key": uuid.uuid4().hex}
            try:
                return gw.post("/v1/ars/GHA/first-transfers", json=body, headers=headers)
            except httpx.TransportError as exc:  # the ARS died under the request
                return httpx.Response(599, json={"error": type(exc).__name__})

        def operations() -> list[dict]:
            return _ok(gw.get("/v1/ars/GHA/first-transfers", headers=initiator))["items"]

        def settled(count: int) -> list[dict] | None:
            try:
                found = operations()
            except (httpx.TransportError, AssertionError):
                return None
            done = [o for o in found if o["status"] == "completed"]
            return found if len(done) == count and len(found) == count else None

        # 1. The IR is down when the ARS calls it: pending, then completed once it is back.
        suite.kill("transactions")
        answer = send()
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "pending"
        suite.restart("transactions")
        _until(lambda: settled(1), "the first transfer completed after transactions came back")

        # 2. The ARS dies right after committing the reservation.
        _restart(suite, "ars", REGISTRY_ARS_FAILPOINT="after_reserve")
        answer = send()
        assert answer.status_code >= 500, answer.text
        assert suite.children["ars"].wait(timeout=10) != 0  # SIGKILLed by its failpoint
        _restart(suite, "ars", REGISTRY_ARS_FAILPOINT=None)
        _until(lambda: settled(2), "the reserved first transfer completed after the ARS restarted")

        # 3. The ARS dies after the IR created the ITMOs, before marking its MOs.
        _restart(suite, "ars", REGISTRY_ARS_FAILPOINT="after_call")
        answer = send()
        assert answer.status_code >= 500, answer.text
        assert suite.children["ars"].wait(timeout=10) != 0
        _restart(suite, "ars", REGISTRY_ARS_FAILPOINT=None)
        final = _until(lambda: settled(3), "the first transfer the IR had done completed after the restart")

        # Exactly 300 ITMOs in Switzerland, three transactions, each MO first transferred once.
        assert len({o["transaction_id"] for o in final}) == 3
        held = _ok(gw.get(f"/v1/accounts/{che_holding}/holdings", headers=che_viewer))
        assert held["total"] == 300
        blocks = _ok(gw.get("/v1/ars/GHA/blocks", headers=initiator))["items"]
        assert sum(b["quantity"] for b in blocks) == 300
        assert {b["state"] for b in blocks} == {"first_transferred"}
        report = _ok(gw.get("/v1/admin/invariants", headers=admin))
        assert report["ok"], report["violations"]
