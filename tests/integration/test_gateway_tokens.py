"""POST /oauth2/token and GET /.well-known/jwks.json on both database backends (RFC 6749 §4.4, RFC 9068)."""

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from kit.jwt import KeySet, verify_token
from tests.support.apps import client_for
from tests.support.databases import DatabaseFactory

BOOTSTRAP_ID = "secretariat-bootstrap"
BOOTSTRAP_SECRET = "tokens-test-bootstrap-secret-4f9a2c"


def settings_for(url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "data_dir": data_dir,
        "database_url": url,
        "bootstrap_client_id": BOOTSTRAP_ID,
        "bootstrap_client_secret": BOOTSTRAP_SECRET,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gateway_url(
    request: pytest.FixtureRequest,
    database_factory: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """One migrated gateway database per backend for the module: a new one per test would cost most of
    the run on PostgreSQL. Tests stay independent by working on clients they create themselves."""
    if request.param == "postgres":
        url = database_factory.postgres("gateway")
    else:
        url = database_factory.sqlite("gateway", tmp_path_factory.mktemp("gateway-db"))
    yield url
    database_factory.drop(url)


@pytest.fixture
async def gateway(gateway_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings_for(gateway_url, tmp_path))) as client:
        yield client


def form(**fields: str) -> dict[str, str]:
    return {"grant_type": "client_credentials"} | fields


def claims_of(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


async def bearer(
    client: httpx.AsyncClient, client_id: str = BOOTSTRAP_ID, secret: str = BOOTSTRAP_SECRET
) -> dict:
    response = await client.post("/oauth2/token", data=form(), auth=(client_id, secret))
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def new_client(client: httpx.AsyncClient, **body: object) -> dict:
    response = await client.post("/v1/clients", json=body, headers=await bearer(client))
    assert response.status_code == 201, response.text
    return response.json()


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


async def test_token_with_http_basic(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/oauth2/token", data=form(), auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["scope"] == "secretariat_admin"


async def test_token_with_form_credentials(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        "/oauth2/token", data=form(client_id=BOOTSTRAP_ID, client_secret=BOOTSTRAP_SECRET)
    )
    assert response.status_code == 200
    assert claims_of(response.json()["access_token"])[1]["sub"] == BOOTSTRAP_ID


async def test_basic_and_form_credentials_together_are_an_invalid_request(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        "/oauth2/token",
        data=form(client_id=BOOTSTRAP_ID, client_secret=BOOTSTRAP_SECRET),
        auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET),
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_wrong_secret_with_basic_is_invalid_client_with_a_challenge(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/oauth2/token", data=form(), auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET + "x"))
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    assert "access_token" not in response.text


async def test_wrong_secret_in_the_form_is_invalid_client(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/oauth2/token", data=form(client_id=BOOTSTRAP_ID, client_secret="nope"))
    assert_oauth_error(response, 401, "invalid_client")


async def test_unknown_client_is_invalid_client(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/oauth2/token", data=form(), auth=("c_doesnotexist", BOOTSTRAP_SECRET))
    assert_oauth_error(response, 401, "invalid_client")
    response = await gateway.post("/oauth2/token", data=form(), auth=("x" * 500, "y"))
    assert_oauth_error(response, 401, "invalid_client")


async def test_missing_client_authentication_is_invalid_client(gateway: httpx.AsyncClient) -> None:
    assert_oauth_error(await gateway.post("/oauth2/token", data=form()), 401, "invalid_client")
    response = await gateway.post("/oauth2/token", data=form(client_id=BOOTSTRAP_ID))
    assert_oauth_error(response, 401, "invalid_client")


async def test_malformed_basic_credentials_are_invalid_client(gateway: httpx.AsyncClient) -> None:
    for header in ("Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer abc"):
        response = await gateway.post("/oauth2/token", data=form(), headers={"Authorization": header})
        assert_oauth_error(response, 401, "invalid_client")


async def test_revoked_client_gets_no_token(gateway: httpx.AsyncClient) -> None:
    created = await new_client(gateway, name="Ghana admin", party="GHA", roles=["party_admin"])
    revoke = await gateway.post(f"/v1/clients/{created['client_id']}/revoke", headers=await bearer(gateway))
    assert revoke.status_code == 200
    response = await gateway.post(
        "/oauth2/token", data=form(), auth=(created["client_id"], created["client_secret"])
    )
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": ""}, "invalid_request"),
        ({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
    ],
)
async def test_grant_type_missing_or_unsupported(gateway: httpx.AsyncClient, data: dict, error: str) -> None:
    response = await gateway.post("/oauth2/token", data=data, auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET))
    assert_oauth_error(response, 400, error)


async def test_parameters_must_be_a_form_sent_once(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        "/oauth2/token", json={"grant_type": "client_credentials"}, auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET)
    )
    assert_oauth_error(response, 400, "invalid_request")
    response = await gateway.post(
        "/oauth2/token",
        content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET),
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_scope_narrows_the_roles_and_a_superset_is_refused(gateway: httpx.AsyncClient) -> None:
    created = await new_client(
        gateway, name="Ghana officer", party="GHA", roles=["initiator", "approver", "viewer"]
    )
    credentials = (created["client_id"], created["client_secret"])

    response = await gateway.post("/oauth2/token", data=form(scope="viewer"), auth=credentials)
    assert response.status_code == 200
    assert response.json()["scope"] == "viewer"
    assert claims_of(response.json()["access_token"])[1]["roles"] == ["viewer"]

    response = await gateway.post("/oauth2/token", data=form(scope="viewer initiator"), auth=credentials)
    assert response.json()["scope"] == "initiator viewer"
    assert claims_of(response.json()["access_token"])[1]["scope"] == "initiator viewer"

    response = await gateway.post("/oauth2/token", data=form(), auth=credentials)
    assert response.json()["scope"] == "initiator approver viewer"

    for scope in ("viewer secretariat_admin", "party_admin", "nonsense", "viewer  initiator"):
        response = await gateway.post("/oauth2/token", data=form(scope=scope), auth=credentials)
        assert_oauth_error(response, 400, "invalid_scope")


async def test_claims_follow_rfc_9068_and_verify_with_the_kit(gateway: httpx.AsyncClient) -> None:
    created = await new_client(gateway, name="Ghana officer", party="GHA", roles=["initiator"])
    before = int(time.time())
    response = await gateway.post(
        "/oauth2/token", data=form(), auth=(created["client_id"], created["client_secret"])
    )
    token = response.json()["access_token"]
    header, claims = claims_of(token)
    jwks = (await gateway.get("/.well-known/jwks.json")).json()
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": jwks["keys"][0]["kid"]}
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "party", "roles"}
    assert claims["sub"] == claims["client_id"] == created["client_id"]
    assert claims["iss"] == "a62-registry" and claims["aud"] == "a62-registry-api"
    assert claims["party"] == "GHA" and claims["roles"] == ["initiator"] and claims["scope"] == "initiator"
    assert before <= claims["iat"] <= time.time() and claims["exp"] - claims["iat"] == 900

    verified = verify_token(token, KeySet(jwks), issuer="a62-registry", audience="a62-registry-api")
    assert verified == claims

    second = await gateway.post(
        "/oauth2/token", data=form(), auth=(created["client_id"], created["client_secret"])
    )
    assert claims_of(second.json()["access_token"])[1]["jti"] != claims["jti"]


async def test_secretariat_token_has_a_null_party(gateway: httpx.AsyncClient) -> None:
    token = (await bearer(gateway))["Authorization"].split()[1]
    claims = claims_of(token)[1]
    assert claims["party"] is None and claims["roles"] == ["secretariat_admin"]
    assert "registry_id" not in claims


async def test_registry_client_tokens_carry_the_registry_id(gateway: httpx.AsyncClient) -> None:
    created = await new_client(
        gateway, name="Swiss registry", party="CHE", roles=["registry"], registry_id="CHE01"
    )
    response = await gateway.post(
        "/oauth2/token", data=form(), auth=(created["client_id"], created["client_secret"])
    )
    claims = claims_of(response.json()["access_token"])[1]
    assert claims["registry_id"] == "CHE01" and claims["party"] == "CHE" and claims["roles"] == ["registry"]


async def test_jwks_publishes_public_keys_only_with_caching(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and key["use"] == "sig"
    assert {"kid", "x", "y"} <= set(key) and "d" not in key


async def test_get_on_the_token_endpoint_is_a_405_problem(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/oauth2/token")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


async def test_token_endpoint_is_rate_limited_per_client(gateway_url: str, tmp_path: Path) -> None:
    settings = settings_for(gateway_url, tmp_path, token_rate_limit_per_second=0.5, token_rate_limit_burst=2)
    async with client_for(create_app(settings)) as client:
        for _ in range(2):
            response = await client.post("/oauth2/token", data=form(), auth=(BOOTSTRAP_ID, "wrong"))
            assert response.status_code == 401
        response = await client.post("/oauth2/token", data=form(), auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET))
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1
        # Another client id has its own bucket.
        other = await client.post("/oauth2/token", data=form(), auth=("c_someoneelse", "x"))
        assert other.status_code == 401
        metrics = (await client.get("/metrics")).text
        assert 'registry_gateway_rate_limit_total{bucket="token",decision="limited"}' in metrics


async def test_bootstrap_secret_rotates_with_the_environment(gateway_url: str, tmp_path: Path) -> None:
    async with client_for(create_app(settings_for(gateway_url, tmp_path))) as client:
        assert (
            await client.post("/oauth2/token", data=form(), auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET))
        ).status_code == 200
    rotated = "tokens-test-rotated-bootstrap-secret-77b1"
    async with client_for(
        create_app(settings_for(gateway_url, tmp_path, bootstrap_client_secret=rotated))
    ) as client:
        old = await client.post("/oauth2/token", data=form(), auth=(BOOTSTRAP_ID, BOOTSTRAP_SECRET))
        assert_oauth_error(old, 401, "invalid_client")
        new = await client.post("/oauth2/token", data=form(), auth=(BOOTSTRAP_ID, rotated))
        assert new.status_code == 200
        page = await client.get(
            "/v1/clients", params={"limit": 500}, headers=await bearer(client, secret=rotated)
        )
        bootstrap = [item for item in page.json()["items"] if item["client_id"] == BOOTSTRAP_ID]
        assert len(bootstrap) == 1
        assert bootstrap[0]["roles"] == ["secretariat_admin"] and bootstrap[0]["party"] is None


async def test_tokens_survive_a_restart_in_development(gateway_url: str, tmp_path: Path) -> None:
    async with client_for(create_app(settings_for(gateway_url, tmp_path))) as client:
        headers = await bearer(client)
    async with client_for(create_app(settings_for(gateway_url, tmp_path))) as client:
        assert (await client.get("/v1/clients", headers=headers)).status_code == 200
