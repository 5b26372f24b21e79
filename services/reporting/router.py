"""HTTP routes of the reporting service (thin: parse, authorize, call the service, answer)."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from contracts.pagination import DEFAULT_LIMIT
from kit.auth import CurrentPrincipal
from kit.pagination import CursorQuery, LimitQuery
from services.reporting.exports import export_response
from services.reporting.feed import announce_submissions
from services.reporting.service import ReportingService

__all__ = ["router"]

router = APIRouter(prefix="/v1/reports", tags=["reports"])

PartyPath = Annotated[str, Path(pattern=r"^[A-Z]{3}$", description="Alpha-3 code of the Party")]
YearPath = Annotated[int, Path(ge=2021, le=2100, description="The reported year")]
Format = Annotated[Literal["json", "xlsx", "csv"], Query(description="json (default), xlsx or csv (zip)")]


def _service(request: Request) -> ReportingService:
    return ReportingService(request.app.state.db)


@router.post("/aef/validate")
async def validate(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """Pre-consistency checks C1–C4 (domain §7.3) of an AEF sent as JSON or XLSX; results per row."""
    content = await request.body()
    content_type = request.headers.get("content-type", "")
    return JSONResponse(await _service(request).validate(principal, content, content_type))


@router.get("/aef/{party}/{year}")
async def aef(
    request: Request, principal: CurrentPrincipal, party: PartyPath, year: YearPath, format: Format = "json"
) -> Response:
    """The AEF pre-filled from the registry's records (API.md "Reports"); Table 3 is streamed."""
    service = _service(request)
    if format != "json":
        return await service.export(principal, party, year, format)
    await service.read_access(principal, party, year, "aef")
    await service.freeze_closed_year(party, year)
    return StreamingResponse(service.report_chunks(party, year), media_type="application/json")


@router.post("/aef/{party}/{year}/submissions", status_code=201)
async def submit(request: Request, principal: CurrentPrincipal, party: PartyPath, year: YearPath) -> Response:
    """Freeze the current tables as the next version (1.0, 1.1, ...); answers its bytes, as stored."""
    service = _service(request)
    frozen = await service.submit(principal, party, year)
    if await announce_submissions(request.app.state.db, datetime.now(UTC)):
        request.app.state.webhooks.wake()
    location = f"/v1/reports/aef/{party}/{year}/submissions/{frozen.version}"
    return StreamingResponse(
        service.frozen_bytes(frozen.key),
        status_code=201,
        media_type="application/json",
        headers={"Location": location, **frozen.headers},
    )


@router.get("/aef/{party}/{year}/submissions")
async def submissions(
    request: Request,
    principal: CurrentPrincipal,
    party: PartyPath,
    year: YearPath,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> JSONResponse:
    """The frozen versions of a Party-year, oldest first."""
    return JSONResponse(await _service(request).submissions(principal, party, year, limit, cursor))


@router.get("/aef/{party}/{year}/submissions/{version}")
async def submission(
    request: Request,
    principal: CurrentPrincipal,
    party: PartyPath,
    year: YearPath,
    version: Annotated[str, Path(max_length=20)],
    format: Format = "json",
) -> Response:
    """A frozen version: the same bytes every time (JSON, streamed as stored), or its export."""
    service = _service(request)
    frozen = await service.submission(principal, party, year, version, format)
    if format == "json":
        etag = frozen.headers["ETag"]
        if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
            # The client holds these very bytes (a frozen version's tag never changes): nothing to send.
            return Response(
                status_code=304, headers={"ETag": etag, "Repr-Digest": frozen.headers["Repr-Digest"]}
            )
        return StreamingResponse(
            service.frozen_bytes(frozen.key),
            media_type="application/json",
            headers=frozen.headers,
        )
    _, pieces = await service.frozen_pieces(frozen.key)
    return await export_response(pieces, format, f"AEF_{party}_{year}_v{version}")


@router.get("/reads/{party}")
async def confidential_reads(
    request: Request,
    principal: CurrentPrincipal,
    party: PartyPath,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> JSONResponse:
    """Who outside the Party (the Secretariat, auditors) read its AEF, submissions, corresponding
    adjustments or consistency findings, when, and what it had designated confidential then; newest first."""
    return JSONResponse(await _service(request).confidential_reads(principal, party, limit, cursor))


@router.get("/consistency/{year}")
async def consistency(request: Request, principal: CurrentPrincipal, year: YearPath) -> JSONResponse:
    """Cross-Party consistency checks C6–C9 (domain §7.3) over every Party the registry knows."""
    return JSONResponse(await _service(request).consistency(principal, year))


@router.get("/corresponding-adjustments/{party}/{year}")
async def corresponding_adjustments(
    request: Request, principal: CurrentPrincipal, party: PartyPath, year: YearPath
) -> JSONResponse:
    """Additions (first transferred, vintage = year) and subtractions (used for year) of domain §7.1."""
    return JSONResponse(await _service(request).corresponding_adjustments(principal, party, year))
