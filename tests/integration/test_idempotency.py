"""kit.idempotency on both backends (DESIGN §4): replay, 422 on reuse, 409 in flight, lease takeover.

The "effect" of a keyed request here is an outbox event published in the same transaction as
`Claim.complete`, so counting outbox rows counts how many times the effect committed.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from kit.db import Database
from kit.errors import BadRequest, Conflict, Unprocessable
from kit.idempotency import Claim, IdempotencyStore, StoredAnswer, request_fingerprint
from kit.outbox import Outbox
from services.transactions.models import idempotency_keys, metadata
from services.transactions.models import outbox as outbox_table

CLIENT = "client-a"
BODY = {"from": "GHA-1", "to": "CHE-2", "quantity": 100}
FP = request_fingerprint("POST", "/v1/transfers", BODY)
LEASE = 0.3


@pytest.fixture
def url(make_database: Callable[[str], str]) -> str:
    return make_database("services.transactions")


@pytest.fixture
async def db(url: str) -> AsyncIterator[Database]:
    database = Database(url, pool_size=12, max_overflow=4)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def store(db: Database) -> IdempotencyStore:
    return IdempotencyStore(db, idempotency_keys)


@pytest.fixture
def short_store(db: Database) -> IdempotencyStore:
    return IdempotencyStore(db, idempotency_keys, lease_seconds=LEASE)


@pytest.fixture
def outbox(db: Database) -> Outbox:
    return Outbox(db, "transactions", metadata)


async def _effects(db: Database) -> int:
    async with db.read() as session:
        return (await session.execute(select(func.count()).select_from(outbox_table))).scalar_one()


async def _execute(claim: Claim, outbox: Outbox, status: int = 201, answer: Any = None) -> None:
    """The effect and its stored answer, committed together."""
    async with outbox.db.transaction() as session:
        await outbox.publish(session, "transfer.done", {"by": claim.owner})
        await claim.complete(session, status, answer if answer is not None else {"id": claim.owner})


async def _claim(store: IdempotencyStore, key: str = "key-1", fp: str = FP, client: str = CLIENT) -> Claim:
    claim = await store.claim(client, key, fp)
    assert isinstance(claim, Claim), claim
    return claim


async def test_completed_request_replays_its_answer(store: IdempotencyStore, outbox: Outbox) -> None:
    claim = await _claim(store)
    await _execute(claim, outbox, 201, {"transaction_id": "T-1", "units": [1, 2]})
    for _ in range(2):
        again = await store.claim(CLIENT, "key-1", FP)
        assert again == StoredAnswer(201, {"transaction_id": "T-1", "units": [1, 2]})
    assert await _effects(outbox.db) == 1


@pytest.mark.parametrize("done", [True, False], ids=["done", "in-flight"])
async def test_same_key_other_request_is_422(store: IdempotencyStore, outbox: Outbox, done: bool) -> None:
    claim = await _claim(store)
    if done:
        await _execute(claim, outbox)
    other = request_fingerprint("POST", "/v1/transfers", {**BODY, "quantity": 101})
    with pytest.raises(Unprocessable) as caught:
        await store.claim(CLIENT, "key-1", other)
    assert caught.value.status == 422
    assert caught.value.slug == "idempotency-key-reused"


async def test_claim_in_flight_is_409(store: IdempotencyStore, outbox: Outbox) -> None:
    claim = await _claim(store)
    with pytest.raises(Conflict) as caught:
        await store.claim(CLIENT, "key-1", FP)
    assert caught.value.status == 409
    assert caught.value.slug == "idempotency-key-in-flight"
    assert caught.value.headers.get("Retry-After")
    await _execute(claim, outbox)  # the first attempt is unaffected by the refused retry
    assert isinstance(await store.claim(CLIENT, "key-1", FP), StoredAnswer)


async def test_concurrent_claims_only_one_wins(store: IdempotencyStore) -> None:
    results = await asyncio.gather(
        *(store.claim(CLIENT, "key-1", FP) for _ in range(10)), return_exceptions=True
    )
    claims = [r for r in results if isinstance(r, Claim)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(claims) == 1, results
    assert len(refused) == 9, results


async def test_expired_lease_is_taken_over_and_the_stale_attempt_cannot_commit(
    short_store: IdempotencyStore, outbox: Outbox
) -> None:
    original = await _claim(short_store)
    await asyncio.sleep(LEASE + 0.1)
    retry = await _claim(short_store)  # the original looks dead: the retry takes the key over
    assert retry.owner != original.owner

    with pytest.raises(Conflict) as caught:  # the slow original wakes up and tries to commit
        await _execute(original, outbox, 201, {"by": "original"})
    assert caught.value.slug == "idempotency-key-in-flight"
    assert await _effects(outbox.db) == 0  # its effect rolled back with the failed completion

    await _execute(retry, outbox, 201, {"by": "retry"})
    assert await _effects(outbox.db) == 1
    assert await short_store.claim(CLIENT, "key-1", FP) == StoredAnswer(201, {"by": "retry"})

    with pytest.raises(Conflict):  # and the original cannot overwrite the stored answer afterwards
        await _execute(original, outbox, 201, {"by": "original"})
    assert await _effects(outbox.db) == 1


async def test_expired_lease_without_a_retry_still_lets_the_original_finish(
    short_store: IdempotencyStore, outbox: Outbox
) -> None:
    original = await _claim(short_store)
    await asyncio.sleep(LEASE + 0.1)
    await _execute(original, outbox, 201, {"by": "original"})
    assert await short_store.claim(CLIENT, "key-1", FP) == StoredAnswer(201, {"by": "original"})
    assert await _effects(outbox.db) == 1


async def test_a_live_lease_is_not_taken_over(short_store: IdempotencyStore) -> None:
    await _claim(short_store)
    with pytest.raises(Conflict):
        await short_store.claim(CLIENT, "key-1", FP)


async def test_rolled_back_effect_leaves_no_answer_after_release(
    store: IdempotencyStore, outbox: Outbox
) -> None:
    claim = await _claim(store)
    with pytest.raises(RuntimeError):
        async with outbox.db.transaction() as session:
            await outbox.publish(session, "transfer.done", {})
            await claim.complete(session, 201, {"by": "first"})
            raise RuntimeError("crash before commit")
    assert await _effects(outbox.db) == 0
    with pytest.raises(Conflict):  # still in flight (no answer stored), until released or expired
        await store.claim(CLIENT, "key-1", FP)
    await claim.release()
    again = await _claim(store)  # re-executes
    await _execute(again, outbox, 201, {"by": "second"})
    assert await _effects(outbox.db) == 1
    assert await store.claim(CLIENT, "key-1", FP) == StoredAnswer(201, {"by": "second"})


async def test_rolled_back_effect_leaves_no_answer_after_expiry(
    short_store: IdempotencyStore, outbox: Outbox
) -> None:
    claim = await _claim(short_store)
    with pytest.raises(RuntimeError):
        async with outbox.db.transaction() as session:
            await outbox.publish(session, "transfer.done", {})
            await claim.complete(session, 201, {"by": "first"})
            raise RuntimeError("crash before commit")
    await asyncio.sleep(LEASE + 0.1)
    again = await _claim(short_store)
    await _execute(again, outbox, 201, {"by": "second"})
    assert await short_store.claim(CLIENT, "key-1", FP) == StoredAnswer(201, {"by": "second"})
    assert await _effects(outbox.db) == 1


async def test_fail_stores_a_refusal_that_replays(store: IdempotencyStore, outbox: Outbox) -> None:
    claim = await _claim(store)
    refusal = {"type": "https://a62-registry.org/problems/check-failed", "status": 422, "checks": ["T01"]}
    await claim.fail(422, refusal)
    assert await store.claim(CLIENT, "key-1", FP) == StoredAnswer(422, refusal)
    assert await _effects(outbox.db) == 0
    with pytest.raises(Conflict):  # the key is spent: the same claim cannot complete again
        await _execute(claim, outbox)


async def test_release_frees_the_key(store: IdempotencyStore, outbox: Outbox) -> None:
    claim = await _claim(store)
    await claim.release()
    again = await _claim(store)
    assert again.owner != claim.owner
    with pytest.raises(Conflict):  # the released claim lost the key
        await _execute(claim, outbox)
    await _execute(again, outbox, 200, {"ok": True})
    await claim.release()  # a stale release never frees another attempt's key
    await again.release()  # nor a completed one: the answer stays
    assert await store.claim(CLIENT, "key-1", FP) == StoredAnswer(200, {"ok": True})


async def test_keys_are_scoped_per_client(store: IdempotencyStore, outbox: Outbox) -> None:
    mine = await _claim(store, client="client-a")
    other_body = request_fingerprint("POST", "/v1/transfers", {"something": "else"})
    theirs = await _claim(store, fp=other_body, client="client-b")  # same key, other client: no 422/409
    await _execute(mine, outbox, 201, {"who": "a"})
    await _execute(theirs, outbox, 201, {"who": "b"})
    assert await store.claim("client-a", "key-1", FP) == StoredAnswer(201, {"who": "a"})
    assert await store.claim("client-b", "key-1", other_body) == StoredAnswer(201, {"who": "b"})
    assert await _effects(outbox.db) == 2


async def test_claim_checks_the_key(store: IdempotencyStore) -> None:
    with pytest.raises(BadRequest) as caught:
        await store.claim(CLIENT, None, FP)
    assert (caught.value.status, caught.value.slug) == (400, "idempotency-key-missing")
    with pytest.raises(BadRequest) as caught:
        await store.claim(CLIENT, "not a key", FP)
    assert (caught.value.status, caught.value.slug) == (400, "idempotency-key-invalid")


@pytest.mark.parametrize(
    "key",
    ["", "has space", "x" * 256, "caf\u00e9", "tab\there", "new\nline", "trailing-newline\n", "\x7f"],
    ids=["empty", "space", "too-long", "non-ascii", "tab", "newline", "trailing-newline", "del"],
)
def test_invalid_key_is_400(key: str) -> None:
    with pytest.raises(BadRequest) as caught:
        IdempotencyStore.require_key(key)
    assert caught.value.slug == "idempotency-key-invalid"


@pytest.mark.parametrize("key", ["x" * 255, "!", "~", "3f2b8c1e-6a4d-4e7b-9c0a-5d1e2f3a4b5c", "a:b/c?d=e"])
def test_valid_keys_are_accepted(key: str) -> None:
    assert IdempotencyStore.require_key(key) == key


# ---- request_fingerprint ---------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
_bodies = st.dictionaries(st.text(max_size=6), _json, min_size=1, max_size=5)


def _reordered(value: Any) -> Any:
    """The same JSON value with every object's keys inserted in reverse order."""
    if isinstance(value, dict):
        return {key: _reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(item) for item in value]
    return value


@settings(max_examples=25, deadline=None)
@given(body=_bodies)
def test_fingerprint_ignores_key_order(body: dict[str, Any]) -> None:
    reordered = _reordered(body)
    assert list(reordered) == list(reversed(list(body)))
    assert request_fingerprint("POST", "/v1/x", body) == request_fingerprint("POST", "/v1/x", reordered)


@settings(max_examples=25, deadline=None)
@given(body=_bodies, data=st.data())
def test_fingerprint_changes_with_any_value(body: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(body)))
    new = data.draw(_json.filter(lambda value: value != body[key] or type(value) is not type(body[key])))
    changed = {**body, key: new}
    assert request_fingerprint("POST", "/v1/x", body) != request_fingerprint("POST", "/v1/x", changed)


@settings(max_examples=25, deadline=None)
@given(body=_bodies, extra=st.text(max_size=6), value=_json)
def test_fingerprint_changes_with_an_added_field(body: dict[str, Any], extra: str, value: Any) -> None:
    if extra in body:
        return
    grown = {**body, extra: value}
    assert request_fingerprint("POST", "/v1/x", body) != request_fingerprint("POST", "/v1/x", grown)


def test_fingerprint_covers_method_and_path() -> None:
    assert request_fingerprint("post", "/v1/a", BODY) == request_fingerprint("POST", "/v1/a", BODY)
    assert request_fingerprint("POST", "/v1/a", BODY) != request_fingerprint("POST", "/v1/b", BODY)
    assert request_fingerprint("POST", "/v1/a", BODY) != request_fingerprint("PUT", "/v1/a", BODY)
    assert request_fingerprint("POST", "/v1/a", {"q": 1}) != request_fingerprint("POST", "/v1/a", {"q": "1"})


# ---- claims inside the effect's own write transaction (`claim_within`, the ledger's hot path) -------------


async def _execute_within(
    store: IdempotencyStore, outbox: Outbox, *, key: str = "key-w", fp: str = FP, hold: float = 0.0
) -> Claim | StoredAnswer:
    """Claim, publish the effect and store the answer in one transaction (optionally held open a while)."""
    async with store.db.connect() as connection:
        claim = await store.claim_within(connection, CLIENT, key, fp)
        if isinstance(claim, StoredAnswer):
            return claim
        await outbox.publish(connection, "transfer.done", {"by": claim.owner})
        await asyncio.sleep(hold)
        await claim.complete(connection, 201, {"id": claim.owner})
        return claim


async def test_a_claim_within_replays_and_refuses_another_request(
    store: IdempotencyStore, outbox: Outbox
) -> None:
    first = await _execute_within(store, outbox)
    assert isinstance(first, Claim) and first.within
    for _ in range(2):
        assert await _execute_within(store, outbox) == StoredAnswer(201, {"id": first.owner})
    other = request_fingerprint("POST", "/v1/transfers", {**BODY, "quantity": 101})
    with pytest.raises(Unprocessable):
        await _execute_within(store, outbox, fp=other)
    assert await _effects(outbox.db) == 1


async def test_a_claim_within_rolls_back_with_its_effect(store: IdempotencyStore, outbox: Outbox) -> None:
    with pytest.raises(RuntimeError):
        async with store.db.connect() as connection:
            claim = await store.claim_within(connection, CLIENT, "key-r", FP)
            assert isinstance(claim, Claim)
            await outbox.publish(connection, "transfer.done", {"by": claim.owner})
            raise RuntimeError("crash before commit")
    assert await _effects(outbox.db) == 0
    again = await _execute_within(store, outbox, key="key-r")  # nothing to release: the retry runs afresh
    assert isinstance(again, Claim)
    assert await _effects(outbox.db) == 1


async def test_concurrent_claims_within_commit_the_effect_once(
    store: IdempotencyStore, outbox: Outbox, backend: str
) -> None:
    results = await asyncio.gather(
        *(_execute_within(store, outbox, key="key-c", hold=0.05) for _ in range(8)), return_exceptions=True
    )
    claims = [r for r in results if isinstance(r, Claim)]
    replays = [r for r in results if isinstance(r, StoredAnswer)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(claims) == 1, results
    assert len(claims) + len(replays) + len(refused) == 8, results
    assert all(r.status == 409 and r.headers.get("Retry-After") for r in refused)
    assert all(r == StoredAnswer(201, {"id": claims[0].owner}) for r in replays)
    if backend == "postgres":  # the advisory lock answers 409 at once rather than queueing the retry
        assert refused, results
    assert await _effects(outbox.db) == 1


async def test_a_claim_within_treats_a_live_claim_of_the_other_kind_as_in_flight(
    store: IdempotencyStore, outbox: Outbox
) -> None:
    legacy = await _claim(store, key="key-l")
    with pytest.raises(Conflict):
        await _execute_within(store, outbox, key="key-l")
    await _execute(legacy, outbox)
    assert isinstance(await _execute_within(store, outbox, key="key-l"), StoredAnswer)
