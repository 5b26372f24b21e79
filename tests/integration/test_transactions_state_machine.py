"""A hypothesis state machine on PostgreSQL: random first transfers, transfers, uses and cancellations
across Parties, against a model of every account's total, with I1–I6 checked after every step.

One suite serves every example (sections cannot be created twice for a Party); each example starts its
model from the ledger's real totals, so examples chain on the same growing ledger.
"""

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from tests.integration._ledger_world import World, ledger_world

PARTIES = ("GHA", "CHE", "SWE")
USES = {
    "use_ndc": ("ndc_use", {"ndc_use_year": 2026}),
    "omge_cancellation": ("omge_cancellation", {}),
    "voluntary_cancellation": ("cancellation", {}),
}


class LedgerMachine(RuleBasedStateMachine):
    world: World
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coroutine)

    async def _total(self, account: str) -> int:
        answer = await self.world.ledger.get(
            f"/internal/v1/accounts/{account}/balance", headers=self.world.admin
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["held"]

    async def _used(self, party: str, kind: str) -> int:
        actors = self.world.parties[party]
        answer = await self.world.ledger.get(
            f"/v1/accounts/{actors.accounts[kind]}/holdings", headers=self.world.admin, params={"limit": 500}
        )
        return answer.json()["total"]

    @initialize()
    def start(self) -> None:
        self.held: dict[str, int] = {}
        self.used: dict[tuple[str, str], int] = {}
        for party in PARTIES:
            holding = self.world.parties[party].holding
            self.held[party] = self.run(self._total(holding))
            for kind, (account_type, _extra) in USES.items():
                self.used[(party, kind)] = self.run(self._used(party, account_type))

    @rule(
        origin=st.sampled_from(("GHA", "CHE")),
        receiver=st.sampled_from(PARTIES),
        quantity=st.integers(1, 40),
    )
    def first_transfer(self, origin: str, receiver: str, quantity: int) -> None:
        if receiver == origin:
            return
        destination = self.world.parties[receiver].holding
        self.run(self.world.first_transfer(origin, "CA0012", quantity, to_account=destination))
        self.held[receiver] += quantity

    @rule(sender=st.sampled_from(PARTIES), receiver=st.sampled_from(PARTIES), quantity=st.integers(1, 60))
    def transfer(self, sender: str, receiver: str, quantity: int) -> None:
        if sender == receiver:
            return
        actors = self.world.parties[sender]
        body = {
            "type": "transfer",
            "from_account": actors.holding,
            "to_account": self.world.parties[receiver].holding,
            "quantity": quantity,
        }
        answer = self.run(self.world.transact(actors, body, direct=True))
        if quantity <= self.held[sender]:
            assert answer.status_code == 201, answer.text
            self.held[sender] -= quantity
            self.held[receiver] += quantity
        else:
            assert answer.status_code == 422, answer.text
            assert [c["code"] for c in answer.json()["checks"]] == ["T01"]

    @rule(party=st.sampled_from(PARTIES), kind=st.sampled_from(sorted(USES)), quantity=st.integers(1, 30))
    def use_or_cancel(self, party: str, kind: str, quantity: int) -> None:
        actors = self.world.parties[party]
        body = {"type": kind, "from_account": actors.holding, "quantity": quantity, **USES[kind][1]}
        answer = self.run(self.world.transact(actors, body, direct=True, key=uuid.uuid4().hex))
        if quantity <= self.held[party]:
            assert answer.status_code == 201, answer.text
            self.held[party] -= quantity
            self.used[(party, kind)] += quantity
        else:
            assert answer.status_code == 422, answer.text

    @invariant()
    def ledger_matches_the_model_and_invariants_hold(self) -> None:
        if not hasattr(self, "held"):
            return
        for party in PARTIES:
            assert self.run(self._total(self.world.parties[party].holding)) == self.held[party], party
        answer = self.run(self.world.ledger.get("/v1/admin/invariants", headers=self.world.admin))
        report = answer.json()
        assert report["ok"], report["violations"]


async def _setup(world: World) -> None:
    for party in PARTIES:
        await world.add_party(party)
    await world.add_ca("CA0012", list(PARTIES))


@pytest.mark.postgres
def test_random_ledger_histories_keep_the_invariants(
    pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        world = loop.run_until_complete(stack.enter_async_context(ledger_world(pg_database, tmp_path)))
        loop.run_until_complete(_setup(world))

        class Machine(LedgerMachine):
            pass

        Machine.world = world
        Machine.loop = loop
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=10,
                stateful_step_count=15,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
            ),
        )
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
