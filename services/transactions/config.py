"""Settings of the transactions service (`REGISTRY_*`, `REGISTRY_TRANSACTIONS_*`)."""

from pydantic import Field

from kit.config import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    service_name = "transactions"
    port: int = 8102
    approval_timeout_seconds: float = Field(
        default=72 * 3600, gt=0, description="A transaction awaiting approval longer than this is terminated"
    )
    approval_sweep_seconds: float = Field(
        default=60.0, gt=0, description="How often expired approvals are swept"
    )
    idempotency_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long an Idempotency-Key stays claimed by an attempt that never answered (a crash)"
        " before a retry may take it over",
    )
    directory_cache: bool = Field(
        default=True,
        description="Cache party_sections' account and section lookups, kept by its feed (services/transactions/directory.py)",
    )
    directory_follow_seconds: float = Field(
        default=0.25, gt=0, description="How often the directory cache reads party_sections' feed"
    )
    directory_max_lag_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Cached lookups are used only while the feed was read to its end this recently",
    )
    directory_ttl_seconds: float = Field(default=60.0, gt=0, description="Longest life of a cached lookup")
