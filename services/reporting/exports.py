"""AEF exports: XLSX (five sheets, verbatim headings) and CSV (a zip of five files) (API.md "Reports").

Files follow the AEF's conventions, where JSON keeps typed values: dates print `dd/mm/yyyy`, a cell that
does not apply prints `NA` (domain §5.1), and the CARP-populated columns stay blank. The workbook is written
by `xlsx.StreamingWorkbook` (rows go into the zip as XML text as they come, memory stays flat; openpyxl's
write-only mode was ten times slower) into a temporary file that is then streamed; a table longer than a
sheet's 1,048,576 rows continues on a second sheet of the same name with a suffix (DESIGN §6).
"""

import asyncio
import csv
import io
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from itertools import islice
from typing import IO, Any

from anyio import to_thread
from fastapi.responses import StreamingResponse

from contracts.aef import AEF_COLUMNS
from services.reporting.xlsx import SheetTooLarge, StreamingWorkbook

__all__ = [
    "CARP_COLUMNS",
    "HEADINGS",
    "SHEETS",
    "Pieces",
    "cell_text",
    "export_response",
    "table_pieces",
    "write_csv_zip",
    "write_export",
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


#: Per table, the keys a file leaves out with their columns (the public register's confidential ones).
Hidden = dict[str, set[str]]


def _headings(table: str, hidden: Hidden) -> list[str]:
    left_out = hidden.get(table, set())
    return [h for key, h in zip(AEF_COLUMNS[table], HEADINGS[table], strict=True) if key not in left_out]


def _cells(table: str, hidden: Hidden | None = None) -> Callable[[dict[str, Any]], list[Any]]:
    """`cell_text` over a row of `table`, with the per-column decisions taken once, not once a cell (a
    million-row Table 3 has 27 million cells); `hidden` keys have no column at all."""
    left_out = (hidden or {}).get(table, set())
    columns = [
        (key, "" if (table, key) in CARP_COLUMNS else "NA", key in _DATES)
        for key in AEF_COLUMNS[table]
        if key not in left_out
    ]

    def cells(row: dict[str, Any]) -> list[Any]:
        out = []
        for key, blank, is_date in columns:
            value = row.get(key)
            if value is None:
                value = blank
            elif is_date and isinstance(value, str) and len(value) >= 10:
                year, month, day = value[:10].split("-")
                value = f"{day}/{month}/{year}"
            out.append(value)
        return out

    return cells


def _table_rows(tables: dict[str, Any], table: str) -> list[dict[str, Any]]:
    rows = tables[table]
    return [rows] if table == "submission" else list(rows)


#: A table's rows in the AEF's order, a table possibly in several pieces (Table 3 in batches).
Pieces = AsyncIterator[tuple[str, list[dict[str, Any]]]]


async def table_pieces(
    tables: dict[str, Any], actions: AsyncIterator[list[dict[str, Any]]] | None = None
) -> Pieces:
    """The five tables as pieces, each table at least one, Table 3 from `actions` batches when given
    (streamed from the DB)."""
    for table in SHEETS:
        if table == "actions" and actions is not None:
            yield table, []  # every table has a piece, an empty Table 3 too
            async for batch in actions:
                yield table, batch
        else:
            yield table, _table_rows(tables, table)


class _Sheets:
    """One sheet per table, continued on `<title> (2)`, ... past the row limit (or past the size a zip
    entry can take without ZIP64, which no real AEF row count reaches)."""

    def __init__(self, out: IO[bytes], max_rows: int = _MAX_ROWS, hidden: Hidden | None = None) -> None:
        self.workbook = StreamingWorkbook(out)
        self.max_rows = max_rows
        self.hidden = hidden or {}
        self.table: str | None = None

    def start(self, table: str) -> None:
        self.table, self.part = table, 1
        self.cells = _cells(table, self.hidden)
        self._sheet(SHEETS[table])

    def _sheet(self, title: str) -> None:
        assert self.table is not None
        self.workbook.add_sheet(title)
        self.workbook.append_row(_headings(self.table, self.hidden))
        self.written = 0

    def _continue(self) -> None:
        assert self.table is not None
        self.part += 1
        self._sheet(f"{SHEETS[self.table]} ({self.part})")

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        assert self.table is not None
        cells, append_row = self.cells, self.workbook.append_row
        for row in rows:
            values = cells(row)
            if self.written == self.max_rows - 1:
                self._continue()
            try:
                append_row(values)
            except SheetTooLarge:
                if self.written == 0:  # alone on a fresh sheet and still too large: nothing would hold it
                    raise
                self._continue()
                append_row(values)
            self.written += 1

    def close(self) -> None:
        self.workbook.close()


#: Characters of CSV text gathered before they go to the zip member.
_CSV_FLUSH = 1 << 18


class _Csvs:
    """A zip of one CSV per table, members written one after the other; a piece's rows are formatted
    into text first and go to the member in one write (the deflater's per-call cost was a tenth of a
    million-row export when fed a few kilobytes at a time)."""

    def __init__(self, out: IO[bytes], hidden: Hidden | None = None) -> None:
        # Level 1, as the XLSX's sheets: level 6 took twice the time for a smaller file of a few MiB.
        self.archive = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        self.member: IO[bytes] | None = None
        self.text = io.StringIO()
        self.writer = csv.writer(self.text)
        self.hidden = hidden or {}

    def start(self, table: str) -> None:
        self.close_member()
        self.cells = _cells(table, self.hidden)
        self.member = self.archive.open(f"{SHEETS[table]}.csv", "w")
        self.writer.writerow(_headings(table, self.hidden))

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        remaining = iter(rows)
        # A few hundred rows at a time: a 100,000-row Table 4 comes as one piece, and its text whole
        # (then encoded) would be tens of megabytes held at once.
        while batch := list(islice(remaining, 500)):
            self.writer.writerows(map(self.cells, batch))
            if self.text.tell() >= _CSV_FLUSH:
                self._flush()

    def _flush(self) -> None:
        assert self.member is not None
        self.member.write(self.text.getvalue().encode())
        self.text.seek(0)
        self.text.truncate()

    def close_member(self) -> None:
        if self.member is not None:
            self._flush()
            self.member.close()
            self.member = None

    def close(self) -> None:
        self.close_member()
        self.archive.close()


def _write(sink: "_Sheets | _Csvs", tables: dict[str, Any]) -> None:
    for table in SHEETS:
        sink.start(table)
        sink.append(_table_rows(tables, table))
    sink.close()


def write_xlsx(report: dict[str, Any], out: IO[bytes], max_rows: int = _MAX_ROWS) -> None:
    _write(_Sheets(out, max_rows), report["tables"])


def write_csv_zip(report: dict[str, Any], out: IO[bytes]) -> None:
    _write(_Csvs(out), report["tables"])


async def write_export(format: str, pieces: Pieces, out: IO[bytes], hidden: Hidden | None = None) -> None:
    """Write the tables coming as `pieces` (in the AEF's order) as `format`, without the `hidden` columns.

    The writing runs in a worker thread, one piece at a time, so the event loop keeps serving; while a
    piece is being written the next one is already read from the database. A table with no piece still
    gets its sheet (or file) with the headings.
    """
    sink: _Sheets | _Csvs = await to_thread.run_sync(
        lambda: _Sheets(out, hidden=hidden) if format == "xlsx" else _Csvs(out, hidden)
    )
    order = list(SHEETS)
    started = 0
    writing: asyncio.Future[None] | None = None
    try:
        async for table, rows in pieces:
            if writing is not None:
                await writing
            while started <= order.index(table):
                sink.start(order[started])
                started += 1
            writing = asyncio.ensure_future(to_thread.run_sync(sink.append, rows))
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            # Reading failed mid-way: let the piece being written finish before the sink is dropped.
            await asyncio.wait([writing])
    for table in order[started:]:
        sink.start(table)
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
    pieces: Pieces, format: str, name: str, hidden: Hidden | None = None
) -> StreamingResponse:
    """Write the file into a spooled temporary file (memory up to 8 MiB, then disk), then stream it;
    `hidden` columns are left out, headings included."""
    media_type, extension = _MEDIA[format]
    spooled = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 (closed by _chunks)
    try:
        await write_export(format, pieces, spooled, hidden)
    except BaseException:
        spooled.close()
        raise
    spooled.seek(0)
    return StreamingResponse(
        _chunks(spooled),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}.{extension}"'},
    )
