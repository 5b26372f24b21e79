"""The gateway's route table, proxying, limits and upstream failures, with stand-in services.

The database only holds the bootstrap client here, so these tests run on SQLite alone; the database
behaviour of the gateway is covered on both backends by the token, client and security tests.
"""

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gateway.app import create_app
from gateway.config import Settings
from gateway.routes import ROUTE_TABLE, ROUTES
from gateway.upstream import UPSTREAM_NAMES
from kit.auth import TokenVerifier
from kit.jwt import KeySet
from services.party_sections.app import create_app as create_party_sections
from services.party_sections.config import Settings as PartySectionsSettings
from tests.support.apps import client_for, lifespan
from tests.support.databases import DatabaseFactory

BOOTSTRAP_ID = "secretariat-bootstrap"
BOOTSTRAP_SECRET = "proxy-test-bootstrap-secret-c3d91a77"
BIG_CHUNK = 64 * 1024
BIG_CHUNKS = 200  # 12.5 MiB, more than the request limit: responses are not limited


def echo_app(name: str) -> FastAPI:
    """A stand-in service: a few special paths, and an echo of everything else."""
    app = FastAPI(title=f"stand-in {name}")
    app.state.calls = []

    @app.get("/v1/reports/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(5)
        return {"late": "yes"}

    @app.get("/v1/reports/big.csv")
    async def big() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for index in range(BIG_CHUNKS):
                yield bytes([48 + index % 10]) * BIG_CHUNK

        return StreamingResponse(chunks(), media_type="text/csv")

    @app.get("/v1/reports/headers")
    async def many_headers() -> Response:
        headers = {
            "Content-Disposition": 'attachment; filename="aef.xlsx"',
            "ETag": '"7"',
            "Location": "/v1/reports/aef/GHA/2024/submissions/1.0",
            "Retry-After": "3",
            "Idempotent-Replayed": "true",
            "Cache-Control": "private, max-age=0",
            "Link": '</v1/reports/headers?cursor=x>; rel="next"',
            "WWW-Authenticate": 'Bearer error="insufficient_scope"',
            "X-Request-Id": "the-service-own-id-000",
            "Set-Cookie": "session=secret",
            "Server": "uvicorn",
            "X-Powered-By": "python",
            "X-Internal-Debug": "db=10.0.0.5",
            "Access-Control-Allow-Origin": "*",
        }
        return Response(b"{}", media_type="application/json", headers=headers)

    async def echo(request: Request) -> JSONResponse:
        received = {
            "upstream": name,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body_length": len(await request.body()),
        }
        app.state.calls.append(received)
        return JSONResponse(received)

    @app.get("/v1/parties", summary="Parties (stand-in)")
    async def documented_parties(request: Request) -> JSONResponse:
        return await echo(request)

    @app.get("/internal/v1/events", summary="Must never be published")
    async def internal() -> dict[str, str]:
        return {}

    if name == "party_sections":

        @app.get("/v1/transactions/{transaction_id}", summary="Served by transactions, not by this service")
        async def misplaced(transaction_id: str) -> dict[str, str]:
            return {}

    @app.api_route(
        "/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
    )
    async def everything_else(request: Request, path: str) -> JSONResponse:
        return await echo(request)

    return app


@dataclass
class Harness:
    client: httpx.AsyncClient
    app: FastAPI
    upstreams: dict[str, FastAPI]

    def calls(self) -> list[dict[str, Any]]:
        return [call for upstream in self.upstreams.values() for call in upstream.state.calls]

    async def headers(self) -> dict[str, str]:
        response = await self.client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET)
        )
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def gateway_url(database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> str:
    return database_factory.sqlite("gateway", tmp_path_factory.mktemp("gateway-db"))


@pytest.fixture
def make_settings(gateway_url: str, tmp_path: Path):
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "environment": "test",
            "data_dir": tmp_path,
            "database_url": gateway_url,
            "bootstrap_client_id": BOOTSTRAP_ID,
            "bootstrap_client_secret": BOOTSTRAP_SECRET,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@asynccontextmanager
async def running_gateway(
    settings: Settings, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
) -> AsyncIterator[Harness]:
    upstreams = {name: echo_app(name) for name in UPSTREAM_NAMES}
    chosen = {name: httpx.ASGITransport(app=app) for name, app in upstreams.items()}
    if transports is not None:
        chosen = {name: t for name, t in ({**chosen, **transports}).items() if t is not None}
    app = create_app(settings, upstream_transports=chosen)
    async with client_for(app) as client:
        yield Harness(client, app, upstreams)


@pytest.fixture
async def gateway(make_settings) -> AsyncIterator[Harness]:
    async with running_gateway(make_settings(max_request_bytes=4096)) as harness:
        yield harness


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---- the route table -------------------------------------------------------------------------------------

ROUTED = [
    ("GET", "/v1/parties", "party_sections"),
    ("GET", "/v1/parties/GHA", "party_sections"),
    ("POST", "/v1/cooperative-approaches", "party_sections"),
    ("GET", "/v1/cooperative-approaches/CA0012", "party_sections"),
    ("POST", "/v1/party-sections", "party_sections"),
    ("POST", "/v1/party-sections/GHA/open", "party_sections"),
    ("PATCH", "/v1/party-sections/GHA/settings", "party_sections"),
    ("PUT", "/v1/party-sections/GHA/ndc-periods", "party_sections"),
    ("GET", "/v1/party-sections/GHA/accounts", "party_sections"),
    ("POST", "/v1/accounts/GHA01-100-1/block", "party_sections"),
    ("POST", "/v1/accounts/GHA01-100-1/unblock", "party_sections"),
    ("POST", "/v1/accounts/GHA01-100-1/close", "party_sections"),
    ("POST", "/v1/transactions", "transactions"),
    ("POST", "/v1/transactions/validate", "transactions"),
    ("POST", "/v1/transactions/T1/approve", "transactions"),
    ("GET", "/v1/transactions", "transactions"),
    ("GET", "/v1/accounts/GHA01-100-1/holdings", "transactions"),
    ("GET", "/v1/units/CA0012-GHA01-GHA-150001-2024", "transactions"),
    ("GET", "/v1/admin/invariants", "transactions"),
    ("POST", "/v1/admin/corrections", "transactions"),
    ("GET", "/v1/admin/corrections", "transactions"),
    ("POST", "/v1/admin/corrections/T1/approve", "transactions"),
    ("POST", "/v1/admin/corrections/T1/cancel", "transactions"),
    ("POST", "/v1/interregistry/registries", "transactions"),
    ("GET", "/v1/interregistry/inbox", "transactions"),
    ("POST", "/v1/interregistry/transfers/T9/response", "transactions"),
    ("POST", "/v1/ars/GHA/issuances", "ars"),
    ("GET", "/v1/ars/GHA/blocks", "ars"),
    ("POST", "/v1/ars/GHA/authorizations/A1/versions", "ars"),
    ("GET", "/v1/reports/aef/GHA/2024", "reporting"),
    ("POST", "/v1/reports/aef/GHA/2024/submissions", "reporting"),
    ("GET", "/v1/reports/consistency/2024", "reporting"),
    ("GET", "/v1/events", "reporting"),
    ("POST", "/v1/webhooks", "reporting"),
    ("DELETE", "/v1/webhooks/W1", "reporting"),
    ("GET", "/v1/webhooks/W1/deliveries", "reporting"),
]
PUBLIC = [
    ("/v1/checks", "transactions"),
    ("/v1/public/cooperative-approaches", "reporting"),
    ("/v1/public/aef/GHA/2024/1.0", "reporting"),
    ("/v1/interregistry/version", "transactions"),
    ("/v1/interregistry/jwks.json", "transactions"),
    ("/v1/interregistry/codes", "transactions"),
]


@pytest.mark.parametrize(("method", "path", "upstream"), ROUTED)
def test_the_route_table_sends_each_api_path_to_its_service(method: str, path: str, upstream: str) -> None:
    route = ROUTE_TABLE.resolve(method, path)
    assert route.upstream == upstream and not route.public


def test_every_route_names_a_known_service() -> None:
    assert {route.upstream for route in ROUTES} == set(UPSTREAM_NAMES)


async def test_each_prefix_reaches_the_right_service_with_path_query_and_body(gateway: Harness) -> None:
    headers = await gateway.headers()
    for method, path, upstream in ROUTED:
        response = await gateway.client.request(
            method, path, params={"limit": "5", "q": "a b"}, headers=headers, json={"n": 1}
        )
        assert response.status_code == 200, (method, path, response.text)
        echoed = response.json()
        assert echoed["upstream"] == upstream, (method, path)
        assert (echoed["method"], echoed["path"], echoed["query"]) == (method, path, "limit=5&q=a+b")
        assert echoed["body_length"] == len(b'{"n":1}')


async def test_percent_encoding_reaches_the_service_unchanged(gateway: Harness) -> None:
    response = await gateway.client.get(
        "/v1/units/CA0012-GHA01-GHA-150%2C001-2024", headers=await gateway.headers()
    )
    assert response.status_code == 200
    assert response.json()["path"] == "/v1/units/CA0012-GHA01-GHA-150,001-2024"


@pytest.mark.parametrize("path", [path for path, _ in PUBLIC])
async def test_public_routes_need_no_token(gateway: Harness, path: str) -> None:
    response = await gateway.client.get(path)
    assert response.status_code == 200
    assert response.json()["upstream"] == dict(PUBLIC)[path]
    assert "authorization" not in response.json()["headers"]


@pytest.mark.parametrize(("method", "path"), [(method, path) for method, path, _ in ROUTED[::4]])
async def test_other_routes_need_a_token_before_any_upstream_call(
    gateway: Harness, method: str, path: str
) -> None:
    response = await gateway.client.request(method, path)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert gateway.calls() == []


@pytest.mark.parametrize(
    "path",
    [
        "/internal/v1/events",
        "/internal/v1/anything/else",
        "/",
        "/v1",
        "/v1/nothing-here",
        "/v2/parties",
        "/v1/accounts/GHA01-100-1",
        "/v1/accounts/GHA01-100-1/transfer",
        "/v1/parties/",
        "/v1//parties",
        "/v1/public/%2e%2e/%2e%2e/internal/v1/events",
        "/v1/public%2F..%2F..%2Finternal%2Fv1%2Fevents",
        "/v1/public/%2e/x",
        "/livez/extra",
    ],
)
async def test_unrouted_paths_are_404_problems(gateway: Harness, path: str) -> None:
    response = await gateway.client.get(path, headers=await gateway.headers())
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert gateway.calls() == []


async def test_a_known_path_with_another_method_is_a_405_problem(gateway: Harness) -> None:
    response = await gateway.client.delete("/v1/parties", headers=await gateway.headers())
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["content-type"] == "application/problem+json"
    response = await gateway.client.post("/v1/public/anything")
    assert response.status_code == 405
    response = await gateway.client.get("/oauth2/token")
    assert response.status_code == 405
    assert gateway.calls() == []


async def test_the_gateway_own_routes_are_not_proxied(gateway: Harness) -> None:
    for path in ("/livez", "/.well-known/jwks.json", "/openapi.json", "/docs"):
        assert (await gateway.client.get(path)).status_code == 200, path
    assert gateway.calls() == []


# ---- limits ----------------------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_a_413_problem(gateway: Harness) -> None:
    headers = await gateway.headers()
    response = await gateway.client.post("/v1/transactions", content=b"x" * 4096, headers=headers)
    assert response.status_code == 200 and response.json()["body_length"] == 4096

    response = await gateway.client.post("/v1/transactions", content=b"x" * 4097, headers=headers)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/payload-too-large")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(10):
            yield b"y" * 1000

    response = await gateway.client.post("/v1/transactions", content=chunked(), headers=headers)
    assert response.status_code == 413
    assert response.json()["type"].endswith("/payload-too-large")

    response = await gateway.client.post("/v1/clients", content=b"{" + b" " * 5000 + b"}", headers=headers)
    assert response.status_code == 413
    assert len(gateway.calls()) == 1


async def test_rate_limit_per_client_answers_429_with_retry_after(make_settings) -> None:
    async with running_gateway(make_settings(rate_limit_per_second=0.2, rate_limit_burst=3)) as gateway:
        headers = await gateway.headers()
        for _ in range(3):
            assert (await gateway.client.get("/v1/parties", headers=headers)).status_code == 200
        response = await gateway.client.get("/v1/parties", headers=headers)
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/rate-limited")
        retry_after = response.headers["retry-after"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 5
        # The gateway's own routes count against the same bucket; public calls without a token do not.
        assert (await gateway.client.get("/v1/clients", headers=headers)).status_code == 429
        assert (await gateway.client.get("/v1/checks")).status_code == 200
        assert len(gateway.calls()) == 4
        metrics = (await gateway.client.get("/metrics")).text
        assert 'registry_gateway_rate_limit_total{bucket="api",decision="limited"}' in metrics


# ---- responses -------------------------------------------------------------------------------------------


async def test_only_allow_listed_response_headers_come_back(gateway: Harness) -> None:
    response = await gateway.client.get("/v1/reports/headers", headers=await gateway.headers())
    assert response.status_code == 200
    for name in (
        "content-type",
        "content-disposition",
        "etag",
        "location",
        "retry-after",
        "idempotent-replayed",
        "cache-control",
        "link",
        "www-authenticate",
    ):
        assert name in response.headers, name
    for name in ("set-cookie", "server", "x-powered-by", "x-internal-debug", "access-control-allow-origin"):
        assert name not in response.headers, name
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
    assert response.headers["x-request-id"] != "the-service-own-id-000"


async def test_a_large_body_streams_through(gateway: Harness) -> None:
    response = await gateway.client.get("/v1/reports/big.csv", headers=await gateway.headers())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert len(response.content) == BIG_CHUNK * BIG_CHUNKS
    assert response.content[:3] == b"000" and response.content[-1:] == bytes([48 + (BIG_CHUNKS - 1) % 10])


class GatedStream(httpx.AsyncByteStream):
    """Sends one chunk, then waits until the client has received it before sending the rest."""

    def __init__(self, released: asyncio.Event) -> None:
        self.released = released

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"first,"
        await asyncio.wait_for(self.released.wait(), timeout=5)
        yield b"second"


class GatedTransport(httpx.AsyncBaseTransport):
    def __init__(self, released: asyncio.Event) -> None:
        self.released = released

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/csv"}, stream=GatedStream(self.released))


async def test_the_response_is_relayed_as_it_arrives(make_settings) -> None:
    released = asyncio.Event()
    async with running_gateway(make_settings(), {"reporting": GatedTransport(released)}) as gateway:
        token = (await gateway.headers())["Authorization"].encode()
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body") == b"first,":
                released.set()  # the gateway forwarded the first chunk before the service sent the second

        async def receive() -> dict[str, Any]:
            if not sent and not getattr(receive, "done", False):
                receive.done = True  # type: ignore[attr-defined]
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/v1/reports/export.csv",
            "raw_path": b"/v1/reports/export.csv",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), (b"authorization", token)],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await asyncio.wait_for(gateway.app(scope, receive, send), timeout=10)
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert body == b"first,second"


# ---- upstream failures -----------------------------------------------------------------------------------


async def test_an_unreachable_service_is_a_503_problem_naming_it(make_settings) -> None:
    settings = make_settings(transactions_url=closed_port_url())
    async with running_gateway(settings, {"transactions": None}) as gateway:  # type: ignore[dict-item]
        response = await gateway.client.post("/v1/transactions", json={}, headers=await gateway.headers())
        assert response.status_code == 503
        problem = response.json()
        assert problem["type"].endswith("/upstream-unavailable")
        assert problem["upstream"] == "transactions" and "transactions" in problem["detail"]
        # The other services are unaffected.
        assert (await gateway.client.get("/v1/parties", headers=await gateway.headers())).status_code == 200
        metrics = (await gateway.client.get("/metrics")).text
        assert 'registry_gateway_upstream_errors_total{kind="unavailable",upstream="transactions"}' in metrics


async def test_a_slow_service_is_a_504_problem(make_settings) -> None:
    async with running_gateway(make_settings(upstream_timeout_seconds=0.2)) as gateway:
        started = asyncio.get_running_loop().time()
        response = await gateway.client.get("/v1/reports/slow", headers=await gateway.headers())
        assert asyncio.get_running_loop().time() - started < 2
        assert response.status_code == 504
        problem = response.json()
        assert problem["type"].endswith("/upstream-timeout") and problem["upstream"] == "reporting"
        metrics = (await gateway.client.get("/metrics")).text
        assert 'registry_gateway_upstream_errors_total{kind="timeout",upstream="reporting"}' in metrics


# ---- OpenAPI ---------------------------------------------------------------------------------------------


async def test_openapi_merges_the_exposed_paths_of_each_service(make_settings) -> None:
    settings = make_settings(ars_url=closed_port_url())
    async with running_gateway(settings, {"ars": None}) as gateway:  # type: ignore[dict-item]
        response = await gateway.client.get("/openapi.json")
        assert response.status_code == 200
        document = response.json()
        paths = document["paths"]
        assert {
            "/oauth2/token",
            "/.well-known/jwks.json",
            "/v1/clients",
            "/v1/clients/{client_id}/revoke",
        } <= set(paths)
        assert "/v1/parties" in paths and paths["/v1/parties"]["get"]["summary"] == "Parties (stand-in)"
        assert paths["/v1/parties"]["get"]["security"] == [{"oauth2": []}]
        assert not any(path.startswith("/internal") for path in paths)
        assert not any("{path" in path for path in paths)  # neither the proxy nor a service catch-all
        # Each service contributes only the paths the route table sends to it.
        assert "/v1/transactions/{transaction_id}" not in paths
        assert {"oauth2", "clientBasic"} <= set(document["components"]["securitySchemes"])
        assert "application/x-www-form-urlencoded" in paths["/oauth2/token"]["post"]["requestBody"]["content"]
        assert "ClientCreate" in document["components"]["schemas"]
        docs = await gateway.client.get("/docs")
        assert docs.status_code == 200 and "/openapi.json" in docs.text


async def test_gateway_tokens_work_on_a_real_service(
    make_settings, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """The in-process suite's wiring: a service verifies the gateway's tokens with the ring's JWKS."""
    verifier = TokenVerifier(issuer="a62-registry", audience="a62-registry-api", keys=KeySet())
    service = create_party_sections(
        PartySectionsSettings(database_url=database_factory.sqlite("services.party_sections", tmp_path)),
        token_verifier=verifier,
    )
    gateway = create_app(
        make_settings(), upstream_transports={"party_sections": httpx.ASGITransport(app=service)}
    )
    verifier.keys.replace(gateway.state.key_ring.jwks())
    async with lifespan(service), client_for(gateway) as client:
        response = await client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET)
        )
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        parties = await client.get("/v1/parties", params={"limit": 3}, headers=headers)
        assert parties.status_code == 200, parties.text
        assert len(parties.json()["items"]) == 3
        assert (await client.get("/v1/parties")).status_code == 401
        merged = (await client.get("/openapi.json")).json()
        assert "/v1/parties" in merged["paths"]
