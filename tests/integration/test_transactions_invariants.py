"""`GET /v1/admin/invariants` is not vacuous: tampering with the ledger's tables behind the service's back
shows up as the invariant it breaks (both backends)."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update

from services.transactions.models import blocks, journal, transactions
from tests.integration._ledger_world import World, ledger_world


@pytest.fixture
async def world(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[World]:
    async with ledger_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await built.add_ca("CA0012", ["GHA", "CHE"])
        yield built


async def _violated(world: World) -> dict[str, list[str]]:
    report = await world.invariants()
    found: dict[str, list[str]] = {}
    for violation in report["violations"]:
        found.setdefault(violation["invariant"], []).append(violation["message"])
    assert report["ok"] == (not found)
    return found


async def test_tampering_breaks_the_invariant_it_touches(world: World) -> None:
    gha, che = world.parties["GHA"], world.parties["CHE"]
    await world.first_transfer("GHA", "CA0012", 100, to_account=che.holding)
    sent = await world.transact(
        che, {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 30}
    )
    assert sent.status_code == 201
    transaction_id = sent.json()["transaction_id"]
    assert await _violated(world) == {}
    db = world.suite.services["transactions"].state.db

    # I6: a sealed journal entry rewritten (its hash no longer matches).
    async with db.connect() as connection:
        entry_id, payload = (
            await connection.execute(select(journal.c.id, journal.c.payload).order_by(journal.c.seq).limit(1))
        ).one()
        await connection.execute(
            update(journal).where(journal.c.id == entry_id).values(payload={**payload, "actor": "mallory"})
        )
    assert set(await _violated(world)) == {"I6"}
    async with db.connect() as connection:
        await connection.execute(update(journal).where(journal.c.id == entry_id).values(payload=payload))

    # I5: a completed transaction claiming more than its journal moved.
    async with db.connect() as connection:
        await connection.execute(
            update(transactions).where(transactions.c.transaction_id == transaction_id).values(quantity=31)
        )
    assert set(await _violated(world)) == {"I5"}
    async with db.connect() as connection:
        await connection.execute(
            update(transactions).where(transactions.c.transaction_id == transaction_id).values(quantity=30)
        )

    # I2: units that vanished from the current blocks (a block shrunk behind the ledger's back).
    async with db.connect() as connection:
        await connection.execute(
            update(blocks)
            .where(blocks.c.account_id == gha.holding)
            .values(last_serial=blocks.c.last_serial - 1)
        )
    assert set(await _violated(world)) == {"I2"}
    async with db.connect() as connection:
        await connection.execute(
            update(blocks)
            .where(blocks.c.account_id == gha.holding)
            .values(last_serial=blocks.c.last_serial + 1)
        )

    # I5: a reservation held by a transaction that is not pending.
    async with db.connect() as connection:
        await connection.execute(
            update(blocks)
            .where(blocks.c.account_id == gha.holding)
            .values(state="reserved", reserved_by=transaction_id)
        )
    violated = await _violated(world)
    assert set(violated) == {"I5"} and any("not pending" in m for m in violated["I5"])
    async with db.connect() as connection:
        await connection.execute(
            update(blocks).where(blocks.c.account_id == gha.holding).values(state="held", reserved_by=None)
        )
    assert await _violated(world) == {}
