"""Use cases of the reporting service: the live AEF, frozen submissions (docs/reporting.md)."""

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import Response
from sqlalchemy import insert, select, tuple_
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.pagination import DEFAULT_LIMIT
from contracts.roles import Role
from kit.auth import Principal
from kit.db import Database
from kit.errors import BadRequest, Conflict, Forbidden, NotFound
from kit.pagination import decode_cursor, encode_cursor
from services.reporting.aef import build_tables, freeze_year_end, iso_instant, iter_actions, year_end_frozen
from services.reporting.consistency import consistency, corresponding_adjustments
from services.reporting.exports import Pieces, export_response, table_pieces
from services.reporting.frozen import (
    FrozenWriter,
    canonical_json,
    document_chunks,
    frozen_chunks,
    frozen_pieces,
)
from services.reporting.models import authorizations, confidential_reads, entities, sections, submissions
from services.reporting.validation import CODES, parse_json, parse_xlsx, validate

__all__ = [
    "Frozen",
    "ReportingService",
    "canonical_json",
    "may_read",
    "parse_version",
    "snapshot",
    "typed_cursor",
]

_PARTY_READERS = frozenset(
    {Role.PARTY_ADMIN, Role.AUTHORIZING_OFFICIAL, Role.INITIATOR, Role.APPROVER, Role.VIEWER, Role.AUDITOR}
)
_SECRETARIAT_READERS = frozenset({Role.SECRETARIAT_ADMIN, Role.AUDITOR})


def may_read(principal: Principal, party: str) -> bool:
    """API.md: the Party itself, the Secretariat and auditors (an auditor with a Party: that Party only)."""
    if principal.party is None:
        return bool(principal.roles & _SECRETARIAT_READERS)
    return principal.party == party and bool(principal.roles & _PARTY_READERS)


@asynccontextmanager
async def snapshot(db: Database, *, write: bool = False) -> AsyncIterator[AsyncSession]:
    """A transaction whose statements all see one snapshot, so the parts of one report agree (an action
    committing mid-build shows in both Table 3 and Table 4, or in neither).

    PostgreSQL: REPEATABLE READ (READ ONLY unless `write`), set before the first statement; at the
    default READ COMMITTED every statement would see its own snapshot. SQLite needs nothing: a read
    transaction keeps the snapshot of its first read (WAL), and a write transaction holds the write lock.
    """
    async with db.transaction() if write else db.read() as session:
        if db.dialect == "postgresql":
            options: dict[str, Any] = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": not write}
            await session.connection(execution_options=options)
        yield session


def _submission_key(party: str, year: int, major: int, minor: int) -> dict[str, Any]:
    return {"party": party, "year": year, "major": major, "minor": minor}


def typed_cursor(cursor: str | None, fields: dict[str, type]) -> dict[str, Any] | None:
    """`decode_cursor` with each field's type checked too: a forged cursor is a 400, never a query that
    compares a text column with a number."""
    after = decode_cursor(cursor, fields=tuple(fields))
    if after is not None and not all(type(after[name]) is kind for name, kind in fields.items()):
        raise BadRequest("The cursor is not one this list issued.", slug="invalid-cursor")
    return after


@dataclass(frozen=True)
class Frozen:
    """A stored version: its number, its key in `submissions`, its size in bytes (its Content-Length) and
    the SHA-256 of those bytes (hex)."""

    version: str
    key: dict[str, Any]
    size: int
    sha256: str

    @property
    def headers(self) -> dict[str, str]:
        """What the JSON answer of this version carries: its length, its digest (RFC 9530
        `Repr-Digest`) and a strong ETag, so a Party can check the bytes it got never changed."""
        digest = base64.b64encode(bytes.fromhex(self.sha256)).decode()
        return {
            "Content-Length": str(self.size),
            "Repr-Digest": f"sha-256=:{digest}:",
            "ETag": f'"{self.sha256}"',
        }


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

    async def read_access(
        self,
        principal: Principal,
        party: str,
        year: int,
        subject: str,
        *,
        version: str | None = None,
        format: str = "json",
    ) -> None:
        """`require_reader`, then, for a reader from outside the Party, its line in `confidential_reads`,
        committed before anything is served (a read that is not logged does not happen)."""
        self.require_reader(principal, party)
        await self._log_outside_read(principal, party, year, subject, version=version, format=format)

    async def _log_outside_read(
        self,
        principal: Principal,
        party: str,
        year: int,
        subject: str,
        *,
        version: str | None = None,
        format: str = "json",
    ) -> None:
        if principal.party != party:
            await self.log_reads(principal, [party], year, subject, version=version, format=format)

    async def log_reads(
        self,
        principal: Principal,
        parties: Sequence[str],
        year: int,
        subject: str,
        *,
        version: str | None = None,
        format: str = "json",
    ) -> None:
        """One `confidential_reads` line per Party read, with the fields each had designated then."""
        if not parties:
            return
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            designated = dict(
                (
                    await session.execute(
                        select(sections.c.party, sections.c.confidential_fields).where(
                            sections.c.party.in_(parties)
                        )
                    )
                ).all()
            )
            await session.execute(
                insert(confidential_reads),
                [
                    {
                        "read_at": now,
                        "party": party,
                        "year": year,
                        "subject": subject,
                        "version": version,
                        "format": format,
                        "client_id": principal.client_id,
                        "roles": sorted(str(role) for role in principal.roles),
                        "designated": sorted(designated.get(party) or []),
                    }
                    for party in parties
                ],
            )

    async def confidential_reads(
        self, principal: Principal, party: str, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> dict[str, Any]:
        """Who outside the Party read its reports, newest first, a page at a time (the Party's readers and
        the Secretariat's; reading this log is not itself logged)."""
        self.require_reader(principal, party)
        after = typed_cursor(cursor, {"id": int})
        query = (
            select(confidential_reads)
            .where(confidential_reads.c.party == party)
            .order_by(confidential_reads.c.id.desc())
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(confidential_reads.c.id < after["id"])
        async with self.db.read() as session:
            rows = (await session.execute(query)).mappings().all()
        return {
            "items": [
                {
                    "read_at": iso_instant(row["read_at"]),
                    "party": row["party"],
                    "year": row["year"],
                    "subject": row["subject"],
                    "version": row["version"],
                    "format": row["format"],
                    "client_id": row["client_id"],
                    "roles": row["roles"],
                    "designated": row["designated"],
                }
                for row in rows[:limit]
            ],
            "next_cursor": encode_cursor({"id": rows[limit - 1]["id"]}) if len(rows) > limit else None,
        }

    async def _report_chunks(
        self, session: AsyncSession, party: str, year: int, version: str | None, submitted_on: str | None
    ) -> AsyncIterator[bytes]:
        """The report as canonical JSON chunks, Table 3 streamed from a server-side cursor; `version` and
        `submitted_on` fill Table 1 of a frozen version."""
        tables = await build_tables(session, party, year, actions=False)
        tables["submission"]["version"] = version
        tables["submission"]["date_of_submission"] = submitted_on
        pieces = table_pieces(tables, iter_actions(session, party, year))
        async for chunk in document_chunks({"party": party, "year": year, "version": version}, pieces):
            yield chunk

    async def freeze_closed_year(self, party: str, year: int) -> None:
        """Freeze a closed year's Table 4 before a live read, once `freeze_year_end` says nothing can change
        it any more, so a Party that never submits stops paying the repaint on every read. Its own write
        transaction, before the read's snapshot (a READ ONLY snapshot cannot write); a concurrent reader or
        submission freezing it first is fine (same rows, by the margin rule)."""
        if year >= datetime.now(UTC).year:
            return
        async with self.db.read() as session:
            if await year_end_frozen(session, party, year):
                return
        try:
            async with self.db.transaction() as session:
                await freeze_year_end(session, party, year, datetime.now(UTC))
        except IntegrityError:
            return

    async def report_chunks(self, party: str, year: int) -> AsyncIterator[bytes]:
        """The live report (call `require_reader` first: by the time this runs the response has started)."""
        async with snapshot(self.db) as session:
            async for chunk in self._report_chunks(session, party, year, None, None):
                yield chunk

    async def export(self, principal: Principal, party: str, year: int, format: str) -> Response:
        """The live AEF as a file (XLSX or a zip of CSVs), Table 3 streamed into the writer."""
        await self.read_access(principal, party, year, "aef", format=format)
        await self.freeze_closed_year(party, year)
        async with snapshot(self.db) as session:
            tables = await build_tables(session, party, year, actions=False)
            return await export_response(
                table_pieces(tables, iter_actions(session, party, year)), format, f"AEF_{party}_{year}"
            )

    async def submit(self, principal: Principal, party: str, year: int) -> Frozen:
        """Freeze the current tables as the next version (1.0, then 1.1, 1.2, ...): its bytes are stored
        in chunks as the tables stream, inside the transaction that claims the version."""
        if principal.party != party or not principal.has(Role.PARTY_ADMIN):
            raise Forbidden(f"Only a party_admin of {party} submits its AEF.")
        now = datetime.now(UTC)
        try:
            async with snapshot(self.db, write=True) as session:
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
                key = _submission_key(party, year, major, minor)
                writer = FrozenWriter(session, key)
                await writer.claim(now, principal.client_id)
                await freeze_year_end(session, party, year, now)  # a closed year's Table 4, once and for all
                async for chunk in self._report_chunks(session, party, year, version, now.date().isoformat()):
                    await writer.write(chunk)
                await writer.close()
        except (IntegrityError, DBAPIError) as exc:
            # Another submission of the same Party-year took this version: a unique violation, or on
            # PostgreSQL's REPEATABLE READ possibly a serialization failure.
            if not isinstance(exc, IntegrityError) and getattr(exc.orig, "sqlstate", None) != "40001":
                raise
            raise Conflict(
                f"Another submission of {party} {year} was being frozen; try again.", slug="submission-race"
            ) from exc
        return Frozen(version, key, writer.size, writer.sha256)

    async def submissions(
        self,
        principal: Principal,
        party: str,
        year: int,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """The frozen versions of a Party-year, oldest first, a page at a time."""
        self.require_reader(principal, party)
        after = typed_cursor(cursor, {"major": int, "minor": int})
        query = (
            select(
                submissions.c.major,
                submissions.c.minor,
                submissions.c.submitted_at,
                submissions.c.submitted_by,
                submissions.c.size,
                submissions.c.sha256,
            )
            .where(submissions.c.party == party, submissions.c.year == year)
            .order_by(submissions.c.major, submissions.c.minor)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(
                tuple_(submissions.c.major, submissions.c.minor) > (after["major"], after["minor"])
            )
        async with self.db.read() as session:
            rows = (await session.execute(query)).all()
        return {
            "items": [
                {
                    "party": party,
                    "year": year,
                    "version": f"{major}.{minor}",
                    "submitted_at": (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat(),
                    "submitted_by": by,
                    "size": size,
                    "sha256": sha256,
                }
                for major, minor, at, by, size, sha256 in rows[:limit]
            ],
            "next_cursor": (
                encode_cursor({"major": rows[limit - 1][0], "minor": rows[limit - 1][1]})
                if len(rows) > limit
                else None
            ),
        }

    async def submission(
        self, principal: Principal, party: str, year: int, version: str, format: str = "json"
    ) -> Frozen:
        """A frozen version the principal may read (404 if there is none)."""
        self.require_reader(principal, party)  # before the lookup: a 404 tells outsiders nothing either
        frozen = await self.frozen(self.db, party, year, version)
        await self._log_outside_read(
            principal, party, year, "submission", version=frozen.version, format=format
        )
        return frozen

    @staticmethod
    async def frozen(db: Database, party: str, year: int, version: str) -> Frozen:
        major, minor = parse_version(version)
        key = _submission_key(party, year, major, minor)
        async with db.read() as session:
            stored = (
                await session.execute(
                    select(submissions.c.size, submissions.c.sha256).where(
                        *(submissions.c[name] == value for name, value in key.items())
                    )
                )
            ).first()
        if stored is None:
            raise NotFound(
                f"{party} has no AEF submission {version} for {year}.", slug="submission-not-found"
            )
        return Frozen(f"{major}.{minor}", key, stored.size, stored.sha256)

    def frozen_bytes(self, key: dict[str, Any]) -> AsyncIterator[bytes]:
        """A frozen version's bytes, exactly as stored."""
        return frozen_chunks(self.db, key)

    async def frozen_pieces(self, key: dict[str, Any]) -> tuple[dict[str, Any], Pieces]:
        """A frozen version's head and tables, parsed as its chunks are read."""
        return await frozen_pieces(frozen_chunks(self.db, key))

    async def consistency(self, principal: Principal, year: int) -> dict[str, Any]:
        """C6–C9 across every Party: the Secretariat and auditors not limited to one Party."""
        if principal.party is not None or not (principal.roles & _SECRETARIAT_READERS):
            raise Forbidden("Cross-Party consistency checks are for secretariat_admin and auditors.")
        async with snapshot(self.db) as session:
            report = await consistency(session, year)
        # The findings name rows of the Parties involved: each is a read of that Party's records.
        await self.log_reads(principal, sorted(report["parties"]), year, "consistency")
        return report

    async def corresponding_adjustments(self, principal: Principal, party: str, year: int) -> dict[str, Any]:
        await self.read_access(principal, party, year, "corresponding_adjustments")
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
