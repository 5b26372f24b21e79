"""Pure parts of the AEF derivation: repainting holdings from movements, maximal runs, file cells."""

import io
import random
from typing import Any

import openpyxl

from services.reporting.aef import paint
from services.reporting.consumer import merge_runs
from services.reporting.exports import HEADINGS, SHEETS, cell_text, write_xlsx


def _row(first: int, last: int, party: str = "CHE", state: str = "held", **extra: Any) -> dict[str, Any]:
    return {
        "ca_id": "CA0012",
        "origin_registry_id": "GHA01",
        "first_serial": first,
        "last_serial": last,
        "party": party,
        "state": state,
        "underlying_registry_id": extra.pop("underlying_registry_id", None),
        "underlying_first": extra.pop("underlying_first", None),
        "underlying_last": extra.pop("underlying_last", None),
        **extra,
    }


def _owner_map(rows: list[dict[str, Any]]) -> dict[int, tuple[str, str]]:
    return {
        s: (r["party"], r["state"])
        for r in paint(rows)
        for s in range(r["first_serial"], r["last_serial"] + 1)
    }


def test_later_movements_win_serial_by_serial() -> None:
    rows = [
        _row(1, 400),
        _row(1, 100, state="used_ndc"),
        _row(150, 200, party="SWE"),
        _row(90, 160, party="GHA"),
    ]
    owners = _owner_map(rows)
    assert owners[1] == ("CHE", "used_ndc") and owners[89] == ("CHE", "used_ndc")
    assert owners[90] == ("GHA", "held") and owners[160] == ("GHA", "held")
    assert owners[161] == ("SWE", "held") and owners[200] == ("SWE", "held")
    assert owners[201] == ("CHE", "held") and owners[400] == ("CHE", "held")
    assert len(owners) == 400


def test_paint_matches_a_serial_by_serial_replay() -> None:
    generator = random.Random(6)
    for _ in range(200):
        rows = []
        for _ in range(generator.randint(1, 12)):
            first = generator.randint(1, 60)
            rows.append(_row(first, first + generator.randint(0, 20), party=generator.choice("AB")))
        expected: dict[int, str] = {}
        for row in rows:
            for serial in range(row["first_serial"], row["last_serial"] + 1):
                expected[serial] = row["party"]
        pieces = paint(rows)
        got = {s: r["party"] for r in pieces for s in range(r["first_serial"], r["last_serial"] + 1)}
        assert got == expected
        assert sum(r["last_serial"] - r["first_serial"] + 1 for r in pieces) == len(expected)


def test_paint_slices_the_underlying_range() -> None:
    rows = [
        _row(1, 100, underlying_registry_id="GS", underlying_first=5001, underlying_last=5100),
        _row(1, 10, state="used_ndc"),
    ]
    [rest] = [r for r in paint(rows) if r["state"] == "held"]
    assert (rest["first_serial"], rest["underlying_first"], rest["underlying_last"]) == (11, 5011, 5100)


def test_maximal_runs_merge_only_contiguous_identical_blocks() -> None:
    rows = [
        _row(11, 20, vintage=2024),
        _row(1, 10, vintage=2024),
        _row(21, 30, vintage=2025),
        _row(32, 40, vintage=2025),
    ]
    runs = merge_runs(rows, ("vintage",))
    assert [(r["first_serial"], r["last_serial"]) for r in runs] == [(1, 20), (21, 30), (32, 40)]


def test_file_cells() -> None:
    assert cell_text("actions", "action_date", "2025-03-03T10:00:00.000Z") == "03/03/2025"
    assert cell_text("authorizations", "date_of_authorization", "2024-06-01") == "01/06/2024"
    assert cell_text("actions", "acquiring_party_id", None) == "NA"
    assert cell_text("actions", "consistency_check_result", None) == ""
    assert cell_text("actions", "first_id", 7) == 7


def test_a_long_table_continues_on_a_second_sheet() -> None:
    empty = {t: [] for t in SHEETS}
    report = {"tables": {**empty, "submission": {}, "holdings": [{"first_id": n} for n in range(5)]}}
    out = io.BytesIO()
    write_xlsx(report, out, max_rows=3)
    workbook = openpyxl.load_workbook(io.BytesIO(out.getvalue()), read_only=True)
    assert workbook.sheetnames == [
        "Table 1 Submission",
        "Table 2 Authorizations",
        "Table 3 Actions",
        "Table 4 Holdings",
        "Table 4 Holdings (2)",
        "Table 4 Holdings (3)",
        "Table 5 Authorized entities",
    ]
    sheets = [list(workbook[name].iter_rows(values_only=True)) for name in workbook.sheetnames[3:6]]
    assert all(rows[0] == HEADINGS["holdings"] for rows in sheets)
    assert [row[4] for rows in sheets for row in rows[1:]] == [0, 1, 2, 3, 4]


def test_overlapping_rows_are_paired_per_series() -> None:
    from services.reporting.consistency import _overlaps

    rows = [
        _row(1, 100, transaction_id="a"),
        _row(50, 60, transaction_id="b"),
        _row(101, 200, transaction_id="c"),
        _row(150, 150, transaction_id="d", origin_registry_id="CHE01"),
        _row(150, 150, transaction_id="e"),
    ]
    pairs = {(a["transaction_id"], b["transaction_id"]) for a, b in _overlaps(rows)}
    assert pairs == {("a", "b"), ("c", "e")}


def test_paint_ranges_merges_a_winner_split_by_nothing() -> None:
    from services.reporting.aef import paint_ranges

    assert list(paint_ranges([1, 11, 5], [10, 20, 15])) == [(0, 1, 4), (2, 5, 15), (1, 16, 20)]
    assert list(paint_ranges([1, 1], [10, 10])) == [(1, 1, 10)]
    assert list(paint_ranges([], [])) == []


def test_validation_never_raises_on_odd_values() -> None:
    from services.reporting.validation import parse_json, validate

    odd: list[Any] = [["x"], {"a": 1}, None, 1.5, True, "", -3]
    for value in odd:
        row = dict.fromkeys(
            (
                "action_type",
                "action_subtype",
                "authorization_id",
                "cooperative_approach_id",
                "first_id",
                "metric",
            ),
            value,
        )
        tables, _ = parse_json(
            {"tables": {"submission": {"party": value}, "actions": [row, value], "holdings": [row]}}
        )
        results = validate(tables)
        assert all(r["code"].startswith(("C1", "C2", "C3", "C4")) for r in results)
    assert parse_json([1, 2])[1][0]["code"] == "C1-08"


def test_a_table_3_row_has_the_aef_keys_in_order_and_the_conditional_cells_of_its_type() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from contracts.aef import AEF_COLUMNS
    from services.reporting.aef import action_row, iso_instant

    source = _row(1, 10, party="GHA") | {
        "action_at": datetime(2025, 3, 3, 10, 15, 0, 123999, tzinfo=UTC),
        "action_type": "Use",
        "action_subtype": None,
        "registry_id": "GHA01",
        "first_transferring_party": "GHA",
        "vintage": 2024,
        "authorization_id": "GH-AUTH-7",
        "metric": "GHG",
        "mitigation_type": "Emission reductions",
        "applicable_gwp_values": None,
        "applicable_non_ghg_metric": None,
        "conversion_factor": None,
        "transferring_party_id": "CHE",
        "acquiring_party_id": "CHE",
        "purpose_oimp": "CORSIA",
        "using_cancelling_party_id": "GHA",
        "using_cancelling_entity_id": "GH-AIRLINE-1",
        "ndc_use_year": None,
    }
    row = action_row(source)
    assert tuple(row) == AEF_COLUMNS["actions"]
    assert row["action_date"] == "2025-03-03T10:15:00.123Z"
    assert (row["transferring_party_id"], row["acquiring_party_id"]) == (None, None)  # not for a Use
    assert (row["purpose_oimp"], row["using_cancelling_entity_id"]) == ("CORSIA", "GH-AIRLINE-1")
    towards_ndc = action_row(source | {"ndc_use_year": 2025})
    assert tuple(towards_ndc) == AEF_COLUMNS["actions"]
    assert [towards_ndc[k] for k in ("purpose_oimp", "using_cancelling_party_id", "ndc_use_year")] == [
        None,
        None,
        2025,
    ]
    acquisition = action_row(source | {"action_type": "Acquisition"})
    assert (acquisition["transferring_party_id"], acquisition["purpose_oimp"]) == ("CHE", None)
    # Any offset, or none (taken as UTC), prints as UTC with milliseconds.
    assert iso_instant(datetime(2025, 1, 1, 1, 0, 0, 5000, tzinfo=timezone(timedelta(hours=2)))) == (
        "2024-12-31T23:00:00.005Z"
    )
    assert iso_instant(datetime(2025, 1, 1)) == "2025-01-01T00:00:00.000Z"
