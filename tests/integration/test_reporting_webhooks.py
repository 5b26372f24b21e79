"""Webhooks (INTERREGISTRY §9, Standard Webhooks 1.0.0) end to end through the gateway, on both backends:
registration and Party isolation, signatures verified by the `standardwebhooks` package (from a real
receiver on 127.0.0.1), the retry schedule on a fake clock, `Retry-After`, 410, the 72 h disable with its
`webhook.disabled` feed item, secret rotation, the SSRF check repeated at delivery time, secrets sealed at
rest (with a rotation of the sealing key), and re-enabling a disabled endpoint."""

import base64
import json
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks.webhooks as sw
from aiohttp import web
from sqlalchemy import select, update
from standardwebhooks import Webhook, WebhookVerificationError

from services.reporting.models import webhooks
from services.reporting.webhooks import SCHEDULE, WebhookDispatcher, new_secret
from services.reporting.webhooks_secrets import SecretBox
from tests.integration._ledger_world import PartyActors, World, ledger_world


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Receiver:
    """The outbound side's stand-in: answers from a script, records every request (MockTransport)."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
async def world(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[World]:
    async with ledger_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await dispatcher(built).stop()  # the tests drive the worker themselves
        # An endpoint hears of items appended after its registration: let the set-up's items in first.
        await built.suite.services["party_sections"].state.outbox.relay()
        await built.suite.services["reporting"].state.consumer.catch_up()
        yield built


def dispatcher(world: World) -> WebhookDispatcher:
    found: WebhookDispatcher = world.suite.services["reporting"].state.webhooks
    return found


def drive(world: World, clock: FakeClock, receiver: Receiver | None = None) -> WebhookDispatcher:
    worker = dispatcher(world)
    worker.clock = clock
    worker.jitter = lambda: 0.0
    if receiver is not None:
        worker.transport = httpx.MockTransport(receiver)
    return worker


async def register(
    world: World, actors: PartyActors, url: str, types: list[str], **extra: Any
) -> dict[str, Any]:
    answer = await world.gateway.post(
        "/v1/webhooks", json={"url": url, "event_types": types, **extra}, headers=actors.admin
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


async def account_event(world: World, actors: PartyActors, move: str = "block") -> None:
    """A new item in the Party's feed: its holding account blocked (or unblocked)."""
    answer = await world.gateway.post(f"/v1/accounts/{actors.holding}/{move}", json={}, headers=actors.admin)
    assert answer.status_code == 200, answer.text
    await world.suite.services["party_sections"].state.outbox.relay()
    await world.suite.services["reporting"].state.consumer.catch_up()


async def deliveries(world: World, actors: PartyActors, webhook_id: str) -> list[dict[str, Any]]:
    answer = await world.gateway.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=actors.admin)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def feed(world: World, actors: PartyActors) -> list[dict[str, Any]]:
    answer = await world.gateway.get("/v1/events", params={"limit": 500}, headers=actors.viewer)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def verify_at(secret: str, request: httpx.Request, at: datetime) -> Any:
    """`standardwebhooks` verification as a receiver whose clock reads `at` (the package checks the
    timestamp against its own now, within 5 minutes)."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> "Frozen":  # type: ignore[override]
            return cls.fromtimestamp(at.timestamp(), tz=tz)

    real = sw.datetime
    sw.datetime = Frozen  # type: ignore[misc]
    try:
        return Webhook(secret).verify(request.content, dict(request.headers))
    finally:
        sw.datetime = real  # type: ignore[misc]


async def test_registration_is_per_party_and_refuses_unsafe_urls(world: World) -> None:
    gw = world.gateway
    gha, che = world.parties["GHA"], world.parties["CHE"]
    made = await register(world, gha, "http://127.0.0.1:9/hook", ["account.*"], description="ops")
    assert made["secret"].startswith("whsec_") and made["status"] == "active" and made["party"] == "GHA"
    Webhook(made["secret"])  # a secret the package accepts
    made_client = await gw.post(
        "/v1/clients",
        json={"name": "GHA registry", "party": "GHA", "roles": ["registry"], "registry_id": "GHA02"},
        headers=world.admin,
    )
    assert made_client.status_code == 201, made_client.text
    registry = made_client.json()
    token = await world.suite.token(registry["client_id"], registry["client_secret"])
    registry_headers = {"Authorization": f"Bearer {token}"}
    by_registry = await gw.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/doorbell", "event_types": ["transaction.completed"]},
        headers=registry_headers,
    )
    assert by_registry.status_code == 201, by_registry.text

    listed = await gw.get("/v1/webhooks", headers=gha.admin)
    assert [w["webhook_id"] for w in listed.json()["items"]] == [
        made["webhook_id"],
        by_registry.json()["webhook_id"],
    ]
    assert "whsec_" not in listed.text and "secret" not in listed.json()["items"][0]

    # Switzerland sees none of Ghana's endpoints and can touch none of them: the same 404 as a missing one.
    assert (await gw.get("/v1/webhooks", headers=che.admin)).json()["items"] == []
    hook = made["webhook_id"]
    for method, path in (
        ("GET", f"/v1/webhooks/{hook}"),
        ("DELETE", f"/v1/webhooks/{hook}"),
        ("POST", f"/v1/webhooks/{hook}/rotate-secret"),
        ("GET", f"/v1/webhooks/{hook}/deliveries"),
    ):
        answer = await gw.request(method, path, headers=che.admin)
        assert answer.status_code == 404, (method, path, answer.text)
    # Readers and the Secretariat do not manage a Party's endpoints.
    for headers in (gha.viewer, gha.initiator, world.admin):
        assert (await gw.get("/v1/webhooks", headers=headers)).status_code == 403
    assert (await gw.get(f"/v1/webhooks/{hook}", headers=gha.admin)).status_code == 200

    bad_type = await gw.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "event_types": ["mos.issued"]}, headers=gha.admin
    )
    assert bad_type.status_code == 422

    # In production: HTTPS only, and never an internal address, whatever the name resolves to.
    worker = dispatcher(world)
    worker.production = True
    worker.resolver = _resolver(
        {"internal.example.org": ["127.0.0.1"], "hooks.example.org": ["93.184.216.34"]}
    )
    for url in (
        "http://hooks.example.org/hook",
        "https://10.1.2.3/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fc00::1]/hook",
        "https://internal.example.org/hook",
    ):
        answer = await gw.post(
            "/v1/webhooks", json={"url": url, "event_types": ["account.*"]}, headers=gha.admin
        )
        assert answer.status_code == 422, (url, answer.text)
    assert (await register(world, gha, "https://hooks.example.org/hook", ["account.*"]))["status"] == "active"

    assert (await gw.delete(f"/v1/webhooks/{hook}", headers=gha.admin)).status_code == 204
    assert (await gw.get(f"/v1/webhooks/{hook}", headers=gha.admin)).status_code == 404


def _resolver(names: dict[str, list[str]]) -> Callable[[str, int], Any]:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in names:
            raise OSError(f"{host} unknown")
        return names[host]

    return resolve


async def test_a_delivery_verifies_with_standardwebhooks_at_a_real_receiver(world: World) -> None:
    gha = world.parties["GHA"]
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        made = await register(world, gha, f"http://127.0.0.1:{port}/hook", ["account.blocked"])
        await account_event(world, gha)
        worker = dispatcher(world)
        worker.transport = None  # the real network, loopback allowed outside production
        assert await worker.run_once() == 1
    finally:
        await runner.cleanup()
    [(body, headers)] = received
    payload = Webhook(made["secret"]).verify(body, headers)
    [item] = [i for i in await feed(world, gha) if i["type"] == "account.blocked"]
    assert payload == {
        "type": "account.blocked",
        "timestamp": item["occurred_at"],
        "data": {"party": "GHA", "position": item["position"], "event_id": item["event_id"]},
    }
    assert headers["webhook-id"] == item["event_id"]
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):
        Webhook(made["secret"]).verify(body.replace(b"GHA", b"CHE"), headers)
    [logged] = await deliveries(world, gha, made["webhook_id"])
    assert (logged["status"], logged["attempts"], logged["last_status_code"]) == ("succeeded", 1, 204)


async def test_retries_follow_the_schedule_and_72_hours_of_failure_disable(world: World) -> None:
    gha = world.parties["GHA"]
    clock = FakeClock()

    def answer(request: httpx.Request) -> httpx.Response:
        # Port 9001 always fails; 9002 (the Party's other endpoint) always succeeds.
        return httpx.Response(500 if request.url.port == 9001 else 200)

    worker = drive(world, clock)
    worker.transport = httpx.MockTransport(answer)
    failing = await register(world, gha, "http://127.0.0.1:9001/hook", ["account.*"])
    watcher = await register(world, gha, "http://127.0.0.1:9002/hook", ["webhook.disabled"])
    start = clock.now
    await account_event(world, gha)
    assert await worker.run_once() == 1

    attempts = [start]
    for delay in SCHEDULE:
        [delivery] = await deliveries(world, gha, failing["webhook_id"])
        due = datetime.fromisoformat(delivery["next_attempt_at"])
        assert due == attempts[-1] + delay
        clock.now = due - timedelta(seconds=1)
        assert await worker.run_once() == 0  # not before it is due
        clock.now = due
        assert await worker.run_once() == 1
        attempts.append(due)
    [delivery] = await deliveries(world, gha, failing["webhook_id"])
    assert delivery["attempts"] == 10 and [e["status_code"] for e in delivery["log"]] == [500] * 10
    # The tenth attempt came 75 h 35 min after the first failure: the endpoint is disabled.
    assert attempts[-1] - start > timedelta(hours=72)
    assert delivery["status"] == "failed"
    shown = (await world.gateway.get(f"/v1/webhooks/{failing['webhook_id']}", headers=gha.admin)).json()
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "failing_72h")
    [disabled] = [i for i in await feed(world, gha) if i["type"] == "webhook.disabled"]
    assert disabled["data"]["webhook_id"] == failing["webhook_id"]
    assert disabled["data"]["reason"] == "failing_72h"
    assert disabled["position"] == (await feed(world, gha))[-1]["position"]

    # The Party's other endpoint hears of it; the disabled one hears of nothing more.
    assert await worker.run_once() == 1
    [told] = await deliveries(world, gha, watcher["webhook_id"])
    assert (told["type"], told["status"], told["position"]) == (
        "webhook.disabled",
        "succeeded",
        disabled["position"],
    )
    await account_event(world, gha, "unblock")
    assert await worker.run_once() == 0
    assert len(await deliveries(world, gha, failing["webhook_id"])) == 1


async def test_retry_after_is_honoured_and_a_success_ends_the_failure_streak(world: World) -> None:
    gha = world.parties["GHA"]
    clock = FakeClock()
    receiver = Receiver(
        httpx.Response(503, headers={"Retry-After": "120"}),
        httpx.Response(429, headers={"Retry-After": "1"}),
        httpx.Response(200),
    )
    worker = drive(world, clock, receiver)
    made = await register(world, gha, "http://127.0.0.1:9001/hook", ["account.*"])
    await account_event(world, gha)
    assert await worker.run_once() == 1
    [delivery] = await deliveries(world, gha, made["webhook_id"])
    # 503 with Retry-After: 120 s, later than the schedule's 5 s.
    assert datetime.fromisoformat(delivery["next_attempt_at"]) == clock.now + timedelta(seconds=120)
    clock.advance(timedelta(seconds=119))
    assert await worker.run_once() == 0
    clock.advance(timedelta(seconds=1))
    assert await worker.run_once() == 1
    [delivery] = await deliveries(world, gha, made["webhook_id"])
    # 429 with Retry-After: 1 s never brings the schedule's 5 min forward.
    assert datetime.fromisoformat(delivery["next_attempt_at"]) == clock.now + timedelta(minutes=5)
    shown = (await world.gateway.get(f"/v1/webhooks/{made['webhook_id']}", headers=gha.admin)).json()
    assert shown["failing_since"] is not None
    clock.advance(timedelta(minutes=5))
    assert await worker.run_once() == 1
    [delivery] = await deliveries(world, gha, made["webhook_id"])
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 3)
    assert [e["status_code"] for e in delivery["log"]] == [503, 429, 200]
    # Every attempt sent the same message under the same id.
    assert len({r.content for r in receiver.requests}) == 1
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    shown = (await world.gateway.get(f"/v1/webhooks/{made['webhook_id']}", headers=gha.admin)).json()
    assert shown["failing_since"] is None and shown["status"] == "active"


async def test_410_disables_the_endpoint_at_once(world: World) -> None:
    gha = world.parties["GHA"]
    clock = FakeClock()
    receiver = Receiver(httpx.Response(410))
    worker = drive(world, clock, receiver)
    made = await register(world, gha, "http://127.0.0.1:9001/hook", ["account.*"])
    await account_event(world, gha)
    await account_event(world, gha, "unblock")
    assert await worker.run_once() == 1  # the second message is dropped with the endpoint
    shown = (await world.gateway.get(f"/v1/webhooks/{made['webhook_id']}", headers=gha.admin)).json()
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "gone")
    states = sorted(d["status"] for d in await deliveries(world, gha, made["webhook_id"]))
    assert states == ["abandoned", "failed"]
    assert [i["data"]["reason"] for i in await feed(world, gha) if i["type"] == "webhook.disabled"] == [
        "gone"
    ]
    clock.advance(timedelta(days=1))
    await account_event(world, gha)
    assert await worker.run_once() == 0
    assert len(receiver.requests) == 1


async def test_a_rotated_secret_signs_beside_the_old_one_for_24_hours(world: World) -> None:
    gha = world.parties["GHA"]
    clock = FakeClock()
    receiver = Receiver(httpx.Response(200))
    worker = drive(world, clock, receiver)
    made = await register(world, gha, "http://127.0.0.1:9001/hook", ["account.*"])
    old = made["secret"]
    await account_event(world, gha)
    await worker.run_once()
    assert verify_at(old, receiver.requests[-1], clock.now)["type"] == "account.blocked"

    rotated = await world.gateway.post(f"/v1/webhooks/{made['webhook_id']}/rotate-secret", headers=gha.admin)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert datetime.fromisoformat(rotated.json()["previous_secret_expires_at"]) == clock.now + timedelta(
        hours=24
    )
    await account_event(world, gha, "unblock")
    await worker.run_once()
    during = receiver.requests[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # receivers switch over at their pace
        assert verify_at(secret, during, clock.now)["type"] == "account.unblocked"

    clock.advance(timedelta(hours=24, seconds=1))
    await account_event(world, gha)
    await worker.run_once()
    after = receiver.requests[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert verify_at(new, after, clock.now)["type"] == "account.blocked"
    with pytest.raises(WebhookVerificationError):
        verify_at(old, after, clock.now)


async def test_addresses_are_checked_again_at_delivery_time(world: World) -> None:
    """DNS can change after registration: a name that now resolves to loopback gets nothing, and an
    allowed one is called at the very address checked, its name kept in Host and SNI."""
    gha = world.parties["GHA"]
    clock = FakeClock()
    receiver = Receiver(httpx.Response(200))
    worker = drive(world, clock, receiver)
    worker.production = True
    names = {"hooks.example.org": ["93.184.216.34"], "rebind.example.org": ["93.184.216.35"]}
    worker.resolver = _resolver(names)
    good = await register(world, gha, "https://hooks.example.org/in?x=1", ["account.*"])
    rebound = await register(world, gha, "https://rebind.example.org/in", ["account.*"])
    names["rebind.example.org"] = ["127.0.0.1"]
    await account_event(world, gha)
    assert await worker.run_once() == 2

    [sent] = receiver.requests
    assert (sent.url.host, sent.url.path, sent.url.query) == ("93.184.216.34", "/in", b"x=1")
    assert sent.headers["host"] == "hooks.example.org"
    assert sent.extensions["sni_hostname"] == "hooks.example.org"
    assert json.loads(sent.content)["data"]["party"] == "GHA"
    [refused] = await deliveries(world, gha, rebound["webhook_id"])
    assert refused["status"] == "pending" and refused["last_status_code"] is None
    assert refused["last_error"].startswith("refused:") and "127.0.0.1" in refused["last_error"]
    [delivered] = await deliveries(world, gha, good["webhook_id"])
    assert delivered["status"] == "succeeded"


async def _stored_secrets(world: World) -> dict[str, tuple[str, str | None]]:
    """The `webhooks` rows as the database holds them: (secret, previous_secret) per endpoint."""
    db = world.suite.services["reporting"].state.db
    async with db.read() as session:
        rows = (
            await session.execute(
                select(webhooks.c.webhook_id, webhooks.c.secret, webhooks.c.previous_secret)
            )
        ).all()
    return {webhook_id: (secret, previous) for webhook_id, secret, previous in rows}


def _absent(secret: str, stored: tuple[str, str | None]) -> bool:
    """Neither the secret's text nor its key bytes (in either base64 alphabet) are in the stored row."""
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    forms = {secret, secret.removeprefix("whsec_"), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return not any(form in (value or "") for form in forms for value in stored)


async def test_secrets_are_sealed_at_rest_and_the_sealing_key_rotates(world: World) -> None:
    gha = world.parties["GHA"]
    clock = FakeClock()
    receiver = Receiver(httpx.Response(204))
    worker = drive(world, clock, receiver)
    first_key, second_key = secrets.token_bytes(32), secrets.token_bytes(32)
    worker.secret_box = SecretBox([first_key])
    made = await register(world, gha, "http://127.0.0.1:9001/hook", ["account.*"])
    hook = made["webhook_id"]
    assert _absent(made["secret"], (await _stored_secrets(world))[hook])
    await account_event(world, gha)
    assert await worker.run_once() == 1
    assert verify_at(made["secret"], receiver.requests[-1], clock.now)["type"] == "account.blocked"

    rotated = (await world.gateway.post(f"/v1/webhooks/{hook}/rotate-secret", headers=gha.admin)).json()
    stored = (await _stored_secrets(world))[hook]
    assert stored[1] is not None and _absent(made["secret"], stored) and _absent(rotated["secret"], stored)

    # A row from before encryption holds the plain secret: it still signs, and the sealing pass seals it.
    legacy = await register(world, gha, "http://127.0.0.1:9002/hook", ["account.*"])
    plain = new_secret()
    async with world.suite.services["reporting"].state.db.transaction() as session:
        await session.execute(
            update(webhooks).where(webhooks.c.webhook_id == legacy["webhook_id"]).values(secret=plain)
        )
    assert await worker.seal_secrets() == 1
    assert _absent(plain, (await _stored_secrets(world))[legacy["webhook_id"]])

    # Rotation of the sealing key: a new key first, the pass re-seals every row, the old key goes.
    worker.secret_box = SecretBox([second_key, first_key])
    assert await worker.seal_secrets() == 2
    assert all(
        s.startswith(worker.secret_box.prefix)
        for row in (await _stored_secrets(world)).values()
        for s in row
        if s
    )
    worker.secret_box = SecretBox([second_key])
    await account_event(world, gha, "unblock")
    assert await worker.run_once() == 2
    sent = {r.url.port: r for r in receiver.requests[-2:]}
    for secret in (made["secret"], rotated["secret"]):  # the previous secret still signs for 24 h
        assert verify_at(secret, sent[9001], clock.now)["type"] == "account.unblocked"
    assert verify_at(plain, sent[9002], clock.now)["type"] == "account.unblocked"
    # Under the first key alone nothing opens any more: the attempt fails and says why.
    worker.secret_box = SecretBox([first_key])
    await account_event(world, gha)
    assert await worker.run_once() == 2
    [latest, *_] = await deliveries(world, gha, hook)
    assert latest["status"] == "pending" and latest["last_error"].startswith("secret:")


async def test_a_disabled_endpoint_is_enabled_by_its_owner_and_resumes_where_it_stopped(world: World) -> None:
    gw = world.gateway
    gha, che = world.parties["GHA"], world.parties["CHE"]
    clock = FakeClock()
    receiver = Receiver(httpx.Response(410), httpx.Response(204))
    worker = drive(world, clock, receiver)
    made = await register(world, gha, "http://127.0.0.1:9001/hook", ["account.*"])
    hook = made["webhook_id"]
    await account_event(world, gha)
    await account_event(world, gha, "unblock")
    assert await worker.run_once() == 1  # 410: disabled, the second message abandoned
    clock.advance(timedelta(hours=1))
    await account_event(world, gha)  # appended while disabled
    assert await worker.run_once() == 0

    enable = f"/v1/webhooks/{hook}/enable"
    assert (await gw.post(enable, headers=che.admin)).status_code == 404
    assert (await gw.post(enable, headers=gha.viewer)).status_code == 403
    enabled = await gw.post(enable, headers=gha.admin)
    assert enabled.status_code == 200, enabled.text
    shown = enabled.json()
    assert (shown["status"], shown["disabled_at"], shown["disabled_reason"], shown["failing_since"]) == (
        "active",
        None,
        None,
        None,
    )
    assert await worker.run_once() == 3
    told = [json.loads(request.content) for request in receiver.requests[1:]]
    assert [m["type"] for m in told] == ["account.blocked", "account.unblocked", "account.blocked"]
    positions = [m["data"]["position"] for m in told]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert receiver.requests[1].content == receiver.requests[0].content  # the stopped message, as it was
    assert {d["status"] for d in await deliveries(world, gha, hook)} == {"succeeded"}
    assert (await gw.post(enable, headers=gha.admin)).json()[
        "status"
    ] == "active"  # enabling twice: no change
    assert await worker.run_once() == 0
