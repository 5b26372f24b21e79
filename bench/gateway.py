"""`python -m bench.gateway`: GET /v1/parties through the gateway and directly to party_sections.

Starts the real processes as `make run` does (fresh data dir, free ports), gets a token from the
bootstrap client, then drives each target with `--concurrency` aiohttp clients for `--seconds` and prints
requests/s, p50 and p99 latency, and the gateway/direct ratio. The load generator shares the machine's
cores with the processes it measures, so the figures are a floor, comparable between runs on one machine.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from scripts.run import running_suite

PATH = "/v1/parties?limit=20"


async def _drive(url: str, token: str, concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, errors


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    # One client drives all the load: lift its rate limit so the gateway's cost is measured, not its 429s.
    unlimited = {"REGISTRY_RATE_LIMIT_PER_SECOND": "1000000", "REGISTRY_RATE_LIMIT_BURST": "1000000"}
    with tempfile.TemporaryDirectory() as scratch, running_suite(Path(scratch), extra=unlimited) as suite:
        env = suite.env
        token = httpx.post(
            f"{suite.gateway_url}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(env["REGISTRY_BOOTSTRAP_CLIENT_ID"], env["REGISTRY_BOOTSTRAP_CLIENT_SECRET"]),
        ).json()["access_token"]
        targets = {"gateway": suite.gateway_url + PATH, "direct": suite.url_of("party_sections") + PATH}
        print(f"GET {PATH}, {args.seconds:.0f} s per run, load generator on the same machine")
        print(f"{'target':<8} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        for concurrency in args.concurrency:
            rates = {}
            for name, url in targets.items():
                asyncio.run(_drive(url, token, concurrency, 1.0))  # warm-up: connections, caches
                rate, latencies, errors = asyncio.run(_drive(url, token, concurrency, args.seconds))
                rates[name] = rate
                print(
                    f"{name:<8} {concurrency:>7} {rate:>9.0f} {_quantile(latencies, 0.50):>8.2f} "
                    f"{_quantile(latencies, 0.99):>8.2f} {errors:>6}"
                )
            print(
                f"{'ratio':<8} {concurrency:>7} {rates['gateway'] / rates['direct']:>9.2f}  (gateway / direct)"
            )


if __name__ == "__main__":
    main()
