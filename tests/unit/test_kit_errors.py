"""kit.errors through an app built by kit.app.create_app: every error a client can meet is an RFC 9457 problem."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from contracts.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from kit import errors
from kit.app import create_app
from kit.config import ServiceSettings
from tests.support.apps import lifespan

DOMAIN_ERRORS = [
    (errors.BadRequest, 400, "bad-request"),
    (errors.Unauthorized, 401, "unauthorized"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.NotFound, 404, "not-found"),
    (errors.Conflict, 409, "conflict"),
    (errors.PreconditionFailed, 412, "precondition-failed"),
    (errors.Unprocessable, 422, "unprocessable"),
    (errors.PreconditionRequired, 428, "precondition-required"),
    (errors.TooManyRequests, 429, "rate-limited"),
    (errors.ServiceUnavailable, 503, "service-unavailable"),
    (errors.GatewayTimeout, 504, "upstream-timeout"),
]
_BY_NAME = {cls.__name__: cls for cls, _, _ in DOMAIN_ERRORS}
SECRET = "secret-detail-8d1f"


class Item(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(gt=0)


router = APIRouter()


@router.get("/raise/{name}")
async def raise_domain_error(name: str) -> None:
    raise _BY_NAME[name]("because of a test")


@router.get("/raise-bare")
async def raise_bare() -> None:
    raise errors.NotFound()


@router.get("/raise-extended")
async def raise_extended() -> None:
    raise errors.Unprocessable(
        "checks failed",
        slug="check-failed",
        title="Checks failed",
        checks=[{"code": "T01", "message": "not enough units"}],
        headers={"Retry-After": "3"},
    )


@router.post("/items", status_code=201)
async def create_item(item: Item) -> Item:
    return item


@router.get("/typed")
async def typed(n: int) -> dict[str, int]:
    return {"n": n}


@router.get("/http/{code}")
async def http_error(code: int) -> None:
    raise HTTPException(code, detail="nope", headers={"X-Extra": "yes"})


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError(f"database password is {SECRET}")


class _Settings(ServiceSettings):
    service_name = "kittest"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        _Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'errors.sqlite3'}"),
        title="errors",
        routers=[router],
    )
    async with lifespan(app):
        # raise_app_exceptions=False: see the 500 a client would get instead of the test's own exception.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


def _problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == PROBLEM_BASE + slug
    assert body["type"].endswith("/" + slug)
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    return body


@pytest.mark.parametrize(
    ("cls", "status", "slug"), DOMAIN_ERRORS, ids=[c.__name__ for c, _, _ in DOMAIN_ERRORS]
)
async def test_domain_errors_are_problems(
    client: httpx.AsyncClient, cls: type[errors.DomainError], status: int, slug: str
) -> None:
    response = await client.get(f"/raise/{cls.__name__}")
    body = _problem(response, status, slug)
    assert body["title"] == cls.title
    assert body["detail"] == "because of a test"
    assert body["instance"] == f"/raise/{cls.__name__}"
    if cls is errors.Unauthorized:
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_domain_error_without_detail(client: httpx.AsyncClient) -> None:
    body = _problem(await client.get("/raise-bare"), 404, "not-found")
    assert "detail" not in body


async def test_domain_error_slug_extensions_and_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/raise-extended")
    body = _problem(response, 422, "check-failed")
    assert body["title"] == "Checks failed"
    assert body["checks"] == [{"code": "T01", "message": "not enough units"}]
    assert response.headers["retry-after"] == "3"


def test_domain_error_instances_do_not_share_state() -> None:
    custom = errors.Conflict("x", slug="custom-slug", headers={"Retry-After": "1"})
    plain = errors.Conflict("y")
    assert custom.slug == "custom-slug"
    assert plain.slug == "conflict"  # the class default survives an instance's override
    assert plain.headers == {}
    assert errors.Unauthorized().headers["WWW-Authenticate"].startswith("Bearer")
    assert errors.Unauthorized(headers={"WWW-Authenticate": "Bearer error=x"}).headers == {
        "WWW-Authenticate": "Bearer error=x"
    }


async def test_body_validation_lists_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "", "quantity": 0})
    body = _problem(response, 422, "validation-error")
    locs = sorted(tuple(error["loc"]) for error in body["errors"])
    assert locs == [("body", "name"), ("body", "quantity")]
    assert all(error["msg"] and error["type"] for error in body["errors"])
    assert body["instance"] == "/items"


async def test_missing_field_and_bad_json(client: httpx.AsyncClient) -> None:
    body = _problem(await client.post("/items", json={"name": "a"}), 422, "validation-error")
    assert [error["loc"] for error in body["errors"]] == [["body", "quantity"]]
    assert body["errors"][0]["type"] == "missing"
    response = await client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
    assert _problem(response, 422, "validation-error")["errors"]


async def test_query_validation(client: httpx.AsyncClient) -> None:
    body = _problem(await client.get("/typed", params={"n": "many"}), 422, "validation-error")
    assert body["errors"][0]["loc"] == ["query", "n"]
    assert (await client.get("/typed", params={"n": "3"})).json() == {"n": 3}


@pytest.mark.parametrize(
    ("code", "slug"), [(400, "bad-request"), (403, "forbidden"), (404, "not-found"), (418, "http-error")]
)
async def test_http_exceptions_are_problems(client: httpx.AsyncClient, code: int, slug: str) -> None:
    response = await client.get(f"/http/{code}")
    body = _problem(response, code, slug)
    assert body["detail"] == "nope"
    assert response.headers["x-extra"] == "yes"


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    body = _problem(await client.get("/no/such/thing"), 404, "not-found")
    assert body["instance"] == "/no/such/thing"


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/items")
    _problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers.get("allow", "")


async def test_unexpected_error_is_a_bare_500_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "req-0123456789"})
    body = _problem(response, 500, "internal-error")
    assert body["instance"] == "/boom"
    for leak in ("Traceback", SECRET, "RuntimeError", "password", 'File "'):
        assert leak not in response.text
    # The one response a client most needs to quote to an operator carries its request id.
    assert response.headers["x-request-id"] == "req-0123456789"


async def test_unexpected_error_is_logged_with_the_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("ERROR")
    await client.get("/boom", headers={"X-Request-ID": "req-logged-42"})
    records = [r for r in caplog.records if "unhandled_error" in r.getMessage()]
    assert records, "the unexpected error was not logged"
    assert any("req-logged-42" in str(r.msg) for r in records)
    assert any(r.exc_info for r in records)  # with its traceback, in the log only


async def test_app_keeps_serving_after_a_500(client: httpx.AsyncClient) -> None:
    assert (await client.get("/boom")).status_code == 500
    assert (await client.get("/typed", params={"n": 1})).status_code == 200
