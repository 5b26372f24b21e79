"""The ARS's MO blocks on PostgreSQL: the database itself refuses two overlapping ranges of one series."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from kit.db import Database
from services.ars.models import mo_blocks


def _mo(first: int, last: int, **changes: Any) -> dict[str, Any]:
    return {
        "party": "GHA",
        "ca_id": "CA0012",
        "origin_registry_id": "GHA01",
        "first_serial": first,
        "last_serial": last,
        "vintage": 2024,
        "metric": "GHG",
        "mitigation_type": "Emission reductions",
        "sector": "Energy",
        "activity_type": "Solar",
        "state": "pending_authorization",
        "issuance_id": "iss-1",
        "updated_at": datetime.now(UTC),
    } | changes


@pytest.mark.postgres
async def test_postgresql_refuses_overlapping_mo_blocks(pg_database: Callable[[str], str]) -> None:
    db = Database(pg_database("services.ars"))
    try:
        async with db.transaction() as session:
            await session.execute(insert(mo_blocks).values(_mo(1, 100)))
            await session.execute(insert(mo_blocks).values(_mo(101, 200)))  # adjacent: fine
            await session.execute(insert(mo_blocks).values(_mo(50, 60, origin_registry_id="GHA02")))
            await session.execute(insert(mo_blocks).values(_mo(50, 60, ca_id="CA0013")))
        with pytest.raises(IntegrityError, match="ex_mo_blocks_no_overlap"):
            async with db.transaction() as session:
                await session.execute(insert(mo_blocks).values(_mo(150, 250)))  # distinct start, overlapping
    finally:
        await db.dispose()
