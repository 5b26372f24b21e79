"""The simulator's behaviour as a national registry (INTERREGISTRY §3–§6, §10): identity, the outbox of signed
messages with a persisted `seq`, the inbox processed exactly once, the receiver's checks and answer policy,
outgoing proposals and cancels, and the fault points and bug modes of §11/§13.

Rules it keeps (and each bug mode breaks exactly one of them on purpose):

- S4 durable before speaking: every message is first a row of `outbox`, committed in the same transaction as
  the state change it follows from (`pending_in` before an accept, `reserved` before a proposal, the cursor
  before an ack); only then is it sent. A restart re-sends what is still `pending` (F6).
- One message at a time, in seq order. A transport error or 5xx retries the *same* message (same
  message_id, so the IR answers a retry from its log, S6); 1007 (or 1010) renumbers the pending messages with
  new message ids above the IR's `last_seq` (§3), learnt from the problem and from a fresh `hello`.
- The inbox is read in position order; each item's IR signature is verified against the IR's
  `/v1/interregistry/jwks.json` before anything is done with it, and each item is processed in one SQLite
  transaction with the cursor and its message id (exactly once), then acknowledged with `inbox.ack`.
- S3 receiver waits: incoming units are `pending_in` until the IR's `completed` (from the inbox, or from the
  IR's answer to our accept, which is the IR's decision, not our vote). S2 sender keeps: reserved units are
  released only on the IR's rejected/terminated/cancelled, finalised only on completed.

Crash points call `exit(137)` (default `os._exit`, i.e. as abrupt as SIGKILL) the first time they are reached;
tests inject an `exit` that raises `SimulatedCrash` to run the same paths in-process.
"""

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from conformance.simulator import ledger, reconciliation
from conformance.simulator.config import Policy, SimulatorConfig
from conformance.simulator.store import Store, account, block, inbox_log, outbox, processed, transfer
from contracts.identifiers import InvalidUniqueId, parse_unique_id
from contracts.interregistry import (
    CURRENT_VERSION,
    IR_ADDRESS,
    SUPPORTED_VERSIONS,
    EnvelopeRefused,
    IrxCode,
    IrxEnvelope,
    IrxEnvironment,
    IrxMessageType,
    ReconciliationRequested,
    RegistryStatusChanged,
    TransferBlock,
    TransferCode,
    TransferFinal,
    TransferProposal,
    parse_envelope,
    structure_codes,
)
from kit.jws import CanonicalizationError, JwksCache, JwksUnavailable, SignatureInvalid, body_sha256, sign
from kit.jwt import SigningKey

__all__ = ["FINAL", "InboxItemRefused", "SimulatedCrash", "Simulator", "fixture_accounts", "load_key"]

log = structlog.get_logger(__name__)

FINAL = frozenset({"completed", "rejected", "terminated", "cancelled"})
_T = IrxMessageType
SOFTWARE = {"name": "a62-reference-registry-simulator", "version": "1.0"}
_ACK_PATH = "/v1/interregistry/inbox/ack"
_PROPOSE_PATH = "/v1/interregistry/transfers"


class SimulatedCrash(BaseException):
    """Raised by a test's `exit` at a crash point. A BaseException, so no `except Exception` swallows it."""


class InboxItemRefused(Exception):
    """An inbox item failed verification (IR signature, addressee, environment, position): nothing of it
    was applied and the cursor stays before it."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"inbox position {position}: {reason}")
        self.position = position
        self.reason = reason


class _Transient(Exception):
    """A transport error, a 5xx or an expired token: retry the same message."""


def fixture_accounts(registry_id: str) -> list[dict[str, Any]]:
    """The accounts every simulator has (conformance 150–152 address them by these ids)."""
    prefix = registry_id[:2]
    return [
        {
            "account_id": f"{prefix}-100-1",
            "kind": "holding",
            "status": "open",
            "refuses_incoming": False,
            "description": "holding account (the default source and destination)",
        },
        {
            "account_id": f"{prefix}-100-2",
            "kind": "holding",
            "status": "open",
            "refuses_incoming": False,
            "description": "a second holding account",
        },
        {
            "account_id": f"{prefix}-100-90",
            "kind": "holding",
            "status": "blocked",
            "refuses_incoming": False,
            "description": "blocked holding account (5903)",
        },
        {
            "account_id": f"{prefix}-100-91",
            "kind": "holding",
            "status": "closed",
            "refuses_incoming": False,
            "description": "closed holding account (5906)",
        },
        {
            "account_id": f"{prefix}-100-92",
            "kind": "holding",
            "status": "open",
            "refuses_incoming": True,
            "description": "holding account the Party's policy keeps from receiving units (5904)",
        },
    ]


def load_key(config: SimulatorConfig) -> SigningKey:
    """The registry's EC P-256 message key, generated once into the data directory (mode 0600)."""
    path = config.key_path
    if path.exists():
        return SigningKey.from_jwk(json.loads(path.read_text()))
    key = SigningKey.generate()
    key = key.with_kid(f"{config.registry_id.lower()}-sim-{key.kid[:8]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key.private_jwk()))
    path.chmod(0o600)
    return key


def _now() -> datetime:
    return datetime.now(UTC)


def _problem_code(body: Any) -> int | None:
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        return int(body["code"])
    return None


def _final_from_answer(status: int, body: Any) -> str | None:
    """The final status an IR answer carries, if any: a 2xx body's `status`; a problem's `status` extension
    when it is a status name (RFC 9457 also uses `status` for the HTTP code, so a number is not one); else
    the problem type: `…/transfer-rejected` is a recorded rejection (except 4007: the first transfer stands),
    `…/transfer-final` with 6001/6002 is terminated/cancelled. Anything else: wait for the inbox (S5)."""
    if not isinstance(body, dict):
        return None
    for name in ("status", "transfer_status", "final_status"):
        value = body.get(name)
        if isinstance(value, str) and value in FINAL:
            return value
    if status < 300:
        return None
    slug = str(body.get("type", "")).rsplit("/", 1)[-1]
    code = _problem_code(body)
    if slug == "transfer-rejected" and code != IrxCode.TRANSFER_ID_REUSED:
        return "rejected"
    if slug == "transfer-final":
        return {int(IrxCode.TERMINATED): "terminated", int(IrxCode.CANCELLED): "cancelled"}.get(code or 0)
    return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"raw": response.text[:500]}


class Simulator:
    """One reference national registry. `open()` before use, `close()` after; `run()` is the main loop."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self.config = config
        self.store = Store(config.db_path, policy=str(config.policy))
        self.http = httpx.AsyncClient(
            base_url=config.ir_url, transport=transport, timeout=config.http_timeout
        )
        # The IR's message keys; a refetch on an unknown kid at most every 5 s (rotation during a test run).
        self.ir_keys = JwksCache(
            f"{config.ir_url.rstrip('/')}/v1/interregistry/jwks.json",
            transport=transport,
            min_refetch_interval=5.0,
        )
        self.key: SigningKey | None = None
        self._exit = exit
        self._crashed: set[str] = set()
        self._token: str | None = None
        self._token_expires = 0.0
        self._send_lock = asyncio.Lock()
        self.hello_answer: dict[str, Any] | None = None
        self.refused_items: list[InboxItemRefused] = []
        #: Driver `reconciliation-policy silent` (conformance 301, 304): requests are read but not answered
        #: until the policy is `answer` again; in memory, a restart answers again.
        self.reconciliation_silent = False
        self._held_reconciliations: list[dict[str, Any]] = []
        #: Driver `forget` (conformance 302): transfer rows taken out of the ledger, until `remember`.
        self._forgotten: dict[str, dict[str, Any]] = {}
        #: Driver `rotate-key` (conformance 102): public keys served beside the signing key, and the key
        #: published but not yet signed with. In memory: a restart signs with the key file's key again.
        self._also_published: list[dict[str, Any]] = []
        self._next_key: SigningKey | None = None

    # ---- life cycle ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()
        self.key = load_key(self.config)
        async with self.store.write() as connection:
            known = set((await connection.execute(select(account.c.account_id))).scalars())
            for row in fixture_accounts(self.config.registry_id):
                if row["account_id"] not in known:
                    await connection.execute(insert(account).values(**row))

    async def close(self) -> None:
        await self.http.aclose()
        await self.store.close()

    def public_jwks(self) -> dict[str, Any]:
        assert self.key is not None, "open() first"
        others = [jwk for jwk in self._also_published if jwk["kid"] != self.key.kid]
        return {"keys": [self.key.public_jwk, *others]}

    def publish_next_key(self) -> dict[str, Any]:
        """Key rotation, step 1 (§2.3 "publish the new key"): a new key served at `/.well-known/jwks.json`
        beside the current one, not used yet, so the IR can fetch it before a message needs it."""
        if self._next_key is None:
            key = SigningKey.generate()
            self._next_key = key.with_kid(f"{self.config.registry_id.lower()}-sim-{key.kid[:8]}")
            self._also_published.append(self._next_key.public_jwk)
        return self._next_key.public_jwk

    @property
    def rotation_pending(self) -> bool:
        """A key is published and not yet signed with."""
        return self._next_key is not None

    async def sign_with_next_key(self) -> dict[str, Any]:
        """Key rotation, step 2 ("sign with it"): every later message is signed with the published key, the
        previous one stays published (removed after 7 days in §2.3; here never), and a no-op `inbox.ack`
        (the position already queued) goes out at once so the IR sees the new kid. Its outbox row after the
        send: `message_id`, `status`, `response_status`."""
        assert self.key is not None and self._next_key is not None, "publish_next_key() first"
        self._also_published.append(self.key.public_jwk)
        self.key, self._next_key = self._next_key, None
        async with self.store.write() as connection:
            current = await Store.state(connection)
            document = await self._queue(
                connection, _T.INBOX_ACK, _ACK_PATH, {"up_to": current["ack_queued"]}
            )
            row_id = (
                await connection.execute(
                    select(outbox.c.id).where(outbox.c.message_id == document["message_id"])
                )
            ).scalar_one()
        await self.flush()
        async with self.store.read() as connection:
            row = (await connection.execute(select(outbox).where(outbox.c.id == row_id))).mappings().one()
        log.info("simulator_key_rotated", kid=self.key.kid, status=row["response_status"])
        return {
            "kid": self.key.kid,
            "message_id": row["message_id"],
            "status": row["status"],
            "response_status": row["response_status"],
        }

    def _crash(self, point: str) -> None:
        if self.config.crash_at == point and point not in self._crashed:
            self._crashed.add(point)
            log.warning("simulator_crash_point", point=point)
            self._exit(137)

    async def run(self, stop: asyncio.Event) -> None:
        """Say hello (until the IR answers), re-send the outbox, then poll the inbox until `stop`."""
        while not stop.is_set():
            try:
                await self.hello()
                break
            except Exception as exc:  # the IR may start after us: keep trying, visibly
                log.warning("simulator_hello_failed", error=f"{type(exc).__name__}: {exc}")
                await self._sleep(stop, 2.0)
        while not stop.is_set():
            try:
                await self.flush()
                await self.poll_once()
            except InboxItemRefused as refused:
                log.error("simulator_inbox_item_refused", position=refused.position, reason=refused.reason)
            except Exception:  # the loop must survive an IR restart; the next tick retries
                log.exception("simulator_poll_failed")
            await self._sleep(stop, self.config.poll_interval)

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        """Wait `seconds`, or less when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    # ---- HTTP to the IR --------------------------------------------------------------------------------------

    async def _auth(self) -> dict[str, str]:
        if self._token is None or time.monotonic() >= self._token_expires:
            response = await self.http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(self.config.client_id, self.config.client_secret),
            )
            if response.status_code >= 500:
                raise _Transient(f"token endpoint answered {response.status_code}")
            if response.status_code != 200:
                raise RuntimeError(f"token refused ({response.status_code}): {response.text[:300]}")
            answer = response.json()
            self._token = answer["access_token"]
            self._token_expires = time.monotonic() + max(30.0, float(answer.get("expires_in", 300)) - 30.0)
        return {"Authorization": f"Bearer {self._token}"}

    async def _post_once(self, path: str, envelope: dict[str, Any]) -> httpx.Response:
        assert self.key is not None
        try:
            headers = {
                **await self._auth(),
                "Idempotency-Key": envelope["message_id"],
                "IRX-Signature": sign(envelope, self.key),
                "Content-Type": "application/json",
            }
            response = await self.http.post(path, content=json.dumps(envelope).encode(), headers=headers)
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise _Transient(f"{path} answered {response.status_code}")
        if response.status_code == 401 and _problem_code(_json(response)) is None:
            self._token = None  # an expired or revoked token, not a refused signature (those carry a code)
            raise _Transient("token refused; fetching a new one")
        return response

    async def _post(self, path: str, envelope: dict[str, Any]) -> httpx.Response:
        """POST one envelope, retrying the same message on transport errors and 5xx with backoff."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            wait=wait_exponential(multiplier=self.config.retry_initial, max=self.config.retry_max),
            stop=stop_after_delay(self.config.retry_seconds),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._post_once(path, envelope)
        raise AssertionError("unreachable")  # pragma: no cover

    def envelope(self, message_type: IrxMessageType, body: dict[str, Any], seq: int | None) -> dict[str, Any]:
        # Validated through the contract model, so the simulator never sends what the IR would call 1003.
        return IrxEnvelope.model_validate(
            {
                "env": IrxEnvironment(self.config.env),
                "message_id": uuid.uuid4(),
                "type": message_type,
                "from": self.config.registry_id,
                "to": IR_ADDRESS,
                "seq": seq,
                "sent_at": _now(),
                "body": body,
            }
        ).to_wire()

    async def hello(self) -> dict[str, Any]:
        """`hello`: version, clocks, and where to resume; our seq moves above the IR's `last_seq_received`
        (a restore from an old backup, F13) unless the `ignore-seq` bug is on."""
        body = {
            "supported_versions": list(SUPPORTED_VERSIONS),
            "software": SOFTWARE,
            "registry_time": _now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        response = await self._post("/v1/interregistry/hello", self.envelope(_T.HELLO, body, None))
        if response.status_code != 200:
            raise RuntimeError(f"hello refused ({response.status_code}): {response.text[:500]}")
        answer: dict[str, Any] = response.json()
        self.hello_answer = answer
        async with self.store.write() as connection:
            current = await Store.state(connection)
            values: dict[str, Any] = {"registry_status": answer["registry_status"]}
            if not self.config.bug("ignore-seq") and answer["last_seq_received"] > current["last_seq"]:
                values["last_seq"] = answer["last_seq_received"]
            await Store.set_state(connection, **values)
        log.info("simulator_hello", version=answer["version"], last_seq=answer["last_seq_received"])
        return answer

    # ---- the outbox ------------------------------------------------------------------------------------------

    async def _queue(
        self,
        connection: AsyncConnection,
        message_type: IrxMessageType,
        path: str,
        body: dict[str, Any],
        transfer_id: str | None = None,
    ) -> dict[str, Any]:
        """Give the message the next seq and store it, in the caller's transaction (S4)."""
        current = await Store.state(connection)
        seq = current["last_seq"] + 1
        await Store.set_state(connection, last_seq=seq)
        document = self.envelope(message_type, body, seq)
        await connection.execute(
            insert(outbox).values(
                message_id=document["message_id"],
                seq=seq,
                type=message_type.value,
                path=path,
                envelope=document,
                transfer_id=transfer_id,
                status="pending",
                attempts=0,
            )
        )
        return document

    async def flush(self) -> int:
        """Send pending outbox messages one at a time in order; a message the IR cannot be reached for stays
        pending (the next flush, or the next start, sends it again). Returns how many were settled."""
        settled = 0
        async with self._send_lock:
            while True:
                async with self.store.read() as connection:
                    row = (
                        (
                            await connection.execute(
                                select(outbox)
                                .where(outbox.c.status == "pending")
                                .order_by(outbox.c.id)
                                .limit(1)
                            )
                        )
                        .mappings()
                        .first()
                    )
                if row is None:
                    return settled
                if not await self._send(dict(row)):
                    return settled
                settled += 1

    async def _send(self, row: dict[str, Any]) -> bool:
        """Send one outbox row and apply the answer; False when it must wait (IR unreachable)."""
        document = row["envelope"]
        message_type = IrxMessageType(row["type"])
        async with self.store.write() as connection:
            await connection.execute(
                update(outbox).where(outbox.c.id == row["id"]).values(attempts=outbox.c.attempts + 1)
            )
        try:
            if message_type is _T.TRANSFER_PROPOSAL and self.config.bug("release-on-own-timeout"):
                response = await self._post_once(row["path"], document)
            else:
                response = await self._post(row["path"], document)
        except _Transient as exc:
            if message_type is _T.TRANSFER_PROPOSAL and self.config.bug("release-on-own-timeout"):
                # BUG (mutation run, breaks S2): give up on our own clock and release the reservation.
                await self._release_on_own_timeout(row)
                return True
            log.warning("simulator_send_deferred", seq=row["seq"], type=row["type"], error=str(exc))
            return False
        body = _json(response)
        code = _problem_code(body)
        if code in (IrxCode.STALE_SEQUENCE, IrxCode.SENT_AT_TOO_OLD):
            if self.config.bug("ignore-seq"):
                # BUG (mutation run): a stale seq is never repaired; the message is dropped.
                await self._settle(row, response.status_code, body, "refused")
                return True
            last_seq = int(body.get("last_seq") or 0)
            if code == IrxCode.STALE_SEQUENCE:
                try:
                    last_seq = max(last_seq, int((await self.hello())["last_seq_received"]))
                except Exception:  # hello is a hint here; the problem's last_seq already suffices
                    log.warning("simulator_hello_after_1007_failed")
            await self._renumber(last_seq)
            return True
        if message_type is _T.TRANSFER_RESPONSE and document["body"]["decision"] == "accept":
            self._crash("after_accept_sent")
        if message_type is _T.TRANSFER_PROPOSAL:
            self._crash("after_propose_before_response")
        await self._settle(row, response.status_code, body, None)
        return True

    async def _renumber(self, last_seq: int) -> None:
        """Every pending message gets a new message id and seq above `last_seq` (resend after 1007/1010: safe,
        transfer ids are idempotent at the IR)."""
        async with self.store.write() as connection:
            current = await Store.state(connection)
            seq = max(current["last_seq"], last_seq)
            rows = (
                (
                    await connection.execute(
                        select(outbox).where(outbox.c.status == "pending").order_by(outbox.c.id)
                    )
                )
                .mappings()
                .all()
            )
            for row in rows:
                seq += 1
                document = {
                    **row["envelope"],
                    "message_id": str(uuid.uuid4()),
                    "seq": seq,
                    "sent_at": _now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                }
                await connection.execute(
                    update(outbox)
                    .where(outbox.c.id == row["id"])
                    .values(envelope=document, message_id=document["message_id"], seq=seq)
                )
            await Store.set_state(connection, last_seq=seq)
        log.info("simulator_renumbered", above=last_seq, messages=len(rows))

    async def _settle(self, row: dict[str, Any], status: int, body: Any, forced: str | None) -> None:
        """Record the IR's answer to an outbox message and apply what it decides, in one transaction."""
        document = row["envelope"]
        message_type = IrxMessageType(row["type"])
        final = _final_from_answer(status, body)
        outcome = forced or ("answered" if status < 300 or final is not None else "refused")
        async with self.store.write() as connection:
            await connection.execute(
                update(outbox)
                .where(outbox.c.id == row["id"])
                .values(status=outcome, response_status=status, response_body=body)
            )
            if message_type is _T.INBOX_ACK and status == 200:
                await Store.set_state(connection, acked_position=int(body["acked_position"]))
            elif final is not None and message_type in (
                _T.TRANSFER_RESPONSE,
                _T.TRANSFER_PROPOSAL,
                _T.TRANSFER_CANCEL,
            ):
                direction = "ir_to_registry" if message_type is _T.TRANSFER_RESPONSE else "registry_to_ir"
                await self._apply_final(
                    connection,
                    document["body"]["transfer_id"],
                    direction,
                    final,
                    codes=body.get("codes") or [],
                )
        if outcome == "refused":
            log.warning(
                "simulator_message_refused", type=row["type"], seq=row["seq"], status=status, body=body
            )

    async def _release_on_own_timeout(self, row: dict[str, Any]) -> None:
        transfer_id = row["envelope"]["body"]["transfer_id"]
        async with self.store.write() as connection:
            await connection.execute(
                update(outbox).where(outbox.c.id == row["id"]).values(status="abandoned")
            )
            await connection.execute(
                update(block)
                .where(block.c.transfer_id == transfer_id, block.c.state == "reserved")
                .values(state="held", transfer_id=None)
            )
            await connection.execute(
                update(transfer)
                .where(transfer.c.transfer_id == transfer_id)
                .values(local_note="released on own timeout (bug release-on-own-timeout)")
            )
        log.warning("simulator_bug_released_on_own_timeout", transfer_id=transfer_id)

    # ---- final statuses --------------------------------------------------------------------------------------

    async def _apply_final(
        self,
        connection: AsyncConnection,
        transfer_id: str,
        direction: str,
        final: str,
        *,
        codes: list[Any],
        blocks: list[TransferBlock] | None = None,
        to_account: str | None = None,
        position: int | None = None,
        announcement: dict[str, Any] | None = None,
    ) -> str:
        """Apply F once per transfer (a second sighting is a no-op that only records the position)."""
        known = (
            (await connection.execute(select(transfer).where(transfer.c.transfer_id == transfer_id)))
            .mappings()
            .first()
        )
        if known is not None and known["status"] in FINAL:
            if position is not None and known["final_position"] is None:
                await connection.execute(
                    update(transfer)
                    .where(transfer.c.transfer_id == transfer_id)
                    .values(final_position=position)
                )
            return "already applied"
        if direction == "ir_to_registry":
            pending = await ledger.blocks_for(connection, transfer_id, "pending_in")
            if final == "completed":
                if pending:
                    await ledger.forget_history(
                        connection, [ledger.to_transfer_block(row) for row in pending]
                    )
                    await connection.execute(
                        update(block)
                        .where(block.c.transfer_id == transfer_id, block.c.state == "pending_in")
                        .values(state="held")
                    )
                elif blocks and not await ledger.blocks_for(connection, transfer_id, "held"):
                    # F7: self-contained — pending_in was lost (or never written), the IR's record stands.
                    await ledger.forget_history(connection, blocks)
                    await ledger.insert_blocks(
                        connection,
                        blocks,
                        account_id=to_account or fixture_accounts(self.config.registry_id)[0]["account_id"],
                        state="held",
                        transfer_id=transfer_id,
                    )
            else:
                await connection.execute(
                    delete(block).where(block.c.transfer_id == transfer_id, block.c.state == "pending_in")
                )
        else:
            proposal = known["proposal"] if known is not None else {}
            if final == "completed":
                await connection.execute(
                    update(block)
                    .where(block.c.transfer_id == transfer_id, block.c.state == "reserved")
                    .values(state="transferred_out", to_registry=proposal.get("to_registry"))
                )
            else:
                await connection.execute(
                    update(block)
                    .where(block.c.transfer_id == transfer_id, block.c.state == "reserved")
                    .values(state="held", transfer_id=None)
                )
        values = {"status": final, "codes": codes, "final_position": position}
        if known is None:
            record = announcement or {"transfer_id": transfer_id}
            await connection.execute(
                insert(transfer).values(
                    transfer_id=transfer_id,
                    direction=direction,
                    content_sha256=body_sha256(record),
                    proposal=record,
                    account_id=to_account,
                    **values,
                )
            )
        else:
            await connection.execute(
                update(transfer).where(transfer.c.transfer_id == transfer_id).values(**values)
            )
        log.info("simulator_final_applied", transfer_id=transfer_id, direction=direction, status=final)
        return f"applied {final}"

    # ---- the inbox -------------------------------------------------------------------------------------------

    async def _verified(self, item: dict[str, Any]) -> IrxEnvelope:
        position = item.get("position")
        if not isinstance(position, int):
            raise InboxItemRefused(-1, "no position")
        message = item.get("message")
        try:
            await self.ir_keys.verify(message, item.get("signature"))  # type: ignore[arg-type]
        except (SignatureInvalid, JwksUnavailable, CanonicalizationError) as exc:
            raise InboxItemRefused(position, f"IR signature refused: {exc}") from None
        try:
            envelope = parse_envelope(message)
        except EnvelopeRefused as exc:
            raise InboxItemRefused(position, f"envelope refused ({exc.code}): {exc}") from None
        if envelope.sender != IR_ADDRESS or envelope.to != self.config.registry_id:
            raise InboxItemRefused(position, "not addressed from the IR to this registry (1011)")
        if envelope.env.value != self.config.env:
            raise InboxItemRefused(position, f"environment {envelope.env.value} is not ours (1011)")
        if envelope.seq != position:
            raise InboxItemRefused(position, f"seq {envelope.seq} is not the position {position}")
        return envelope

    async def poll_once(self) -> int:
        """Read the inbox after the cursor, apply each item in order, acknowledge, send the answers.

        Returns how many items were processed. `InboxItemRefused` stops at the first item that fails
        verification (what came before it is applied and acknowledged; the cursor stays before it).
        """
        async with self.store.read() as connection:
            cursor = (await Store.state(connection))["inbox_cursor"]
        try:
            response = await self.http.get(
                "/v1/interregistry/inbox", params={"after": cursor, "limit": 100}, headers=await self._auth()
            )
        except httpx.TransportError as exc:
            raise _Transient(str(exc)) from None
        if response.status_code == 401:
            self._token = None
        if response.status_code != 200:
            raise RuntimeError(f"inbox read answered {response.status_code}: {response.text[:300]}")
        count = 0
        try:
            for item in response.json()["items"]:
                envelope = await self._verified(item)
                if envelope.type is _T.TRANSFER_COMPLETED:
                    self._crash("after_completed_received_before_apply")
                async with self.store.write() as connection:
                    outcome = await self.process_item(connection, item["position"], envelope)
                if envelope.type is _T.TRANSFER_PROPOSAL and outcome in ("accept", "silent"):
                    self._crash("after_pending_in_commit")
                count += 1
        except InboxItemRefused as refused:
            self.refused_items.append(refused)
            if count:  # what came before the refused item is applied: acknowledge and answer it
                await self._queue_ack()
                await self.flush()
            raise
        # Not in a `finally`: after a crash point nothing more may be sent, as after a real SIGKILL. Acked
        # even when nothing was new: items processed just before a crash are acknowledged after the restart.
        await self._queue_ack()
        await self.flush()
        return count

    async def _queue_ack(self) -> None:
        async with self.store.write() as connection:
            current = await Store.state(connection)
            if current["inbox_cursor"] > current["ack_queued"]:
                await self._queue(connection, _T.INBOX_ACK, _ACK_PATH, {"up_to": current["inbox_cursor"]})
                await Store.set_state(connection, ack_queued=current["inbox_cursor"])

    async def process_item(self, connection: AsyncConnection, position: int, envelope: IrxEnvelope) -> str:
        """Apply one verified inbox item in the caller's transaction, with the cursor and its message id."""
        message_id = str(envelope.message_id)
        seen = (
            await connection.execute(
                select(processed.c.message_id).where(processed.c.message_id == message_id)
            )
        ).first()
        if seen is not None:
            outcome = "duplicate message"
        else:
            outcome = await self._dispatch(connection, position, envelope)
            await connection.execute(
                insert(processed).values(
                    message_id=message_id, position=position, type=envelope.type.value, outcome=outcome
                )
            )
            # §8: where each message stood, for reconciliation's cut-off and audit trail.
            transfer_id = envelope.body.get("transfer_id")
            await connection.execute(
                insert(inbox_log).values(
                    position=position,
                    message_id=message_id,
                    type=envelope.type.value,
                    transfer_id=transfer_id if isinstance(transfer_id, str) else None,
                    body_sha256=body_sha256(envelope.body),
                    sent_at=envelope.model_dump(mode="json")["sent_at"],
                )
            )
        current = await Store.state(connection)
        await Store.set_state(connection, inbox_cursor=max(current["inbox_cursor"], position))
        return outcome

    async def _dispatch(self, connection: AsyncConnection, position: int, envelope: IrxEnvelope) -> str:
        if envelope.type is _T.TRANSFER_PROPOSAL:
            return await self._on_proposal(connection, envelope.body)
        if envelope.type in (
            _T.TRANSFER_COMPLETED,
            _T.TRANSFER_REJECTED,
            _T.TRANSFER_TERMINATED,
            _T.TRANSFER_CANCELLED,
        ):
            final = TransferFinal.model_validate(envelope.body)
            return await self._apply_final(
                connection,
                final.transfer_id,
                final.direction.value,
                final.status.value,
                codes=[code.model_dump(mode="json") for code in final.codes],
                blocks=final.blocks,
                to_account=final.to_account,
                position=position,
                announcement=envelope.body,
            )
        if envelope.type is _T.REGISTRY_STATUS_CHANGED:
            change = RegistryStatusChanged.model_validate(envelope.body)
            await Store.set_state(connection, registry_status=change.status.value)
            return f"status {change.status.value}"
        if envelope.type is _T.RECONCILIATION_REQUESTED:
            return await self._on_reconciliation_requested(connection, envelope.body)
        # notice, reconciliation.result: recorded and acknowledged.
        return f"recorded {envelope.type.value}"

    async def _on_reconciliation_requested(self, connection: AsyncConnection, body: dict[str, Any]) -> str:
        """§8: answer the stage from our own ledger, queued with the cursor move (sent after the poll)."""
        request = ReconciliationRequested.model_validate(body)
        if self.reconciliation_silent:
            self._held_reconciliations.append(dict(body))
            return f"held back {request.stage.value} of {request.reconciliation_id}"
        message_type, suffix = reconciliation.STAGE_ANSWERS[request.stage]
        answer = await reconciliation.answer_body(connection, request)
        await self._queue(
            connection,
            message_type,
            f"/v1/interregistry/reconciliations/{request.reconciliation_id}/{suffix}",
            answer,
        )
        return f"answered {request.stage.value} of {request.reconciliation_id}"

    async def _on_proposal(self, connection: AsyncConnection, body: dict[str, Any]) -> str:
        """A proposal from the IR: the receiver's checks, then pending_in and the answer by policy (S4)."""
        proposal = TransferProposal.model_validate(body)
        transfer_id = proposal.transfer_id
        digest = body_sha256(body)
        known = (
            (await connection.execute(select(transfer).where(transfer.c.transfer_id == transfer_id)))
            .mappings()
            .first()
        )
        double_apply = self.config.bug("double-apply")
        if known is not None and not double_apply:
            # F5: a proposal seen again (repeated at a new position): one answer, no second effect.
            return (
                "duplicate transfer" if known["content_sha256"] == digest else "transfer_id reused (ignored)"
            )
        codes = await self.receiver_codes(connection, proposal, ignore_own=double_apply)
        policy = Policy.parse((await Store.state(connection))["policy"])
        if not codes and policy.kind == "reject":
            assert policy.code is not None
            codes = [TransferCode(code=policy.code, message=f"refused by the simulator's policy {policy}")]
        vote = "reject" if codes else policy.kind
        if vote in ("accept", "silent"):
            # BUG spend-before-complete (breaks S3): the units are spendable before the IR's decision.
            units_state = "held" if self.config.bug("spend-before-complete") else "pending_in"
            await ledger.insert_blocks(
                connection,
                proposal.blocks,
                account_id=proposal.to_account,
                state=units_state,
                transfer_id=transfer_id,
            )
        values = {
            "direction": "ir_to_registry",
            "status": "open",
            "vote": vote,
            "codes": [code.model_dump(mode="json") for code in codes],
            "content_sha256": digest,
            "proposal": body,
            "account_id": proposal.to_account,
        }
        if known is None:
            await connection.execute(insert(transfer).values(transfer_id=transfer_id, **values))
        else:
            await connection.execute(
                update(transfer).where(transfer.c.transfer_id == transfer_id).values(**values)
            )
        if vote != "silent":
            await self._queue_response(connection, transfer_id, vote, codes)
        return vote

    async def _queue_response(
        self, connection: AsyncConnection, transfer_id: str, vote: str, codes: list[TransferCode]
    ) -> None:
        body: dict[str, Any] = {"transfer_id": transfer_id, "decision": vote}
        if vote == "reject":
            body["codes"] = [code.model_dump(mode="json", exclude_none=True) for code in codes]
        await self._queue(
            connection,
            _T.TRANSFER_RESPONSE,
            f"/v1/interregistry/transfers/{transfer_id}/response",
            body,
            transfer_id=transfer_id,
        )

    async def receiver_codes(
        self, connection: AsyncConnection, proposal: TransferProposal, *, ignore_own: bool = False
    ) -> list[TransferCode]:
        """The receiver's checks, mirroring §6: structure (2xxx), the acquiring account (59xx), the serial
        history (4002/4005) — the last skipped by the `no-return-check` bug."""
        codes: list[TransferCode] = []
        if proposal.to_registry != self.config.registry_id:
            codes.append(
                TransferCode(
                    code=int(IrxCode.OTHER_REJECTION), message=f"to_registry {proposal.to_registry} is not us"
                )
            )
        codes.extend(structure_codes(proposal, current_year=_now().year))
        codes.extend(await ledger.account_codes(connection, proposal.to_account))
        if not self.config.bug("no-return-check"):
            codes.extend(
                await ledger.history_codes(
                    connection, proposal.blocks, ignore_transfer=proposal.transfer_id if ignore_own else None
                )
            )
        return codes

    # ---- the driver's actions --------------------------------------------------------------------------------

    async def set_policy(self, policy: Policy) -> int:
        """Change the answer policy; proposals held back by `silent` are answered now by the new policy
        (this is how conformance 154 makes a registry accept after the IR terminated)."""
        answered = 0
        async with self.store.write() as connection:
            await Store.set_state(connection, policy=str(policy))
            if policy.kind != "silent":
                waiting = (
                    (
                        await connection.execute(
                            select(transfer).where(
                                transfer.c.direction == "ir_to_registry",
                                transfer.c.status == "open",
                                transfer.c.vote == "silent",
                            )
                        )
                    )
                    .mappings()
                    .all()
                )
                for row in waiting:
                    codes: list[TransferCode] = []
                    if policy.kind == "reject":
                        assert policy.code is not None
                        codes = [
                            TransferCode(
                                code=policy.code, message=f"refused by the simulator's policy {policy}"
                            )
                        ]
                        await connection.execute(
                            delete(block).where(
                                block.c.transfer_id == row["transfer_id"], block.c.state == "pending_in"
                            )
                        )
                    await connection.execute(
                        update(transfer)
                        .where(transfer.c.transfer_id == row["transfer_id"])
                        .values(vote=policy.kind, codes=[c.model_dump(mode="json") for c in codes])
                    )
                    await self._queue_response(connection, row["transfer_id"], policy.kind, codes)
                    answered += 1
        if answered:
            await self.flush()
        return answered

    async def issue(
        self,
        *,
        ca_id: str,
        vintage: int,
        quantity: int,
        account_id: str | None = None,
        invariants: dict[str, Any] | None = None,
    ) -> TransferBlock:
        """A test fixture: units of this registry's own origin, held here (never seen by the IR), so that a
        registry-to-IR transfer of never-seen units (conformance 160) has something to send."""
        origin = self.config.registry_id
        party = self.config.party
        async with self.store.write() as connection:
            top = (
                await connection.execute(
                    select(block.c.last)
                    .where(block.c.ca_id == ca_id, block.c.origin_registry_id == origin)
                    .order_by(block.c.last.desc())
                    .limit(1)
                )
            ).scalar()
            first = (top or 0) + 1
            last = first + quantity - 1
            data: dict[str, Any] = {
                "unique_id_first": f"{ca_id}-{origin}-{party}-{first}-{vintage}",
                "unique_id_last": f"{ca_id}-{origin}-{party}-{last}-{vintage}",
                "ca_id": ca_id,
                "origin_registry_id": origin,
                "first_transferring_party": party,
                "first": first,
                "last": last,
                "quantity": quantity,
                "vintage": vintage,
                "metric": "GHG",
                "applicable_gwp_values": "AR5",
                "mitigation_type": "Emission reductions",
                "sector": "Energy generation",
                "activity_type": "Solar",
                "authorization_id": f"{party}-AUTH-1",
                "authorization_version": 1,
                "purposes": "NDC and OIMP",
                "authorized_parties": None,
                "first_transfer_definition": "First international transfer",
                "first_transferred": True,
                "underlying": None,
            }
            data.update(invariants or {})
            made = TransferBlock.model_validate(data)
            await ledger.insert_blocks(
                connection,
                [made],
                account_id=account_id or fixture_accounts(self.config.registry_id)[0]["account_id"],
                state="held",
                transfer_id=None,
            )
        return made

    async def propose(
        self,
        *,
        to_registry: str,
        to_account: str,
        ca_id: str | None = None,
        vintage: int | None = None,
        quantity: int | None = None,
        blocks: list[dict[str, str]] | None = None,
        from_account: str | None = None,
        note: str | None = None,
    ) -> str:
        """Reserve held units and propose them to the IR (§6). Returns the transfer id; the answer is applied
        when it arrives (201 completed → transferred_out, 422 rejected → released)."""
        source = from_account or fixture_accounts(self.config.registry_id)[0]["account_id"]
        ranges = None
        if blocks is not None:
            ranges = []
            for entry in blocks:
                try:
                    first = parse_unique_id(entry["unique_id_first"])
                    last = parse_unique_id(entry.get("unique_id_last", entry["unique_id_first"]))
                except (KeyError, InvalidUniqueId) as exc:
                    raise ledger.LedgerError(
                        IrxCode.UNIQUE_ID_INCONSISTENT, f"block {entry}: {exc}"
                    ) from None
                ranges.append((first.ca_id, first.registry_id, first.serial, last.serial))
        async with self.store.write() as connection:
            current = await Store.state(connection)
            number = current["transfer_counter"] + 1
            transfer_id = f"{self.config.registry_id}-T{number:06d}"
            await Store.set_state(connection, transfer_counter=number)
            rows = await ledger.reserve(
                connection,
                account_id=source,
                transfer_id=transfer_id,
                ranges=ranges,
                ca_id=ca_id,
                vintage=vintage,
                quantity=quantity,
            )
            carried = [ledger.to_transfer_block(row) for row in rows]
            proposal = TransferProposal(
                transfer_id=transfer_id,
                transferring_party=self.config.party,
                from_registry=self.config.registry_id,
                from_account=source,
                acquiring_party=to_registry[:3],
                to_registry=to_registry,
                to_account=to_account,
                quantity=sum(item.quantity for item in carried),
                note=note,
                blocks=carried,
            )
            body = proposal.model_dump(mode="json")
            for name in ("respond_by", "note"):
                if body[name] is None:
                    del body[name]  # the IR sets respond_by; a registry leaves it out
            await connection.execute(
                insert(transfer).values(
                    transfer_id=transfer_id,
                    direction="registry_to_ir",
                    status="open",
                    vote=None,
                    codes=[],
                    content_sha256=body_sha256(body),
                    proposal=body,
                    account_id=source,
                )
            )
            await self._queue(connection, _T.TRANSFER_PROPOSAL, _PROPOSE_PATH, body, transfer_id=transfer_id)
        self._crash("after_reserve_before_propose")
        await self.flush()
        return transfer_id

    async def cancel(self, transfer_id: str, reason: str | None = None) -> None:
        """Ask the IR to cancel our outgoing transfer (before a decision → cancelled; after → its F; unknown
        → a tombstone, S8). Units stay reserved until the IR's answer says which."""
        body: dict[str, Any] = {"transfer_id": transfer_id}
        if reason:
            body["reason"] = reason
        async with self.store.write() as connection:
            await self._queue(
                connection,
                _T.TRANSFER_CANCEL,
                f"/v1/interregistry/transfers/{transfer_id}/cancel",
                body,
                transfer_id=transfer_id,
            )
        await self.flush()

    async def set_reconciliation_policy(self, answer: bool) -> int:
        """Stay silent on reconciliation requests, or answer again, the held-back ones first (their cut-off
        is in the request, so a late answer is computed as it would have been); how many were answered."""
        self.reconciliation_silent = not answer
        if not answer:
            return 0
        held, self._held_reconciliations = self._held_reconciliations, []
        async with self.store.write() as connection:
            for body in held:
                await self._on_reconciliation_requested(connection, body)
        await self.flush()
        return len(held)

    async def forget(self, transfer_id: str) -> bool:
        """Lose our record of a transfer, as a restore that lost a row would (conformance 302): the pair
        ledger then disagrees with the IR's. The units and the message logs stay as they are."""
        async with self.store.write() as connection:
            row = (
                (await connection.execute(select(transfer).where(transfer.c.transfer_id == transfer_id)))
                .mappings()
                .first()
            )
            if row is None:
                return False
            self._forgotten[transfer_id] = dict(row)
            await connection.execute(delete(transfer).where(transfer.c.transfer_id == transfer_id))
        return True

    async def remember(self, transfer_id: str) -> bool:
        """Put a forgotten record back (the registry re-applied it after the Secretariat's resolution)."""
        row = self._forgotten.pop(transfer_id, None)
        if row is None:
            return False
        async with self.store.write() as connection:
            present = (
                await connection.execute(
                    select(transfer.c.transfer_id).where(transfer.c.transfer_id == transfer_id)
                )
            ).first()
            if present is None:  # a re-announced final status may have rebuilt it meanwhile (S5)
                await connection.execute(insert(transfer).values(**row))
        return True

    async def restore_drill(self) -> None:
        """Forget our seq as a restore from an old backup would (conformance 172): the next message gets
        1007, and the simulator must say hello and continue above the IR's `last_seq_received`."""
        async with self.store.write() as connection:
            await Store.set_state(connection, last_seq=0)

    # ---- views -----------------------------------------------------------------------------------------------

    async def units(self, unique_id: str, unique_id_last: str | None = None) -> dict[str, Any]:
        """Driver `GET /units`: the state of the first serial here, and how many serials of the range are held
        (counted per held row, so a range applied twice shows twice its size)."""
        first = parse_unique_id(unique_id)
        last_serial = parse_unique_id(unique_id_last).serial if unique_id_last else first.serial
        async with self.store.read() as connection:
            rows = await ledger.overlapping(
                connection, first.ca_id, first.registry_id, first.serial, last_serial
            )
        at_first = {row["state"] for row in rows if row["first"] <= first.serial <= row["last"]}
        state = next(
            (name for name in ("held", "reserved", "pending_in", "transferred_out") if name in at_first),
            "absent",
        )
        held = sum(
            min(row["last"], last_serial) - max(row["first"], first.serial) + 1
            for row in rows
            if row["state"] == "held"
        )
        return {"state": state, "quantity_held_in_range": held}

    async def snapshot(self) -> dict[str, Any]:
        """Everything the tests and a curious operator want to see at once."""
        async with self.store.read() as connection:
            current = await Store.state(connection)
            blocks = (await connection.execute(select(block).order_by(block.c.id))).mappings().all()
            transfers = (await connection.execute(select(transfer))).mappings().all()
            messages = (await connection.execute(select(outbox).order_by(outbox.c.id))).mappings().all()
            accounts = (await connection.execute(select(account))).mappings().all()
            seen = (
                (await connection.execute(select(processed).order_by(processed.c.position))).mappings().all()
            )
        holdings: dict[str, dict[str, int]] = {}
        for row in blocks:
            per = holdings.setdefault(row["account_id"], {})
            per[row["state"]] = per.get(row["state"], 0) + row["last"] - row["first"] + 1
        return {
            "registry_id": self.config.registry_id,
            "env": self.config.env,
            "version": CURRENT_VERSION,
            "policy": current["policy"],
            "bugs": sorted(self.config.bugs),
            "registry_status": current["registry_status"],
            "last_seq": current["last_seq"],
            "inbox_cursor": current["inbox_cursor"],
            "acked_position": current["acked_position"],
            "accounts": [
                {**dict(row), "quantities": holdings.get(row["account_id"], {})} for row in accounts
            ],
            "blocks": [
                {
                    "unique_id_first": ledger.to_transfer_block(row).unique_id_first,
                    "unique_id_last": ledger.to_transfer_block(row).unique_id_last,
                    "quantity": row["last"] - row["first"] + 1,
                    "account_id": row["account_id"],
                    "state": row["state"],
                    "transfer_id": row["transfer_id"],
                }
                for row in blocks
            ],
            "transfers": [
                {
                    name: row[name]
                    for name in (
                        "transfer_id",
                        "direction",
                        "status",
                        "vote",
                        "codes",
                        "final_position",
                        "local_note",
                    )
                }
                for row in transfers
            ],
            "outbox": [
                {
                    name: row[name]
                    for name in (
                        "seq",
                        "message_id",
                        "type",
                        "transfer_id",
                        "status",
                        "attempts",
                        "response_status",
                    )
                }
                for row in messages
            ],
            "processed": [dict(row) for row in seen],
        }
