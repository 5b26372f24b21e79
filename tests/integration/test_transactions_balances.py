"""Internal balance endpoints of the transactions service (what party_sections asks before closing)."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert

from contracts.roles import Role
from kit.db import Database
from services.transactions.app import create_app
from services.transactions.config import Settings
from services.transactions.models import blocks
from tests.support.apps import client_for
from tests.support.tokens import TokenFactory


def _block(first: int, last: int, *, state: str, account: str | None, party: str, **extra: Any) -> dict:
    return {
        "ca_id": "CA0012",
        "origin_registry_id": "GHA01",
        "first_transferring_party": "GHA",
        "first_serial": first,
        "last_serial": last,
        "vintage": 2024,
        "metric": "GHG",
        "mitigation_type": "Emission reductions",
        "authorization_id": "GH-AUTH-7",
        "authorization_version": 1,
        "purposes": "NDC",
        "state": state,
        "account_id": account,
        "party": party,
        "updated_at": datetime.now(UTC),
        **extra,
    }


@pytest.fixture
def url(make_database: Callable[[str], str]) -> str:
    return make_database("services.transactions")


async def _seed(url: str) -> None:
    db = Database(url)
    try:
        async with db.transaction() as session:
            await session.execute(
                insert(blocks),
                [
                    _block(1, 100, state="held", account="CHE01-100-1", party="CHE"),
                    _block(
                        101, 130, state="reserved", account="CHE01-100-1", party="CHE", reserved_by="tx_1"
                    ),
                    _block(131, 135, state="pending_in", account="CHE01-100-1", party="CHE"),
                    _block(136, 200, state="used_ndc", account="CHE01-200-1", party="CHE"),
                    _block(201, 2**40, state="held", account="CHE01-100-2", party="CHE"),
                    _block(
                        2**40 + 1, 2**40 + 10, state="transferred_out", account="CHE01-100-2", party="CHE"
                    ),
                    _block(2**40 + 11, 2**40 + 20, state="held", account="GHA01-100-1", party="GHA"),
                ],
            )
    finally:
        await db.dispose()


async def test_balances(url: str, tokens: TokenFactory) -> None:
    await _seed(url)
    app = create_app(Settings(database_url=url), token_verifier=tokens.verifier())
    async with client_for(app) as client:
        client.headers.update(
            tokens.headers(party=None, roles=[Role.SERVICE], client_id="svc-party_sections")
        )

        answer = await client.get("/internal/v1/accounts/CHE01-100-1/balance")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "account_id": "CHE01-100-1",
            "held": 100,
            "reserved": 30,
            "pending_in": 5,
            "total": 135,
        }
        # Used units are history, not a balance: a terminal account is at zero.
        terminal = (await client.get("/internal/v1/accounts/CHE01-200-1/balance")).json()
        assert terminal["total"] == 0
        unknown = (await client.get("/internal/v1/accounts/NOR01-100-9/balance")).json()
        assert unknown == {"account_id": "NOR01-100-9", "held": 0, "reserved": 0, "pending_in": 0, "total": 0}

        section = await client.get("/internal/v1/party-sections/CHE/balance")
        assert section.status_code == 200, section.text
        assert section.json() == {
            "party": "CHE",
            "total": 135 + 2**40 - 200,
            "accounts": {"CHE01-100-1": 135, "CHE01-100-2": 2**40 - 200},
        }
        empty = (await client.get("/internal/v1/party-sections/NOR/balance")).json()
        assert empty == {"party": "NOR", "total": 0, "accounts": {}}
        assert (await client.get("/internal/v1/party-sections/XX1/balance")).status_code == 422

        # The Secretariat may ask too; a Party principal may not (these are internal, any Party's data).
        admin = tokens.headers(party=None, roles=[Role.SECRETARIAT_ADMIN])
        assert (await client.get("/internal/v1/party-sections/CHE/balance", headers=admin)).status_code == 200
        party_admin = tokens.headers(party="CHE", roles=[Role.PARTY_ADMIN, Role.VIEWER])
        for path in ("/internal/v1/party-sections/CHE/balance", "/internal/v1/accounts/CHE01-100-1/balance"):
            assert (await client.get(path, headers=party_admin)).status_code == 403
            assert (await client.get(path, headers={"Authorization": ""})).status_code == 401


@pytest.mark.postgres
async def test_postgresql_refuses_overlapping_current_blocks(pg_database: Callable[[str], str]) -> None:
    """I1 is a constraint on PostgreSQL: an overlapping block of the same (CA, registry) cannot exist."""
    from sqlalchemy.exc import IntegrityError

    db = Database(pg_database("services.transactions"))
    try:
        async with db.transaction() as session:
            await session.execute(
                insert(blocks).values(_block(1, 100, state="held", account="A", party="CHE"))
            )
            # Another registry or CA may reuse the serials.
            await session.execute(
                insert(blocks).values(
                    _block(50, 60, state="held", account="A", party="CHE", origin_registry_id="CHE01")
                )
            )
        with pytest.raises(IntegrityError, match="ex_blocks_no_overlap"):
            async with db.transaction() as session:
                await session.execute(
                    insert(blocks).values(_block(100, 120, state="held", account="B", party="GHA"))
                )
    finally:
        await db.dispose()
