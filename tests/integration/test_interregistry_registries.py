"""Registry records and their lifecycle (INTERREGISTRY §2.1) through the gateway, on both backends: create,
visibility, PATCH with If-Match, the transition matrix, production activation and the status events; and
the public version, codes and jwks.json endpoints."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from contracts.interregistry import CODE_CATALOGUE, REGISTRY_TRANSITIONS, RegistryStatus
from kit.jwt import SigningKey
from services.transactions.interregistry.models import conformance_run, registry
from services.transactions.models import outbox
from tests.integration._interregistry_world import World, interregistry_world

pytestmark = pytest.mark.xdist_group("interregistry")


@pytest.fixture
async def world(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    async with interregistry_world(make_database, tmp_path, monkeypatch) as made:
        yield made


async def test_public_endpoints_need_no_token(world: World) -> None:
    gw = world.gateway
    version = await gw.get("/v1/interregistry/version")
    assert version.status_code == 200, version.text
    assert version.json() == {"current": "1.0", "supported": ["1.0"], "deprecated": [], "sunset": {}}
    codes = await gw.get("/v1/interregistry/codes")
    assert codes.status_code == 200
    assert [item["code"] for item in codes.json()["items"]] == [entry.code for entry in CODE_CATALOGUE]
    assert set(codes.json()["items"][0]) == {"code", "title", "raised_by", "http_status"}
    jwks = await gw.get("/v1/interregistry/jwks.json")
    assert jwks.status_code == 200
    keys = jwks.json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "EC" and keys[0]["crv"] == "P-256" and "d" not in keys[0]
    # Separate from the gateway's token keys, and stable across calls (generated once, kept on disk).
    tokens = (await gw.get("/.well-known/jwks.json")).json()["keys"]
    assert keys[0]["kid"] not in {key["kid"] for key in tokens}
    assert (await gw.get("/v1/interregistry/jwks.json")).json() == jwks.json()
    # Everything else under /v1/interregistry needs a token.
    assert (await gw.get("/v1/interregistry/registries")).status_code == 401


async def test_create_and_read_with_visibility(world: World) -> None:
    created = await world.create_registry("CHE01", jwks={"keys": [SigningKey.generate().public_jwk]})
    record = created.json()
    assert record["status"] == "onboarding" and record["version"] == 1
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == "/v1/interregistry/registries/CHE01"
    await world.create_registry("NOR01", jwks={"keys": [SigningKey.generate().public_jwk]})
    che = await world.new_registry_client("CHE01")
    che_headers = await world.token_headers(che)
    viewer = await world.client_headers(party="GHA", roles=["viewer"])
    public = {"registry_id", "party", "name", "status"}

    full = await world.gateway.get("/v1/interregistry/registries/CHE01", headers=world.admin)
    assert full.status_code == 200 and full.json()["signing"] == "required" and full.headers["etag"] == '"1"'
    own = await world.gateway.get("/v1/interregistry/registries/CHE01", headers=che_headers)
    assert own.json() == full.json()
    other = await world.gateway.get("/v1/interregistry/registries/NOR01", headers=che_headers)
    assert set(other.json()) == public and "etag" not in other.headers
    anyone = await world.gateway.get("/v1/interregistry/registries/CHE01", headers=viewer)
    assert set(anyone.json()) == public

    listed = await world.gateway.get("/v1/interregistry/registries", headers=che_headers)
    by_id = {item["registry_id"]: item for item in listed.json()["items"]}
    assert set(by_id) == {"CHE01", "NOR01"}
    assert "jwks" in by_id["CHE01"] and set(by_id["NOR01"]) == public
    page = await world.gateway.get("/v1/interregistry/registries", params={"limit": 1}, headers=world.admin)
    assert [i["registry_id"] for i in page.json()["items"]] == ["CHE01"]
    rest = await world.gateway.get(
        "/v1/interregistry/registries", params={"cursor": page.json()["next_cursor"]}, headers=world.admin
    )
    assert [i["registry_id"] for i in rest.json()["items"]] == ["NOR01"] and rest.json()[
        "next_cursor"
    ] is None
    missing = await world.gateway.get("/v1/interregistry/registries/CHE02", headers=world.admin)
    assert missing.status_code == 404


async def test_only_the_secretariat_creates_and_ids_are_unique(world: World) -> None:
    viewer = await world.client_headers(party="CHE", roles=["party_admin"])
    refused = await world.gateway.post(
        "/v1/interregistry/registries",
        json={"registry_id": "CHE01", "party": "CHE", "name": "x", "environment": "sandbox"},
        headers=viewer,
    )
    assert refused.status_code == 403
    await world.create_registry("CHE01")
    again = await world.create_registry("CHE01", expect=409)
    assert again.json()["type"].endswith("/registry-id-in-use")
    # The id of an IR Party section is taken too (asked of party_sections).
    made = await world.gateway.post(
        "/v1/party-sections", json={"party": "GHA", "registry_id": "GHA01"}, headers=world.admin
    )
    assert made.status_code == 201, made.text
    clash = await world.create_registry("GHA01", expect=409)
    assert "section" in clash.json()["detail"]
    await world.create_registry("GHA02")
    # A production record on a sandbox IR, another Party's id, production rules: 422.
    await world.create_registry("DEU01", environment="production", expect=422)
    await world.create_registry("DEU01", party="FRA", expect=422)


async def test_patch_needs_if_match_and_limits_the_registry(world: World) -> None:
    await world.create_registry("CHE01", jwks={"keys": [SigningKey.generate().public_jwk]})
    che = await world.token_headers(await world.new_registry_client("CHE01"))
    path = "/v1/interregistry/registries/CHE01"
    missing = await world.gateway.patch(path, json={"name": "Swiss registry"}, headers=world.admin)
    assert missing.status_code == 428
    stale = await world.gateway.patch(
        path, json={"name": "Swiss registry"}, headers={**world.admin, "If-Match": '"7"'}
    )
    assert stale.status_code == 412 and stale.headers["etag"] == '"1"'
    done = await world.gateway.patch(
        path,
        json={"name": "Swiss registry", "signing": "optional"},
        headers={**world.admin, "If-Match": '"1"'},
    )
    assert done.status_code == 200, done.text
    assert (
        done.json()["name"] == "Swiss registry"
        and done.json()["version"] == 2
        and done.headers["etag"] == '"2"'
    )
    # The registry itself: jwks_url and webhook_url only, on its own record.
    own = await world.gateway.patch(
        path, json={"webhook_url": "http://127.0.0.1:9/hook"}, headers={**che, "If-Match": '"2"'}
    )
    assert own.status_code == 200, own.text
    assert own.json()["webhook_url"] == "http://127.0.0.1:9/hook"
    name = await world.gateway.patch(path, json={"name": "Mine"}, headers={**che, "If-Match": '"3"'})
    assert name.status_code == 403
    await world.create_registry("NOR01")
    other = await world.gateway.patch(
        "/v1/interregistry/registries/NOR01",
        json={"webhook_url": "http://127.0.0.1:9/x"},
        headers={**che, "If-Match": '"1"'},
    )
    assert other.status_code == 403
    removed = await world.gateway.patch(path, json={"name": None}, headers={**world.admin, "If-Match": '"3"'})
    assert removed.status_code == 422


async def test_lifecycle_matrix(world: World) -> None:
    """Every action from every status: allowed ones move to their target, the others are 409."""
    statuses = list(RegistryStatus)
    number = 0
    for status in statuses:
        for action, (sources, target) in REGISTRY_TRANSITIONS.items():
            number += 1
            registry_id = f"CHE{number:02d}"
            await world.connect(registry_id, status=status.value)
            answer = await world.lifecycle(registry_id, action)
            if status in sources:
                assert answer.status_code == 200, (status, action, answer.text)
                assert answer.json()["status"] == target.value
            else:
                assert answer.status_code == 409, (status, action, answer.text)
                assert answer.json()["registry_status"] == status.value
                current = await world.gateway.get(
                    f"/v1/interregistry/registries/{registry_id}", headers=world.admin
                )
                assert current.json()["status"] == status.value


async def test_lifecycle_needs_the_secretariat(world: World) -> None:
    registry = await world.connect("CHE01", status="testing")
    assert (
        await world.gateway.post(
            "/v1/interregistry/registries/CHE01/activate", json={}, headers=registry.headers
        )
    ).status_code == 403


async def test_status_changes_publish_an_event_and_an_inbox_message(world: World) -> None:
    registry = await world.connect("CHE01", status="active")
    suspended = await world.lifecycle("CHE01", "suspend", {"note": "maintenance"})
    assert suspended.status_code == 200
    db = world.suite.services["transactions"].state.db
    async with db.read() as session:
        events = (
            await session.execute(
                select(outbox.c.type, outbox.c.party, outbox.c.payload)
                .where(outbox.c.type == "registry.status_changed")
                .order_by(outbox.c.id)
            )
        ).all()
    assert [(e.payload["previous_status"], e.payload["status"]) for e in events] == [
        ("onboarding", "testing"),
        ("testing", "active"),
        ("active", "suspended"),
    ]
    assert {e.party for e in events} == {"CHE"} and events[-1].payload["note"] == "maintenance"
    inbox = (await registry.inbox()).json()["items"]
    assert [item["message"]["type"] for item in inbox] == ["registry.status_changed"] * 3
    assert [item["message"]["body"]["status"] for item in inbox] == ["testing", "active", "suspended"]
    assert inbox[-1]["message"]["body"] == {
        "registry_id": "CHE01",
        "status": "suspended",
        "previous_status": "active",
        "note": "maintenance",
    }


async def test_production_activation_needs_a_passing_conformance_run(
    make_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_IRX_ENVIRONMENT", "production")
    async with interregistry_world(make_database, tmp_path, monkeypatch) as world:
        await world.create_registry(
            "CHE01",
            environment="production",
            jwks_url="https://registry.example.ch/jwks.json",
            response_timeout_s=86400,
        )
        assert (await world.lifecycle("CHE01", "test")).status_code == 200
        without = await world.lifecycle("CHE01", "activate", {"note": "go live"})
        assert without.status_code == 422 and without.json()["type"].endswith("/conformance-run-required")
        db = world.suite.services["transactions"].state.db
        async with db.transaction() as session:
            await session.execute(
                insert(conformance_run),
                [
                    {"run_id": "run-failed", "registry_id": "CHE01", "result": "fail", "created_at": _now()},
                    {"run_id": "run-other", "registry_id": "NOR01", "result": "pass", "created_at": _now()},
                    {"run_id": "run-passed", "registry_id": "CHE01", "result": "pass", "created_at": _now()},
                ],
            )
        for run in ("run-failed", "run-other", "run-unknown"):
            refused = await world.lifecycle("CHE01", "activate", {"conformance_run_id": run})
            assert refused.status_code == 422, run
        activated = await world.lifecycle("CHE01", "activate", {"conformance_run_id": "run-passed"})
        assert activated.status_code == 200 and activated.json()["status"] == "active"
        async with db.read() as session:
            stored = (
                await session.execute(
                    select(registry.c.conformance_run_id).where(registry.c.registry_id == "CHE01")
                )
            ).scalar_one()
        assert stored == "run-passed"


def _now() -> datetime:
    return datetime.now(UTC)
