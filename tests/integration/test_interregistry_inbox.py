"""The inbox (INTERREGISTRY §4) and the message log, on both backends: consecutive positions per registry,
identical on replay, IR-signed (verified against `/v1/interregistry/jwks.json`), ack rules, isolation
between registries and roles, and positions that follow commit order under concurrent writers."""

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from contracts.interregistry import IrxEnvelope, IrxMessageType, Notice
from kit.jws import body_sha256, verify
from kit.jwt import KeySet
from services.transactions.interregistry.models import irx_message
from services.transactions.interregistry.service import Interregistry
from tests.integration._interregistry_world import Registry, World, interregistry_world

pytestmark = pytest.mark.xdist_group("interregistry")


@pytest.fixture
async def world(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    async with interregistry_world(make_database, tmp_path, monkeypatch) as made:
        yield made


async def _notices(world: World, registry_id: str, count: int, *, relay: bool = True) -> list[str]:
    """Write `count` notices to a registry's inbox, each in its own transaction (as a state change would)."""
    service: Interregistry = world.service
    ids = []
    for n in range(count):
        async with service.db.connect() as connection:
            row = {"registry_id": registry_id, "irx_version": None}
            notice = Notice(notice_id=f"n-{n}", title="Notice", text=f"text {n}")
            ids.append(await service.enqueue(connection, row, IrxMessageType.NOTICE, notice))
    if relay:
        await service.relay.relay()
    return ids


async def test_inbox_positions_signatures_and_replay(world: World) -> None:
    che = await world.connect("CHE01")  # two status changes: positions 1 and 2
    await _notices(world, "CHE01", 5)
    first = await che.inbox()
    assert first.status_code == 200, first.text
    items = first.json()["items"]
    assert [item["position"] for item in items] == list(range(1, 8))
    assert first.json()["next_cursor"] is None
    keys = KeySet((await world.gateway.get("/v1/interregistry/jwks.json")).json())
    for item in items:
        message = item["message"]
        assert message["seq"] == item["position"]
        assert message["from"] == "IR" and message["to"] == "CHE01" and message["env"] == "sandbox"
        IrxEnvelope.model_validate(message)
        verified = verify(message, item["signature"], keys)  # raises unless the IR's published key signed it
        assert verified.kid == keys.document["keys"][0]["kid"]
    tampered = {**items[3]["message"], "body": {**items[3]["message"]["body"], "text": "changed"}}
    with pytest.raises(Exception, match="does not match"):
        verify(tampered, items[3]["signature"], keys)
    # Replay from 0 and from the middle: the same bytes, whatever was read or acknowledged before.
    assert (await che.ack(4)).status_code == 200
    again = await che.inbox()
    assert again.content == first.content
    middle = await che.inbox(after=3, limit=2)
    assert middle.json()["items"] == items[3:5] and middle.json()["next_cursor"] == "5"
    rest = await che.inbox(after=5, limit=2)
    assert rest.json()["items"] == items[5:7] and rest.json()["next_cursor"] is None
    assert (await che.inbox(after=7)).json() == {"items": [], "next_cursor": None}


async def test_inbox_messages_are_numbered_after_commit_only(world: World) -> None:
    che = await world.connect("CHE01")
    service: Interregistry = world.service
    async with service.db.connect() as connection:
        await service.enqueue(
            connection,
            {"registry_id": "CHE01"},
            IrxMessageType.NOTICE,
            Notice(notice_id="rolled-back", title="t", text="x"),
        )
        await connection.rollback()
    await service.relay.relay()
    assert [i["position"] for i in (await che.inbox()).json()["items"]] == [1, 2]
    # Committed but not yet relayed: reading the inbox numbers it first.
    await _notices(world, "CHE01", 1, relay=False)
    assert [i["position"] for i in (await che.inbox()).json()["items"]] == [1, 2, 3]


async def test_positions_are_per_registry(world: World) -> None:
    che = await world.connect("CHE01")
    nor = await world.connect("NOR01", status="testing")
    await _notices(world, "CHE01", 2)
    await _notices(world, "NOR01", 3)
    che_items = (await che.inbox()).json()["items"]
    nor_items = (await nor.inbox()).json()["items"]
    assert [i["position"] for i in che_items] == [1, 2, 3, 4]
    assert [i["position"] for i in nor_items] == [1, 2, 3, 4]
    assert {i["message"]["to"] for i in che_items} == {"CHE01"}
    assert {i["message"]["to"] for i in nor_items} == {"NOR01"}


async def test_ack_rules(world: World) -> None:
    che = await world.connect("CHE01")
    await _notices(world, "CHE01", 3)  # positions 1..5
    beyond = await che.ack(6)
    assert beyond.status_code == 422 and beyond.json()["type"].endswith("/ack-beyond-inbox")
    assert beyond.json()["last_position"] == 5
    assert (await world.counts("CHE01"))[1] == 0  # refused: the seq was not consumed
    assert (await che.ack(3)).json() == {"acked_position": 3}
    assert (await che.ack(1)).json() == {"acked_position": 3}  # monotonic: never moves back
    assert (await che.ack(5)).json() == {"acked_position": 5}
    hello = (await che.hello()).json()
    assert hello["inbox"] == {"last_position": 5, "acked_position": 5}
    assert hello["last_seq_received"] == 4  # the refused ack used seq 1 at the registry, not at the IR
    # Acknowledging never changes what the inbox serves.
    assert [i["position"] for i in (await che.inbox()).json()["items"]] == [1, 2, 3, 4, 5]


async def test_isolation(world: World) -> None:
    che = await world.connect("CHE01")
    nor = await world.connect("NOR01")
    await _notices(world, "NOR01", 2)
    assert (await nor.ack(1)).status_code == 200
    assert (await che.ack(1)).status_code == 200
    viewer = await world.client_headers(party="CHE", roles=["viewer"])
    party_admin = await world.client_headers(party="NOR", roles=["party_admin"])
    auditor = await world.client_headers(party=None, roles=["auditor"])
    gw = world.gateway
    # A registry reads only its own inbox, whatever it asks; other roles have no inbox at all.
    assert {i["message"]["to"] for i in (await che.inbox()).json()["items"]} == {"CHE01"}
    for headers in (viewer, party_admin, world.admin):
        assert (await gw.get("/v1/interregistry/inbox", headers=headers)).status_code == 403
        ack = che.envelope("inbox.ack", {"up_to": 0})
        refused = await che.post("inbox/ack", ack, headers=headers)
        assert refused.status_code == 403 and refused.json()["code"] == 1004
    # The message log: the registry its own only; Secretariat and auditors everything; others nothing.
    own = await gw.get("/v1/interregistry/messages", headers=che.headers)
    assert own.status_code == 200 and {m["registry_id"] for m in own.json()["items"]} == {"CHE01"}
    assert {m["direction"] for m in own.json()["items"]} == {"registry_to_ir", "ir_to_registry"}
    other = await gw.get("/v1/interregistry/messages", params={"registry": "NOR01"}, headers=che.headers)
    assert other.status_code == 403
    for headers in (world.admin, auditor):
        everything = await gw.get("/v1/interregistry/messages", headers=headers)
        assert {m["registry_id"] for m in everything.json()["items"]} == {"CHE01", "NOR01"}
    for headers in (viewer, party_admin):
        assert (await gw.get("/v1/interregistry/messages", headers=headers)).status_code == 403
    # The record: another registry's details are hidden.
    assert "jwks" not in (await gw.get("/v1/interregistry/registries/NOR01", headers=che.headers)).json()


async def test_message_log_pages_and_filters(world: World) -> None:
    che = await world.connect("CHE01")
    for up_to in (1, 2):
        assert (await che.ack(up_to)).status_code == 200
    gw = world.gateway
    incoming = await gw.get(
        "/v1/interregistry/messages",
        params={"registry": "CHE01", "direction": "registry_to_ir"},
        headers=world.admin,
    )
    entries = incoming.json()["items"]
    assert [(e["type"], e["seq"], e["response_status"]) for e in entries] == [
        ("inbox.ack", 1, 200),
        ("inbox.ack", 2, 200),
    ]
    assert all(e["verification"] == "verified" and e["key_thumbprint"] for e in entries)
    assert all(e["body_sha256"] == body_sha256(e["envelope"]["body"]) for e in entries)
    outgoing = await gw.get(
        "/v1/interregistry/messages", params={"direction": "ir_to_registry", "limit": 1}, headers=world.admin
    )
    page = outgoing.json()
    assert [(e["position"], e["verification"]) for e in page["items"]] == [(1, "ir_signed")]
    after = await gw.get(
        "/v1/interregistry/messages",
        params={"direction": "ir_to_registry", "after": page["next_cursor"]},
        headers=world.admin,
    )
    assert [e["position"] for e in after.json()["items"]] == [2]


@pytest.mark.parametrize("writers", [24])
async def test_positions_follow_commit_order_under_concurrent_writers(world: World, writers: int) -> None:
    """Writers commit out of insert order while the registry reads; it sees each message once, in order."""
    che: Registry = await world.connect("CHE01")
    service: Interregistry = world.service
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    written: set[str] = set()

    async def writer(n: int) -> None:
        await asyncio.sleep(rng.uniform(0, 0.2))
        async with service.db.connect() as connection:
            message_id = await service.enqueue(
                connection,
                {"registry_id": "CHE01"},
                IrxMessageType.NOTICE,
                Notice(notice_id=f"c{n}", title="t", text="x"),
            )
            await asyncio.sleep(rng.uniform(0, 0.02))  # commit after a random delay
        written.add(message_id)

    tasks = [asyncio.create_task(writer(n)) for n in range(writers)]
    seen: list[dict] = []
    cursor = 0
    while True:
        done = all(task.done() for task in tasks)  # before reading: the read relays and must catch all
        page = (await che.inbox(after=cursor, limit=5)).json()["items"]
        if page:
            assert page[0]["position"] == cursor + 1, f"a gap after {cursor} (seed {seed})"
            seen.extend(page)
            cursor = page[-1]["position"]
        elif done:
            break
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    notices = [item["message"]["message_id"] for item in seen if item["message"]["type"] == "notice"]
    assert len(notices) == len(set(notices)) == writers, f"seed {seed}"
    assert set(notices) == written
    assert [item["position"] for item in seen] == list(range(1, writers + 3))


@pytest.mark.postgres  # SQLite writers serialize (BEGIN IMMEDIATE): two write transactions cannot overlap
async def test_late_commit_gets_a_later_position(
    pg_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the relay numbers the inbox: the message inserted first but committed last is not skipped."""

    def make(package: str) -> str:
        return pg_database(package)

    async with interregistry_world(make, tmp_path, monkeypatch) as world:
        che = await world.connect("CHE01")
        await world.service.relay.relay()
        service: Interregistry = world.service
        notice = Notice(notice_id="n", title="t", text="x")
        async with service.db.connect() as first:
            early = await service.enqueue(first, {"registry_id": "CHE01"}, IrxMessageType.NOTICE, notice)
            async with service.db.connect() as second:
                late = await service.enqueue(second, {"registry_id": "CHE01"}, IrxMessageType.NOTICE, notice)
            page = (await che.inbox(after=2)).json()["items"]
            assert [i["message"]["message_id"] for i in page] == [late]
        page = (await che.inbox(after=3)).json()["items"]
        assert [(i["position"], i["message"]["message_id"]) for i in page] == [(4, early)]
        async with service.db.read() as session:
            rows = (await session.execute(select(irx_message.c.message_id, irx_message.c.id))).all()
        ids = {message_id: row_id for message_id, row_id in rows}
        assert ids[early] < ids[late]  # insert order is the other way round
