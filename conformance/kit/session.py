"""The kit's side of the wire: the registry's OAuth2 client, its signed envelopes and its reads, every
exchange kept as evidence for the report (INTERREGISTRY §2–§4, §11).

The kit acts with the registry's own credentials and key, so it shares the registry's `seq` space: it learns
where to resume from `hello` (`last_seq_received`) before each case, exactly as a registry does after a
restore, and sends above it. A registry process running beside the kit may therefore meet 1007 once and must
resume after `hello` (§3); docs/conformance.md says so.

Only `contracts` and `kit` are imported: the kit runs on the operator's machine, not beside the services.
"""

import base64
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from conformance.kit.config import KitConfig
from kit.jws import body_sha256, sign
from kit.jwt import SigningKey

__all__ = [
    "Exchange",
    "KitFailure",
    "RegistrySession",
    "decode_claims",
    "future",
    "problem_code",
    "wire_time",
]

#: Tokens live 15 min by default (gateway); refresh well before, a run with a key rotation lasts minutes.
_TOKEN_REUSE_SECONDS = 300.0


class KitFailure(Exception):
    """The IR answered something that stops the case: a fail with this sentence, not a bug of the kit."""


def wire_time(moment: datetime) -> str:
    """IRX `sent_at` spelling: UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def problem_code(response: httpx.Response) -> int | None:
    """The IRX `code` of an RFC 9457 problem answer, or None."""
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    try:
        code = response.json().get("code")
    except ValueError:
        return None
    return code if isinstance(code, int) else None


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a compact JWS, unverified (what a client may read of its own token)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise KitFailure("the access token is not a compact JWS")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        raise KitFailure("the access token's claims are not JSON") from None
    if not isinstance(claims, dict):
        raise KitFailure("the access token's claims are not a JSON object")
    return claims


def _body_digest(document: object) -> str | None:
    if not isinstance(document, dict) or not isinstance(document.get("body"), dict):
        return None
    try:
        return body_sha256(document["body"])
    except ValueError:
        return None


@dataclass(frozen=True)
class Exchange:
    """One HTTP exchange with the IR, as the report shows it."""

    method: str
    path: str
    status: int
    code: int | None = None
    problem_type: str | None = None
    message_id: str | None = None
    message_type: str | None = None
    replayed: bool = False
    #: SHA-256 of the sent envelope's `body` (as the IR's log keeps it), to tell a refused message from a
    #: stored one that shares its id (1008 refuses another body under a stored message id).
    body_sha256: str | None = None

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"method": self.method, "path": self.path, "status": self.status}
        for name in ("code", "problem_type", "message_id", "message_type"):
            value = getattr(self, name)
            if value is not None:
                document[name] = value
        if self.replayed:
            document["replayed"] = True
        return document


class RegistrySession:
    """The registry as the kit plays it against the IR gateway."""

    def __init__(self, config: KitConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.http = http
        self.exchanges: list[Exchange] = []
        #: (kind, id) of what the IR made for the run — "transfers", "reconciliations" — in order; the report
        #: names them per case so the IR can corroborate the case against its own records.
        self.subjects: list[tuple[str, str]] = []
        self.last_seq = 0
        #: The kit runs against the sandbox only: the runner checks the record before any case.
        self.environment = "sandbox"
        self._token: str | None = None
        self._token_at = float("-inf")

    def note(self, kind: str, subject_id: object) -> None:
        """A transfer or reconciliation the current case made or worked on (see `subjects`)."""
        if subject_id:
            self.subjects.append((kind, str(subject_id)))

    # ---- HTTP with evidence ------------------------------------------------------------------------------

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        document = kwargs.get("json")
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise KitFailure(
                f"{method} {path}: no answer from the IR ({type(exc).__name__}: {exc})"
            ) from None
        problem_type = None
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            try:
                problem_type = response.json().get("type")
            except ValueError:
                problem_type = None
        self.exchanges.append(
            Exchange(
                method=method,
                path=path,
                status=response.status_code,
                code=problem_code(response),
                problem_type=problem_type,
                message_id=str(document["message_id"])
                if isinstance(document, dict) and "message_id" in document
                else None,
                message_type=str(document["type"])
                if isinstance(document, dict) and "type" in document
                else None,
                replayed=response.headers.get("idempotent-replayed") == "true",
                body_sha256=_body_digest(document),
            )
        )
        return response

    async def token_response(self, client_id: str | None = None, secret: str | None = None) -> httpx.Response:
        """`POST /oauth2/token` (client credentials, HTTP Basic) with the registry's client or the given one."""
        return await self.request(
            "POST",
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(
                client_id or self.config.client_id,
                secret if secret is not None else self.config.client_secret,
            ),
        )

    async def access_token(self) -> str:
        if self._token is None or time.monotonic() - self._token_at > _TOKEN_REUSE_SECONDS:
            response = await self.token_response()
            if response.status_code != 200:
                raise KitFailure(
                    f"the registry client {self.config.client_id} got no token: {response.status_code} {response.text[:200]}"
                )
            self._token = str(response.json()["access_token"])
            self._token_at = time.monotonic()
        return self._token

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.access_token()}"}

    async def get(self, path: str, *, authenticated: bool = True, **params: Any) -> httpx.Response:
        headers = await self.headers() if authenticated else {}
        return await self.request("GET", path, params=params or None, headers=headers)

    # ---- envelopes ---------------------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def envelope(self, message_type: str, body: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
        """An envelope from the registry to the IR; a non-hello gets the next seq unless `seq` is given."""
        document: dict[str, Any] = {
            "protocol": "irx",
            "version": "1.0",
            "env": self.environment,
            "message_id": str(uuid.uuid4()),
            "type": message_type,
            "from": self.config.registry_id,
            "to": "IR",
            "sent_at": wire_time(datetime.now(UTC)),
            "body": dict(body),
        }
        if message_type != "hello" and "seq" not in changes:
            document["seq"] = self.next_seq()
        document.update(changes)
        return document

    def hello_body(
        self, versions: list[str] | None = None, *, software_version: str = "conformance"
    ) -> dict[str, Any]:
        return {
            "supported_versions": versions or ["1.0"],
            "software": {"name": "a62-conformance-kit", "version": software_version},
            "registry_time": wire_time(datetime.now(UTC)),
        }

    async def post(
        self,
        path: str,
        document: Mapping[str, Any],
        *,
        signed: bool = True,
        key: SigningKey | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        """POST an envelope to `/v1/interregistry/{path}` with `Idempotency-Key` = `message_id`."""
        headers = {**(await self.headers()), "Idempotency-Key": str(document["message_id"])}
        if signature is not None:
            headers["IRX-Signature"] = signature
        elif signed:
            headers["IRX-Signature"] = sign(document, key or self.config.signing_key)
        return await self.request("POST", f"/v1/interregistry/{path}", json=dict(document), headers=headers)

    async def hello(self, versions: list[str] | None = None) -> httpx.Response:
        return await self.post("hello", self.envelope("hello", self.hello_body(versions)))

    async def sync(self) -> dict[str, Any]:
        """`hello` and resume above the IR's `last_seq_received`; the answer (version, inbox state)."""
        response = await self.hello()
        if response.status_code != 200:
            raise KitFailure(f"hello answered {response.status_code} {response.text[:300]}")
        answer: dict[str, Any] = response.json()
        self.last_seq = max(self.last_seq, int(answer["last_seq_received"]))
        return answer

    def noop_ack(self, acked_position: int, **changes: Any) -> dict[str, Any]:
        """An `inbox.ack` of what is already acknowledged: a signed message that changes nothing, so the kit
        never acknowledges an inbox message the registry has not processed."""
        return self.envelope("inbox.ack", {"up_to": acked_position}, **changes)

    # ---- reads -------------------------------------------------------------------------------------------

    async def record(self) -> dict[str, Any]:
        response = await self.get(f"/v1/interregistry/registries/{self.config.registry_id}")
        if response.status_code != 200:
            raise KitFailure(f"the registry record answered {response.status_code} {response.text[:300]}")
        record: dict[str, Any] = response.json()
        return record

    async def message_log(self, *, after: int = 0, direction: str = "registry_to_ir") -> list[dict[str, Any]]:
        """The IR's message log of this registry after `after` (a `log_id`), every page."""
        entries: list[dict[str, Any]] = []
        cursor = after
        while True:
            response = await self.get(
                "/v1/interregistry/messages",
                registry=self.config.registry_id,
                direction=direction,
                after=cursor,
                limit=1000,
            )
            if response.status_code != 200:
                raise KitFailure(f"the message log answered {response.status_code} {response.text[:300]}")
            page = response.json()
            entries.extend(page["items"])
            if page.get("next_cursor") is None:
                return entries
            cursor = int(page["next_cursor"])

    async def inbox_pages(self, *, after: int, page_size: int) -> list[dict[str, Any]]:
        """Every inbox item after `after`, following `next_cursor` with pages of `page_size`."""
        items: list[dict[str, Any]] = []
        cursor = after
        for _ in range(100_000):
            response = await self.get("/v1/interregistry/inbox", after=cursor, limit=page_size)
            if response.status_code != 200:
                raise KitFailure(f"the inbox answered {response.status_code} {response.text[:300]}")
            page = response.json()
            items.extend(page["items"])
            if page.get("next_cursor") is None:
                return items
            following = int(page["next_cursor"])
            if following <= cursor:
                raise KitFailure(f"the inbox's next_cursor {following} does not move past {cursor}")
            cursor = following
        raise KitFailure("the inbox never ended")  # pragma: no cover - a runaway cursor


def future(seconds: float) -> str:
    return wire_time(datetime.now(UTC) + timedelta(seconds=seconds))
