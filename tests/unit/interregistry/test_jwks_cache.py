"""kit.jws.JwksCache: Cache-Control up to 1 h, at most one fetch a minute, one refetch on an unknown kid.

The registry's JWKS endpoint is an external HTTP server, so it is an `httpx.MockTransport` here that
serves whatever key set and headers the test sets and counts requests; time is a fake clock.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from kit.jws import JwksCache, JwksUnavailable, SignatureMismatch, UnknownKeyId, sign
from kit.jwt import SigningKey
from tests.unit.interregistry._messages import envelope

URL = "https://registry.che.example/irx/jwks.json"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class JwksServer:
    """What the registry's endpoint answers; `requests` records every request it received."""

    keys: list[dict[str, Any]]
    status: int = 200
    cache_control: str | None = "max-age=600"
    body: bytes | None = None
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"content-type": "application/json"}
        if self.cache_control is not None:
            headers["cache-control"] = self.cache_control
        if self.status in (301, 302, 307):
            headers["location"] = "https://elsewhere.example/jwks.json"
        if self.body is not None:
            return httpx.Response(self.status, headers=headers, content=self.body)
        return httpx.Response(self.status, headers=headers, json={"keys": self.keys})

    @property
    def fetches(self) -> int:
        return len(self.requests)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate().with_kid("che-1")


@pytest.fixture
def server(key: SigningKey) -> JwksServer:
    return JwksServer(keys=[key.public_jwk])


def cache_for(server: JwksServer, clock: FakeClock, **options: Any) -> JwksCache:
    return JwksCache(URL, transport=httpx.MockTransport(server.handle), clock=clock, **options)


async def test_first_use_fetches_with_a_five_second_timeout(server: JwksServer, clock: FakeClock) -> None:
    cache = cache_for(server, clock)
    keys = await cache.key_set()
    assert "che-1" in keys and server.fetches == 1
    request = server.requests[0]
    assert str(request.url) == URL and request.method == "GET"
    assert request.extensions["timeout"] == {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


@pytest.mark.parametrize(
    ("cache_control", "lifetime"),
    [
        ("max-age=600", 600),
        ("public, max-age=120", 120),
        ("max-age=86400", 3600),  # capped at 1 h
        (None, 300),  # no header: 5 min
        ("public", 300),
        ("max-age=60, must-revalidate", 60),
    ],
)
async def test_keys_are_kept_as_long_as_cache_control_says_up_to_an_hour(
    server: JwksServer, clock: FakeClock, cache_control: str | None, lifetime: int
) -> None:
    server.cache_control = cache_control
    cache = cache_for(server, clock)
    await cache.key_set()
    clock.advance(lifetime - 1)
    await cache.key_set()
    assert server.fetches == 1, "still fresh"
    clock.advance(1)
    await cache.key_set()
    assert server.fetches == 2, "stale: fetched again"


async def test_no_store_still_fetches_at_most_once_a_minute(server: JwksServer, clock: FakeClock) -> None:
    server.cache_control = "no-store"
    cache = cache_for(server, clock)
    for _ in range(5):
        await cache.key_set()
        clock.advance(10)
    assert server.fetches == 1
    clock.advance(10)
    await cache.key_set()
    assert server.fetches == 2


async def test_rotation_refetches_once_on_an_unknown_kid(
    server: JwksServer, clock: FakeClock, key: SigningKey
) -> None:
    cache = cache_for(server, clock)
    message = envelope()
    assert (await cache.verify(message, sign(message, key))).kid == "che-1"
    clock.advance(61)

    # The registry publishes a new key and signs with it at once: accepted without waiting for max-age.
    rotated = SigningKey.generate().with_kid("che-2")
    server.keys = [key.public_jwk, rotated.public_jwk]
    assert (await cache.verify(message, sign(message, rotated))).kid == "che-2"
    assert server.fetches == 2

    # Another unknown kid within the minute: no request to the registry, refused.
    stranger = SigningKey.generate().with_kid("che-3")
    server.keys = [key.public_jwk, rotated.public_jwk, stranger.public_jwk]
    with pytest.raises(UnknownKeyId):
        await cache.verify(message, sign(message, stranger))
    assert server.fetches == 2

    # After the minute it is fetched again and found.
    clock.advance(60)
    assert (await cache.verify(message, sign(message, stranger))).kid == "che-3"
    assert server.fetches == 3


async def test_an_unknown_kid_the_registry_does_not_publish_costs_one_fetch_a_minute(
    server: JwksServer, clock: FakeClock
) -> None:
    cache = cache_for(server, clock)
    message = envelope()
    forged = sign(message, SigningKey.generate().with_kid("not-published"))
    await cache.key_set()
    clock.advance(60)
    for _ in range(10):
        with pytest.raises(UnknownKeyId):
            await cache.verify(message, forged)
    assert server.fetches == 2


async def test_a_known_kid_with_a_bad_signature_does_not_refetch(
    server: JwksServer, clock: FakeClock, key: SigningKey
) -> None:
    cache = cache_for(server, clock)
    message = envelope()
    signature = sign(message, key)
    clock.advance(120)
    await cache.key_set()
    fetches = server.fetches
    with pytest.raises(SignatureMismatch):
        await cache.verify(envelope(seq=58), signature)
    assert server.fetches == fetches


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (404, None),
        (302, None),
        (200, b"not json"),
        (200, b'{"keys": [{"kty": "RSA", "kid": "r"}]}'),
    ],
)
async def test_a_failed_refresh_keeps_the_last_good_keys(
    server: JwksServer, clock: FakeClock, key: SigningKey, status: int, body: bytes | None
) -> None:
    cache = cache_for(server, clock)
    await cache.key_set()
    clock.advance(601)
    server.status, server.body = status, body
    keys = await cache.key_set()
    assert server.fetches == 2 and "che-1" in keys
    message = envelope()
    assert (await cache.verify(message, sign(message, key))).kid == "che-1"


async def test_no_keys_at_all_is_unavailable_until_a_fetch_succeeds(
    server: JwksServer, clock: FakeClock
) -> None:
    server.status = 503
    cache = cache_for(server, clock)
    with pytest.raises(JwksUnavailable):
        await cache.key_set()
    with pytest.raises(JwksUnavailable):
        await cache.key_set()
    assert server.fetches == 1, "failures are rate limited too"
    server.status = 200
    clock.advance(60)
    assert "che-1" in await cache.key_set()


async def test_a_transport_error_is_a_failed_fetch(clock: FakeClock) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    cache = JwksCache(URL, transport=httpx.MockTransport(unreachable), clock=clock)
    with pytest.raises(JwksUnavailable):
        await cache.key_set()


async def test_concurrent_callers_share_one_fetch(server: JwksServer, clock: FakeClock) -> None:
    cache = cache_for(server, clock)
    results = await asyncio.gather(*(cache.key_set() for _ in range(20)))
    assert server.fetches == 1 and all("che-1" in keys for keys in results)


def test_production_urls_must_be_https() -> None:
    with pytest.raises(ValueError, match="HTTPS"):
        JwksCache("http://registry.che.example/jwks.json", require_https=True)
    with pytest.raises(ValueError):
        JwksCache("file:///etc/passwd")
    JwksCache("http://127.0.0.1:8200/jwks.json")  # sandbox: loopback over plain HTTP is fine
