"""Two processes on loopback: the suite as `make run` starts it, and the simulator as `make simulator` starts
it (`python -m conformance.simulator --onboard`).

1. It onboards itself with the bootstrap client, serves its JWKS and driver, says hello and acknowledges its
   inbox; it is SIGKILLed, then the simulator side of the §13 crash matrix: one transfer per fault point
   (three incoming, two outgoing), the process exiting 137 at the point, restarted with the same command
   minus the flag, converging; X1, X2 and the IR ledger's invariants after each round; the seq goes on
   across all restarts.
2. The §13 proxy run: `FaultProxy` drops, delays and duplicates the simulator's accepts, proposals and acks;
   lost messages are retried with the same message id and nothing is applied twice.
"""

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.run import Suite, running_suite

pytestmark = pytest.mark.xdist_group("processes")

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_simulator(suite: Suite, port: int, data: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "conformance.simulator",
        "--onboard",
        "--registry-id",
        "CHE01",
        "--ir-url",
        suite.gateway_url,
        "--port",
        str(port),
        "--db",
        str(data / "che01.sqlite"),
        "--bootstrap-secret-file",
        str(Path(suite.env["REGISTRY_DATA_DIR"]) / "bootstrap-client-secret"),
        "--poll-interval",
        "0.2",
        *extra,
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


class _ProcessSuite:
    """What tests.integration._ledger_world needs of a suite, over HTTP to the real processes."""

    def __init__(self, suite: Suite, client: httpx.AsyncClient) -> None:
        self.env = suite.env
        self.client = client

    async def token(self, client_id: str, secret: str) -> str:
        answer = await self.client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    async def auth(self, client_id: str, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(client_id, secret)}"}

    async def new_client(self, *, name: str, party: str | None, roles: list[str]) -> dict[str, Any]:
        admin = await self.auth(
            self.env["REGISTRY_BOOTSTRAP_CLIENT_ID"], self.env["REGISTRY_BOOTSTRAP_CLIENT_SECRET"]
        )
        answer = await self.client.post(
            "/v1/clients", json={"name": name, "party": party, "roles": roles}, headers=admin
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_crash_matrix_simulator_side(tmp_path: Path) -> None:
    """§13 crash matrix, simulator side: for each of the five fault points the simulator process exits 137
    there (as after SIGKILL), is restarted with the same command minus the flag, and converges; after each
    round X1 (the crossed serials are held on one side only), X2 (both sides agree on every final status)
    and the IR ledger's invariants hold."""
    from tests.integration._ledger_world import World as LedgerWorld

    sim_data = tmp_path / "simulator"
    log = tmp_path / "simulator.log"
    port = _free_port()
    driver = f"http://127.0.0.1:{port}"
    with running_suite(tmp_path / "suite") as suite:
        async with (
            httpx.AsyncClient(base_url=suite.gateway_url, timeout=20) as gateway,
            httpx.AsyncClient(base_url=suite.url_of("transactions"), timeout=20) as transactions,
            httpx.AsyncClient(base_url=driver, timeout=20) as sim,
        ):
            facade = _ProcessSuite(suite, gateway)
            env = suite.env
            admin = await facade.auth(
                env["REGISTRY_BOOTSTRAP_CLIENT_ID"], env["REGISTRY_BOOTSTRAP_CLIENT_SECRET"]
            )
            ars = await facade.auth("svc-ars", env["REGISTRY_SERVICE_CLIENT_SECRET"])
            ledger = LedgerWorld(suite=facade, admin=admin, ars=ars, ledger=transactions)  # type: ignore[arg-type]
            gha = await ledger.add_party("GHA")
            await ledger.add_ca("CA0012", ["GHA", "CHE"])
            await ledger.first_transfer(
                "GHA",
                "CA0012",
                1000,
                to_account=gha.holding,
                purposes="NDC and OIMP",
                definition="Authorisation",
            )

            async def ir_held() -> int:
                answer = await transactions.get(f"/internal/v1/accounts/{gha.holding}/balance", headers=ars)
                return int(answer.json()["held"])

            async def converged(process: subprocess.Popen[bytes], transfers: int) -> dict[str, Any]:
                """Wait until the simulator knows `transfers` transfers, all final and as the IR has them (X2)."""
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and process.poll() is None:
                    try:
                        state = (await sim.get("/conformance/v1/state")).json()
                    except httpx.HTTPError:
                        state = None
                    if (
                        state
                        and state["inbox_cursor"] > 0
                        and len(state["transfers"]) == transfers
                        and all(t["status"] != "open" for t in state["transfers"])
                    ):
                        agreed = True
                        for known in state["transfers"]:
                            record = await gateway.get(
                                f"/v1/interregistry/transfers/{known['transfer_id']}", headers=admin
                            )
                            agreed = agreed and record.json().get("status") == known["status"]
                        pending = [m for m in state["outbox"] if m["status"] == "pending"]
                        # The IR has accepted every seq the simulator gave out: a late inbox item (and its ack)
                        # would otherwise land between this read and the final comparison.
                        record = await gateway.get("/v1/interregistry/registries/CHE01", headers=admin)
                        same_seq = record.json().get("last_seq_received") == state["last_seq"]
                        if (
                            agreed
                            and same_seq
                            and not pending
                            and state["acked_position"] == state["inbox_cursor"]
                        ):
                            return dict(state)
                    await asyncio.sleep(0.2)
                raise AssertionError(
                    f"no convergence (exit {process.poll()}); log:\n{log.read_text()[-3000:]}"
                )

            async def started(process: subprocess.Popen[bytes]) -> None:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await sim.get("/livez")).status_code == 200:
                            return
                    assert process.poll() is None, log.read_text()[-3000:]
                    await asyncio.sleep(0.1)
                raise AssertionError(f"the simulator did not start; log:\n{log.read_text()[-3000:]}")

            async def check_x1(state: dict[str, Any]) -> None:
                held_here = sum(a["quantities"].get("held", 0) for a in state["accounts"])
                assert held_here + await ir_held() == 1000  # each crossed serial is spendable on one side
                report = await ledger.invariants()
                assert report["ok"], report["violations"]

            process = _start_simulator(suite, port, sim_data, log)
            rounds: list[str] = []
            try:
                state = await converged(process, 0)
                # Onboarded by the one command: the record carries the key the simulator serves, the client's
                # credentials are kept private, hello and the first ack went through.
                assert state["registry_status"] == "active" and state["last_seq"] == 1
                record = (await gateway.get("/v1/interregistry/registries/CHE01", headers=admin)).json()
                assert record["jwks"] == (await sim.get("/.well-known/jwks.json")).json()
                assert record["last_seq_received"] == 1
                [credentials] = sim_data.glob("*-client.json")
                assert credentials.name == "che01-client.json" and credentials.stat().st_mode & 0o777 == 0o600
                process.send_signal(signal.SIGKILL)  # the first stop is a SIGKILL, later ones SIGTERM
                process.wait(timeout=10)
                incoming = [
                    "after_pending_in_commit",
                    "after_accept_sent",
                    "after_completed_received_before_apply",
                ]
                outgoing = ["after_reserve_before_propose", "after_propose_before_response"]
                for done, point in enumerate(incoming + outgoing, start=1):
                    _stop(process)
                    process = _start_simulator(suite, port, sim_data, log, "--crash-at", point)
                    await started(process)
                    if point in incoming:
                        sent = await ledger.transact(
                            gha,
                            {
                                "type": "transfer",
                                "from_account": gha.holding,
                                "to_registry": "CHE01",
                                "to_account": "CH-100-1",
                                "quantity": 10,
                            },
                        )
                        assert sent.status_code == 201, sent.text
                    else:
                        with contextlib.suppress(httpx.HTTPError):  # the process dies under the request
                            await sim.post(
                                "/conformance/v1/propose",
                                json={
                                    "to_registry": "GHA01",
                                    "to_account": gha.holding,
                                    "ca_id": "CA0012",
                                    "vintage": 2024,
                                    "quantity": 5,
                                },
                                timeout=20,
                            )
                    assert process.wait(timeout=30) == 137, log.read_text()[-3000:]
                    process = _start_simulator(suite, port, sim_data, log)
                    state = await converged(process, done)
                    await check_x1(state)
                    rounds.append(point)
                final = await converged(process, 5)
            finally:
                _stop(process)
            assert rounds == incoming + outgoing
            statuses = sorted(t["status"] for t in final["transfers"])
            assert statuses == ["completed"] * 5
            held_here = sum(a["quantities"].get("held", 0) for a in final["accounts"])
            out_here = sum(a["quantities"].get("transferred_out", 0) for a in final["accounts"])
            assert (held_here, out_here, await ir_held()) == (20, 10, 980)
            # The seq went on across every restart: `converged` saw the IR's last accepted seq equal to the
            # simulator's last (a late inbox item may still be acked after it, moving both on).
            record = (await gateway.get("/v1/interregistry/registries/CHE01", headers=admin)).json()
            assert record["last_seq_received"] >= final["last_seq"] > 10


_RESPONSE = r"/v1/interregistry/transfers/[^/]+/response"
_PROPOSE = r"/v1/interregistry/transfers"
_ACK = r"/v1/interregistry/inbox/ack"


class FaultProxy:
    """An asyncio TCP proxy between the simulator and the gateway (§13) that breaks one matching request at
    a time: `drop_request` (never forwarded), `drop_response` (forwarded, answer lost), `delay` (answer held
    past the client's timeout), `duplicate` (forwarded twice, one answer). One request per connection: it
    asks upstream for `Connection: close`, so a response ends at EOF and the client opens a new connection."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.faults: list[tuple[str, str]] = []  # (path regex, fault), consumed in order
        self.posts: list[tuple[str, str, str | None]] = []  # (path, message_id, fault applied)

    async def start(self) -> int:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.server = server
        return int(server.sockets[0].getsockname()[1])

    async def _read(self, reader: asyncio.StreamReader) -> tuple[bytes, str, str, bytes]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        kept, length = [head[0]], 0
        for line in filter(None, head[1:]):
            name = line.partition(":")[0].strip().lower()
            if name == "content-length":
                length = int(line.partition(":")[2])
            if name not in ("connection", "keep-alive"):
                kept.append(line)
        body = await reader.readexactly(length) if length else b""
        request = ("\r\n".join([*kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + body
        return request, method, target.split("?")[0], body

    async def _forward(self, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        writer.write(request)
        await writer.drain()
        response = await reader.read(-1)
        writer.close()
        return response

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request, method, path, body = await self._read(reader)
            fault = None
            if method == "POST" and self.faults and re.fullmatch(self.faults[0][0], path):
                fault = self.faults.pop(0)[1]
            if method == "POST" and path.startswith("/v1/interregistry/"):
                self.posts.append((path, json.loads(body).get("message_id"), fault))
            if fault == "drop_request":
                return
            response = await self._forward(request)
            if fault == "duplicate":
                await self._forward(request)
            if fault == "drop_response":
                return
            if fault == "delay":
                await asyncio.sleep(self.delay)
            writer.write(response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_proxy_faults_between_simulator_and_ir(tmp_path: Path) -> None:
    """§13 proxy run: each fault on the simulator's accept, its proposal and its ack; the simulator retries
    the same message (same message_id), the IR answers the retry from its log, and after each round X1, X2
    and the IR ledger's invariants hold with exactly the expected units moved."""
    from tests.integration._ledger_world import World as LedgerWorld

    sim_data = tmp_path / "simulator"
    log = tmp_path / "simulator.log"
    port = _free_port()
    with running_suite(tmp_path / "suite") as suite:
        proxy = FaultProxy(int(suite.gateway_url.rsplit(":", 1)[1]), delay=2.5)
        proxy_url = f"http://127.0.0.1:{await proxy.start()}"
        async with (
            httpx.AsyncClient(base_url=suite.gateway_url, timeout=20) as gateway,
            httpx.AsyncClient(base_url=suite.url_of("transactions"), timeout=20) as transactions,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as sim,
        ):
            facade = _ProcessSuite(suite, gateway)
            env = suite.env
            admin = await facade.auth(
                env["REGISTRY_BOOTSTRAP_CLIENT_ID"], env["REGISTRY_BOOTSTRAP_CLIENT_SECRET"]
            )
            ars = await facade.auth("svc-ars", env["REGISTRY_SERVICE_CLIENT_SECRET"])
            ledger = LedgerWorld(suite=facade, admin=admin, ars=ars, ledger=transactions)  # type: ignore[arg-type]
            gha = await ledger.add_party("GHA")
            await ledger.add_ca("CA0012", ["GHA", "CHE"])
            await ledger.first_transfer(
                "GHA",
                "CA0012",
                1000,
                to_account=gha.holding,
                purposes="NDC and OIMP",
                definition="Authorisation",
            )
            # Everything goes through the proxy (onboarding too); faults only hit the POSTs they name.
            process = _start_simulator(
                suite, port, sim_data, log, "--ir-url", proxy_url, "--http-timeout", "1.5"
            )

            async def converged(transfers: int) -> dict[str, Any]:
                for _ in range(300):
                    assert process.poll() is None, log.read_text()[-3000:]
                    with contextlib.suppress(httpx.HTTPError):
                        state = (await sim.get("/conformance/v1/state")).json()
                        finals = [t for t in state["transfers"] if t["status"] != "open"]
                        quiet = not [m for m in state["outbox"] if m["status"] == "pending"]
                        if (
                            len(finals) == len(state["transfers"]) == transfers
                            and quiet
                            and state["acked_position"] == state["inbox_cursor"] > 0
                        ):
                            for known in finals:
                                record = await gateway.get(
                                    f"/v1/interregistry/transfers/{known['transfer_id']}", headers=admin
                                )
                                assert record.json()["status"] == known["status"], known  # X2
                            return dict(state)
                    await asyncio.sleep(0.1)
                raise AssertionError(f"no convergence; log:\n{log.read_text()[-3000:]}")

            async def ir_held() -> int:
                answer = await transactions.get(f"/internal/v1/accounts/{gha.holding}/balance", headers=ars)
                return int(answer.json()["held"])

            rounds = [
                (_RESPONSE, "drop_request"),
                (_RESPONSE, "drop_response"),
                (_RESPONSE, "delay"),
                (_RESPONSE, "duplicate"),
                (_ACK, "drop_response"),
                (_PROPOSE, "drop_request"),
                (_PROPOSE, "drop_response"),
                (_PROPOSE, "delay"),
                (_PROPOSE, "duplicate"),
            ]
            try:
                await converged(0)
                moved_in = moved_out = 0
                for done, (path, fault) in enumerate(rounds, start=1):
                    proxy.faults.append((path, fault))
                    if path == _PROPOSE:
                        answer = await sim.post(
                            "/conformance/v1/propose",
                            json={
                                "to_registry": "GHA01",
                                "to_account": gha.holding,
                                "ca_id": "CA0012",
                                "vintage": 2024,
                                "quantity": 5,
                            },
                        )
                        assert answer.status_code == 201, answer.text
                        moved_out += 5
                    else:
                        sent = await ledger.transact(
                            gha,
                            {
                                "type": "transfer",
                                "from_account": gha.holding,
                                "to_registry": "CHE01",
                                "to_account": "CH-100-1",
                                "quantity": 10,
                            },
                        )
                        assert sent.status_code == 201, sent.text
                        moved_in += 10
                    state = await converged(done)
                    assert proxy.faults == [], (path, fault)  # the fault was met
                    held_here = sum(a["quantities"].get("held", 0) for a in state["accounts"])
                    assert (held_here, await ir_held()) == (
                        moved_in - moved_out,
                        1000 - moved_in + moved_out,
                    )  # X1
                    report = await ledger.invariants()
                    assert report["ok"], report["violations"]
                    [faulted] = [
                        post for post in proxy.posts if post[2] == fault and re.fullmatch(path, post[0])
                    ]
                    tries = [post for post in proxy.posts if post[1] == faulted[1]]
                    # A lost request or answer is retried as the same message; a duplicate needs no retry.
                    assert len(tries) == (1 if fault == "duplicate" else 2), (fault, tries)
            finally:
                _stop(process)
                proxy.server.close()
            assert {t["status"] for t in state["transfers"]} == {"completed"} and len(state["transfers"]) == 9
