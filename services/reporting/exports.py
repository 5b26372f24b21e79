"""AEF exports: XLSX (five sheets, verbatim headings) and CSV (a zip of five files) (API.md "Reports").

Files follow the AEF's conventions, where JSON keeps typed values: dates print `dd/mm/yyyy`, a cell that
does not apply prints `NA` (domain §5.1), and the CARP-populated columns stay blank. The workbook is written
in openpyxl's write-only mode (rows go to disk as they come, memory stays flat) into a temporary file that is
then streamed; a table longer than a sheet's 1,048,576 rows continues on a second sheet of the same name with
a suffix (DESIGN §6).
"""

import csv
import io
import tempfile
import zipfile
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import IO, Any

from anyio import to_thread
from fastapi.responses import StreamingResponse
from openpyxl import Workbook

from contracts.aef import AEF_COLUMNS

__all__ = [
    "CARP_COLUMNS",
    "HEADINGS",
    "SHEETS",
    "cell_text",
    "export_response",
    "write_csv_zip",
    "write_xlsx",
]

#: Verbatim column headings of domain §5.2–5.6, in the order of `AEF_COLUMNS`.
_UNIT_HEADINGS = (
    "Cooperative approach ID",
    "Authorization ID",
    "First transferring participating Party ID",
    "Party ITMO registry ID",
    "First ID",
    "Last ID",
    "Underlying unit registry ID",
    "First unit ID",
    "Last unit ID",
    "Metric",
    "Applicable GWP value(s)",
    "Applicable non-GHG metric",
    "Quantity (t CO2 eq)",
    "Quantity (in non-GHG metric)",
    "Mitigation type",
    "Vintage",
)
HEADINGS: dict[str, tuple[str, ...]] = {
    "submission": (
        "Party",
        "Version",
        "Reported year",
        "Date of submission",
        "Review status of the initial report",
        "Result of the consistency check of this AEF submission",
        "First year of the NDC implementation period",
        "Last year of the NDC implementation period",
        "Reference to the Article 6 technical expert review report of the initial report",
    ),
    "authorizations": (
        "Authorization ID",
        "Date of authorization",
        "Cooperative approach ID",
        "Version of the authorization",
        "Authorized quantity",
        "Metric",
        "Applicable GWP value(s)",
        "Applicable non-GHG metric",
        "Sector(s)",
        "Activity type(s)",
        "Purposes for authorization",
        "Authorized Party(ies) ID",
        "Authorized entity(ies) ID",
        "OIMP authorized by the Party",
        "Authorized timeframe",
        "Authorization terms and conditions",
        "Authorization documentation",
        "First transfer definition for OIMP",
        "Additional explanatory information",
    ),
    "actions": (
        "Action date",
        "Action type",
        "Action subtype",
        *_UNIT_HEADINGS,
        "Transferring participating Party ID",
        "Acquiring participating Party ID",
        "Purpose for which the ITMO has been used towards or cancelled for OIMP",
        "Using/cancelling participating Party ID",
        "Using/cancelling authorized entity ID",
        "Calendar year for which the ITMOs are used towards the Party's NDC",
        "Result of the consistency checks",
        "Additional explanatory information",
    ),
    "holdings": _UNIT_HEADINGS,
    "authorized_entities": (
        "Date of the authorization",
        "Name",
        "Country of incorporation",
        "Identification number",
        "Cooperative approach ID",
        "Conditions",
        "Change and revocation conditions",
        "Additional explanatory information",
    ),
}
assert all(len(HEADINGS[t]) == len(AEF_COLUMNS[t]) for t in AEF_COLUMNS)

#: Sheet (and CSV file) names, in the AEF's order.
SHEETS: dict[str, str] = {
    "submission": "Table 1 Submission",
    "authorizations": "Table 2 Authorizations",
    "actions": "Table 3 Actions",
    "holdings": "Table 4 Holdings",
    "authorized_entities": "Table 5 Authorized entities",
}

#: Columns CARP fills: the Party leaves them blank (domain §5.1).
CARP_COLUMNS = frozenset(
    {
        ("submission", "review_status_of_the_initial_report"),
        ("submission", "consistency_check_result"),
        ("submission", "reference_to_the_ter_report"),
        ("authorizations", "authorization_documentation"),
        ("actions", "consistency_check_result"),
    }
)
_DATES = frozenset(
    {"action_date", "date_of_authorization", "date_of_submission", "date_of_the_authorization"}
)
_MAX_ROWS = 1_048_576


def cell_text(table: str, key: str, value: Any) -> Any:
    """A JSON value as the files print it: dd/mm/yyyy dates, `NA`, blank CARP columns."""
    if value is None:
        return "" if (table, key) in CARP_COLUMNS else "NA"
    if key in _DATES and isinstance(value, str) and len(value) >= 10:
        year, month, day = value[:10].split("-")
        return f"{day}/{month}/{year}"
    return value


def _cells(table: str, rows: Iterable[dict[str, Any]]) -> Iterator[list[Any]]:
    keys = AEF_COLUMNS[table]
    for row in rows:
        yield [cell_text(table, key, row.get(key)) for key in keys]


def _table_rows(tables: dict[str, Any], table: str) -> list[dict[str, Any]]:
    rows = tables[table]
    return [rows] if table == "submission" else list(rows)


class _Sheets:
    """Write-only sheets, continued on `<title> (2)`, ... past the row limit."""

    def __init__(self, max_rows: int = _MAX_ROWS) -> None:
        self.workbook = Workbook(write_only=True)
        self.max_rows = max_rows
        self.table: str | None = None

    def start(self, table: str) -> None:
        self.table, self.part, self.written = table, 1, 0
        self.sheet = self.workbook.create_sheet(SHEETS[table])
        self.sheet.append(list(HEADINGS[table]))

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        assert self.table is not None
        for cells in _cells(self.table, rows):
            if self.written == self.max_rows - 1:
                self.part, self.written = self.part + 1, 0
                self.sheet = self.workbook.create_sheet(f"{SHEETS[self.table]} ({self.part})")
                self.sheet.append(list(HEADINGS[self.table]))
            self.sheet.append(cells)
            self.written += 1


class _Csvs:
    """A zip of one CSV per table, members written one after the other."""

    def __init__(self, out: IO[bytes]) -> None:
        self.archive = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED)
        self.member: Any = None

    def start(self, table: str) -> None:
        self.close_member()
        self.table = table
        self.raw = self.archive.open(f"{SHEETS[table]}.csv", "w")
        self.member = io.TextIOWrapper(self.raw, encoding="utf-8", newline="")
        self.writer = csv.writer(self.member)
        self.writer.writerow(HEADINGS[table])

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        self.writer.writerows(_cells(self.table, rows))

    def close_member(self) -> None:
        if self.member is not None:
            self.member.close()
            self.member = None

    def close(self) -> None:
        self.close_member()
        self.archive.close()


def write_xlsx(report: dict[str, Any], out: IO[bytes], max_rows: int = _MAX_ROWS) -> None:
    sheets = _Sheets(max_rows)
    for table in SHEETS:
        sheets.start(table)
        sheets.append(_table_rows(report["tables"], table))
    sheets.workbook.save(out)


def write_csv_zip(report: dict[str, Any], out: IO[bytes]) -> None:
    files = _Csvs(out)
    for table in SHEETS:
        files.start(table)
        files.append(_table_rows(report["tables"], table))
    files.close()


async def _single(rows: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    yield rows


async def write_export(
    format: str,
    tables: dict[str, Any],
    out: IO[bytes],
    actions: AsyncIterator[list[dict[str, Any]]] | None = None,
) -> None:
    """Write `tables` as `format`; Table 3 from `actions` batches when given (streamed from the DB).

    The writing runs in a worker thread, one batch at a time, so the event loop keeps serving.
    """
    batches = actions if actions is not None else _single(tables["actions"])
    if format == "xlsx":
        sink: Any = _Sheets()
    else:
        sink = await to_thread.run_sync(_Csvs, out)
    for table in SHEETS:
        sink.start(table)
        if table == "actions":
            async for batch in batches:
                await to_thread.run_sync(sink.append, batch)
        else:
            await to_thread.run_sync(sink.append, _table_rows(tables, table))
    if format == "xlsx":
        await to_thread.run_sync(sink.workbook.save, out)
    else:
        await to_thread.run_sync(sink.close)


_MEDIA = {
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    "csv": ("application/zip", "zip"),
}


def _chunks(spooled: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := spooled.read(1 << 16):
            yield chunk
    finally:
        spooled.close()


async def export_response(
    tables: dict[str, Any],
    format: str,
    name: str,
    actions: AsyncIterator[list[dict[str, Any]]] | None = None,
) -> StreamingResponse:
    """Write the file into a spooled temporary file (memory up to 8 MiB, then disk), then stream it."""
    media_type, extension = _MEDIA[format]
    spooled = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 (closed by _chunks)
    try:
        await write_export(format, tables, spooled, actions)
    except BaseException:
        spooled.close()
        raise
    spooled.seek(0)
    return StreamingResponse(
        _chunks(spooled),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}.{extension}"'},
    )
