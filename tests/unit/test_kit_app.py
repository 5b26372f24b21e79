"""kit.app.create_app: request ids, /livez, /readyz, /metrics."""

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from contracts.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from kit.app import create_app
from kit.config import ServiceSettings
from tests.support.apps import lifespan

router = APIRouter()


@router.get("/things/{thing_id}")
async def thing(thing_id: str) -> dict[str, str]:
    return {"id": thing_id}


class _Settings(ServiceSettings):
    service_name = "kitapptest"


def _app(url: str) -> FastAPI:
    return create_app(_Settings(database_url=url), title="app", routers=[router])


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = _app(f"sqlite+aiosqlite:///{tmp_path / 'app.sqlite3'}")
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.mark.parametrize(
    "request_id", ["req-0123456789", "a.b_c:d-e1234", "x" * 128, "0f1e2d3c4b5a69788796a5b4c3d2e1f0"]
)
async def test_well_formed_request_id_is_echoed(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/things/1", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    ["short", "has space 12345", "x" * 129, "slash/not/allowed", 'quote"1234567', "caf\u00e9-12345"],
)
async def test_malformed_request_id_is_replaced(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/things/1", headers={"X-Request-ID": request_id.encode()})
    assert response.status_code == 200
    replaced = response.headers["x-request-id"]
    assert replaced != request_id
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)


async def test_missing_request_id_gets_a_fresh_one_per_request(client: httpx.AsyncClient) -> None:
    first = (await client.get("/things/1")).headers["x-request-id"]
    second = (await client.get("/things/1")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


async def test_request_id_on_error_responses(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere", headers={"X-Request-ID": "req-for-a-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "req-for-a-404"


async def _raw_request(app: FastAPI, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """One request straight through ASGI (httpx refuses to send some header values)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/livez",
        "raw_path": b"/livez",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return next(m for m in sent if m["type"] == "http.response.start")


async def test_request_id_with_a_trailing_newline_is_replaced(tmp_path: Path) -> None:
    app = _app(f"sqlite+aiosqlite:///{tmp_path / 'raw.sqlite3'}")
    start = await _raw_request(app, [(b"x-request-id", b"abcdefgh1234\n")])
    echoed = dict(start["headers"])[b"x-request-id"]
    assert b"\n" not in echoed
    assert re.fullmatch(rb"[0-9a-f]{32}", echoed)


async def test_livez(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_with_a_reachable_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_readyz_without_a_database_is_a_503_problem() -> None:
    app = _app("postgresql+asyncpg://postgres@127.0.0.1:1/nothing_listens_here")
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/readyz")
            assert response.status_code == 503
            assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
            body = response.json()
            assert body["type"] == PROBLEM_BASE + "not-ready"
            assert body["status"] == 503
            assert "Traceback" not in response.text
            # liveness has no dependencies: the process is alive even with its database gone
            assert (await http.get("/livez")).status_code == 200


async def test_metrics(client: httpx.AsyncClient) -> None:
    await client.get("/things/abc-123")
    await client.get("/things/def-456")
    stray = f"/stray-{uuid.uuid4().hex}"
    await client.get(stray)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "registry_http_requests_total" in text
    assert "registry_http_request_duration_seconds_bucket" in text
    labels = [
        dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        for match in re.finditer(r"^registry_http_requests_total\{(.*)\} \S+$", text, re.MULTILINE)
    ]
    mine = [label for label in labels if label.get("service") == "kitapptest"]
    # Labelled by route template, never by raw path (bounded cardinality).
    assert {"method": "GET", "route": "/things/{thing_id}", "status": "200", "service": "kitapptest"} in mine
    assert {"method": "GET", "route": "unmatched", "status": "404", "service": "kitapptest"} in mine
    assert stray not in text
    assert "abc-123" not in text


async def test_probes_and_scrapes_stay_out_of_the_access_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="kit.access")
    for path in ("/livez", "/readyz", "/metrics", "/things/logged"):
        assert (await client.get(path)).status_code == 200
    logged = [str(r.msg) for r in caplog.records if r.name == "kit.access"]
    assert any("/things/logged" in line for line in logged)
    for path in ("/livez", "/readyz", "/metrics"):
        assert not any(f"'path': '{path}'" in line for line in logged), (path, logged)
    text = (await client.get("/metrics")).text
    assert 'route="/metrics"' in text  # a scrape is counted as itself, not among unmatched 404s
