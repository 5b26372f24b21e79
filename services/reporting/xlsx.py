"""A streaming SpreadsheetML (XLSX) writer: rows go as XML text straight into the zip entry of their sheet.

openpyxl's write-only mode builds a cell object per value and costs ~0.25 ms a row of 27 cells, minutes for
a million-row AEF (docs/reporting.md, "Exports"). Here a row is one string: strings are inline (`t="inlineStr"`:
no shared-string table, so memory does not grow with the distinct values), numbers plain `<v>`, and
the XML of a repeated string value is cached. Cells carry no `r` reference (it is optional; readers count
columns), rows do. Sheets are written one after the other; the workbook, its relationships, content types
and a minimal style sheet are written when it closes, once the sheet names are known. openpyxl reads the
result back (the validator does), and so do Excel and LibreOffice.
"""

import re
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any

__all__ = ["MAX_PART_BYTES", "SheetTooLarge", "StreamingWorkbook", "xml_text"]

#: A sheet's XML stays below the size for which a zip entry needs ZIP64 extensions (some spreadsheet
#: programs reject ZIP64 entries): a caller continues on another sheet when `append_row` says it is full.
MAX_PART_BYTES = zipfile.ZIP64_LIMIT

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_SHEET_START = (
    f'{_HEAD}<worksheet xmlns="{_MAIN}" xmlns:r="{_REL}"><sheetViews><sheetView workbookViewId="0">'
    '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/></sheetView></sheetViews>'
    "<sheetData>"
).encode()
_SHEET_END = b"</sheetData></worksheet>"

# Characters XML 1.0 does not allow at all (controls other than tab, LF, CR; surrogates; U+FFFE, U+FFFF):
# no escape can carry them, so they are dropped.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPECIAL = re.compile('[&<>"\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')


class SheetTooLarge(Exception):
    """The row would take the sheet's XML past `MAX_PART_BYTES`."""


def xml_text(value: str) -> str:
    """`value` escaped for XML element content and attributes, characters XML 1.0 forbids removed."""
    if _SPECIAL.search(value) is None:
        return value
    value = _ILLEGAL.sub("", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _string_cell(value: str) -> str:
    text = xml_text(value)
    if not text:
        return "<c/>"
    # Leading or trailing blanks would otherwise be trimmed by readers.
    space = ' xml:space="preserve"' if text[0].isspace() or text[-1].isspace() else ""
    return f'<c t="inlineStr"><is><t{space}>{text}</t></is></c>'


class StreamingWorkbook:
    """Sheets written one at a time into `out` (any writable binary file; seekable or not)."""

    def __init__(self, out: IO[bytes], *, compresslevel: int = 1, max_part_bytes: int | None = None) -> None:
        # Level 1: the sheets are repetitive XML, which level 1 already shrinks ~10 times; higher levels
        # cost more time than they save in bytes (measured in docs/reporting.md).
        self.archive = zipfile.ZipFile(
            out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel
        )
        self.max_part_bytes = MAX_PART_BYTES if max_part_bytes is None else max_part_bytes
        self.titles: list[str] = []
        self.part: Any = None
        self.rows = 0
        self.size = 0
        self.cache: dict[str, str] = {}
        self.pending: list[str] = []
        self.pending_size = 0

    def add_sheet(self, title: str) -> None:
        """Close the current sheet (if any) and start `title` (at most 31 characters, unique)."""
        self._close_sheet()
        self.titles.append(title)
        self.part = self.archive.open(f"xl/worksheets/sheet{len(self.titles)}.xml", "w")
        self.part.write(_SHEET_START)
        self.rows, self.size = 0, len(_SHEET_START) + len(_SHEET_END)

    def append_row(self, values: Sequence[Any]) -> None:
        """One row: `str` as text, `int`/`float`/`Decimal` as numbers, `bool` as TRUE/FALSE, None as an
        empty cell. Raises `SheetTooLarge` (writing nothing) if the sheet has no room left for it."""
        cache = self.cache
        cells = []
        for value in values:
            kind = value.__class__
            if kind is str:
                cell = cache.get(value)
                if cell is None:
                    cell = _string_cell(value)
                    if len(cache) < 100_000:  # bounded: a column of distinct values must not grow it forever
                        cache[value] = cell
                cells.append(cell)
            elif kind is int or kind is float or kind is Decimal:
                cells.append(f"<c><v>{value}</v></c>")
            elif value is None:
                cells.append("<c/>")
            elif kind is bool:
                cells.append(f'<c t="b"><v>{int(value)}</v></c>')
            else:
                cells.append(_string_cell(str(value)))
        row = f'<row r="{self.rows + 1}">{"".join(cells)}</row>'
        size = len(row) if row.isascii() else len(row.encode())
        if self.size + size > self.max_part_bytes:
            raise SheetTooLarge(self.titles[-1])
        # Rows are handed to the zip entry 256 KiB at a time: a write per row costs as much as the row.
        self.pending.append(row)
        self.pending_size += size
        if self.pending_size > 1 << 18:
            self._flush()
        self.rows += 1
        self.size += size

    def _flush(self) -> None:
        if self.pending:
            self.part.write("".join(self.pending).encode())
            self.pending, self.pending_size = [], 0

    def _close_sheet(self) -> None:
        if self.part is not None:
            self._flush()
            self.part.write(_SHEET_END)
            self.part.close()
            self.part = None

    def close(self) -> None:
        """Write the workbook's other parts and the zip's central directory."""
        self._close_sheet()
        count = len(self.titles)
        sheets = "".join(
            f'<sheet name="{xml_text(title)}" sheetId="{n}" r:id="rId{n}"/>'
            for n, title in enumerate(self.titles, start=1)
        )
        sheet_rels = "".join(
            f'<Relationship Id="rId{n}" Type="{_REL}/worksheet" Target="worksheets/sheet{n}.xml"/>'
            for n in range(1, count + 1)
        )
        overrides = "".join(
            f'<Override PartName="/xl/worksheets/sheet{n}.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            for n in range(1, count + 1)
        )
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        parts = {
            "[Content_Types].xml": (
                '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                '<Default Extension="xml" ContentType="application/xml"/>'
                '<Override PartName="/xl/workbook.xml" '
                'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
                f"{overrides}"
                '<Override PartName="/xl/styles.xml" '
                'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
                '<Override PartName="/docProps/core.xml" '
                'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
                '<Override PartName="/docProps/app.xml" '
                'ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>'
                "</Types>"
            ),
            "_rels/.rels": (
                f'<Relationships xmlns="{_PACKAGE_REL}">'
                f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
                '<Relationship Id="rId2" '
                'Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" '
                'Target="docProps/core.xml"/>'
                f'<Relationship Id="rId3" Type="{_REL}/extended-properties" Target="docProps/app.xml"/>'
                "</Relationships>"
            ),
            "docProps/core.xml": (
                '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
                'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
                'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
                "<dc:creator>Article 6.2 International Registry</dc:creator>"
                f'<dcterms:created xsi:type="dcterms:W3CDTF">{now}</dcterms:created>'
                "</cp:coreProperties>"
            ),
            "docProps/app.xml": (
                '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
                "<Application>Article 6.2 International Registry</Application></Properties>"
            ),
            "xl/workbook.xml": (
                f'<workbook xmlns="{_MAIN}" xmlns:r="{_REL}"><bookViews><workbookView/></bookViews>'
                f"<sheets>{sheets}</sheets></workbook>"
            ),
            "xl/_rels/workbook.xml.rels": (
                f'<Relationships xmlns="{_PACKAGE_REL}">{sheet_rels}'
                f'<Relationship Id="rId{count + 1}" Type="{_REL}/styles" Target="styles.xml"/>'
                "</Relationships>"
            ),
            "xl/styles.xml": (
                f'<styleSheet xmlns="{_MAIN}">'
                '<fonts count="1"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
                '<fills count="2"><fill><patternFill patternType="none"/></fill>'
                '<fill><patternFill patternType="gray125"/></fill></fills>'
                '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
                '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
                '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
                '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
                "</styleSheet>"
            ),
        }
        for name, xml in parts.items():
            self.archive.writestr(name, _HEAD + xml)
        self.archive.close()
