"""What one conformance run needs to know: where the IR is, which registry it acts as, and with which
credentials and keys (INTERREGISTRY §11). Built from the command line (`conformance.__main__`) or directly by
tests; `load_private_jwk`/`load_jwks` read the operator's files and fail with a sentence, not a traceback.
"""

import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.jwt import SigningKey

__all__ = [
    "ACCOUNT_ROLES",
    "MODES",
    "ConfigError",
    "KitConfig",
    "load_client_file",
    "load_jwks",
    "load_private_jwk",
    "secret_from_environment",
]

#: `registry`: a national registry tests itself against the IR sandbox; `ir`: the IR's CI runs the kit with the
#: reference simulator as the registry under test (§11).
MODES = ("registry", "ir")
#: Roles of the registry's fixture accounts the transfer cases send to (case 150–152).
ACCOUNT_ROLES = ("valid", "blocked", "closed", "policy", "unknown")
_REGISTRY_ID = re.compile(r"^[A-Z]{3}[0-9]{2}$")


class ConfigError(ValueError):
    """The run cannot start: a missing or unreadable file, an unknown mode, a malformed registry id."""


@dataclass(frozen=True)
class KitConfig:
    """One run. `signing_key` is the registry's own sandbox key: the kit signs as the registry does."""

    ir_url: str
    registry_id: str
    client_id: str
    client_secret: str
    signing_key: SigningKey
    mode: str = "registry"
    #: The registry's published public keys; the key of `signing_key` is always trusted besides these.
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    driver_url: str | None = None
    #: A JWKS file the registry's `jwks_url` serves and the kit may write (case 102's key rotation).
    rotation_jwks_file: Path | None = None
    #: Seconds between publishing the new key and signing with it: the IR refetches an unknown kid at most
    #: once per its refetch interval (§2.3: a minute), and case 102's unknown-kid check has just spent that
    #: fetch. None: the interval the sandbox tells (`GET …/sandbox/settings`) plus 1 s, else 61.
    rotation_wait_seconds: float | None = None
    #: Inbox page size of case 116; small so that paging and "from the middle" are exercised on short inboxes.
    page_size: int = 2
    http_timeout: float = 30.0
    #: The IR test section of the transfer cases (150+, from the Secretariat): its registry id, a holding
    #: account the sandbox makes test units in, and a CA both Parties take part in, with a vintage.
    ir_section: str | None = None
    ir_account: str | None = None
    ca_id: str | None = None
    vintage: int | None = None
    #: Further IR accounts for case 162 (`ir_blocked`, `ir_closed`), for case 165 one of a section accepting
    #: incoming transfers manually (`ir_manual`, in the CA of `ca_id`), and a CA a Party does not take part in.
    ir_accounts: dict[str, str] = field(default_factory=dict)
    ca_non_participant: str | None = None
    #: The registry's own fixture accounts by role (`valid`, `blocked`, `closed`, `policy`, `unknown`);
    #: missing roles follow the reference simulator's convention (docs/simulator.md).
    registry_accounts: dict[str, str] = field(default_factory=dict)
    #: A shell command that restarts the registry process and returns once it serves again (case 171).
    restart_command: str | None = None
    #: Without a driver, how the kit asks the operator (§11: prints the instruction or question, waits for a
    #: line); the command line sets the terminal's when it is interactive. None: such cases are skipped.
    operator: Callable[[str], Awaitable[str]] | None = None
    #: How long one operator question waits (§11: 10 min).
    operator_timeout: float = 600.0
    #: Post the report to the IR at the end (`POST /v1/interregistry/conformance-runs`), which judges it.
    store: bool = True
    #: Case 400: where the kit listens for webhook deliveries, and the URL the IR is given for it (when the
    #: IR reaches the kit through a proxy or tunnel); default a free loopback port and its own URL.
    webhook_listen: tuple[str, int] = ("127.0.0.1", 0)
    webhook_url: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if not _REGISTRY_ID.fullmatch(self.registry_id):
            raise ConfigError(
                f"registry id {self.registry_id!r}: expected three letters and two digits, e.g. CHE01"
            )
        if not self.ir_url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"IR URL {self.ir_url!r}: expected http(s)://host[:port] of the gateway")
        if not self.client_id or not self.client_secret:
            raise ConfigError("the registry's sandbox client id and secret are both required")
        if self.page_size < 1:
            raise ConfigError("page size must be at least 1")
        unknown = set(self.registry_accounts) - set(ACCOUNT_ROLES)
        if unknown:
            raise ConfigError(
                f"registry account roles {sorted(unknown)}: expected {', '.join(ACCOUNT_ROLES)}"
            )
        prefix = self.registry_id[:2]
        conventional = {
            "valid": f"{prefix}-100-1",
            "blocked": f"{prefix}-100-90",
            "closed": f"{prefix}-100-91",
            "policy": f"{prefix}-100-92",
            "unknown": f"{prefix}-100-999999",
        }
        object.__setattr__(self, "registry_accounts", conventional | dict(self.registry_accounts))

    @property
    def ir_account_registry(self) -> str:
        """The IR test section's registry id (the `to_registry` of the registry's proposals)."""
        if not self.ir_section:
            raise ConfigError("the transfer cases need --ir-section (the IR test section's registry id)")
        return self.ir_section

    @property
    def party(self) -> str:
        """The Party of the registry: its id starts with the Party code (contracts.parties)."""
        return self.registry_id[:3]

    def trusted_jwks(self) -> dict[str, Any]:
        """The configured JWKS plus the public half of the signing key (deduplicated by kid)."""
        keys = {key.get("kid"): key for key in self.jwks.get("keys", []) if isinstance(key, dict)}
        keys.setdefault(self.signing_key.kid, self.signing_key.public_jwk)
        return {"keys": list(keys.values())}


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"the {what} {path} is not JSON") from None


def load_private_jwk(path: Path) -> SigningKey:
    """The registry's private signing key from a JWK file (EC P-256 with `d`; its `kid` is kept)."""
    document = _read_json(path, "signing key file")
    if not isinstance(document, dict) or "d" not in document:
        raise ConfigError(f"the signing key file {path} is not a private EC JWK (no `d`)")
    try:
        return SigningKey.from_jwk(document)
    except ValueError as exc:
        raise ConfigError(f"the signing key file {path}: {exc}") from None


def load_jwks(path: Path) -> dict[str, Any]:
    """A public JWKS file (`{"keys": [...]}`); a private member in it is refused, it would be published."""
    document = _read_json(path, "JWKS file")
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"the JWKS file {path} is not a JWKS document")
    if any(isinstance(key, dict) and "d" in key for key in document["keys"]):
        raise ConfigError(f"the JWKS file {path} holds a private key: publish public keys only")
    return document


def load_client_file(path: Path) -> tuple[str, str]:
    """`{"client_id", "client_secret"}` (the simulator keeps its credentials this way)."""
    document = _read_json(path, "client credentials file")
    if not isinstance(document, dict) or not document.get("client_id") or not document.get("client_secret"):
        raise ConfigError(f"the client file {path} needs client_id and client_secret")
    return str(document["client_id"]), str(document["client_secret"])


def secret_from_environment(name: str = "CONFORMANCE_CLIENT_SECRET") -> str | None:
    """The client secret from the environment, so it does not appear in the process list."""
    return os.environ.get(name) or None
