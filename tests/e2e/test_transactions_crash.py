"""Crash safety of the ledger (issue 4 §10): transfers through the gateway while the transactions process
is SIGKILLed and restarted, on PostgreSQL, with the real processes of `make run`.

Four concurrent clients each send 60 transfers (240 in all, 1–3 units each, half to another Party, half
internal) with an Idempotency-Key per transfer; the transactions process is SIGKILLed three times in the
middle of the traffic (after about 30, 90 and 150 transfers were answered) and restarted with the same
environment; besides, every tenth transfer's first attempt times out on the client side after 5 ms while
the server carries on. A client whose attempt ends in an error (a timeout, a transport error, 503 while the
process is down, 409 while the key is in flight or a killed attempt's key is still leased) sends it again
with the same key and body until it gets an answer: a typical run sees about 130 503s, 110–170 409s and 23
timeouts over some 30 transfers, about 20 of which end in a replay of an answer the client never saw. Then: every transfer was answered 201 with its own transaction; sending it once more replays the
same transaction id; each is `completed` at `GET /v1/transactions/{id}`, with its units in the destination
account; each source account shows exactly one completed transaction per transfer (nothing twice, nothing
rejected) and the balances add up; and `GET /v1/admin/invariants` is ok (I1–I6, the journal chain sealed
by the restarted process's sealer included).
"""

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.ledger_world import RemoteWorld
from scripts.processes import PROCESSES
from scripts.run import Suite, running_suite
from tests.support.databases import DatabaseFactory

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("processes")]

CLIENTS = 4
TRANSFERS_PER_CLIENT = 60
KILL_AFTER = (30, 90, 150)
START_UNITS = 1000
#: A killed attempt's Idempotency-Key is taken over by a retry after this (the default is 30 s).
LEASE_SECONDS = 2
RETRY_DEADLINE_SECONDS = 30
#: Every tenth transfer's first attempt gives up after 5 ms (a client-side timeout; the server carries on).
IMPATIENT_EVERY = 10
IMPATIENT_SECONDS = 0.005


@dataclass
class Sent:
    key: str
    body: dict[str, Any]
    answer: dict[str, Any]
    troubled: int
    replayed: bool


class Traffic:
    def __init__(self) -> None:
        self.answered = 0
        self.kills = 0
        self.outcomes: Counter[str] = Counter()  # failed attempts by status code or transport error
        self.reached = {threshold: asyncio.Event() for threshold in KILL_AFTER}

    def answer(self) -> None:
        self.answered += 1
        if self.answered in self.reached:
            self.reached[self.answered].set()


async def _send(
    gateway: httpx.AsyncClient,
    headers: dict[str, str],
    body: dict[str, Any],
    key: str,
    traffic: Traffic,
    *,
    impatient: bool,
) -> tuple[httpx.Response, int]:
    """POST until the transfer gets an answer (201 or a 422 refusal), always with the same key and body.

    An impatient client gives up on its first attempt after a few milliseconds, whatever the server does.
    """
    troubled = 0
    deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
    while True:
        timeout = IMPATIENT_SECONDS if impatient and troubled == 0 else 10.0
        try:
            answer = await gateway.post(
                "/v1/transactions", json=body, headers={**headers, "Idempotency-Key": key}, timeout=timeout
            )
            if answer.status_code in (201, 422):
                return answer, troubled
            traffic.outcomes[str(answer.status_code)] += 1
        except httpx.TransportError as error:
            traffic.outcomes[type(error).__name__] += 1
        troubled += 1
        assert time.monotonic() < deadline, f"{key} got no answer in {RETRY_DEADLINE_SECONDS} s"
        await asyncio.sleep(0.05)


async def _client(
    world: RemoteWorld, index: int, source: str, destinations: list[str], traffic: Traffic
) -> list[Sent]:
    che = world.parties["CHE"]
    sent = []
    for n in range(TRANSFERS_PER_CLIENT):
        body = {
            "type": "transfer",
            "from_account": source,
            "to_account": destinations[n % len(destinations)],
            "quantity": 1 + (n + index) % 3,
        }
        key = f"crash-{index}-{n}-{uuid.uuid4().hex[:8]}"
        impatient = n % IMPATIENT_EVERY == index % IMPATIENT_EVERY
        answer, troubled = await _send(world.gateway, che.initiator, body, key, traffic, impatient=impatient)
        assert answer.status_code == 201, answer.text
        traffic.answer()
        replayed = answer.headers.get("idempotent-replayed") == "true"
        sent.append(Sent(key, body, answer.json(), troubled, replayed))
    return sent


async def _killer(suite: Suite, traffic: Traffic) -> None:
    for threshold in KILL_AFTER:
        await traffic.reached[threshold].wait()
        await asyncio.sleep(random.uniform(0.0, 0.03))  # somewhere inside the next requests
        suite.kill("transactions")
        traffic.kills += 1
        await asyncio.to_thread(suite.restart, "transactions")


async def _transactions_of(
    gateway: httpx.AsyncClient, headers: dict[str, str], account: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"account": account, "limit": 200, **({"cursor": cursor} if cursor else {})}
        page = await gateway.get("/v1/transactions", params=params, headers=headers)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items


async def _scenario(suite: Suite) -> None:
    limits = httpx.Limits(max_connections=32)
    async with (
        httpx.AsyncClient(base_url=suite.gateway_url, timeout=10, limits=limits) as gateway,
        httpx.AsyncClient(base_url=suite.url_of("transactions"), timeout=10) as transactions,
    ):
        world = RemoteWorld(gateway, transactions, suite.env)
        await world.login()
        gha = await world.add_party("GHA")
        che = await world.add_party("CHE", extra_holdings=CLIENTS)
        await world.add_ca("CA0012", ["GHA", "CHE"])
        sources = che.holdings[1:]
        for source in sources:
            await world.first_transfer("GHA", "CA0012", START_UNITS, source)
        destinations = [gha.holding, che.holding]  # cross-Party and internal; they only ever receive

        traffic = Traffic()
        killer = asyncio.create_task(_killer(suite, traffic))
        results = await asyncio.gather(
            *(_client(world, i, source, destinations, traffic) for i, source in enumerate(sources))
        )
        await killer
        assert traffic.kills == len(KILL_AFTER)
        assert sum(traffic.outcomes.values()) > 0, "no attempt failed: the test exercised nothing"
        sent = [s for per_client in results for s in per_client]
        assert len(sent) == CLIENTS * TRANSFERS_PER_CLIENT

        # Every 201 is a distinct, completed transaction that moved exactly what was asked.
        ids = [s.answer["transaction_id"] for s in sent]
        assert len(set(ids)) == len(ids)
        for s in sent:
            assert s.answer["status"] == "completed"
            assert s.answer["quantity"] == s.body["quantity"]

        # Retries with the same key and body replay the original answer (same transaction id).
        gate = asyncio.Semaphore(8)

        async def replay_and_read(s: Sent) -> None:
            async with gate:
                again = await gateway.post(
                    "/v1/transactions", json=s.body, headers={**che.initiator, "Idempotency-Key": s.key}
                )
                assert again.status_code == 201, again.text
                assert again.headers.get("idempotent-replayed") == "true"
                assert again.json()["transaction_id"] == s.answer["transaction_id"]
                stored = await gateway.get(
                    f"/v1/transactions/{s.answer['transaction_id']}", headers=world.admin
                )
                assert stored.status_code == 200, stored.text
                assert stored.json()["status"] == "completed"
                assert stored.json()["blocks"] == s.answer["blocks"]
                # The units are where the transfer put them (destinations never send anything on).
                for block in s.answer["blocks"]:
                    for unique_id in (block["unique_id_first"], block["unique_id_last"]):
                        unit = await gateway.get(f"/v1/units/{unique_id}", headers=world.admin)
                        assert unit.status_code == 200, unit.text
                        held = unit.json()["block"]
                        assert (held["account_id"], held["state"]) == (s.body["to_account"], "held")

        await asyncio.gather(*(replay_and_read(s) for s in sent))

        # Exactly one effect per transfer, even for those whose attempts were cut by a kill.
        for index, source in enumerate(sources):
            listed = await _transactions_of(gateway, world.admin, source)
            mine = [s for s in sent if s.body["from_account"] == source]
            listed = [t for t in listed if t["from_account"] == source]  # not the first transfer in
            assert sorted(t["transaction_id"] for t in listed) == sorted(
                s.answer["transaction_id"] for s in mine
            ), f"client {index}: the ledger's transactions are not exactly the answered ones"
            assert {t["status"] for t in listed} == {"completed"}
        totals = {}
        for account in [*sources, *destinations]:
            holdings = await gateway.get(f"/v1/accounts/{account}/holdings", headers=world.admin)
            assert holdings.status_code == 200, holdings.text
            totals[account] = holdings.json()["total"]
        for source in sources:
            spent = sum(s.body["quantity"] for s in sent if s.body["from_account"] == source)
            assert totals[source] == START_UNITS - spent
        for destination in destinations:
            assert totals[destination] == sum(
                s.body["quantity"] for s in sent if s.body["to_account"] == destination
            )

        report = await world.invariants()
        assert report["ok"], report["violations"]
        assert report["journal_entries"] > len(sent)


def test_transfers_survive_sigkill_of_the_transactions_process(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    urls = {process.name: database_factory.empty_postgres(process.name) for process in PROCESSES}
    extra = {
        "REGISTRY_IDEMPOTENCY_LEASE_SECONDS": str(LEASE_SECONDS),
        "REGISTRY_RATE_LIMIT_PER_SECOND": "100000",
        "REGISTRY_RATE_LIMIT_BURST": "100000",
    }
    with running_suite(tmp_path, urls, extra) as suite:
        asyncio.run(_scenario(suite))
