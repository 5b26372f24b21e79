"""Case 400 of INTERREGISTRY §11: a webhook registered by the registry's Party, delivered after a 500.

The kit listens for deliveries itself (a small HTTP receiver on `webhook_listen`; the IR is given
`webhook_url`, or the receiver's own URL when the IR can reach it directly, as in the sandbox on one machine),
registers the endpoint with the registry's token (`POST /v1/webhooks`, §9: a registry may manage its Party's
webhooks), answers the first delivery 500 and the rest 204, and makes an event in the Party's feed: a sandbox
transfer to the registry, which completes. Pass: every delivery verifies with PyPI `standardwebhooks` under
the secret shown once; the message refused with 500 came again with the same `webhook-id`; payloads are thin
(§9). The inbox doorbell (`interregistry.inbox.available`) is optional in §9: seen → checked, not seen →
that check is skipped (the IR may not send one). The endpoint is deleted at the end.
"""

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from conformance.kit.driver import Sandbox, wait_for
from conformance.kit.runner import CaseContext, CaseSkipped, case
from conformance.kit.session import KitFailure
from conformance.kit.transfer_cases import _account, _final, _send_out

__all__: list[str] = []  # the case registers itself in runner.CASES

_DOORBELL = "interregistry.inbox.available"


@dataclass
class Delivery:
    headers: dict[str, str]
    body: str
    answered: int


@dataclass
class Receiver:
    """A minimal HTTP/1.1 endpoint: POSTs are recorded; the first is answered 500, the others 204."""

    server: asyncio.Server | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/irx-conformance-400"

    async def start(self, host: str, port: int) -> "Receiver":
        self.server = await asyncio.start_server(self._serve, host, port)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = (await asyncio.wait_for(reader.readexactly(length), timeout=10)).decode()
            status = 500 if not self.deliveries else 204
            self.deliveries.append(Delivery(headers, body, status))
            reason = "Internal Server Error" if status == 500 else "No Content"
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()


@case(
    400,
    "webhook delivery after a 500",
    mandatory=False,
    rule="signature verifies with standardwebhooks; retried; doorbell arrives",
)
async def webhook_delivery(context: CaseContext) -> None:
    config = context.config
    if context.state.driver is None or not config.ir_account or not config.ca_id or config.vintage is None:
        raise CaseSkipped(
            "needs an event in the Party's feed, made by a sandbox transfer to the registry: the registry's test "
            "driver or operator (--driver-url / --interactive) and the IR test section (--ir-account, --ca-id, "
            "--vintage)"
        )
    sandbox = Sandbox(context.session)
    receiver = await Receiver().start(*config.webhook_listen)
    headers = await context.session.headers()
    webhook_id: str | None = None
    try:
        created = await context.session.request(
            "POST",
            "/v1/webhooks",
            json={
                "url": config.webhook_url or receiver.url,
                "event_types": ["transaction.*", "interregistry.*"],
                "description": "IRX conformance case 400",
            },
            headers=headers,
        )
        if created.status_code != 201:
            raise KitFailure(f"POST /v1/webhooks: {created.status_code} {created.text[:300]}")
        registered = created.json()
        webhook_id, secret = str(registered["webhook_id"]), str(registered["secret"])
        context.expect(
            "registered with the registry's token: active", registered.get("status") == "active", ""
        )
        sent = await _send_out(context, sandbox, _account(context, "valid"), 2)
        await _final(context, sent["transfer_id"])

        def retried() -> bool:
            refused = [d for d in receiver.deliveries if d.answered == 500]
            return bool(refused) and any(
                d.answered != 500 and d.headers.get("webhook-id") == refused[0].headers.get("webhook-id")
                for d in receiver.deliveries
            )

        async def probe() -> bool:
            return retried()

        # The first retry is due 5 s after the 500 (§9's schedule, with up to 10 % jitter).
        done, _ = await wait_for(probe, seconds=45, interval=0.25)
        context.expect(
            "the message refused with 500 was delivered again (same webhook-id)",
            done,
            f"{[(d.headers.get('webhook-id'), d.answered) for d in receiver.deliveries]}",
        )
        verifier = Webhook(secret)

        def verified() -> tuple[list[dict[str, Any]], list[str]]:
            payloads: list[dict[str, Any]] = []
            bad: list[str] = []
            for delivery in list(receiver.deliveries):
                try:
                    payloads.append(verifier.verify(delivery.body, delivery.headers))
                except WebhookVerificationError as exc:
                    bad.append(f"{delivery.headers.get('webhook-id')}: {exc}")
            return payloads, bad

        def ours(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                p
                for p in payloads
                if p.get("type") == _DOORBELL
                and (p.get("data") or {}).get("registry_id") == config.registry_id
            ]

        async def rang() -> bool:
            return bool(ours(verified()[0]))

        # The webhook is the Party's: it also hears the doorbells of the Party's other registries, and this
        # registry's own may come a moment after the transfer's events.
        await wait_for(rang, seconds=10, interval=0.25)
        payloads, bad = verified()
        context.expect(
            "every delivery verifies with standardwebhooks",
            bool(receiver.deliveries) and not bad,
            f"{len(receiver.deliveries)} deliveries; {bad[:3]}",
        )
        thin = all(
            set(p) == {"type", "timestamp", "data"} and isinstance(p.get("data"), dict) for p in payloads
        )
        context.expect("payloads are thin (type, timestamp, data)", thin, json.dumps(payloads[:2])[:300])
        doorbells = [p for p in payloads if p.get("type") == _DOORBELL]
        if doorbells:
            party = config.registry_id[:3]
            context.expect(
                "every doorbell names a registry of this Party and a position",
                all(
                    str((p.get("data") or {}).get("registry_id", "")).startswith(party)
                    and isinstance((p.get("data") or {}).get("position"), int)
                    for p in doorbells
                ),
                json.dumps([p.get("data") for p in doorbells[:3]])[:300],
            )
            context.expect(
                "the inbox doorbell rings for this registry",
                bool(ours(doorbells)),
                json.dumps([p.get("data") for p in doorbells[:3]])[:300],
            )
        else:
            context.skip(
                "the inbox doorbell arrives",
                f"no {_DOORBELL} delivery: the IR sends no doorbell (§9, optional)",
            )
    finally:
        if webhook_id is not None:
            await context.session.request("DELETE", f"/v1/webhooks/{webhook_id}", headers=headers)
        await receiver.close()
