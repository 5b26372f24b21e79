"""The streaming XLSX writer: what it writes, openpyxl (our validator's reader) reads back unchanged."""

import io
import zipfile
from typing import Any

import openpyxl
import pytest

from contracts.aef import AEF_COLUMNS
from services.reporting import xlsx
from services.reporting.exports import HEADINGS, SHEETS, write_xlsx
from services.reporting.validation import parse_xlsx, validate
from services.reporting.xlsx import SheetTooLarge, StreamingWorkbook, xml_text


def _read(data: bytes, read_only: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=read_only)
    return {name: list(workbook[name].iter_rows(values_only=True)) for name in workbook.sheetnames}


def _report(actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    submission = dict.fromkeys(AEF_COLUMNS["submission"]) | {"party": "GHA", "reported_year": 2025}
    return {
        "tables": {
            "submission": submission,
            "authorizations": [],
            "actions": actions or [],
            "holdings": [],
            "authorized_entities": [],
        }
    }


def _action(first: int, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(AEF_COLUMNS["actions"])
    return row | {
        "action_date": "2025-03-04T10:15:00.123Z",
        "action_type": "First transfer",
        "action_subtype": "First transfer to another Party",
        "cooperative_approach_id": "CA0012",
        "authorization_id": "GH-AUTH-7",
        "first_transferring_party_id": "GHA",
        "party_itmo_registry_id": "GHA01",
        "first_id": first,
        "last_id": first + 9,
        "metric": "GHG",
        "quantity_tco2e": 10,
        "mitigation_type": "Emission reductions",
        "vintage": 2024,
        "acquiring_party_id": "CHE",
        **values,
    }


def test_values_round_trip_through_openpyxl_in_both_reading_modes() -> None:
    out = io.BytesIO()
    book = StreamingWorkbook(out)
    book.add_sheet("Values")
    row = ["text", "", None, 0, -17, 2**53, 1.5, 0.1, 1e-07, True, False, "NA", "04/03/2025", "42"]
    book.append_row(row)
    book.add_sheet("Second")
    book.append_row(["only"])
    book.close()
    for read_only in (True, False):
        sheets = _read(out.getvalue(), read_only)
        assert list(sheets) == ["Values", "Second"]
        [got] = sheets["Values"]
        # Empty strings are empty cells; a number-looking text stays text (a Party ID, a date).
        assert list(got) == [
            "text",
            None,
            None,
            0,
            -17,
            2**53,
            1.5,
            0.1,
            1e-07,
            True,
            False,
            "NA",
            "04/03/2025",
            "42",
        ]
        assert [type(value) for value in got[3:7]] == [int, int, int, float]
        assert sheets["Second"] == [("only",)]


def test_text_is_escaped_and_characters_xml_cannot_carry_are_dropped() -> None:
    out = io.BytesIO()
    book = StreamingWorkbook(out)
    book.add_sheet('A & "B" <c>')
    tricky = [
        "Tom & Jerry <b>bold</b>",
        "say \"hi\" & 'bye'",
        "]]> <![CDATA[ x",
        "&amp; stays literal",
        "  padded  ",
        "line\nbreak\ttab",
        "bell\x07 nul\x00 esc\x1b",
        "lone \ud800 surrogate \ufffe",
        "Zürich – 東京 😀",
    ]
    book.append_row(tricky)
    book.close()
    for read_only in (True, False):
        sheets = _read(out.getvalue(), read_only)
        assert list(sheets) == ['A & "B" <c>']
        assert list(sheets['A & "B" <c>'][0]) == [
            "Tom & Jerry <b>bold</b>",
            "say \"hi\" & 'bye'",
            "]]> <![CDATA[ x",
            "&amp; stays literal",
            "  padded  ",
            "line\nbreak\ttab",
            "bell nul esc",
            "lone  surrogate ",
            "Zürich – 東京 😀",
        ]
    assert xml_text("a<b") == "a&lt;b" and xml_text("plain") == "plain"


def test_the_package_has_the_parts_a_spreadsheet_program_needs() -> None:
    out = io.BytesIO()
    write_xlsx(_report([_action(1)]), out)
    archive = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    names = set(archive.namelist())
    assert {
        "[Content_Types].xml",
        "_rels/.rels",
        "xl/workbook.xml",
        "xl/_rels/workbook.xml.rels",
        "xl/styles.xml",
        "docProps/core.xml",
        "docProps/app.xml",
    } | {f"xl/worksheets/sheet{n}.xml" for n in range(1, 6)} == names
    types = archive.read("[Content_Types].xml").decode()
    assert all(f"/xl/worksheets/sheet{n}.xml" in types for n in range(1, 6))
    assert archive.testzip() is None
    # No ZIP64 entries (some spreadsheet programs refuse them) and every part deflated.
    assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())
    assert all(info.extract_version < 45 for info in archive.infolist())


def test_the_export_reads_back_with_verbatim_headings_dates_na_and_blank_carp_columns() -> None:
    out = io.BytesIO()
    write_xlsx(_report([_action(1), _action(11, using_cancelling_entity_id="A&B <Ltd>")]), out)
    sheets = _read(out.getvalue())
    assert list(sheets) == list(SHEETS.values())
    for table, title in SHEETS.items():
        assert sheets[title][0] == HEADINGS[table]
    header, *rows = sheets["Table 3 Actions"]
    column = {heading: index for index, heading in enumerate(header)}
    assert [row[column["First ID"]] for row in rows] == [1, 11]
    assert rows[0][column["Action date"]] == "04/03/2025"
    assert rows[0][column["Transferring participating Party ID"]] == "NA"
    assert rows[0][column["Result of the consistency checks"]] is None  # CARP's column, left blank
    assert rows[1][column["Using/cancelling authorized entity ID"]] == "A&B <Ltd>"
    assert sheets["Table 1 Submission"][1][:4] == ("GHA", "NA", 2025, "NA")
    # Our own validator parses it back into the JSON values.
    tables, problems = parse_xlsx(out.getvalue())
    assert problems == []
    assert [row["first_id"] for row in tables["actions"]] == [1, 11]
    assert tables["actions"][1]["using_cancelling_entity_id"] == "A&B <Ltd>"
    assert not [r for r in validate(tables) if r["table"] == "actions" and r["check"] == "C3"]


def test_a_long_table_continues_on_numbered_sheets() -> None:
    out = io.BytesIO()
    write_xlsx(_report([_action(10 * i + 1) for i in range(7)]), out, max_rows=3)
    sheets = _read(out.getvalue())
    assert list(sheets) == [
        "Table 1 Submission",
        "Table 2 Authorizations",
        "Table 3 Actions",
        "Table 3 Actions (2)",
        "Table 3 Actions (3)",
        "Table 3 Actions (4)",
        "Table 4 Holdings",
        "Table 5 Authorized entities",
    ]
    parts = [sheets[name] for name in list(sheets)[2:6]]
    assert [len(rows) for rows in parts] == [3, 3, 3, 2]  # headings + at most max_rows - 1 rows each
    assert all(rows[0] == HEADINGS["actions"] for rows in parts)
    assert [row[7] for rows in parts for row in rows[1:]] == [10 * i + 1 for i in range(7)]
    tables, problems = parse_xlsx(out.getvalue())
    assert problems == [] and [row["first_id"] for row in tables["actions"]] == [10 * i + 1 for i in range(7)]


def test_a_sheet_about_to_need_zip64_continues_on_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.BytesIO()
    book = StreamingWorkbook(out, max_part_bytes=len(xlsx._SHEET_START) + len(xlsx._SHEET_END) + 100)
    book.add_sheet("Small")
    book.append_row(["x" * 40])
    with pytest.raises(SheetTooLarge):
        book.append_row(["y" * 40])
    book.close()
    assert _read(out.getvalue())["Small"] == [("x" * 40,)]

    # Through the export: rows that overflow the byte budget go on a continuation sheet, none is lost.
    monkeypatch.setattr(xlsx, "MAX_PART_BYTES", 5000)  # the headings and two rows
    out = io.BytesIO()
    write_xlsx(_report([_action(10 * i + 1) for i in range(6)]), out)
    sheets = _read(out.getvalue())
    continued = [name for name in sheets if name.startswith("Table 3 Actions")]
    assert len(continued) == 3
    assert [row[7] for name in continued for row in sheets[name][1:]] == [10 * i + 1 for i in range(6)]


def test_the_csv_zip_reads_back_row_for_row_across_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    """CSV text is gathered and written to the member in blocks: rows cut across blocks, quoted fields
    with line breaks, commas and quotes, and non-ASCII text all read back as written, in order."""
    import csv

    from services.reporting import exports

    monkeypatch.setattr(exports, "_CSV_FLUSH", 300)  # a flush every couple of rows
    notes = ['line\nbreak, "quoted"', "Zürich 東京 😀", "", "plain"]
    actions = [_action(10 * i + 1, additional_explanatory_information=notes[i % 4]) for i in range(50)]
    out = io.BytesIO()
    exports.write_csv_zip(_report(actions), out)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == [f"{title}.csv" for title in SHEETS.values()]
        member = archive.open(f"{SHEETS['actions']}.csv")
        rows = list(csv.reader(io.TextIOWrapper(member, encoding="utf-8", newline="")))
        entities = archive.read(f"{SHEETS['authorized_entities']}.csv").decode()
    assert rows[0] == list(HEADINGS["actions"])
    assert len(rows) == 51
    column = AEF_COLUMNS["actions"].index("additional_explanatory_information")
    first = AEF_COLUMNS["actions"].index("first_id")
    assert [row[column] for row in rows[1:]] == [notes[i % 4] for i in range(50)]
    assert [int(row[first]) for row in rows[1:]] == [10 * i + 1 for i in range(50)]
    assert entities == ",".join(f'"{h}"' if "," in h else h for h in HEADINGS["authorized_entities"]) + "\r\n"
