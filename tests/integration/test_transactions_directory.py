"""The ledger's cache of party_sections lookups (services/transactions/directory.py), on both backends:
served from the cache once the feed is followed, never trusted when the follower is behind, and changes to
accounts, sections and settings honoured by the very next transfer."""

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.party_sections.service import PartySectionsService
from services.transactions.directory import Directory
from tests.integration._ledger_world import World, ledger_world


@pytest.fixture
async def world(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[World]:
    async with ledger_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await built.add_ca("CA0012", ["GHA", "CHE"])
        gha, che = built.parties["GHA"], built.parties["CHE"]
        await built.first_transfer("CHE", "CA0012", 1000, to_account=gha.holding)
        await built.first_transfer("GHA", "CA0012", 1000, to_account=che.holding)
        yield built


def _directory(world: World) -> Directory:
    directory: Directory = world.suite.services["transactions"].state.directory
    return directory


async def _transfer(world: World, party: str, to: str, quantity: int = 1) -> httpx.Response:
    actors = world.parties[party]
    body = {"type": "transfer", "from_account": actors.holding, "to_account": to, "quantity": quantity}
    return await world.transact(actors, body, direct=True)


async def test_a_followed_cache_serves_the_lookups_of_repeated_transfers(world: World) -> None:
    directory = _directory(world)
    directory.max_lag = 3600.0  # a loaded test machine must not make the follower look behind
    await directory.catch_up()
    gha, che = world.parties["GHA"], world.parties["CHE"]
    assert (await _transfer(world, "GHA", che.holding)).status_code == 201  # warms both accounts
    await directory.catch_up()
    misses, hits = directory.misses, directory.hits
    for _ in range(3):
        answer = await _transfer(world, "GHA", che.holding)
        assert answer.status_code == 201, answer.text
    assert directory.misses == misses
    assert directory.hits - hits == 6  # source and destination, three times
    assert await world.holdings_total(che, che.holding) == 1004
    assert await world.holdings_total(gha, gha.holding) == 996


async def test_blocking_an_account_stops_the_next_transfer_at_once(world: World) -> None:
    directory = _directory(world)
    gha, che = world.parties["GHA"], world.parties["CHE"]
    await directory.catch_up()
    assert (await _transfer(world, "GHA", che.holding)).status_code == 201
    await directory.catch_up()
    assert directory._live()  # the next lookup would come from the cache if nothing evicted it

    blocked = await world.gateway.post(f"/v1/accounts/{gha.holding}/block", json={}, headers=gha.admin)
    assert blocked.status_code == 200, blocked.text
    refused = await _transfer(world, "GHA", che.holding)
    assert refused.status_code == 422, refused.text
    assert "A02" in {check["code"] for check in refused.json()["checks"]}

    unblocked = await world.gateway.post(f"/v1/accounts/{gha.holding}/unblock", json={}, headers=gha.admin)
    assert unblocked.status_code == 200, unblocked.text
    assert (await _transfer(world, "GHA", che.holding)).status_code == 201


async def test_switching_four_eyes_on_applies_to_the_next_transfer(world: World) -> None:
    directory = _directory(world)
    gha, che = world.parties["GHA"], world.parties["CHE"]
    await directory.catch_up()
    assert (await _transfer(world, "GHA", che.holding)).json()["status"] == "completed"
    await directory.catch_up()
    await world.set_four_eyes(gha, True)
    answer = await _transfer(world, "GHA", che.holding)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "awaiting_approval"


async def test_the_feed_evicts_a_change_the_ledger_was_not_told_of(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _directory(world)
    await directory.stop()  # this test drives the follower itself
    gha = world.parties["GHA"]
    await directory.catch_up()
    assert (await directory.account(gha.holding)) is not None
    assert (await directory.account(gha.holding)).status.value == "open"  # type: ignore[union-attr]

    async def lost(self: PartySectionsService, party: str, account_id: str | None = None) -> None:
        return None  # the notification never arrives (transactions restarting, network)

    monkeypatch.setattr(PartySectionsService, "_tell_ledger", lost)
    blocked = await world.gateway.post(f"/v1/accounts/{gha.holding}/block", json={}, headers=gha.admin)
    assert blocked.status_code == 200, blocked.text
    stale = await directory.account(gha.holding)
    assert stale is not None and stale.status.value == "open"  # not told, not yet followed

    assert await directory.catch_up() >= 1
    fresh = await directory.account(gha.holding)
    assert fresh is not None and fresh.status.value == "blocked"


async def test_a_cache_whose_follower_is_behind_is_not_trusted(world: World) -> None:
    directory = _directory(world)
    await directory.stop()
    gha = world.parties["GHA"]
    await directory.catch_up()
    await directory.account(gha.holding)
    misses = directory.misses
    await directory.account(gha.holding)
    assert directory.misses == misses  # served from the cache

    now = directory.clock()
    directory.clock = lambda: now + directory.max_lag + 1  # the follower has not reached the feed's end since
    await directory.account(gha.holding)
    assert directory.misses == misses + 1


class _SlowPeers:
    """party_sections answering one lookup only when the test lets it (an in-flight lookup)."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()

    async def request(self, service: str, method: str, path: str, **_: Any) -> httpx.Response:
        await self.answer.wait()
        account = {
            "account_id": "GHA01-100-1",
            "party": "GHA",
            "registry_id": "GHA01",
            "type": "holding",
            "type_code": 100,
            "status": "open",
            "holder_entity_id": None,
            "section_status": "open",
            "four_eyes": False,
        }
        return httpx.Response(200, json=account)


async def test_a_lookup_that_raced_an_eviction_is_used_once_but_not_kept() -> None:
    peers = _SlowPeers()
    directory = Directory(peers, cache=True)  # type: ignore[arg-type]
    directory._synced_at = directory.clock()
    lookup = asyncio.create_task(directory.account("GHA01-100-1"))
    await asyncio.sleep(0)
    directory.evict("GHA", account_id="GHA01-100-1")  # the account changed while the answer was on its way
    peers.answer.set()
    assert (await lookup) is not None
    assert "GHA01-100-1" not in directory._accounts

    peers.answer.set()
    await directory.account("GHA01-100-1")
    assert "GHA01-100-1" in directory._accounts  # an undisturbed lookup is kept
