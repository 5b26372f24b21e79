"""Gateway settings: production refuses missing or weak secrets; development generates keys once and reuses them."""

import json
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.auth.token import KeyRing
from gateway.config import Settings, client_secret_key, looks_like_placeholder, signing_key
from kit.jwt import SigningKey

STRONG_SECRET = "q7Vn2LrT9wXe4KpZ8sYb3HmC6dFj"
STRONG_HMAC_KEY = "Zt4pQ8vN2xK7mR3wL9sB6yH1cJ5dF0gA"
STRONG_SERVICE_SECRET = "Hk3Wm8Qz1Rt6Vy2Bn7Xc4Lp9Ds5Fg0Ja"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "REGISTRY_BOOTSTRAP_CLIENT_SECRET",
        "REGISTRY_CLIENT_SECRET_KEY",
        "REGISTRY_SIGNING_KEY",
        "REGISTRY_SIGNING_KEY_FILE",
        "REGISTRY_RETIRED_KEYS_FILE",
        "REGISTRY_GATEWAY_PORT",
        "REGISTRY_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing-key.pem"
    path.write_bytes(SigningKey.generate().private_pem)
    return path


def production(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "data_dir": tmp_path / "data",
        "bootstrap_client_secret": STRONG_SECRET,
        "client_secret_key": STRONG_HMAC_KEY,
        "service_client_secret": STRONG_SERVICE_SECRET,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_defaults_and_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.service_name == "gateway" and settings.port == 8000
    assert settings.bootstrap_client_id == "secretariat-bootstrap"
    assert settings.token_lifetime_seconds == 900
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (100, 200)
    assert (settings.token_rate_limit_per_second, settings.token_rate_limit_burst) == (10, 20)
    assert settings.party_sections_url == "http://127.0.0.1:8101"
    assert settings.reporting_url == "http://127.0.0.1:8104"
    assert settings.max_request_bytes == 10 * 1024 * 1024
    monkeypatch.setenv("REGISTRY_GATEWAY_PORT", "9100")
    monkeypatch.setenv("REGISTRY_TRANSACTIONS_URL", "http://transactions:8102/")
    monkeypatch.setenv("REGISTRY_BOOTSTRAP_CLIENT_SECRET", STRONG_SECRET)
    settings = Settings(data_dir=tmp_path)
    assert settings.port == 9100
    assert settings.transactions_url == "http://transactions:8102"
    assert settings.bootstrap_client_secret is not None
    assert STRONG_SECRET not in repr(settings)


def test_production_loads_with_every_secret(tmp_path: Path, key_file: Path) -> None:
    settings = production(tmp_path, signing_key_file=key_file)
    assert settings.is_production
    assert signing_key(settings).private_pem == key_file.read_bytes()
    assert client_secret_key(settings) == STRONG_HMAC_KEY.encode()
    assert not (tmp_path / "data").exists()  # nothing generated


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bootstrap_client_secret": None}, "REGISTRY_BOOTSTRAP_CLIENT_SECRET is not set"),
        ({"bootstrap_client_secret": "short-but-random-9x"}, "shorter than 24"),
        ({"bootstrap_client_secret": "dev-only-placeholder-bootstrap-client-secret"}, "placeholder"),
        ({"bootstrap_client_secret": "this-is-an-example-secret-value"}, "placeholder"),
        ({"bootstrap_client_secret": "change-me-change-me-change-me"}, "placeholder"),
        ({"client_secret_key": None}, "REGISTRY_CLIENT_SECRET_KEY is not set"),
        ({"client_secret_key": "dev-only-placeholder-client-secret-hmac-key"}, "placeholder"),
        ({"client_secret_key": "too-short-key"}, "shorter than 32"),
        ({"signing_key_file": None}, "no token signing key"),
        ({"service_client_secret": None}, "REGISTRY_SERVICE_CLIENT_SECRET is not set"),
        ({"service_client_secret": "short-service-secret"}, "shorter than 24"),
        ({"service_client_secret": "dev-only-placeholder-service-client-secret"}, "placeholder"),
    ],
)
def test_production_refuses_missing_or_weak_secrets(
    tmp_path: Path, key_file: Path, overrides: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"signing_key_file": key_file}
    values.update(overrides)
    with pytest.raises(ValidationError, match=message) as caught:
        production(tmp_path, **values)
    assert "refusing to start the gateway in production" in str(caught.value)
    assert STRONG_SECRET not in str(caught.value) and STRONG_HMAC_KEY not in str(caught.value)
    assert STRONG_SERVICE_SECRET not in str(caught.value)


def test_production_lists_every_problem_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(environment="production", data_dir=tmp_path)  # type: ignore[arg-type]
    text = str(caught.value)
    assert "BOOTSTRAP_CLIENT_SECRET" in text and "CLIENT_SECRET_KEY" in text and "signing key" in text
    assert "SERVICE_CLIENT_SECRET" in text


@pytest.mark.parametrize(
    "value", ["change-me", "CHANGEME", "secret", "password", "my-placeholder", "example"]
)
def test_placeholders(value: str) -> None:
    assert looks_like_placeholder(value)


def test_a_random_secret_is_not_a_placeholder() -> None:
    assert not looks_like_placeholder(STRONG_SECRET)


def test_signing_key_inline_or_file_but_not_both(tmp_path: Path, key_file: Path) -> None:
    pem = key_file.read_text()
    assert signing_key(Settings(data_dir=tmp_path, signing_key=pem)).private_pem == pem.encode()
    with pytest.raises(ValidationError, match="not both"):
        Settings(data_dir=tmp_path, signing_key=pem, signing_key_file=key_file)


def test_a_bad_signing_key_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(RuntimeError, match="cannot read the token signing key file"):
        signing_key(Settings(data_dir=tmp_path, signing_key_file=missing))
    with pytest.raises(RuntimeError, match="not an EC P-256 private key"):
        signing_key(Settings(data_dir=tmp_path, signing_key="-----BEGIN PRIVATE KEY-----\nAAAA\n"))


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_generates_keys_once_and_reuses_them(tmp_path: Path, environment: str) -> None:
    settings = Settings(environment=environment, data_dir=tmp_path)  # type: ignore[arg-type]
    first_key = signing_key(settings)
    first_hmac = client_secret_key(settings)
    key_path = tmp_path / "gateway" / "signing-key.pem"
    hmac_path = tmp_path / "gateway" / "client-secret.key"
    for path in (key_path, hmac_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert len(first_hmac) >= 32
    assert [p.name for p in key_path.parent.iterdir() if p.name.startswith(".tmp")] == []
    again = Settings(environment=environment, data_dir=tmp_path)  # type: ignore[arg-type]
    assert signing_key(again).kid == first_key.kid
    assert client_secret_key(again) == first_hmac
    other = Settings(environment=environment, data_dir=tmp_path / "elsewhere")  # type: ignore[arg-type]
    assert signing_key(other).kid != first_key.kid


def test_key_ring_publishes_active_and_retired_public_keys(tmp_path: Path) -> None:
    retired_key = SigningKey.generate()
    leaked = {**retired_key.public_jwk, "d": "must-never-be-published"}
    retired_file = tmp_path / "retired.json"
    retired_file.write_text(json.dumps({"keys": [leaked]}))
    ring = KeyRing.from_settings(Settings(data_dir=tmp_path, retired_keys_file=retired_file))
    document = ring.jwks()
    assert [key["kid"] for key in document["keys"]] == [ring.active.kid, retired_key.kid]
    assert all("d" not in key for key in document["keys"])
    assert ring.active.kid in ring.keys and retired_key.kid in ring.keys


def test_a_retired_keys_file_that_is_not_a_jwks_is_refused(tmp_path: Path) -> None:
    retired_file = tmp_path / "retired.json"
    retired_file.write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "x"}]}))
    with pytest.raises(RuntimeError, match="EC P-256"):
        KeyRing.from_settings(Settings(data_dir=tmp_path, retired_keys_file=retired_file))
    retired_file.write_text(
        json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k", "x": "AA", "y": "AA"}]})
    )
    with pytest.raises(RuntimeError, match="unusable"):
        KeyRing.from_settings(Settings(data_dir=tmp_path, retired_keys_file=retired_file))
    retired_file.write_text("not json")
    with pytest.raises(RuntimeError, match="as a JWKS"):
        KeyRing.from_settings(Settings(data_dir=tmp_path, retired_keys_file=retired_file))


def test_an_upstream_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings(data_dir=tmp_path, ars_url="ftp://ars")
