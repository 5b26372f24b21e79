"""HTTP surface of the simulator: its public message keys and the §11 test driver.

- `GET /.well-known/jwks.json`: the registry's message-signing keys (give the IR this URL as `jwks_url`).
- `POST /conformance/v1/propose` `{"to_registry", "to_account", "ca_id", "vintage", "quantity", "blocks"?}`
  → 201 `{"transfer_id", "status"}` (status as known when the IR's answer came back, else `open`).
- `POST /conformance/v1/policy` `{"policy": "accept"|"silent"|"reject:<code>"}`.
- `GET /conformance/v1/units?unique_id=[&unique_id_last=]` → `{"state", "quantity_held_in_range"}`.
- Beyond §11, for tests and demos: `GET /conformance/v1/state`, `POST /conformance/v1/issue` (units of
  this registry's own origin), `POST /conformance/v1/cancel`, `POST /conformance/v1/poll` (poll now, rather
  than waiting for the loop), `POST /conformance/v1/restore-drill`, `POST /conformance/v1/reconciliation-policy`
  `{"policy": "answer"|"silent"}` (silent: reconciliation requests are read, answered only once the policy is
  `answer` again; conformance 301, 304), `POST /conformance/v1/forget` / `…/remember` `{"transfer_id"}` (lose our
  record of a transfer and put it back, as a restore that lost a row; conformance 302), `POST
  /conformance/v1/rotate-key` `{"step": "publish"|"sign"}` (a new signing key served beside the current one,
  then signed with, a no-op `inbox.ack` sent with it at once; conformance 102).

The driver has no authentication: it listens on loopback only and is a test instrument (§11 "optional test
driver"), never part of a production registry.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from conformance.simulator.config import Policy
from conformance.simulator.engine import InboxItemRefused, Simulator
from conformance.simulator.ledger import LedgerError
from conformance.simulator.store import transfer
from contracts.identifiers import InvalidUniqueId

__all__ = ["create_app"]


class ProposeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_registry: str = Field(pattern=r"^[A-Z]{3}[0-9]{2}$")
    to_account: str = Field(min_length=1, max_length=64)
    ca_id: str | None = None
    vintage: int | None = None
    quantity: int | None = Field(default=None, ge=1)
    blocks: list[dict[str, str]] | None = None
    from_account: str | None = None
    note: str | None = None


class PolicyBody(BaseModel):
    policy: str


class IssueBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_id: str
    vintage: int
    quantity: int = Field(ge=1)
    account_id: str | None = None
    invariants: dict[str, Any] | None = None


class ReconciliationPolicyBody(BaseModel):
    policy: str = Field(pattern=r"^(answer|silent)$")


class RotateKeyBody(BaseModel):
    step: str = Field(pattern=r"^(publish|sign)$")


class TransferIdBody(BaseModel):
    transfer_id: str = Field(min_length=1, max_length=64)


class CancelBody(BaseModel):
    transfer_id: str
    reason: str | None = None


def _problem(status: int, detail: str, **extensions: Any) -> JSONResponse:
    return JSONResponse(
        {"title": "Simulator driver", "status": status, "detail": detail, **extensions},
        status_code=status,
        media_type="application/problem+json",
    )


def create_app(simulator: Simulator, *, run_loops: bool = True) -> FastAPI:
    """The simulator's app. With `run_loops` its lifespan opens the store, says hello and polls the inbox
    in the background; without, the caller drives `simulator` itself (in-process tests)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        if run_loops:
            await simulator.open()
            task = asyncio.create_task(simulator.run(stop))
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
                await simulator.close()

    app = FastAPI(title=f"Reference national registry {simulator.config.registry_id}", lifespan=lifespan)
    app.state.simulator = simulator

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/.well-known/jwks.json")
    async def jwks() -> JSONResponse:
        return JSONResponse(simulator.public_jwks(), headers={"Cache-Control": "public, max-age=60"})

    @app.post("/conformance/v1/propose", status_code=201)
    async def propose(body: ProposeBody) -> JSONResponse:
        if body.blocks is None and (body.ca_id is None or body.vintage is None or body.quantity is None):
            return _problem(422, "give blocks, or ca_id, vintage and quantity")
        try:
            transfer_id = await simulator.propose(**body.model_dump())
        except LedgerError as exc:
            return _problem(422, str(exc), code=int(exc.code))
        async with simulator.store.read() as connection:
            row = (
                (await connection.execute(select(transfer).where(transfer.c.transfer_id == transfer_id)))
                .mappings()
                .one()
            )
        return JSONResponse(
            {"transfer_id": transfer_id, "status": row["status"], "codes": row["codes"]}, status_code=201
        )

    @app.post("/conformance/v1/policy")
    async def policy(body: PolicyBody) -> JSONResponse:
        try:
            parsed = Policy.parse(body.policy)
        except ValueError as exc:
            return _problem(422, str(exc))
        answered = await simulator.set_policy(parsed)
        return JSONResponse({"policy": str(parsed), "answered_now": answered})

    @app.get("/conformance/v1/units")
    async def units(
        unique_id: str = Query(), unique_id_last: str | None = Query(default=None)
    ) -> JSONResponse:
        try:
            return JSONResponse(await simulator.units(unique_id, unique_id_last))
        except InvalidUniqueId as exc:
            return _problem(422, str(exc))

    @app.get("/conformance/v1/state")
    async def state() -> JSONResponse:
        return JSONResponse(await simulator.snapshot())

    @app.post("/conformance/v1/issue", status_code=201)
    async def issue(body: IssueBody) -> JSONResponse:
        made = await simulator.issue(**body.model_dump())
        return JSONResponse(made.model_dump(mode="json"), status_code=201)

    @app.post("/conformance/v1/cancel")
    async def cancel(body: CancelBody) -> JSONResponse:
        await simulator.cancel(body.transfer_id, body.reason)
        async with simulator.store.read() as connection:
            row = (
                (await connection.execute(select(transfer).where(transfer.c.transfer_id == body.transfer_id)))
                .mappings()
                .first()
            )
        return JSONResponse({"transfer_id": body.transfer_id, "status": row["status"] if row else "unknown"})

    @app.post("/conformance/v1/poll")
    async def poll(_request: Request) -> JSONResponse:
        try:
            processed = await simulator.poll_once()
        except InboxItemRefused as refused:
            return _problem(502, str(refused), position=refused.position)
        return JSONResponse({"processed": processed})

    @app.post("/conformance/v1/reconciliation-policy")
    async def reconciliation_policy(body: ReconciliationPolicyBody) -> JSONResponse:
        answered = await simulator.set_reconciliation_policy(body.policy == "answer")
        return JSONResponse({"policy": body.policy, "answered_now": answered})

    @app.post("/conformance/v1/forget")
    async def forget(body: TransferIdBody) -> JSONResponse:
        if not await simulator.forget(body.transfer_id):
            return _problem(404, f"no transfer {body.transfer_id}")
        return JSONResponse({"transfer_id": body.transfer_id, "forgotten": True})

    @app.post("/conformance/v1/remember")
    async def remember(body: TransferIdBody) -> JSONResponse:
        if not await simulator.remember(body.transfer_id):
            return _problem(404, f"{body.transfer_id} was not forgotten")
        return JSONResponse({"transfer_id": body.transfer_id, "forgotten": False})

    @app.post("/conformance/v1/rotate-key")
    async def rotate_key(body: RotateKeyBody) -> JSONResponse:
        if body.step == "publish":
            return JSONResponse({"step": "publish", "public_jwk": simulator.publish_next_key()})
        if not simulator.rotation_pending:
            return _problem(409, "publish a key first (step publish)")
        return JSONResponse({"step": "sign", **await simulator.sign_with_next_key()})

    @app.post("/conformance/v1/restore-drill")
    async def restore_drill() -> JSONResponse:
        await simulator.restore_drill()
        return JSONResponse({"last_seq": 0})

    return app
