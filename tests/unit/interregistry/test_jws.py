"""kit.jws detached signatures: the happy path and every refusal of INTERREGISTRY §2.3 and §13.

Forged signatures are built by hand (header JSON, ES256 with `cryptography`, HMAC with `hmac`), so each
differs from a good one in exactly the way under test; `forge` with the defaults makes a signature that
verifies, which shows the helper is sound and the refusals come from the checks, not from a broken forgery.
"""

import base64
import copy
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from contracts.interregistry import parse_envelope
from kit.jws import (
    JWS_TYPE,
    CanonicalizationError,
    HeaderRefused,
    KeyRevoked,
    MalformedSignature,
    SignatureInvalid,
    SignatureMismatch,
    UnknownKeyId,
    canonicalize,
    sign,
    thumbprint,
    verify,
)
from kit.jwt import KeySet, SigningKey
from tests.unit.interregistry._messages import envelope, proposal


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _es256(key: SigningKey, signing_input: bytes) -> bytes:
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def forge(key: SigningKey, document: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A detached signature over `document` with `header` (default: the correct one), ES256 by `key`."""
    protected = _b64(json.dumps(header or {"alg": "ES256", "kid": key.kid, "typ": JWS_TYPE}).encode())
    signing_input = f"{protected}.{_b64(canonicalize(document))}".encode()
    return f"{protected}..{_b64(_es256(key, signing_input))}"


@pytest.fixture(scope="module")
def che_key() -> SigningKey:
    return SigningKey.generate().with_kid("che-2026-01")


@pytest.fixture(scope="module")
def che_keys(che_key: SigningKey) -> KeySet:
    return KeySet({"keys": [che_key.public_jwk]})


@pytest.fixture
def message() -> dict[str, Any]:
    return envelope("transfer.proposal", proposal(transfer_id="CHE01-T000451", from_registry="CHE01"))


def test_sign_and_verify(che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]) -> None:
    signature = sign(message, che_key)
    protected, payload, signature_part = signature.split(".")
    assert payload == "", "detached: the payload part is empty"
    assert (
        base64.urlsafe_b64decode(protected + "==") == b'{"alg":"ES256","kid":"che-2026-01","typ":"irx+jws"}'
    )
    assert len(base64.urlsafe_b64decode(signature_part + "==")) == 64
    verified = verify(message, signature, che_keys)
    assert verified.kid == "che-2026-01"
    assert verified.thumbprint == thumbprint(che_key.public_jwk)
    assert verified.jwk["x"] == che_key.public_jwk["x"] and "d" not in verified.jwk


def test_member_order_does_not_matter_but_content_does(
    che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]
) -> None:
    signature = sign(message, che_key)
    reordered = dict(reversed(list(message.items())))
    reordered["body"] = dict(reversed(list(message["body"].items())))
    verify(reordered, signature, che_keys)


def test_the_hand_made_signature_is_sound(
    che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]
) -> None:
    verify(message, forge(che_key, message), che_keys)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m["body"].update(quantity=401),
        lambda m: m["body"]["blocks"][0].update(last=401),
        lambda m: m["body"]["blocks"][0]["underlying"].update(last_unit_id=9000401),
        lambda m: m.update(seq=m["seq"] + 1),
        lambda m: m.update(to="GHA01"),
        lambda m: m.update(env="sandbox"),
        lambda m: m.update(sent_at="2026-03-03T10:16:40.201000Z"),  # same instant, other text
        lambda m: m["body"].update(note="added"),
        lambda m: m.pop("seq"),
    ],
)
def test_a_tampered_envelope_is_refused(
    che_key: SigningKey, che_keys: KeySet, message: dict[str, Any], tamper: Any
) -> None:
    signature = sign(message, che_key)
    tampered = copy.deepcopy(message)
    tamper(tampered)
    with pytest.raises(SignatureMismatch):
        verify(tampered, signature, che_keys)


def test_verification_is_over_the_document_as_received(che_key: SigningKey, che_keys: KeySet) -> None:
    # The sender wrote microseconds; our model re-emits milliseconds. Verify the raw document, never a
    # re-serialisation of the parsed model.
    received = envelope(sent_at="2026-03-03T10:16:40.201000Z")
    signature = sign(received, che_key)
    verify(received, signature, che_keys)
    with pytest.raises(SignatureMismatch):
        verify(parse_envelope(received).to_wire(), signature, che_keys)


def test_alg_none_is_refused(che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": che_key.kid, "typ": JWS_TYPE}).encode())
    with pytest.raises(HeaderRefused, match="algorithm"):
        verify(message, f"{header}..", che_keys)
    with pytest.raises(HeaderRefused, match="algorithm"):
        verify(message, f"{header}..{_b64(b'x' * 64)}", che_keys)


def test_hs256_keyed_with_the_public_key_is_refused(
    che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]
) -> None:
    # The classic confusion attack: an HMAC whose secret is the verifier's public key material.
    for secret in (che_key.public_pem(), json.dumps(che_key.public_jwk).encode()):
        protected = _b64(json.dumps({"alg": "HS256", "kid": che_key.kid, "typ": JWS_TYPE}).encode())
        signing_input = f"{protected}.{_b64(canonicalize(message))}".encode()
        mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
        with pytest.raises(HeaderRefused, match="algorithm"):
            verify(message, f"{protected}..{_b64(mac)}", che_keys)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "ES384", "kid": "che-2026-01", "typ": JWS_TYPE}, "algorithm"),
        ({"alg": "es256", "kid": "che-2026-01", "typ": JWS_TYPE}, "algorithm"),
        ({"kid": "che-2026-01", "typ": JWS_TYPE}, "algorithm"),
        ({"alg": "ES256", "typ": JWS_TYPE}, "kid"),
        ({"alg": "ES256", "kid": "", "typ": JWS_TYPE}, "kid"),
        ({"alg": "ES256", "kid": 7, "typ": JWS_TYPE}, "kid"),
        ({"alg": "ES256", "kid": "che-2026-01", "typ": "JWT"}, "typ"),
        ({"alg": "ES256", "kid": "che-2026-01"}, "typ"),
        ({"alg": "ES256", "kid": "che-2026-01", "typ": JWS_TYPE, "crit": ["exp"], "exp": 1}, "crit"),
        ({"alg": "ES256", "kid": "che-2026-01", "typ": JWS_TYPE, "crit": []}, "crit"),
        ({"alg": "ES256", "kid": "che-2026-01", "typ": JWS_TYPE, "b64": False}, "unexpected"),
        (
            {"alg": "ES256", "kid": "che-2026-01", "typ": JWS_TYPE, "jku": "https://evil.example/"},
            "unexpected",
        ),
    ],
)
def test_headers_other_than_exactly_es256_kid_typ_are_refused(
    che_key: SigningKey, che_keys: KeySet, message: dict[str, Any], header: dict[str, Any], reason: str
) -> None:
    # Correctly ES256-signed by the right key: only the header is wrong.
    with pytest.raises(HeaderRefused, match=reason):
        verify(message, forge(che_key, message, header), che_keys)


def test_unknown_kid_is_its_own_error(che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]) -> None:
    rotated = SigningKey.generate().with_kid("che-2026-02")
    with pytest.raises(UnknownKeyId) as unknown:
        verify(message, sign(message, rotated), che_keys)
    assert unknown.value.kid == "che-2026-02"
    assert isinstance(unknown.value, SignatureInvalid) and unknown.value.code == 1006


def test_another_registrys_key_is_refused(che_keys: KeySet, message: dict[str, Any]) -> None:
    gha_key = SigningKey.generate().with_kid("gha-01")
    with pytest.raises(UnknownKeyId):
        verify(message, sign(message, gha_key), che_keys)
    # Same kid spelling, another registry's key: the kid does not make the key.
    impostor = SigningKey.generate().with_kid("che-2026-01")
    with pytest.raises(SignatureMismatch):
        verify(message, sign(message, impostor), che_keys)


def test_a_kid_naming_another_key_of_the_set_is_refused(che_key: SigningKey, message: dict[str, Any]) -> None:
    other = SigningKey.generate().with_kid("che-2025-12")
    keys = KeySet({"keys": [che_key.public_jwk, other.public_jwk]})
    verify(message, sign(message, che_key), keys)
    wrong_kid = forge(che_key, message, {"alg": "ES256", "kid": other.kid, "typ": JWS_TYPE})
    with pytest.raises(SignatureMismatch):
        verify(message, wrong_kid, keys)


def test_a_revoked_kid_is_refused(che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]) -> None:
    with pytest.raises(KeyRevoked):
        verify(message, sign(message, che_key), che_keys, revoked={che_key.kid})


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "abc",
        "a.b",
        "a..b.c",
        "..",
        "%%%..abc",
        "e30..",  # {} header, no signature
        "W10..AAAA",  # [] header
        "bm90IGpzb24..AAAA",  # "not json"
    ],
)
def test_malformed_signatures(che_keys: KeySet, message: dict[str, Any], signature: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify(message, signature, che_keys)


def test_an_attached_payload_or_a_short_signature_is_malformed(
    che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]
) -> None:
    protected, _, signature_part = sign(message, che_key).split(".")
    attached = f"{protected}.{_b64(canonicalize(message))}.{signature_part}"
    with pytest.raises(MalformedSignature):
        verify(message, attached, che_keys)
    short = _b64(base64.urlsafe_b64decode(signature_part + "==")[:63])
    with pytest.raises(MalformedSignature):
        verify(message, f"{protected}..{short}", che_keys)
    with pytest.raises(MalformedSignature):
        verify(message, f"{protected}..{signature_part}=", che_keys)
    with pytest.raises(MalformedSignature):
        verify(message, None, che_keys)  # type: ignore[arg-type]


def test_duplicate_header_members_are_malformed(
    che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]
) -> None:
    protected = _b64(b'{"alg":"ES256","kid":"che-2026-01","typ":"irx+jws","alg":"none"}')
    signing_input = f"{protected}.{_b64(canonicalize(message))}".encode()
    with pytest.raises(MalformedSignature):
        verify(message, f"{protected}..{_b64(_es256(che_key, signing_input))}", che_keys)


def test_an_unsignable_envelope(che_key: SigningKey, che_keys: KeySet) -> None:
    with pytest.raises(CanonicalizationError):
        sign({"sent_at": float("nan")}, che_key)


def test_thumbprint_is_rfc7638(che_key: SigningKey) -> None:
    jwk = che_key.public_jwk
    required = f'{{"crv":"{jwk["crv"]}","kty":"{jwk["kty"]}","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    expected = _b64(hashlib.sha256(required.encode()).digest())
    assert thumbprint(jwk) == expected
    assert thumbprint({**jwk, "kid": "other", "use": "sig", "alg": "ES256"}) == expected
    assert thumbprint(SigningKey.generate().public_jwk) != expected
    with pytest.raises(ValueError, match="missing"):
        thumbprint({"kty": "EC", "crv": "P-256", "x": jwk["x"]})


def test_keys_round_trip_through_private_jwks(
    che_key: SigningKey, che_keys: KeySet, message: dict[str, Any]
) -> None:
    restored = SigningKey.from_jwk(che_key.private_jwk())
    assert restored.kid == che_key.kid and restored.public_jwk == che_key.public_jwk
    verify(message, sign(message, restored), che_keys)
    with pytest.raises(ValueError):
        SigningKey.from_jwk({"kty": "RSA", "n": "x", "e": "AQAB"})
    with pytest.raises(ValueError):
        SigningKey.from_jwk({**che_key.private_jwk(), "d": "AAAA"})
    other = SigningKey.generate().public_jwk
    with pytest.raises(ValueError):  # a private part that does not belong to the public point
        SigningKey.from_jwk({**che_key.private_jwk(), "x": other["x"], "y": other["y"]})
