"""The cases the kit runs against what the IR serves today (INTERREGISTRY §11: 100–104, 116, 117), each with
its §11 pass rule. The kit acts as the registry (its client, its key); every message it sends is one that
changes nothing if the IR wrongly accepts it — an `inbox.ack` of the position already acknowledged, or a
`hello` — so a run never acknowledges an inbox message the registry has not processed, whatever the IR does.
The boundary probes (an ack one past the end) are the exception and say so.
"""

import asyncio
import json
import secrets
import uuid
from typing import Any

from pydantic import ValidationError

from conformance.kit.runner import CaseContext, case
from conformance.kit.session import KitFailure, decode_claims, future
from contracts.interregistry import (
    CODE_CATALOGUE,
    CodeDefinition,
    HelloResponse,
    IrxVersionInfo,
    RegistryRecord,
)
from kit.jws import JwsError, sign, verify
from kit.jwt import KeySet, SigningKey, TokenInvalid, verify_token

__all__: list[str] = []  # the cases register themselves in runner.CASES

_IRX = "/v1/interregistry"


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@case(
    100,
    "OAuth2 token of the registry client",
    mandatory=True,
    rule='token has roles ["registry"], party, registry_id; wrong secret → 401 invalid_client',
)
async def registry_token(context: CaseContext) -> None:
    session, config = context.session, context.config
    issued = await session.token_response()
    if not context.expect(
        "token issued", issued.status_code == 200, f"POST /oauth2/token → {issued.status_code}"
    ):
        return
    token = str(issued.json().get("access_token", ""))
    claims = decode_claims(token)
    context.expect(
        'roles are exactly ["registry"]', claims.get("roles") == ["registry"], f"roles {claims.get('roles')}"
    )
    context.expect("party claim", claims.get("party") == config.party, f"party {claims.get('party')!r}")
    context.expect(
        "registry_id claim",
        claims.get("registry_id") == config.registry_id,
        f"registry_id {claims.get('registry_id')!r}",
    )
    # The claims are only as good as their signature: verify against the gateway's published token keys.
    published = await session.get("/.well-known/jwks.json", authenticated=False)
    if published.status_code != 200:
        context.expect(
            "token signature verifies", False, f"GET /.well-known/jwks.json → {published.status_code}"
        )
    else:
        audience = claims.get("aud")
        try:
            verify_token(
                token,
                KeySet(published.json()),
                issuer=str(claims.get("iss")),
                audience=str(audience[0] if isinstance(audience, list) and audience else audience),
            )
            context.expect("token signature verifies with the gateway JWKS", True)
        except (TokenInvalid, ValueError) as exc:
            context.expect("token signature verifies with the gateway JWKS", False, str(exc))
    wrong = await session.token_response(secret=secrets.token_urlsafe(32))
    context.expect(
        "wrong secret → 401 invalid_client",
        wrong.status_code == 401 and _json(wrong).get("error") == "invalid_client",
        f"{wrong.status_code} {_json(wrong).get('error')!r}",
    )


@case(
    101,
    "hello and version negotiation",
    mandatory=True,
    rule='hello with ["1.0"] negotiates 1.0; a message declaring 2.0 → 1001; 1.9 → 1002',
)
async def versions(context: CaseContext) -> None:
    session = context.session
    answer = await session.hello(["1.0"])
    if not context.expect(
        "hello accepted", answer.status_code == 200, f"{answer.status_code} {answer.text[:200]}"
    ):
        return
    try:
        hello = HelloResponse.model_validate(answer.json())
    except ValidationError as exc:
        context.expect("hello answer has the documented shape", False, str(exc)[:300])
        return
    context.expect("version 1.0 negotiated", hello.version == "1.0", f"version {hello.version}")
    session.last_seq = max(session.last_seq, hello.last_seq_received)
    acked = hello.inbox.acked_position
    await context.refused(
        "a message declaring 2.0 → 1001",
        session.post("inbox/ack", session.noop_ack(acked, version="2.0")),
        code=1001,
        status=400,
    )
    await context.refused(
        "a message declaring 1.9 → 1002",
        session.post("inbox/ack", session.noop_ack(acked, version="1.9")),
        code=1002,
        status=400,
    )


async def _rotation_wait(context: CaseContext) -> float:
    """Seconds from publishing a key to signing with it: `--rotation-wait`, else the IR's own JWKS refetch
    interval (its sandbox settings; the kit cannot know it otherwise) plus a second, else §2.3's minute + 1 s."""
    config = context.config
    if config.rotation_wait_seconds is not None:
        return config.rotation_wait_seconds
    answer = await context.session.get(f"{_IRX}/sandbox/settings", registry_id=config.registry_id)
    interval = _json(answer).get("jwks_refetch_seconds") if answer.status_code == 200 else None
    return float(interval) + 1.0 if isinstance(interval, int | float) else 61.0


async def _driver_rotation(context: CaseContext) -> bool:
    """The registry rotates its own key through its driver (`POST …/rotate-key`, a simulator extra): publish a
    new key, wait out the IR's refetch interval, sign with it (the registry sends a no-op ack with it), then
    the previous key still works. False when the driver has no such lever."""
    driver = context.state.driver
    if driver is None or driver.interactive:
        return False
    published = await driver.optional("rotate-key", step="publish")
    if published is None:
        return False
    jwk = dict(published["public_jwk"])
    context.trust(jwk)
    # Publish first, sign later (§2.3): the IR's one refetch per interval was just spent on the unknown kid.
    await asyncio.sleep(await _rotation_wait(context))
    signed = await driver.optional("rotate-key", step="sign")
    assert signed is not None
    stored = [
        entry
        for entry in await context.session.message_log(after=context.log_cursor_at_start)
        if str(entry["message_id"]) == str(signed.get("message_id"))
    ]
    verified_with_new = False
    if stored and stored[0].get("signature"):
        try:
            verify(stored[0]["envelope"], stored[0]["signature"], KeySet({"keys": [jwk]}))
            verified_with_new = stored[0].get("verification") == "verified"
        except JwsError:
            verified_with_new = False
    context.expect(
        "key rotation: a message the registry signed with its new kid is accepted",
        signed.get("response_status") == 200 and verified_with_new,
        f"kid {jwk['kid']}: the registry's message {signed.get('message_id')} answered "
        f"{signed.get('response_status')}, stored {'verified with it' if verified_with_new else 'not verified with it'}",
    )
    # The kit signs with the key it was given, the previous one: it must stay usable (no downtime).
    acked = (await context.session.sync())["inbox"]["acked_position"]
    answer = await context.session.post("inbox/ack", context.session.noop_ack(acked))
    context.expect(
        "key rotation: the previous kid still accepted (no downtime)",
        answer.status_code == 200,
        f"{answer.status_code} {answer.text[:200]}",
    )
    return True


async def _rotation(context: CaseContext, acked: int) -> None:
    """Publish a new key in the JWKS file the registry's `jwks_url` serves, sign with it, restore the file."""
    config, session = context.config, context.session
    path = config.rotation_jwks_file
    assert path is not None
    original = path.read_text()
    published = json.loads(original)
    rotated = SigningKey.generate().with_kid(
        f"{config.registry_id.lower()}-conformance-{uuid.uuid4().hex[:8]}"
    )
    published["keys"] = [*published.get("keys", []), rotated.public_jwk]
    path.write_text(json.dumps(published))
    context.trust(rotated.public_jwk)
    try:
        # Publish first, sign later (§2.3): the IR's one refetch per interval was just spent on the unknown kid.
        await asyncio.sleep(await _rotation_wait(context))
        answer = await session.post("inbox/ack", session.noop_ack(acked), key=rotated)
        context.expect(
            "key rotation: a message signed with the new kid is accepted",
            answer.status_code == 200,
            f"kid {rotated.kid}: {answer.status_code} {answer.text[:200]}",
        )
        answer = await session.post("inbox/ack", session.noop_ack(acked))
        context.expect(
            "key rotation: the previous kid still accepted (no downtime)",
            answer.status_code == 200,
            f"{answer.status_code} {answer.text[:200]}",
        )
    finally:
        # The kit does not keep the new private key: leave the registry's published keys as they were.
        path.write_text(original)


@case(
    102,
    "message signatures",
    mandatory=True,
    rule="signed accepted; unsigned → 1005; tampered → 1006; unknown kid → 1006 after one JWKS refetch; "
    "new kid accepted without downtime",
)
async def signatures(context: CaseContext) -> None:
    session, config, record = context.session, context.config, context.record
    acked = (await session.sync())["inbox"]["acked_position"]
    answer = await session.post("inbox/ack", session.noop_ack(acked))
    context.expect(
        "a signed message is accepted", answer.status_code == 200, f"{answer.status_code} {answer.text[:200]}"
    )
    if record.get("signing") == "required":
        await context.refused(
            "an unsigned message → 1005",
            session.post("inbox/ack", session.noop_ack(acked), signed=False),
            code=1005,
            status=401,
        )
    else:
        # Sending it would only store an unsigned message in the permanent log: the IR accepts it by design.
        context.skip(
            "an unsigned message → 1005",
            f"the record says signing: {record.get('signing')!r}, so the IR accepts unsigned messages from this "
            "registry; ask the Secretariat to set signing: required (production always requires it) and run again",
        )
    # A hello, so that an IR which failed to check would only have answered a hello.
    hello = session.envelope("hello", session.hello_body())
    signature = sign(hello, config.signing_key)
    tampered = {
        **hello,
        "body": {**hello["body"], "software": {"name": "a62-conformance-kit", "version": "tampered"}},
    }
    await context.refused(
        "a tampered body → 1006", session.post("hello", tampered, signature=signature), code=1006, status=401
    )
    stranger = SigningKey.generate().with_kid(
        f"{config.registry_id.lower()}-conformance-unknown-{uuid.uuid4().hex[:8]}"
    )
    await context.refused(
        "an unknown kid → 1006 (after the IR's one JWKS refetch when the record has a jwks_url)",
        session.post("inbox/ack", session.noop_ack(acked), key=stranger),
        code=1006,
        status=401,
    )
    if record.get("jwks_url") and config.rotation_jwks_file is not None:
        await _rotation(context, acked)
    elif record.get("jwks_url") and await _driver_rotation(context):
        pass
    elif record.get("jwks_url"):
        context.skip(
            "key rotation",
            f"the registry publishes {record['jwks_url']}; give --rotation-jwks-file, the file that URL serves, "
            "so the kit can publish a new key (or a driver with POST …/conformance/v1/rotate-key)",
        )
    else:
        context.skip(
            "key rotation",
            "the record carries its keys inline (sandbox), not a jwks_url the kit could publish a new key through",
        )


@case(
    103,
    "replay protection",
    mandatory=True,
    rule="repeat a stored message → same answer, no effect; reuse a seq → 1007; reuse a message_id with "
    "another body → 1008",
)
async def replays(context: CaseContext) -> None:
    session, config = context.session, context.config
    acked = (await session.sync())["inbox"]["acked_position"]
    document = session.noop_ack(acked)
    signature = sign(document, config.signing_key)
    first = await session.post("inbox/ack", document, signature=signature)
    if not context.expect(
        "the message is accepted", first.status_code == 200, f"{first.status_code} {first.text[:200]}"
    ):
        return
    again = await session.post("inbox/ack", document, signature=signature)
    context.expect(
        "the repeat gets the same answer",
        again.status_code == first.status_code and _json(again) == _json(first),
        f"first {first.status_code} {_json(first)}, repeat {again.status_code} {_json(again)}",
        replayed_header=again.headers.get("idempotent-replayed"),
    )
    after = await session.sync()
    logged = [
        entry
        for entry in await session.message_log(after=context.log_cursor_at_start)
        if entry["message_id"] == document["message_id"]
    ]
    context.expect(
        "the repeat has no effect (one stored message, seq not moved)",
        len(logged) == 1 and after["last_seq_received"] == document["seq"],
        f"stored {len(logged)} times; last_seq_received {after['last_seq_received']} (sent {document['seq']})",
    )
    stale = await context.refused(
        "a reused seq → 1007",
        session.post("inbox/ack", session.noop_ack(acked, seq=document["seq"])),
        code=1007,
        status=409,
    )
    context.expect(
        "1007 names the last seq",
        _json(stale).get("last_seq") == document["seq"],
        f"last_seq {_json(stale).get('last_seq')}",
    )
    hello = session.envelope("hello", session.hello_body())
    accepted = await session.post("hello", hello)
    context.expect("a hello is accepted", accepted.status_code == 200, f"{accepted.status_code}")
    other = {**hello, "body": session.hello_body(software_version="conformance-other-body")}
    await context.refused(
        "a reused message_id with another body → 1008", session.post("hello", other), code=1008, status=422
    )


@case(104, "clock: sent_at in the future", mandatory=True, rule="a message with sent_at +10 min → 1009")
async def clock(context: CaseContext) -> None:
    session = context.session
    state = await session.sync()
    ahead = session.noop_ack(state["inbox"]["acked_position"], sent_at=future(600))
    await context.refused("sent_at +10 min → 1009", session.post("inbox/ack", ahead), code=1009, status=400)
    after = await session.sync()
    context.expect(
        "the refused message consumed no seq",
        after["last_seq_received"] == state["last_seq_received"],
        f"last_seq_received {state['last_seq_received']} → {after['last_seq_received']}",
    )


@case(
    116,
    "inbox paging, replay and ack bounds",
    mandatory=True,
    rule="consecutive positions from 1 with IR signatures, identical from 0, from the middle and on replay; "
    "ack past the end → 422",
)
async def inbox(context: CaseContext) -> None:
    session, config = context.session, context.config
    published = await session.get(f"{_IRX}/jwks.json", authenticated=False)
    if not context.expect(
        "the IR's signing keys are published", published.status_code == 200, f"{published.status_code}"
    ):
        return
    ir_keys = KeySet(published.json())
    state = await session.sync()
    full = await session.inbox_pages(after=0, page_size=config.page_size)
    positions = [item["position"] for item in full]
    context.expect(
        "positions consecutive from 1",
        positions == list(range(1, len(full) + 1)) and len(full) >= state["inbox"]["last_position"],
        f"{len(full)} items, last_position {state['inbox']['last_position']}, positions {positions[:10]}…",
    )
    bad: list[str] = []
    for item in full:
        message = item["message"]
        if (
            message.get("seq") != item["position"]
            or message.get("to") != config.registry_id
            or message.get("from") != "IR"
        ):
            bad.append(f"{item['position']}: seq/from/to")
            continue
        try:
            verify(message, item["signature"], ir_keys)
        except JwsError as exc:
            bad.append(f"{item['position']}: {type(exc).__name__}")
    context.expect("every item is addressed to us and signed by the IR", not bad, "; ".join(bad[:10]))
    if len(full) >= 2:
        middle = len(full) // 2
        part = await session.inbox_pages(after=middle, page_size=config.page_size)
        context.expect(
            "reading from the middle gives the same items",
            part[: len(full) - middle] == full[middle:],
            f"after={middle}: {len(part)} items",
        )
    else:
        context.skip(
            "reading from the middle", f"the inbox has {len(full)} message(s); paging from the middle needs 2"
        )
    end = await session.get(f"{_IRX}/inbox", after=len(full), limit=config.page_size)
    context.expect(
        "reading after the last position gives an empty last page",
        end.status_code == 200 and _json(end).get("items") == [] and _json(end).get("next_cursor") is None,
        f"after={len(full)}: {end.status_code} {end.text[:200]}",
    )
    replay = await session.inbox_pages(after=0, page_size=config.page_size)
    context.expect(
        "a replay from 0 is identical", replay[: len(full)] == full, f"{len(replay)} items on replay"
    )
    last = max(len(full), state["inbox"]["last_position"])
    beyond = session.envelope("inbox.ack", {"up_to": last + 1})
    answer = await session.post("inbox/ack", beyond)
    problem = _json(answer)
    context.expect(
        "ack past the end → 422",
        answer.status_code == 422 and problem.get("last_position") == last,
        f"up_to {last + 1}: {answer.status_code} {problem.get('type')} last_position {problem.get('last_position')}",
    )
    after = await session.sync()
    stored = str(beyond["message_id"]) in await context.message_ids_logged()
    context.expect(
        "the refused ack changed nothing",
        after["inbox"]["acked_position"] == state["inbox"]["acked_position"] and not stored,
        f"acked_position {state['inbox']['acked_position']} → {after['inbox']['acked_position']}; stored: {stored}",
    )


async def _event_feed(context: CaseContext) -> None:
    session = context.session
    first = await session.get("/v1/events", after=0, limit=500)
    if first.status_code == 404:
        context.skip("event feed from 0", "GET /v1/events answers 404: the IR serves no event feed yet")
        return
    if not context.expect(
        "event feed readable by the registry",
        first.status_code == 200,
        f"{first.status_code} {first.text[:200]}",
    ):
        return

    async def read_all() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after = 0
        for _ in range(10_000):
            page = await session.get("/v1/events", after=after, limit=500)
            if page.status_code != 200:
                raise KitFailure(f"GET /v1/events?after={after} → {page.status_code}")
            document = page.json()
            items.extend(document["items"])
            if document.get("next_cursor") is None or not document["items"]:
                return items
            after = int(document["items"][-1]["position"])
        raise KitFailure("the event feed never ended")  # pragma: no cover - a runaway cursor

    items = await read_all()
    positions = [item.get("position") for item in items]
    context.expect(
        "feed positions consecutive from 1",
        positions == list(range(1, len(items) + 1)),
        f"{len(items)} items, positions {positions[:10]}…",
    )
    foreign = [item.get("position") for item in items if item.get("party") != context.config.party]
    context.expect("only our Party's events", not foreign, f"other Parties at {foreign[:10]}")
    replay = await read_all()
    context.expect("feed replay from 0 is identical", replay[: len(items)] == items, f"{len(replay)} items")


@case(
    117,
    "information retrieval: codes, registry record, transfer lookup, event feed",
    mandatory=True,
    rule="documented shapes; feed positions consecutive",
)
async def information(context: CaseContext) -> None:
    session, config = context.session, context.config
    # Reads leave no trace at the IR; a signed hello lets it corroborate that the case ran (docs/conformance.md).
    await session.sync()
    codes = await session.get(f"{_IRX}/codes", authenticated=False)
    if context.expect("codes catalogue published", codes.status_code == 200, f"{codes.status_code}"):
        try:
            served = [CodeDefinition.model_validate(item) for item in codes.json()["items"]]
        except (ValidationError, KeyError, TypeError) as exc:
            context.expect("codes have the documented shape", False, str(exc)[:300])
        else:
            numbers = [definition.code for definition in served]
            context.expect(
                "codes in ascending order, each once", numbers == sorted(set(numbers)), f"{numbers[:12]}…"
            )
            by_code = {definition.code: definition for definition in served}
            missing = [
                known.code
                for known in CODE_CATALOGUE
                if known.code not in by_code or by_code[known.code].http_status != known.http_status
            ]
            context.expect(
                "every §7 code with its HTTP status", not missing, f"missing or different: {missing}"
            )
    version = await session.get(f"{_IRX}/version", authenticated=False)
    try:
        info = IrxVersionInfo.model_validate(version.json())
        context.expect(
            "version info lists 1.0",
            version.status_code == 200 and "1.0" in info.supported,
            info.model_dump_json(),
        )
    except (ValidationError, ValueError) as exc:
        context.expect(
            "version info has the documented shape", False, f"{version.status_code} {str(exc)[:200]}"
        )
    answer = await session.get(f"{_IRX}/registries/{config.registry_id}")
    try:
        record = RegistryRecord.model_validate(answer.json())
        context.expect(
            "the registry record, in full, to the registry itself",
            answer.status_code == 200
            and record.registry_id == config.registry_id
            and record.party == config.party,
            f"{answer.status_code} {record.registry_id} {record.party} {record.status}",
        )
    except (ValidationError, ValueError) as exc:
        context.expect(
            "the registry record has the documented shape", False, f"{answer.status_code} {str(exc)[:200]}"
        )
    unknown = f"{config.registry_id}-conformance-{uuid.uuid4().hex[:12]}"
    lookup = await session.get(f"{_IRX}/transfers/{unknown}")
    context.expect(
        "transfer lookup of an unknown id → 404 problem",
        lookup.status_code == 404
        and lookup.headers.get("content-type", "").startswith("application/problem+json"),
        f"{lookup.status_code}",
    )
    await _event_feed(context)
