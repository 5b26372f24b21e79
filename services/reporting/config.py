"""Settings of the reporting service (`REGISTRY_*`, `REGISTRY_REPORTING_*`)."""

from pathlib import Path

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
    webhook_secret_keys_file: Path | None = Field(
        default=None,
        description="A file holding the same comma-separated keys (a final newline is ignored): how the deploy"
        " manifests give them, as a mounted secret. Set this or REGISTRY_WEBHOOK_SECRET_KEYS, not both. Read"
        " and checked when the app is built, so a rotated file takes effect at the next start",
    )

    @model_validator(mode="after")
    def _webhook_keys(self) -> "Settings":
        if self.webhook_secret_keys is not None and self.webhook_secret_keys_file is not None:
            # Neither may silently win: during a rotation the ignored one would hide the newest key.
            raise ValueError(
                "set REGISTRY_WEBHOOK_SECRET_KEYS or REGISTRY_WEBHOOK_SECRET_KEYS_FILE, not both"
            )
        if self.webhook_secret_keys is not None:
            # production without keys refuses when the app is built, so the deploy manifests still load
            _check_keys(
                self.webhook_secret_keys.get_secret_value(), self.environment, "REGISTRY_WEBHOOK_SECRET_KEYS"
            )
        return self

    def resolved_webhook_secret_keys(self) -> str | None:
        """The configured keys' text, inline or read from `webhook_secret_keys_file` (checked as the inline
        value is); None when neither is set. `RuntimeError` when the file cannot be read or its keys are
        refused."""
        if self.webhook_secret_keys is not None:
            return self.webhook_secret_keys.get_secret_value()
        path = self.webhook_secret_keys_file
        if path is None:
            return None
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RuntimeError(f"cannot read the webhook secret keys file {path}: {exc.strerror}") from None
        try:
            # bytes that are not text become U+FFFD, which parse_keys refuses as not base64
            return _check_keys(
                raw.decode("utf-8", errors="replace"), self.environment, "REGISTRY_WEBHOOK_SECRET_KEYS_FILE"
            )
        except ValueError as exc:
            raise RuntimeError(f"the webhook secret keys from {path}: {exc}") from None


def _check_keys(text: str, environment: Environment, source: str) -> str:
    """`text` when its keys parse and, outside development, none is a placeholder; `ValueError` otherwise."""
    keys = parse_keys(text)  # malformed: refused everywhere, nothing could be sealed with it
    if environment is not Environment.DEVELOPMENT:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if any(looks_like_placeholder(part, key) for part, key in zip(parts, keys, strict=True)):
            raise ValueError(
                f"refusing to start the reporting service ({environment.value}): {source} holds a placeholder key"
            )
    return text
