"""The reporting service end to end through the gateway, on both backends: the worked example of domain
§5.8 in the AEF of both Parties, access, the consumer's replay safety, and submissions."""

import asyncio
import base64
import csv
import hashlib
import io
import json
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import delete, select

from contracts.aef import AEF_COLUMNS
from services.reporting.consumer import Consumer
from services.reporting.exports import HEADINGS, SHEETS
from services.reporting.models import (
    aef_actions,
    authorizations,
    entities,
    feed_cursors,
    inbox,
    movements,
    ndc_periods,
)
from tests.integration._ars_world import ArsWorld, ars_world
from tests.support.suite import BOOTSTRAP_ID

YEAR = datetime.now(UTC).year
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


def consumer(ars: ArsWorld) -> Consumer:
    return ars.world.suite.services["reporting"].state.consumer


async def aef(ars: ArsWorld, party: str, year: int = YEAR, headers: dict | None = None) -> dict[str, Any]:
    await consumer(ars).catch_up()
    answer = await ars.gateway.get(
        f"/v1/reports/aef/{party}/{year}", headers=headers or ars.parties[party].actors.viewer
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def worked_example(ars: ArsWorld, **authorization: Any) -> dict[str, str]:
    """Domain §5.8: 1 000 MOs, GH-AUTH-7, 1–400 first transferred to CHE, 401–500 used for CORSIA."""
    gha, che = ars.parties["GHA"], ars.parties["CHE"]
    answer = await ars.gateway.post("/v1/party-sections/GHA/entities", json=ENTITY, headers=gha.actors.admin)
    assert answer.status_code == 201, answer.text
    await ars.issue("GHA", 1000)
    await ars.authorize("GHA", "GH-AUTH-7", authorized_entities=["GH-AIRLINE-1"], **authorization)
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
    return {"first_transfer": moved.json()["transaction_id"], "use": used.json()["transaction_id"]}


def _unit(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "cooperative_approach_id": "CA0012",
        "authorization_id": "GH-AUTH-7",
        "first_transferring_party_id": "GHA",
        "metric": "GHG",
        "applicable_non_ghg_metric": None,
        "quantity_non_ghg_metric": None,
        "mitigation_type": "Emission reductions",
        "vintage": 2024,
        "underlying_unit_registry_id": None,
        "first_unit_id": None,
        "last_unit_id": None,
    } | row


def _subset(row: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in expected}


async def test_worked_example_of_domain_5_8_in_both_aefs(ars: ArsWorld) -> None:
    await worked_example(ars)
    ghana = await aef(ars, "GHA")
    assert list(ghana) == ["party", "year", "version", "tables"]
    assert (ghana["party"], ghana["year"], ghana["version"]) == ("GHA", YEAR, None)
    tables = ghana["tables"]
    assert list(tables) == list(AEF_COLUMNS)
    for name, rows in tables.items():
        for row in [rows] if name == "submission" else rows:
            assert tuple(row) == AEF_COLUMNS[name], name

    first, use = tables["actions"]
    expected_first = _unit(
        {
            "action_type": "First transfer",
            "action_subtype": "First transfer to another Party",
            "party_itmo_registry_id": "GHA01",
            "first_id": 1,
            "last_id": 400,
            "quantity_tco2e": 400,
            "acquiring_party_id": "CHE",
            "transferring_party_id": None,
            "purpose_oimp": None,
            "using_cancelling_entity_id": None,
            "ndc_use_year": None,
            "consistency_check_result": None,
        }
    )
    assert _subset(first, expected_first) == expected_first
    assert first["action_date"].startswith(f"{YEAR}-") and first["action_date"].endswith("Z")
    expected_use = _unit(
        {
            "action_type": "First transfer",
            "action_subtype": "Use or cancellation",
            "party_itmo_registry_id": "GHA01",
            "first_id": 401,
            "last_id": 500,
            "quantity_tco2e": 100,
            "purpose_oimp": "CORSIA",
            "using_cancelling_entity_id": "GH-AIRLINE-1",
            "acquiring_party_id": None,
            "transferring_party_id": None,
            "ndc_use_year": None,
        }
    )
    assert _subset(use, expected_use) == expected_use
    # 501–1000 are MOs still in the ARS, not ITMOs: no Table 4 row; 401–500 are used: none either.
    assert tables["holdings"] == []
    # GH-AUTH-7 is dated 2024: reported in the 2024 AEF, not this year's.
    assert tables["authorizations"] == []
    assert [e["name"] for e in tables["authorized_entities"]] == ["Ghana Airways"]
    assert tables["authorized_entities"][0]["date_of_the_authorization"] == "2024-05-01"
    submission = tables["submission"]
    assert submission["party"] == "GHA" and submission["reported_year"] == YEAR
    assert submission["first_year_of_the_ndc_implementation_period"] == 2021
    assert submission["last_year_of_the_ndc_implementation_period"] == 2030

    of_2024 = (await aef(ars, "GHA", 2024))["tables"]
    assert [
        (a["authorization_id"], a["version_of_the_authorization"]) for a in of_2024["authorizations"]
    ] == [("GH-AUTH-7", 1)]
    assert of_2024["authorizations"][0]["purposes_for_authorization"] == "NDC and OIMP"
    assert of_2024["actions"] == [] and of_2024["holdings"] == []

    swiss = (await aef(ars, "CHE"))["tables"]
    [acquisition] = swiss["actions"]
    expected_acquisition = _unit(
        {
            "action_type": "Acquisition",
            "action_subtype": None,
            "party_itmo_registry_id": "CHE01",
            "first_id": 1,
            "last_id": 400,
            "quantity_tco2e": 400,
            "transferring_party_id": "GHA",
            "acquiring_party_id": None,
            "purpose_oimp": None,
            "ndc_use_year": None,
        }
    )
    assert _subset(acquisition, expected_acquisition) == expected_acquisition
    [holding] = swiss["holdings"]
    assert tuple(holding) == AEF_COLUMNS["holdings"]
    assert holding == {
        key: value
        for key, value in _unit(
            {"party_itmo_registry_id": "CHE01", "first_id": 1, "last_id": 400, "quantity_tco2e": 400}
        ).items()
    } | {"applicable_gwp_values": None}

    # "later Use, calendar year ... when used; T4 holds 1–400 until used."
    che = ars.parties["CHE"].actors
    answer = await ars.world.transact(
        che, {"type": "use_ndc", "from_account": che.holding, "quantity": 400, "ndc_use_year": YEAR}
    )
    assert answer.status_code == 201, answer.text
    swiss = (await aef(ars, "CHE"))["tables"]
    assert [(a["action_type"], a["first_id"], a["last_id"], a["ndc_use_year"]) for a in swiss["actions"]] == [
        ("Acquisition", 1, 400, None),
        ("Use", 1, 400, YEAR),
    ]
    assert swiss["actions"][1]["purpose_oimp"] is None and swiss["actions"][1]["acquiring_party_id"] is None
    assert swiss["holdings"] == []


async def test_access_to_an_aef(ars: ArsWorld) -> None:
    path = "/v1/reports/aef/GHA/2025"
    swe = ars.parties["SWE"].actors
    assert (await ars.gateway.get(path, headers=swe.viewer)).status_code == 403
    assert (await ars.gateway.get(path, headers=swe.admin)).status_code == 403
    assert (await ars.gateway.get(path, headers=ars.admin)).status_code == 200
    assert (await ars.gateway.get(path, headers=ars.parties["GHA"].actors.viewer)).status_code == 200
    auditor = await ars.world.suite.new_client(name="TER", party=None, roles=["auditor"])
    token = await ars.world.suite.token(auditor["client_id"], auditor["client_secret"])
    assert (await ars.gateway.get(path, headers={"Authorization": f"Bearer {token}"})).status_code == 200
    assert (await ars.gateway.get(path)).status_code == 401
    assert (await ars.gateway.get("/v1/reports/aef/GHA/1999", headers=ars.admin)).status_code == 422
    # Submitting is the Party's party_admin's act.
    submissions = f"{path}/submissions"
    assert (await ars.gateway.post(submissions, headers=ars.parties["GHA"].actors.viewer)).status_code == 403
    assert (await ars.gateway.post(submissions, headers=swe.admin)).status_code == 403
    assert (await ars.gateway.post(submissions, headers=ars.admin)).status_code == 403


async def _read_model(ars: ArsWorld) -> dict[str, list]:
    db = ars.world.suite.services["reporting"].state.db
    async with db.read() as session:
        out = {}
        for table in (aef_actions, movements, authorizations, entities, ndc_periods, inbox):
            columns = [c for c in table.c if c.name not in ("id", "applied_at")]
            rows = (await session.execute(select(*columns))).all()
            out[table.name] = sorted(map(repr, rows))
        return out


async def test_replays_and_restarts_never_double_count(ars: ArsWorld) -> None:
    await worked_example(ars)
    reporting = ars.world.suite.services["reporting"]
    first = consumer(ars)
    await first.catch_up()
    before = await _read_model(ars)
    report = await aef(ars, "CHE")

    # The same page applied twice more: nothing changes.
    page = await first.fetch("transactions", 0)
    assert page.items
    assert await first.apply_page("transactions", page) == 0
    # Cursors reset (a restart that lost them): the inbox keeps every event from applying again.
    async with reporting.state.db.transaction() as session:
        await session.execute(delete(feed_cursors))
    again = Consumer(reporting.state.db, reporting.state.peers)
    assert await again.catch_up() == 0
    assert await _read_model(ars) == before
    assert await aef(ars, "CHE") == report

    # Everything dropped and rebuilt from the feeds: the same tables.
    async with reporting.state.db.transaction() as session:
        for table in (feed_cursors, inbox, aef_actions, movements, authorizations, entities, ndc_periods):
            await session.execute(delete(table))
    assert await again.catch_up() > 0
    assert await _read_model(ars) == before
    assert await aef(ars, "CHE") == report


async def test_a_completed_action_shows_within_two_seconds(ars: ArsWorld) -> None:
    await worked_example(ars)
    await consumer(ars).catch_up()
    che = ars.parties["CHE"].actors
    answer = await ars.world.transact(
        che, {"type": "use_ndc", "from_account": che.holding, "quantity": 10, "ndc_use_year": YEAR}
    )
    assert answer.status_code == 201, answer.text
    started = time.monotonic()
    while True:  # the background consumer alone, no catch_up()
        got = await ars.gateway.get(f"/v1/reports/aef/CHE/{YEAR}", headers=che.viewer)
        if any(a["action_type"] == "Use" for a in got.json()["tables"]["actions"]):
            break
        assert time.monotonic() - started < 2.0, "the Use did not show within 2 s"
        await asyncio.sleep(0.05)


async def test_submissions_are_frozen_byte_for_byte(ars: ArsWorld) -> None:
    await worked_example(ars)
    await consumer(ars).catch_up()
    che = ars.parties["CHE"].actors
    base = f"/v1/reports/aef/CHE/{YEAR}/submissions"
    answer = await ars.gateway.post(base, headers=che.admin)
    assert answer.status_code == 201, answer.text
    submitted, frozen = answer, answer.content
    body = answer.json()
    assert body["version"] == "1.0" and body["tables"]["submission"]["version"] == "1.0"
    assert body["tables"]["submission"]["date_of_submission"] == datetime.now(UTC).date().isoformat()
    assert len(body["tables"]["holdings"]) == 1

    # The records move on; version 1.0 does not.
    answer = await ars.world.transact(
        che,
        {"type": "use_ndc", "from_account": che.holding, "quantity": 400, "ndc_use_year": YEAR},
        key=uuid.uuid4().hex,
    )
    assert answer.status_code == 201, answer.text
    await consumer(ars).catch_up()
    second = await ars.gateway.post(base, headers=che.admin)
    assert second.status_code == 201 and second.json()["version"] == "1.1"
    assert second.json()["tables"]["holdings"] == []

    # Its digest (RFC 9530 Repr-Digest) and tag, through the gateway, on the POST's answer and every GET.
    digest = hashlib.sha256(frozen)
    tag = f'"{digest.hexdigest()}"'
    assert submitted.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"
    assert submitted.headers["etag"] == tag
    for _ in range(2):
        again = await ars.gateway.get(f"{base}/1.0", headers=che.viewer)
        assert again.status_code == 200 and again.content == frozen
        assert int(again.headers["content-length"]) == len(frozen)  # the stored size, known before streaming
        assert (again.headers["repr-digest"], again.headers["etag"]) == (
            submitted.headers["repr-digest"],
            tag,
        )
    unchanged = await ars.gateway.get(f"{base}/1.0", headers={**che.viewer, "If-None-Match": f'"x", {tag}'})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == tag
    stale = await ars.gateway.get(f"{base}/1.1", headers={**che.viewer, "If-None-Match": tag})
    assert (
        stale.status_code == 200 and stale.headers["etag"] == f'"{hashlib.sha256(stale.content).hexdigest()}"'
    )
    listed = await ars.gateway.get(base, headers=che.viewer)
    assert [item["version"] for item in listed.json()["items"]] == ["1.0", "1.1"]
    assert listed.json()["items"][0]["sha256"] == digest.hexdigest()
    assert (await ars.gateway.get(f"{base}/1.2", headers=che.viewer)).status_code == 404
    assert (await ars.gateway.get(f"{base}/x", headers=che.viewer)).status_code == 404
    assert (await ars.gateway.get(f"{base}/1.0", headers=ars.parties["GHA"].actors.viewer)).status_code == 403


def _sheet(workbook: Any, title: str) -> list[list[Any]]:
    return [list(row) for row in workbook[title].iter_rows(values_only=True)]


async def test_worked_example_in_the_xlsx_and_csv_exports(ars: ArsWorld) -> None:
    await worked_example(ars)
    await consumer(ars).catch_up()
    today = datetime.now(UTC).strftime("%d/%m/%Y")
    for party, expected_actions, expected_holdings in (
        (
            "GHA",
            [
                ("First transfer", "First transfer to another Party", 1, 400, 400, "CHE", "NA", "NA", "NA"),
                (
                    "First transfer",
                    "Use or cancellation",
                    401,
                    500,
                    100,
                    "NA",
                    "NA",
                    "CORSIA",
                    "GH-AIRLINE-1",
                ),
            ],
            [],
        ),
        ("CHE", [("Acquisition", "NA", 1, 400, 400, "NA", "GHA", "NA", "NA")], [("CHE01", 1, 400, 400)]),
    ):
        answer = await ars.gateway.get(
            f"/v1/reports/aef/{party}/{YEAR}",
            params={"format": "xlsx"},
            headers=ars.parties[party].actors.viewer,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        workbook = openpyxl.load_workbook(io.BytesIO(answer.content), read_only=True)
        assert workbook.sheetnames == list(SHEETS.values())
        for table, title in SHEETS.items():
            assert tuple(_sheet(workbook, title)[0]) == HEADINGS[table]
        header, *rows = _sheet(workbook, "Table 3 Actions")
        column = {heading: index for index, heading in enumerate(header)}
        picked = [
            tuple(
                row[column[h]]
                for h in (
                    "Action type",
                    "Action subtype",
                    "First ID",
                    "Last ID",
                    "Quantity (t CO2 eq)",
                    "Acquiring participating Party ID",
                    "Transferring participating Party ID",
                    "Purpose for which the ITMO has been used towards or cancelled for OIMP",
                    "Using/cancelling authorized entity ID",
                )
            )
            for row in rows
        ]
        assert picked == expected_actions
        assert all(row[column["Action date"]] == today for row in rows)
        assert all(row[column["Result of the consistency checks"]] in (None, "") for row in rows)
        assert all(row[column["Vintage"]] == 2024 for row in rows)
        header, *rows = _sheet(workbook, "Table 4 Holdings")
        column = {heading: index for index, heading in enumerate(header)}
        assert [
            tuple(
                row[column[h]]
                for h in ("Party ITMO registry ID", "First ID", "Last ID", "Quantity (t CO2 eq)")
            )
            for row in rows
        ] == expected_holdings
        [_, submission] = _sheet(workbook, "Table 1 Submission")
        assert submission[:4] == [party, "NA", YEAR, "NA"]

        answer = await ars.gateway.get(
            f"/v1/reports/aef/{party}/{YEAR}",
            params={"format": "csv"},
            headers=ars.parties[party].actors.viewer,
        )
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(answer.content))
        assert archive.namelist() == [f"{title}.csv" for title in SHEETS.values()]
        actions = list(csv.reader(io.TextIOWrapper(archive.open("Table 3 Actions.csv"), encoding="utf-8")))
        assert tuple(actions[0]) == HEADINGS["actions"]
        assert [(r[1], r[7], r[8]) for r in actions[1:]] == [
            (a[0], str(a[2]), str(a[3])) for a in expected_actions
        ]
        assert actions[1][0] == today

    # A frozen version exports too.
    che = ars.parties["CHE"].actors
    answer = await ars.gateway.post(f"/v1/reports/aef/CHE/{YEAR}/submissions", headers=che.admin)
    assert answer.status_code == 201
    answer = await ars.gateway.get(
        f"/v1/reports/aef/CHE/{YEAR}/submissions/1.0", params={"format": "xlsx"}, headers=che.viewer
    )
    workbook = openpyxl.load_workbook(io.BytesIO(answer.content), read_only=True)
    [_, submission] = _sheet(workbook, "Table 1 Submission")
    assert submission[:4] == ["CHE", "1.0", YEAR, today]


async def test_consistency_checks_and_corresponding_adjustments(ars: ArsWorld) -> None:
    await worked_example(ars)
    che = ars.parties["CHE"].actors
    answer = await ars.world.transact(
        che, {"type": "use_ndc", "from_account": che.holding, "quantity": 400, "ndc_use_year": YEAR}
    )
    assert answer.status_code == 201, answer.text
    await consumer(ars).catch_up()

    path = f"/v1/reports/consistency/{YEAR}"
    assert (await ars.gateway.get(path, headers=che.admin)).status_code == 403
    answer = await ars.gateway.get(path, headers=ars.admin)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert {"GHA", "CHE"} <= set(report["parties"])
    assert [(c["code"], c["result"]) for c in report["checks"]] == [
        ("C6", "pass"),
        ("C7", "pass"),
        ("C8", "pass"),
        ("C9", "pass"),
        ("C10", "pass"),
    ]

    # Additions by vintage for Ghana, subtractions by year of use for Switzerland (domain §7.1).
    answer = await ars.gateway.get(
        "/v1/reports/corresponding-adjustments/GHA/2024", headers=ars.parties["GHA"].actors.viewer
    )
    assert answer.status_code == 200, answer.text
    ghana = answer.json()
    assert ghana["additions"]["quantity_tco2e"] == 500
    assert [(b["first_id"], b["last_id"]) for b in ghana["additions"]["blocks"]] == [(1, 400), (401, 500)]
    assert ghana["additions"]["by_metric"] == [
        {"metric": "GHG", "applicable_non_ghg_metric": None, "quantity": 500}
    ]
    assert ghana["subtractions"] == {"quantity_tco2e": 0, "by_metric": [], "blocks": []}
    answer = await ars.gateway.get(f"/v1/reports/corresponding-adjustments/CHE/{YEAR}", headers=che.viewer)
    swiss = answer.json()
    assert swiss["subtractions"]["quantity_tco2e"] == 400 and swiss["additions"]["quantity_tco2e"] == 0
    assert (
        await ars.gateway.get(
            f"/v1/reports/corresponding-adjustments/CHE/{YEAR}", headers=ars.parties["GHA"].actors.viewer
        )
    ).status_code == 403

    # Lose Switzerland's acquisition row: C7 and C9 notice.
    db = ars.world.suite.services["reporting"].state.db
    async with db.transaction() as session:
        await session.execute(delete(aef_actions).where(aef_actions.c.action_type == "Acquisition"))
    checks = {c["code"]: c for c in (await ars.gateway.get(path, headers=ars.admin)).json()["checks"]}
    assert checks["C7"]["result"] == "fail"
    assert checks["C7"]["findings"][0]["reason"] == "no-matching-acquisition"
    assert checks["C7"]["findings"][0]["rows"][0]["party"] == "GHA"
    assert checks["C9"]["result"] == "fail" and checks["C9"]["findings"][0]["party"] == "CHE"
    assert checks["C6"]["result"] == checks["C8"]["result"] == "pass"


async def test_validate_runs_c1_to_c4_on_json_and_xlsx(ars: ArsWorld) -> None:
    await worked_example(ars)
    await consumer(ars).catch_up()
    gha = ars.parties["GHA"].actors
    frozen = await ars.gateway.post(f"/v1/reports/aef/GHA/{YEAR}/submissions", headers=gha.admin)
    assert frozen.status_code == 201
    document = frozen.json()
    path = "/v1/reports/aef/validate"

    answer = await ars.gateway.post(path, json=document, headers=gha.viewer)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "pass", answer.json()["results"]
    workbook = await ars.gateway.get(
        f"/v1/reports/aef/GHA/{YEAR}/submissions/1.0", params={"format": "xlsx"}, headers=gha.viewer
    )
    answer = await ars.gateway.post(
        path,
        content=workbook.content,
        headers={
            **gha.viewer,
            "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "pass", answer.json()["results"]

    # Break it in one way per check.
    tables = document["tables"]
    first, use = tables["actions"]
    first["quantity_tco2e"] = 399  # C3-02
    first["consistency_check_result"] = "consistent"  # C1-04
    use["transferring_party_id"] = "CHE"  # C1-05: only on Acquisition
    use["using_cancelling_entity_id"] = "NOBODY"  # C2-02
    tables["actions"].append(
        dict(first, action_type="Use", action_subtype="Issuance", acquiring_party_id=None)
    )  # C1-07
    tables["holdings"].append(
        _unit({"party_itmo_registry_id": "GHA01", "first_id": 450, "last_id": 460, "quantity_tco2e": 11})
        | {"applicable_gwp_values": None, "authorization_id": "GH-AUTH-99", "vintage": 2023}
    )  # C2-01, C4-01 (401–500 used), C4-02 (vintage)
    tables["submission"]["party"] = "Ghana"  # C1-02
    answer = await ars.gateway.post(path, json=document, headers=gha.viewer)
    body = answer.json()
    assert body["result"] == "fail"
    found = {(r["code"], r["table"], r["row"], r["column"]) for r in body["results"]}
    assert {
        ("C3-02", "actions", 1, "quantity_tco2e"),
        ("C1-04", "actions", 1, "consistency_check_result"),
        ("C1-05", "actions", 2, "transferring_party_id"),
        ("C2-02", "actions", 2, "using_cancelling_entity_id"),
        ("C1-07", "actions", 3, "action_subtype"),
        ("C2-01", "holdings", 1, "authorization_id"),
        ("C4-01", "holdings", 1, "first_id"),
        ("C4-02", "holdings", 1, "vintage"),
        ("C1-02", "submission", None, "party"),
    } <= found
    assert body["counts"]["C1"] >= 4 and body["counts"]["C4"] >= 2

    not_xlsx = await ars.gateway.post(
        path, content=b"nonsense", headers={**gha.viewer, "Content-Type": "application/octet-stream"}
    )
    assert not_xlsx.status_code == 200 and not_xlsx.json()["results"][0]["code"] == "C1-08"
    bad_json = await ars.gateway.post(
        path, content=b"{", headers={**gha.viewer, "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400


async def test_the_public_register_never_shows_a_confidential_field(ars: ArsWorld) -> None:
    gha = ars.parties["GHA"].actors
    section = await ars.gateway.get("/v1/party-sections/GHA", headers=gha.admin)
    designations = [
        {"field": "authorizations.authorized_quantity", "basis": "commercially sensitive"},
        {"field": "actions.using_cancelling_entity_id", "basis": "the airline's privacy"},
    ]
    answer = await ars.gateway.patch(
        "/v1/party-sections/GHA/settings",
        json={"confidential_fields": designations},
        headers={**gha.admin, "If-Match": section.headers["etag"]},
    )
    assert answer.status_code == 200, answer.text
    await worked_example(ars, authorized_quantity=7777)
    await consumer(ars).catch_up()
    for year in (2024, YEAR):
        answer = await ars.gateway.post(f"/v1/reports/aef/GHA/{year}/submissions", headers=gha.admin)
        assert answer.status_code == 201
    # The Party itself sees everything.
    own = (await ars.gateway.get("/v1/reports/aef/GHA/2024/submissions/1.0", headers=gha.viewer)).json()
    assert own["tables"]["authorizations"][0]["authorized_quantity"] == 7777
    own = (await ars.gateway.get(f"/v1/reports/aef/GHA/{YEAR}/submissions/1.0", headers=gha.viewer)).json()
    assert own["tables"]["actions"][1]["using_cancelling_entity_id"] == "GH-AIRLINE-1"

    public = {}
    for path in (
        "/v1/public/authorizations",
        "/v1/public/authorizations?party=GHA",
        "/v1/public/cooperative-approaches",
        "/v1/public/parties/GHA/totals",
        "/v1/public/parties/CHE/totals",
        "/v1/public/aef/GHA/2024/submissions",
        "/v1/public/aef/GHA/2024/submissions/1.0",
        f"/v1/public/aef/GHA/{YEAR}/submissions/1.0",
    ):
        answer = await ars.gateway.get(path)  # no token
        assert answer.status_code == 200, (path, answer.text)
        public[path] = answer
        assert "7777" not in answer.text, (path, answer.text)
        assert "authorized_quantity" not in answer.text and "using_cancelling_entity_id" not in answer.text, (
            path
        )
    [authorization] = public["/v1/public/authorizations?party=GHA"].json()["items"]
    assert authorization["authorization_id"] == "GH-AUTH-7" and authorization["purposes_for_authorization"]
    assert [c["ca_id"] for c in public["/v1/public/cooperative-approaches"].json()["items"]] == ["CA0012"]
    assert public["/v1/public/parties/CHE/totals"].json()["holdings_tco2e"] == 400
    assert public["/v1/public/parties/GHA/totals"].json()["actions_tco2e"] == {"First transfer": 500}
    frozen = public[f"/v1/public/aef/GHA/{YEAR}/submissions/1.0"].json()
    assert [a["first_id"] for a in frozen["tables"]["actions"]] == [1, 401]
    assert "GH-AIRLINE-1" not in json.dumps(frozen["tables"]["actions"])

    # The same versions as files: the designated columns are left out whole, headings and cells.
    for version_year in (2024, YEAR):
        path = f"/v1/public/aef/GHA/{version_year}/submissions/1.0"
        workbook_file = await ars.gateway.get(path, params={"format": "xlsx"})
        zipped = await ars.gateway.get(path, params={"format": "csv"})
        assert workbook_file.status_code == zipped.status_code == 200
        workbook = openpyxl.load_workbook(io.BytesIO(workbook_file.content), read_only=True)
        sheets = {title: _sheet(workbook, title) for title in workbook.sheetnames}
        with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
            files = {name: archive.read(name).decode() for name in archive.namelist()}
        cells = json.dumps(sheets, default=str) + json.dumps(files)
        for secret in ("7777", HEADINGS["authorizations"][4], "Using/cancelling authorized entity"):
            assert secret not in cells, (version_year, secret)
        actions_text = json.dumps(sheets[SHEETS["actions"]]) + files[f"{SHEETS['actions']}.csv"]
        assert "GH-AIRLINE-1" not in actions_text  # (Table 2 names the entity it authorizes: not designated)
        authorizations = sheets[SHEETS["authorizations"]]
        expected = [h for h in HEADINGS["authorizations"] if h != HEADINGS["authorizations"][4]]
        assert authorizations[0] == expected and all(len(row) == len(expected) for row in authorizations)
        actions = sheets[SHEETS["actions"]]
        assert len(actions[0]) == len(HEADINGS["actions"]) - 1 and all(
            len(r) == len(actions[0]) for r in actions
        )
        csv_actions = list(csv.reader(io.StringIO(files[f"{SHEETS['actions']}.csv"])))
        assert csv_actions[0] == actions[0]
    assert [row[7] for row in actions[1:]] == [1, 401]  # first_id: before the left-out column, in place

    # Nor to another Party: it cannot read Ghana's AEF, and its own carries nothing of Ghana's.
    che = ars.parties["CHE"].actors
    assert (await ars.gateway.get(f"/v1/reports/aef/GHA/{YEAR}", headers=che.admin)).status_code == 403
    assert (
        await ars.gateway.get(f"/v1/reports/aef/GHA/{YEAR}/submissions/1.0", headers=che.admin)
    ).status_code == 403
    swiss = await ars.gateway.get(f"/v1/reports/aef/CHE/{YEAR}", headers=che.viewer)
    assert "7777" not in swiss.text and "GH-AIRLINE-1" not in swiss.text


async def test_reads_from_outside_the_party_are_logged_for_it(ars: ArsWorld) -> None:
    """Domain §6: every read of Ghana's reports by the Secretariat (live AEF as JSON and CSV, a submitted
    version, its corresponding adjustments, a consistency report naming it) leaves a line Ghana can read,
    with what it had designated confidential then; Ghana's own reads leave none; Switzerland reads none of
    Ghana's lines."""
    gha, che = ars.parties["GHA"].actors, ars.parties["CHE"].actors
    section = await ars.gateway.get("/v1/party-sections/GHA", headers=gha.admin)
    designated = {"field": "actions.using_cancelling_entity_id", "basis": "the airline's privacy"}
    answer = await ars.gateway.patch(
        "/v1/party-sections/GHA/settings",
        json={"confidential_fields": [designated]},
        headers={**gha.admin, "If-Match": section.headers["etag"]},
    )
    assert answer.status_code == 200, answer.text
    await worked_example(ars)
    await consumer(ars).catch_up()
    assert (
        await ars.gateway.post(f"/v1/reports/aef/GHA/{YEAR}/submissions", headers=gha.admin)
    ).status_code == 201
    for path, params in (
        (f"/v1/reports/aef/GHA/{YEAR}", {}),  # GHA's own reads: not logged
        (f"/v1/reports/aef/GHA/{YEAR}/submissions/1.0", {}),
    ):
        assert (await ars.gateway.get(path, params=params, headers=gha.viewer)).status_code == 200
    for path, params in (
        (f"/v1/reports/aef/GHA/{YEAR}", {}),
        (f"/v1/reports/aef/GHA/{YEAR}", {"format": "csv"}),
        (f"/v1/reports/aef/GHA/{YEAR}/submissions/1.0", {}),
        (f"/v1/reports/corresponding-adjustments/GHA/{YEAR}", {}),
        (f"/v1/reports/consistency/{YEAR}", {}),
    ):
        assert (await ars.gateway.get(path, params=params, headers=ars.admin)).status_code == 200, path
    assert (
        await ars.gateway.get(f"/v1/reports/aef/GHA/{YEAR}/submissions/9.9", headers=ars.admin)
    ).status_code == 404

    answer = await ars.gateway.get("/v1/reports/reads/GHA", headers=gha.viewer)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [(i["subject"], i["version"], i["format"]) for i in items] == [
        ("consistency", None, "json"),
        ("corresponding_adjustments", None, "json"),
        ("submission", "1.0", "json"),
        ("aef", None, "csv"),
        ("aef", None, "json"),
    ]  # newest first; the 404 read nothing
    assert {(i["party"], i["year"], i["client_id"]) for i in items} == {("GHA", YEAR, BOOTSTRAP_ID)}
    assert all(i["designated"] == ["actions.using_cancelling_entity_id"] for i in items)
    assert "secretariat_admin" in items[0]["roles"]
    first = await ars.gateway.get("/v1/reports/reads/GHA", params={"limit": 2}, headers=ars.admin)
    rest = await ars.gateway.get(
        "/v1/reports/reads/GHA", params={"cursor": first.json()["next_cursor"]}, headers=ars.admin
    )
    assert first.json()["items"] + rest.json()["items"] == items and rest.json()["next_cursor"] is None

    assert (await ars.gateway.get("/v1/reports/reads/GHA", headers=che.viewer)).status_code == 403
    swiss = (await ars.gateway.get("/v1/reports/reads/CHE", headers=che.viewer)).json()["items"]
    assert [(i["subject"], i["designated"]) for i in swiss] == [("consistency", [])]
