"""Settings shared by every process, read from `REGISTRY_*` environment variables (pydantic-settings)."""

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Environment", "ServiceSettings", "sqlite_url"]


_PER_SERVICE_FIELDS = ("database_url", "port", "workers", "db_pool_size", "db_max_overflow")


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


def sqlite_url(data_dir: Path, name: str) -> str:
    """The embedded default database of a service: a SQLite file under the data directory."""
    return f"sqlite+aiosqlite:///{(data_dir / f'{name}.sqlite3').resolve()}"


class ServiceSettings(BaseSettings):
    """What every service needs; a service subclasses it and sets `service_name`.

    The database URL is read from `REGISTRY_<SERVICE>_DATABASE_URL` so one environment can hold the
    URLs of all services (as `make run` and the deploy manifests do).
    """

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="ignore")

    service_name: ClassVar[str] = "service"

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path("var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; SQLite under data_dir if unset"
    )
    host: str = "127.0.0.1"
    port: int = 8100
    workers: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Worker processes sharing the port (uvicorn); a CPU-bound service uses more than one core."
        " In Kubernetes prefer replicas",
    )
    log_level: str = "INFO"
    log_json: bool = True

    # Token verification: the gateway signs, every service verifies (defence in depth, DESIGN §3).
    token_issuer: str = "a62-registry"  # noqa: S105 (an issuer name, not a secret)
    token_audience: str = "a62-registry-api"  # noqa: S105
    jwks_url: str | None = Field(default=None, description="Where to fetch the gateway's token keys")
    jwks_json: str | None = Field(default=None, description="A JWKS document given inline (tests, offline)")

    # Calls to other services (`/internal/*`) carry a token of this service's own client, `svc-<service>`,
    # obtained from the gateway with client credentials.
    gateway_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL of the gateway (token endpoint)"
    )
    service_client_secret: SecretStr | None = Field(
        default=None, description="Secret of the service clients the gateway keeps (`svc-<service>`)"
    )
    party_sections_url: str = "http://127.0.0.1:8101"
    transactions_url: str = "http://127.0.0.1:8102"
    ars_url: str = "http://127.0.0.1:8103"
    reporting_url: str = "http://127.0.0.1:8104"

    # Connections kept open per process. A request beyond the pool borrows an overflow connection that is
    # closed on return: a new PostgreSQL backend, codec set-up and statement preparation the next time, so
    # the pool must cover a service's steady concurrency (requests plus its background loops).
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_echo: bool = False

    def __init__(self, **values: Any) -> None:
        """`REGISTRY_<SERVICE>_DATABASE_URL`, `_PORT`, `_WORKERS`, `_DB_POOL_SIZE` and `_DB_MAX_OVERFLOW` win over
        the generic names.

        Passed as init values (which outrank the environment) but only where the caller gave none: a
        "before" model validator would see `REGISTRY_DATABASE_URL` already merged in and let it win.
        """
        prefix = f"REGISTRY_{type(self).service_name.upper()}_"
        for name in _PER_SERVICE_FIELDS:
            value = os.environ.get(prefix + name.upper())
            if value and name not in values:
                values[name] = value
        super().__init__(**values)

    @field_validator("gateway_url", "party_sections_url", "transactions_url", "ars_url", "reporting_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"a service URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @property
    def service_client_id(self) -> str:
        """This service's own OAuth client at the gateway."""
        return f"svc-{self.service_name}"

    def service_url(self, name: str) -> str:
        """Base URL of the service `name` (party_sections, transactions, ars, reporting)."""
        return str(getattr(self, f"{name}_url"))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir, self.service_name)

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION
