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
