"""`python -m bench.aef`: the AEF's figures on PostgreSQL (issue 6); prints them, gates nothing.

1. Build and export one Party-year of N actions (default 100,000 and 1,000,000): a scratch reporting
   database migrated to head, its read model bulk loaded with COPY (N Table 3 rows of one Party and year, each
   its own transaction and run; N block movements, one in ten left with the Party, so Table 4 has N/10 runs),
   then, each in a fresh process so its peak memory (ru_maxrss) is its own: the JSON answer (streamed,
   bytes counted), the XLSX and the CSV zip (written to a spooled temporary file, as the endpoint does),
   and freezing it as a submission (`submit`: the chunks written, then read back as the POST answers).
   `cpu s` is the service process's own CPU time (PostgreSQL's is not in it); each line ends with the
   1-minute load average when it finished: on a shared machine wall time follows the load.
2. AEF lag: the real processes (`make run`'s launcher) on scratch PostgreSQL databases; first transfers from
   GHA to CHE, each followed by polling GHA's AEF through the gateway until its row shows; the time from the
   201 to the row (the consumer polls every 0.3 s).

`--sizes 100000` for a quick run; `--formats json csv` to skip the others (json xlsx csv submit); `--no-lag` to skip part 2. PostgreSQL: `REGISTRY_TEST_POSTGRES_URL` or
postgres@127.0.0.1:5432.
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from bench.ledger import _dsn, scratch_databases
from kit.auth import Principal
from kit.db import Database
from kit.migrations import upgrade
from scripts.ledger_world import RemoteWorld
from scripts.processes import PROCESSES
from scripts.run import running_suite

YEAR = 2025
PARTY = "GHA"


def _principal(party: str | None = None) -> Principal:
    """The Secretariat (reads any AEF), or a Party's party_admin (submits its own)."""
    from contracts.roles import Role

    role = Role.SECRETARIAT_ADMIN if party is None else Role.PARTY_ADMIN
    return Principal(client_id="bench", party=party, roles=frozenset({role}))


async def _load(url: str, size: int) -> None:
    connection = await asyncpg.connect(_dsn(url))
    start = datetime(YEAR, 1, 1, tzinfo=UTC)
    step = timedelta(seconds=365 * 86400 / max(size, 1))
    try:
        actions = (
            (
                f"tx_{i:026d}",
                PARTY,
                "GHA01",
                start + step * i,
                "First transfer",
                "First transfer to another Party",
                "CA0012",
                "GHA01",
                "GHA",
                10 * i + 1,
                10 * i + 10,
                2024 + i % 2,
                "GH-AUTH-7",
                "GHG",
                "Emission reductions",
                "CHE",
            )
            for i in range(size)
        )
        await connection.copy_records_to_table(
            "aef_actions",
            records=actions,
            columns=[
                "transaction_id",
                "party",
                "registry_id",
                "action_at",
                "action_type",
                "action_subtype",
                "ca_id",
                "origin_registry_id",
                "first_transferring_party",
                "first_serial",
                "last_serial",
                "vintage",
                "authorization_id",
                "metric",
                "mitigation_type",
                "acquiring_party_id",
            ],
        )
        moves = (
            (
                f"tx_{i:026d}",
                start + step * i,
                PARTY if i % 10 == 0 else "CHE",
                "GHA01" if i % 10 == 0 else "CHE01",
                "held",
                "CA0012",
                "GHA01",
                "GHA",
                10 * i + 1,
                10 * i + 10,
                2024 + i % 2,
                "GH-AUTH-7",
                "GHG",
                "Emission reductions",
            )
            for i in range(size)
        )
        await connection.copy_records_to_table(
            "movements",
            records=moves,
            columns=[
                "transaction_id",
                "moved_at",
                "party",
                "registry_id",
                "state",
                "ca_id",
                "origin_registry_id",
                "first_transferring_party",
                "first_serial",
                "last_serial",
                "vintage",
                "authorization_id",
                "metric",
                "mitigation_type",
            ],
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def _phase(url: str, phase: str) -> dict[str, float]:
    """One build, in this process: seconds, bytes out."""
    from services.reporting.service import ReportingService

    db = Database(url)
    service = ReportingService(db)
    started = time.perf_counter()
    size = 0
    try:
        if phase == "json":
            async for chunk in service.report_chunks(PARTY, YEAR):
                size += len(chunk)
        elif phase == "submit":
            frozen = await service.submit(_principal(PARTY), PARTY, YEAR)
            async for chunk in service.frozen_bytes(
                frozen.key
            ):  # what the POST answers, read back from the chunks
                size += len(chunk)
        else:
            response = await service.export(_principal(), PARTY, YEAR, phase)
            async for chunk in response.body_iterator:
                size += len(chunk)
    finally:
        await db.dispose()
    return {"seconds": time.perf_counter() - started, "bytes": size}


def _run_phase(url: str, phase: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.aef", "--phase", phase, "--url", url], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {phase} phase failed:\n{done.stderr}")
    output = done.stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def build_and_export(sizes: list[int], formats: list[str]) -> None:
    print(f"one Party-year ({PARTY} {YEAR}) on PostgreSQL; each figure from a fresh process")
    print(
        f"{'actions':>10} {'format':>6} {'seconds':>8} {'cpu s':>7} {'peak MiB':>9} {'output MiB':>11} "
        f"{'load avg':>9}"
    )
    for size in sizes:
        with scratch_databases([f"aef{size}"]) as urls:
            url = urls[f"aef{size}"]
            upgrade("services.reporting", url)
            started = time.perf_counter()
            asyncio.run(_load(url, size))
            print(
                f"{size:>10,} {'load':>6} {time.perf_counter() - started:>8.1f}   (COPY + ANALYZE, not the service)"
            )
            for phase in formats:
                figures = _run_phase(url, phase)
                print(
                    f"{size:>10,} {phase:>6} {figures['seconds']:>8.1f} {figures['cpu_seconds']:>7.1f} "
                    f"{figures['peak_mib']:>9.0f} "
                    f"{figures['bytes'] / 2**20:>11.1f} {os.getloadavg()[0]:>9.2f}",
                    flush=True,
                )


async def _lag(suite_gateway: str, transactions_url: str, env: dict[str, str], samples: int) -> list[float]:
    async with (
        httpx.AsyncClient(base_url=suite_gateway, timeout=60) as gateway,
        httpx.AsyncClient(base_url=transactions_url, timeout=60) as transactions,
    ):
        world = RemoteWorld(gateway, transactions, env)
        await world.login()
        gha = await world.add_party("GHA")
        che = await world.add_party("CHE")
        await world.add_ca("CA0001", ["GHA", "CHE"])
        year = datetime.now(UTC).year
        lags = []
        for _ in range(samples):
            await world.first_transfer("GHA", "CA0001", 10, che.holding)
            answered = time.perf_counter()
            while True:
                report = await gateway.get(f"/v1/reports/aef/GHA/{year}", headers=gha.viewer)
                report.raise_for_status()
                if len(report.json()["tables"]["actions"]) == len(lags) + 1:
                    break
                if time.perf_counter() - answered > 30:
                    raise RuntimeError("the action did not show in 30 s")
                await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - answered)
        return lags


def lag(samples: int) -> None:
    labels = [p.name for p in PROCESSES]
    quiet = {"REGISTRY_LOG_LEVEL": "WARNING"}
    with (
        scratch_databases(labels) as urls,
        tempfile.TemporaryDirectory() as scratch,
        running_suite(Path(scratch), {p.name: urls[p.name] for p in PROCESSES}, quiet) as suite,
    ):
        lags = asyncio.run(_lag(suite.gateway_url, suite.url_of("transactions"), suite.env, samples))
    print(
        f"\nAEF lag after a first transfer ({samples} samples, real processes, PostgreSQL): "
        f"median {statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.aef", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--lag-samples", type=int, default=20)
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=["json", "xlsx", "csv", "submit"],
        default=["json", "xlsx", "csv", "submit"],
    )
    parser.add_argument("--no-lag", action="store_true")
    parser.add_argument("--phase", choices=["json", "xlsx", "csv", "submit"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        figures = asyncio.run(_phase(args.url, args.phase))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        figures["peak_mib"] = usage.ru_maxrss / 1024
        figures["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        print(json.dumps(figures))
        return
    build_and_export(args.sizes, args.formats)
    if not args.no_lag:
        lag(args.lag_samples)


if __name__ == "__main__":
    main()
