"""The verified-token cache of kit.auth.TokenVerifier: fast path only while the token and its key are valid."""

import time

import pytest

from kit.auth import TokenVerifier
from kit.errors import Unauthorized
from kit.jwt import KeySet, SigningKey
from tests.support.tokens import AUDIENCE, ISSUER, TokenFactory


async def test_a_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = TokenFactory()
    verifier = factory.verifier()
    token = factory.token(party="GHA", roles=["viewer"], lifetime=60)
    first = await verifier.verify(token)
    assert (await verifier.verify(token)) is first  # served from the cache
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


async def test_replacing_the_keys_drops_cached_tokens() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=KeySet({"keys": [old.public_jwk]}))
    token = TokenFactory(old).token(party=None, roles=["secretariat_admin"])
    await verifier.verify(token)
    verifier.keys.replace({"keys": [new.public_jwk]})  # the old key is withdrawn (e.g. compromised)
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


async def test_a_refused_token_is_never_cached() -> None:
    factory = TokenFactory()
    verifier = factory.verifier()
    token = factory.token(party="GHA", roles=["viewer"])
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await verifier.verify(tampered)
