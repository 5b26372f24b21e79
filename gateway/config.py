"""Settings of the gateway (`REGISTRY_*`, `REGISTRY_GATEWAY_PORT`, `REGISTRY_GATEWAY_DATABASE_URL`).

Secrets: the bootstrap client secret, the HMAC key of stored client secrets and the token signing key.
In production all three must be configured and the settings refuse to load otherwise, or when the
bootstrap secret or HMAC key is short or looks like a placeholder; nothing is ever generated there.
In development and test, a missing signing key or HMAC key is generated once into `data_dir/gateway/`
(files of mode 0600, created atomically so two processes starting together agree) and reused on every
later start, so tokens survive a restart. A missing bootstrap secret outside production only means no
bootstrap client is created (the launcher normally provides one).
"""

import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from kit.config import ServiceSettings
from kit.jwt import SigningKey

__all__ = [
    "MIN_BOOTSTRAP_SECRET_LENGTH",
    "MIN_CLIENT_SECRET_KEY_LENGTH",
    "Settings",
    "client_secret_key",
    "looks_like_placeholder",
    "signing_key",
]

MIN_BOOTSTRAP_SECRET_LENGTH = 24
MIN_CLIENT_SECRET_KEY_LENGTH = 32
_PLACEHOLDERS = frozenset({"change-me", "changeme", "secret", "password"})
_PLACEHOLDER_PARTS = ("placeholder", "example", "change-me", "changeme")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SIGNING_KEY_FILE = "signing-key.pem"
_CLIENT_SECRET_KEY_FILE = "client-secret.key"  # noqa: S105 (a file name)


def looks_like_placeholder(value: str) -> bool:
    """True for values people leave in templates ("change-me", "secret", "...placeholder...")."""
    lowered = value.strip().lower()
    return lowered in _PLACEHOLDERS or any(part in lowered for part in _PLACEHOLDER_PARTS)


class Settings(ServiceSettings):
    """Gateway settings; every field is `REGISTRY_<FIELD>` in the environment."""

    service_name = "gateway"
    port: int = 8000

    bootstrap_client_id: str = "secretariat-bootstrap"
    bootstrap_client_secret: SecretStr | None = Field(
        default=None, description="Secret of the Secretariat bootstrap client; required in production"
    )
    client_secret_key: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of stored client secrets; required in production"
    )
    signing_key: SecretStr | None = Field(default=None, description="EC P-256 private key PEM, inline")
    signing_key_file: Path | None = Field(default=None, description="EC P-256 private key PEM file")
    retired_keys_file: Path | None = Field(
        default=None, description="JWKS of public keys still published and accepted during a rotation"
    )
    token_lifetime_seconds: int = Field(default=900, ge=60, le=86400)
    revocation_refresh_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often revoked clients are re-read from the database"
    )

    rate_limit_per_second: float = Field(default=100.0, gt=0, description="Per client, authenticated calls")
    rate_limit_burst: int = Field(default=200, ge=1)
    token_rate_limit_per_second: float = Field(
        default=10.0, gt=0, description="POST /oauth2/token per client id (or remote address)"
    )
    token_rate_limit_burst: int = Field(default=20, ge=1)

    upstream_timeout_seconds: float = Field(default=15.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    upstream_max_connections: int = Field(default=200, ge=1, description="Connection pool size per service")
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    @field_validator("bootstrap_client_id")
    @classmethod
    def _client_id_shape(cls, value: str) -> str:
        if not _CLIENT_ID.fullmatch(value):
            raise ValueError("bootstrap_client_id must be 1-64 characters of A-Z a-z 0-9 . _ -")
        return value

    @model_validator(mode="after")
    def _secrets_configured(self) -> "Settings":
        if self.signing_key is not None and self.signing_key_file is not None:
            raise ValueError("set REGISTRY_SIGNING_KEY or REGISTRY_SIGNING_KEY_FILE, not both")
        if not self.is_production:
            return self
        problems: list[str] = []
        bootstrap = self.bootstrap_client_secret.get_secret_value() if self.bootstrap_client_secret else ""
        if not bootstrap:
            problems.append("REGISTRY_BOOTSTRAP_CLIENT_SECRET is not set")
        elif len(bootstrap) < MIN_BOOTSTRAP_SECRET_LENGTH:
            problems.append(
                f"REGISTRY_BOOTSTRAP_CLIENT_SECRET is shorter than {MIN_BOOTSTRAP_SECRET_LENGTH} characters"
            )
        elif looks_like_placeholder(bootstrap):
            problems.append("REGISTRY_BOOTSTRAP_CLIENT_SECRET is a placeholder value")
        hmac_key = self.client_secret_key.get_secret_value() if self.client_secret_key else ""
        if not hmac_key:
            problems.append("REGISTRY_CLIENT_SECRET_KEY is not set")
        elif len(hmac_key) < MIN_CLIENT_SECRET_KEY_LENGTH:
            problems.append(
                f"REGISTRY_CLIENT_SECRET_KEY is shorter than {MIN_CLIENT_SECRET_KEY_LENGTH} characters"
            )
        elif looks_like_placeholder(hmac_key):
            problems.append("REGISTRY_CLIENT_SECRET_KEY is a placeholder value")
        service = self.service_client_secret.get_secret_value() if self.service_client_secret else ""
        if not service:
            problems.append("REGISTRY_SERVICE_CLIENT_SECRET is not set (the services' own clients need it)")
        elif len(service) < MIN_BOOTSTRAP_SECRET_LENGTH:
            problems.append(
                f"REGISTRY_SERVICE_CLIENT_SECRET is shorter than {MIN_BOOTSTRAP_SECRET_LENGTH} characters"
            )
        elif looks_like_placeholder(service):
            problems.append("REGISTRY_SERVICE_CLIENT_SECRET is a placeholder value")
        if self.signing_key is None and self.signing_key_file is None:
            problems.append(
                "no token signing key: set REGISTRY_SIGNING_KEY_FILE (or REGISTRY_SIGNING_KEY); "
                "keys are never generated in production"
            )
        if problems:
            raise ValueError("refusing to start the gateway in production: " + "; ".join(problems))
        return self

    @property
    def secrets_dir(self) -> Path:
        """Where development secrets are generated and kept."""
        return self.data_dir / "gateway"


def _read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The content of `path`, creating it with `make()` (mode 0600) when absent; safe against a racing peer."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    content = make()
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mkstemp: mode 0600
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        # link() refuses an existing target, so a second process starting at once keeps the first one's key.
        os.link(temporary, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        os.unlink(temporary)
    return content


def signing_key(settings: Settings) -> SigningKey:
    """The active token signing key: configured, or (outside production) generated once and reused."""
    if settings.signing_key is not None:
        pem = settings.signing_key.get_secret_value().encode()
        source = "REGISTRY_SIGNING_KEY"
    elif settings.signing_key_file is not None:
        try:
            pem = settings.signing_key_file.read_bytes()
        except OSError as exc:
            raise RuntimeError(
                f"cannot read the token signing key file {settings.signing_key_file}: {exc.strerror}"
            ) from None
        source = str(settings.signing_key_file)
    elif settings.is_production:
        raise RuntimeError("no token signing key configured; keys are never generated in production")
    else:
        path = settings.secrets_dir / _SIGNING_KEY_FILE
        pem = _read_or_create(path, lambda: SigningKey.generate().private_pem)
        source = str(path)
    try:
        return SigningKey.from_pem(pem)
    except (ValueError, TypeError) as exc:
        raise RuntimeError(f"the token signing key from {source} is not an EC P-256 private key PEM") from exc


def client_secret_key(settings: Settings) -> bytes:
    """The HMAC key of stored client secrets: configured, or (outside production) generated once and reused."""
    if settings.client_secret_key is not None:
        return settings.client_secret_key.get_secret_value().encode()
    if settings.is_production:
        raise RuntimeError("REGISTRY_CLIENT_SECRET_KEY is required in production")
    path = settings.secrets_dir / _CLIENT_SECRET_KEY_FILE
    return _read_or_create(path, lambda: secrets.token_urlsafe(32).encode()).strip()
