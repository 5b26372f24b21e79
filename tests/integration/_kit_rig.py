"""The conformance kit's test rig: the in-process IR (GHA's section, CA0012 with GHA and CHE) and the
reference simulator CHE01 onboarded into it, its poll loop running and its driver served over ASGI."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.kit import KitConfig
from conformance.simulator import Simulator, SimulatorConfig
from conformance.simulator.app import create_app as simulator_app
from conformance.simulator.engine import load_key
from conformance.simulator.onboard import load_or_onboard
from tests.integration._interregistry_world import TransferWorld, transfer_world
from tests.support.suite import BOOTSTRAP_ID, BOOTSTRAP_SECRET

__all__ = ["Rig", "kit_rig"]


@dataclass
class Rig:
    world: TransferWorld
    simulator: Simulator
    driver: httpx.AsyncClient
    holding: str
    credentials: dict[str, str]

    def config(self, **changes: Any) -> KitConfig:
        """The kit's configuration for CHE01 in mode `ir` against GHA's section, with `changes`."""
        made = KitConfig(
            ir_url="http://gateway",
            registry_id="CHE01",
            client_id=self.credentials["client_id"],
            client_secret=self.credentials["client_secret"],
            signing_key=load_key(self.simulator.config),
            mode="ir",
            driver_url="http://driver",
            ir_section="GHA01",
            ir_account=self.holding,
            ca_id="CA0012",
            vintage=2024,
        )
        return replace(made, **changes)

    def gateway(self) -> httpx.AsyncClient:
        """A client of the IR's gateway (over ASGI), as the kit reaches it."""
        transport = httpx.ASGITransport(app=self.world.irx.suite.gateway)
        return httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30)


@asynccontextmanager
async def kit_rig(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with transfer_world(make_database, tmp_path, monkeypatch) as world:
        gha = await world.ledger.add_party("GHA")
        await world.ledger.add_ca("CA0012", ["GHA", "CHE"])
        config = SimulatorConfig(
            registry_id="CHE01",
            ir_url="http://gateway",
            client_id="",
            client_secret="",
            db_path=tmp_path / "sim" / "che01.sqlite",
            poll_interval=0.1,
            retry_seconds=10.0,
            retry_initial=0.05,
            retry_max=0.2,
        )
        credentials = await load_or_onboard(
            "http://gateway",
            admin_id=BOOTSTRAP_ID,
            admin_secret=BOOTSTRAP_SECRET,
            registry_id="CHE01",
            jwks={"keys": [load_key(config).public_jwk]},
            transport=httpx.ASGITransport(app=world.irx.suite.gateway),
        )
        simulator = Simulator(
            replace(config, client_id=credentials["client_id"], client_secret=credentials["client_secret"]),
            transport=httpx.ASGITransport(app=world.irx.suite.gateway),
        )
        await simulator.open()
        stop = asyncio.Event()
        loop = asyncio.create_task(simulator.run(stop))
        app = simulator_app(simulator, run_loops=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://driver", timeout=30
        ) as driver:
            try:
                yield Rig(world, simulator, driver, gha.holding, credentials)
            finally:
                stop.set()
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
                await simulator.close()
