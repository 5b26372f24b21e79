"""The inbox doorbell (INTERREGISTRY §4, §9) on both backends: the transactions service's inbox relay
publishes `interregistry.inbox.available` with each numbered batch, the reporting service appends it to the
registry's Party feed and rings the registry's webhook with a thin signed message `{"registry_id",
"position"}`: once per batch, retried on failure, one waiting per endpoint, and never in the way of the
registry's polling."""

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from contracts.interregistry import IrxMessageType, Notice
from services.reporting.webhooks import WebhookDispatcher
from tests.integration._interregistry_world import World, interregistry_world
from tests.integration.test_reporting_webhooks import FakeClock, Receiver, verify_at

pytestmark = pytest.mark.xdist_group("interregistry")


@pytest.fixture
async def world(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    async with interregistry_world(make_database, tmp_path, monkeypatch) as made:
        await made.suite.services["reporting"].state.webhooks.stop()  # driven by the test
        yield made


async def _news(world: World, registry_id: str, *texts: str) -> None:
    """Inbox messages, each committed on its own (as a state change would), then numbered together; and the
    reporting service catching up with the transactions feed."""
    service = world.service
    for n, text in enumerate(texts):
        async with service.db.connect() as connection:
            notice = Notice(notice_id=f"{text}-{n}", title="Notice", text=text)
            await service.enqueue(
                connection, {"registry_id": registry_id, "irx_version": None}, IrxMessageType.NOTICE, notice
            )
    await service.relay.relay()
    await world.suite.services["reporting"].state.consumer.catch_up()


async def test_an_inbox_item_rings_the_doorbell_once_signed_and_retried(world: World) -> None:
    che = await world.connect("CHE01")
    await world.service.relay.relay()
    await world.suite.services["reporting"].state.consumer.catch_up()
    worker: WebhookDispatcher = world.suite.services["reporting"].state.webhooks
    clock = FakeClock()
    receiver = Receiver(httpx.Response(500), httpx.Response(204))
    worker.clock, worker.jitter, worker.transport = clock, (lambda: 0.0), httpx.MockTransport(receiver)
    made = await world.gateway.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9001/doorbell", "event_types": ["interregistry.inbox.available"]},
        headers=che.headers,
    )
    assert made.status_code == 201, made.text
    hook, secret = made.json()["webhook_id"], made.json()["secret"]

    await _news(world, "CHE01", "maintenance")
    assert await worker.run_once() == 1  # rung; the endpoint answers 500
    inbox = (await che.inbox()).json()["items"]  # the registry's polling does not depend on it
    last = inbox[-1]["position"]
    assert inbox[-1]["message"]["body"]["text"] == "maintenance"
    clock.advance(timedelta(seconds=5))
    assert await worker.run_once() == 1  # retried on the schedule
    first, second = receiver.requests
    assert first.content == second.content and first.headers["webhook-id"] == second.headers["webhook-id"]
    message = verify_at(secret, second, clock.now)
    assert message["type"] == "interregistry.inbox.available"
    assert message["data"] == {"registry_id": "CHE01", "position": last}
    clock.advance(timedelta(days=1))
    assert await worker.run_once() == 0  # once

    # Two batches at once: the newer doorbell replaces the older, never attempted. A third while that one
    # waits for its retry rides on it: the retry sends the same bytes, and the registry reads it all.
    receiver.answers = [httpx.Response(503), httpx.Response(204)]
    await _news(world, "CHE01", "one")
    await _news(world, "CHE01", "two")
    assert await worker.run_once() == 1
    await _news(world, "CHE01", "three")
    assert await worker.run_once() == 0
    clock.advance(timedelta(seconds=5))
    assert await worker.run_once() == 1
    refused, delivered = receiver.requests[-2:]
    assert refused.content == delivered.content
    assert json.loads(delivered.content)["data"]["position"] == last + 2
    answer = await world.gateway.get(f"/v1/webhooks/{hook}/deliveries", headers=che.headers)
    assert [d["status"] for d in answer.json()["items"]] == [
        "superseded",
        "succeeded",
        "superseded",
        "succeeded",
    ]
    assert [i["position"] for i in (await che.inbox(after=last)).json()["items"]] == [
        last + 1,
        last + 2,
        last + 3,
    ]
