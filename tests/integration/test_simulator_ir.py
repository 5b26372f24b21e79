"""The reference simulator against the real IR pieces, in process, on both IR databases: onboarding through
the gateway with the bootstrap client, a signed `hello`, the inbox (the IR's `registry.status_changed`
messages) verified against `/v1/interregistry/jwks.json`, processed exactly once and acknowledged, the seq
persisted across a restart and resumed after a restore drill (1007 → hello → above `last_seq_received`),
and a tampered inbox item refused.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conformance.simulator import InboxItemRefused, SimulatedCrash, Simulator, SimulatorConfig
from conformance.simulator.app import create_app
from conformance.simulator.engine import load_key
from conformance.simulator.onboard import load_or_onboard
from conformance.simulator.store import Store, processed
from tests.integration._interregistry_world import World, interregistry_world
from tests.support.suite import BOOTSTRAP_ID, BOOTSTRAP_SECRET

pytestmark = pytest.mark.xdist_group("interregistry")

RID = "CHE01"


@pytest.fixture
async def world(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    async with interregistry_world(make_database, tmp_path, monkeypatch) as made:
        yield made


class _Tamper(httpx.AsyncBaseTransport):
    """The gateway, except that inbox pages come back with one item's body changed after the IR signed it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.active = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not self.active or request.url.path != "/v1/interregistry/inbox":
            return response
        page = json.loads(await response.aread())
        for item in page["items"]:
            if item["position"] == 2:
                item["message"]["body"]["note"] = "changed in transit"
        return httpx.Response(response.status_code, json=page)


class Sims:
    """Simulators over one SQLite file, talking to the in-process gateway (a new one is a restart)."""

    def __init__(self, world: World, tmp: Path) -> None:
        self.world = world
        self.tmp = tmp
        self.credentials: dict[str, str] = {}
        self.running: list[Simulator] = []

    def config(self, **changes: Any) -> SimulatorConfig:
        values: dict[str, Any] = {
            "registry_id": RID,
            "ir_url": "http://gateway",
            "client_id": self.credentials.get("client_id", ""),
            "client_secret": self.credentials.get("client_secret", ""),
            "db_path": self.tmp / "sim" / "che01.sqlite",
            "retry_seconds": 2.0,
            "retry_initial": 0.01,
            "retry_max": 0.05,
        }
        values.update(changes)
        return SimulatorConfig(**values)

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.world.suite.gateway)

    async def onboard(self) -> None:
        jwks = {"keys": [load_key(self.config()).public_jwk]}
        self.credentials = await load_or_onboard(
            "http://gateway",
            admin_id=BOOTSTRAP_ID,
            admin_secret=BOOTSTRAP_SECRET,
            registry_id=RID,
            jwks=jwks,
            transport=self.transport,
        )

    async def start(self, transport: httpx.AsyncBaseTransport | None = None, **changes: Any) -> Simulator:
        def crash(code: int) -> None:
            raise SimulatedCrash(code)

        sim = Simulator(self.config(**changes), transport=transport or self.transport, exit=crash)
        await sim.open()
        self.running.append(sim)
        return sim

    async def stop(self, sim: Simulator) -> None:
        await sim.close()
        self.running.remove(sim)


@pytest.fixture
async def sims(world: World, tmp_path: Path) -> AsyncIterator[Sims]:
    made = Sims(world, tmp_path)
    await made.onboard()
    yield made
    for sim in list(made.running):
        await sim.close()


async def _ir_registry(world: World) -> dict[str, Any]:
    answer = await world.gateway.get(f"/v1/interregistry/registries/{RID}", headers=world.admin)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _log(world: World, direction: str) -> list[dict[str, Any]]:
    answer = await world.gateway.get(
        "/v1/interregistry/messages",
        params={"registry": RID, "direction": direction, "limit": 1000},
        headers=world.admin,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def test_onboarded_simulator_says_hello_and_processes_status_changes_once(
    world: World, sims: Sims
) -> None:
    record = await _ir_registry(world)
    assert record["status"] == "active" and record["environment"] == "sandbox"
    assert record["jwks"] == {"keys": [load_key(sims.config()).public_jwk]}
    sim = await sims.start()
    hello = await sim.hello()
    assert hello["version"] == "1.0" and hello["registry_status"] == "active"
    assert hello["inbox"]["last_position"] == 2  # onboarding → testing → active
    # The IR verified the hello's signature against the key onboarding put on the record.
    [logged] = [m for m in await _log(world, "registry_to_ir") if m["type"] == "hello"]
    assert logged["verification"] == "verified" and logged["kid"] == sim.public_jwks()["keys"][0]["kid"]

    assert await sim.poll_once() == 2
    snapshot = await sim.snapshot()
    assert snapshot["inbox_cursor"] == 2 and snapshot["acked_position"] == 2
    assert snapshot["registry_status"] == "active"
    assert [(m["type"], m["seq"], m["status"]) for m in snapshot["outbox"]] == [("inbox.ack", 1, "answered")]
    assert (await _ir_registry(world))["last_seq_received"] == 1
    assert await sim.poll_once() == 0  # nothing new: no second ack either
    assert len((await sim.snapshot())["outbox"]) == 1

    # A lifecycle move writes registry.status_changed to the inbox; the simulator follows it.
    assert (await world.lifecycle(RID, "suspend")).status_code == 200
    assert await sim.poll_once() == 1
    snapshot = await sim.snapshot()
    assert snapshot["registry_status"] == "suspended" and snapshot["acked_position"] == 3

    # Replay from an old cursor (a restored backup, F13): every item is read again, none applied twice.
    async with sim.store.write() as connection:
        await Store.set_state(connection, inbox_cursor=0, ack_queued=0)
    assert await sim.poll_once() == 3
    async with sim.store.read() as connection:
        outcomes = (await connection.execute(select(processed.c.position, processed.c.outcome))).all()
    assert sorted(outcomes) == [(1, "status testing"), (2, "status active"), (3, "status suspended")]
    assert (await sim.snapshot())["acked_position"] == 3
    # Every message the simulator sent was signed with its key and verified by the IR, seq increasing.
    sent = [m for m in await _log(world, "registry_to_ir") if m["type"] != "hello"]
    assert all(m["verification"] == "verified" for m in sent)
    assert [m["seq"] for m in sent] == sorted({m["seq"] for m in sent})


async def test_seq_survives_a_restart_and_resumes_above_the_ir_after_a_restore_drill(
    world: World, sims: Sims
) -> None:
    sim = await sims.start()
    await sim.hello()
    await sim.poll_once()  # ack: seq 1
    await sims.stop(sim)
    assert (await world.lifecycle(RID, "suspend")).status_code == 200

    sim = await sims.start()  # a restart over the same SQLite file
    assert (await sim.snapshot())["last_seq"] == 1
    await sim.hello()
    await sim.poll_once()  # ack: seq 2
    assert (await _ir_registry(world))["last_seq_received"] == 2

    # Restore drill (conformance 172): the seq goes back to 0; the IR says 1007; hello; continue above 2.
    await sim.restore_drill()
    assert (await world.lifecycle(RID, "reactivate")).status_code == 200
    await sim.poll_once()
    snapshot = await sim.snapshot()
    assert [(m["seq"], m["status"]) for m in snapshot["outbox"]] == [
        (1, "answered"),
        (2, "answered"),
        (3, "answered"),
    ]
    assert snapshot["acked_position"] == 4
    assert (await _ir_registry(world))["last_seq_received"] == 3

    # The ignore-seq bug: the same drill leaves the message refused and the IR's seq where it was.
    await sims.stop(sim)
    buggy = await sims.start(bugs=frozenset({"ignore-seq"}))
    await buggy.restore_drill()
    assert (await world.lifecycle(RID, "suspend")).status_code == 200
    await buggy.poll_once()
    assert [m["status"] for m in (await buggy.snapshot())["outbox"]][-1] == "refused"
    assert (await _ir_registry(world))["last_seq_received"] == 3


async def test_a_tampered_inbox_item_is_refused_and_not_acknowledged(world: World, sims: Sims) -> None:
    tamper = _Tamper(sims.transport)
    sim = await sims.start(transport=tamper)
    await sim.hello()
    with pytest.raises(InboxItemRefused) as refused:
        await sim.poll_once()
    assert refused.value.position == 2 and "signature" in refused.value.reason
    snapshot = await sim.snapshot()
    assert snapshot["inbox_cursor"] == 1 and snapshot["acked_position"] == 1  # item 1 was genuine
    assert (await _ir_registry(world))["last_seq_received"] == 1
    tamper.active = False
    assert await sim.poll_once() == 1
    assert (await sim.snapshot())["acked_position"] == 2


async def test_driver_app_runs_the_loop_against_the_ir(world: World, sims: Sims) -> None:
    """The app's lifespan says hello and polls in the background; the driver shows what it did."""
    sim = Simulator(sims.config(poll_interval=0.05), transport=sims.transport)
    app = create_app(sim)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
        async with client:
            for _ in range(200):
                state = (await client.get("/conformance/v1/state")).json()
                if state["acked_position"] == 2:
                    break
                await asyncio.sleep(0.05)
            assert state["acked_position"] == 2 and state["registry_status"] == "active"
            assert (await client.get("/.well-known/jwks.json")).json() == sim.public_jwks()


async def test_the_ir_can_fetch_the_simulators_keys_from_its_jwks_url(world: World, tmp_path: Path) -> None:
    """A record with `jwks_url` (instead of inline keys) pointing at the simulator's `/.well-known/jwks.json`:
    the IR fetches the key from the simulator's app and verifies its signed messages with it."""
    sims = Sims(world, tmp_path)
    await world.create_registry(RID, jwks_url="http://che01.test/.well-known/jwks.json")
    for action in ("test", "activate"):
        assert (await world.lifecycle(RID, action)).status_code == 200
    client = await world.new_registry_client(RID)
    sims.credentials = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
    sim = await sims.start()
    try:
        world.service.jwks_transport = httpx.ASGITransport(app=create_app(sim, run_loops=False))
        assert (await sim.hello())["registry_status"] == "active"
        assert await sim.poll_once() == 2
        assert (await _ir_registry(world))["last_seq_received"] == 1
        [ack] = [m for m in await _log(world, "registry_to_ir") if m["type"] == "inbox.ack"]
        assert ack["verification"] == "verified" and ack["kid"] == sim.public_jwks()["keys"][0]["kid"]
    finally:
        await sims.stop(sim)
