"""Settings of the transactions service (`REGISTRY_*`, `REGISTRY_TRANSACTIONS_*`)."""

from kit.config import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    service_name = "transactions"
    port: int = 8102
