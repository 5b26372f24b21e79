"""Settings of the reporting service (`REGISTRY_*`, `REGISTRY_REPORTING_*`)."""

from pydantic import Field, SecretStr, model_validator

from kit.config import Environment, ServiceSettings
from services.reporting.webhooks_secrets import looks_like_placeholder, parse_keys

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
    webhook_secret_keys: SecretStr | None = Field(
        default=None,
        description="Keys sealing the webhook signing secrets at rest: base64 of 32 random bytes each, comma"
        " separated, newest first (webhooks_secrets.py). Required in production; generated under data_dir"
        " elsewhere",
    )

    @model_validator(mode="after")
    def _webhook_keys(self) -> "Settings":
        if self.webhook_secret_keys is None:
            return self  # production refuses when the app is built, so the deploy manifests still load
        text = self.webhook_secret_keys.get_secret_value()
        keys = parse_keys(text)  # malformed: refused everywhere, nothing could be sealed with it
        if self.environment is not Environment.DEVELOPMENT:
            parts = [part.strip() for part in text.split(",") if part.strip()]
            if any(looks_like_placeholder(part, key) for part, key in zip(parts, keys, strict=True)):
                raise ValueError(
                    f"refusing to start the reporting service ({self.environment.value}):"
                    " REGISTRY_WEBHOOK_SECRET_KEYS holds a placeholder key"
                )
        return self
