"""The registry→IR acceptance pipeline (INTERREGISTRY §3) through the gateway, on both backends: every
refusal code of the acceptance order with nothing recorded and no seq consumed, replays answered from the
message log, the seq table, signing policies, and `hello`."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from kit.jws import sign
from kit.jwt import SigningKey
from services.transactions.interregistry.models import irx_message, registry, registry_key
from tests.integration._interregistry_world import (
    Registry,
    World,
    future,
    hello_body,
    interregistry_world,
    past,
)

pytestmark = pytest.mark.xdist_group("interregistry")


@pytest.fixture
async def world(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    async with interregistry_world(make_database, tmp_path, monkeypatch) as made:
        yield made


@pytest.fixture
async def che(world: World) -> Registry:
    return await world.connect("CHE01")


def _code(answer: object) -> int:
    body = answer.json()  # type: ignore[attr-defined]
    assert body["type"].endswith("/message-refused"), body
    return int(body["code"])


async def _refused(world: World, registry: Registry, send: Callable, code: int, status: int) -> dict:
    """Send, expect the refusal, and check that nothing was recorded and no seq consumed."""
    before = await world.counts(registry.registry_id)
    answer = await send()
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert _code(answer) == code, answer.text
    assert await world.counts(registry.registry_id) == before
    return answer.json()


async def test_an_accepted_message_is_stored_with_its_answer_and_key(world: World, che: Registry) -> None:
    document = che.envelope("inbox.ack", {"up_to": 0}, seq=1)
    answer = await che.post("inbox/ack", document)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"acked_position": 0}
    db = world.suite.services["transactions"].state.db
    async with db.read() as session:
        row = (
            (await session.execute(select(irx_message).where(irx_message.c.direction == "registry_to_ir")))
            .mappings()
            .one()
        )
        key = (await session.execute(select(registry_key))).mappings().one()
    assert row["direction"] == "registry_to_ir" and row["seq"] == 1 and row["type"] == "inbox.ack"
    assert row["envelope"] == document and row["message_id"] == document["message_id"]
    assert row["verification"] == "verified" and row["kid"] == "che01-2026-01"
    assert row["response_status"] == 200 and row["response_body"] == {"acked_position": 0}
    assert row["key_thumbprint"] == key["thumbprint"] and key["kid"] == "che01-2026-01"
    assert await world.counts("CHE01") == (1 + 2, 1)  # the message plus the two status-change inbox messages


async def test_sender_refusals_1004(world: World, che: Registry) -> None:
    viewer = await world.client_headers(party="CHE", roles=["viewer"])
    document = che.envelope("inbox.ack", {"up_to": 0})
    await _refused(world, che, lambda: che.post("inbox/ack", document, headers=viewer), 1004, 403)
    admin = lambda: che.post("inbox/ack", che.envelope("inbox.ack", {"up_to": 0}), headers=world.admin)  # noqa: E731
    await _refused(world, che, admin, 1004, 403)
    nor = await world.connect("NOR01")
    as_other = che.envelope("inbox.ack", {"up_to": 0})
    await _refused(world, che, lambda: nor.post("inbox/ack", as_other, key=che.key), 1004, 403)
    # A registry client whose registry has no record.
    ghost = await world.token_headers(await world.new_registry_client("DEU01"))
    ghost_doc = che.envelope("hello", hello_body(), **{"from": "DEU01"})
    await _refused(world, che, lambda: che.post("hello", ghost_doc, headers=ghost), 1004, 403)


async def test_status_refusal_3001(world: World) -> None:
    gone = await world.connect("CHE01", status="disconnected")
    body = await _refused(world, gone, gone.hello, 3001, 403)
    assert body["registry_status"] == "disconnected"
    suspended = await world.connect("NOR01", status="suspended")
    assert (await suspended.hello()).status_code == 200  # suspension stops new transfers only
    assert (await suspended.ack(0)).status_code == 200


async def test_envelope_refusals(world: World, che: Registry) -> None:
    cases = [
        (che.envelope("inbox.ack", {"up_to": 0}, version="2.0"), 1001, 400),
        (che.envelope("inbox.ack", {"up_to": 0}, version="1.9"), 1002, 400),
        (che.envelope("inbox.ack", {"up_to": 0}, extra="field"), 1003, 422),
        (che.envelope("inbox.ack", {"up_to": 0, "more": 1}), 1003, 422),
        (che.envelope("inbox.ack", {"up_to": "1"}), 1003, 422),
        (che.envelope("hello", hello_body()), 1003, 422),  # a hello POSTed to the ack endpoint
        (che.envelope("inbox.ack", {"up_to": 0}, env="production"), 1011, 400),
    ]
    for document, code, status in cases:
        await _refused(world, che, lambda d=document: che.post("inbox/ack", d), code, status)
    good = che.envelope("inbox.ack", {"up_to": 0})
    await _refused(
        world, che, lambda: che.post("inbox/ack", good, idempotency_key=str(uuid.uuid4())), 1003, 422
    )
    no_key = lambda: che.post("inbox/ack", good, headers={"Idempotency-Key": ""})  # noqa: E731
    await _refused(world, che, no_key, 1003, 422)
    raw = {**che.headers, "Idempotency-Key": good["message_id"], "Content-Type": "application/json"}
    not_json = lambda: world.gateway.post("/v1/interregistry/inbox/ack", content=b"{nope", headers=raw)  # noqa: E731
    await _refused(world, che, not_json, 1003, 422)
    duplicate = b'{"up_to": 0, "up_to": 0}'
    dup = lambda: world.gateway.post("/v1/interregistry/inbox/ack", content=duplicate, headers=raw)  # noqa: E731
    await _refused(world, che, dup, 1003, 422)


def _refusals(code: str) -> float:
    return REGISTRY.get_sample_value("irx_refusals_total", {"code": code}) or 0.0


async def test_signature_refusals(world: World, che: Registry) -> None:
    document = che.envelope("inbox.ack", {"up_to": 0})
    counted = _refusals("1005")
    await _refused(world, che, lambda: che.post("inbox/ack", document, signed=False), 1005, 401)
    assert _refusals("1005") == counted + 1  # not stored, but counted for operators and the kit's hygiene
    other_key = SigningKey.generate().with_kid("che01-2026-01")  # same kid, not the registered key
    await _refused(world, che, lambda: che.post("inbox/ack", document, key=other_key), 1006, 401)
    unknown = SigningKey.generate().with_kid("che01-unknown")
    await _refused(world, che, lambda: che.post("inbox/ack", document, key=unknown), 1006, 401)
    tampered_signature = sign(document, che.key)
    tampered = {**document, "body": {"up_to": 1}}
    await _refused(
        world, che, lambda: che.post("inbox/ack", tampered, signature=tampered_signature), 1006, 401
    )
    await _refused(world, che, lambda: che.post("inbox/ack", document, signature="not-a-jws"), 1006, 401)
    # hello may go unsigned, but a bad signature on it is refused all the same.
    assert (await che.hello(signed=False)).status_code == 200
    await _refused(world, che, lambda: che.hello(key=unknown), 1006, 401)
    assert (await che.post("inbox/ack", document)).status_code == 200


async def test_signing_optional_in_the_sandbox(world: World) -> None:
    loose = await world.connect("NOR01", signing="optional")
    answer = await loose.ack(0, signed=False)
    assert answer.status_code == 200, answer.text
    db = world.suite.services["transactions"].state.db
    async with db.read() as session:
        stored = (
            await session.execute(
                select(irx_message.c.verification, irx_message.c.signature).where(irx_message.c.seq == 1)
            )
        ).one()
    assert stored == ("unsigned", None)
    # A signature sent is verified even when optional.
    bad = SigningKey.generate().with_kid("nor01-2026-01")
    await _refused(world, loose, lambda: loose.ack(0, key=bad), 1006, 401)


async def test_keys_from_the_jwks_url(world: World) -> None:
    key = SigningKey.generate().with_kid("swe-1")
    rotated = SigningKey.generate().with_kid("swe-2")
    published = {"keys": [key.public_jwk]}
    fetches: list[str] = []

    def jwks(request: httpx.Request) -> httpx.Response:
        fetches.append(str(request.url))
        return httpx.Response(200, json=published)

    world.service.jwks_transport = httpx.MockTransport(jwks)
    world.service.jwks_refetch_seconds = 0.0
    swe = await world.connect("SWE01", jwks=None, jwks_url="http://127.0.0.1:1/jwks.json")
    swe.key = key
    assert (await swe.ack(0)).status_code == 200
    published["keys"].append(rotated.public_jwk)  # rotation: the new kid is fetched once, then accepted
    swe.key = rotated
    assert (await swe.ack(0)).status_code == 200
    assert fetches == ["http://127.0.0.1:1/jwks.json"] * 2


async def test_replay_returns_the_stored_answer(world: World, che: Registry) -> None:
    document = che.envelope("inbox.ack", {"up_to": 1})
    first = await che.post("inbox/ack", document)
    assert first.status_code == 200 and first.json() == {"acked_position": 1}
    assert "idempotent-replayed" not in first.headers
    after_first = await world.counts("CHE01")
    again = await che.post("inbox/ack", document)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await world.counts("CHE01") == after_first
    # Even a day later (a new message that old is refused 1010), and even after higher seqs.
    assert (await che.ack(2)).status_code == 200
    later = datetime.now(UTC) + timedelta(hours=25)
    world.service.clock = lambda: later
    replay = await che.post("inbox/ack", document)
    assert replay.status_code == 200 and replay.json() == {"acked_position": 1}
    fresh = che.envelope("inbox.ack", {"up_to": 2}, sent_at=document["sent_at"])
    await _refused(world, che, lambda: che.post("inbox/ack", fresh), 1010, 400)
    # A refusal that was not recorded is processed afresh on retry: the same message_id works later.
    world.service.clock = lambda: datetime.now(UTC)
    beyond = che.envelope("inbox.ack", {"up_to": 99})
    assert (await che.post("inbox/ack", beyond)).status_code == 422
    assert (await che.post("inbox/ack", beyond)).status_code == 422


async def test_message_id_reused_with_another_body_1008(world: World, che: Registry) -> None:
    document = che.envelope("inbox.ack", {"up_to": 0})
    assert (await che.post("inbox/ack", document)).status_code == 200
    other = {**document, "body": {"up_to": 1}, "seq": che.next_seq()}
    await _refused(world, che, lambda: che.post("inbox/ack", other), 1008, 422)
    # Another registry may use the same message id: ids are per sender.
    nor = await world.connect("NOR01")
    theirs = nor.envelope("inbox.ack", {"up_to": 0}, message_id=document["message_id"])
    answer = await nor.post("inbox/ack", theirs)
    assert answer.status_code == 200 and "idempotent-replayed" not in answer.headers


async def test_sent_at_limits(world: World, che: Registry) -> None:
    ahead = che.envelope("inbox.ack", {"up_to": 0}, sent_at=future(600))
    await _refused(world, che, lambda: che.post("inbox/ack", ahead), 1009, 400)
    old = che.envelope("inbox.ack", {"up_to": 0}, sent_at=past(25 * 3600))
    await _refused(world, che, lambda: che.post("inbox/ack", old), 1010, 400)
    slightly = che.envelope("inbox.ack", {"up_to": 0}, sent_at=future(200))
    assert (await che.post("inbox/ack", slightly)).status_code == 200


async def test_seq_table(world: World, che: Registry) -> None:
    """seq must grow (gaps allowed); stale ones are 1007 with last_seq; a replay answers whatever the seq."""
    first = che.envelope("inbox.ack", {"up_to": 0}, seq=5)
    steps = [(5, 200), (3, 409), (5, 409), (6, 200), (10, 200), (7, 409)]
    for seq, status in steps:
        document = first if seq == 5 and status == 200 else che.envelope("inbox.ack", {"up_to": 0}, seq=seq)
        if status == 200:
            answer = await che.post("inbox/ack", document)
            assert answer.status_code == 200, (seq, answer.text)
        else:
            last = (await world.counts("CHE01"))[1]
            body = await _refused(world, che, lambda d=document: che.post("inbox/ack", d), 1007, 409)
            assert body["last_seq"] == last
    assert (await world.counts("CHE01"))[1] == 10
    replay = await che.post("inbox/ack", first)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    db = world.suite.services["transactions"].state.db
    async with db.read() as session:
        seqs = (
            (
                await session.execute(
                    select(irx_message.c.seq)
                    .where(irx_message.c.direction == "registry_to_ir")
                    .order_by(irx_message.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert seqs == [5, 6, 10]


async def test_hello(world: World, che: Registry) -> None:
    assert (await che.ack(2)).status_code == 200
    answer = await che.hello()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["version"] == "1.0" and body["registry_status"] == "active"
    assert body["last_seq_received"] == 1
    assert body["inbox"] == {"last_position": 2, "acked_position": 2}
    assert abs(body["skew_ms"]) < 5000
    assert abs(datetime.fromisoformat(body["ir_time"]) - datetime.now(UTC)) < timedelta(seconds=5)
    # hello consumes no seq: the next message continues from 2.
    assert (await che.ack(2)).status_code == 200
    # Negotiation: the highest common version; none in common is 1001 and records nothing.
    newer = che.envelope("hello", hello_body(["1.0", "1.3", "2.0"]))
    assert (await che.post("hello", newer)).json()["version"] == "1.0"
    none = che.envelope("hello", hello_body(["2.0"]))
    await _refused(world, che, lambda: che.post("hello", none), 1001, 400)


async def test_hello_flags_clock_skew(world: World, che: Registry) -> None:
    skewed = che.envelope("hello", hello_body(registry_time=datetime.now(UTC) + timedelta(seconds=90)))
    answer = await che.post("hello", skewed)
    assert answer.status_code == 200
    assert 85_000 < answer.json()["skew_ms"] < 95_000
    record = (await world.gateway.get("/v1/interregistry/registries/CHE01", headers=world.admin)).json()
    assert 85_000 < record["clock_skew_ms"] < 95_000
    db = world.suite.services["transactions"].state.db
    async with db.read() as session:
        flagged = (
            await session.execute(select(registry.c.skew_flagged).where(registry.c.registry_id == "CHE01"))
        ).scalar_one()
    assert flagged is True
    assert (await che.hello()).status_code == 200
    async with db.read() as session:
        flagged = (
            await session.execute(select(registry.c.skew_flagged).where(registry.c.registry_id == "CHE01"))
        ).scalar_one()
    assert flagged is False


async def test_concurrent_copies_and_seq_races(world: World, che: Registry) -> None:
    """Step 7's compare-and-set: copies of one message get one answer; rivals for one seq, one winner."""
    document = che.envelope("inbox.ack", {"up_to": 1}, seq=1)
    copies = await asyncio.gather(*(che.post("inbox/ack", document) for _ in range(6)))
    assert {answer.status_code for answer in copies} == {200}
    assert {answer.text for answer in copies} == {'{"acked_position":1}'}
    rivals = [che.envelope("inbox.ack", {"up_to": 2}, seq=2) for _ in range(6)]
    answers = await asyncio.gather(*(che.post("inbox/ack", rival) for rival in rivals))
    assert sorted(answer.status_code for answer in answers) == [200] + [409] * 5
    assert all(_code(answer) == 1007 for answer in answers if answer.status_code == 409)
    db = world.suite.services["transactions"].state.db
    async with db.read() as session:
        seqs = (
            (
                await session.execute(
                    select(irx_message.c.seq).where(irx_message.c.direction == "registry_to_ir")
                )
            )
            .scalars()
            .all()
        )
    assert sorted(seqs) == [1, 2]
