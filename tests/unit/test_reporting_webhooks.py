"""Webhook signing and the SSRF rules (services/reporting/webhooks.py): signatures checked against the
`standardwebhooks` package, the addresses production refuses, and `Retry-After` parsing."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from standardwebhooks import Webhook

from services.reporting.webhooks import UnsafeUrl, _retry_after, address_allowed, check_url, new_secret, sign


def test_signatures_are_the_standard_webhooks_ones() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    at = datetime.now(UTC).replace(microsecond=0)
    body = '{"type":"account.blocked","timestamp":"2026-11-26T00:00:00.000Z","data":{"party":"GHA"}}'
    signature = sign(secret, "msg_1", int(at.timestamp()), body)
    assert signature == Webhook(secret).sign("msg_1", at, body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
    assert Webhook(secret).verify(body, headers)["data"] == {"party": "GHA"}
    assert sign(new_secret(), "msg_1", int(at.timestamp()), body) != signature


def _names(mapping: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in mapping:
            raise OSError("unknown")
        return mapping[host]

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.3.4",
        "192.168.1.1",
        "127.0.0.1",
        "127.9.9.9",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 (an address refused, not one bound)
        "224.0.0.1",
        "::1",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_production_calls_global_addresses_only(address: str) -> None:
    assert not address_allowed(address, production=True)


def test_outside_production_loopback_is_allowed_and_the_rest_still_refused() -> None:
    assert address_allowed("127.0.0.1", production=False) and address_allowed("::1", production=False)
    for address in ("10.0.0.1", "169.254.169.254", "fc00::1", "192.168.0.1"):
        assert not address_allowed(address, production=False), address
    assert address_allowed("93.184.216.34", production=True)
    assert address_allowed("2606:2800:220:1:248:1893:25c8:1946", production=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.org/in",  # plain HTTP
        "https://10.0.0.7/in",
        "https://127.0.0.1/in",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/in",
        "https://[fc00::1]/in",
        "https://localhost.example.org/in",  # a name resolving to loopback
        "https://mixed.example.org/in",  # one good address and one internal: refused
        "https://nowhere.example.org/in",  # does not resolve
        "https://user:pw@hooks.example.org/in",
        "ftp://hooks.example.org/in",
        "not a url",
    ],
)
async def test_production_refuses_unsafe_urls(url: str) -> None:
    resolver = _names(
        {
            "hooks.example.org": ["93.184.216.34"],
            "localhost.example.org": ["127.0.0.1"],
            "mixed.example.org": ["93.184.216.34", "10.0.0.1"],
        }
    )
    with pytest.raises(UnsafeUrl):
        await check_url(url, production=True, resolver=resolver)


async def test_a_safe_url_answers_the_addresses_to_call() -> None:
    resolver = _names({"hooks.example.org": ["93.184.216.34"], "local.test": ["127.0.0.1"]})
    assert await check_url("https://hooks.example.org/in", production=True, resolver=resolver) == [
        "93.184.216.34"
    ]
    assert await check_url("http://local.test:8080/in", production=False, resolver=resolver) == ["127.0.0.1"]
    with pytest.raises(UnsafeUrl):
        await check_url("http://local.test:8080/in", production=True, resolver=resolver)


def test_retry_after_in_seconds_or_as_a_date_capped_at_a_day() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    assert _retry_after(answer("120"), now) == timedelta(seconds=120)
    assert _retry_after(answer(format_datetime(now + timedelta(minutes=3), usegmt=True)), now) == timedelta(
        minutes=3
    )
    assert _retry_after(answer("999999"), now) == timedelta(hours=24)
    assert _retry_after(answer("soon"), now) is None
    assert _retry_after(httpx.Response(503), now) is None
