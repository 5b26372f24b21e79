"""Pre-consistency checks of an uploaded AEF (domain §7.3 C1–C4), JSON or XLSX.

Results are per cell or row with stable codes (never renumbered; docs/reporting.md lists them):

- `C1-01` required cell empty · `C1-02` bad format · `C1-03` value not in the controlled list ·
  `C1-04` CARP-populated cell not blank · `C1-05` conditional cell filled where it does not apply ·
  `C1-06` conditional cell missing where it applies · `C1-07` subtype not allowed for the type ·
  `C1-08` table or column missing / unknown
- `C2-01` Authorization ID not in Table 2 (nor in the Party's records) · `C2-02` using/cancelling entity
  not in Table 5 (nor in the Party's records)
- `C3-01` First ID > Last ID · `C3-02` quantity ≠ serial count (GHG) · `C3-03` Table 4 blocks overlap
- `C4-01` units reported used/cancelled still in Table 4 · `C4-02` block invariants differ between T3 and T4
"""

import io
import re
from collections import defaultdict
from datetime import date, datetime
from typing import Any

from contracts.actions import (
    ActionSubtype,
    ActionType,
    FirstTransferDefinition,
    Metric,
    MitigationType,
    Purpose,
    subtype_allowed,
)
from contracts.aef import AEF_COLUMNS
from services.reporting.exports import CARP_COLUMNS, HEADINGS, SHEETS

__all__ = ["CODES", "parse_json", "parse_xlsx", "validate"]

CODES: dict[str, str] = {
    "C1-01": "required cell empty",
    "C1-02": "bad format",
    "C1-03": "value not in the controlled list",
    "C1-04": "CARP-populated cell not blank",
    "C1-05": "conditional cell filled where it does not apply",
    "C1-06": "conditional cell missing where it applies",
    "C1-07": "subtype not allowed for the action type",
    "C1-08": "table or column missing or unknown",
    "C2-01": "Authorization ID not reported in Table 2 (this or an earlier submission)",
    "C2-02": "using/cancelling authorized entity not in Table 5",
    "C3-01": "First ID after Last ID",
    "C3-02": "quantity differs from the serial count",
    "C3-03": "Table 4 blocks overlap within a registry",
    "C4-01": "units reported used or cancelled still held in Table 4",
    "C4-02": "block invariants differ between Table 3 and Table 4",
}

_ALPHA3 = re.compile(r"^[A-Z]{3}$")
_CA = re.compile(r"^CA\d{4}$")
_REGISTRY = re.compile(r"^[A-Z]{3}\d{2}$")
_AUTH_ID = re.compile(r"^[A-Za-z0-9 -]{1,100}$")
_VERSION = re.compile(r"^\d+\.\d+$")
_TIMEFRAME = re.compile(r"^\d{4} - \d{4}$")

_REQUIRED: dict[str, tuple[str, ...]] = {
    "submission": (
        "party",
        "version",
        "reported_year",
        "date_of_submission",
        "first_year_of_the_ndc_implementation_period",
        "last_year_of_the_ndc_implementation_period",
    ),
    "authorizations": (
        "authorization_id",
        "date_of_authorization",
        "cooperative_approach_id",
        "version_of_the_authorization",
        "metric",
        "sectors",
        "purposes_for_authorization",
    ),
    "actions": (
        "action_date",
        "action_type",
        "cooperative_approach_id",
        "authorization_id",
        "first_transferring_party_id",
        "party_itmo_registry_id",
        "first_id",
        "last_id",
        "metric",
        "quantity_tco2e",
        "mitigation_type",
        "vintage",
    ),
    "holdings": (
        "cooperative_approach_id",
        "authorization_id",
        "first_transferring_party_id",
        "party_itmo_registry_id",
        "first_id",
        "last_id",
        "metric",
        "quantity_tco2e",
        "mitigation_type",
        "vintage",
    ),
    "authorized_entities": (
        "date_of_the_authorization",
        "name",
        "country_of_incorporation",
        "identification_number",
        "cooperative_approach_id",
    ),
}
_ALPHA3_KEYS = frozenset(
    {
        "party",
        "first_transferring_party_id",
        "transferring_party_id",
        "acquiring_party_id",
        "using_cancelling_party_id",
        "country_of_incorporation",
    }
)
_INTEGER_KEYS = frozenset(
    {
        "first_id",
        "last_id",
        "first_unit_id",
        "last_unit_id",
        "version_of_the_authorization",
        "authorized_quantity",
    }
)
_YEAR_KEYS = frozenset(
    {
        "reported_year",
        "vintage",
        "ndc_use_year",
        "first_year_of_the_ndc_implementation_period",
        "last_year_of_the_ndc_implementation_period",
    }
)
_DATE_KEYS = frozenset(
    {"date_of_submission", "date_of_authorization", "date_of_the_authorization", "action_date"}
)
_LISTS: dict[str, frozenset[str]] = {
    "action_type": frozenset(ActionType),
    "action_subtype": frozenset(ActionSubtype),
    "metric": frozenset(Metric),
    "mitigation_type": frozenset(MitigationType),
    "purposes_for_authorization": frozenset(Purpose),
    "first_transfer_definition_for_oimp": frozenset(
        {d.value for d in FirstTransferDefinition}
        - {FirstTransferDefinition.FIRST_INTERNATIONAL_TRANSFER.value}
    ),
}
_CONSUMING = frozenset({"Use", "Cancellation", "Voluntary Cancellation"})
_INVARIANTS = (
    "cooperative_approach_id",
    "first_transferring_party_id",
    "metric",
    "mitigation_type",
    "vintage",
)


# ---- parsing ------------------------------------------------------------------------------------------------


def parse_json(document: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tables of an AEF JSON document (the report itself, or its `tables`)."""
    tables = document.get("tables", document) if isinstance(document, dict) else None
    if not isinstance(tables, dict):
        return {}, [_result("C1-08", None, None, None, "the document has no `tables` object")]
    return tables, []


def _from_cell(key: str, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip() in ("", "NA")):
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if key in _DATE_KEYS and isinstance(value, str):
        match = re.fullmatch(r"(\d{2})/(\d{2})/(\d{4})", value.strip())
        if match:
            return f"{match[3]}-{match[2]}-{match[1]}"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_xlsx(content: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tables of a workbook laid out as our export (five sheets, verbatim headings, continuations)."""
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:  # not a workbook at all: a C1-08 result, never a 500
        return {}, [
            _result("C1-08", None, None, None, f"not a readable XLSX workbook ({type(exc).__name__})")
        ]
    tables: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    for table, title in SHEETS.items():
        names = [
            n for n in workbook.sheetnames if n == title or re.fullmatch(re.escape(title) + r" \(\d+\)", n)
        ]
        if not names:
            problems.append(_result("C1-08", table, None, None, f"no sheet {title!r}"))
            tables[table] = {} if table == "submission" else []
            continue
        rows: list[dict[str, Any]] = []
        for name in names:
            sheet_rows = workbook[name].iter_rows(values_only=True)
            header = [str(h).strip() if h is not None else "" for h in next(sheet_rows, ())]
            by_heading = {heading: index for index, heading in enumerate(header)}
            for heading in HEADINGS[table]:
                if heading not in by_heading:
                    problems.append(
                        _result("C1-08", table, None, None, f"sheet {name!r} has no column {heading!r}")
                    )
            for raw in sheet_rows:
                if raw is None or all(cell in (None, "") for cell in raw):
                    continue
                rows.append(
                    {
                        key: _from_cell(
                            key, raw[by_heading[h]] if by_heading.get(h, 10**9) < len(raw) else None
                        )
                        for key, h in zip(AEF_COLUMNS[table], HEADINGS[table], strict=True)
                    }
                )
        tables[table] = (rows[0] if rows else {}) if table == "submission" else rows
    return tables, problems


# ---- checks ---------------------------------------------------------------------------------------------------


def _result(code: str, table: str | None, row: int | None, column: str | None, detail: str) -> dict[str, Any]:
    return {
        "code": code,
        "check": code[:2],
        "table": table,
        "row": row,
        "column": column,
        "message": f"{CODES[code]}: {detail}",
    }


def _h(value: Any) -> Any:
    """A hashable stand-in for any JSON value (an upload may put a list or an object anywhere)."""
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _format_problem(key: str, value: Any) -> str | None:
    if key in _ALPHA3_KEYS and not (isinstance(value, str) and _ALPHA3.match(value)):
        return "expected an alpha-3 Party code"
    if key == "cooperative_approach_id" and not (isinstance(value, str) and _CA.match(value)):
        return "expected CANNNN"
    if key == "party_itmo_registry_id" and not (isinstance(value, str) and _REGISTRY.match(value)):
        return "expected a registry id AAA##"
    if key == "authorization_id" and not (isinstance(value, str) and _AUTH_ID.match(value)):
        return "expected letters, digits, spaces and hyphens"
    if key in _INTEGER_KEYS and not (_is_int(value) and value >= 0):
        return "expected a non-negative integer"
    if key in _YEAR_KEYS and not (_is_int(value) and 2021 <= value <= 2100):
        return "expected a year from 2021"
    if key in ("quantity_tco2e", "quantity_non_ghg_metric") and not (
        isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    ):
        return "expected a non-negative number"
    if key == "version" and not (isinstance(value, str) and _VERSION.match(value)):
        return "expected X.Y"
    if key == "authorized_timeframe" and not (isinstance(value, str) and _TIMEFRAME.match(value)):
        return "expected dddd - dddd"
    if key in _DATE_KEYS:
        try:
            text = str(value)
            if key == "action_date" and "T" in text:
                datetime.fromisoformat(text.replace("Z", "+00:00"))
            elif len(text) != 10:
                raise ValueError(text)
            else:
                date.fromisoformat(text)
        except ValueError:
            return "expected a date (dd/mm/yyyy in files, yyyy-mm-dd in JSON)"
    if key in _LISTS and _h(value) not in _LISTS[key]:
        return f"{value!r} is not one of the nomenclature's values"
    return None


def _cell_checks(table: str, index: int | None, row: dict[str, Any], out: list[dict[str, Any]]) -> None:
    for key in row:
        if key not in AEF_COLUMNS[table]:
            out.append(_result("C1-08", table, index, key, "unknown column"))
    for key in AEF_COLUMNS[table]:
        value = row.get(key)
        if value is None:
            if key in _REQUIRED[table]:
                out.append(_result("C1-01", table, index, key, "this column is required"))
            continue
        if (table, key) in CARP_COLUMNS:
            out.append(_result("C1-04", table, index, key, "CARP fills this column; leave it blank"))
            continue
        problem = _format_problem(key, value)
        if problem:
            code = "C1-03" if key in _LISTS else "C1-02"
            out.append(_result(code, table, index, key, problem))
    non_ghg = row.get("metric") == "non-GHG"
    for key in ("applicable_non_ghg_metric", "quantity_non_ghg_metric"):
        if key not in AEF_COLUMNS[table] or (table == "authorizations" and key == "quantity_non_ghg_metric"):
            continue
        if non_ghg and row.get(key) is None:
            out.append(_result("C1-06", table, index, key, "required when Metric is non-GHG"))
        elif not non_ghg and row.get(key) is not None and row.get("metric") == "GHG":
            out.append(_result("C1-05", table, index, key, "only for Metric non-GHG (NA otherwise)"))


def _action_rules(index: int, row: dict[str, Any], out: list[dict[str, Any]]) -> None:
    kind, subtype = _h(row.get("action_type")), _h(row.get("action_subtype"))
    if kind in _LISTS["action_type"] and isinstance(subtype, str) and not subtype_allowed(kind, subtype):
        out.append(_result("C1-07", "actions", index, "action_subtype", f"{subtype!r} with {kind!r}"))
    only = {
        "transferring_party_id": {"Acquisition"},
        "acquiring_party_id": {"First transfer", "Transfer"},
        "ndc_use_year": {"Use"},
        "purpose_oimp": {"Use", "First transfer", "Cancellation"},
    }
    for key, kinds in only.items():
        if row.get(key) is not None and kind not in kinds:
            out.append(_result("C1-05", "actions", index, key, f"not applicable to {kind!r}"))
    if kind == "Acquisition" and row.get("transferring_party_id") is None:
        out.append(
            _result("C1-06", "actions", index, "transferring_party_id", "an Acquisition names its sender")
        )
    if kind == "Transfer" and row.get("acquiring_party_id") is None:
        out.append(_result("C1-06", "actions", index, "acquiring_party_id", "a Transfer names its receiver"))
    if (
        kind == "First transfer"
        and subtype == "First transfer to another Party"
        and row.get("acquiring_party_id") is None
    ):
        out.append(
            _result("C1-06", "actions", index, "acquiring_party_id", "a first transfer to another Party")
        )


def _authorization_rules(index: int, row: dict[str, Any], out: list[dict[str, Any]]) -> None:
    purposes = str(row.get("purposes_for_authorization") or "")
    covers_oimp = any(p in purposes for p in ("OIMP", "IMP", "OP"))
    for key, applies in (
        ("oimp_authorized_by_the_party", covers_oimp),
        ("first_transfer_definition_for_oimp", "OIMP" in purposes),
    ):
        if applies and row.get(key) is None:
            out.append(_result("C1-06", "authorizations", index, key, f"required for purposes {purposes!r}"))
        elif not applies and row.get(key) is not None and purposes:
            out.append(
                _result("C1-05", "authorizations", index, key, f"not applicable to purposes {purposes!r}")
            )


def _serials(row: dict[str, Any]) -> tuple[int, int] | None:
    first, last = row.get("first_id"), row.get("last_id")
    return (first, last) if _is_int(first) and _is_int(last) else None


def validate(
    tables: dict[str, Any],
    *,
    known_authorizations: set[str] = frozenset(),  # type: ignore[assignment]
    known_entities: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[dict[str, Any]]:
    """C1–C4 results of one AEF (an empty list: it passes)."""
    out: list[dict[str, Any]] = []
    for table in AEF_COLUMNS:
        if table not in tables:
            out.append(_result("C1-08", table, None, None, "table missing"))
    for table in tables:
        if table not in AEF_COLUMNS:
            out.append(_result("C1-08", table, None, None, "unknown table"))
    submission = tables.get("submission")
    if isinstance(submission, dict):
        _cell_checks("submission", None, submission, out)
    rows: dict[str, list[dict[str, Any]]] = {}
    for table in ("authorizations", "actions", "holdings", "authorized_entities"):
        value = tables.get(table, [])
        rows[table] = [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []
        for index, row in enumerate(rows[table], 1):
            _cell_checks(table, index, row, out)
            if table == "actions":
                _action_rules(index, row, out)
            elif table == "authorizations":
                _authorization_rules(index, row, out)

    # C2: references.
    authorizations = {_h(r.get("authorization_id")) for r in rows["authorizations"]} | set(
        known_authorizations
    )
    entities = (
        {_h(r.get("identification_number")) for r in rows["authorized_entities"]}
        | {_h(r.get("name")) for r in rows["authorized_entities"]}
        | set(known_entities)
    )
    for table in ("actions", "holdings"):
        for index, row in enumerate(rows[table], 1):
            if row.get("authorization_id") is not None and _h(row["authorization_id"]) not in authorizations:
                out.append(_result("C2-01", table, index, "authorization_id", repr(row["authorization_id"])))
    for index, row in enumerate(rows["actions"], 1):
        entity = _h(row.get("using_cancelling_entity_id"))
        if entity is not None and entity not in entities:
            out.append(_result("C2-02", "actions", index, "using_cancelling_entity_id", repr(entity)))

    # C3: serials and quantities.
    for table in ("actions", "holdings"):
        for index, row in enumerate(rows[table], 1):
            serials = _serials(row)
            if serials is None:
                continue
            if serials[0] > serials[1]:
                out.append(_result("C3-01", table, index, "first_id", f"{serials[0]} > {serials[1]}"))
            elif row.get("metric") == "GHG" and row.get("quantity_tco2e") != serials[1] - serials[0] + 1:
                out.append(
                    _result(
                        "C3-02",
                        table,
                        index,
                        "quantity_tco2e",
                        f"{row.get('quantity_tco2e')} for {serials[1] - serials[0] + 1} serials",
                    )
                )
    series: dict[tuple, list[tuple[int, int, int]]] = defaultdict(list)
    for index, row in enumerate(rows["holdings"], 1):
        serials = _serials(row)
        if serials and serials[0] <= serials[1]:
            key = (
                _h(row.get("party_itmo_registry_id")),
                _h(row.get("cooperative_approach_id")),
                _h(row.get("first_transferring_party_id")),
            )
            series[key].append((serials[0], serials[1], index))
    for blocks in series.values():
        blocks.sort()
        reach_last, reach_index = blocks[0][1], blocks[0][2]
        for first, last, index in blocks[1:]:
            if first <= reach_last:
                out.append(
                    _result("C3-03", "holdings", index, "first_id", f"overlaps Table 4 row {reach_index}")
                )
            if last > reach_last:
                reach_last, reach_index = last, index

    # C4: consumed units not held; invariants equal where T3 and T4 meet.
    held: dict[tuple, list[tuple[int, int, int, dict[str, Any]]]] = defaultdict(list)
    for index, row in enumerate(rows["holdings"], 1):
        serials = _serials(row)
        if serials:
            held[(_h(row.get("cooperative_approach_id")), _h(row.get("first_transferring_party_id")))].append(
                (*serials, index, row)
            )
    for index, row in enumerate(rows["actions"], 1):
        serials = _serials(row)
        if serials is None:
            continue
        consumed = row.get("action_type") in _CONSUMING or row.get("action_subtype") == "Use or cancellation"
        for first, last, h_index, holding in held.get(
            (_h(row.get("cooperative_approach_id")), _h(row.get("first_transferring_party_id"))), []
        ):
            if first > serials[1] or last < serials[0]:
                continue
            if consumed:
                out.append(
                    _result(
                        "C4-01",
                        "holdings",
                        h_index,
                        "first_id",
                        f"serials also used/cancelled in Table 3 row {index}",
                    )
                )
            differing = [k for k in _INVARIANTS if holding.get(k) != row.get(k)]
            if differing:
                out.append(
                    _result(
                        "C4-02",
                        "holdings",
                        h_index,
                        differing[0],
                        f"{', '.join(differing)} differ from Table 3 row {index}",
                    )
                )
    return out
