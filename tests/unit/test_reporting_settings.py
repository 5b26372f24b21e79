"""The reporting service's webhook secret keys given as a file (`REGISTRY_WEBHOOK_SECRET_KEYS_FILE`, how the
deploy manifests mount them): the app seals with the file's newest key, the file is checked as the inline
value is, and the two settings are never set together."""

import base64
import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.reporting.app import create_app
from services.reporting.config import Settings
from services.reporting.webhooks_secrets import SecretBox


def _key() -> bytes:
    return secrets.token_bytes(32)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_app_seals_with_the_newest_key_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new, old = _key(), _key()
    # openssl rand -base64 32 (standard alphabet) and Python's urlsafe form, one line with its newline
    text = f"{base64.b64encode(new).decode()}, {base64.urlsafe_b64encode(old).decode()}\n"
    monkeypatch.setenv("REGISTRY_WEBHOOK_SECRET_KEYS_FILE", str(_write(tmp_path / "keys", text)))
    settings = Settings(
        environment="production", data_dir=tmp_path, consumer_enabled=False, webhooks_enabled=False
    )
    box = create_app(settings).state.webhooks.secret_box
    assert box.kid == SecretBox([new]).kid
    assert box.open(SecretBox([old]).seal("whsec_" + base64.b64encode(_key()).decode(), "wh_1"), "wh_1")
    assert not (tmp_path / "reporting").exists(), "no development key is generated beside a configured one"


def test_the_file_is_refused_as_the_inline_value_is(tmp_path: Path) -> None:
    good = base64.urlsafe_b64encode(_key()).decode()
    zeros = base64.b64encode(bytes(32)).decode()
    with pytest.raises(ValidationError, match="not both"):
        Settings(webhook_secret_keys=good, webhook_secret_keys_file=_write(tmp_path / "k", good))

    placeholder = _write(tmp_path / "placeholder", f"{good},{zeros}")
    with pytest.raises(RuntimeError, match="placeholder"):
        Settings(
            environment="production", webhook_secret_keys_file=placeholder
        ).resolved_webhook_secret_keys()
    assert (
        Settings(
            environment="development", webhook_secret_keys_file=placeholder
        ).resolved_webhook_secret_keys()
        == f"{good},{zeros}"
    )

    for content in ("", "change-me\n", b"\xff" * 44):
        malformed = tmp_path / "malformed"
        malformed.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(RuntimeError, match=r"base64|32 bytes|no key"):  # everywhere, development too
            Settings(
                environment="development", webhook_secret_keys_file=malformed
            ).resolved_webhook_secret_keys()

    with pytest.raises(RuntimeError, match="cannot read"):
        Settings(
            environment="production", webhook_secret_keys_file=tmp_path / "absent"
        ).resolved_webhook_secret_keys()
