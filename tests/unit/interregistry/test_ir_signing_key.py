"""Where the IR's message-signing key comes from (services/transactions/interregistry/signing.py): inline
JWK, a JWK or PEM file, generated once into the data directory outside production, refused in production
when missing."""

import json
import stat
from pathlib import Path

import pytest

from kit.config import Environment
from kit.jwt import SigningKey
from services.transactions.config import Settings
from services.transactions.interregistry.signing import KEY_FILE_NAME, IrSigner, load_signing_key


def test_inline_jwk_keeps_its_kid() -> None:
    key = SigningKey.generate().with_kid("ir-2026-01")
    settings = Settings(irx_signing_key=json.dumps(key.private_jwk()))
    loaded = load_signing_key(settings)
    assert loaded.kid == "ir-2026-01" and loaded.public_jwk == key.public_jwk
    assert IrSigner(settings).jwks() == {"keys": [key.public_jwk]}


@pytest.mark.parametrize("form", ["jwk", "pem"])
def test_key_file(tmp_path: Path, form: str) -> None:
    key = SigningKey.generate()
    path = tmp_path / "key"
    path.write_bytes(json.dumps(key.private_jwk()).encode() if form == "jwk" else key.private_pem)
    assert load_signing_key(Settings(irx_signing_key_file=path)).public_jwk == key.public_jwk


def test_unusable_or_missing_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text('{"kty": "RSA"}')
    with pytest.raises(RuntimeError, match="not an EC P-256 private key"):
        load_signing_key(Settings(irx_signing_key_file=bad))
    with pytest.raises(RuntimeError, match="cannot read"):
        load_signing_key(Settings(irx_signing_key_file=tmp_path / "absent"))
    with pytest.raises(ValueError, match="not both"):
        Settings(irx_signing_key="{}", irx_signing_key_file=bad)


def test_generated_once_outside_production_and_only_when_needed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, environment=Environment.DEVELOPMENT)
    signer = IrSigner(settings)
    path = tmp_path / "transactions" / KEY_FILE_NAME
    assert not path.exists()  # nothing is written until a message is signed or the keys are asked for
    first = signer.jwks()
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert IrSigner(settings).jwks() == first  # a restart (or a second process) reuses the same key


def test_production_refuses_a_missing_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, environment=Environment.PRODUCTION)
    assert settings.irx_env.value == "production"
    with pytest.raises(RuntimeError, match="never generated in production"):
        IrSigner(settings)
    assert not (tmp_path / "transactions").exists()


def test_the_sandbox_jwks_a_production_ir_trusts_must_be_a_jwks() -> None:
    jwks = json.dumps({"keys": [SigningKey.generate().public_jwk]})
    assert Settings(irx_sandbox_jwks=jwks).irx_sandbox_jwks == jwks
    assert Settings(irx_sandbox_jwks="  ").irx_sandbox_jwks is None
    for wrong in ("not json", "[]", '{"keys": []}', '{"kty": "EC"}'):
        with pytest.raises(ValueError, match="REGISTRY_IRX_SANDBOX_JWKS"):
            Settings(irx_sandbox_jwks=wrong)
