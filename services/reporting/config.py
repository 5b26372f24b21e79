"""Settings of the reporting service (`REGISTRY_*`, `REGISTRY_REPORTING_*`)."""

from kit.config import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    service_name = "reporting"
    port: int = 8104
    #: Seconds between two polls of the producers' feeds by the read model's consumer.
    consumer_interval: float = 0.3
    #: Run the consumer in the background (tests may turn it off and call `catch_up()` themselves).
    consumer_enabled: bool = True
