"""Who may speak for a connected registry (INTERREGISTRY §2.2, §2.3), on both backends: only OAuth2 clients
listed on the registry record (else 1004, nothing recorded, no seq consumed), listed at creation or by the
Secretariat and unlisted again; and key revocation by the Secretariat — a message signed with the revoked
kid is refused 1006 from `revoked_at` on (also a kid revoked before its first use), while a new kid works."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kit.jwt import SigningKey
from tests.integration._interregistry_world import Registry, World, interregistry_world

pytestmark = pytest.mark.xdist_group("interregistry")

BASE = "/v1/interregistry/registries"


@pytest.fixture
async def world(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    async with interregistry_world(make_database, tmp_path, monkeypatch) as made:
        yield made


def _code(answer: object, status: int, code: int) -> None:
    assert answer.status_code == status, answer.text  # type: ignore[attr-defined]
    assert answer.json()["code"] == code, answer.text  # type: ignore[attr-defined]


async def test_listed_clients_speak_and_revoked_kids_are_refused(world: World) -> None:
    await _only_listed_clients(world)
    await _revoked_kid_refused_new_kid_works(world)


async def _only_listed_clients(world: World) -> None:
    che = await world.connect("CHE01")
    record = (await world.gateway.get(f"{BASE}/CHE01", headers=world.admin)).json()
    assert record["clients"] == [che.client_id]

    # A second client with the right registry_id claim, not listed: refused at step 1, nothing kept.
    other = await world.new_registry_client("CHE01", listed=False)
    che.headers = await world.token_headers(other)
    before = await world.counts("CHE01")
    _code(await che.ack(0), 403, 1004)
    _code(await che.inbox(), 403, 1004)
    assert await world.counts("CHE01") == before

    path = f"{BASE}/CHE01/clients/{other['client_id']}"
    assert (await world.gateway.put(path, headers=che.headers)).status_code == 403  # Secretariat only
    listed = await world.gateway.put(path, headers=world.admin)
    assert listed.status_code == 200 and other["client_id"] in listed.json()["clients"]
    assert (await che.ack(0)).status_code == 200
    unlisted = await world.gateway.delete(path, headers=world.admin)
    assert unlisted.status_code == 200 and unlisted.json()["clients"] == [che.client_id]
    _code(await che.ack(0), 403, 1004)

    # Listed at creation: a client made before the record speaks as soon as the record exists.
    early = await world.new_registry_client("DNK01")
    key = SigningKey.generate().with_kid("dnk01-2026-01")
    await world.create_registry("DNK01", jwks={"keys": [key.public_jwk]}, clients=[early["client_id"]])
    dnk = Registry(
        world=world,
        registry_id="DNK01",
        party="DNK",
        key=key,
        headers=await world.token_headers(early),
        client_id=early["client_id"],
    )
    assert (await dnk.hello()).status_code == 200


async def _revoked_kid_refused_new_kid_works(world: World) -> None:
    swe = await world.connect("SWE01")
    assert (await swe.ack(0)).status_code == 200
    old_kid = swe.key.public_jwk["kid"]
    revoke = f"{BASE}/SWE01/keys/{old_kid}/revoke"
    refused = await world.gateway.post(revoke, json={"note": "leaked"}, headers=swe.headers)
    assert refused.status_code == 403  # §2.3: the Secretariat revokes, not the registry
    revoked = await world.gateway.post(revoke, json={"note": "key leaked in ticket 42"}, headers=world.admin)
    assert revoked.status_code == 200, revoked.text
    [row] = revoked.json()["items"]
    assert row["kid"] == old_kid and row["revoked_at"] and row["revocation_note"] == "key leaked in ticket 42"
    assert row["thumbprint"] and row["revoked_by"]

    before = await world.counts("SWE01")
    _code(await swe.ack(0), 401, 1006)
    assert await world.counts("SWE01") == before

    # A kid revoked ahead of its first use (published, then found compromised) is refused when it appears.
    spare = SigningKey.generate().with_kid("swe01-2026-03")
    ahead = await world.gateway.post(
        f"{BASE}/SWE01/keys/swe01-2026-03/revoke",
        json={
            "note": "never to be used",
            "revoked_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        },
        headers=world.admin,
    )
    assert ahead.status_code == 200 and ahead.json()["items"][0]["thumbprint"] is None

    # Rotation: the record gets the new key; messages signed with it go through at once.
    new = SigningKey.generate().with_kid("swe01-2026-02")
    current = await world.gateway.get(f"{BASE}/SWE01", headers=world.admin)
    patched = await world.gateway.patch(
        f"{BASE}/SWE01",
        json={"jwks": {"keys": [swe.key.public_jwk, new.public_jwk, spare.public_jwk]}},
        headers={**world.admin, "If-Match": current.headers["etag"]},
    )
    assert patched.status_code == 200, patched.text
    assert (await swe.ack(0, key=new)).status_code == 200
    _code(await swe.ack(0, key=spare), 401, 1006)
    _code(await swe.ack(0), 401, 1006)
    keys = (await world.gateway.get(f"{BASE}/SWE01/keys", headers=swe.headers)).json()["items"]
    assert {(k["kid"], k["revoked_at"] is not None) for k in keys} == {
        (old_kid, True),
        ("swe01-2026-02", False),
        ("swe01-2026-03", True),
    }
