"""Settings of the ars service (`REGISTRY_*`, `REGISTRY_ARS_*`)."""

from kit.config import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    service_name = "ars"
    port: int = 8103
