"""The first-transfer saga (DESIGN §5) under failures, in process, on both backends.

Each side "crashes" between steps: the ARS after reserving (a failpoint raises, the request dies, a fresh
ARS app on the same database resumes at startup) and after the IR answered (ditto); the IR is unreachable
before the call, or its answer is lost after it committed. After recovery: no ITMO created twice, no MO
lost, every first transfer ends completed or released.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.ars.app import create_app
from services.ars.saga import SimulatedCrash
from tests.integration._ars_world import ArsWorld, ars_world
from tests.support.apps import lifespan


class FlakyTransport(httpx.AsyncBaseTransport):
    """The transactions service as the ARS sees it: `down` (never reached) or `lose_answer` (reached,
    committed, then the connection drops before the answer arrives)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.mode: str | None = None
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        self.calls += 1
        if self.mode == "lose_answer":
            await response.aread()
            raise httpx.ReadError("connection reset", request=request)
        return response


@pytest.fixture
async def ars(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[ArsWorld]:
    async with ars_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await built.world.add_ca("CA0012", ["GHA", "CHE"])
        await built.issue("GHA", 1000)
        await built.authorize("GHA", "GH-AUTH-7")
        await built.apply("GHA", "GH-AUTH-7", 1000)
        yield built


def _flaky(app: Any) -> FlakyTransport:
    peers = app.state.peers
    flaky = FlakyTransport(peers.transports["transactions"])
    peers.transports = {**peers.transports, "transactions": flaky}
    peers._clients.pop("transactions", None)
    return flaky


def _crash_at(app: Any, wanted: str) -> None:
    def failpoint(point: str) -> None:
        if point == wanted:
            raise SimulatedCrash(point)

    app.state.saga.failpoint = failpoint


async def _restart_ars(ars: ArsWorld) -> None:
    """A new ARS process on the same database: its startup pass resumes what was left pending."""
    old = ars.world.suite.services["ars"]
    fresh = create_app(
        old.state.settings,
        token_verifier=old.state.token_verifier,
        peer_transports=old.state.peers.transports,
    )
    async with lifespan(fresh):
        await asyncio.wait_for(fresh.state.saga.first_pass.wait(), timeout=30)


async def _pending(ars: ArsWorld) -> list[dict]:
    answer = await ars.gateway.get(
        "/v1/ars/GHA/first-transfers", params={"status": "pending"}, headers=ars.parties["GHA"].actors.viewer
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def _assert_consistent(ars: ArsWorld, itmos: int) -> None:
    """No MO lost, no ITMO twice, nothing left pending."""
    blocks = await ars.blocks("GHA")
    assert sum(b["quantity"] for b in blocks) == 1000
    assert not [b for b in blocks if b["reserved"]]
    assert {b["state"] for b in blocks} <= {
        "pending_authorization",
        "authorized",
        "first_transferred",
        "cancelled",
    }
    first_transferred = sum(b["quantity"] for b in blocks if b["state"] == "first_transferred")
    assert first_transferred == itmos
    held = await ars.holdings("CHE", ars.parties["CHE"].holding)
    assert sum(b["quantity"] for b in held) == itmos
    assert await _pending(ars) == []
    report = await ars.world.invariants()
    assert report["ok"], report["violations"]


def _ndc(ars: ArsWorld, quantity: int) -> dict:
    return {"authorization_id": "GH-AUTH-7", "quantity": quantity, "to_account": ars.parties["CHE"].holding}


async def test_ars_crashes_after_reserving_and_resumes_at_restart(ars: ArsWorld) -> None:
    app = ars.world.suite.services["ars"]
    _crash_at(app, "after_reserve")
    answer = await ars.first_transfer("GHA", _ndc(ars, 100), expect=500)
    app.state.saga.failpoint = None
    [pending] = await _pending(ars)
    assert pending["mo_blocks"] == [
        {"ca_id": "CA0012", "origin_registry_id": "GHA01", "first": 1, "last": 100}
    ]
    assert {(b["first"], b["state"], b["reserved"]) for b in await ars.blocks("GHA")} == {
        (1, "authorized", True),
        (101, "authorized", False),
    }
    await _restart_ars(ars)
    await _assert_consistent(ars, 100)
    assert answer.status_code == 500


async def test_ars_crashes_after_the_ir_answered_and_never_creates_twice(ars: ArsWorld) -> None:
    app = ars.world.suite.services["ars"]
    _crash_at(app, "after_call")
    key = "crash-after-call"
    await ars.first_transfer("GHA", _ndc(ars, 100), key=key, expect=500)
    app.state.saga.failpoint = None
    assert len(await _pending(ars)) == 1
    assert sum(b["quantity"] for b in await ars.holdings("CHE", ars.parties["CHE"].holding)) == 100
    await _restart_ars(ars)  # asks the IR again: it replays its first answer
    await _assert_consistent(ars, 100)
    # The client's retry with the same key sees the completed first transfer.
    replay = await ars.first_transfer("GHA", _ndc(ars, 100), key=key)
    assert replay.json()["status"] == "completed"


async def test_ir_unreachable_then_back(ars: ArsWorld) -> None:
    app = ars.world.suite.services["ars"]
    flaky = _flaky(app)
    flaky.mode = "down"
    answer = await ars.first_transfer("GHA", _ndc(ars, 100), expect=202)
    operation = answer.json()
    assert operation["status"] == "pending" and operation["transaction_id"] is None
    # Still down: the resumer tries and leaves it pending (backoff grows).
    await app.state.saga.resume(everything=True)
    assert len(await _pending(ars)) == 1
    flaky.mode = None
    await app.state.saga.resume(everything=True)
    await _assert_consistent(ars, 100)


async def test_ir_answer_lost_after_commit(ars: ArsWorld) -> None:
    app = ars.world.suite.services["ars"]
    flaky = _flaky(app)
    flaky.mode = "lose_answer"
    answer = await ars.first_transfer("GHA", _ndc(ars, 100), expect=202)
    assert flaky.calls == 1
    flaky.mode = None
    await app.state.saga.resume(everything=True)
    assert flaky.calls == 2
    await _assert_consistent(ars, 100)
    done = await ars.gateway.get(
        f"/v1/ars/GHA/first-transfers/{answer.json()['operation_id']}",
        headers=ars.parties["GHA"].actors.viewer,
    )
    assert done.json()["status"] == "completed"


async def test_definite_refusal_releases_the_mos(ars: ArsWorld) -> None:
    app = ars.world.suite.services["ars"]
    flaky = _flaky(app)
    flaky.mode = "down"
    answer = await ars.first_transfer("GHA", _ndc(ars, 100), expect=202)
    # Meanwhile the acquiring Party's section is suspended: the IR will refuse (T10) for good.
    suspended = await ars.gateway.post("/v1/party-sections/CHE/suspend", json={}, headers=ars.admin)
    assert suspended.status_code == 200, suspended.text
    flaky.mode = None
    await app.state.saga.resume(everything=True)
    released = await ars.gateway.get(
        f"/v1/ars/GHA/first-transfers/{answer.json()['operation_id']}",
        headers=ars.parties["GHA"].actors.viewer,
    )
    body = released.json()
    assert body["status"] == "released" and [c["code"] for c in body["checks"]] == ["T10"]
    # The MOs are authorized again, as one block.
    assert [(b["first"], b["last"], b["state"]) for b in await ars.blocks("GHA")] == [(1, 1000, "authorized")]
    await _assert_consistent(ars, 0)
    types = [e["type"] for e in await ars.events()]
    assert "first_transfer.released" in types and "first_transfer.completed" not in types
