"""Smoke: the real processes started as `make run` starts them, called over HTTP through the gateway."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scripts.processes import PROCESSES
from scripts.run import isolated_environment, running_suite
from tests.support.databases import DatabaseFactory

pytestmark = pytest.mark.xdist_group("processes")


def _token(client: httpx.Client, env: dict[str, str]) -> str:
    response = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(env["REGISTRY_BOOTSTRAP_CLIENT_ID"], env["REGISTRY_BOOTSTRAP_CLIENT_SECRET"]),
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _exercise(suite_url: str, env: dict[str, str]) -> None:
    with httpx.Client(base_url=suite_url, timeout=10) as client:
        anonymous = client.get("/v1/parties")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")

        token = _token(client, env)
        parties = client.get("/v1/parties", headers={"Authorization": f"Bearer {token}"})
        assert parties.status_code == 200, parties.text
        codes = {party["code"]: party["name"] for party in parties.json()["items"]}
        assert codes["GHA"] == "Ghana"
        assert "EUE" in codes
        assert parties.headers.get("x-request-id")


def test_suite_processes_answer_through_the_gateway(tmp_path: Path) -> None:
    with running_suite(tmp_path) as suite:
        _exercise(suite.gateway_url, suite.env)
        for process in PROCESSES:
            assert httpx.get(f"{suite.url_of(process.name)}/livez").json() == {"status": "ok"}
            metrics = httpx.get(f"{suite.url_of(process.name)}/metrics").text
            assert "registry_http_requests_total" in metrics

        # A service that dies turns into a 503 problem at the gateway, not a hang or a 500.
        suite.kill("party_sections")
        with httpx.Client(base_url=suite.gateway_url, timeout=10) as client:
            token = _token(client, suite.env)
            down = client.get("/v1/parties", headers={"Authorization": f"Bearer {token}"})
        assert down.status_code == 503
        assert down.json()["type"].endswith("/upstream-unavailable")


@pytest.mark.postgres
def test_suite_processes_on_postgresql(tmp_path: Path, database_factory: DatabaseFactory) -> None:
    urls = {process.name: database_factory.empty_postgres(process.name) for process in PROCESSES}
    with running_suite(tmp_path, urls) as suite:
        _exercise(suite.gateway_url, suite.env)


def _workers_of(pid: int) -> list[int]:
    """The uvicorn worker processes a supervisor started (multiprocessing spawn children)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    workers = []
    for child in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
        except OSError:
            continue
    return workers


@pytest.mark.postgres
def test_a_service_runs_several_workers_on_one_port(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    urls = {process.name: database_factory.empty_postgres(process.name) for process in PROCESSES}
    with running_suite(tmp_path, urls, {"REGISTRY_PARTY_SECTIONS_WORKERS": "2"}) as suite:
        workers = _workers_of(suite.children["party_sections"].pid)
        assert len(workers) == 2, workers
        for _ in range(5):
            _exercise(suite.gateway_url, suite.env)
    time.sleep(1)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()], "workers outlived their supervisor"


def _launcher(tmp_path: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    env = isolated_environment(tmp_path)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "scripts.run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "launcher.log").open("wb"),
        cwd=Path(__file__).resolve().parents[2],
    )
    deadline = time.monotonic() + 90
    gateway = f"http://127.0.0.1:{env['REGISTRY_GATEWAY_PORT']}"
    while time.monotonic() < deadline:
        assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()
        if b"registry is up" in (tmp_path / "launcher.log").read_bytes():
            break
        time.sleep(0.2)
    else:
        launcher.kill()
        pytest.fail("the launcher did not come up:\n" + (tmp_path / "launcher.log").read_text())
    assert httpx.get(f"{gateway}/livez").status_code == 200
    return launcher, env


def _children_gone(env: dict[str, str]) -> bool:
    for process in PROCESSES:
        try:
            httpx.get(f"http://127.0.0.1:{env[f'{process.env_prefix}PORT']}/livez", timeout=0.5)
        except httpx.TransportError:
            continue
        return False
    return True


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    launcher, env = _launcher(tmp_path)
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=30) == 0
    assert _children_gone(env)


def test_a_dying_child_stops_all_with_a_non_zero_exit(tmp_path: Path) -> None:
    launcher, env = _launcher(tmp_path)
    pid = int(
        subprocess.run(
            ["pgrep", "-f", "-P", str(launcher.pid), "services.reporting.main"],
            capture_output=True,
            text=True,
        ).stdout.split()[0]
    )
    os.kill(pid, signal.SIGKILL)
    assert launcher.wait(timeout=30) != 0
    assert _children_gone(env)
