"""Settings of the party_sections service (`REGISTRY_*`, `REGISTRY_PARTY_SECTIONS_*`)."""

from kit.config import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    service_name = "party_sections"
    port: int = 8101
