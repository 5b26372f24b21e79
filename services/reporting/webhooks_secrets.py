"""Webhook signing secrets at rest (docs/events.md): sealed with AES-256-GCM under keys from the settings.

The service signs every message with the endpoint's secret itself, so it cannot keep a hash of it as the
gateway does for client secrets; it keeps it encrypted. A sealed secret is
`wsk1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`: the 32 secret bytes (not the `whsec_` text, so it fits
the 100-character column), a random 96-bit nonce, the webhook id as associated data (a sealed value copied
onto another endpoint's row does not open), `kid` the first 4 bytes of the key's SHA-256 in hex.

Keys: `REGISTRY_WEBHOOK_SECRET_KEYS`, base64 of 32 random bytes each, comma separated, newest first. The
newest seals; any opens (the `kid` picks it). The worker's sealing pass (`WebhookDispatcher.seal_secrets`,
at start and hourly) re-seals every row not under the newest key. Rotation, with several replicas: add the
new key second everywhere (it only opens), then move it first (it seals), and drop the old one once a pass
ran everywhere after that. Rows written before encryption existed hold the plain `whsec_…` text: they are
read as they are and sealed by the same pass (a transition read, not a migration: the migration job has no
key, and rotation needs the same re-sealing anyway).

Without configured keys, development and test generate one once into `data_dir/reporting/` (mode 0600) and
reuse it; production refuses to build the app (`secret_box`), as the IR's signing key does.
"""

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_FILE_NAME",
    "PLAIN_PREFIX",
    "SecretBox",
    "looks_like_placeholder",
    "parse_keys",
    "secret_box",
]

KEY_FILE_NAME = "webhook-secret.key"
PLAIN_PREFIX = "whsec_"
_SEALED = "wsk1"
_PLACEHOLDER_PARTS = ("placeholder", "example", "change", "replace", "secret", "xxxx")


def _kid(key: bytes) -> str:
    return hashlib.sha256(key).digest()[:4].hex()


def parse_keys(text: str) -> list[bytes]:
    """The keys of `REGISTRY_WEBHOOK_SECRET_KEYS`, newest first; `ValueError` unless each is 32 bytes."""
    keys = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            key = base64.urlsafe_b64decode(part.replace("+", "-").replace("/", "_") + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a webhook secret key is not base64") from exc
        if len(key) != 32:
            raise ValueError(f"a webhook secret key must be 32 bytes (base64), not {len(key)}")
        keys.append(key)
    if not keys:
        raise ValueError("REGISTRY_WEBHOOK_SECRET_KEYS holds no key")
    if len({_kid(key) for key in keys}) != len(keys):
        raise ValueError("REGISTRY_WEBHOOK_SECRET_KEYS lists a key twice")
    return keys


def looks_like_placeholder(text: str, key: bytes) -> bool:
    """A value left from a template: a telling word in it, or bytes nobody drew at random (all zeros,
    a repeated pattern)."""
    lowered = text.strip().lower()
    return any(part in lowered for part in _PLACEHOLDER_PARTS) or len(set(key)) < 16


class SecretBox:
    """Seals and opens webhook secrets with a list of keys, newest first."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key")
        self._keys = {_kid(key): AESGCM(key) for key in keys}
        self.kid = _kid(keys[0])
        self._newest = self._keys[self.kid]

    @property
    def prefix(self) -> str:
        """How every value sealed under the newest key starts (rows not starting so need re-sealing)."""
        return f"{_SEALED}.{self.kid}."

    def seal(self, secret: str, webhook_id: str) -> str:
        raw = base64.b64decode(secret.removeprefix(PLAIN_PREFIX), validate=True)
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._newest.encrypt(nonce, raw, webhook_id.encode())
        return self.prefix + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, stored: str, webhook_id: str) -> str:
        """The `whsec_…` secret of a stored value (sealed, or plain from before encryption)."""
        if stored.startswith(PLAIN_PREFIX):
            return stored
        version, kid, body = [*stored.split(".", 2), "", ""][:3]
        aead = self._keys.get(kid)
        if version != _SEALED or aead is None:
            raise LookupError(
                f"webhook {webhook_id}: sealed under key {kid!r}, not among the configured keys"
            )
        sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        try:
            raw = aead.decrypt(sealed[:12], sealed[12:], webhook_id.encode())
        except InvalidTag as exc:
            raise LookupError(f"webhook {webhook_id}: the sealed secret does not open") from exc
        return PLAIN_PREFIX + base64.b64encode(raw).decode()

    def current(self, stored: str | None) -> bool:
        """Whether a stored value is sealed under the newest key (nothing to do for it)."""
        return stored is None or stored.startswith(self.prefix)


def _read_or_create(path: Path) -> bytes:
    """The key file's content, created (mode 0600) when absent; a racing process keeps the first one's."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    content = base64.urlsafe_b64encode(secrets.token_bytes(32))
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mkstemp: mode 0600
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.link(temporary, path)  # refuses an existing target
    except FileExistsError:
        return path.read_bytes()
    finally:
        os.unlink(temporary)
    return content


def secret_box(keys: str | None, *, production: bool, data_dir: Path) -> SecretBox:
    """The configured keys; outside production, without them, the generated development key.
    `RuntimeError` in production without keys: a key invented at start would be lost with the pod."""
    if keys:
        return SecretBox(parse_keys(keys))
    if production:
        raise RuntimeError(
            "refusing to start the reporting service in production: REGISTRY_WEBHOOK_SECRET_KEYS(_FILE) is not set"
            " (webhook secrets are stored encrypted; keys are never generated in production)"
        )
    return SecretBox(parse_keys(_read_or_create(data_dir / "reporting" / KEY_FILE_NAME).decode()))
