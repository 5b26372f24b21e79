"""The IR's own message-signing key (INTERREGISTRY §2.3): the IR signs every inbox message and publishes
the public half at `GET /v1/interregistry/jwks.json`, separate from the gateway's token keys.

Where the key comes from, like the gateway's token key (gateway/config.py): `REGISTRY_IRX_SIGNING_KEY`
(a private JWK inline) or `REGISTRY_IRX_SIGNING_KEY_FILE` (a private JWK or a PEM file). Outside
production a missing key is generated once into `data_dir/transactions/irx-signing-key.json` (mode 0600)
and reused; in production a missing key refuses to build the app, because a key invented at start-up
would change on every restart and on every replica, and registries could not verify what they read.

In development the key is loaded on first use, not at start-up: most processes (and tests) never sign an
inbox message, and so never write a key file.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kit.jwt import SigningKey
from services.transactions.config import Settings

__all__ = ["KEY_FILE_NAME", "IrSigner", "load_signing_key"]

KEY_FILE_NAME = "irx-signing-key.json"


def _read_or_create(path: Path, make: Any) -> bytes:
    """The content of `path`, created with `make()` (mode 0600) when absent; a racing peer's file wins."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    content: bytes = make()
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.link(temporary, path)  # refuses an existing target: a second process keeps the first one's key
    except FileExistsError:
        return path.read_bytes()
    finally:
        os.unlink(temporary)
    return content


def _parse_key(raw: bytes, source: str) -> SigningKey:
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        if text.startswith("{"):
            return SigningKey.from_jwk(json.loads(text))
        return SigningKey.from_pem(text.encode())
    except (ValueError, TypeError) as exc:
        raise RuntimeError(
            f"the IR message-signing key from {source} is not an EC P-256 private key"
        ) from exc


def load_signing_key(settings: Settings) -> SigningKey:
    """The configured key, or (outside production) the generated one; `RuntimeError` in production
    without one."""
    if settings.irx_signing_key is not None:
        return _parse_key(settings.irx_signing_key.get_secret_value().encode(), "REGISTRY_IRX_SIGNING_KEY")
    if settings.irx_signing_key_file is not None:
        try:
            raw = settings.irx_signing_key_file.read_bytes()
        except OSError as exc:
            raise RuntimeError(
                f"cannot read the IR message-signing key file {settings.irx_signing_key_file}: {exc.strerror}"
            ) from None
        return _parse_key(raw, str(settings.irx_signing_key_file))
    if settings.is_production:
        raise RuntimeError(
            "no IR message-signing key: set REGISTRY_IRX_SIGNING_KEY_FILE (or REGISTRY_IRX_SIGNING_KEY);"
            " keys are never generated in production"
        )
    path = settings.data_dir / "transactions" / KEY_FILE_NAME
    raw = _read_or_create(path, lambda: json.dumps(SigningKey.generate().private_jwk()).encode())
    return _parse_key(raw, str(path))


class IrSigner:
    """The IR's signing key, loaded when first needed (at once in production, so a missing key fails the
    start rather than the first inbox message)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._key: SigningKey | None = None
        if settings.is_production:
            self._key = load_signing_key(settings)

    @property
    def key(self) -> SigningKey:
        if self._key is None:
            self._key = load_signing_key(self._settings)
        return self._key

    def jwks(self) -> dict[str, Any]:
        """The public keys registries verify inbox messages with."""
        return {"keys": [self.key.public_jwk]}
