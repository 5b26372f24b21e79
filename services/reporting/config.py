"""Settings of the reporting service (`REGISTRY_*`, `REGISTRY_REPORTING_*`)."""

from kit.config import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    service_name = "reporting"
    port: int = 8104
