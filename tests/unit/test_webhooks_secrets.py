"""Webhook secrets at rest (services/reporting/webhooks_secrets.py): sealing under the newest key, opening
under any, bound to the endpoint, plain values of before encryption read as they are, and the settings
refusing placeholder keys outside development (and a missing key in production)."""

import base64
import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.reporting.config import Settings
from services.reporting.webhooks import new_secret
from services.reporting.webhooks_secrets import SecretBox, secret_box


def _key() -> bytes:
    return secrets.token_bytes(32)


def _text(*keys: bytes) -> str:
    return ",".join(base64.urlsafe_b64encode(key).decode() for key in keys)


def test_sealed_secrets_open_under_any_listed_key_and_only_for_their_endpoint() -> None:
    old, new = _key(), _key()
    secret = new_secret()
    sealed_old = SecretBox([old]).seal(secret, "wh_1")
    assert len(sealed_old) <= 100 and secret.removeprefix("whsec_") not in sealed_old
    assert SecretBox([old]).seal(secret, "wh_1") != sealed_old  # a fresh nonce every time

    rotated = SecretBox([new, old])
    assert rotated.open(sealed_old, "wh_1") == secret
    assert not rotated.current(sealed_old)
    sealed_new = rotated.seal(secret, "wh_1")
    assert rotated.current(sealed_new) and SecretBox([new]).open(sealed_new, "wh_1") == secret
    with pytest.raises(LookupError):
        SecretBox([new]).open(sealed_old, "wh_1")  # the old key dropped: its rows no longer open
    with pytest.raises(LookupError):
        rotated.open(sealed_new, "wh_2")  # copied onto another endpoint's row
    assert rotated.open(secret, "wh_1") == secret  # a plain row from before encryption


def test_settings_refuse_placeholder_keys_outside_development(tmp_path: Path) -> None:
    zeros = base64.b64encode(bytes(32)).decode()
    for environment in ("test", "production"):
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(environment=environment, webhook_secret_keys=f"{_text(_key())},{zeros}")
    assert Settings(environment="development", webhook_secret_keys=zeros).webhook_secret_keys is not None
    with pytest.raises(ValidationError, match=r"32 bytes|base64"):
        Settings(environment="development", webhook_secret_keys="change-me")
    good = Settings(environment="production", webhook_secret_keys=_text(_key(), _key()))
    assert good.webhook_secret_keys is not None
    with pytest.raises(RuntimeError, match="REGISTRY_WEBHOOK_SECRET_KEYS"):
        secret_box(None, production=True, data_dir=tmp_path)
    # Elsewhere a missing key is generated once and reused (rows stay readable across restarts).
    first = secret_box(None, production=False, data_dir=tmp_path)
    assert secret_box(None, production=False, data_dir=tmp_path).kid == first.kid
    assert (tmp_path / "reporting" / "webhook-secret.key").stat().st_mode & 0o777 == 0o600
