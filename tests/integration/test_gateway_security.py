"""Gateway security (DESIGN §3): forged tokens refused before any upstream call, revocation at once,
identity headers never forwarded, secrets never logged."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.app import create_app
from gateway.config import Settings
from gateway.upstream import UPSTREAM_NAMES
from kit.jwt import SigningKey, sign_token
from kit.logging import configure_logging
from tests.support.apps import client_for
from tests.support.databases import DatabaseFactory
from tests.support.tokens import TokenFactory

BOOTSTRAP_ID = "secretariat-bootstrap"
BOOTSTRAP_SECRET = "security-test-bootstrap-secret-2b7f0e"
PROXIED = "/v1/parties"
ALLOWED_UPSTREAM_HEADERS = {
    "host",
    "content-length",
    "accept-encoding",
    "x-request-id",
    "authorization",
    "content-type",
    "accept",
    "if-match",
    "if-none-match",
    "idempotency-key",
    "irx-signature",
}


def echo_app(name: str) -> FastAPI:
    """A stand-in service answering every request with what it received."""
    app = FastAPI()
    app.state.calls = []

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(request: Request, path: str) -> JSONResponse:
        received = {
            "upstream": name,
            "method": request.method,
            "path": request.url.path,
            "headers": [[key, value] for key, value in request.headers.items()],
            "body": (await request.body()).decode("latin-1"),
        }
        app.state.calls.append(received)
        return JSONResponse(received)

    return app


@dataclass
class Harness:
    client: httpx.AsyncClient
    app: FastAPI
    upstreams: dict[str, FastAPI]
    settings: Settings

    def calls(self) -> list[dict[str, Any]]:
        return [call for upstream in self.upstreams.values() for call in upstream.state.calls]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gateway_url(
    request: pytest.FixtureRequest,
    database_factory: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """One migrated gateway database per backend for the module; each test makes its own clients."""
    if request.param == "postgres":
        url = database_factory.postgres("gateway")
    else:
        url = database_factory.sqlite("gateway", tmp_path_factory.mktemp("gateway-db"))
    yield url
    database_factory.drop(url)


def settings_for(url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "data_dir": data_dir,
        "database_url": url,
        "bootstrap_client_id": BOOTSTRAP_ID,
        "bootstrap_client_secret": BOOTSTRAP_SECRET,
        "revocation_refresh_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Harness]:
    upstreams = {name: echo_app(name) for name in UPSTREAM_NAMES}
    transports = {name: httpx.ASGITransport(app=app) for name, app in upstreams.items()}
    app = create_app(settings, upstream_transports=transports)
    async with client_for(app) as client:
        yield Harness(client, app, upstreams, settings)


@pytest.fixture
async def gateway(gateway_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(settings_for(gateway_url, tmp_path)) as harness:
        yield harness


async def token_of(client: httpx.AsyncClient, client_id: str, secret: str) -> str:
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_client(client: httpx.AsyncClient, **body: object) -> dict[str, Any]:
    headers = bearer(await token_of(client, BOOTSTRAP_ID, BOOTSTRAP_SECRET))
    response = await client.post("/v1/clients", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


# ---- forged tokens ---------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def valid_claims(**overrides: object) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "a62-registry",
        "aud": "a62-registry-api",
        "sub": BOOTSTRAP_ID,
        "client_id": BOOTSTRAP_ID,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "scope": "secretariat_admin",
        "party": None,
        "roles": ["secretariat_admin"],
    }
    claims.update(overrides)
    return claims


def es256_by_hand(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A correctly signed ES256 JWS with any header at all (kit.jwt.sign_token always sets typ and kid)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = utils.decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def forged_tokens(key: SigningKey) -> dict[str, str]:
    """Every token here must be refused; the key is the gateway's real signing key."""
    same_key = TokenFactory(key)
    claims = valid_claims()
    unsigned = f"{segment({'alg': 'none', 'typ': 'at+jwt', 'kid': key.kid})}.{segment(claims)}."
    hs_input = f"{segment({'alg': 'HS256', 'typ': 'at+jwt', 'kid': key.kid})}.{segment(claims)}"
    hs256 = f"{hs_input}.{b64url(hmac.new(key.public_pem(), hs_input.encode(), hashlib.sha256).digest())}"
    good = sign_token(key, claims)
    head, _, signature = good.split(".")
    tampered = f"{head}.{segment(claims | {'party': 'GHA', 'roles': ['party_admin']})}.{signature}"
    return {
        "alg none": unsigned,
        "alg none without signature": unsigned.rstrip("."),
        "HS256 keyed with the public key PEM": hs256,
        "expired": same_key.token(
            party=None, roles=["secretariat_admin"], client_id=BOOTSTRAP_ID, lifetime=-120
        ),
        "wrong audience": sign_token(key, valid_claims(aud="another-api")),
        "wrong issuer": sign_token(key, valid_claims(iss="https://evil.example")),
        "unknown kid": TokenFactory().token(party=None, roles=["secretariat_admin"], client_id=BOOTSTRAP_ID),
        "tampered payload": tampered,
        "missing typ": es256_by_hand(key, {"alg": "ES256", "kid": key.kid}, claims),
        "typ JWT": sign_token(key, claims, typ="JWT"),
        "missing kid": es256_by_hand(key, {"alg": "ES256", "typ": "at+jwt"}, claims),
        "crit header": es256_by_hand(
            key, {"alg": "ES256", "typ": "at+jwt", "kid": key.kid, "crit": ["x"]}, claims
        ),
        "missing exp": sign_token(key, {k: v for k, v in claims.items() if k != "exp"}),
        "JWE-shaped": "a.b.c.d.e",
        "junk": "not-a-token",
    }


async def test_a_correctly_signed_token_reaches_the_service(gateway: Harness) -> None:
    token = sign_token(gateway.app.state.key_ring.active, valid_claims())
    response = await gateway.client.get(PROXIED, headers=bearer(token))
    assert response.status_code == 200
    assert len(gateway.calls()) == 1


async def test_forged_tokens_never_reach_a_service(gateway: Harness) -> None:
    for name, token in forged_tokens(gateway.app.state.key_ring.active).items():
        for path in (PROXIED, "/v1/clients", "/v1/public/register"):
            response = await gateway.client.get(path, headers=bearer(token))
            assert response.status_code == 401, (name, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"].endswith("/invalid-token"), name
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert gateway.calls() == []


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer"])
async def test_missing_or_malformed_authorization_is_401(gateway: Harness, header: str) -> None:
    headers = {"Authorization": header} if header else {}
    response = await gateway.client.post("/v1/transactions", json={}, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert gateway.calls() == []


# ---- revocation ------------------------------------------------------------------------------------------


async def test_a_revoked_client_is_refused_on_the_very_next_request(gateway: Harness) -> None:
    admin = await new_client(gateway.client, name="Ghana admin", party="GHA", roles=["party_admin"])
    token = await token_of(gateway.client, admin["client_id"], admin["client_secret"])
    assert (await gateway.client.get(PROXIED, headers=bearer(token))).status_code == 200
    assert (await gateway.client.get("/v1/clients", headers=bearer(token))).status_code == 200

    secretariat = bearer(await token_of(gateway.client, BOOTSTRAP_ID, BOOTSTRAP_SECRET))
    revoked = await gateway.client.post(f"/v1/clients/{admin['client_id']}/revoke", headers=secretariat)
    assert revoked.status_code == 200

    calls_before = len(gateway.calls())
    for path in (PROXIED, "/v1/clients", "/v1/checks"):
        response = await gateway.client.get(path, headers=bearer(token))
        assert response.status_code == 401, path
        assert "revoked" in response.json()["detail"]
    assert len(gateway.calls()) == calls_before


async def test_a_client_revoked_on_one_replica_is_refused_by_another_within_a_second(
    gateway_url: str, tmp_path: Path
) -> None:
    # Both replicas sign and verify with the same key, as replicas of one deployment do.
    settings = settings_for(gateway_url, tmp_path)
    async with running_gateway(settings) as first, running_gateway(settings) as second:
        viewer = await new_client(first.client, name="Ghana viewer", party="GHA", roles=["viewer"])
        token = await token_of(first.client, viewer["client_id"], viewer["client_secret"])
        assert (await second.client.get(PROXIED, headers=bearer(token))).status_code == 200

        secretariat = bearer(await token_of(first.client, BOOTSTRAP_ID, BOOTSTRAP_SECRET))
        assert (
            await first.client.post(f"/v1/clients/{viewer['client_id']}/revoke", headers=secretariat)
        ).status_code == 200
        assert (await first.client.get(PROXIED, headers=bearer(token))).status_code == 401

        deadline = time.monotonic() + 1.0
        while (status := (await second.client.get(PROXIED, headers=bearer(token))).status_code) == 200:
            assert time.monotonic() < deadline, "the second replica still accepts a revoked client"
            await asyncio.sleep(0.02)
        assert status == 401


async def test_a_restarted_gateway_knows_earlier_revocations(gateway_url: str, tmp_path: Path) -> None:
    settings = settings_for(gateway_url, tmp_path, revocation_refresh_seconds=60)
    async with running_gateway(settings) as first:
        viewer = await new_client(first.client, name="Ghana viewer", party="GHA", roles=["viewer"])
        token = await token_of(first.client, viewer["client_id"], viewer["client_secret"])
        secretariat = bearer(await token_of(first.client, BOOTSTRAP_ID, BOOTSTRAP_SECRET))
        await first.client.post(f"/v1/clients/{viewer['client_id']}/revoke", headers=secretariat)
    async with running_gateway(settings) as second:
        assert (await second.client.get(PROXIED, headers=bearer(token))).status_code == 401


# ---- headers ---------------------------------------------------------------------------------------------


async def test_forged_identity_headers_never_reach_the_service(gateway: Harness) -> None:
    token = await token_of(gateway.client, BOOTSTRAP_ID, BOOTSTRAP_SECRET)
    sent = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "If-Match": '"3"',
        "If-None-Match": '"2"',
        "Idempotency-Key": "key-1",
        "IRX-Signature": "eyJhbGciOiJFUzI1NiJ9..c2ln",
        "X-Registry-Party": "GHA",
        "X-Client-Id": "someone-else",
        "X-Forwarded-For": "10.0.0.1",
        "X-Forwarded-Host": "internal",
        "X-Real-IP": "10.0.0.2",
        "X-Principal": '{"party": "GHA", "roles": ["party_admin"]}',
        "X-Roles": "secretariat_admin",
        "X-Request-Id": "forged-request-id-123",
        "Forwarded": "for=10.0.0.1",
        "Cookie": "session=abc",
        "Proxy-Authorization": "Basic abc",
        "User-Agent": "evil/1.0",
    }
    response = await gateway.client.post("/v1/transactions", content=b'{"a": 1}', headers=sent)
    assert response.status_code == 200
    received = dict(response.json()["headers"])
    assert set(received) <= ALLOWED_UPSTREAM_HEADERS, set(received) - ALLOWED_UPSTREAM_HEADERS
    for name in (
        "authorization",
        "content-type",
        "accept",
        "if-match",
        "if-none-match",
        "idempotency-key",
        "irx-signature",
    ):
        assert received[name] == sent[next(key for key in sent if key.lower() == name)]
    assert received["x-request-id"] == response.headers["x-request-id"] != "forged-request-id-123"
    assert response.json()["body"] == '{"a": 1}'


async def test_a_token_on_a_public_route_is_verified_too(gateway: Harness) -> None:
    assert (await gateway.client.get("/v1/checks")).status_code == 200
    forged = TokenFactory().token(party=None, roles=["secretariat_admin"], client_id=BOOTSTRAP_ID)
    assert (await gateway.client.get("/v1/checks", headers=bearer(forged))).status_code == 401
    assert len(gateway.calls()) == 1


# ---- logs ------------------------------------------------------------------------------------------------


async def test_secrets_and_tokens_are_never_logged(
    gateway_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("DEBUG", json=True, service="gateway")
    try:
        async with running_gateway(settings_for(gateway_url, tmp_path)) as harness:
            client = harness.client
            created = await new_client(client, name="Ghana admin", party="GHA", roles=["party_admin"])
            basic = await token_of(client, created["client_id"], created["client_secret"])
            form = await client.post(
                "/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": created["client_id"],
                    "client_secret": created["client_secret"],
                },
            )
            refused = await client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(BOOTSTRAP_ID, "wrong-" + BOOTSTRAP_SECRET),
            )
            assert refused.status_code == 401
            proxied = await client.get(PROXIED, headers=bearer(basic))
            assert proxied.status_code == 200
            await client.get("/v1/clients", headers=bearer(form.json()["access_token"]))
            secretariat = await token_of(client, BOOTSTRAP_ID, BOOTSTRAP_SECRET)
            await client.post(f"/v1/clients/{created['client_id']}/revoke", headers=bearer(secretariat))
            await client.get(PROXIED, headers=bearer(basic))
            tokens = [basic, form.json()["access_token"], secretariat]
    finally:
        configure_logging("WARNING")
    output = capsys.readouterr().err
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = {line.get("event") for line in lines}
    assert {"bootstrap_client", "client_created", "token_issued", "token_refused", "request"} <= events
    for secret in (
        BOOTSTRAP_SECRET,
        created["client_secret"],
        *tokens,
        *(token.split(".")[2] for token in tokens),
    ):
        assert secret not in output
