"""The per-Party event feed `GET /v1/events` (INTERREGISTRY §9) end to end through the gateway, on both
backends: each Party's own view with consecutive positions, the isolation matrix (no Party ever sees
another's feed or its confidential fields), Secretariat and auditor views, type filters, byte-identical
replay, and positions that continue across a restart of the service on the same database."""

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from kit.db import Database
from services.reporting.app import create_app
from services.reporting.feed import FeedItem, append
from services.reporting.models import feed_cursors, inbox, party_events
from tests.integration._ars_world import ArsWorld, ars_world
from tests.support.apps import lifespan

GH_DESIGNATIONS = [
    {"field": "actions.authorization_id", "basis": "the authorization is not yet published"},
    {"field": "actions.using_cancelling_entity_id", "basis": "the airline's privacy"},
]
ENTITY = {
    "entity_id": "GH-AIRLINE-1",
    "name": "Ghana Airways",
    "country_of_incorporation": "GHA",
    "identification_number": "GH-123",
    "ca_id": "CA0012",
    "date_of_authorization": "2024-05-01",
}


@pytest.fixture
async def ars(make_database: Callable[[str], str], tmp_path: Path) -> AsyncIterator[ArsWorld]:
    async with ars_world(make_database, tmp_path) as built:
        await built.add_party("GHA")
        await built.add_party("CHE")
        await built.add_party("SWE")
        await built.world.add_ca("CA0012", ["GHA", "CHE"])
        yield built


async def designate(ars: ArsWorld, party: str, designations: list[dict[str, str]]) -> None:
    admin = ars.parties[party].actors.admin
    section = await ars.gateway.get(f"/v1/party-sections/{party}", headers=admin)
    answer = await ars.gateway.patch(
        f"/v1/party-sections/{party}/settings",
        json={"confidential_fields": designations},
        headers={**admin, "If-Match": section.headers["etag"]},
    )
    assert answer.status_code == 200, answer.text
    # Designations and transactions come from different producers, whose order the read model does not
    # relate (§9): have the designation applied before the transactions it should cover.
    await ars.world.suite.services["party_sections"].state.outbox.relay()
    await ars.world.suite.services["reporting"].state.consumer.catch_up()


async def worked_example(ars: ArsWorld) -> dict[str, str]:
    """Domain §5.8: GH-AUTH-7; 1–400 first transferred to CHE, 401–500 used for CORSIA by GH-AIRLINE-1."""
    gha, che = ars.parties["GHA"], ars.parties["CHE"]
    answer = await ars.gateway.post("/v1/party-sections/GHA/entities", json=ENTITY, headers=gha.actors.admin)
    assert answer.status_code == 201, answer.text
    await ars.issue("GHA", 1000)
    await ars.authorize("GHA", "GH-AUTH-7", authorized_entities=["GH-AIRLINE-1"])
    await ars.apply("GHA", "GH-AUTH-7", 1000)
    moved = await ars.first_transfer(
        "GHA", {"authorization_id": "GH-AUTH-7", "quantity": 400, "to_account": che.holding}
    )
    used = await ars.first_transfer(
        "GHA",
        {
            "authorization_id": "GH-AUTH-7",
            "quantity": 100,
            "use": {"purpose": "CORSIA", "using_entity_id": "GH-AIRLINE-1"},
        },
    )
    await ars.world.suite.services["reporting"].state.consumer.catch_up()
    return {"first_transfer": moved.json()["transaction_id"], "use": used.json()["transaction_id"]}


async def client_headers(ars: ArsWorld, party: str | None, roles: list[str], **extra: Any) -> dict[str, str]:
    suite = ars.world.suite
    answer = await suite.client.post(
        "/v1/clients",
        json={"name": f"{party} {'+'.join(roles)}", "party": party, "roles": roles, **extra},
        headers=await suite.auth(),
    )
    assert answer.status_code == 201, answer.text
    made = answer.json()
    return {"Authorization": f"Bearer {await suite.token(made['client_id'], made['client_secret'])}"}


async def read(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    answer = await client.get("/v1/events", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer, answer.json()["items"]


async def whole_feed(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await client.get(
            "/v1/events", params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def assert_consecutive(items: list[dict[str, Any]], party: str) -> None:
    assert [item["position"] for item in items] == list(range(1, len(items) + 1))
    assert {item["party"] for item in items} == {party}
    assert len({item["event_id"] for item in items}) == len(items)


async def test_each_party_reads_only_its_own_view_with_consecutive_positions(ars: ArsWorld) -> None:
    await designate(ars, "GHA", GH_DESIGNATIONS)
    done = await worked_example(ars)
    gw = ars.gateway
    gha, che, swe = (ars.parties[p].actors for p in ("GHA", "CHE", "SWE"))

    ghana = await whole_feed(gw, gha.viewer)
    swiss = await whole_feed(gw, che.viewer)
    swedish = await whole_feed(gw, swe.viewer)
    for items, party in ((ghana, "GHA"), (swiss, "CHE"), (swedish, "SWE")):
        assert_consecutive(items, party)
        for item in items:
            assert list(item) == [
                "position",
                "event_id",
                "type",
                "version",
                "occurred_at",
                "party",
                "source",
                "data",
            ]

    kinds = [item["type"] for item in ghana]
    assert kinds[:2] == ["section.status_changed", "section.status_changed"]
    assert [i["data"]["status"] for i in ghana[:2]] == ["requested", "open"]
    assert kinds.count("account.opened") == 7
    assert kinds.count("authorization.created") == 1
    assert kinds.count("first_transfer.completed") == 2
    transactions = {i["data"]["transaction_id"]: i for i in ghana if i["type"] == "transaction.completed"}
    assert set(transactions) == {done["first_transfer"], done["use"]}

    # Ghana's own view: its AEF side, its authorization and its airline (its own confidential data).
    first = transactions[done["first_transfer"]]["data"]
    assert [(a["action_type"], a["action_subtype"], a["acquiring_party_id"]) for a in first["actions"]] == [
        ("First transfer", "First transfer to another Party", "CHE")
    ]
    assert {b["authorization_id"] for b in first["blocks"]} == {"GH-AUTH-7"}
    assert first["to_account"] is None  # Switzerland's account is not Ghana's to see
    use = transactions[done["use"]]["data"]
    assert use["actions"][0]["using_cancelling_entity_id"] == "GH-AIRLINE-1"
    assert use["using_entity_id"] == "GH-AIRLINE-1"

    # Switzerland's view of the same transfer: its acquisition, its account, none of Ghana's
    # confidential fields, and nothing of Ghana's use.
    [acquired] = [i for i in swiss if i["type"] == "transaction.completed"]
    data = acquired["data"]
    assert data["transaction_id"] == done["first_transfer"]
    assert [(a["action_type"], a["transferring_party_id"]) for a in data["actions"]] == [
        ("Acquisition", "GHA")
    ]
    assert data["to_account"] == che.holding
    assert data["blocks"] and all("authorization_id" not in b for b in data["blocks"])
    assert sum(b["quantity"] for b in data["blocks"]) == 400
    swiss_text = json.dumps(swiss)
    for secret in ("GH-AUTH-7", "GH-AIRLINE-1", done["use"], *gha.accounts.values()):
        assert secret not in swiss_text, secret
    assert acquired["event_id"] != transactions[done["first_transfer"]]["event_id"]
    assert [i["type"] for i in swiss].count("authorization.created") == 0

    # Sweden took part in nothing: its section and accounts only.
    assert {i["type"] for i in swedish} == {"section.status_changed", "account.opened"}
    swedish_text = json.dumps(swedish)
    for other in (done["first_transfer"], done["use"], "GHA", "CHE", *gha.accounts.values()):
        assert other not in swedish_text

    # The matrix: a Party principal never reads another Party's feed, whatever the query says.
    for actors in (gha, che, swe):
        for party in ("GHA", "CHE", "SWE"):
            answer = await gw.get("/v1/events", params={"party": party}, headers=actors.viewer)
            if party == actors.party:
                assert answer.status_code == 200
                assert answer.json()["items"][0]["party"] == party
            else:
                assert answer.status_code == 403, (actors.party, party)


async def test_secretariat_auditor_and_registry_views(ars: ArsWorld) -> None:
    await worked_example(ars)
    gw = ars.gateway
    gha = ars.parties["GHA"].actors
    own = await gw.get("/v1/events", params={"limit": 500}, headers=gha.viewer)
    admin, auditor = ars.admin, await client_headers(ars, None, ["auditor"])
    for headers in (admin, auditor):
        assert (await gw.get("/v1/events", headers=headers)).status_code == 400  # which Party?
        seen = await gw.get("/v1/events", params={"party": "GHA", "limit": 500}, headers=headers)
        assert seen.status_code == 200 and seen.content == own.content
    # A Party's auditor and its registry client read their own Party's feed, and only it.
    party_auditor = await client_headers(ars, "GHA", ["auditor"])
    registry = await client_headers(ars, "GHA", ["registry"], registry_id="GHA02")
    for headers in (party_auditor, registry):
        answer = await gw.get("/v1/events", params={"limit": 500}, headers=headers)
        assert answer.status_code == 200 and answer.content == own.content
        assert (await gw.get("/v1/events", params={"party": "CHE"}, headers=headers)).status_code == 403
    assert (await gw.get("/v1/events")).status_code == 401


async def test_replay_is_byte_identical_and_filters_select_types(ars: ArsWorld) -> None:
    await worked_example(ars)
    gw, viewer = ars.gateway, ars.parties["GHA"].actors.viewer
    first, items = await read(gw, viewer, after=0, limit=500)
    assert first.json()["next_cursor"] is None
    again, _ = await read(gw, viewer, after=0, limit=500)
    assert again.content == first.content

    # Paging gives the same items, byte for byte, as one page; `after` starts past a position.
    paged: list[bytes] = []
    after = 0
    while True:
        page, chunk = await read(gw, viewer, after=after, limit=4)
        raw = json.loads(page.content)
        paged.extend(
            json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() for item in raw["items"]
        )
        if raw["next_cursor"] is None:
            break
        assert raw["next_cursor"] == str(chunk[-1]["position"])
        after = chunk[-1]["position"]
    whole = [json.dumps(i, separators=(",", ":"), ensure_ascii=False).encode() for i in items]
    assert paged == whole
    assert b",".join(whole) in first.content  # the stored bytes, served as is
    _, tail = await read(gw, viewer, after=len(items) - 2)
    assert [i["position"] for i in tail] == [len(items) - 1, len(items)]
    _, none = await read(gw, viewer, after=len(items))
    assert none == []

    _, completed = await read(gw, viewer, type="transaction.completed", limit=500)
    assert [i["type"] for i in completed] == ["transaction.completed"] * 2
    _, families = await read(gw, viewer, types="account.*,authorization.created", limit=500)
    assert {i["type"] for i in families} == {"account.opened", "authorization.created"}
    assert [i["position"] for i in families] == sorted(i["position"] for i in families)
    bad = await gw.get("/v1/events", params={"type": "nope"}, headers=viewer)
    assert bad.status_code == 400


async def test_a_replayed_or_rebuilt_upstream_never_publishes_twice(ars: ArsWorld) -> None:
    """A page applied again, or the read model's cursors and inbox reset (a rebuild), appends nothing; a
    submission is announced once."""
    await worked_example(ars)
    gha = ars.parties["GHA"].actors
    submitted = await ars.gateway.post("/v1/reports/aef/GHA/2024/submissions", headers=gha.admin)
    assert submitted.status_code == 201, submitted.text
    reporting = ars.world.suite.services["reporting"]
    before, items = await read(ars.gateway, gha.viewer, limit=500)
    [announced] = [i for i in items if i["type"] == "aef.submission.created"]
    assert announced["position"] == items[-1]["position"] and announced["source"] == "reporting"
    assert (announced["data"]["year"], announced["data"]["version"]) == (2024, "1.0")
    frozen = (await ars.gateway.get("/v1/reports/aef/GHA/2024/submissions/1.0", headers=gha.viewer)).content
    assert announced["data"]["size"] == len(frozen)
    assert announced["data"]["sha256"] == hashlib.sha256(frozen).hexdigest()
    async with reporting.state.db.transaction() as session:
        await session.execute(delete(inbox))
        await session.execute(delete(feed_cursors))
    await reporting.state.consumer.catch_up()
    after, _ = await read(ars.gateway, ars.parties["GHA"].actors.viewer, limit=500)
    assert after.content == before.content


async def test_positions_continue_across_a_restart(ars: ArsWorld) -> None:
    gw, che = ars.gateway, ars.parties["CHE"]
    await worked_example(ars)
    _, before = await read(gw, che.actors.viewer, limit=500)
    old = ars.world.suite.services["reporting"]
    await old.state.consumer.stop()
    await old.state.webhooks.stop()
    settings = old.state.settings.model_copy(update={"consumer_enabled": False, "webhooks_enabled": False})
    # A new process on the same database: a fresh app, engine and consumer.
    restarted = create_app(
        settings, token_verifier=old.state.token_verifier, peer_transports=old.state.peers.transports
    )
    async with lifespan(restarted):
        answer = await gw.post(f"/v1/accounts/{che.holding}/block", json={}, headers=che.actors.admin)
        assert answer.status_code == 200, answer.text
        await restarted.state.consumer.catch_up()
        transport = httpx.ASGITransport(app=restarted)
        async with httpx.AsyncClient(transport=transport, base_url="http://reporting") as direct:
            _, after = await read(direct, che.actors.viewer, limit=500)
    assert after[: len(before)] == before
    assert [i["position"] for i in after] == list(range(1, len(before) + 2))
    assert after[-1]["type"] == "account.blocked"
    assert after[-1]["data"]["account_id"] == che.holding


async def test_concurrent_appenders_commit_positions_in_order(make_database: Callable[[str], str]) -> None:
    """DESIGN §5 on the feed itself: writers appending to one Party at once (the consumer, the webhook
    worker, a submission's announcement) get consecutive positions, and a reader polling meanwhile never
    sees a position before every lower one is visible."""
    db = Database(make_database("services.reporting"))
    done = asyncio.Event()
    violations: list[list[int]] = []

    def item(party: str) -> FeedItem:
        return FeedItem(party, "webhook.disabled", str(uuid.uuid4()), datetime.now(UTC), "reporting", {})

    async def writer(n: int) -> None:
        async with db.transaction() as session:
            await append(session, [item("GHA"), item("CHE")] if n % 3 == 0 else [item("GHA")])
            await asyncio.sleep(0.005 * (n % 4))  # commit late: a sequence would let a later one pass

    async def reader() -> None:
        while not done.is_set():
            async with db.read() as session:
                seen = list(
                    (
                        await session.execute(
                            select(party_events.c.position)
                            .where(party_events.c.party == "GHA")
                            .order_by(party_events.c.position)
                        )
                    ).scalars()
                )
            if seen != list(range(1, len(seen) + 1)):
                violations.append(seen)
            await asyncio.sleep(0)

    try:
        watching = asyncio.create_task(reader())
        await asyncio.gather(*(writer(n) for n in range(30)))
        done.set()
        await watching
        async with db.read() as session:
            rows = (await session.execute(select(party_events.c.party, party_events.c.position))).all()
    finally:
        await db.dispose()
    assert violations == []
    assert sorted(p for party, p in rows if party == "GHA") == list(range(1, 31))
    assert sorted(p for party, p in rows if party == "CHE") == list(range(1, 11))


async def test_a_transaction_awaiting_approval_is_told_to_the_deciding_party_only(ars: ArsWorld) -> None:
    """Four-eyes holds Switzerland's transfer to Ghana: Switzerland's feed says so (its own account, the
    deadline), so its approvers can be called; Ghana hears nothing until the transfer completes."""
    await worked_example(ars)
    gha, che = ars.parties["GHA"].actors, ars.parties["CHE"].actors
    await ars.world.set_four_eyes(che, True)
    body = {"type": "transfer", "from_account": che.holding, "to_account": gha.holding, "quantity": 30}
    proposed = await ars.world.transact(che, body)
    assert proposed.status_code == 201 and proposed.json()["status"] == "awaiting_approval", proposed.text
    tx_id = proposed.json()["transaction_id"]
    await ars.world.suite.services["transactions"].state.outbox.relay()
    await ars.world.suite.services["reporting"].state.consumer.catch_up()

    [waiting] = [
        i for i in await whole_feed(ars.gateway, che.viewer) if i["type"] == "transaction.awaiting_approval"
    ]
    assert waiting["data"] == {
        "transaction_id": tx_id,
        "from_party": "CHE",
        "to_party": "GHA",
        "from_registry_id": che.registry_id,
        "to_registry_id": gha.registry_id,
        "quantity": 30,
        "initiated_by": che.initiator_id,
        "expires_at": waiting["data"]["expires_at"],
        "transaction_type": "transfer",
        "from_account": che.holding,
        "to_account": None,  # Ghana's account is not Switzerland's to see
    }
    assert datetime.fromisoformat(waiting["data"]["expires_at"]) > datetime.now(UTC)
    ghana = json.dumps(await whole_feed(ars.gateway, gha.viewer))
    assert "transaction.awaiting_approval" not in ghana and tx_id not in ghana

    approved = await ars.gateway.post(
        f"/v1/transactions/{tx_id}/approve", headers={**che.approver, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert approved.status_code == 200 and approved.json()["status"] == "completed", approved.text
    await ars.world.suite.services["transactions"].state.outbox.relay()
    await ars.world.suite.services["reporting"].state.consumer.catch_up()
    ghana_items = await whole_feed(ars.gateway, gha.viewer)
    assert tx_id in {
        i["data"].get("transaction_id") for i in ghana_items if i["type"] == "transaction.completed"
    }
