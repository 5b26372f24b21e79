"""The one adapter over python-jose: ES256 signing keys, JWKS, hardened token verification, and the raw
detached-JWS primitives that kit.jws builds the inter-registry message signatures on.

Nothing else in the code base imports `jose`. Verification pins the algorithm, checks `typ`, `kid`
and `crit` in the header before touching the signature, and requires `exp`, `iat`, `iss`, `aud`, `sub`
and `jti` in the claims, re-checking `exp`/`iss`/`aud` after the library does (DESIGN §3).
"""

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jws
from jose import jwt as jose_jwt
from jose.backends.base import Key
from jose.exceptions import JOSEError
from jose.utils import base64url_encode

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ALGORITHM",
    "KeySet",
    "SigningKey",
    "TokenInvalid",
    "jwk_thumbprint",
    "sign_detached",
    "sign_token",
    "verify_detached",
    "verify_token",
]

ALGORITHM = "ES256"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068 §2.1 media type)
_REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "jti")


class TokenInvalid(Exception):
    """The token must not be trusted; the message says why (safe to log, never contains the token)."""


def _b64url_uint(value: int, length: int = 32) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(length, "big")).rstrip(b"=").decode()


def _b64url_to_uint(value: str) -> int:
    if not isinstance(value, str):
        raise TypeError("a JWK member must be a string")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def jwk_thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint of an EC public JWK: the `kid` we give our keys."""
    members = {name: public_jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """An EC P-256 private key with its `kid`."""

    private_pem: bytes
    kid: str
    public_jwk: dict[str, Any]
    _jose_key: Key = field(repr=False, compare=False)

    def with_kid(self, kid: str) -> "SigningKey":
        """The same key published under another `kid` (a registry's own naming, e.g. `ir-2026-01`)."""
        if not kid:
            raise ValueError("a kid must not be empty")
        return replace(self, kid=kid, public_jwk={**self.public_jwk, "kid": kid})

    @classmethod
    def from_jwk(cls, private_jwk: dict[str, Any]) -> "SigningKey":
        """A key from an EC P-256 private JWK (`d`, `x`, `y`); keeps its `kid` when it has one."""
        if private_jwk.get("kty") != "EC" or private_jwk.get("crv") != "P-256":
            raise ValueError("the signing key must be an EC P-256 JWK")
        try:
            x, y, d = (_b64url_to_uint(private_jwk[name]) for name in ("x", "y", "d"))
            private = ec.EllipticCurvePrivateNumbers(
                d, ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1())
            ).private_key()
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a usable EC private JWK: {type(exc).__name__}") from None
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key = cls.from_pem(pem)
        kid = private_jwk.get("kid")
        return key.with_kid(kid) if isinstance(kid, str) and kid else key

    def private_jwk(self) -> dict[str, Any]:
        """The key as a private JWK (for test fixtures and the simulator's key files)."""
        private = serialization.load_pem_private_key(self.private_pem, password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return {**self.public_jwk, "d": _b64url_uint(private.private_numbers().private_value)}

    @classmethod
    def generate(cls) -> "SigningKey":
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls.from_pem(pem)

    @classmethod
    def from_pem(cls, pem: bytes | str) -> "SigningKey":
        pem_bytes = pem.encode() if isinstance(pem, str) else pem
        private = serialization.load_pem_private_key(pem_bytes, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
            raise ValueError("the token signing key must be an EC P-256 private key")
        numbers = private.public_key().public_numbers()
        public = {"kty": "EC", "crv": "P-256", "x": _b64url_uint(numbers.x), "y": _b64url_uint(numbers.y)}
        kid = jwk_thumbprint(public)
        public_jwk = {**public, "use": "sig", "alg": ALGORITHM, "kid": kid}
        return cls(pem_bytes, kid, public_jwk, jwk.construct(pem_bytes.decode(), ALGORITHM))

    def public_pem(self) -> bytes:
        private = serialization.load_pem_private_key(self.private_pem, password=None)
        return private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class KeySet:
    """Public keys by `kid`, built once from a JWKS document so verification constructs nothing."""

    def __init__(self, jwks: dict[str, Any] | None = None) -> None:
        self._keys: dict[str, Key] = {}
        self.document: dict[str, Any] = {"keys": []}
        if jwks:
            self.replace(jwks)

    def replace(self, jwks: dict[str, Any]) -> None:
        """Trust exactly the usable keys of `jwks`; ValueError (keys unchanged) if it has none."""
        entries = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWKS document")
        keys: dict[str, Key] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if entry.get("kty") != "EC" or entry.get("crv") != "P-256" or not entry.get("kid"):
                continue
            if entry.get("use", "sig") != "sig":
                continue
            try:
                public = {name: entry[name] for name in ("kty", "crv", "x", "y")}
                keys[entry["kid"]] = jwk.construct(public, ALGORITHM)
            except (KeyError, TypeError, ValueError, JOSEError):
                continue  # a malformed key is not trusted; the others still are
        if entries and not keys:
            raise ValueError("no usable ES256 key in the JWKS")
        self._keys = keys
        self.document = {"keys": [dict(e) for e in entries if isinstance(e, dict) and e.get("kid") in keys]}

    def get(self, kid: str) -> Key | None:
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)


def sign_token(key: SigningKey, claims: dict[str, Any], *, typ: str = ACCESS_TOKEN_TYPE) -> str:
    """A compact JWS over `claims`, signed ES256 with `kid` and `typ` in the header."""
    return jose_jwt.encode(claims, key._jose_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": typ})


def _header(token: str) -> dict[str, Any]:
    try:
        header = jws.get_unverified_header(token)
    except JOSEError as exc:
        raise TokenInvalid("malformed token") from exc
    if not isinstance(header, dict):
        raise TokenInvalid("malformed token header")
    return header


def verify_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    audience: str,
    typ: str = ACCESS_TOKEN_TYPE,
    leeway: int = 30,
    now: float | None = None,
) -> dict[str, Any]:
    """The verified claims of `token`, or `TokenInvalid`."""
    if token.count(".") != 2:
        raise TokenInvalid("not a compact JWS")  # JWE (5 parts) and junk are refused before parsing
    header = _header(token)
    if header.get("alg") != ALGORITHM:
        raise TokenInvalid("algorithm not allowed")
    if header.get("typ") != typ:
        raise TokenInvalid("wrong token type")
    if "crit" in header:
        raise TokenInvalid("critical header parameters are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenInvalid("missing key id")
    key = keys.get(kid)
    if key is None:
        raise TokenInvalid("unknown key id")
    options = {"leeway": leeway} | {f"require_{claim}": True for claim in _REQUIRED_CLAIMS}
    try:
        claims = jose_jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=audience, issuer=issuer, options=options
        )
    except JOSEError as exc:
        raise TokenInvalid(f"token rejected: {type(exc).__name__}") from exc
    # The library checked these; check again so a change of its defaults cannot open a hole.
    current = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp + leeway < current:
        raise TokenInvalid("token expired")
    if claims.get("iss") != issuer:
        raise TokenInvalid("wrong issuer")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise TokenInvalid("wrong audience")
    return claims


def sign_detached(key: SigningKey, payload: bytes, *, typ: str) -> str:
    """RFC 7515 Appendix F: a compact JWS over `payload` with the payload part left empty
    (`<protected>..<signature>`). The protected header is exactly `{"alg": "ES256", "kid", "typ"}`."""
    compact = jws.sign(payload, key._jose_key, headers={"kid": key.kid, "typ": typ}, algorithm=ALGORITHM)
    protected, _, signature = compact.split(".")
    return f"{protected}..{signature}"


def verify_detached(protected: str, signature: str, payload: bytes, key: Key) -> bool:
    """Whether `signature` (base64url) is an ES256 signature by `key` over `protected.b64url(payload)`.

    The caller has already vetted the protected header; the algorithm is pinned here regardless.
    """
    token = f"{protected}.{base64url_encode(payload).decode()}.{signature}"
    try:
        jws.verify(token, key, algorithms=[ALGORITHM])
    except JOSEError:
        return False
    return True
