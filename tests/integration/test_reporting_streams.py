"""The reporting service's streaming paths on both backends, against a read model seeded directly: frozen
versions in chunks (byte for byte what the one-shot encoding gives, the migration moving old bodies),
one snapshot per report, and the keyset-paginated lists of the public register."""

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import openpyxl
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError

from contracts.roles import Role
from kit.auth import Principal
from kit.db import Database
from kit.errors import install_problem_handlers
from kit.migrations import alembic_config
from kit.pagination import encode_cursor
from services.reporting import frozen
from services.reporting.aef import LATE_COMMIT_MARGIN, build_tables, holdings_at
from services.reporting.consistency import consistency, corresponding_adjustments
from services.reporting.exports import write_export
from services.reporting.frozen import canonical_json, frozen_chunks
from services.reporting.models import (
    aef_actions,
    authorizations,
    cooperative_approaches,
    movements,
    ndc_periods,
    sections,
    submission_chunks,
    submissions,
    year_end_holdings,
)
from services.reporting.public import public_router
from services.reporting.service import ReportingService, snapshot

YEAR = 2025
START = datetime(YEAR, 3, 1, tzinfo=UTC)
ADMIN = Principal(client_id="gha-admin", party="GHA", roles=frozenset({Role.PARTY_ADMIN}))


@pytest.fixture
async def db(make_database: Callable[[str], str]) -> AsyncIterator[Database]:
    database = Database(make_database("services.reporting"))
    yield database
    await database.dispose()


def _block(first: int) -> dict[str, Any]:
    return {
        "ca_id": "CA0012",
        "origin_registry_id": "GHA01",
        "first_transferring_party": "GHA",
        "first_serial": first,
        "last_serial": first + 9,
        "vintage": 2024,
        "authorization_id": "GH-AUTH-7",
        "metric": "GHG",
        "mitigation_type": "Emission reductions",
    }


async def _add_actions(db: Database, numbers: range) -> None:
    """Per number: GHA first transfers 10 serials to CHE; its movement leaves every third run with GHA."""
    async with db.transaction() as session:
        for n in numbers:
            at = START + timedelta(hours=n)
            await session.execute(
                insert(aef_actions).values(
                    transaction_id=f"tx{n}",
                    party="GHA",
                    registry_id="GHA01",
                    action_at=at,
                    action_type="First transfer",
                    action_subtype="First transfer to another Party",
                    acquiring_party_id="CHE",
                    **_block(10 * n + 1),
                )
            )
            await session.execute(
                insert(movements).values(
                    transaction_id=f"tx{n}",
                    moved_at=at,
                    party="GHA" if n % 3 == 0 else "CHE",
                    registry_id="GHA01" if n % 3 == 0 else "CHE01",
                    state="held",
                    **_block(10 * n + 1),
                )
            )


async def _join(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


@pytest.mark.postgres
async def test_submission_chunks_are_compressed_with_lz4_where_the_server_has_it(
    pg_database: Callable[[str], str],
) -> None:
    """Migration 0007: chunks frozen from then on are lz4-compressed (pglz, PostgreSQL's default, was
    several times slower on a million-action year); downgrading goes back to pglz for new chunks."""
    url = pg_database("services.reporting")
    db = Database(url)
    try:
        async with db.read() as session:
            has_lz4 = (
                await session.execute(
                    text(
                        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
                    )
                )
            ).scalar_one()
        await _add_actions(db, range(60))  # ~60 KB of JSON: past the 2 KB at which PostgreSQL compresses
        await ReportingService(db).submit(ADMIN, "GHA", YEAR)
        async with db.read() as session:
            methods = set(
                (
                    await session.execute(text("SELECT pg_column_compression(bytes) FROM submission_chunks"))
                ).scalars()
            )
        assert methods == ({"lz4"} if has_lz4 else {"pglz"})
    finally:
        await db.dispose()


async def _refused(db: Database, table: str, assignment: str, message: str) -> None:
    """UPDATE, DELETE and TRUNCATE of `table` each fail with `message` (a trigger of its migration)."""
    # The table and assignment are this module's literals, not input: nothing to inject.
    statements = (f"UPDATE {table} SET {assignment}", f"DELETE FROM {table}", f"TRUNCATE {table}")  # noqa: S608
    for statement in statements:
        with pytest.raises(DBAPIError, match=message):
            async with db.transaction() as session:
                await session.execute(text(statement))


@pytest.mark.postgres
async def test_postgresql_refuses_to_change_a_frozen_version(pg_database: Callable[[str], str]) -> None:
    """Migration 0008's trigger: no UPDATE, DELETE or TRUNCATE of a chunk goes through, whoever sends it;
    the version still reads back as frozen, with its digest."""
    db = Database(pg_database("services.reporting"))
    try:
        await _add_actions(db, range(5))
        frozen_version = await ReportingService(db).submit(ADMIN, "GHA", YEAR)
        await _refused(db, "submission_chunks", "bytes = 'x'", "a frozen AEF version never changes")
        stored = await _join(frozen_chunks(db, frozen_version.key))
        assert hashlib.sha256(stored).hexdigest() == frozen_version.sha256
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_postgresql_keeps_the_log_of_confidential_reads_append_only(
    pg_database: Callable[[str], str],
) -> None:
    """Migration 0009's trigger: lines are added, never changed or removed."""
    db = Database(pg_database("services.reporting"))
    auditor = Principal(client_id="auditor-1", party=None, roles=frozenset({Role.AUDITOR}))
    try:
        await ReportingService(db).log_reads(auditor, ["GHA", "CHE"], YEAR, "consistency")
        await _refused(db, "confidential_reads", "client_id = 'nobody'", "append-only")
        async with db.read() as session:
            logged = (await session.execute(text("SELECT party, client_id FROM confidential_reads"))).all()
        assert sorted(logged) == [("CHE", "auditor-1"), ("GHA", "auditor-1")]
    finally:
        await db.dispose()


async def test_a_submission_is_stored_in_chunks_and_read_back_byte_for_byte(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frozen, "CHUNK_BYTES", 700)
    monkeypatch.setattr(frozen, "PIECE_ROWS", 4)
    await _add_actions(db, range(30))
    service = ReportingService(db)
    first = await service.submit(ADMIN, "GHA", YEAR)
    key = first.key
    assert first.version == "1.0"
    stored = await _join(frozen_chunks(db, key))
    assert first.size == len(stored)
    assert first.sha256 == hashlib.sha256(stored).hexdigest()
    assert (
        first.headers["Repr-Digest"]
        == f"sha-256=:{base64.b64encode(hashlib.sha256(stored).digest()).decode()}:"
    )

    # The bytes the one-shot encoding of the whole document gives (what a version held before chunks).
    async with db.read() as session:
        tables = await build_tables(session, "GHA", YEAR)
    tables["submission"]["version"] = "1.0"
    tables["submission"]["date_of_submission"] = datetime.now(UTC).date().isoformat()
    assert stored == canonical_json({"party": "GHA", "year": YEAR, "version": "1.0", "tables": tables})
    assert len(tables["actions"]) == 30 and len(tables["holdings"]) == 10

    async with db.read() as session:
        sizes = (
            await session.execute(
                select(func.length(submission_chunks.c.bytes)).order_by(submission_chunks.c.seq)
            )
        ).scalars()
        size = (await session.execute(select(submissions.c.size))).scalar_one()
    sizes = list(sizes)
    assert len(sizes) == -(-len(stored) // 700) and set(sizes[:-1]) == {700}
    assert size == len(stored)
    listed = await service.submissions(ADMIN, "GHA", YEAR)
    assert [(item["version"], item["size"], item["sha256"]) for item in listed["items"]] == [
        ("1.0", len(stored), first.sha256)
    ]

    # New actions change the next version, never this one.
    await _add_actions(db, range(30, 33))
    again = await service.submit(ADMIN, "GHA", YEAR)
    assert again.version == "1.1" and await _join(frozen_chunks(db, key)) == stored
    assert (await ReportingService.frozen(db, "GHA", YEAR, "1.0")).sha256 == first.sha256 != again.sha256

    # A frozen version exports from its chunks, parsed as they are read.
    _, pieces = await service.frozen_pieces(key)
    out = io.BytesIO()
    await write_export("xlsx", pieces, out)
    workbook = openpyxl.load_workbook(io.BytesIO(out.getvalue()), read_only=True)
    rows = list(workbook["Table 3 Actions"].iter_rows(values_only=True))
    assert [row[7] for row in rows[1:]] == [10 * n + 1 for n in range(30)]
    assert list(workbook["Table 1 Submission"].iter_rows(values_only=True))[1][:2] == ("GHA", "1.0")


async def test_a_report_reads_one_snapshot(db: Database) -> None:
    await _add_actions(db, range(3))
    service = ReportingService(db)
    chunks = service.report_chunks("GHA", YEAR)
    first = await anext(chunks)  # Tables 1, 2, 4 and 5 are read; Table 3 streams next
    await _add_actions(db, range(3, 6))  # ... while three more actions (one left with GHA) commit
    report = json.loads(first + await _join(chunks))
    assert [row["first_id"] for row in report["tables"]["actions"]] == [1, 11, 21]
    assert [row["first_id"] for row in report["tables"]["holdings"]] == [1]

    report = json.loads(await _join(service.report_chunks("GHA", YEAR)))
    assert len(report["tables"]["actions"]) == 6
    assert [row["first_id"] for row in report["tables"]["holdings"]] == [1, 31]

    if db.dialect == "postgresql":
        async with snapshot(db) as session:
            level = (await session.execute(text("SHOW transaction_isolation"))).scalar_one()
            read_only = (await session.execute(text("SHOW transaction_read_only"))).scalar_one()
        assert (level, read_only) == ("repeatable read", "on")
        async with snapshot(db, write=True) as session:
            read_only = (await session.execute(text("SHOW transaction_read_only"))).scalar_one()
        assert read_only == "off"


def _public_app(db: Database) -> httpx.AsyncClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(public_router)
    app.state.db = db
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting")


async def _all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        answer = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        pages.append(answer.json()["items"])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return pages


async def test_public_lists_are_keyset_paginated(db: Database) -> None:
    async with db.transaction() as session:
        for n in range(5):
            ca = f"CA{n:04d}"
            await session.execute(
                insert(cooperative_approaches).values(
                    ca_id=ca, data={"ca_id": ca, "name": f"Approach {n}", "participants": ["GHA", "CHE"]}
                )
            )
        for party in ("CHE", "GHA"):
            for authorization in ("A-1", "A-2"):
                for version in (1, 2):
                    row = {"authorization_id": authorization, "authorized_quantity": 7777, "version": version}
                    await session.execute(
                        insert(authorizations).values(
                            party=party,
                            authorization_id=authorization,
                            version=version,
                            authorized_on=date(YEAR, 1, version),
                            status="active",
                            table2=row,
                        )
                    )
        await session.execute(
            insert(sections).values(
                party="GHA",
                registry_id="GHA01",
                status="active",
                confidential_fields=["authorizations.authorized_quantity"],
            )
        )
    await _add_actions(db, range(2))
    service = ReportingService(db)
    for _ in range(3):
        await service.submit(ADMIN, "GHA", YEAR)

    async with _public_app(db) as client:
        pages = await _all_pages(client, "/v1/public/cooperative-approaches", limit=2)
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [ca["ca_id"] for page in pages for ca in page] == [f"CA{n:04d}" for n in range(5)]

        pages = await _all_pages(client, "/v1/public/authorizations", limit=3)
        assert [len(page) for page in pages] == [3, 3, 2]
        items = [item for page in pages for item in page]
        assert [(i["party"], i["authorization_id"], i["version"]) for i in items] == [
            (party, authorization, version)
            for party in ("CHE", "GHA")
            for authorization in ("A-1", "A-2")
            for version in (1, 2)
        ]
        # Ghana's designation holds on every page; Switzerland designated nothing.
        assert all(("authorized_quantity" in i) == (i["party"] == "CHE") for i in items)
        assert (
            len(
                [
                    i
                    for page in await _all_pages(client, "/v1/public/authorizations", party="GHA", limit=1)
                    for i in page
                ]
            )
            == 4
        )

        pages = await _all_pages(client, f"/v1/public/aef/GHA/{YEAR}/submissions", limit=2)
        assert [[i["version"] for i in page] for page in pages] == [["1.0", "1.1"], ["1.2"]]

        unpaged = await client.get("/v1/public/authorizations")
        assert unpaged.json()["next_cursor"] is None and len(unpaged.json()["items"]) == 8

        answer = await client.get("/v1/public/authorizations", params={"cursor": "not-a-cursor"})
        assert answer.status_code == 400, answer.text
        # Right fields, wrong types: refused before any query compares text with a number.
        for path, key in (
            ("/v1/public/cooperative-approaches", {"ca_id": 5}),
            ("/v1/public/authorizations", {"party": "GHA", "authorization_id": "A-1", "version": "2"}),
            (f"/v1/public/aef/GHA/{YEAR}/submissions", {"major": "1", "minor": 0}),
        ):
            answer = await client.get(path, params={"cursor": encode_cursor(key)})
            assert answer.status_code == 400, (path, answer.text)
        # A cursor of another list is refused, not misread.
        first = await client.get("/v1/public/cooperative-approaches", params={"limit": 1})
        answer = await client.get("/v1/public/authorizations", params={"cursor": first.json()["next_cursor"]})
        assert answer.status_code == 400
        assert (await client.get("/v1/public/authorizations", params={"limit": 0})).status_code in (400, 422)

        # A submitted version streams from its chunks without the designated fields.
        answer = await client.get(f"/v1/public/aef/GHA/{YEAR}/submissions/1.2")
        assert answer.status_code == 200 and answer.json()["version"] == "1.2"
        assert [row["first_id"] for row in answer.json()["tables"]["actions"]] == [1, 11]
        assert (await client.get(f"/v1/public/aef/GHA/{YEAR}/submissions/1.3")).status_code == 404

    first_page = await service.submissions(ADMIN, "GHA", YEAR, limit=2)
    second_page = await service.submissions(ADMIN, "GHA", YEAR, limit=2, cursor=first_page["next_cursor"])
    assert [i["version"] for i in first_page["items"] + second_page["items"]] == ["1.0", "1.1", "1.2"]
    assert second_page["next_cursor"] is None


async def _add_movement(db: Database, at: datetime, party: str, **block: Any) -> None:
    async with db.transaction() as session:
        await session.execute(
            insert(movements).values(
                transaction_id=f"late-{at.isoformat()}",
                moved_at=at,
                party=party,
                registry_id=f"{party}01",
                state="held",
                **(_block(1) | block),
            )
        )


async def _snapshots(db: Database) -> list[tuple[Any, ...]]:
    async with db.read() as session:
        result = await session.execute(
            select(year_end_holdings.c.party, year_end_holdings.c.year, year_end_holdings.c.holding_count)
        )
        return [tuple(row) for row in result.all()]


async def test_a_closed_year_s_holdings_freeze_once_no_movement_can_still_be_dated_in_it(
    db: Database,
) -> None:
    await _add_actions(db, range(6))  # GHA keeps runs 0 and 3
    service = ReportingService(db)
    live = await _join(service.report_chunks("GHA", YEAR))
    year_end = datetime(YEAR + 1, 1, 1, tzinfo=UTC)

    # Nothing dated past the year yet, then only within the margin: a submission freezes nothing.
    await service.submit(ADMIN, "GHA", YEAR)
    await _add_movement(db, year_end + LATE_COMMIT_MARGIN / 2, "CHE", ca_id="CA0099")
    await service.submit(ADMIN, "GHA", YEAR)
    assert await _snapshots(db) == []

    # Past the margin: the next submission freezes Table 4, with exactly the rows the repaint gives.
    await _add_movement(db, year_end + LATE_COMMIT_MARGIN * 2, "CHE", ca_id="CA0099")
    await service.submit(ADMIN, "GHA", YEAR)
    assert await _snapshots(db) == [("GHA", YEAR, 2)]
    assert await _join(service.report_chunks("GHA", YEAR)) == live

    # A movement dated inside the closed year arriving now (which the margin rules out) would change a
    # repaint; the frozen year does not move, in the AEF and in C9's roll-forward alike.
    await _add_movement(db, year_end - timedelta(seconds=1), "CHE")  # serials 1-10 leave GHA
    async with snapshot(db) as session:
        repainted = await holdings_at(session, "GHA", year_end)
        checks = {check["code"]: check for check in (await consistency(session, YEAR))["checks"]}
    assert [row["first_id"] for row in repainted] == [31]
    assert await _join(service.report_chunks("GHA", YEAR)) == live
    # (The seeded flows do not roll forward: C9 reports GHA, with the frozen year end, not the repaint.)
    [ghana] = [f for f in checks["C9"]["findings"] if f["party"] == "GHA"]
    assert ghana["holdings_end"] == 20
    await service.submit(ADMIN, "GHA", YEAR)
    assert await _snapshots(db) == [("GHA", YEAR, 2)]  # frozen once


async def test_a_live_read_of_a_closed_year_freezes_it_once_nothing_can_change_it(db: Database) -> None:
    """A Party that never submits: the first live read (JSON or a file) after the margin freezes Table 4
    with the rows the repaint gives; before the margin, and for the current year, nothing is frozen."""
    await _add_actions(db, range(6))
    service = ReportingService(db)
    live = await _join(service.report_chunks("GHA", YEAR))
    year_end = datetime(YEAR + 1, 1, 1, tzinfo=UTC)
    await service.freeze_closed_year("GHA", YEAR)  # nothing dated past the year yet
    await _add_movement(db, year_end + LATE_COMMIT_MARGIN / 2, "CHE", ca_id="CA0099")
    await service.freeze_closed_year("GHA", YEAR)  # within the margin
    assert await _snapshots(db) == []

    await _add_movement(db, year_end + LATE_COMMIT_MARGIN * 2, "CHE", ca_id="CA0099")
    await service.export(ADMIN, "GHA", YEAR, "csv")  # a live export freezes first
    assert await _snapshots(db) == [("GHA", YEAR, 2)]
    assert await _join(service.report_chunks("GHA", YEAR)) == live
    await service.freeze_closed_year("GHA", YEAR)  # once
    await service.freeze_closed_year("GHA", datetime.now(UTC).year)  # the current year: never
    assert await _snapshots(db) == [("GHA", YEAR, 2)]


async def test_c10_checks_actions_against_their_authorization(db: Database) -> None:
    async with db.transaction() as session:
        table2 = {
            "authorization_id": "GH-AUTH-7",
            "authorized_quantity": 25,
            "authorized_timeframe": "2021 - 2023",
            "purposes_for_authorization": "NDC",
        }
        await session.execute(
            insert(authorizations).values(
                party="GHA",
                authorization_id="GH-AUTH-7",
                version=1,
                authorized_on=date(2024, 6, 1),
                status="active",
                table2=table2,
            )
        )
        await session.execute(insert(ndc_periods).values(party="CHE", first_year=2021, last_year=2030))
        for n, (kind, extra) in enumerate(
            [
                ("Use", {"ndc_use_year": 2040}),  # outside Switzerland's NDC period
                ("Use", {"ndc_use_year": 2025}),  # inside: fine
                ("Cancellation", {"purpose_oimp": "CORSIA"}),  # the authorization covers the NDC only
            ]
        ):
            await session.execute(
                insert(aef_actions).values(
                    transaction_id=f"che{n}",
                    party="CHE",
                    registry_id="CHE01",
                    action_at=START + timedelta(days=60, hours=n),
                    action_type=kind,
                    **(_block(10 * n + 1) | {"vintage": 2022}),
                    **extra,
                )
            )
    await _add_actions(db, range(3))  # 30 units first transferred (25 authorized), vintage 2024 (2021-2023)
    async with snapshot(db) as session:
        report = await consistency(session, YEAR)
    [c10] = [check for check in report["checks"] if check["code"] == "C10"]
    assert c10["result"] == "fail"
    reasons = [
        (f["reason"], f["rows"][0]["transaction_id"] if "rows" in f else f["party"]) for f in c10["findings"]
    ]
    assert sorted(reasons) == sorted(
        [
            ("over-authorized-quantity", "GHA"),
            ("vintage-outside-timeframe", "tx0"),
            ("vintage-outside-timeframe", "tx1"),
            ("vintage-outside-timeframe", "tx2"),
            ("use-year-outside-ndc-period", "che0"),
            ("purpose-not-authorized", "che2"),
        ]
    )
    [quantity] = [f for f in c10["findings"] if f["reason"] == "over-authorized-quantity"]
    assert (quantity["authorized_quantity"], quantity["first_transferred"]) == (25, 30)

    # A later version dated in the year raises the quantity and widens the timeframe: those pass.
    async with db.transaction() as session:
        await session.execute(
            insert(authorizations).values(
                party="GHA",
                authorization_id="GH-AUTH-7",
                version=2,
                authorized_on=date(YEAR, 2, 1),
                status="active",
                table2=table2 | {"authorized_quantity": 30, "authorized_timeframe": "2021 - 2025"},
            )
        )
    async with snapshot(db) as session:
        report = await consistency(session, YEAR)
    [c10] = [check for check in report["checks"] if check["code"] == "C10"]
    assert sorted(f["reason"] for f in c10["findings"]) == [
        "purpose-not-authorized",
        "use-year-outside-ndc-period",
    ]


def test_the_migration_moves_stored_bodies_into_chunks_and_back(make_database: Callable[[str], str]) -> None:
    """Sync on purpose: Alembic's command API runs the migrations' own event loop."""
    url = make_database("services.reporting")
    config = alembic_config("services.reporting", url)
    command.downgrade(config, "0003")
    body = ("{" + "é" * (3 << 19) + "}").encode()  # ~3 MiB: more than one chunk, a character cut between two

    async def run(statement: str, **values: Any) -> list[Any]:
        database = Database(url)
        try:
            async with database.transaction() as session:
                result = await session.execute(text(statement), values)
                return list(result.all()) if result.returns_rows else []
        finally:
            await database.dispose()

    asyncio.run(
        run(
            "INSERT INTO submissions (party, year, major, minor, submitted_at, submitted_by, body) "
            "VALUES ('GHA', 2025, 1, 0, :at, 'gha-admin', :body)",
            at=datetime.now(UTC),
            body=body,
        )
    )
    command.upgrade(config, "head")
    chunks = asyncio.run(run("SELECT seq, bytes FROM submission_chunks ORDER BY seq"))
    assert [seq for seq, _ in chunks] == [0, 1, 2, 3]
    assert b"".join(bytes(part) for _, part in chunks) == body
    # 0008 took the digest of the moved version from its chunks.
    assert asyncio.run(run("SELECT size, sha256 FROM submissions")) == [
        (len(body), hashlib.sha256(body).hexdigest())
    ]

    command.downgrade(config, "0003")
    assert [bytes(row[0]) for row in asyncio.run(run("SELECT body FROM submissions"))] == [body]


async def test_corresponding_adjustments_count_each_metric_in_its_own_unit(db: Database) -> None:
    """Domain §7.1 paras 8–9: the additions of a year are the Party's first transfers of that vintage,
    totalled in t CO2 eq (non-GHG converted by the authorization's factor) and per metric in the metric's
    own unit; a first transfer of another vintage and another Party's do not count."""
    non_ghg = {"metric": "non-GHG", "applicable_non_ghg_metric": "MWh", "conversion_factor": "0.5"}

    def first_transfer(n: int, first: int, last: int, **block: Any) -> dict[str, Any]:
        return {
            "transaction_id": f"tx{n}",
            "party": block.pop("party", "GHA"),
            "registry_id": "GHA01",
            "action_at": START + timedelta(hours=n),
            "action_type": "First transfer",
            "action_subtype": "First transfer to another Party",
            "acquiring_party_id": "CHE",
            **(_block(first) | {"last_serial": last} | block),
        }

    async with db.transaction() as session:
        for row in (
            first_transfer(1, 1, 100),  # GHG, vintage 2024: 100 t
            first_transfer(2, 101, 140, **non_ghg),  # 40 MWh at 0.5 t: 20 t
            first_transfer(3, 141, 150, **non_ghg),  # 10 MWh: 5 t
            first_transfer(4, 151, 170, vintage=2023),  # another vintage
            first_transfer(5, 171, 180, party="SEN"),  # another Party
        ):
            await session.execute(insert(aef_actions).values(**row))
    async with db.read() as session:
        view = await corresponding_adjustments(session, "GHA", 2024)
    additions = view["additions"]
    assert additions["quantity_tco2e"] == 125
    assert additions["by_metric"] == [
        {"metric": "GHG", "applicable_non_ghg_metric": None, "quantity": 100},
        {"metric": "non-GHG", "applicable_non_ghg_metric": "MWh", "quantity": 50},
    ]
    assert [
        (b["first_id"], b["quantity_tco2e"], b["quantity_non_ghg_metric"]) for b in additions["blocks"]
    ] == [
        (1, 100, None),
        (101, 20, 40),
        (141, 5, 10),
    ]
    assert view["subtractions"] == {"quantity_tco2e": 0, "by_metric": [], "blocks": []}
