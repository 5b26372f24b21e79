"""`python -m bench.ledger`: the ITMO ledger's figures on PostgreSQL (issue 4); prints them, gates nothing.

1. Starts the real processes as `make run` does, each on a scratch PostgreSQL database (dropped at the end),
   with the gateway's rate limits lifted (one client per Party drives all the load).
2. Builds the world through the public API: 10 Parties with 100 holding accounts each (1,000 accounts), one
   initiator client per Party, two cooperative approaches with every Party participating. Then loads the
   ledger in bulk into the transactions database (COPY after the migrations, then ANALYZE): 100,000 blocks
   of 10 units spread over the 1,000 accounts (neighbouring serials never in one account, so nothing
   coalesces), one account fragmented into 100,000 one-unit blocks and one holding a single block.
3. Transfers of one unit between random accounts (another Party or the same), each client with its own
   source accounts, at 1, 4 and 16 concurrent clients, through the gateway and directly against the
   transactions service: transfers/s and p50/p95/p99 latency.
4. Fragmentation: sequential transfers out of the fragmented account vs out of the single-block one,
   directly against the service; the ratio of the medians (issue target: at most 2).
5. The raw PostgreSQL ceiling: pgbench running one transfer's SQL (lock the lowest block, shrink it, insert
   the new block, the transaction and two journal rows) at 1, 4 and 16 clients on a scratch copy of the
   schema holding 100,000 blocks; our transfers/s as a share of it (issue target: 25% at 16 clients).
6. `GET /v1/admin/invariants` over the whole bench ledger, timed.

The load generator, the five processes and PostgreSQL share the machine's cores, so the figures are a floor,
comparable between runs on one machine. PostgreSQL: `REGISTRY_TEST_POSTGRES_URL` (the tests' server) or
postgres@127.0.0.1:5432.
"""

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
from sqlalchemy.engine import make_url

from kit.migrations import upgrade
from scripts.ledger_world import RemoteWorld
from scripts.processes import PROCESSES
from scripts.run import Suite, running_suite

PARTIES = ("GHA", "CHE", "SWE", "JPN", "SGP", "NOR", "PER", "SEN", "THA", "KOR")
ACCOUNTS_PER_PARTY = 100
BLOCKS = 100_000
BLOCK_UNITS = 10
FRAGMENTED_BLOCKS = 100_000
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

_BLOCK_COLUMNS = (
    "ca_id",
    "origin_registry_id",
    "first_transferring_party",
    "first_serial",
    "last_serial",
    "vintage",
    "metric",
    "mitigation_type",
    "sector",
    "activity_type",
    "authorization_id",
    "authorization_version",
    "purposes",
    "first_transfer_definition",
    "state",
    "account_id",
    "party",
    "last_transaction_id",
    "updated_at",
)


# ---- scratch databases -----------------------------------------------------------------------------------


def _admin_url() -> str:
    return os.environ.get("REGISTRY_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(_dsn(_admin_url()), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextmanager
def scratch_databases(labels: list[str]) -> Iterator[dict[str, str]]:
    """Empty databases named `bench_<label>_<random>`, dropped on the way out."""
    tag = uuid.uuid4().hex[:8]
    names = {label: f"bench_{label}_{tag}" for label in labels}
    try:
        for name in names.values():
            asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        yield {
            label: make_url(_admin_url()).set(database=name).render_as_string(hide_password=False)
            for label, name in names.items()
        }
    finally:
        for name in names.values():
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---- the world and the bulk load ---------------------------------------------------------------------------


def _block(
    ca_id: str, party: str, first: int, last: int, account: str, holder: str, now: datetime
) -> tuple[Any, ...]:
    return (
        ca_id,
        f"{party}01",
        party,
        first,
        last,
        2024,
        "GHG",
        "Emission reductions",
        "Energy",
        "Solar",
        f"{party}-AUTH-1",
        1,
        "NDC",
        "First international transfer",
        "held",
        account,
        holder,
        "bench-load",
        now,
    )


async def _bulk_load(url: str, accounts: list[str], fragmented: str, single: str) -> None:
    """COPY the bench ledger into the migrated transactions database, then ANALYZE."""
    now = datetime.now(UTC)
    blocks: list[tuple[Any, ...]] = []
    issued: list[tuple[Any, ...]] = []
    per_party = BLOCKS // len(PARTIES)
    for g in range(BLOCKS):
        party = PARTIES[g // per_party]
        first = (g % per_party) * BLOCK_UNITS + 1
        account = accounts[g % len(accounts)]  # neighbouring serials always in different accounts
        blocks.append(_block("CA0001", party, first, first + BLOCK_UNITS - 1, account, account[:3], now))
    for party in PARTIES:
        issued.append(("CA0001", f"{party}01", 1, per_party * BLOCK_UNITS, party, f"{party}-AUTH-1"))
    # The fragmented account: one-unit blocks with a gap between each (nothing to coalesce).
    for k in range(FRAGMENTED_BLOCKS):
        serial = 2 * k + 1
        blocks.append(_block("CA0002", "GHA", serial, serial, fragmented, "GHA", now))
        issued.append(("CA0002", "GHA01", serial, serial, "GHA", "GHA-AUTH-1"))
    top = 2 * FRAGMENTED_BLOCKS + 1
    blocks.append(_block("CA0002", "GHA", top, top + 99_999, single, "GHA", now))
    issued.append(("CA0002", "GHA01", top, top + 99_999, "GHA", "GHA-AUTH-1"))
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.copy_records_to_table("blocks", records=blocks, columns=_BLOCK_COLUMNS)
        await connection.copy_records_to_table(
            "issued_ranges",
            records=[(*row, "bench-load", now) for row in issued],
            columns=(
                "ca_id",
                "origin_registry_id",
                "first_serial",
                "last_serial",
                "first_transferring_party",
                "authorization_id",
                "transaction_id",
                "created_at",
            ),
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


# ---- driving transfers -------------------------------------------------------------------------------------


class Load:
    """Workers sending one-unit transfers; each worker has its own source accounts (no lock contention)."""

    def __init__(self, accounts: list[str], tokens: dict[str, str]) -> None:
        self.accounts = accounts
        self.tokens = tokens

    async def warm(self, base_url: str, clients: int = 16, passes: int = 3) -> None:
        """Validate one transfer out of and into every account, so the ledger has looked each one up.

        A registry that has run for a while has its accounts in the ledger's directory cache
        (services/transactions/directory.py); a short run from cold would measure the first lookups. Each
        worker process has its own cache and a connection sticks to one worker, so every request here opens
        a new connection (the kernel spreads them over the workers) and the pass is made several times.
        """
        pairs = list(zip(self.accounts, self.accounts[1:] + self.accounts[:1], strict=True))
        connector = aiohttp.TCPConnector(limit=clients, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(passes):
                queue = list(pairs)

                async def worker(queue: list[tuple[str, str]] = queue) -> None:
                    while queue:
                        source, destination = queue.pop()
                        body = {
                            "type": "transfer",
                            "from_account": source,
                            "to_account": destination,
                            "quantity": 1,
                        }
                        headers = {"Authorization": self.tokens[source[:3]]}
                        async with session.post(
                            f"{base_url}/v1/transactions/validate", json=body, headers=headers
                        ) as answer:
                            await answer.read()

                await asyncio.gather(*(worker() for _ in range(clients)))

    async def run(self, base_url: str, clients: int, seconds: float) -> tuple[float, list[float], int]:
        latencies: list[float] = []
        errors = 0
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector) as session:
            deadline = time.perf_counter() + seconds

            async def worker(index: int) -> None:
                nonlocal errors
                sources = self.accounts[index::clients]
                rng = random.Random(index)
                n = 0
                while time.perf_counter() < deadline:
                    source = sources[n % len(sources)]
                    n += 1
                    destination = rng.choice(self.accounts)
                    if destination == source:
                        continue
                    body = {
                        "type": "transfer",
                        "from_account": source,
                        "to_account": destination,
                        "quantity": 1,
                    }
                    headers = {"Authorization": self.tokens[source[:3]], "Idempotency-Key": uuid.uuid4().hex}
                    started = time.perf_counter()
                    async with session.post(
                        f"{base_url}/v1/transactions", json=body, headers=headers
                    ) as answer:
                        await answer.read()
                        if answer.status != 201:
                            errors += 1
                    latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(clients)))
            elapsed = time.perf_counter() - started
        return len(latencies) / elapsed, latencies, errors


def _cpu_seconds(suite: Suite) -> dict[str, float]:
    """CPU time (user + system) each suite process and all of PostgreSQL's backends have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")

    def of(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    def with_workers(pid: int) -> float:  # uvicorn workers (REGISTRY_<SERVICE>_WORKERS) are child processes
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return of(pid) + sum(with_workers(int(child)) for child in children)

    used = {name: with_workers(child.pid) for name, child in suite.children.items()}
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    postgres += of(int(entry.name))
            except OSError:
                continue  # exited meanwhile
    used["postgres"] = postgres
    return used


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _ms(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] * 1000


async def _fragmentation(
    base_url: str, token: str, fragmented: str, single: str, destination: str, n: int
) -> dict[str, list[float]]:
    """Sequential one-unit transfers out of each account, interleaved; latencies per source."""
    timings: dict[str, list[float]] = {fragmented: [], single: []}
    async with aiohttp.ClientSession() as session:
        for i in range(n + 10):
            for source in (fragmented, single):
                body = {"type": "transfer", "from_account": source, "to_account": destination, "quantity": 1}
                headers = {"Authorization": token, "Idempotency-Key": uuid.uuid4().hex}
                started = time.perf_counter()
                async with session.post(f"{base_url}/v1/transactions", json=body, headers=headers) as answer:
                    await answer.read()
                    assert answer.status == 201, await answer.text()
                if i >= 10:  # the first ten of each warm up
                    timings[source].append(time.perf_counter() - started)
    return timings


# ---- pgbench ---------------------------------------------------------------------------------------------

PGBENCH_SCRIPT = """\
\\set src random(1, 1000)
\\set dst random(1, 1000)
BEGIN;
SELECT id AS bid, first_serial AS fs FROM blocks WHERE account_id = 'S' || :src AND state = 'held' ORDER BY vintage, ca_id, origin_registry_id, first_serial LIMIT 1 FOR UPDATE \\gset
UPDATE blocks SET first_serial = first_serial + 1, updated_at = now(), last_transaction_id = 'pgbench' WHERE id = :bid;
INSERT INTO blocks (ca_id, origin_registry_id, first_transferring_party, first_serial, last_serial, vintage, metric, mitigation_type, sector, activity_type, authorization_id, authorization_version, purposes, first_transfer_definition, state, account_id, party, last_transaction_id, updated_at) SELECT ca_id, origin_registry_id, first_transferring_party, CAST(:fs AS bigint), CAST(:fs AS bigint), vintage, metric, mitigation_type, sector, activity_type, authorization_id, authorization_version, purposes, first_transfer_definition, 'held', 'R' || :dst, party, 'pgbench', now() FROM blocks WHERE id = :bid;
INSERT INTO transactions (transaction_id, type, status, party, from_account, to_account, from_party, to_party, quantity, initiated_by, checks, actions, blocks, created_at, updated_at, completed_at) SELECT 'pgb_' || txid_current(), 'transfer', 'completed', party, 'S' || :src, 'R' || :dst, party, party, 1, 'pgbench', '[]', '[]', json_build_array(row_to_json(b)), now(), now(), now() FROM blocks b WHERE id = :bid;
INSERT INTO journal (transaction_id, entry_type, ca_id, origin_registry_id, first_serial, last_serial, payload) SELECT 'pgb_' || txid_current(), 'transfer', ca_id, origin_registry_id, CAST(:fs AS bigint), last_serial, json_build_object('kind', 'update', 'block_before', row_to_json(b), 'block_after', row_to_json(b)) FROM blocks b WHERE id = :bid UNION ALL SELECT 'pgb_' || txid_current(), 'transfer', ca_id, origin_registry_id, CAST(:fs AS bigint), CAST(:fs AS bigint), json_build_object('kind', 'insert', 'block_before', NULL, 'block_after', row_to_json(b)) FROM blocks b WHERE id = :bid;
END;
"""

#: 1,000 sender accounts S1..S1000, each with its lowest block huge (vintage 2021) and 99 small ones after
#: it: 100,000 blocks, the lowest one always the one taken; receivers R1..R1000 never send.
PGBENCH_LOAD = """\
INSERT INTO blocks (ca_id, origin_registry_id, first_transferring_party, first_serial, last_serial, vintage,
    metric, mitigation_type, sector, activity_type, authorization_id, authorization_version, purposes,
    first_transfer_definition, state, account_id, party, last_transaction_id, updated_at)
SELECT 'CA0001', 'GHA01', 'GHA',
    a::bigint * 100000000 + CASE WHEN b = 0 THEN 1 ELSE 50000000 + b * 20 END,
    a::bigint * 100000000 + CASE WHEN b = 0 THEN 40000000 ELSE 50000000 + b * 20 + 9 END,
    CASE WHEN b = 0 THEN 2021 ELSE 2024 END,
    'GHG', 'Emission reductions', 'Energy', 'Solar', 'GHA-AUTH-1', 1, 'NDC', 'First international transfer',
    'held', 'S' || a, 'GHA', 'bench-load', now()
FROM generate_series(1, 1000) AS a, generate_series(0, 99) AS b;
ANALYZE;
"""


def _pgbench(url: str, clients: int, seconds: int, script: Path) -> float:
    parts = make_url(url)
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = str(parts.password)
    command = [
        shutil.which("pgbench") or "/usr/bin/pgbench",
        "-n",
        "-M",
        "prepared",
        "-f",
        str(script),
        "-c",
        str(clients),
        "-j",
        str(min(clients, 2)),
        "-T",
        str(seconds),
        "-h",
        parts.host or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
        str(parts.database),
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", output)
    if not found:
        raise RuntimeError(f"pgbench printed no tps:\n{output}")
    failed = re.search(r"number of failed transactions: (\d+)", output)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"pgbench transactions failed:\n{output}")
    return float(found.group(1))


# ---- the run ---------------------------------------------------------------------------------------------


async def _build(suite: Suite) -> tuple[RemoteWorld, list[str], dict[str, str], str, str]:
    """The world through the API (its HTTP clients are closed on return; the tokens stay valid)."""
    async with (
        httpx.AsyncClient(base_url=suite.gateway_url, timeout=60) as gateway,
        httpx.AsyncClient(base_url=suite.url_of("transactions"), timeout=60) as transactions,
    ):
        world = RemoteWorld(gateway, transactions, suite.env)
        await world.login()
        for party in PARTIES:
            await world.add_party(party, extra_holdings=ACCOUNTS_PER_PARTY - 1 + (2 if party == "GHA" else 0))
        for ca_id in ("CA0001", "CA0002"):
            await world.add_ca(ca_id, list(PARTIES))
    gha = world.parties["GHA"]
    fragmented, single = gha.holdings[-2], gha.holdings[-1]
    accounts = [a for p in PARTIES for a in world.parties[p].holdings if a not in (fragmented, single)]
    tokens = {p: world.parties[p].initiator["Authorization"] for p in PARTIES}
    return world, accounts, tokens, fragmented, single


def _directory_lookups(suite: Suite) -> str:
    """The ledger's directory cache results (hit, absent, lagging, expired) from one worker's /metrics."""
    text = httpx.get(f"{suite.url_of('transactions')}/metrics", timeout=10).text
    counts = {
        line.split('result="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("registry_directory_lookups_total{")
    }
    total = sum(counts.values()) or 1.0
    return ", ".join(f"{result} {count / total:.1%}" for result, count in sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=8.0, help="per transfer run")
    parser.add_argument("--fragmentation-transfers", type=int, default=100)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes of the transactions service (REGISTRY_TRANSACTIONS_WORKERS); 2 = this machine's cores",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="REGISTRY_NAME=VALUE",
        help="extra setting for every process (experiments: pool sizes, log levels); repeatable",
    )
    args = parser.parse_args()

    unlimited = {
        "REGISTRY_RATE_LIMIT_PER_SECOND": "1000000",
        "REGISTRY_RATE_LIMIT_BURST": "1000000",
        "REGISTRY_LOG_LEVEL": "WARNING",
        "REGISTRY_TRANSACTIONS_WORKERS": str(args.workers),
    }
    unlimited.update(setting.split("=", 1) for setting in args.env)
    labels = [p.name for p in PROCESSES]
    with (
        scratch_databases(labels) as urls,
        tempfile.TemporaryDirectory() as scratch,
        running_suite(Path(scratch), {p.name: urls[p.name] for p in PROCESSES}, unlimited) as suite,
    ):
        print("load average at start (other work on the machine skews every figure): " + _load())
        print(f"transactions service: {args.workers} worker process(es)")
        started = time.perf_counter()
        world, accounts, tokens, fragmented, single = asyncio.run(_build(suite))
        built = time.perf_counter()
        asyncio.run(_bulk_load(urls["transactions"], accounts, fragmented, single))
        loaded = time.perf_counter()
        print(
            f"world: {len(PARTIES)} Parties, {len(accounts)} accounts through the API in {built - started:.1f} s; "
            f"{BLOCKS:,} blocks + {FRAGMENTED_BLOCKS:,} (fragmented account) + 1 loaded in {loaded - built:.1f} s"
        )
        load = Load(accounts, tokens)
        targets = {"gateway": suite.gateway_url, "direct": suite.url_of("transactions")}
        rates: dict[tuple[str, int], float] = {}
        print(f"\none-unit transfers, {args.seconds:.0f} s per run, load generator on the same machine")
        print(
            f"{'target':<8} {'clients':>7} {'tx/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}"
        )
        cpu: dict[str, float] = {}
        asyncio.run(load.warm(targets["direct"]))
        for clients in args.clients:
            for name, url in targets.items():
                asyncio.run(load.run(url, clients, 1.0))  # warm-up: connections, caches
                before = _cpu_seconds(suite)
                rate, latencies, errors = asyncio.run(load.run(url, clients, args.seconds))
                if clients == max(args.clients):
                    done = rate * args.seconds
                    cpu = {n: (t - before[n]) / done * 1000 for n, t in _cpu_seconds(suite).items()}
                    cpu = {n: ms for n, ms in cpu.items() if ms >= 0.05}
                rates[(name, clients)] = rate
                print(
                    f"{name:<8} {clients:>7} {rate:>8.0f} {_ms(latencies, 0.50):>8.1f} {_ms(latencies, 0.95):>8.1f} "
                    f"{_ms(latencies, 0.99):>8.1f} {errors:>6}"
                )

        print(f"directory cache of one transactions worker: {_directory_lookups(suite)}")
        print(
            f"CPU per transfer at {max(args.clients)} clients (direct run): "
            + ", ".join(f"{n} {ms:.1f} ms" for n, ms in cpu.items())
        )
        destination = world.parties["CHE"].holding
        timings = asyncio.run(
            _fragmentation(
                targets["direct"],
                tokens["GHA"],
                fragmented,
                single,
                destination,
                args.fragmentation_transfers,
            )
        )
        frag_p50, single_p50 = (statistics.median(timings[a]) * 1000 for a in (fragmented, single))
        print(
            f"\nfragmentation (direct, sequential, {args.fragmentation_transfers} transfers each): "
            f"out of {FRAGMENTED_BLOCKS:,} blocks p50 {frag_p50:.1f} ms (p95 {_ms(timings[fragmented], 0.95):.1f}), "
            f"out of 1 block p50 {single_p50:.1f} ms (p95 {_ms(timings[single], 0.95):.1f}); "
            f"ratio {frag_p50 / single_p50:.2f} (target <= 2)"
        )

        async def invariants() -> tuple[float, dict[str, Any]]:
            async with httpx.AsyncClient(base_url=suite.gateway_url, timeout=600) as client:
                started = time.perf_counter()
                report = (await client.get("/v1/admin/invariants", headers=world.admin)).json()
                return time.perf_counter() - started, report

        took, report = asyncio.run(invariants())
        print(
            f"\ninvariants I1-I6 over {report['blocks']:,} blocks and {report['journal_entries']:,} journal "
            f"entries: {took:.1f} s, ok={report['ok']}"
        )

    # The raw ceiling, with the suite stopped (its processes no longer compete for the cores).
    with scratch_databases(["pgbench"]) as scratch_urls, tempfile.TemporaryDirectory() as scratch:
        url = scratch_urls["pgbench"]
        upgrade("services.transactions", url)

        async def load_pgbench() -> None:
            connection = await asyncpg.connect(_dsn(url))
            try:
                await connection.execute(PGBENCH_LOAD)
            finally:
                await connection.close()

        asyncio.run(load_pgbench())
        script = Path(scratch) / "transfer.sql"
        script.write_text(PGBENCH_SCRIPT)
        print(f"\nraw PostgreSQL ceiling: pgbench, one transfer's SQL, {args.pgbench_seconds} s per run")
        print(f"{'clients':>7} {'tps':>8} {'gateway %':>10} {'direct %':>9}")
        for clients in args.clients:
            tps = _pgbench(url, clients, args.pgbench_seconds, script)
            shares = [rates.get((name, clients), float("nan")) / tps * 100 for name in ("gateway", "direct")]
            print(f"{clients:>7} {tps:>8.0f} {shares[0]:>9.1f}% {shares[1]:>8.1f}%")
        print("(target: at least 25% of the raw ceiling at 16 clients)")
        print("load average at the end: " + _load())


if __name__ == "__main__":
    main()
