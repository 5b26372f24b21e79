"""Use cases of the reporting service: the live AEF, frozen submissions (docs/reporting.md)."""

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import Response
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from contracts.roles import Role
from kit.auth import Principal
from kit.db import Database
from kit.errors import BadRequest, Conflict, Forbidden, NotFound
from services.reporting.aef import build_tables, iter_actions
from services.reporting.consistency import consistency, corresponding_adjustments
from services.reporting.exports import export_response
from services.reporting.models import authorizations, entities, submissions
from services.reporting.validation import CODES, parse_json, parse_xlsx, validate

__all__ = ["ReportingService", "canonical_json", "may_read", "parse_version"]

_PARTY_READERS = frozenset(
    {Role.PARTY_ADMIN, Role.AUTHORIZING_OFFICIAL, Role.INITIATOR, Role.APPROVER, Role.VIEWER, Role.AUDITOR}
)
_SECRETARIAT_READERS = frozenset({Role.SECRETARIAT_ADMIN, Role.AUDITOR})


def may_read(principal: Principal, party: str) -> bool:
    """API.md: the Party itself, the Secretariat and auditors (an auditor with a Party: that Party only)."""
    if principal.party is None:
        return bool(principal.roles & _SECRETARIAT_READERS)
    return principal.party == party and bool(principal.roles & _PARTY_READERS)


def canonical_json(value: Any) -> bytes:
    """The bytes a frozen version is stored and served as: keys in AEF order, no spaces, UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def parse_version(text: str) -> tuple[int, int]:
    major, dot, minor = text.partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        raise NotFound(f"No submission version {text!r}; versions read like 1.0, 1.1.")
    return int(major), int(minor)


class ReportingService:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def require_reader(principal: Principal, party: str) -> None:
        if not may_read(principal, party):
            raise Forbidden(f"The AEF of {party} is for {party}, the Secretariat and auditors.")

    async def report_chunks(self, party: str, year: int) -> AsyncIterator[bytes]:
        """The live report as canonical JSON, Table 3 streamed from a server-side cursor (call
        `require_reader` first: by the time this runs the response has started)."""
        async with self.db.read() as session:
            tables = await build_tables(session, party, year, actions=False)
            yield canonical_json({"party": party, "year": year, "version": None})[:-1] + b',"tables":{'
            yield b'"submission":' + canonical_json(tables["submission"])
            yield b',"authorizations":' + canonical_json(tables["authorizations"]) + b',"actions":['
            separator = b""
            async for batch in iter_actions(session, party, year):
                if batch:
                    yield separator + b",".join(canonical_json(row) for row in batch)
                    separator = b","
            yield b'],"holdings":' + canonical_json(tables["holdings"])
            yield b',"authorized_entities":' + canonical_json(tables["authorized_entities"]) + b"}}"

    async def export(self, principal: Principal, party: str, year: int, format: str) -> Response:
        """The live AEF as a file (XLSX or a zip of CSVs), Table 3 streamed into the writer."""
        self.require_reader(principal, party)
        async with self.db.read() as session:
            tables = await build_tables(session, party, year, actions=False)
            return await export_response(
                tables, format, f"AEF_{party}_{year}", iter_actions(session, party, year)
            )

    async def submit(self, principal: Principal, party: str, year: int) -> tuple[str, bytes]:
        """Freeze the current tables as the next version (1.0, then 1.1, 1.2, ...)."""
        if principal.party != party or not principal.has(Role.PARTY_ADMIN):
            raise Forbidden(f"Only a party_admin of {party} submits its AEF.")
        now = datetime.now(UTC)
        try:
            async with self.db.transaction() as session:
                last = (
                    await session.execute(
                        select(submissions.c.major, submissions.c.minor)
                        .where(submissions.c.party == party, submissions.c.year == year)
                        .order_by(submissions.c.major.desc(), submissions.c.minor.desc())
                        .limit(1)
                    )
                ).first()
                major, minor = (1, 0) if last is None else (last[0], last[1] + 1)
                version = f"{major}.{minor}"
                tables = await build_tables(session, party, year)
                tables["submission"]["version"] = version
                tables["submission"]["date_of_submission"] = now.date().isoformat()
                body = canonical_json({"party": party, "year": year, "version": version, "tables": tables})
                await session.execute(
                    insert(submissions).values(
                        party=party,
                        year=year,
                        major=major,
                        minor=minor,
                        submitted_at=now,
                        submitted_by=principal.client_id,
                        body=body,
                    )
                )
        except IntegrityError as exc:  # another submission of the same Party-year took this version
            raise Conflict(
                f"Another submission of {party} {year} was being frozen; try again.", slug="submission-race"
            ) from exc
        return version, body

    async def submissions(self, principal: Principal, party: str, year: int) -> dict[str, Any]:
        self.require_reader(principal, party)
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(
                        submissions.c.major,
                        submissions.c.minor,
                        submissions.c.submitted_at,
                        submissions.c.submitted_by,
                        func.length(submissions.c.body),
                    )
                    .where(submissions.c.party == party, submissions.c.year == year)
                    .order_by(submissions.c.major, submissions.c.minor)
                )
            ).all()
        return {
            "items": [
                {
                    "party": party,
                    "year": year,
                    "version": f"{major}.{minor}",
                    "submitted_at": (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat(),
                    "submitted_by": by,
                    "size": size,
                }
                for major, minor, at, by, size in rows
            ],
            "next_cursor": None,
        }

    async def submission(self, principal: Principal, party: str, year: int, version: str) -> bytes:
        self.require_reader(principal, party)
        major, minor = parse_version(version)
        async with self.db.read() as session:
            body = (
                await session.execute(
                    select(submissions.c.body).where(
                        submissions.c.party == party,
                        submissions.c.year == year,
                        submissions.c.major == major,
                        submissions.c.minor == minor,
                    )
                )
            ).scalar_one_or_none()
        if body is None:
            raise NotFound(
                f"{party} has no AEF submission {version} for {year}.", slug="submission-not-found"
            )
        return bytes(body)

    async def consistency(self, principal: Principal, year: int) -> dict[str, Any]:
        """C6–C9 across every Party: the Secretariat and auditors not limited to one Party."""
        if principal.party is not None or not (principal.roles & _SECRETARIAT_READERS):
            raise Forbidden("Cross-Party consistency checks are for secretariat_admin and auditors.")
        async with self.db.read() as session:
            return await consistency(session, year)

    async def corresponding_adjustments(self, principal: Principal, party: str, year: int) -> dict[str, Any]:
        self.require_reader(principal, party)
        async with self.db.read() as session:
            return await corresponding_adjustments(session, party, year)

    async def validate(self, principal: Principal, content: bytes, content_type: str) -> dict[str, Any]:
        """C1–C4 of domain §7.3 on an uploaded AEF; the uploader's Party's records count for C2."""
        if principal.party is None and not (principal.roles & _SECRETARIAT_READERS):
            raise Forbidden("Validating an AEF needs a Party token (or the Secretariat's).")
        if not (principal.roles & (_PARTY_READERS | _SECRETARIAT_READERS)):
            raise Forbidden("Validating an AEF needs a Party token (or the Secretariat's).")
        if "json" in content_type:
            try:
                document = json.loads(content)
            except ValueError as exc:
                raise BadRequest("The body is not JSON.", slug="invalid-json") from exc
            tables, problems = parse_json(document)
        elif "spreadsheetml" in content_type or "octet-stream" in content_type:
            tables, problems = parse_xlsx(content)
        else:
            raise BadRequest(
                "Send the AEF as application/json or as an XLSX workbook "
                "(application/vnd.openxmlformats-officedocument.spreadsheetml.sheet).",
                slug="unsupported-aef-format",
            )
        submission = tables.get("submission") if isinstance(tables.get("submission"), dict) else {}
        party = submission.get("party") if isinstance(submission.get("party"), str) else None
        known_authorizations: set[str] = set()
        known_entities: set[str] = set()
        if party is not None and may_read(principal, party):
            async with self.db.read() as session:
                known_authorizations = set(
                    (
                        await session.execute(
                            select(authorizations.c.authorization_id).where(authorizations.c.party == party)
                        )
                    ).scalars()
                )
                known_entities = set(
                    (
                        await session.execute(select(entities.c.entity_id).where(entities.c.party == party))
                    ).scalars()
                )
        results = problems + validate(
            tables, known_authorizations=known_authorizations, known_entities=known_entities
        )
        counts = {check: sum(1 for r in results if r["check"] == check) for check in ("C1", "C2", "C3", "C4")}
        return {
            "result": "fail" if results else "pass",
            "counts": counts,
            "results": results,
            "codes": CODES,
        }
