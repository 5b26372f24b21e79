"""kit.auth and kit.jwt: the bearer dependency, roles, hardened verification and JWKS refetching (DESIGN §3).

Negative tokens are built by hand (header and payload JSON, signed with `cryptography`), so each one
differs from a good token in exactly the way under test; `_forge` with the defaults makes a token that
verifies, which shows the helper itself is sound.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi import APIRouter, FastAPI

from contracts.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from contracts.roles import Role
from kit.app import create_app
from kit.auth import CurrentPrincipal, Principal, TokenVerifier, require_roles
from kit.config import ServiceSettings
from kit.errors import Unauthorized
from kit.jwt import KeySet, SigningKey, TokenInvalid, sign_token, verify_token
from tests.support.apps import lifespan
from tests.support.tokens import AUDIENCE, ISSUER, TokenFactory

# ---- helpers ---------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "client-1",
        "client_id": "client-1",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "party": "GHA",
        "roles": ["initiator"],
        "scope": "transfers",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _es256(key: SigningKey, signing_input: bytes) -> str:
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _forge(key: SigningKey, claims: dict[str, Any] | None = None, **header: Any) -> str:
    """A compact JWS signed ES256 by `key`, with a header of our choosing (None drops a member)."""
    full = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid} | header
    full = {name: value for name, value in full.items() if value is not None}
    signing_input = f"{_json(full)}.{_json(claims if claims is not None else _claims())}"
    return f"{signing_input}.{_es256(key, signing_input.encode())}"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def keys(key: SigningKey) -> KeySet:
    return KeySet({"keys": [key.public_jwk]})


def _verify(token: str, keys: KeySet, **kwargs: Any) -> dict[str, Any]:
    return verify_token(token, keys, issuer=ISSUER, audience=AUDIENCE, **kwargs)


# ---- kit.jwt.verify_token --------------------------------------------------------------------------


def test_good_tokens_verify(key: SigningKey, keys: KeySet) -> None:
    assert _verify(_forge(key), keys)["client_id"] == "client-1"  # the hand-made token is sound
    assert _verify(sign_token(key, _claims()), keys)["party"] == "GHA"
    assert _verify(_forge(key, _claims(aud=["other", AUDIENCE])), keys)["sub"] == "client-1"


def test_alg_none_is_refused(key: SigningKey, keys: KeySet) -> None:
    unsigned = f"{_json({'alg': 'none', 'typ': 'at+jwt', 'kid': key.kid})}.{_json(_claims())}."
    with pytest.raises(TokenInvalid, match="algorithm"):
        _verify(unsigned, keys)
    with pytest.raises(TokenInvalid):  # also with a (meaningless) signature attached
        _verify(unsigned + _b64(b"sig"), keys)


def test_hs256_signed_with_the_public_key_is_refused(key: SigningKey, keys: KeySet) -> None:
    header = _json({"alg": "HS256", "typ": "at+jwt", "kid": key.kid})
    signing_input = f"{header}.{_json(_claims())}"
    for secret in (key.public_pem(), json.dumps(key.public_jwk).encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(TokenInvalid, match="algorithm"):
            _verify(f"{signing_input}.{_b64(mac)}", keys)


def test_other_asymmetric_algorithms_are_refused(key: SigningKey, keys: KeySet) -> None:
    for alg in ("ES384", "RS256", "PS256", "EdDSA"):
        with pytest.raises(TokenInvalid, match="algorithm"):
            _verify(_forge(key, alg=alg), keys)


def test_expiry_and_leeway(key: SigningKey, keys: KeySet) -> None:
    now = int(time.time())
    assert _verify(_forge(key, _claims(exp=now - 10)), keys)  # within the 30 s leeway
    with pytest.raises(TokenInvalid):
        _verify(_forge(key, _claims(exp=now - 120)), keys)
    with pytest.raises(TokenInvalid):
        _verify(_forge(key, _claims(exp=now - 10)), keys, leeway=0)


def test_our_clock_decides_expiry(key: SigningKey, keys: KeySet) -> None:
    now = int(time.time())
    token = _forge(key, _claims(exp=now + 60))
    with pytest.raises(TokenInvalid, match="expired"):
        _verify(token, keys, now=now + 200)


@pytest.mark.parametrize(
    "claims",
    [
        _claims(aud="another-api"),
        _claims(aud=["another-api"]),
        _claims(iss="someone-else"),
        _claims(exp=None),
        _claims(iat=None),
        _claims(jti=None),
        _claims(sub=None),
        _claims(aud=None),
        _claims(iss=None),
    ],
    ids=[
        "wrong-aud",
        "wrong-aud-list",
        "wrong-iss",
        "no-exp",
        "no-iat",
        "no-jti",
        "no-sub",
        "no-aud",
        "no-iss",
    ],
)
def test_claims_are_checked(key: SigningKey, keys: KeySet, claims: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        _verify(_forge(key, claims), keys)


def test_unknown_kid_is_refused(key: SigningKey, keys: KeySet) -> None:
    other = SigningKey.generate()
    with pytest.raises(TokenInvalid, match="unknown key id"):
        _verify(_forge(other), keys)
    with pytest.raises(
        TokenInvalid, match="unknown key id"
    ):  # a key we trust must not sign under another kid
        _verify(_forge(key, kid=other.kid), keys)
    with pytest.raises(TokenInvalid, match="key id"):
        _verify(_forge(key, kid=None), keys)


def test_a_trusted_kid_with_another_key_s_signature_is_refused(key: SigningKey, keys: KeySet) -> None:
    impostor = SigningKey.generate()
    with pytest.raises(TokenInvalid):
        _verify(_forge(impostor, kid=key.kid), keys)


def test_tampered_payload_is_refused(key: SigningKey, keys: KeySet) -> None:
    header, _payload, signature = _forge(key, _claims(party="GHA")).split(".")
    tampered = f"{header}.{_json(_claims(party='CHE'))}.{signature}"
    with pytest.raises(TokenInvalid):
        _verify(tampered, keys)
    header, payload, signature = sign_token(key, _claims()).split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(TokenInvalid):
        _verify(f"{header}.{payload}.{flipped}", keys)


def test_crit_header_is_refused(key: SigningKey, keys: KeySet) -> None:
    with pytest.raises(TokenInvalid, match="critical"):
        _verify(_forge(key, crit=["exp"], exp=1), keys)


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT ", None])
def test_wrong_typ_is_refused(key: SigningKey, keys: KeySet, typ: str | None) -> None:
    with pytest.raises(TokenInvalid, match="type"):
        _verify(_forge(key, typ=typ), keys)
    with pytest.raises(TokenInvalid, match="type"):
        _verify(sign_token(key, _claims(), typ=typ or "JWT"), keys)


@pytest.mark.parametrize(
    "token",
    [
        "a.b.c.d.e",
        "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.key.iv.ciphertext.tag",
        "",
        "no-dots",
        "a.b",
        "!!!.???.***",
        f"{_json(['not', 'an', 'object'])}.{_json({})}.sig",
    ],
    ids=["5-parts", "jwe-header", "empty", "no-dots", "2-parts", "junk", "list-header"],
)
def test_malformed_tokens_are_refused(keys: KeySet, token: str) -> None:
    with pytest.raises(TokenInvalid):
        _verify(token, keys)


def test_keyset_keeps_only_p256_signing_keys(key: SigningKey) -> None:
    encryption = {**SigningKey.generate().public_jwk, "use": "enc"}
    rsa_like = {"kty": "RSA", "kid": "rsa-1", "n": "AQAB", "e": "AQAB"}
    keyset = KeySet({"keys": [key.public_jwk, encryption, rsa_like, {**key.public_jwk, "kid": ""}]})
    assert len(keyset) == 1
    assert key.kid in keyset
    assert encryption["kid"] not in keyset
    assert [entry["kid"] for entry in keyset.document["keys"]] == [key.kid]
    assert "d" not in keyset.document["keys"][0]  # a public document


# ---- kit.auth: the dependency ----------------------------------------------------------------------

router = APIRouter()


@router.get("/me")
async def me(principal: CurrentPrincipal) -> dict[str, Any]:
    return {
        "client_id": principal.client_id,
        "party": principal.party,
        "roles": sorted(principal.roles),
        "scopes": sorted(principal.scopes),
        "token_id": principal.token_id,
        "secretariat": principal.is_secretariat,
    }


@router.get("/admin")
async def admin(principal: Principal = require_roles(Role.SECRETARIAT_ADMIN, Role.AUDITOR)) -> dict[str, str]:
    return {"client_id": principal.client_id}


class _Settings(ServiceSettings):
    service_name = "authtest"


@pytest.fixture
async def client(tokens: TokenFactory, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        _Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.sqlite3'}"),
        title="auth",
        routers=[router],
        token_verifier=tokens.verifier(),
    )
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


def _unauthorized(response: httpx.Response, slug: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["type"] == PROBLEM_BASE + slug
    return body


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic Y2xpZW50OnNlY3JldA==", "Token abc", "bearer"],
    ids=["none", "empty", "bare-scheme", "scheme-space", "basic", "other-scheme", "lower-bare"],
)
async def test_missing_or_wrong_scheme_is_401(client: httpx.AsyncClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    _unauthorized(await client.get("/me", headers=headers), "unauthorized")


async def test_invalid_token_is_401(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    expired = tokens.token(party="GHA", roles=[Role.VIEWER], lifetime=-300)
    for token in ("not-a-token", expired, _forge(SigningKey.generate())):
        body = _unauthorized(
            await client.get("/me", headers={"Authorization": f"Bearer {token}"}), "invalid-token"
        )
        assert token not in json.dumps(body)  # the token itself is never echoed


async def test_valid_token_gives_the_principal(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    token = tokens.token(
        party="GHA",
        roles=[Role.INITIATOR, Role.APPROVER],
        client_id="gha-app",
        scope="transfers read",
        jti="j-1",
    )
    response = await client.get(
        "/me", headers={"Authorization": f"bearer {token}"}
    )  # scheme is case-insensitive
    assert response.status_code == 200, response.text
    assert response.json() == {
        "client_id": "gha-app",
        "party": "GHA",
        "roles": ["approver", "initiator"],
        "scopes": ["read", "transfers"],
        "token_id": "j-1",
        "secretariat": False,
    }


async def test_secretariat_principal(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    headers = tokens.headers(party=None, roles=[Role.SECRETARIAT_ADMIN], client_id="sec")
    body = (await client.get("/me", headers=headers)).json()
    assert body["party"] is None
    assert body["secretariat"] is True


async def test_require_roles(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    viewer = tokens.headers(party="GHA", roles=[Role.VIEWER, Role.INITIATOR])
    response = await client.get("/admin", headers=viewer)
    assert response.status_code == 403
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    assert response.json()["type"] == PROBLEM_BASE + "forbidden"
    assert "secretariat_admin" in response.json()["detail"]
    for roles in ([Role.SECRETARIAT_ADMIN], [Role.VIEWER, Role.AUDITOR]):  # any one of the roles will do
        headers = tokens.headers(party=None, roles=roles, client_id="ok-client")
        assert (await client.get("/admin", headers=headers)).json() == {"client_id": "ok-client"}
    assert (await client.get("/admin")).status_code == 401  # no token: 401 before any role check


def test_principal_from_claims_ignores_unknown_roles() -> None:
    principal = Principal.from_claims(
        {"sub": "s-1", "party": "CHE", "roles": ["viewer", "god_mode", "secretariat-admin"]}
    )
    assert principal.client_id == "s-1"  # falls back to `sub`
    assert principal.roles == frozenset({Role.VIEWER})
    assert principal.scopes == frozenset()
    assert not principal.is_secretariat
    party_admin = Principal(client_id="c", party="CHE", roles=frozenset({Role.SECRETARIAT_ADMIN}))
    assert not party_admin.is_secretariat  # a Party's client is never the Secretariat, whatever its roles


# ---- TokenVerifier: JWKS fetching ------------------------------------------------------------------


class JwksServer:
    """A JWKS endpoint on a loopback port, counting fetches; `document` may be changed between them."""

    def __init__(self) -> None:
        self.document: Any = {"keys": []}
        self.fetches = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _serve(self, _request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(self.document)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _verifier(url: str, refresh_interval: float = 30.0) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, refresh_interval=refresh_interval)


async def test_unknown_kid_refetches_at_most_once_per_interval(jwks: JwksServer) -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    jwks.document = {"keys": [first.public_jwk]}
    verifier = _verifier(jwks.url, refresh_interval=0.5)

    assert (await verifier.verify(sign_token(first, _claims()))).client_id == "client-1"
    assert jwks.fetches == 1  # the unknown kid made it fetch

    stranger = sign_token(second, _claims())
    for _ in range(5):  # a flood of unknown kids must not turn into a flood of fetches
        with pytest.raises(Unauthorized):
            await verifier.verify(stranger)
    await asyncio.gather(*(_expect_401(verifier, stranger) for _ in range(10)))
    assert jwks.fetches == 1

    jwks.document = {"keys": [first.public_jwk, second.public_jwk]}  # the gateway rotates in a new key
    with pytest.raises(Unauthorized):  # still within the interval: not fetched yet
        await verifier.verify(stranger)
    assert jwks.fetches == 1

    await asyncio.sleep(0.55)
    assert (await verifier.verify(stranger)).client_id == "client-1"
    assert jwks.fetches == 2
    assert (await verifier.verify(sign_token(first, _claims()))).client_id == "client-1"
    assert jwks.fetches == 2  # known kids never fetch


async def _expect_401(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


async def test_concurrent_unknown_kids_fetch_once(jwks: JwksServer) -> None:
    key = SigningKey.generate()
    jwks.document = {"keys": [key.public_jwk]}
    verifier = _verifier(jwks.url)
    token = sign_token(key, _claims())
    principals = await asyncio.gather(*(verifier.verify(token) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(p, Principal) for p in principals), principals
    assert jwks.fetches == 1


async def test_app_startup_fetches_the_jwks(jwks: JwksServer, tmp_path: Path) -> None:
    key = SigningKey.generate()
    jwks.document = {"keys": [key.public_jwk]}
    app: FastAPI = create_app(
        _Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'jwks.sqlite3'}", jwks_url=jwks.url),
        title="jwks",
        routers=[router],
    )
    async with lifespan(app):
        assert jwks.fetches == 1
        assert key.kid in app.state.token_verifier.keys
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            token = sign_token(key, _claims(client_id="from-jwks"))
            response = await http.get("/me", headers={"Authorization": f"Bearer {token}"})
            assert response.json()["client_id"] == "from-jwks"
    assert jwks.fetches == 1


async def test_unreachable_jwks_gives_401_not_500() -> None:
    verifier = _verifier("http://127.0.0.1:1/.well-known/jwks.json")
    with pytest.raises(Unauthorized):
        await verifier.verify(sign_token(SigningKey.generate(), _claims()))


@pytest.mark.parametrize(
    "document",
    [
        ["not", "a", "jwks"],
        {"keys": "nope"},
        {"keys": [{"kty": "EC", "crv": "P-256", "kid": "broken"}]},
        {"keys": [{"kty": "EC", "crv": "P-256", "kid": "bad-point", "x": "AAAA", "y": "AAAA"}]},
    ],
    ids=["list", "keys-not-a-list", "missing-coordinates", "bad-point"],
)
async def test_garbage_jwks_keeps_the_old_keys_and_answers_401(
    jwks: JwksServer, document: Any, make_key: Callable[[], SigningKey]
) -> None:
    good = make_key()
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=KeySet({"keys": [good.public_jwk]}),
        jwks_url=jwks.url,
    )
    jwks.document = document
    with pytest.raises(Unauthorized):  # an unknown kid triggers the fetch of the garbage document
        await verifier.verify(sign_token(make_key(), _claims()))
    assert jwks.fetches == 1
    assert (await verifier.verify(sign_token(good, _claims()))).client_id == "client-1"  # still trusted


@pytest.fixture
def make_key() -> Callable[[], SigningKey]:
    return SigningKey.generate
