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
    #: Run the webhook delivery worker in the background (tests drive `app.state.webhooks.run_once()`).
    webhooks_enabled: bool = True
    #: Seconds between two rounds of the webhook worker when nothing wakes it earlier.
    webhook_interval: float = 1.0
    #: Seconds a webhook attempt may take (INTERREGISTRY §9: 10 s).
    webhook_timeout: float = 10.0
