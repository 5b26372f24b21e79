"""Signed inter-registry messages (INTERREGISTRY §2.3): canonical JSON, detached JWS ES256, and a JWKS cache.

- `canonicalize` is RFC 8785 (JCS) through the `rfc8785` package, with one documented extension: an integer
  outside ±(2^53−1) is written as its exact decimal digits. Strict JCS refuses such integers (a double
  cannot hold them), but ledger serials are 64-bit (DESIGN §2) and may legitimately be that large; for every
  other value the output is byte-identical to `rfc8785.dumps`. `loads` is the matching strict reader
  (duplicate object members and NaN/Infinity refused), so every side canonicalises the same document.
- `sign` produces `<b64url(protected)>..<b64url(signature)>` (RFC 7515 Appendix F) over the JCS bytes of an
  envelope, with the protected header exactly `{"alg": "ES256", "kid": ..., "typ": "irx+jws"}`.
- `verify` refuses, before touching the signature: a malformed value, a header with `crit` or any member
  beyond alg/kid/typ, `alg` ≠ ES256 (so `none` and HS256 are never tried), a missing `kid`, `typ` ≠
  `irx+jws`; then a revoked or unknown `kid` (`UnknownKeyId`, so the caller can refetch the sender's JWKS
  once); then a signature that does not match the canonical envelope. python-jose is used only through
  kit.jwt.
- `JwksCache` fetches a registry's JWKS with httpx (5 s timeout, no redirects), keeps it as long as
  `Cache-Control: max-age` says (capped at 1 h; 5 min without the header) and fetches at most once per
  `min_refetch_interval` (60 s) whatever the reason, so an unknown `kid` costs the sender's server at most
  one request a minute. A failed fetch keeps the last good keys.

Errors (`JwsError` and below):

    JwsError
    ├── CanonicalizationError      the value is not JSON this protocol signs (also a ValueError) → 1003
    ├── SignatureInvalid           any refusal of a signature → 1006
    │   ├── MalformedSignature     not `<protected>..<signature>` in base64url, or a header that is not JSON
    │   ├── HeaderRefused          alg, typ, kid, crit or an extra member
    │   ├── KeyRevoked             the kid was revoked by the Secretariat
    │   ├── UnknownKeyId           the kid is not in the key set (refetch the JWKS once, then retry)
    │   └── SignatureMismatch      the signature does not verify over the canonical envelope (tampered)
    └── JwksUnavailable            no key set could be fetched yet
"""

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import rfc8785
import structlog

from kit.jwt import ALGORITHM, KeySet, SigningKey, jwk_thumbprint, sign_detached, verify_detached

__all__ = [
    "ALGORITHM",
    "JWS_TYPE",
    "MAX_SAFE_INTEGER",
    "CanonicalizationError",
    "HeaderRefused",
    "JwksCache",
    "JwksUnavailable",
    "JwsError",
    "KeyRevoked",
    "MalformedSignature",
    "SignatureInvalid",
    "SignatureMismatch",
    "UnknownKeyId",
    "VerifiedSignature",
    "audit_digest",
    "body_sha256",
    "canonicalize",
    "loads",
    "sign",
    "thumbprint",
    "verify",
]

log = structlog.get_logger(__name__)

JWS_TYPE = "irx+jws"
#: I-JSON's exact integer range (RFC 7493 §2.2); beyond it `canonicalize` writes exact digits.
MAX_SAFE_INTEGER = 2**53 - 1
_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_ES256_SIGNATURE_BYTES = 64
_MAX_SIGNATURE_CHARS = 4096


class JwsError(Exception):
    """Base of every error of this module."""


class CanonicalizationError(JwsError, ValueError):
    """The value cannot be canonicalised: not a JSON value, a non-string key, NaN or infinity, bad text."""


class SignatureInvalid(JwsError):
    """The signature must not be trusted (code 1006); the message says why and never contains key material."""

    code = 1006


class MalformedSignature(SignatureInvalid):
    """Not a detached compact JWS `<protected>..<signature>` with a JSON object header."""


class HeaderRefused(SignatureInvalid):
    """The protected header is not exactly `{"alg": "ES256", "kid": <kid>, "typ": "irx+jws"}`."""


class KeyRevoked(SignatureInvalid):
    """The `kid` is revoked: messages signed with it are refused."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"key {kid!r} is revoked")
        self.kid = kid


class UnknownKeyId(SignatureInvalid):
    """The `kid` is not in the sender's key set; refetch the JWKS once (`JwksCache.verify` does) and retry."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"unknown key id {kid!r}")
        self.kid = kid


class SignatureMismatch(SignatureInvalid):
    """The signature does not verify over the canonical envelope with the key named by `kid`."""


class JwksUnavailable(JwsError):
    """No key set: the JWKS could not be fetched (or was unusable) and none was fetched before."""


# ---- canonical JSON ----------------------------------------------------------------------------------------


def _canonical(value: Any, out: list[bytes]) -> None:
    if isinstance(value, dict):
        out.append(b"{")
        try:
            items = sorted(value.items(), key=lambda item: item[0].encode("utf-16be"))
        except AttributeError:
            raise CanonicalizationError("object keys must be strings") from None
        for index, (key, member) in enumerate(items):
            if index:
                out.append(b",")
            out.append(rfc8785.dumps(key))
            out.append(b":")
            _canonical(member, out)
        out.append(b"}")
    elif isinstance(value, list | tuple):
        out.append(b"[")
        for index, member in enumerate(value):
            if index:
                out.append(b",")
            _canonical(member, out)
        out.append(b"]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        out.append(str(int(value)).encode("ascii"))
    else:
        out.append(rfc8785.dumps(value))


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (see the module docstring for large integers)."""
    out: list[bytes] = []
    try:
        _canonical(value, out)
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalizationError(str(exc)) from None
    except RecursionError:
        raise CanonicalizationError("value nested too deeply") from None
    return b"".join(out)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise CanonicalizationError(f"duplicate object member {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise CanonicalizationError(f"{name} is not JSON")


def loads(text: bytes | str) -> Any:
    """Parse received JSON strictly: duplicate members and NaN/Infinity are refused (`CanonicalizationError`),
    so the document the receiver verifies is the one the sender signed, not one of its readings."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, CanonicalizationError):
            raise
        raise CanonicalizationError(f"not JSON: {exc}") from None


def body_sha256(body: Any) -> str:
    """Hex SHA-256 of the canonical JSON of a message body (message log, replay check, audit trail)."""
    return hashlib.sha256(canonicalize(body)).hexdigest()


def audit_digest(entries: Iterable[tuple[int, UUID | str, str]]) -> str:
    """Reconciliation stage 3 digest (§8): hex SHA-256 of the canonical JSON array of
    `[position or seq, message_id, body_sha256]` triples, in the order given (ascending position/seq)."""
    rows = [[int(number), str(message_id), digest] for number, message_id, digest in entries]
    return hashlib.sha256(canonicalize(rows)).hexdigest()


# ---- detached JWS ------------------------------------------------------------------------------------------


def thumbprint(public_jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of an EC public JWK: stored with every verified message."""
    try:
        return jwk_thumbprint(dict(public_jwk))
    except KeyError as exc:
        raise ValueError(f"not an EC public JWK: missing {exc.args[0]!r}") from None


def sign(envelope: Mapping[str, Any], key: SigningKey) -> str:
    """The `IRX-Signature` value for `envelope` (its wire dict, `from` spelled as on the wire)."""
    return sign_detached(key, canonicalize(dict(envelope)), typ=JWS_TYPE)


@dataclass(frozen=True)
class VerifiedSignature:
    """What a successful verification used: store `kid`, `thumbprint` (and the JWK) with the message."""

    kid: str
    thumbprint: str
    jwk: dict[str, Any]


def _b64url_decode(segment: str, what: str) -> bytes:
    if not _B64URL_RE.fullmatch(segment) or len(segment) % 4 == 1:
        raise MalformedSignature(f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedSignature(f"{what} is not unpadded base64url") from None


def _protected_header(protected: str) -> dict[str, Any]:
    raw = _b64url_decode(protected, "the protected header")
    try:
        header = loads(raw)
    except CanonicalizationError as exc:
        raise MalformedSignature(f"the protected header is not a JSON object ({exc})") from None
    if not isinstance(header, dict):
        raise MalformedSignature("the protected header is not a JSON object")
    return header


def _check_header(header: dict[str, Any]) -> str:
    if "crit" in header:
        raise HeaderRefused("critical header parameters (crit) are not supported")
    if header.get("alg") != ALGORITHM:
        raise HeaderRefused(f"algorithm {header.get('alg')!r} not allowed: only ES256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise HeaderRefused("missing key id (kid)")
    if header.get("typ") != JWS_TYPE:
        raise HeaderRefused(f"typ must be {JWS_TYPE!r}")
    extra = sorted(set(header) - _HEADER_MEMBERS)
    if extra:
        raise HeaderRefused(f"unexpected header members {extra}: the header is exactly alg, kid, typ")
    return kid


def _public_jwk(keys: KeySet, kid: str) -> dict[str, Any]:
    for entry in keys.document.get("keys", []):
        if entry.get("kid") == kid:
            return {name: entry[name] for name in ("kty", "crv", "x", "y", "kid") if name in entry}
    raise UnknownKeyId(kid)  # pragma: no cover - KeySet keeps document and keys in step


def verify(
    envelope: Mapping[str, Any],
    signature: str,
    keys: KeySet,
    *,
    revoked: Collection[str] = (),
) -> VerifiedSignature:
    """Check `signature` over the canonical JSON of `envelope` (as received) against the sender's `keys`.

    Raises a `SignatureInvalid` subclass (see the module docstring) or `CanonicalizationError`.
    """
    if not isinstance(signature, str) or len(signature) > _MAX_SIGNATURE_CHARS:
        raise MalformedSignature("the signature is not a detached compact JWS")
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "" or not parts[0]:
        raise MalformedSignature("the signature is not a detached compact JWS `<protected>..<signature>`")
    protected, _, signature_part = parts
    kid = _check_header(_protected_header(protected))
    if kid in revoked:
        raise KeyRevoked(kid)
    key = keys.get(kid)
    if key is None:
        raise UnknownKeyId(kid)
    if len(_b64url_decode(signature_part, "the signature")) != _ES256_SIGNATURE_BYTES:
        raise MalformedSignature("an ES256 signature is 64 bytes")
    payload = canonicalize(dict(envelope))
    if not verify_detached(protected, signature_part, payload, key):
        raise SignatureMismatch("the signature does not match the message")
    jwk = _public_jwk(keys, kid)
    return VerifiedSignature(kid=kid, thumbprint=thumbprint(jwk), jwk=jwk)


# ---- JWKS cache --------------------------------------------------------------------------------------------


_MAX_AGE_RE = re.compile(r"^\s*max-age\s*=\s*\"?([0-9]{1,10})\"?\s*$", re.IGNORECASE)


def _max_age(cache_control: str | None, default: float) -> float:
    if cache_control is None:
        return default
    max_age: float | None = None
    for directive in cache_control.split(","):
        name = directive.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        match = _MAX_AGE_RE.match(directive)
        if match:
            max_age = float(match.group(1))
    return default if max_age is None else max_age


class JwksCache:
    """One registry's published keys, fetched from its JWKS URL and cached (INTERREGISTRY §2.3).

    `clock` (monotonic seconds) and `transport` (an httpx transport) are injectable for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
        max_age_cap: float = 3600.0,
        default_max_age: float = 300.0,
        min_refetch_interval: float = 60.0,
        require_https: bool = False,
    ) -> None:
        if require_https and not url.lower().startswith("https://"):
            raise ValueError("the JWKS URL must be HTTPS")
        if not url.lower().startswith(("https://", "http://")):
            raise ValueError("the JWKS URL must be an http(s) URL")
        self.url = url
        self.keys = KeySet()
        self._transport = transport
        self._clock = clock
        self._timeout = timeout
        self._max_age_cap = max_age_cap
        self._default_max_age = default_max_age
        self._min_interval = min_refetch_interval
        self._fetched = False
        self._expires_at = float("-inf")
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    @property
    def expires_at(self) -> float:
        """Clock time at which the cached keys go stale (−inf before the first successful fetch)."""
        return self._expires_at

    def _may_fetch(self) -> bool:
        return self._clock() - self._last_attempt >= self._min_interval

    async def _fetch(self) -> bool:
        """One attempt; True when the keys were replaced. Callers hold the lock and checked `_may_fetch`."""
        self._last_attempt = self._clock()
        self.fetch_count += 1
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout, follow_redirects=False
            ) as client:
                response = await client.get(self.url, headers={"Accept": "application/json"})
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            document = loads(response.content)
            self.keys.replace(document)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("irx_jwks_fetch_failed", url=self.url, error=f"{type(exc).__name__}: {exc}")
            return False
        max_age = min(
            _max_age(response.headers.get("cache-control"), self._default_max_age), self._max_age_cap
        )
        self._expires_at = self._clock() + max(max_age, 0.0)
        self._fetched = True
        return True

    async def key_set(self) -> KeySet:
        """The current keys, fetched first when there are none or they are stale (and a fetch is allowed).

        A failed refresh keeps the last good keys; `JwksUnavailable` only if none was ever fetched.
        """
        if self._fetched and self._clock() < self._expires_at:
            return self.keys
        async with self._lock:
            stale = not self._fetched or self._clock() >= self._expires_at
            if stale and self._may_fetch():
                await self._fetch()
        if not self._fetched:
            raise JwksUnavailable(f"no usable JWKS from {self.url} yet")
        return self.keys

    async def refetch_for_unknown_kid(self, kid: str) -> bool:
        """Fetch again because `kid` is unknown, unless a fetch happened less than the minimum interval ago.
        True when the key set now has `kid`."""
        async with self._lock:
            if kid not in self.keys and self._may_fetch():
                await self._fetch()
        return kid in self.keys

    async def verify(
        self, envelope: Mapping[str, Any], signature: str, *, revoked: Collection[str] = ()
    ) -> VerifiedSignature:
        """`verify` against this registry's keys, refetching them once when the `kid` is unknown."""
        keys = await self.key_set()
        try:
            return verify(envelope, signature, keys, revoked=revoked)
        except UnknownKeyId as exc:
            if not await self.refetch_for_unknown_kid(exc.kid):
                raise
        return verify(envelope, signature, self.keys, revoked=revoked)
